//! Host subchannels: what the backend mediates for the guest.
//!
//! A host subchannel is driven with the channel-subsystem functions (start,
//! halt, clear, cancel, store, enable/disable) and reports interruptions
//! through [`HostSubchannel::poll`], after its [`HostSubchannel::notifier`]
//! fd became readable. `sim` emulates a subchannel and its device; `vfio`
//! (a later addition) drives a Linux vfio-ccw device.

pub mod sim;

use std::os::fd::RawFd;
use std::sync::Arc;

use thiserror::Error;
use vhost_user_ccw_protocol::arch::{Irb, Schib, SenseId};

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
    /// Make progress and collect interruptions, each with its status cleared
    /// on the host (as TEST SUBCHANNEL would). Called whenever the notifier
    /// fires and after every batch of requests (once their responses are
    /// out), so work a request created needs no notification.
    fn poll(&mut self, irbs: &mut Vec<Irb>) -> Result<(), HostError>;
}
