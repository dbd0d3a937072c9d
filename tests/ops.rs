//! Operations: the backend as an administrator deploys it. Counters on the
//! control socket, the seccomp filter and the namespace sandbox, socket
//! ownership, the per-instance file under real socket activation, and the
//! files `scripts/install.sh` places (units, QEMU descriptor, man page,
//! libvirt example) checked with the tools that consume them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vhost_user_ccw_frontend::connection::Connection;
use vhost_user_ccw_protocol::arch::{CcwFlags, Crw, StatusControl, SubchannelStatus};
use vhost_user_ccw_tests::{
    Backend, binary, control, put_ccw, run_one_ccw, start, succeeded, wait_for_path,
};

/// The emulated subchannel with its byte-buffer device.
const BUFFER_DEVICE: &str = "sim,device=buffer";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// WRITE 32 bytes, SEEK back to 0 (4 bytes), READ the 32 bytes: one START,
/// one final interruption, 68 bytes moved.
#[test]
fn counters_after_a_known_channel_program_match() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("control.sock");
    let backend = Backend::start_with_args(
        &format!("{BUFFER_DEVICE},size=32"),
        &["--control-socket", ctl.to_str().unwrap()],
    );
    wait_for_path(&ctl);
    let before = control(&ctl, "stats");
    assert_eq!(before["subchannels"][0]["requests"]["start"], 0);
    assert_eq!(before["subchannels"][0]["sessions"], 0);

    let mut conn = backend.connect();
    conn.write_ram(0x3000, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345")
        .unwrap();
    conn.write_ram(0x3100, &0u32.to_be_bytes()).unwrap();
    put_ccw(&conn, 0x1000, 0x01, CcwFlags::CC, 32, 0x3000); // WRITE 32
    put_ccw(&conn, 0x1008, 0x07, CcwFlags::CC, 4, 0x3100); // SEEK 0
    put_ccw(&conn, 0x1010, 0x02, CcwFlags::empty(), 32, 0x4000); // READ 32
    assert_eq!(conn.request(&start(1, 0x1000)).unwrap().cc, 0);
    match conn.wait_event(Duration::from_secs(5)).unwrap() {
        Some(vhost_user_ccw_protocol::wire::Event::Interrupt { tag: 1, irb }) => {
            assert!(irb.scsw.status_control.contains(StatusControl::PRIMARY));
            assert_eq!(irb.scsw.count, 0);
        }
        other => panic!("expected the interruption, got {other:?}"),
    }
    let mut back = [0u8; 32];
    conn.read_ram(0x4000, &mut back).unwrap();
    assert_eq!(&back, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");

    let stats = control(&ctl, "stats");
    let sub = &stats["subchannels"][0];
    assert_eq!(sub["socket"], backend.socket().to_str().unwrap());
    assert_eq!(sub["devno"], "0x0190");
    assert_eq!(sub["sessions"], 1);
    assert_eq!(sub["requests"]["start"], 1);
    assert_eq!(sub["requests"]["halt"], 0);
    assert_eq!(sub["requests"]["clear"], 0);
    assert_eq!(sub["interrupts"]["final"], 1);
    assert_eq!(sub["interrupts"]["intermediate"], 0);
    assert_eq!(sub["interrupts"]["unsolicited"], 0);
    assert_eq!(sub["bytes_moved"], 68);
    assert_eq!(sub["errors"]["check_status"], 0);
    assert_eq!(sub["errors"]["unit_exception"], 0);

    // A data area past the end of guest RAM: a program check, counted as
    // an error; nothing moves.
    let edge = u32::try_from(conn.ram_size() - 0x10).unwrap();
    put_ccw(&conn, 0x1000, 0x02, CcwFlags::empty(), 0x100, edge);
    assert_eq!(conn.request(&start(2, 0x1000)).unwrap().cc, 0);
    match conn.wait_event(Duration::from_secs(5)).unwrap() {
        Some(vhost_user_ccw_protocol::wire::Event::Interrupt { tag: 2, irb }) => {
            assert!(
                irb.scsw
                    .subchannel_status
                    .contains(SubchannelStatus::PROGRAM_CHECK)
            );
        }
        other => panic!("expected the program check, got {other:?}"),
    }
    let sub = &control(&ctl, "stats")["subchannels"][0];
    assert_eq!(sub["requests"]["start"], 2);
    assert_eq!(sub["interrupts"]["final"], 2);
    assert_eq!(sub["errors"]["check_status"], 1);
    assert_eq!(sub["bytes_moved"], 68);

    assert_eq!(
        control(&ctl, "help")["commands"],
        serde_json::json!([
            "stats",
            "help",
            "vary-path online|offline [N]",
            "remove-device [N]"
        ])
    );
    // Fault injection: a path event reaches the frontend as a channel report.
    assert_eq!(
        control(&ctl, "vary-path offline"),
        serde_json::json!({"ok": true})
    );
    match conn.wait_event(Duration::from_secs(5)).unwrap() {
        Some(vhost_user_ccw_protocol::wire::Event::ChannelReport(crw)) => {
            assert_eq!(crw.rsc, Crw::RSC_CHANNEL_PATH);
            assert_eq!(crw.erc, Crw::ERC_PERMANENT_ERROR_INITIALIZED);
        }
        other => panic!("expected a channel report, got {other:?}"),
    }
    assert_eq!(
        control(&ctl, "stats")["subchannels"][0]["channel_reports"],
        1
    );
    for (bad, says) in [
        ("vary-path sideways", "sideways"),
        ("remove-device 7", "no subchannel 7"),
        ("remove-device x", "'x'"),
    ] {
        let error = control(&ctl, bad);
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{bad}: {error}"
        );
    }
    let error = control(&ctl, "frobnicate");
    assert!(
        error["error"].as_str().unwrap().contains("frobnicate"),
        "{error}"
    );
}

