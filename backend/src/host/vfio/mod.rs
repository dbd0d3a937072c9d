//! `vfio`: a real subchannel, driven through the Linux vfio-ccw driver.
//!
//! The device is a vfio-ccw mediated device (mdev) named by its UUID or
//! its sysfs path (see [`VfioTarget`]). At construction the host opens the
//! device's VFIO group, sets it into a new type-1 IOMMU container and maps
//! its *program window* (memory of its own, below 2 GiB in IOVA space)
//! there; it then opens the device once to read the SCHIB and the device's
//! SENSE ID data for the config space, and closes it again.
//!
//! Session open ([`HostSubchannel::enable`]) opens the device fd: vfio-ccw
//! enables the subchannel. The I/O region is region 0; the async-command,
//! SCHIB and CRW regions are found by their region type and subtype; the
//! IO, CRW and REQ interrupts are routed to three eventfds behind one epoll
//! fd, the host's notifier. Session close ([`HostSubchannel::disable`])
//! refuses while a function is in progress (the state machine quiesces
//! first, with HALT and CLEAR) and then closes the device fd: vfio-ccw
//! disables the subchannel.
//!
//! START lays the translated program out for the container
//! ([`super::vfio_layout`]): guest RAM is mapped at [`RAM_IOVA_BASE`] plus
//! the guest address (remapped when the memory table changed), the host
//! CCWs and IDALs are copied into the program window, and the host ORB is
//! written to the I/O region together with an SCSW whose function control
//! is start. HALT and CLEAR are commands in the async region, STORE reads
//! the SCHIB region, channel reports are drained from the CRW region, and a
//! REQ interrupt means the device is being removed: it is reported as gone
//! and the device fd is closed so that the removal can go on. How kernel
//! errors become condition codes and statuses is in docs/vfio.md.

mod sys;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost_user_ccw_protocol::arch::{
    Ccw1, CcwFlags, Crw, DeviceStatus, FunctionControl, Idaw2, Irb, Orb, Schib, Scsw, SenseId,
    StatusControl,
};
use vhost_user_ccw_protocol::wire::CONTROL_WINDOW_BASE;
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion, MmapRegion, VolatileMemory};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::vfio_layout::{HostProgram, IOMMU_PAGE, IovaMap, IovaRange, ProgramWindow};
use super::{HostCc, HostError, HostEvent, HostSubchannel, Identity};
use crate::memory::GuestRam;
use crate::translate::ChannelProgram;

/// Guest RAM is mapped into the container at this IOVA plus the guest
/// address: above 4 GiB, clear of the program window.
pub const RAM_IOVA_BASE: u64 = 1 << 32;
/// IOVA of the program window (below 2 GiB: host CCWs are format 1).
pub const PROGRAM_WINDOW_IOVA: u32 = 0x4000_0000;
/// Size of the program window: the largest host program the translator's
/// limits allow, plus [`CCW_FETCH_SLACK`].
pub const PROGRAM_WINDOW_LEN: u32 = 1 << 20;
/// vfio-ccw reads 2 KiB of CCWs at the CPA and at every TIC target, so
/// that much must be mapped past the last CCW.
pub const CCW_FETCH_SLACK: u32 = 2048;
/// How often a region access that the kernel found contended (`EAGAIN`:
/// its interrupt work held the region lock) is retried, and how long to
/// wait in between.
const CONTENDED_RETRIES: u32 = 1000;
const CONTENDED_PAUSE: Duration = Duration::from_micros(100);
/// How long the SENSE ID at construction may take.
const SENSE_ID_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a close waits for a final interruption the kernel owes (the
/// kernel's own quiesce waits 3 s for one).
const FINAL_INTERRUPTION_WAIT: Duration = Duration::from_secs(3);

/// Epoll tokens of the three interrupt eventfds.
const TOKEN_IO: u64 = 0;
const TOKEN_CRW: u64 = 1;
const TOKEN_REQ: u64 = 2;

/// A `vfio:` device argument resolved to sysfs.
///
/// Accepted forms: `vfio:UUID` (an mdev under /sys/bus/mdev/devices) and
/// `vfio:PATH` with an absolute sysfs path of the mdev (for example
/// `/sys/bus/mdev/devices/UUID` or `/sys/devices/css0/0.0.0005/UUID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioTarget {
    /// The mdev's name (its UUID), the device name in its VFIO group.
    pub name: String,
    /// Its sysfs directory as given or derived (not yet resolved).
    pub sysfs: PathBuf,
}

/// Why a `vfio:` argument is not usable, before any file is opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Neither a UUID nor an absolute path.
    #[error("'{0}' is neither an mdev UUID nor an absolute sysfs path of one")]
    NotUuidOrPath(String),
    /// The last path component is not a UUID.
    #[error("'{0}' does not end in an mdev UUID")]
    NoUuid(String),
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

