//! Compatible disk layout (CDL) at 4 KiB blocks, as `dasdfmt -d cdl -b
//! 4096` followed by `fdasd -a` leaves a 3390, and the mapping of Linux's
//! partition blocks onto records.
//!
//! * Track 0: R1 IPL1 (key 4, data 24), R2 IPL2 (key 4, data 144), R3 VOL1
//!   (key 4, data 80), R4–R12 data records of 4096 bytes.
//! * Track 1 (the VTOC): R1–R12 with 44-byte keys and 96-byte data: R1 the
//!   Format-4 DSCB, R2 the Format-5 DSCB, R3 one Format-1 DSCB whose first
//!   extent covers track 2 to the last track, the rest zero.
//! * Every other track: R1–R12 of 4096 bytes, key length 0.
//!
//! Multi-byte fields in labels are big-endian, text is EBCDIC.

use std::time::{SystemTime, UNIX_EPOCH};

use super::track::{Record, Track};
use super::{CkdError, CkdImage, Geometry, GeometryError};

/// Block size of the layout.
pub const BLOCK_SIZE: usize = 4096;
/// 4 KiB records per 3390 track.
pub const RECORDS_PER_TRACK: u8 = 12;
/// First track of the partition data area.
pub const DATA_START_TRACK: u64 = 2;
/// Key and data length of a DSCB on the VTOC track.
pub const DSCB_KEY_LEN: usize = 44;
/// Data length of a DSCB (the 140-byte DSCB minus its key).
pub const DSCB_DATA_LEN: usize = 96;
/// Track length the Format-4 DSCB records for a 3390.
pub const DASD_3390_TRACK_LENGTH: u16 = 0xE5A2;

const IPL1_KEY: [u8; 4] = [0xC9, 0xD7, 0xD3, 0xF1];
const IPL2_KEY: [u8; 4] = [0xC9, 0xD7, 0xD3, 0xF2];
const VOL1_KEY: [u8; 4] = [0xE5, 0xD6, 0xD3, 0xF1];
const EBCDIC_BLANK: u8 = 0x40;

/// Where a block of the data area lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLocation {
    /// Cylinder.
    pub cyl: u16,
    /// Head.
    pub head: u16,
    /// Record number (1–12).
    pub record: u8,
}

/// A creation date as DSCBs store it: years since 1900 and day of the year
/// (0-based, as fdasd writes `tm_yday`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelDate {
    /// Years since 1900.
    pub year: u8,
    /// Day of the year, 0-based.
    pub day: u16,
}

impl LabelDate {
    /// Today's date (UTC).
    pub fn today() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self::from_days_since_epoch(secs / 86_400)
    }

    fn from_days_since_epoch(mut days: u64) -> Self {
        let mut year: u64 = 1970;
        loop {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let len = if leap { 366 } else { 365 };
            if days < len {
                break;
            }
            days -= len;
            year += 1;
        }
        Self {
            year: u8::try_from(year - 1900).unwrap_or(u8::MAX),
            day: u16::try_from(days).unwrap_or(0),
        }
    }

    fn bytes(self) -> [u8; 3] {
        let d = self.day.to_be_bytes();
        [self.year, d[0], d[1]]
    }
}

/// Number of 4 KiB blocks in the partition data area (track 2 to the end).
pub fn data_blocks(geometry: &Geometry) -> u64 {
    geometry.tracks().saturating_sub(DATA_START_TRACK) * u64::from(RECORDS_PER_TRACK)
}

/// Record holding block `block` of the data area (0 = track 2 record 1),
/// or `None` past the end.
pub fn block_location(geometry: &Geometry, block: u64) -> Option<BlockLocation> {
    if block >= data_blocks(geometry) {
        return None;
    }
    let per_track = u64::from(RECORDS_PER_TRACK);
    let (cyl, head) = geometry.track_address(DATA_START_TRACK + block / per_track)?;
    let record = u8::try_from(block % per_track + 1).ok()?;
    Some(BlockLocation { cyl, head, record })
}

