//! The emulated 3390 (`--device sim`) over the real socket: the channel
//! programs Linux dasd_eckd builds, run by the frontend tool against the
//! backend binary, with their data, SCSW and sense checked by the scripts'
//! expectations; and durability across a backend restart.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use vhost_user_ccw_tests::{Backend, binary, image_tool};

/// Runs `script` through the frontend tool and asserts that every
/// expectation held; returns the report.
fn run_script(backend: &Backend, name: &str, script: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.ccw"));
    std::fs::write(&path, script).unwrap();
    let out: Output = Command::new(binary("vhost-user-ccw-frontend"))
        .arg("--socket-path")
        .arg(backend.socket())
        .arg(&path)
        .output()
        .expect("run vhost-user-ccw-frontend");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{name}: no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        report["ok"],
        true,
        "{name}: {}\nscript:\n{script}",
        serde_json::to_string_pretty(&report["expectations"]).unwrap()
    );
    assert!(out.status.success());
    report
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cchh(track: u64) -> [u8; 4] {
    let cyl = u16::try_from(track / 15).unwrap().to_be_bytes();
    let head = u16::try_from(track % 15).unwrap().to_be_bytes();
    [cyl[0], cyl[1], head[0], head[1]]
}

/// Define Extent over linear tracks `first..=last`.
fn de(mask: u8, attributes: u8, first: u64, last: u64) -> String {
    let mut d = vec![mask, attributes, 0, 0, 0, 0, 0, 0];
    d.extend_from_slice(&cchh(first));
    d.extend_from_slice(&cchh(last));
    hex(&d)
}

/// Locate Record: operation byte, aux, count, track, searched record, TLF.
fn lr(op: u8, aux: u8, count: u8, track: u64, record: u8, tlf: u16) -> String {
    let mut d = vec![op, aux, 0, count];
    d.extend_from_slice(&cchh(track));
    d.extend_from_slice(&cchh(track));
    d.push(record);
    d.push(0xFF);
    d.extend_from_slice(&tlf.to_be_bytes());
    hex(&d)
}

/// A count field as hex.
fn count(track: u64, record: u8, kl: u8, dl: u16) -> String {
    let mut c = cchh(track).to_vec();
    c.push(record);
    c.push(kl);
    c.extend_from_slice(&dl.to_be_bytes());
    hex(&c)
}

/// Fill byte of block `block` in the test patterns.
fn fill(block: u64, seed: u8) -> u8 {
    u8::try_from(block % 251).unwrap() ^ seed
}

/// A chain as dasd_eckd_build_cp_cmd_single builds it for `n` 4 KiB blocks
/// of the partition from `first` (block 0 = track 2 record 1): DE, LR and
/// one READ/WRITE DATA MT per block through one format-2 IDAW each. Reads
/// land in buffers `{tag}N` (filled with 0xEE first) and are checked
/// against the pattern of `seed`; writes send that pattern.
fn rw_program(tag: &str, at: u64, first: u64, n: u8, write: bool, seed: u8) -> String {
    let first_track = 2 + first / 12;
    let last_track = 2 + (first + u64::from(n) - 1) / 12;
    let record = u8::try_from(first % 12 + 1).unwrap();
    let (mask, op, code) = if write {
        (0x80, 0x01, 0x85)
    } else {
        (0x40, 0x06, 0x86)
    };
    let data = at + 0x1000;
    let mut s = String::new();
    writeln!(
        s,
        "buffer {tag}de at={:#x} hex={}",
        at + 0x800,
        de(mask, 0xC0, first_track, last_track)
    )
    .unwrap();
    writeln!(
        s,
        "buffer {tag}lr at={:#x} hex={}",
        at + 0x900,
        lr(op, 0x80, n, first_track, record, 4096)
    )
    .unwrap();
    for i in 0..u64::from(n) {
        let block = first + i;
        let content = if write {
            format!("len=4096 fill={:#04x}", fill(block, seed))
        } else {
            "len=4096 fill=0xee".into()
        };
        writeln!(s, "buffer {tag}{i} at={:#x} {content}", data + i * 0x1000).unwrap();
        writeln!(
            s,
            "idal {tag}idal{i} at={:#x} format=2 entries={tag}{i}",
            at + 0xA00 + i * 8
        )
        .unwrap();
    }
    writeln!(s, "ccws {tag} at={at:#x}").unwrap();
    writeln!(s, "ccw 0x63 flags=CC count=16 data={tag}de").unwrap();
    writeln!(s, "ccw 0x47 flags=CC count=16 data={tag}lr").unwrap();
    for i in 0..n {
        let flags = if i + 1 < n { "CC|IDA" } else { "IDA" };
        writeln!(
            s,
            "ccw {code:#04x} flags={flags} count=4096 data={tag}idal{i}"
        )
        .unwrap();
    }
    s
}

