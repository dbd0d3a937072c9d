//! The path-management-control word (PMCW) and the subchannel-information
//! block (SCHIB) of STORE SUBCHANNEL and MODIFY SUBCHANNEL.

use super::ArchError;
use super::be::{
    array, field, flag, low_u8, put_field, put_flag, put_u16, put_u32, put_u64, u16_at, u32_at,
    u64_at,
};
use super::scsw::Scsw;

const WHAT: &str = "PMCW";

/// Word 1 bits 5-7: zero (QEMU's `PMCW_FLAGS_MASK_INVALID`).
const WORD1_RESERVED: u32 = 0x0700_0000;
/// Word 6 bits 0-7 and 11-28: zero (QEMU's `PMCW_CHARS_MASK_INVALID`).
const WORD6_RESERVED: u32 = 0xFF1F_FFF8;

/// Path-management-control word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pmcw {
    /// Interruption parameter (word 0).
    pub intparm: u32,
    /// QDIO facility, Q (word 1 bit 0).
    pub qf: bool,
    /// W (word 1 bit 1), as QEMU and Linux name it; carried unchanged.
    pub w: bool,
    /// Interruption subclass, ISC (word 1 bits 2-4), 0 to 7.
    pub isc: u8,
    /// Enabled, E (word 1 bit 8).
    pub enabled: bool,
    /// Limit mode, LM (word 1 bits 9-10), 0 to 3.
    pub limit_mode: u8,
    /// Measurement-mode enable, MM (word 1 bits 11-12), 0 to 3: bit 11
    /// enables measurement-block update, bit 12 device-connect-time
    /// measurement.
    pub measurement_mode: u8,
    /// Multipath mode, D (word 1 bit 13).
    pub multipath_mode: bool,
    /// Timing facility, T (word 1 bit 14).
    pub timing_facility: bool,
    /// Device number valid, V (word 1 bit 15).
    pub device_number_valid: bool,
    /// Device number (word 1 bits 16-31).
    pub devno: u16,
    /// Logical-path mask, LPM (word 2 bits 0-7).
    pub lpm: u8,
    /// Path-not-operational mask, PNOM (word 2 bits 8-15).
    pub pnom: u8,
    /// Last-path-used mask, LPUM (word 2 bits 16-23).
    pub lpum: u8,
    /// Path-installed mask, PIM (word 2 bits 24-31).
    pub pim: u8,
    /// Measurement-block index, MBI (word 3 bits 0-15).
    pub mbi: u16,
    /// Path-operational mask, POM (word 3 bits 16-23).
    pub pom: u8,
    /// Path-available mask, PAM (word 3 bits 24-31).
    pub pam: u8,
    /// Channel-path identifiers 0-7, CHPID (words 4-5).
    pub chpid: [u8; 8],
    /// Subchannel type, ST (word 6 bits 8-10), 0 to 7; 0 is an I/O
    /// subchannel.
    pub subchannel_type: u8,
    /// Measurement-block-format control, F (word 6 bit 29).
    pub measurement_block_format: bool,
    /// Extended-measurement-word-mode enable, X (word 6 bit 30).
    pub extended_measurement_word_mode: bool,
    /// Concurrent-sense facility, S (word 6 bit 31).
    pub concurrent_sense: bool,
}

impl Pmcw {
    /// Size in bytes.
    pub const SIZE: usize = 28;