fn ebcdic(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'I' => 0xC1 + (c - b'A'),
        b'J'..=b'R' => 0xD1 + (c - b'J'),
        b'S'..=b'Z' => 0xE2 + (c - b'S'),
        b'0'..=b'9' => 0xF0 + (c - b'0'),
        b' ' => EBCDIC_BLANK,
        b'.' => 0x4B,
        b'@' => 0x7C,
        b'#' => 0x7B,
        b'$' => 0x5B,
        _ => return None,
    })
}

/// EBCDIC of `text` padded with blanks to `len` bytes (text must use the
/// characters [`ebcdic`] knows and fit).
fn ebcdic_padded(text: &str, len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = text.bytes().filter_map(ebcdic).take(len).collect();
    out.resize(len, EBCDIC_BLANK);
    out
}

/// Checks and normalizes (upper case) a volume serial.
pub fn check_volser(volser: &str) -> Result<String, CkdError> {
    let upper = volser.to_ascii_uppercase();
    let ok = (1..=6).contains(&upper.len())
        && upper
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || b"@#$".contains(&c));
    if ok {
        Ok(upper)
    } else {
        Err(CkdError::InvalidVolser(volser.to_owned()))
    }
}

/// IPL1 data: a disabled-wait PSW, then READ (0x06) of the IPL2 record's
/// 144 bytes to 0x800 with command chaining and SLI, then TIC to 0x800.
/// Until a boot loader (zipl) replaces it, IPL ends in a disabled wait.
fn ipl1_data() -> Vec<u8> {
    vec![
        0x00, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // PSW: EC mode, wait
        0x06, 0x00, 0x08, 0x00, 0x60, 0x00, 0x00, 0x90, // READ 144 bytes to 0x800
        0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // TIC to 0x800
    ]
}

/// VOL1 label data (80 bytes).
fn vol1_data(volser: &str) -> Vec<u8> {
    let mut d = vec![EBCDIC_BLANK; 80];
    d[0..4].copy_from_slice(&VOL1_KEY);
    d[4..10].copy_from_slice(&ebcdic_padded(volser, 6));
    d[10] = 0xC0; // security byte
    d[11..16].copy_from_slice(&[0x00, 0x00, 0x00, 0x01, 0x01]); // VTOC at CCHHR 0/1/1
    d
}

/// Track 0: R0, IPL1, IPL2, VOL1 and nine 4 KiB records.
fn track0(volser: &str) -> Track {
    let mut records = vec![
        Record::r0(0, 0),
        Record::new(0, 0, 1, IPL1_KEY.to_vec(), ipl1_data()),
        Record::new(0, 0, 2, IPL2_KEY.to_vec(), vec![0; 144]),
        Record::new(0, 0, 3, VOL1_KEY.to_vec(), vol1_data(volser)),
    ];
    for r in 4..=RECORDS_PER_TRACK {
        records.push(Record::new(0, 0, r, Vec::new(), vec![0; BLOCK_SIZE]));
    }
    Track { records }
}

fn extent(first: (u16, u16), last: (u16, u16)) -> [u8; 10] {
    let mut e = [0; 10];
    e[0] = 0x01; // extent on cylinder boundaries or not: "data set extent"
    e[1] = 0x00; // sequence number
    e[2..4].copy_from_slice(&first.0.to_be_bytes());
    e[4..6].copy_from_slice(&first.1.to_be_bytes());
    e[6..8].copy_from_slice(&last.0.to_be_bytes());
    e[8..10].copy_from_slice(&last.1.to_be_bytes());
    e
}

/// Offset within a DSCB's data of DSCB byte `offset` (which counts the key).
const fn data_at(offset: usize) -> usize {
    offset - DSCB_KEY_LEN
}

