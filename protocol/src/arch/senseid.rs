//! SENSE ID data: control-unit and device identification followed by
//! command-information words (CIWs).

use super::ArchError;
use super::be::{array, field, low_u8, low_u16, put_field, put_u16, u16_at, u32_at};

const WHAT: &str = "SENSE ID data";

/// Command-information word: describes a device-specific command.
///
/// Layout: entry type (bits 0-1, `01` for a CIW), reserved (bits 2-3,
/// ignored), command type (bits 4-7), command code (bits 8-15), count
/// (bits 16-31).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ciw {
    /// Command type, CT (bits 4-7), one of the `TYPE_*` constants.
    pub command_type: u8,
    /// Command code to issue for this command type.
    pub command: u8,
    /// Byte count to use with the command.
    pub count: u16,
}

impl Ciw {
    /// Size in bytes.
    pub const SIZE: usize = 4;
    /// Entry type of a CIW (bits 0-1).
    pub const ENTRY_TYPE: u8 = 0b01;

    /// Command type: read configuration data.
    pub const TYPE_RCD: u8 = 0x0;
    /// Command type: set interface identifier.
    pub const TYPE_SII: u8 = 0x1;
    /// Command type: read node identifier.
    pub const TYPE_RNI: u8 = 0x2;

    /// The CIW as stored in memory, with entry type `01`.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let word = put_field(u32::from(Self::ENTRY_TYPE), 0, 2)
            | put_field(u32::from(self.command_type), 4, 4)
            | put_field(u32::from(self.command), 8, 8)
            | u32::from(self.count);
        word.to_be_bytes()
    }

    /// Decodes a CIW (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length, [`ArchError::Invalid`] if
    /// the entry type is not `01`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let word = u32_at(array::<{ Self::SIZE }>(bytes, "CIW")?, 0);
        Self::from_word(word).ok_or(ArchError::Invalid {
            what: "CIW",
            reason: "entry type is not 01",
        })
    }

    fn from_word(word: u32) -> Option<Self> {
        (field(word, 0, 2) == u32::from(Self::ENTRY_TYPE)).then(|| Self {
            command_type: low_u8(field(word, 4, 4)),
            command: low_u8(field(word, 8, 8)),
            count: low_u16(word),
        })
    }
}

/// SENSE ID data.
///
/// Layout: X'FF' (byte 0), control-unit type (bytes 1-2), control-unit model
/// (byte 3), device type (bytes 4-5), device model (byte 6), unused (byte 7),
/// then up to eight CIWs. A device without CIWs may return only bytes 0-6.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SenseId {
    /// Control-unit type (bytes 1-2).
    pub cu_type: u16,
    /// Control-unit model (byte 3).
    pub cu_model: u8,
    /// Device type (bytes 4-5).
    pub dev_type: u16,
    /// Device model (byte 6).
    pub dev_model: u8,
    /// Command-information words, at most [`Self::MAX_CIWS`].
    pub ciws: Vec<Ciw>,
}

impl SenseId {
    /// Length of basic SENSE ID data, without byte 7 and CIWs.
    pub const MIN_SIZE: usize = 7;
    /// Length of SENSE ID data with [`Self::MAX_CIWS`] CIWs.
    pub const MAX_SIZE: usize = 40;
    /// Most CIWs SENSE ID data carries.
    pub const MAX_CIWS: usize = 8;
    /// Offset of the first CIW.
    const CIW_OFFSET: usize = 8;

