//! Named scenarios: each race or bug the kernel's vfio-ccw had (see
//! shared/reference/vfio-ccw.md §4) that concerns the state machine, plus
//! the quiesce loop against devices that answer at once, never, or vanish.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vhost_user_ccw_protocol::arch::{
    Ccw, CcwFlags, Crw, DeviceStatus, FunctionControl, Irb, Orb, Scsw, StatusControl,
};
use vhost_user_ccw_protocol::wire::{
    Event, ProgramErrorCode, Request, RequestType, ResponseStatus,
};

use super::model::{Completion, ModelHost};
use super::{Input, QuiesceLimits, State, Subchannel};
use crate::host::HostSubchannel;
use crate::host::sim::device::{BufferDevice, CMD_NOP};
use crate::host::sim::{SimConfig, SimSubchannel};
use crate::memory::GuestRam;
use crate::memory::tests::ram;

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
            CcwFlags::empty()
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

fn limits() -> QuiesceLimits {
    QuiesceLimits {
        retries: 6,
        halts: 2,
        wait: Duration::from_millis(100),
    }
}

fn model(completion: Completion) -> (Subchannel<ModelHost>, GuestRam) {
    let mut sch = Subchannel::new(ModelHost::new(completion));
    sch.set_quiesce_limits(limits());
    let ram = ram(0x10000);
    nop_chain(&ram, 0x1000, 2);
    sch.dispatch(Input::Open);
    assert_eq!(sch.state(), State::Idle);
    (sch, ram)
}

fn sim(latency: Duration) -> (Subchannel<SimSubchannel>, GuestRam) {
    let config = SimConfig {
        latency,
        ..SimConfig::default()
    };
    let host = SimSubchannel::new(config, Box::new(BufferDevice::new(64))).unwrap();
    let mut sch = Subchannel::new(host);
    sch.set_quiesce_limits(limits());
    sch.dispatch(Input::Open);
    (sch, ram(0x10000))
}

/// The final interruption of a START whose program stopped before `cpa`.
fn start_ended_at(cpa: u32) -> Irb {
    Irb {
        scsw: Scsw {
            function_control: FunctionControl::START,
            status_control: StatusControl::PRIMARY
                | StatusControl::SECONDARY
                | StatusControl::STATUS_PENDING,
            cpa,
            ..Scsw::default()
        },
        ..Irb::default()
    }
}

fn halt(tag: u64) -> Request {
    Request::new(RequestType::Halt, tag)
}

fn clear(tag: u64) -> Request {
    Request::new(RequestType::Clear, tag)
}

fn store() -> Request {
    Request::new(RequestType::Store, 0)
}