impl VfioTarget {
    /// Parse what follows `vfio:`.
    pub fn parse(spec: &str) -> Result<Self, TargetError> {
        if is_uuid(spec) {
            return Ok(Self {
                name: spec.to_ascii_lowercase(),
                sysfs: Path::new("/sys/bus/mdev/devices").join(spec),
            });
        }
        let path = Path::new(spec);
        if !path.is_absolute() {
            return Err(TargetError::NotUuidOrPath(spec.to_owned()));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| is_uuid(n))
            .ok_or_else(|| TargetError::NoUuid(spec.to_owned()))?;
        Ok(Self {
            name: name.to_owned(),
            sysfs: path.to_owned(),
        })
    }
}

/// What a region access of vfio-ccw means for the guest (docs/vfio.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A condition code.
    Cc(HostCc),
    /// The kernel refused the function for a reason of its own (say, a
    /// channel program it cannot translate): reported to the guest as a
    /// unit exception with condition code 0, as QEMU does.
    Refused,
}

/// Map the result of an I/O-region (START) or async-region (HALT, CLEAR)
/// write. `EAGAIN` never gets here: it is retried.
fn outcome(result: &io::Result<()>) -> Outcome {
    match result {
        Ok(()) => Outcome::Cc(HostCc::Accepted),
        Err(e) => match e.raw_os_error() {
            // Hardware cc1 and cc2 both come back as EBUSY; the state
            // machine computes the guest's cc1 from its own state.
            Some(libc::EBUSY) => Outcome::Cc(HostCc::Busy),
            Some(libc::ENODEV | libc::EACCES) => Outcome::Cc(HostCc::NotOperational),
            _ => Outcome::Refused,
        },
    }
}

/// The unit-exception IRB for a function the kernel refused: primary,
/// secondary and alert status, device status unit exception, CPA one past
/// the first CCW (for a start).
fn refusal_irb(function: FunctionControl, orb: Option<&Orb>) -> Irb {
    Irb {
        scsw: Scsw {
            format1: orb.is_some_and(|o| o.format1),
            function_control: function,
            status_control: StatusControl::PRIMARY
                | StatusControl::SECONDARY
                | StatusControl::ALERT
                | StatusControl::STATUS_PENDING,
            cpa: orb.map_or(0, |o| o.cpa.wrapping_add(8)),
            device_status: DeviceStatus::UNIT_EXCEPTION,
            ..Scsw::default()
        },
        ..Irb::default()
    }
}

/// Translate an IRB of the host program back to guest addresses. The
/// kernel already mapped the SCSW CPA back to the program's IOVA; the ESW
/// addresses it leaves as host (physical) addresses. Whatever does not map
/// back becomes 0 (and its validity flag is cleared): the guest never sees
/// a host address.
fn guest_irb(mut irb: Irb, program: Option<&HostProgram>) -> Irb {
    let solicited = !irb.scsw.is_unsolicited();
    irb.scsw.cpa = match program {
        Some(p) if solicited && irb.scsw.function_control.contains(FunctionControl::START) => {
            p.guest_cpa(irb.scsw.cpa).unwrap_or(0)
        }
        _ => 0,
    };
    let fsa = program.and_then(|p| p.guest_address(irb.esw.failing_storage_address));
    irb.esw.failing_storage_address = fsa.unwrap_or(0);
    irb.esw.erw.failing_storage_address_valid &= fsa.is_some();
    let secondary = program.and_then(|p| p.guest_secondary_ccw(irb.esw.secondary_ccw_address));
    irb.esw.secondary_ccw_address = secondary.unwrap_or(0);
    irb.esw.erw.secondary_ccw_address_valid &= secondary.is_some();
    irb
}

/// Offset of the ERW in an IRB (SCSW 12 bytes, then ESW word 0).
const IRB_ERW: usize = 16;

/// Decode an IRB the kernel stored. Reserved ERW bits (bit 0, bits 16-31)
/// are cleared first: the channel subsystem under us may set them (QEMU's
/// emulated devices store the sense count in bits 16-23 with concurrent
/// sense), and what the guest gets must be architecturally clean.
fn decode_host_irb(mut bytes: [u8; Irb::SIZE]) -> Result<Irb, HostError> {
    let reserved = bytes[IRB_ERW] & 0x80 != 0 || bytes[IRB_ERW + 2..IRB_ERW + 4] != [0, 0];
    if reserved {
        log::debug!(
            "vfio: reserved ERW bits cleared: {:02x?}",
            &bytes[IRB_ERW..IRB_ERW + 4]
        );
        bytes[IRB_ERW] &= 0x7f;
        bytes[IRB_ERW + 2..IRB_ERW + 4].fill(0);
    }
    Irb::decode(&bytes).map_err(|e| invalid("IRB", e.to_string()))
}

/// A channel report as a host event: channel-path reports become path
/// changes (initialized = on, permanent error = off); others are logged.
fn crw_event(crw: &Crw) -> Option<HostEvent> {
    if crw.rsc != Crw::RSC_CHANNEL_PATH {
        log::info!("vfio: channel report {crw:?} ignored");
        return None;
    }
    let chpid = u8::try_from(crw.rsid & 0xff).unwrap_or(0);
    match crw.erc {
        Crw::ERC_INITIALIZED | Crw::ERC_AVAILABLE => Some(HostEvent::PathChange {
            chpid,
            online: true,
        }),
        Crw::ERC_PERMANENT_ERROR_INITIALIZED | Crw::ERC_PERMANENT_ERROR_NOT_INITIALIZED => {
            Some(HostEvent::PathChange {
                chpid,
                online: false,
            })
        }
        _ => {
            log::info!("vfio: channel-path report {crw:?} ignored");
            None
        }
    }
}