fn spawn_backend(dir: &Path, args: &[&str]) -> (std::process::Child, PathBuf, PathBuf) {
    let socket = dir.join("ccw.sock");
    let log = dir.join("stderr.log");
    let child = Command::new(binary("vhost-user-ccw"))
        .arg("--socket-path")
        .arg(&socket)
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, socket, log)
}

/// A system call outside the allow-list after setup ends the process with
/// SIGSYS in kill and trap modes.
#[test]
fn seccomp_kill_and_trap_stop_a_forbidden_syscall_with_sigsys() {
    for mode in ["kill", "trap"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, _, log) =
            spawn_backend(dir.path(), &["--seccomp", mode, "--test-forbidden-syscall"]);
        let status = wait_exit(&mut child, Duration::from_secs(10));
        assert_eq!(
            status.signal(),
            Some(libc::SIGSYS),
            "{mode}: {status:?}\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("seccomp filter installed"), "{text}");
        assert!(!text.contains("forbidden system call returned"), "{text}");
    }
    // Without a filter the same call returns and the backend serves on.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, socket, log) = spawn_backend(
        dir.path(),
        &["--seccomp", "none", "--test-forbidden-syscall"],
    );
    wait_for_path(&socket);
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(child.try_wait(), Ok(None)));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("forbidden system call returned"), "{text}");
}