fn next_interrupt<H: HostSubchannel>(sch: &mut Subchannel<H>) -> (u64, Irb) {
    for _ in 0..2000 {
        sch.host_ready();
        while let Some(event) = sch.next_event() {
            if let Event::Interrupt { tag, irb } = event {
                return (tag, irb);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("no interruption");
}

#[test]
fn closed_subchannel_answers_cc3() {
    let mut sch = Subchannel::new(ModelHost::new(Completion::OnStep));
    let ram = ram(0x10000);
    assert_eq!(sch.request(&start_request(1, 0x1000), Some(&ram)).cc, 3);
    assert_eq!(sch.request(&halt(2), None).cc, 3);
    assert_eq!(sch.request(&clear(3), None).cc, 3);
    assert_eq!(sch.request(&store(), None).cc, 3);
    assert_eq!(sch.state(), State::Closed);
}

#[test]
fn start_runs_on_the_sim_to_a_final_interrupt_and_frees_the_program() {
    let (mut sch, ram) = sim(Duration::ZERO);
    nop_chain(&ram, 0x1000, 3);
    assert_eq!(sch.request(&start_request(7, 0x1000), Some(&ram)).cc, 0);
    assert_eq!(sch.state(), State::CpPending);
    // The program already ran (the request polled the host first): its
    // interruption is status pending.
    assert_eq!(sch.request(&start_request(8, 0x1000), Some(&ram)).cc, 1);
    let (tag, irb) = next_interrupt(&mut sch);
    assert_eq!(tag, 7);
    assert_eq!(irb.scsw.cpa, 0x1018);
    assert_eq!(sch.state(), State::Idle);
    assert!(!sch.has_program());
}

#[test]
fn untranslatable_program_gets_unit_exception_and_stays_idle() {
    let (mut sch, ram) = model(Completion::OnStep);
    let mut request = start_request(1, 0x1000);
    request.orb.transport_mode = true;
    let resp = sch.request(&request, Some(&ram));
    assert_eq!(resp.status, ResponseStatus::UnitException);
    assert_eq!(resp.error, ProgramErrorCode::Unsupported as u32);
    assert_eq!(sch.state(), State::Idle);
    assert!(!sch.has_program());
    assert!(sch.host().program.is_none(), "nothing reached the host");
}

/// 2019 "free only on final interrupt": a PCI intermediate interruption
/// freed the program while the channel still ran it.
#[test]
fn pci_intermediate_interrupt_keeps_the_program_alive() {
    let (mut sch, ram) = model(Completion::OnStep);
    assert_eq!(sch.request(&start_request(1, 0x1000), Some(&ram)).cc, 0);
    sch.host_mut().intermediate();
    sch.host_ready();
    let Some(Event::Interrupt { tag, irb }) = sch.next_event() else {
        panic!("intermediate interruption expected");
    };
    assert_eq!(tag, 1);
    assert!(
        irb.scsw
            .status_control
            .contains(StatusControl::INTERMEDIATE)
    );
    assert_eq!(sch.state(), State::CpPending, "still pending");
    let held = sch.start_function().unwrap().program.clone();
    assert!(Arc::ptr_eq(&held, sch.host().program.as_ref().unwrap()));
    sch.host_mut().complete();
    sch.host_ready();
    assert_eq!(sch.state(), State::Idle);
}

/// 2019 "split BUSY": HALT and CLEAR are accepted while a START is pending.
#[test]
fn async_command_during_a_pending_start_is_accepted() {
    let (mut sch, ram) = model(Completion::OnStep);
    sch.request(&start_request(1, 0x1000), Some(&ram));
    assert_eq!(sch.request(&halt(2), None).cc, 0);
    assert_eq!(
        sch.request(&halt(3), None).cc,
        2,
        "halt already in progress"
    );
    assert_eq!(
        sch.request(&clear(4), None).cc,
        0,
        "clear is always accepted"
    );
    sch.host_mut().complete();
    let (tag, irb) = next_interrupt(&mut sch);
    assert_eq!(tag, 4, "the clear's interruption, carrying its tag");
    assert_eq!(irb.scsw.function_control, FunctionControl::CLEAR);
    assert_eq!(sch.state(), State::Idle);
}

/// 2019 "two writers": requests from several threads are serialized; the
/// subchannel never holds two programs and ends consistent.
#[test]
fn two_writers_are_serialized() {
    let (sch, ram) = model(Completion::Instant);
    let sch = Arc::new(Mutex::new(sch));
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let sch = Arc::clone(&sch);
            let ram = ram.clone();
            std::thread::spawn(move || {
                let mut accepted = 0;
                for i in 0..500u64 {
                    let mut sch = sch.lock().unwrap();
                    let tag = t * 1000 + i + 1;
                    let resp = match i % 4 {
                        0 | 1 => sch.request(&start_request(tag, 0x1000), Some(&ram)),
                        2 => sch.request(&halt(tag), None),
                        _ => {
                            sch.host_mut().complete();
                            sch.host_ready();
                            while sch.next_event().is_some() {}
                            sch.request(&store(), None)
                        }
                    };
                    if i % 4 < 2 && resp.cc == 0 {
                        accepted += 1;
                    }
                    let busy = !sch.host().fc.is_empty() || !sch.host().pending.is_empty();
                    assert_eq!(
                        sch.state() == State::CpPending,
                        sch.start_function().is_some()
                    );
                    assert!(!(sch.state() == State::Idle && sch.has_program()));
                    assert!(busy || sch.start_function().is_none());
                }
                accepted
            })
        })
        .collect();
    let accepted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(accepted > 0);
}

/// 2019 "free only if CP_PENDING": an interruption that arrives while a
/// START is being translated must not free the program being built.
#[test]
fn interrupt_during_translation_cannot_free_the_program() {
    let (mut sch, ram) = model(Completion::OnStep);
    let request = start_request(1, 0x1000);
    assert_eq!(
        sch.dispatch(Input::Request {
            request: &request,
            ram: Some(&ram),
        }),
        State::CpProcessing
    );
    // A final interruption (say of an earlier function) arrives now.
    sch.dispatch(Input::Interrupt(start_ended_at(0x1010)));
    assert_eq!(sch.state(), State::CpProcessing);
    assert!(sch.has_program(), "the program being translated survives");
    // The interruption is now status pending: the START is refused with
    // cc 1, and only that failure drops its program.
    assert_eq!(sch.dispatch(Input::Issue), State::Idle);
    assert_eq!(sch.request(&store(), None).cc, 0);
    assert!(!sch.has_program());
    assert!(sch.host().program.is_none(), "nothing was started");
}

/// 2019 quiesce loop: halts complete during the wait; the loop restarted at
/// CANCEL forever. Ours ends at the next successful disable.
#[test]
fn quiesce_terminates_when_halts_complete_instantly() {
    let (mut sch, ram) = model(Completion::Instant);
    sch.request(&start_request(1, 0x1000), Some(&ram));
    sch.host_mut().active = true;
    let t0 = Instant::now();
    sch.dispatch(Input::Close);
    assert!(t0.elapsed() < Duration::from_millis(50));
    assert_eq!(sch.state(), State::Closed);
    assert_eq!(sch.host().halts, 1, "one halt was enough");
    assert!(!sch.host().enabled);
    assert!(!sch.has_program());
}

#[test]
fn quiesce_terminates_when_the_device_never_answers() {
    let (mut sch, ram) = model(Completion::Never);
    sch.request(&start_request(1, 0x1000), Some(&ram));
    sch.host_mut().active = true;
    let t0 = Instant::now();
    sch.dispatch(Input::Close);
    let limits = limits();
    assert!(t0.elapsed() < limits.wait * (limits.retries + 2));
    assert_eq!(sch.state(), State::Closed);
    assert_eq!(
        sch.host().halts,
        1,
        "the second halt finds the first in progress"
    );
    assert_eq!(sch.host().clears, limits.retries - limits.halts);
    assert!(!sch.has_program());
    assert!(sch.next_event().is_none());
}

#[test]
fn quiesce_terminates_when_the_device_disappears() {
    let (mut sch, ram) = model(Completion::Vanish);
    sch.request(&start_request(1, 0x1000), Some(&ram));
    sch.host_mut().active = true;
    sch.dispatch(Input::Close);
    assert_eq!(sch.state(), State::Closed);
    assert!(!sch.has_program());
    assert!(sch.host().program.is_none());
    // The next session finds the device gone.
    sch.dispatch(Input::Open);
    assert_eq!(sch.state(), State::NotOper);
}

#[test]
fn quiesce_of_a_start_that_has_not_begun_cancels_it() {
    let (mut sch, ram) = model(Completion::Never);
    sch.request(&start_request(1, 0x1000), Some(&ram));
    sch.dispatch(Input::Close);
    assert_eq!(sch.host().halts, 0, "CANCEL was enough");
    assert!(!sch.host().enabled);
}

/// The 2020/2021 SSCH vs CSCH race: START #1, its interruption, CLEAR, and
/// START #2 interleaved with the clear's completion at every point. The
/// clear's completion must never be taken for the end of START #2, and
/// START #2 is never accepted while the clear is in progress or its
/// interruption undelivered.
#[test]
fn second_start_against_clear_completion_at_every_point() {
    for point in 0..4 {
        let (mut sch, ram) = model(Completion::OnStep);
        assert_eq!(sch.request(&start_request(1, 0x1000), Some(&ram)).cc, 0);
        sch.host_mut().complete();
        sch.host_ready();
        assert_eq!(sch.state(), State::Idle);
        assert_eq!(sch.request(&clear(2), None).cc, 0);
        assert!(
            sch.pending_events()
                .all(|e| !matches!(e, Event::Interrupt { .. })),
            "CLEAR withdrew START #1's undelivered interruption"
        );
        let mut second = None;
        for step in 0..4 {
            if step == point {
                let cc = sch.request(&start_request(3, 0x1000), Some(&ram)).cc;
                let expected = match point {
                    0 => 2,     // clear in progress
                    1 | 2 => 1, // clear's interruption not yet delivered
                    _ => 0,
                };
                assert_eq!(cc, expected, "START #2 at point {point}");
                second = Some(cc);
            }
            match step {
                0 => sch.host_mut().complete(),
                1 => sch.host_ready(),
                2 => {
                    let Some(Event::Interrupt { tag, irb }) = sch.next_event() else {
                        panic!("clear interruption expected");
                    };
                    assert_eq!(tag, 2);
                    assert_eq!(irb.scsw.function_control, FunctionControl::CLEAR);
                }
                _ => {}
            }
        }
        if second == Some(0) {
            assert_eq!(sch.state(), State::CpPending);
            assert!(sch.host().program.is_some(), "START #2 runs");
            let (tag, _) = next_interrupt(&mut {
                sch.host_mut().complete();
                sch
            });
            assert_eq!(tag, 3);
        }
    }
}

/// 2021: an unsolicited (alert-only) interruption during CP_PENDING reset
/// the state to IDLE. It must change nothing.
#[test]
fn alert_only_interrupt_during_cp_pending_changes_nothing() {
    let (mut sch, ram) = model(Completion::OnStep);
    sch.request(&start_request(1, 0x1000), Some(&ram));
    sch.host_mut().unsolicited();
    sch.host_ready();
    assert_eq!(sch.state(), State::CpPending);
    assert!(sch.start_function().is_some());
    let Some(Event::Interrupt { tag, irb }) = sch.next_event() else {
        panic!("unsolicited interruption is forwarded");
    };
    assert_eq!(tag, 0);
    assert_eq!(irb.scsw.device_status, DeviceStatus::ATTENTION);
}

/// 2022 open/close rework: open, close and reset cycles with I/O in flight
/// always end disabled and clean.
#[test]
fn open_close_reset_cycles() {
    let (mut sch, ram) = sim(Duration::from_millis(5));
    nop_chain(&ram, 0x1000, 20);
    for round in 0..20u64 {
        if round % 2 == 0 {
            assert_eq!(
                sch.request(&start_request(round + 1, 0x1000), Some(&ram))
                    .cc,
                0
            );
        }
        sch.dispatch(Input::Close);
        assert_eq!(sch.state(), State::Closed);
        assert!(!sch.has_program());
        assert!(sch.host().holds_program().is_none());
        assert_eq!(sch.request(&store(), None).cc, 3);
        sch.dispatch(Input::Open);
        assert_eq!(sch.state(), State::Idle);
        let schib = sch.request(&store(), None).schib;
        assert!(schib.pmcw.enabled);
        assert!(schib.scsw.function_control.is_empty());
    }
}

/// 2022 "unmap during I/O": the memory table changes while a program runs.
/// The program keeps the mapping it was translated against alive.
#[test]
fn memory_table_replaced_during_io_keeps_the_program_memory() {
    let (mut sch, ram) = sim(Duration::from_millis(5));
    ram.write(0x2000, b"keep").unwrap();
    let write = Ccw {
        cmd: 0x01,
        flags: CcwFlags::empty(),
        count: 4,
        cda: 0x2000,
    };
    nop_chain(&ram, 0x1000, 1);
    let nop = Ccw {
        flags: CcwFlags::CC,
        ..Ccw::default()
    };
    ram.write(
        0x1000,
        &Ccw {
            cmd: CMD_NOP,
            ..nop
        }
        .encode_format1()
        .unwrap(),
    )
    .unwrap();
    ram.write(0x1008, &write.encode_format1().unwrap()).unwrap();
    assert_eq!(sch.request(&start_request(1, 0x1000), Some(&ram)).cc, 0);
    drop(ram); // the session installed a new table; this one is gone
    let (tag, irb) = next_interrupt(&mut sch);
    assert_eq!(tag, 1);
    assert_eq!(irb.scsw.cpa, 0x1010);
    assert!(
        irb.scsw.subchannel_status.is_empty(),
        "the write found its data"
    );
}

/// 2026 "cancel work on close": interruptions in flight at close are never
/// delivered, and nothing is emitted after close.
#[test]
fn close_with_interrupts_in_flight_delivers_nothing_after_close() {
    let (mut sch, ram) = model(Completion::OnStep);
    sch.request(&start_request(1, 0x1000), Some(&ram));
    sch.host_mut().unsolicited();
    sch.host_ready();
    sch.host_mut().complete();
    assert!(sch.has_events());
    sch.dispatch(Input::Close);
    assert!(!sch.has_events());
    sch.host_mut().unsolicited();
    sch.host_ready();
    assert!(!sch.has_events(), "closed: dropped");
}

/// 2026 "cp cleanup out of notoper": the device goes away during
/// CP_PENDING; the program is freed and the frontend told.
#[test]
fn device_gone_during_cp_pending_frees_the_program() {
    let (mut sch, ram) = sim(Duration::from_millis(50));
    nop_chain(&ram, 0x1000, 10);
    sch.request(&start_request(1, 0x1000), Some(&ram));
    sch.host_ready();
    assert_eq!(sch.state(), State::CpPending);
    sch.host_mut().remove_device();
    sch.host_ready();
    assert_eq!(sch.state(), State::NotOper);
    assert!(!sch.has_program());
    assert!(sch.host().holds_program().is_none());
    assert_eq!(sch.next_event(), Some(Event::DeviceGone));
    assert_eq!(sch.request(&start_request(2, 0x1000), Some(&ram)).cc, 3);
    assert_eq!(sch.request(&store(), None).cc, 3);
}

/// 2026 "crw lock": channel reports queued from one thread while another
/// reads them: each arrives once, in order.
#[test]
fn concurrent_crw_queueing_and_reads() {
    let (sch, _ram) = sim(Duration::ZERO);
    let sch = Arc::new(Mutex::new(sch));
    let producer = {
        let sch = Arc::clone(&sch);
        std::thread::spawn(move || {
            for i in 0..1000 {
                let mut sch = sch.lock().unwrap();
                sch.host_mut().vary_path(i % 2 == 1);
                sch.host_ready();
            }
        })
    };
    let mut seen = Vec::new();
    while seen.len() < 1000 {
        if let Some(Event::ChannelReport(crw)) = sch.lock().unwrap().next_event() {
            seen.push(crw);
        }
    }
    producer.join().unwrap();
    for (i, crw) in seen.iter().enumerate() {
        assert_eq!(crw.rsc, Crw::RSC_CHANNEL_PATH);
        assert_eq!(crw.rsid, 0x40);
        let expected = if i % 2 == 1 {
            Crw::ERC_INITIALIZED
        } else {
            Crw::ERC_PERMANENT_ERROR_INITIALIZED
        };
        assert_eq!(crw.erc, expected, "report {i}");
    }
}

/// A final START interruption whose CPA lies outside the running program
/// cannot be ours: the host is confused, the backend breaks rather than
/// freeing a program on a guess.
#[test]
fn final_interrupt_with_a_foreign_cpa_is_not_taken_for_ours() {
    let (mut sch, ram) = model(Completion::OnStep);
    sch.request(&start_request(1, 0x1000), Some(&ram));
    sch.dispatch(Input::Interrupt(start_ended_at(0x8000)));
    assert_eq!(sch.state(), State::Broken);
    assert_eq!(sch.request(&store(), None).status, ResponseStatus::Broken);
}

/// NOT_OPER is not the end: a path coming back revives the subchannel.
#[test]
fn not_oper_revives_when_a_path_returns() {
    let (mut sch, ram) = model(Completion::OnStep);
    sch.host_mut().vary_path(false);
    sch.host_ready();
    assert_eq!(sch.request(&start_request(1, 0x1000), Some(&ram)).cc, 3);
    assert_eq!(sch.state(), State::NotOper);
    sch.host_mut().vary_path(true);
    sch.host_ready();
    assert_eq!(sch.state(), State::Idle);
    let reports: Vec<_> = std::iter::from_fn(|| sch.next_event()).collect();
    assert_eq!(reports.len(), 2, "one CRW per path event");
    assert_eq!(sch.request(&start_request(2, 0x1000), Some(&ram)).cc, 0);
}

/// BROKEN is distinct from NOT_OPER: the frontend learns the backend
/// failed, and the host is stopped.
#[test]
fn internal_error_breaks_the_session_and_stops_the_host() {
    let (mut sch, ram) = model(Completion::OnStep);
    sch.request(&start_request(1, 0x1000), Some(&ram));
    sch.dispatch(Input::InternalError);
    assert_eq!(sch.state(), State::Broken);
    assert!(!sch.has_program());
    assert!(
        sch.host().fc.contains(FunctionControl::CLEAR),
        "host told to stop"
    );
    let resp = sch.request(&start_request(2, 0x1000), Some(&ram));
    assert_eq!(resp.status, ResponseStatus::Broken);
    sch.host_mut().complete(); // the clear the backend issued completes
    sch.dispatch(Input::Close);
    assert_eq!(sch.state(), State::Closed);
    sch.dispatch(Input::Open);
    assert_eq!(sch.state(), State::Idle, "a new session starts clean");
}
