//! The 3390 model against the channel programs Linux and the IPL firmware
//! build, and its sense for each error.

use super::*;
use crate::host::sim::ckd::cdl::format_cdl;
use crate::host::sim::ckd::image::tests::TempImage;
use crate::host::sim::device::{InPlace, OutPlace};

const OK: DeviceStatus = DeviceStatus::CHANNEL_END.union(DeviceStatus::DEVICE_END);
const UC: DeviceStatus = OK.union(DeviceStatus::UNIT_CHECK);

/// A 5-cylinder CDL volume (75 tracks).
pub(crate) fn cdl_dasd(name: &str) -> (TempImage, Dasd) {
    let tmp = TempImage::new(name);
    let mut image = CkdImage::create(&tmp.path, Geometry::with_cylinders(5).unwrap()).unwrap();
    format_cdl(&mut image, "TEST01", |_, _| {}).unwrap();
    let dasd = Dasd::new(image, 0x0190, 7);
    (tmp, dasd)
}

fn reopen(tmp: &TempImage) -> Dasd {
    Dasd::new(CkdImage::open(&tmp.path).unwrap(), 0x0190, 7)
}

/// A command of a test chain: its code and data area (the bytes offered,
/// or a zeroed area of the CCW count for input).
#[derive(Debug, Clone)]
pub(crate) struct C {
    pub(crate) code: u8,
    pub(crate) data: Vec<u8>,
}

pub(crate) fn out(code: u8, data: &[u8]) -> C {
    C {
        code,
        data: data.to_vec(),
    }
}

pub(crate) fn input(code: u8, len: usize) -> C {
    C {
        code,
        data: vec![0; len],
    }
}

/// Define Extent over tracks `first`..=`last` (cylinder, head).
pub(crate) fn de(mask: u8, attributes: u8, first: (u16, u16), last: (u16, u16)) -> Vec<u8> {
    let mut d = vec![0u8; 16];
    d[0] = mask;
    d[1] = attributes;
    d[8..10].copy_from_slice(&first.0.to_be_bytes());
    d[10..12].copy_from_slice(&first.1.to_be_bytes());
    d[12..14].copy_from_slice(&last.0.to_be_bytes());
    d[14..16].copy_from_slice(&last.1.to_be_bytes());
    d
}

/// Locate Record: orientation/operation byte, aux, count, seek track,
/// searched record (on the seek track), transfer length factor.
pub(crate) fn lr(op: u8, aux: u8, count: u8, seek: (u16, u16), record: u8, tlf: u16) -> Vec<u8> {
    let mut d = vec![0u8; 16];
    d[0] = op;
    d[1] = aux;
    d[3] = count;
    d[4..6].copy_from_slice(&seek.0.to_be_bytes());
    d[6..8].copy_from_slice(&seek.1.to_be_bytes());
    d.copy_within(4..8, 8);
    d[12] = record;
    d[13] = 0xFF;
    d[14..16].copy_from_slice(&tlf.to_be_bytes());
    d
}

/// An 8-byte count field.
pub(crate) fn count(cyl: u16, head: u16, record: u8, kl: u8, dl: u16) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&cyl.to_be_bytes());
    c.extend_from_slice(&head.to_be_bytes());
    c.push(record);
    c.push(kl);
    c.extend_from_slice(&dl.to_be_bytes());
    c
}

/// Run `chain` as the channel would: command chaining while each command
/// ends with channel end and device end (status modifier skips nothing
/// here), then the end-of-chain hook. Returns the responses of the
/// commands executed (the hook's status added to the last).
pub(crate) fn run(dev: &mut Dasd, chain: &mut [C]) -> Vec<DeviceResponse> {
    run_with(dev, chain, |dev, c, chaining| {
        dev.execute(c.code, &mut c.data, chaining)
    })
}

/// [`run`] with each command executed by `command`.
fn run_with(
    dev: &mut Dasd,
    chain: &mut [C],
    mut command: impl FnMut(&mut Dasd, &mut C, Chaining) -> DeviceResponse,
) -> Vec<DeviceResponse> {
    let n = chain.len();
    let mut responses = Vec::new();
    for (i, c) in chain.iter_mut().enumerate() {
        let chaining = Chaining {
            first: i == 0,
            continues: i + 1 < n,
        };
        let r = command(dev, c, chaining);
        responses.push(r);
        let normal = r.status == OK || r.status == OK | DeviceStatus::STATUS_MODIFIER;
        if !normal {
            break;
        }
    }
    let extra = dev.chain_ended();
    if let Some(last) = responses.last_mut() {
        last.status |= extra;
    }
    responses
}

pub(crate) fn sense(dev: &mut Dasd) -> [u8; 32] {
    let mut s = [0u8; 32];
    let r = dev.execute(
        cmd::SENSE,
        &mut s,
        Chaining {
            first: true,
            continues: false,
        },
    );
    assert_eq!(r, DeviceResponse::done(32));
    s
}

fn last_status(responses: &[DeviceResponse]) -> DeviceStatus {
    responses.last().unwrap().status
}

/// Runs a chain expected to fail on its last executed command, returns
/// (commands executed, sense).
fn fails(dev: &mut Dasd, chain: &mut [C]) -> (usize, [u8; 32]) {
    let r = run(dev, chain);
    assert_eq!(last_status(&r), UC, "{r:?}");
    (r.len(), sense(dev))
}

