//! Sequential throughput of the backend's 3390 DASD against a
//! virtio-blk-ccw disk, both in the same real s390x guest run (Debian's
//! kernel under the patched QEMU with TCG): the DASD's partition and a
//! virtio disk holding a raw copy of that partition (`image export`), read
//! and written with `dd bs=1M` and O_DIRECT, alternating, three rounds.
//!
//! Run with `scripts/bench.sh guest` (it prepares QEMU and the guest kit),
//! or set VHOST_USER_CCW_QEMU and VHOST_USER_CCW_GUEST_6_12 (or
//! VHOST_USER_CCW_BENCH_KERNEL=6.1 and VHOST_USER_CCW_GUEST_6_1), then
//! `cargo build --release --bins && cargo bench -p vhost-user-ccw-tests --bench guest_throughput`.

use std::time::Duration;

use vhost_user_ccw_tests::Backend;
use vhost_user_ccw_tests::guest::{BootSpec, Disk, Guest, Kit, field};

/// 200 cylinders: 3000 tracks, 140 MiB of data area.
const CYLINDERS: u64 = 200;
const VIRTIO_BUSID: &str = "0.0.0300";
const VIRTIO_DEVNO: &str = "fe.0.0300";

#[derive(Debug, Default)]
struct Totals {
    bytes: u64,
    read_cs: u64,
    write_cs: u64,
}

impl Totals {
    fn mib_per_s(bytes: u64, cs: u64) -> f64 {
        // Centiseconds from the guest's /proc/uptime; bytes of whole runs.
        let mib = f64::from(u32::try_from(bytes >> 20).unwrap_or(u32::MAX));
        let seconds = f64::from(u32::try_from(cs.max(1)).unwrap_or(u32::MAX)) / 100.0;
        mib / seconds
    }

    fn read(&self) -> f64 {
        Self::mib_per_s(self.bytes, self.read_cs)
    }

    fn write(&self) -> f64 {
        Self::mib_per_s(self.bytes, self.write_cs)
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
    let copy = disk.export();
    let backend = Backend::start_with_log(&disk.device(), "warn");
    let qemu_args = vec![
        "-drive".to_owned(),
        format!("file={},if=none,id=vd0,format=raw", copy.display()),
        "-device".to_owned(),
        format!("virtio-blk-ccw,drive=vd0,devno={VIRTIO_DEVNO}"),
    ];
    let virtio = format!("vuc.virtio={VIRTIO_BUSID}");
    let guest = Guest::boot(&BootSpec {
        kit: &kit,
        socket: backend.socket(),
        steps: &["modules", "online", "bench"],
        params: &[&virtio],
        qemu_args: &qemu_args,
    });
    let outcome = guest.finish(Duration::from_secs(1800));
    outcome.assert_ok();
    let backend_cpu = cpu_time(backend.pid());

    let mut dasd = Totals::default();
    let mut virtio = Totals::default();
    println!("kernel {kernel}, {CYLINDERS} cylinders, dd bs=1M O_DIRECT, guest /proc/uptime");
    println!("| round | disk | MiB | read MiB/s | write MiB/s |");
    println!("|---|---|---|---|---|");
    for fact in outcome.facts("bench ") {
        let number = |key| -> u64 {
            field(fact, key)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in '{fact}'"))
        };
        let name = field(fact, "disk").expect("disk");
        let totals = if name.starts_with("dasd") {
            &mut dasd
        } else {
            &mut virtio
        };
        let (bytes, read_cs, write_cs) = (number("bytes"), number("read_cs"), number("write_cs"));
        totals.bytes += bytes;
        totals.read_cs += read_cs;
        totals.write_cs += write_cs;
        println!(
            "| {} | {name} | {} | {:.1} | {:.1} |",
            number("round"),
            bytes >> 20,
            Totals::mib_per_s(bytes, read_cs),
            Totals::mib_per_s(bytes, write_cs),
        );
    }
    assert!(dasd.bytes > 0 && virtio.bytes > 0, "{}", outcome.render());
    println!();
    println!("| | DASD MiB/s | virtio-blk MiB/s | ratio (goal >= 0.8) |");
    println!("|---|---|---|---|");
    println!(
        "| sequential read | {:.1} | {:.1} | **{:.2}x** |",
        dasd.read(),
        virtio.read(),
        dasd.read() / virtio.read()
    );
    println!(
        "| sequential write | {:.1} | {:.1} | **{:.2}x** |",
        dasd.write(),
        virtio.write(),
        dasd.write() / virtio.write()
    );
    println!();
    println!(
        "backend CPU time for the whole run (boot, DASD and virtio rounds): {backend_cpu:.2?}; \
         guest run {:.2?}",
        outcome.total
    );
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
