//! vhost-user-ccw: a vhost-user backend that mediates one s390 I/O
//! subchannel per socket for a guest.
//!
//! `run` listens on the configured socket and serves connection after
//! connection: each connection is a fresh vhost-user daemon (a [`Session`]),
//! all sharing the socket's [`Subchannel`]. The end of a connection is the
//! subchannel's CLOSE event.

pub mod args;
pub mod config;
pub mod control;
pub mod host;
pub mod image_tool;
pub mod instance;
pub mod mapped_file;
pub mod memory;
pub mod sandbox;
pub mod session;
pub mod stats;
pub mod subchannel;
pub mod sys;
pub mod translate;

use std::sync::{Arc, Mutex, RwLock};

use log::{error, info, warn};
use thiserror::Error;
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::config::{Config, DeviceSpec, Listen, Operations, SimDevice};
use crate::control::Watched;
use crate::host::sim::SimSubchannel;
use crate::host::sim::ckd::dasd::{Dasd, FlushPolicy};
use crate::host::sim::ckd::{CkdError, Geometry};
use crate::host::sim::device::{BufferDevice, DeviceModel};
use crate::host::vfio::{VfioSubchannel, VfioTarget};
use crate::host::{HostError, HostSubchannel};
use crate::session::{HOST_EVENT, Session, SharedSubchannel, lock};
use crate::stats::SubchannelStats;
use crate::subchannel::{Input, Subchannel};

pub use crate::config::ConfigError;

/// Failures that stop the backend.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The host subchannel could not be set up.
    #[error("host subchannel: {0}")]
    Host(#[from] HostError),
    /// The DASD image could not be opened or created.
    #[error("device image {path}: {source}")]
    Image {
        /// The image file (or "scratch").
        path: String,
        /// Why.
        source: CkdError,
    },
    /// The listening socket could not be set up.
    #[error("socket {what}: {source}")]
    Socket {
        /// Which socket.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// vhost-user-backend failed outside of a session.
    #[error("vhost-user daemon: {0}")]
    Daemon(String),
    /// An OS resource could not be created.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `--socket-group` names no group.
    #[error("--socket-group {0}: no such group")]
    NoSuchGroup(String),
    /// Confinement failed.
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
}

/// The capabilities document of `--print-capabilities` (QEMU's
/// vhost-user.json `VHostUserBackendCapabilities`).
pub fn capabilities_json() -> String {
    serde_json::json!({ "type": "ccw", "features": [] }).to_string()
}

/// Build the host subchannel the configuration names.
pub fn build_host(device: &DeviceSpec) -> Result<Box<dyn HostSubchannel>, Error> {
    match device {
        DeviceSpec::Sim { config, device } => {
            let model: Box<dyn DeviceModel> = match device {
                SimDevice::Buffer { size } => Box::new(BufferDevice::new(*size)),
                SimDevice::Dasd {
                    image: Some(path),
                    flush,
                    ..
                } => {
                    let mut dasd =
                        Dasd::open(path, config.devno).map_err(|source| Error::Image {
                            path: path.display().to_string(),
                            source,
                        })?;
                    dasd.set_flush_policy(*flush);
                    info!(
                        "sim {:04x}: 3390 on {} ({} cylinders, flush={})",
                        config.devno,
                        path.display(),
                        dasd.geometry().cylinders(),
                        match flush {
                            FlushPolicy::Program => "program",
                            FlushPolicy::None =>
                                "none: writes reach the host's page cache, not stable storage",
                        }
                    );
                    Box::new(dasd)
                }
                SimDevice::Dasd {
                    image: None,
                    geometry,
                    flush,
                } => {
                    let geometry = match geometry {
                        Some(g) => *g,
                        None => Geometry::with_cylinders(config::DEFAULT_SCRATCH_CYLINDERS)
                            .map_err(|e| Error::Image {
                                path: "scratch".into(),
                                source: e.into(),
                            })?,
                    };
                    let mut dasd =
                        Dasd::scratch(geometry, config.devno).map_err(|source| Error::Image {
                            path: "scratch".into(),
                            source,
                        })?;
                    dasd.set_flush_policy(*flush);
                    warn!(
                        "sim {:04x}: 3390 on a scratch CDL image of {} cylinders: NOT DURABLE, \
                         its contents vanish at exit (give image=PATH to keep them)",
                        config.devno,
                        geometry.cylinders()
                    );
                    Box::new(dasd)
                }
            };
            Ok(Box::new(SimSubchannel::new(config.clone(), model)?))
        }
        DeviceSpec::Vfio(target) => {
            let target = VfioTarget::parse(target).map_err(|e| ConfigError::Device {
                spec: format!("vfio:{target}"),
                reason: e.to_string(),
            })?;
            Ok(Box::new(VfioSubchannel::new(target)?))
        }
    }
}

fn open_listener(listen: &Listen) -> Result<Listener, Error> {
    match listen {
        Listen::Path(path) => Listener::new(path, true).map_err(|e| Error::Socket {
            what: path.display().to_string(),
            source: std::io::Error::other(e),
        }),
        Listen::Fd(fd) => {
            let listener = sys::listener_from_fd(*fd).map_err(|source| Error::Socket {
                what: format!("fd {fd}"),
                source,
            })?;
            Ok(Listener::from(listener))
        }
    }
}

/// Give a socket the backend created to the operator's group, mode 0660.
fn share_socket(path: &std::path::Path, gid: Option<u32>) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let Some(gid) = gid else { return Ok(()) };
    let fail = |source| Error::Socket {
        what: path.display().to_string(),
        source,
    };
    std::os::unix::fs::chown(path, None, Some(gid)).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(fail)
}

