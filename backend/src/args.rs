//! Command-line interface, following the vhost-user backend program
//! conventions (QEMU docs/interop/vhost-user.rst): `--socket-path` or
//! `--fd`, socket activation when neither is given, `--print-capabilities`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::image_tool::ImageCommand;
use crate::sandbox::{SandboxMode, SeccompMode};

/// vhost-user backend that mediates an s390 I/O subchannel for one guest.
#[derive(Debug, Parser)]
#[command(name = "vhost-user-ccw", version, about, long_about = None, args_override_self = true)]
pub struct Args {
    /// Listen for the frontend on this UNIX socket path (created, replacing
    /// a stale socket). Repeat it, each with its own `--device`, to serve
    /// several subchannels from one process.
    #[arg(long, value_name = "PATH", conflicts_with = "fd")]
    pub socket_path: Vec<PathBuf>,

    /// Serve on an inherited, already listening UNIX socket.
    #[arg(long, value_name = "N")]
    pub fd: Option<i32>,

    /// Host subchannel to mediate:
    /// `sim[,image=PATH][,model=3390-3|3390-9|3390-27][,cylinders=N][,flush=program|none]`
    /// (an emulated subchannel with a 3390 DASD; without `image`, on a
    /// scratch image that vanishes at exit; `flush=none` skips the
    /// fdatasync at the end of each program that wrote), `sim,device=buffer[,size=BYTES]` (with
    /// the sequential buffer device), each with
    /// `[,devno=HEX][,schno=N][,chpid=HEX][,latency-us=N]`; or `vfio:UUID` /
    /// `vfio:/sys/.../UUID` (a Linux vfio-ccw mdev). Default `sim`.
    /// Repeated, the n-th device goes with the n-th socket.
    #[arg(long, value_name = "SPEC")]
    pub device: Vec<String>,

    /// Print the backend's capabilities as vhost-user JSON and exit.
    #[arg(long)]
    pub print_capabilities: bool,

    /// Read settings from a per-instance file first (`key = value` lines
    /// named like the long options, e.g. `device = sim`; see
    /// docs/operations.md). Options on the command line come after it:
    /// they replace the file's single settings and add to its lists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log filter when RUST_LOG is not set: a level (error, warn, info,
    /// debug, trace) or a filter such as `info,ccw_trace=trace`.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

    /// Give the sockets the backend creates (--socket-path, --control-socket)
    /// to this group (name or number) with mode 0660, so that QEMU running
    /// in that group can connect.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Answer operator commands on this UNIX socket: `stats`
    /// (per-subchannel counters as JSON), and on sim subchannels the fault
    /// injections `vary-path` and `remove-device` (docs/operations.md).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// What the seccomp filter does with a system call outside the
    /// backend's allow-list, once setup is done [default: kill].
    #[arg(long, value_enum, value_name = "MODE")]
    pub seccomp: Option<SeccompMode>,

    /// Confine the backend after setup: `namespace` enters new user (when
    /// not root), mount, PID, network and IPC namespaces and an empty root
    /// directory; it fails with a clear error where that is not permitted.
    #[arg(long, value_enum, value_name = "MODE", default_value = "none")]
    pub sandbox: SandboxMode,

    /// Test hook: make a system call outside the allow-list after setup.
    #[arg(long, hide = true)]
    pub test_forbidden_syscall: bool,

    /// A tool subcommand instead of running the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of the product binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and manage 3390 ECKD DASD images.
    Image {
        /// What to do.
        #[command(subcommand)]
        cmd: ImageCommand,
    },
    /// Print the man page (roff), generated from this command line
    /// definition.
    #[command(hide = true)]
    Man,
}
