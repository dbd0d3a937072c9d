//! End to end over the real socket: the backend binary with a `sim` device,
//! driven by the frontend library exactly as QEMU's device drives it.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo};
use vhost_user_ccw_frontend::connection::Connection;
use vhost_user_ccw_protocol::arch::{
    CcwFlags, DeviceStatus, FunctionControl, StatusControl, SubchannelStatus,
};
use vhost_user_ccw_protocol::wire::{
    CAP_FORMAT0_CCW, CAP_HALT_CLEAR, CAP_IDAW_FORMAT1, CAP_IDAW_FORMAT2, CONTROL_WINDOW_BASE,
    DEVICE_FEATURES, Event, ProgramErrorCode, Request, RequestType, ResponseStatus,
};
use vhost_user_ccw_tests::{Backend, binary, put_ccw, start};

const WAIT: Duration = Duration::from_secs(5);

fn read(conn: &Connection, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    conn.read_ram(addr, &mut buf).unwrap();
    buf
}

fn interrupt(conn: &mut Connection) -> (u64, vhost_user_ccw_protocol::arch::Irb) {
    match conn.wait_event(WAIT).unwrap() {
        Some(Event::Interrupt { tag, irb }) => (tag, irb),
        other => panic!("expected an I/O interrupt, got {other:?}"),
    }
}

fn final_status() -> StatusControl {
    StatusControl::PRIMARY | StatusControl::SECONDARY | StatusControl::STATUS_PENDING
}

#[test]
fn sense_id_lands_the_device_identity_in_guest_memory() {
    let backend = Backend::start("sim,device=buffer,devno=0x4711,schno=5");
    let mut conn = backend.connect();
    let config = conn.config().clone();
    assert_eq!(config.devno, 0x4711);
    assert_eq!(config.schno, 5);
    assert_eq!(config.schib.pmcw.pim, 0x80);
    assert_eq!(config.schib.pmcw.chpid[0], 0x40);
    assert_eq!(config.sense_id.cu_type, 0x5000);
    assert_eq!(config.version, 1);
    assert_eq!(
        config.capabilities,
        CAP_FORMAT0_CCW | CAP_IDAW_FORMAT1 | CAP_IDAW_FORMAT2 | CAP_HALT_CLEAR
    );

    conn.write_ram(0x2000, &[0xaa; 40]).unwrap();
    put_ccw(&conn, 0x1000, 0xe4, CcwFlags::SLI, 40, 0x2000);
    let resp = conn.request(&start(1, 0x1000)).unwrap();
    assert_eq!((resp.status, resp.cc), (ResponseStatus::Ok, 0));
    let (tag, irb) = interrupt(&mut conn);
    assert_eq!(tag, 1);
    assert_eq!(irb.scsw.function_control, FunctionControl::START);
    assert_eq!(irb.scsw.status_control, final_status());
    assert_eq!(
        irb.scsw.device_status,
        DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END
    );
    assert_eq!(irb.scsw.subchannel_status, SubchannelStatus::empty());
    assert_eq!(irb.scsw.cpa, 0x1008);
    assert_eq!(irb.scsw.count, 28, "12 of 40 bytes transferred");
    let data = read(&conn, 0x2000, 40);
    assert_eq!(
        &data[..12],
        &[
            0xff, 0x50, 0x00, 0x01, 0x50, 0x01, 0x01, 0x00, 0x40, 0xfa, 0x00, 0x80
        ]
    );
    assert_eq!(
        &data[12..],
        &[0xaa; 28],
        "bytes past the transfer untouched"
    );
}

