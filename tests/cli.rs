//! The frontend tool as a user runs it: a script file in, a JSON report out,
//! against the real backend binary.

use std::path::Path;
use std::process::{Command, Output};

use vhost_user_ccw_tests::{Backend, binary, succeeded};

fn frontend(socket: &Path, script: &Path) -> Output {
    Command::new(binary("vhost-user-ccw-frontend"))
        .arg("--socket-path")
        .arg(socket)
        .arg(script)
        .output()
        .expect("run vhost-user-ccw-frontend")
}

fn repo_file(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn demo_script_reports_the_identity_and_the_data_read_back() {
    // The demo runs on the default device: the 3390 on a scratch image.
    let backend = Backend::start("sim");
    let out = frontend(backend.socket(), &repo_file("examples/demo.ccw"));
    succeeded(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["expectations"]["failed"].as_array().unwrap().len(),
        0
    );
    assert_eq!(report["device"]["devno"], "0x0190");
    let waits: Vec<_> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "wait")
        .collect();
    assert_eq!(waits.len(), 4);
    assert_eq!(waits[0]["event"]["irb"]["scsw"]["count"], 0);
    assert_eq!(waits[0]["event"]["irb"]["scsw"]["dstat"], "0x0c");
    assert_eq!(waits[1]["event"]["irb"]["scsw"]["cpa"], "0x00001118");
    assert_eq!(report["device"]["sense_id"]["cu_type"], "0x3990");
    let id = report["buffers"]["id"].as_str().unwrap();
    assert!(id.starts_with("ff3990e9339002"), "id = {id}");
    let back = report["buffers"]["back"].as_str().unwrap();
    assert!(
        back.starts_with("48656c6c6f2c203333393021"),
        "back = {back}"
    );
}

#[test]
fn failed_expectation_exits_1_and_names_the_line() {
    let backend = Backend::start("sim,device=buffer");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("wrong.ccw");
    std::fs::write(
        &script,
        "buffer id at=0x2000 len=40\nccws p at=0x1000\nccw sense-id flags=SLI count=40 data=id\nstart\nwait\nexpect irb count=27\n",
    )
    .unwrap();
    let out = frontend(backend.socket(), &script);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let failure = &report["expectations"]["failed"][0];
    assert_eq!(failure["line"], 6);
    assert!(failure["message"].as_str().unwrap().contains("count 28"));
}

#[test]
fn unusable_input_exits_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bad.ccw");
    std::fs::write(&script, "ccws p at=0x1000\nccw frobnicate\n").unwrap();
    let backend = Backend::start("sim,device=buffer");
    let out = frontend(backend.socket(), &script);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));

    let out = frontend(
        &dir.path().join("missing.sock"),
        &repo_file("examples/demo.ccw"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.sock"));
}

/// The frontend process dies (SIGKILL) while its START is pending: the
/// backend quiesces the subchannel, and the next connection starts from a
/// clean, closed-then-opened subchannel.
#[test]
fn frontend_killed_during_a_pending_start_leaves_a_clean_subchannel() {
    use vhost_user_ccw_protocol::wire::{Event, Request, RequestType};
    use vhost_user_ccw_tests::start;

    let backend = Backend::start("sim,device=buffer,latency-us=50000");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("long.ccw");
    let mut text = String::from("ccws long at=0x1000\n");
    for _ in 0..99 {
        text.push_str("ccw nop flags=CC\n");
    }
    text.push_str("ccw nop\nstart\nexpect cc=0\nsleep ms=20000\n");
    std::fs::write(&script, text).unwrap();
    let mut child = Command::new(binary("vhost-user-ccw-frontend"))
        .arg("--socket-path")
        .arg(backend.socket())
        .arg(&script)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();

    let t0 = std::time::Instant::now();
    let mut conn = backend.connect();
    let store = conn.request(&Request::new(RequestType::Store, 1)).unwrap();
    assert_eq!(store.cc, 0);
    assert!(store.schib.pmcw.enabled);
    assert!(store.schib.scsw.function_control.is_empty(), "quiesced");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(2),
        "quiesce was prompt"
    );
    let ccw = vhost_user_ccw_protocol::arch::Ccw {
        cmd: 0x03,
        ..Default::default()
    };
    conn.write_ram(0x1000, &ccw.encode_format1().unwrap())
        .unwrap();
    assert_eq!(conn.request(&start(2, 0x1000)).unwrap().cc, 0);
    match conn.wait_event(std::time::Duration::from_secs(5)).unwrap() {
        Some(Event::Interrupt { tag, irb }) => {
            assert_eq!(tag, 2);
            assert_eq!(irb.scsw.cpa, 0x1008);
        }
        other => panic!("expected the new START's interruption, got {other:?}"),
    }
}
