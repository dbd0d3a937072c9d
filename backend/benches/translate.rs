//! Translating a 256-CCW chain whose format-2 IDAWs describe 1 MiB, against
//! copying 1 MiB with memcpy, measured in the same run.
//!
//! `taskset -c 1 cargo bench -p vhost-user-ccw --bench translate`
//!
//! The goal is for the chain as Linux lays it out (IDALs one after the
//! other), measured first. The same chain with its IDALs backwards or
//! scattered, and with direct addresses, is measured after it, each
//! alternating with memcpy samples of its own.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vhost_user_ccw::memory::GuestRam;
use vhost_user_ccw::translate::translate;
use vhost_user_ccw_protocol::arch::{Ccw, CcwFlags, Orb};

const CCWS: u64 = 256;
const BLOCK: u64 = 4096;
const CHAIN: u64 = 0x1000;
const IDALS: u64 = 0x2000;
const DATA: u64 = 0x10_0000;
const ROUNDS: usize = 20;
const PER_ROUND: usize = 200;
/// Translations timed together per sample (a batch takes about as long as
/// one memcpy of 1 MiB).
const BATCH: u32 = 16;

/// Where CCW i's data address comes from.
#[derive(Clone, Copy)]
enum Layout {
    /// Format-2 IDAWs, CCW i's IDAL at `IDALS + 8 * i` (Linux's layout).
    Idals,
    /// Format-2 IDAWs, the IDALs backwards.
    IdalsBackwards,
    /// Format-2 IDAWs, the IDALs scattered over 2 KiB (stride 97).
    IdalsScattered,
    /// Direct addresses.
    Direct,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Self::Idals => "format-2 IDAWs, IDALs in a row (the goal's case)",
            Self::IdalsBackwards => "format-2 IDAWs, IDALs backwards",
            Self::IdalsScattered => "format-2 IDAWs, IDALs scattered",
            Self::Direct => "direct addresses",
        }
    }
}

fn program(ram: &GuestRam, layout: Layout) -> Orb {
    for i in 0..CCWS {
        let mut flags = if i + 1 < CCWS {
            CcwFlags::CC
        } else {
            CcwFlags::empty()
        };
        let data = DATA + BLOCK * i;
        let idal = match layout {
            Layout::Idals => IDALS + 8 * i,
            Layout::IdalsBackwards => IDALS + 8 * (CCWS - 1 - i),
            Layout::IdalsScattered => IDALS + 8 * (i * 97 % CCWS),
            Layout::Direct => data,
        };
        if !matches!(layout, Layout::Direct) {
            flags |= CcwFlags::IDA;
            ram.write(idal, &data.to_be_bytes()).expect("write IDAW");
        }
        let ccw = Ccw {
            cmd: 0x02,
            flags,
            count: u16::try_from(BLOCK).expect("block fits"),
            cda: u32::try_from(idal).expect("below 4G"),
        };
        ram.write(CHAIN + 8 * i, &ccw.encode_format1().expect("CCW"))
            .expect("write CCW");
    }
    Orb {
        format1: true,
        prefetch: true,
        format2_idaw: true,
        lpm: 0x80,
        cpa: u32::try_from(CHAIN).expect("CPA"),
        ..Orb::default()
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Median time to translate `orb`'s program, and to copy 1 MiB, sampled
/// alternately.
fn measure(orb: &Orb, ram: &GuestRam) -> (Duration, Duration) {
    let source = vec![0x5au8; 1 << 20];
    let mut target = vec![0u8; 1 << 20];
    let (mut translations, mut copies) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            // A batch per sample: one translation is short enough that
            // reading the clock around each would add a few percent.
            let t0 = Instant::now();
            for _ in 0..BATCH {
                black_box(translate(black_box(orb), ram).expect("translates"));
            }
            translations.push(t0.elapsed() / BATCH);
        }
        for _ in 0..PER_ROUND {
            let t0 = Instant::now();
            target.copy_from_slice(black_box(&source));
            black_box(&mut target);
            copies.push(t0.elapsed());
        }
    }
    (median(translations), median(copies))
}

fn main() {
    let ram = GuestRam::anonymous(4 << 20).expect("guest RAM");
    println!("| 256 CCWs, 1 MiB | translate (median) | memcpy 1 MiB (median) | ratio |");
    println!("|---|---|---|---|");
    let mut goal = None;
    for layout in [
        Layout::Idals,
        Layout::IdalsBackwards,
        Layout::IdalsScattered,
        Layout::Direct,
    ] {
        let orb = program(&ram, layout);
        let check = translate(&orb, &ram).expect("translates");
        assert_eq!(check.ccws.len(), 256);
        assert_eq!(check.data_bytes, 1 << 20);
        let (translate, memcpy) = measure(&orb, &ram);
        let ratio = translate.as_secs_f64() / memcpy.as_secs_f64();
        println!(
            "| {} | {translate:?} | {memcpy:?} | {:.1}% |",
            layout.name(),
            ratio * 100.0
        );
        goal.get_or_insert(ratio);
    }
    let goal = goal.expect("the goal's case was measured");
    println!();
    println!(
        "translation = {:.1}% of memcpy (goal <= 5%: {})",
        goal * 100.0,
        if goal <= 0.05 { "met" } else { "NOT met" }
    );
}