/// Start the chain `tag` and expect its normal end after all its CCWs.
fn start_and_expect_done(tag: &str, ccws: u32) -> String {
    format!(
        "orb cpa={tag} c64=1\nstart\nexpect cc=0\nwait\n\
         expect irb fc=start sc=primary+secondary+status-pending dstat=channel-end+device-end cstat=none count=0 cpa={tag}+{}\n",
        8 * ccws
    )
}

/// A chain `sns` that reads the 32 sense bytes into buffer `sense`.
const SENSE_CHAIN: &str = "buffer sense at=0x3900 len=32 fill=0xee\n\
                           ccws sns at=0x1800\n\
                           ccw sense flags=SLI count=32 data=sense\n";

/// Start the chain `tag`, expect it to end in unit check after `ccws` of
/// its CCWs, then run [`SENSE_CHAIN`] and expect the sense to begin with
/// the bytes `sense`.
fn expect_unit_check_and_sense(tag: &str, ccws: u32, sense: &str) -> String {
    format!(
        "orb cpa={tag} c64=1\nstart\nexpect cc=0\nwait\n\
         expect irb fc=start dstat=channel-end+device-end+unit-check cstat=none cpa={tag}+{}\n\
         orb cpa=sns\nstart\nwait\nexpect buffer sense hex=\"{sense}\"\n",
        8 * ccws
    )
}

fn expect_blocks(tag: &str, first: u64, n: u8, seed: u8) -> String {
    (0..u64::from(n))
        .map(|i| {
            format!(
                "expect buffer {tag}{i} fill={:#04x}\n",
                fill(first + i, seed)
            )
        })
        .collect()
}

