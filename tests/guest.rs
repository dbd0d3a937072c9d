//! A real s390x Linux guest (Debian's kernel, busybox) under the patched
//! QEMU with TCG: boots it with the backend's subchannel attached, follows
//! the console and collects what the guest's /init reports.
//!
//! The kernel and initramfs come from scripts/guest-kit.sh, whose output
//! directory `scripts/test.sh` passes in `VHOST_USER_CCW_GUEST_6_1` and
//! `VHOST_USER_CCW_GUEST_6_12`. The /init (scripts/guest-init.sh) runs the
//! steps named by `vuc.steps=` on the kernel command line and prints
//! `@@VUC` lines; see that script for the vocabulary.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use crate::image_tool;
use crate::qemu::{qemu_binary, vhost_user_subchannel_args};

/// Guest RAM: the pattern step keeps a copy of the whole partition in tmpfs.
pub const GUEST_RAM: &str = "512M";

/// Bus id of the backend's subchannel inside the guest (QEMU's devno
/// fe.0.0200: the guest sees css fe as 0).
pub const DASD_BUSID: &str = "0.0.0200";
/// Device number of the backend's subchannel on QEMU's command line.
pub const DASD_DEVNO: &str = "fe.0.0200";

/// One of Debian's s390x kernels, prepared by scripts/guest-kit.sh.
#[derive(Debug, Clone)]
pub struct Kit {
    /// "6.1" or "6.12".
    pub kernel: &'static str,
    dir: PathBuf,
}

impl Kit {
    /// The kit of `kernel` ("6.1" or "6.12") from the environment; panics
    /// (never skips) when scripts/test.sh did not prepare it.
    pub fn from_env(kernel: &'static str) -> Self {
        let var = format!("VHOST_USER_CCW_GUEST_{}", kernel.replace('.', "_"));
        let dir = std::env::var_os(&var)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!(
                    "{var} is not set: run the guest tests through scripts/test.sh, \
                 or set it to the output of `scripts/guest-kit.sh {kernel}`"
                )
            });
        for file in ["vmlinuz", "initrd.gz"] {
            assert!(
                dir.join(file).exists(),
                "{} has no {file}: rerun scripts/guest-kit.sh {kernel}",
                dir.display()
            );
        }
        Self { kernel, dir }
    }

    /// The kernel image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The initramfs.
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.gz")
    }
}

/// What to boot: the kit, the /init steps, further kernel parameters and
/// QEMU arguments beyond the backend's subchannel.
#[derive(Debug, Clone)]
pub struct BootSpec<'a> {
    /// Kernel and initramfs.
    pub kit: &'a Kit,
    /// The backend's socket.
    pub socket: &'a Path,
    /// Steps of scripts/guest-init.sh, in order.
    pub steps: &'a [&'a str],
    /// More `vuc.*` parameters, e.g. "vuc.mib=8".
    pub params: &'a [&'a str],
    /// More QEMU arguments (e.g. a virtio-blk-ccw disk for the benchmark).
    pub qemu_args: &'a [String],
}

/// A console line and when it arrived.
#[derive(Debug, Clone)]
pub struct ConsoleLine {
    /// Time since QEMU was started.
    pub at: Duration,
    /// The text, without line end.
    pub text: String,
}

/// A booted guest: QEMU running, its console followed line by line.
#[derive(Debug)]
pub struct Guest {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<ConsoleLine>,
    console: Vec<ConsoleLine>,
    started: Instant,
    kernel: &'static str,
}

/// The end of a guest run.
#[derive(Debug)]
pub struct Outcome {
    /// Every console line (and QEMU's stderr, prefixed "qemu: ").
    pub console: Vec<ConsoleLine>,
    /// When /init started (the "@@VUC init" line).
    pub init_at: Option<Duration>,
    /// From QEMU's start to its exit.
    pub total: Duration,
    kernel: &'static str,
}

