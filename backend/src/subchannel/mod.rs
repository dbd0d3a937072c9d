//! The mediated subchannel: one state machine between the guest's requests,
//! the host subchannel and what the host reports.
//!
//! Every transition happens in [`Subchannel::dispatch`], which looks the
//! action up in [`table::TABLE`] (state × event), runs it and stores the
//! state it returns, in the spirit of the kernel's vfio_ccw_fsm.c jump
//! table. Actions never assign the state themselves. `docs/state-machine.md`
//! explains every cell.
//!
//! Besides the state, the subchannel tracks the guest's composite view of
//! the functions in progress: the START (with its tag and program), a HALT,
//! a CLEAR, and the interruptions not yet delivered to the frontend (status
//! pending for the guest). Condition codes follow from that view; the
//! program is freed only when the interruption that ends its own START has
//! been correlated with it, or when the START failed.
//!
//! The subchannel is enabled only while a session is open: OPEN enables it,
//! CLOSE quiesces it (cancel, halt, clear — bounded retries, bounded waits),
//! disables it and frees everything.

mod table;

#[cfg(test)]
mod explore;
#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost_user_ccw_protocol::arch::{Crw, Irb, Schib};
use vhost_user_ccw_protocol::wire::{Event, Request, RequestType, Response};

use crate::host::{HostCc, HostError, HostEvent, HostSubchannel, Identity};
use crate::memory::GuestRam;
use crate::translate::ChannelProgram;

pub use self::table::{Action, TABLE};

/// States of the mediated subchannel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// No session: the host subchannel is disabled and quiescent.
    Closed,
    /// Session open, no channel program.
    Idle,
    /// A START was translated and is being issued to the host.
    CpProcessing,
    /// A channel program runs on the host subchannel.
    CpPending,
    /// The device is gone or not operational: the guest sees cc 3. A path
    /// coming back may revive it.
    NotOper,
    /// The backend itself failed: no more I/O in this session.
    Broken,
}

impl State {
    /// All states, in table row order.
    pub const ALL: [State; 6] = [
        State::Closed,
        State::Idle,
        State::CpProcessing,
        State::CpPending,
        State::NotOper,
        State::Broken,
    ];
}

/// Event classes: the table's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A session opened (SET_FEATURES).
    Open,
    /// The session ended (disconnect, RESET_DEVICE, frontend crash).
    Close,
    /// START request: validate and translate.
    Start,
    /// Internal: issue the translated program to the host.
    Issue,
    /// HALT request.
    Halt,
    /// CLEAR request.
    Clear,
    /// STORE request.
    Store,
    /// A final (primary or secondary status) solicited interruption.
    FinalInterrupt,
    /// An interruption that does not end the function: intermediate status
    /// (PCI), or status while the subchannel or device is still active.
    IntermediateInterrupt,
    /// An unsolicited interruption (alert status only).
    UnsolicitedInterrupt,
    /// A channel path was varied on or off.
    PathEvent,
    /// The device disappeared.
    DeviceGone,
    /// The backend failed.
    InternalError,
}

impl EventKind {
    /// All event kinds, in table column order.
    pub const ALL: [EventKind; 13] = [
        EventKind::Open,
        EventKind::Close,
        EventKind::Start,
        EventKind::Issue,
        EventKind::Halt,
        EventKind::Clear,
        EventKind::Store,
        EventKind::FinalInterrupt,
        EventKind::IntermediateInterrupt,
        EventKind::UnsolicitedInterrupt,
        EventKind::PathEvent,
        EventKind::DeviceGone,
        EventKind::InternalError,
    ];
}

/// Inputs to the state machine.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A session opened.
    Open,
    /// The session ended.
    Close,
    /// A guest subchannel function.
    Request {
        /// The decoded request.
        request: &'a Request,
        /// Guest RAM, when the memory table is valid.
        ram: Option<&'a GuestRam>,
    },
    /// Issue the translated START (dispatched right after a successful
    /// START translation).
    Issue,
    /// The host presented an interruption.
    Interrupt(Irb),
    /// A channel path was varied.
    PathEvent {
        /// The channel path.
        chpid: u8,
        /// Whether it is available now.
        online: bool,
    },
    /// The device disappeared.
    DeviceGone,
    /// The backend failed.
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
            Input::Issue => EventKind::Issue,
            Input::Interrupt(irb) => {
                if irb.scsw.is_unsolicited() {
                    EventKind::UnsolicitedInterrupt
                } else if irb.scsw.is_final() {
                    EventKind::FinalInterrupt
                } else {
                    // Intermediate status (PCI), or primary status while the
                    // device is still active: the function goes on.
                    EventKind::IntermediateInterrupt
                }
            }
            Input::PathEvent { .. } => EventKind::PathEvent,
            Input::DeviceGone => EventKind::DeviceGone,
            Input::InternalError => EventKind::InternalError,
        }
    }
}

