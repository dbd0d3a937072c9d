//! START → final interrupt round trip over the real socket, against the
//! floor any two-process design pays: an eventfd ping-pong between two
//! processes, measured in the same run.
//!
//! Run with `scripts/bench.sh` (it builds the release binaries first), or
//! `cargo build --release --bins && cargo bench -p vhost-user-ccw-tests --bench roundtrip`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::{Duration, Instant};

use vhost_user_ccw_protocol::arch::{Ccw, CcwFlags};
use vhost_user_ccw_protocol::wire::Event;
use vhost_user_ccw_tests::{Backend, start};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const WARMUP: usize = 2_000;
const ROUNDS: usize = 10;
const PER_ROUND: usize = 2_000;

#[derive(Debug)]
struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    let total: Duration = samples.iter().sum();
    Stats {
        p50: at(50),
        p99: at(99),
        mean: total / u32::try_from(samples.len()).unwrap_or(u32::MAX),
    }
}

/// The child side of the ping-pong: echo every kick on `a` to `b`.
fn pingpong_child(socket: &str) {
    let stream = UnixStream::connect(socket).expect("connect to the parent");
    let mut buf = [0u8; 1];
    let (_, a) = stream.recv_with_fd(&mut buf).expect("receive eventfd a");
    let (_, b) = stream.recv_with_fd(&mut buf).expect("receive eventfd b");
    let (mut a, mut b) = (a.expect("fd a"), b.expect("fd b"));
    let mut counter = [0u8; 8];
    loop {
        if a.read_exact(&mut counter).is_err() {
            return;
        }
        if u64::from_ne_bytes(counter) == u64::MAX - 1 {
            return;
        }
        if b.write_all(&1u64.to_ne_bytes()).is_err() {
            return;
        }
    }
}

/// Two processes bouncing an eventfd kick: the floor for any request that
/// crosses to another process and back.
struct PingPong {
    a: EventFd,
    b: EventFd,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PingPong {
    fn new(cpu: Option<usize>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pingpong.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let exe = std::env::current_exe().expect("current_exe");
        let mut command = match cpu {
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset.arg("-c").arg(cpu.to_string()).arg(exe);
                taskset
            }
            None => Command::new(exe),
        };
        let child = command
            .arg("--pingpong-child")
            .arg(&path)
            .spawn()
            .expect("spawn ping-pong child");
        let (stream, _) = listener.accept().expect("accept");
        let a = EventFd::new(0).expect("eventfd");
        let b = EventFd::new(0).expect("eventfd");
        stream
            .send_with_fd(&[0u8][..], a.as_raw_fd())
            .expect("send a");
        stream
            .send_with_fd(&[0u8][..], b.as_raw_fd())
            .expect("send b");
        Self {
            a,
            b,
            child,
            _dir: dir,
        }
    }

    fn once(&mut self) -> Duration {
        let t0 = Instant::now();
        self.a.write(1).expect("kick");
        self.b.read().expect("answer");
        t0.elapsed()
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        let _ = self.a.write(u64::MAX - 1);
        let _ = self.child.wait();
    }
}

/// A connected frontend with a one-NOP channel program in guest RAM.
struct RoundTrip {
    conn: vhost_user_ccw_frontend::connection::Connection,
    tag: u64,
    _backend: Backend,
}

impl RoundTrip {
    fn new(cpu: Option<usize>) -> Self {
        let backend = Backend::start_on_cpu("sim,device=buffer", "warn", cpu);
        let conn = backend.connect();
        let nop = Ccw {
            cmd: 0x03,
            flags: CcwFlags::empty(),
            count: 0,
            cda: 0,
        };
        conn.write_ram(0x1000, &nop.encode_format1().expect("CCW"))
            .expect("write CCW");
        Self {
            conn,
            tag: 0,
            _backend: backend,
        }
    }

    fn once(&mut self) -> Duration {
        self.tag += 1;
        let t0 = Instant::now();
        let response = self.conn.request(&start(self.tag, 0x1000)).expect("START");
        assert_eq!(response.cc, 0);
        match self.conn.wait_event(Duration::from_secs(5)).expect("event") {
            Some(Event::Interrupt { tag, .. }) => assert_eq!(tag, self.tag),
            other => panic!("unexpected {other:?}"),
        }
        t0.elapsed()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--pingpong-child") {
        pingpong_child(&args[pos + 1]);
        return;
    }
    // Alternate short rounds so that both see the same machine conditions
    // (idle states, the other core's load).
    // `--child-cpu N` pins the ping-pong child and the backend to CPU N
    // (run the bench itself under `taskset -c M`).
    let child_cpu = args
        .iter()
        .position(|a| a == "--child-cpu")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    let mut pingpong = PingPong::new(child_cpu);
    let mut roundtrip = RoundTrip::new(child_cpu);
    let (mut base_samples, mut rt_samples) = (Vec::new(), Vec::new());
    for _ in 0..WARMUP {
        pingpong.once();
        roundtrip.once();
    }
    for _ in 0..ROUNDS {
        base_samples.extend((0..PER_ROUND).map(|_| pingpong.once()));
        rt_samples.extend((0..PER_ROUND).map(|_| roundtrip.once()));
    }
    let base = stats(base_samples);
    let rt = stats(rt_samples);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let p50 = ratio(rt.p50, base.p50);
    let p99 = ratio(rt.p99, base.p99);
    println!("| measurement | p50 | p99 | mean |");
    println!("|---|---|---|---|");
    println!(
        "| eventfd ping-pong, two processes | {:?} | {:?} | {:?} |",
        base.p50, base.p99, base.mean
    );
    println!(
        "| START -> final interrupt over the socket | {:?} | {:?} | {:?} |",
        rt.p50, rt.p99, rt.mean
    );
    println!();
    println!(
        "ratio p50 {p50:.2}x (goal <= 1.5x: {})",
        if p50 <= 1.5 { "met" } else { "NOT met" }
    );
    println!(
        "ratio p99 {p99:.2}x (goal <= 3x: {})",
        if p99 <= 3.0 { "met" } else { "NOT met" }
    );
    let _ = std::io::stdout().flush();
}
