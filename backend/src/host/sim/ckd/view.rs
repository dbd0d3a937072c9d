//! A track slot as read from the image, with its records located in place
//! (the device's read path: no record is copied out of the slot, which is
//! the image's mapping itself when the image is mapped).

use std::ops::Range;
use std::sync::Arc;

use crate::mapped_file::MappedFile;

use super::track::{
    COUNT_LEN, MAX_TRACK_BYTES, SLOT_SIZE, TRACK_HEADER_LEN, Track, TrackError, crc32,
};

/// Where one record's fields lie in its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpan {
    /// The count field (CC HH R KL DL).
    pub count: [u8; COUNT_LEN],
    pub(crate) key: Range<usize>,
    pub(crate) data: Range<usize>,
}

impl RecordSpan {
    /// Record number (count byte 4).
    pub fn record(&self) -> u8 {
        self.count[4]
    }

    /// Key length.
    pub fn key_len(&self) -> usize {
        self.key.len()
    }

    /// Data length.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// A whole slot and its records.
#[derive(Debug, Clone)]
pub struct TrackView {
    slot: Slot,
    records: Vec<RecordSpan>,
}

/// Where a view's slot bytes are: in the image's mapping, `SLOT_SIZE`
/// bytes from its offset, or (read, built, or copied out to be changed) in
/// memory of the view's own (for a mapped slot, a buffer kept for the copy
/// and given back by [`TrackView::into_slot`]).
#[derive(Debug, Clone)]
struct Slot {
    mapped: Option<(Arc<MappedFile>, usize)>,
    owned: Vec<u8>,
}

impl Slot {
    fn bytes(&self) -> &[u8] {
        match &self.mapped {
            Some((map, offset)) => &map.bytes()[*offset..*offset + SLOT_SIZE],
            None => &self.owned,
        }
    }