fn format4(geometry: &Geometry) -> Record {
    let mut d = vec![0; DSCB_DATA_LEN];
    d[data_at(44)] = 0xF4;
    // Highest Format-1 DSCB: CCHHR 0/1/3.
    d[data_at(45)..data_at(50)].copy_from_slice(&[0, 0, 0, 1, 3]);
    // Unused DSCBs on the VTOC track: 12 - F4 - F5 - one F1.
    d[data_at(50)..data_at(52)].copy_from_slice(&9u16.to_be_bytes());
    d[data_at(59)] = 0x01; // one VTOC extent
    d[data_at(62)..data_at(64)].copy_from_slice(&geometry.cylinders().to_be_bytes());
    d[data_at(64)..data_at(66)].copy_from_slice(&geometry.heads().to_be_bytes());
    d[data_at(66)..data_at(68)].copy_from_slice(&DASD_3390_TRACK_LENGTH.to_be_bytes());
    d[data_at(71)] = 0x30; // device flags
    d[data_at(74)] = RECORDS_PER_TRACK; // DSCBs per track
    d[data_at(105)..data_at(115)].copy_from_slice(&extent((0, 1), (0, 1)));
    Record::new(0, 1, 1, vec![0x04; DSCB_KEY_LEN], d)
}

fn format5() -> Record {
    let mut key = vec![0; DSCB_KEY_LEN];
    key[0..4].copy_from_slice(&[0x05; 4]);
    let mut d = vec![0; DSCB_DATA_LEN];
    d[data_at(44)] = 0xF5;
    Record::new(0, 1, 2, key, d)
}

fn format1(geometry: &Geometry, volser: &str, date: LabelDate) -> Result<Record, CkdError> {
    let last = geometry
        .track_address(geometry.tracks() - 1)
        .ok_or(GeometryError::TooSmall)?;
    let key = ebcdic_padded(&format!("LINUX.V{volser}.PART0001.NATIVE"), DSCB_KEY_LEN);
    let mut d = vec![0; DSCB_DATA_LEN];
    d[data_at(44)] = 0xF1;
    d[data_at(45)..data_at(51)].copy_from_slice(&ebcdic_padded(volser, 6));
    d[data_at(51)..data_at(53)].copy_from_slice(&1u16.to_be_bytes()); // volume sequence
    d[data_at(53)..data_at(56)].copy_from_slice(&date.bytes()); // creation
    d[data_at(56)..data_at(59)].copy_from_slice(&[0x63, 0x01, 0x6D]); // expires 99/365
    d[data_at(59)] = 0x01; // one extent
    d[data_at(62)..data_at(75)].copy_from_slice(&ebcdic_padded("IBM LINUX", 13));
    d[data_at(75)..data_at(78)].copy_from_slice(&date.bytes()); // last referenced
    d[data_at(84)] = 0x88; // record format
    let block = u16::try_from(BLOCK_SIZE).unwrap_or(u16::MAX);
    d[data_at(86)..data_at(88)].copy_from_slice(&block.to_be_bytes());
    d[data_at(88)..data_at(90)].copy_from_slice(&block.to_be_bytes());
    d[data_at(93)] = 0x80; // last volume of the data set
    d[data_at(94)] = 0x80; // secondary allocation flags
    d[data_at(105)..data_at(115)].copy_from_slice(&extent((0, 2), last));
    Ok(Record::new(0, 1, 3, key, d))
}

/// Track 1: the VTOC.
fn track1(geometry: &Geometry, volser: &str, date: LabelDate) -> Result<Track, CkdError> {
    let mut records = vec![
        Record::r0(0, 1),
        format4(geometry),
        format5(),
        format1(geometry, volser, date)?,
    ];
    for r in 4..=RECORDS_PER_TRACK {
        records.push(Record::new(
            0,
            1,
            r,
            vec![0; DSCB_KEY_LEN],
            vec![0; DSCB_DATA_LEN],
        ));
    }
    Ok(Track { records })
}

