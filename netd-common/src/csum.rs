//! Internet checksum arithmetic (RFC 1071, incremental update per RFC 1624).
//!
//! The eBPF programs update checksums with the kernel helpers; this is the reference both
//! sides test against (userspace builds and verifies test frames with it).

/// Adds `data` to a running 32-bit one's-complement sum (big-endian 16-bit words; an
/// odd trailing byte is padded with zero).
pub fn sum_bytes(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = add(sum, u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = add(sum, u32::from(*last) << 8);
    }
    sum
}

/// One's-complement addition of two partial sums, folding the carry as it goes.
#[inline(always)]
pub const fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s.wrapping_add(carry as u32)
}

/// Folds a 32-bit partial sum to 16 bits (not complemented).
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum field value for data whose partial sum is `sum`.
#[inline(always)]
pub const fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// RFC 1624 eqn. 3: the new checksum field after a 16-bit word changes from `old` to
/// `new`.
#[inline(always)]
pub const fn update16(check: u16, old: u16, new: u16) -> u16 {
    let sum = add(add(!check as u32, !old as u32), new as u32);
    !fold(sum)
}

/// [`update16`] for a 32-bit field (an IPv4 address), as two words.
#[inline(always)]
pub const fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// The IPv4 pseudo-header partial sum for TCP/UDP (addresses as on the wire).
pub fn pseudo_header(saddr: [u8; 4], daddr: [u8; 4], proto: u8, l4_len: u16) -> u32 {
    let mut sum = sum_bytes(0, &saddr);
    sum = sum_bytes(sum, &daddr);
    sum = add(sum, u32::from(proto));
    add(sum, u32::from(l4_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    // An IPv4 header from RFC 1071 style examples: checksum over it including the field
    // must verify to zero.
    const IP: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn full_checksum_verifies() {
        assert_eq!(finish(sum_bytes(0, &IP)), 0);
        let mut h = IP;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(finish(sum_bytes(0, &h)), 0xb861);
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut h = IP;
        let old = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        let new = u32::from_be_bytes([203, 0, 113, 7]);
        h[12..16].copy_from_slice(&new.to_be_bytes());
        let check = update32(u16::from_be_bytes([IP[10], IP[11]]), old, new);
        h[10..12].copy_from_slice(&check.to_be_bytes());
        assert_eq!(finish(sum_bytes(0, &h)), 0);
        let mut z = h;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(finish(sum_bytes(0, &z)), check);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum_bytes(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn fold_handles_carries() {
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x0001_fffe), 0xffff);
        assert_eq!(add(0xffff_ffff, 1), 1);
    }
}