#[test]
fn linux_online_sequence_and_format_detection() {
    let backend = Backend::start("sim,devno=0x0190");
    let config_script = r#"
memory size=1M
buffer id    at=0x2000 len=40 fill=0xee
buffer snid  at=0x2100 len=12 fill=0xee
buffer spid  at=0x2200 hex="80 00 01 02 03 04 05 06 07 08 09 0a"
buffer snid2 at=0x2300 len=12 fill=0xee
buffer rcd   at=0x3000 len=256 fill=0xee
buffer rdc   at=0x3200 len=64 fill=0xee
buffer ssc   at=0x3300 hex="1d 00 00 00 00 00 c0" len=66
buffer prep  at=0x3400 hex="18 00 00 00 01 00 41 00 00 00 00 00"
buffer feat  at=0x3500 len=256 fill=0xee
buffer prepua at=0x3600 hex="18 00 00 00 01 00 0e 00 00 00 00 00"
buffer uac   at=0x4000 len=512 fill=0xee
buffer prepq at=0x3700 hex="18 00 00 00 01 00 52 00 00 00 00 00"
buffer vsq   at=0x3800 len=28
buffer sense at=0x3900 len=32 fill=0xee

# CIO recognition: SENSE ID.
ccws sid at=0x1000
ccw sense-id flags=SLI count=40 data=id
# Path verification: SENSE PGID, SET PGID (establish, multipath), SENSE PGID.
ccws pgid at=0x1100
ccw 0x34 flags=CC|SLI count=12 data=snid
ccw 0xaf flags=CC|SLI count=12 data=spid
ccw 0x34 flags=SLI count=12 data=snid2
# dasd_eckd_check_characteristics: RCD, RDC, PSF SSC, PSF+RSSD features.
ccws chars at=0x1200
ccw 0xfa count=256 data=rcd
ccws rdcp at=0x1300
ccw 0x64 count=64 data=rdc
ccws pssc at=0x1400
ccw 0x27 count=66 data=ssc
ccws feats at=0x1500
ccw 0x27 flags=CC count=12 data=prep
ccw 0x3e count=256 data=feat
ccws lcu at=0x1600
ccw 0x27 flags=CC count=12 data=prepua
ccw 0x3e count=512 data=uac
ccws query at=0x1700
ccw 0x27 flags=CC count=12 data=prepq
ccw 0x3e flags=SLI count=28 data=vsq
ccws sns at=0x1800
ccw sense flags=SLI count=32 data=sense

orb cpa=sid
start
wait
expect irb dstat=channel-end+device-end cstat=none count=28 cpa=sid+8
expect buffer id hex="ff 39 90 e9 33 90 02 00 40 fa 01 00 ee"

orb cpa=pgid
start
wait
expect irb dstat=channel-end+device-end cstat=none cpa=pgid+24
expect buffer snid fill=0x00
expect buffer snid2 hex="c8 00 01 02 03 04 05 06 07 08 09 0a"

orb cpa=chars
start
wait
expect irb dstat=channel-end+device-end cstat=none count=0
expect buffer rcd hex="c4 01 01 00 f0 f0 f3 f3 f9 f0"

orb cpa=rdcp
start
wait
expect irb dstat=channel-end+device-end cstat=none count=0
expect buffer rdc hex="39 90 e9 33 90 02 10 00 10 96 20 26 00 64 00 0f e0 00 e5 a2"

orb cpa=pssc
start
wait
expect irb dstat=channel-end+device-end cstat=none count=0

orb cpa=feats
start
wait
expect irb dstat=channel-end+device-end cstat=none count=0 cpa=feats+16
expect buffer feat fill=0x00

orb cpa=lcu
start
wait
expect irb dstat=channel-end+device-end cstat=none count=0

# Volume storage query: the control unit does not have it.
orb cpa=query
start
wait
expect irb dstat=channel-end+device-end+unit-check cpa=query+8
orb cpa=sns
start
wait
expect irb dstat=channel-end+device-end cstat=none
expect buffer sense hex="80 00 00 00 00 00 00 04"
"#;
    let report = run_script(&backend, "online", config_script);
    assert_eq!(report["device"]["sense_id"]["cu_type"], "0x3990");
    assert_eq!(report["device"]["sense_id"]["dev_type"], "0x3390");
    let uac = report["buffers"]["uac"].as_str().unwrap();
    assert_eq!(
        &uac[0x90 * 4..0x90 * 4 + 4],
        "0190",
        "unit address 0x90 is a base"
    );

    // dasd_eckd_analysis_ccw: counts of track 0 R1–R4 and track 1 R1.
    let analysis = format!(
        r#"
memory size=1M
buffer de  at=0x2000 hex={}
buffer lr1 at=0x2100 hex={}
buffer lr2 at=0x2200 hex={}
buffer c1 at=0x3000 len=8 fill=0xee
buffer c2 at=0x3008 len=8 fill=0xee
buffer c3 at=0x3010 len=8 fill=0xee
buffer c4 at=0x3018 len=8 fill=0xee
buffer c5 at=0x3020 len=8 fill=0xee
ccws analysis at=0x1000
ccw 0x63 flags=CC count=16 data=de
ccw 0x47 flags=CC count=16 data=lr1
ccw 0x12 flags=CC count=8 data=c1
ccw 0x12 flags=CC count=8 data=c2
ccw 0x12 flags=CC count=8 data=c3
ccw 0x12 flags=CC count=8 data=c4
ccw 0x47 flags=CC count=16 data=lr2
ccw 0x12 count=8 data=c5
start
wait
expect irb dstat=channel-end+device-end cstat=none count=0 cpa=analysis+64
expect buffer c1 hex={}
expect buffer c2 hex={}
expect buffer c3 hex={}
expect buffer c4 hex={}
expect buffer c5 hex={}
"#,
        de(0x40, 0xC4, 0, 1),
        lr(0x06, 0, 4, 0, 0, 0),
        lr(0x06, 0, 1, 1, 0, 0),
        count(0, 1, 4, 24),
        count(0, 2, 4, 144),
        count(0, 3, 4, 80),
        count(0, 4, 0, 4096),
        count(1, 1, 44, 96),
    );
    run_script(&backend, "analysis", &analysis);
}

