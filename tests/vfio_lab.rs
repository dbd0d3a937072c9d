//! The `vfio` host against the real Linux vfio-ccw driver: runs
//! scripts/vfio-lab.sh, which boots Debian's 6.12 s390x kernel (the guest
//! kit, with vfio_ccw built out of tree) under TCG in the patched QEMU,
//! binds two subchannels to vfio_ccw (a virtio-blk-ccw disk, and a slow
//! `sim` device served by the host's backend through
//! vhost-user-subchannel), serves the mdevs with the s390x build of the
//! backend and drives them with the frontend.
//!
//! It needs root, apt (Debian archive) and minutes, so it is ignored by a
//! plain `cargo test`; scripts/test.sh runs it with `--ignored`.

use std::path::Path;
use std::process::Command;

use vhost_user_ccw_tests::binary;

/// Every check the guest reports, in the order it runs them.
const CHECKS: &[&str] = &[
    "setup",
    "backend-uuid",
    "sense-id",
    "virtio",
    "virtio-legacy",
    "halt-clear",
    "slow-setup",
    "slow-backend",
    "slow-sense-id",
    "halt-running",
    "halt-partial",
    "clear-running",
    "clear-partial",
    "kill-mid-run",
    "after-kill",
    "reopen",
    "backend-path",
    "path-sense-id",
    "device-gone",
    "mdev-removed",
    // The seccomp filter on s390x: installed, complete for the vfio host
    // (log mode records nothing), logging and killing a forbidden call.
    "seccomp-default",
    "seccomp-log-clean",
    "seccomp-log-records",
    "seccomp-kill",
    "kernel-log",
];

#[test]
#[ignore = "boots an s390x guest under TCG (needs root and apt, minutes): run by scripts/test.sh"]
fn the_vfio_host_drives_vfio_ccw_in_an_s390x_guest() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    // The host's backend for the slow subchannel: the one the other
    // tests run (no second cargo build inside this test).
    let backend = binary("vhost-user-ccw");
    let status = Command::new(repo.join("scripts/vfio-lab.sh"))
        .current_dir(&repo)
        .env("VHOST_USER_CCW_BIN_DIR", backend.parent().unwrap())
        .env("VFIO_LAB_KEEP_LOG", &console)
        .status()
        .expect("scripts/vfio-lab.sh runs");
    // The serial console ends its lines with CR LF.
    let log = std::fs::read_to_string(&console)
        .unwrap_or_default()
        .replace('\r', "");
    let missing: Vec<&&str> = CHECKS
        .iter()
        .filter(|check| !log.contains(&format!("VFIO-LAB-RESULT {check} pass\n")))
        .collect();
    assert!(
        missing.is_empty(),
        "checks that did not pass in the guest: {missing:?}\n{}",
        missing
            .iter()
            .map(|check| lead_up(&log, check))
            .collect::<String>()
    );
    assert!(!log.contains(" fail\n"), "a check failed in the guest");
    assert!(log.contains("VFIO-LAB-DONE"), "the guest did not finish");
    assert!(status.success(), "scripts/vfio-lab.sh failed: {status}");
}

/// The console lines before a check's result (its report and the evidence
/// it judged), for the failure message: CI keeps only the end of the output.
fn lead_up(log: &str, check: &str) -> String {
    const LINES: usize = 40;
    let lines: Vec<&str> = log.lines().collect();
    let end = lines
        .iter()
        .position(|line| line.starts_with(&format!("VFIO-LAB-RESULT {check} ")))
        .map_or(lines.len(), |at| at + 1);
    let start = end.saturating_sub(LINES);
    format!(
        "--- console before the result of {check}\n{}\n",
        lines[start..end].join("\n")
    )
}
