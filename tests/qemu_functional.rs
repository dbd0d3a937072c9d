//! The patched QEMU as the frontend: the vhost-user-subchannel device on a
//! real backend, driven through qtest channel-subsystem commands, with no
//! guest CPU. Checks the IRBs and the bytes in guest memory.

use std::time::Duration;

use vhost_user_ccw_protocol::arch::{
    Ccw, CcwFlags, Crw, DeviceStatus, FunctionControl, Orb, StatusControl, SubchannelStatus,
};
use vhost_user_ccw_tests::Backend;
use vhost_user_ccw_tests::qemu::{Qemu, machine_args, qtest_command};

const DEVNO: u16 = 0x0100;
const WAIT: Duration = Duration::from_secs(10);
const ORB_ADDR: u64 = 0x800;

fn orb(cpa: u32) -> Orb {
    Orb {
        intparm: 0xcafe_f00d,
        format1: true,
        prefetch: true,
        lpm: 0x80,
        cpa,
        ..Orb::default()
    }
}

fn ccw(qemu: &mut Qemu, addr: u64, cmd: u8, flags: CcwFlags, count: u16, cda: u32) {
    let ccw = Ccw {
        cmd,
        flags,
        count,
        cda,
    };
    qemu.write(addr, &ccw.encode_format1().unwrap());
}

/// A backend and a QEMU with an enabled subchannel on it.
fn setup(device: &str) -> (Backend, Qemu, String) {
    setup_on(Backend::start(device))
}

/// A QEMU with an enabled subchannel on `backend`.
fn setup_on(backend: Backend) -> (Backend, Qemu, String) {
    let mut qemu = Qemu::start(&machine_args(backend.socket(), "fe.0.0100"));
    let schid = qemu.find_subchannel(DEVNO);
    qemu.enable(&schid);
    (backend, qemu, schid)
}

fn final_status() -> StatusControl {
    StatusControl::PRIMARY | StatusControl::SECONDARY | StatusControl::STATUS_PENDING
}

fn sense_id(qemu: &mut Qemu, schid: &str) {
    qemu.write(0x2000, &[0xee; 40]);
    ccw(qemu, 0x1000, 0xe4, CcwFlags::SLI, 40, 0x2000);
    assert_eq!(qemu.ssch(schid, ORB_ADDR, &orb(0x1000)), 0);
    let irb = qemu.wait_irb(schid, WAIT);
    assert_eq!(irb.scsw.function_control, FunctionControl::START);
    assert_eq!(irb.scsw.status_control, final_status());
    assert_eq!(
        irb.scsw.device_status,
        DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END
    );
    assert_eq!(irb.scsw.cpa, 0x1008);
    assert_eq!(irb.scsw.count, 28);
    assert_eq!(
        qemu.read(0x2000, 13),
        [
            0xff, 0x50, 0x00, 0x01, 0x50, 0x01, 0x01, 0x00, 0x40, 0xfa, 0x00, 0x80, 0xee
        ]
    );
}

#[test]
fn sense_id_through_qemu_lands_in_guest_memory() {
    let (_backend, mut qemu, schid) = setup("sim,device=buffer");
    sense_id(&mut qemu, &schid);
}