#[test]
fn sixteen_block_chains_write_and_read_back_across_tracks() {
    let backend = Backend::start("sim,cylinders=3");
    // Blocks 5..21: track 2 R6–R12 and track 3 R1–R9.
    let mut script = String::from("memory size=4M\n");
    script += &rw_program("w", 0x10_0000, 5, 16, true, 0x3C);
    script += &rw_program("r", 0x20_0000, 5, 16, false, 0x3C);
    script += &rw_program("n", 0x30_0000, 4, 1, false, 0);
    script += &start_and_expect_done("w", 18);
    script += &start_and_expect_done("r", 18);
    script += &expect_blocks("r", 5, 16, 0x3C);
    // The block before is untouched (the CDL image is zero-filled).
    script += &start_and_expect_done("n", 3);
    script += "expect buffer n0 fill=0x00\n";
    run_script(&backend, "rw16", &script);
}

#[test]
fn error_programs_end_in_unit_check_with_the_right_sense() {
    let backend = Backend::start("sim,cylinders=3");
    let mut script = format!(
        r#"
memory size=1M
{SENSE_CHAIN}buffer blk at=0x8000 len=4096

# Read past the extent: track 2 only, 13 blocks asked.
buffer de1 at=0x2000 hex={de_track2}
buffer lr1 at=0x2100 hex={lr13}
ccws beyond at=0x1000
ccw 0x63 flags=CC count=16 data=de1
ccw 0x47 flags=CC count=16 data=lr1
{reads12}ccw 0x86 count=4096 data=blk
"#,
        de_track2 = de(0x40, 0xC0, 2, 2),
        lr13 = lr(0x06, 0x80, 13, 2, 1, 4096),
        reads12 = "ccw 0x86 flags=CC count=4096 data=blk\n".repeat(12),
    );
    script += &expect_unit_check_and_sense("beyond", 15, "00 04 00 00 00 00 02 00");
    // Write under a read-only file mask: the Locate Record is refused.
    script += &format!(
        "buffer de2 at=0x2200 hex={}\nbuffer lr2 at=0x2300 hex={}\nccws ro at=0x1100\n\
         ccw 0x63 flags=CC count=16 data=de2\nccw 0x47 flags=CC count=16 data=lr2\n\
         ccw 0x85 count=4096 data=blk\n",
        de(0x40, 0xC0, 2, 2),
        lr(0x01, 0x80, 1, 2, 1, 4096),
    );
    script += &expect_unit_check_and_sense("ro", 2, "00 04 00 00 00 00 02 00");
    // Search for a record that is not there.
    script += &format!(
        "buffer lr3 at=0x2400 hex={}\nccws nrf at=0x1200\n\
         ccw 0x63 flags=CC count=16 data=de1\nccw 0x47 flags=CC count=16 data=lr3\n\
         ccw 0x86 count=4096 data=blk\n",
        lr(0x06, 0x80, 1, 2, 13, 4096),
    );
    script += &expect_unit_check_and_sense("nrf", 2, "00 08 00 01 00 00 02 00");
    // Locate Record Extended needs Prefix, which is not there: invalid
    // command.
    script += "ccws lre at=0x1300\nccw 0x4b count=20 data=blk\n";
    script += &expect_unit_check_and_sense("lre", 1, "80 00 00 00 00 00 00 01");
    run_script(&backend, "errors", &script);
}

