//! Fuzz the channel-program translator, and the `sim` host running what it
//! produces.
//!
//! Input: a 12-byte ORB (inputs whose ORB does not decode are skipped), then
//! the first bytes of a 64 KiB guest RAM at address 0 (the rest is zero).
//! The common path must build exactly the general path's program (or
//! refusal), a translated program must satisfy the translator's
//! invariants, and the sim must run it to a final interruption whose CPA
//! lies in the program, within a bounded number of polls (an endless
//! program is halted, then cleared), and then let go of it.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vhost_user_ccw::host::sim::device::BufferDevice;
use vhost_user_ccw::host::sim::{SimConfig, SimSubchannel};
use vhost_user_ccw::host::{HostCc, HostEvent, HostSubchannel};
use vhost_user_ccw::memory::GuestRam;
use vhost_user_ccw::translate::{
    CcwKind, ChannelProgram, MAX_DATA_BYTES, MAX_SEGMENT_CCWS, MAX_SEGMENTS, translate,
    translate_general_only,
};
use vhost_user_ccw_protocol::arch::{FunctionControl, Orb};

const RAM_SIZE: usize = 64 << 10;
/// Polls before an unfinished program is halted, and again before the halt
/// is followed by a clear, and again before giving up (each poll runs up
/// to the sim's per-poll CCW budget).
const POLLS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Some((orb, image)) = data.split_first_chunk::<{ Orb::SIZE }>() else {
        return;
    };
    let Ok(orb) = Orb::decode(orb) else {
        return;
    };
    let ram = GuestRam::anonymous(RAM_SIZE).expect("anonymous guest RAM");
    let image = &image[..image.len().min(RAM_SIZE)];
    if !image.is_empty() {
        ram.write(0, image).expect("the image fits guest RAM");
    }
    let translated = translate(&orb, &ram);
    assert_eq!(
        translated,
        translate_general_only(&orb, &ram),
        "the common path builds the general path's program"
    );
    let Ok(program) = translated else {
        return;
    };
    check_program(&program, &ram);
    run(Arc::new(program), &ram);
});

/// The reason of the check point where the translator stopped fetching.
const NOT_FETCHED: &str = "beyond the translator's limits (reached only by a skip)";

fn index(value: u32) -> usize {
    usize::try_from(value).expect("u32 fits usize")
}

/// What every translated program guarantees.
fn check_program(program: &ChannelProgram, ram: &GuestRam) {
    let entries = program.ccws.len();
    assert!(entries > 0, "a program has a first entry");
    assert_eq!(
        program.ccws[0].addr(),
        u64::from(program.orb.cpa),
        "entry 0 is the CCW at the CPA"
    );
    assert!(program.segments.len() <= MAX_SEGMENTS, "too many segments");
    for segment in &program.segments {
        let (first, len) = (index(segment.first), index(segment.len));
        assert!(first + len <= entries, "segment outside the entries");
        // At most MAX_SEGMENT_CCWS CCWs; past a TIC (reached only by a
        // status modifier) the segment may end in one more entry: the
        // check point where the translator stopped fetching.
        assert!(
            len <= MAX_SEGMENT_CCWS
                || (len == MAX_SEGMENT_CCWS + 1
                    && matches!(
                        program.ccws[first + len - 1].kind(),
                        CcwKind::Check { reason } if reason == NOT_FETCHED
                    )),
            "segment too long"
        );
    }
    assert!(program.data_bytes <= MAX_DATA_BYTES, "too much data");
    let ram_end = u64::try_from(RAM_SIZE).expect("small");
    for piece in &program.pieces {
        let len = u64::from(piece.len);
        assert!(len > 0, "empty data piece {piece:?}");
        assert!(
            piece
                .addr
                .checked_add(len)
                .is_some_and(|end| end <= ram_end),
            "data piece {piece:?} outside guest RAM"
        );
        assert!(
            ram.check(piece.addr, len).is_ok(),
            "piece {piece:?} refused"
        );
    }
    let mut designated = 0u64;
    for (i, entry) in program.ccws.iter().enumerate() {
        if let Some(next) = program.sequential(i) {
            assert!(next < entries, "entry {i}: sequential out of bounds");
        }
        match entry.kind() {
            CcwKind::Tic { target } => {
                let target = index(target);
                assert!(target < entries, "entry {i}: TIC target out of bounds");
                assert!(
                    !matches!(program.ccws[target].kind(), CcwKind::Tic { .. }),
                    "entry {i}: TIC resolves to a TIC"
                );
            }
            CcwKind::Command { count, data, .. } => {
                assert!(
                    data.start <= data.end && index(data.end) <= program.pieces.len(),
                    "entry {i}: data pieces out of bounds"
                );
                let moved: u64 = program.data(i).iter().map(|p| u64::from(p.len)).sum();
                assert!(
                    moved == 0 || moved == u64::from(count),
                    "entry {i}: pieces cover {moved} bytes of {count}"
                );
                designated += moved;
            }
            CcwKind::Check { .. } => {}
        }
    }
    assert!(designated <= program.data_bytes, "pieces beyond data_bytes");
}

/// Run the program on a sim subchannel to its final interruption.
fn run(program: Arc<ChannelProgram>, ram: &GuestRam) {
    let mut sim = SimSubchannel::new(SimConfig::default(), Box::new(BufferDevice::new(4096)))
        .expect("sim subchannel");
    sim.enable().expect("enable");
    assert_eq!(
        sim.start(Arc::clone(&program), ram.clone()),
        HostCc::Accepted
    );
    let mut events = Vec::new();
    for round in 0..3 {
        match round {
            0 => {}
            1 => assert_eq!(sim.halt(), HostCc::Accepted, "halt an endless program"),
            _ => assert_eq!(sim.clear(), HostCc::Accepted, "clear after the halt"),
        }
        for _ in 0..POLLS {
            sim.poll(&mut events).expect("poll");
            for event in events.drain(..) {
                let HostEvent::Interrupt(irb) = event else {
                    continue;
                };
                let scsw = irb.scsw;
                if !scsw.is_final() {
                    continue;
                }
                if scsw.function_control == FunctionControl::START {
                    assert!(
                        program.contains_cpa(scsw.cpa),
                        "final CPA {:#x} outside the program",
                        scsw.cpa
                    );
                }
                assert!(
                    sim.holds_program().is_none(),
                    "the host holds the program after its final interruption"
                );
                return;
            }
        }
    }
    panic!("no final interruption after start, halt and clear");
}
