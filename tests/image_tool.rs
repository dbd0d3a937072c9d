//! The `image` subcommands of the product binary as a user runs them.

use std::path::Path;
use std::process::{Command, Output};

use vhost_user_ccw_tests::{binary, succeeded};

fn image(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(binary("vhost-user-ccw"))
        .arg("image")
        .args(args)
        .args(paths)
        .output()
        .expect("run vhost-user-ccw image")
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "unexpected success");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift64).
fn pattern(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

const DATA_BYTES: usize = (10 * 15 - 2) * 12 * 4096;

#[test]
fn create_import_export_info() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let out = image(
        &["create", "--cylinders", "10", "--volser", "lnx042"],
        &[&img],
    );
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("formatting: 100%"));

    let info = succeeded(&image(&["info"], &[&img]));
    assert!(info.contains("cylinders: 10"), "{info}");
    assert!(info.contains("volser: LNX042"), "{info}");
    assert!(
        info.contains(&format!("data bytes: {DATA_BYTES}")),
        "{info}"
    );

    let data = pattern(DATA_BYTES - 12_345, 7);
    let raw = dir.path().join("in.raw");
    std::fs::write(&raw, &data).unwrap();
    succeeded(&image(&["import"], &[&img, &raw]));

    let back = dir.path().join("out.raw");
    succeeded(&image(&["export"], &[&img, &back]));
    let exported = std::fs::read(&back).unwrap();
    assert_eq!(exported.len(), DATA_BYTES);
    assert_eq!(&exported[..data.len()], &data[..]);
    assert!(exported[data.len()..].iter().all(|&b| b == 0));
}

#[test]
fn errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let err = failed(&image(&["create", "--cylinders", "0"], &[&img]));
    assert!(err.contains("at least one cylinder"), "{err}");
    let err = failed(&image(&["create", "--cylinders", "65521"], &[&img]));
    assert!(err.contains("65521"), "{err}");
    let err = failed(&image(&["create", "--model", "5"], &[&img]));
    assert!(err.contains("unknown 3390 model 5"), "{err}");
    assert!(!img.exists());

    succeeded(&image(&["create", "--cylinders", "2"], &[&img]));
    let err = failed(&image(&["create", "--cylinders", "2"], &[&img]));
    assert!(err.contains("create"), "{err}");

    let raw = dir.path().join("big.raw");
    std::fs::write(&raw, vec![1u8; (2 * 15 - 2) * 12 * 4096 + 1]).unwrap();
    let err = failed(&image(&["import"], &[&img, &raw]));
    assert!(err.contains("does not fit"), "{err}");

    let bad = dir.path().join("bad.img");
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[0] = b'X';
    std::fs::write(&bad, &bytes).unwrap();
    let err = failed(&image(&["info"], &[&bad]));
    assert!(err.contains("bad magic"), "{err}");

    bytes[0] = b'V';
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&bad, &bytes).unwrap();
    let err = failed(&image(&["export"], &[&bad, &dir.path().join("o.raw")]));
    assert!(err.contains("truncated"), "{err}");
}
