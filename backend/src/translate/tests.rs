//! Translator scenarios, including every translator bug of the kernel's
//! vfio-ccw (shared/reference/vfio-ccw.md §4) as a named test.

use vhost_user_ccw_protocol::arch::{CcwFlags, Orb};
use vhost_user_ccw_protocol::wire::{CONTROL_WINDOW_BASE, ProgramErrorCode};

use super::*;
use crate::memory::tests::{put_ccw0 as put0, put_ccw1 as put, ram};

const RAM: usize = 0x10_0000;

fn orb(cpa: u32) -> Orb {
    Orb {
        format1: true,
        prefetch: true,
        lpm: 0x80,
        cpa,
        ..Orb::default()
    }
}

fn orb_idaw(cpa: u32, format2: bool, two_k: bool) -> Orb {
    Orb {
        format2_idaw: format2,
        idaw_2k: two_k,
        ..orb(cpa)
    }
}

fn check_reason(program: &ChannelProgram, index: usize) -> &'static str {
    match program.ccws[index].kind() {
        CcwKind::Check { reason } => reason,
        ref other => panic!("entry {index} is {other:?}, not a check"),
    }
}

#[test]
fn chained_program_is_fetched_in_order() {
    let ram = ram(RAM);
    put(&ram, 0x1000, 0x01, CcwFlags::CC, 16, 0x2000);
    put(&ram, 0x1008, 0x02, CcwFlags::CD, 8, 0x3000);
    put(&ram, 0x1010, 0x02, CcwFlags::SLI, 8, 0x3008);
    put(&ram, 0x1018, 0x03, CcwFlags::empty(), 0, 0);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(
        program.ccws.len(),
        3,
        "the chain ends at the CCW without CC/CD"
    );
    assert_eq!(program.segments.len(), 1);
    assert_eq!(
        program.data(1),
        &[DataPiece {
            addr: 0x3000,
            len: 8
        }]
    );
    assert_eq!(program.sequential(0), Some(1));
    assert_eq!(program.sequential(2), None);
    assert_eq!(program.data_bytes, 32);
}

