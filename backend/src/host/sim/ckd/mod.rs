//! The on-disk image of an emulated IBM 3390 ECKD DASD (docs/ckd-image.md).
//!
//! [`CkdImage`] is a file of fixed-size track slots, each holding a whole
//! track's count-key-data records behind a checksummed header; [`cdl`]
//! formats an image in the compatible disk layout Linux expects and maps
//! the 4 KiB blocks of its partition; [`dasd`] is the 3390 device model
//! the simulated subchannel runs channel programs against, with its
//! self-description in [`identity`].

pub mod cdl;
pub mod dasd;
pub mod identity;
mod image;
pub mod track;
pub mod view;

use thiserror::Error;

pub use self::image::{CkdImage, DATA_OFFSET, HEADER_SIZE, MAGIC, VERSION};
pub use self::track::{Record, Track, TrackError};
pub use self::view::{RecordSpan, TrackView};

/// Device type of the emulated DASD.
pub const DEVICE_TYPE: u16 = 0x3390;
/// Tracks per cylinder of a 3390.
pub const HEADS: u16 = 15;
/// Largest cylinder count this format accepts (the largest count a
/// non-EAV volume's two-byte cylinder fields describe).
pub const MAX_CYLINDERS: u32 = 65_520;

/// An unusable geometry.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GeometryError {
    /// No cylinders.
    #[error("a volume needs at least one cylinder")]
    ZeroCylinders,
    /// Too many cylinders.
    #[error("{0} cylinders exceed the maximum of {MAX_CYLINDERS}")]
    TooManyCylinders(u32),
    /// A 3390 model this format does not know.
    #[error("unknown 3390 model {0} (known: 3, 9, 27)")]
    UnknownModel(u32),
    /// A CDL volume needs track 0, track 1 and at least one data track.
    #[error("too small for a CDL volume")]
    TooSmall,
}

/// Geometry of a 3390 volume: its cylinder count (always 15 heads) and the
/// model number it was created as (0 for a custom size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    model: u8,
    cylinders: u16,
}

impl Geometry {
    /// The standard 3390 models: 3 (3339 cylinders), 9 (10017), 27 (32760).
    pub fn model(model: u32) -> Result<Self, GeometryError> {
        let cylinders = match model {
            3 => 3339,
            9 => 10_017,
            27 => 32_760,
            other => return Err(GeometryError::UnknownModel(other)),
        };
        let model = u8::try_from(model).map_err(|_| GeometryError::UnknownModel(model))?;
        Ok(Self { model, cylinders })
    }

    /// A custom size of `cylinders` (1 to [`MAX_CYLINDERS`]).
    pub fn with_cylinders(cylinders: u32) -> Result<Self, GeometryError> {
        Self::from_parts(0, cylinders)
    }

    /// A geometry as stored in an image header.
    pub(crate) fn from_parts(model: u8, cylinders: u32) -> Result<Self, GeometryError> {
        if cylinders == 0 {
            return Err(GeometryError::ZeroCylinders);
        }
        if cylinders > MAX_CYLINDERS {
            return Err(GeometryError::TooManyCylinders(cylinders));
        }
        if !matches!(model, 0 | 3 | 9 | 27) {
            return Err(GeometryError::UnknownModel(u32::from(model)));
        }
        let cylinders =
            u16::try_from(cylinders).map_err(|_| GeometryError::TooManyCylinders(cylinders))?;
        Ok(Self { model, cylinders })
    }

    /// Model number (3, 9, 27), or 0 for a custom size.
    pub fn model_number(&self) -> u8 {
        self.model
    }

    /// Number of cylinders.
    pub fn cylinders(&self) -> u16 {
        self.cylinders
    }

    /// Tracks per cylinder (15).
    pub fn heads(&self) -> u16 {
        HEADS
    }

    /// Total number of tracks.
    pub fn tracks(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(HEADS)
    }

    /// Linear track number of (`cyl`, `head`), or `None` outside the volume.
    pub fn track_index(&self, cyl: u16, head: u16) -> Option<u64> {
        (cyl < self.cylinders && head < HEADS)
            .then(|| u64::from(cyl) * u64::from(HEADS) + u64::from(head))
    }

    /// Cylinder and head of linear track `track`, or `None` outside the
    /// volume.
    pub fn track_address(&self, track: u64) -> Option<(u16, u16)> {
        if track >= self.tracks() {
            return None;
        }
        let cyl = u16::try_from(track / u64::from(HEADS)).ok()?;
        let head = u16::try_from(track % u64::from(HEADS)).ok()?;
        Some((cyl, head))
    }
}

