//! The state × event table and its actions. `docs/state-machine.md` gives
//! the reason for every cell.

use std::sync::Arc;

use vhost_user_ccw_protocol::arch::FunctionControl;
use vhost_user_ccw_protocol::wire::{Event, ProgramErrorCode, Response, ResponseStatus};

use super::{Input, StartFunction, State, Subchannel, Translated};
use crate::host::{HostCc, HostError, HostSubchannel};
use crate::translate::translate;

/// The actions a table cell can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Nothing happens.
    Stay,
    /// Enable the host subchannel.
    Open,
    /// Quiesce, disable, free everything.
    Close,
    /// Answer cc 3.
    NotOperCc,
    /// Answer cc 2.
    BusyCc,
    /// Answer "broken".
    BrokenResponse,
    /// Validate and translate a START.
    Start,
    /// Issue the translated START to the host.
    Issue,
    /// Issue HALT.
    Halt,
    /// Issue CLEAR.
    Clear,
    /// Answer STORE with the host SCHIB.
    Store,
    /// Correlate a final interruption with the function it ends.
    FinalIrb,
    /// Pass an intermediate or unsolicited interruption on.
    ForwardIrb,
    /// Drop an interruption nobody can receive.
    DropIrb,
    /// Report a path change with a CRW.
    PathEvent,
    /// Report a path change; re-enable if a path came back.
    Revive,
    /// The device is gone: free, report, NOT_OPER.
    Gone,
    /// The backend failed: stop the host, free, BROKEN.
    Broken,
}

use Action::{
    Broken as Fail, BrokenResponse as BrkR, BusyCc as Busy, Clear as Clr, Close as Cls,
    DropIrb as Ign, FinalIrb as Final, ForwardIrb as Fwd, Gone, Halt as Hlt, Issue as Iss,
    NotOperCc as Cc3, Open as Opn, PathEvent as Path, Revive as Rev, Start as Strt, Stay,
    Store as Sto,
};

/// The state × event table. Rows follow [`State::ALL`], columns follow
/// [`super::EventKind::ALL`].
#[rustfmt::skip]
pub const TABLE: [[Action; 13]; 6] = [
    //               Open  Close Start Issue Halt  Clear Store Final Interm. Unsol. PathEv. DevGone IntErr
    /* Closed */    [Opn,  Stay, Cc3,  Stay, Cc3,  Cc3,  Cc3,  Ign,  Ign,    Ign,   Stay,   Stay,   Stay],
    /* Idle */      [Stay, Cls,  Strt, Stay, Hlt,  Clr,  Sto,  Final,Fwd,    Fwd,   Path,   Gone,   Fail],
    /* CpProcess. */[Stay, Cls,  Busy, Iss,  Busy, Clr,  Sto,  Final,Fwd,    Fwd,   Path,   Gone,   Fail],
    /* CpPending */ [Stay, Cls,  Strt, Stay, Hlt,  Clr,  Sto,  Final,Fwd,    Fwd,   Path,   Gone,   Fail],
    /* NotOper */   [Stay, Cls,  Cc3,  Stay, Cc3,  Cc3,  Cc3,  Ign,  Ign,    Ign,   Rev,    Gone,   Fail],
    /* Broken */    [Stay, Cls,  BrkR, Stay, BrkR, BrkR, BrkR, Ign,  Ign,    Ign,   Stay,   Stay,   Stay],
];

/// Run an action; it returns the next state.
pub(super) fn run<H: HostSubchannel>(
    action: Action,
    sch: &mut Subchannel<H>,
    input: Input<'_>,
) -> State {
    match action {
        Action::Stay => stay(sch, input),
        Action::Open => open(sch, input),
        Action::Close => close(sch, input),
        Action::NotOperCc => not_oper_cc(sch, input),
        Action::BusyCc => busy_cc(sch, input),
        Action::BrokenResponse => broken_resp(sch, input),
        Action::Start => start(sch, input),
        Action::Issue => issue(sch, input),
        Action::Halt => halt(sch, input),
        Action::Clear => clear(sch, input),
        Action::Store => store(sch, input),
        Action::FinalIrb => final_irb(sch, input),
        Action::ForwardIrb => forward_irb(sch, input),
        Action::DropIrb => drop_irb(sch, input),
        Action::PathEvent => path_event(sch, input),
        Action::Revive => revive(sch, input),
        Action::Gone => gone(sch, input),
        Action::Broken => broken(sch, input),
    }
}

fn stay<H: HostSubchannel>(sch: &mut Subchannel<H>, _: Input<'_>) -> State {
    sch.state
}

