//! Sequential throughput of the backend's 3390 DASD against virtio-blk-ccw
//! disks, all in the same real s390x guest run (Debian's kernel under the
//! patched QEMU with TCG): two DASDs served by two backends, one with the
//! default flush policy (`flush=program`: fdatasync before each program's
//! final status) and one with `flush=none`, and three virtio disks holding
//! raw copies of the DASD's data area (`image export`), with QEMU's
//! cache=writethrough (each write synced before it completes: the same
//! durability as flush=program), cache=unsafe (written to the host's page
//! cache, never synced: the same as flush=none) and cache=writeback (QEMU's
//! default; dd issues no flush, so here it does what unsafe does). Each is
//! read and written with `dd bs=1M` and O_DIRECT, four passes, alternating,
//! ROUNDS rounds. The machine may be shared: besides the totals, each pair's
//! ratio is taken per round (the two disks ran back to back) and the median
//! of those is reported, which one disturbed round does not move.
//!
//! Run with `scripts/bench.sh guest` (it prepares QEMU and the guest kit),
//! or set VHOST_USER_CCW_QEMU and VHOST_USER_CCW_GUEST_6_12 (or
//! VHOST_USER_CCW_BENCH_KERNEL=6.1 and VHOST_USER_CCW_GUEST_6_1), then
//! `cargo build --release --bins && cargo bench -p vhost-user-ccw-tests --bench guest_throughput`.

use std::collections::BTreeMap;
use std::time::Duration;

use vhost_user_ccw_tests::Backend;
use vhost_user_ccw_tests::guest::{BootSpec, DASD_BUSID, Disk, Guest, Kit, field};

/// 200 cylinders: 3000 tracks, 140 MiB of data area.
const CYLINDERS: u64 = 200;

/// Rounds of the guest's bench step.
const ROUNDS: u32 = 5;

const DASD_PROGRAM: &str = "DASD, flush=program (default)";
const DASD_NONE: &str = "DASD, flush=none";
const VIRTIO_WRITETHROUGH: &str = "virtio-blk, cache=writethrough";
const VIRTIO_UNSAFE: &str = "virtio-blk, cache=unsafe";
const VIRTIO_WRITEBACK: &str = "virtio-blk, cache=writeback (QEMU's default)";

/// The second DASD: (QEMU devno, guest bus id, backend devno).
const DASD2: (&str, &str, &str) = ("fe.0.0201", "0.0.0201", "0x0201");

/// The baselines: virtio-blk-ccw disks on raw copies of the data area.
/// (QEMU devno, guest bus id, QEMU cache mode, label.)
const BASELINES: [(&str, &str, &str, &str); 3] = [
    ("fe.0.0300", "0.0.0300", "writethrough", VIRTIO_WRITETHROUGH),
    ("fe.0.0301", "0.0.0301", "unsafe", VIRTIO_UNSAFE),
    ("fe.0.0302", "0.0.0302", "writeback", VIRTIO_WRITEBACK),
];

/// (DASD, baseline, what the pair compares).
const PAIRS: [(&str, &str, &str); 3] = [
    (
        DASD_PROGRAM,
        VIRTIO_WRITETHROUGH,
        "like with like: every write synced before it completes",
    ),
    (
        DASD_NONE,
        VIRTIO_UNSAFE,
        "like with like: writes in the host's page cache, never synced",
    ),
    (
        DASD_NONE,
        VIRTIO_WRITEBACK,
        "QEMU's default; no flush in this workload",
    ),
];

#[derive(Debug, Default)]
struct Totals {
    bytes: u64,
    read_cs: u64,
    write_cs: u64,
}

/// MiB/s from bytes and centiseconds (the guest's /proc/uptime).
fn mib_per_s(bytes: u64, cs: u64) -> f64 {
    let mib = f64::from(u32::try_from(bytes >> 20).unwrap_or(u32::MAX));
    let seconds = f64::from(u32::try_from(cs.max(1)).unwrap_or(u32::MAX)) / 100.0;
    mib / seconds
}

impl Totals {
    fn read(&self) -> f64 {
        mib_per_s(self.bytes, self.read_cs)
    }

    fn write(&self) -> f64 {
        mib_per_s(self.bytes, self.write_cs)
    }
}

