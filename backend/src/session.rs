//! One vhost-user session: the virtqueues, config space and memory table of
//! one frontend connection, wired to the shared [`Subchannel`].
//!
//! vhost-user-backend runs two threads per connection: the message handler
//! (features, memory table, config, reset) and the epoll loop (queue kicks,
//! host interruptions). Both reach the subchannel through one mutex.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use log::{debug, error, warn};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use vhost_user_ccw_protocol::wire::{
    CAP_FORMAT0_CCW, CAP_HALT_CLEAR, CAP_IDAW_FORMAT1, CAP_IDAW_FORMAT2, ConfigSpace,
    DEVICE_FEATURES, EVENT_QUEUE, Event, MAX_QUEUE_SIZE, NUM_QUEUES, PROTOCOL_FEATURE_BITS,
    PROTOCOL_VERSION, REQUEST_QUEUE, Request, Response, ResponseStatus, VIRTIO_CCW_F_CRW,
    VIRTIO_CCW_F_PROTOCOL_V1,
};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::memory::{self, GuestRam};
use crate::stats::SubchannelStats;
use crate::subchannel::{Input, Subchannel};

/// Epoll token of the host subchannel's notifier (after the queues and the
/// exit event, which vhost-user-backend reserves).
pub const HOST_EVENT: u16 = {
    assert!(NUM_QUEUES < 0xffff);
    // Checked above: the queue count fits.
    #[allow(clippy::cast_possible_truncation)]
    let queues = NUM_QUEUES as u16;
    queues + 1
};

/// The shared subchannel of a socket.
pub type SharedSubchannel = Arc<Mutex<Subchannel>>;

/// Lock the subchannel; a panic while it was held leaves it usable (its
/// state is consistent after every dispatch).
pub fn lock(subchannel: &SharedSubchannel) -> MutexGuard<'_, Subchannel> {
    subchannel
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The vhost-user backend of one connection.
pub struct Session {
    subchannel: SharedSubchannel,
    stats: Arc<SubchannelStats>,
    atomic: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    /// The last memory table that passed validation.
    ram: Option<GuestRam>,
    acked_features: u64,
    opened: bool,
    exit: (EventConsumer, EventNotifier),
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("acked_features", &self.acked_features)
            .field("opened", &self.opened)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session over the socket's subchannel, counting into `stats`.
    pub fn new(subchannel: SharedSubchannel, stats: Arc<SubchannelStats>) -> std::io::Result<Self> {
        let exit = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        Ok(Self {
            subchannel,
            stats,
            atomic: None,
            ram: None,
            acked_features: 0,
            opened: false,
            exit,
        })
    }

    /// Stop the epoll thread of this session.
    pub fn signal_exit(&self) {
        if let Err(e) = self.exit.1.notify() {
            error!("stopping the session's event loop failed: {e}");
        }
    }

    /// Guest memory as the queues see it, validated. vhost-user-backend
    /// installs a new table before telling us, so the table in use is
    /// compared with the last validated one before any access.
    fn checked_ram(&mut self) -> Option<GuestRam> {
        let atomic = self.atomic.as_ref()?;
        let current = atomic.memory().into_inner();
        if let Some(ram) = &self.ram {
            if std::ptr::eq(ram.table(), &*current) {
                return Some(ram.clone());
            }
        }
        match memory::validate(&current) {
            Ok(()) => {
                let ram = GuestRam::new(current);
                self.ram = Some(ram.clone());
                Some(ram)
            }
            Err(e) => {
                error!("refusing memory table: {e}");
                self.ram = None;
                None
            }
        }
    }

    fn config_space(&self) -> ConfigSpace {
        let mut sch = lock(&self.subchannel);
        let identity = sch.identity();
        let schib = sch.host_schib().unwrap_or_default();
        ConfigSpace {
            version: PROTOCOL_VERSION,
            cssid: identity.cssid,
            ssid: identity.ssid,
            schno: identity.schno,
            devno: schib.pmcw.devno,
            capabilities: CAP_FORMAT0_CCW | CAP_IDAW_FORMAT1 | CAP_IDAW_FORMAT2 | CAP_HALT_CLEAR,
            schib,
            chpid_type: identity.chpid_type,
            sense_id: identity.sense_id,
        }
    }

