//! `sim`: an emulated subchannel in front of an emulated device.
//!
//! It behaves like the channel subsystem does for a real subchannel: START
//! makes the start function pending, the program runs later (in
//! [`HostSubchannel::poll`], which the session calls after answering the
//! requests, and when the latency timer fires), CCW by CCW over
//! guest RAM, with command and data chaining, incorrect-length rules, status
//! modifier and unit check, and ends in an interruption whose SCSW carries
//! function, activity and status control, device and subchannel status, the
//! CPA and the residual count as POPs defines them. HALT and CLEAR take
//! effect at the next CCW boundary. With a latency set, each CCW takes that
//! long, so that a program can be halted or cleared while it runs.

pub mod ckd;
pub mod device;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use vhost_user_ccw_protocol::arch::{
    ActivityControl, CcwFlags, DeviceStatus, Esw, FunctionControl, Irb, Pmcw, Schib, Scsw,
    StatusControl, SubchannelLogout, SubchannelStatus,
};
use vmm_sys_util::timerfd::TimerFd;

use self::device::{Chaining, DeviceModel, InPlace, OutPlace};
use super::{HostCc, HostError, HostEvent, HostSubchannel, Identity, SimulatedFault};
use crate::memory::GuestRam;
use crate::translate::{CCW_SIZE, CcwKind, ChannelProgram, DataPiece, Direction, MAX_DATA_BYTES};

/// Parameters of a simulated subchannel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Device number.
    pub devno: u16,
    /// Subchannel number.
    pub schno: u16,
    /// The one installed channel path.
    pub chpid: u8,
    /// Time each CCW takes.
    pub latency: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            devno: 0x0190,
            schno: 0,
            chpid: 0x40,
            latency: Duration::ZERO,
        }
    }
}

/// Channel-path type of the simulated path (FICON, as for a DASD).
const CHPID_TYPE_FICON: u8 = 0x1b;
/// The single path the simulated subchannel has, as a path mask.
const PATH: u8 = 0x80;
/// Timer delay that makes the notifier fire at once.
const NOW: Duration = Duration::from_nanos(1);

/// A program the simulated channel is running.
#[derive(Debug)]
struct Running {
    program: Arc<ChannelProgram>,
    ram: GuestRam,
    /// Index of the next entry to execute.
    next: usize,
    /// Whether execution began (the start function left start-pending).
    started: bool,
    /// Whether a command was executed (the next one is chained to it).
    executed: bool,
}

/// The emulated subchannel.
pub struct SimSubchannel {
    config: SimConfig,
    device: Box<dyn DeviceModel>,
    timer: TimerFd,
    enabled: bool,
    pmcw: Pmcw,
    scsw: Scsw,
    running: Option<Running>,
    /// Whether the latency timer may have expired unread.
    timer_armed: bool,
    /// Whether the device is still there.
    present: bool,
    /// Host events waiting for the next poll (path changes, device gone).
    reports: Vec<HostEvent>,
    /// Reused between commands: no allocation per CCW.
    scratch: Scratch,
    /// Data bytes moved to or from guest memory, for the counters.
    bytes_moved: u64,
}

impl std::fmt::Debug for SimSubchannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSubchannel")
            .field("config", &self.config)
            .field("enabled", &self.enabled)
            .field("scsw", &self.scsw)
            .finish_non_exhaustive()
    }
}

impl SimSubchannel {
    /// A disabled subchannel in front of `device`.
    pub fn new(config: SimConfig, device: Box<dyn DeviceModel>) -> Result<Self, HostError> {
        let timer = TimerFd::new().map_err(|e| HostError::Io {
            what: "timerfd_create",
            source: e.into(),
        })?;
        crate::sys::set_nonblocking(&timer).map_err(|source| HostError::Io {
            what: "timerfd non-blocking",
            source,
        })?;
        let mut pmcw = Pmcw {
            devno: config.devno,
            device_number_valid: true,
            pim: PATH,
            pam: PATH,
            pom: 0xff,
            lpm: PATH,
            ..Pmcw::default()
        };
        pmcw.chpid[0] = config.chpid;
        Ok(Self {
            config,
            device,
            timer,
            enabled: false,
            pmcw,
            scsw: Scsw::default(),
            running: None,
            timer_armed: false,
            present: true,
            reports: Vec::new(),
            scratch: Scratch::default(),
            bytes_moved: 0,
        })
    }

    /// Vary the channel path on or off, as an operator or a machine check
    /// would: the path masks change and a path event is reported. A path
    /// event not yet collected is replaced, so that an operator's loop with
    /// no session cannot pile reports up (the next session drops what was
    /// reported before it; the path masks show the state either way).
    pub fn vary_path(&mut self, online: bool) {
        if online {
            self.pmcw.pam |= PATH;
        } else {
            self.pmcw.pam &= !PATH;
        }
        self.reports
            .retain(|report| !matches!(report, HostEvent::PathChange { .. }));
        self.reports.push(HostEvent::PathChange {
            chpid: self.config.chpid,
            online,
        });
        self.kick(NOW);
    }

    /// Detach the device: whatever runs is lost, the subchannel is not
    /// operational from now on, and the loss is reported (once: a device
    /// already gone is not reported again).
    pub fn remove_device(&mut self) {
        if !self.present {
            return;
        }
        self.present = false;
        self.running = None;
        self.scsw = Scsw::default();
        self.reports.push(HostEvent::DeviceGone);
        self.kick(NOW);
    }

    /// Whether the subchannel still holds a program (tests check that a
    /// program the host holds is never one the state machine dropped).
    pub fn holds_program(&self) -> Option<&Arc<ChannelProgram>> {
        self.running.as_ref().map(|r| &r.program)
    }

    fn operational(&self) -> bool {
        self.enabled && self.present && self.pmcw.pam != 0
    }

    fn kick(&mut self, after: Duration) {
        // A failing timerfd_settime cannot happen with a valid fd and a
        // non-zero duration; log rather than lose the interruption silently.
        self.timer_armed = true;
        if let Err(e) = self.timer.reset(after, None) {
            log::error!("sim: arming the timer failed: {e}");
        }
    }

    fn status_pending(&self) -> bool {
        self.scsw
            .status_control
            .contains(StatusControl::STATUS_PENDING)
    }