/// Log mode lets the call through (the kernel logs it) and the backend goes
/// on serving.
#[test]
fn seccomp_log_lets_the_call_through_and_service_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, socket, log) = spawn_backend(
        dir.path(),
        &[
            "--device",
            BUFFER_DEVICE,
            "--seccomp",
            "log",
            "--test-forbidden-syscall",
        ],
    );
    wait_for_path(&socket);
    let mut conn = Connection::connect(&socket, &Default::default()).unwrap();
    let irb = run_one_ccw(&mut conn, 1, 0x03, 0);
    assert!(irb.scsw.status_control.contains(StatusControl::PRIMARY));
    assert!(matches!(child.try_wait(), Ok(None)));
    drop(conn);
    let pid = child.id();
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("forbidden system call returned"), "{text}");
    // The kernel's record of it (SECCOMP_RET_LOG), where the kernel log is
    // readable here (it is for root).
    let record = format!(" pid={pid} ");
    let syscall = format!(" syscall={} ", libc::SYS_personality);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let Ok(out) = Command::new("dmesg").output() else {
            eprintln!("dmesg unavailable: the kernel's log record is not checked");
            break;
        };
        if !out.status.success() {
            eprintln!("dmesg not readable: the kernel's log record is not checked");
            break;
        }
        let kernel = String::from_utf8_lossy(&out.stdout);
        if kernel.lines().any(|l| {
            l.contains("type=1326")
                && l.contains(&record)
                && l.contains(&syscall)
                && l.contains("code=0x7ffc0000")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no seccomp log record for pid {pid}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A field of /proc/PID/status.
fn status_field(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("{name}: line in /proc/{pid}/status"))
}

fn seccomp_field(pid: u32) -> String {
    status_field(pid, "Seccomp")
}

/// Started as root (CI runs the tests as root), the backend gives up every
/// capability once set up and still serves; started as another user it
/// has none to give up.
#[test]
fn root_drops_every_capability_after_setup() {
    let ours = std::process::id();
    let root = status_field(ours, "Uid").split_whitespace().nth(1) == Some("0");
    let backend = Backend::start(BUFFER_DEVICE);
    let mut conn = backend.connect();
    conn.write_ram(0x2000, &[0x5a; 16]).unwrap();
    let irb = run_one_ccw(&mut conn, 1, 0x01, 16); // WRITE 16
    assert_eq!(irb.scsw.count, 0);
    let pid = backend.pid();
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().nth(1) == Some("0"),
        root,
        "same user as the test"
    );
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let value = status_field(pid, set);
        if root || set != "CapBnd" {
            assert_eq!(value, "0000000000000000", "{set}");
        }
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
}