#[test]
fn online_sequence_identification_path_group_and_subsystem_data() {
    let (_tmp, mut dev) = cdl_dasd("online");
    let mut chain = [input(cmd::SENSE_ID, 40)];
    let r = run(&mut dev, &mut chain);
    assert_eq!(r[0], DeviceResponse::done(12));
    assert_eq!(
        &chain[0].data[..12],
        &[
            0xFF, 0x39, 0x90, 0xE9, 0x33, 0x90, 0x02, 0x00, 0x40, 0xFA, 0x01, 0x00
        ]
    );

    // Path verification: SNID, SPID establish (multipath), SNID again.
    let mut chain = [input(cmd::SNID, 12)];
    run(&mut dev, &mut chain);
    assert_eq!(chain[0].data, vec![0; 12], "reset state, no PGID");
    let mut pgid = vec![0x80];
    pgid.extend_from_slice(&[0x11; 11]);
    let mut chain = [out(cmd::SPID, &pgid), input(cmd::SNID, 12)];
    let r = run(&mut dev, &mut chain);
    assert_eq!(r[1], DeviceResponse::done(12));
    assert_eq!(chain[1].data[0], 0xC8, "grouped, multipath");
    assert_eq!(&chain[1].data[1..], &[0x11; 11]);

    let mut chain = [input(cmd::RCD, 256), input(cmd::RDC, 64)];
    let r = run(&mut dev, &mut chain);
    assert_eq!(r[0], DeviceResponse::done(256));
    assert_eq!(r[1], DeviceResponse::done(64));
    assert_eq!(chain[0].data[0] >> 6, 3, "device NED");
    assert_eq!(chain[0].data[224], 0x80, "GNEQ");
    assert_eq!(
        &chain[1].data[12..16],
        &[0, 5, 0, 15],
        "5 cylinders, 15 heads"
    );

    // PSF Set Subsystem Characteristics is accepted.
    let mut ssc = vec![0u8; 66];
    ssc[0] = 0x1D;
    ssc[6] = 0xC0;
    assert_eq!(last_status(&run(&mut dev, &mut [out(cmd::PSF, &ssc)])), OK);

    // Feature codes: all zero (no Prefix, PAV, zHPF...).
    let mut prepare = vec![0u8; 12];
    prepare[0] = 0x18;
    prepare[6] = 0x41;
    let mut chain = [out(cmd::PSF, &prepare), input(cmd::RSSD, 256)];
    chain[1].data.fill(0xAA);
    let r = run(&mut dev, &mut chain);
    assert_eq!(r[1], DeviceResponse::done(256));
    assert!(chain[1].data.iter().all(|&b| b == 0));

    // Unit-address configuration: our unit address 0x90 is a base device.
    prepare[6] = 0x0E;
    let mut chain = [out(cmd::PSF, &prepare), input(cmd::RSSD, 512)];
    let r = run(&mut dev, &mut chain);
    assert_eq!(r[1], DeviceResponse::done(512));
    assert_eq!(&chain[1].data[0x120..0x122], &[0x01, 0x90]);

    // Volume storage query: rejected, invalid parameter.
    prepare[6] = 0x52;
    let (_, s) = fails(
        &mut dev,
        &mut [out(cmd::PSF, &prepare), input(cmd::RSSD, 28)],
    );
    assert_eq!((s[0], s[1], s[7]), (0x80, 0x00, 0x04));
    // RSSD without a prepare: invalid sequence.
    let (_, s) = fails(&mut dev, &mut [input(cmd::RSSD, 256)]);
    assert_eq!((s[0], s[7]), (0x80, 0x02));
    assert_eq!(s[27] & 0x80, 0x80, "24-byte compatible sense");
}

#[test]
fn sense_is_reported_once() {
    let (_tmp, mut dev) = cdl_dasd("sense-once");
    fails(&mut dev, &mut [input(cmd::PREFIX, 64)]);
    assert_eq!(sense(&mut dev), [0; 32]);
    let (_, s) = fails(&mut dev, &mut [input(0x4B, 20)]);
    assert_eq!((s[0], s[7]), (0x80, 0x01), "LRE: invalid command");
}

/// What dasd_eckd_analysis_ccw builds: DE over tracks 0–1, LR count 4 on
/// R0 of track 0, four READ COUNTs, LR count 1 on track 1, READ COUNT.
fn analysis_chain() -> Vec<C> {
    vec![
        out(cmd::DEFINE_EXTENT, &de(0x40, 0xC4, (0, 0), (0, 1))),
        out(cmd::LOCATE_RECORD, &lr(0x06, 0, 4, (0, 0), 0, 0)),
        input(cmd::READ_COUNT, 8),
        input(cmd::READ_COUNT, 8),
        input(cmd::READ_COUNT, 8),
        input(cmd::READ_COUNT, 8),
        out(cmd::LOCATE_RECORD, &lr(0x06, 0, 1, (0, 1), 0, 0)),
        input(cmd::READ_COUNT, 8),
    ]
}

#[test]
fn analysis_reads_the_cdl_count_fields() {
    let (_tmp, mut dev) = cdl_dasd("analysis");
    let mut chain = analysis_chain();
    let r = run(&mut dev, &mut chain);
    assert_eq!(r.len(), 8);
    assert!(r.iter().all(|r| r.status == OK), "{r:?}");
    assert_eq!(r[2], DeviceResponse::done(8));
    assert_eq!(chain[2].data, count(0, 0, 1, 4, 24));
    assert_eq!(chain[3].data, count(0, 0, 2, 4, 144));
    assert_eq!(chain[4].data, count(0, 0, 3, 4, 80));
    assert_eq!(chain[5].data, count(0, 0, 4, 0, 4096));
    assert_eq!(chain[7].data, count(0, 1, 1, 44, 96));
}

#[test]
fn unformatted_volume_gives_no_record_found() {
    let tmp = TempImage::new("unformatted");
    let image = CkdImage::create(&tmp.path, Geometry::with_cylinders(2).unwrap()).unwrap();
    let mut dev = Dasd::new(image, 0x0190, 1);
    let mut chain = analysis_chain();
    let r = run(&mut dev, &mut chain);
    assert_eq!(r.len(), 2, "the LR's search fails");
    assert_eq!(r[1].status, UC);
    let s = sense(&mut dev);
    assert_eq!((s[0], s[1], s[7]), (0x00, 0x08, 0x00));
    assert_eq!(s[3], 4, "LR count left");
    assert_eq!((s[5], s[6]), (0, 0), "cylinder 0 head 0");
}

