//! A vhost-user-ccw frontend connection, set up the way QEMU's device does
//! it: guest RAM in a memfd at guest physical address 0, the rings and
//! request buffers in a second memfd registered in the control window, the
//! standard vhost-user handshake, the config space, then one requestq
//! element per subchannel function and eventq buffers kept posted.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use thiserror::Error;
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhost_user_ccw_protocol::wire::{
    CONTROL_WINDOW_BASE, ConfigSpace, DEVICE_FEATURES, EVENT_QUEUE, Event, NUM_QUEUES,
    PROTOCOL_FEATURE_BITS, PROTOCOL_VERSION, REQUEST_QUEUE, Request, Response,
    VIRTIO_CCW_F_PROTOCOL_V1, WireError,
};
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::runner::{Device, DeviceError};
use crate::sys::memfd;
use crate::vring::{Buffer, DriverQueue, RingLayout, VringError};

/// Connection failures.
#[derive(Debug, Error)]
pub enum ConnectionError {
    /// The vhost-user exchange failed.
    #[error("vhost-user {step}: {source}")]
    VhostUser {
        /// Which step of the handshake or which request.
        step: &'static str,
        /// The error from the vhost crate.
        source: vhost::Error,
    },
    /// The backend does not speak protocol v1.
    #[error("the backend does not offer protocol v1 (features {0:#x})")]
    NoProtocolV1(u64),
    /// The config space has a layout this frontend does not know.
    #[error("config space version {0}, expected {PROTOCOL_VERSION}")]
    ConfigVersion(u16),
    /// A message from the backend did not decode.
    #[error("malformed message from the backend: {0}")]
    Wire(#[from] WireError),
    /// Ring handling failed.
    #[error(transparent)]
    Vring(#[from] VringError),
    /// The backend did not answer in time.
    #[error("timed out waiting for the backend ({0})")]
    Timeout(&'static str),
    /// An OS resource could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A guest RAM access fell outside guest RAM.
    #[error("guest RAM access {addr:#x}+{len:#x} is out of range")]
    Ram {
        /// Start of the access.
        addr: u64,
        /// Its length.
        len: u64,
    },
}

fn vu(step: &'static str) -> impl FnOnce(vhost::Error) -> ConnectionError {
    move |source| ConnectionError::VhostUser { step, source }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ConnectionError {
    move |source| ConnectionError::Io { what, source }
}

/// Connection parameters.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Size of guest RAM.
    pub ram_size: u64,
    /// How long to wait for any single answer of the backend.
    pub timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            ram_size: 16 << 20,
            timeout: Duration::from_secs(5),
        }
    }
}

const CONTROL_SIZE: u64 = 1 << 20;
const REQUEST_QUEUE_SIZE: u16 = 16;
const EVENT_QUEUE_SIZE: u16 = 64;
const REQUEST_RING_AT: u64 = 0;
const EVENT_RING_AT: u64 = 0x1_0000;
const REQUEST_BUF_AT: u64 = 0x2_0000;
const RESPONSE_BUF_AT: u64 = 0x2_0100;
const EVENT_BUFS_AT: u64 = 0x3_0000;
const EVENT_BUF_SIZE: u32 = 128;

/// A live connection to a backend.
pub struct Connection {
    frontend: Frontend,
    mem: GuestMemoryMmap,
    ram_size: u64,
    _files: Vec<File>,
    queues: [DriverQueue; NUM_QUEUES],
    kicks: [EventFd; NUM_QUEUES],
    /// The call eventfds, kept open: the epoll set watches them.
    _calls: [EventFd; NUM_QUEUES],
    epoll: Epoll,
    config: ConfigSpace,
    event_bufs: HashMap<u16, u64>,
    events: VecDeque<Event>,
    timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("ram_size", &self.ram_size)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn region(gpa: u64, file: &File, size: u64) -> Result<GuestRegionMmap, ConnectionError> {
    let file = file.try_clone().map_err(io("dup memfd"))?;
    let size = usize::try_from(size).map_err(|_| ConnectionError::Ram {
        addr: gpa,
        len: size,
    })?;
    GuestRegionMmap::from_range(GuestAddress(gpa), size, Some(FileOffset::new(file, 0))).map_err(
        |e| ConnectionError::Io {
            what: "mmap",
            source: std::io::Error::other(e),
        },
    )
}

impl Connection {
    /// Connect to the backend at `path` and set the device up.
    pub fn connect(path: &Path, options: &ConnectOptions) -> Result<Self, ConnectionError> {
        let frontend = Frontend::connect(path, NUM_QUEUES as u64).map_err(vu("connect"))?;
        Self::setup(frontend, options)
    }