/// The open device: its fd and where its regions are.
#[derive(Debug)]
struct Device {
    file: File,
    io: u64,
    cmd: u64,
    schib: u64,
    crw: Option<u64>,
}

/// Guest RAM as currently mapped into the container.
#[derive(Debug)]
struct MappedRam {
    /// `(guest address, length, host address)` of each mapping.
    regions: Vec<(u64, u64, u64)>,
    map: IovaMap,
    /// Keeps the mapped memory alive while the container maps it.
    _ram: GuestRam,
}

/// A program the channel runs.
#[derive(Debug)]
struct Running {
    _program: Arc<ChannelProgram>,
    _ram: GuestRam,
    layout: HostProgram,
}

/// A Linux vfio-ccw subchannel.
pub struct VfioSubchannel {
    /// Declared first: closed before the container goes away.
    device: Option<Device>,
    target: VfioTarget,
    group: File,
    container: File,
    window: MmapRegion<()>,
    mapped: Option<MappedRam>,
    running: Option<Running>,
    /// The layout of the last program, kept for interruptions of a halt or
    /// clear that arrive after its final status.
    last_layout: Option<HostProgram>,
    epoll: Epoll,
    io_event: EventFd,
    crw_event: EventFd,
    req_event: EventFd,
    identity: Identity,
    /// The SCHIB as last stored, for STORE while the device is closed.
    last_schib: Schib,
    gone: bool,
    /// Interruptions the host made up (refused functions).
    synthetic: Vec<HostEvent>,
    /// The kernel accepted a start, halt or clear whose final interruption
    /// has not come through the I/O eventfd yet.
    interruption_due: bool,
}

impl std::fmt::Debug for VfioSubchannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioSubchannel")
            .field("target", &self.target)
            .field("open", &self.device.is_some())
            .field("gone", &self.gone)
            .finish_non_exhaustive()
    }
}

fn os(what: &'static str) -> impl FnOnce(io::Error) -> HostError {
    move |source| HostError::Io { what, source }
}

/// As [`os`], but ENODEV (vfio-ccw's answer once the device is gone) is
/// not operational.
fn os_or_gone(what: &'static str) -> impl FnOnce(io::Error) -> HostError {
    move |source| {
        if source.raw_os_error() == Some(libc::ENODEV) {
            HostError::NotOperational
        } else {
            HostError::Io { what, source }
        }
    }
}

fn invalid(what: &'static str, message: String) -> HostError {
    HostError::Io {
        what,
        source: io::Error::new(io::ErrorKind::InvalidInput, message),
    }
}

/// `c.s.xxxx` (hex) of a subchannel's sysfs name.
fn parse_schid(name: &str) -> Option<(u8, u8, u16)> {
    let mut parts = name.split('.');
    let cssid = u8::from_str_radix(parts.next()?, 16).ok()?;
    let ssid = u8::from_str_radix(parts.next()?, 16).ok()?;
    let schno = u16::from_str_radix(parts.next()?, 16).ok()?;
    parts.next().is_none().then_some((cssid, ssid, schno))
}

/// Retry a region access while the kernel reports it contended.
fn retry_contended(mut access: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    for _ in 0..CONTENDED_RETRIES {
        match access() {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                std::thread::sleep(CONTENDED_PAUSE);
            }
            other => return other,
        }
    }
    access()
}

/// Whether an eventfd was signalled (and reset it).
fn drained(event: &EventFd) -> Result<bool, HostError> {
    match event.read() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(HostError::Io {
            what: "eventfd read",
            source: e,
        }),
    }
}

impl VfioSubchannel {
    /// Open the mdev `target` names, set up its container and read its
    /// identity (the device is opened for that and closed again).
    pub fn new(target: VfioTarget) -> Result<Self, HostError> {
        let sysfs = target.sysfs.canonicalize().map_err(|e| {
            invalid(
                "vfio device",
                format!("{}: {e} (is the mdev created?)", target.sysfs.display()),
            )
        })?;
        let group_link = std::fs::read_link(sysfs.join("iommu_group")).map_err(|e| {
            invalid(
                "vfio device",
                format!("{}/iommu_group: {e}", sysfs.display()),
            )
        })?;
        let group_id = group_link
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid("vfio device", format!("bad group link {group_link:?}")))?
            .to_owned();
        let (cssid, ssid, schno) = sysfs
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(parse_schid)
            .ok_or_else(|| {
                invalid(
                    "vfio device",
                    format!("{} is not below a subchannel", sysfs.display()),
                )
            })?;

