//! Tracks as lists of count-key-data records, and their encoding in an
//! image slot (see docs/ckd-image.md).

use thiserror::Error;

/// Largest data length of a record 1 alone on a 3390 track.
pub const TRACK_CAPACITY: usize = 56_664;
/// Length of a count field (CC HH R KL DL).
pub const COUNT_LEN: usize = 8;
/// Length of record 0's data field as dasdfmt writes it.
pub const R0_DATA_LEN: usize = 8;
/// Bytes of count, key and data one slot holds: record 0 (count and 8
/// data bytes) plus the count and data of a maximum-length record 1.
pub const MAX_TRACK_BYTES: usize = COUNT_LEN + R0_DATA_LEN + COUNT_LEN + TRACK_CAPACITY;
/// Per-track header at the start of each slot.
pub const TRACK_HEADER_LEN: usize = 16;
/// Size of one track slot: header plus [`MAX_TRACK_BYTES`], rounded up to
/// 4 KiB so that slots stay page aligned.
pub const SLOT_SIZE: usize = (TRACK_HEADER_LEN + MAX_TRACK_BYTES).div_ceil(4096) * 4096;

const _: () = assert!(SLOT_SIZE % 4096 == 0 && SLOT_SIZE >= TRACK_HEADER_LEN + MAX_TRACK_BYTES);

/// Why a track cannot be stored or was found damaged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TrackError {
    /// A formatted track must begin with record 0.
    #[error("the first record is R{0}, not R0")]
    MissingR0(u8),
    /// A key longer than a count field can describe.
    #[error("record {record}: key of {len} bytes exceeds 255")]
    KeyTooLong {
        /// Record number.
        record: u8,
        /// Key length.
        len: usize,
    },
    /// A data field longer than a count field can describe.
    #[error("record {record}: data of {len} bytes exceeds 65535")]
    DataTooLong {
        /// Record number.
        record: u8,
        /// Data length.
        len: usize,
    },
    /// The records do not fit on a track.
    #[error("{len} bytes of count, key and data exceed the track capacity of {MAX_TRACK_BYTES}")]
    TooLong {
        /// Total encoded length.
        len: usize,
    },
    /// The slot checksum does not match: a torn or corrupted write.
    #[error("data check: track checksum mismatch (torn or corrupted slot)")]
    Checksum,
    /// The slot belongs to another track.
    #[error("slot holds the home address of cylinder {cyl} head {head}")]
    WrongHomeAddress {
        /// Cylinder found.
        cyl: u16,
        /// Head found.
        head: u16,
    },
    /// The slot passed its checksum but its contents are inconsistent.
    #[error("malformed track: {0}")]
    Malformed(&'static str),
}

/// One record: its count field's CCHHR plus key and data (the count's key
/// and data lengths are those of `key` and `data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Cylinder of the count field.
    pub cyl: u16,
    /// Head of the count field.
    pub head: u16,
    /// Record number.
    pub record: u8,
    /// Key field (0–255 bytes).
    pub key: Vec<u8>,
    /// Data field (0–65535 bytes).
    pub data: Vec<u8>,
}

impl Record {
    /// A record with the given identifier, key and data.
    pub fn new(cyl: u16, head: u16, record: u8, key: Vec<u8>, data: Vec<u8>) -> Self {
        Self {
            cyl,
            head,
            record,
            key,
            data,
        }
    }

    /// Record 0 as dasdfmt writes it: no key, eight zero data bytes.
    pub fn r0(cyl: u16, head: u16) -> Self {
        Self::new(cyl, head, 0, Vec::new(), vec![0; R0_DATA_LEN])
    }