#[test]
fn format_track_writes_then_format_check() {
    let backend = Backend::start("sim,cylinders=3");
    // dasdfmt -b 4096 of track 5 with R0: DE 0xC2, LR format from the home
    // address, WRITE R0, 12 × WRITE CKD with only the count (SLI).
    let mut s = format!(
        "memory size=1M\n{SENSE_CHAIN}buffer de at=0x2000 hex={}\nbuffer lr at=0x2100 hex={}\nbuffer r0 at=0x2200 hex={}\n",
        de(0xC2, 0xC4, 5, 5),
        lr(0x43, 0, 13, 5, 0, 0),
        count(5, 0, 0, 8)
    );
    for r in 1..=12u8 {
        writeln!(
            s,
            "buffer c{r} at={:#x} hex={}",
            0x2300 + u32::from(r) * 8,
            count(5, r, 0, 4096)
        )
        .unwrap();
    }
    s += "ccws fmt at=0x1000\nccw 0x63 flags=CC count=16 data=de\nccw 0x47 flags=CC count=16 data=lr\nccw 0x15 flags=CC|SLI count=8 data=r0\n";
    for r in 1..=12u8 {
        let flags = if r < 12 { "CC|SLI" } else { "SLI" };
        writeln!(s, "ccw 0x1d flags={flags} count=8 data=c{r}").unwrap();
    }
    s += "orb cpa=fmt\nstart\nwait\nexpect irb dstat=channel-end+device-end cstat=none count=0 cpa=fmt+120\n";
    // The format check: 13 READ COUNTs; the 13th finds no record.
    write!(
        s,
        "buffer dec at=0x3000 hex={}\nbuffer lrc at=0x3100 hex={}\n",
        de(0x40, 0xC4, 5, 5),
        lr(0x06, 0, 13, 5, 0, 0)
    )
    .unwrap();
    for r in 1..=13u8 {
        writeln!(
            s,
            "buffer k{r} at={:#x} len=8 fill=0xee",
            0x5000 + u32::from(r) * 8
        )
        .unwrap();
    }
    s += "ccws check at=0x4000\nccw 0x63 flags=CC count=16 data=dec\nccw 0x47 flags=CC count=16 data=lrc\n";
    for r in 1..=13u8 {
        writeln!(s, "ccw 0x12 flags=CC|SLI count=8 data=k{r}").unwrap();
    }
    s += &expect_unit_check_and_sense("check", 15, "00 08");
    for r in 1..=12u8 {
        writeln!(s, "expect buffer k{r} hex={}", count(5, r, 0, 4096)).unwrap();
    }
    s += "expect buffer k13 fill=0xee\n";
    run_script(&backend, "format", &s);
}

#[test]
fn writes_survive_a_backend_restart() {
    writes_survive_a_backend_kill("");
}

/// flush=none skips the fdatasync, not the write to the file: an
/// acknowledged write still survives the backend's death.
#[test]
fn writes_survive_a_backend_restart_with_flush_none() {
    writes_survive_a_backend_kill(",flush=none");
}

fn writes_survive_a_backend_kill(options: &str) {
    let dir = tempfile::tempdir().unwrap();
    let image = create_image(dir.path(), 4);
    let spec = format!("sim,image={}{options}", image.display());
    let socket = dir.path().join("ccw.sock");

    let mut backend = Backend::start_at(&socket, &spec);
    let mut script = String::from("memory size=4M\n");
    script += &rw_program("w", 0x10_0000, 30, 16, true, 0xA5);
    script += &start_and_expect_done("w", 18);
    run_script(&backend, "write", &script);
    // The final status was presented: the data is in the file. A SIGKILL
    // now must lose nothing.
    backend.kill();

    let backend = Backend::start_at(&socket, &spec);
    let mut script = String::from("memory size=4M\n");
    script += &rw_program("r", 0x20_0000, 30, 16, false, 0xA5);
    script += &start_and_expect_done("r", 18);
    script += &expect_blocks("r", 30, 16, 0xA5);
    run_script(&backend, "read-back", &script);
    assert!(image_file_holds(&image, 30, 0xA5));
}

