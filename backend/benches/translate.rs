//! Translating a 256-CCW chain whose format-2 IDAWs describe 1 MiB, against
//! copying 1 MiB with memcpy, measured in the same run.
//!
//! `cargo bench -p vhost-user-ccw --bench translate`

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

fn program(ram: &GuestRam) -> Orb {
    for i in 0..CCWS {
        let flags = if i + 1 < CCWS {
            CcwFlags::CC | CcwFlags::IDA
        } else {
            CcwFlags::IDA
        };
        let idal = IDALS + 8 * i;
        let ccw = Ccw {
            cmd: 0x02,
            flags,
            count: u16::try_from(BLOCK).expect("block fits"),
            cda: u32::try_from(idal).expect("IDAL below 4G"),
        };
        ram.write(CHAIN + 8 * i, &ccw.encode_format1().expect("CCW"))
            .expect("write CCW");
        ram.write(idal, &(DATA + BLOCK * i).to_be_bytes())
            .expect("write IDAW");
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

fn main() {
    let ram = GuestRam::anonymous(4 << 20).expect("guest RAM");
    let orb = program(&ram);
    let check = translate(&orb, &ram).expect("translates");
    assert_eq!(check.ccws.len(), 256);
    assert_eq!(check.data_bytes, 1 << 20);

    let source = vec![0x5au8; 1 << 20];
    let mut target = vec![0u8; 1 << 20];
    let (mut translations, mut copies) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            // A batch per sample: one translation is short enough that
            // reading the clock around each would add a few percent.
            let t0 = Instant::now();
            for _ in 0..BATCH {
                black_box(translate(black_box(&orb), &ram).expect("translates"));
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
    let translate = median(translations);
    let memcpy = median(copies);
    let ratio = translate.as_secs_f64() / memcpy.as_secs_f64();
    println!("| measurement | median |");
    println!("|---|---|");
    println!("| translate 256 CCWs, format-2 IDAWs, 1 MiB | {translate:?} |");
    println!("| memcpy 1 MiB | {memcpy:?} |");
    println!();
    println!(
        "translation = {:.1}% of memcpy (goal <= 5%: {})",
        ratio * 100.0,
        if ratio <= 0.05 { "met" } else { "NOT met" }
    );
}