/// A data track whose twelve records hold `blocks` (12 × 4096 bytes).
pub fn data_track(cyl: u16, head: u16, blocks: &[u8]) -> Track {
    let mut records = vec![Record::r0(cyl, head)];
    for (chunk, r) in blocks.chunks(BLOCK_SIZE).zip(1..=RECORDS_PER_TRACK) {
        let mut data = chunk.to_vec();
        data.resize(BLOCK_SIZE, 0);
        records.push(Record::new(cyl, head, r, Vec::new(), data));
    }
    Track { records }
}

/// The twelve blocks of data track (`cyl`, `head`), checking that it is
/// formatted as CDL data tracks are (R0, then R1–R12 with key length 0,
/// 4096 data bytes and matching CCHHR).
pub fn data_track_blocks(track: &Track, cyl: u16, head: u16) -> Result<Vec<u8>, CkdError> {
    let ok = track.records.len() == usize::from(RECORDS_PER_TRACK) + 1
        && track.records.iter().zip(0u8..).all(|(r, n)| {
            r.cyl == cyl
                && r.head == head
                && r.record == n
                && r.key.is_empty()
                && (n == 0 || r.data.len() == BLOCK_SIZE)
        });
    if !ok {
        return Err(CkdError::NotDataTrack { cyl, head });
    }
    Ok(track.records[1..]
        .iter()
        .flat_map(|r| r.data.iter().copied())
        .collect())
}

/// Reads the volume serial from a CDL track 0, if it has a VOL1 label.
pub fn read_volser(track0: &Track) -> Option<String> {
    let r3 = track0.records.get(3)?;
    if r3.key != VOL1_KEY || r3.data.len() != 80 || r3.data[0..4] != VOL1_KEY {
        return None;
    }
    let text: String = r3.data[4..10]
        .iter()
        .filter_map(|&e| (0u8..=127).find(|&a| ebcdic(a) == Some(e)).map(char::from))
        .collect();
    Some(text.trim_end().to_owned())
}

/// Formats the whole volume in CDL with 4 KiB blocks and one partition
/// covering the data area, as `dasdfmt -d cdl -b 4096` and `fdasd -a` do.
/// `progress(done, total)` is called after each track (total = tracks).
/// Tracks are written without individual flushes and synced at the end.
pub fn format_cdl(
    image: &mut CkdImage,
    volser: &str,
    progress: impl FnMut(u64, u64),
) -> Result<(), CkdError> {
    format_cdl_dated(image, volser, LabelDate::today(), progress)
}

