//! Debian's s390x Linux kernels (6.1 and 6.12) as real guests of the
//! patched QEMU under TCG, with the backend's subchannel attached through
//! the vhost-user-subchannel device and nothing else.
//!
//! The kits come from scripts/guest-kit.sh (scripts/test.sh prepares them);
//! a missing kit fails the test. The guest's /init (scripts/guest-init.sh)
//! runs the steps each test names and reports `@@VUC` facts on the console,
//! which the tests check, together with the image on the host.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vhost_user_ccw_tests::guest::{BootSpec, DASD_BUSID, Disk, Guest, Kit, Outcome, field, sha256};
use vhost_user_ccw_tests::{Backend, succeeded};

/// The buffer device of the `sim` host: SENSE ID answers control unit
/// 0x5000 model 1, device 0x5001 model 1, and no Linux driver claims it.
/// With the 3390 DASD model this spec becomes "sim,device=buffer".
const BUFFER_DEVICE: &str = "sim,device=buffer";

/// Upper bound for one guest run, from QEMU's start to its exit. A boot to
/// /init takes about 3 s under TCG; the steps with I/O take longer.
const RUN: Duration = Duration::from_secs(600);

/// Size of the test DASD: 50 cylinders × 15 tracks × 12 blocks of 4 KiB
/// (35 MiB), so that a pattern over the whole disk stays quick under TCG.
const CYLINDERS: u64 = 50;

fn run(kit: &Kit, backend: &Backend, steps: &[&str]) -> Outcome {
    let guest = Guest::boot(&BootSpec {
        kit,
        socket: backend.socket(),
        steps,
        params: &[],
        qemu_args: &[],
    });
    let outcome = guest.finish(RUN);
    outcome.assert_ok();
    outcome
}

fn buffer_device_appears(kernel: &'static str) {
    let kit = Kit::from_env(kernel);
    let backend = Backend::start(BUFFER_DEVICE);
    let outcome = run(&kit, &backend, &["probe", "modules", "probe"]);
    // The same device before and after the DASD drivers are loaded: the
    // only ccw device, identified by SENSE ID, and not claimed by them.
    let expected = format!("ccw {DASD_BUSID} cutype=5000/01 devtype=5001/01 online=0 driver=");
    assert_eq!(
        outcome.facts("ccw "),
        [expected.as_str(), expected.as_str()],
        "{}",
        outcome.render()
    );
    for module in ["dasd_mod", "dasd_eckd_mod", "ext4"] {
        outcome.fact(&format!("modprobe {module} ok"));
    }
    assert!(
        outcome
            .fact("kernel ")
            .starts_with(&format!("kernel {kernel}.")),
        "{}",
        outcome.render()
    );
}

#[test]
fn buffer_device_appears_in_the_6_1_guest() {
    buffer_device_appears("6.1");
}

#[test]
fn buffer_device_appears_in_the_6_12_guest() {
    buffer_device_appears("6.12");
}

// ---------------------------------------------------------------------------
// The 3390 DASD: online, whole-disk pattern, ext2, re-boot, backend restarts.
// ---------------------------------------------------------------------------