    /// The 8-byte count field: CC HH R KL DL, big-endian.
    pub fn count_field(&self) -> Result<[u8; COUNT_LEN], TrackError> {
        let kl = u8::try_from(self.key.len()).map_err(|_| TrackError::KeyTooLong {
            record: self.record,
            len: self.key.len(),
        })?;
        let dl = u16::try_from(self.data.len()).map_err(|_| TrackError::DataTooLong {
            record: self.record,
            len: self.data.len(),
        })?;
        let mut c = [0; COUNT_LEN];
        c[0..2].copy_from_slice(&self.cyl.to_be_bytes());
        c[2..4].copy_from_slice(&self.head.to_be_bytes());
        c[4] = self.record;
        c[5] = kl;
        c[6..8].copy_from_slice(&dl.to_be_bytes());
        Ok(c)
    }

    /// Bytes this record takes in a slot.
    pub fn encoded_len(&self) -> usize {
        COUNT_LEN + self.key.len() + self.data.len()
    }
}

/// A track's contents: empty when unformatted, otherwise record 0 followed
/// by the data records in track order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Track {
    /// The records, R0 first.
    pub records: Vec<Record>,
}

impl Track {
    /// An unformatted track (no home address records at all).
    pub fn unformatted() -> Self {
        Self::default()
    }

    /// Whether the track holds at least record 0.
    pub fn is_formatted(&self) -> bool {
        !self.records.is_empty()
    }

    /// Bytes of count, key and data of all records.
    pub fn encoded_len(&self) -> usize {
        self.records.iter().map(Record::encoded_len).sum()
    }

    /// Checks that the track can be stored.
    pub fn validate(&self) -> Result<(), TrackError> {
        if let Some(first) = self.records.first() {
            if first.record != 0 {
                return Err(TrackError::MissingR0(first.record));
            }
        }
        for r in &self.records {
            r.count_field()?;
        }
        let len = self.encoded_len();
        if len > MAX_TRACK_BYTES {
            return Err(TrackError::TooLong { len });
        }
        Ok(())
    }

    /// The whole slot for this track at (`cyl`, `head`): all zeros when
    /// unformatted, else header (CRC-32 of bytes 4.., home address, used
    /// length, record count) and the records.
    pub(crate) fn encode_slot(&self, cyl: u16, head: u16) -> Result<Vec<u8>, TrackError> {
        self.validate()?;
        let mut slot = vec![0; SLOT_SIZE];
        if !self.is_formatted() {
            return Ok(slot);
        }
        let mut pos = TRACK_HEADER_LEN;
        for r in &self.records {
            slot[pos..pos + COUNT_LEN].copy_from_slice(&r.count_field()?);
            pos += COUNT_LEN;
            slot[pos..pos + r.key.len()].copy_from_slice(&r.key);
            pos += r.key.len();
            slot[pos..pos + r.data.len()].copy_from_slice(&r.data);
            pos += r.data.len();
        }
        let used =
            u32::try_from(pos - TRACK_HEADER_LEN).map_err(|_| TrackError::TooLong { len: pos })?;
        let count =
            u32::try_from(self.records.len()).map_err(|_| TrackError::TooLong { len: pos })?;
        slot[4..6].copy_from_slice(&cyl.to_le_bytes());
        slot[6..8].copy_from_slice(&head.to_le_bytes());
        slot[8..12].copy_from_slice(&used.to_le_bytes());
        slot[12..16].copy_from_slice(&count.to_le_bytes());
        let crc = crc32(&slot[4..]);
        slot[0..4].copy_from_slice(&crc.to_le_bytes());
        Ok(slot)
    }

    /// Parses a slot read from track (`cyl`, `head`): size, checksum, home
    /// address and record layout are checked.
    pub(crate) fn decode_slot(slot: &[u8], cyl: u16, head: u16) -> Result<Self, TrackError> {
        let records = super::view::locate(slot, cyl, head, true)?
            .into_iter()
            .map(|span| {
                let c = span.count;
                Record::new(
                    u16::from_be_bytes([c[0], c[1]]),
                    u16::from_be_bytes([c[2], c[3]]),
                    c[4],
                    slot[span.key].to_vec(),
                    slot[span.data].to_vec(),
                )
            })
            .collect();
        let track = Self { records };
        track.validate()?;
        Ok(track)
    }
}

