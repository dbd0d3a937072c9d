//! `vhost-user-ccw image …`: create, fill, dump and describe 3390 CKD
//! images (docs/ckd-image.md).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use thiserror::Error;

use crate::host::sim::ckd::cdl::{self, BLOCK_SIZE, RECORDS_PER_TRACK};
use crate::host::sim::ckd::{CkdError, CkdImage, Geometry, GeometryError};

/// The `image` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ImageCommand {
    /// Create a new image, formatted in CDL with 4 KiB blocks and one
    /// partition covering the data area (like `dasdfmt -d cdl -b 4096` and
    /// `fdasd -a`).
    Create {
        /// Image file to create (must not exist).
        path: PathBuf,
        /// 3390 model: 3, 9 or 27 (the default is 3).
        #[arg(long, conflicts_with = "cylinders")]
        model: Option<u32>,
        /// Custom size in cylinders (1 to 65520).
        #[arg(long)]
        cylinders: Option<u32>,
        /// Volume serial (1–6 characters A–Z, 0–9, @, #, $).
        #[arg(long, default_value = "LNX001")]
        volser: String,
    },
    /// Copy a raw partition image (e.g. made with mke2fs) into the data
    /// area of a CDL image, block by block.
    Import {
        /// CDL image to write into.
        image: PathBuf,
        /// Raw file to read.
        raw: PathBuf,
    },
    /// Write the data area of a CDL image out to a raw file.
    Export {
        /// CDL image to read.
        image: PathBuf,
        /// Raw file to create or overwrite.
        raw: PathBuf,
    },
    /// Describe an image.
    Info {
        /// Image to describe.
        image: PathBuf,
    },
}

