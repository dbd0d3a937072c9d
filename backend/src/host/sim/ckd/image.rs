//! The image file: header and track slots.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::mapped_file::MappedFile;

use super::track::{SLOT_SIZE, TRACK_CAPACITY, TRACK_HEADER_LEN, Track, crc32};
use super::view::TrackView;
use super::{CkdError, DEVICE_TYPE, Geometry, HEADS};

/// First bytes of every image.
pub const MAGIC: [u8; 8] = *b"VUCKD390";
/// Format version written and read.
pub const VERSION: u32 = 1;
/// Meaningful bytes of the header (the rest of its page is zero).
pub const HEADER_SIZE: usize = 44;
/// Offset of track 0's slot: the header occupies the first 4 KiB page.
pub const DATA_OFFSET: u64 = 4096;

/// An open image file.
#[derive(Debug)]
pub struct CkdImage {
    file: File,
    path: PathBuf,
    geometry: Geometry,
    writable: bool,
    /// The whole file, mapped for reads ([`CkdImage::map_for_reads`]).
    map: Option<Arc<MappedFile>>,
    /// One bit per track: its slot's checksum was verified since the image
    /// was opened (or we wrote the slot). A torn slot, which the checksum
    /// is there to catch, can only come from a write cut short before the
    /// image was opened, so a slot is verified once, not at every read.
    verified: Vec<AtomicU64>,
}