#[test]
fn dasd_identity_and_label_through_qemu() {
    // The default device: a 3390 on a scratch image (volume V0100).
    let (_backend, mut qemu, schid) = setup("sim,cylinders=3,devno=0x0100");
    qemu.write(0x2000, &[0xee; 40]);
    ccw(&mut qemu, 0x1000, 0xe4, CcwFlags::SLI, 40, 0x2000);
    assert_eq!(qemu.ssch(&schid, ORB_ADDR, &orb(0x1000)), 0);
    let irb = qemu.wait_irb(&schid, WAIT);
    assert_eq!(irb.scsw.count, 28);
    assert_eq!(
        qemu.read(0x2000, 7),
        [0xff, 0x39, 0x90, 0xe9, 0x33, 0x90, 0x02]
    );
    // Define Extent (track 0/0, no writes), Locate Record (search 0/0/3,
    // read, 1 record, TLF 84), READ KEY AND DATA MT: the VOL1 label.
    qemu.write(
        0x3000,
        &[0x40, 0xc4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    qemu.write(
        0x3010,
        &[0x06, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0xff, 0, 84],
    );
    ccw(&mut qemu, 0x1100, 0x63, CcwFlags::CC, 16, 0x3000);
    ccw(&mut qemu, 0x1108, 0x47, CcwFlags::CC, 16, 0x3010);
    ccw(&mut qemu, 0x1110, 0x8e, CcwFlags::empty(), 84, 0x4000);
    assert_eq!(qemu.ssch(&schid, ORB_ADDR, &orb(0x1100)), 0);
    let irb = qemu.wait_irb(&schid, WAIT);
    assert_eq!(
        irb.scsw.device_status,
        DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END
    );
    assert_eq!(irb.scsw.subchannel_status, SubchannelStatus::empty());
    assert_eq!((irb.scsw.cpa, irb.scsw.count), (0x1118, 0));
    // Key "VOL1", then data "VOL1" and the volume serial "V0100 " (EBCDIC).
    assert_eq!(
        qemu.read(0x4000, 14),
        [
            0xe5, 0xd6, 0xd3, 0xf1, 0xe5, 0xd6, 0xd3, 0xf1, 0xe5, 0xf0, 0xf1, 0xf0, 0xf0, 0x40
        ]
    );
}

#[test]
fn stsch_shows_the_backends_paths() {
    let (_backend, mut qemu, schid) = setup("sim,device=buffer,chpid=0x2a");
    let (cc, schib) = qemu.stsch(&schid);
    assert_eq!(cc, 0);
    let pmcw = schib.unwrap().pmcw;
    assert_eq!(pmcw.devno, DEVNO);
    assert!(pmcw.enabled);
    assert_eq!(pmcw.pim, 0x80);
    assert_eq!(pmcw.pam, 0x80);
    assert_eq!(pmcw.pom, 0xff);
    assert_eq!(pmcw.chpid[0], 0x2a);
}

#[test]
fn chained_write_and_read_move_the_bytes() {
    let (_backend, mut qemu, schid) = setup("sim,device=buffer,size=64");
    qemu.write(0x3000, b"The quick brown fox jumps over!!");
    qemu.write(0x3100, &0u32.to_be_bytes());
    qemu.write(0x4000, &[0; 32]);
    ccw(&mut qemu, 0x1000, 0x01, CcwFlags::CC, 32, 0x3000);
    ccw(&mut qemu, 0x1008, 0x07, CcwFlags::CC, 4, 0x3100);
    ccw(&mut qemu, 0x1010, 0x02, CcwFlags::CD, 10, 0x4000);
    ccw(&mut qemu, 0x1018, 0x02, CcwFlags::SLI, 40, 0x4100);
    assert_eq!(qemu.ssch(&schid, ORB_ADDR, &orb(0x1000)), 0);
    let irb = qemu.wait_irb(&schid, WAIT);
    assert_eq!(irb.scsw.subchannel_status, SubchannelStatus::empty());
    assert_eq!(irb.scsw.cpa, 0x1020);
    assert_eq!(irb.scsw.count, 0, "64 - 10 = 54 bytes offered for 40");
    assert_eq!(qemu.read(0x4000, 10), b"The quick ");
    assert_eq!(qemu.read(0x4100, 22), b"brown fox jumps over!!");
}

#[test]
fn halt_and_clear_of_a_running_program() {
    let (_backend, mut qemu, schid) = setup("sim,device=buffer,latency-us=20000");
    for i in 0..99u64 {
        ccw(&mut qemu, 0x1000 + 8 * i, 0x03, CcwFlags::CC, 0, 0);
    }
    ccw(&mut qemu, 0x1000 + 8 * 99, 0x03, CcwFlags::empty(), 0, 0);

    assert_eq!(qemu.ssch(&schid, ORB_ADDR, &orb(0x1000)), 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(qemu.hsch(&schid), 0);
    let irb = qemu.wait_irb(&schid, WAIT);
    assert!(irb.scsw.function_control.contains(FunctionControl::HALT));
    assert!(
        irb.scsw.cpa > 0x1000 && irb.scsw.cpa < 0x1000 + 8 * 100,
        "stopped early"
    );

    assert_eq!(qemu.ssch(&schid, ORB_ADDR, &orb(0x1000)), 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(qemu.csch(&schid), 0);
    let irb = qemu.wait_irb(&schid, WAIT);
    assert_eq!(irb.scsw.function_control, FunctionControl::CLEAR);
    // The subchannel is usable again.
    sense_id(&mut qemu, &schid);
}

#[test]
fn program_outside_guest_ram_ends_in_a_program_check() {
    let (_backend, mut qemu, schid) = setup("sim,device=buffer");
    ccw(
        &mut qemu,
        0x1000,
        0x02,
        CcwFlags::empty(),
        0x100,
        0x7fff_0000,
    );
    assert_eq!(qemu.ssch(&schid, ORB_ADDR, &orb(0x1000)), 0);
    let irb = qemu.wait_irb(&schid, WAIT);
    assert_eq!(irb.scsw.subchannel_status, SubchannelStatus::PROGRAM_CHECK);
    assert_eq!(irb.scsw.cpa, 0x1008);
    // A facility the backend does not implement: a unit exception.
    let mut suspend = orb(0x1000);
    suspend.suspend = true;
    assert_eq!(qemu.ssch(&schid, ORB_ADDR, &suspend), 0);
    let irb = qemu.wait_irb(&schid, WAIT);
    assert_eq!(irb.scsw.device_status, DeviceStatus::UNIT_EXCEPTION);
}

#[test]
fn backend_killed_then_restarted() {
    let (mut backend, mut qemu, schid) = setup("sim,device=buffer,latency-us=20000");
    let socket = backend.socket().to_path_buf();
    for i in 0..99u64 {
        ccw(&mut qemu, 0x1000 + 8 * i, 0x03, CcwFlags::CC, 0, 0);
    }
    ccw(&mut qemu, 0x1000 + 8 * 99, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(qemu.ssch(&schid, ORB_ADDR, &orb(0x1000)), 0);
    backend.kill();
    // The START in progress ends with a deferred condition code 3.
    let irb = qemu.wait_irb(&schid, WAIT);
    assert_eq!(irb.scsw.deferred_cc, 3);
    // Meanwhile the subchannel is not operational.
    assert_eq!(qemu.ssch(&schid, ORB_ADDR, &orb(0x1000)), 3);

    let _restarted = Backend::start_at(&socket, "sim,device=buffer");
    let deadline = std::time::Instant::now() + WAIT;
    ccw(&mut qemu, 0x1000, 0x03, CcwFlags::empty(), 0, 0);
    loop {
        match qemu.ssch(&schid, ORB_ADDR, &orb(0x1000)) {
            0 => break,
            3 => {
                assert!(std::time::Instant::now() < deadline, "never reconnected");
                std::thread::sleep(Duration::from_millis(20));
            }
            cc => panic!("unexpected cc {cc}"),
        }
    }
    let irb = qemu.wait_irb(&schid, WAIT);
    assert_eq!(irb.scsw.cpa, 0x1008);
    sense_id(&mut qemu, &schid);
}

#[test]
fn qemu_killed_backend_serves_the_next_qemu() {
    let (backend, mut qemu, schid) = setup("sim,device=buffer,latency-us=20000");
    for i in 0..99u64 {
        ccw(&mut qemu, 0x1000 + 8 * i, 0x03, CcwFlags::CC, 0, 0);
    }
    ccw(&mut qemu, 0x1000 + 8 * 99, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(qemu.ssch(&schid, ORB_ADDR, &orb(0x1000)), 0);
    qemu.kill();

    let mut qemu = Qemu::start(&machine_args(backend.socket(), "fe.0.0100"));
    let schid = qemu.find_subchannel(DEVNO);
    qemu.enable(&schid);
    sense_id(&mut qemu, &schid);
}

#[test]
fn missing_socket_and_private_ram_are_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody.sock");
    let run = |args: &[&str]| {
        qtest_command()
            .args(["-machine", "s390-ccw-virtio"])
            .args(args)
            .output()
            .unwrap()
    };
    let chardev = format!("socket,id=cs0,path={}", missing.display());
    let out = run(&[
        "-chardev",
        &chardev,
        "-device",
        "vhost-user-subchannel,chardev=cs0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody.sock"));

    let backend = Backend::start("sim,device=buffer");
    let chardev = format!("socket,id=cs0,path={}", backend.socket().display());
    let out = run(&[
        "-m",
        "128M",
        "-chardev",
        &chardev,
        "-device",
        "vhost-user-subchannel,chardev=cs0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shared memory backend"), "{stderr}");
}

/// A backend with a control socket (in the directory returned with it),
/// and a QEMU with an enabled subchannel on it.
fn setup_with_control(
    device: &str,
) -> (Backend, tempfile::TempDir, std::path::PathBuf, Qemu, String) {
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let backend =
        Backend::start_with_args(device, &["--control-socket", control.to_str().unwrap()]);
    // The backend binds the control socket after its vhost-user socket.
    vhost_user_ccw_tests::wait_for_path(&control);
    let (backend, qemu, schid) = setup_on(backend);
    (backend, dir, control, qemu, schid)
}

/// A path of the host subchannel varies offline and online again (the
/// control socket's fault injection on the sim): each change reaches the
/// guest as a channel-path CRW through QEMU's channel subsystem, and STSCH
/// shows the path masks of the moment.
#[test]
fn path_events_reach_the_guest_as_channel_reports() {
    let (_backend, _dir, control, mut qemu, schid) =
        setup_with_control("sim,device=buffer,chpid=0x2a");
    // Nothing pending at first.
    assert_eq!(qemu.stcrw().0, 1);

    for (state, erc, pam) in [
        ("offline", Crw::ERC_PERMANENT_ERROR_INITIALIZED, 0x00),
        ("online", Crw::ERC_INITIALIZED, 0x80),
    ] {
        let command = format!("vary-path {state}");
        assert_eq!(
            vhost_user_ccw_tests::control(&control, &command)["ok"],
            true
        );
        let crw = qemu.wait_crw(WAIT);
        assert_eq!(crw.rsc, Crw::RSC_CHANNEL_PATH, "{state}");
        assert_eq!(crw.erc, erc, "{state}");
        assert_eq!(crw.rsid, 0x2a, "{state}");
        assert_eq!(qemu.stsch(&schid).1.unwrap().pmcw.pam, pam, "{state}");
    }
    sense_id(&mut qemu, &schid);
}

/// The host device goes away under a QEMU that keeps the subchannel: the
/// next SSCH is not operational (cc 3) and no program runs.
#[test]
fn device_removed_under_qemu_makes_ssch_not_operational() {
    let (_backend, _dir, control, mut qemu, schid) = setup_with_control("sim,device=buffer");
    sense_id(&mut qemu, &schid);
    assert_eq!(
        vhost_user_ccw_tests::control(&control, "remove-device")["ok"],
        true
    );
    let stats = || vhost_user_ccw_tests::control(&control, "stats")["subchannels"][0].clone();
    let before = stats();
    ccw(&mut qemu, 0x1000, 0xe4, CcwFlags::SLI, 40, 0x2000);
    assert_eq!(qemu.ssch(&schid, ORB_ADDR, &orb(0x1000)), 3);
    // No program ran: no byte moved, no interruption.
    let after = stats();
    assert_eq!(after["bytes_moved"], before["bytes_moved"]);
    assert_eq!(after["interrupts"], before["interrupts"]);
}