        let rw = |path: &str| OpenOptions::new().read(true).write(true).open(path);
        let container = rw("/dev/vfio/vfio").map_err(os("open /dev/vfio/vfio"))?;
        if sys::ioctl_value(&container, sys::VFIO_GET_API_VERSION, 0)
            .map_err(os("VFIO_GET_API_VERSION"))?
            != sys::VFIO_API_VERSION
        {
            return Err(invalid(
                "VFIO_GET_API_VERSION",
                "unknown VFIO API".to_owned(),
            ));
        }
        let iommu = [sys::VFIO_TYPE1V2_IOMMU, sys::VFIO_TYPE1_IOMMU]
            .into_iter()
            .find(|t| {
                sys::ioctl_value(
                    &container,
                    sys::VFIO_CHECK_EXTENSION,
                    libc::c_ulong::from(*t),
                )
                .is_ok_and(|r| r > 0)
            })
            .ok_or_else(|| invalid("VFIO_CHECK_EXTENSION", "no type-1 IOMMU".to_owned()))?;
        let group_path = format!("/dev/vfio/{group_id}");
        let group = rw(&group_path).map_err(os("open the VFIO group"))?;
        let status = sys::group_status(&group).map_err(os("VFIO_GROUP_GET_STATUS"))?;
        if status.flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(invalid(
                "VFIO group",
                format!("{group_path} is not viable (a device of it is bound to a host driver)"),
            ));
        }
        sys::group_set_container(&group, &container).map_err(os("VFIO_GROUP_SET_CONTAINER"))?;
        sys::ioctl_value(&container, sys::VFIO_SET_IOMMU, libc::c_ulong::from(iommu))
            .map_err(os("VFIO_SET_IOMMU"))?;

        let window =
            MmapRegion::<()>::new(usize::try_from(PROGRAM_WINDOW_LEN).unwrap_or(usize::MAX))
                .map_err(|e| HostError::Io {
                    what: "program window",
                    source: io::Error::other(e),
                })?;
        let vaddr = u64::try_from(window.as_ptr().addr()).unwrap_or(u64::MAX);
        sys::dma_map(
            &container,
            vaddr,
            u64::from(PROGRAM_WINDOW_IOVA),
            u64::from(PROGRAM_WINDOW_LEN),
        )
        .map_err(os("VFIO_IOMMU_MAP_DMA (program window)"))?;

        let eventfd = || EventFd::new(EFD_NONBLOCK).map_err(os("eventfd"));
        let epoll = Epoll::new().map_err(os("epoll_create"))?;
        let (io_event, crw_event, req_event) = (eventfd()?, eventfd()?, eventfd()?);
        for (fd, token) in [
            (io_event.as_raw_fd(), TOKEN_IO),
            (crw_event.as_raw_fd(), TOKEN_CRW),
            (req_event.as_raw_fd(), TOKEN_REQ),
        ] {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .map_err(os("epoll_ctl"))?;
        }

        let mut host = Self {
            device: None,
            target,
            group,
            container,
            window,
            mapped: None,
            running: None,
            last_layout: None,
            epoll,
            io_event,
            crw_event,
            req_event,
            identity: Identity {
                cssid,
                ssid,
                schno,
                chpid_type: [0; 8],
                sense_id: SenseId::default(),
            },
            last_schib: Schib::default(),
            gone: false,
            synthetic: Vec::new(),
            interruption_due: false,
        };
        host.enable()?;
        let probed = host.probe();
        let closed = host.disable();
        let (schib, sense_id) = probed?;
        closed?;
        for (i, chpid) in schib.pmcw.chpid.iter().enumerate() {
            if schib.pmcw.pim & (0x80 >> i) != 0 {
                host.identity.chpid_type[i] = chpid_type(cssid, *chpid).unwrap_or(0);
            }
        }
        host.identity.sense_id = sense_id;
        log::info!(
            "vfio: {} is subchannel {cssid:x}.{ssid:x}.{schno:04x}, device {:04x}, control unit {:04x}/{:02x}, device type {:04x}/{:02x}",
            host.target.name,
            schib.pmcw.devno,
            host.identity.sense_id.cu_type,
            host.identity.sense_id.cu_model,
            host.identity.sense_id.dev_type,
            host.identity.sense_id.dev_model,
        );
        Ok(host)
    }

    /// Open the device: vfio-ccw enables the subchannel.
    fn open_device(&self) -> Result<Device, HostError> {
        let name = CString::new(self.target.name.clone())
            .map_err(|_| invalid("vfio device", "NUL in the name".to_owned()))?;
        let file = sys::group_get_device_fd(&self.group, &name)
            .map_err(os_or_gone("VFIO_GROUP_GET_DEVICE_FD"))?;
        let info = sys::device_info(&file).map_err(os("VFIO_DEVICE_GET_INFO"))?;
        if info.flags & sys::VFIO_DEVICE_FLAGS_CCW == 0 {
            return Err(invalid(
                "vfio device",
                format!("{} is not a vfio-ccw device", self.target.name),
            ));
        }
        let (io, _) = sys::region_info(&file, sys::VFIO_CCW_CONFIG_REGION_INDEX)
            .map_err(os("VFIO_DEVICE_GET_REGION_INFO"))?;
        if io.size < sys::IO_REGION_SIZE {
            return Err(invalid("vfio device", "I/O region too small".to_owned()));
        }
        let (mut cmd, mut schib, mut crw) = (None, None, None);
        for index in 1..info.num_regions {
            let (region, raw) =
                sys::region_info(&file, index).map_err(os("VFIO_DEVICE_GET_REGION_INFO"))?;
            let (slot, size) = match sys::region_type(&raw) {
                Some((sys::VFIO_REGION_TYPE_CCW, sys::VFIO_REGION_SUBTYPE_CCW_ASYNC_CMD)) => {
                    (&mut cmd, sys::CMD_REGION_SIZE)
                }
                Some((sys::VFIO_REGION_TYPE_CCW, sys::VFIO_REGION_SUBTYPE_CCW_SCHIB)) => {
                    (&mut schib, sys::SCHIB_REGION_SIZE)
                }
                Some((sys::VFIO_REGION_TYPE_CCW, sys::VFIO_REGION_SUBTYPE_CCW_CRW)) => {
                    (&mut crw, sys::CRW_REGION_SIZE)
                }
                _ => continue,
            };
            if region.size >= size {
                *slot = Some(region.offset);
            }
        }
        let missing = |what: &str| {
            invalid(
                "vfio device",
                format!("{}: no {what} region", self.target.name),
            )
        };
        let device = Device {
            file,
            io: io.offset,
            cmd: cmd.ok_or_else(|| missing("async command"))?,
            schib: schib.ok_or_else(|| missing("SCHIB"))?,
            crw,
        };
        for (index, event) in [
            (sys::VFIO_CCW_IO_IRQ_INDEX, &self.io_event),
            (sys::VFIO_CCW_CRW_IRQ_INDEX, &self.crw_event),
            (sys::VFIO_CCW_REQ_IRQ_INDEX, &self.req_event),
        ] {
            // A kernel without the CRW or REQ interrupt still works, minus
            // path reports or orderly removal.
            if let Err(e) = sys::set_irq_eventfd(&device.file, index, Some(event.as_raw_fd())) {
                if index == sys::VFIO_CCW_IO_IRQ_INDEX {
                    return Err(HostError::Io {
                        what: "VFIO_DEVICE_SET_IRQS",
                        source: e,
                    });
                }
                log::warn!("vfio: interrupt {index} not available: {e}");
            }
        }
        Ok(device)
    }

    /// Close the device fd (vfio-ccw disables the subchannel, quiescing it
    /// itself if it still runs something) and unmap guest RAM.
    fn close_device(&mut self) {
        if let Some(device) = self.device.take() {
            for index in [
                sys::VFIO_CCW_IO_IRQ_INDEX,
                sys::VFIO_CCW_CRW_IRQ_INDEX,
                sys::VFIO_CCW_REQ_IRQ_INDEX,
            ] {
                let _ = sys::set_irq_eventfd(&device.file, index, None);
            }
            drop(device);
            log::info!("vfio: {} closed: subchannel disabled", self.target.name);
        }
        self.running = None;
        self.last_layout = None;
        self.interruption_due = false;
        self.unmap_ram();
        // Nothing of the closed device may reach the next session.
        for event in [&self.io_event, &self.crw_event, &self.req_event] {
            let _ = drained(event);
        }
        self.last_schib.pmcw.enabled = false;
        self.last_schib.scsw = Scsw::default();
    }

    /// Before a close: take the final interruption the kernel still owes.
    ///
    /// vfio-ccw's interrupt handler takes the status from the subchannel
    /// (the SCHIB then shows it idle) and leaves the rest to a worker: end
    /// the program, set its state machine to IDLE, publish the IRB, signal
    /// the eventfd. A close between the two finds the program still
    /// pending, disables the subchannel and sets STANDBY; the worker then
    /// sets IDLE over the closed device, and vfio-ccw answers the next open
    /// with "not operational" for good (the mdev is lost until it is
    /// re-created). Waiting for the eventfd closes only after the worker.
    fn await_final_interruption(&mut self) {
        if !self.interruption_due {
            return;
        }
        let waited = super::wait_readable(self.io_event.as_raw_fd(), FINAL_INTERRUPTION_WAIT)
            // A session is ending: the interruption goes nowhere.
            .and_then(|ready| {
                if ready {
                    self.poll(&mut Vec::new())
                } else {
                    Ok(())
                }
            });
        if let Err(e) = waited {
            log::warn!(
                "vfio: {}: waiting for the final interruption: {e}",
                self.target.name
            );
        }
        if self.interruption_due {
            log::warn!(
                "vfio: {}: closing without the final interruption the kernel owes",
                self.target.name
            );
        }
    }

    fn unmap_ram(&mut self) {
        if let Some(mapped) = self.mapped.take() {
            for (guest, len, _) in &mapped.regions {
                if let Err(e) = sys::dma_unmap(&self.container, RAM_IOVA_BASE + guest, *len) {
                    log::error!("vfio: unmapping guest RAM at {guest:#x}: {e}");
                }
            }
        }
    }

    /// The guest RAM mappings `ram` needs: every region below the control
    /// window, page aligned.
    fn ram_regions(ram: &GuestRam) -> Result<Vec<(u64, u64, u64)>, String> {
        let mut regions = Vec::new();
        for region in ram.table().iter() {
            let guest = region.start_addr().0;
            if guest >= CONTROL_WINDOW_BASE {
                continue;
            }
            let len = region.len().min(CONTROL_WINDOW_BASE - guest);
            let host = u64::try_from(region.as_ptr().addr()).unwrap_or(u64::MAX);
            if guest % IOMMU_PAGE != 0 || len % IOMMU_PAGE != 0 || host % IOMMU_PAGE != 0 {
                return Err(format!(
                    "guest RAM region {guest:#x}+{len:#x} is not page aligned"
                ));
            }
            regions.push((guest, len, host));
        }
        regions.sort_unstable();
        Ok(regions)
    }

    /// Map `ram` into the container unless it is mapped already.
    fn map_ram(&mut self, ram: &GuestRam) -> Result<IovaMap, String> {
        let regions = Self::ram_regions(ram)?;
        if let Some(mapped) = &self.mapped {
            if mapped.regions == regions {
                return Ok(mapped.map.clone());
            }
        }
        if self.running.is_some() {
            // Unmapping pages the channel may still use would make
            // vfio-ccw reset the device under the running program.
            return Err("the memory table changed while a program runs".to_owned());
        }
        self.unmap_ram();
        let window = ProgramWindow {
            iova: PROGRAM_WINDOW_IOVA,
            len: PROGRAM_WINDOW_LEN,
        };
        let ranges = regions
            .iter()
            .map(|&(guest, len, _)| IovaRange {
                guest,
                len,
                iova: RAM_IOVA_BASE + guest,
            })
            .collect();
        let map = IovaMap::new(ranges, window).map_err(|e| e.to_string())?;
        let mut done: Vec<(u64, u64, u64)> = Vec::new();
        for &(guest, len, host) in &regions {
            if let Err(e) = sys::dma_map(&self.container, host, RAM_IOVA_BASE + guest, len) {
                for (guest, len, _) in done {
                    let _ = sys::dma_unmap(&self.container, RAM_IOVA_BASE + guest, len);
                }
                return Err(format!("mapping guest RAM {guest:#x}+{len:#x}: {e}"));
            }
            done.push((guest, len, host));
        }
        self.mapped = Some(MappedRam {
            regions,
            map: map.clone(),
            _ram: ram.clone(),
        });
        Ok(map)
    }

    /// Write the ORB and a start SCSW to the I/O region.
    fn submit(&self, orb: &Orb) -> io::Result<()> {
        let device = self
            .device
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        // The whole region: ORB, SCSW, and zeros for the IRB and return
        // code (the kernel returns the code as the write's error).
        let mut region = vec![0u8; usize::try_from(sys::IO_REGION_SIZE).unwrap_or(0)];
        let scsw = Scsw {
            function_control: FunctionControl::START,
            ..Scsw::default()
        };
        let at = |offset: u64, len: usize| {
            let start = usize::try_from(offset).unwrap_or(0);
            start..start + len
        };
        region[at(sys::IO_ORB, Orb::SIZE)].copy_from_slice(&orb.encode());
        region[at(sys::IO_SCSW, Scsw::SIZE)].copy_from_slice(&scsw.encode());
        retry_contended(|| device.file.write_all_at(&region, device.io))
    }

    /// Issue HALT (1) or CLEAR (2) through the async region.
    fn async_command(&mut self, command: u32, function: FunctionControl) -> HostCc {
        if self.gone {
            return HostCc::NotOperational;
        }
        let Some(device) = self.device.as_ref() else {
            return HostCc::NotOperational;
        };
        let mut region = [0u8; 8];
        region[..4].copy_from_slice(&command.to_ne_bytes());
        let result = retry_contended(|| device.file.write_all_at(&region, device.cmd));
        // The lab (scripts/vfio-lab.sh) reads these lines to see a session's
        // quiesce go through the async region.
        let name = if command == sys::VFIO_CCW_ASYNC_CMD_HSCH {
            "HALT"
        } else {
            "CLEAR"
        };
        log::debug!("vfio: {name} through the async region: {result:?}");
        match outcome(&result) {
            Outcome::Cc(cc) => {
                self.interruption_due |= cc == HostCc::Accepted;
                cc
            }
            Outcome::Refused => {
                log::error!(
                    "vfio: async command {command} refused: {}",
                    result.err().map(|e| e.to_string()).unwrap_or_default()
                );
                self.synthetic
                    .push(HostEvent::Interrupt(refusal_irb(function, None)));
                HostCc::Accepted
            }
        }
    }

    /// Refuse a START: unit exception, cc 0.
    fn refuse_start(&mut self, program: &ChannelProgram, why: &str) -> HostCc {
        log::error!("vfio: START refused: {why}");
        self.synthetic.push(HostEvent::Interrupt(refusal_irb(
            FunctionControl::START,
            Some(&program.orb),
        )));
        HostCc::Accepted
    }

    /// Read the SCHIB region (STORE SUBCHANNEL on the host).
    fn read_schib(&self, device: &Device) -> Result<Schib, HostError> {
        let mut bytes = [0u8; 52];
        device
            .file
            .read_exact_at(&mut bytes, device.schib)
            .map_err(os_or_gone("reading the SCHIB region"))?;
        Schib::decode(&bytes).map_err(|e| invalid("SCHIB region", e.to_string()))
    }

    fn read_irb(&self, device: &Device) -> Result<Irb, HostError> {
        let mut bytes = [0u8; 96];
        retry_contended(|| {
            device
                .file
                .read_exact_at(&mut bytes, device.io + sys::IO_IRB)
        })
        .map_err(os("reading the IRB"))?;
        decode_host_irb(bytes)
    }

    /// Read the SCHIB and run SENSE ID with a program of our own in the
    /// program window (the device is open, no guest RAM is involved).
    fn probe(&mut self) -> Result<(Schib, SenseId), HostError> {
        let device = self.device.as_ref().ok_or(HostError::NotOperational)?;
        let schib = self.read_schib(device)?;
        self.last_schib = schib;
        // CCW at the window start, its IDAL at +0x100, the data block at
        // +0x1000.
        let base = PROGRAM_WINDOW_IOVA;
        let len = u16::try_from(SenseId::MAX_SIZE).unwrap_or(u16::MAX);
        let ccw = Ccw1 {
            cmd: 0xe4,
            flags: CcwFlags::SLI | CcwFlags::IDA,
            count: len,
            cda: base + 0x100,
        };
        let slice = self.window.as_volatile_slice();
        let io = |e: vm_memory::volatile_memory::Error| HostError::Io {
            what: "program window",
            source: io::Error::other(e),
        };
        slice.write_slice(&[0u8; 0x1100], 0).map_err(io)?;
        slice.write_slice(&ccw.encode(), 0).map_err(io)?;
        let idaw = Idaw2(u64::from(base) + 0x1000);
        slice.write_slice(&idaw.encode(), 0x100).map_err(io)?;
        let orb = Orb {
            format1: true,
            prefetch: true,
            format2_idaw: true,
            lpm: schib.pmcw.pam,
            cpa: base,
            ..Orb::default()
        };
        let _ = drained(&self.io_event);
        self.submit(&orb).map_err(os("SENSE ID"))?;
        let deadline = Instant::now() + SENSE_ID_TIMEOUT;
        let irb = loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(invalid("SENSE ID", "no interruption".to_owned()));
            }
            super::wait_readable(self.io_event.as_raw_fd(), deadline - now)?;
            if drained(&self.io_event)? {
                let device = self.device.as_ref().ok_or(HostError::NotOperational)?;
                let irb = self.read_irb(device)?;
                if irb.scsw.is_final() {
                    break irb;
                }
            }
        };
        let ok = irb.scsw.device_status.contains(DeviceStatus::DEVICE_END)
            && !irb.scsw.device_status.contains(DeviceStatus::UNIT_CHECK)
            && irb.scsw.subchannel_status.is_empty();
        if !ok {
            return Err(invalid("SENSE ID", format!("ended with {:?}", irb.scsw)));
        }
        let got = usize::from(len - irb.scsw.count.min(len));
        let mut data = vec![0u8; got];
        slice.read_slice(&mut data, 0x1000).map_err(io)?;
        let sense_id = SenseId::decode(&data).map_err(|e| invalid("SENSE ID", e.to_string()))?;
        Ok((schib, sense_id))
    }
}