    /// Set up a device over an already connected frontend.
    pub fn setup(
        mut frontend: Frontend,
        options: &ConnectOptions,
    ) -> Result<Self, ConnectionError> {
        let ram_file = memfd(c"guest-ram", options.ram_size).map_err(io("memfd (guest RAM)"))?;
        let control_file = memfd(c"ccw-control", CONTROL_SIZE).map_err(io("memfd (control)"))?;
        let mem = GuestMemoryMmap::from_regions(vec![
            region(0, &ram_file, options.ram_size)?,
            region(CONTROL_WINDOW_BASE, &control_file, CONTROL_SIZE)?,
        ])
        .map_err(|e| ConnectionError::Io {
            what: "guest memory",
            source: std::io::Error::other(e),
        })?;

        frontend.set_owner().map_err(vu("SET_OWNER"))?;
        let offered = frontend.get_features().map_err(vu("GET_FEATURES"))?;
        if offered & VIRTIO_CCW_F_PROTOCOL_V1 == 0 {
            return Err(ConnectionError::NoProtocolV1(offered));
        }
        let offered_protocol = frontend
            .get_protocol_features()
            .map_err(vu("GET_PROTOCOL_FEATURES"))?;
        let wanted = PROTOCOL_FEATURE_BITS
            .iter()
            .fold(0u64, |acc, bit| acc | (1u64 << bit));
        let protocol = offered_protocol & VhostUserProtocolFeatures::from_bits_truncate(wanted);
        frontend
            .set_protocol_features(protocol)
            .map_err(vu("SET_PROTOCOL_FEATURES"))?;
        frontend
            .set_features(offered & DEVICE_FEATURES)
            .map_err(vu("SET_FEATURES"))?;
        if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // Every later message is acknowledged, so a refusal (say of the
            // memory table) is reported at the step that caused it.
            frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }

        let regions: Vec<VhostUserMemoryRegionInfo> = mem
            .iter()
            .zip([&ram_file, &control_file])
            .map(|(r, file)| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: host_addr(r),
                mmap_offset: 0,
                mmap_handle: file.as_raw_fd(),
            })
            .collect();
        frontend
            .set_mem_table(&regions)
            .map_err(vu("SET_MEM_TABLE"))?;

        let control_va = host_addr(mem.find_region(GuestAddress(CONTROL_WINDOW_BASE)).ok_or(
            ConnectionError::Ram {
                addr: CONTROL_WINDOW_BASE,
                len: CONTROL_SIZE,
            },
        )?);
        let layouts = [
            RingLayout::at(CONTROL_WINDOW_BASE + REQUEST_RING_AT, REQUEST_QUEUE_SIZE),
            RingLayout::at(CONTROL_WINDOW_BASE + EVENT_RING_AT, EVENT_QUEUE_SIZE),
        ];
        let new_efd = || EventFd::new(EFD_NONBLOCK).map_err(io("eventfd"));
        let kicks = [new_efd()?, new_efd()?];
        let calls = [new_efd()?, new_efd()?];
        let epoll = Epoll::new().map_err(io("epoll"))?;
        for (index, layout) in layouts.iter().enumerate() {
            let to_va = |gpa: u64| gpa - CONTROL_WINDOW_BASE + control_va;
            frontend
                .set_vring_num(index, layout.size)
                .map_err(vu("SET_VRING_NUM"))?;
            frontend
                .set_vring_addr(
                    index,
                    &VringConfigData {
                        queue_max_size: layout.size,
                        queue_size: layout.size,
                        flags: 0,
                        desc_table_addr: to_va(layout.desc),
                        used_ring_addr: to_va(layout.used),
                        avail_ring_addr: to_va(layout.avail),
                        log_addr: None,
                    },
                )
                .map_err(vu("SET_VRING_ADDR"))?;
            frontend
                .set_vring_base(index, 0)
                .map_err(vu("SET_VRING_BASE"))?;
            frontend
                .set_vring_call(index, &calls[index])
                .map_err(vu("SET_VRING_CALL"))?;
            frontend
                .set_vring_kick(index, &kicks[index])
                .map_err(vu("SET_VRING_KICK"))?;
            frontend
                .set_vring_enable(index, true)
                .map_err(vu("SET_VRING_ENABLE"))?;
            epoll
                .ctl(
                    ControlOperation::Add,
                    calls[index].as_raw_fd(),
                    EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, index as u64),
                )
                .map_err(io("epoll_ctl"))?;
        }