/// Send the lines of `stream`, prefixed and stamped with the time since
/// `started`, to `to` until the stream ends.
fn forward(
    stream: impl Read + Send + 'static,
    prefix: &'static str,
    started: Instant,
    to: Sender<ConsoleLine>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    let text = format!("{prefix}{}", text.trim_end_matches(['\r', '\n']));
                    let line = ConsoleLine {
                        at: started.elapsed(),
                        text,
                    };
                    if to.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

impl Guest {
    /// Boot the guest: the kit's kernel and initramfs under TCG, the
    /// backend's subchannel as the only device besides `spec.qemu_args`.
    pub fn boot(spec: &BootSpec<'_>) -> Self {
        let mut append = format!(
            "console=ttysclp0 panic=-1 loglevel=1 vuc.devno={DASD_BUSID} vuc.steps={}",
            spec.steps.join(",")
        );
        for param in spec.params {
            append.push(' ');
            append.push_str(param);
        }
        let started = Instant::now();
        let mut child = Command::new(qemu_binary())
            .args(["-L", "/usr/share/qemu", "-nodefaults", "-no-reboot"])
            .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
            .args(["-accel", "tcg", "-cpu", "max", "-smp", "1"])
            .args(vhost_user_subchannel_args(
                spec.socket,
                DASD_DEVNO,
                GUEST_RAM,
            ))
            .args(spec.qemu_args)
            .arg("-kernel")
            .arg(spec.kit.vmlinuz())
            .arg("-initrd")
            .arg(spec.kit.initrd())
            .arg("-append")
            .arg(&append)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn qemu-system-s390x");
        let (tx, lines) = channel();
        forward(
            child.stdout.take().expect("stdout"),
            "",
            started,
            tx.clone(),
        );
        forward(child.stderr.take().expect("stderr"), "qemu: ", started, tx);
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
            console: Vec::new(),
            started,
            kernel: spec.kit.kernel,
        }
    }

    /// The next console line's text; None when QEMU has exited.
    fn next_line(&mut self, deadline: Instant, waiting_for: &str) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                let text = line.text.clone();
                self.console.push(line);
                Some(text)
            }
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                panic!(
                    "{} guest: no {waiting_for} in time; console:\n{}",
                    self.kernel,
                    render(&self.console)
                )
            }
            // QEMU closed stdout and stderr: it has exited.
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Wait for a console line (or QEMU message) containing `needle`; its
    /// text. Panics (with the console so far) on timeout or when the guest
    /// ends first.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_line(deadline, needle) {
                Some(text) if text.contains(needle) => return text,
                Some(text) if text.starts_with("@@VUC-END") => {
                    panic!(
                        "{} guest ended ({text}) before {needle}; console:\n{}",
                        self.kernel,
                        render(&self.console)
                    )
                }
                Some(_) => {}
                None => panic!(
                    "{} guest: QEMU exited before {needle}; console:\n{}",
                    self.kernel,
                    render(&self.console)
                ),
            }
        }
    }

    /// Send one line to the guest's console (it reads it at a WAIT).
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("console input");
        writeln!(stdin, "{line}").expect("write to the guest console");
        stdin.flush().expect("flush the guest console");
    }

    /// Wait for the guest to power off (QEMU exits) within `timeout`.
    pub fn finish(mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        while self.next_line(deadline, "power off").is_some() {}
        // Both pipes are closed; QEMU exits right after.
        let wait_deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < wait_deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    self.kill();
                    break;
                }
            }
        }
        let console = std::mem::take(&mut self.console);
        let init_at = console
            .iter()
            .find(|l| l.text.starts_with("@@VUC init"))
            .map(|l| l.at);
        let outcome = Outcome {
            console,
            init_at,
            total: self.started.elapsed(),
            kernel: self.kernel,
        };
        // Captured by the test harness: shown for failing tests and with
        // --nocapture.
        eprint!("{}", outcome.render());
        eprintln!(
            "{} guest: /init after {:.2?}, powered off after {:.2?}",
            outcome.kernel,
            outcome.init_at.unwrap_or_default(),
            outcome.total
        );
        outcome
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

fn render(lines: &[ConsoleLine]) -> String {
    lines
        .iter()
        .map(|l| format!("{:7.2} {}\n", l.at.as_secs_f64(), l.text))
        .collect()
}

impl Outcome {
    /// The whole console, timestamped.
    pub fn render(&self) -> String {
        render(&self.console)
    }

    /// Panic with the console unless every step passed and /init ended ok.
    pub fn assert_ok(&self) {
        let end = self
            .console
            .iter()
            .rev()
            .find(|l| l.text.starts_with("@@VUC-END"));
        assert!(
            end.is_some_and(|l| l.text == "@@VUC-END ok"),
            "{} guest did not end ok; console:\n{}",
            self.kernel,
            self.render()
        );
    }

    /// The `@@VUC <prefix>…` facts, without "@@VUC ".
    pub fn facts(&self, prefix: &str) -> Vec<&str> {
        self.console
            .iter()
            .filter_map(|l| l.text.strip_prefix("@@VUC "))
            .filter(|f| f.starts_with(prefix))
            .collect()
    }

    /// The one `@@VUC <prefix>…` fact; panics unless there is exactly one.
    pub fn fact(&self, prefix: &str) -> &str {
        let facts = self.facts(prefix);
        assert_eq!(
            facts.len(),
            1,
            "{} guest: expected one '{prefix}' fact; console:\n{}",
            self.kernel,
            self.render()
        );
        facts[0]
    }

    /// The kernel messages /init reported at the end.
    pub fn dmesg(&self) -> Vec<&str> {
        self.console
            .iter()
            .filter_map(|l| l.text.strip_prefix("@@VUC-DMESG "))
            .collect()
    }
}

/// The value of `key=` in a fact such as "dasd 0.0.0200 block=dasda …".
pub fn field<'a>(fact: &'a str, key: &str) -> Option<&'a str> {
    fact.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// A fresh CDL-formatted 3390 image (`vhost-user-ccw image create`) in its
/// own temporary directory.
#[derive(Debug)]
pub struct Disk {
    dir: tempfile::TempDir,
    /// The image file.
    pub image: PathBuf,
}

impl Disk {
    /// Create an image of `cylinders`.
    pub fn create(cylinders: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("dasd.img");
        image_tool(&[
            "create".as_ref(),
            "--cylinders".as_ref(),
            cylinders.to_string().as_ref(),
            image.as_os_str(),
        ]);
        Self { dir, image }
    }

    /// The backend's device spec for this image.
    pub fn device(&self) -> String {
        format!("sim,image={}", self.image.display())
    }

    /// Bytes of the data area (the guest's partition), from `image info`.
    pub fn data_bytes(&self) -> u64 {
        let info = image_tool(&["info".as_ref(), self.image.as_os_str()]);
        info.lines()
            .find_map(|l| l.strip_prefix("data bytes: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no data bytes in `image info`:\n{info}"))
    }

    /// The data area exported with `image export`, as a raw file.
    pub fn export(&self) -> PathBuf {
        let raw = self.dir.path().join("export.raw");
        let _ = std::fs::remove_file(&raw);
        image_tool(&["export".as_ref(), self.image.as_os_str(), raw.as_os_str()]);
        raw
    }
}

/// The SHA-256 of a file, as sha256sum(1) prints it.
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_owned()
}
