//! Sequential 4 KiB-block reads from the emulated 3390 with the channel
//! programs Linux builds (Define Extent, Locate Record, 16 × READ DATA MT
//! through format-2 IDAWs), translated and run on the `sim` subchannel into
//! guest RAM, against pread + memcpy of the same bytes from the image file
//! into the same guest RAM, in the same run.
//!
//! `cargo bench -p vhost-user-ccw --bench dasd`

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost_user_ccw::host::sim::ckd::cdl::{self, BLOCK_SIZE, RECORDS_PER_TRACK};
use vhost_user_ccw::host::sim::ckd::dasd::Dasd;
use vhost_user_ccw::host::sim::ckd::{CkdImage, DATA_OFFSET, Geometry};
use vhost_user_ccw::host::sim::{SimConfig, SimSubchannel};
use vhost_user_ccw::host::{HostEvent, HostSubchannel};
use vhost_user_ccw::memory::GuestRam;
use vhost_user_ccw::translate::translate;
use vhost_user_ccw_protocol::arch::{Ccw, CcwFlags, DeviceStatus, Orb};

/// Blocks per channel program, as Linux chains them.
const CHAIN_BLOCKS: u64 = 16;
/// Volume size: 100 cylinders, 1498 data tracks, about 70 MiB of blocks.
const CYLINDERS: u32 = 100;
const PASSES: usize = 15;
/// Each chain's CCWs, parameters and IDAWs, built before the timing
/// starts (the guest builds them, not the backend).
const PROGRAMS: u64 = 0x10_0000;
const PROGRAM_SIZE: u64 = 0x200;
const DATA: u64 = 0x1_0000;
/// Track slot size and where record `r`'s data starts in a CDL data slot:
/// header, R0 (count + 8 bytes), then count + 4096 bytes per record.
const SLOT: u64 = 57_344;
const FIRST_RECORD: u64 = 16 + 8 + 8;

fn cchh(track: u64) -> [u8; 4] {
    let cyl = u16::try_from(track / 15).expect("cylinder").to_be_bytes();
    let head = u16::try_from(track % 15).expect("head").to_be_bytes();
    [cyl[0], cyl[1], head[0], head[1]]
}

/// Writes the chain reading blocks `first..first + 16` of the data area
/// into guest RAM at DATA, one 4 KiB IDAW per block, as program `index`.
fn build_chain(ram: &GuestRam, index: u64, first: u64) -> Orb {
    let base = PROGRAMS + index * PROGRAM_SIZE;
    let (ccw_at, params, idals) = (base, base + 0x90, base + 0xB0);
    let track = cdl::DATA_START_TRACK + first / u64::from(RECORDS_PER_TRACK);
    let last = cdl::DATA_START_TRACK + (first + CHAIN_BLOCKS - 1) / u64::from(RECORDS_PER_TRACK);
    let mut de = vec![0x40, 0xC0, 0, 0, 0, 0, 0, 0];
    de.extend_from_slice(&cchh(track));
    de.extend_from_slice(&cchh(last));
    let mut lr = vec![0x06, 0x80, 0, u8::try_from(CHAIN_BLOCKS).expect("count")];
    lr.extend_from_slice(&cchh(track));
    lr.extend_from_slice(&cchh(track));
    lr.push(u8::try_from(first % u64::from(RECORDS_PER_TRACK) + 1).expect("record"));
    lr.push(0xFF);
    lr.extend_from_slice(&4096u16.to_be_bytes());
    ram.write(params, &de).expect("DE");
    ram.write(params + 16, &lr).expect("LR");
    let mut ccws = vec![
        Ccw {
            cmd: 0x63,
            flags: CcwFlags::CC,
            count: 16,
            cda: u32::try_from(params).expect("31-bit"),
        },
        Ccw {
            cmd: 0x47,
            flags: CcwFlags::CC,
            count: 16,
            cda: u32::try_from(params + 16).expect("31-bit"),
        },
    ];
    for i in 0..CHAIN_BLOCKS {
        let idal = idals + 8 * i;
        ram.write(idal, &(DATA + 4096 * i).to_be_bytes())
            .expect("IDAW");
        let flags = if i + 1 < CHAIN_BLOCKS {
            CcwFlags::CC | CcwFlags::IDA
        } else {
            CcwFlags::IDA
        };
        ccws.push(Ccw {
            cmd: 0x86,
            flags,
            count: 4096,
            cda: u32::try_from(idal).expect("31-bit"),
        });
    }
    for (i, ccw) in (0u64..).zip(&ccws) {
        ram.write(ccw_at + 8 * i, &ccw.encode_format1().expect("CCW"))
            .expect("CCW");
    }
    Orb {
        format1: true,
        prefetch: true,
        format2_idaw: true,
        lpm: 0x80,
        cpa: u32::try_from(ccw_at).expect("CPA"),
        ..Orb::default()
    }
}

/// One pass over the chains through the subchannel: translate, start,
/// run to the final interruption.
fn device_pass(sim: &mut SimSubchannel, ram: &GuestRam, orbs: &[Orb]) -> Duration {
    let mut events = Vec::new();
    let t0 = Instant::now();
    for (c, orb) in orbs.iter().enumerate() {
        let program = translate(orb, ram).expect("translates");
        sim.start(Arc::new(program), ram.clone());
        events.clear();
        sim.poll(&mut events).expect("poll");
        let Some(HostEvent::Interrupt(irb)) = events.first() else {
            panic!("no interruption: {events:?}");
        };
        assert_eq!(
            irb.scsw.device_status,
            DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END,
            "chain {c}"
        );
    }
    t0.elapsed()
}