/// DE + LR + `n` READ DATA MT of 4 KiB from block `first` of the data area
/// (track 2 on), as dasd_eckd_build_cp_cmd_single builds it.
fn read_chain(first: u64, n: u8) -> Vec<C> {
    rw_chain(first, n, 0x40, 0x06, 0x86, None)
}

fn rw_chain(first: u64, n: u8, mask: u8, op: u8, code: u8, payload: Option<&[u8]>) -> Vec<C> {
    let track = 2 + first / 12;
    let last = 2 + (first + u64::from(n) - 1) / 12;
    let ch = |t: u64| {
        (
            u16::try_from(t / 15).unwrap(),
            u16::try_from(t % 15).unwrap(),
        )
    };
    let record = u8::try_from(first % 12 + 1).unwrap();
    let mut chain = vec![
        out(cmd::DEFINE_EXTENT, &de(mask, 0xC0, ch(track), ch(last))),
        out(
            cmd::LOCATE_RECORD,
            &lr(op, 0x80, n, ch(track), record, 4096),
        ),
    ];
    for i in 0..usize::from(n) {
        chain.push(match payload {
            Some(p) => out(code, &p[i * 4096..(i + 1) * 4096]),
            None => input(code, 4096),
        });
    }
    chain
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n * 4096)
        .map(|i| u8::try_from((i / 4096 * 31 + i % 251) % 256).unwrap() ^ seed)
        .collect()
}

#[test]
fn write_then_read_sixteen_blocks_across_tracks_durably() {
    let (tmp, mut dev) = cdl_dasd("rw16");
    // Blocks 8..24: track 2 records 9–12, track 3 R1–R12.
    let data = pattern(16, 0x5A);
    let mut chain = rw_chain(8, 16, 0x80, 0x01, 0x85, Some(&data));
    let r = run(&mut dev, &mut chain);
    assert_eq!(r.len(), 18);
    assert!(r.iter().all(|r| r.status == OK), "{r:?}");
    assert!(r[2..].iter().all(|r| r.length == 4096));
    drop(dev);
    // The chain's end flushed everything: a fresh device sees it.
    let mut dev = reopen(&tmp);
    let mut chain = read_chain(8, 16);
    let r = run(&mut dev, &mut chain);
    assert!(
        r.iter()
            .all(|r| *r == DeviceResponse::done(r.length) && r.status == OK)
    );
    let read: Vec<u8> = chain[2..].iter().flat_map(|c| c.data.clone()).collect();
    assert_eq!(read, data);
    // Neighbours untouched.
    let mut chain = read_chain(7, 1);
    run(&mut dev, &mut chain);
    assert!(chain[2].data.iter().all(|&b| b == 0));
    let mut chain = read_chain(24, 1);
    run(&mut dev, &mut chain);
    assert!(chain[2].data.iter().all(|&b| b == 0));
}

/// Blocks `first..first + n` as another process sees them in the image
/// file now (a read-only open takes no lock, so the writer may still run).
fn file_blocks(tmp: &TempImage, first: u64, n: u8) -> Vec<u8> {
    let mut dev = Dasd::new(CkdImage::open_read_only(&tmp.path).unwrap(), 0x0190, 7);
    let mut chain = read_chain(first, n);
    let r = run(&mut dev, &mut chain);
    assert!(r.iter().all(|r| r.status == OK), "{r:?}");
    chain[2..].iter().flat_map(|c| c.data.clone()).collect()
}

#[test]
fn flush_program_syncs_once_per_program_that_wrote() {
    let (tmp, mut dev) = cdl_dasd("flush-program");
    assert_eq!(dev.syncs(), 0);
    let data = pattern(30, 0x33);
    // 30 blocks over three tracks: one sync for the program, not per track.
    let mut chain = rw_chain(5, 30, 0x80, 0x01, 0x85, Some(&data));
    let r = run(&mut dev, &mut chain);
    assert!(r.iter().all(|r| r.status == OK), "{r:?}");
    assert_eq!(dev.syncs(), 1);
    assert_eq!(file_blocks(&tmp, 5, 30), data);
    // A program that only reads syncs nothing.
    let mut chain = read_chain(5, 30);
    run(&mut dev, &mut chain);
    assert_eq!(dev.syncs(), 1);
    let mut chain = rw_chain(40, 2, 0x80, 0x01, 0x85, Some(&data[..2 * 4096]));
    run(&mut dev, &mut chain);
    assert_eq!(dev.syncs(), 2);
}

#[test]
fn flush_none_writes_the_file_before_the_final_status_without_syncing() {
    let (tmp, mut dev) = cdl_dasd("flush-none");
    dev.set_flush_policy(FlushPolicy::None);
    let data = pattern(30, 0x6C);
    let mut chain = rw_chain(5, 30, 0x80, 0x01, 0x85, Some(&data));
    let r = run(&mut dev, &mut chain);
    assert!(r.iter().all(|r| r.status == OK), "{r:?}");
    // Acknowledged: every track is in the file (a crash of this process
    // loses nothing), and nothing was synced.
    assert_eq!(file_blocks(&tmp, 5, 30), data);
    assert_eq!(dev.syncs(), 0);
    // A reset (CLEAR) leaves nothing unsynced, whatever the policy.
    dev.reset();
    assert_eq!(dev.syncs(), 1);
    dev.reset();
    assert_eq!(dev.syncs(), 1);
}

#[test]
fn read_past_the_extent_is_file_protected() {
    let (_tmp, mut dev) = cdl_dasd("extent");
    // Extent = track 2 only, but 13 blocks asked: the 13th is on track 3.
    let mut chain = read_chain(0, 13);
    chain[0] = out(cmd::DEFINE_EXTENT, &de(0x40, 0xC0, (0, 2), (0, 2)));
    let r = run(&mut dev, &mut chain);
    assert_eq!(r.len(), 15);
    assert_eq!(r[14].status, UC);
    let s = sense(&mut dev);
    assert_eq!((s[0], s[1]), (0x00, 0x04));
    // LR seeking outside the extent.
    let mut chain = read_chain(12, 1);
    chain[0] = out(cmd::DEFINE_EXTENT, &de(0x40, 0xC0, (0, 2), (0, 2)));
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 2);
    assert_eq!((s[0], s[1]), (0x00, 0x04));
}

