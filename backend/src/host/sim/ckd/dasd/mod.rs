//! The emulated IBM 3390 behind a 3990 control unit, over a [`CkdImage`]
//! (docs/dasd.md).
//!
//! [`Dasd`] executes the channel commands Linux `dasd_eckd`, its common I/O
//! layer and the s390-ccw IPL firmware issue, one command at a time, and
//! keeps what a control unit keeps for one command chain: the Define Extent
//! (extent, file mask), the Locate Record domain (operation, remaining
//! count, transfer length factor) and the orientation on the track (index,
//! after a count field, after a data field). Errors end in unit check with
//! 32-byte sense as a 3990 presents it.
//!
//! Tracks are read whole into a one-track cache; writes change the cached
//! track, which is written back (one positioned write of its slot) when the
//! chain leaves the track, and flushed with fdatasync when the chain ends,
//! before its final status is presented.

use vhost_user_ccw_protocol::arch::{DeviceStatus, Sense, SenseId};

use std::path::Path;

use super::cdl::format_cdl;
use super::identity::{self, DasdIdentity};
use super::track::{COUNT_LEN, MAX_TRACK_BYTES, crc32};
use super::{CkdError, CkdImage, Geometry, Record, Track, TrackView};
use crate::host::sim::device::{Chaining, DeviceModel, DeviceResponse, InPlace, OutPlace};

/// Channel command codes of the 3390 (shared/reference/eckd.md).
pub mod cmd {
    /// READ IPL.
    pub const READ_IPL: u8 = 0x02;
    /// NO OPERATION.
    pub const NOP: u8 = 0x03;
    /// SENSE.
    pub const SENSE: u8 = 0x04;
    /// WRITE DATA.
    pub const WRITE_DATA: u8 = 0x05;
    /// READ DATA.
    pub const READ_DATA: u8 = 0x06;
    /// SEEK.
    pub const SEEK: u8 = 0x07;
    /// READ HOME ADDRESS.
    pub const READ_HA: u8 = 0x0A;
    /// WRITE KEY AND DATA.
    pub const WRITE_KD: u8 = 0x0D;
    /// READ KEY AND DATA.
    pub const READ_KD: u8 = 0x0E;
    /// READ COUNT.
    pub const READ_COUNT: u8 = 0x12;
    /// WRITE RECORD ZERO.
    pub const WRITE_R0: u8 = 0x15;
    /// READ RECORD ZERO.
    pub const READ_R0: u8 = 0x16;
    /// WRITE COUNT, KEY AND DATA.
    pub const WRITE_CKD: u8 = 0x1D;
    /// READ COUNT, KEY AND DATA.
    pub const READ_CKD: u8 = 0x1E;
    /// PERFORM SUBSYSTEM FUNCTION.
    pub const PSF: u8 = 0x27;
    /// SEARCH ID EQUAL.
    pub const SEARCH_ID_EQ: u8 = 0x31;
    /// SENSE PATH GROUP ID.
    pub const SNID: u8 = 0x34;
    /// READ SUBSYSTEM DATA.
    pub const RSSD: u8 = 0x3E;
    /// LOCATE RECORD.
    pub const LOCATE_RECORD: u8 = 0x47;
    /// LOCATE RECORD EXTENDED (needs Prefix: reported absent).
    pub const LOCATE_RECORD_EXT: u8 = 0x4B;
    /// DEFINE EXTENT.
    pub const DEFINE_EXTENT: u8 = 0x63;
    /// READ DEVICE CHARACTERISTICS.
    pub const RDC: u8 = 0x64;
    /// Multitrack bit of the read/write/search commands.
    pub const MT: u8 = 0x80;
    /// READ HOME ADDRESS, multitrack.
    pub const READ_HA_MT: u8 = READ_HA | MT;
    /// SEARCH ID EQUAL, multitrack.
    pub const SEARCH_ID_EQ_MT: u8 = SEARCH_ID_EQ | MT;
    /// READ COUNT, multitrack.
    pub const READ_COUNT_MT: u8 = READ_COUNT | MT;
    /// READ DATA, multitrack.
    pub const READ_DATA_MT: u8 = READ_DATA | MT;
    /// READ KEY AND DATA, multitrack.
    pub const READ_KD_MT: u8 = READ_KD | MT;
    /// READ COUNT, KEY AND DATA, multitrack.
    pub const READ_CKD_MT: u8 = READ_CKD | MT;
    /// WRITE DATA, multitrack.
    pub const WRITE_DATA_MT: u8 = WRITE_DATA | MT;
    /// WRITE KEY AND DATA, multitrack.
    pub const WRITE_KD_MT: u8 = WRITE_KD | MT;
    /// WRITE COUNT, KEY AND DATA, multitrack.
    pub const WRITE_CKD_MT: u8 = WRITE_CKD | MT;
    /// SET PATH GROUP ID.
    pub const SPID: u8 = 0xAF;
    /// SENSE ID.
    pub const SENSE_ID: u8 = 0xE4;
    /// PREFIX (reported absent).
    pub const PREFIX: u8 = 0xE7;
    /// READ CONFIGURATION DATA.
    pub const RCD: u8 = 0xFA;
}

/// Locate Record operations this device performs.
mod op {
    pub const WRITE_DATA: u8 = 0x01;
    pub const FORMAT_WRITE: u8 = 0x03;
    pub const READ: u8 = 0x06;
    /// Read from the index: home address, R0, then the records (Linux's
    /// READ RECORD ZERO and READ HOME ADDRESS).
    pub const READ_FROM_INDEX: u8 = 0x16;
}

/// Command-reject reasons (format 0 message in sense byte 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Invalid command code.
    InvalidCommand = 0x01,
    /// Invalid command sequence.
    InvalidSequence = 0x02,
    /// CCW count too small for the parameters.
    CountTooShort = 0x03,
    /// Invalid parameter.
    InvalidParameter = 0x04,
}