/// Errors of image files.
#[derive(Debug, Error)]
pub enum CkdError {
    /// The file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Not an image of this format.
    #[error("not a 3390 CKD image (bad magic)")]
    BadMagic,
    /// An image of a format version this program does not read.
    #[error("unsupported image format version {0} (this program reads version {VERSION})")]
    UnsupportedVersion(u32),
    /// The header checksum does not match.
    #[error("damaged image header (checksum mismatch)")]
    HeaderChecksum,
    /// The header describes something other than a 3390 in this format.
    #[error("damaged image header: {0}")]
    BadHeader(&'static str),
    /// The header's geometry is unusable.
    #[error("bad geometry: {0}")]
    Geometry(#[from] GeometryError),
    /// The file is shorter than the header (or its tracks) require.
    #[error("truncated image: {actual} bytes, expected {expected}")]
    Truncated {
        /// Expected file size.
        expected: u64,
        /// Actual file size.
        actual: u64,
    },
    /// The file is longer than its geometry accounts for.
    #[error("image size {actual} bytes does not match its geometry ({expected} bytes)")]
    SizeMismatch {
        /// Expected file size.
        expected: u64,
        /// Actual file size.
        actual: u64,
    },
    /// Part of the mapped image could not be loaded while a program read
    /// it (an I/O error of the host's disk, or the file truncated by
    /// another process): the bytes handed out were zeros.
    #[error("{0}: part of the image could not be read (host I/O error or truncated file)")]
    PageIn(String),
    /// A track address outside the volume.
    #[error("no track at cylinder {cyl} head {head}")]
    NoSuchTrack {
        /// Cylinder.
        cyl: u16,
        /// Head.
        head: u16,
    },
    /// A track could not be stored or was found damaged.
    #[error("track at cylinder {cyl} head {head}: {source}")]
    Track {
        /// Cylinder.
        cyl: u16,
        /// Head.
        head: u16,
        /// What is wrong.
        source: TrackError,
    },
    /// The image was opened read-only.
    #[error("image is read-only")]
    ReadOnly,
    /// Another process (or open) has the image open for writing.
    #[error("{0} is in use by another process (one writer at a time)")]
    InUse(String),
    /// A volume serial that is not 1–6 characters of A–Z, 0–9, @, # or $.
    #[error("invalid volume serial {0:?} (1-6 characters A-Z, 0-9, @, #, $)")]
    InvalidVolser(String),
    /// A track of the data area is not formatted with 12 × 4096-byte records.
    #[error(
        "track at cylinder {cyl} head {head} is not a CDL data track (12 records of 4096 bytes)"
    )]
    NotDataTrack {
        /// Cylinder.
        cyl: u16,
        /// Head.
        head: u16,
    },
}

impl CkdError {
    /// Whether a device should report this as a data check: the track's
    /// contents are damaged (torn write, corruption), not the request.
    pub fn is_data_check(&self) -> bool {
        matches!(self, Self::PageIn(_))
            || matches!(self, Self::Track { source, .. } if !matches!(source,
            TrackError::MissingR0(_)
                | TrackError::KeyTooLong { .. }
                | TrackError::DataTooLong { .. }
                | TrackError::TooLong { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models() {
        assert_eq!(Geometry::model(3).unwrap().cylinders(), 3339);
        assert_eq!(Geometry::model(9).unwrap().tracks(), 150_255);
        assert_eq!(Geometry::model(27).unwrap().cylinders(), 32_760);
        assert_eq!(Geometry::model(4), Err(GeometryError::UnknownModel(4)));
    }

    #[test]
    fn cylinder_limits() {
        assert_eq!(
            Geometry::with_cylinders(0),
            Err(GeometryError::ZeroCylinders)
        );
        assert_eq!(
            Geometry::with_cylinders(65_521),
            Err(GeometryError::TooManyCylinders(65_521))
        );
        let g = Geometry::with_cylinders(65_520).unwrap();
        assert_eq!(g.model_number(), 0);
        assert_eq!(g.track_address(g.tracks() - 1), Some((65_519, 14)));
        assert_eq!(g.track_address(g.tracks()), None);
    }

    #[test]
    fn track_index_round_trip() {
        let g = Geometry::with_cylinders(10).unwrap();
        assert_eq!(g.track_index(2, 3), Some(33));
        assert_eq!(g.track_address(33), Some((2, 3)));
        assert_eq!(g.track_index(10, 0), None);
        assert_eq!(g.track_index(0, 15), None);
    }
}