#[test]
fn writes_under_a_read_only_file_mask_are_file_protected() {
    let (_tmp, mut dev) = cdl_dasd("mask");
    let data = pattern(1, 1);
    let mut chain = rw_chain(0, 1, 0x40, 0x01, 0x85, Some(&data));
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 2, "the LR is refused");
    assert_eq!((s[0], s[1]), (0x00, 0x04));
    // Format writes need a mask that permits them (10 = update only).
    let mut chain = [
        out(cmd::DEFINE_EXTENT, &de(0x80, 0xC0, (0, 5), (0, 5))),
        out(cmd::LOCATE_RECORD, &lr(0x03, 0, 1, (0, 5), 0, 0)),
        out(cmd::WRITE_CKD, &count(0, 5, 1, 0, 4096)),
    ];
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 2);
    assert_eq!((s[0], s[1]), (0x00, 0x04));
}

#[test]
fn write_inhibited_on_a_read_only_image() {
    let (tmp, dev) = cdl_dasd("readonly");
    drop(dev);
    let mut dev = Dasd::new(CkdImage::open_read_only(&tmp.path).unwrap(), 0x0190, 7);
    let data = pattern(1, 1);
    let (_, s) = fails(&mut dev, &mut rw_chain(0, 1, 0x80, 0x01, 0x85, Some(&data)));
    assert_eq!((s[0], s[1]), (0x80, 0x02));
    let r = run(&mut dev, &mut read_chain(0, 1));
    assert_eq!(last_status(&r), OK, "reads still work");
}

#[test]
fn sequence_errors_are_command_rejects() {
    let (_tmp, mut dev) = cdl_dasd("sequence");
    // LR without DE.
    let (n, s) = fails(
        &mut dev,
        &mut read_chain(0, 1)[1..]
            .iter()
            .map(|c| out(c.code, &c.data))
            .collect::<Vec<_>>(),
    );
    assert_eq!(n, 1);
    assert_eq!((s[0], s[7]), (0x80, 0x02));
    // A write in a read domain.
    let mut chain = read_chain(0, 2);
    chain[3] = out(0x85, &[0; 4096]);
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 4);
    assert_eq!((s[0], s[7]), (0x80, 0x02));
    assert_eq!(s[3], 1, "one command of the domain left");
    // DE inside a domain.
    let mut chain = read_chain(0, 2);
    chain[3] = out(cmd::DEFINE_EXTENT, &de(0x40, 0xC0, (0, 2), (0, 2)));
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 4);
    assert_eq!((s[0], s[7]), (0x80, 0x02));
    // A different second DE.
    let mut chain = read_chain(0, 1);
    chain.insert(1, out(cmd::DEFINE_EXTENT, &de(0x40, 0xC0, (0, 2), (0, 3))));
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 2);
    assert_eq!((s[0], s[7]), (0x80, 0x02));
    // DE too short, bad attributes, extent beyond the volume.
    let (_, s) = fails(&mut dev, &mut [out(cmd::DEFINE_EXTENT, &[0; 8])]);
    assert_eq!((s[0], s[7]), (0x80, 0x03));
    let (_, s) = fails(
        &mut dev,
        &mut [out(cmd::DEFINE_EXTENT, &de(0x40, 0x00, (0, 0), (0, 1)))],
    );
    assert_eq!((s[0], s[7]), (0x80, 0x04));
    let (_, s) = fails(
        &mut dev,
        &mut [out(cmd::DEFINE_EXTENT, &de(0x40, 0xC0, (0, 0), (5, 0)))],
    );
    assert_eq!((s[0], s[7]), (0x80, 0x04));
}

#[test]
fn chain_ending_inside_a_domain_is_an_incomplete_domain() {
    let (_tmp, mut dev) = cdl_dasd("incomplete");
    let mut chain = read_chain(0, 3);
    chain.truncate(4); // LR count 3, two reads
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 4);
    assert_eq!((s[0], s[1]), (0x81, 0x00));
    assert_eq!(s[3], 1);
    // An LR ending the chain.
    let mut chain = read_chain(0, 1);
    chain.truncate(2);
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 2);
    assert_eq!(s[0], 0x81);
}

#[test]
fn searched_record_missing_is_no_record_found() {
    let (_tmp, mut dev) = cdl_dasd("norecord");
    let mut chain = [
        out(cmd::DEFINE_EXTENT, &de(0x40, 0xC0, (0, 2), (0, 2))),
        out(cmd::LOCATE_RECORD, &lr(0x06, 0x80, 1, (0, 2), 13, 4096)),
        input(0x86, 4096),
    ];
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 2);
    assert_eq!((s[0], s[1], s[7]), (0x00, 0x08, 0x00));
    assert_eq!((s[5], s[6]), (0x00, 0x02), "track 0/2");
    // The format check reads one count past the last record.
    let mut chain = vec![
        out(cmd::DEFINE_EXTENT, &de(0x40, 0xC4, (0, 2), (0, 2))),
        out(cmd::LOCATE_RECORD, &lr(0x06, 0, 13, (0, 2), 0, 0)),
    ];
    for _ in 0..13 {
        chain.push(input(cmd::READ_COUNT, 8));
    }
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 15, "12 counts read, the 13th is missing");
    assert_eq!(s[1], 0x08);
}