    /// The data as the device returns it: 8 bytes plus 4 per CIW. CIWs
    /// beyond [`Self::MAX_CIWS`] are not encoded.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let ciws = &self.ciws[..self.ciws.len().min(Self::MAX_CIWS)];
        let mut out = vec![0; Self::CIW_OFFSET + Ciw::SIZE * ciws.len()];
        out[0] = 0xFF;
        put_u16(&mut out, 1, self.cu_type);
        out[3] = self.cu_model;
        put_u16(&mut out, 4, self.dev_type);
        out[6] = self.dev_model;
        for (chunk, ciw) in out[Self::CIW_OFFSET..]
            .chunks_exact_mut(Ciw::SIZE)
            .zip(ciws)
        {
            chunk.copy_from_slice(&ciw.encode());
        }
        out
    }

    /// Decodes SENSE ID data of [`Self::MIN_SIZE`] to [`Self::MAX_SIZE`]
    /// bytes. Byte 7 is ignored. CIWs are read from byte 8 up to the first
    /// word whose entry type is not `01`; trailing bytes that do not form a
    /// whole CIW are ignored.
    ///
    /// # Errors
    ///
    /// [`ArchError::LengthRange`] for a length outside 7 to 40,
    /// [`ArchError::Invalid`] if byte 0 is not X'FF'.
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        if !(Self::MIN_SIZE..=Self::MAX_SIZE).contains(&bytes.len()) {
            return Err(ArchError::LengthRange {
                what: WHAT,
                min: Self::MIN_SIZE,
                max: Self::MAX_SIZE,
                actual: bytes.len(),
            });
        }
        if bytes[0] != 0xFF {
            return Err(ArchError::Invalid {
                what: WHAT,
                reason: "byte 0 is not X'FF'",
            });
        }
        let ciws = bytes
            .get(Self::CIW_OFFSET..)
            .unwrap_or_default()
            .chunks_exact(Ciw::SIZE)
            .map_while(|chunk| Ciw::from_word(u32_at(chunk, 0)))
            .collect();
        Ok(Self {
            cu_type: u16_at(bytes, 1),
            cu_model: bytes[3],
            dev_type: u16_at(bytes, 4),
            dev_model: bytes[6],
            ciws,
        })
    }

    /// The first CIW of the given command type, if any.
    #[must_use]
    pub fn ciw(&self, command_type: u8) -> Option<&Ciw> {
        self.ciws.iter().find(|c| c.command_type == command_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SENSE ID of a 3990-E9 / 3390-0C DASD with RCD, SII and RNI CIWs.
    const DASD: [u8; 20] = [
        0xFF, 0x39, 0x90, 0xE9, 0x33, 0x90, 0x0C, 0x00, // identification
        0x40, 0xFA, 0x01, 0x00, // RCD: command 0xFA, count 256
        0x41, 0x73, 0x00, 0x04, // SII: command 0x73, count 4
        0x42, 0x04, 0x00, 0x60, // RNI: command 0x04, count 96
    ];

    #[test]
    fn known_bytes() {
        let id = SenseId::decode(&DASD).unwrap();
        assert_eq!(
            id,
            SenseId {
                cu_type: 0x3990,
                cu_model: 0xE9,
                dev_type: 0x3390,
                dev_model: 0x0C,
                ciws: vec![
                    Ciw {
                        command_type: Ciw::TYPE_RCD,
                        command: 0xFA,
                        count: 256
                    },
                    Ciw {
                        command_type: Ciw::TYPE_SII,
                        command: 0x73,
                        count: 4
                    },
                    Ciw {
                        command_type: Ciw::TYPE_RNI,
                        command: 0x04,
                        count: 0x60
                    },
                ],
            }
        );
        assert_eq!(id.encode(), DASD);
        assert_eq!(id.ciw(Ciw::TYPE_SII).map(|c| c.command), Some(0x73));
        assert_eq!(id.ciw(0x5), None);
    }

    #[test]
    fn basic_sense_id() {
        let id = SenseId::decode(&DASD[..7]).unwrap();
        assert_eq!(
            id,
            SenseId {
                cu_type: 0x3990,
                cu_model: 0xE9,
                dev_type: 0x3390,
                dev_model: 0x0C,
                ciws: vec![],
            }
        );
        assert_eq!(id.encode(), DASD[..8]);
    }

    #[test]
    fn ciw_parsing_stops_at_non_ciw_and_partial_word() {
        let mut bytes = DASD;
        bytes[12] = 0x01; // entry type 00: not a CIW
        let id = SenseId::decode(&bytes).unwrap();
        assert_eq!(id.ciws.len(), 1);
        assert_eq!(id.ciws[0].command, 0xFA);

        let mut bytes = DASD;
        bytes[12] = 0xC1; // entry type 11
        assert_eq!(SenseId::decode(&bytes).unwrap().ciws.len(), 1);

        // 18 bytes: two whole CIWs and two trailing bytes.
        assert_eq!(SenseId::decode(&DASD[..18]).unwrap().ciws.len(), 2);
    }

    #[test]
    fn ciw_reserved_bits_are_ignored() {
        assert_eq!(
            Ciw::decode(&[0x72, 0xFA, 0x01, 0x00]),
            Ok(Ciw {
                command_type: 2,
                command: 0xFA,
                count: 256
            })
        );
        assert_eq!(
            Ciw {
                command_type: 2,
                command: 0xFA,
                count: 256
            }
            .encode(),
            [0x42, 0xFA, 0x01, 0x00]
        );
    }

    #[test]
    fn encode_limits_ciws() {
        let id = SenseId {
            ciws: vec![Ciw::default(); 9],
            ..SenseId::default()
        };
        let bytes = id.encode();
        assert_eq!(bytes.len(), SenseId::MAX_SIZE);
        assert_eq!(bytes[..8], [0xFF, 0, 0, 0, 0, 0, 0, 0]);
        assert!(bytes[8..].chunks(4).all(|c| c == [0x40, 0, 0, 0]));
    }

    #[test]
    fn errors() {
        for len in [6, 41] {
            assert_eq!(
                SenseId::decode(&[0xFF; 41][..len]),
                Err(ArchError::LengthRange {
                    what: "SENSE ID data",
                    min: 7,
                    max: 40,
                    actual: len
                })
            );
        }
        let mut bytes = DASD;
        bytes[0] = 0x00;
        assert_eq!(
            SenseId::decode(&bytes),
            Err(ArchError::Invalid {
                what: "SENSE ID data",
                reason: "byte 0 is not X'FF'"
            })
        );
        assert_eq!(
            Ciw::decode(&[0x80, 0xFA, 0x01, 0x00]),
            Err(ArchError::Invalid {
                what: "CIW",
                reason: "entry type is not 01"
            })
        );
        assert_eq!(
            Ciw::decode(&[0x40, 0xFA, 0x01]),
            Err(ArchError::Length {
                what: "CIW",
                expected: 4,
                actual: 3
            })
        );
    }

    fn ciw() -> impl Strategy<Value = Ciw> {
        (0u8..16, any::<u8>(), any::<u16>()).prop_map(|(command_type, command, count)| Ciw {
            command_type,
            command,
            count,
        })
    }

    proptest! {
        #[test]
        fn round_trip(
            cu_type in any::<u16>(),
            cu_model in any::<u8>(),
            dev_type in any::<u16>(),
            dev_model in any::<u8>(),
            ciws in proptest::collection::vec(ciw(), 0..=8),
        ) {
            let id = SenseId { cu_type, cu_model, dev_type, dev_model, ciws };
            let bytes = id.encode();
            prop_assert_eq!(bytes.len(), 8 + 4 * id.ciws.len());
            prop_assert_eq!(&bytes[..3], &[0xFF, cu_type.to_be_bytes()[0], cu_type.to_be_bytes()[1]][..]);
            prop_assert_eq!(SenseId::decode(&bytes), Ok(id));
        }
    }
}