fn open<H: HostSubchannel>(sch: &mut Subchannel<H>, _: Input<'_>) -> State {
    sch.events.clear();
    sch.free_all();
    sch.bring_up()
}

fn close<H: HostSubchannel>(sch: &mut Subchannel<H>, _: Input<'_>) -> State {
    if let Err(e) = sch.quiesce_and_disable() {
        log::error!("quiescing the subchannel failed: {e}");
    }
    sch.free_all();
    sch.events.clear();
    State::Closed
}

fn not_oper_cc<H: HostSubchannel>(sch: &mut Subchannel<H>, _: Input<'_>) -> State {
    sch.response = Response::cc(3);
    sch.state
}

fn busy_cc<H: HostSubchannel>(sch: &mut Subchannel<H>, _: Input<'_>) -> State {
    sch.response = Response::cc(2);
    sch.state
}

fn broken_resp<H: HostSubchannel>(sch: &mut Subchannel<H>, _: Input<'_>) -> State {
    sch.response = Response::status(ResponseStatus::Broken, 0);
    sch.state
}

fn unit_exception(code: ProgramErrorCode) -> Response {
    Response::status(ResponseStatus::UnitException, code as u32)
}

/// START: refuse while status is pending (cc 1) or any function is in
/// progress (cc 2); otherwise translate. Success leads to CP_PROCESSING,
/// from where ISSUE hands the program to the host.
fn start<H: HostSubchannel>(sch: &mut Subchannel<H>, input: Input<'_>) -> State {
    let Input::Request { request, ram } = input else {
        return sch.state;
    };
    if sch.interruption_pending(false) {
        sch.response = Response::cc(1);
        return sch.state;
    }
    if sch.any_function() {
        sch.response = Response::cc(2);
        return sch.state;
    }
    if !request
        .scsw
        .function_control
        .contains(FunctionControl::START)
    {
        sch.response = unit_exception(ProgramErrorCode::BadFunction);
        return sch.state;
    }
    let Some(ram) = ram else {
        sch.response = unit_exception(ProgramErrorCode::AddressOutOfRange);
        return sch.state;
    };
    match translate(&request.orb, ram) {
        Ok(program) => {
            sch.translated = Some(Translated {
                tag: request.tag,
                program: Arc::new(program),
                ram: ram.clone(),
            });
            State::CpProcessing
        }
        Err(e) => {
            log::info!("channel program rejected: {e}");
            sch.response = unit_exception(e.code());
            sch.state
        }
    }
}

/// ISSUE: hand the translated program to the host. The program is kept
/// only if the host accepted it; IDLE is entered after it is dropped.
fn issue<H: HostSubchannel>(sch: &mut Subchannel<H>, _: Input<'_>) -> State {
    let Some(translated) = sch.translated.take() else {
        return State::Idle;
    };
    // Something happened between translation and issue (an interruption
    // arrived, a CLEAR was accepted): the START is refused as it would have
    // been had it come a moment later.
    if sch.interruption_pending(false) {
        sch.response = Response::cc(1);
        return State::Idle;
    }
    if sch.any_function() {
        sch.response = Response::cc(2);
        return State::Idle;
    }
    let cc = sch
        .host
        .start(Arc::clone(&translated.program), translated.ram);
    sch.response = Response::cc(cc.cc());
    match cc {
        HostCc::Accepted => {
            sch.start = Some(StartFunction {
                tag: translated.tag,
                program: translated.program,
            });
            State::CpPending
        }
        HostCc::StatusPending | HostCc::Busy => State::Idle,
        HostCc::NotOperational => sch.not_operational(),
    }
}

/// HALT: cc 1 while a final interruption is undelivered, cc 2 while a halt
/// or clear is in progress; otherwise the host decides.
fn halt<H: HostSubchannel>(sch: &mut Subchannel<H>, input: Input<'_>) -> State {
    let Input::Request { request, .. } = input else {
        return sch.state;
    };
    if sch.interruption_pending(true) {
        sch.response = Response::cc(1);
        return sch.state;
    }
    if sch.halt_tag.is_some() || sch.clear_tag.is_some() {
        sch.response = Response::cc(2);
        return sch.state;
    }
    let cc = sch.host.halt();
    sch.response = Response::cc(cc.cc());
    match cc {
        HostCc::Accepted => {
            sch.halt_tag = Some(request.tag);
            sch.state
        }
        HostCc::StatusPending | HostCc::Busy => sch.state,
        HostCc::NotOperational => sch.not_operational(),
    }
}