#[test]
fn write_of_another_length_than_the_record_is_invalid_track_format() {
    let (_tmp, mut dev) = cdl_dasd("itf");
    // CDL track 0 R1 is key 4 + data 24: a 4 KiB update write does not fit.
    let mut chain = [
        out(cmd::DEFINE_EXTENT, &de(0x80, 0xC0, (0, 0), (0, 0))),
        out(cmd::LOCATE_RECORD, &lr(0x01, 0x80, 1, (0, 0), 1, 4096)),
        out(0x85, &[0; 4096]),
    ];
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 3);
    assert_eq!((s[0], s[1]), (0x00, 0x40));
    // The special record written as Linux does: WRITE KD of 4 + 24 bytes.
    let mut kd = vec![0xC9, 0xD7, 0xD3, 0xF1];
    kd.extend_from_slice(&[0x77; 24]);
    let mut chain = [
        out(cmd::DEFINE_EXTENT, &de(0x80, 0xC0, (0, 0), (0, 0))),
        out(cmd::LOCATE_RECORD, &lr(0x01, 0x80, 1, (0, 0), 1, 28)),
        out(0x8D, &kd),
    ];
    assert_eq!(last_status(&run(&mut dev, &mut chain)), OK);
    let mut chain = [
        out(cmd::DEFINE_EXTENT, &de(0x40, 0xC0, (0, 0), (0, 0))),
        out(cmd::LOCATE_RECORD, &lr(0x06, 0x80, 1, (0, 0), 1, 28)),
        input(0x8E, 28),
    ];
    let r = run(&mut dev, &mut chain);
    assert_eq!(r[2], DeviceResponse::done(28));
    assert_eq!(chain[2].data, kd);
}

#[test]
fn read_ipl_and_the_firmware_seek_search_read() {
    let (_tmp, mut dev) = cdl_dasd("ipl");
    let mut chain = [input(cmd::READ_IPL, 24)];
    let r = run(&mut dev, &mut chain);
    assert_eq!(r[0], DeviceResponse::done(24));
    assert_eq!(chain[0].data[8], 0x06, "IPL1 holds a READ");
    assert_eq!(chain[0].data[16], 0x08, "then a TIC");
    // SEEK 0/0, SEARCH ID EQ R2: R0 and R1 do not match, R2 does.
    let search = [0, 0, 0, 0, 2];
    dev.execute(
        cmd::SEEK,
        &mut [0, 0, 0, 0, 0, 0],
        Chaining {
            first: true,
            continues: true,
        },
    );
    let c = Chaining {
        first: false,
        continues: true,
    };
    assert_eq!(
        dev.execute(cmd::SEARCH_ID_EQ, &mut search.clone(), c)
            .status,
        OK
    );
    assert_eq!(
        dev.execute(cmd::SEARCH_ID_EQ, &mut search.clone(), c)
            .status,
        OK
    );
    assert_eq!(
        dev.execute(cmd::SEARCH_ID_EQ, &mut search.clone(), c)
            .status,
        OK | DeviceStatus::STATUS_MODIFIER
    );
    let mut ipl2 = vec![0; 144];
    let r = dev.execute(
        cmd::READ_DATA,
        &mut ipl2,
        Chaining {
            first: false,
            continues: false,
        },
    );
    assert_eq!(r, DeviceResponse::done(144));
    dev.chain_ended();
    // A search that never matches: no record found after two index points.
    dev.execute(
        cmd::SEEK,
        &mut [0, 0, 0, 0, 0, 2],
        Chaining {
            first: true,
            continues: true,
        },
    );
    let mut last = OK;
    for _ in 0..40 {
        last = dev
            .execute(cmd::SEARCH_ID_EQ, &mut [0, 0, 0, 2, 99], c)
            .status;
        if last != OK {
            break;
        }
    }
    assert_eq!(last, UC);
    assert_eq!(sense(&mut dev)[1], 0x08);
}

#[test]
fn multitrack_outside_a_domain_stops_at_the_cylinder_end() {
    let (_tmp, mut dev) = cdl_dasd("eoc");
    // Seek to head 14 of cylinder 0, READ COUNT MT past its 12 records.
    dev.execute(
        cmd::SEEK,
        &mut [0, 0, 0, 0, 0, 14],
        Chaining {
            first: true,
            continues: true,
        },
    );
    let c = Chaining {
        first: false,
        continues: true,
    };
    for r in 1..=12u8 {
        let mut buf = [0u8; 8];
        assert_eq!(dev.execute(0x92, &mut buf, c).status, OK);
        assert_eq!(buf[4], r);
    }
    assert_eq!(dev.execute(0x92, &mut [0u8; 8], c).status, UC);
    let s = sense(&mut dev);
    assert_eq!((s[0], s[1]), (0x00, 0x20));
}

#[test]
fn format_with_record_zero_over_two_tracks_then_read_back() {
    let (_tmp, mut dev) = cdl_dasd("format-r0");
    // dasdfmt -b 512 on tracks 0/5–0/6, R0 written: DE mask 0xC2, LR
    // operation format with home-address orientation, count 2 × (1 + 49).
    let mut chain = vec![
        out(cmd::DEFINE_EXTENT, &de(0xC2, 0xC4, (0, 5), (0, 6))),
        out(cmd::LOCATE_RECORD, &lr(0x43, 0, 100, (0, 5), 0, 0)),
    ];
    for head in 5..=6u16 {
        chain.push(out(cmd::WRITE_R0, &count(0, head, 0, 0, 8)));
        for r in 1..=49u8 {
            let code = if r == 1 && head == 6 {
                0x9D
            } else {
                cmd::WRITE_CKD
            };
            chain.push(out(code, &count(0, head, r, 0, 512)));
        }
    }
    let r = run(&mut dev, &mut chain);
    assert_eq!(r.len(), 102);
    assert!(
        r.iter().all(|r| r.status == OK),
        "{:?}",
        r.iter().find(|r| r.status != OK)
    );
    assert_eq!(
        r[3].length,
        8 + 512,
        "count only offered: key and data zero-filled"
    );
    // Format check: 49 counts, then no record found.
    let mut chain = vec![
        out(cmd::DEFINE_EXTENT, &de(0x40, 0xC4, (0, 6), (0, 6))),
        out(cmd::LOCATE_RECORD, &lr(0x06, 0, 50, (0, 6), 0, 0)),
    ];
    for _ in 0..50 {
        chain.push(input(cmd::READ_COUNT, 8));
    }
    let r = run(&mut dev, &mut chain);
    assert_eq!(r.len(), 52);
    assert_eq!(chain[2].data, count(0, 6, 1, 0, 512));
    assert_eq!(chain[50].data, count(0, 6, 49, 0, 512));
    assert_eq!(r[51].status, UC);
    assert_eq!(sense(&mut dev)[1], 0x08);
}