/// The same bytes by pread from the slots (one pread per track span) and
/// memcpy of each block into the same guest RAM.
fn pread_pass(file: &std::fs::File, ram: &GuestRam, chains: u64, span: &mut [u8]) -> Duration {
    let rpt = u64::from(RECORDS_PER_TRACK);
    let record = 8 + 4096u64;
    let t0 = Instant::now();
    for c in 0..chains {
        let first = c * CHAIN_BLOCKS;
        let mut block = first;
        let mut slot_in_chain = 0u64;
        while block < first + CHAIN_BLOCKS {
            let track = cdl::DATA_START_TRACK + block / rpt;
            let r = block % rpt;
            let n = (rpt - r).min(first + CHAIN_BLOCKS - block);
            let offset = DATA_OFFSET + track * SLOT + FIRST_RECORD + r * record + 8;
            let len = usize::try_from((n - 1) * record + 4096).expect("span");
            file.read_exact_at(&mut span[..len], offset).expect("pread");
            for i in 0..n {
                let at = usize::try_from(i * record).expect("offset");
                ram.write(
                    DATA + 4096 * (slot_in_chain + i),
                    &span[at..at + BLOCK_SIZE],
                )
                .expect("memcpy");
            }
            slot_in_chain += n;
            block += n;
        }
        black_box(&span);
    }
    t0.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("vuccw-bench-dasd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bench.img");
    let geometry = Geometry::with_cylinders(CYLINDERS).expect("geometry");
    let mut image = CkdImage::create(&path, geometry).expect("create image");
    cdl::format_cdl(&mut image, "BENCH1", |_, _| {}).expect("format");
    // Distinct contents per block, so that a wrong mapping would show.
    let blocks = cdl::data_blocks(&geometry);
    let per_track = usize::from(RECORDS_PER_TRACK) * BLOCK_SIZE;
    for t in cdl::DATA_START_TRACK..geometry.tracks() {
        let (cyl, head) = geometry.track_address(t).expect("track");
        let bytes: Vec<u8> = (0..per_track)
            .map(|i| {
                u8::try_from((t * 7 + u64::try_from(i / BLOCK_SIZE).unwrap_or(0)) % 251)
                    .unwrap_or(0)
            })
            .collect();
        image
            .write_track_deferred(cyl, head, &cdl::data_track(cyl, head, &bytes))
            .expect("fill");
    }
    image.sync().expect("sync");
    drop(image);
    let chains = blocks / CHAIN_BLOCKS;

    let ram = GuestRam::anonymous(2 << 20).expect("guest RAM");
    let orbs: Vec<Orb> = (0..chains)
        .map(|c| build_chain(&ram, c, c * CHAIN_BLOCKS))
        .collect();
    assert!(PROGRAMS + chains * PROGRAM_SIZE <= 2 << 20);
    let dasd = Dasd::open(&path, 0x0190).expect("open");
    let mut sim = SimSubchannel::new(SimConfig::default(), Box::new(dasd)).expect("sim");
    sim.enable().expect("enable");
    let file = std::fs::File::open(&path).expect("open image");
    let mut span = vec![0u8; usize::try_from(SLOT).expect("slot")];

    // Both paths must deliver the same bytes: check one chain.
    device_pass(&mut sim, &ram, &orbs[..1]);
    let mut from_device = vec![0u8; 16 * BLOCK_SIZE];
    ram.read(DATA, &mut from_device).expect("read");
    pread_pass(&file, &ram, 1, &mut span);
    let mut from_file = vec![0u8; 16 * BLOCK_SIZE];
    ram.read(DATA, &mut from_file).expect("read");
    assert_eq!(from_device, from_file, "the device reads the image's bytes");

    // The two paths alternate pass by pass, so that what else runs on the
    // machine weighs on both alike; each pass pair gives one ratio.
    let (mut device, mut baseline, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PASSES {
        let d = device_pass(&mut sim, &ram, &orbs);
        let b = pread_pass(&file, &ram, chains, &mut span);
        ratios.push(b.as_secs_f64() / d.as_secs_f64());
        device.push(d);
        baseline.push(b);
    }
    let bytes = chains * CHAIN_BLOCKS * 4096;
    let rate = |d: Duration| bytes as f64 / d.as_secs_f64() / f64::from(1u32 << 20);
    println!(
        "{chains} chains of {CHAIN_BLOCKS} x 4 KiB ({} MiB) per pass, {PASSES} passes of each path, alternating",
        bytes >> 20
    );
    println!("| path | median pass | best pass | MiB/s (median) | per chain (median) |");
    println!("|---|---|---|---|---|");
    for (name, samples) in [
        ("sim + 3390: translate, run, store in guest RAM", &device),
        ("pread + memcpy into guest RAM", &baseline),
    ] {
        let m = median(samples.clone());
        let best = samples.iter().min().copied().unwrap_or_default();
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.0} | {:.1} µs |",
            m.as_secs_f64() * 1e3,
            best.as_secs_f64() * 1e3,
            rate(m),
            m.as_secs_f64() * 1e6 / chains as f64
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "device throughput = {:.0}% of pread + memcpy (median of the per-pass ratios; range {:.0}%..{:.0}%; goal >= 70%)",
        100.0 * ratios[ratios.len() / 2],
        100.0 * ratios[0],
        100.0 * ratios[ratios.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