    /// Record the interruption condition in the SCSW and hand out the IRB,
    /// clearing the status as TEST SUBCHANNEL does.
    fn interrupt(&mut self, events: &mut Vec<HostEvent>) {
        // The format-0 ESW names the path last used, as the channel
        // subsystem stores it (LPUM in the subchannel logout).
        let esw = Esw {
            subchannel_logout: SubchannelLogout::from_lpum(self.pmcw.lpum),
            ..Esw::default()
        };
        events.push(HostEvent::Interrupt(Irb {
            scsw: self.scsw,
            esw,
            ..Irb::default()
        }));
        self.scsw.status_control = StatusControl::empty();
        self.scsw.function_control = FunctionControl::empty();
        self.scsw.activity_control = ActivityControl::empty();
        self.scsw.device_status = DeviceStatus::empty();
        self.scsw.subchannel_status = SubchannelStatus::empty();
    }

    fn do_clear(&mut self, events: &mut Vec<HostEvent>) {
        if self.running.take().is_some() {
            self.device.chain_ended();
        }
        self.device.reset();
        self.pmcw.lpum = 0;
        self.pmcw.pom = 0xff;
        self.scsw.activity_control = ActivityControl::empty();
        self.scsw.status_control = StatusControl::STATUS_PENDING;
        self.scsw.device_status = DeviceStatus::empty();
        self.scsw.subchannel_status = SubchannelStatus::empty();
        self.scsw.count = 0;
        self.interrupt(events);
    }

    fn do_halt(&mut self, events: &mut Vec<HostEvent>) {
        if self.running.take().is_some() {
            // The device is stopped at a CCW boundary: it presents device
            // end, and the CPA designates the CCW after the last one executed.
            // The CPA of the last step already designates the next CCW.
            // What the device deferred to the end of the chain is done; a
            // failure stays in its sense data for the next SENSE.
            self.device.chain_ended();
            self.scsw.device_status = DeviceStatus::DEVICE_END;
        } else {
            self.scsw.device_status = DeviceStatus::empty();
        }
        self.pmcw.lpum = PATH;
        self.scsw.subchannel_status = SubchannelStatus::empty();
        self.scsw.activity_control = ActivityControl::empty();
        self.scsw.status_control = StatusControl::STATUS_PENDING;
        self.interrupt(events);
    }

    /// Run the current program until it ends, or with a latency until the
    /// next CCW is due, or for at most [`CCWS_PER_POLL`] CCWs: a program that
    /// loops forever (a TIC loop) runs until it is halted or cleared, without
    /// holding up the event loop.
    fn run(&mut self, events: &mut Vec<HostEvent>) {
        let mut budget = CCWS_PER_POLL;
        loop {
            let Some(running) = self.running.as_mut() else {
                return;
            };
            if !running.started {
                running.started = true;
                if running.program.orb.lpm & PATH == 0 {
                    // No path the ORB allows: deferred condition code 3.
                    let cpa = running.program.orb.cpa;
                    self.running = None;
                    self.scsw.deferred_cc = 3;
                    self.scsw.cpa = cpa;
                    self.scsw.activity_control = ActivityControl::empty();
                    self.scsw.status_control = StatusControl::ALERT | StatusControl::STATUS_PENDING;
                    self.interrupt(events);
                    return;
                }
                self.scsw.activity_control =
                    ActivityControl::SUBCHANNEL_ACTIVE | ActivityControl::DEVICE_ACTIVE;
                self.pmcw.lpum = PATH;
            }
            let index = running.program.resolve(running.next);
            let first = !running.executed;
            running.executed = true;
            let step = execute_step(
                &running.program,
                &running.ram,
                index,
                first,
                self.device.as_mut(),
                &mut self.scratch,
                &mut self.bytes_moved,
            );
            // Opt-in CCW trace (RUST_LOG=ccw_trace=trace): one level check
            // per CCW when off.
            if log::log_enabled!(target: CCW_TRACE, log::Level::Trace) {
                trace_ccw(self.config.devno, &running.program, index, &step);
            }
            self.scsw.cpa = step.cpa;
            self.scsw.count = step.residual;
            self.scsw.device_status = step.status;
            self.scsw.subchannel_status = step.cstat;
            match step.next {
                Some(next) => {
                    if step.pci {
                        self.intermediate(events);
                    }
                    if let Some(running) = self.running.as_mut() {
                        running.next = next;
                    }
                    budget -= 1;
                    if !self.config.latency.is_zero() {
                        self.kick(self.config.latency);
                        return;
                    }
                    if budget == 0 {
                        self.kick(NOW);
                        return;
                    }
                }
                None => {
                    if step.pci {
                        self.scsw.subchannel_status |=
                            SubchannelStatus::PROGRAM_CONTROLLED_INTERRUPTION;
                    }
                    self.running = None;
                    self.scsw.device_status |= self.device.chain_ended();
                    self.scsw.activity_control = ActivityControl::empty();
                    self.scsw.status_control = StatusControl::PRIMARY
                        | StatusControl::SECONDARY
                        | StatusControl::STATUS_PENDING;
                    let error = SubchannelStatus::INCORRECT_LENGTH
                        | SubchannelStatus::PROGRAM_CHECK
                        | SubchannelStatus::CHANNEL_DATA_CHECK;
                    let status = self.scsw.device_status;
                    if step.cstat.intersects(error)
                        || status.contains(DeviceStatus::UNIT_CHECK)
                        || status.contains(DeviceStatus::UNIT_EXCEPTION)
                    {
                        self.scsw.status_control |= StatusControl::ALERT;
                    }
                    self.interrupt(events);
                    return;
                }
            }
        }
    }

    /// A PCI: intermediate status while the program goes on. The function
    /// stays in progress, so the SCSW is reported, not cleared.
    fn intermediate(&mut self, events: &mut Vec<HostEvent>) {
        let mut scsw = self.scsw;
        scsw.status_control = StatusControl::INTERMEDIATE | StatusControl::STATUS_PENDING;
        scsw.subchannel_status = SubchannelStatus::PROGRAM_CONTROLLED_INTERRUPTION;
        scsw.device_status = DeviceStatus::empty();
        events.push(HostEvent::Interrupt(Irb {
            scsw,
            ..Irb::default()
        }));
    }
}

/// Log target of the CCW trace.
pub const CCW_TRACE: &str = "ccw_trace";

