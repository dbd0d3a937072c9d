//! The channel-report word (CRW) of STORE CHANNEL REPORT WORD.

use super::ArchError;
use super::be::{array, field, flag, low_u8, low_u16, put_field, put_flag, u32_at};

const WHAT: &str = "CRW";

/// Channel-report word.
///
/// Bits 0 and 9 are reserved and must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Crw {
    /// Solicited CRW, S (bit 1).
    pub solicited: bool,
    /// Overflow, R (bit 2): CRWs were lost before this one.
    pub overflow: bool,
    /// Chaining, C (bit 3): further CRWs of the same report follow.
    pub chaining: bool,
    /// Reporting-source code, RSC (bits 4-7), one of the `RSC_*` constants.
    pub rsc: u8,
    /// Ancillary report, A (bit 8).
    pub ancillary: bool,
    /// Error-recovery code, ERC (bits 10-15), one of the `ERC_*` constants.
    pub erc: u8,
    /// Reporting-source ID, RSID (bits 16-31); for a subchannel source, the
    /// subchannel number.
    pub rsid: u16,
}

impl Crw {
    /// Size in bytes.
    pub const SIZE: usize = 4;

    /// Reporting source: monitoring facility.
    pub const RSC_MONITOR: u8 = 0x2;
    /// Reporting source: subchannel.
    pub const RSC_SUBCHANNEL: u8 = 0x3;
    /// Reporting source: channel path.
    pub const RSC_CHANNEL_PATH: u8 = 0x4;
    /// Reporting source: configuration-alert facility.
    pub const RSC_CONFIG_ALERT: u8 = 0x9;
    /// Reporting source: channel subsystem.
    pub const RSC_CSS: u8 = 0xB;

    /// Error recovery: event information pending.
    pub const ERC_EVENT: u8 = 0x00;
    /// Error recovery: available.
    pub const ERC_AVAILABLE: u8 = 0x01;
    /// Error recovery: initialized (QEMU's `CRW_ERC_INIT`).
    pub const ERC_INITIALIZED: u8 = 0x02;
    /// Error recovery: temporary error.
    pub const ERC_TEMPORARY_ERROR: u8 = 0x03;
    /// Error recovery: installed parameters initialized (QEMU's
    /// `CRW_ERC_IPI`).
    pub const ERC_INSTALLED_PARM_INITIALIZED: u8 = 0x04;
    /// Error recovery: terminal.
    pub const ERC_TERMINAL: u8 = 0x05;
    /// Error recovery: permanent error, facility not initialized.
    pub const ERC_PERMANENT_ERROR_NOT_INITIALIZED: u8 = 0x06;
    /// Error recovery: permanent error, facility initialized.
    pub const ERC_PERMANENT_ERROR_INITIALIZED: u8 = 0x07;
    /// Error recovery: installed parameters modified.
    pub const ERC_INSTALLED_PARM_MODIFIED: u8 = 0x08;