#[test]
fn format_without_record_zero_uses_multitrack_for_the_next_track() {
    let (tmp, mut dev) = cdl_dasd("format");
    let mut chain = vec![
        out(cmd::DEFINE_EXTENT, &de(0x00, 0xC4, (0, 7), (0, 8))),
        out(cmd::LOCATE_RECORD, &lr(0x03, 0, 6, (0, 7), 0, 0)),
    ];
    for head in 7..=8u16 {
        for r in 1..=3u8 {
            let code = if r == 1 && head == 8 {
                0x9D
            } else {
                cmd::WRITE_CKD
            };
            chain.push(out(code, &count(0, head, r, 0, 2048)));
        }
    }
    let r = run(&mut dev, &mut chain);
    assert!(r.iter().all(|r| r.status == OK), "{r:?}");
    drop(dev);
    let image = CkdImage::open_read_only(&tmp.path).unwrap();
    for head in 7..=8u16 {
        let t = image.read_track(0, head).unwrap();
        assert_eq!(
            t.records.len(),
            4,
            "R0 kept, R1-R3 written, the rest erased"
        );
        assert!(t.records[1..].iter().all(|r| r.data == vec![0; 2048]));
    }
    // WRITE R0 needs a mask permitting all writes.
    let mut dev = reopen(&tmp);
    let mut chain = [
        out(cmd::DEFINE_EXTENT, &de(0x00, 0xC4, (0, 7), (0, 7))),
        out(cmd::LOCATE_RECORD, &lr(0x43, 0, 2, (0, 7), 0, 0)),
        out(cmd::WRITE_R0, &count(0, 7, 0, 0, 8)),
        out(cmd::WRITE_CKD, &count(0, 7, 1, 0, 4096)),
    ];
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 3);
    assert_eq!(s[1], 0x04);
}

#[test]
fn format_write_that_does_not_fit_is_invalid_track_format() {
    let (_tmp, mut dev) = cdl_dasd("overflow");
    let mut chain = vec![
        out(cmd::DEFINE_EXTENT, &de(0x00, 0xC4, (0, 9), (0, 9))),
        out(cmd::LOCATE_RECORD, &lr(0x03, 0, 13, (0, 9), 0, 0)),
    ];
    for r in 1..=13u8 {
        chain.push(out(cmd::WRITE_CKD, &count(0, 9, r, 0, 4096)));
    }
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 15, "the 13th 4 KiB record does not fit");
    assert_eq!((s[0], s[1]), (0x00, 0x40));
}

#[test]
fn end_of_file_record_gives_unit_exception() {
    let (_tmp, mut dev) = cdl_dasd("eof");
    let mut chain = vec![
        out(cmd::DEFINE_EXTENT, &de(0x00, 0xC4, (0, 10), (0, 10))),
        out(cmd::LOCATE_RECORD, &lr(0x03, 0, 1, (0, 10), 0, 0)),
        out(cmd::WRITE_CKD, &count(0, 10, 1, 0, 0)),
    ];
    assert_eq!(last_status(&run(&mut dev, &mut chain)), OK);
    let mut chain = [
        out(cmd::DEFINE_EXTENT, &de(0x40, 0xC0, (0, 10), (0, 10))),
        out(cmd::LOCATE_RECORD, &lr(0x06, 0, 1, (0, 10), 1, 0)),
        input(cmd::READ_DATA, 8),
    ];
    let r = run(&mut dev, &mut chain);
    assert_eq!(r[2].status, OK | DeviceStatus::UNIT_EXCEPTION);
    assert_eq!(r[2].length, 0);
}

#[test]
fn damaged_track_is_a_data_check() {
    use std::os::unix::fs::FileExt;
    let (tmp, dev) = cdl_dasd("datacheck");
    drop(dev);
    // Flip a byte inside track 2's records (a torn write looks the same).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&tmp.path)
        .unwrap();
    let offset = super::super::DATA_OFFSET + 2 * 57_344 + 200;
    file.write_all_at(&[0xEE], offset).unwrap();
    let mut dev = reopen(&tmp);
    let (n, s) = fails(&mut dev, &mut read_chain(0, 1));
    assert_eq!(n, 2, "the LR reads the track");
    assert_eq!((s[0], s[1]), (0x08, 0x00));
}

#[test]
fn reads_in_place_match_executed_reads() {
    let (_tmp, mut a) = cdl_dasd("inplace-a");
    let (_tmp2, mut b) = cdl_dasd("inplace-b");
    let data = pattern(3, 9);
    run(&mut a, &mut rw_chain(10, 3, 0x80, 0x01, 0x85, Some(&data)));
    run(&mut b, &mut rw_chain(10, 3, 0x80, 0x01, 0x85, Some(&data)));
    // Blocks 10..13 cross from track 2 to track 3; then a READ after the
    // domain (the next record, block 13).
    let mut setup = read_chain(10, 3);
    setup.push(input(0x86, 4096));
    for (i, c) in setup.iter_mut().enumerate() {
        let chaining = Chaining {
            first: i == 0,
            continues: i + 1 < 5,
        };
        let executed = a.execute(c.code, &mut c.data, chaining);
        let InPlace::Done(response, fields) = b.read_in_place(c.code, c.data.len(), chaining)
        else {
            assert!(i < 2, "reads are answered in place");
            assert_eq!(b.execute(c.code, &mut c.data.clone(), chaining), executed);
            continue;
        };
        assert_eq!(response, executed, "command {i}");
        if response.status == OK {
            assert_eq!(fields.concat(), c.data, "command {i}");
        }
    }
}