    fn process_requests(&mut self, vring: &VringRwLock, ram: &GuestRam) -> std::io::Result<()> {
        let mem = ram.table();
        loop {
            let Some(chain) = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let mut bytes = [0u8; Request::START_SIZE];
            let read = chain.clone().reader(mem).ok().and_then(|mut reader| {
                let want = reader.available_bytes().min(bytes.len());
                reader.read_exact(&mut bytes[..want]).ok().map(|()| want)
            });
            let written = match chain.writer(mem) {
                // No room for the answer: the request is not executed, so
                // that nothing happens that the frontend cannot learn of.
                Ok(writer) if writer.available_bytes() < Response::SIZE => {
                    warn!("requestq element {head} has no room for the response; not executed");
                    0
                }
                Ok(mut writer) => {
                    let response = self.serve_one(&bytes[..read.unwrap_or(0)], ram);
                    match writer.write_all(&response.encode()) {
                        Ok(()) => Response::SIZE,
                        Err(e) => {
                            warn!("requestq element {head}: writing the response failed: {e}");
                            0
                        }
                    }
                }
                Err(e) => {
                    warn!("requestq element {head}: {e}");
                    0
                }
            };
            let len = u32::try_from(written).unwrap_or(0);
            vring
                .add_used(head, len)
                .map_err(|e| std::io::Error::other(format!("requestq add_used: {e}")))?;
        }
        Ok(())
    }

    fn serve_one(&mut self, bytes: &[u8], ram: &GuestRam) -> Response {
        if self.acked_features & VIRTIO_CCW_F_PROTOCOL_V1 == 0 {
            self.stats.response(ResponseStatus::Unsupported);
            return Response::status(ResponseStatus::Unsupported, 0);
        }
        match Request::decode(bytes) {
            Ok(request) => {
                debug!("request {:?} tag {}", request.kind, request.tag);
                let response = lock(&self.subchannel).request(&request, Some(ram));
                self.stats.request(request.kind, &response);
                response
            }
            Err(e) => {
                warn!("malformed request: {e}");
                self.stats.bad_request();
                Response::status(ResponseStatus::BadRequest, 0)
            }
        }
    }

    /// Move pending events into eventq buffers while both exist. The
    /// frontend is asked to kick the eventq only while events wait for
    /// buffers: re-posting a buffer then costs it no notification.
    fn deliver_events(&mut self, vring: &VringRwLock, ram: &GuestRam) -> std::io::Result<()> {
        let mem = ram.table();
        if !vring.get_ref().get_queue().ready() || !vring.get_ref().is_enabled() {
            return Ok(());
        }
        let crw_acked = self.acked_features & VIRTIO_CCW_F_CRW != 0;
        let queue_error = |e: virtio_queue::Error| std::io::Error::other(format!("eventq: {e}"));
        let mut delivered = false;
        let mut sch = lock(&self.subchannel);
        loop {
            while let Some(event) = sch.next_event() {
                if matches!(event, Event::ChannelReport(_)) && !crw_acked {
                    // The frontend did not ask for channel reports.
                    continue;
                }
                let Some(chain) = vring.get_mut().get_queue_mut().pop_descriptor_chain(mem) else {
                    sch.unget_event(event);
                    break;
                };
                let head = chain.head_index();
                let len = match chain.writer(mem) {
                    Ok(mut writer) if writer.available_bytes() >= Event::SIZE => {
                        match writer.write_all(&event.encode()) {
                            Ok(()) => {
                                self.stats.delivered(&event);
                                Event::SIZE
                            }
                            Err(_) => 0,
                        }
                    }
                    _ => {
                        warn!("eventq buffer {head} is smaller than {} bytes", Event::SIZE);
                        sch.unget_event(event);
                        0
                    }
                };
                vring
                    .add_used(head, u32::try_from(len).unwrap_or(0))
                    .map_err(queue_error)?;
                delivered = true;
            }
            let mut state = vring.get_mut();
            let queue = state.get_queue_mut();
            if !sch.has_events() {
                queue.disable_notification(mem).map_err(queue_error)?;
                break;
            }
            // Events wait for buffers: ask for a kick, and catch buffers
            // posted before the request became visible.
            if !queue.enable_notification(mem).map_err(queue_error)? {
                break;
            }
        }
        drop(sch);
        if delivered && wants_interrupt(vring, mem) {
            vring.signal_used_queue()?;
        }
        Ok(())
    }
}

