//! A deterministic model of a host subchannel for the state-machine tests:
//! it follows the POPs rules for the functions it accepts, and completes
//! them only when the test says so (or at once, or never, or by vanishing),
//! so that every interleaving can be produced on demand.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use vhost_user_ccw_protocol::arch::{
    ActivityControl, DeviceStatus, FunctionControl, Irb, Pmcw, Schib, Scsw, SenseId, StatusControl,
};

use crate::host::{HostCc, HostError, HostEvent, HostSubchannel, Identity};
use crate::memory::GuestRam;
use crate::translate::ChannelProgram;

/// How the model answers HALT and CLEAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Completion {
    /// When the test calls [`ModelHost::complete`].
    OnStep,
    /// At once: the interruption is ready before HALT/CLEAR returns.
    Instant,
    /// Never: the device does not answer.
    Never,
    /// The device disappears when asked to halt or clear.
    Vanish,
}

/// The model host.
#[derive(Debug, Clone)]
pub struct ModelHost {
    /// Whether the subchannel is enabled.
    pub enabled: bool,
    /// Whether the device is there.
    pub present: bool,
    /// Path-available mask.
    pub pam: u8,
    /// Function control of the host subchannel.
    pub fc: FunctionControl,
    /// Whether the started program began executing (CANCEL no longer works).
    pub active: bool,
    /// The program the host runs, held until its end is reported.
    pub program: Option<Arc<ChannelProgram>>,
    /// Reports for the next poll: status pending on the host.
    pub pending: VecDeque<HostEvent>,
    /// HALT/CLEAR behaviour.
    pub completion: Completion,
    /// Number of polls, halts and clears seen (quiesce tests).
    pub halts: u32,
    /// Number of clears seen.
    pub clears: u32,
}

impl ModelHost {
    /// A present device with one path, completing on test steps.
    pub fn new(completion: Completion) -> Self {
        Self {
            enabled: false,
            present: true,
            pam: 0x80,
            fc: FunctionControl::empty(),
            active: false,
            program: None,
            pending: VecDeque::new(),
            completion,
            halts: 0,
            clears: 0,
        }
    }

    fn status_pending(&self, final_only: bool) -> bool {
        self.pending.iter().any(|e| match e {
            HostEvent::Interrupt(irb) => !final_only || !irb.scsw.is_intermediate_only(),
            _ => false,
        })
    }

    fn operational(&self) -> bool {
        self.enabled && self.present
    }

    fn end_irb(&self) -> Irb {
        let mut scsw = Scsw {
            function_control: self.fc,
            status_control: StatusControl::STATUS_PENDING,
            ..Scsw::default()
        };
        if self.fc.contains(FunctionControl::CLEAR) {
            // Clear: status pending only.
        } else if self.fc.contains(FunctionControl::HALT) {
            scsw.device_status = DeviceStatus::DEVICE_END;
            if let Some(program) = &self.program {
                scsw.cpa = cpa_after(program, 0);
            }
        } else {
            scsw.status_control |= StatusControl::PRIMARY | StatusControl::SECONDARY;
            scsw.device_status = DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END;
            if let Some(program) = &self.program {
                scsw.cpa = cpa_after(program, program.ccws.len() - 1);
            }
        }
        Irb {
            scsw,
            ..Irb::default()
        }
    }

    /// Finish whatever function is in progress: clear, then halt, then
    /// start, as the channel subsystem prioritizes them.
    pub fn complete(&mut self) {
        if self.fc.is_empty() || !self.present {
            return;
        }
        let irb = self.end_irb();
        self.pending.push_back(HostEvent::Interrupt(irb));
        self.fc = FunctionControl::empty();
        self.program = None;
        self.active = false;
    }

    /// A PCI: intermediate status of a running program.
    pub fn intermediate(&mut self) {
        if self.fc != FunctionControl::START || !self.present {
            return;
        }
        self.active = true;
        let program = self.program.as_ref().map_or(0, |p| cpa_after(p, 0));
        self.pending.push_back(HostEvent::Interrupt(Irb {
            scsw: Scsw {
                function_control: FunctionControl::START,
                activity_control: ActivityControl::SUBCHANNEL_ACTIVE
                    | ActivityControl::DEVICE_ACTIVE,
                status_control: StatusControl::INTERMEDIATE | StatusControl::STATUS_PENDING,
                cpa: program,
                ..Scsw::default()
            },
            ..Irb::default()
        }));
    }