#[test]
fn read_record_zero_from_the_index() {
    let (_tmp, mut dev) = cdl_dasd("readr0");
    // Linux's LR for READ RECORD ZERO: index orientation, operation 0x16,
    // count = records + 1.
    let mut chain = [
        out(cmd::DEFINE_EXTENT, &de(0x40, 0xC4, (0, 2), (0, 2))),
        out(cmd::LOCATE_RECORD, &lr(0xD6, 0, 2, (0, 2), 0, 0)),
        input(cmd::READ_R0, 16),
        input(cmd::READ_COUNT, 8),
    ];
    let r = run(&mut dev, &mut chain);
    assert!(r.iter().all(|r| r.status == OK), "{r:?}");
    assert_eq!(r[2], DeviceResponse::done(16));
    let mut r0 = count(0, 2, 0, 0, 8);
    r0.extend_from_slice(&[0; 8]);
    assert_eq!(chain[2].data, r0);
    assert_eq!(chain[3].data, count(0, 2, 1, 0, 4096));
    // The operation allows no writes.
    let mut chain = [
        out(cmd::DEFINE_EXTENT, &de(0x40, 0xC4, (0, 2), (0, 2))),
        out(cmd::LOCATE_RECORD, &lr(0xD6, 0, 1, (0, 2), 0, 0)),
        out(0x85, &[0; 4096]),
    ];
    let (n, s) = fails(&mut dev, &mut chain);
    assert_eq!(n, 3);
    assert_eq!((s[0], s[7]), (0x80, 0x02));
}

mod random_programs {
    use super::*;
    use proptest::prelude::*;

    /// Command codes worth trying: everything the device knows, a few it
    /// does not, and the multitrack variants.
    const CODES: &[u8] = &[
        0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0A, 0x0D, 0x0E, 0x12, 0x15, 0x16, 0x1D, 0x1E, 0x27,
        0x31, 0x34, 0x3E, 0x47, 0x4B, 0x63, 0x64, 0x85, 0x86, 0x8A, 0x8D, 0x8E, 0x92, 0x96, 0x9D,
        0x9E, 0xAF, 0xB1, 0xE4, 0xE7, 0xFA, 0x00, 0xFF,
    ];

