//! vhost-user-ccw: a vhost-user backend that mediates one s390 I/O
//! subchannel per socket for a guest.
//!
//! `run` listens on the configured socket and serves connection after
//! connection: each connection is a fresh vhost-user daemon (a [`Session`]),
//! all sharing the socket's [`Subchannel`]. The end of a connection is the
//! subchannel's CLOSE event.

pub mod args;
pub mod config;
pub mod host;
pub mod image_tool;
pub mod memory;
pub mod session;
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

use crate::config::{Config, DeviceSpec, Listen};
use crate::host::sim::SimSubchannel;
use crate::host::sim::device::BufferDevice;
use crate::host::vfio::{VfioSubchannel, VfioTarget};
use crate::host::{HostError, HostSubchannel};
use crate::session::{HOST_EVENT, Session, SharedSubchannel, lock};
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
}

/// The capabilities document of `--print-capabilities` (QEMU's
/// vhost-user.json `VHostUserBackendCapabilities`).
pub fn capabilities_json() -> String {
    serde_json::json!({ "type": "ccw", "features": [] }).to_string()
}

/// Build the host subchannel the configuration names.
pub fn build_host(device: &DeviceSpec) -> Result<Box<dyn HostSubchannel>, Error> {
    match device {
        DeviceSpec::Sim { config, size } => Ok(Box::new(SimSubchannel::new(
            config.clone(),
            Box::new(BufferDevice::new(*size)),
        )?)),
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

/// Serve every configured socket until the process is stopped. Each
/// socket has its own subchannel, sessions and thread: a failure on one
/// never reaches the others, and a failed connection does not end the
/// service of its socket. Setup failures (a socket that cannot be created,
/// a device that cannot be built) stop the process before anything is
/// served.
pub fn run(config: &Config) -> Result<(), Error> {
    let mut served = Vec::new();
    for sub in &config.subchannels {
        let subchannel: SharedSubchannel =
            Arc::new(Mutex::new(Subchannel::new(build_host(&sub.device)?)));
        let listener = open_listener(&sub.listen)?;
        info!("listening ({:?}), device {:?}", sub.listen, sub.device);
        served.push((format!("{:?}", sub.listen), subchannel, listener));
    }
    let threads: Vec<_> = served
        .into_iter()
        .map(|(name, subchannel, mut listener)| {
            std::thread::Builder::new()
                .name(format!("serve {name}"))
                .spawn(move || {
                    loop {
                        // A failure to accept or set up one connection
                        // (say, out of file descriptors) must not end the
                        // service of this socket: log it and go on.
                        if let Err(e) = serve_connection(&subchannel, &mut listener) {
                            error!("{name}: {e}");
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
pub fn serve_connection(
    subchannel: &SharedSubchannel,
    listener: &mut Listener,
) -> Result<(), Error> {
    let session = Arc::new(RwLock::new(Session::new(Arc::clone(subchannel))?));
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