/// Checks the ccw identity, the dasd fact and the kernel messages of a run
/// that set the DASD online.
fn assert_dasd_online(outcome: &Outcome, disk: &Disk) {
    // The DASD is the guest's only ccw device.
    let ccw = outcome.fact("ccw ");
    assert!(ccw.starts_with(&format!("ccw {DASD_BUSID} ")), "{ccw}");
    let cutype = field(ccw, "cutype").expect("cutype");
    let devtype = field(ccw, "devtype").expect("devtype");
    assert!(cutype.starts_with("3990/"), "control unit {cutype}");
    assert!(devtype.starts_with("3390/"), "device type {devtype}");
    let dasd = outcome.fact(&format!("dasd {DASD_BUSID} "));
    // Linux sizes the disk in 512-byte sectors: 15 tracks a cylinder, 12
    // blocks of 4 KiB a track; the partition is the data area after the
    // two label tracks of the compatible disk layout.
    let sectors: u64 = field(dasd, "sectors").expect("sectors").parse().unwrap();
    assert_eq!(sectors, CYLINDERS * 15 * 12 * 8, "{dasd}");
    let part: u64 = field(dasd, "part_sectors").expect("part").parse().unwrap();
    assert_eq!(part * 512, disk.data_bytes(), "{dasd}");
    assert_eq!(field(dasd, "status"), Some("online"), "{dasd}");
    let complaints: Vec<&str> = outcome
        .dmesg()
        .into_iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("dasd")
                && ["error", "fail", "unable", "sense", "not operational"]
                    .iter()
                    .any(|w| l.contains(w))
        })
        .collect();
    assert!(
        complaints.is_empty(),
        "DASD complaints in dmesg: {complaints:#?}"
    );
}

/// name -> (size, sha256) from the guest's "file" facts.
fn files(outcome: &Outcome) -> BTreeMap<String, (u64, String)> {
    outcome
        .facts("file ")
        .into_iter()
        .map(|f| {
            let name = f.split_whitespace().nth(1).expect("file name").to_owned();
            let size = field(f, "size").expect("size").parse().expect("size");
            let sha = field(f, "sha256").expect("sha256").to_owned();
            (name, (size, sha))
        })
        .collect()
}

fn debugfs(raw: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(raw)
        .output()
        .expect("run debugfs (e2fsprogs)");
    succeeded(&out)
}

fn dasd_end_to_end(kernel: &'static str) {
    let kit = Kit::from_env(kernel);
    let disk = Disk::create(CYLINDERS);
    let backend = Backend::start(&disk.device());

    // Boot 1: online, a pattern over the whole partition, read back in the
    // guest; the image's data area holds exactly that pattern.
    let first = run(&kit, &backend, &["probe", "modules", "online", "pattern"]);
    assert_dasd_online(&first, &disk);
    let pattern = first.fact("pattern ");
    assert_eq!(
        field(pattern, "bytes").and_then(|b| b.parse::<u64>().ok()),
        Some(disk.data_bytes()),
        "{pattern}"
    );
    assert_eq!(
        Some(sha256(&disk.export()).as_str()),
        field(pattern, "sha256"),
        "the exported data area is not what the guest wrote"
    );

    // Boot 2: ext2 with files; on the host e2fsck finds it clean and
    // debugfs reads the same files.
    let second = run(&kit, &backend, &["probe", "modules", "online", "mkfs"]);
    assert_dasd_online(&second, &disk);
    let written = files(&second);
    assert_eq!(written.len(), 3, "{}", second.render());
    let raw = disk.export();
    let fsck = Command::new("e2fsck")
        .args(["-f", "-n"])
        .arg(&raw)
        .output()
        .expect("run e2fsck (e2fsprogs)");
    succeeded(&fsck);
    let out_dir = tempfile::tempdir().expect("tempdir");
    for (name, (size, sha)) in &written {
        let dumped = out_dir.path().join(name.replace('/', "_"));
        debugfs(&raw, &format!("dump /{name} {}", dumped.display()));
        assert_eq!(std::fs::metadata(&dumped).unwrap().len(), *size, "{name}");
        assert_eq!(&sha256(&dumped), sha, "{name} differs on the host");
    }
    assert!(debugfs(&raw, "stat /hello.txt").contains("Type: regular"));

    // Boot 3: the files read back in a new guest.
    let third = run(&kit, &backend, &["probe", "modules", "online", "verify"]);
    assert_dasd_online(&third, &disk);
    assert_eq!(files(&third), written);
}

#[test]
fn dasd_end_to_end_in_the_6_1_guest() {
    dasd_end_to_end("6.1");
}

#[test]
fn dasd_end_to_end_in_the_6_12_guest() {
    dasd_end_to_end("6.12");
}