/// 2026 "CCW array bound": 256 chained CCWs made the kernel read a 257th.
#[test]
fn chain_of_256_chained_ccws_is_refused_without_reading_a_257th() {
    let ram = ram(RAM);
    for i in 0..256u64 {
        put(&ram, 0x1000 + i * 8, 0x03, CcwFlags::CC, 0, 0);
    }
    ram.write(0x1000 + 256 * 8, &[0xff; 8]).unwrap();
    assert_eq!(
        translate(&orb(0x1000), &ram).unwrap_err().code(),
        ProgramErrorCode::TooLarge
    );
    put(&ram, 0x1000 + 255 * 8, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(translate(&orb(0x1000), &ram).unwrap().ccws.len(), 256);
}

/// 2026 "segment limit": a chain of TICs to fresh addresses recursed and
/// allocated without bound. 16 segments are fine, a 17th is refused.
#[test]
fn sixteen_segments_translate_and_a_seventeenth_is_refused() {
    let ram = ram(RAM);
    for i in 0..16u32 {
        let at = 0x1000 + i * 0x100;
        put(&ram, u64::from(at), 0x03, CcwFlags::CC, 0, 0);
        put(
            &ram,
            u64::from(at) + 8,
            0x08,
            CcwFlags::empty(),
            0,
            at + 0x100,
        );
    }
    // The 16th segment ends the chain.
    put(&ram, 0x1000 + 15 * 0x100 + 8, 0x03, CcwFlags::empty(), 0, 0);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(program.segments.len(), 16);
    put(
        &ram,
        0x1000 + 15 * 0x100 + 8,
        0x08,
        CcwFlags::empty(),
        0,
        0x1000 + 16 * 0x100,
    );
    put(&ram, 0x1000 + 16 * 0x100, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(
        translate(&orb(0x1000), &ram),
        Err(TranslateError::TooLarge("more than 16 segments"))
    );
}

/// 2026 "free on init failure": a bad second TIC target leaked the first
/// segment. A refused translation keeps nothing.
#[test]
fn failed_translation_keeps_no_reference() {
    let ram = ram(RAM);
    let before = ram.references();
    // Sixteen segments built, the seventeenth refused.
    for i in 0..17u32 {
        let at = 0x1000 + i * 0x100;
        put(&ram, u64::from(at), 0x03, CcwFlags::CC, 0, 0);
        put(
            &ram,
            u64::from(at) + 8,
            0x08,
            CcwFlags::empty(),
            0,
            at + 0x100,
        );
    }
    assert!(translate(&orb(0x1000), &ram).is_err());
    assert_eq!(ram.references(), before);
    put(&ram, 0x1008, 0x03, CcwFlags::empty(), 0, 0);
    let program = translate(&orb(0x1000), &ram).unwrap();
    drop(program);
    assert_eq!(
        ram.references(),
        before,
        "programs borrow, the executor holds"
    );
}

/// 2026 "first IDAW constant": the kernel fetched IDAW 0 twice and a guest
/// could change it in between. Every IDAW is read once; what was read is
/// what runs, whatever the guest writes afterwards.
#[test]
fn idaw_changing_after_translation_does_not_change_the_program() {
    let ram = ram(RAM);
    ram.write(0x4000, &0x8000u64.to_be_bytes()).unwrap();
    ram.write(0x4008, &0x9000u64.to_be_bytes()).unwrap();
    put(&ram, 0x1000, 0x02, CcwFlags::IDA, 0x1800, 0x4000);
    let program = translate(&orb_idaw(0x1000, true, false), &ram).unwrap();
    let pieces = program.data(0).to_vec();
    assert_eq!(
        pieces,
        vec![
            DataPiece {
                addr: 0x8000,
                len: 0x1000
            },
            DataPiece {
                addr: 0x9000,
                len: 0x800
            },
        ]
    );
    ram.write(0x4000, &0xfff0u64.to_be_bytes()).unwrap();
    assert_eq!(program.data(0), pieces.as_slice());
}

/// 2026 "IDAL length by type": format-1 IDALs were read as if format 2 (8
/// bytes per IDAW) and ran past their end.
#[test]
fn format1_idal_ending_exactly_at_the_end_of_ram() {
    let ram = ram(RAM);
    let idal = RAM as u64 - 8; // two format-1 IDAWs, the last byte of RAM
    ram.write(idal, &0x8000u32.to_be_bytes()).unwrap();
    ram.write(idal + 4, &0x8800u32.to_be_bytes()).unwrap();
    put(
        &ram,
        0x1000,
        0x02,
        CcwFlags::IDA,
        0x1000,
        u32::try_from(idal).unwrap(),
    );
    let program = translate(&orb_idaw(0x1000, false, false), &ram).unwrap();
    assert_eq!(
        program.data(0),
        &[
            DataPiece {
                addr: 0x8000,
                len: 0x800
            },
            DataPiece {
                addr: 0x8800,
                len: 0x800
            },
        ]
    );
    // Format 2 would need 16 bytes there: an IDAL outside RAM.
    let program = translate(&orb_idaw(0x1000, true, false), &ram).unwrap();
    assert_eq!(check_reason(&program, 0), check::IDAL_ADDRESS);
}

#[test]
fn first_idaw_with_an_offset_and_block_sizes() {
    let ram = ram(RAM);
    ram.write(0x4000, &0x8f00u64.to_be_bytes()).unwrap();
    ram.write(0x4008, &0x9000u64.to_be_bytes()).unwrap();
    put(&ram, 0x1000, 0x01, CcwFlags::IDA, 0x200, 0x4000);
    // 4K blocks: 0x100 bytes in the first block, 0x100 in the second.
    let program = translate(&orb_idaw(0x1000, true, false), &ram).unwrap();
    assert_eq!(
        program.data(0),
        &[
            DataPiece {
                addr: 0x8f00,
                len: 0x100
            },
            DataPiece {
                addr: 0x9000,
                len: 0x100
            },
        ]
    );
    // 2K blocks: 0x8f00 is 0x700 into its block: 0x100 bytes there too.
    let program = translate(&orb_idaw(0x1000, true, true), &ram).unwrap();
    assert_eq!(program.data(0).len(), 2);
    // A later IDAW off its block boundary is a program error.
    ram.write(0x4008, &0x9010u64.to_be_bytes()).unwrap();
    let program = translate(&orb_idaw(0x1000, true, false), &ram).unwrap();
    assert_eq!(check_reason(&program, 0), check::IDAW_BOUNDARY);
}

#[test]
fn format2_idaw_into_the_control_window_is_a_program_check() {
    let ram = ram(RAM);
    ram.write(0x4000, &CONTROL_WINDOW_BASE.to_be_bytes())
        .unwrap();
    put(&ram, 0x1000, 0x02, CcwFlags::IDA, 16, 0x4000);
    let program = translate(&orb_idaw(0x1000, true, false), &ram).unwrap();
    assert_eq!(check_reason(&program, 0), check::DATA_ADDRESS);
    assert!(program.pieces.is_empty());
}

#[test]
fn format1_idaw_above_2g_is_a_program_check() {
    let ram = ram(RAM);
    ram.write(0x4000, &0x8000_1000u32.to_be_bytes()).unwrap();
    put(&ram, 0x1000, 0x02, CcwFlags::IDA, 16, 0x4000);
    let program = translate(&orb_idaw(0x1000, false, false), &ram).unwrap();
    assert_eq!(check_reason(&program, 0), check::IDAW_FORMAT1);
}

#[test]
fn data_area_outside_ram_becomes_a_check_point_after_the_valid_prefix() {
    let ram = ram(RAM);
    put(&ram, 0x1000, 0x03, CcwFlags::CC, 0, 0);
    put(
        &ram,
        0x1008,
        0x02,
        CcwFlags::empty(),
        0x100,
        u32::try_from(RAM - 0x80).unwrap(),
    );
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert!(matches!(program.ccws[0].kind(), CcwKind::Command { .. }));
    assert_eq!(check_reason(&program, 1), check::DATA_ADDRESS);
    assert_eq!(program.ccws[1].addr(), 0x1008);
    assert!(
        program.contains_cpa(0x1010),
        "the check's CPA belongs to the program"
    );
}

#[test]
fn chain_running_off_the_end_of_ram_checks_there() {
    let ram = ram(RAM);
    let last = RAM as u64 - 8;
    put(&ram, last, 0x03, CcwFlags::CC, 0, 0);
    let program = translate(&orb(u32::try_from(last).unwrap()), &ram).unwrap();
    assert_eq!(program.ccws.len(), 2);
    assert_eq!(check_reason(&program, 1), check::CCW_ADDRESS);
    assert_eq!(program.ccws[1].addr(), RAM as u64);
    let program = translate(&orb(0x7fff_0000), &ram).unwrap();
    assert_eq!(check_reason(&program, 0), check::CCW_ADDRESS);
    let program = translate(&orb(0x1004), &ram).unwrap();
    assert_eq!(check_reason(&program, 0), check::CPA_ALIGNMENT);
}

#[test]
fn orientation_loop_keeps_the_segment_going_past_the_tic() {
    let ram = ram(RAM);
    // SEARCH (CC), TIC back to it, READ: the read is reached by the
    // search's status modifier skipping the TIC.
    put(&ram, 0x1000, 0x31, CcwFlags::CC, 5, 0x2000);
    put(&ram, 0x1008, 0x08, CcwFlags::empty(), 0, 0x1000);
    put(&ram, 0x1010, 0x06, CcwFlags::empty(), 512, 0x3000);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(program.segments.len(), 1);
    assert_eq!(program.ccws.len(), 3);
    assert_eq!(program.ccws[1].kind(), CcwKind::Tic { target: 0 });
    assert_eq!(program.sequential(1), Some(2));
}

#[test]
fn tic_to_a_new_segment_and_tic_to_tic() {
    let ram = ram(RAM);
    put(&ram, 0x1000, 0x03, CcwFlags::CC, 0, 0);
    put(&ram, 0x1008, 0x08, CcwFlags::empty(), 0, 0x5000);
    put(&ram, 0x5000, 0x03, CcwFlags::empty(), 0, 0);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(program.segments.len(), 2);
    let CcwKind::Tic { target } = program.ccws[1].kind() else {
        panic!("TIC expected");
    };
    assert_eq!(
        program.ccws[usize::try_from(target).unwrap()].addr(),
        0x5000
    );
    // A TIC storm: a TIC designating itself is a TIC to a TIC.
    put(&ram, 0x6000, 0x08, CcwFlags::empty(), 0, 0x6000);
    let program = translate(&orb(0x6000), &ram).unwrap();
    let CcwKind::Tic { target } = program.ccws[0].kind() else {
        panic!("TIC expected");
    };
    assert_eq!(
        check_reason(&program, usize::try_from(target).unwrap()),
        check::TIC_TO_TIC
    );
    // A TIC to a misaligned address.
    put(&ram, 0x6000, 0x08, CcwFlags::empty(), 0, 0x6004);
    let program = translate(&orb(0x6000), &ram).unwrap();
    let CcwKind::Tic { target } = program.ccws[0].kind() else {
        panic!("TIC expected");
    };
    assert_eq!(
        check_reason(&program, usize::try_from(target).unwrap()),
        check::TIC_ALIGNMENT
    );
}

#[test]
fn endless_tic_loop_translates_into_a_finite_program() {
    let ram = ram(RAM);
    put(&ram, 0x1000, 0x03, CcwFlags::CC, 0, 0);
    put(&ram, 0x1008, 0x08, CcwFlags::empty(), 0, 0x1000);
    ram.write(0x1010, &[0xff; 8]).unwrap(); // reached only by a skip
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(program.ccws[1].kind(), CcwKind::Tic { target: 0 });
    assert!(program.ccws.len() <= 3);
}

#[test]
fn format0_ccws_use_24_bit_addresses() {
    let ram = ram(RAM);
    put0(&ram, 0x1000, 0x02, CcwFlags::CC, 16, 0x2000);
    put0(&ram, 0x1008, 0x18, CcwFlags::empty(), 0, 0x3000); // format-0 TIC: low nibble 8
    put0(&ram, 0x3000, 0x03, CcwFlags::SLI, 1, 0);
    let mut orb = orb(0x1000);
    orb.format1 = false;
    let program = translate(&orb, &ram).unwrap();
    assert!(!program.format1);
    assert_eq!(
        program.data(0),
        &[DataPiece {
            addr: 0x2000,
            len: 16
        }]
    );
    assert!(matches!(program.ccws[1].kind(), CcwKind::Tic { .. }));
    // Format 0 forbids a zero count.
    put0(&ram, 0x3000, 0x03, CcwFlags::empty(), 0, 0);
    let program = translate(&orb, &ram).unwrap();
    let target = program.index_of(0x3000).unwrap();
    assert_eq!(check_reason(&program, target), check::ZERO_COUNT);
}

#[test]
fn zero_count_nop_and_skip_access_no_storage() {
    let ram = ram(RAM);
    // A NOP with a count and an address outside RAM, a skipped read with
    // one, a zero-count format-1 CCW: none touches storage.
    put(&ram, 0x1000, 0x03, CcwFlags::CC, 64, 0x7fff_0000);
    put(
        &ram,
        0x1008,
        0x02,
        CcwFlags::CC | CcwFlags::SKIP,
        64,
        0x7fff_0000,
    );
    put(&ram, 0x1010, 0x04, CcwFlags::empty(), 0, 0x7fff_0000);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(program.ccws.len(), 3);
    assert!(program.pieces.is_empty());
    // Zero count with chain data is a program error.
    put(&ram, 0x1010, 0x02, CcwFlags::CD, 0, 0x2000);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(check_reason(&program, 2), check::CD_ZERO_COUNT);
}

#[test]
fn invalid_command_code_is_a_check_point() {
    let ram = ram(RAM);
    put(&ram, 0x1000, 0x03, CcwFlags::CC, 0, 0);
    put(&ram, 0x1008, 0x00, CcwFlags::empty(), 8, 0x2000);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(check_reason(&program, 1), check::COMMAND);
}

#[test]
fn unsupported_facilities_are_refused_and_their_flags_are_program_errors() {
    let ram = ram(RAM);
    // Without suspend or MIDAW control in the ORB (both refused below),
    // the CCW flags are program errors, as POPs has it.
    put(&ram, 0x1000, 0x02, CcwFlags::S, 8, 0x2000);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(check_reason(&program, 0), check::SUSPEND);
    put(&ram, 0x1000, 0x02, CcwFlags::MIDA, 8, 0x2000);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(check_reason(&program, 0), check::FLAGS);
    put(&ram, 0x1000, 0x02, CcwFlags::empty(), 8, 0x2000);
    for (name, orb) in [
        (
            "transport-mode ORB",
            Orb {
                transport_mode: true,
                ..orb(0x1000)
            },
        ),
        (
            "suspend control",
            Orb {
                suspend: true,
                ..orb(0x1000)
            },
        ),
        (
            "MIDAW control",
            Orb {
                midaw: true,
                ..orb(0x1000)
            },
        ),
        (
            "initial-status interruption",
            Orb {
                initial_status_interruption: true,
                ..orb(0x1000)
            },
        ),
        (
            "address-limit checking",
            Orb {
                address_limit_checking: true,
                ..orb(0x1000)
            },
        ),
    ] {
        assert_eq!(
            translate(&orb, &ram),
            Err(TranslateError::Unsupported(name))
        );
    }
    // Accepted with no effect: key, no prefetch, ORB extension.
    let relaxed = Orb {
        key: 3,
        prefetch: false,
        orb_extension: true,
        ..orb(0x1000)
    };
    assert!(translate(&relaxed, &ram).is_ok());
}

#[test]
fn too_much_data_is_refused() {
    let ram = ram(RAM);
    // 257 chained 64 KiB reads over the same buffer: 16 MiB + 64 KiB.
    for segment in 0..2u32 {
        let base = 0x1000 + segment * 0x1000;
        for i in 0..200u32 {
            put(
                &ram,
                u64::from(base + i * 8),
                0x02,
                CcwFlags::CC,
                0xffff,
                0x2_0000,
            );
        }
        put(
            &ram,
            u64::from(base + 200 * 8),
            0x08,
            CcwFlags::empty(),
            0,
            base + 0x1000,
        );
    }
    put(&ram, 0x3000, 0x03, CcwFlags::empty(), 0, 0);
    assert_eq!(
        translate(&orb(0x1000), &ram),
        Err(TranslateError::TooLarge("more than 16 MiB of data"))
    );
}

/// POPs ignores the command code of a CCW reached by data chaining: it
/// continues the transfer of the command that started the chain.
#[test]
fn data_chained_ccw_command_code_is_ignored() {
    let ram = ram(RAM);
    put(&ram, 0x1000, 0x02, CcwFlags::CD, 4, 0x2000);
    put(&ram, 0x1008, 0x00, CcwFlags::empty(), 4, 0x2004);
    let program = translate(&orb(0x1000), &ram).unwrap();
    let CcwKind::Command { direction, .. } = program.ccws[1].kind() else {
        panic!("the data-chained CCW is a command");
    };
    assert_eq!(direction, Direction::In);
    assert_eq!(
        program.data(1),
        &[DataPiece {
            addr: 0x2004,
            len: 4
        }]
    );
    // A zero count there is a program error.
    put(&ram, 0x1008, 0x02, CcwFlags::empty(), 0, 0x2004);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(check_reason(&program, 1), check::CD_ZERO_COUNT);
}

/// A status modifier may skip a forward TIC too: the CCW after it is
/// fetched, and garbage beyond it cannot refuse the START.
#[test]
fn status_modifier_can_skip_a_forward_tic() {
    let ram = ram(RAM);
    put(&ram, 0x1000, 0x31, CcwFlags::CC, 5, 0x2000);
    put(&ram, 0x1008, 0x08, CcwFlags::empty(), 0, 0x5000);
    put(&ram, 0x1010, 0x03, CcwFlags::empty(), 0, 0);
    put(&ram, 0x5000, 0x03, CcwFlags::empty(), 0, 0);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(program.sequential(1), Some(2));
    assert_eq!(program.ccws[2].addr(), 0x1010);
    // Garbage with the suspend flag after the TIC is a check point.
    put(&ram, 0x1010, 0x02, CcwFlags::S, 8, 0x2000);
    let program = translate(&orb(0x1000), &ram).unwrap();
    assert_eq!(check_reason(&program, 2), check::SUSPEND);
}

/// 200 chained READs whose format-2 IDALs (one or two IDAWs, 8 or 16
/// bytes) are packed from 0x8008: the 1 KiB IDAL fetch window ends inside
/// some IDALs, which must then be fetched again from their start, whole.
#[test]
fn long_chain_with_idals_straddling_the_fetch_window() {
    let ram = ram(RAM);
    let ccws = 200u64;
    let mut idal = 0x8008u64;
    let mut expected = Vec::new();
    for i in 0..ccws {
        let flags = if i + 1 < ccws {
            CcwFlags::CC | CcwFlags::IDA
        } else {
            CcwFlags::IDA
        };
        // From the middle of a 4 KiB block: 2 KiB stay in it, the rest (if
        // any) goes to the next block.
        let data = 0x2_0000 + 0x1000 * i + 0x800;
        let count: u16 = if i % 2 == 0 { 0x800 } else { 0x1000 };
        put(
            &ram,
            0x1000 + 8 * i,
            0x02,
            flags,
            count,
            u32::try_from(idal).unwrap(),
        );
        ram.write(idal, &data.to_be_bytes()).unwrap();
        let mut pieces = vec![DataPiece {
            addr: data,
            len: 0x800,
        }];
        idal += 8;
        if count == 0x1000 {
            ram.write(idal, &(data + 0x800).to_be_bytes()).unwrap();
            pieces.push(DataPiece {
                addr: data + 0x800,
                len: 0x800,
            });
            idal += 8;
        }
        expected.push(pieces);
    }
    let orb = orb_idaw(0x1000, true, false);
    let program = translate(&orb, &ram).unwrap();
    assert_eq!(program, translate_general_only(&orb, &ram).unwrap());
    assert_eq!(program.ccws.len(), 200);
    for (i, pieces) in expected.iter().enumerate() {
        assert_eq!(program.data(i), pieces.as_slice(), "CCW {i}");
    }
}

/// The common path stops at the first CCW it cannot take whole: here the
/// third CCW's second IDAW leaves guest RAM, and the general path makes it
/// the check point after the valid prefix.
#[test]
fn common_path_leaves_a_faulty_ccw_to_the_general_path() {
    let ram = ram(RAM);
    let flags = CcwFlags::CC | CcwFlags::IDA;
    for i in 0..3u32 {
        let idal = 0x3000 + 16 * i;
        put(&ram, 0x1000 + 8 * u64::from(i), 0x01, flags, 0x1000, idal);
        let first = 0x4_0000 + 0x1000 * u64::from(i);
        let second = if i == 2 { RAM as u64 } else { first + 0x800 };
        ram.write(u64::from(idal), &first.to_be_bytes()).unwrap();
        ram.write(u64::from(idal) + 8, &second.to_be_bytes())
            .unwrap();
    }
    let orb = orb_idaw(0x1000, true, true);
    let program = translate(&orb, &ram).unwrap();
    assert_eq!(program, translate_general_only(&orb, &ram).unwrap());
    assert_eq!(program.ccws.len(), 3);
    assert!(matches!(program.ccws[1].kind(), CcwKind::Command { .. }));
    assert_eq!(check_reason(&program, 2), check::DATA_ADDRESS);
    assert_eq!(program.data_bytes, 2 * 0x1000 + 0x1000);
}

/// Directions by POPs' command-code patterns, with codes the 3390 model
/// and Linux use.
#[test]
fn command_code_directions() {
    use Direction::{In, Out};
    let cases = [
        (0x00, None),
        (0x01, Some(Out)), // write
        (0x02, Some(In)),  // read
        (0x03, Some(Out)), // control (NOP)
        (0x04, Some(In)),  // sense
        (0x08, None),      // TIC
        (0x0c, Some(In)),  // read backward
        (0x27, Some(Out)), // PERFORM SUBSYSTEM FUNCTION
        (0x3e, Some(In)),  // READ SUBSYSTEM DATA
        (0x47, Some(Out)), // LOCATE RECORD
        (0x63, Some(Out)), // DEFINE EXTENT
        (0x85, Some(Out)), // WRITE DATA MT
        (0x86, Some(In)),  // READ DATA MT
        (0x88, None),      // format-0 TIC pattern
        (0xe4, Some(In)),  // SENSE ID
        (0xfa, Some(In)),  // READ CONFIGURATION DATA
    ];
    for (cmd, direction) in cases {
        assert_eq!(Direction::of(cmd), direction, "command {cmd:#04x}");
    }
}

/// Linux's block I/O shape, which the common path checks a block at a
/// time: `n` command-chained READs of `count` bytes, CCWs at 0x1000, each
/// with one format-2 IDAW, the IDALs one after the other from 0x8000, the
/// data in consecutive 4 KiB blocks from 0x2_0000.
fn block_reads(ram: &GuestRam, n: u64, count: u16) -> Orb {
    for i in 0..n {
        let flags = if i + 1 < n {
            CcwFlags::CC | CcwFlags::IDA
        } else {
            CcwFlags::IDA
        };
        let idal = 0x8000 + 8 * i;
        put(
            ram,
            0x1000 + 8 * i,
            0x02,
            flags,
            count,
            u32::try_from(idal).unwrap(),
        );
        ram.write(idal, &(0x2_0000 + 0x1000 * i).to_be_bytes())
            .unwrap();
    }
    orb_idaw(0x1000, true, false)
}

/// Translate with both paths, which must agree.
fn both_paths(orb: &Orb, ram: &GuestRam) -> ChannelProgram {
    let program = translate(orb, ram).unwrap();
    assert_eq!(program, translate_general_only(orb, ram).unwrap());
    program
}

#[test]
fn block_reads_translate_with_one_piece_each() {
    let ram = ram(RAM);
    let program = both_paths(&block_reads(&ram, 100, 0x1000), &ram);
    assert_eq!(program.ccws.len(), 100);
    assert_eq!(program.data_bytes, 100 * 0x1000);
    for i in [0, 31, 32, 99] {
        assert_eq!(
            program.data(i),
            &[DataPiece {
                addr: 0x2_0000 + 0x1000 * i as u64,
                len: 0x1000
            }]
        );
        assert_eq!(program.ccws[i].addr(), 0x1000 + 8 * i as u64);
    }
}

/// A CCW in the middle of a run that differs from the others (here its
/// count) is decoded on its own, with the same result.
#[test]
fn block_reads_with_one_different_count() {
    let ram = ram(RAM);
    let orb = block_reads(&ram, 64, 0x1000);
    put(
        &ram,
        0x1000 + 8 * 40,
        0x02,
        CcwFlags::CC | CcwFlags::IDA,
        0x200,
        0x8000 + 8 * 40,
    );
    let program = both_paths(&orb, &ram);
    assert_eq!(program.ccws.len(), 64);
    assert_eq!(program.data(40)[0].len, 0x200);
    assert_eq!(program.data_bytes, 63 * 0x1000 + 0x200);
}

/// One IDAW of a run designates memory outside guest RAM: the run stops
/// before it and it becomes the check point.
#[test]
fn block_reads_with_one_idaw_outside_ram() {
    let ram = ram(RAM);
    let orb = block_reads(&ram, 64, 0x1000);
    ram.write(0x8000 + 8 * 45, &(RAM as u64).to_be_bytes())
        .unwrap();
    let program = both_paths(&orb, &ram);
    assert_eq!(program.ccws.len(), 46);
    assert_eq!(check_reason(&program, 45), check::DATA_ADDRESS);
    assert_eq!(program.data(44)[0].addr, 0x2_0000 + 0x1000 * 44);
}

/// One IDAL of a run lies elsewhere, and one CCW needs a second IDAW (its
/// first one starts mid-block): each is taken on its own, with the same
/// result.
#[test]
fn block_reads_with_idals_out_of_line_or_crossing_a_block() {
    let ram = ram(RAM);
    let orb = block_reads(&ram, 64, 0x800);
    // CCW 10's IDAL at 0x9000.
    put(
        &ram,
        0x1000 + 8 * 10,
        0x02,
        CcwFlags::CC | CcwFlags::IDA,
        0x800,
        0x9000,
    );
    ram.write(0x9000, &0x5_0000u64.to_be_bytes()).unwrap();
    // CCW 20 starts 0x400 before the end of its block: two IDAWs, the
    // second one CCW 21's (block-aligned) IDAW.
    ram.write(
        0x8000 + 8 * 20,
        &(0x2_0000 + 0x1000 * 20 + 0xc00u64).to_be_bytes(),
    )
    .unwrap();
    let program = both_paths(&orb, &ram);
    assert_eq!(program.ccws.len(), 64);
    assert_eq!(
        program.data(10),
        &[DataPiece {
            addr: 0x5_0000,
            len: 0x800
        }]
    );
    assert_eq!(
        program.data(20),
        &[
            DataPiece {
                addr: 0x2_0000 + 0x1000 * 20 + 0xc00,
                len: 0x400
            },
            DataPiece {
                addr: 0x2_0000 + 0x1000 * 21,
                len: 0x400
            },
        ]
    );
}

/// The chain ends in the middle of a block; what follows in memory is not
/// part of the program.
#[test]
fn block_reads_ending_in_the_middle_of_a_block() {
    let ram = ram(RAM);
    let orb = block_reads(&ram, 64, 0x1000);
    put(
        &ram,
        0x1000 + 8 * 36,
        0x02,
        CcwFlags::IDA,
        0x1000,
        0x8000 + 8 * 36,
    );
    let program = both_paths(&orb, &ram);
    assert_eq!(program.ccws.len(), 37);
    assert_eq!(program.segments[0].len, 37);
    assert_eq!(program.data_bytes, 37 * 0x1000);
}

/// Format-1 IDAWs of a run, one with bit 0 set; direct addresses of a
/// run, one crossing the end of the 31-bit space. Guest RAM reaches past
/// 2 GiB, so only the addressing mode is wrong.
#[test]
fn block_runs_with_one_address_beyond_31_bits() {
    let ram = GuestRam::anonymous((2 << 30) + 0x10_0000).unwrap();
    for i in 0..40u64 {
        let idal = 0x8000 + 4 * i;
        put(
            &ram,
            0x1000 + 8 * i,
            0x02,
            CcwFlags::CC | CcwFlags::IDA,
            0x800,
            u32::try_from(idal).unwrap(),
        );
        let data = if i == 33 {
            0x8000_0000
        } else {
            0x2_0000 + 0x800 * i
        };
        ram.write(idal, &u32::try_from(data).unwrap().to_be_bytes())
            .unwrap();
    }
    put(
        &ram,
        0x1000 + 8 * 39,
        0x02,
        CcwFlags::IDA,
        0x800,
        0x8000 + 4 * 39,
    );
    let orb = orb_idaw(0x1000, false, true);
    let program = both_paths(&orb, &ram);
    assert_eq!(program.ccws.len(), 34);
    assert_eq!(check_reason(&program, 33), check::IDAW_FORMAT1);

    for i in 0..40u64 {
        let data = if i == 35 {
            0x7fff_f800
        } else {
            0x2_0000 + 0x1000 * i
        };
        let flags = if i < 39 {
            CcwFlags::CC
        } else {
            CcwFlags::empty()
        };
        put(
            &ram,
            0x1000 + 8 * i,
            0x01,
            flags,
            0x1000,
            u32::try_from(data).unwrap(),
        );
    }
    let program = both_paths(&orb, &ram);
    assert_eq!(program.ccws.len(), 36);
    assert_eq!(check_reason(&program, 35), check::DATA_ADDRESS);

    // IDALs (in RAM) at 2 GiB: their addresses have bit 0 set.
    for i in 0..40u64 {
        let idal = 0x8000_0000 + 4 * i;
        let flags = if i < 39 {
            CcwFlags::CC | CcwFlags::IDA
        } else {
            CcwFlags::IDA
        };
        ram.write(0x1000 + 8 * i, &[0x02, flags.bits(), 0x08, 0x00])
            .unwrap();
        ram.write(0x1004 + 8 * i, &u32::try_from(idal).unwrap().to_be_bytes())
            .unwrap();
        ram.write(idal, &0x2_0000u32.to_be_bytes()).unwrap();
    }
    let program = both_paths(&orb, &ram);
    assert_eq!(program.ccws.len(), 1);
    assert_eq!(check_reason(&program, 0), check::DATA_ADDRESS);
}

/// Data areas in two RAM regions with a hole between them: the run checks
/// each against the region it lies in, and one in the hole is a check
/// point.
#[test]
fn block_reads_in_two_ram_regions() {
    use crate::memory::tests::region;
    let mem = vm_memory::GuestMemoryMmap::from_regions(vec![
        region(0, 0x10_0000, 0, 0x10_0000),
        region(0x20_0000, 0x10_0000, 0, 0x10_0000),
    ])
    .unwrap();
    let ram = GuestRam::new(std::sync::Arc::new(mem));
    let orb = block_reads(&ram, 64, 0x1000);
    for i in 16..64u64 {
        let data = if i == 50 {
            0x18_0000
        } else {
            0x20_0000 + 0x1000 * i
        };
        ram.write(0x8000 + 8 * i, &data.to_be_bytes()).unwrap();
    }
    let program = both_paths(&orb, &ram);
    assert_eq!(program.ccws.len(), 51);
    assert_eq!(
        program.data(49),
        &[DataPiece {
            addr: 0x20_0000 + 0x1000 * 49,
            len: 0x1000
        }]
    );
    assert_eq!(check_reason(&program, 50), check::DATA_ADDRESS);
}

/// IDALs laid out backwards (each CCW's below the one before): the window
/// is fetched to end past the missing IDAL, so it holds the ones below
/// too; one- and many-IDAW IDALs alike give the general path's program.
#[test]
fn block_reads_with_descending_idals() {
    let ram = ram(RAM);
    for (count, idaws) in [(0x800u16, 1u64), (0x4000, 8)] {
        let n = 40u64;
        let mut expected = Vec::new();
        for i in 0..n {
            let flags = if i + 1 < n {
                CcwFlags::CC | CcwFlags::IDA
            } else {
                CcwFlags::IDA
            };
            let idal = 0x2_0000 - 8 * idaws * (i + 1);
            put(
                &ram,
                0x1000 + 8 * i,
                0x01,
                flags,
                count,
                u32::try_from(idal).unwrap(),
            );
            for k in 0..idaws {
                let data = 0x3_0000 + 0x800 * (idaws * i + k);
                ram.write(idal + 8 * k, &data.to_be_bytes()).unwrap();
                expected.push(DataPiece {
                    addr: data,
                    len: 0x800,
                });
            }
        }
        let program = both_paths(&orb_idaw(0x1000, true, true), &ram);
        assert_eq!(program.ccws.len(), 40);
        assert_eq!(program.pieces, expected, "count {count:#x}");
    }
}

/// One change to a run of block reads, for the property test below.
#[derive(Debug, Clone)]
enum Perturbation {
    /// CCW `at` gets this header (command code, flags, count).
    Header {
        at: u64,
        cmd: u8,
        flags: u8,
        count: u16,
    },
    /// CCW `at`'s IDAL moves to this address.
    Idal { at: u64, idal: u32 },
    /// CCW `at`'s IDAW becomes this value.
    Idaw { at: u64, idaw: u64 },
}

use proptest::prelude::{ProptestConfig, Strategy, prop_oneof};

proptest::proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..Default::default() })]

    /// Runs shaped like Linux's block I/O (one header, IDALs in a row, or
    /// direct addresses), with random changes to some CCWs, IDALs and
    /// IDAWs, in every IDAW mode: the common path builds exactly the
    /// general path's program.
    #[test]
    fn block_shaped_runs_build_the_program_of_the_general_path(
        n in 1u64..=100,
        indirect in proptest::bool::ANY,
        (format2, two_k) in proptest::sample::select(vec![(true, false), (true, true), (false, true)]),
        count in proptest::sample::select(vec![1u16, 0x200, 0x800, 0x1000, 0x1001]),
        changes in proptest::collection::vec(
            prop_oneof![
                (0u64..100, proptest::sample::select(vec![0x01u8, 0x02, 0x03, 0x04, 0x08, 0x86, 0x00]),
                    proptest::sample::select(vec![0x40u8, 0x44, 0x00, 0x04, 0x60, 0xc4, 0x54, 0x46, 0x45]),
                    proptest::sample::select(vec![0u16, 1, 0x800, 0x1000, 0xffff]))
                    .prop_map(|(at, cmd, flags, count)| Perturbation::Header { at, cmd, flags, count }),
                (0u64..100, proptest::sample::select(vec![0x9000u32, 0x8004, 0x8002, 0xf_fffc, 0x10_0000, 0x8000_8000]))
                    .prop_map(|(at, idal)| Perturbation::Idal { at, idal }),
                (0u64..100, proptest::sample::select(vec![0x0u64, 0x3_0800, 0x3_0c00, 0xf_f800, 0x10_0000, 0x8000_0000, 1 << 40, u64::MAX - 0x7ff]))
                    .prop_map(|(at, idaw)| Perturbation::Idaw { at, idaw }),
            ],
            0..4,
        ),
    ) {
        let ram = ram(RAM);
        let width = if format2 { 8 } else { 4 };
        let flags = if indirect { CcwFlags::CC | CcwFlags::IDA } else { CcwFlags::CC };
        for i in 0..n {
            let flags = if i + 1 < n { flags } else { flags.difference(CcwFlags::CC) };
            let data = 0x2_0000 + 0x1000 * i;
            let idal = 0x8000 + width * i;
            let cda = if indirect { idal } else { data };
            put(&ram, 0x1000 + 8 * i, 0x02, flags, count, u32::try_from(cda).unwrap());
            if format2 {
                ram.write(idal, &data.to_be_bytes()).unwrap();
            } else {
                ram.write(idal, &u32::try_from(data).unwrap().to_be_bytes()).unwrap();
            }
        }
        for change in &changes {
            match *change {
                Perturbation::Header { at, cmd, flags, count } => {
                    let [c0, c1] = count.to_be_bytes();
                    ram.write(0x1000 + 8 * at, &[cmd, flags, c0, c1]).unwrap();
                }
                Perturbation::Idal { at, idal } => {
                    ram.write(0x1004 + 8 * at, &idal.to_be_bytes()).unwrap();
                }
                Perturbation::Idaw { at, idaw } => {
                    let bytes = idaw.to_be_bytes();
                    let bytes = if format2 { &bytes[..] } else { &bytes[4..] };
                    ram.write(0x8000 + width * at, bytes).unwrap();
                    // An IDAL moved to 0x9000 finds the same IDAW there.
                    ram.write(0x9000, bytes).unwrap();
                }
            }
        }
        let orb = orb_idaw(0x1000, format2, two_k);
        proptest::prop_assert_eq!(translate(&orb, &ram), translate_general_only(&orb, &ram));
    }
}

/// Past a TIC (here an orientation loop back to the start), the CCWs that
/// follow are reached only by a status modifier: a segment that runs into
/// the 256-CCW limit there is not refused but ends in a check point where
/// the translator stopped fetching, its 257th entry.
#[test]
fn segment_past_a_tic_ends_in_a_not_fetched_check_at_the_limit() {
    let ram = ram(RAM);
    put(&ram, 0x1000, 0x03, CcwFlags::CC, 0, 0);
    put(&ram, 0x1008, 0x08, CcwFlags::empty(), 0, 0x1000);
    for i in 2..300u64 {
        put(&ram, 0x1000 + 8 * i, 0x03, CcwFlags::CC, 0, 0);
    }
    let program = both_paths(&orb(0x1000), &ram);
    assert_eq!(program.segments.len(), 1);
    assert_eq!(program.segments[0].len, 257);
    assert_eq!(check_reason(&program, 256), check::NOT_FETCHED);
    assert_eq!(program.ccws[256].addr(), 0x1000 + 8 * 256);
}