impl Session {
    fn serve_event(&mut self, device_event: u16, vrings: &[VringRwLock]) -> std::io::Result<()> {
        if device_event == HOST_EVENT {
            lock(&self.subchannel).host_ready();
        }
        let Some(ram) = self.checked_ram() else {
            return Ok(());
        };
        if usize::from(device_event) == REQUEST_QUEUE {
            self.process_requests(&vrings[REQUEST_QUEUE], &ram)?;
            let answer_first = lock(&self.subchannel)
                .start_function()
                .is_some_and(|start| start.program.data_bytes > SHORT_PROGRAM_BYTES);
            let responses_out = || -> std::io::Result<()> {
                vrings[REQUEST_QUEUE].signal_used_queue()?;
                debug!("requestq: responses out");
                Ok(())
            };
            if answer_first {
                // The frontend's instruction (a guest's SSCH, which holds a
                // vCPU and QEMU's big lock) waits only for the condition
                // code, as with a real channel subsystem, not for the data
                // transfer and the device's flush; the guest goes on
                // (finishing its previous request) while the program runs.
                responses_out()?;
            }
            lock(&self.subchannel).host_ready();
            self.deliver_events(&vrings[EVENT_QUEUE], &ram)?;
            if !answer_first {
                // A program that moves a few bytes (SENSE ID, a NOP, the
                // DASD's identification) ran before the answer, so that its
                // interruption goes out with the responses: one
                // notification instead of two.
                responses_out()?;
            }
            return Ok(());
        }
        self.deliver_events(&vrings[EVENT_QUEUE], &ram)
    }
}

/// Data bytes a program may move and still be run before its START is
/// answered (identification and sense commands; not block I/O).
const SHORT_PROGRAM_BYTES: u64 = 256;

/// Whether the driver wants used-buffer notifications for this queue: it
/// sets VIRTQ_AVAIL_F_NO_INTERRUPT while it will look at the queue anyway
/// (the frontend does so for the eventq while it waits for a response, so a
/// START whose interruption is ready at once costs one notification, not
/// two). virtio-queue does not read that flag, so it is read here.
fn wants_interrupt(vring: &VringRwLock, mem: &GuestMemoryMmap) -> bool {
    const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
    let avail = vring.get_ref().get_queue().avail_ring();
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    match mem.load::<u16>(
        vm_memory::GuestAddress(avail),
        std::sync::atomic::Ordering::Acquire,
    ) {
        Ok(flags) => u16::from_le(flags) & VIRTQ_AVAIL_F_NO_INTERRUPT == 0,
        Err(_) => true,
    }
}

impl VhostUserBackendMut for Session {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        DEVICE_FEATURES
    }

    fn acked_features(&mut self, features: u64) {
        self.acked_features = features;
        // SET_FEATURES opens the session: only now is a frontend really
        // driving the device. A frontend without protocol v1 gets
        // `Unsupported` for every request and never enables the subchannel.
        if !self.opened && features & VIRTIO_CCW_F_PROTOCOL_V1 != 0 {
            self.opened = true;
            lock(&self.subchannel).dispatch(Input::Open);
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        let bits = PROTOCOL_FEATURE_BITS
            .iter()
            .fold(0u64, |acc, bit| acc | (1u64 << bit));
        VhostUserProtocolFeatures::from_bits_truncate(bits)
    }

    fn reset_device(&mut self) {
        // RESET_DEVICE ends the session's use of the subchannel; the next
        // SET_FEATURES opens it again.
        if self.opened {
            self.opened = false;
            lock(&self.subchannel).dispatch(Input::Close);
        }
    }

    fn set_event_idx(&mut self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let config = self.config_space().encode();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
        config
            .get(start..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    fn update_memory(&mut self, atomic: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        let current = atomic.memory().into_inner();
        let result = memory::validate(&current);
        self.atomic = Some(atomic.clone());
        match result {
            Ok(()) => {
                self.ram = Some(GuestRam::new(current));
                Ok(())
            }
            Err(e) => {
                // Nothing may use the refused table, not even the rings.
                atomic
                    .lock()
                    .map(|m| m.replace(GuestMemoryMmap::new()))
                    .ok();
                self.ram = None;
                Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            }
        }
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let consumer = self.exit.0.try_clone().ok()?;
        let notifier = self.exit.1.try_clone().ok()?;
        Some((consumer, notifier))
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        // An error returned here would stop the session's event loop while
        // the connection stays up, leaving the frontend waiting forever:
        // the subchannel is marked broken instead, and the frontend learns
        // it from every further response.
        if let Err(e) = self.serve_event(device_event, vrings) {
            error!("session failed: {e}");
            lock(&self.subchannel).dispatch(Input::InternalError);
        }
        Ok(())
    }
}