/// The first 16 bytes of MiB `index` of the data area, as the guest's
/// write_mib put them.
fn mib_header(raw: &[u8], index: usize) -> &[u8] {
    &raw[index << 20..(index << 20) + 16]
}

fn restart_while_idle(kernel: &'static str) {
    let kit = Kit::from_env(kernel);
    let disk = Disk::create(CYLINDERS);
    let device = disk.device();
    let mut first = Backend::start(&device);
    let socket = first.socket().to_path_buf();
    let mut guest = Guest::boot(&BootSpec {
        kit: &kit,
        socket: &socket,
        steps: &["modules", "online", "hold"],
        params: &[],
        qemu_args: &[],
    });
    guest.wait_for("@@VUC-WAIT restart", RUN);
    first.kill();
    let _second = Backend::start_at(&socket, &device);
    // QEMU reconnects within its reconnect-ms (100 ms); the guest's next
    // I/O goes to the new backend.
    guest.wait_for(
        "vhost-user-subchannel: backend reconnected",
        Duration::from_secs(30),
    );
    guest.send_line("go");
    let outcome = guest.finish(RUN);
    outcome.assert_ok();
    outcome.fact("resumed ");
    let raw = std::fs::read(disk.export()).expect("read the export");
    assert_eq!(mib_header(&raw, 0), b"VUC-MIB-00000000");
    assert_eq!(mib_header(&raw, 1), b"VUC-MIB-00000001");
}

#[test]
fn dasd_survives_a_backend_restart_while_idle_6_1() {
    restart_while_idle("6.1");
}

#[test]
fn dasd_survives_a_backend_restart_while_idle_6_12() {
    restart_while_idle("6.12");
}

fn restart_during_io(kernel: &'static str) {
    const MIB: usize = 16;
    let kit = Kit::from_env(kernel);
    let disk = Disk::create(CYLINDERS);
    let device = disk.device();
    let mut first = Backend::start(&device);
    let socket = first.socket().to_path_buf();
    let mib = format!("vuc.mib={MIB}");
    let mut guest = Guest::boot(&BootSpec {
        kit: &kit,
        socket: &socket,
        steps: &["modules", "online", "fault-io"],
        params: &[&mib],
        qemu_args: &[],
    });
    // The guest keeps writing while the backend is down and comes back.
    guest.wait_for("@@VUC-WAIT restart-now", RUN);
    first.kill();
    std::thread::sleep(Duration::from_millis(300));
    let _second = Backend::start_at(&socket, &device);
    let outcome = guest.finish(RUN);
    // The guest verified every MiB whose write it saw succeed ("lost=0"
    // or the run fails); the driver may report errors for the others.
    outcome.assert_ok();
    // The backend went away while the guest's write loop was still running.
    let position = |needle: &str| {
        outcome
            .console
            .iter()
            .position(|l| l.text.contains(needle))
            .unwrap_or_else(|| panic!("no '{needle}' on the console:\n{}", outcome.render()))
    };
    assert!(
        position("backend disconnected") < position("@@VUC fault-io "),
        "the restart missed the I/O:\n{}",
        outcome.render()
    );
    let summary = outcome.fact("fault-io ");
    assert_eq!(field(summary, "lost"), Some("0"), "{summary}");
    let failed: Vec<usize> = outcome
        .facts("write-error ")
        .iter()
        .filter_map(|f| field(f, "mib")?.parse().ok())
        .collect();
    let raw = std::fs::read(disk.export()).expect("read the export");
    for index in (0..MIB).filter(|i| !failed.contains(i)) {
        assert_eq!(
            mib_header(&raw, index),
            format!("VUC-MIB-{index:08}").as_bytes(),
            "acknowledged MiB {index} is not in the image"
        );
    }
}

#[test]
fn dasd_survives_a_backend_restart_during_io_6_1() {
    restart_during_io("6.1");
}

#[test]
fn dasd_survives_a_backend_restart_during_io_6_12() {
    restart_during_io("6.12");
}