/// The image is mapped for reads: a page that cannot be loaded (a host I/O
/// error, or the file truncated by a process that ignores our lock) would
/// be a SIGBUS. The program reading it ends with a data check instead, the
/// backend goes on serving, and later reads report the error too rather
/// than returning zeros.
#[test]
fn image_truncated_under_the_backend_is_a_data_check_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (image, backend) = serve_after_reading(dir.path(), 16);
    // Only the header page is left.
    truncate(&image, 4096);
    let mut script = format!("memory size=4M\n{SENSE_CHAIN}");
    // The Locate Record, which orients on the first track, fails: the
    // mapping reports the failed page-in (data check) and is given up;
    // the next program's read of the file fails (equipment check).
    for (tag, first, sense) in [("b", 24, "08"), ("c", 48, "10")] {
        script += &rw_program(tag, 0x10_0000 + (first << 14), first, 16, false, 0);
        script += &expect_unit_check_and_sense(tag, 2, sense);
    }
    script += "buffer idbuf at=0x3300 len=7\nccws id at=0x3200\nccw sense-id flags=SLI count=7 data=idbuf\n\
               orb cpa=id\nstart\nwait\nexpect buffer idbuf hex=\"ff 39 90\"\n";
    run_script(&backend, "truncated", &script);
}

#[test]
fn update_write_over_a_page_that_fails_to_load_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Reading the track verifies its checksum: from now on the device
    // reads only the pages of it that it needs.
    let (image, backend) = serve_after_reading(dir.path(), 12);

    // Keep the first two pages of the slot of track 2 (its header, the
    // count fields and data of records 0 and 1); the rest of the track
    // can no longer be loaded.
    let slot_of_track_2 = 4096 + 2 * 57344;
    let kept = slot_of_track_2 + 2 * 4096;
    truncate(&image, kept);
    // Updating record 1 copies the whole track out of the mapping; the
    // lost pages come back as zeros. The program ends in a data check and
    // the track is not written back (it would have been with zeros for
    // records 2 to 12 under a good checksum).
    let mut script = format!("memory size=4M\n{SENSE_CHAIN}");
    script += &rw_program("b", 0x10_0000, 0, 1, true, 0x5a);
    script += &expect_unit_check_and_sense("b", 3, "08");
    run_script(&backend, "update", &script);
    assert_eq!(std::fs::metadata(&image).unwrap().len(), kept);
}

#[test]
fn a_second_backend_on_the_same_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let image = create_image(dir.path(), 2);
    let spec = format!("sim,image={}", image.display());
    let _first = Backend::start_at(&dir.path().join("a.sock"), &spec);
    let out = Command::new(binary("vhost-user-ccw"))
        .arg("--socket-path")
        .arg(dir.path().join("b.sock"))
        .args(["--device", &spec])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

/// A backend serving a fresh 4-cylinder image in `dir` that has read the
/// first `blocks` blocks of the partition.
fn serve_after_reading(dir: &Path, blocks: u8) -> (std::path::PathBuf, Backend) {
    let image = create_image(dir, 4);
    let backend = Backend::start(&format!("sim,image={}", image.display()));
    let mut script = String::from("memory size=4M\n");
    script += &rw_program("a", 0x10_0000, 0, blocks, false, 0);
    script += &start_and_expect_done("a", 2 + u32::from(blocks));
    run_script(&backend, "before", &script);
    (image, backend)
}

/// Cut the image file to `len` bytes behind the backend's back.
fn truncate(image: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(image)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// A fresh CDL image of `cylinders` in `dir`.
fn create_image(dir: &Path, cylinders: u32) -> std::path::PathBuf {
    let image = dir.join("disk.img");
    let cylinders = cylinders.to_string();
    image_tool(&[
        "create".as_ref(),
        "--cylinders".as_ref(),
        cylinders.as_ref(),
        image.as_os_str(),
    ]);
    image
}

/// Whether the image's data area holds block `block` of the pattern, as
/// `vhost-user-ccw image export` sees it.
fn image_file_holds(image: &Path, block: u64, seed: u8) -> bool {
    let raw = image.with_extension("raw");
    image_tool(&["export".as_ref(), image.as_os_str(), raw.as_os_str()]);
    let data = std::fs::read(&raw).unwrap();
    let at = usize::try_from(block).unwrap() * 4096;
    data[at..at + 4096].iter().all(|&b| b == fill(block, seed))
}
