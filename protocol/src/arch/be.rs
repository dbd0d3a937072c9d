//! Big-endian field access and POPs bit numbering shared by the arch
//! structures.
//!
//! Offsets are checked by the callers: every decoder first turns its input
//! into a fixed-size array with [`array`], and reads only inside it.

use super::ArchError;

/// `bytes` as a fixed-size array, or a [`ArchError::Length`] naming `what`.
#[inline]
pub(crate) fn array<'a, const N: usize>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<&'a [u8; N], ArchError> {
    <&[u8; N]>::try_from(bytes).map_err(|_| ArchError::Length {
        what,
        expected: N,
        actual: bytes.len(),
    })
}

/// The big-endian halfword at `offset`.
#[inline]
pub(crate) fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([bytes[offset], bytes[offset + 1]])
}

/// The big-endian word at `offset`.
#[inline]
pub(crate) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_be_bytes(word)
}

/// The big-endian doubleword at `offset`.
#[inline]
pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut dword = [0; 8];
    dword.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_be_bytes(dword)
}

/// Stores `value` big-endian at `offset`.
#[inline]
pub(crate) fn put_u16(bytes: &mut [u8], offset: usize, value: u16) {
    bytes[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
}

/// Stores `value` big-endian at `offset`.
#[inline]
pub(crate) fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
}

/// Stores `value` big-endian at `offset`.
#[inline]
pub(crate) fn put_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_be_bytes());
}

/// The mask of bit `n` of a word, counting from the leftmost bit as POPs does.
pub(crate) const fn bit(n: u32) -> u32 {
    0x8000_0000 >> n
}

/// Whether bit `n` (POPs numbering) of `word` is one.
pub(crate) const fn flag(word: u32, n: u32) -> bool {
    word & bit(n) != 0
}

/// `bit(n)` if `value`, else zero.
pub(crate) const fn put_flag(value: bool, n: u32) -> u32 {
    if value { bit(n) } else { 0 }
}

/// The mask of the `len`-bit field starting at bit `start` (POPs numbering).
pub(crate) const fn field_mask(start: u32, len: u32) -> u32 {
    (u32::MAX >> (32 - len)) << (32 - start - len)
}

/// The `len`-bit field starting at bit `start` (POPs numbering) of `word`.
pub(crate) const fn field(word: u32, start: u32, len: u32) -> u32 {
    (word & field_mask(start, len)) >> (32 - start - len)
}

/// `value` truncated to `len` bits and placed at bit `start` (POPs numbering).
pub(crate) const fn put_field(value: u32, start: u32, len: u32) -> u32 {
    (value << (32 - start - len)) & field_mask(start, len)
}

/// The rightmost byte of `value`; the other bits are deliberately dropped.
pub(crate) const fn low_u8(value: u32) -> u8 {
    value.to_be_bytes()[3]
}

/// The rightmost halfword of `value`; the other bits are deliberately dropped.
pub(crate) const fn low_u16(value: u32) -> u16 {
    let b = value.to_be_bytes();
    u16::from_be_bytes([b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_bit_numbering() {
        assert_eq!(bit(0), 0x8000_0000);
        assert_eq!(bit(31), 0x0000_0001);
        assert_eq!(field_mask(0, 4), 0xF000_0000);
        assert_eq!(field_mask(16, 16), 0x0000_FFFF);
        assert_eq!(field_mask(0, 32), 0xFFFF_FFFF);
        assert_eq!(field(0x1234_5678, 4, 8), 0x23);
        assert_eq!(put_field(0x1FF, 8, 8), 0x00FF_0000);
        assert!(flag(0x0000_0001, 31));
        assert!(!flag(0x0000_0001, 30));
        assert_eq!(put_flag(true, 1), 0x4000_0000);
        assert_eq!(put_flag(false, 1), 0);
        assert_eq!(low_u8(0x1234_5678), 0x78);
        assert_eq!(low_u16(0x1234_5678), 0x5678);
    }

    #[test]
    fn big_endian_access() {
        let mut b = [0u8; 16];
        put_u16(&mut b, 0, 0x0102);
        put_u32(&mut b, 2, 0x0304_0506);
        put_u64(&mut b, 6, 0x0708_090A_0B0C_0D0E);
        assert_eq!(b[..14], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        assert_eq!(u16_at(&b, 0), 0x0102);
        assert_eq!(u32_at(&b, 2), 0x0304_0506);
        assert_eq!(u64_at(&b, 6), 0x0708_090A_0B0C_0D0E);
        assert_eq!(array::<16>(&b, "x").map(|a| a[1]), Ok(2));
        assert_eq!(
            array::<4>(&b, "x"),
            Err(ArchError::Length {
                what: "x",
                expected: 4,
                actual: 16
            })
        );
    }
}
