//! Harness for the integration tests: starts the real `vhost-user-ccw`
//! binary on a private socket and connects the frontend library to it.
//!
//! The binaries are found next to the test executable's target directory
//! (`cargo build --workspace --bins` puts them there; `scripts/test.sh` does
//! that first), or in `VHOST_USER_CCW_BIN_DIR`.

pub mod guest;
pub mod qemu;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vhost_user_ccw_frontend::connection::{ConnectOptions, Connection};
use vhost_user_ccw_protocol::arch::{Ccw, CcwFlags, FunctionControl, Orb, Scsw};
use vhost_user_ccw_protocol::wire::Request;

/// Path of one of the workspace's binaries.
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("VHOST_USER_CCW_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            // target/<profile>/deps/<test> -> target/<profile>
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.to_path_buf())
        })
        .expect("cannot locate the target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running backend process on a temporary socket; killed on drop.
#[derive(Debug)]
pub struct Backend {
    child: Child,
    socket: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    /// Start `vhost-user-ccw --socket-path … --device <device>`, logging
    /// at debug level (shown by the test harness on failure).
    pub fn start(device: &str) -> Self {
        Self::start_with_log(device, "debug")
    }

    /// Start the backend with the given `RUST_LOG` filter.
    pub fn start_with_log(device: &str, log: &str) -> Self {
        Self::start_on_cpu(device, log, None)
    }

    /// Start the backend, pinned to one CPU with taskset(1) if `cpu` is
    /// given (benchmarks).
    pub fn start_on_cpu(device: &str, log: &str, cpu: Option<usize>) -> Self {
        Self::spawn(None, device, log, cpu, &[], None)
    }

    /// Start the backend with the given `RUST_LOG` filter, its standard
    /// error going to the file `stderr` (tests that read its log).
    pub fn start_logging_to(device: &str, log: &str, stderr: &Path) -> Self {
        Self::spawn(None, device, log, None, &[], Some(stderr))
    }

    /// Start the backend with extra command-line options.
    pub fn start_with_args(device: &str, extra: &[&str]) -> Self {
        Self::spawn(None, device, "debug", None, extra, None)
    }

    /// Start the backend on a given socket path (to restart one in place).
    pub fn start_at(socket: &Path, device: &str) -> Self {
        // A stale socket file would look like a listening backend.
        let _ = std::fs::remove_file(socket);
        Self::spawn(Some(socket), device, "debug", None, &[], None)
    }

    /// Spawn the backend on `socket`, or on a socket in a temporary
    /// directory that lives as long as the backend.
    fn spawn(
        socket: Option<&Path>,
        device: &str,
        log: &str,
        cpu: Option<usize>,
        extra: &[&str],
        stderr: Option<&Path>,
    ) -> Self {
        let (socket, dir) = match socket {
            Some(socket) => (socket.to_path_buf(), None),
            None => {
                let dir = tempfile::tempdir().expect("tempdir");
                (dir.path().join("ccw.sock"), Some(dir))
            }
        };
        let mut command = match cpu {
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset
                    .arg("-c")
                    .arg(cpu.to_string())
                    .arg(binary("vhost-user-ccw"));
                taskset
            }
            None => Command::new(binary("vhost-user-ccw")),
        };
        command
            .arg("--socket-path")
            .arg(&socket)
            .arg("--device")
            .arg(device)
            .args(extra)
            .env("RUST_LOG", log)
            .stdin(Stdio::null());
        if let Some(path) = stderr {
            command.stderr(std::fs::File::create(path).expect("create the log file"));
        }
        let child = command.spawn().expect("spawn vhost-user-ccw");
        let backend = Self {
            child,
            socket,
            _dir: dir,
        };
        backend.wait_for_socket();
        backend
    }

    /// Kill the backend (SIGKILL) and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_for_socket(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.socket.exists() {
            assert!(Instant::now() < deadline, "backend socket never appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Connect a frontend with default options.
    pub fn connect(&self) -> Connection {
        self.connect_with(&ConnectOptions::default())
    }

    /// Connect a frontend.
    pub fn connect_with(&self, options: &ConnectOptions) -> Connection {
        Connection::connect(&self.socket, options).expect("connect to the backend")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A format-1, prefetching ORB for the program at `cpa`.
pub fn orb(cpa: u32) -> Orb {
    Orb {
        intparm: 0x1234_5678,
        format1: true,
        prefetch: true,
        lpm: 0x80,
        cpa,
        ..Orb::default()
    }
}

/// A START request for the program at `cpa`.
pub fn start(tag: u64, cpa: u32) -> Request {
    let scsw = Scsw {
        function_control: FunctionControl::START,
        ..Scsw::default()
    };
    Request::start(tag, orb(cpa), scsw)
}

/// Wait until `path` exists (a socket the backend creates), up to 10 s.
pub fn wait_for_path(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The standard output of a finished command that must have succeeded
/// (its standard error is the panic message if it did not).
#[track_caller]
pub fn succeeded(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `vhost-user-ccw image ARGS…`; its standard output.
#[track_caller]
pub fn image_tool(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(binary("vhost-user-ccw"))
        .arg("image")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run vhost-user-ccw image {args:?}: {e}"));
    succeeded(&out)
}

/// Write a format-1 CCW into the frontend's guest RAM.
pub fn put_ccw(conn: &Connection, addr: u64, cmd: u8, flags: CcwFlags, count: u16, cda: u32) {
    let ccw = Ccw {
        cmd,
        flags,
        count,
        cda,
    };
    conn.write_ram(addr, &ccw.encode_format1().expect("format-1 CCW"))
        .expect("write the CCW");
}

/// Run a one-CCW program at 0x1000 (`cmd`, SLI, `count` bytes at 0x2000)
/// and return its final interruption's IRB.
pub fn run_one_ccw(
    conn: &mut Connection,
    tag: u64,
    cmd: u8,
    count: u16,
) -> vhost_user_ccw_protocol::arch::Irb {
    use vhost_user_ccw_protocol::wire::Event;
    put_ccw(conn, 0x1000, cmd, CcwFlags::SLI, count, 0x2000);
    let response = conn.request(&start(tag, 0x1000)).expect("START");
    assert_eq!(response.cc, 0, "START cc");
    match conn.wait_event(Duration::from_secs(5)).expect("eventq") {
        Some(Event::Interrupt { tag: got, irb }) if got == tag => irb,
        other => panic!("expected the interruption of tag {tag}, got {other:?}"),
    }
}

/// Send one command to a backend's control socket and parse the JSON line
/// it answers.
pub fn control(socket: &Path, command: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).expect("connect to the control socket");
    writeln!(stream, "{command}").expect("send the command");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("read the answer");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}