    /// The PMCW as stored in memory.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let word1 = put_flag(self.qf, 0)
            | put_flag(self.w, 1)
            | put_field(u32::from(self.isc), 2, 3)
            | put_flag(self.enabled, 8)
            | put_field(u32::from(self.limit_mode), 9, 2)
            | put_field(u32::from(self.measurement_mode), 11, 2)
            | put_flag(self.multipath_mode, 13)
            | put_flag(self.timing_facility, 14)
            | put_flag(self.device_number_valid, 15)
            | u32::from(self.devno);
        let word6 = put_field(u32::from(self.subchannel_type), 8, 3)
            | put_flag(self.measurement_block_format, 29)
            | put_flag(self.extended_measurement_word_mode, 30)
            | put_flag(self.concurrent_sense, 31);
        let mut out = [0; Self::SIZE];
        put_u32(&mut out, 0, self.intparm);
        put_u32(&mut out, 4, word1);
        out[8] = self.lpm;
        out[9] = self.pnom;
        out[10] = self.lpum;
        out[11] = self.pim;
        put_u16(&mut out, 12, self.mbi);
        out[14] = self.pom;
        out[15] = self.pam;
        out[16..24].copy_from_slice(&self.chpid);
        put_u32(&mut out, 24, word6);
        out
    }

    /// Decodes a PMCW (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length, [`ArchError::Reserved`] if
    /// word 1 bits 5-7 or word 6 bits 0-7 or 11-28 are not zero.
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let b = array::<{ Self::SIZE }>(bytes, WHAT)?;
        let word1 = u32_at(b, 4);
        let word6 = u32_at(b, 24);
        if word1 & WORD1_RESERVED != 0 {
            return Err(ArchError::Reserved {
                what: WHAT,
                field: "word 1 bits 5-7",
            });
        }
        if word6 & WORD6_RESERVED != 0 {
            return Err(ArchError::Reserved {
                what: WHAT,
                field: "word 6 bits 0-7 and 11-28",
            });
        }
        let mut chpid = [0; 8];
        chpid.copy_from_slice(&b[16..24]);
        Ok(Self {
            intparm: u32_at(b, 0),
            qf: flag(word1, 0),
            w: flag(word1, 1),
            isc: low_u8(field(word1, 2, 3)),
            enabled: flag(word1, 8),
            limit_mode: low_u8(field(word1, 9, 2)),
            measurement_mode: low_u8(field(word1, 11, 2)),
            multipath_mode: flag(word1, 13),
            timing_facility: flag(word1, 14),
            device_number_valid: flag(word1, 15),
            devno: u16_at(b, 6),
            lpm: b[8],
            pnom: b[9],
            lpum: b[10],
            pim: b[11],
            mbi: u16_at(b, 12),
            pom: b[14],
            pam: b[15],
            chpid,
            subchannel_type: low_u8(field(word6, 8, 3)),
            measurement_block_format: flag(word6, 29),
            extended_measurement_word_mode: flag(word6, 30),
            concurrent_sense: flag(word6, 31),
        })
    }
}

/// Subchannel-information block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Schib {
    /// Path-management-control word (bytes 0-27).
    pub pmcw: Pmcw,
    /// Subchannel-status word (bytes 28-39).
    pub scsw: Scsw,
    /// Measurement-block address (bytes 40-47), used with format-1
    /// measurement blocks.
    pub mba: u64,
    /// Model-dependent area (bytes 48-51).
    pub mda: [u8; 4],
}

impl Schib {
    /// Size in bytes.
    pub const SIZE: usize = 52;