/// CRC-32 (IEEE 802.3, as zlib computes it). crc32fast uses the CPU's
/// carry-less multiply where there is one: every track read checks a whole
/// slot, so this runs at memory speed on the read path.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Track {
        Track {
            records: vec![
                Record::r0(3, 7),
                Record::new(3, 7, 1, b"KEY1".to_vec(), vec![0xAB; 24]),
                Record::new(3, 7, 2, Vec::new(), vec![0x5A; 4096]),
                Record::new(3, 7, 3, vec![1; 255], Vec::new()),
            ],
        }
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn slot_size_is_page_aligned_and_fits() {
        assert_eq!(SLOT_SIZE, 57_344);
    }

    #[test]
    fn encode_decode_round_trip() {
        let t = sample();
        let slot = t.encode_slot(3, 7).unwrap();
        assert_eq!(Track::decode_slot(&slot, 3, 7).unwrap(), t);
    }

    #[test]
    fn unformatted_is_all_zero() {
        let slot = Track::unformatted().encode_slot(0, 0).unwrap();
        assert!(slot.iter().all(|&b| b == 0));
        assert_eq!(
            Track::decode_slot(&slot, 0, 0).unwrap(),
            Track::unformatted()
        );
    }

    #[test]
    fn count_field_layout() {
        let r = Record::new(0x0102, 0x000E, 5, vec![0; 4], vec![0; 0x1000]);
        assert_eq!(r.count_field().unwrap(), [1, 2, 0, 0x0E, 5, 4, 0x10, 0]);
    }

    #[test]
    fn corruption_is_a_checksum_error() {
        let mut slot = sample().encode_slot(3, 7).unwrap();
        slot[100] ^= 0x01;
        assert_eq!(Track::decode_slot(&slot, 3, 7), Err(TrackError::Checksum));
        let mut slot = sample().encode_slot(3, 7).unwrap();
        // Corruption in the zero padding is caught as well.
        slot[SLOT_SIZE - 1] = 0xFF;
        assert_eq!(Track::decode_slot(&slot, 3, 7), Err(TrackError::Checksum));
    }

    #[test]
    fn wrong_slot_is_detected() {
        let slot = sample().encode_slot(3, 7).unwrap();
        assert_eq!(
            Track::decode_slot(&slot, 3, 8),
            Err(TrackError::WrongHomeAddress { cyl: 3, head: 7 })
        );
    }

    #[test]
    fn validation() {
        let t = Track {
            records: vec![Record::new(0, 0, 1, Vec::new(), Vec::new())],
        };
        assert_eq!(t.validate(), Err(TrackError::MissingR0(1)));
        let t = Track {
            records: vec![
                Record::r0(0, 0),
                Record::new(0, 0, 1, vec![0; 256], Vec::new()),
            ],
        };
        assert_eq!(
            t.validate(),
            Err(TrackError::KeyTooLong {
                record: 1,
                len: 256
            })
        );
        let t = Track {
            records: vec![
                Record::r0(0, 0),
                Record::new(0, 0, 1, Vec::new(), vec![0; 65_536]),
            ],
        };
        assert_eq!(
            t.validate(),
            Err(TrackError::DataTooLong {
                record: 1,
                len: 65_536
            })
        );
        let full = Track {
            records: vec![
                Record::r0(0, 0),
                Record::new(0, 0, 1, Vec::new(), vec![0; TRACK_CAPACITY]),
            ],
        };
        assert_eq!(full.validate(), Ok(()));
        let mut over = full.clone();
        over.records
            .push(Record::new(0, 0, 2, Vec::new(), Vec::new()));
        assert!(matches!(over.validate(), Err(TrackError::TooLong { .. })));
    }
}
