//! Channel command words (format 0 and format 1) and indirect-data-address
//! words (format 1 and format 2).

use super::ArchError;
use super::be::{array, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at};

/// Command code of TRANSFER IN CHANNEL.
///
/// A format-1 CCW is a TIC when its command code is exactly this value; a
/// format-0 CCW is a TIC when bits 4-7 of its command code are `1000`, bits
/// 0-3 being ignored (see [`Ccw::is_tic`]).
pub const CCW_CMD_TIC: u8 = 0x08;

flag_set! {
    /// The flags byte of a CCW (bits 32-39 of both formats).
    pub struct CcwFlags(u8);
    mask = 0xFF;
    /// Chain data, CD.
    const CD = 0x80;
    /// Chain command, CC.
    const CC = 0x40;
    /// Suppress length indication, SLI.
    const SLI = 0x20;
    /// Skip, SKIP.
    const SKIP = 0x10;
    /// Program-controlled interruption, PCI.
    const PCI = 0x08;
    /// Indirect data addressing, IDA.
    const IDA = 0x04;
    /// Suspend, S.
    const S = 0x02;
    /// Modified indirect data addressing, MIDA.
    const MIDA = 0x01;
}

/// Bits of a format-1 CCW data address or a format-1 IDAW that must be zero.
const BIT0: u32 = 0x8000_0000;

/// A format-0 CCW.
///
/// Layout: command code (byte 0), 24-bit data address (bytes 1-3), flags
/// (byte 4), ignored (byte 5), count (bytes 6-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ccw0 {
    /// Command code (bits 0-7).
    pub cmd: u8,
    /// Data address (bits 8-31); 24 bits, the high byte is not encoded.
    pub cda: u32,
    /// Flags (bits 32-39).
    pub flags: CcwFlags,
    /// Byte count (bits 48-63).
    pub count: u16,
}

impl Ccw0 {
    /// Size in bytes.
    pub const SIZE: usize = 8;
    /// The largest data address a format-0 CCW can hold.
    pub const MAX_CDA: u32 = 0x00FF_FFFF;

    /// The CCW as stored in memory; byte 5 is stored as zero and bits of
    /// `cda` above [`Self::MAX_CDA`] are dropped.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        put_u32(&mut out, 0, self.cda & Self::MAX_CDA);
        out[0] = self.cmd;
        out[4] = self.flags.bits();
        put_u16(&mut out, 6, self.count);
        out
    }

    /// Decodes a format-0 CCW (exactly [`Self::SIZE`] bytes); byte 5 is
    /// ignored, as the architecture ignores it.
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length.
    #[inline]
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let b = array::<{ Self::SIZE }>(bytes, "format-0 CCW")?;
        Ok(Self {
            cmd: b[0],
            cda: u32_at(b, 0) & Self::MAX_CDA,
            flags: CcwFlags::from_bits_truncate(b[4]),
            count: u16_at(b, 6),
        })
    }
}

/// A format-1 CCW.
///
/// Layout: command code (byte 0), flags (byte 1), count (bytes 2-3), 31-bit
/// data address (bytes 4-7, bit 32 zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ccw1 {
    /// Command code (bits 0-7).
    pub cmd: u8,
    /// Flags (bits 8-15).
    pub flags: CcwFlags,
    /// Byte count (bits 16-31).
    pub count: u16,
    /// Data address (bits 32-63); a 31-bit address, bit 32 is zero.
    pub cda: u32,
}

impl Ccw1 {
    /// Size in bytes.
    pub const SIZE: usize = 8;

    /// The CCW as stored in memory; `cda` is stored as given.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        out[0] = self.cmd;
        out[1] = self.flags.bits();
        put_u16(&mut out, 2, self.count);
        put_u32(&mut out, 4, self.cda);
        out
    }

    /// Decodes a format-1 CCW (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length, [`ArchError::Invalid`] if
    /// bit 32 (bit 0 of the data address) is set.
    #[inline]
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let b = array::<{ Self::SIZE }>(bytes, "format-1 CCW")?;
        let cda = u32_at(b, 4);
        if cda & BIT0 != 0 {
            return Err(ArchError::Invalid {
                what: "format-1 CCW",
                reason: "bit 0 of the data address is set",
            });
        }
        Ok(Self {
            cmd: b[0],
            flags: CcwFlags::from_bits_truncate(b[1]),
            count: u16_at(b, 2),
            cda,
        })
    }
}