/// Failures of the image tool.
#[derive(Debug, Error)]
pub enum ImageToolError {
    /// The image is unusable or could not be accessed.
    #[error("{0}")]
    Image(#[from] CkdError),
    /// The requested geometry is unusable.
    #[error("bad geometry: {0}")]
    Geometry(#[from] GeometryError),
    /// A raw file could not be accessed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The raw image does not fit into the data area.
    #[error("raw image of {raw} bytes does not fit into the data area of {capacity} bytes")]
    TooLarge {
        /// Size of the raw file.
        raw: u64,
        /// Size of the data area.
        capacity: u64,
    },
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> ImageToolError {
    move |source| ImageToolError::Io { context, source }
}

/// A percentage line on stderr, rewritten when the percentage changes.
struct Progress {
    label: &'static str,
    last: Option<u64>,
}

impl Progress {
    fn new(label: &'static str) -> Self {
        Self { label, last: None }
    }

    fn update(&mut self, done: u64, total: u64) {
        let pct = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        if self.last != Some(pct) {
            self.last = Some(pct);
            eprint!("\r{}: {pct:3}%", self.label);
            if pct == 100 {
                eprintln!();
            }
        }
    }
}

/// Runs one `image` subcommand.
pub fn run(cmd: ImageCommand) -> Result<(), ImageToolError> {
    match cmd {
        ImageCommand::Create {
            path,
            model,
            cylinders,
            volser,
        } => {
            let geometry = match (model, cylinders) {
                (_, Some(c)) => Geometry::with_cylinders(c)?,
                (m, None) => Geometry::model(m.unwrap_or(3))?,
            };
            create(&path, geometry, &volser)
        }
        ImageCommand::Import { image, raw } => import(&image, &raw),
        ImageCommand::Export { image, raw } => export(&image, &raw),
        ImageCommand::Info { image } => {
            print!("{}", info(&image)?);
            Ok(())
        }
    }
}

/// Creates and formats an image.
pub fn create(path: &Path, geometry: Geometry, volser: &str) -> Result<(), ImageToolError> {
    let volser = cdl::check_volser(volser)?;
    if geometry.tracks() <= cdl::DATA_START_TRACK {
        return Err(GeometryError::TooSmall.into());
    }
    let mut image = CkdImage::create(path, geometry)?;
    let mut progress = Progress::new("formatting");
    let result = cdl::format_cdl(&mut image, &volser, |d, t| progress.update(d, t));
    if result.is_err() {
        drop(image);
        let _ = std::fs::remove_file(path);
    }
    Ok(result?)
}

fn track_bytes() -> usize {
    BLOCK_SIZE * usize::from(RECORDS_PER_TRACK)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Copies a raw file into the data area, starting at block 0. A partial
/// last block is padded with zeros; blocks past the raw file keep their
/// contents.
pub fn import(image_path: &Path, raw_path: &Path) -> Result<(), ImageToolError> {
    let image = CkdImage::open(image_path)?;
    let geometry = image.geometry();
    let capacity = cdl::data_blocks(&geometry) * u64::try_from(BLOCK_SIZE).unwrap_or(u64::MAX);
    let shown = raw_path.display().to_string();
    let mut raw = File::open(raw_path).map_err(io_err(format!("open {shown}")))?;
    let raw_len = raw
        .metadata()
        .map_err(io_err(format!("stat {shown}")))?
        .len();
    if raw_len > capacity {
        return Err(ImageToolError::TooLarge {
            raw: raw_len,
            capacity,
        });
    }
    let per_track = u64::try_from(track_bytes()).unwrap_or(u64::MAX);
    let tracks = raw_len.div_ceil(per_track);
    let mut buf = vec![0; track_bytes()];
    let mut progress = Progress::new("importing");
    for i in 0..tracks {
        let (cyl, head) = geometry
            .track_address(cdl::DATA_START_TRACK + i)
            .ok_or(CkdError::NoSuchTrack { cyl: 0, head: 0 })?;
        let n = read_full(&mut raw, &mut buf).map_err(io_err(format!("read {shown}")))?;
        if n == 0 {
            break;
        }
        let mut blocks = cdl::data_track_blocks(&image.read_track(cyl, head)?, cyl, head)?;
        let padded = n.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        blocks[..n].copy_from_slice(&buf[..n]);
        blocks[n..padded].fill(0);
        image.write_track_deferred(cyl, head, &cdl::data_track(cyl, head, &blocks))?;
        progress.update(i + 1, tracks);
    }
    image.sync()?;
    Ok(())
}

/// Writes the whole data area (data blocks × 4096 bytes) to a raw file.
pub fn export(image_path: &Path, raw_path: &Path) -> Result<(), ImageToolError> {
    let image = CkdImage::open_read_only(image_path)?;
    let geometry = image.geometry();
    let shown = raw_path.display().to_string();
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(raw_path)
        .map_err(io_err(format!("create {shown}")))?;
    let mut out = BufWriter::with_capacity(track_bytes() * 4, file);
    let tracks = geometry.tracks() - cdl::DATA_START_TRACK.min(geometry.tracks());
    let mut progress = Progress::new("exporting");
    for i in 0..tracks {
        let (cyl, head) = geometry
            .track_address(cdl::DATA_START_TRACK + i)
            .ok_or(CkdError::NoSuchTrack { cyl: 0, head: 0 })?;
        let blocks = cdl::data_track_blocks(&image.read_track(cyl, head)?, cyl, head)?;
        out.write_all(&blocks)
            .map_err(io_err(format!("write {shown}")))?;
        progress.update(i + 1, tracks);
    }
    let file = out.into_inner().map_err(|e| ImageToolError::Io {
        context: format!("write {shown}"),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err(format!("sync {shown}")))?;
    Ok(())
}

/// A description of an image: geometry, capacity and CDL label.
pub fn info(image_path: &Path) -> Result<String, ImageToolError> {
    let image = CkdImage::open_read_only(image_path)?;
    let g = image.geometry();
    let model = match g.model_number() {
        0 => "custom".to_owned(),
        m => format!("3390-{m}"),
    };
    let blocks = cdl::data_blocks(&g);
    let mut s = format!(
        "device: 3390 ({model})\ncylinders: {}\nheads: {}\ntracks: {}\n",
        g.cylinders(),
        g.heads(),
        g.tracks()
    );
    let track0 = image.read_track(0, 0)?;
    match cdl::read_volser(&track0) {
        Some(volser) => {
            s.push_str(&format!(
                "layout: CDL, 4096-byte blocks\nvolser: {volser}\ndata blocks: {blocks}\ndata bytes: {}\n",
                blocks * u64::try_from(BLOCK_SIZE).unwrap_or(u64::MAX)
            ));
        }
        None if track0.is_formatted() => s.push_str("layout: not CDL\n"),
        None => s.push_str("layout: unformatted\n"),
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("vuccw-imgtool-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Deterministic pseudo-random bytes (xorshift64).
    fn pattern(len: usize, mut seed: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            v.extend_from_slice(&seed.to_le_bytes());
        }
        v.truncate(len);
        v
    }

    fn small_image(dir: &TempDir) -> PathBuf {
        let p = dir.0.join("disk.img");
        create(&p, Geometry::with_cylinders(10).unwrap(), "T00001").unwrap();
        p
    }

    #[test]
    fn import_export_round_trip() {
        let dir = TempDir::new("roundtrip");
        let img = small_image(&dir);
        let capacity = 148 * 12 * 4096;
        // Not a whole number of tracks or blocks.
        let data = pattern(capacity - 3 * 4096 * 12 - 1000, 0x1234_5678);
        let raw = dir.0.join("in.raw");
        std::fs::write(&raw, &data).unwrap();
        import(&img, &raw).unwrap();
        let out = dir.0.join("out.raw");
        export(&img, &out).unwrap();
        let exported = std::fs::read(&out).unwrap();
        assert_eq!(exported.len(), capacity);
        assert_eq!(&exported[..data.len()], &data[..]);
        assert!(exported[data.len()..].iter().all(|&b| b == 0));

        // A full-size import round-trips exactly, and the labels survive.
        let full = pattern(capacity, 99);
        std::fs::write(&raw, &full).unwrap();
        import(&img, &raw).unwrap();
        export(&img, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), full);
        let text = info(&img).unwrap();
        assert!(text.contains("volser: T00001"), "{text}");
        assert!(text.contains("cylinders: 10"), "{text}");
        assert!(text.contains(&format!("data bytes: {capacity}")), "{text}");
    }

    #[test]
    fn import_too_large_fails_without_writing() {
        let dir = TempDir::new("toolarge");
        let img = small_image(&dir);
        let raw = dir.0.join("big.raw");
        std::fs::write(&raw, pattern(148 * 12 * 4096 + 1, 5)).unwrap();
        assert!(matches!(
            import(&img, &raw),
            Err(ImageToolError::TooLarge { raw: r, capacity: c }) if r == c + 1
        ));
        let out = dir.0.join("out.raw");
        export(&img, &out).unwrap();
        assert!(std::fs::read(&out).unwrap().iter().all(|&b| b == 0));
    }

    #[test]
    fn create_errors() {
        let dir = TempDir::new("errors");
        let p = dir.0.join("x.img");
        for (model, cylinders) in [(Some(4), None), (None, Some(0)), (None, Some(65_521))] {
            let cmd = ImageCommand::Create {
                path: p.clone(),
                model,
                cylinders,
                volser: "A".into(),
            };
            assert!(matches!(run(cmd), Err(ImageToolError::Geometry(_))));
        }
        assert!(matches!(
            create(&p, Geometry::with_cylinders(1).unwrap(), "bad vol"),
            Err(ImageToolError::Image(CkdError::InvalidVolser(_)))
        ));
        assert!(!p.exists());
        std::fs::write(&p, b"not an image").unwrap();
        assert!(matches!(
            info(&p),
            Err(ImageToolError::Image(CkdError::Truncated { .. }))
        ));
    }

    #[test]
    fn unformatted_image_cannot_be_exported() {
        let dir = TempDir::new("unformatted");
        let p = dir.0.join("raw.img");
        CkdImage::create(&p, Geometry::with_cylinders(1).unwrap()).unwrap();
        assert!(info(&p).unwrap().contains("layout: unformatted"));
        assert!(matches!(
            export(&p, &dir.0.join("o.raw")),
            Err(ImageToolError::Image(CkdError::NotDataTrack {
                cyl: 0,
                head: 2
            }))
        ));
    }
}