/// Why a command ended in unit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Command reject.
    Reject(Reject),
    /// The chain ended inside a Locate Record domain.
    IncompleteDomain,
    /// The searched record is not on the track.
    NoRecordFound,
    /// Outside the extent, or an operation the file mask forbids.
    FileProtected,
    /// The record does not have the layout the operation needs, or a
    /// format write does not fit on the track.
    InvalidTrackFormat,
    /// A multitrack operation outside a domain ran past the cylinder.
    EndOfCylinder,
    /// The image is read-only.
    WriteInhibited,
    /// The track's stored image is damaged (torn or corrupted slot).
    DataCheck,
    /// The image file could not be read or written.
    EquipmentCheck,
}

impl Fault {
    /// Sense bytes 0, 1 and 7.
    fn bytes(self) -> (u8, u8, u8) {
        match self {
            Self::Reject(reason) => (Sense::COMMAND_REJECT, 0, reason as u8),
            Self::IncompleteDomain => (Sense::COMMAND_REJECT | 0x01, 0, 0),
            Self::NoRecordFound => (0, Sense::NO_RECORD_FOUND, 0),
            Self::FileProtected => (0, Sense::FILE_PROTECTED, 0),
            Self::InvalidTrackFormat => (0, Sense::INVALID_TRACK_FORMAT, 0),
            Self::EndOfCylinder => (0, Sense::END_OF_CYLINDER, 0),
            Self::WriteInhibited => (Sense::COMMAND_REJECT, Sense::WRITE_INHIBITED, 0),
            Self::DataCheck => (Sense::DATA_CHECK, 0, 0),
            Self::EquipmentCheck => (Sense::EQUIPMENT_CHECK, 0, 0x10),
        }
    }

    fn from_image(error: &CkdError) -> Self {
        log::error!("dasd: {error}");
        match error {
            CkdError::ReadOnly => Self::WriteInhibited,
            e if e.is_data_check() => Self::DataCheck,
            _ => Self::EquipmentCheck,
        }
    }
}

/// Where the device is on a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Orient {
    /// After the index point and the home address, before R0's count.
    Index,
    /// After the count field of record `n` (its index on the track).
    Count(usize),
    /// After the data field of record `n`.
    Data(usize),
}

/// A Define Extent in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    raw: [u8; 16],
    mask: u8,
    first: u64,
    last: u64,
}

impl Extent {
    /// File-mask write control (bits 0–1): 00 no HA/R0 writes, 01 no
    /// writes, 10 update writes only, 11 all writes.
    fn write_control(&self) -> u8 {
        self.mask >> 6
    }
}

/// A Locate Record domain in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Domain {
    operation: u8,
    remaining: u8,
    /// Transfer length factor, when valid.
    tlf: Option<u16>,
}

impl Domain {
    fn allows(&self, code: u8) -> bool {
        let base = code & !cmd::MT;
        match self.operation {
            op::READ => {
                matches!(
                    base,
                    cmd::READ_DATA | cmd::READ_KD | cmd::READ_COUNT | cmd::READ_CKD
                ) || code == cmd::READ_R0
            }
            op::READ_FROM_INDEX => {
                matches!(
                    base,
                    cmd::READ_DATA | cmd::READ_KD | cmd::READ_COUNT | cmd::READ_CKD | cmd::READ_HA
                ) || code == cmd::READ_R0
            }
            op::WRITE_DATA => matches!(base, cmd::WRITE_DATA | cmd::WRITE_KD),
            op::FORMAT_WRITE => base == cmd::WRITE_CKD || code == cmd::WRITE_R0,
            _ => false,
        }
    }
}

/// What one chain established.
#[derive(Debug, Clone, Copy, Default)]
struct ChainContext {
    extent: Option<Extent>,
    domain: Option<Domain>,
    /// The operation of the domain the current command belongs to.
    current_op: Option<u8>,
    /// Index points passed by searches since the last orientation.
    index_passes: u8,
}

/// A cached track's contents: the slot as read (reads and update writes
/// work in place), or records being laid out by format writes.
#[derive(Debug)]
enum Content {
    View(TrackView),
    Owned(Track),
}

/// The current track, as read from the image (and changed by writes).
#[derive(Debug)]
struct Cached {
    number: u64,
    cyl: u16,
    head: u16,
    content: Content,
    dirty: bool,
}

impl Cached {
    fn record_count(&self) -> usize {
        match &self.content {
            Content::View(v) => v.records().len(),
            Content::Owned(t) => t.records.len(),
        }
    }

    /// The slot view (laying out an owned track's slot first).
    fn view(&mut self) -> Result<&mut TrackView, Fault> {
        if let Content::Owned(track) = &self.content {
            let view = TrackView::from_track(track, self.cyl, self.head)
                .map_err(|_| Fault::InvalidTrackFormat)?;
            self.content = Content::View(view);
        }
        match &mut self.content {
            Content::View(v) => Ok(v),
            Content::Owned(_) => Err(Fault::EquipmentCheck),
        }
    }

    /// The records as an owned track, for format writes.
    fn owned(&mut self) -> Result<&mut Track, Fault> {
        if let Content::View(view) = &self.content {
            self.content = Content::Owned(view.to_track());
        }
        match &mut self.content {
            Content::Owned(t) => Ok(t),
            Content::View(_) => Err(Fault::EquipmentCheck),
        }
    }
}

/// Path-group state (SENSE/SET PATH GROUP ID).
#[derive(Debug, Clone, Copy, Default)]
struct PathGroup {
    state: u8,
    id: [u8; 11],
}

/// A record's count field, key and data, read in place.
type Fields<'a> = ([u8; COUNT_LEN], &'a [u8], &'a [u8]);

/// A successful command: bytes transferred (or wanted) and any status
/// beyond channel end and device end.
struct Done {
    length: usize,
    extra: DeviceStatus,
}

impl Done {
    fn len(length: usize) -> Result<Self, Fault> {
        Ok(Self {
            length,
            extra: DeviceStatus::empty(),
        })
    }
}