/// One line per executed command, in the spirit of Hercules' CCW trace:
/// device, CCW address, command, flags, count, data areas, and the status it
/// ended with (device status, subchannel status, residual count, CPA).
fn trace_ccw(devno: u16, program: &ChannelProgram, index: usize, step: &Step) {
    let entry = &program.ccws[index];
    let what = match entry.kind() {
        CcwKind::Command {
            cmd, flags, count, ..
        } => {
            let data: Vec<String> = program
                .data(index)
                .iter()
                .map(|p| format!("{:x}+{:x}", p.addr, p.len))
                .collect();
            format!(
                "cmd={cmd:02X} flags={:02X} count={count} data=[{}]",
                flags.bits(),
                data.join(",")
            )
        }
        CcwKind::Tic { .. } => "TIC".to_owned(),
        CcwKind::Check { reason } => format!("program check: {reason}"),
    };
    log::trace!(
        target: CCW_TRACE,
        "{devno:04x} {:08x} {what} -> dstat={:02x} cstat={:02x} residual={} cpa={:08x}{}",
        entry.addr(),
        step.status.bits(),
        step.cstat.bits(),
        step.residual,
        step.cpa,
        if step.next.is_some() { " chain" } else { "" },
    );
}

/// Most CCWs one poll executes before yielding to the event loop.
const CCWS_PER_POLL: u32 = 1024;

/// Most CCWs one command data-chains. With [`MAX_DATA_BYTES`] it bounds a
/// data chain that loops through a TIC (which would otherwise be collected
/// forever); no chain that does not loop reaches either bound.
const MAX_CHAIN_CCWS: usize = 1 << 16;

/// The CPA stored once the CCW at `addr` has been used: the next CCW.
fn cpa_after(addr: u64) -> u32 {
    // CCW addresses come from 31-bit CPAs and TIC targets.
    u32::try_from(addr + CCW_SIZE).unwrap_or(u32::MAX)
}

/// Result of executing one command (a CCW and the CCWs data-chained to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    /// CPA to store: one past the last CCW used.
    cpa: u32,
    /// Residual count of that CCW.
    residual: u16,
    /// Device status.
    status: DeviceStatus,
    /// Subchannel status.
    cstat: SubchannelStatus,
    /// Index of the next entry when command chaining continues.
    next: Option<usize>,
    /// A CCW of the command asked for a program-controlled interruption.
    pci: bool,
}

impl Step {
    /// The channel found a program error at the entry at `addr`.
    fn program_check(addr: u64) -> Self {
        Self {
            cpa: cpa_after(addr),
            residual: 0,
            status: DeviceStatus::empty(),
            cstat: SubchannelStatus::PROGRAM_CHECK,
            next: None,
            pci: false,
        }
    }
}

/// The channel's working storage, kept between commands.
#[derive(Debug, Default)]
struct Scratch {
    /// Scratch buffer for one command's data.
    buffer: Vec<u8>,
    /// Scratch list of the CCWs of one command.
    parts: Vec<Part>,
}

/// One CCW of a command, as the channel uses it.
#[derive(Debug)]
struct Part {
    index: usize,
    addr: u64,
    flags: CcwFlags,
    count: u16,
}

/// Execute the command at entry `first`, moving its data between the
/// device and guest RAM, and decide whether command chaining continues.
fn execute_step(
    program: &ChannelProgram,
    ram: &GuestRam,
    first: usize,
    opens_program: bool,
    device: &mut dyn DeviceModel,
    scratch: &mut Scratch,
    bytes_moved: &mut u64,
) -> Step {
    let Scratch { buffer, parts } = scratch;
    let entry = &program.ccws[first];
    let (cmd, direction) = match entry.kind() {
        CcwKind::Command { cmd, direction, .. } => (cmd, direction),
        CcwKind::Check { .. } | CcwKind::Tic { .. } => return Step::program_check(entry.addr()),
    };
    // Collect the data chain: the command's CCW and every CCW it chains
    // data into (their command codes are ignored).
    parts.clear();
    let mut index = first;
    let mut broken_chain = None;
    let mut collected = 0u64;
    loop {
        let entry = &program.ccws[index];
        let CcwKind::Command { flags, count, .. } = entry.kind() else {
            broken_chain = Some(entry.addr());
            break;
        };
        parts.push(Part {
            index,
            addr: entry.addr(),
            flags,
            count,
        });
        if !flags.contains(CcwFlags::CD) {
            break;
        }
        // A data chain looping through a TIC: the device is offered this
        // much, as if the chain ended here.
        collected += u64::from(count);
        if collected > MAX_DATA_BYTES || parts.len() >= MAX_CHAIN_CCWS {
            break;
        }
        match program.sequential(index) {
            Some(next) => index = program.resolve(next),
            None => {
                broken_chain = Some(entry.addr() + CCW_SIZE);
                break;
            }
        }
    }
    let total: usize = parts.iter().map(|p| usize::from(p.count)).sum();
    let pci = parts.iter().any(|p| p.flags.contains(CcwFlags::PCI));
    let last = &parts[parts.len() - 1];
    let chaining = Chaining {
        first: opens_program,
        continues: broken_chain.is_none()
            && last.flags.contains(CcwFlags::CC)
            && !last.flags.contains(CcwFlags::CD),
    };
    let in_place = match direction {
        Direction::In => match device.read_in_place(cmd, total, chaining) {
            InPlace::Done(response, fields) => {
                let transferred = response.length.min(total);
                if let Err(part) = scatter(program, ram, parts, &fields, transferred) {
                    return channel_data_check(part);
                }
                Some(response)
            }
            InPlace::No => None,
        },
        Direction::Out => match device.write_in_place(cmd, total, chaining) {
            OutPlace::Into(response, mut fields) => {
                if let Err(part) = gather(program, ram, parts, &mut fields) {
                    return channel_data_check(part);
                }
                Some(response)
            }
            OutPlace::No => None,
        },
    };
    let response = match in_place {
        Some(response) => response,
        None => {
            // Zeroed, so that no byte of an earlier command can reach the
            // guest whatever an input device answers (for output, gather
            // fills the buffer: the data offered, zeros after it).
            buffer.clear();
            buffer.resize(total, 0);
            if direction == Direction::Out {
                if let Err(part) = gather(program, ram, parts, &mut [&mut buffer[..total], &mut []])
                {
                    return channel_data_check(part);
                }
            }
            let response = device.execute(cmd, &mut buffer[..total], chaining);
            if direction == Direction::In {
                let transferred = response.length.min(total);
                if let Err(part) = scatter(
                    program,
                    ram,
                    parts,
                    &[&buffer[..total], &[], &[]],
                    transferred,
                ) {
                    return channel_data_check(part);
                }
            }
            response
        }
    };
    let transferred = response.length.min(total);
    // Counted once the data reached its destination (the device, or guest
    // memory above).
    *bytes_moved = bytes_moved.saturating_add(u64::try_from(transferred).unwrap_or(u64::MAX));

    // The CCW in which the transfer ended, and its residual count.
    let mut ended = parts.len() - 1;
    let mut residual = 0u16;
    if transferred < total {
        let mut before = 0usize;
        for (i, part) in parts.iter().enumerate() {
            let count = usize::from(part.count);
            if transferred < before + count || (count == 0 && transferred == before) {
                ended = i;
                residual = u16::try_from(before + count - transferred).unwrap_or(u16::MAX);
                break;
            }
            before += count;
        }
    }
    let part = &parts[ended];
    let mut cstat = SubchannelStatus::empty();
    let suppressed = part.flags.contains(CcwFlags::SLI) && !part.flags.contains(CcwFlags::CD);
    // A command the device rejects at once (unit check, nothing moved)
    // never started its data transfer: no incorrect length (POPs).
    let rejected = response.status.contains(DeviceStatus::UNIT_CHECK) && response.length == 0;
    if response.length != total && !suppressed && !rejected {
        cstat = SubchannelStatus::INCORRECT_LENGTH;
    }
    let mut step = Step {
        cpa: cpa_after(part.addr),
        residual,
        status: response.status,
        cstat,
        next: None,
        pci,
    };
    if let Some(addr) = broken_chain {
        // Data chaining ran into a program error. The channel fetches the
        // next CCW as soon as the count of the last good one is exhausted,
        // so the error counts whenever the device took all the data, also
        // when it wanted more (POPs: the residual count cannot be zero with
        // chain data at channel end).
        if response.length >= total {
            return Step {
                pci,
                ..Step::program_check(addr)
            };
        }
        return step;
    }
    let normal = DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END;
    // CD overrides CC (the chain was cut above).
    let chains = part.flags.contains(CcwFlags::CC)
        && !part.flags.contains(CcwFlags::CD)
        && cstat.is_empty()
        && (response.status == normal || response.status == normal | DeviceStatus::STATUS_MODIFIER);
    if chains {
        let after = program.sequential(part.index);
        // Status modifier skips one CCW (a search that matched).
        let target = if response.status.contains(DeviceStatus::STATUS_MODIFIER) {
            after.and_then(|i| program.sequential(i))
        } else {
            after
        };
        match target {
            Some(next) => step.next = Some(next),
            None => {
                let skip = u64::from(response.status.contains(DeviceStatus::STATUS_MODIFIER));
                return Step {
                    pci,
                    ..Step::program_check(part.addr + CCW_SIZE * (1 + skip))
                };
            }
        }
    }
    step
}

