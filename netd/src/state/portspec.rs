//! Port specs: placeholder