/// When the device makes its writes durable (`flush=` of `--device sim`).
/// Either way every changed track is written to the image file before the
/// program's final status, so an acknowledged write survives a crash or
/// kill of the backend; the policy decides whether it also survives a crash
/// of the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlushPolicy {
    /// `fdatasync` before the final status of every program that wrote
    /// (`flush=program`, the default): like QEMU's `cache=writethrough`.
    #[default]
    Program,
    /// No `fdatasync` (`flush=none`): the host's page cache holds the
    /// writes until the kernel writes them back, like QEMU's `cache=unsafe`
    /// (Linux's dasd driver sends no flush that the device could honour).
    None,
}

/// The emulated 3390.
#[derive(Debug)]
pub struct Dasd {
    image: CkdImage,
    identity: DasdIdentity,
    sense: Sense,
    path_group: PathGroup,
    chain: ChainContext,
    /// Current position: linear track and orientation on it.
    track: u64,
    orient: Orient,
    cached: Option<Cached>,
    /// A slot buffer to read the next track into.
    spare: Vec<u8>,
    /// Bytes of header and records the next track read expects.
    expected_len: usize,
    /// A slot was written since the last flush.
    unsynced: bool,
    flush_policy: FlushPolicy,
    /// `fdatasync` calls so far.
    syncs: u64,
    /// Suborder a PSF prepared for the next READ SUBSYSTEM DATA.
    prepared: Option<u8>,
    /// Transfer length factor of the domain the current command is in.
    last_tlf: Option<u16>,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

impl Dasd {
    /// A 3390 over `image` with device number `devno`; `serial` tells
    /// volumes apart in the configuration data.
    pub fn new(mut image: CkdImage, devno: u16, serial: u32) -> Self {
        image.map_for_reads();
        let identity = DasdIdentity {
            geometry: image.geometry(),
            devno,
            serial,
        };
        Self {
            image,
            identity,
            sense: Sense::default(),
            path_group: PathGroup::default(),
            chain: ChainContext::default(),
            track: 0,
            orient: Orient::Index,
            cached: None,
            spare: Vec::new(),
            expected_len: 4096,
            unsynced: false,
            flush_policy: FlushPolicy::default(),
            syncs: 0,
            prepared: None,
            last_tlf: None,
        }
    }

    /// A 3390 over the image file at `path`, opened for reading and
    /// writing. Its serial number derives from the path, so that two
    /// volumes of one process never share a device UID.
    pub fn open(path: &Path, devno: u16) -> Result<Self, CkdError> {
        let image = CkdImage::open(path)?;
        let name = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let serial = crc32(name.as_os_str().as_encoded_bytes());
        Ok(Self::new(image, devno, serial))
    }

