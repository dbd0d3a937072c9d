//! The parts of the `vfio` host that need no kernel: the device argument,
//! the mapping of kernel errors, the IRBs made for refused functions, the
//! translation of host IRBs and CRWs. The host against the real driver is
//! tested in an s390x guest by scripts/vfio-lab.sh.

use super::*;
use crate::memory::tests::{put_ccw1, ram};
use crate::translate::translate;
use vhost_user_ccw_protocol::arch::{Esw, SubchannelStatus};

const UUID: &str = "f00dcafe-1234-4321-8765-0123456789ab";

#[test]
fn targets_are_a_uuid_or_an_absolute_sysfs_path_ending_in_one() {
    assert_eq!(
        VfioTarget::parse(UUID).unwrap(),
        VfioTarget {
            name: UUID.to_owned(),
            sysfs: PathBuf::from(format!("/sys/bus/mdev/devices/{UUID}")),
        }
    );
    let upper = UUID.to_ascii_uppercase();
    assert_eq!(VfioTarget::parse(&upper).unwrap().name, UUID);
    let path = format!("/sys/devices/css0/0.0.0005/{UUID}");
    assert_eq!(
        VfioTarget::parse(&path).unwrap(),
        VfioTarget {
            name: UUID.to_owned(),
            sysfs: PathBuf::from(&path),
        }
    );
    assert_eq!(
        VfioTarget::parse("0.0.0005"),
        Err(TargetError::NotUuidOrPath("0.0.0005".to_owned()))
    );
    assert_eq!(
        VfioTarget::parse("sys/bus/mdev/devices/x"),
        Err(TargetError::NotUuidOrPath(
            "sys/bus/mdev/devices/x".to_owned()
        ))
    );
    assert_eq!(
        VfioTarget::parse("/sys/devices/css0/0.0.0005"),
        Err(TargetError::NoUuid("/sys/devices/css0/0.0.0005".to_owned()))
    );
    // Wrong group lengths and non-hex digits.
    assert!(VfioTarget::parse("f00dcafe-1234-4321-8765-0123456789a").is_err());
    assert!(VfioTarget::parse("g00dcafe-1234-4321-8765-0123456789ab").is_err());
    assert!(VfioTarget::parse("f00dcafe1234-4321-8765-0123456789ab0").is_err());
}

#[test]
fn subchannel_ids_come_from_the_parent_directory_name() {
    assert_eq!(parse_schid("0.0.0005"), Some((0, 0, 5)));
    assert_eq!(parse_schid("fe.3.ffff"), Some((0xfe, 3, 0xffff)));
    assert_eq!(parse_schid("0.0"), None);
    assert_eq!(parse_schid("0.0.10000"), None);
    assert_eq!(parse_schid("0.0.0005.1"), None);
    assert_eq!(parse_schid("css0"), None);
}

fn err(errno: i32) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(errno))
}

#[test]
fn kernel_errors_map_to_condition_codes_or_a_refusal() {
    assert_eq!(outcome(&Ok(())), Outcome::Cc(HostCc::Accepted));
    assert_eq!(outcome(&err(libc::EBUSY)), Outcome::Cc(HostCc::Busy));
    assert_eq!(
        outcome(&err(libc::ENODEV)),
        Outcome::Cc(HostCc::NotOperational)
    );
    assert_eq!(
        outcome(&err(libc::EACCES)),
        Outcome::Cc(HostCc::NotOperational)
    );
    for errno in [
        libc::EOPNOTSUPP,
        libc::EINVAL,
        libc::ENOMEM,
        libc::EFAULT,
        libc::EIO,
    ] {
        assert_eq!(outcome(&err(errno)), Outcome::Refused, "errno {errno}");
    }
}

#[test]
fn contended_accesses_are_retried_until_they_settle() {
    let mut calls = 0;
    let result = retry_contended(|| {
        calls += 1;
        if calls < 3 { err(libc::EAGAIN) } else { Ok(()) }
    });
    assert!(result.is_ok());
    assert_eq!(calls, 3);
    // Other errors are not retried.
    let mut calls = 0;
    let result = retry_contended(|| {
        calls += 1;
        err(libc::EBUSY)
    });
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EBUSY));
    assert_eq!(calls, 1);
}