/// Channel-path type from sysfs (`/sys/devices/cssN/chpN.XX/type`, hex).
fn chpid_type(cssid: u8, chpid: u8) -> Option<u8> {
    let path = format!("/sys/devices/css{cssid:x}/chp{cssid:x}.{chpid:02x}/type");
    let text = std::fs::read_to_string(path).ok()?;
    u8::from_str_radix(text.trim(), 16).ok()
}

impl HostSubchannel for VfioSubchannel {
    fn identity(&self) -> Identity {
        self.identity.clone()
    }

    fn enable(&mut self) -> Result<(), HostError> {
        if self.gone {
            return Err(HostError::NotOperational);
        }
        if self.device.is_none() {
            let _ = drained(&self.io_event);
            self.device = Some(self.open_device()?);
            log::info!("vfio: {} opened: subchannel enabled", self.target.name);
        }
        Ok(())
    }

    fn disable(&mut self) -> Result<(), HostError> {
        let Some(device) = self.device.as_ref() else {
            return Ok(());
        };
        match self.read_schib(device) {
            Ok(schib) => {
                self.last_schib = schib;
                if !schib.scsw.function_control.is_empty() {
                    log::debug!(
                        "vfio: not closing yet, a function is in progress: fc={:?} ac={:?} sc={:?}",
                        schib.scsw.function_control,
                        schib.scsw.activity_control,
                        schib.scsw.status_control
                    );
                    return Err(HostError::Busy);
                }
            }
            Err(HostError::NotOperational) => {
                self.close_device();
                return Err(HostError::NotOperational);
            }
            Err(e) => return Err(e),
        }
        // Best effort: the device is closed whatever the wait ends with.
        self.await_final_interruption();
        self.close_device();
        Ok(())
    }