    /// An unsolicited interruption (attention from the device).
    pub fn unsolicited(&mut self) {
        if !self.operational() {
            return;
        }
        self.pending.push_back(HostEvent::Interrupt(Irb {
            scsw: Scsw {
                status_control: StatusControl::ALERT | StatusControl::STATUS_PENDING,
                device_status: DeviceStatus::ATTENTION,
                ..Scsw::default()
            },
            ..Irb::default()
        }));
    }

    /// The device disappears.
    pub fn vanish(&mut self) {
        if !self.present {
            return;
        }
        self.present = false;
        self.fc = FunctionControl::empty();
        self.program = None;
        self.active = false;
        self.pending.clear();
        self.pending.push_back(HostEvent::DeviceGone);
    }

    /// Vary the path.
    pub fn vary_path(&mut self, online: bool) {
        self.pam = if online { 0x80 } else { 0 };
        self.pending.push_back(HostEvent::PathChange {
            chpid: 0x40,
            online,
        });
    }

    fn halt_or_clear_issued(&mut self) {
        match self.completion {
            Completion::OnStep | Completion::Never => {}
            Completion::Instant => self.complete(),
            Completion::Vanish => self.vanish(),
        }
    }
}

fn cpa_after(program: &ChannelProgram, index: usize) -> u32 {
    u32::try_from(program.ccws[index].addr() + 8).unwrap_or(u32::MAX)
}

impl HostSubchannel for ModelHost {
    fn identity(&self) -> Identity {
        Identity {
            cssid: 0,
            ssid: 0,
            schno: 0,
            chpid_type: [0; 8],
            sense_id: SenseId::default(),
        }
    }

    fn enable(&mut self) -> Result<(), HostError> {
        if !self.present || self.pam == 0 {
            return Err(HostError::NotOperational);
        }
        self.enabled = true;
        Ok(())
    }

    fn disable(&mut self) -> Result<(), HostError> {
        if !self.present {
            return Err(HostError::NotOperational);
        }
        if !self.fc.is_empty() || self.status_pending(false) {
            return Err(HostError::Busy);
        }
        self.enabled = false;
        Ok(())
    }

    fn start(&mut self, program: Arc<ChannelProgram>, _ram: GuestRam) -> HostCc {
        if !self.operational() || self.pam == 0 {
            return HostCc::NotOperational;
        }
        if self.status_pending(false) {
            return HostCc::StatusPending;
        }
        if !self.fc.is_empty() {
            return HostCc::Busy;
        }
        self.fc = FunctionControl::START;
        self.active = false;
        self.program = Some(program);
        HostCc::Accepted
    }

    fn halt(&mut self) -> HostCc {
        if !self.operational() {
            return HostCc::NotOperational;
        }
        if self.status_pending(true) {
            return HostCc::StatusPending;
        }
        if self
            .fc
            .intersects(FunctionControl::HALT | FunctionControl::CLEAR)
        {
            return HostCc::Busy;
        }
        self.halts += 1;
        self.fc |= FunctionControl::HALT;
        self.halt_or_clear_issued();
        HostCc::Accepted
    }

    fn clear(&mut self) -> HostCc {
        if !self.operational() {
            return HostCc::NotOperational;
        }
        self.clears += 1;
        self.pending
            .retain(|e| !matches!(e, HostEvent::Interrupt(_)));
        self.fc = FunctionControl::CLEAR;
        self.halt_or_clear_issued();
        HostCc::Accepted
    }

    fn cancel(&mut self) -> HostCc {
        if !self.operational() {
            return HostCc::NotOperational;
        }
        if self.status_pending(false) {
            return HostCc::StatusPending;
        }
        if self.fc == FunctionControl::START && !self.active {
            self.fc = FunctionControl::empty();
            self.program = None;
            return HostCc::Accepted;
        }
        HostCc::Busy
    }

    fn store(&mut self) -> Result<Schib, HostError> {
        if !self.present {
            return Err(HostError::NotOperational);
        }
        Ok(Schib {
            pmcw: Pmcw {
                enabled: self.enabled,
                pim: 0x80,
                pam: self.pam,
                pom: 0xff,
                ..Pmcw::default()
            },
            scsw: Scsw {
                function_control: self.fc,
                ..Scsw::default()
            },
            ..Schib::default()
        })
    }

    fn notifier(&self) -> RawFd {
        -1
    }

    fn poll(&mut self, events: &mut Vec<HostEvent>) -> Result<(), HostError> {
        events.extend(self.pending.drain(..));
        Ok(())
    }
    /// The model runs no channel programs, so it moves no data.
    fn bytes_moved(&self) -> Option<u64> {
        Some(0)
    }

    fn wait(&mut self, _timeout: Duration) -> Result<bool, HostError> {
        Ok(!self.pending.is_empty())
    }
}