/// CLEAR: always accepted while operational; withdraws undelivered
/// interruptions and supersedes a halt.
fn clear<H: HostSubchannel>(sch: &mut Subchannel<H>, input: Input<'_>) -> State {
    let Input::Request { request, .. } = input else {
        return sch.state;
    };
    let cc = sch.host.clear();
    sch.response = Response::cc(cc.cc());
    match cc {
        HostCc::Accepted => {
            sch.events.retain(|e| !matches!(e, Event::Interrupt { .. }));
            sch.halt_tag = None;
            sch.clear_tag = Some(request.tag);
            sch.state
        }
        HostCc::StatusPending | HostCc::Busy => sch.state,
        HostCc::NotOperational => sch.not_operational(),
    }
}

fn store<H: HostSubchannel>(sch: &mut Subchannel<H>, input: Input<'_>) -> State {
    match sch.host.store() {
        Ok(schib) => {
            sch.response = Response::cc(0);
            sch.response.schib = schib;
            sch.state
        }
        Err(HostError::NotOperational) => {
            sch.response = Response::cc(3);
            sch.not_operational()
        }
        Err(e) => {
            log::error!("STORE SUBCHANNEL failed: {e}");
            sch.response = Response::status(ResponseStatus::Broken, 0);
            broken(sch, input)
        }
    }
}

/// A final interruption: correlate it with the function it ends by its
/// function-control bits, and for a START also by its CPA lying inside that
/// START's program. Only an interruption that ends our own START frees the
/// program; IDLE follows the free.
fn final_irb<H: HostSubchannel>(sch: &mut Subchannel<H>, input: Input<'_>) -> State {
    let Input::Interrupt(irb) = input else {
        return sch.state;
    };
    let fc = irb.scsw.function_control;
    let (tag, ends_start) = if fc.contains(FunctionControl::CLEAR) {
        sch.halt_tag = None;
        (sch.clear_tag.take(), true)
    } else if fc.contains(FunctionControl::HALT) {
        (sch.halt_tag.take(), fc.contains(FunctionControl::START))
    } else if fc.contains(FunctionControl::START) {
        (sch.start.as_ref().map(|s| s.tag), true)
    } else {
        (None, false)
    };
    let mut next = sch.state;
    if ends_start {
        if let Some(start) = &sch.start {
            let start_only = fc == FunctionControl::START;
            if start_only && !start.program.contains_cpa(irb.scsw.cpa) {
                log::error!(
                    "final interruption with CPA {:#x} outside the running program",
                    irb.scsw.cpa
                );
                sch.free_all();
                return State::Broken;
            }
            sch.start = None;
            if sch.state == State::CpPending {
                next = State::Idle;
            }
        }
    }
    sch.emit(Event::Interrupt {
        tag: tag.unwrap_or(0),
        irb,
    });
    next
}

/// Intermediate and unsolicited interruptions are passed on and change
/// nothing: the program keeps running.
fn forward_irb<H: HostSubchannel>(sch: &mut Subchannel<H>, input: Input<'_>) -> State {
    if let Input::Interrupt(irb) = input {
        // Status of a function still in progress belongs to the START;
        // unsolicited status to nobody.
        let tag = if irb.scsw.is_unsolicited() {
            0
        } else {
            sch.start.as_ref().map_or(0, |s| s.tag)
        };
        sch.emit(Event::Interrupt { tag, irb });
    }
    sch.state
}

/// Nobody is there to see it (closed, gone or broken): dropped.
fn drop_irb<H: HostSubchannel>(sch: &mut Subchannel<H>, _: Input<'_>) -> State {
    sch.state
}

/// A path came or went: report it with a channel-report word. Path masks
/// are read fresh from the host at each STORE.
fn path_event<H: HostSubchannel>(sch: &mut Subchannel<H>, input: Input<'_>) -> State {
    if let Input::PathEvent { chpid, online } = input {
        sch.queue_crw(chpid, online);
    }
    sch.state
}

/// A path came back to a not-operational subchannel: if the host is usable
/// again, the subchannel is enabled and I/O resumes.
fn revive<H: HostSubchannel>(sch: &mut Subchannel<H>, input: Input<'_>) -> State {
    let Input::PathEvent { chpid, online } = input else {
        return sch.state;
    };
    sch.queue_crw(chpid, online);
    if !online {
        return sch.state;
    }
    sch.bring_up()
}

fn gone<H: HostSubchannel>(sch: &mut Subchannel<H>, _: Input<'_>) -> State {
    let next = sch.not_operational();
    sch.emit(Event::DeviceGone);
    next
}

/// The backend failed: stop the host's work so that nothing runs on a
/// program the state machine no longer tracks, drop everything.
fn broken<H: HostSubchannel>(sch: &mut Subchannel<H>, _: Input<'_>) -> State {
    if sch.any_function() {
        let _ = sch.host.clear();
    }
    sch.free_all();
    State::Broken
}