        let size = u32::try_from(ConfigSpace::SIZE).unwrap_or(u32::MAX);
        let (_, payload) = frontend
            .get_config(
                0,
                size,
                VhostUserConfigFlags::empty(),
                &[0u8; ConfigSpace::SIZE],
            )
            .map_err(vu("GET_CONFIG"))?;
        let config = ConfigSpace::decode(&payload)?;
        if config.version != PROTOCOL_VERSION {
            return Err(ConnectionError::ConfigVersion(config.version));
        }

        let mut connection = Self {
            frontend,
            mem,
            ram_size: options.ram_size,
            _files: vec![ram_file, control_file],
            queues: [DriverQueue::new(layouts[0]), DriverQueue::new(layouts[1])],
            kicks,
            _calls: calls,
            epoll,
            config,
            event_bufs: HashMap::new(),
            events: VecDeque::new(),
            timeout: options.timeout,
        };
        for i in 0..u64::from(EVENT_QUEUE_SIZE) {
            connection.post_event_buffer(
                CONTROL_WINDOW_BASE + EVENT_BUFS_AT + i * u64::from(EVENT_BUF_SIZE),
            )?;
        }
        connection.kick(EVENT_QUEUE)?;
        Ok(connection)
    }

    /// The device config space read at setup.
    pub fn config(&self) -> &ConfigSpace {
        &self.config
    }

    /// Size of guest RAM.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// The vhost-user connection, for raw control messages.
    pub fn frontend(&mut self) -> &mut Frontend {
        &mut self.frontend
    }

    fn post_event_buffer(&mut self, addr: u64) -> Result<(), ConnectionError> {
        let head = self.queues[EVENT_QUEUE].add(
            &self.mem,
            &[Buffer {
                addr,
                len: EVENT_BUF_SIZE,
                writable: true,
            }],
        )?;
        self.event_bufs.insert(head, addr);
        Ok(())
    }

    fn kick(&self, queue: usize) -> Result<(), ConnectionError> {
        if self.queues[queue].needs_kick(&self.mem)? {
            self.kicks[queue].write(1).map_err(io("kick"))?;
        }
        Ok(())
    }

    fn check_ram(&self, addr: u64, len: u64) -> Result<(), ConnectionError> {
        match addr.checked_add(len) {
            Some(end) if end <= self.ram_size => Ok(()),
            _ => Err(ConnectionError::Ram { addr, len }),
        }
    }

    /// Write guest RAM.
    pub fn write_ram(&self, addr: u64, bytes: &[u8]) -> Result<(), ConnectionError> {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        self.check_ram(addr, len)?;
        self.mem
            .write_slice(bytes, GuestAddress(addr))
            .map_err(|_| ConnectionError::Ram { addr, len })
    }

    /// Read guest RAM.
    pub fn read_ram(&self, addr: u64, buf: &mut [u8]) -> Result<(), ConnectionError> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        self.check_ram(addr, len)?;
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| ConnectionError::Ram { addr, len })
    }

    /// Block until a call fd fires or the deadline passes. The call fds are
    /// edge-triggered in the epoll set: every notification wakes us once,
    /// and their counters never need reading.
    fn wait_call(&self, deadline: Instant) -> Result<bool, ConnectionError> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let ms = i32::try_from((deadline - now).as_millis().max(1)).unwrap_or(i32::MAX);
        let mut events = [EpollEvent::default(); NUM_QUEUES];
        match self.epoll.wait(ms, &mut events) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(ConnectionError::Io {
                what: "epoll_wait",
                source: e,
            }),
        }
    }

    /// Collect filled eventq buffers and re-post them.
    fn drain_events(&mut self) -> Result<(), ConnectionError> {
        let mut reposted = false;
        while let Some((head, len)) = self.queues[EVENT_QUEUE].pop_used(&self.mem)? {
            let addr = self
                .event_bufs
                .remove(&head)
                .ok_or(VringError::BadUsed(u32::from(head)))?;
            if usize::try_from(len).unwrap_or(0) >= Event::SIZE {
                let mut bytes = [0u8; Event::SIZE];
                self.mem
                    .read_slice(&mut bytes, GuestAddress(addr))
                    .map_err(VringError::Memory)?;
                self.events.push_back(Event::decode(&bytes)?);
            }
            self.post_event_buffer(addr)?;
            reposted = true;
        }
        if reposted {
            self.kick(EVENT_QUEUE)?;
        }
        Ok(())
    }

    /// Issue one subchannel function and wait for the backend's response.
    pub fn request(&mut self, request: &Request) -> Result<Response, ConnectionError> {
        self.request_raw(&request.encode())
    }

    /// Send arbitrary bytes as a requestq element (for testing how the
    /// backend treats malformed requests) and wait for the response.
    pub fn request_raw(&mut self, bytes: &[u8]) -> Result<Response, ConnectionError> {
        if bytes.len() > 0x100 {
            return Err(ConnectionError::Ram {
                addr: REQUEST_BUF_AT,
                len: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
            });
        }
        let request_addr = CONTROL_WINDOW_BASE + REQUEST_BUF_AT;
        let response_addr = CONTROL_WINDOW_BASE + RESPONSE_BUF_AT;
        self.mem
            .write_slice(bytes, GuestAddress(request_addr))
            .map_err(VringError::Memory)?;
        let head = self.queues[REQUEST_QUEUE].add(
            &self.mem,
            &[
                Buffer {
                    addr: request_addr,
                    len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
                    writable: false,
                },
                Buffer {
                    addr: response_addr,
                    len: u32::try_from(Response::SIZE).unwrap_or(u32::MAX),
                    writable: true,
                },
            ],
        )?;
        // The eventq is drained right after the response anyway: an
        // interruption that is ready together with it needs no notification.
        self.queues[EVENT_QUEUE].set_interrupts(&self.mem, false)?;
        self.kick(REQUEST_QUEUE)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            self.drain_events()?;
            if let Some((used, len)) = self.queues[REQUEST_QUEUE].pop_used(&self.mem)? {
                if used != head {
                    return Err(VringError::BadUsed(u32::from(used)).into());
                }
                let mut out = [0u8; Response::SIZE];
                self.mem
                    .read_slice(&mut out, GuestAddress(response_addr))
                    .map_err(VringError::Memory)?;
                if usize::try_from(len).unwrap_or(0) < Response::SIZE {
                    return Err(WireError::Length {
                        what: "response",
                        expected: Response::SIZE,
                        actual: usize::try_from(len).unwrap_or(0),
                    }
                    .into());
                }
                return Ok(Response::decode(&out)?);
            }
            if !self.wait_call(deadline)? {
                return Err(ConnectionError::Timeout("request response"));
            }
        }
    }

    /// The next event, waiting up to `timeout`.
    pub fn wait_event(&mut self, timeout: Duration) -> Result<Option<Event>, ConnectionError> {
        let deadline = Instant::now() + timeout;
        self.queues[EVENT_QUEUE].set_interrupts(&self.mem, true)?;
        loop {
            // Drained after re-enabling notifications: an event added in
            // between is either seen here or notified.
            self.drain_events()?;
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            if !self.wait_call(deadline)? {
                return Ok(None);
            }
        }
    }

    /// Send RESET_DEVICE.
    pub fn reset_device(&mut self) -> Result<(), ConnectionError> {
        self.frontend.reset_device().map_err(vu("RESET_DEVICE"))
    }
}