    /// The SCHIB as stored in memory.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        out[0..28].copy_from_slice(&self.pmcw.encode());
        out[28..40].copy_from_slice(&self.scsw.encode());
        put_u64(&mut out, 40, self.mba);
        out[48..52].copy_from_slice(&self.mda);
        out
    }

    /// Decodes a SCHIB (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length, and the errors of
    /// [`Pmcw::decode`] and [`Scsw::decode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let b = array::<{ Self::SIZE }>(bytes, "SCHIB")?;
        let mut mda = [0; 4];
        mda.copy_from_slice(&b[48..52]);
        Ok(Self {
            pmcw: Pmcw::decode(&b[0..28])?,
            scsw: Scsw::decode(&b[28..40])?,
            mba: u64_at(b, 40),
            mda,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{DeviceStatus, FunctionControl, StatusControl};
    use proptest::prelude::*;

    /// A field setter, and the offset and value of the word it must produce.
    type Case = (fn(&mut Pmcw), usize, u32);

    /// A SCHIB as QEMU stores it for an enabled virtual DASD 0.0.1234 on
    /// ISC 3 with one path (CHPID 0x40) and concurrent sense.
    const SCHIB: [u8; 52] = [
        0xDE, 0xAD, 0xBE, 0xEF, // intparm
        0x18, 0x81, 0x12, 0x34, // ISC 3, E, V, devno
        0x80, 0x00, 0x80, 0x80, // LPM, PNOM, LPUM, PIM
        0x00, 0x00, 0x80, 0x80, // MBI, POM, PAM
        0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // CHPIDs
        0x00, 0x00, 0x00, 0x01, // ST 0, S
        0x00, 0x80, 0x40, 0x07, 0x00, 0x00, 0x10, 0x08, 0x0C, 0x00, 0x00, 0x00, // SCSW
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, // MBA
        0x11, 0x22, 0x33, 0x44, // MDA
    ];

    #[test]
    fn schib_known_bytes() {
        let schib = Schib::decode(&SCHIB).unwrap();
        assert_eq!(
            schib.pmcw,
            Pmcw {
                intparm: 0xDEAD_BEEF,
                isc: 3,
                enabled: true,
                device_number_valid: true,
                devno: 0x1234,
                lpm: 0x80,
                lpum: 0x80,
                pim: 0x80,
                pom: 0x80,
                pam: 0x80,
                chpid: [0x40, 0, 0, 0, 0, 0, 0, 0],
                concurrent_sense: true,
                ..Pmcw::default()
            }
        );
        assert!(schib.scsw.format1);
        assert_eq!(schib.scsw.function_control, FunctionControl::START);
        assert_eq!(
            schib.scsw.status_control,
            StatusControl::PRIMARY | StatusControl::SECONDARY | StatusControl::STATUS_PENDING
        );
        assert_eq!(schib.scsw.cpa, 0x1008);
        assert_eq!(
            schib.scsw.device_status,
            DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END
        );
        assert_eq!(schib.mba, 0x1_0000);
        assert_eq!(schib.mda, [0x11, 0x22, 0x33, 0x44]);
        assert_eq!(schib.encode(), SCHIB);
    }

    #[test]
    fn pmcw_every_field_has_its_bits() {
        let cases: [Case; 16] = [
            (|p| p.qf = true, 4, 0x8000_0000),
            (|p| p.w = true, 4, 0x4000_0000),
            (|p| p.isc = 7, 4, 0x3800_0000),
            (|p| p.enabled = true, 4, 0x0080_0000),
            (|p| p.limit_mode = 3, 4, 0x0060_0000),
            (|p| p.measurement_mode = 2, 4, 0x0010_0000),
            (|p| p.measurement_mode = 1, 4, 0x0008_0000),
            (|p| p.multipath_mode = true, 4, 0x0004_0000),
            (|p| p.timing_facility = true, 4, 0x0002_0000),
            (|p| p.device_number_valid = true, 4, 0x0001_0000),
            (|p| p.devno = 0xFFFF, 4, 0x0000_FFFF),
            (|p| p.mbi = 0xABCD, 12, 0xABCD_0000),
            (|p| p.subchannel_type = 7, 24, 0x00E0_0000),
            (|p| p.measurement_block_format = true, 24, 0x0000_0004),
            (|p| p.extended_measurement_word_mode = true, 24, 0x0000_0002),
            (|p| p.concurrent_sense = true, 24, 0x0000_0001),
        ];
        for (set, offset, word) in cases {
            let mut pmcw = Pmcw::default();
            set(&mut pmcw);
            let bytes = pmcw.encode();
            let mut expected = [0u8; 28];
            expected[offset..offset + 4].copy_from_slice(&word.to_be_bytes());
            assert_eq!(bytes, expected, "{pmcw:?}");
            assert_eq!(Pmcw::decode(&bytes), Ok(pmcw));
        }
    }

    #[test]
    fn pmcw_rejects_reserved_bits() {
        for byte in [0x04u8, 0x02, 0x01] {
            let mut bytes = [0u8; 28];
            bytes[4] = byte;
            assert_eq!(
                Pmcw::decode(&bytes),
                Err(ArchError::Reserved {
                    what: "PMCW",
                    field: "word 1 bits 5-7"
                })
            );
        }
        for (offset, byte) in [(24, 0x80u8), (24, 0x01), (25, 0x10), (26, 0x01), (27, 0x08)] {
            let mut bytes = [0u8; 28];
            bytes[offset] = byte;
            assert_eq!(
                Pmcw::decode(&bytes),
                Err(ArchError::Reserved {
                    what: "PMCW",
                    field: "word 6 bits 0-7 and 11-28"
                })
            );
        }
    }

    #[test]
    fn rejects_wrong_length_and_nested_errors() {
        assert_eq!(
            Pmcw::decode(&[0; 27]),
            Err(ArchError::Length {
                what: "PMCW",
                expected: 28,
                actual: 27
            })
        );
        assert_eq!(
            Schib::decode(&[0; 51]),
            Err(ArchError::Length {
                what: "SCHIB",
                expected: 52,
                actual: 51
            })
        );
        let mut bytes = SCHIB;
        bytes[4] |= 0x04; // word 1 bit 5
        assert_eq!(
            Schib::decode(&bytes),
            Err(ArchError::Reserved {
                what: "PMCW",
                field: "word 1 bits 5-7"
            })
        );
    }

    fn valid_schib_bytes() -> impl Strategy<Value = [u8; 52]> {
        (any::<[u8; 26]>(), any::<[u8; 26]>()).prop_map(|(a, b)| {
            let mut bytes = [0u8; 52];
            bytes[..26].copy_from_slice(&a);
            bytes[26..].copy_from_slice(&b);
            bytes[4] &= !0x07;
            bytes[24] = 0;
            bytes[25] &= 0xE0;
            bytes[26] = 0;
            bytes[27] &= 0x07;
            // SCSW word 0 bit 16 is not encoded.
            bytes[30] &= 0x7F;
            bytes
        })
    }

    proptest! {
        #[test]
        fn schib_round_trip(bytes in valid_schib_bytes()) {
            let schib = Schib::decode(&bytes).unwrap();
            prop_assert_eq!(schib.encode(), bytes);
            prop_assert_eq!(schib.pmcw.devno, u16::from_be_bytes([bytes[6], bytes[7]]));
            prop_assert_eq!(schib.pmcw.isc, (bytes[4] >> 3) & 7);
            prop_assert_eq!(&schib.pmcw.chpid[..], &bytes[16..24]);
            prop_assert_eq!(Schib::decode(&schib.encode()), Ok(schib));
        }
    }
}