#[test]
fn a_refused_start_ends_in_a_unit_exception_one_ccw_past_the_cpa() {
    let orb = Orb {
        format1: true,
        cpa: 0x1000,
        ..Orb::default()
    };
    let irb = refusal_irb(FunctionControl::START, Some(&orb));
    let scsw = irb.scsw;
    assert_eq!(scsw.function_control, FunctionControl::START);
    assert!(scsw.activity_control.is_empty());
    assert_eq!(
        scsw.status_control,
        StatusControl::PRIMARY
            | StatusControl::SECONDARY
            | StatusControl::ALERT
            | StatusControl::STATUS_PENDING
    );
    assert_eq!(scsw.device_status, DeviceStatus::UNIT_EXCEPTION);
    assert!(scsw.subchannel_status.is_empty());
    assert_eq!(scsw.cpa, 0x1008);
    assert!(scsw.format1);
    assert!(scsw.is_final());
    assert!(!scsw.is_unsolicited());
    let halt = refusal_irb(FunctionControl::HALT, None);
    assert_eq!(halt.scsw.function_control, FunctionControl::HALT);
    assert_eq!(halt.scsw.cpa, 0);
}

/// A READ of 0x20 bytes at guest 0x2000, laid out for a container that
/// maps guest RAM at RAM_IOVA_BASE.
fn layout() -> HostProgram {
    let ram = ram(0x10_0000);
    put_ccw1(&ram, 0x1000, 0x02, CcwFlags::SLI, 0x20, 0x2000);
    let orb = Orb {
        format1: true,
        lpm: 0x80,
        cpa: 0x1000,
        ..Orb::default()
    };
    let program = translate(&orb, &ram).unwrap();
    let map = IovaMap::new(
        vec![IovaRange {
            guest: 0,
            len: 0x10_0000,
            iova: RAM_IOVA_BASE,
        }],
        ProgramWindow {
            iova: PROGRAM_WINDOW_IOVA,
            len: PROGRAM_WINDOW_LEN,
        },
    )
    .unwrap();
    HostProgram::build(&program, &map, PROGRAM_WINDOW_IOVA).unwrap()
}

fn final_scsw(cpa: u32) -> Scsw {
    Scsw {
        format1: true,
        function_control: FunctionControl::START,
        status_control: StatusControl::PRIMARY
            | StatusControl::SECONDARY
            | StatusControl::STATUS_PENDING,
        device_status: DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END,
        cpa,
        ..Scsw::default()
    }
}

#[test]
fn host_irbs_are_translated_to_guest_addresses() {
    let layout = layout();
    // The kernel reports the CPA as an IOVA of the host program: one past
    // the READ's host CCW.
    let irb = Irb {
        scsw: final_scsw(PROGRAM_WINDOW_IOVA + 8),
        esw: Esw {
            failing_storage_address: RAM_IOVA_BASE + 0x2010,
            secondary_ccw_address: PROGRAM_WINDOW_IOVA,
            ..Esw::default()
        },
        ..Irb::default()
    };
    let mut with_flags = irb;
    with_flags.esw.erw.failing_storage_address_valid = true;
    with_flags.esw.erw.secondary_ccw_address_valid = true;
    let guest = guest_irb(with_flags, Some(&layout));
    assert_eq!(guest.scsw.cpa, 0x1008);
    assert_eq!(guest.esw.failing_storage_address, 0x2010);
    assert!(guest.esw.erw.failing_storage_address_valid);
    assert_eq!(guest.esw.secondary_ccw_address, 0x1000);
    assert!(guest.esw.erw.secondary_ccw_address_valid);
    // Everything else is kept.
    assert_eq!(guest.scsw.device_status, irb.scsw.device_status);
    assert_eq!(guest.scsw.status_control, irb.scsw.status_control);
}

#[test]
fn host_addresses_never_reach_the_guest() {
    let layout = layout();
    // A host physical failing-storage address and a CPA outside the
    // program (as when the kernel could not map it back).
    let mut irb = Irb {
        scsw: final_scsw(0x0123_4000),
        esw: Esw {
            failing_storage_address: 0x7654_3000,
            secondary_ccw_address: 0x0123_4000,
            ..Esw::default()
        },
        ..Irb::default()
    };
    irb.esw.erw.failing_storage_address_valid = true;
    irb.esw.erw.secondary_ccw_address_valid = true;
    irb.scsw.subchannel_status = SubchannelStatus::CHANNEL_DATA_CHECK;
    let guest = guest_irb(irb, Some(&layout));
    assert_eq!(guest.scsw.cpa, 0);
    assert_eq!(guest.esw.failing_storage_address, 0);
    assert!(!guest.esw.erw.failing_storage_address_valid);
    assert_eq!(guest.esw.secondary_ccw_address, 0);
    assert!(!guest.esw.erw.secondary_ccw_address_valid);
    assert_eq!(
        guest.scsw.subchannel_status,
        SubchannelStatus::CHANNEL_DATA_CHECK
    );
    // Without a program (a halt or clear of an idle subchannel) nothing
    // maps back either.
    let halted = Irb {
        scsw: Scsw {
            function_control: FunctionControl::HALT,
            cpa: PROGRAM_WINDOW_IOVA + 8,
            ..final_scsw(0)
        },
        ..Irb::default()
    };
    assert_eq!(guest_irb(halted, None).scsw.cpa, 0);
    // An unsolicited IRB's CPA means nothing.
    let unsolicited = Irb {
        scsw: Scsw {
            status_control: StatusControl::ALERT | StatusControl::STATUS_PENDING,
            ..final_scsw(PROGRAM_WINDOW_IOVA + 8)
        },
        ..Irb::default()
    };
    assert_eq!(guest_irb(unsolicited, Some(&layout)).scsw.cpa, 0);
}

