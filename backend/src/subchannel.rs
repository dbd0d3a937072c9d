//! The mediated subchannel: one state machine between the guest's requests,
//! the host subchannel and the interruptions it produces.
//!
//! Every transition happens in [`Subchannel::dispatch`], which looks the
//! action up in [`TABLE`] (state × event), runs it and stores the state it
//! returns, in the spirit of the kernel's vfio_ccw_fsm.c jump table. Actions
//! never assign the state themselves.
//!
//! The subchannel is enabled only while a session is open: OPEN enables it,
//! CLOSE quiesces (cancel, halt, clear — bounded, with timeouts), disables
//! and frees everything.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost_user_ccw_protocol::arch::{FunctionControl, Irb, Schib};
use vhost_user_ccw_protocol::wire::{
    Event, ProgramErrorCode, Request, RequestType, Response, ResponseStatus,
};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::host::{HostCc, HostError, HostSubchannel, Identity};
use crate::memory::GuestRam;
use crate::translate::{ChannelProgram, translate};

/// States of the mediated subchannel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// No session: the host subchannel is disabled and quiescent.
    Closed,
    /// Session open, no channel program.
    Idle,
    /// A START is being translated and issued.
    CpProcessing,
    /// A channel program runs on the host subchannel.
    CpPending,
    /// The device is gone or not operational: the guest sees cc 3.
    NotOper,
    /// The backend itself failed: no more I/O in this session.
    Broken,
}

impl State {
    /// All states, in table order.
    pub const ALL: [State; 6] = [
        State::Closed,
        State::Idle,
        State::CpProcessing,
        State::CpPending,
        State::NotOper,
        State::Broken,
    ];
}

/// Inputs to the state machine.
#[derive(Debug)]
pub enum Input<'a> {
    /// A session opened.
    Open,
    /// The session ended (disconnect, RESET_DEVICE, frontend crash).
    Close,
    /// A guest subchannel function (START/HALT/CLEAR/STORE).
    Request {
        /// The decoded request.
        request: &'a Request,
        /// Guest RAM, when the memory table is valid.
        ram: Option<&'a GuestRam>,
    },
    /// The host subchannel presented an interruption.
    Interrupt(Irb),
    /// The device disappeared.
    DeviceGone,
    /// The backend failed.
    InternalError,
}

/// Event classes indexing the table's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// [`Input::Open`].
    Open,
    /// [`Input::Close`].
    Close,
    /// START request.
    Start,
    /// HALT request.
    Halt,
    /// CLEAR request.
    Clear,
    /// STORE request.
    Store,
    /// [`Input::Interrupt`].
    Interrupt,
    /// [`Input::DeviceGone`].
    DeviceGone,
    /// [`Input::InternalError`].
    InternalError,
}

impl Input<'_> {
    /// The table column of this input.
    pub fn kind(&self) -> EventKind {
        match self {
            Input::Open => EventKind::Open,
            Input::Close => EventKind::Close,
            Input::Request { request, .. } => match request.kind {
                RequestType::Start => EventKind::Start,
                RequestType::Halt => EventKind::Halt,
                RequestType::Clear => EventKind::Clear,
                RequestType::Store => EventKind::Store,
            },
            Input::Interrupt(_) => EventKind::Interrupt,
            Input::DeviceGone => EventKind::DeviceGone,
            Input::InternalError => EventKind::InternalError,
        }
    }
}