/// The error of a failed I/O call; the context is formatted only then (the
/// read path calls this for every track).
fn io_err(context: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> CkdError {
    move |source| CkdError::Io {
        context: context(),
        source,
    }
}

fn slot_size() -> u64 {
    // SLOT_SIZE is a small constant.
    u64::try_from(SLOT_SIZE).unwrap_or(u64::MAX)
}

fn encode_header(geometry: &Geometry) -> [u8; HEADER_SIZE] {
    let mut h = [0; HEADER_SIZE];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..14].copy_from_slice(&DEVICE_TYPE.to_le_bytes());
    h[14..16].copy_from_slice(&u16::from(geometry.model_number()).to_le_bytes());
    h[16..20].copy_from_slice(&u32::from(geometry.cylinders()).to_le_bytes());
    h[20..24].copy_from_slice(&u32::from(HEADS).to_le_bytes());
    h[24..28].copy_from_slice(&u32::try_from(SLOT_SIZE).unwrap_or(u32::MAX).to_le_bytes());
    h[28..32].copy_from_slice(
        &u32::try_from(TRACK_CAPACITY)
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    h[32..40].copy_from_slice(&DATA_OFFSET.to_le_bytes());
    let crc = crc32(&h[0..40]);
    h[40..44].copy_from_slice(&crc.to_le_bytes());
    h
}

fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn decode_header(h: &[u8; HEADER_SIZE]) -> Result<Geometry, CkdError> {
    if h[0..8] != MAGIC {
        return Err(CkdError::BadMagic);
    }
    let version = le32(&h[8..12]);
    if version != VERSION {
        return Err(CkdError::UnsupportedVersion(version));
    }
    if le32(&h[40..44]) != crc32(&h[0..40]) {
        return Err(CkdError::HeaderChecksum);
    }
    if le16(&h[12..14]) != DEVICE_TYPE {
        return Err(CkdError::BadHeader("device type is not 3390"));
    }
    if le32(&h[20..24]) != u32::from(HEADS) {
        return Err(CkdError::BadHeader("heads per cylinder is not 15"));
    }
    if usize::try_from(le32(&h[24..28])).ok() != Some(SLOT_SIZE) {
        return Err(CkdError::BadHeader("unexpected track slot size"));
    }
    if usize::try_from(le32(&h[28..32])).ok() != Some(TRACK_CAPACITY) {
        return Err(CkdError::BadHeader("unexpected track capacity"));
    }
    if u64::from_le_bytes(h[32..40].try_into().unwrap_or([0; 8])) != DATA_OFFSET {
        return Err(CkdError::BadHeader("unexpected data offset"));
    }
    let model = u8::try_from(le16(&h[14..16])).map_err(|_| CkdError::BadHeader("bad model"))?;
    Ok(Geometry::from_parts(model, le32(&h[16..20]))?)
}

impl CkdImage {
    /// File size of an image of `geometry`.
    pub fn file_size(geometry: &Geometry) -> u64 {
        DATA_OFFSET + geometry.tracks() * slot_size()
    }

    /// Creates a new image (the file must not exist) with every track
    /// unformatted. The file is sparse: only the header is written.
    pub fn create(path: impl AsRef<Path>, geometry: Geometry) -> Result<Self, CkdError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(|| format!("create {shown}")))?;
        if !crate::sys::try_lock_exclusive(&file).map_err(io_err(|| format!("lock {shown}")))? {
            return Err(CkdError::InUse(shown));
        }
        let mut page = vec![0; 4096];
        page[..HEADER_SIZE].copy_from_slice(&encode_header(&geometry));
        file.write_all_at(&page, 0)
            .map_err(io_err(|| format!("write header of {shown}")))?;
        file.set_len(Self::file_size(&geometry))
            .map_err(io_err(|| format!("size {shown}")))?;
        file.sync_all()
            .map_err(io_err(|| format!("sync {shown}")))?;
        Ok(Self::opened(file, path, geometry, true))
    }

    /// Opens an image for reading and writing, validating its header and
    /// size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CkdError> {
        Self::open_with(path.as_ref(), true)
    }

    /// Opens an image for reading only.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, CkdError> {
        Self::open_with(path.as_ref(), false)
    }

    fn open_with(path: &Path, writable: bool) -> Result<Self, CkdError> {
        let shown = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(io_err(|| format!("open {shown}")))?;
        // One writer at a time: two processes serving or changing one
        // image would overwrite each other's tracks.
        if writable
            && !crate::sys::try_lock_exclusive(&file).map_err(io_err(|| format!("lock {shown}")))?
        {
            return Err(CkdError::InUse(shown));
        }
        let actual = file
            .metadata()
            .map_err(io_err(|| format!("stat {shown}")))?
            .len();
        if actual < DATA_OFFSET {
            return Err(CkdError::Truncated {
                expected: DATA_OFFSET,
                actual,
            });
        }
        let mut header = [0; HEADER_SIZE];
        file.read_exact_at(&mut header, 0)
            .map_err(io_err(|| format!("read header of {shown}")))?;
        let geometry = decode_header(&header)?;
        let expected = Self::file_size(&geometry);
        if actual < expected {
            return Err(CkdError::Truncated { expected, actual });
        }
        if actual > expected {
            return Err(CkdError::SizeMismatch { expected, actual });
        }
        Ok(Self::opened(file, path.to_path_buf(), geometry, writable))
    }

    fn opened(file: File, path: PathBuf, geometry: Geometry, writable: bool) -> Self {
        let words = usize::try_from(geometry.tracks().div_ceil(64)).unwrap_or(0);
        Self {
            file,
            path,
            geometry,
            writable,
            map: None,
            verified: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Map the image so that reads take records straight from the host's
    /// page cache (one copy into guest memory instead of a read into a
    /// buffer and a copy). Without a mapping (this failed, or a page-in
    /// failed since) tracks are read with pread. Only an image opened for
    /// writing is mapped: its lock is what keeps other writers from
    /// changing bytes under a slice of the mapping, and a read-only open
    /// takes none.
    pub fn map_for_reads(&mut self) {
        if !self.writable {
            return;
        }
        let mapped = usize::try_from(Self::file_size(&self.geometry))
            .map_err(std::io::Error::other)
            // SAFETY: the image is locked (flock) against other writers,
            // and the device model writes a slot only from its own copy of
            // the track, between commands, when no slice of the mapping is
            // held (slices live within one command's data transfer).
            .and_then(|len| unsafe { MappedFile::map(&self.file, len) });
        match mapped {
            Ok(map) => self.map = Some(Arc::new(map)),
            Err(e) => log::warn!(
                "{}: not mapped ({e}); tracks are read with pread",
                self.path.display()
            ),
        }
    }

    /// Whether the data read from the mapping since the last call is good:
    /// [`CkdError::PageIn`] when a page could not be loaded (an I/O error
    /// of the host's disk, or the file truncated behind our lock) and read
    /// as zeros. The mapping is given up then; later reads use pread and
    /// see the error themselves.
    pub fn mapped_reads_good(&mut self) -> Result<(), CkdError> {
        match &self.map {
            Some(map) if map.take_fault() => {
                self.map = None;
                Err(CkdError::PageIn(self.path.display().to_string()))
            }
            _ => Ok(()),
        }
    }

    fn track_verified(&self, track: u64) -> bool {
        let (word, bit) = Self::verified_bit(track);
        self.verified
            .get(word)
            .is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0)
    }

    fn set_verified(&self, track: u64, verified: bool) {
        let (word, bit) = Self::verified_bit(track);
        if let Some(w) = self.verified.get(word) {
            if verified {
                w.fetch_or(bit, Ordering::Relaxed);
            } else {
                w.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    fn verified_bit(track: u64) -> (usize, u64) {
        (
            usize::try_from(track / 64).unwrap_or(usize::MAX),
            1 << (track % 64),
        )
    }

    /// The volume's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Whether the image was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The image file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File offset of the slot of track number `track`.
    fn slot_offset(track: u64) -> u64 {
        DATA_OFFSET + track * slot_size()
    }

    fn track_number(&self, cyl: u16, head: u16) -> Result<u64, CkdError> {
        self.geometry
            .track_index(cyl, head)
            .ok_or(CkdError::NoSuchTrack { cyl, head })
    }

    /// Reads and parses the track at (`cyl`, `head`). A torn or corrupted
    /// slot is a [`CkdError::Track`] with [`TrackError::Checksum`]
    /// (see [`CkdError::is_data_check`]).
    ///
    /// [`TrackError::Checksum`]: super::TrackError::Checksum
    pub fn read_track(&self, cyl: u16, head: u16) -> Result<Track, CkdError> {
        let offset = Self::slot_offset(self.track_number(cyl, head)?);
        let mut slot = vec![0; SLOT_SIZE];
        self.file
            .read_exact_at(&mut slot, offset)
            .map_err(io_err(|| {
                format!("read track {cyl}/{head} of {}", self.path.display())
            }))?;
        Track::decode_slot(&slot, cyl, head).map_err(|source| CkdError::Track { cyl, head, source })
    }

    /// The slot of (`cyl`, `head`) with its records indexed in place: in
    /// the image's mapping when it is mapped (check
    /// [`CkdImage::mapped_reads_good`] after reading it; `buffer` is kept
    /// for copying the slot out to change it), else read into `buffer`
    /// (reused: the device reads track after track without allocating).
    /// From the mapping the checksum is verified the first time the slot
    /// is read after open; with pread, every time. With pread only the
    /// header and the records are read; the rest of the slot is taken as
    /// the zeros the writer stored there (the checksum covers it as such),
    /// which spares copying the unused end of every track. `expected` is the number of bytes the
    /// caller expects the header and records to take (the last track's):
    /// one read when it is right, a second one for the rest when it is
    /// short.
    pub fn read_view(
        &self,
        cyl: u16,
        head: u16,
        mut buffer: Vec<u8>,
        expected: usize,
    ) -> Result<TrackView, CkdError> {
        let track = self.track_number(cyl, head)?;
        let offset = Self::slot_offset(track);
        let checksum = !self.track_verified(track);
        let track_error = |source| CkdError::Track { cyl, head, source };
        if let Some(map) = &self.map {
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            let view = TrackView::parse_mapped(Arc::clone(map), at, cyl, head, checksum, buffer)
                .map_err(track_error)?;
            self.set_verified(track, true);
            return Ok(view);
        }
        let read = |buf: &mut [u8], at: usize| {
            self.file
                .read_exact_at(buf, offset + u64::try_from(at).unwrap_or(u64::MAX))
                .map_err(io_err(|| {
                    format!("read track {cyl}/{head} of {}", self.path.display())
                }))
        };
        buffer.resize(SLOT_SIZE, 0);
        let first = expected.clamp(TRACK_HEADER_LEN, SLOT_SIZE);
        read(&mut buffer[..first], 0)?;
        let used = u32::from_le_bytes([buffer[8], buffer[9], buffer[10], buffer[11]]);
        let need = if buffer[..TRACK_HEADER_LEN].iter().all(|&b| b == 0) {
            // Unformatted (all zero) or damaged: check the whole slot.
            SLOT_SIZE
        } else {
            usize::try_from(used)
                .ok()
                .and_then(|u| u.checked_add(TRACK_HEADER_LEN))
                .map_or(SLOT_SIZE, |n| n.min(SLOT_SIZE))
        };
        if need > first {
            read(&mut buffer[first..need], first)?;
        }
        buffer[need..].fill(0);
        let view = TrackView::parse(buffer, cyl, head).map_err(track_error)?;
        self.set_verified(track, true);
        Ok(view)
    }

    /// Writes a (sealed) slot in one positioned write, without flushing.
    pub fn write_view_deferred(
        &self,
        cyl: u16,
        head: u16,
        view: &TrackView,
    ) -> Result<(), CkdError> {
        if !self.writable {
            return Err(CkdError::ReadOnly);
        }
        self.write_slot(cyl, head, view.slot())
    }

    /// Writes the track at (`cyl`, `head`) durably: the whole slot in one
    /// positioned write, then fdatasync. When this returns, the track has
    /// reached the file.
    pub fn write_track(&self, cyl: u16, head: u16, track: &Track) -> Result<(), CkdError> {
        self.write_track_deferred(cyl, head, track)?;
        self.sync()
    }

    /// Writes the track's slot without flushing: for bulk operations
    /// (formatting, import) that call [`CkdImage::sync`] once at the end.
    pub fn write_track_deferred(&self, cyl: u16, head: u16, track: &Track) -> Result<(), CkdError> {
        if !self.writable {
            return Err(CkdError::ReadOnly);
        }
        let slot = track
            .encode_slot(cyl, head)
            .map_err(|source| CkdError::Track { cyl, head, source })?;
        self.write_slot(cyl, head, &slot)
    }

    /// Store a whole (checksummed) slot in one positioned write. A failed
    /// write may have left the slot torn: it is verified again when read.
    fn write_slot(&self, cyl: u16, head: u16, slot: &[u8]) -> Result<(), CkdError> {
        let track = self.track_number(cyl, head)?;
        let offset = Self::slot_offset(track);
        let written = self.file.write_all_at(slot, offset);
        self.set_verified(track, written.is_ok());
        written.map_err(io_err(|| {
            format!("write track {cyl}/{head} of {}", self.path.display())
        }))
    }

    /// Flushes written tracks to the file (fdatasync).
    pub fn sync(&self) -> Result<(), CkdError> {
        self.file
            .sync_data()
            .map_err(io_err(|| format!("sync {}", self.path.display())))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::host::sim::ckd::{Record, TrackError};

    /// An image path in a per-test directory, removed on drop.
    pub(crate) struct TempImage {
        dir: PathBuf,
        pub(crate) path: PathBuf,
    }

    impl TempImage {
        pub(crate) fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("vuccw-ckd-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("disk.img");
            Self { dir, path }
        }
    }

    impl Drop for TempImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn small() -> Geometry {
        Geometry::with_cylinders(10).unwrap()
    }

    fn patch(path: &Path, offset: u64, bytes: &[u8]) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, offset).unwrap();
    }

    #[test]
    fn create_open_round_trip() {
        let p_tmp = TempImage::new("roundtrip");
        let p = p_tmp.path.clone();
        let img = CkdImage::create(&p, small()).unwrap();
        assert_eq!(img.geometry(), small());
        drop(img);
        let img = CkdImage::open(&p).unwrap();
        assert_eq!(img.geometry(), small());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 4096 + 150 * 57_344);
        assert_eq!(img.read_track(9, 14).unwrap(), Track::unformatted());
        assert!(matches!(
            CkdImage::create(&p, small()),
            Err(CkdError::Io { .. })
        ));
        let g = Geometry::model(9).unwrap();
        let p9_tmp = TempImage::new("model9");
        let p9 = p9_tmp.path.clone();
        CkdImage::create(&p9, g).unwrap();
        assert_eq!(CkdImage::open(&p9).unwrap().geometry(), g);
    }

    #[test]
    fn header_validation() {
        let p_tmp = TempImage::new("header");
        let p = p_tmp.path.clone();
        CkdImage::create(&p, small()).unwrap();
        patch(&p, 0, b"X");
        assert!(matches!(CkdImage::open(&p), Err(CkdError::BadMagic)));
        patch(&p, 0, b"V");
        CkdImage::open(&p).unwrap();
        patch(&p, 8, &2u32.to_le_bytes());
        assert!(matches!(
            CkdImage::open(&p),
            Err(CkdError::UnsupportedVersion(2))
        ));
        patch(&p, 8, &1u32.to_le_bytes());
        patch(&p, 16, &11u32.to_le_bytes());
        assert!(matches!(CkdImage::open(&p), Err(CkdError::HeaderChecksum)));
        patch(&p, 16, &10u32.to_le_bytes());
        CkdImage::open(&p).unwrap();

        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(4096 + 149 * 57_344).unwrap();
        assert!(matches!(
            CkdImage::open(&p),
            Err(CkdError::Truncated { expected, actual })
                if expected == 4096 + 150 * 57_344 && actual == 4096 + 149 * 57_344
        ));
        f.set_len(4096 + 151 * 57_344).unwrap();
        assert!(matches!(
            CkdImage::open(&p),
            Err(CkdError::SizeMismatch { .. })
        ));
        f.set_len(100).unwrap();
        assert!(matches!(
            CkdImage::open(&p),
            Err(CkdError::Truncated { .. })
        ));
    }

    #[test]
    fn bad_geometry_in_header() {
        let p_tmp = TempImage::new("badgeo");
        let p = p_tmp.path.clone();
        CkdImage::create(&p, small()).unwrap();
        let mut h = encode_header(&small());
        h[16..20].copy_from_slice(&0u32.to_le_bytes());
        let crc = crc32(&h[0..40]);
        h[40..44].copy_from_slice(&crc.to_le_bytes());
        patch(&p, 0, &h);
        assert!(matches!(
            CkdImage::open(&p),
            Err(CkdError::Geometry(
                crate::host::sim::ckd::GeometryError::ZeroCylinders
            ))
        ));
    }

    #[test]
    fn durable_write_read_across_reopen() {
        let p_tmp = TempImage::new("durable");
        let p = p_tmp.path.clone();
        let img = CkdImage::create(&p, small()).unwrap();
        let track = Track {
            records: vec![
                Record::r0(4, 2),
                Record::new(4, 2, 1, Vec::new(), vec![0x42; 4096]),
                Record::new(4, 2, 2, b"AB".to_vec(), vec![7; 10]),
            ],
        };
        img.write_track(4, 2, &track).unwrap();
        drop(img);
        let img = CkdImage::open(&p).unwrap();
        assert_eq!(img.read_track(4, 2).unwrap(), track);
        assert_eq!(img.read_track(4, 3).unwrap(), Track::unformatted());
        assert!(matches!(
            img.read_track(10, 0),
            Err(CkdError::NoSuchTrack { cyl: 10, head: 0 })
        ));
        assert!(matches!(
            img.write_track(0, 15, &track),
            Err(CkdError::NoSuchTrack { cyl: 0, head: 15 })
        ));
        drop(img);
        let ro = CkdImage::open_read_only(&p).unwrap();
        assert_eq!(ro.read_track(4, 2).unwrap(), track);
        assert!(matches!(
            ro.write_track(4, 2, &track),
            Err(CkdError::ReadOnly)
        ));
    }

    #[test]
    fn torn_slot_is_a_data_check() {
        let p_tmp = TempImage::new("torn");
        let p = p_tmp.path.clone();
        let img = CkdImage::create(&p, small()).unwrap();
        let track = Track {
            records: vec![
                Record::r0(1, 1),
                Record::new(1, 1, 1, Vec::new(), vec![9; 4096]),
            ],
        };
        img.write_track(1, 1, &track).unwrap();
        drop(img);
        let offset = DATA_OFFSET + 16 * 57_344 + 1000;
        patch(&p, offset, &[0x77]);
        let img = CkdImage::open(&p).unwrap();
        let err = img.read_track(1, 1).unwrap_err();
        assert!(err.is_data_check());
        assert!(matches!(
            err,
            CkdError::Track {
                cyl: 1,
                head: 1,
                source: TrackError::Checksum
            }
        ));
        // Other tracks are unaffected, and rewriting the track repairs it.
        assert_eq!(img.read_track(1, 2).unwrap(), Track::unformatted());
        img.write_track(1, 1, &track).unwrap();
        assert_eq!(img.read_track(1, 1).unwrap(), track);
    }

    #[test]
    fn oversized_track_is_refused() {
        let p_tmp = TempImage::new("oversized");
        let p = p_tmp.path.clone();
        let img = CkdImage::create(&p, small()).unwrap();
        let track = Track {
            records: vec![
                Record::r0(0, 0),
                Record::new(0, 0, 1, Vec::new(), vec![0; 60_000]),
            ],
        };
        let err = img.write_track(0, 0, &track).unwrap_err();
        assert!(matches!(
            err,
            CkdError::Track {
                source: TrackError::TooLong { .. },
                ..
            }
        ));
        assert!(!err.is_data_check());
    }

    #[test]
    fn read_view_reads_the_records_whatever_it_expects() {
        let p_tmp = TempImage::new("view");
        let img = CkdImage::create(&p_tmp.path, small()).unwrap();
        let blocks: Vec<u8> = (0..12 * 4096)
            .map(|i| u8::try_from(i % 253).unwrap())
            .collect();
        let track = crate::host::sim::ckd::cdl::data_track(0, 3, &blocks);
        img.write_track(0, 3, &track).unwrap();
        for expected in [0, 4096, 20_000, 49_280, SLOT_SIZE, usize::MAX] {
            let view = img.read_view(0, 3, vec![0xEE; 100], expected).unwrap();
            assert_eq!(view.to_track(), track, "expected {expected}");
            assert_eq!(view.used_len(), 16 + 16 + 12 * 4104);
            assert!(view.slot()[view.used_len()..].iter().all(|&b| b == 0));
        }
        // Unformatted tracks read as such.
        let view = img.read_view(0, 4, Vec::new(), 4096).unwrap();
        assert!(view.records().is_empty());
    }

    #[test]
    fn read_view_detects_damaged_records_and_ignores_the_unused_end() {
        let p_tmp = TempImage::new("view-damage");
        let p = p_tmp.path.clone();
        let img = CkdImage::create(&p, small()).unwrap();
        let track = crate::host::sim::ckd::cdl::data_track(0, 5, &[7; 4096]);
        img.write_track(0, 5, &track).unwrap();
        let slot = DATA_OFFSET + 5 * 57_344;
        // Bytes past the records are not part of the track.
        patch(&p, slot + 57_000, &[0xAB]);
        assert_eq!(
            img.read_view(0, 5, Vec::new(), 4096).unwrap().to_track(),
            track
        );
        // A torn record is a data check.
        patch(&p, slot + 100, &[0xAB]);
        let err = img.read_view(0, 5, Vec::new(), 60_000).unwrap_err();
        assert!(err.is_data_check(), "{err}");
    }

    #[test]
    fn one_writer_at_a_time() {
        let p_tmp = TempImage::new("lock");
        let first = CkdImage::create(&p_tmp.path, small()).unwrap();
        assert!(matches!(
            CkdImage::open(&p_tmp.path),
            Err(CkdError::InUse(_))
        ));
        CkdImage::open_read_only(&p_tmp.path).unwrap();
        drop(first);
        let second = CkdImage::open(&p_tmp.path).unwrap();
        assert!(matches!(
            CkdImage::open(&p_tmp.path),
            Err(CkdError::InUse(_))
        ));
        drop(second);
        CkdImage::open(&p_tmp.path).unwrap();
    }
}