#[test]
fn chained_write_seek_read_moves_data_with_residual_counts() {
    let backend = Backend::start("sim,device=buffer,size=32");
    let mut conn = backend.connect();
    conn.write_ram(0x3000, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345")
        .unwrap();
    conn.write_ram(0x3100, &20u32.to_be_bytes()).unwrap();
    conn.write_ram(0x4000, &[0xee; 16]).unwrap();
    conn.write_ram(0x4100, &[0xee; 32]).unwrap();
    put_ccw(&conn, 0x1000, 0x01, CcwFlags::CC, 32, 0x3000); // WRITE 32
    put_ccw(&conn, 0x1008, 0x07, CcwFlags::CC, 4, 0x3100); // SEEK 20
    put_ccw(&conn, 0x1010, 0x02, CcwFlags::CD, 6, 0x4000); // READ 6, data chained
    put_ccw(&conn, 0x1018, 0x02, CcwFlags::SLI, 20, 0x4100); // ... 20 more, SLI
    assert_eq!(conn.request(&start(9, 0x1000)).unwrap().cc, 0);
    let (tag, irb) = interrupt(&mut conn);
    assert_eq!(tag, 9);
    assert_eq!(irb.scsw.status_control, final_status());
    assert_eq!(irb.scsw.subchannel_status, SubchannelStatus::empty());
    assert_eq!(irb.scsw.cpa, 0x1020);
    assert_eq!(
        irb.scsw.count, 14,
        "12 bytes left after position 20: 6 + 6 of 26"
    );
    assert_eq!(read(&conn, 0x4000, 8), b"UVWXYZ\xee\xee");
    assert_eq!(&read(&conn, 0x4100, 8), b"012345\xee\xee");

    // Without SLI the short transfer is an incorrect length.
    conn.write_ram(0x3100, &28u32.to_be_bytes()).unwrap();
    put_ccw(&conn, 0x1000, 0x07, CcwFlags::CC, 4, 0x3100);
    put_ccw(&conn, 0x1008, 0x02, CcwFlags::empty(), 8, 0x4000);
    assert_eq!(conn.request(&start(10, 0x1000)).unwrap().cc, 0);
    let (_, irb) = interrupt(&mut conn);
    assert_eq!(
        irb.scsw.subchannel_status,
        SubchannelStatus::INCORRECT_LENGTH
    );
    assert!(irb.scsw.status_control.contains(StatusControl::ALERT));
    assert_eq!(irb.scsw.count, 4);
    assert_eq!(&read(&conn, 0x4000, 4), b"2345");
}

/// A data area outside guest RAM is a program error: the channel runs the
/// CCWs before it and ends with a channel-program check there; guest memory
/// is never written outside the areas of the CCWs that ran.
#[test]
fn program_outside_guest_ram_ends_in_a_program_check_and_memory_untouched() {
    let backend = Backend::start("sim,device=buffer");
    let mut conn = backend.connect();
    let ram = conn.ram_size();
    let edge = ram - 0x80;
    conn.write_ram(edge, &[0x5a; 0x80]).unwrap();
    conn.write_ram(0x2000, &[0xee; 12]).unwrap();
    // SENSE ID into RAM, then a READ whose data area runs 0x80 bytes past
    // the end of guest RAM.
    put_ccw(
        &conn,
        0x1000,
        0xe4,
        CcwFlags::CC | CcwFlags::SLI,
        12,
        0x2000,
    );
    put_ccw(
        &conn,
        0x1008,
        0x02,
        CcwFlags::empty(),
        0x100,
        u32::try_from(edge).unwrap(),
    );
    let resp = conn.request(&start(1, 0x1000)).unwrap();
    assert_eq!((resp.status, resp.cc), (ResponseStatus::Ok, 0));
    let (tag, irb) = interrupt(&mut conn);
    assert_eq!(tag, 1);
    assert_eq!(irb.scsw.subchannel_status, SubchannelStatus::PROGRAM_CHECK);
    assert_eq!(irb.scsw.cpa, 0x1010, "one past the CCW in error");
    assert!(irb.scsw.status_control.contains(StatusControl::ALERT));
    assert_eq!(read(&conn, 0x2000, 1), [0xff], "the CCW before it ran");
    assert_eq!(read(&conn, edge, 0x80), vec![0x5a; 0x80], "nothing written");
    // The channel-program address itself outside RAM.
    assert_eq!(conn.request(&start(2, 0x7fff_0000)).unwrap().cc, 0);
    let (_, irb) = interrupt(&mut conn);
    assert_eq!(irb.scsw.subchannel_status, SubchannelStatus::PROGRAM_CHECK);
    assert_eq!(irb.scsw.cpa, 0x7fff_0008);
    // Facilities the backend does not implement are refused up front.
    let mut request = start(3, 0x1000);
    request.orb.midaw = true;
    let resp = conn.request(&request).unwrap();
    assert_eq!(resp.status, ResponseStatus::UnitException);
    assert_eq!(resp.error, ProgramErrorCode::Unsupported as u32);
    assert!(
        conn.wait_event(Duration::from_millis(200))
            .unwrap()
            .is_none()
    );
    // The subchannel is still usable.
    put_ccw(&conn, 0x1000, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(conn.request(&start(4, 0x1000)).unwrap().cc, 0);
    assert_eq!(interrupt(&mut conn).0, 4);
}

#[test]
fn halt_clear_and_store_report_condition_codes() {
    let backend = Backend::start("sim,device=buffer,latency-us=20000");
    let mut conn = backend.connect();
    for i in 0..50u64 {
        put_ccw(&conn, 0x1000 + 8 * i, 0x03, CcwFlags::CC, 0, 0);
    }
    put_ccw(&conn, 0x1000 + 8 * 50, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(conn.request(&start(1, 0x1000)).unwrap().cc, 0);
    assert_eq!(conn.request(&start(2, 0x1000)).unwrap().cc, 2, "busy");
    let store = conn.request(&Request::new(RequestType::Store, 3)).unwrap();
    assert_eq!(store.cc, 0);
    assert!(store.schib.pmcw.enabled);
    assert!(
        store
            .schib
            .scsw
            .function_control
            .contains(FunctionControl::START)
    );
    assert_eq!(
        conn.request(&Request::new(RequestType::Halt, 4))
            .unwrap()
            .cc,
        0
    );
    let (tag, irb) = interrupt(&mut conn);
    assert_eq!(tag, 4);
    assert_eq!(
        irb.scsw.function_control,
        FunctionControl::START | FunctionControl::HALT
    );
    assert!(irb.scsw.cpa > 0x1000 && irb.scsw.cpa < 0x1000 + 8 * 51);

    assert_eq!(conn.request(&start(5, 0x1000)).unwrap().cc, 0);
    assert_eq!(
        conn.request(&Request::new(RequestType::Clear, 6))
            .unwrap()
            .cc,
        0
    );
    let (tag, irb) = interrupt(&mut conn);
    assert_eq!(tag, 6);
    assert_eq!(irb.scsw.function_control, FunctionControl::CLEAR);
    let store = conn.request(&Request::new(RequestType::Store, 7)).unwrap();
    assert_eq!(store.schib.pmcw.lpum, 0);
    assert_eq!(store.schib.pmcw.pom, 0xff);
}

#[test]
fn disconnect_mid_io_then_a_new_connection_starts_clean() {
    let backend = Backend::start("sim,device=buffer,latency-us=50000");
    {
        let mut conn = backend.connect();
        for i in 0..100u64 {
            put_ccw(&conn, 0x1000 + 8 * i, 0x03, CcwFlags::CC, 0, 0);
        }
        assert_eq!(conn.request(&start(1, 0x1000)).unwrap().cc, 0);
        // Dropping the connection closes the socket with the program running.
    }
    let mut conn = backend.connect();
    let store = conn.request(&Request::new(RequestType::Store, 1)).unwrap();
    assert_eq!(store.cc, 0);
    assert!(store.schib.scsw.function_control.is_empty(), "quiesced");
    put_ccw(&conn, 0x1000, 0xe4, CcwFlags::SLI, 40, 0x2000);
    assert_eq!(conn.request(&start(2, 0x1000)).unwrap().cc, 0);
    let (tag, irb) = interrupt(&mut conn);
    assert_eq!(tag, 2, "only the new session's interrupt arrives");
    assert_eq!(irb.scsw.cpa, 0x1008);
    assert!(
        conn.wait_event(Duration::from_millis(200))
            .unwrap()
            .is_none()
    );
}

#[test]
fn malformed_requests_get_bad_request() {
    let backend = Backend::start("sim,device=buffer");
    let mut conn = backend.connect();
    // Unknown request type.
    let mut bytes = Request::new(RequestType::Halt, 1).encode();
    bytes[0] = 0x77;
    assert_eq!(
        conn.request_raw(&bytes).unwrap().status,
        ResponseStatus::BadRequest
    );
    // Truncated START.
    let bytes = start(2, 0x1000).encode();
    assert_eq!(
        conn.request_raw(&bytes[..20]).unwrap().status,
        ResponseStatus::BadRequest
    );
    // Empty element.
    assert_eq!(
        conn.request_raw(&[]).unwrap().status,
        ResponseStatus::BadRequest
    );
    // An ORB with reserved bits set.
    let mut bytes = start(3, 0x1000).encode();
    bytes[16 + 7] |= 0x3e;
    assert_eq!(
        conn.request_raw(&bytes).unwrap().status,
        ResponseStatus::BadRequest
    );
    // The session still works.
    put_ccw(&conn, 0x1000, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(conn.request(&start(4, 0x1000)).unwrap().cc, 0);
    assert_eq!(interrupt(&mut conn).0, 4);
}

#[test]
fn garbage_on_the_socket_ends_only_that_connection() {
    let mut backend = Backend::start("sim,device=buffer");
    for garbage in [
        &[0xffu8; 7][..],
        &[0x01, 0, 0, 0, 0x01, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f],
        &[0u8; 4096],
    ] {
        let mut stream = UnixStream::connect(backend.socket()).unwrap();
        let _ = stream.write_all(garbage);
        drop(stream);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(backend.is_running());
    let mut conn = backend.connect();
    put_ccw(&conn, 0x1000, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(conn.request(&start(1, 0x1000)).unwrap().cc, 0);
    assert_eq!(interrupt(&mut conn).0, 1);
}

/// Handshake up to the memory table on a raw vhost-user connection.
fn raw_frontend(backend: &Backend) -> Frontend {
    let mut frontend = Frontend::connect(backend.socket(), 2).unwrap();
    frontend.set_owner().unwrap();
    let features = frontend.get_features().unwrap();
    let protocol = frontend.get_protocol_features().unwrap();
    frontend
        .set_protocol_features(protocol & VhostUserProtocolFeatures::REPLY_ACK)
        .unwrap();
    frontend.set_features(features & DEVICE_FEATURES).unwrap();
    frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    frontend
}

fn memfd(size: u64) -> std::fs::File {
    let file = tempfile::tempfile().unwrap();
    file.set_len(size).unwrap();
    file
}

#[test]
fn hostile_memory_tables_are_refused_without_a_crash() {
    let mut backend = Backend::start("sim,device=buffer");
    let file = memfd(0x10_0000);
    let map = vec![0u8; 0x20_0000];
    let cases = [
        // Region larger than its file.
        (0u64, 0x20_0000u64, 0u64),
        // Offset pushing the region past the end of its file.
        (0, 0x10_0000, 0x1000),
        // Region straddling the control window.
        (CONTROL_WINDOW_BASE - 0x1000, 0x2000, 0),
    ];
    for (gpa, size, offset) in cases {
        let frontend = raw_frontend(&backend);
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: u64::try_from(map.as_ptr().addr()).unwrap(),
            mmap_offset: offset,
            mmap_handle: file.as_raw_fd(),
        };
        let result = frontend.set_mem_table(&[region]);
        assert!(
            result.is_err(),
            "table {gpa:#x}+{size:#x}@{offset:#x} accepted"
        );
        drop(frontend);
        assert!(
            backend.is_running(),
            "backend died on table {gpa:#x}+{size:#x}"
        );
    }
    let mut conn = backend.connect();
    put_ccw(&conn, 0x1000, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(conn.request(&start(1, 0x1000)).unwrap().cc, 0);
    assert_eq!(interrupt(&mut conn).0, 1);
}

#[test]
fn print_capabilities_is_vhost_user_json() {
    let out = std::process::Command::new(binary("vhost-user-ccw"))
        .arg("--print-capabilities")
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["type"], "ccw");
    assert!(json["features"].is_array());
}

#[test]
fn setup_failures_exit_nonzero_with_a_clear_message() {
    let run = |args: &[&str]| {
        std::process::Command::new(binary("vhost-user-ccw"))
            .args(args)
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--socket-path"));
    let out = run(&["--socket-path", "/nonexistent-dir/x.sock"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir/x.sock"));
    let out = run(&[
        "--socket-path",
        "/tmp/x.sock",
        "--device",
        "sim,device=buffer,size=lots",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("size"));
    let out = run(&[
        "--socket-path",
        "/tmp/x1.sock",
        "--socket-path",
        "/tmp/x2.sock",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("one --device per socket"));
    let out = run(&["--fd", "57"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fd 57"));
}

#[test]
fn sigterm_stops_the_backend_promptly() {
    let mut backend = Backend::start("sim,device=buffer");
    let _conn = backend.connect();
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(backend.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        backend.wait_exit(Duration::from_secs(2)).is_some(),
        "still running after SIGTERM"
    );
}

/// Runs `systemd-socket-activate -l SOCKET vhost-user-ccw ARGS…` (the real
/// LISTEN_FDS/LISTEN_PID protocol, no PID 1 needed) and does two sessions.
fn activated_sessions(extra_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    let mut child = std::process::Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(binary("vhost-user-ccw"))
        .args(extra_args)
        .spawn()
        .expect("systemd-socket-activate (package systemd) is required");
    let deadline = std::time::Instant::now() + WAIT;
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "no activation socket");
        std::thread::sleep(Duration::from_millis(5));
    }
    for tag in 1..=2 {
        let mut conn = Connection::connect(&socket, &Default::default()).unwrap();
        put_ccw(&conn, 0x1000, 0xe4, CcwFlags::SLI, 40, 0x2000);
        assert_eq!(conn.request(&start(tag, 0x1000)).unwrap().cc, 0);
        let (got, irb) = interrupt(&mut conn);
        assert_eq!(got, tag);
        assert_eq!(irb.scsw.count, 28);
        assert_eq!(read(&conn, 0x2000, 1), [0xff]);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn socket_activation_with_listen_fds() {
    activated_sessions(&["--device", "sim,device=buffer"]);
}

#[test]
fn inherited_listening_fd() {
    activated_sessions(&["--fd", "3"]);
}

#[test]
fn reset_device_quiesces_the_subchannel_and_features_reopen_it() {
    let backend = Backend::start("sim,device=buffer,latency-us=50000");
    let mut conn = backend.connect();
    for i in 0..100u64 {
        put_ccw(&conn, 0x1000 + 8 * i, 0x03, CcwFlags::CC, 0, 0);
    }
    assert_eq!(conn.request(&start(1, 0x1000)).unwrap().cc, 0);
    conn.reset_device().unwrap();
    // Reopen on the same connection: features, then the rings again.
    let features = conn.frontend().get_features().unwrap();
    conn.frontend()
        .set_features(features & DEVICE_FEATURES)
        .unwrap();
    for queue in 0..2 {
        conn.frontend().set_vring_enable(queue, true).unwrap();
    }
    let store = conn.request(&Request::new(RequestType::Store, 2)).unwrap();
    assert_eq!(store.cc, 0);
    assert!(store.schib.pmcw.enabled, "enabled again by SET_FEATURES");
    assert!(
        store.schib.scsw.function_control.is_empty(),
        "the START was quiesced"
    );
    assert!(
        conn.wait_event(Duration::from_millis(300))
            .unwrap()
            .is_none(),
        "the quiesced program's interruption is never delivered"
    );
    put_ccw(&conn, 0x1000, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(conn.request(&start(3, 0x1000)).unwrap().cc, 0);
    assert_eq!(interrupt(&mut conn).0, 3);
}

/// One process, two sockets, two subchannels: each has its own sessions and
/// state machine, and trouble on one never reaches the other.
#[test]
fn two_subchannels_in_one_process_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let mut child = std::process::Command::new(binary("vhost-user-ccw"))
        .arg("--socket-path")
        .arg(&a)
        .args([
            "--device",
            "sim,device=buffer,devno=0x0100,latency-us=20000",
        ])
        .arg("--socket-path")
        .arg(&b)
        .args(["--device", "sim,device=buffer,devno=0x0200"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !(a.exists() && b.exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "sockets never appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut conn_a = Connection::connect(&a, &Default::default()).unwrap();
    let mut conn_b = Connection::connect(&b, &Default::default()).unwrap();
    assert_eq!(conn_a.config().devno, 0x0100);
    assert_eq!(conn_b.config().devno, 0x0200);

    // A long program on A, then A's frontend goes away and garbage arrives
    // on A's socket; B keeps working throughout.
    for i in 0..50u64 {
        put_ccw(&conn_a, 0x1000 + 8 * i, 0x03, CcwFlags::CC, 0, 0);
    }
    put_ccw(&conn_a, 0x1000 + 8 * 50, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(conn_a.request(&start(1, 0x1000)).unwrap().cc, 0);
    put_ccw(&conn_b, 0x1000, 0xe4, CcwFlags::SLI, 40, 0x2000);
    assert_eq!(conn_b.request(&start(1, 0x1000)).unwrap().cc, 0);
    drop(conn_a);
    let mut garbage = UnixStream::connect(&a).unwrap();
    let _ = garbage.write_all(&[0xff; 64]);
    drop(garbage);
    let (tag, irb) = interrupt(&mut conn_b);
    assert_eq!(tag, 1);
    assert_eq!(irb.scsw.count, 28);
    assert_eq!(read(&conn_b, 0x2000, 1), [0xff]);
    assert_eq!(conn_b.request(&start(2, 0x1000)).unwrap().cc, 0);
    assert_eq!(interrupt(&mut conn_b).0, 2);

    // A serves a new frontend from a clean subchannel.
    let mut conn_a = Connection::connect(&a, &Default::default()).unwrap();
    let store = conn_a
        .request(&Request::new(RequestType::Store, 1))
        .unwrap();
    assert!(store.schib.scsw.function_control.is_empty());
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the process is still up"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// A two-CCW program at 0x1000: SENSE ID (40 bytes to 0x2000, SLI)
/// command-chained to a NOP.
fn put_sense_id_and_nop(conn: &Connection) {
    put_ccw(conn, 0x1000, 0xe4, CcwFlags::SLI | CcwFlags::CC, 40, 0x2000);
    put_ccw(conn, 0x1008, 0x03, CcwFlags::empty(), 0, 0);
}

/// The opt-in CCW trace logs every executed CCW with its command, flags,
/// count, data area and resulting status; without RUST_LOG=ccw_trace=trace
/// it logs nothing.
#[test]
fn ccw_trace_logs_each_ccw_only_when_enabled() {
    for enabled in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let filter = if enabled { "ccw_trace=trace" } else { "info" };
        let mut backend = Backend::start_logging_to("sim", filter, &log);
        let mut conn = backend.connect();
        put_sense_id_and_nop(&conn);
        assert_eq!(conn.request(&start(1, 0x1000)).unwrap().cc, 0);
        interrupt(&mut conn);
        drop(conn);
        std::thread::sleep(Duration::from_millis(100));
        backend.kill();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<_> = text.lines().filter(|l| l.contains("ccw_trace")).collect();
        if enabled {
            assert_eq!(lines.len(), 2, "{text}");
            assert!(
                lines[0].contains(
                    "0190 00001000 cmd=E4 flags=60 count=40 data=[2000+28] -> dstat=0c cstat=00 residual=28 cpa=00001008 chain"
                ),
                "{}",
                lines[0]
            );
            assert!(lines[1].contains("00001008 cmd=03"), "{}", lines[1]);
        } else {
            assert!(lines.is_empty(), "{text}");
        }
    }
}

/// START of a program that moves data is answered before the program runs:
/// the frontend (a guest's SSCH, holding a vCPU) waits for the condition
/// code only, as with a real channel subsystem, not for the transfer and
/// the device's flush. A program of a few bytes (SENSE ID + NOP) runs first,
/// so that its interruption goes out with the response.
#[test]
fn start_is_answered_before_a_data_moving_program_runs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut backend = Backend::start_logging_to(
        "sim,device=buffer,size=64K",
        "ccw_trace=trace,vhost_user_ccw::session=debug",
        &log,
    );
    let mut conn = backend.connect();
    // Tag 7: SENSE ID (40 bytes) + NOP. Tag 8: READ of 32 KiB.
    put_sense_id_and_nop(&conn);
    put_ccw(&conn, 0x1100, 0x02, CcwFlags::SLI, 0x8000, 0x10000);
    for (tag, cpa) in [(7, 0x1000), (8, 0x1100)] {
        assert_eq!(conn.request(&start(tag, cpa)).unwrap().cc, 0);
        let (_, irb) = interrupt(&mut conn);
        assert!(irb.scsw.status_control.contains(final_status()));
    }
    drop(conn);
    std::thread::sleep(Duration::from_millis(100));
    backend.kill();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let position = |what: &str, from: usize| {
        lines[from..]
            .iter()
            .position(|l| l.contains(what))
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("no '{what}' after line {from}:\n{text}"))
    };
    let short = position("tag 7", 0);
    let short_answered = position("requestq: responses out", short);
    let short_ran = position("cmd=03", short);
    assert!(
        short_ran < short_answered,
        "the short program did not run before its answer:\n{text}"
    );
    let long = position("tag 8", short_answered);
    let long_answered = position("requestq: responses out", long);
    let long_ran = position("cmd=02", long);
    assert!(
        long_answered < long_ran,
        "the data-moving program ran before START was answered:\n{text}"
    );
}