    fn command() -> impl Strategy<Value = (u8, Vec<u8>, bool)> {
        (
            prop::sample::select(CODES),
            prop::collection::vec(any::<u8>(), 0..80),
            any::<bool>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the chain, the device answers every command with
        /// channel end + device end (possibly with status modifier or
        /// unit exception) or unit check with sense, never panics, and the
        /// volume stays readable.
        #[test]
        fn any_chain_gets_an_architected_answer(
            chains in prop::collection::vec(prop::collection::vec(command(), 1..12), 1..6),
            seed in any::<u8>(),
        ) {
            let (_tmp, mut dev) = cdl_dasd(&format!("random-{seed}"));
            for chain in chains {
                let n = chain.len();
                for (i, (code, mut data, long)) in chain.into_iter().enumerate() {
                    // Sometimes a 4 KiB area, as for block reads and writes.
                    if long {
                        data.resize(4096, 0x5A);
                    }
                    let chaining = Chaining { first: i == 0, continues: i + 1 < n };
                    let r = dev.execute(code, &mut data, chaining);
                    let extras = DeviceStatus::STATUS_MODIFIER
                        | DeviceStatus::UNIT_EXCEPTION
                        | DeviceStatus::UNIT_CHECK;
                    prop_assert!(r.status.contains(OK) && r.status.bits() & !(OK | extras).bits() == 0, "{r:?}");
                    if r.status.contains(DeviceStatus::UNIT_CHECK) {
                        let sense = dev.sense().encode();
                        prop_assert!(sense[0] != 0 || sense[1] != 0, "{sense:?}");
                        break;
                    }
                }
                dev.chain_ended();
            }
            // The analysis chain still reads the CDL labels' count fields
            // on track 0 (random writes may have changed the records, but
            // the track stays a valid track).
            let mut chain = analysis_chain();
            let r = run(&mut dev, &mut chain);
            prop_assert!(!r.is_empty());
        }
    }

    /// A Define Extent and a Locate Record that mostly pass, so that the
    /// commands after them reach the record-level code.
    fn domain_prefix() -> impl Strategy<Value = Vec<C>> {
        (
            prop::sample::select(&[0x00u8, 0x40, 0x80, 0xC0, 0xC2][..]),
            0u16..4,
            prop::sample::select(&[0x01u8, 0x03, 0x06, 0x16, 0x43, 0x86, 0xC6, 0xD6][..]),
            1u8..20,
            0u8..14,
            any::<bool>(),
        )
            .prop_map(|(mask, head, op, count, record, tlf)| {
                let tlf = if tlf { 4096 } else { 0 };
                vec![
                    out(cmd::DEFINE_EXTENT, &de(mask, 0xC0, (0, 0), (0, 5))),
                    out(
                        cmd::LOCATE_RECORD,
                        &lr(op, 0x80, count, (0, head), record, tlf),
                    ),
                ]
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Record-level commands in (mostly valid) domains: architected
        /// answers, no panic; and the device keeps working afterwards.
        #[test]
        fn commands_in_domains_get_an_architected_answer(
            chains in prop::collection::vec(
                (domain_prefix(), prop::collection::vec(command(), 1..16)),
                1..5,
            ),
            seed in any::<u8>(),
        ) {
            let (_tmp, mut dev) = cdl_dasd(&format!("random-domain-{seed}"));
            for (prefix, commands) in chains {
                let mut chain = prefix;
                chain.extend(commands.into_iter().map(|(code, mut data, long)| {
                    if long {
                        data.resize(4096, 0xA5);
                    }
                    C { code, data }
                }));
                let n = chain.len();
                for (i, c) in chain.iter_mut().enumerate() {
                    let chaining = Chaining { first: i == 0, continues: i + 1 < n };
                    // Reads take the in-place path, as in the channel.
                    let r = match dev.read_in_place(c.code, c.data.len(), chaining) {
                        InPlace::Done(r, fields) => {
                            let len: usize = fields.iter().map(|f| f.len()).sum();
                            prop_assert_eq!(r.length, len);
                            r
                        }
                        InPlace::No => dev.execute(c.code, &mut c.data, chaining),
                    };
                    let allowed = OK
                        | DeviceStatus::STATUS_MODIFIER
                        | DeviceStatus::UNIT_EXCEPTION
                        | DeviceStatus::UNIT_CHECK;
                    prop_assert!(r.status.contains(OK), "{r:?}");
                    prop_assert_eq!(r.status.bits() & !allowed.bits(), 0);
                    if r.status.contains(DeviceStatus::UNIT_CHECK) {
                        break;
                    }
                }
                prop_assert_eq!(dev.chain_ended(), DeviceStatus::empty());
            }
            let r = run(&mut dev, &mut read_chain(0, 1));
            prop_assert!(!r.is_empty());
        }
    }
}

/// Run `chain` as [`run`] does, but with every WRITE DATA taken in place
/// ([`DeviceModel::write_in_place`]), the way the sim's channel runs it,
/// offering the command's data (which may be shorter than the record).
fn run_writes_in_place(dev: &mut Dasd, chain: &mut [C]) -> Vec<DeviceResponse> {
    run_with(dev, chain, |dev, c, chaining| {
        if c.code & !cmd::MT != cmd::WRITE_DATA {
            return dev.execute(c.code, &mut c.data, chaining);
        }
        match dev.write_in_place(c.code, c.data.len(), chaining) {
            OutPlace::Into(r, [key, data]) => {
                assert!(key.is_empty(), "WRITE DATA has no key field");
                fill(data, &c.data);
                r
            }
            OutPlace::No => panic!("WRITE DATA not taken in place"),
        }
    })
}

#[test]
fn writes_taken_in_place_store_what_execute_stores() {
    let (_tmp, mut dev) = cdl_dasd("in-place");
    let data = pattern(14, 0x3C);
    let r = run_writes_in_place(
        &mut dev,
        &mut rw_chain(5, 14, 0x80, 0x01, 0x85, Some(&data)),
    );
    assert_eq!(r.len(), 16);
    assert!(r.iter().all(|r| r.status == OK), "{r:?}");
    assert!(r[2..].iter().all(|r| r.length == 4096));
    let mut chain = read_chain(5, 14);
    run(&mut dev, &mut chain);
    let read: Vec<u8> = chain[2..].iter().flat_map(|c| c.data.clone()).collect();
    assert_eq!(read, data);

    // A short offer: the rest of the record is zeros, and the device still
    // wants the whole record (the channel reports incorrect length).
    let mut chain = rw_chain(30, 1, 0x80, 0x01, 0x85, Some(&pattern(1, 0x77)));
    chain[2].data.truncate(100);
    let r = run_writes_in_place(&mut dev, &mut chain);
    assert_eq!(r[2], DeviceResponse::done(4096));
    let mut chain = read_chain(30, 1);
    run(&mut dev, &mut chain);
    assert_eq!(chain[2].data[..100], pattern(1, 0x77)[..100]);
    assert!(chain[2].data[100..].iter().all(|&b| b == 0));

    // Out of sequence (no Locate Record): refused before taking data.
    let chaining = Chaining {
        first: true,
        continues: false,
    };
    match dev.write_in_place(0x85, 4096, chaining) {
        OutPlace::Into(r, [key, data]) => {
            assert_eq!(r, DeviceResponse::unit_check());
            assert!(key.is_empty() && data.is_empty());
        }
        OutPlace::No => panic!("WRITE DATA not taken in place"),
    }
    dev.chain_ended();
    let s = sense(&mut dev);
    assert_eq!((s[0], s[7]), (0x80, 0x02));
}

/// A format write after an R0 with more than the standard 8 data bytes:
/// the long R0 takes room from the records, so a record that fits after a
/// standard R0 is an invalid track format here (a random program found it
/// laid out a track its image slot could not hold, and failed at write-back
/// instead).
#[test]
fn records_after_a_long_r0_that_overflow_the_track_are_invalid_track_format() {
    let (_tmp, mut dev) = cdl_dasd("long-r0");
    let record = |r: u8, dl: u16| {
        let mut bytes = count(0, 3, r, 0, dl);
        bytes.resize(8 + usize::from(dl), 0x3C);
        bytes
    };
    let chain = |r1: u16| {
        vec![
            out(cmd::DEFINE_EXTENT, &de(0xC0, 0xC0, (0, 3), (0, 3))),
            out(cmd::LOCATE_RECORD, &lr(0x03, 0x80, 2, (0, 3), 0, 0)),
            out(0x15, &record(0, 20_000)),
            out(0x1D, &record(1, r1)),
        ]
    };
    let (n, s) = fails(&mut dev, &mut chain(40_000));
    assert_eq!(n, 4);
    assert_eq!((s[0], s[1]), (0x00, 0x40));
    // A record that fits beside the long R0 is taken, and the track reads
    // back.
    assert_eq!(last_status(&run(&mut dev, &mut chain(30_000))), OK);
    let mut read = [
        out(cmd::DEFINE_EXTENT, &de(0x40, 0xC0, (0, 3), (0, 3))),
        out(cmd::LOCATE_RECORD, &lr(0x06, 0x80, 1, (0, 3), 1, 30_000)),
        input(0x86, 30_000),
    ];
    assert_eq!(run(&mut dev, &mut read)[2], DeviceResponse::done(30_000));
    assert!(read[2].data.iter().all(|&b| b == 0x3C));
}
