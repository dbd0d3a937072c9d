//! 32-byte sense data, as returned by BASIC SENSE or stored as concurrent
//! sense in the IRB's extended-control word.

use super::ArchError;
use super::be::array;

/// 32 bytes of sense data.
///
/// Byte 0 bits are common to all devices; the byte-1 constants are those of
/// ECKD DASD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sense(pub [u8; 32]);

impl Sense {
    /// Size in bytes.
    pub const SIZE: usize = 32;

    /// Byte 0: command reject.
    pub const COMMAND_REJECT: u8 = 0x80;
    /// Byte 0: intervention required.
    pub const INTERVENTION_REQUIRED: u8 = 0x40;
    /// Byte 0: bus-out check.
    pub const BUS_OUT_CHECK: u8 = 0x20;
    /// Byte 0: equipment check.
    pub const EQUIPMENT_CHECK: u8 = 0x10;
    /// Byte 0: data check.
    pub const DATA_CHECK: u8 = 0x08;
    /// Byte 0: overrun.
    pub const OVERRUN: u8 = 0x04;

    /// Byte 1 (ECKD): permanent error.
    pub const PERMANENT_ERROR: u8 = 0x80;
    /// Byte 1 (ECKD): invalid track format.
    pub const INVALID_TRACK_FORMAT: u8 = 0x40;
    /// Byte 1 (ECKD): end of cylinder.
    pub const END_OF_CYLINDER: u8 = 0x20;
    /// Byte 1 (ECKD): message to operator.
    pub const MESSAGE_TO_OPERATOR: u8 = 0x10;
    /// Byte 1 (ECKD): no record found.
    pub const NO_RECORD_FOUND: u8 = 0x08;
    /// Byte 1 (ECKD): file protected.
    pub const FILE_PROTECTED: u8 = 0x04;
    /// Byte 1 (ECKD): write inhibited.
    pub const WRITE_INHIBITED: u8 = 0x02;
    /// Byte 1 (ECKD): imprecise end.
    pub const IMPRECISE_END: u8 = 0x01;

    /// Sense data with the given bytes 0 and 1 and all other bytes zero.
    #[must_use]
    pub const fn new(byte0: u8, byte1: u8) -> Self {
        let mut data = [0; Self::SIZE];
        data[0] = byte0;
        data[1] = byte1;
        Self(data)
    }

    /// Sense byte 0.
    #[must_use]
    pub const fn byte0(&self) -> u8 {
        self.0[0]
    }

    /// Sense byte 1.
    #[must_use]
    pub const fn byte1(&self) -> u8 {
        self.0[1]
    }

    /// The sense bytes.
    #[must_use]
    pub const fn encode(&self) -> [u8; Self::SIZE] {
        self.0
    }

    /// Decodes exactly [`Self::SIZE`] sense bytes.
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length.
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        array::<{ Self::SIZE }>(bytes, "sense data").map(|b| Self(*b))
    }

    /// Decodes up to [`Self::SIZE`] sense bytes, as a device may return
    /// fewer; the missing bytes are zero.
    ///
    /// # Errors
    ///
    /// [`ArchError::LengthRange`] for more than [`Self::SIZE`] bytes.
    pub fn decode_prefix(bytes: &[u8]) -> Result<Self, ArchError> {
        let mut sense = [0; Self::SIZE];
        sense
            .get_mut(..bytes.len())
            .ok_or(ArchError::LengthRange {
                what: "sense data",
                min: 0,
                max: Self::SIZE,
                actual: bytes.len(),
            })?
            .copy_from_slice(bytes);
        Ok(Self(sense))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_bytes() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0x10; // equipment check
        bytes[1] = 0x04; // file protected
        bytes[27] = 0x40;
        let sense = Sense::decode(&bytes).unwrap();
        assert_eq!(sense.byte0(), Sense::EQUIPMENT_CHECK);
        assert_eq!(sense.byte1(), Sense::FILE_PROTECTED);
        assert_eq!(sense.0[27], 0x40);
        assert_eq!(sense.encode(), bytes);
    }

    #[test]
    fn constructor_and_constants() {
        let sense = Sense::new(
            Sense::COMMAND_REJECT | Sense::DATA_CHECK,
            Sense::NO_RECORD_FOUND,
        );
        assert_eq!(sense.encode()[..3], [0x88, 0x08, 0x00]);
        assert_eq!(sense.encode()[2..], [0; 30]);
        assert_eq!(
            [
                Sense::COMMAND_REJECT,
                Sense::INTERVENTION_REQUIRED,
                Sense::BUS_OUT_CHECK,
                Sense::EQUIPMENT_CHECK,
                Sense::DATA_CHECK,
                Sense::OVERRUN
            ],
            [0x80, 0x40, 0x20, 0x10, 0x08, 0x04]
        );
        assert_eq!(
            [
                Sense::PERMANENT_ERROR,
                Sense::INVALID_TRACK_FORMAT,
                Sense::END_OF_CYLINDER,
                Sense::MESSAGE_TO_OPERATOR,
                Sense::NO_RECORD_FOUND,
                Sense::FILE_PROTECTED,
                Sense::WRITE_INHIBITED,
                Sense::IMPRECISE_END
            ],
            [0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01]
        );
    }

    #[test]
    fn prefix_is_zero_padded() {
        let sense = Sense::decode_prefix(&[0x40, 0x00, 0x01]).unwrap();
        assert_eq!(sense.byte0(), Sense::INTERVENTION_REQUIRED);
        assert_eq!(sense.encode()[..4], [0x40, 0x00, 0x01, 0x00]);
        assert_eq!(Sense::decode_prefix(&[]), Ok(Sense::default()));
        assert_eq!(Sense::decode_prefix(&[7; 32]), Ok(Sense([7; 32])));
    }

    #[test]
    fn errors() {
        assert_eq!(
            Sense::decode(&[0; 24]),
            Err(ArchError::Length {
                what: "sense data",
                expected: 32,
                actual: 24
            })
        );
        assert_eq!(
            Sense::decode_prefix(&[0; 33]),
            Err(ArchError::LengthRange {
                what: "sense data",
                min: 0,
                max: 32,
                actual: 33
            })
        );
    }

    proptest! {
        #[test]
        fn round_trip(bytes in any::<[u8; 32]>()) {
            let sense = Sense::decode(&bytes).unwrap();
            prop_assert_eq!(sense.byte0(), bytes[0]);
            prop_assert_eq!(sense.byte1(), bytes[1]);
            prop_assert_eq!(sense.encode(), bytes);
            prop_assert_eq!(Sense::decode_prefix(&bytes), Ok(sense));
        }
    }
}