type Action = fn(&mut Subchannel, Input<'_>) -> State;

/// The state × event table: the only place where transitions are decided.
/// Rows follow [`State::ALL`], columns follow [`EventKind`].
#[rustfmt::skip]
pub const TABLE: [[Action; 9]; 6] = {
    use self::actions::*;
    [
        //              Open  Close      Start          Halt        Clear       Store       Interrupt       DeviceGone InternalError
        /* Closed */   [open, stay,      not_oper_cc,   not_oper_cc,not_oper_cc,not_oper_cc,drop_interrupt, stay,      stay],
        /* Idle */     [stay, close,     start,         halt,       clear,      store,      interrupt,      gone,      broken],
        /* CpProc. */  [stay, close,     busy,          busy,       busy,       busy,       interrupt,      gone,      broken],
        /* CpPending */[stay, close,     busy,          halt,       clear,      store,      interrupt,      gone,      broken],
        /* NotOper */  [stay, close,     not_oper_cc,   not_oper_cc,not_oper_cc,not_oper_cc,drop_interrupt, stay,      broken],
        /* Broken */   [stay, close,     broken_resp,   broken_resp,broken_resp,broken_resp,drop_interrupt, gone,      stay],
    ]
};

/// Bounds of the quiesce loop.
#[derive(Debug, Clone, Copy)]
pub struct QuiesceLimits {
    /// Total halt and clear attempts across the loop.
    pub retries: u32,
    /// How long to wait for the interruption of one halt or clear.
    pub wait: Duration,
}

impl Default for QuiesceLimits {
    fn default() -> Self {
        Self {
            retries: 16,
            wait: Duration::from_secs(3),
        }
    }
}

/// The mediated subchannel of one socket.
pub struct Subchannel {
    state: State,
    host: Box<dyn HostSubchannel>,
    /// The program of the START in progress (only in CP_PENDING).
    program: Option<Arc<ChannelProgram>>,
    /// Functions the guest started that have not ended, with their tags.
    start_tag: Option<u64>,
    halt_tag: Option<u64>,
    clear_tag: Option<u64>,
    /// Events for the frontend's eventq, oldest first.
    events: VecDeque<Event>,
    /// Response to the request being dispatched.
    response: Response,
    quiesce: QuiesceLimits,
    /// Scratch for interruptions collected from the host.
    irbs: Vec<Irb>,
}

impl std::fmt::Debug for Subchannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subchannel")
            .field("state", &self.state)
            .field("program", &self.program.is_some())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Subchannel {
    /// A closed subchannel over `host`.
    pub fn new(host: Box<dyn HostSubchannel>) -> Self {
        Self {
            state: State::Closed,
            host,
            program: None,
            start_tag: None,
            halt_tag: None,
            clear_tag: None,
            events: VecDeque::new(),
            response: Response::cc(0),
            quiesce: QuiesceLimits::default(),
            irbs: Vec::new(),
        }
    }

    /// Change the quiesce bounds (tests use short waits).
    pub fn set_quiesce_limits(&mut self, limits: QuiesceLimits) {
        self.quiesce = limits;
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a channel program is held.
    pub fn has_program(&self) -> bool {
        self.program.is_some()
    }

    /// Identity of the host subchannel.
    pub fn identity(&self) -> Identity {
        self.host.identity()
    }

    /// The host SCHIB (for the config space).
    pub fn host_schib(&mut self) -> Result<Schib, HostError> {
        self.host.store()
    }

    /// The fd that signals host interruptions.
    pub fn notifier(&self) -> std::os::fd::RawFd {
        self.host.notifier()
    }

    /// Run one input through the table.
    pub fn dispatch(&mut self, input: Input<'_>) -> State {
        let row = State::ALL
            .iter()
            .position(|s| *s == self.state)
            .unwrap_or_default();
        let column = input.kind() as usize;
        let from = self.state;
        let to = TABLE[row][column](self, input);
        if from != to {
            log::debug!("subchannel: {from:?} -> {to:?}");
        }
        self.state = to;
        to
    }

    /// Handle a guest request and return the response for it.
    pub fn request(&mut self, request: &Request, ram: Option<&GuestRam>) -> Response {
        self.response = Response::cc(0);
        self.dispatch(Input::Request { request, ram });
        self.response
    }

    /// Collect the host's interruptions and run each through the table.
    pub fn host_ready(&mut self) {
        let mut irbs = std::mem::take(&mut self.irbs);
        irbs.clear();
        let result = self.host.poll(&mut irbs);
        for irb in irbs.drain(..) {
            self.dispatch(Input::Interrupt(irb));
        }
        self.irbs = irbs;
        match result {
            Ok(()) => {}
            Err(HostError::NotOperational) => {
                self.dispatch(Input::DeviceGone);
            }
            Err(e) => {
                log::error!("host subchannel failed: {e}");
                self.dispatch(Input::InternalError);
            }
        }
    }

    /// Take the next event for the eventq.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Put back an event that could not be delivered.
    pub fn unget_event(&mut self, event: Event) {
        self.events.push_front(event);
    }

    /// Whether events are waiting for eventq buffers.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    fn free_program(&mut self) {
        self.program = None;
        self.start_tag = None;
    }

    fn any_function(&self) -> bool {
        self.start_tag.is_some() || self.halt_tag.is_some() || self.clear_tag.is_some()
    }

    /// Wait for the host notifier, then collect interruptions.
    fn wait_host(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let Ok(epoll) = Epoll::new() else {
            return;
        };
        if epoll
            .ctl(
                ControlOperation::Add,
                self.host.notifier(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .is_err()
        {
            return;
        }
        let before = self.any_function();
        loop {
            self.host_ready();
            if before && !self.any_function() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            let left = i32::try_from((deadline - now).as_millis()).unwrap_or(i32::MAX);
            let mut events = [EpollEvent::default(); 1];
            match epoll.wait(left.max(1), &mut events) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Bring the host subchannel to rest and disable it. Terminates: every
    /// path consumes retry budget or waits with a deadline.
    fn quiesce_and_disable(&mut self) -> Result<(), HostError> {
        let mut budget = self.quiesce.retries;
        loop {
            match self.host.disable() {
                Ok(()) => return Ok(()),
                Err(HostError::Busy) => {}
                Err(e) => return Err(e),
            }
            if budget == 0 {
                return Err(HostError::Busy);
            }
            budget -= 1;
            // Status pending: collecting it may be all that is needed.
            self.host_ready();
            if self.host.disable().is_ok() {
                return Ok(());
            }
            match self.host.cancel() {
                HostCc::Accepted => continue,
                HostCc::NotOperational => return Err(HostError::NotOperational),
                HostCc::StatusPending | HostCc::Busy => {}
            }
            let cc = if budget > self.quiesce.retries / 2 {
                self.host.halt()
            } else {
                self.host.clear()
            };
            match cc {
                HostCc::Accepted | HostCc::Busy | HostCc::StatusPending => {
                    self.wait_host(self.quiesce.wait);
                }
                HostCc::NotOperational => return Err(HostError::NotOperational),
            }
        }
    }
}

/// The actions of [`TABLE`]. Each returns the next state.
mod actions {
    use super::*;

    pub(super) fn stay(sch: &mut Subchannel, _: Input<'_>) -> State {
        sch.state
    }

    pub(super) fn open(sch: &mut Subchannel, _: Input<'_>) -> State {
        sch.events.clear();
        match sch.host.enable() {
            Ok(()) => State::Idle,
            Err(e) => {
                log::error!("enabling the subchannel failed: {e}");
                State::NotOper
            }
        }
    }

    pub(super) fn close(sch: &mut Subchannel, _: Input<'_>) -> State {
        if let Err(e) = sch.quiesce_and_disable() {
            log::error!("quiescing the subchannel failed: {e}");
        }
        sch.free_program();
        sch.halt_tag = None;
        sch.clear_tag = None;
        sch.events.clear();
        State::Closed
    }

    pub(super) fn not_oper_cc(sch: &mut Subchannel, _: Input<'_>) -> State {
        sch.response = Response::cc(3);
        sch.state
    }

    pub(super) fn busy(sch: &mut Subchannel, _: Input<'_>) -> State {
        sch.response = Response::cc(2);
        sch.state
    }

    pub(super) fn broken_resp(sch: &mut Subchannel, _: Input<'_>) -> State {
        sch.response = Response::status(ResponseStatus::Broken, 0);
        sch.state
    }

    pub(super) fn broken(sch: &mut Subchannel, _: Input<'_>) -> State {
        sch.free_program();
        State::Broken
    }

    pub(super) fn gone(sch: &mut Subchannel, _: Input<'_>) -> State {
        sch.free_program();
        sch.halt_tag = None;
        sch.clear_tag = None;
        sch.events.push_back(Event::DeviceGone);
        State::NotOper
    }

    pub(super) fn drop_interrupt(sch: &mut Subchannel, _: Input<'_>) -> State {
        sch.state
    }

    pub(super) fn start(sch: &mut Subchannel, input: Input<'_>) -> State {
        let Input::Request { request, ram } = input else {
            return sch.state;
        };
        // An interruption not yet delivered is status pending for the guest.
        if sch
            .events
            .iter()
            .any(|e| matches!(e, Event::Interrupt { .. }))
        {
            sch.response = Response::cc(1);
            return State::Idle;
        }
        if sch.any_function() {
            sch.response = Response::cc(2);
            return State::Idle;
        }
        if !request
            .scsw
            .function_control
            .contains(FunctionControl::START)
        {
            sch.response = Response::status(
                ResponseStatus::UnitException,
                ProgramErrorCode::BadFunction as u32,
            );
            return State::Idle;
        }
        let Some(ram) = ram else {
            sch.response = Response::status(
                ResponseStatus::UnitException,
                ProgramErrorCode::AddressOutOfRange as u32,
            );
            return State::Idle;
        };
        let program = match translate(&request.orb, ram) {
            Ok(program) => Arc::new(program),
            Err(e) => {
                log::info!("channel program rejected: {e}");
                sch.response = Response::status(ResponseStatus::UnitException, e.code() as u32);
                return State::Idle;
            }
        };
        match sch.host.start(Arc::clone(&program), ram.clone()) {
            HostCc::Accepted => {
                sch.program = Some(program);
                sch.start_tag = Some(request.tag);
                sch.response = Response::cc(0);
                State::CpPending
            }
            HostCc::StatusPending => {
                sch.response = Response::cc(1);
                State::Idle
            }
            HostCc::Busy => {
                sch.response = Response::cc(2);
                State::Idle
            }
            HostCc::NotOperational => {
                sch.response = Response::cc(3);
                State::NotOper
            }
        }
    }

    pub(super) fn halt(sch: &mut Subchannel, input: Input<'_>) -> State {
        let Input::Request { request, .. } = input else {
            return sch.state;
        };
        if sch.halt_tag.is_some() || sch.clear_tag.is_some() {
            sch.response = Response::cc(2);
            return sch.state;
        }
        let cc = sch.host.halt();
        if cc == HostCc::Accepted {
            sch.halt_tag = Some(request.tag);
        }
        sch.response = Response::cc(cc.cc());
        if cc == HostCc::NotOperational {
            sch.free_program();
            return State::NotOper;
        }
        sch.state
    }

    pub(super) fn clear(sch: &mut Subchannel, input: Input<'_>) -> State {
        let Input::Request { request, .. } = input else {
            return sch.state;
        };
        let cc = sch.host.clear();
        sch.response = Response::cc(cc.cc());
        match cc {
            HostCc::Accepted => {
                // A pending interruption is withdrawn by CLEAR.
                sch.events.retain(|e| !matches!(e, Event::Interrupt { .. }));
                sch.halt_tag = None;
                sch.clear_tag = Some(request.tag);
                sch.state
            }
            HostCc::NotOperational => {
                sch.free_program();
                State::NotOper
            }
            HostCc::StatusPending | HostCc::Busy => sch.state,
        }
    }

    pub(super) fn store(sch: &mut Subchannel, _: Input<'_>) -> State {
        match sch.host.store() {
            Ok(schib) => {
                sch.response = Response::cc(0);
                sch.response.schib = schib;
                sch.state
            }
            Err(HostError::NotOperational) => {
                sch.response = Response::cc(3);
                sch.free_program();
                State::NotOper
            }
            Err(e) => {
                log::error!("STORE SUBCHANNEL failed: {e}");
                sch.response = Response::status(ResponseStatus::Broken, 0);
                sch.free_program();
                State::Broken
            }
        }
    }

    pub(super) fn interrupt(sch: &mut Subchannel, input: Input<'_>) -> State {
        let Input::Interrupt(irb) = input else {
            return sch.state;
        };
        let scsw = &irb.scsw;
        if scsw.is_unsolicited() {
            sch.events.push_back(Event::Interrupt { tag: 0, irb });
            return sch.state;
        }
        let fc = scsw.function_control;
        // Correlate with the function the interruption ends.
        let tag = if fc.contains(FunctionControl::CLEAR) {
            sch.clear_tag
        } else if fc.contains(FunctionControl::HALT) {
            sch.halt_tag
        } else if fc.contains(FunctionControl::START) {
            sch.start_tag
        } else {
            None
        };
        let final_status = scsw.is_final();
        let mut next = sch.state;
        if final_status {
            if fc.contains(FunctionControl::CLEAR) {
                sch.clear_tag = None;
                sch.halt_tag = None;
            }
            if fc.contains(FunctionControl::HALT) {
                sch.halt_tag = None;
            }
            // The start function ends with this interruption only if the
            // program it reports is ours: clear and halt end it too.
            if sch.state == State::CpPending
                && (fc.contains(FunctionControl::START) || fc.contains(FunctionControl::CLEAR))
            {
                sch.free_program();
                next = State::Idle;
            }
        }
        sch.events.push_back(Event::Interrupt {
            tag: tag.unwrap_or(0),
            irb,
        });
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sim::device::{BufferDevice, CMD_NOP};
    use crate::host::sim::{SimConfig, SimSubchannel};
    use crate::memory::tests::ram;
    use vhost_user_ccw_protocol::arch::{Ccw, CcwFlags, Orb, Scsw};

    fn subchannel(latency: Duration) -> Subchannel {
        let sim = SimSubchannel::new(
            SimConfig {
                latency,
                ..SimConfig::default()
            },
            Box::new(BufferDevice::new(64)),
        )
        .unwrap();
        let mut sch = Subchannel::new(Box::new(sim));
        sch.set_quiesce_limits(QuiesceLimits {
            retries: 4,
            wait: Duration::from_millis(200),
        });
        sch
    }

    fn start_request(tag: u64, cpa: u32) -> Request {
        let orb = Orb {
            format1: true,
            prefetch: true,
            lpm: 0x80,
            cpa,
            ..Orb::default()
        };
        let scsw = Scsw {
            function_control: FunctionControl::START,
            ..Scsw::default()
        };
        Request::start(tag, orb, scsw)
    }

    fn nop_chain(ram: &GuestRam, at: u64, n: u64) {
        for i in 0..n {
            let flags = if i + 1 < n {
                CcwFlags::CC
            } else {
                CcwFlags::from_bits_truncate(0)
            };
            let ccw = Ccw {
                cmd: CMD_NOP,
                flags,
                count: 0,
                cda: 0,
            };
            ram.write(at + 8 * i, &ccw.encode_format1().unwrap())
                .unwrap();
        }
    }

    fn wait_for_event(sch: &mut Subchannel) -> Event {
        for _ in 0..2000 {
            sch.host_ready();
            if let Some(e) = sch.next_event() {
                return e;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no event");
    }

    #[test]
    fn closed_subchannel_answers_cc3() {
        let mut sch = subchannel(Duration::ZERO);
        let ram = ram(0x10000);
        let resp = sch.request(&start_request(1, 0x1000), Some(&ram));
        assert_eq!(resp, Response::cc(3));
        assert_eq!(sch.state(), State::Closed);
    }

    #[test]
    fn start_runs_to_a_final_interrupt_and_frees_the_program() {
        let mut sch = subchannel(Duration::ZERO);
        let ram = ram(0x10000);
        nop_chain(&ram, 0x1000, 3);
        sch.dispatch(Input::Open);
        assert_eq!(sch.state(), State::Idle);
        let resp = sch.request(&start_request(7, 0x1000), Some(&ram));
        assert_eq!(resp, Response::cc(0));
        assert_eq!(sch.state(), State::CpPending);
        assert!(sch.has_program());
        assert_eq!(
            sch.request(&start_request(8, 0x1000), Some(&ram)),
            Response::cc(2)
        );
        let Event::Interrupt { tag, irb } = wait_for_event(&mut sch) else {
            panic!("expected an interrupt");
        };
        assert_eq!(tag, 7);
        assert_eq!(irb.scsw.cpa, 0x1018);
        assert_eq!(sch.state(), State::Idle);
        assert!(!sch.has_program());
    }

    #[test]
    fn start_is_refused_while_an_interrupt_is_undelivered() {
        let mut sch = subchannel(Duration::ZERO);
        let ram = ram(0x10000);
        nop_chain(&ram, 0x1000, 1);
        sch.dispatch(Input::Open);
        sch.request(&start_request(1, 0x1000), Some(&ram));
        sch.host_ready();
        assert!(sch.has_events());
        assert_eq!(
            sch.request(&start_request(2, 0x1000), Some(&ram)),
            Response::cc(1)
        );
        sch.next_event();
        assert_eq!(
            sch.request(&start_request(3, 0x1000), Some(&ram)),
            Response::cc(0)
        );
    }

    #[test]
    fn untranslatable_program_gets_unit_exception_and_stays_idle() {
        let mut sch = subchannel(Duration::ZERO);
        let ram = ram(0x10000);
        sch.dispatch(Input::Open);
        let resp = sch.request(&start_request(1, 0xfff8), Some(&ram));
        assert_eq!(
            resp.status,
            ResponseStatus::UnitException,
            "a zero CCW has an invalid command code"
        );
        assert_eq!(resp.error, ProgramErrorCode::Invalid as u32);
        let resp = sch.request(&start_request(1, 0x2_0000), Some(&ram));
        assert_eq!(resp.status, ResponseStatus::UnitException);
        assert_eq!(resp.error, ProgramErrorCode::AddressOutOfRange as u32);
        assert!(!sch.has_program());
    }

    #[test]
    fn close_during_a_running_program_quiesces_and_frees() {
        let mut sch = subchannel(Duration::from_millis(50));
        let ram = ram(0x10000);
        nop_chain(&ram, 0x1000, 100);
        sch.dispatch(Input::Open);
        assert_eq!(
            sch.request(&start_request(1, 0x1000), Some(&ram)),
            Response::cc(0)
        );
        sch.dispatch(Input::Close);
        assert_eq!(sch.state(), State::Closed);
        assert!(!sch.has_program());
        assert!(!sch.has_events());
        // Reopen: a fresh, idle subchannel.
        sch.dispatch(Input::Open);
        nop_chain(&ram, 0x1000, 1);
        assert_eq!(
            sch.request(&start_request(2, 0x1000), Some(&ram)),
            Response::cc(0)
        );
    }

    #[test]
    fn halt_interrupt_carries_the_halt_tag_and_ends_the_start() {
        let mut sch = subchannel(Duration::from_millis(20));
        let ram = ram(0x10000);
        nop_chain(&ram, 0x1000, 50);
        sch.dispatch(Input::Open);
        sch.request(&start_request(1, 0x1000), Some(&ram));
        let halt = Request::new(RequestType::Halt, 2);
        assert_eq!(sch.request(&halt, Some(&ram)), Response::cc(0));
        assert_eq!(sch.request(&halt, Some(&ram)), Response::cc(2));
        let Event::Interrupt { tag, irb } = wait_for_event(&mut sch) else {
            panic!("expected an interrupt");
        };
        assert_eq!(tag, 2);
        assert!(irb.scsw.function_control.contains(FunctionControl::HALT));
        // A halt interruption of a start is final for that start: the
        // program ran its course on the host.
        assert_eq!(sch.state(), State::Idle);
        assert!(!sch.has_program());
    }
}