/// The data pieces of a command's CCWs in transfer order, each with its
/// CCW and its offset in the command's data (a CCW without pieces, such as
/// a skipping one or a zero count, still takes its count's room).
fn pieces_in_order<'p>(
    program: &'p ChannelProgram,
    parts: &'p [Part],
) -> impl Iterator<Item = (&'p Part, usize, DataPiece)> + 'p {
    parts
        .iter()
        .scan(0usize, |at, part| {
            let start = *at;
            *at += usize::from(part.count);
            Some((part, start))
        })
        .flat_map(move |(part, start)| {
            program
                .data(part.index)
                .iter()
                .scan(start, move |at, piece| {
                    let offset = *at;
                    *at += usize::try_from(piece.len).unwrap_or(0);
                    Some((part, offset, *piece))
                })
        })
}

/// Store the first `transferred` bytes of an input command's answer (the
/// concatenation of `fields`) into the command's data areas, CCW by CCW;
/// the areas of a skipping CCW are passed over. Fails with the CCW whose
/// area is no longer guest memory.
fn scatter<'p>(
    program: &'p ChannelProgram,
    ram: &GuestRam,
    parts: &'p [Part],
    fields: &[&[u8]; 3],
    transferred: usize,
) -> Result<(), &'p Part> {
    for (part, at, piece) in pieces_in_order(program, parts) {
        let n = usize::try_from(piece.len)
            .unwrap_or(0)
            .min(transferred.saturating_sub(at));
        if n > 0 && copy_fields(ram, piece.addr, fields, at, n).is_err() {
            return Err(part);
        }
    }
    Ok(())
}

/// Fill the concatenated `fields` with the bytes an output command's CCWs
/// offer from guest memory, in order, and zeros where they offer none (a
/// CCW without pieces) or fewer than the fields hold. Fails with the CCW
/// whose area is no longer guest memory.
fn gather<'p>(
    program: &'p ChannelProgram,
    ram: &GuestRam,
    parts: &'p [Part],
    fields: &mut [&mut [u8]; 2],
) -> Result<(), &'p Part> {
    let capacity = fields[0].len() + fields[1].len();
    let mut filled = 0;
    for (part, at, piece) in pieces_in_order(program, parts) {
        let n = usize::try_from(piece.len)
            .unwrap_or(0)
            .min(capacity.saturating_sub(at));
        if n == 0 {
            continue;
        }
        zero_fields(fields, filled.min(at), at);
        if fill_fields(ram, piece.addr, fields, at, n).is_err() {
            return Err(part);
        }
        filled = at + n;
    }
    zero_fields(fields, filled.min(capacity), capacity);
    Ok(())
}

/// Where bytes `from..from + n` of fields of lengths `lens`, taken one
/// after the other, lie: (field, range in it) in order.
fn field_spans<const N: usize>(
    lens: [usize; N],
    mut from: usize,
    mut n: usize,
) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> {
    lens.into_iter().enumerate().filter_map(move |(i, len)| {
        if from >= len {
            from -= len;
            return None;
        }
        let take = (len - from).min(n);
        let span = from..from + take;
        n -= take;
        from = 0;
        (take > 0).then_some((i, span))
    })
}

/// Copy `n` bytes from guest address `addr` to offset `to` of the
/// concatenated `fields`.
fn fill_fields(
    ram: &GuestRam,
    mut addr: u64,
    fields: &mut [&mut [u8]; 2],
    to: usize,
    n: usize,
) -> Result<(), crate::memory::RamError> {
    for (i, span) in field_spans(fields.each_ref().map(|f| f.len()), to, n) {
        let len = span.len();
        ram.read(addr, &mut fields[i][span])?;
        addr += u64::try_from(len).unwrap_or(u64::MAX);
    }
    Ok(())
}

/// Zero bytes `from..to` of the concatenated `fields`.
fn zero_fields(fields: &mut [&mut [u8]; 2], from: usize, to: usize) {
    for (i, span) in field_spans(
        fields.each_ref().map(|f| f.len()),
        from,
        to.saturating_sub(from),
    ) {
        fields[i][span].fill(0);
    }
}

