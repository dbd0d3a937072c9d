//! A patched QEMU (qemu-patches/) under `-accel qtest`, driven through the
//! qtest text protocol and the series' channel-subsystem commands.
//!
//! The binary comes from `VHOST_USER_CCW_QEMU` (scripts/test.sh builds it
//! with scripts/build-qemu.sh and sets it); the s390-ccw firmware from
//! Debian's qemu-system-data (`-L /usr/share/qemu`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vhost_user_ccw_protocol::arch::{Crw, Irb, Orb, Schib};

/// Path of the patched qemu-system-s390x.
pub fn qemu_binary() -> PathBuf {
    let path = std::env::var_os("VHOST_USER_CCW_QEMU")
        .map(PathBuf::from)
        .expect(
            "VHOST_USER_CCW_QEMU is not set: run the QEMU tests through scripts/test.sh, \
         or set it to the output of scripts/build-qemu.sh",
        );
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

/// Guest RAM of the test machine.
pub const RAM: &str = "128M";

/// A running QEMU with a qtest connection.
#[derive(Debug)]
pub struct Qemu {
    child: Child,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    _dir: tempfile::TempDir,
}

/// The command line of a test machine with one vhost-user-subchannel on
/// `backend` (device number `devno`, e.g. "fe.0.0100").
pub fn machine_args(backend: &Path, devno: &str) -> Vec<String> {
    vhost_user_subchannel_args(backend, devno, RAM)
}

/// An s390-ccw-virtio machine with `ram` of shared guest memory (which the
/// device requires) and one vhost-user-subchannel on `backend`, reconnecting
/// every 100 ms when the backend goes away.
pub fn vhost_user_subchannel_args(backend: &Path, devno: &str, ram: &str) -> Vec<String> {
    vec![
        "-machine".into(),
        "s390-ccw-virtio,memory-backend=mem".into(),
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={ram},share=on"),
        "-m".into(),
        ram.into(),
        "-chardev".into(),
        format!("socket,id=cs0,path={},reconnect-ms=100", backend.display()),
        "-device".into(),
        format!("vhost-user-subchannel,chardev=cs0,devno={devno}"),
    ]
}

/// The patched QEMU under the qtest accelerator, with Debian's firmware,
/// no display and no default devices; the caller adds the rest.
pub fn qtest_command() -> Command {
    let mut command = Command::new(qemu_binary());
    command.args([
        "-L",
        "/usr/share/qemu",
        "-accel",
        "qtest",
        "-display",
        "none",
        "-nodefaults",
    ]);
    command
}

impl Qemu {
    /// Start QEMU with `args` (the machine) under qtest.
    pub fn start(args: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("qtest.sock");
        let listener = UnixListener::bind(&socket).expect("bind qtest socket");
        let mut child = qtest_command()
            .args(["-serial", "none", "-monitor", "none"])
            .arg("-qtest")
            .arg(format!("unix:{}", socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn qemu-system-s390x");
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("QEMU exited before connecting: {status}");
                    }
                    assert!(Instant::now() < deadline, "QEMU never connected");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Self {
            child,
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
            _dir: dir,
        }
    }

    /// Send one qtest command; the text after "OK".
    pub fn command(&mut self, line: &str) -> String {
        writeln!(self.writer, "{line}").expect("send qtest command");
        loop {
            let mut reply = String::new();
            let n = self.reader.read_line(&mut reply).expect("qtest reply");
            assert!(n > 0, "QEMU closed the qtest connection after '{line}'");
            let reply = reply.trim();
            if reply.starts_with("IRQ") {
                continue;
            }
            match reply.strip_prefix("OK") {
                Some(rest) => return rest.trim().to_owned(),
                None => panic!("'{line}' failed: {reply}"),
            }
        }
    }

    /// Write guest memory.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.command(&format!("write {addr:#x} {} 0x{hex}", bytes.len()));
    }

    /// Read guest memory.
    pub fn read(&mut self, addr: u64, len: usize) -> Vec<u8> {
        let reply = self.command(&format!("read {addr:#x} {len}"));
        let hex = reply.trim_start_matches("0x");
        (0..len)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
            .collect()
    }

    fn cc(&mut self, line: &str) -> u8 {
        self.command(line).parse().expect("condition code")
    }

    /// START SUBCHANNEL with `orb`, placed at `orb_addr`.
    pub fn ssch(&mut self, schid: &str, orb_addr: u64, orb: &Orb) -> u8 {
        self.write(orb_addr, &orb.encode());
        self.cc(&format!("ccw_ssch {schid} {orb_addr:#x}"))
    }

    /// HALT SUBCHANNEL.
    pub fn hsch(&mut self, schid: &str) -> u8 {
        self.cc(&format!("ccw_hsch {schid}"))
    }

    /// CLEAR SUBCHANNEL.
    pub fn csch(&mut self, schid: &str) -> u8 {
        self.cc(&format!("ccw_csch {schid}"))
    }

    /// TEST SUBCHANNEL: cc and the IRB.
    pub fn tsch(&mut self, schid: &str) -> (u8, Irb) {
        const IRB_ADDR: u64 = 0x7000;
        let cc = self.cc(&format!("ccw_tsch {schid} {IRB_ADDR:#x}"));
        let irb = Irb::decode(&self.read(IRB_ADDR, Irb::SIZE)).expect("IRB");
        (cc, irb)
    }

    /// STORE SUBCHANNEL: cc and the SCHIB.
    pub fn stsch(&mut self, schid: &str) -> (u8, Option<Schib>) {
        const SCHIB_ADDR: u64 = 0x7100;
        let cc = self.cc(&format!("ccw_stsch {schid} {SCHIB_ADDR:#x}"));
        if cc != 0 {
            return (cc, None);
        }
        let schib = Schib::decode(&self.read(SCHIB_ADDR, Schib::SIZE)).expect("SCHIB");
        (cc, Some(schib))
    }

    /// STORE CHANNEL REPORT WORD: cc and the CRW.
    pub fn stcrw(&mut self) -> (u8, Crw) {
        const CRW_ADDR: u64 = 0x7300;
        let cc = self.cc(&format!("ccw_stcrw {CRW_ADDR:#x}"));
        let crw = Crw::decode(&self.read(CRW_ADDR, Crw::SIZE)).expect("CRW");
        (cc, crw)
    }

    /// MODIFY SUBCHANNEL with `schib`.
    pub fn msch(&mut self, schid: &str, schib: &Schib) -> u8 {
        const SCHIB_ADDR: u64 = 0x7200;
        self.write(SCHIB_ADDR, &schib.encode());
        self.cc(&format!("ccw_msch {schid} {SCHIB_ADDR:#x}"))
    }

    /// The subchannel (as "fe.0.NNNN") whose device number is `devno`.
    pub fn find_subchannel(&mut self, devno: u16) -> String {
        for schno in 0..64u16 {
            let schid = format!("fe.0.{schno:04x}");
            if let (0, Some(schib)) = self.stsch(&schid) {
                if schib.pmcw.device_number_valid && schib.pmcw.devno == devno {
                    return schid;
                }
            }
        }
        panic!("no subchannel with devno {devno:#06x}");
    }

    /// Enable the subchannel (MSCH with the E bit), as a guest driver does.
    pub fn enable(&mut self, schid: &str) {
        let (cc, schib) = self.stsch(schid);
        assert_eq!(cc, 0);
        let mut schib = schib.expect("SCHIB");
        schib.pmcw.enabled = true;
        assert_eq!(self.msch(schid, &schib), 0, "MSCH");
    }

    /// Wait for status pending and take the IRB with TEST SUBCHANNEL.
    pub fn wait_irb(&mut self, schid: &str, timeout: Duration) -> Irb {
        let what = format!("an interruption on {schid}");
        Self::poll_until(timeout, &what, || self.tsch(schid))
    }

    /// Wait for a channel report and take it with STORE CHANNEL REPORT
    /// WORD.
    pub fn wait_crw(&mut self, timeout: Duration) -> Crw {
        Self::poll_until(timeout, "a channel report", || self.stcrw())
    }

    /// Repeat an instruction until it ends with cc 0; what it stored.
    fn poll_until<T>(timeout: Duration, what: &str, mut instruction: impl FnMut() -> (u8, T)) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let (cc, stored) = instruction();
            if cc == 0 {
                return stored;
            }
            assert!(Instant::now() < deadline, "no {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kill QEMU at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}