    fn start(&mut self, program: Arc<ChannelProgram>, ram: GuestRam) -> HostCc {
        if self.gone || self.device.is_none() {
            return HostCc::NotOperational;
        }
        // Whether a start is still in progress is the kernel's to say
        // (EBUSY): a program whose final status was overwritten in the I/O
        // region must not keep the host busy for ever. Rewriting the
        // program window is safe at any time: vfio-ccw runs its own copy of
        // the program, made when the START was accepted.
        let map = match self.map_ram(&ram) {
            Ok(map) => map,
            Err(why) => return self.refuse_start(&program, &why),
        };
        let layout = match HostProgram::build(&program, &map, PROGRAM_WINDOW_IOVA) {
            Ok(layout) => layout,
            Err(e) => return self.refuse_start(&program, &e.to_string()),
        };
        if layout.image_len() > PROGRAM_WINDOW_LEN - CCW_FETCH_SLACK {
            return self.refuse_start(&program, "host program larger than the program window");
        }
        // Zeros after the image: the kernel's 2 KiB CCW fetch reads them.
        let mut image = layout.image();
        image.resize(image.len() + 2048, 0);
        if let Err(e) = self.window.as_volatile_slice().write_slice(&image, 0) {
            return self.refuse_start(&program, &e.to_string());
        }
        let result = self.submit(layout.orb());
        match outcome(&result) {
            Outcome::Cc(HostCc::Accepted) => {
                self.interruption_due = true;
                self.running = Some(Running {
                    _program: program,
                    _ram: ram,
                    layout,
                });
                HostCc::Accepted
            }
            Outcome::Cc(cc) => cc,
            Outcome::Refused => {
                let why = result.err().map(|e| e.to_string()).unwrap_or_default();
                self.refuse_start(&program, &format!("kernel: {why}"))
            }
        }
    }