/// The frontend's virtual address of a region (the vhost-user "user
/// address").
fn host_addr(region: &GuestRegionMmap) -> u64 {
    u64::try_from(region.as_ptr().addr()).unwrap_or(u64::MAX)
}

impl From<ConnectionError> for DeviceError {
    fn from(e: ConnectionError) -> Self {
        match e {
            ConnectionError::Ram { addr, len } => DeviceError::Ram { addr, len },
            other => DeviceError::Transport(other.to_string()),
        }
    }
}

/// The script runner drives a real backend through this connection.
impl Device for Connection {
    fn config(&self) -> &ConfigSpace {
        Connection::config(self)
    }

    fn ram_size(&self) -> u64 {
        Connection::ram_size(self)
    }

    fn write_ram(&mut self, addr: u64, bytes: &[u8]) -> Result<(), DeviceError> {
        Ok(Connection::write_ram(self, addr, bytes)?)
    }

    fn read_ram(&self, addr: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        Ok(Connection::read_ram(self, addr, buf)?)
    }

    fn request(&mut self, request: &Request) -> Result<Response, DeviceError> {
        Ok(Connection::request(self, request)?)
    }

    fn wait_event(&mut self, timeout: Duration) -> Result<Option<Event>, DeviceError> {
        Ok(Connection::wait_event(self, timeout)?)
    }
}