    /// The CRW as stored in memory.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let word = put_flag(self.solicited, 1)
            | put_flag(self.overflow, 2)
            | put_flag(self.chaining, 3)
            | put_field(u32::from(self.rsc), 4, 4)
            | put_flag(self.ancillary, 8)
            | put_field(u32::from(self.erc), 10, 6)
            | u32::from(self.rsid);
        word.to_be_bytes()
    }

    /// Decodes a CRW (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length, [`ArchError::Reserved`] if
    /// bit 0 or bit 9 is set.
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let word = u32_at(array::<{ Self::SIZE }>(bytes, WHAT)?, 0);
        if flag(word, 0) {
            return Err(ArchError::Reserved {
                what: WHAT,
                field: "bit 0",
            });
        }
        if flag(word, 9) {
            return Err(ArchError::Reserved {
                what: WHAT,
                field: "bit 9",
            });
        }
        Ok(Self {
            solicited: flag(word, 1),
            overflow: flag(word, 2),
            chaining: flag(word, 3),
            rsc: low_u8(field(word, 4, 4)),
            ancillary: flag(word, 8),
            erc: low_u8(field(word, 10, 6)),
            rsid: low_u16(word),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_bytes() {
        // Subchannel 0x0005 installed parameters initialized, as QEMU reports
        // a hot-plugged subchannel.
        let bytes = [0x03, 0x04, 0x00, 0x05];
        let crw = Crw::decode(&bytes).unwrap();
        assert_eq!(
            crw,
            Crw {
                rsc: Crw::RSC_SUBCHANNEL,
                erc: Crw::ERC_INSTALLED_PARM_INITIALIZED,
                rsid: 5,
                ..Crw::default()
            }
        );
        assert_eq!(crw.encode(), bytes);

        // Solicited, overflow, chained channel-path report, ancillary,
        // permanent error, CHPID 0x40.
        let bytes = [0x74, 0x87, 0x00, 0x40];
        assert_eq!(
            Crw::decode(&bytes),
            Ok(Crw {
                solicited: true,
                overflow: true,
                chaining: true,
                rsc: Crw::RSC_CHANNEL_PATH,
                ancillary: true,
                erc: Crw::ERC_PERMANENT_ERROR_INITIALIZED,
                rsid: 0x0040,
            })
        );
    }

    #[test]
    fn constants() {
        assert_eq!(
            [
                Crw::RSC_MONITOR,
                Crw::RSC_SUBCHANNEL,
                Crw::RSC_CHANNEL_PATH,
                Crw::RSC_CONFIG_ALERT,
                Crw::RSC_CSS
            ],
            [0x2, 0x3, 0x4, 0x9, 0xB]
        );
        assert_eq!(
            [
                Crw::ERC_EVENT,
                Crw::ERC_AVAILABLE,
                Crw::ERC_INITIALIZED,
                Crw::ERC_TEMPORARY_ERROR,
                Crw::ERC_INSTALLED_PARM_INITIALIZED,
                Crw::ERC_TERMINAL,
                Crw::ERC_PERMANENT_ERROR_NOT_INITIALIZED,
                Crw::ERC_PERMANENT_ERROR_INITIALIZED,
                Crw::ERC_INSTALLED_PARM_MODIFIED
            ],
            [0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    #[test]
    fn narrow_fields_truncate() {
        let crw = Crw {
            rsc: 0x1B,
            erc: 0x7F,
            ..Crw::default()
        };
        assert_eq!(crw.encode(), [0x0B, 0x3F, 0x00, 0x00]);
    }

    #[test]
    fn rejects_reserved_bits_and_length() {
        assert_eq!(
            Crw::decode(&[0x80, 0x00, 0x00, 0x00]),
            Err(ArchError::Reserved {
                what: "CRW",
                field: "bit 0"
            })
        );
        assert_eq!(
            Crw::decode(&[0x03, 0x40, 0x00, 0x00]),
            Err(ArchError::Reserved {
                what: "CRW",
                field: "bit 9"
            })
        );
        assert_eq!(
            Crw::decode(&[0; 5]),
            Err(ArchError::Length {
                what: "CRW",
                expected: 4,
                actual: 5
            })
        );
    }

    proptest! {
        #[test]
        fn round_trip(word in any::<u32>()) {
            let word = word & !0x8040_0000;
            let crw = Crw::decode(&word.to_be_bytes()).unwrap();
            prop_assert_eq!(u32::from(crw.rsc), (word >> 24) & 0xF);
            prop_assert_eq!(u32::from(crw.erc), (word >> 16) & 0x3F);
            prop_assert_eq!(u32::from(crw.rsid), word & 0xFFFF);
            prop_assert_eq!(crw.encode(), word.to_be_bytes());
            prop_assert_eq!(Crw::decode(&crw.encode()), Ok(crw));
        }
    }
}