/// Copy `n` bytes from offset `from` of the concatenated `fields` to
/// guest address `addr`.
fn copy_fields(
    ram: &GuestRam,
    mut addr: u64,
    fields: &[&[u8]; 3],
    from: usize,
    n: usize,
) -> Result<(), crate::memory::RamError> {
    for (i, span) in field_spans(fields.map(<[u8]>::len), from, n) {
        let len = span.len();
        ram.write(addr, &fields[i][span])?;
        addr += u64::try_from(len).unwrap_or(u64::MAX);
    }
    Ok(())
}

/// A data transfer hit memory that vanished under the program (the memory
/// table changed): channel-data check, the program ends.
fn channel_data_check(part: &Part) -> Step {
    Step {
        cpa: cpa_after(part.addr),
        residual: part.count,
        status: DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END,
        cstat: SubchannelStatus::CHANNEL_DATA_CHECK,
        next: None,
        pci: false,
    }
}

impl HostSubchannel for SimSubchannel {
    fn identity(&self) -> Identity {
        let mut chpid_type = [0u8; 8];
        chpid_type[0] = CHPID_TYPE_FICON;
        Identity {
            cssid: 0,
            ssid: 0,
            schno: self.config.schno,
            chpid_type,
            sense_id: self.device.sense_id(),
        }
    }

    fn enable(&mut self) -> Result<(), HostError> {
        if !self.present {
            return Err(HostError::NotOperational);
        }
        self.enabled = true;
        self.pmcw.enabled = true;
        self.scsw = Scsw::default();
        Ok(())
    }

    fn disable(&mut self) -> Result<(), HostError> {
        if !self.scsw.function_control.is_empty() || self.status_pending() {
            return Err(HostError::Busy);
        }
        self.enabled = false;
        self.pmcw.enabled = false;
        Ok(())
    }

    fn start(&mut self, program: Arc<ChannelProgram>, ram: GuestRam) -> HostCc {
        if !self.operational() {
            return HostCc::NotOperational;
        }
        if self.status_pending() {
            return HostCc::StatusPending;
        }
        if !self.scsw.function_control.is_empty() {
            return HostCc::Busy;
        }
        let orb = program.orb;
        self.scsw = Scsw {
            key: orb.key,
            format1: orb.format1,
            prefetch: orb.prefetch,
            initial_status_interruption: orb.initial_status_interruption,
            address_limit_checking: orb.address_limit_checking,
            suppress_suspended_interruption: orb.suppress_suspended_interruption,
            function_control: FunctionControl::START,
            activity_control: ActivityControl::START_PENDING,
            ..Scsw::default()
        };
        self.pmcw.intparm = orb.intparm;
        self.running = Some(Running {
            program,
            ram,
            next: 0,
            started: false,
            executed: false,
        });
        HostCc::Accepted
    }

    fn halt(&mut self) -> HostCc {
        if !self.enabled || !self.present {
            return HostCc::NotOperational;
        }
        if self.status_pending() && !self.scsw.is_intermediate_only() {
            return HostCc::StatusPending;
        }
        if self.scsw.function_control.contains(FunctionControl::HALT)
            || self.scsw.function_control.contains(FunctionControl::CLEAR)
        {
            return HostCc::Busy;
        }
        self.scsw.function_control |= FunctionControl::HALT;
        self.scsw.activity_control |= ActivityControl::HALT_PENDING;
        HostCc::Accepted
    }

    fn clear(&mut self) -> HostCc {
        if !self.enabled || !self.present {
            return HostCc::NotOperational;
        }
        self.scsw.function_control = FunctionControl::CLEAR;
        self.scsw.activity_control = ActivityControl::CLEAR_PENDING;
        // A pending interruption is withdrawn.
        self.scsw.status_control = StatusControl::empty();
        HostCc::Accepted
    }

    fn cancel(&mut self) -> HostCc {
        if !self.enabled || !self.present {
            return HostCc::NotOperational;
        }
        if self.status_pending() {
            return HostCc::StatusPending;
        }
        let start_pending_only = self.scsw.function_control == FunctionControl::START
            && self.scsw.activity_control == ActivityControl::START_PENDING;
        if !start_pending_only {
            return HostCc::Busy;
        }
        self.running = None;
        self.scsw = Scsw::default();
        HostCc::Accepted
    }

    fn store(&mut self) -> Result<Schib, HostError> {
        if !self.present {
            return Err(HostError::NotOperational);
        }
        Ok(Schib {
            pmcw: self.pmcw,
            scsw: self.scsw,
            ..Schib::default()
        })
    }