    /// A 3390 over a scratch image of `geometry`, formatted in CDL with
    /// volume serial `Vdddd` (the device number): a file in the temporary
    /// directory that is unlinked at once, so that nothing of it outlives
    /// the process, whatever way it ends. Nothing written is durable.
    pub fn scratch(geometry: Geometry, devno: u16) -> Result<Self, CkdError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "vhost-user-ccw-scratch-{}-{devno:04x}-{nanos:08x}.img",
            std::process::id()
        ));
        let mut image = CkdImage::create(&path, geometry)?;
        let unlinked = std::fs::remove_file(&path);
        format_cdl(&mut image, &format!("V{devno:04X}"), |_, _| {})?;
        unlinked.map_err(|source| CkdError::Io {
            context: format!("remove scratch image {}", path.display()),
            source,
        })?;
        Ok(Self::new(image, devno, nanos))
    }

    /// Set when writes become durable (the default: at the end of each
    /// program that wrote).
    pub fn set_flush_policy(&mut self, policy: FlushPolicy) {
        self.flush_policy = policy;
    }

    /// How many times the image was synced (`fdatasync`) so far.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// The volume's geometry.
    pub fn geometry(&self) -> Geometry {
        self.image.geometry()
    }

    /// The identity reported.
    pub fn identity(&self) -> &DasdIdentity {
        &self.identity
    }

    /// What every command but SENSE starts with.
    fn prologue(&mut self, code: u8) {
        // Sense describes the last unit check only.
        self.sense = Sense::default();
        if code != cmd::RSSD && code != cmd::PSF {
            // READ SUBSYSTEM DATA must directly follow its PSF.
            self.prepared = None;
        }
        self.last_tlf = self.chain.domain.and_then(|d| d.tlf);
    }

    /// What [`DeviceModel::execute`] does before any command, for the
    /// commands executed in place.
    fn begin_in_place(&mut self, code: u8, chaining: Chaining) {
        if chaining.first {
            self.chain = ChainContext::default();
        }
        self.prologue(code);
    }

    fn set_sense(&mut self, fault: Fault) {
        let (b0, b1, b7) = fault.bytes();
        let mut s = [0u8; Sense::SIZE];
        s[0] = b0;
        s[1] = b1;
        s[3] = self.chain.domain.map_or(0, |d| d.remaining);
        let on_track = matches!(
            fault,
            Fault::NoRecordFound
                | Fault::FileProtected
                | Fault::InvalidTrackFormat
                | Fault::EndOfCylinder
                | Fault::DataCheck
        );
        let (cyl, head) = self.geometry().track_address(self.track).unwrap_or((0, 0));
        if !on_track {
            // Bytes 5-6 locate track errors only.
        } else if cyl > 0x0FFF {
            s[5] = 0xFF;
            s[6] = 0xFF;
            s[27] = 0x20;
            s[29..31].copy_from_slice(&cyl.to_be_bytes());
            s[31] = head.to_be_bytes()[1];
        } else {
            let c = cyl.to_be_bytes();
            s[5] = c[1];
            s[6] = (c[0] << 4) | head.to_be_bytes()[1];
        }
        s[7] = b7;
        // 24-byte compatible sense.
        s[27] |= 0x80;
        self.sense = Sense(s);
    }

    /// The current track, read into the cache if needed.
    fn current(&mut self) -> Result<&mut Cached, Fault> {
        let number = self.track;
        if self.cached.as_ref().is_some_and(|c| c.number != number) {
            self.write_back()?;
            if let Some(Cached {
                content: Content::View(view),
                ..
            }) = self.cached.take()
            {
                self.spare = view.into_slot();
            }
        }
        if self.cached.is_none() {
            let (cyl, head) = self
                .geometry()
                .track_address(number)
                .ok_or(Fault::FileProtected)?;
            let view = self.image.read_view(
                cyl,
                head,
                std::mem::take(&mut self.spare),
                self.expected_len,
            );
            // A page that failed to load read as zeros: that is the fault,
            // whatever the parse made of them.
            self.image
                .mapped_reads_good()
                .map_err(|e| Fault::from_image(&e))?;
            let view = view.map_err(|e| Fault::from_image(&e))?;
            // Tracks of a volume tend to be laid out alike.
            self.expected_len = view.used_len();
            self.cached = Some(Cached {
                number,
                cyl,
                head,
                content: Content::View(view),
                dirty: false,
            });
        }
        self.cached.as_mut().ok_or(Fault::EquipmentCheck)
    }

    /// Write a changed cached track to its slot (not yet flushed).
    fn write_back(&mut self) -> Result<(), Fault> {
        if !self.cached.as_ref().is_some_and(|c| c.dirty) {
            return Ok(());
        }
        // The changed track was copied out of the mapping: a page that
        // failed to load made its bytes zeros, which must not be sealed
        // with a good checksum and stored.
        if let Err(e) = self.image.mapped_reads_good() {
            self.cached = None;
            return Err(Fault::from_image(&e));
        }
        let Some(c) = self.cached.as_mut() else {
            return Ok(());
        };
        let result = match &mut c.content {
            Content::View(view) => {
                view.seal();
                self.image.write_view_deferred(c.cyl, c.head, view)
            }
            Content::Owned(track) => self.image.write_track_deferred(c.cyl, c.head, track),
        };
        if let Err(e) = result {
            // The change is lost: drop it so that nothing reads it.
            self.cached = None;
            return Err(Fault::from_image(&e));
        }
        c.dirty = false;
        self.unsynced = true;
        Ok(())
    }

    /// At the end of a chain: write the changed track to the file, and
    /// make every write of the chain durable if the policy says so.
    fn flush(&mut self) -> Result<(), Fault> {
        self.write_back()?;
        if self.flush_policy == FlushPolicy::Program {
            self.sync()?;
        }
        Ok(())
    }

    /// `fdatasync` the image if anything was written since the last one.
    fn sync(&mut self) -> Result<(), Fault> {
        if self.unsynced {
            self.syncs += 1;
            self.image.sync().map_err(|e| Fault::from_image(&e))?;
            self.unsynced = false;
        }
        Ok(())
    }

    fn seek(&mut self, track: u64) {
        self.track = track;
        self.orient = Orient::Index;
        self.chain.index_passes = 0;
    }

    fn check_extent(&self, track: u64) -> Result<(), Fault> {
        match self.chain.extent {
            Some(e) if track < e.first || track > e.last => Err(Fault::FileProtected),
            _ => Ok(()),
        }
    }

    /// Multitrack operation at the end of a track: on to the next head.
    fn next_track(&mut self) -> Result<(), Fault> {
        let next = self.track + 1;
        let in_domain = self.chain.current_op.is_some();
        let (_, head) = self
            .geometry()
            .track_address(self.track)
            .ok_or(Fault::FileProtected)?;
        if !in_domain && head + 1 >= self.geometry().heads() {
            return Err(Fault::EndOfCylinder);
        }
        if next >= self.geometry().tracks() {
            return Err(Fault::FileProtected);
        }
        self.check_extent(next)?;
        self.seek(next);
        Ok(())
    }

    /// The next data record (R1 or later) after the current orientation,
    /// moving on to the next track for a multitrack command.
    fn next_record(&mut self, multitrack: bool) -> Result<usize, Fault> {
        loop {
            let orient = self.orient;
            let len = self.current()?.record_count();
            if len == 0 {
                return Err(Fault::NoRecordFound);
            }
            let next = match orient {
                Orient::Index => 1,
                Orient::Count(i) | Orient::Data(i) => i + 1,
            };
            if next < len {
                return Ok(next);
            }
            if multitrack {
                self.next_track()?;
            } else if self.chain.current_op.is_some() || self.chain.index_passes > 0 {
                return Err(Fault::NoRecordFound);
            } else {
                self.chain.index_passes += 1;
                self.orient = Orient::Index;
            }
        }
    }

    /// The record a read or write of key/data addresses: the one whose
    /// count was just passed, else the next.
    fn data_record(&mut self, multitrack: bool) -> Result<usize, Fault> {
        match self.orient {
            Orient::Count(i) => {
                self.current()?;
                Ok(i)
            }
            _ => self.next_record(multitrack),
        }
    }

    /// Count, key and data of record `index` of the current track.
    fn fields(&mut self, index: usize) -> Result<Fields<'_>, Fault> {
        let view = self.current()?.view()?;
        let span = view.records().get(index).ok_or(Fault::NoRecordFound)?;
        Ok((span.count, view.key(index), view.data(index)))
    }

    /// Account for a command in the Locate Record domain, if one is in
    /// progress: the operation must allow it, and the chain must carry on
    /// to the domain's end.
    fn enter_domain(&mut self, code: u8, chaining: Chaining) -> Result<(), Fault> {
        self.chain.current_op = None;
        if let Some(mut domain) = self.chain.domain {
            if !domain.allows(code) {
                return Err(Fault::Reject(Reject::InvalidSequence));
            }
            domain.remaining -= 1;
            if domain.remaining > 0 && !chaining.continues {
                self.chain.domain = Some(domain);
                return Err(Fault::IncompleteDomain);
            }
            self.chain.domain = (domain.remaining > 0).then_some(domain);
            self.chain.current_op = Some(domain.operation);
        }
        Ok(())
    }

    fn command(&mut self, code: u8, data: &mut [u8], chaining: Chaining) -> Result<Done, Fault> {
        self.enter_domain(code, chaining)?;
        let multitrack = code & cmd::MT != 0;
        match code {
            cmd::NOP => Done::len(0),
            cmd::SENSE_ID => Self::put(data, &self.identity.sense_id().encode()),
            cmd::RDC => Self::put(data, &self.identity.rdc()),
            cmd::RCD => Self::put(data, &self.identity.rcd()),
            cmd::SNID => {
                let mut out = [0u8; 12];
                out[0] = self.path_group.state;
                out[1..].copy_from_slice(&self.path_group.id);
                Self::put(data, &out)
            }
            cmd::SPID => self.set_path_group(data),
            cmd::PSF => self.perform_subsystem_function(data),
            cmd::RSSD => self.read_subsystem_data(data),
            cmd::DEFINE_EXTENT => self.define_extent(data),
            cmd::LOCATE_RECORD => self.locate_record(data, chaining),
            cmd::SEEK => self.seek_command(data),
            cmd::READ_IPL => {
                self.chain = ChainContext::default();
                self.seek(0);
                let r = self.next_record(false)?;
                self.orient = Orient::Data(r);
                let (_, _, record) = self.fields(r)?;
                Self::put_record(data, &[record])
            }
            cmd::READ_HA | cmd::READ_HA_MT => {
                let (cyl, head) = self.current().map(|c| (c.cyl, c.head))?;
                self.orient = Orient::Index;
                let c = cyl.to_be_bytes();
                let h = head.to_be_bytes();
                Self::put(data, &[0, c[0], c[1], h[0], h[1]])
            }
            cmd::SEARCH_ID_EQ | cmd::SEARCH_ID_EQ_MT => self.search_id_equal(data, multitrack),
            cmd::READ_COUNT | cmd::READ_COUNT_MT => {
                let r = self.next_record(multitrack)?;
                self.orient = Orient::Count(r);
                let (count, _, _) = self.fields(r)?;
                Self::put(data, &count)
            }
            cmd::READ_DATA | cmd::READ_DATA_MT => {
                let r = self.data_record(multitrack)?;
                self.orient = Orient::Data(r);
                let (_, _, record) = self.fields(r)?;
                Self::put_record(data, &[record])
            }
            cmd::READ_KD | cmd::READ_KD_MT => {
                let r = self.data_record(multitrack)?;
                self.orient = Orient::Data(r);
                let (_, key, record) = self.fields(r)?;
                Self::put_record(data, &[key, record])
            }
            cmd::READ_CKD | cmd::READ_CKD_MT => {
                let r = self.next_record(multitrack)?;
                self.orient = Orient::Data(r);
                let (count, key, record) = self.fields(r)?;
                Self::put_record(data, &[&count, key, record])
            }
            cmd::READ_R0 => {
                if self.current()?.record_count() == 0 {
                    return Err(Fault::NoRecordFound);
                }
                self.orient = Orient::Data(0);
                let (count, key, record) = self.fields(0)?;
                Self::put_record(data, &[&count, key, record])
            }
            cmd::WRITE_DATA | cmd::WRITE_DATA_MT | cmd::WRITE_KD | cmd::WRITE_KD_MT => {
                self.update_write(code & !cmd::MT == cmd::WRITE_KD, data, multitrack)
            }
            cmd::WRITE_CKD | cmd::WRITE_CKD_MT => self.format_write(data, multitrack),
            cmd::WRITE_R0 => self.write_r0(data),
            cmd::LOCATE_RECORD_EXT | cmd::PREFIX => Err(Fault::Reject(Reject::InvalidCommand)),
            _ => Err(Fault::Reject(Reject::InvalidCommand)),
        }
    }

    /// An input command's fixed answer: as much as the CCW holds; the
    /// length tells the channel the answer's real size.
    fn put(data: &mut [u8], bytes: &[u8]) -> Result<Done, Fault> {
        let n = bytes.len().min(data.len());
        data[..n].copy_from_slice(&bytes[..n]);
        Done::len(bytes.len())
    }

    /// The fields of a record, one after the other; an empty data field
    /// (an end-of-file record) ends in unit exception.
    fn put_record(data: &mut [u8], fields: &[&[u8]]) -> Result<Done, Fault> {
        let mut at = 0;
        for field in fields {
            // What does not fit in the channel's area is not transferred
            // (the length tells the channel how much the record holds).
            if let Some(room) = data.get_mut(at..) {
                let n = field.len().min(room.len());
                room[..n].copy_from_slice(&field[..n]);
            }
            at += field.len();
        }
        let eof = fields.last().is_some_and(|f| f.is_empty());
        Ok(Done {
            length: at,
            extra: if eof {
                DeviceStatus::UNIT_EXCEPTION
            } else {
                DeviceStatus::empty()
            },
        })
    }

    fn set_path_group(&mut self, data: &[u8]) -> Result<Done, Fault> {
        if data.len() < 12 {
            return Err(Fault::Reject(Reject::CountTooShort));
        }
        match data[0] & 0x60 {
            0x00 => {
                // Establish: grouped, multipath if asked.
                self.path_group.state = 0xC0 | if data[0] & 0x80 != 0 { 0x08 } else { 0 };
                self.path_group.id.copy_from_slice(&data[1..12]);
            }
            0x40 => self.path_group.state = 0x80, // resign: ungrouped
            0x20 => self.path_group = PathGroup::default(), // disband: reset
            _ => return Err(Fault::Reject(Reject::InvalidParameter)),
        }
        Done::len(12)
    }

    fn perform_subsystem_function(&mut self, data: &[u8]) -> Result<Done, Fault> {
        match data.first() {
            // Prepare for READ SUBSYSTEM DATA: the feature codes (0x41) and
            // the unit-address configuration (0x0E) exist; volume storage
            // and logical configuration queries are rejected as a control
            // unit without those functions does.
            Some(0x18) => {
                if data.len() < 12 {
                    return Err(Fault::Reject(Reject::CountTooShort));
                }
                match data[6] {
                    0x41 | 0x0E => self.prepared = Some(data[6]),
                    _ => return Err(Fault::Reject(Reject::InvalidParameter)),
                }
            }
            // Set Subsystem Characteristics: nothing to set without PAV.
            Some(0x1D) => {}
            Some(_) => return Err(Fault::Reject(Reject::InvalidParameter)),
            None => return Err(Fault::Reject(Reject::CountTooShort)),
        }
        Done::len(data.len())
    }

    fn read_subsystem_data(&mut self, data: &mut [u8]) -> Result<Done, Fault> {
        match self.prepared.take() {
            Some(0x41) => Self::put(data, &[0u8; identity::FEATURES_LEN]),
            Some(0x0E) => Self::put(data, &self.identity.unit_address_config()),
            _ => Err(Fault::Reject(Reject::InvalidSequence)),
        }
    }

    /// A CCHH of a Define Extent or Locate Record as a linear track; the
    /// high 12 bits of HH carry cylinder bits for extended addressing.
    fn cchh(&self, b: &[u8]) -> Option<u64> {
        let hh = be16(&b[2..4]);
        let cyl = u32::from(be16(&b[0..2])) | (u32::from(hh >> 4) << 16);
        let cyl = u16::try_from(cyl).ok()?;
        self.geometry().track_index(cyl, hh & 0x000F)
    }

    fn define_extent(&mut self, data: &[u8]) -> Result<Done, Fault> {
        if data.len() < 16 {
            return Err(Fault::Reject(Reject::CountTooShort));
        }
        if self.chain.domain.is_some() {
            return Err(Fault::Reject(Reject::InvalidSequence));
        }
        let mut raw = [0u8; 16];
        raw.copy_from_slice(&data[..16]);
        if let Some(extent) = self.chain.extent {
            // A second Define Extent in a chain must repeat the first.
            if extent.raw != raw {
                return Err(Fault::Reject(Reject::InvalidSequence));
            }
            return Done::len(data.len());
        }
        if raw[1] & 0xC0 != 0xC0 {
            return Err(Fault::Reject(Reject::InvalidParameter));
        }
        let (Some(first), Some(last)) = (self.cchh(&raw[8..12]), self.cchh(&raw[12..16])) else {
            return Err(Fault::Reject(Reject::InvalidParameter));
        };
        if first > last {
            return Err(Fault::Reject(Reject::InvalidParameter));
        }
        self.chain.extent = Some(Extent {
            raw,
            mask: raw[0],
            first,
            last,
        });
        Done::len(data.len())
    }

    fn locate_record(&mut self, data: &[u8], chaining: Chaining) -> Result<Done, Fault> {
        if data.len() < 16 {
            return Err(Fault::Reject(Reject::CountTooShort));
        }
        let Some(extent) = self.chain.extent else {
            return Err(Fault::Reject(Reject::InvalidSequence));
        };
        if self.chain.domain.is_some() {
            return Err(Fault::Reject(Reject::InvalidSequence));
        }
        let orientation = data[0] >> 6;
        let operation = data[0] & 0x3F;
        let count = data[3];
        if count == 0
            || !matches!(
                operation,
                op::WRITE_DATA | op::FORMAT_WRITE | op::READ | op::READ_FROM_INDEX
            )
        {
            return Err(Fault::Reject(Reject::InvalidParameter));
        }
        let seek = self
            .cchh(&data[4..8])
            .ok_or(Fault::Reject(Reject::InvalidParameter))?;
        self.check_extent(seek)?;
        let forbidden = match operation {
            op::WRITE_DATA => extent.write_control() == 0b01,
            op::FORMAT_WRITE => matches!(extent.write_control(), 0b01 | 0b10),
            _ => false,
        };
        if forbidden {
            return Err(Fault::FileProtected);
        }
        let reads = matches!(operation, op::READ | op::READ_FROM_INDEX);
        if !reads && !self.image.is_writable() {
            return Err(Fault::WriteInhibited);
        }
        let domain = Domain {
            operation,
            remaining: count,
            tlf: (data[1] & 0x80 != 0).then(|| be16(&data[14..16])),
        };
        self.chain.domain = Some(domain);
        if !chaining.continues {
            return Err(Fault::IncompleteDomain);
        }
        self.seek(seek);
        match orientation {
            // Home address or index: before R0's count field.
            0b01 | 0b11 => {
                self.current()?;
            }
            // Count or data: search R0 and on for the CCHHR given.
            _ => {
                let search = &data[8..13];
                let found = self
                    .current()?
                    .view()?
                    .records()
                    .iter()
                    .position(|r| r.count[..5] == *search);
                let Some(i) = found else {
                    return Err(Fault::NoRecordFound);
                };
                self.orient = if orientation == 0 {
                    Orient::Count(i)
                } else {
                    Orient::Data(i)
                };
            }
        }
        Done::len(data.len())
    }

    fn seek_command(&mut self, data: &[u8]) -> Result<Done, Fault> {
        if data.len() < 6 {
            return Err(Fault::Reject(Reject::CountTooShort));
        }
        let track = self
            .cchh(&data[2..6])
            .ok_or(Fault::Reject(Reject::InvalidParameter))?;
        self.check_extent(track)?;
        self.seek(track);
        self.current()?;
        Done::len(6)
    }

    /// SEARCH ID EQUAL: compare the next count field (R0 included) with
    /// the argument; equal ends with status modifier, so that the channel
    /// skips the TIC that repeats the search.
    fn search_id_equal(&mut self, data: &[u8], multitrack: bool) -> Result<Done, Fault> {
        if data.len() < 5 {
            return Err(Fault::Reject(Reject::CountTooShort));
        }
        let next = loop {
            let len = self.current()?.record_count();
            if len == 0 {
                return Err(Fault::NoRecordFound);
            }
            let next = match self.orient {
                Orient::Index => 0,
                Orient::Count(i) | Orient::Data(i) => i + 1,
            };
            if next < len {
                break next;
            }
            if multitrack {
                self.next_track()?;
            } else if self.chain.index_passes > 0 {
                return Err(Fault::NoRecordFound);
            } else {
                self.chain.index_passes += 1;
                self.orient = Orient::Index;
            }
        };
        self.orient = Orient::Count(next);
        let (count, _, _) = self.fields(next)?;
        let equal = count[..5] == data[..5];
        if equal {
            self.chain.index_passes = 0;
        }
        Ok(Done {
            length: 5,
            extra: if equal {
                DeviceStatus::STATUS_MODIFIER
            } else {
                DeviceStatus::empty()
            },
        })
    }

    fn domain_tlf(&self) -> Option<u16> {
        // The domain of the current command (it may just have ended).
        self.last_tlf
    }

    /// A command that failed: its sense is kept for the next SENSE;
    /// unit check.
    fn failed(&mut self, code: u8, fault: Fault) -> DeviceResponse {
        log::debug!("dasd: command {code:02X} failed: {fault:?}");
        self.set_sense(fault);
        DeviceResponse::unit_check()
    }

    /// WRITE DATA / WRITE KEY AND DATA: replace the fields of an existing
    /// record, whose layout must be what the Locate Record announced.
    fn update_write(
        &mut self,
        with_key: bool,
        data: &[u8],
        multitrack: bool,
    ) -> Result<Done, Fault> {
        let (r, wanted) = self.prepare_update(with_key, multitrack)?;
        let [key, record] = self
            .update_fields(r, with_key)
            .ok_or(Fault::EquipmentCheck)?;
        fill(key, data);
        fill(record, data.get(key.len()..).unwrap_or_default());
        Done::len(wanted)
    }

    /// Orient to the record an update write replaces and check it against
    /// the Locate Record: its index in the cached track (marked changed)
    /// and how many bytes its fields take.
    fn prepare_update(
        &mut self,
        with_key: bool,
        multitrack: bool,
    ) -> Result<(usize, usize), Fault> {
        if self.chain.current_op != Some(op::WRITE_DATA) {
            return Err(Fault::Reject(Reject::InvalidSequence));
        }
        let r = self.data_record(multitrack)?;
        self.orient = Orient::Data(r);
        let tlf = self.domain_tlf();
        let cached = self.current()?;
        let span = &cached.view()?.records()[r];
        let wanted = if with_key {
            span.key_len() + span.data_len()
        } else {
            span.data_len()
        };
        if tlf.is_some_and(|t| usize::from(t) != wanted) || r == 0 {
            return Err(Fault::InvalidTrackFormat);
        }
        cached.dirty = true;
        Ok((r, wanted))
    }

    /// The fields of record `r` of the cached track that an update write
    /// replaces: the key (empty without `with_key`) and the data.
    fn update_fields(&mut self, r: usize, with_key: bool) -> Option<[&mut [u8]; 2]> {
        let Some(Cached {
            content: Content::View(view),
            ..
        }) = &mut self.cached
        else {
            return None;
        };
        let (key, data) = view.key_data_mut(r);
        Some([if with_key { key } else { &mut key[..0] }, data])
    }

    /// WRITE CKD: a new record after the current one; the rest of the
    /// track is erased. The channel may offer only the count (SLI): key
    /// and data are then zeros.
    fn format_write(&mut self, data: &[u8], multitrack: bool) -> Result<Done, Fault> {
        if self.chain.current_op != Some(op::FORMAT_WRITE) {
            return Err(Fault::Reject(Reject::InvalidSequence));
        }
        if data.len() < COUNT_LEN {
            return Err(Fault::Reject(Reject::CountTooShort));
        }
        let (cyl, head) = (be16(&data[0..2]), be16(&data[2..4]));
        if multitrack && self.names_next_track(cyl, head) {
            self.next_track()?;
            if self.current()?.record_count() == 0 {
                return Err(Fault::NoRecordFound);
            }
            self.orient = Orient::Data(0);
        }
        let after = match self.orient {
            Orient::Index => 0,
            Orient::Count(i) | Orient::Data(i) => i,
        };
        let kl = usize::from(data[5]);
        let dl = usize::from(be16(&data[6..8]));
        let record = Record::new(
            cyl,
            head,
            data[4],
            field(data, COUNT_LEN, kl),
            field(data, COUNT_LEN + kl, dl),
        );
        let cached = self.current()?;
        cached.dirty = true;
        let track = cached.owned()?;
        if track.records.is_empty() {
            return Err(Fault::InvalidTrackFormat);
        }
        // What follows is erased, also when the new record does not fit.
        track.records.truncate(after + 1);
        let r0 = (track.records[0].key.len(), track.records[0].data.len());
        let fits = identity::track_fits(
            r0,
            track.records[1..]
                .iter()
                .map(|r| (r.key.len(), r.data.len()))
                .chain([(kl, dl)]),
        );
        // The image's slot holds what the formula allows with a standard
        // R0; a big R0 must not push the records past it either.
        if !fits || track.encoded_len() + record.encoded_len() > MAX_TRACK_BYTES {
            return Err(Fault::InvalidTrackFormat);
        }
        track.records.push(record);
        self.orient = Orient::Data(after + 1);
        Done::len(COUNT_LEN + kl + dl)
    }

    /// Whether a format write's count field names the track after the
    /// current one (dasdfmt chains several tracks in one domain).
    fn names_next_track(&self, cyl: u16, head: u16) -> bool {
        let geometry = self.geometry();
        geometry.track_index(cyl, head) == Some(self.track + 1)
    }

    /// WRITE RECORD ZERO: R0 right after the home address, erasing the
    /// track. Needs a file mask that permits all writes.
    fn write_r0(&mut self, data: &[u8]) -> Result<Done, Fault> {
        if self.chain.current_op != Some(op::FORMAT_WRITE) {
            return Err(Fault::Reject(Reject::InvalidSequence));
        }
        if self.chain.extent.is_some_and(|e| e.write_control() != 0b11) {
            return Err(Fault::FileProtected);
        }
        if data.len() < COUNT_LEN {
            return Err(Fault::Reject(Reject::CountTooShort));
        }
        let (cyl, head) = (be16(&data[0..2]), be16(&data[2..4]));
        if self.orient != Orient::Index && self.names_next_track(cyl, head) {
            self.next_track()?;
        }
        let kl = usize::from(data[5]);
        let dl = usize::from(be16(&data[6..8]));
        if COUNT_LEN + kl + dl > MAX_TRACK_BYTES - 2 * COUNT_LEN {
            return Err(Fault::InvalidTrackFormat);
        }
        let r0 = Record::new(
            cyl,
            head,
            0,
            field(data, COUNT_LEN, kl),
            field(data, COUNT_LEN + kl, dl),
        );
        let cached = self.current()?;
        cached.dirty = true;
        cached.owned()?.records = vec![r0];
        self.orient = Orient::Data(0);
        Done::len(COUNT_LEN + kl + dl)
    }
}