    fn halt(&mut self) -> HostCc {
        self.async_command(sys::VFIO_CCW_ASYNC_CMD_HSCH, FunctionControl::HALT)
    }

    fn clear(&mut self) -> HostCc {
        self.async_command(sys::VFIO_CCW_ASYNC_CMD_CSCH, FunctionControl::CLEAR)
    }

    /// vfio-ccw offers no CANCEL SUBCHANNEL: answered as "not applicable"
    /// (busy), so that a quiesce goes on with HALT.
    fn cancel(&mut self) -> HostCc {
        if self.gone || self.device.is_none() {
            HostCc::NotOperational
        } else {
            HostCc::Busy
        }
    }

    fn store(&mut self) -> Result<Schib, HostError> {
        if self.gone {
            return Err(HostError::NotOperational);
        }
        let Some(device) = self.device.as_ref() else {
            // Closed: vfio-ccw keeps the subchannel disabled and idle.
            return Ok(self.last_schib);
        };
        let schib = self.read_schib(device)?;
        self.last_schib = schib;
        Ok(schib)
    }

    fn notifier(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, HostError> {
        if !self.synthetic.is_empty() {
            return Ok(true);
        }
        super::wait_readable(self.notifier(), timeout)
    }

    /// The channel moves the data by DMA and reports only the residual
    /// count of the CCW it ended with (SLI may have cut earlier ones
    /// short): the bytes moved are not observable here.
    fn bytes_moved(&self) -> Option<u64> {
        None
    }

    fn poll(&mut self, events: &mut Vec<HostEvent>) -> Result<(), HostError> {
        events.append(&mut self.synthetic);
        if self.gone {
            return Ok(());
        }
        if drained(&self.req_event)? {
            log::warn!("vfio: {} is being removed", self.target.name);
            self.gone = true;
            self.close_device();
            events.push(HostEvent::DeviceGone);
            return Ok(());
        }
        let Some(device) = self.device.as_ref() else {
            return Ok(());
        };
        if drained(&self.io_event)? {
            // The I/O region holds the latest IRB only: should two
            // interruptions come before we read, the earlier is lost (as
            // for QEMU).
            let irb = self.read_irb(device)?;
            let layout = self
                .running
                .as_ref()
                .map(|r| &r.layout)
                .or(self.last_layout.as_ref());
            let irb = guest_irb(irb, layout);
            log::debug!(
                "vfio: interruption fc={:?} ac={:?} sc={:?} cpa={:#x} count={} dstat={:?}",
                irb.scsw.function_control,
                irb.scsw.activity_control,
                irb.scsw.status_control,
                irb.scsw.cpa,
                irb.scsw.count,
                irb.scsw.device_status
            );
            if irb.scsw.is_final() {
                self.interruption_due = false;
                if let Some(running) = self.running.take() {
                    self.last_layout = Some(running.layout);
                }
            }
            events.push(HostEvent::Interrupt(irb));
        }
        if let Some(crw_offset) = device.crw {
            if drained(&self.crw_event)? {
                // Each read pops one CRW; zero means none is left.
                for _ in 0..256 {
                    let mut bytes = [0u8; 8];
                    retry_contended(|| device.file.read_exact_at(&mut bytes, crw_offset))
                        .map_err(os("reading the CRW region"))?;
                    // The kernel copies the architected (big-endian) CRW
                    // into the region as it is.
                    let word = &bytes[..4];
                    if word == [0; 4] {
                        break;
                    }
                    match Crw::decode(word) {
                        Ok(crw) => events.extend(crw_event(&crw)),
                        Err(e) => log::warn!("vfio: bad CRW {word:02x?}: {e}"),
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