/// [`format_cdl`] with a given creation date for the Format-1 DSCB.
pub fn format_cdl_dated(
    image: &mut CkdImage,
    volser: &str,
    date: LabelDate,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), CkdError> {
    let volser = check_volser(volser)?;
    let geometry = image.geometry();
    let total = geometry.tracks();
    if total <= DATA_START_TRACK {
        return Err(GeometryError::TooSmall.into());
    }
    let zeros = vec![0; BLOCK_SIZE * usize::from(RECORDS_PER_TRACK)];
    for t in 0..total {
        let (cyl, head) = geometry
            .track_address(t)
            .ok_or(CkdError::NoSuchTrack { cyl: 0, head: 0 })?;
        let track = match t {
            0 => track0(&volser),
            1 => track1(&geometry, &volser, date)?,
            _ => data_track(cyl, head, &zeros),
        };
        image.write_track_deferred(cyl, head, &track)?;
        progress(t + 1, total);
    }
    image.sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sim::ckd::image::tests::TempImage;

    const DATE: LabelDate = LabelDate { year: 126, day: 41 };

    fn formatted(name: &str) -> (TempImage, CkdImage) {
        let tmp = TempImage::new(name);
        let mut img = CkdImage::create(&tmp.path, Geometry::with_cylinders(10).unwrap()).unwrap();
        format_cdl_dated(&mut img, "lnx001", DATE, |_, _| {}).unwrap();
        (tmp, img)
    }

    #[test]
    fn label_date() {
        assert_eq!(
            LabelDate::from_days_since_epoch(0),
            LabelDate { year: 70, day: 0 }
        );
        // 2000-03-01: 2000 is a leap year, so day 31 + 29 = 60.
        assert_eq!(
            LabelDate::from_days_since_epoch(11_017),
            LabelDate { year: 100, day: 60 }
        );
    }

    #[test]
    fn volser_rules() {
        assert_eq!(check_volser("lnx#1").unwrap(), "LNX#1");
        assert!(check_volser("").is_err());
        assert!(check_volser("TOOLONG").is_err());
        assert!(check_volser("A B").is_err());
    }

    #[test]
    fn track0_layout() {
        let (_tmp, img) = formatted("cdl-t0");
        let t = img.read_track(0, 0).unwrap();
        assert_eq!(t.records.len(), 13);
        let lens: Vec<(u8, usize, usize)> = t
            .records
            .iter()
            .map(|r| (r.record, r.key.len(), r.data.len()))
            .collect();
        assert_eq!(
            &lens[..4],
            &[(0, 0, 8), (1, 4, 24), (2, 4, 144), (3, 4, 80)]
        );
        assert!(lens[4..].iter().zip(4u8..).all(|(&l, n)| l == (n, 0, 4096)));
        assert_eq!(t.records[1].key, [0xC9, 0xD7, 0xD3, 0xF1]);
        assert_eq!(t.records[1].data[8], 0x06);
        assert_eq!(t.records[1].data[16], 0x08);
        assert_eq!(t.records[2].key, [0xC9, 0xD7, 0xD3, 0xF2]);
        let vol1 = &t.records[3];
        assert_eq!(vol1.key, [0xE5, 0xD6, 0xD3, 0xF1]);
        let mut want = vec![0x40; 80];
        want[0..4].copy_from_slice(&[0xE5, 0xD6, 0xD3, 0xF1]);
        want[4..10].copy_from_slice(&[0xD3, 0xD5, 0xE7, 0xF0, 0xF0, 0xF1]); // LNX001
        want[10] = 0xC0;
        want[11..16].copy_from_slice(&[0, 0, 0, 1, 1]);
        assert_eq!(vol1.data, want);
        assert_eq!(read_volser(&t).as_deref(), Some("LNX001"));
        assert!(t.records.iter().all(|r| r.cyl == 0 && r.head == 0));
    }

    #[test]
    fn vtoc_layout() {
        let (_tmp, img) = formatted("cdl-t1");
        let t = img.read_track(0, 1).unwrap();
        assert_eq!(t.records.len(), 13);
        assert!(t.records[1..].iter().zip(1u8..).all(|(r, n)| r.record == n
            && r.key.len() == 44
            && r.data.len() == 96
            && r.cyl == 0
            && r.head == 1));

        let f4 = &t.records[1];
        assert_eq!(f4.key, vec![0x04; 44]);
        let mut d = vec![0; 96];
        d[0] = 0xF4;
        d[1..6].copy_from_slice(&[0, 0, 0, 1, 3]);
        d[6..8].copy_from_slice(&[0, 9]);
        d[15] = 1;
        d[18..20].copy_from_slice(&[0, 10]);
        d[20..22].copy_from_slice(&[0, 15]);
        d[22..24].copy_from_slice(&[0xE5, 0xA2]);
        d[27] = 0x30;
        d[30] = 12;
        d[61..71].copy_from_slice(&[1, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(f4.data, d);

        let f5 = &t.records[2];
        let mut k = vec![0; 44];
        k[..4].copy_from_slice(&[5; 4]);
        assert_eq!(f5.key, k);
        let mut d = vec![0; 96];
        d[0] = 0xF5;
        assert_eq!(f5.data, d);

        let f1 = &t.records[3];
        assert_eq!(f1.key, ebcdic_padded("LINUX.VLNX001.PART0001.NATIVE", 44));
        assert_eq!(f1.key[..5], [0xD3, 0xC9, 0xD5, 0xE4, 0xE7]); // LINUX
        assert_eq!(f1.data[0], 0xF1);
        assert_eq!(f1.data[1..7], [0xD3, 0xD5, 0xE7, 0xF0, 0xF0, 0xF1]);
        assert_eq!(f1.data[7..9], [0, 1]);
        assert_eq!(f1.data[9..12], [126, 0, 41]);
        assert_eq!(f1.data[12..15], [0x63, 0x01, 0x6D]);
        assert_eq!(f1.data[15], 1);
        assert_eq!(f1.data[40], 0x88);
        assert_eq!(f1.data[42..46], [0x10, 0x00, 0x10, 0x00]);
        assert_eq!(f1.data[49..51], [0x80, 0x80]);
        // Extent at DSCB offset 105: track 2 (0/2) to the last track (9/14).
        assert_eq!(f1.data[61..71], [1, 0, 0, 0, 0, 2, 0, 9, 0, 14]);
        assert!(f1.data[71..].iter().all(|&b| b == 0));

        assert!(
            t.records[4..]
                .iter()
                .all(|r| r.key == [0; 44] && r.data == [0; 96])
        );
    }

    #[test]
    fn data_tracks_and_mapping() {
        let (_tmp, img) = formatted("cdl-data");
        let g = img.geometry();
        for (c, h) in [(0, 2), (0, 14), (5, 7), (9, 14)] {
            let t = img.read_track(c, h).unwrap();
            assert_eq!(data_track_blocks(&t, c, h).unwrap(), vec![0; 12 * 4096]);
        }
        assert!(matches!(
            data_track_blocks(&img.read_track(0, 1).unwrap(), 0, 1),
            Err(CkdError::NotDataTrack { cyl: 0, head: 1 })
        ));
        assert_eq!(data_blocks(&g), 148 * 12);
        assert_eq!(
            block_location(&g, 0),
            Some(BlockLocation {
                cyl: 0,
                head: 2,
                record: 1
            })
        );
        assert_eq!(
            block_location(&g, 11),
            Some(BlockLocation {
                cyl: 0,
                head: 2,
                record: 12
            })
        );
        assert_eq!(
            block_location(&g, 12),
            Some(BlockLocation {
                cyl: 0,
                head: 3,
                record: 1
            })
        );
        assert_eq!(
            block_location(&g, 13 * 12 + 5),
            Some(BlockLocation {
                cyl: 1,
                head: 0,
                record: 6
            })
        );
        assert_eq!(
            block_location(&g, data_blocks(&g) - 1),
            Some(BlockLocation {
                cyl: 9,
                head: 14,
                record: 12
            })
        );
        assert_eq!(block_location(&g, data_blocks(&g)), None);
        assert_eq!(
            data_blocks(&Geometry::model(9).unwrap()),
            (150_255 - 2) * 12
        );
    }

    #[test]
    fn progress_is_monotonic_and_complete() {
        let tmp = TempImage::new("cdl-progress");
        let mut img = CkdImage::create(&tmp.path, Geometry::with_cylinders(2).unwrap()).unwrap();
        let mut seen = Vec::new();
        format_cdl(&mut img, "P1", |done, total| seen.push((done, total))).unwrap();
        assert_eq!(seen.len(), 30);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(seen.iter().all(|&(_, t)| t == 30));
        assert_eq!(seen.last(), Some(&(30, 30)));
    }

    #[test]
    fn bad_volser_writes_nothing() {
        let tmp = TempImage::new("cdl-badvol");
        let mut img = CkdImage::create(&tmp.path, Geometry::with_cylinders(1).unwrap()).unwrap();
        assert!(matches!(
            format_cdl(&mut img, "bad vol", |_, _| {}),
            Err(CkdError::InvalidVolser(_))
        ));
        assert_eq!(img.read_track(0, 0).unwrap(), Track::unformatted());
    }
}
