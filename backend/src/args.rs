//! Command-line interface, following the vhost-user backend program
//! conventions (QEMU docs/interop/vhost-user.rst): `--socket-path` or
//! `--fd`, socket activation when neither is given, `--print-capabilities`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::image_tool::ImageCommand;

/// vhost-user backend that mediates an s390 I/O subchannel for one guest.
#[derive(Debug, Parser)]
#[command(name = "vhost-user-ccw", version, about, long_about = None)]
pub struct Args {
    /// Listen for the frontend on this UNIX socket path (created, replacing
    /// a stale socket). Repeat it, each with its own `--device`, to serve
    /// several subchannels from one process.
    #[arg(long, value_name = "PATH", conflicts_with = "fd")]
    pub socket_path: Vec<PathBuf>,

    /// Serve on an inherited, already listening UNIX socket.
    #[arg(long, value_name = "N")]
    pub fd: Option<i32>,

    /// Host subchannel to mediate: `sim[,devno=HEX][,schno=N][,chpid=HEX][,size=BYTES][,latency-us=N]`
    /// (an emulated subchannel with a buffer device), or `vfio:UUID` /
    /// `vfio:/sys/.../UUID` (a Linux vfio-ccw mdev). Default `sim`. Repeated, the n-th device goes with
    /// the n-th socket.
    #[arg(long, value_name = "SPEC")]
    pub device: Vec<String>,

    /// Print the backend's capabilities as vhost-user JSON and exit.
    #[arg(long)]
    pub print_capabilities: bool,

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
}
