//! Host subchannels: what the backend mediates for the guest.
//!
//! A host subchannel is driven with the channel-subsystem functions (start,
//! halt, clear, cancel, store, enable/disable) and reports interruptions
//! through [`HostSubchannel::poll`], after its [`HostSubchannel::notifier`]
//! fd became readable. `sim` emulates a subchannel and its device (a 3390
//! DASD or a buffer device); `vfio` drives a Linux vfio-ccw device.

pub mod sim;
pub mod vfio;
pub mod vfio_layout;

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use vhost_user_ccw_protocol::arch::{Irb, Schib, SenseId};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::memory::GuestRam;
use crate::translate::ChannelProgram;

/// Condition code of a channel-subsystem instruction on the host subchannel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCc {
    /// Function initiated.
    Accepted,
    /// Status pending.
    StatusPending,
    /// Busy: a function is in progress.
    Busy,
    /// Not operational.
    NotOperational,
}

impl HostCc {
    /// The architected condition code.
    pub fn cc(self) -> u8 {
        match self {
            Self::Accepted => 0,
            Self::StatusPending => 1,
            Self::Busy => 2,
            Self::NotOperational => 3,
        }
    }
}

/// Host subchannel failures (the backend's own, not the guest's).
#[derive(Debug, Error)]
pub enum HostError {
    /// The subchannel cannot be disabled while a function is in progress.
    #[error("subchannel busy")]
    Busy,
    /// The subchannel or device is gone.
    #[error("subchannel not operational")]
    NotOperational,
    /// An OS call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a host subchannel reports from [`HostSubchannel::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEvent {
    /// An I/O interruption; its status is already cleared on the host (as
    /// TEST SUBCHANNEL would).
    Interrupt(Irb),
    /// A channel path of the subchannel was varied on or off.
    PathChange {
        /// The channel path.
        chpid: u8,
        /// Whether it is now available.
        online: bool,
    },
    /// The device is gone (its subchannel is not operational).
    DeviceGone,
}

/// Who the host subchannel is, for the config space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Channel-subsystem id.
    pub cssid: u8,
    /// Subchannel-set id.
    pub ssid: u8,
    /// Subchannel number.
    pub schno: u16,
    /// Channel-path types of the CHPIDs in the PMCW.
    pub chpid_type: [u8; 8],
    /// SENSE ID data of the device.
    pub sense_id: SenseId,
}

/// A fault the `sim` host can be made to report ([`HostSubchannel::inject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulatedFault {
    /// The channel path varied offline or online: a path event.
    Path {
        /// Online (true) or offline.
        online: bool,
    },
    /// The device was detached: whatever runs is lost, the subchannel is
    /// not operational from now on.
    DeviceGone,
}

/// A subchannel the backend drives on the guest's behalf.
pub trait HostSubchannel: Send {
    /// Identity and SENSE ID data.
    fn identity(&self) -> Identity;
    /// Enable the subchannel for I/O (session open).
    fn enable(&mut self) -> Result<(), HostError>;
    /// Disable it (session close); `Busy` while a function is in progress.
    fn disable(&mut self) -> Result<(), HostError>;
    /// START SUBCHANNEL with a translated program over `ram`.
    fn start(&mut self, program: Arc<ChannelProgram>, ram: GuestRam) -> HostCc;
    /// HALT SUBCHANNEL.
    fn halt(&mut self) -> HostCc;
    /// CLEAR SUBCHANNEL.
    fn clear(&mut self) -> HostCc;
    /// CANCEL SUBCHANNEL: withdraw a start that has not begun.
    fn cancel(&mut self) -> HostCc;
    /// STORE SUBCHANNEL.
    fn store(&mut self) -> Result<Schib, HostError>;
    /// An fd that becomes readable when [`poll`](Self::poll) has work.
    fn notifier(&self) -> RawFd;
    /// Make progress and collect what happened. Called whenever the
    /// notifier fires and after every batch of requests (once their
    /// responses are out), so work a request created needs no notification.
    ///
    /// The host keeps its own reference to a started program until it has
    /// reported the program's final interruption (or the program was
    /// withdrawn by CANCEL, CLEAR or the device going away): dropping the
    /// state machine's reference can never free memory the channel uses.
    fn poll(&mut self, events: &mut Vec<HostEvent>) -> Result<(), HostError>;
    /// Data bytes moved between the device and guest memory since the host
    /// was created (the operator's `bytes_moved` counter), or `None` when
    /// the host cannot observe them.
    fn bytes_moved(&self) -> Option<u64>;
    /// Make `fault` happen, as an operator or a machine check would on a
    /// real subchannel (the control socket's fault commands); false when
    /// this host cannot simulate it (only the `sim` host can).
    fn inject(&mut self, _fault: SimulatedFault) -> bool {
        false
    }
    /// Block until [`poll`](Self::poll) may have something, at most
    /// `timeout`. Returns whether it woke before the timeout.
    fn wait(&mut self, timeout: Duration) -> Result<bool, HostError> {
        wait_readable(self.notifier(), timeout)
    }
}

/// Block until `fd` is readable, at most `timeout`; whether it became so.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> Result<bool, HostError> {
    let io = |what| move |source| HostError::Io { what, source };
    let epoll = Epoll::new().map_err(io("epoll_create"))?;
    epoll
        .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 0))
        .map_err(io("epoll_ctl"))?;
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut events = [EpollEvent::default(); 1];
    match epoll.wait(ms, &mut events) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
        Err(e) => Err(HostError::Io {
            what: "epoll_wait",
            source: e,
        }),
    }
}

/// Boxed hosts are hosts: the daemon picks one at run time.
impl HostSubchannel for Box<dyn HostSubchannel> {
    fn identity(&self) -> Identity {
        (**self).identity()
    }
    fn enable(&mut self) -> Result<(), HostError> {
        (**self).enable()
    }
    fn disable(&mut self) -> Result<(), HostError> {
        (**self).disable()
    }
    fn start(&mut self, program: Arc<ChannelProgram>, ram: GuestRam) -> HostCc {
        (**self).start(program, ram)
    }
    fn halt(&mut self) -> HostCc {
        (**self).halt()
    }
    fn clear(&mut self) -> HostCc {
        (**self).clear()
    }
    fn cancel(&mut self) -> HostCc {
        (**self).cancel()
    }
    fn store(&mut self) -> Result<Schib, HostError> {
        (**self).store()
    }
    fn notifier(&self) -> RawFd {
        (**self).notifier()
    }
    fn poll(&mut self, events: &mut Vec<HostEvent>) -> Result<(), HostError> {
        (**self).poll(events)
    }
    fn bytes_moved(&self) -> Option<u64> {
        (**self).bytes_moved()
    }
    fn wait(&mut self, timeout: Duration) -> Result<bool, HostError> {
        (**self).wait(timeout)
    }
    fn inject(&mut self, fault: SimulatedFault) -> bool {
        (**self).inject(fault)
    }
}