/// Under the default filter (kill): channel programs on two connections,
/// then SIGTERM ends the backend promptly.
#[test]
fn normal_operation_under_the_default_filter() {
    let mut backend = Backend::start(BUFFER_DEVICE);
    for tag in 1..=2 {
        let mut conn = backend.connect();
        conn.write_ram(0x2000, &[0x5a; 16]).unwrap();
        let irb = run_one_ccw(&mut conn, tag, 0x01, 16); // WRITE 16
        assert_eq!(irb.scsw.count, 0);
        assert_eq!(irb.scsw.subchannel_status, SubchannelStatus::empty());
    }
    // Served, so set up and locked down (the filter goes on after the
    // socket listens, before the serving threads start).
    assert_eq!(seccomp_field(backend.pid()), "2", "filter mode");
    assert!(backend.is_running());
    sigterm(backend.pid());
    let status = backend.wait_exit(Duration::from_secs(2)).expect("exited");
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// `--sandbox namespace`: the backend serves from new namespaces and an
/// empty root directory, and goes away with its parent on SIGTERM.
#[test]
fn namespace_sandbox_serves_from_an_empty_root() {
    let mut backend = Backend::start_with_args(BUFFER_DEVICE, &["--sandbox", "namespace"]);
    let mut conn = backend.connect();
    let irb = run_one_ccw(&mut conn, 1, 0x03, 0);
    assert!(irb.scsw.status_control.contains(StatusControl::PRIMARY));
    drop(conn);
    let mut conn = backend.connect();
    run_one_ccw(&mut conn, 2, 0x03, 0);

    let served_by = children(backend.pid());
    assert_eq!(served_by.len(), 1, "one child in the PID namespace");
    let child = served_by[0];
    assert_eq!(seccomp_field(child), "2");
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{child}/root"))
        .unwrap()
        .collect();
    assert!(root.is_empty(), "the root directory is empty: {root:?}");
    for ns in ["mnt", "net", "ipc", "pid"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let theirs = std::fs::read_link(format!("/proc/{child}/ns/{ns}")).unwrap();
        assert_ne!(ours, theirs, "{ns} namespace");
    }
    drop(conn);
    sigterm(backend.pid());
    assert!(backend.wait_exit(Duration::from_secs(2)).is_some());
    let deadline = Instant::now() + Duration::from_secs(2);
    while Path::new(&format!("/proc/{child}")).exists() {
        // A zombie until its reaper collects it: gone means not running.
        let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        if state.contains(") Z") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sandboxed child outlived its parent"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `--socket-group`: the sockets the backend creates belong to the group,
/// mode 0660; an unknown group is a clear setup error.
#[test]
fn socket_group_gives_the_sockets_to_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("control.sock");
    let backend = Backend::start_with_args(
        BUFFER_DEVICE,
        &[
            "--socket-group",
            "65534",
            "--control-socket",
            ctl.to_str().unwrap(),
        ],
    );
    wait_for_path(&ctl);
    for socket in [backend.socket(), ctl.as_path()] {
        let meta = std::fs::metadata(socket).unwrap();
        assert_eq!(meta.gid(), 65534, "{}", socket.display());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    }
    let out = Command::new(binary("vhost-user-ccw"))
        .arg("--socket-path")
        .arg(dir.path().join("x.sock"))
        .args(["--socket-group", "no-such-group-here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--socket-group no-such-group-here: no such group")
    );
}

/// The unit files as shipped, with the binary path install.sh would write.
fn instance_units(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = binary("vhost-user-ccw");
    let mut out = Vec::new();
    for suffix in ["socket", "service"] {
        let text = std::fs::read_to_string(repo_file(&format!(
            "contrib/systemd/vhost-user-ccw@.{suffix}"
        )))
        .unwrap()
        .replace("/usr/local/bin/vhost-user-ccw", bin.to_str().unwrap());
        let path = dir.join(format!("vhost-user-ccw@vm1.{suffix}"));
        std::fs::write(&path, text).unwrap();
        out.push(path);
    }
    (out[0].clone(), out[1].clone())
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, service) = instance_units(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&socket)
        .arg(&service)
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (package systemd) is required");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The service reads the instance's file, and the socket is where the
    // libvirt example connects.
    let service = std::fs::read_to_string(&service).unwrap();
    assert!(service.contains("--config /etc/vhost-user-ccw/%i.conf"));
    let socket = std::fs::read_to_string(&socket).unwrap();
    assert!(socket.contains("ListenStream=/run/vhost-user-ccw/%i.sock"));
}

/// The instance's file under real socket activation, as the units run it:
/// connect, run a program, disconnect, reconnect; the counters saw both.
#[test]
fn socket_activated_instance_reads_its_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("vm1.sock");
    let ctl = dir.path().join("control.sock");
    let conf = dir.path().join("vm1.conf");
    std::fs::write(
        &conf,
        format!(
            "# test instance\ndevice = {BUFFER_DEVICE},devno=0x0200\ncontrol-socket = {}\nseccomp = kill\nlog-level = debug\n",
            ctl.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(binary("vhost-user-ccw"))
        .arg("--config")
        .arg(&conf)
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (package systemd) is required");
    wait_for_path(&socket);
    for tag in 1..=2 {
        let mut conn = Connection::connect(&socket, &Default::default()).unwrap();
        assert_eq!(conn.config().devno, 0x0200, "devno from the file");
        let irb = run_one_ccw(&mut conn, tag, 0x03, 0);
        assert!(irb.scsw.status_control.contains(StatusControl::PRIMARY));
    }
    wait_for_path(&ctl);
    let sub = &control(&ctl, "stats")["subchannels"][0];
    assert_eq!(sub["socket"], "fd 3");
    assert_eq!(sub["sessions"], 2);
    assert_eq!(sub["requests"]["start"], 2);
    sigterm(child.id());
    let status = wait_exit(&mut child, Duration::from_secs(2));
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

#[test]
fn a_bad_config_file_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(&conf, "device = sim\ncolour = red\n").unwrap();
    let out = Command::new(binary("vhost-user-ccw"))
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2: unknown key 'colour'", conf.display())),
        "{stderr}"
    );
}

fn print_capabilities() -> serde_json::Value {
    let out = Command::new(binary("vhost-user-ccw"))
        .arg("--print-capabilities")
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn man_page() -> String {
    let out = Command::new(binary("vhost-user-ccw"))
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// scripts/install.sh into a staging directory: binary, units, descriptor,
/// man page, sysusers entry; the descriptor agrees with
/// --print-capabilities and names the installed binary.
#[test]
fn install_places_everything_and_the_descriptor_agrees() {
    let stage = tempfile::tempdir().unwrap();
    let out = Command::new(repo_file("scripts/install.sh"))
        .arg("/opt/vuc")
        .env("DESTDIR", stage.path())
        .env("VHOST_USER_CCW_BIN", binary("vhost-user-ccw"))
        .output()
        .unwrap();
    succeeded(&out);
    let root = stage.path().join("opt/vuc");
    let bin = root.join("bin/vhost-user-ccw");
    assert!(std::fs::metadata(&bin).unwrap().permissions().mode() & 0o111 != 0);
    let descriptor: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("share/qemu/vhost-user/50-vhost-user-ccw.json")).unwrap(),
    )
    .unwrap();
    let capabilities = print_capabilities();
    assert_eq!(descriptor["type"], capabilities["type"]);
    assert_eq!(descriptor["features"], capabilities["features"]);
    assert_eq!(descriptor["binary"], "/opt/vuc/bin/vhost-user-ccw");
    let service =
        std::fs::read_to_string(root.join("lib/systemd/system/vhost-user-ccw@.service")).unwrap();
    assert!(service.contains("ExecStart=/opt/vuc/bin/vhost-user-ccw --config"));
    assert!(
        root.join("lib/systemd/system/vhost-user-ccw@.socket")
            .exists()
    );
    assert!(root.join("lib/sysusers.d/vhost-user-ccw.conf").exists());
    let man = std::fs::read_to_string(root.join("share/man/man1/vhost-user-ccw.1")).unwrap();
    assert_eq!(man, man_page());
}

/// The man page is generated from the clap definition; the copy in docs/
/// must be the current one, and it documents every option --help lists.
#[test]
fn man_page_matches_the_cli() {
    let man = man_page();
    let committed = std::fs::read_to_string(repo_file("docs/vhost-user-ccw.1")).unwrap();
    assert!(
        man == committed,
        "docs/vhost-user-ccw.1 is stale: run `target/debug/vhost-user-ccw man > docs/vhost-user-ccw.1`"
    );
    let help = Command::new(binary("vhost-user-ccw"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let options: Vec<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_alphanumeric()))
        .collect();
    assert!(options.contains(&"--seccomp"), "{help}");
    for option in options {
        // roff escapes the dashes.
        let escaped = option.replace('-', "\\-");
        assert!(
            man.contains(&escaped),
            "{option} is missing from the man page"
        );
    }
    assert!(!man.contains("test\\-forbidden\\-syscall"));
}

/// The libvirt example validates against libvirt's schema, uses the device
/// of the QEMU patch series, and connects where the socket unit listens.
#[test]
fn libvirt_example_validates_and_matches_the_units() {
    let xml = repo_file("contrib/libvirt/vm1-s390x.xml");
    let out = Command::new("virt-xml-validate")
        .arg(&xml)
        .arg("domain")
        .output()
        .expect("virt-xml-validate (package libvirt-clients) is required");
    succeeded(&out);
    let text = std::fs::read_to_string(&xml).unwrap();
    assert!(text.contains("<source type='memfd'/>"));
    assert!(text.contains("<access mode='shared'/>"));
    assert!(text.contains("path=/run/vhost-user-ccw/vm1.sock"));
    assert!(text.contains("-device'/>") && text.contains("'vhost-user-subchannel,chardev=dasd0"));
    let patch = std::fs::read_to_string(repo_file(
        "qemu-patches/0002-hw-s390x-add-the-vhost-user-subchannel-device.patch",
    ))
    .unwrap();
    assert!(patch.contains("#define TYPE_VHOST_USER_SUBCHANNEL \"vhost-user-subchannel\""));

    // A broken variant fails: the check is real.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.xml");
    std::fs::write(
        &bad,
        text.replace("<source type='memfd'/>", "<source type='bogus'/>"),
    )
    .unwrap();
    let out = Command::new("virt-xml-validate")
        .arg(&bad)
        .arg("domain")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// Without root the namespace sandbox takes a user namespace too: run as
/// nobody (from root through setpriv), it still serves.
#[test]
fn namespace_sandbox_works_unprivileged() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    // nobody must be able to create its socket here.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.path().join("ccw.sock");
    // Who we are: the effective uid on /proc/self/status's Uid line.
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    let mut command = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(binary("vhost-user-ccw"));
        c
    } else {
        Command::new(binary("vhost-user-ccw"))
    };
    let mut child = command
        .arg("--socket-path")
        .arg(&socket)
        .args(["--device", BUFFER_DEVICE, "--sandbox", "namespace"])
        .spawn()
        .unwrap();
    wait_for_path(&socket);
    let mut conn = Connection::connect(&socket, &Default::default()).unwrap();
    let irb = run_one_ccw(&mut conn, 1, 0x03, 0);
    assert!(irb.scsw.status_control.contains(StatusControl::PRIMARY));
    let served_by = children(child.id());
    assert_eq!(served_by.len(), 1);
    let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
    let theirs = std::fs::read_link(format!("/proc/{}/ns/user", served_by[0])).unwrap();
    assert_ne!(ours, theirs, "a user namespace of its own");
    drop(conn);
    let _ = child.kill();
    let _ = child.wait();
}