/// Bounds of the quiesce loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuiesceLimits {
    /// Halt and clear attempts across the whole loop.
    pub retries: u32,
    /// Of those, how many are halts before the loop turns to clear.
    pub halts: u32,
    /// How long to wait for the interruption of one halt or clear.
    pub wait: Duration,
}

impl Default for QuiesceLimits {
    fn default() -> Self {
        Self {
            retries: 8,
            halts: 3,
            wait: Duration::from_secs(1),
        }
    }
}

/// A START in progress: its tag and the program the host runs.
#[derive(Debug, Clone)]
pub struct StartFunction {
    /// The request tag, echoed in the interruption that ends it.
    pub tag: u64,
    /// The program, shared with the host until the host reports its end.
    pub program: Arc<ChannelProgram>,
}

/// A translated START about to be issued.
#[derive(Debug, Clone)]
struct Translated {
    tag: u64,
    program: Arc<ChannelProgram>,
    ram: GuestRam,
}

/// The mediated subchannel of one socket, over host `H`.
#[derive(Debug, Clone)]
pub struct Subchannel<H: HostSubchannel = Box<dyn HostSubchannel>> {
    state: State,
    host: H,
    /// The START in progress (CP_PENDING only).
    start: Option<StartFunction>,
    /// The START between translation and issue (CP_PROCESSING only).
    translated: Option<Translated>,
    /// Tag of a HALT in progress.
    halt_tag: Option<u64>,
    /// Tag of a CLEAR in progress.
    clear_tag: Option<u64>,
    /// Events for the frontend's eventq, oldest first.
    events: VecDeque<Event>,
    /// Response to the request being dispatched.
    response: Response,
    quiesce: QuiesceLimits,
    /// Every event ever queued, for the exhaustive tests' oracle.
    #[cfg(test)]
    journal: Vec<Event>,
}

impl<H: HostSubchannel> Subchannel<H> {
    /// A closed subchannel over `host`.
    pub fn new(host: H) -> Self {
        Self {
            state: State::Closed,
            host,
            start: None,
            translated: None,
            halt_tag: None,
            clear_tag: None,
            events: VecDeque::new(),
            response: Response::cc(0),
            quiesce: QuiesceLimits::default(),
            #[cfg(test)]
            journal: Vec::new(),
        }
    }

    /// Queue an event for the frontend.
    fn emit(&mut self, event: Event) {
        #[cfg(test)]
        self.journal.push(event);
        self.events.push_back(event);
    }