/// A CCW independent of its format, for code that handles both.
///
/// Decode with the format from the ORB's F bit ([`Ccw::decode`]), encode in
/// either format ([`Ccw::encode_format0`], [`Ccw::encode_format1`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ccw {
    /// Command code.
    pub cmd: u8,
    /// Flags.
    pub flags: CcwFlags,
    /// Byte count.
    pub count: u16,
    /// Data address: 24 bits in format 0, 31 bits in format 1.
    pub cda: u32,
}

impl Ccw {
    /// Size in bytes of either format.
    pub const SIZE: usize = 8;

    /// Decodes a format-1 CCW if `format1`, else a format-0 CCW.
    ///
    /// # Errors
    ///
    /// As [`Ccw0::decode`] or [`Ccw1::decode`].
    #[inline]
    pub fn decode(format1: bool, bytes: &[u8]) -> Result<Self, ArchError> {
        if format1 {
            Ccw1::decode(bytes).map(Self::from)
        } else {
            Ccw0::decode(bytes).map(Self::from)
        }
    }

    /// The CCW in format 0.
    ///
    /// # Errors
    ///
    /// [`ArchError::Invalid`] if `cda` does not fit in 24 bits.
    pub fn encode_format0(&self) -> Result<[u8; Self::SIZE], ArchError> {
        if self.cda > Ccw0::MAX_CDA {
            return Err(ArchError::Invalid {
                what: "format-0 CCW",
                reason: "data address does not fit in 24 bits",
            });
        }
        Ok(Ccw0 {
            cmd: self.cmd,
            cda: self.cda,
            flags: self.flags,
            count: self.count,
        }
        .encode())
    }

    /// The CCW in format 1.
    ///
    /// # Errors
    ///
    /// [`ArchError::Invalid`] if bit 0 of `cda` is set.
    pub fn encode_format1(&self) -> Result<[u8; Self::SIZE], ArchError> {
        if self.cda & BIT0 != 0 {
            return Err(ArchError::Invalid {
                what: "format-1 CCW",
                reason: "bit 0 of the data address is set",
            });
        }
        Ok(Ccw1 {
            cmd: self.cmd,
            flags: self.flags,
            count: self.count,
            cda: self.cda,
        }
        .encode())
    }

    /// Whether this CCW is a TRANSFER IN CHANNEL in the given format: the
    /// command code is exactly [`CCW_CMD_TIC`] in format 1, and has bits 4-7
    /// equal to `1000` in format 0.
    #[must_use]
    pub const fn is_tic(&self, format1: bool) -> bool {
        if format1 {
            self.cmd == CCW_CMD_TIC
        } else {
            self.cmd & 0x0F == CCW_CMD_TIC
        }
    }
}

impl From<Ccw0> for Ccw {
    fn from(ccw: Ccw0) -> Self {
        Self {
            cmd: ccw.cmd,
            flags: ccw.flags,
            count: ccw.count,
            cda: ccw.cda,
        }
    }
}

impl From<Ccw1> for Ccw {
    fn from(ccw: Ccw1) -> Self {
        Self {
            cmd: ccw.cmd,
            flags: ccw.flags,
            count: ccw.count,
            cda: ccw.cda,
        }
    }
}

/// A format-1 IDAW: a 31-bit data address, bit 0 zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Idaw1(pub u32);

impl Idaw1 {
    /// Size in bytes.
    pub const SIZE: usize = 4;

    /// The IDAW as stored in memory; the address is stored as given.
    #[must_use]
    pub const fn encode(&self) -> [u8; Self::SIZE] {
        self.0.to_be_bytes()
    }

    /// Decodes a format-1 IDAW (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length, [`ArchError::Invalid`] if
    /// bit 0 is set.
    #[inline]
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let b = array::<{ Self::SIZE }>(bytes, "format-1 IDAW")?;
        let address = u32_at(b, 0);
        if address & BIT0 != 0 {
            return Err(ArchError::Invalid {
                what: "format-1 IDAW",
                reason: "bit 0 of the data address is set",
            });
        }
        Ok(Self(address))
    }
}

/// A format-2 IDAW: a 64-bit data address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Idaw2(pub u64);

impl Idaw2 {
    /// Size in bytes.
    pub const SIZE: usize = 8;