fn resolve_group(group: &str) -> Result<u32, Error> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    sys::group_id(group)?.ok_or_else(|| Error::NoSuchGroup(group.to_owned()))
}

fn listen_name(listen: &Listen) -> String {
    match listen {
        Listen::Path(path) => path.display().to_string(),
        Listen::Fd(fd) => format!("fd {fd}"),
    }
}

/// Serve every configured socket until the process is stopped. Each
/// socket has its own subchannel, sessions and thread: a failure on one
/// never reaches the others, and a failed connection does not end the
/// service of its socket. Setup failures (a socket that cannot be created,
/// a device that cannot be built, confinement that is not permitted) stop
/// the process before anything is served.
pub fn run(config: &Config) -> Result<(), Error> {
    let operations: &Operations = &config.operations;
    let gid = operations
        .socket_group
        .as_deref()
        .map(resolve_group)
        .transpose()?;
    let mut served = Vec::new();
    for sub in &config.subchannels {
        let subchannel: SharedSubchannel =
            Arc::new(Mutex::new(Subchannel::new(build_host(&sub.device)?)));
        let listener = open_listener(&sub.listen)?;
        if let Listen::Path(path) = &sub.listen {
            share_socket(path, gid)?;
        }
        info!("listening ({:?}), device {:?}", sub.listen, sub.device);
        let watched = Watched {
            socket: listen_name(&sub.listen),
            subchannel,
            stats: Arc::new(SubchannelStats::default()),
        };
        served.push((watched, listener));
    }
    let control = match &operations.control_socket {
        Some(path) => {
            // A stale socket from an earlier run would make bind fail.
            let _ = std::fs::remove_file(path);
            let listener =
                std::os::unix::net::UnixListener::bind(path).map_err(|source| Error::Socket {
                    what: path.display().to_string(),
                    source,
                })?;
            share_socket(path, gid)?;
            Some(listener)
        }
        None => None,
    };
    // Setup is done and no thread runs yet: confine the process.
    sandbox::lock_down(operations.confinement)?;
    if operations.test_forbidden_syscall {
        let result = sys::forbidden_probe();
        warn!("test hook: the forbidden system call returned {result}");
    }
    if let Some(listener) = control {
        let watched: Vec<Watched> = served.iter().map(|(w, _)| w.clone()).collect();
        std::thread::Builder::new()
            .name("control".to_owned())
            .spawn(move || control::serve(&listener, &watched))
            .map_err(Error::Io)?;
    }
    let threads: Vec<_> = served
        .into_iter()
        .map(|(watched, mut listener)| {
            std::thread::Builder::new()
                .name(format!("serve {}", watched.socket))
                .spawn(move || {
                    loop {
                        // A failure to accept or set up one connection
                        // (say, out of file descriptors) must not end the
                        // service of this socket: log it and go on.
                        if let Err(e) = serve_connection(&watched, &mut listener) {
                            error!("{}: {e}", watched.socket);
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                })
                .map_err(Error::Io)
        })
        .collect::<Result<_, _>>()?;
    // The serving threads never end: this waits for ever. A thread that
    // panicked stops serving only its own socket (the others go on).
    for thread in threads {
        if thread.join().is_err() {
            return Err(Error::Daemon("a serving thread panicked".to_owned()));
        }
    }
    Ok(())
}

/// Accept one connection, serve it to its end, and close the subchannel.
pub fn serve_connection(watched: &Watched, listener: &mut Listener) -> Result<(), Error> {
    let subchannel = &watched.subchannel;
    let session = Arc::new(RwLock::new(Session::new(
        Arc::clone(subchannel),
        Arc::clone(&watched.stats),
    )?));
    let mut daemon = VhostUserDaemon::new(
        "vhost-user-ccw".to_owned(),
        Arc::clone(&session),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| Error::Daemon(e.to_string()))?;
    let notifier = lock(subchannel).notifier();
    let handlers = daemon.get_epoll_handlers();
    handlers[0]
        .register_listener(notifier, EventSet::IN, u64::from(HOST_EVENT))
        .map_err(Error::Io)?;
    daemon
        .start(listener)
        .map_err(|e| Error::Daemon(e.to_string()))?;
    info!("frontend connected");
    watched.stats.session();
    match daemon.wait() {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            VhostUserError::Disconnected | VhostUserError::PartialMessage,
        )) => info!("frontend disconnected"),
        Err(e) => warn!("session ended: {e}"),
    }
    // The old event loop must not see the host notifier any more: the next
    // session's loop owns it.
    if let Err(e) = handlers[0].unregister_listener(notifier, EventSet::IN, u64::from(HOST_EVENT)) {
        warn!("unregistering the host notifier: {e}");
    }
    session
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .signal_exit();
    lock(subchannel).dispatch(Input::Close);
    Ok(())
}