/// `len` bytes of `data` from `at`, zero-filled where the channel offered
/// fewer.
fn field(data: &[u8], at: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    if let Some(src) = data.get(at..) {
        let n = len.min(src.len());
        out[..n].copy_from_slice(&src[..n]);
    }
    out
}

/// Overwrite `dest` with `src`, zero-filling what `src` does not cover.
fn fill(dest: &mut [u8], src: &[u8]) {
    let n = dest.len().min(src.len());
    dest[..n].copy_from_slice(&src[..n]);
    dest[n..].fill(0);
}

impl DeviceModel for Dasd {
    fn sense_id(&self) -> SenseId {
        self.identity.sense_id()
    }

    fn execute(&mut self, code: u8, data: &mut [u8], chaining: Chaining) -> DeviceResponse {
        if chaining.first {
            self.chain = ChainContext::default();
        }
        if code == cmd::SENSE {
            let bytes = self.sense.encode();
            let n = bytes.len().min(data.len());
            data[..n].copy_from_slice(&bytes[..n]);
            self.sense = Sense::default();
            return DeviceResponse::done(bytes.len());
        }
        self.prologue(code);
        match self.command(code, data, chaining) {
            Ok(done) => DeviceResponse {
                status: DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END | done.extra,
                length: done.length,
            },
            Err(fault) => self.failed(code, fault),
        }
    }