    /// Change the quiesce bounds.
    pub fn set_quiesce_limits(&mut self, limits: QuiesceLimits) {
        self.quiesce = limits;
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The START in progress.
    pub fn start_function(&self) -> Option<&StartFunction> {
        self.start.as_ref()
    }

    /// Whether a channel program is held (in progress or being issued).
    pub fn has_program(&self) -> bool {
        self.start.is_some() || self.translated.is_some()
    }

    /// The host subchannel.
    pub fn host(&self) -> &H {
        &self.host
    }

    /// The host subchannel, for host-specific controls.
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    /// Identity of the host subchannel.
    pub fn identity(&self) -> Identity {
        self.host.identity()
    }

    /// The host SCHIB (for the config space).
    pub fn host_schib(&mut self) -> Result<Schib, HostError> {
        self.host.store()
    }

    /// The fd that signals host events.
    pub fn notifier(&self) -> std::os::fd::RawFd {
        self.host.notifier()
    }

    /// Run one input through the table.
    pub fn dispatch(&mut self, input: Input<'_>) -> State {
        let row = State::ALL
            .iter()
            .position(|s| *s == self.state)
            .unwrap_or_default();
        let kind = input.kind();
        let column = EventKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_default();
        let from = self.state;
        let to = table::run(TABLE[row][column], self, input);
        if from != to {
            log::debug!("subchannel: {from:?} --{kind:?}--> {to:?}");
        }
        self.state = to;
        to
    }

    /// Handle a guest request and return the response for it.
    pub fn request(&mut self, request: &Request, ram: Option<&GuestRam>) -> Response {
        // Answer from the host's latest state: a function that has just
        // ended must show as status pending, not as busy.
        self.host_ready();
        self.response = Response::cc(0);
        if self.dispatch(Input::Request { request, ram }) == State::CpProcessing {
            self.dispatch(Input::Issue);
        }
        self.response
    }

    /// Collect what the host reports and run each through the table.
    pub fn host_ready(&mut self) {
        let mut reports = Vec::new();
        let result = self.host.poll(&mut reports);
        for report in reports {
            self.dispatch(match report {
                HostEvent::Interrupt(irb) => Input::Interrupt(irb),
                HostEvent::PathChange { chpid, online } => Input::PathEvent { chpid, online },
                HostEvent::DeviceGone => Input::DeviceGone,
            });
        }
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

    /// Events waiting for eventq buffers.
    pub fn pending_events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Whether an interruption waits for delivery: status pending for the
    /// guest. With `final_only`, intermediate (PCI) interruptions do not
    /// count, as for HALT's condition code.
    fn interruption_pending(&self, final_only: bool) -> bool {
        self.events.iter().any(|event| match event {
            Event::Interrupt { irb, .. } => !final_only || !irb.scsw.is_intermediate_only(),
            _ => false,
        })
    }

    fn any_function(&self) -> bool {
        self.start.is_some() || self.halt_tag.is_some() || self.clear_tag.is_some()
    }

    /// Enter NOT_OPER: everything in progress is lost, and interruptions not
    /// yet delivered belong to a device that is no longer usable.
    fn not_operational(&mut self) -> State {
        self.free_all();
        self.events
            .retain(|e| !matches!(e, Event::Interrupt { .. }));
        State::NotOper
    }

    /// Drop every function and program reference. The host keeps its own
    /// reference to a program it still runs, so this never frees memory in
    /// use by the channel.
    fn free_all(&mut self) {
        self.start = None;
        self.translated = None;
        self.halt_tag = None;
        self.clear_tag = None;
    }

    fn queue_crw(&mut self, chpid: u8, online: bool) {
        let crw = Crw {
            rsc: Crw::RSC_CHANNEL_PATH,
            erc: if online {
                Crw::ERC_INITIALIZED
            } else {
                Crw::ERC_PERMANENT_ERROR_INITIALIZED
            },
            rsid: u16::from(chpid),
            ..Crw::default()
        };
        self.emit(Event::ChannelReport(crw));
    }

    /// Enable the host subchannel for a session: IDLE, or NOT_OPER when the
    /// device is not there or still runs work that cannot be stopped (a
    /// previous session's quiesce failed).
    fn bring_up(&mut self) -> State {
        // Status left pending by an earlier session is stale: collect and
        // drop it, so that nothing of it reaches this session.
        let mut stale = Vec::new();
        if let Err(e) = self.host.poll(&mut stale) {
            log::error!("the subchannel cannot be polled: {e}");
            return State::NotOper;
        }
        let busy = self
            .host
            .store()
            .is_ok_and(|schib| !schib.scsw.function_control.is_empty());
        if busy {
            if let Err(e) = self.quiesce_and_disable() {
                log::error!("the subchannel still runs earlier work: {e}");
                return State::NotOper;
            }
        }
        match self.host.enable() {
            Ok(()) => State::Idle,
            Err(e) => {
                log::error!("enabling the subchannel failed: {e}");
                State::NotOper
            }
        }
    }

    /// Bring the host subchannel to rest and disable it.
    ///
    /// Terminates whatever the host does: every round consumes one unit of
    /// a fixed retry budget, and every wait has a deadline. A device that
    /// completes halts instantly ends the loop at the next disable; one that
    /// never answers exhausts the budget; one that disappears ends it with
    /// `NotOperational`. Host reports collected here are discarded: the
    /// session is over and nothing may reach a frontend any more.
    fn quiesce_and_disable(&mut self) -> Result<(), HostError> {
        let mut budget = self.quiesce.retries;
        let mut halts = 0;
        let mut discarded = Vec::new();
        loop {
            discarded.clear();
            match self.host.poll(&mut discarded) {
                Ok(()) => {}
                Err(HostError::NotOperational) => return Err(HostError::NotOperational),
                Err(e) => return Err(e),
            }
            match self.host.disable() {
                Ok(()) => return Ok(()),
                Err(HostError::Busy) => {}
                Err(e) => return Err(e),
            }
            if budget == 0 {
                return Err(HostError::Busy);
            }
            budget -= 1;
            match self.host.cancel() {
                HostCc::Accepted => continue,
                HostCc::NotOperational => return Err(HostError::NotOperational),
                HostCc::StatusPending | HostCc::Busy => {}
            }
            let cc = if halts < self.quiesce.halts {
                halts += 1;
                self.host.halt()
            } else {
                self.host.clear()
            };
            match cc {
                HostCc::NotOperational => return Err(HostError::NotOperational),
                HostCc::Accepted | HostCc::Busy | HostCc::StatusPending => {
                    self.wait_for_host(self.quiesce.wait)?;
                }
            }
        }
    }

    /// Wait until the host has nothing in progress, at most `timeout`.
    fn wait_for_host(&mut self, timeout: Duration) -> Result<(), HostError> {
        let deadline = Instant::now() + timeout;
        let mut discarded = Vec::new();
        loop {
            discarded.clear();
            self.host.poll(&mut discarded)?;
            let busy = self
                .host
                .store()
                .map(|schib| !schib.scsw.function_control.is_empty())?;
            let now = Instant::now();
            if !busy || now >= deadline {
                return Ok(());
            }
            self.host.wait(deadline - now)?;
        }
    }
}