    /// The bytes, copied out of the mapping first if they are there.
    fn owned(&mut self) -> &mut Vec<u8> {
        if let Some((map, offset)) = self.mapped.take() {
            self.owned.clear();
            self.owned
                .extend_from_slice(&map.bytes()[offset..offset + SLOT_SIZE]);
        }
        &mut self.owned
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The records of a slot read from track (`cyl`, `head`), checked as
/// [`Track::decode_slot`] documents: size, checksum (unless `checksum` is
/// false: the caller verified this slot before), home address, record
/// layout. An all-zero slot is an unformatted track (no records).
pub(crate) fn locate(
    slot: &[u8],
    cyl: u16,
    head: u16,
    checksum: bool,
) -> Result<Vec<RecordSpan>, TrackError> {
    if slot.len() != SLOT_SIZE {
        return Err(TrackError::Malformed("slot has the wrong size"));
    }
    if slot.iter().all(|&b| b == 0) {
        return Ok(Vec::new());
    }
    if checksum && le_u32(&slot[0..4]) != crc32(&slot[4..]) {
        return Err(TrackError::Checksum);
    }
    let found_cyl = u16::from_le_bytes([slot[4], slot[5]]);
    let found_head = u16::from_le_bytes([slot[6], slot[7]]);
    if (found_cyl, found_head) != (cyl, head) {
        return Err(TrackError::WrongHomeAddress {
            cyl: found_cyl,
            head: found_head,
        });
    }
    let used = usize::try_from(le_u32(&slot[8..12]))
        .map_err(|_| TrackError::Malformed("used length out of range"))?;
    let count = le_u32(&slot[12..16]);
    if used > MAX_TRACK_BYTES {
        return Err(TrackError::Malformed("used length exceeds the slot"));
    }
    let end_of_body = TRACK_HEADER_LEN + used;
    let mut records = Vec::with_capacity(16);
    let mut pos = TRACK_HEADER_LEN;
    while pos < end_of_body {
        let c = slot
            .get(pos..pos + COUNT_LEN)
            .filter(|_| pos + COUNT_LEN <= end_of_body)
            .ok_or(TrackError::Malformed("count field crosses the used length"))?;
        let kl = usize::from(c[5]);
        let dl = usize::from(u16::from_be_bytes([c[6], c[7]]));
        let key_at = pos + COUNT_LEN;
        let data_at = key_at + kl;
        let end = data_at + dl;
        if end > end_of_body {
            return Err(TrackError::Malformed("record crosses the used length"));
        }
        let mut field = [0; COUNT_LEN];
        field.copy_from_slice(c);
        records.push(RecordSpan {
            count: field,
            key: key_at..data_at,
            data: data_at..end,
        });
        pos = end;
    }
    if u32::try_from(records.len()).ok() != Some(count) {
        return Err(TrackError::Malformed("record count does not match"));
    }
    match records.first() {
        None => Err(TrackError::Malformed("formatted slot without records")),
        Some(r0) if r0.record() != 0 => Err(TrackError::MissingR0(r0.record())),
        Some(_) => Ok(records),
    }
}

impl TrackView {
    /// Checks and indexes `slot`, read from track (`cyl`, `head`).
    pub fn parse(slot: Vec<u8>, cyl: u16, head: u16) -> Result<Self, TrackError> {
        let records = locate(&slot, cyl, head, true)?;
        Ok(Self {
            slot: Slot {
                mapped: None,
                owned: slot,
            },
            records,
        })
    }

    /// Indexes the slot of track (`cyl`, `head`) at `offset` of the image's
    /// mapping, in place; with `checksum`, verifies it first.
    pub(crate) fn parse_mapped(
        map: Arc<MappedFile>,
        offset: usize,
        cyl: u16,
        head: u16,
        checksum: bool,
        buffer: Vec<u8>,
    ) -> Result<Self, TrackError> {
        let slot = map
            .bytes()
            .get(offset..offset.saturating_add(SLOT_SIZE))
            .ok_or(TrackError::Malformed("slot outside the image"))?;
        let records = locate(slot, cyl, head, checksum)?;
        Ok(Self {
            slot: Slot {
                mapped: Some((map, offset)),
                owned: buffer,
            },
            records,
        })
    }

    /// The slot of `track` at (`cyl`, `head`).
    pub fn from_track(track: &Track, cyl: u16, head: u16) -> Result<Self, TrackError> {
        Self::parse(track.encode_slot(cyl, head)?, cyl, head)
    }

    /// The records, R0 first (none when unformatted).
    pub fn records(&self) -> &[RecordSpan] {
        &self.records
    }

    /// Key field of record `i`.
    pub fn key(&self, i: usize) -> &[u8] {
        &self.slot.bytes()[self.records[i].key.clone()]
    }

    /// Data field of record `i`.
    pub fn data(&self, i: usize) -> &[u8] {
        &self.slot.bytes()[self.records[i].data.clone()]
    }

    /// Key and data fields of record `i`, to update in place (lengths
    /// stay); [`TrackView::seal`] must follow before the slot is stored.
    pub fn key_data_mut(&mut self, i: usize) -> (&mut [u8], &mut [u8]) {
        let key = self.records[i].key.clone();
        let data = self.records[i].data.clone();
        let (front, back) = self.slot.owned().split_at_mut(data.start);
        (&mut front[key], &mut back[..data.len()])
    }

    /// Recompute the checksum after in-place updates.
    pub fn seal(&mut self) {
        if !self.records.is_empty() {
            let slot = self.slot.owned();
            let crc = crc32(&slot[4..]);
            slot[0..4].copy_from_slice(&crc.to_le_bytes());
        }
    }

    /// The records as an owned [`Track`] (to change its layout).
    pub fn to_track(&self) -> Track {
        Track {
            records: (0..self.records.len())
                .map(|i| {
                    let c = &self.records[i].count;
                    super::Record::new(
                        u16::from_be_bytes([c[0], c[1]]),
                        u16::from_be_bytes([c[2], c[3]]),
                        c[4],
                        self.key(i).to_vec(),
                        self.data(i).to_vec(),
                    )
                })
                .collect(),
        }
    }

    /// Bytes of header and records (the rest of the slot is zero).
    pub fn used_len(&self) -> usize {
        self.records.last().map_or(TRACK_HEADER_LEN, |r| r.data.end)
    }

    /// The slot bytes, as stored.
    pub fn slot(&self) -> &[u8] {
        self.slot.bytes()
    }

    /// Give the slot buffer back for reuse.
    pub fn into_slot(self) -> Vec<u8> {
        self.slot.owned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sim::ckd::Record;

    fn sample() -> Track {
        Track {
            records: vec![
                Record::r0(3, 7),
                Record::new(3, 7, 1, b"KEY".to_vec(), vec![1, 2, 3, 4]),
                Record::new(3, 7, 2, Vec::new(), vec![9; 4096]),
            ],
        }
    }

    #[test]
    fn view_matches_the_track_and_updates_in_place() {
        let mut view = TrackView::from_track(&sample(), 3, 7).unwrap();
        assert_eq!(view.to_track(), sample());
        assert_eq!(view.records()[1].count, [0, 3, 0, 7, 1, 3, 0, 4]);
        assert_eq!(view.key(1), b"KEY");
        assert_eq!(view.data(2), &[9; 4096][..]);
        let (key, data) = view.key_data_mut(1);
        key.copy_from_slice(b"NEW");
        data.copy_from_slice(&[5, 6, 7, 8]);
        view.seal();
        let track = Track::decode_slot(view.slot(), 3, 7).unwrap();
        assert_eq!(track.records[1].key, b"NEW");
        assert_eq!(track.records[1].data, vec![5, 6, 7, 8]);
    }

    #[test]
    fn unsealed_changes_are_a_checksum_error() {
        let mut view = TrackView::from_track(&sample(), 3, 7).unwrap();
        view.key_data_mut(2).1[0] = 0;
        assert_eq!(
            TrackView::parse(view.slot().to_vec(), 3, 7).unwrap_err(),
            TrackError::Checksum
        );
    }

    #[test]
    fn unformatted_slot_has_no_records() {
        let view = TrackView::parse(vec![0; SLOT_SIZE], 0, 0).unwrap();
        assert!(view.records().is_empty());
        assert_eq!(view.to_track(), Track::unformatted());
    }
}