#[test]
fn channel_path_reports_become_path_changes() {
    let report = |rsc, erc, rsid| Crw {
        rsc,
        erc,
        rsid,
        ..Crw::default()
    };
    assert_eq!(
        crw_event(&report(Crw::RSC_CHANNEL_PATH, Crw::ERC_INITIALIZED, 0x40)),
        Some(HostEvent::PathChange {
            chpid: 0x40,
            online: true
        })
    );
    assert_eq!(
        crw_event(&report(
            Crw::RSC_CHANNEL_PATH,
            Crw::ERC_PERMANENT_ERROR_INITIALIZED,
            0x41
        )),
        Some(HostEvent::PathChange {
            chpid: 0x41,
            online: false
        })
    );
    assert_eq!(
        crw_event(&report(
            Crw::RSC_CHANNEL_PATH,
            Crw::ERC_PERMANENT_ERROR_NOT_INITIALIZED,
            0x42
        )),
        Some(HostEvent::PathChange {
            chpid: 0x42,
            online: false
        })
    );
    assert_eq!(
        crw_event(&report(
            Crw::RSC_CHANNEL_PATH,
            Crw::ERC_TEMPORARY_ERROR,
            0x40
        )),
        None
    );
    assert_eq!(
        crw_event(&report(Crw::RSC_SUBCHANNEL, Crw::ERC_INITIALIZED, 5)),
        None
    );
}

#[test]
fn a_missing_mdev_is_a_clear_error() {
    let target = VfioTarget::parse(&format!("/nonexistent/{UUID}")).unwrap();
    let e = VfioSubchannel::new(target).unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent/") && e.contains("is the mdev created?"),
        "{e}"
    );
}

#[test]
fn reserved_erw_bits_of_a_host_irb_are_cleared() {
    // A unit check with concurrent sense as QEMU stores it: ERW S bit, and
    // the sense count (32) in the reserved bits 16-23 instead of 10-15.
    let mut irb = Irb {
        scsw: final_scsw(0x1008),
        ..Irb::default()
    };
    irb.scsw.device_status |= DeviceStatus::UNIT_CHECK;
    irb.ecw[0] = 0x80; // command reject
    let mut bytes = irb.encode();
    bytes[16..20].copy_from_slice(&[0x81, 0x00, 0x20, 0x01]);
    let decoded = decode_host_irb(bytes).unwrap();
    assert!(decoded.esw.erw.concurrent_sense);
    assert_eq!(decoded.esw.erw.sense_count, 0);
    assert_eq!(decoded.ecw[0], 0x80);
    assert_eq!(decoded.scsw, irb.scsw);
    assert_eq!(&decoded.encode()[16..20], &[0x01, 0x00, 0x00, 0x00]);
    // A clean IRB is unchanged.
    assert_eq!(decode_host_irb(irb.encode()).unwrap(), irb);
}

#[test]
fn guest_ram_mappings_skip_the_control_window_and_need_page_alignment() {
    use crate::memory::tests::region;
    use vm_memory::GuestMemoryMmap;

    let ram0 = region(0, 0x10_0000, 0, 0x10_0000);
    let ram1 = region(0x20_0000, 0x1_0000, 0, 0x1_0000);
    let control = region(CONTROL_WINDOW_BASE, 0x1000, 0, 0x1000);
    let hosts = [ram0.as_ptr().addr(), ram1.as_ptr().addr()].map(|a| u64::try_from(a).unwrap());
    let mem = GuestMemoryMmap::from_regions(vec![ram0, ram1, control]).unwrap();
    let ram = GuestRam::new(Arc::new(mem));
    assert_eq!(
        VfioSubchannel::ram_regions(&ram).unwrap(),
        vec![(0, 0x10_0000, hosts[0]), (0x20_0000, 0x1_0000, hosts[1])]
    );

    // A region that does not start on a page boundary cannot be mapped
    // into the container.
    let mem = GuestMemoryMmap::from_regions(vec![region(0x800, 0x2000, 0, 0x2000)]).unwrap();
    let e = VfioSubchannel::ram_regions(&GuestRam::new(Arc::new(mem))).unwrap_err();
    assert!(e.contains("0x800+0x2000 is not page aligned"), "{e}");
}
