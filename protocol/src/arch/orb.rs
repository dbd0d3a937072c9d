//! The command-mode operation request block (ORB), the operand of START
//! SUBCHANNEL.

use super::ArchError;
use super::be::{array, bit, field, flag, low_u8, put_field, put_flag, put_u32, u32_at};

const WHAT: &str = "ORB";

/// Word 1 bits 26-30: reserved, must be zero.
const WORD1_RESERVED: u32 = 0x0000_003E;

/// Command-mode operation request block, words 0-2.
///
/// Words 3-7 of the extended ORB (present when `orb_extension` is set) are
/// not carried; callers that need them read them separately. When
/// `transport_mode` is set the block is a transport-mode ORB whose word 2 is a
/// TCW address; this type still decodes it bit for bit but gives the fields
/// their command-mode names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Orb {
    /// Interruption parameter (word 0).
    pub intparm: u32,
    /// Subchannel key (word 1 bits 0-3).
    pub key: u8,
    /// Suspend control, S (word 1 bit 4).
    pub suspend: bool,
    /// Streaming-mode control, C (word 1 bit 5).
    pub streaming: bool,
    /// Modification control, M (word 1 bit 6).
    pub modification: bool,
    /// Synchronization control, Y (word 1 bit 7).
    pub synchronization: bool,
    /// Format control, F (word 1 bit 8): the channel program is format-1
    /// CCWs when set, format-0 CCWs otherwise.
    pub format1: bool,
    /// Prefetch control, P (word 1 bit 9).
    pub prefetch: bool,
    /// Initial-status-interruption control, I (word 1 bit 10).
    pub initial_status_interruption: bool,
    /// Address-limit-checking control, A (word 1 bit 11).
    pub address_limit_checking: bool,
    /// Suppress-suspended-interruption control, U (word 1 bit 12).
    pub suppress_suspended_interruption: bool,
    /// Channel-program-type control, B (word 1 bit 13): transport mode.
    pub transport_mode: bool,
    /// Format-2-IDAW control, H (word 1 bit 14); QEMU calls it `c64`.
    pub format2_idaw: bool,
    /// 2K-IDAW control, T (word 1 bit 15): format-2 IDAWs address 2 KiB
    /// blocks; QEMU calls it `i2k`.
    pub idaw_2k: bool,
    /// Logical-path mask (word 1 bits 16-23).
    pub lpm: u8,
    /// Incorrect-length-suppression mode, L (word 1 bit 24).
    pub incorrect_length_suppression: bool,
    /// Modified-CCW-indirect-data-addressing control, D (word 1 bit 25).
    pub midaw: bool,
    /// ORB-extension control, X (word 1 bit 31).
    pub orb_extension: bool,
    /// Channel-program address (word 2); a 31-bit address, bit 0 is zero.
    pub cpa: u32,
}

impl Orb {
    /// Size of words 0-2 in bytes.
    pub const SIZE: usize = 12;