    /// The IDAW as stored in memory.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        put_u64(&mut out, 0, self.0);
        out
    }

    /// Decodes a format-2 IDAW (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length.
    #[inline]
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let b = array::<{ Self::SIZE }>(bytes, "format-2 IDAW")?;
        Ok(Self(u64_at(b, 0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ccw0_known_bytes() {
        let bytes = [0xE4, 0x01, 0x23, 0x45, 0x60, 0xAA, 0x00, 0x18];
        let ccw = Ccw0::decode(&bytes).unwrap();
        assert_eq!(
            ccw,
            Ccw0 {
                cmd: 0xE4,
                cda: 0x01_2345,
                flags: CcwFlags::CC | CcwFlags::SLI,
                count: 0x18,
            }
        );
        // Byte 5 is ignored on decode and stored as zero.
        assert_eq!(
            ccw.encode(),
            [0xE4, 0x01, 0x23, 0x45, 0x60, 0x00, 0x00, 0x18]
        );
    }

    #[test]
    fn ccw0_cda_is_24_bits() {
        let ccw = Ccw0 {
            cmd: 0x02,
            cda: 0x7F12_3456,
            flags: CcwFlags::empty(),
            count: 1,
        };
        assert_eq!(ccw.encode(), [0x02, 0x12, 0x34, 0x56, 0, 0, 0, 1]);
    }

    #[test]
    fn ccw1_known_bytes() {
        let bytes = [0x02, 0x84, 0x10, 0x00, 0x7F, 0xFF, 0xF0, 0x00];
        let ccw = Ccw1::decode(&bytes).unwrap();
        assert_eq!(
            ccw,
            Ccw1 {
                cmd: 0x02,
                flags: CcwFlags::CD | CcwFlags::IDA,
                count: 0x1000,
                cda: 0x7FFF_F000,
            }
        );
        assert_eq!(ccw.encode(), bytes);
    }

    #[test]
    fn ccw_flag_values() {
        let flags = [
            (CcwFlags::CD, 0x80),
            (CcwFlags::CC, 0x40),
            (CcwFlags::SLI, 0x20),
            (CcwFlags::SKIP, 0x10),
            (CcwFlags::PCI, 0x08),
            (CcwFlags::IDA, 0x04),
            (CcwFlags::S, 0x02),
            (CcwFlags::MIDA, 0x01),
        ];
        for (flag, bits) in flags {
            assert_eq!(flag.bits(), bits);
            let ccw = Ccw1 {
                flags: flag,
                ..Ccw1::default()
            };
            assert_eq!(ccw.encode()[1], bits);
        }
    }

    #[test]
    fn ccw1_rejects_cda_bit_0() {
        let bytes = [0x02, 0x00, 0x00, 0x10, 0x80, 0x00, 0x00, 0x00];
        let err = ArchError::Invalid {
            what: "format-1 CCW",
            reason: "bit 0 of the data address is set",
        };
        assert_eq!(Ccw1::decode(&bytes), Err(err));
        assert_eq!(Ccw::decode(true, &bytes), Err(err));
        // The same bytes are a valid format-0 CCW with data address 0x000010.
        assert_eq!(
            Ccw::decode(false, &bytes),
            Ok(Ccw {
                cmd: 0x02,
                flags: CcwFlags::from_bits_truncate(0x80),
                count: 0,
                cda: 0x10,
            })
        );
    }

    #[test]
    fn rejects_wrong_length() {
        for (result, what, expected) in [
            (Ccw0::decode(&[0; 7]).map(|_| ()), "format-0 CCW", 8),
            (Ccw1::decode(&[0; 7]).map(|_| ()), "format-1 CCW", 8),
            (Ccw::decode(true, &[0; 7]).map(|_| ()), "format-1 CCW", 8),
            (Ccw::decode(false, &[0; 7]).map(|_| ()), "format-0 CCW", 8),
            (Idaw1::decode(&[0; 7]).map(|_| ()), "format-1 IDAW", 4),
            (Idaw2::decode(&[0; 7]).map(|_| ()), "format-2 IDAW", 8),
        ] {
            assert_eq!(
                result,
                Err(ArchError::Length {
                    what,
                    expected,
                    actual: 7
                })
            );
        }
    }

    #[test]
    fn unified_ccw_converts_formats() {
        let format0 = [0x01, 0x00, 0x20, 0x00, 0x40, 0x00, 0x00, 0x50];
        let ccw = Ccw::decode(false, &format0).unwrap();
        assert_eq!(
            ccw,
            Ccw {
                cmd: 0x01,
                flags: CcwFlags::CC,
                count: 0x50,
                cda: 0x2000
            }
        );
        assert_eq!(
            ccw.encode_format1(),
            Ok([0x01, 0x40, 0x00, 0x50, 0x00, 0x00, 0x20, 0x00])
        );
        assert_eq!(ccw.encode_format0(), Ok(format0));
    }

    #[test]
    fn unified_ccw_encode_errors() {
        let high = Ccw {
            cda: 0x0100_0000,
            ..Ccw::default()
        };
        assert_eq!(
            high.encode_format0(),
            Err(ArchError::Invalid {
                what: "format-0 CCW",
                reason: "data address does not fit in 24 bits"
            })
        );
        assert_eq!(
            high.encode_format1(),
            Ok([0, 0, 0, 0, 0x01, 0x00, 0x00, 0x00])
        );
        let bit0 = Ccw {
            cda: 0x8000_0000,
            ..Ccw::default()
        };
        assert_eq!(
            bit0.encode_format1(),
            Err(ArchError::Invalid {
                what: "format-1 CCW",
                reason: "bit 0 of the data address is set"
            })
        );
    }

    #[test]
    fn tic_recognition() {
        let tic = |cmd| Ccw {
            cmd,
            ..Ccw::default()
        };
        assert!(tic(0x08).is_tic(true));
        assert!(tic(0x08).is_tic(false));
        assert!(!tic(0x18).is_tic(true));
        assert!(tic(0x18).is_tic(false));
        assert!(tic(0xF8).is_tic(false));
        assert!(!tic(0x09).is_tic(false));
        assert!(!tic(0x80).is_tic(false));
        assert!(!tic(0xE4).is_tic(true));
    }

    #[test]
    fn idaw_known_bytes() {
        assert_eq!(
            Idaw1::decode(&[0x7F, 0xFF, 0xF8, 0x00]),
            Ok(Idaw1(0x7FFF_F800))
        );
        assert_eq!(Idaw1(0x0012_3000).encode(), [0x00, 0x12, 0x30, 0x00]);
        assert_eq!(
            Idaw2::decode(&[0x80, 0, 0, 0x01, 0x23, 0x45, 0x60, 0x00]),
            Ok(Idaw2(0x8000_0001_2345_6000))
        );
        assert_eq!(
            Idaw2(0x0000_0002_0000_1000).encode(),
            [0, 0, 0, 0x02, 0, 0, 0x10, 0]
        );
    }

    #[test]
    fn idaw1_rejects_bit_0() {
        assert_eq!(
            Idaw1::decode(&[0x80, 0x00, 0x10, 0x00]),
            Err(ArchError::Invalid {
                what: "format-1 IDAW",
                reason: "bit 0 of the data address is set"
            })
        );
    }

    proptest! {
        #[test]
        fn ccw0_round_trip(cmd in any::<u8>(), cda in 0u32..=0xFF_FFFF, flags in any::<u8>(), count in any::<u16>()) {
            let ccw = Ccw0 { cmd, cda, flags: CcwFlags::from_bits_truncate(flags), count };
            let bytes = ccw.encode();
            prop_assert_eq!(bytes[0], cmd);
            prop_assert_eq!(bytes[4], flags);
            prop_assert_eq!(Ccw0::decode(&bytes), Ok(ccw));
            prop_assert_eq!(Ccw::from(ccw).encode_format0(), Ok(bytes));
        }

        #[test]
        fn ccw1_round_trip(cmd in any::<u8>(), flags in any::<u8>(), count in any::<u16>(), cda in 0u32..0x8000_0000) {
            let ccw = Ccw1 { cmd, flags: CcwFlags::from_bits_truncate(flags), count, cda };
            let bytes = ccw.encode();
            prop_assert_eq!(&bytes[4..8], &cda.to_be_bytes()[..]);
            prop_assert_eq!(Ccw1::decode(&bytes), Ok(ccw));
            prop_assert_eq!(Ccw::from(ccw).encode_format1(), Ok(bytes));
            prop_assert_eq!(Ccw::decode(true, &bytes), Ok(Ccw::from(ccw)));
        }

        #[test]
        fn idaw_round_trip(a in 0u32..0x8000_0000, b in any::<u64>()) {
            prop_assert_eq!(Idaw1::decode(&Idaw1(a).encode()), Ok(Idaw1(a)));
            prop_assert_eq!(Idaw1(a).encode(), a.to_be_bytes());
            prop_assert_eq!(Idaw2::decode(&Idaw2(b).encode()), Ok(Idaw2(b)));
            prop_assert_eq!(Idaw2(b).encode(), b.to_be_bytes());
        }
    }
}