/// One instance file, two subchannels: each socket serves its own device,
/// and the counters list both.
#[test]
fn a_config_file_with_two_subchannels_serves_both() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let ctl = dir.path().join("control.sock");
    let conf = dir.path().join("two.conf");
    std::fs::write(
        &conf,
        format!(
            "socket-path = {}\ndevice = {BUFFER_DEVICE},devno=0x0100\nsocket-path = {}\ndevice = {BUFFER_DEVICE},devno=0x0200\ncontrol-socket = {}\n",
            a.display(),
            b.display(),
            ctl.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(binary("vhost-user-ccw"))
        .arg("--config")
        .arg(&conf)
        .spawn()
        .unwrap();
    for path in [&a, &b, &ctl] {
        wait_for_path(path);
    }
    let mut conn_a = Connection::connect(&a, &Default::default()).unwrap();
    let mut conn_b = Connection::connect(&b, &Default::default()).unwrap();
    assert_eq!(conn_a.config().devno, 0x0100);
    assert_eq!(conn_b.config().devno, 0x0200);
    run_one_ccw(&mut conn_b, 1, 0x03, 0);
    run_one_ccw(&mut conn_b, 2, 0x03, 0);
    run_one_ccw(&mut conn_a, 1, 0x03, 0);
    let stats = control(&ctl, "stats");
    let subs = stats["subchannels"].as_array().unwrap();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0]["devno"], "0x0100");
    assert_eq!(subs[0]["requests"]["start"], 1);
    assert_eq!(subs[1]["devno"], "0x0200");
    assert_eq!(subs[1]["requests"]["start"], 2);
    let _ = child.kill();
    let _ = child.wait();
}

/// Where namespaces are not permitted the namespace sandbox stops setup
/// with a clear error: here a user namespace whose mount-namespace limit
/// is 0 (unshare(1) makes it, as root inside it).
#[test]
fn namespace_sandbox_not_permitted_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let script = "echo 0 > /proc/sys/user/max_mnt_namespaces && exec \"$0\" --socket-path \"$1\" --sandbox namespace";
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c", script])
        .arg(binary("vhost-user-ccw"))
        .arg(dir.path().join("ccw.sock"))
        .output()
        .expect("unshare (package util-linux)");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("vhost-user-ccw: --sandbox namespace: unshare failed")
            && stderr.contains("use --sandbox none"),
        "{stderr}"
    );
}