    /// The ORB as stored in memory.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let word1 = put_field(u32::from(self.key), 0, 4)
            | put_flag(self.suspend, 4)
            | put_flag(self.streaming, 5)
            | put_flag(self.modification, 6)
            | put_flag(self.synchronization, 7)
            | put_flag(self.format1, 8)
            | put_flag(self.prefetch, 9)
            | put_flag(self.initial_status_interruption, 10)
            | put_flag(self.address_limit_checking, 11)
            | put_flag(self.suppress_suspended_interruption, 12)
            | put_flag(self.transport_mode, 13)
            | put_flag(self.format2_idaw, 14)
            | put_flag(self.idaw_2k, 15)
            | put_field(u32::from(self.lpm), 16, 8)
            | put_flag(self.incorrect_length_suppression, 24)
            | put_flag(self.midaw, 25)
            | put_flag(self.orb_extension, 31);
        let mut out = [0; Self::SIZE];
        put_u32(&mut out, 0, self.intparm);
        put_u32(&mut out, 4, word1);
        put_u32(&mut out, 8, self.cpa);
        out
    }

    /// Decodes words 0-2 of an ORB (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length, [`ArchError::Reserved`] if
    /// word 1 bits 26-30 are not zero, [`ArchError::Invalid`] if bit 0 of the
    /// channel-program address is set.
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let b = array::<{ Self::SIZE }>(bytes, WHAT)?;
        let word1 = u32_at(b, 4);
        let cpa = u32_at(b, 8);
        if word1 & WORD1_RESERVED != 0 {
            return Err(ArchError::Reserved {
                what: WHAT,
                field: "word 1 bits 26-30",
            });
        }
        if cpa & bit(0) != 0 {
            return Err(ArchError::Invalid {
                what: WHAT,
                reason: "bit 0 of the channel-program address is set",
            });
        }
        Ok(Self {
            intparm: u32_at(b, 0),
            key: low_u8(field(word1, 0, 4)),
            suspend: flag(word1, 4),
            streaming: flag(word1, 5),
            modification: flag(word1, 6),
            synchronization: flag(word1, 7),
            format1: flag(word1, 8),
            prefetch: flag(word1, 9),
            initial_status_interruption: flag(word1, 10),
            address_limit_checking: flag(word1, 11),
            suppress_suspended_interruption: flag(word1, 12),
            transport_mode: flag(word1, 13),
            format2_idaw: flag(word1, 14),
            idaw_2k: flag(word1, 15),
            lpm: low_u8(field(word1, 16, 8)),
            incorrect_length_suppression: flag(word1, 24),
            midaw: flag(word1, 25),
            orb_extension: flag(word1, 31),
            cpa,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A field setter and the bytes it must produce.
    type Case<T, B> = (fn(&mut T), B);

    #[test]
    fn known_bytes_decode() {
        // intparm 0x12345678; key 6, S, F, P, I, H; LPM 0x80; L; CPA 0x00012340.
        let bytes = [
            0x12, 0x34, 0x56, 0x78, 0x68, 0xE2, 0x80, 0x80, 0x00, 0x01, 0x23, 0x40,
        ];
        let orb = Orb::decode(&bytes).unwrap();
        assert_eq!(
            orb,
            Orb {
                intparm: 0x1234_5678,
                key: 6,
                suspend: true,
                format1: true,
                prefetch: true,
                initial_status_interruption: true,
                format2_idaw: true,
                lpm: 0x80,
                incorrect_length_suppression: true,
                cpa: 0x0001_2340,
                ..Orb::default()
            }
        );
        assert_eq!(orb.encode(), bytes);
    }

    #[test]
    fn every_flag_has_its_bit() {
        let cases: [Case<Orb, u32>; 16] = [
            (|o| o.suspend = true, 0x0800_0000),
            (|o| o.streaming = true, 0x0400_0000),
            (|o| o.modification = true, 0x0200_0000),
            (|o| o.synchronization = true, 0x0100_0000),
            (|o| o.format1 = true, 0x0080_0000),
            (|o| o.prefetch = true, 0x0040_0000),
            (|o| o.initial_status_interruption = true, 0x0020_0000),
            (|o| o.address_limit_checking = true, 0x0010_0000),
            (|o| o.suppress_suspended_interruption = true, 0x0008_0000),
            (|o| o.transport_mode = true, 0x0004_0000),
            (|o| o.format2_idaw = true, 0x0002_0000),
            (|o| o.idaw_2k = true, 0x0001_0000),
            (|o| o.lpm = 0xFF, 0x0000_FF00),
            (|o| o.incorrect_length_suppression = true, 0x0000_0080),
            (|o| o.midaw = true, 0x0000_0040),
            (|o| o.orb_extension = true, 0x0000_0001),
        ];
        for (set, word1) in cases {
            let mut orb = Orb::default();
            set(&mut orb);
            let bytes = orb.encode();
            assert_eq!(bytes[4..8], word1.to_be_bytes(), "{orb:?}");
            assert_eq!(Orb::decode(&bytes), Ok(orb));
        }
        let orb = Orb {
            key: 0xF,
            ..Orb::default()
        };
        assert_eq!(orb.encode()[4], 0xF0);
    }

    #[test]
    fn key_wider_than_four_bits_is_truncated() {
        let orb = Orb {
            key: 0x1A,
            ..Orb::default()
        };
        assert_eq!(orb.encode()[4], 0xA0);
    }

    #[test]
    fn rejects_wrong_length() {
        assert_eq!(
            Orb::decode(&[0; 11]),
            Err(ArchError::Length {
                what: "ORB",
                expected: 12,
                actual: 11
            })
        );
        assert_eq!(
            Orb::decode(&[0; 32]),
            Err(ArchError::Length {
                what: "ORB",
                expected: 12,
                actual: 32
            })
        );
    }

    #[test]
    fn rejects_reserved_bits() {
        for reserved in [0x02u8, 0x04, 0x08, 0x10, 0x20] {
            let mut bytes = [0u8; 12];
            bytes[7] = reserved;
            assert_eq!(
                Orb::decode(&bytes),
                Err(ArchError::Reserved {
                    what: "ORB",
                    field: "word 1 bits 26-30"
                })
            );
        }
    }

    #[test]
    fn rejects_cpa_bit_0() {
        let mut bytes = [0u8; 12];
        bytes[8] = 0x80;
        assert_eq!(
            Orb::decode(&bytes),
            Err(ArchError::Invalid {
                what: "ORB",
                reason: "bit 0 of the channel-program address is set"
            })
        );
    }

    proptest! {
        #[test]
        fn round_trip(
            intparm in any::<u32>(),
            word1 in any::<u32>(),
            cpa in 0u32..0x8000_0000,
        ) {
            let word1 = word1 & !WORD1_RESERVED;
            let mut bytes = [0u8; 12];
            bytes[0..4].copy_from_slice(&intparm.to_be_bytes());
            bytes[4..8].copy_from_slice(&word1.to_be_bytes());
            bytes[8..12].copy_from_slice(&cpa.to_be_bytes());
            let orb = Orb::decode(&bytes).unwrap();
            prop_assert_eq!(orb.intparm, intparm);
            prop_assert_eq!(orb.cpa, cpa);
            prop_assert_eq!(u32::from(orb.key), word1 >> 28);
            prop_assert_eq!(u32::from(orb.lpm), (word1 >> 8) & 0xFF);
            prop_assert_eq!(orb.encode(), bytes);
            prop_assert_eq!(Orb::decode(&orb.encode()), Ok(orb));
        }
    }
}