    fn notifier(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, HostError> {
        // Halt and clear take effect at the next poll without a timer.
        let pending = ActivityControl::HALT_PENDING | ActivityControl::CLEAR_PENDING;
        let runnable = self.running.is_some() && self.config.latency.is_zero();
        if self.scsw.activity_control.intersects(pending) || !self.reports.is_empty() || runnable {
            return Ok(true);
        }
        if !self.timer_armed {
            std::thread::sleep(timeout);
            return Ok(false);
        }
        super::wait_readable(self.timer.as_raw_fd(), timeout)
    }

    fn bytes_moved(&self) -> Option<u64> {
        Some(self.bytes_moved)
    }

    fn inject(&mut self, fault: SimulatedFault) -> bool {
        match fault {
            SimulatedFault::Path { online } => self.vary_path(online),
            SimulatedFault::DeviceGone => self.remove_device(),
        }
        true
    }

    fn poll(&mut self, events: &mut Vec<HostEvent>) -> Result<(), HostError> {
        if self.timer_armed {
            match self.timer.wait() {
                Ok(_) => self.timer_armed = false,
                Err(e) if e.errno() == libc::EAGAIN => {}
                Err(e) => {
                    return Err(HostError::Io {
                        what: "timerfd read",
                        source: e.into(),
                    });
                }
            }
        }
        events.append(&mut self.reports);
        if self
            .scsw
            .activity_control
            .contains(ActivityControl::CLEAR_PENDING)
        {
            self.do_clear(events);
        } else if self
            .scsw
            .activity_control
            .contains(ActivityControl::HALT_PENDING)
        {
            self.do_halt(events);
        } else {
            self.run(events);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::device::{BufferDevice, CMD_READ, CMD_SENSE_ID, CMD_WRITE, Chaining};
    use super::*;
    use crate::memory::tests::{put_ccw1, ram};
    use crate::translate::translate;
    use vhost_user_ccw_protocol::arch::Orb;

    fn put_ccw(ram: &GuestRam, addr: u64, cmd: u8, flags: u8, count: u16, cda: u32) {
        put_ccw1(
            ram,
            addr,
            cmd,
            CcwFlags::from_bits_truncate(flags),
            count,
            cda,
        );
    }

    fn sim(latency: Duration) -> SimSubchannel {
        let config = SimConfig {
            latency,
            ..SimConfig::default()
        };
        let mut sim = SimSubchannel::new(config, Box::new(BufferDevice::new(64))).unwrap();
        sim.enable().unwrap();
        sim
    }

    fn start(sim: &mut SimSubchannel, ram: &GuestRam, cpa: u32) -> HostCc {
        let orb = Orb {
            format1: true,
            prefetch: true,
            lpm: 0x80,
            cpa,
            intparm: 0x1234,
            ..Orb::default()
        };
        let program = translate(&orb, ram).unwrap();
        sim.start(Arc::new(program), ram.clone())
    }

    fn run_to_end(sim: &mut SimSubchannel) -> Vec<Irb> {
        let mut events = Vec::new();
        for _ in 0..1000 {
            sim.poll(&mut events).unwrap();
            if !events.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        events
            .into_iter()
            .filter_map(|e| match e {
                HostEvent::Interrupt(irb) => Some(irb),
                _ => None,
            })
            .collect()
    }

    /// Path events nobody collected yet (no session) do not pile up: the
    /// last one, with the path's state now, is what is reported.
    #[test]
    fn path_events_not_yet_collected_are_replaced_by_the_last() {
        let mut sim = sim(Duration::ZERO);
        for i in 0..1000 {
            sim.vary_path(i % 2 == 0);
        }
        assert_eq!(sim.reports.len(), 1);
        let mut events = Vec::new();
        sim.poll(&mut events).unwrap();
        assert_eq!(
            events,
            [HostEvent::PathChange {
                chpid: sim.config.chpid,
                online: false
            }]
        );
        assert_eq!(sim.pmcw.pam & PATH, 0);
    }

    /// A device removed again is not reported again.
    #[test]
    fn a_removed_device_is_reported_gone_once() {
        let mut sim = sim(Duration::ZERO);
        for _ in 0..3 {
            sim.remove_device();
        }
        let mut events = Vec::new();
        sim.poll(&mut events).unwrap();
        assert_eq!(events, [HostEvent::DeviceGone]);
    }

    #[test]
    fn sense_id_completes_with_channel_end_and_device_end() {
        let ram = ram(0x10000);
        let mut sim = sim(Duration::ZERO);
        put_ccw(&ram, 0x1000, CMD_SENSE_ID, 0x20, 40, 0x2000);
        assert_eq!(start(&mut sim, &ram, 0x1000), HostCc::Accepted);
        assert_eq!(start(&mut sim, &ram, 0x1000), HostCc::Busy);
        let irbs = run_to_end(&mut sim);
        assert_eq!(irbs.len(), 1);
        let scsw = irbs[0].scsw;
        assert_eq!(scsw.function_control, FunctionControl::START);
        assert_eq!(scsw.activity_control, ActivityControl::empty());
        assert_eq!(
            scsw.status_control,
            StatusControl::PRIMARY | StatusControl::SECONDARY | StatusControl::STATUS_PENDING
        );
        assert_eq!(
            scsw.device_status,
            DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END
        );
        assert_eq!(
            scsw.subchannel_status,
            SubchannelStatus::empty(),
            "SLI suppresses IL"
        );
        assert_eq!(scsw.cpa, 0x1008);
        assert_eq!(scsw.count, 28, "40 - 12 bytes of SENSE ID data");
        assert_eq!(irbs[0].esw.subchannel_logout.lpum(), 0x80, "path last used");
        let mut data = [0u8; 4];
        ram.read(0x2000, &mut data).unwrap();
        assert_eq!(data, [0xff, 0x50, 0x00, 0x01]);
        assert!(sim.disable().is_ok(), "idle after the interruption");
    }

    #[test]
    fn incorrect_length_without_sli_ends_the_chain() {
        let ram = ram(0x10000);
        let mut sim = sim(Duration::ZERO);
        // 40-byte SENSE ID without SLI, command-chained to a READ.
        put_ccw(&ram, 0x1000, CMD_SENSE_ID, 0x40, 40, 0x2000);
        put_ccw(&ram, 0x1008, CMD_READ, 0x00, 8, 0x3000);
        start(&mut sim, &ram, 0x1000);
        let scsw = run_to_end(&mut sim)[0].scsw;
        assert_eq!(scsw.subchannel_status, SubchannelStatus::INCORRECT_LENGTH);
        assert_eq!(scsw.cpa, 0x1008, "chaining suppressed after the first CCW");
        assert!(scsw.status_control.contains(StatusControl::ALERT));
    }

    #[test]
    fn data_chained_write_then_read_moves_the_bytes() {
        let ram = ram(0x10000);
        let mut sim = sim(Duration::ZERO);
        ram.write(0x2000, b"abcd").unwrap();
        ram.write(0x2100, b"efgh").unwrap();
        put_ccw(&ram, 0x1000, CMD_WRITE, 0x80, 4, 0x2000); // CD
        put_ccw(&ram, 0x1008, CMD_WRITE, 0x00, 4, 0x2100);
        start(&mut sim, &ram, 0x1000);
        assert_eq!(run_to_end(&mut sim)[0].scsw.count, 0);
        // Seek back and read 10 bytes into an 8-byte data-chained area: the
        // device has only 64 - 8 = 56 bytes after position 8, so read from 0.
        put_ccw(&ram, 0x1100, device::CMD_SEEK, 0x40, 4, 0x2200);
        ram.write(0x2200, &[0, 0, 0, 0]).unwrap();
        put_ccw(&ram, 0x1108, CMD_READ, 0x80, 3, 0x3000); // CD
        put_ccw(&ram, 0x1110, CMD_READ, 0x10 | 0x80, 2, 0x3100); // SKIP+CD
        put_ccw(&ram, 0x1118, CMD_READ, 0x00, 3, 0x3200);
        start(&mut sim, &ram, 0x1100);
        let scsw = run_to_end(&mut sim)[0].scsw;
        assert_eq!(scsw.subchannel_status, SubchannelStatus::empty());
        assert_eq!(scsw.cpa, 0x1120);
        let mut out = [0u8; 3];
        ram.read(0x3000, &mut out).unwrap();
        assert_eq!(&out, b"abc");
        let mut skipped = [0xeeu8; 2];
        ram.read(0x3100, &mut skipped).unwrap();
        assert_eq!(skipped, [0, 0], "SKIP stores nothing");
        ram.read(0x3200, &mut out).unwrap();
        assert_eq!(&out, b"fgh");
    }

    #[test]
    fn halt_stops_a_running_program_at_a_ccw_boundary() {
        let ram = ram(0x10000);
        let mut sim = sim(Duration::from_millis(20));
        for i in 0..4u64 {
            put_ccw(&ram, 0x1000 + 8 * i, device::CMD_NOP, 0x40, 0, 0);
        }
        put_ccw(&ram, 0x1020, device::CMD_NOP, 0x00, 0, 0);
        start(&mut sim, &ram, 0x1000);
        let mut irbs = Vec::new();
        sim.poll(&mut irbs).unwrap(); // first CCW runs, the rest waits
        assert!(irbs.is_empty());
        assert_eq!(sim.halt(), HostCc::Accepted);
        assert_eq!(sim.halt(), HostCc::Busy, "halt already in progress");
        let irbs = run_to_end(&mut sim);
        let scsw = irbs[0].scsw;
        assert_eq!(
            scsw.function_control,
            FunctionControl::START | FunctionControl::HALT
        );
        assert_eq!(scsw.status_control, StatusControl::STATUS_PENDING);
        assert_eq!(scsw.device_status, DeviceStatus::DEVICE_END);
        assert_eq!(scsw.cpa, 0x1008, "after the one executed CCW");
    }

    #[test]
    fn clear_withdraws_everything_and_resets_path_masks() {
        let ram = ram(0x10000);
        let mut sim = sim(Duration::from_millis(20));
        put_ccw(&ram, 0x1000, device::CMD_NOP, 0x40, 0, 0);
        put_ccw(&ram, 0x1008, device::CMD_NOP, 0x00, 0, 0);
        start(&mut sim, &ram, 0x1000);
        assert_eq!(sim.clear(), HostCc::Accepted);
        let scsw = run_to_end(&mut sim)[0].scsw;
        assert_eq!(scsw.function_control, FunctionControl::CLEAR);
        assert_eq!(scsw.status_control, StatusControl::STATUS_PENDING);
        let schib = sim.store().unwrap();
        assert_eq!(schib.pmcw.lpum, 0);
        assert_eq!(schib.pmcw.pom, 0xff);
        assert!(schib.scsw.function_control.is_empty());
    }

    #[test]
    fn cancel_withdraws_a_start_that_has_not_begun() {
        let ram = ram(0x10000);
        let mut sim = sim(Duration::ZERO);
        put_ccw(&ram, 0x1000, device::CMD_NOP, 0x00, 0, 0);
        start(&mut sim, &ram, 0x1000);
        assert_eq!(sim.cancel(), HostCc::Accepted);
        let mut irbs = Vec::new();
        sim.poll(&mut irbs).unwrap();
        assert!(irbs.is_empty(), "no interruption after cancel");
        assert_eq!(sim.cancel(), HostCc::Busy);
        sim.disable().unwrap();
        assert_eq!(start(&mut sim, &ram, 0x1000), HostCc::NotOperational);
    }

    fn poll_all(sim: &mut SimSubchannel) -> Vec<Irb> {
        let mut events = Vec::new();
        sim.poll(&mut events).unwrap();
        events
            .into_iter()
            .filter_map(|e| match e {
                HostEvent::Interrupt(irb) => Some(irb),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tic_loop_runs_until_halted_without_holding_the_event_loop() {
        let ram = ram(0x10000);
        let mut sim = sim(Duration::ZERO);
        put_ccw(&ram, 0x1000, device::CMD_NOP, 0x40, 0, 0);
        put_ccw(&ram, 0x1008, 0x08, 0x00, 0, 0x1000);
        start(&mut sim, &ram, 0x1000);
        assert!(poll_all(&mut sim).is_empty(), "an endless program yields");
        assert!(
            sim.wait(Duration::from_secs(1)).unwrap(),
            "and asks to be polled again"
        );
        assert!(poll_all(&mut sim).is_empty());
        assert_eq!(sim.halt(), HostCc::Accepted);
        let irbs = poll_all(&mut sim);
        assert_eq!(irbs.len(), 1);
        assert_eq!(
            irbs[0].scsw.function_control,
            FunctionControl::START | FunctionControl::HALT
        );
        assert!(irbs[0].scsw.cpa == 0x1008 || irbs[0].scsw.cpa == 0x1010);
    }

    #[test]
    fn pci_flag_presents_intermediate_status_then_the_final_one() {
        let ram = ram(0x10000);
        let mut sim = sim(Duration::ZERO);
        put_ccw(&ram, 0x1000, device::CMD_NOP, 0x40 | 0x08, 0, 0);
        put_ccw(&ram, 0x1008, device::CMD_NOP, 0x00, 0, 0);
        start(&mut sim, &ram, 0x1000);
        let irbs = poll_all(&mut sim);
        assert_eq!(irbs.len(), 2);
        let pci = irbs[0].scsw;
        assert!(pci.is_intermediate_only());
        assert_eq!(
            pci.subchannel_status,
            SubchannelStatus::PROGRAM_CONTROLLED_INTERRUPTION
        );
        assert_eq!(pci.cpa, 0x1008);
        assert!(irbs[1].scsw.is_final());
        assert_eq!(irbs[1].scsw.cpa, 0x1010);
    }

    #[test]
    fn indirect_data_moves_through_format2_idaws() {
        let ram = ram(0x10000);
        let mut sim = sim(Duration::ZERO);
        ram.write(0x8ffc, b"ABCD").unwrap();
        ram.write(0x9000, b"EFGH").unwrap();
        ram.write(0x4000, &0x8ffcu64.to_be_bytes()).unwrap();
        ram.write(0x4008, &0x9000u64.to_be_bytes()).unwrap();
        // WRITE 8 bytes through two IDAWs, SEEK 0, READ 8 back directly.
        ram.write(0x5000, &[0, 0, 0, 0]).unwrap();
        put_ccw(&ram, 0x1000, CMD_WRITE, 0x40 | 0x04, 8, 0x4000);
        put_ccw(&ram, 0x1008, device::CMD_SEEK, 0x40, 4, 0x5000);
        put_ccw(&ram, 0x1010, CMD_READ, 0x00, 8, 0x6000);
        let orb = Orb {
            format1: true,
            prefetch: true,
            format2_idaw: true,
            lpm: 0x80,
            cpa: 0x1000,
            ..Orb::default()
        };
        let program = translate(&orb, &ram).unwrap();
        assert_eq!(sim.start(Arc::new(program), ram.clone()), HostCc::Accepted);
        let irbs = run_to_end(&mut sim);
        assert_eq!(irbs[0].scsw.subchannel_status, SubchannelStatus::empty());
        let mut back = [0u8; 8];
        ram.read(0x6000, &mut back).unwrap();
        assert_eq!(&back, b"ABCDEFGH");
    }

    #[test]
    fn program_check_comes_after_the_valid_prefix() {
        let ram = ram(0x10000);
        let mut sim = sim(Duration::ZERO);
        put_ccw(&ram, 0x1000, CMD_SENSE_ID, 0x40 | 0x20, 8, 0x2000);
        put_ccw(&ram, 0x1008, 0x00, 0x00, 8, 0x3000);
        start(&mut sim, &ram, 0x1000);
        let scsw = run_to_end(&mut sim)[0].scsw;
        assert_eq!(scsw.subchannel_status, SubchannelStatus::PROGRAM_CHECK);
        assert_eq!(scsw.device_status, DeviceStatus::empty());
        assert_eq!(scsw.cpa, 0x1010);
        assert!(scsw.status_control.contains(StatusControl::ALERT));
        let mut id = [0u8; 1];
        ram.read(0x2000, &mut id).unwrap();
        assert_eq!(id, [0xff], "SENSE ID ran before the check");
    }

    #[test]
    fn orb_without_our_path_gets_deferred_cc3() {
        let ram = ram(0x10000);
        let mut sim = sim(Duration::ZERO);
        put_ccw(&ram, 0x1000, device::CMD_NOP, 0x00, 0, 0);
        let orb = Orb {
            format1: true,
            lpm: 0x40,
            cpa: 0x1000,
            ..Orb::default()
        };
        let program = translate(&orb, &ram).unwrap();
        sim.start(Arc::new(program), ram.clone());
        let scsw = run_to_end(&mut sim)[0].scsw;
        assert_eq!(scsw.deferred_cc, 3);
        assert_eq!(scsw.cpa, 0x1000);
    }

    /// A device that records how the channel presents each command and
    /// fails the end of the chain, as a DASD whose flush fails does.
    #[derive(Default)]
    struct Recorder {
        seen: Arc<std::sync::Mutex<Vec<(u8, Chaining)>>>,
        ended: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl DeviceModel for Recorder {
        fn sense_id(&self) -> vhost_user_ccw_protocol::arch::SenseId {
            BufferDevice::new(1).sense_id()
        }
        fn execute(
            &mut self,
            cmd: u8,
            _data: &mut [u8],
            chaining: Chaining,
        ) -> device::DeviceResponse {
            self.seen.lock().unwrap().push((cmd, chaining));
            if cmd == 0x27 {
                device::DeviceResponse::unit_check()
            } else {
                device::DeviceResponse::done(0)
            }
        }
        fn chain_ended(&mut self) -> DeviceStatus {
            self.ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            DeviceStatus::UNIT_CHECK
        }
        fn reset(&mut self) {}
        fn sense(&self) -> vhost_user_ccw_protocol::arch::Sense {
            vhost_user_ccw_protocol::arch::Sense::default()
        }
    }

    #[test]
    fn device_learns_chaining_and_the_end_of_the_chain() {
        let ram = ram(0x10000);
        let recorder = Recorder::default();
        let (seen, ended) = (Arc::clone(&recorder.seen), Arc::clone(&recorder.ended));
        let mut sim = SimSubchannel::new(SimConfig::default(), Box::new(recorder)).unwrap();
        sim.enable().unwrap();
        // NOP (CC), TIC, NOP (CC), NOP: a chain of three commands.
        put_ccw(&ram, 0x1000, device::CMD_NOP, 0x40, 0, 0);
        put_ccw(&ram, 0x1008, 0x08, 0x00, 0, 0x1100);
        put_ccw(&ram, 0x1100, device::CMD_NOP, 0x40, 0, 0);
        put_ccw(&ram, 0x1108, device::CMD_NOP, 0x00, 0, 0);
        start(&mut sim, &ram, 0x1000);
        let scsw = run_to_end(&mut sim)[0].scsw;
        let chaining = |first, continues| Chaining { first, continues };
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (device::CMD_NOP, chaining(true, true)),
                (device::CMD_NOP, chaining(false, true)),
                (device::CMD_NOP, chaining(false, false)),
            ]
        );
        assert_eq!(ended.load(std::sync::atomic::Ordering::SeqCst), 1);
        // What the end of the chain reports joins the final status.
        assert_eq!(
            scsw.device_status,
            DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END | DeviceStatus::UNIT_CHECK
        );
        assert!(scsw.status_control.contains(StatusControl::ALERT));

        // A command the device rejects at once: unit check, no incorrect
        // length although the count (16) differs and SLI is off.
        seen.lock().unwrap().clear();
        put_ccw(&ram, 0x1200, 0x27, 0x40, 16, 0x2000);
        put_ccw(&ram, 0x1208, device::CMD_NOP, 0x00, 0, 0);
        start(&mut sim, &ram, 0x1200);
        let scsw = run_to_end(&mut sim)[0].scsw;
        assert_eq!(scsw.subchannel_status, SubchannelStatus::empty());
        assert_eq!(scsw.count, 16);
        assert_eq!(scsw.cpa, 0x1208, "chaining stops at the unit check");
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(ended.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn halt_and_clear_end_the_chain_for_the_device() {
        let ram = ram(0x10000);
        let recorder = Recorder::default();
        let ended = Arc::clone(&recorder.ended);
        let config = SimConfig {
            latency: Duration::from_millis(20),
            ..SimConfig::default()
        };
        let mut sim = SimSubchannel::new(config, Box::new(recorder)).unwrap();
        sim.enable().unwrap();
        put_ccw(&ram, 0x1000, device::CMD_NOP, 0x40, 0, 0);
        put_ccw(&ram, 0x1008, device::CMD_NOP, 0x00, 0, 0);
        let count = || ended.load(std::sync::atomic::Ordering::SeqCst);
        start(&mut sim, &ram, 0x1000);
        assert!(
            poll_all(&mut sim).is_empty(),
            "first NOP done, the second waits"
        );
        assert_eq!(count(), 0);
        assert_eq!(sim.halt(), HostCc::Accepted);
        let irb = run_to_end(&mut sim);
        assert_eq!(
            irb[0].scsw.function_control,
            FunctionControl::START | FunctionControl::HALT
        );
        assert_eq!(count(), 1, "the halted chain ended");
        start(&mut sim, &ram, 0x1000);
        assert!(poll_all(&mut sim).is_empty());
        assert_eq!(sim.clear(), HostCc::Accepted);
        run_to_end(&mut sim);
        assert_eq!(count(), 2, "the cleared chain ended");
    }
}
