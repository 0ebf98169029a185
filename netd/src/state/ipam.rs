//! IPAM: placeholder