fn main() {
    // `cargo bench` passes "--bench"; nothing else is expected.
    let kernel: &'static str = match std::env::var("VHOST_USER_CCW_BENCH_KERNEL").as_deref() {
        Ok("6.1") => "6.1",
        Ok("6.12") | Err(_) => "6.12",
        Ok(other) => panic!("VHOST_USER_CCW_BENCH_KERNEL={other}: use 6.1 or 6.12"),
    };
    let kit = Kit::from_env(kernel);
    let disk = Disk::create(CYLINDERS);
    let disk2 = Disk::create(CYLINDERS);
    let export = disk.export();
    let backend = Backend::start_with_log(&disk.device(), "warn");
    let backend2 = Backend::start_with_log(
        &format!("{},devno={},flush=none", disk2.device(), DASD2.2),
        "warn",
    );
    let mut qemu_args = vec![
        "-chardev".to_owned(),
        format!(
            "socket,id=cs1,path={},reconnect-ms=100",
            backend2.socket().display()
        ),
        "-device".to_owned(),
        format!("vhost-user-subchannel,chardev=cs1,devno={}", DASD2.0),
    ];
    let mut busids = Vec::new();
    for (i, (devno, busid, cache, _)) in BASELINES.iter().enumerate() {
        let copy = export.with_extension(format!("virtio{i}"));
        std::fs::copy(&export, &copy).expect("copy the exported data area");
        qemu_args.extend([
            "-drive".to_owned(),
            format!(
                "file={},if=none,id=vd{i},format=raw,cache={cache}",
                copy.display()
            ),
            "-device".to_owned(),
            format!("virtio-blk-ccw,drive=vd{i},devno={devno}"),
        ]);
        busids.push(*busid);
    }
    let virtio = format!("vuc.virtio={}", busids.join(","));
    let dasds = format!("vuc.dasd={}", DASD2.1);
    let rounds = format!("vuc.rounds={ROUNDS}");
    let guest = Guest::boot(&BootSpec {
        kit: &kit,
        socket: backend.socket(),
        steps: &["modules", "online", "bench"],
        params: &[&virtio, &dasds, &rounds],
        qemu_args: &qemu_args,
    });
    let outcome = guest.finish(Duration::from_secs(1800));
    outcome.assert_ok();
    let backend_cpu = [cpu_time(backend.pid()), cpu_time(backend2.pid())];

    // Guest disk name -> label.
    let mut labels = BTreeMap::new();
    for fact in outcome.facts("bench-disk ") {
        let words: Vec<&str> = fact.split_whitespace().collect();
        let label = if words[1] == DASD_BUSID {
            DASD_PROGRAM
        } else if words[1] == DASD2.1 {
            DASD_NONE
        } else {
            BASELINES
                .iter()
                .find(|b| b.1 == words[1])
                .expect("a known bus id")
                .3
        };
        labels.insert(words[2].to_owned(), label);
    }
    let mut totals: BTreeMap<&str, Totals> = BTreeMap::new();
    // (round, label) -> (read MiB/s, write MiB/s)
    let mut per_round: BTreeMap<(u64, &str), (f64, f64)> = BTreeMap::new();
    println!("kernel {kernel}, {CYLINDERS} cylinders, dd bs=1M O_DIRECT, guest /proc/uptime");
    println!();
    println!("| round | disk | MiB | read MiB/s | write MiB/s |");
    println!("|---|---|---|---|---|");
    for fact in outcome.facts("bench ") {
        let number = |key| -> u64 {
            field(fact, key)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in '{fact}'"))
        };
        let name = field(fact, "disk").expect("disk");
        let label = *labels
            .get(name)
            .unwrap_or_else(|| panic!("disk {name} was not announced"));
        let (bytes, read_cs, write_cs) = (number("bytes"), number("read_cs"), number("write_cs"));
        let total = totals.entry(label).or_default();
        total.bytes += bytes;
        total.read_cs += read_cs;
        total.write_cs += write_cs;
        per_round.insert(
            (number("round"), label),
            (mib_per_s(bytes, read_cs), mib_per_s(bytes, write_cs)),
        );
        println!(
            "| {} | {label} | {} | {:.1} | {:.1} |",
            number("round"),
            bytes >> 20,
            mib_per_s(bytes, read_cs),
            mib_per_s(bytes, write_cs),
        );
    }
    let total = |label: &str| {
        totals
            .get(label)
            .unwrap_or_else(|| panic!("no results for {label}: {}", outcome.render()))
    };
    println!();
    println!(
        "| DASD (total read / write) | baseline (total read / write) | compares | read ratio: median of rounds (of totals) | write ratio: median of rounds (of totals) |"
    );
    println!("|---|---|---|---|---|");
    for (dasd_label, base_label, what) in PAIRS {
        let (dasd, base) = (total(dasd_label), total(base_label));
        let (mut reads, mut writes) = (Vec::new(), Vec::new());
        for round in 1..=u64::from(ROUNDS) {
            if let (Some(d), Some(b)) = (
                per_round.get(&(round, dasd_label)),
                per_round.get(&(round, base_label)),
            ) {
                reads.push(d.0 / b.0);
                writes.push(d.1 / b.1);
            }
        }
        println!(
            "| {dasd_label}: {:.1} / {:.1} MiB/s | {base_label}: {:.1} / {:.1} MiB/s | {what} | **{:.2}x** ({:.2}x) | **{:.2}x** ({:.2}x) |",
            dasd.read(),
            dasd.write(),
            base.read(),
            base.write(),
            median(&mut reads),
            dasd.read() / base.read(),
            median(&mut writes),
            dasd.write() / base.write(),
        );
    }
    println!();
    println!("goal: DASD >= 0.8x virtio-blk");
    println!(
        "backend CPU time for the whole run (boot, all rounds): flush=program {:.2?}, \
         flush=none {:.2?}; guest run {:.2?}",
        backend_cpu[0], backend_cpu[1], outcome.total
    );
}

/// The median of `values` (NaN when there are none).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// User plus system CPU time of process `pid` so far (/proc/PID/stat).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces), from field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf CLK_TCK");
    let per_second: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK");
    Duration::from_millis(ticks * 1000 / per_second)
}