    fn read_in_place(&mut self, code: u8, _len: usize, chaining: Chaining) -> InPlace<'_> {
        // The read path of every block: READ DATA and READ KEY AND DATA
        // hand out the record's fields straight from the track cache.
        let with_key = match code & !cmd::MT {
            cmd::READ_DATA => false,
            cmd::READ_KD => true,
            _ => return InPlace::No,
        };
        self.begin_in_place(code, chaining);
        let multitrack = code & cmd::MT != 0;
        let located = self.enter_domain(code, chaining).and_then(|()| {
            let r = self.data_record(multitrack)?;
            self.orient = Orient::Data(r);
            self.fields(r).map(|_| r)
        });
        let r = match located {
            Ok(r) => r,
            Err(fault) => return InPlace::Done(self.failed(code, fault), [&[], &[], &[]]),
        };
        match self.fields(r) {
            Ok((_, key, data)) => {
                let key: &[u8] = if with_key { key } else { &[] };
                let mut response = DeviceResponse::done(key.len() + data.len());
                if data.is_empty() {
                    response.status |= DeviceStatus::UNIT_EXCEPTION;
                }
                InPlace::Done(response, [key, data, &[]])
            }
            Err(_) => InPlace::Done(DeviceResponse::unit_check(), [&[], &[], &[]]),
        }
    }

    fn write_in_place(&mut self, code: u8, _len: usize, chaining: Chaining) -> OutPlace<'_> {
        // The write path of every block: WRITE DATA and WRITE KEY AND DATA
        // take the record's fields straight into the track cache.
        let with_key = match code & !cmd::MT {
            cmd::WRITE_DATA => false,
            cmd::WRITE_KD => true,
            _ => return OutPlace::No,
        };
        self.begin_in_place(code, chaining);
        let found = self
            .enter_domain(code, chaining)
            .and_then(|()| self.prepare_update(with_key, code & cmd::MT != 0));
        let (r, wanted) = match found {
            Ok(found) => found,
            Err(fault) => return OutPlace::Into(self.failed(code, fault), [&mut [], &mut []]),
        };
        match self.update_fields(r, with_key) {
            Some(fields) => OutPlace::Into(DeviceResponse::done(wanted), fields),
            // Not reached: prepare_update just made the track a view.
            None => OutPlace::Into(DeviceResponse::unit_check(), [&mut [], &mut []]),
        }
    }

    fn chain_ended(&mut self) -> DeviceStatus {
        self.chain = ChainContext::default();
        self.prepared = None;
        let flushed = self.flush();
        // Records went from the mapping to the guest after the device
        // handed them out: a page that failed to load meanwhile made them
        // zeros, which the program must not end as if it had read them.
        if let Err(e) = self.image.mapped_reads_good() {
            self.cached = None;
            self.set_sense(Fault::from_image(&e));
            return DeviceStatus::UNIT_CHECK;
        }
        match flushed {
            Ok(()) => DeviceStatus::empty(),
            Err(fault) => {
                self.set_sense(fault);
                DeviceStatus::UNIT_CHECK
            }
        }
    }

    fn reset(&mut self) {
        // Whatever the policy: a reset is rare, and leaves nothing unsynced.
        if let Err(fault) = self.write_back().and_then(|()| self.sync()) {
            log::error!("dasd: flush at reset failed: {fault:?}");
        }
        self.chain = ChainContext::default();
        self.prepared = None;
        self.sense = Sense::default();
    }

    fn sense(&self) -> Sense {
        self.sense
    }
}

impl Drop for Dasd {
    /// Leave nothing unsynced when the device goes away (`flush=none`).
    fn drop(&mut self) {
        if let Err(fault) = self.write_back().and_then(|()| self.sync()) {
            log::error!("dasd: flush at close failed: {fault:?}");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
