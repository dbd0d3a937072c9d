//! Runs a parsed [`Script`] against a device and builds a [`Report`].
//!
//! The device is anything implementing [`Device`]: the real vhost-user
//! connection, or a fake in tests. [`run`] writes every placement into guest
//! RAM, executes the steps in order (requests, waits, sleeps, pokes),
//! checks expectations where they appear, reads back every named buffer and
//! returns the report. The report serializes to JSON with a stable layout
//! documented in `docs/program-format.md` ("Report").
//!
//! Failed expectations and unexpected wait timeouts do not stop the run; they
//! are recorded in the report and make [`Report::ok`] false. Only transport
//! and guest-RAM errors of the device abort the run ([`DeviceError`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use vhost_user_ccw_protocol::arch::{
    Crw, DeviceStatus, Esw, FunctionControl, Irb, Schib, Scsw, SenseId, SubchannelStatus,
};
use vhost_user_ccw_protocol::wire::{
    CAP_FORMAT0_CCW, CAP_HALT_CLEAR, CAP_IDAW_FORMAT1, CAP_IDAW_FORMAT2, ConfigSpace, Event,
    ProgramErrorCode, Request, RequestType, Response, ResponseStatus,
};

use crate::script::{
    AC_NAMES, CSTAT_NAMES, DSTAT_NAMES, EventKind, Expectation, FC_NAMES, IrbExpectation, SC_NAMES,
    SchibExpectation, Script, StepKind, error_name, flag_names, joined_names, status_name, to_hex,
};

/// What a script runs against: one subchannel behind a vhost-user-ccw
/// backend, with the guest RAM the frontend shares with it.
pub trait Device {
    /// The device config space read at connection time.
    fn config(&self) -> &ConfigSpace;
    /// Size of guest RAM in bytes (guest addresses `0..ram_size`).
    fn ram_size(&self) -> u64;
    /// Writes guest RAM.
    ///
    /// # Errors
    ///
    /// [`DeviceError::Ram`] if the range is not inside guest RAM.
    fn write_ram(&mut self, addr: u64, bytes: &[u8]) -> Result<(), DeviceError>;
    /// Reads guest RAM.
    ///
    /// # Errors
    ///
    /// [`DeviceError::Ram`] if the range is not inside guest RAM.
    fn read_ram(&self, addr: u64, buf: &mut [u8]) -> Result<(), DeviceError>;
    /// Submits a request on the request queue and waits for its response.
    ///
    /// # Errors
    ///
    /// [`DeviceError::Transport`] if the backend cannot be reached or
    /// answers with something undecodable.
    fn request(&mut self, request: &Request) -> Result<Response, DeviceError>;
    /// Waits up to `timeout` for the next event; `None` on timeout.
    ///
    /// # Errors
    ///
    /// [`DeviceError::Transport`] as for [`Device::request`].
    fn wait_event(&mut self, timeout: Duration) -> Result<Option<Event>, DeviceError>;
}

/// A device failure that aborts a run.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The transport to the backend failed.
    #[error("{0}")]
    Transport(String),
    /// A guest RAM access outside guest RAM.
    #[error("guest RAM access {addr:#x}+{len:#x} out of range")]
    Ram {
        /// First address of the access.
        addr: u64,
        /// Length of the access.
        len: u64,
    },
}

// ---------------------------------------------------------------------------
// Report.

fn h8(v: u8) -> String {
    format!("{v:#04x}")
}

fn h16(v: u16) -> String {
    format!("{v:#06x}")
}

fn h32(v: u32) -> String {
    format!("{v:#010x}")
}

fn h64(v: u64) -> String {
    format!("{v:#018x}")
}

/// The result of running a script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The device, from its config space.
    pub device: DeviceReport,
    /// One entry per executed action (expectations are not listed here).
    pub steps: Vec<StepReport>,
    /// Final guest-memory content of every named buffer, as lowercase hex.
    pub buffers: BTreeMap<String, String>,
    /// Expectation results.
    pub expectations: ExpectationReport,
    /// Lines of the waits that timed out without `expect event=none`.
    pub timeouts: Vec<usize>,
    /// No expectation failed and no wait timed out unexpectedly.
    pub ok: bool,
}

impl Report {
    /// Whether the run succeeded: no expectation failed and no wait timed
    /// out unexpectedly.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.ok
    }

    /// The report as a JSON value.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("the report serializes")
    }

    /// The report as pretty-printed JSON text.
    #[must_use]
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }
}

/// Expectation results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpectationReport {
    /// Number of expectations checked.
    pub checked: usize,
    /// The ones that failed, in order.
    pub failed: Vec<Failure>,
}

/// A failed expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Line of the `expect` directive.
    pub line: usize,
    /// What did not match.
    pub message: String,
}

/// The device's identity and paths, from its config space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceReport {
    /// Config-space layout version.
    pub version: u16,
    /// Channel-subsystem id (`0xfe`).
    pub cssid: String,
    /// Subchannel-set id (`0x00`).
    pub ssid: String,
    /// Subchannel number (`0x0005`).
    pub schno: String,
    /// Device number (`0x0190`).
    pub devno: String,
    /// Capability bits (`0x0000000f`).
    pub capabilities: String,
    /// Names of the known capability bits that are set.
    pub capability_names: Vec<&'static str>,
    /// SENSE ID data.
    pub sense_id: SenseIdReport,
    /// Path-installed mask of the SCHIB at open time.
    pub pim: String,
    /// Path-available mask.
    pub pam: String,
    /// Path-operational mask.
    pub pom: String,
    /// The eight CHPIDs.
    pub chpids: Vec<String>,
    /// The eight channel-path types.
    pub chpid_types: Vec<String>,
}

/// SENSE ID data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SenseIdReport {
    /// Control-unit type (`0x3990`).
    pub cu_type: String,
    /// Control-unit model (`0xe9`).
    pub cu_model: String,
    /// Device type (`0x3390`).
    pub dev_type: String,
    /// Device model (`0x0c`).
    pub dev_model: String,
    /// Command-information words.
    pub ciws: Vec<CiwReport>,
}

/// A command-information word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CiwReport {
    /// Command type (`0x00` read configuration data, `0x01` set interface
    /// identifier, `0x02` read node identifier).
    pub command_type: String,
    /// Command code.
    pub command: String,
    /// Byte count.
    pub count: u16,
}

/// How a request completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestOutcome {
    /// `ok`, `unit-exception`, `bad-request`, `broken` or `unsupported`.
    pub status: &'static str,
    /// Condition code (meaningful with status `ok`).
    pub cc: u8,
    /// The response's error code: `null` when 0; the program-error name for
    /// a unit exception with a known code; otherwise `0x…` hex.
    pub error: Option<String>,
}

/// One executed action. Serialized with an `action` member naming the
/// variant in kebab case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum StepReport {
    /// START SUBCHANNEL.
    Start {
        /// Script line (0: implicit).
        line: usize,
        /// Request tag.
        tag: u64,
        /// The 12 ORB bytes, hex.
        orb: String,
        /// How the request completed.
        #[serde(flatten)]
        outcome: RequestOutcome,
    },
    /// HALT SUBCHANNEL.
    Halt {
        /// Script line.
        line: usize,
        /// Request tag.
        tag: u64,
        /// How the request completed.
        #[serde(flatten)]
        outcome: RequestOutcome,
    },
    /// CLEAR SUBCHANNEL.
    Clear {
        /// Script line.
        line: usize,
        /// Request tag.
        tag: u64,
        /// How the request completed.
        #[serde(flatten)]
        outcome: RequestOutcome,
    },
    /// STORE SUBCHANNEL.
    Store {
        /// Script line.
        line: usize,
        /// How the request completed.
        #[serde(flatten)]
        outcome: RequestOutcome,
        /// The SCHIB (status ok and cc 0), else `null`.
        schib: Option<Box<SchibReport>>,
    },
    /// Waiting for an event.
    Wait {
        /// Script line (0: implicit).
        line: usize,
        /// The timeout in milliseconds.
        timeout_ms: u64,
        /// The event, `null` on timeout.
        event: Option<EventReport>,
        /// Whether the wait timed out.
        timed_out: bool,
        /// Whether the script expected the timeout (`expect event=none`).
        timeout_expected: bool,
    },
    /// A pause.
    Sleep {
        /// Script line.
        line: usize,
        /// Milliseconds.
        ms: u64,
    },
    /// A guest-memory write.
    Poke {
        /// Script line.
        line: usize,
        /// Guest address (`0x…`, 16 digits).
        addr: String,
        /// Bytes written.
        len: usize,
    },
}

/// An event. Serialized with a `type` member: `interrupt`, `crw` or
/// `device-gone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventReport {
    /// An I/O interruption.
    Interrupt {
        /// The tag of the request it reports (0: unsolicited).
        tag: u64,
        /// The IRB.
        irb: Box<IrbReport>,
    },
    /// A channel report.
    Crw {
        /// The CRW.
        crw: CrwReport,
    },
    /// The device is gone.
    DeviceGone,
}

/// An interruption-response block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IrbReport {
    /// Subchannel-status word.
    pub scsw: ScswReport,
    /// Extended-status word.
    pub esw: EswReport,
    /// Concurrent sense: the first SCNT bytes of the ECW (all 32 if SCNT is
    /// 0), hex; `null` without concurrent sense.
    pub sense: Option<String>,
    /// The whole ECW, hex, when the SCSW's extended-control bit is set;
    /// `null` otherwise.
    pub ecw: Option<String>,
}

/// A subchannel-status word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScswReport {
    /// Subchannel key.
    pub key: u8,
    /// One-bit controls that are set: `suspend-control`, `esw-format`,
    /// `format-1`, `prefetch`, `initial-status`, `address-limit`,
    /// `suppress-suspended`, `zero-cc`, `extended-control`,
    /// `path-not-operational`.
    pub flags: Vec<&'static str>,
    /// Deferred condition code.
    pub cc: u8,
    /// Function control names.
    pub fc: Vec<&'static str>,
    /// Activity control names.
    pub ac: Vec<&'static str>,
    /// Status control names.
    pub sc: Vec<&'static str>,
    /// CCW address (`0x…`, 8 digits).
    pub cpa: String,
    /// Device status (`0x0c`).
    pub dstat: String,
    /// Device status names.
    pub dstat_names: Vec<&'static str>,
    /// Subchannel status (`0x00`).
    pub cstat: String,
    /// Subchannel status names.
    pub cstat_names: Vec<&'static str>,
    /// Residual count.
    pub count: u16,
}

/// An extended-status word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EswReport {
    /// Word 0 (subchannel logout), `0x…` 8 digits.
    pub logout: String,
    /// Last-path-used mask from word 0.
    pub lpum: String,
    /// Word 1 (extended-report word), `0x…` 8 digits.
    pub erw: String,
    /// ERW flags that are set: `request-logging`, `extended-logout-pending`,
    /// `authorization-check`, `path-verification-required`,
    /// `channel-path-timeout`, `failing-storage-address-valid`,
    /// `concurrent-sense`, `secondary-ccw-address-valid`,
    /// `failing-storage-address-format`.
    pub erw_flags: Vec<&'static str>,
    /// Sense count of the ERW.
    pub sense_count: u8,
    /// Failing-storage address (words 2-3), 16 digits.
    pub failing_storage_address: String,
    /// Secondary-CCW address (word 4), 8 digits.
    pub secondary_ccw_address: String,
}

/// A channel-report word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrwReport {
    /// The word as stored, `0x…` 8 digits.
    pub raw: String,
    /// Solicited.
    pub solicited: bool,
    /// Overflow.
    pub overflow: bool,
    /// Chaining.
    pub chaining: bool,
    /// Reporting-source code (`0x03` subchannel).
    pub rsc: String,
    /// Ancillary report.
    pub ancillary: bool,
    /// Error-recovery code.
    pub erc: String,
    /// Reporting-source id (`0x0005`).
    pub rsid: String,
}

/// A subchannel-information block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchibReport {
    /// Path-management-control word.
    pub pmcw: PmcwReport,
    /// Subchannel-status word.
    pub scsw: ScswReport,
    /// Measurement-block address, 16 digits.
    pub mba: String,
    /// Model-dependent area, hex.
    pub mda: String,
}

/// A path-management-control word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PmcwReport {
    /// Interruption parameter, 8 digits.
    pub intparm: String,
    /// Interruption subclass.
    pub isc: u8,
    /// Enabled.
    pub enabled: bool,
    /// Limit mode.
    pub limit_mode: u8,
    /// Measurement mode.
    pub measurement_mode: u8,
    /// Multipath mode.
    pub multipath_mode: bool,
    /// Timing facility.
    pub timing_facility: bool,
    /// Device number valid.
    pub device_number_valid: bool,
    /// Device number, 4 digits.
    pub devno: String,
    /// Logical-path mask.
    pub lpm: String,
    /// Path-not-operational mask.
    pub pnom: String,
    /// Last-path-used mask.
    pub lpum: String,
    /// Path-installed mask.
    pub pim: String,
    /// Measurement-block index, 4 digits.
    pub mbi: String,
    /// Path-operational mask.
    pub pom: String,
    /// Path-available mask.
    pub pam: String,
    /// The eight CHPIDs.
    pub chpids: Vec<String>,
    /// Subchannel type.
    pub subchannel_type: u8,
    /// Concurrent-sense facility.
    pub concurrent_sense: bool,
}

const CAPABILITY_NAMES: [(&str, u32); 4] = [
    ("format0-ccw", CAP_FORMAT0_CCW),
    ("idaw-format1", CAP_IDAW_FORMAT1),
    ("idaw-format2", CAP_IDAW_FORMAT2),
    ("halt-clear", CAP_HALT_CLEAR),
];

fn sense_id_report(sense_id: &SenseId) -> SenseIdReport {
    SenseIdReport {
        cu_type: h16(sense_id.cu_type),
        cu_model: h8(sense_id.cu_model),
        dev_type: h16(sense_id.dev_type),
        dev_model: h8(sense_id.dev_model),
        ciws: sense_id
            .ciws
            .iter()
            .map(|ciw| CiwReport {
                command_type: h8(ciw.command_type),
                command: h8(ciw.command),
                count: ciw.count,
            })
            .collect(),
    }
}

impl DeviceReport {
    /// The report of a config space.
    #[must_use]
    pub fn new(config: &ConfigSpace) -> Self {
        let pmcw = &config.schib.pmcw;
        Self {
            version: config.version,
            cssid: h8(config.cssid),
            ssid: h8(config.ssid),
            schno: h16(config.schno),
            devno: h16(config.devno),
            capabilities: h32(config.capabilities),
            capability_names: CAPABILITY_NAMES
                .iter()
                .filter(|&&(_, bit)| config.capabilities & bit != 0)
                .map(|&(name, _)| name)
                .collect(),
            sense_id: sense_id_report(&config.sense_id),
            pim: h8(pmcw.pim),
            pam: h8(pmcw.pam),
            pom: h8(pmcw.pom),
            chpids: pmcw.chpid.iter().copied().map(h8).collect(),
            chpid_types: config.chpid_type.iter().copied().map(h8).collect(),
        }
    }
}

impl ScswReport {
    /// The report of an SCSW.
    #[must_use]
    pub fn new(scsw: &Scsw) -> Self {
        let flags = [
            ("suspend-control", scsw.suspend_control),
            ("esw-format", scsw.esw_format),
            ("format-1", scsw.format1),
            ("prefetch", scsw.prefetch),
            ("initial-status", scsw.initial_status_interruption),
            ("address-limit", scsw.address_limit_checking),
            ("suppress-suspended", scsw.suppress_suspended_interruption),
            ("zero-cc", scsw.zero_condition_code),
            ("extended-control", scsw.extended_control),
            ("path-not-operational", scsw.path_not_operational),
        ];
        Self {
            key: scsw.key,
            flags: flags
                .iter()
                .filter(|&&(_, set)| set)
                .map(|&(name, _)| name)
                .collect(),
            cc: scsw.deferred_cc,
            fc: flag_names(scsw.function_control, &FC_NAMES),
            ac: flag_names(scsw.activity_control, &AC_NAMES),
            sc: flag_names(scsw.status_control, &SC_NAMES),
            cpa: h32(scsw.cpa),
            dstat: h8(scsw.device_status.bits()),
            dstat_names: flag_names(scsw.device_status, &DSTAT_NAMES),
            cstat: h8(scsw.subchannel_status.bits()),
            cstat_names: flag_names(scsw.subchannel_status, &CSTAT_NAMES),
            count: scsw.count,
        }
    }
}

impl EswReport {
    /// The report of an ESW.
    #[must_use]
    pub fn new(esw: &Esw) -> Self {
        let erw = &esw.erw;
        let flags = [
            ("request-logging", erw.request_logging),
            ("extended-logout-pending", erw.extended_logout_pending),
            ("authorization-check", erw.authorization_check),
            ("path-verification-required", erw.path_verification_required),
            ("channel-path-timeout", erw.channel_path_timeout),
            (
                "failing-storage-address-valid",
                erw.failing_storage_address_valid,
            ),
            ("concurrent-sense", erw.concurrent_sense),
            (
                "secondary-ccw-address-valid",
                erw.secondary_ccw_address_valid,
            ),
            (
                "failing-storage-address-format",
                erw.failing_storage_address_format,
            ),
        ];
        Self {
            logout: h32(esw.subchannel_logout.0),
            lpum: h8(esw.subchannel_logout.lpum()),
            erw: h32(u32::from_be_bytes(erw.encode())),
            erw_flags: flags
                .iter()
                .filter(|&&(_, set)| set)
                .map(|&(name, _)| name)
                .collect(),
            sense_count: erw.sense_count,
            failing_storage_address: h64(esw.failing_storage_address),
            secondary_ccw_address: h32(esw.secondary_ccw_address),
        }
    }
}

impl IrbReport {
    /// The report of an IRB.
    #[must_use]
    pub fn new(irb: &Irb) -> Self {
        let sense = irb.esw.erw.concurrent_sense.then(|| {
            let count = match usize::from(irb.esw.erw.sense_count) {
                0 => irb.ecw.len(),
                n => n.min(irb.ecw.len()),
            };
            to_hex(&irb.ecw[..count])
        });
        Self {
            scsw: ScswReport::new(&irb.scsw),
            esw: EswReport::new(&irb.esw),
            sense,
            ecw: irb.scsw.extended_control.then(|| to_hex(&irb.ecw)),
        }
    }
}

impl CrwReport {
    /// The report of a CRW.
    #[must_use]
    pub fn new(crw: &Crw) -> Self {
        Self {
            raw: h32(u32::from_be_bytes(crw.encode())),
            solicited: crw.solicited,
            overflow: crw.overflow,
            chaining: crw.chaining,
            rsc: h8(crw.rsc),
            ancillary: crw.ancillary,
            erc: h8(crw.erc),
            rsid: h16(crw.rsid),
        }
    }
}

impl EventReport {
    /// The report of an event.
    #[must_use]
    pub fn new(event: &Event) -> Self {
        match event {
            Event::Interrupt { tag, irb } => Self::Interrupt {
                tag: *tag,
                irb: Box::new(IrbReport::new(irb)),
            },
            Event::ChannelReport(crw) => Self::Crw {
                crw: CrwReport::new(crw),
            },
            Event::DeviceGone => Self::DeviceGone,
        }
    }
}

impl SchibReport {
    /// The report of a SCHIB.
    #[must_use]
    pub fn new(schib: &Schib) -> Self {
        let p = &schib.pmcw;
        Self {
            pmcw: PmcwReport {
                intparm: h32(p.intparm),
                isc: p.isc,
                enabled: p.enabled,
                limit_mode: p.limit_mode,
                measurement_mode: p.measurement_mode,
                multipath_mode: p.multipath_mode,
                timing_facility: p.timing_facility,
                device_number_valid: p.device_number_valid,
                devno: h16(p.devno),
                lpm: h8(p.lpm),
                pnom: h8(p.pnom),
                lpum: h8(p.lpum),
                pim: h8(p.pim),
                mbi: h16(p.mbi),
                pom: h8(p.pom),
                pam: h8(p.pam),
                chpids: p.chpid.iter().copied().map(h8).collect(),
                subchannel_type: p.subchannel_type,
                concurrent_sense: p.concurrent_sense,
            },
            scsw: ScswReport::new(&schib.scsw),
            mba: h64(schib.mba),
            mda: to_hex(&schib.mda),
        }
    }
}

impl RequestOutcome {
    /// The outcome of a response.
    #[must_use]
    pub fn new(response: &Response) -> Self {
        Self {
            status: status_name(response.status),
            cc: response.cc,
            error: error_text(response),
        }
    }
}

fn error_text(response: &Response) -> Option<String> {
    if response.error == 0 {
        return None;
    }
    match (response.status, ProgramErrorCode::try_from(response.error)) {
        (ResponseStatus::UnitException, Ok(code)) => Some(error_name(code).to_owned()),
        _ => Some(h32(response.error)),
    }
}

// ---------------------------------------------------------------------------
// Running.

/// The last request and how it completed.
struct LastRequest {
    action: &'static str,
    line: usize,
    response: Response,
}

impl LastRequest {
    fn describe(&self) -> String {
        if self.line == 0 {
            format!("the implicit {}", self.action)
        } else {
            format!("the {} on line {}", self.action, self.line)
        }
    }

    fn status_text(&self) -> String {
        let status = status_name(self.response.status);
        match error_text(&self.response) {
            Some(error) => format!("{status} (error {error})"),
            None => status.to_owned(),
        }
    }
}

fn wait_name(line: usize) -> String {
    if line == 0 {
        "the implicit wait".to_owned()
    } else {
        format!("the wait on line {line}")
    }
}

fn event_kind(event: &Event) -> EventKind {
    match event {
        Event::Interrupt { .. } => EventKind::Interrupt,
        Event::ChannelReport(_) => EventKind::ChannelReport,
        Event::DeviceGone => EventKind::DeviceGone,
    }
}

#[derive(Default)]
struct State {
    last_request: Option<LastRequest>,
    /// Line and response of the last STORE.
    last_store: Option<(usize, Response)>,
    /// Line and result of the last wait.
    last_wait: Option<(usize, Option<Event>)>,
    /// Line of the wait, tag and IRB of the last interrupt.
    last_interrupt: Option<(usize, u64, Irb)>,
}

/// Executes `script` against `device`.
///
/// # Errors
///
/// The first [`DeviceError`]: writing a placement, a transport failure, or a
/// guest-RAM access the device rejects. Failed expectations are not errors;
/// they are recorded in the report.
pub fn run(script: &Script, device: &mut dyn Device) -> Result<Report, DeviceError> {
    for placement in &script.placements {
        log::debug!(
            "placing {} at {:#x} ({} bytes)",
            placement.what,
            placement.addr,
            placement.bytes.len()
        );
        device.write_ram(placement.addr, &placement.bytes)?;
    }
    let mut state = State::default();
    let mut steps = Vec::new();
    let mut expectations = ExpectationReport::default();
    let mut timeouts = Vec::new();
    for step in &script.steps {
        let line = step.line;
        match &step.kind {
            StepKind::Start { tag, orb } => {
                let scsw = Scsw {
                    function_control: FunctionControl::START,
                    ..Scsw::default()
                };
                let response = send(
                    device,
                    &mut state,
                    "start",
                    line,
                    Request::start(*tag, *orb, scsw),
                )?;
                steps.push(StepReport::Start {
                    line,
                    tag: *tag,
                    orb: to_hex(&orb.encode()),
                    outcome: RequestOutcome::new(&response),
                });
            }
            StepKind::Halt { tag } => {
                let request = Request::new(RequestType::Halt, *tag);
                let response = send(device, &mut state, "halt", line, request)?;
                steps.push(StepReport::Halt {
                    line,
                    tag: *tag,
                    outcome: RequestOutcome::new(&response),
                });
            }
            StepKind::Clear { tag } => {
                let request = Request::new(RequestType::Clear, *tag);
                let response = send(device, &mut state, "clear", line, request)?;
                steps.push(StepReport::Clear {
                    line,
                    tag: *tag,
                    outcome: RequestOutcome::new(&response),
                });
            }
            StepKind::Store => {
                let request = Request::new(RequestType::Store, 0);
                let response = send(device, &mut state, "store", line, request)?;
                state.last_store = Some((line, response));
                let valid = response.status == ResponseStatus::Ok && response.cc == 0;
                steps.push(StepReport::Store {
                    line,
                    outcome: RequestOutcome::new(&response),
                    schib: valid.then(|| Box::new(SchibReport::new(&response.schib))),
                });
            }
            StepKind::Wait {
                timeout_ms,
                timeout_expected,
            } => {
                let event = device.wait_event(Duration::from_millis(*timeout_ms))?;
                log::debug!("line {line}: wait -> {event:?}");
                if let Some(Event::Interrupt { tag, irb }) = &event {
                    state.last_interrupt = Some((line, *tag, *irb));
                }
                let timed_out = event.is_none();
                if timed_out && !timeout_expected {
                    timeouts.push(line);
                }
                steps.push(StepReport::Wait {
                    line,
                    timeout_ms: *timeout_ms,
                    event: event.as_ref().map(EventReport::new),
                    timed_out,
                    timeout_expected: *timeout_expected,
                });
                state.last_wait = Some((line, event));
            }
            StepKind::Sleep { ms } => {
                std::thread::sleep(Duration::from_millis(*ms));
                steps.push(StepReport::Sleep { line, ms: *ms });
            }
            StepKind::Poke { addr, bytes } => {
                device.write_ram(*addr, bytes)?;
                steps.push(StepReport::Poke {
                    line,
                    addr: h64(*addr),
                    len: bytes.len(),
                });
            }
            StepKind::Expect(expectation) => {
                expectations.checked += 1;
                if let Err(message) = check(expectation, &state, device)? {
                    log::debug!("line {line}: expectation failed: {message}");
                    expectations.failed.push(Failure { line, message });
                }
            }
        }
    }
    let mut buffers = BTreeMap::new();
    for buffer in &script.buffers {
        let len = usize::try_from(buffer.len).map_err(|_| DeviceError::Ram {
            addr: buffer.addr,
            len: buffer.len,
        })?;
        let mut bytes = vec![0; len];
        device.read_ram(buffer.addr, &mut bytes)?;
        buffers.insert(buffer.name.clone(), to_hex(&bytes));
    }
    let ok = expectations.failed.is_empty() && timeouts.is_empty();
    Ok(Report {
        device: DeviceReport::new(device.config()),
        steps,
        buffers,
        expectations,
        timeouts,
        ok,
    })
}

fn send(
    device: &mut dyn Device,
    state: &mut State,
    action: &'static str,
    line: usize,
    request: Request,
) -> Result<Response, DeviceError> {
    let response = device.request(&request)?;
    log::debug!("line {line}: {action} tag {} -> {response:?}", request.tag);
    state.last_request = Some(LastRequest {
        action,
        line,
        response,
    });
    Ok(response)
}

/// Checks one expectation: `Ok(Err(message))` when it fails.
fn check(
    expectation: &Expectation,
    state: &State,
    device: &dyn Device,
) -> Result<Result<(), String>, DeviceError> {
    Ok(match expectation {
        Expectation::Cc(cc) => check_cc(*cc, state),
        Expectation::Response { status, error } => check_response(*status, *error, state),
        Expectation::Event(kind) => check_event(*kind, state),
        Expectation::Irb(expect) => check_irb(expect, state),
        Expectation::Buffer { name, addr, bytes } => {
            let mut actual = vec![0; bytes.len()];
            device.read_ram(*addr, &mut actual)?;
            check_buffer(name, bytes, &actual)
        }
        Expectation::Schib(expect) => check_schib(expect, state),
    })
}

fn check_cc(cc: u8, state: &State) -> Result<(), String> {
    let last = state
        .last_request
        .as_ref()
        .ok_or_else(|| format!("expected cc {cc}, but no request has been issued yet"))?;
    if last.response.status != ResponseStatus::Ok {
        return Err(format!(
            "expected cc {cc}, but {} completed with status {}",
            last.describe(),
            last.status_text()
        ));
    }
    if last.response.cc != cc {
        return Err(format!(
            "expected cc {cc}, got cc {} from {}",
            last.response.cc,
            last.describe()
        ));
    }
    Ok(())
}

fn check_response(
    status: Option<ResponseStatus>,
    error: Option<ProgramErrorCode>,
    state: &State,
) -> Result<(), String> {
    let Some(last) = &state.last_request else {
        return Err("expected a response, but no request has been issued yet".to_owned());
    };
    if let Some(status) = status {
        if last.response.status != status {
            return Err(format!(
                "expected status {}, got {} from {}",
                status_name(status),
                last.status_text(),
                last.describe()
            ));
        }
    }
    if let Some(error) = error {
        // The error code is a protocol number, so the conversion is exact.
        let code = error as u32;
        if last.response.error != code {
            return Err(format!(
                "expected error {}, got {} from {}",
                error_name(error),
                error_text(&last.response).unwrap_or_else(|| "none".to_owned()),
                last.describe()
            ));
        }
    }
    Ok(())
}

fn check_event(expected: Option<EventKind>, state: &State) -> Result<(), String> {
    let what = expected.map_or("no event".to_owned(), |k| format!("event {}", k.name()));
    let Some((line, event)) = &state.last_wait else {
        return Err(format!(
            "expected {what}, but no wait has been executed yet"
        ));
    };
    let got = event.as_ref().map(event_kind);
    if got == expected {
        return Ok(());
    }
    Err(match got {
        None => format!("expected {what}, but {} timed out", wait_name(*line)),
        Some(kind) => format!(
            "expected {what}, got {} from {}",
            kind.name(),
            wait_name(*line)
        ),
    })
}

fn check_irb(expect: &IrbExpectation, state: &State) -> Result<(), String> {
    let Some((line, tag, irb)) = &state.last_interrupt else {
        return Err("expected an interrupt, but none has been received".to_owned());
    };
    let scsw = &irb.scsw;
    let mut mismatches = Vec::new();
    let mut compare = |field: &str, want: Option<String>, got: String| {
        if let Some(want) = want {
            if want != got {
                mismatches.push(format!("{field} {got}, expected {want}"));
            }
        }
    };
    compare("tag", expect.tag.map(|t| t.to_string()), tag.to_string());
    compare(
        "fc",
        expect.fc.map(|v| joined_names(v, &FC_NAMES)),
        joined_names(scsw.function_control, &FC_NAMES),
    );
    compare(
        "ac",
        expect.ac.map(|v| joined_names(v, &AC_NAMES)),
        joined_names(scsw.activity_control, &AC_NAMES),
    );
    compare(
        "sc",
        expect.sc.map(|v| joined_names(v, &SC_NAMES)),
        joined_names(scsw.status_control, &SC_NAMES),
    );
    let dstat = |v: DeviceStatus| format!("{} ({})", h8(v.bits()), joined_names(v, &DSTAT_NAMES));
    compare("dstat", expect.dstat.map(dstat), dstat(scsw.device_status));
    let cstat =
        |v: SubchannelStatus| format!("{} ({})", h8(v.bits()), joined_names(v, &CSTAT_NAMES));
    compare(
        "cstat",
        expect.cstat.map(cstat),
        cstat(scsw.subchannel_status),
    );
    compare(
        "count",
        expect.count.map(|c| c.to_string()),
        scsw.count.to_string(),
    );
    compare("cpa", expect.cpa.map(h32), h32(scsw.cpa));
    compare(
        "cc",
        expect.cc.map(|c| c.to_string()),
        scsw.deferred_cc.to_string(),
    );
    if let Some(want) = &expect.sense {
        let got = &irb.ecw[..want.len()];
        if got != want.as_slice() {
            mismatches.push(format!("sense {}, expected {}", to_hex(got), to_hex(want)));
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "irb (tag {tag}, {}): {}",
            wait_name(*line),
            mismatches.join("; ")
        ))
    }
}

fn check_buffer(name: &str, expected: &[u8], actual: &[u8]) -> Result<(), String> {
    let Some(offset) = expected.iter().zip(actual).position(|(e, a)| e != a) else {
        return Ok(());
    };
    const SHOWN: usize = 32;
    let shown = |bytes: &[u8]| {
        if bytes.len() > SHOWN {
            format!("{}...", to_hex(&bytes[..SHOWN]))
        } else {
            to_hex(bytes)
        }
    };
    Err(format!(
        "buffer `{name}` differs at offset {offset:#x}: got {}, expected {} (content {}, expected {})",
        h8(actual[offset]),
        h8(expected[offset]),
        shown(actual),
        shown(expected)
    ))
}

fn check_schib(expect: &SchibExpectation, state: &State) -> Result<(), String> {
    let Some((line, response)) = &state.last_store else {
        return Err("expected a SCHIB, but no store has been issued yet".to_owned());
    };
    if response.status != ResponseStatus::Ok || response.cc != 0 {
        return Err(format!(
            "expected a SCHIB, but the store on line {line} completed with status {} cc {}",
            status_name(response.status),
            response.cc
        ));
    }
    let p = &response.schib.pmcw;
    let mut mismatches = Vec::new();
    let masks = [
        ("pim", expect.pim, p.pim),
        ("pam", expect.pam, p.pam),
        ("pom", expect.pom, p.pom),
        ("lpm", expect.lpm, p.lpm),
        ("lpum", expect.lpum, p.lpum),
        ("pnom", expect.pnom, p.pnom),
    ];
    for (name, want, got) in masks {
        if let Some(want) = want {
            if want != got {
                mismatches.push(format!("{name} {}, expected {}", h8(got), h8(want)));
            }
        }
    }
    if let Some(want) = expect.devno {
        if want != p.devno {
            mismatches.push(format!("devno {}, expected {}", h16(p.devno), h16(want)));
        }
    }
    if let Some(want) = expect.enabled {
        if want != p.enabled {
            mismatches.push(format!(
                "enabled {}, expected {}",
                u8::from(p.enabled),
                u8::from(want)
            ));
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "schib (store on line {line}): {}",
            mismatches.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use serde_json::json;
    use vhost_user_ccw_protocol::arch::{Ciw, Erw, StatusControl, SubchannelLogout};

    use super::*;

    /// An in-memory device: RAM is a vector, responses and events are
    /// scripted, and every request is recorded.
    struct FakeDevice {
        config: ConfigSpace,
        ram: Vec<u8>,
        responses: VecDeque<Response>,
        events: VecDeque<Option<Event>>,
        /// RAM writes performed when a START arrives (the device's data
        /// transfer).
        on_start: Vec<(u64, Vec<u8>)>,
        requests: Vec<Request>,
        timeouts: Vec<Duration>,
    }

    fn config() -> ConfigSpace {
        let mut config = ConfigSpace {
            version: 1,
            cssid: 0xfe,
            ssid: 0,
            schno: 5,
            devno: 0x0190,
            capabilities: CAP_FORMAT0_CCW | CAP_IDAW_FORMAT1 | CAP_HALT_CLEAR,
            schib: Schib::default(),
            chpid_type: [0x32, 0, 0, 0, 0, 0, 0, 0],
            sense_id: SenseId {
                cu_type: 0x3990,
                cu_model: 0xe9,
                dev_type: 0x3390,
                dev_model: 0x0c,
                ciws: vec![Ciw {
                    command_type: Ciw::TYPE_RCD,
                    command: 0xfa,
                    count: 0x80,
                }],
            },
        };
        config.schib.pmcw.pim = 0x80;
        config.schib.pmcw.pam = 0x80;
        config.schib.pmcw.pom = 0xff;
        config.schib.pmcw.chpid[0] = 0x42;
        config
    }

    impl FakeDevice {
        fn new(ram_size: usize) -> Self {
            Self {
                config: config(),
                ram: vec![0; ram_size],
                responses: VecDeque::new(),
                events: VecDeque::new(),
                on_start: Vec::new(),
                requests: Vec::new(),
                timeouts: Vec::new(),
            }
        }

        fn range(&self, addr: u64, len: usize) -> Result<std::ops::Range<usize>, DeviceError> {
            let bad = DeviceError::Ram {
                addr,
                len: u64::try_from(len).unwrap(),
            };
            let start = usize::try_from(addr).map_err(|_| DeviceError::Ram { addr, len: 0 })?;
            match start.checked_add(len) {
                Some(end) if end <= self.ram.len() => Ok(start..end),
                _ => Err(bad),
            }
        }
    }

    impl Device for FakeDevice {
        fn config(&self) -> &ConfigSpace {
            &self.config
        }
        fn ram_size(&self) -> u64 {
            u64::try_from(self.ram.len()).unwrap()
        }
        fn write_ram(&mut self, addr: u64, bytes: &[u8]) -> Result<(), DeviceError> {
            let range = self.range(addr, bytes.len())?;
            self.ram[range].copy_from_slice(bytes);
            Ok(())
        }
        fn read_ram(&self, addr: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
            let range = self.range(addr, buf.len())?;
            buf.copy_from_slice(&self.ram[range]);
            Ok(())
        }
        fn request(&mut self, request: &Request) -> Result<Response, DeviceError> {
            self.requests.push(*request);
            if request.kind == RequestType::Start {
                for (addr, bytes) in std::mem::take(&mut self.on_start) {
                    self.write_ram(addr, &bytes)?;
                }
            }
            self.responses
                .pop_front()
                .ok_or_else(|| DeviceError::Transport("no scripted response".into()))
        }
        fn wait_event(&mut self, timeout: Duration) -> Result<Option<Event>, DeviceError> {
            self.timeouts.push(timeout);
            Ok(self.events.pop_front().flatten())
        }
    }

    /// The final IRB of a successful channel program.
    fn final_irb(cpa: u32, count: u16) -> Irb {
        let mut irb = Irb::default();
        irb.scsw.esw_format = true;
        irb.scsw.format1 = true;
        irb.scsw.function_control = FunctionControl::START;
        irb.scsw.status_control =
            StatusControl::PRIMARY | StatusControl::SECONDARY | StatusControl::STATUS_PENDING;
        irb.scsw.device_status = DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END;
        irb.scsw.cpa = cpa;
        irb.scsw.count = count;
        irb.esw.subchannel_logout = SubchannelLogout::from_lpum(0x80);
        irb
    }

    const SENSE_ID_SCRIPT: &str = "\
memory size=64K
buffer id at=0x2000 len=40 fill=0xaa
ccws chain at=0x1000
ccw sense-id flags=SLI count=40 data=id
start
wait timeout-ms=100
expect cc=0
expect status=ok
expect event=interrupt
expect irb tag=1 fc=start sc=primary+secondary+status-pending dstat=0x0c cstat=0 count=28 cpa=chain+8 cc=0
expect buffer id hex=ff3990e933900c00
store
expect schib pim=0x80 pam=0x80 devno=0x0190 enabled=1
";

    #[test]
    fn sense_id_run_report() {
        let script = Script::parse(SENSE_ID_SCRIPT).unwrap();
        let mut device = FakeDevice::new(64 << 10);
        device.on_start.push((
            0x2000,
            vec![
                0xff, 0x39, 0x90, 0xe9, 0x33, 0x90, 0x0c, 0x00, 0x41, 0xfa, 0x00, 0x80,
            ],
        ));
        device.responses.push_back(Response::cc(0));
        let mut store = Response::cc(0);
        store.schib.pmcw.pim = 0x80;
        store.schib.pmcw.pam = 0x80;
        store.schib.pmcw.pom = 0x80;
        store.schib.pmcw.devno = 0x0190;
        store.schib.pmcw.device_number_valid = true;
        store.schib.pmcw.enabled = true;
        store.schib.pmcw.chpid[0] = 0x42;
        device.responses.push_back(store);
        device.events.push_back(Some(Event::Interrupt {
            tag: 1,
            irb: final_irb(0x1008, 28),
        }));

        let report = run(&script, &mut device).unwrap();
        assert!(report.ok());
        assert_eq!(report.timeouts, Vec::<usize>::new());

        // What the device saw.
        assert_eq!(device.requests.len(), 2);
        let start = device.requests[0];
        assert_eq!(start.kind, RequestType::Start);
        assert_eq!(start.tag, 1);
        assert_eq!(start.orb.cpa, 0x1000);
        assert!(start.orb.format1 && start.orb.prefetch);
        assert_eq!(start.orb.lpm, 0x80);
        assert_eq!(
            start.scsw,
            Scsw {
                function_control: FunctionControl::START,
                ..Scsw::default()
            }
        );
        assert_eq!(device.requests[1], Request::new(RequestType::Store, 0));
        assert_eq!(device.timeouts, [Duration::from_millis(100)]);
        assert_eq!(
            &device.ram[0x1000..0x1008],
            &[0xE4, 0x20, 0x00, 0x28, 0x00, 0x00, 0x20, 0x00]
        );

        let json = report.to_json();
        assert_eq!(
            json["device"],
            json!({
                "version": 1,
                "cssid": "0xfe",
                "ssid": "0x00",
                "schno": "0x0005",
                "devno": "0x0190",
                "capabilities": "0x0000000b",
                "capability_names": ["format0-ccw", "idaw-format1", "halt-clear"],
                "sense_id": {
                    "cu_type": "0x3990",
                    "cu_model": "0xe9",
                    "dev_type": "0x3390",
                    "dev_model": "0x0c",
                    "ciws": [{"command_type": "0x00", "command": "0xfa", "count": 128}]
                },
                "pim": "0x80",
                "pam": "0x80",
                "pom": "0xff",
                "chpids": ["0x42", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00"],
                "chpid_types": ["0x32", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00"]
            })
        );
        assert_eq!(
            json["steps"][0],
            json!({
                "action": "start",
                "line": 5,
                "tag": 1,
                "orb": "0000000000c0800000001000",
                "status": "ok",
                "cc": 0,
                "error": null
            })
        );
        assert_eq!(
            json["steps"][1],
            json!({
                "action": "wait",
                "line": 6,
                "timeout_ms": 100,
                "timed_out": false,
                "timeout_expected": false,
                "event": {
                    "type": "interrupt",
                    "tag": 1,
                    "irb": {
                        "scsw": {
                            "key": 0,
                            "flags": ["esw-format", "format-1"],
                            "cc": 0,
                            "fc": ["start"],
                            "ac": [],
                            "sc": ["primary", "secondary", "status-pending"],
                            "cpa": "0x00001008",
                            "dstat": "0x0c",
                            "dstat_names": ["channel-end", "device-end"],
                            "cstat": "0x00",
                            "cstat_names": [],
                            "count": 28
                        },
                        "esw": {
                            "logout": "0x00800000",
                            "lpum": "0x80",
                            "erw": "0x00000000",
                            "erw_flags": [],
                            "sense_count": 0,
                            "failing_storage_address": "0x0000000000000000",
                            "secondary_ccw_address": "0x00000000"
                        },
                        "sense": null,
                        "ecw": null
                    }
                }
            })
        );
        let store = &json["steps"][2];
        assert_eq!(store["action"], "store");
        assert_eq!(store["line"], 12);
        assert_eq!(store["status"], "ok");
        assert_eq!(store["cc"], 0);
        assert_eq!(store["error"], json!(null));
        assert_eq!(
            store["schib"]["pmcw"],
            json!({
                "intparm": "0x00000000",
                "isc": 0,
                "enabled": true,
                "limit_mode": 0,
                "measurement_mode": 0,
                "multipath_mode": false,
                "timing_facility": false,
                "device_number_valid": true,
                "devno": "0x0190",
                "lpm": "0x00",
                "pnom": "0x00",
                "lpum": "0x00",
                "pim": "0x80",
                "mbi": "0x0000",
                "pom": "0x80",
                "pam": "0x80",
                "chpids": ["0x42", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00"],
                "subchannel_type": 0,
                "concurrent_sense": false
            })
        );
        assert_eq!(store["schib"]["scsw"]["fc"], json!([]));
        assert_eq!(store["schib"]["mba"], "0x0000000000000000");
        assert_eq!(store["schib"]["mda"], "00000000");
        assert_eq!(
            json["buffers"],
            json!({"id": format!("ff3990e933900c0041fa0080{}", "aa".repeat(28))})
        );
        assert_eq!(json["expectations"], json!({"checked": 6, "failed": []}));
        assert_eq!(json["timeouts"], json!([]));
        assert_eq!(json["ok"], true);
        assert_eq!(
            json.as_object().unwrap().keys().collect::<Vec<_>>(),
            [
                "buffers",
                "device",
                "expectations",
                "ok",
                "steps",
                "timeouts"
            ]
        );
    }

    #[test]
    fn failed_expectations_are_reported() {
        let script = Script::parse(
            "\
buffer b at=0x100 text=\"abc\"
ccws c at=0x200
ccw read data=b
expect cc=0
expect schib pim=0x80
expect irb
expect event=interrupt
start
expect cc=0
expect status=unit-exception error=address-out-of-range
expect status=ok
expect error=invalid
wait timeout-ms=7
expect event=interrupt
expect irb dstat=0x0c
expect buffer b text=\"abd\"
store
expect schib pim=0x80
",
        )
        .unwrap();
        let mut device = FakeDevice::new(4096);
        device.responses.push_back(Response::status(
            ResponseStatus::UnitException,
            ProgramErrorCode::AddressOutOfRange as u32,
        ));
        device.responses.push_back(Response::cc(3));
        let report = run(&script, &mut device).unwrap();
        assert!(!report.ok());
        assert_eq!(report.timeouts, [13]);
        assert_eq!(report.expectations.checked, 12);
        let failed: Vec<(usize, &str)> = report
            .expectations
            .failed
            .iter()
            .map(|f| (f.line, f.message.as_str()))
            .collect();
        assert_eq!(
            failed,
            [
                (4, "expected cc 0, but no request has been issued yet"),
                (5, "expected a SCHIB, but no store has been issued yet"),
                (6, "expected an interrupt, but none has been received"),
                (
                    7,
                    "expected event interrupt, but no wait has been executed yet"
                ),
                (
                    9,
                    "expected cc 0, but the start on line 8 completed with status unit-exception (error address-out-of-range)"
                ),
                (
                    11,
                    "expected status ok, got unit-exception (error address-out-of-range) from the start on line 8"
                ),
                (
                    12,
                    "expected error invalid, got address-out-of-range from the start on line 8"
                ),
                (
                    14,
                    "expected event interrupt, but the wait on line 13 timed out"
                ),
                (15, "expected an interrupt, but none has been received"),
                (
                    16,
                    "buffer `b` differs at offset 0x2: got 0x63, expected 0x64 (content 616263, expected 616264)"
                ),
                (
                    18,
                    "expected a SCHIB, but the store on line 17 completed with status ok cc 3"
                ),
            ]
        );
        let json = report.to_json();
        assert_eq!(
            json["steps"][0],
            json!({
                "action": "start",
                "line": 8,
                "tag": 1,
                "orb": "0000000000c0800000000200",
                "status": "unit-exception",
                "cc": 0,
                "error": "address-out-of-range"
            })
        );
        assert_eq!(
            json["steps"][1],
            json!({
                "action": "wait",
                "line": 13,
                "timeout_ms": 7,
                "event": null,
                "timed_out": true,
                "timeout_expected": false
            })
        );
        assert_eq!(
            json["steps"][2],
            json!({
                "action": "store",
                "line": 17,
                "status": "ok",
                "cc": 3,
                "error": null,
                "schib": null
            })
        );
        assert_eq!(
            json["expectations"]["failed"][0],
            json!({"line": 4, "message": "expected cc 0, but no request has been issued yet"})
        );
        assert_eq!(json["timeouts"], json!([13]));
        assert_eq!(json["ok"], false);
    }

    #[test]
    fn irb_and_schib_mismatches_name_every_field() {
        let script = Script::parse(
            "\
ccws c at=0x200
ccw nop
start tag=9
wait
expect irb tag=1 fc=halt ac=device-active sc=alert dstat=channel-end cstat=incorrect-length+program-check count=1 cpa=c cc=2 sense=80
expect irb tag=9 fc=start ac=none cstat=none sense=\"00 00\"
store
expect schib pim=0xc0 pam=0x80 pom=0x40 lpm=0x80 lpum=0x80 pnom=1 devno=0x0191 enabled=0
",
        )
        .unwrap();
        let mut device = FakeDevice::new(4096);
        device.responses.push_back(Response::cc(0));
        let mut store = Response::cc(0);
        store.schib.pmcw.pim = 0x80;
        store.schib.pmcw.pam = 0x80;
        store.schib.pmcw.lpm = 0x80;
        store.schib.pmcw.lpum = 0x80;
        store.schib.pmcw.devno = 0x0190;
        store.schib.pmcw.enabled = true;
        device.responses.push_back(store);
        device.events.push_back(Some(Event::Interrupt {
            tag: 9,
            irb: final_irb(0x208, 0),
        }));
        let report = run(&script, &mut device).unwrap();
        assert_eq!(report.expectations.checked, 3);
        let failed: Vec<(usize, &str)> = report
            .expectations
            .failed
            .iter()
            .map(|f| (f.line, f.message.as_str()))
            .collect();
        assert_eq!(
            failed,
            [
                (
                    5,
                    "irb (tag 9, the wait on line 4): tag 9, expected 1; fc start, expected halt; \
                     ac none, expected device-active; sc primary+secondary+status-pending, expected alert; \
                     dstat 0x0c (channel-end+device-end), expected 0x08 (channel-end); \
                     cstat 0x00 (none), expected 0x60 (incorrect-length+program-check); \
                     count 0, expected 1; cpa 0x00000208, expected 0x00000200; cc 0, expected 2; \
                     sense 00, expected 80"
                ),
                (
                    8,
                    "schib (store on line 7): pim 0x80, expected 0xc0; pom 0x00, expected 0x40; \
                     pnom 0x00, expected 0x01; devno 0x0190, expected 0x0191; enabled 1, expected 0"
                ),
            ]
        );
        assert!(!report.ok());
        assert!(report.timeouts.is_empty());
    }

    #[test]
    fn expected_timeout_crw_device_gone_and_requests() {
        let script = Script::parse(
            "\
buffer b at=0x100 len=4
ccws c at=0x200
ccw nop
wait timeout-ms=1
expect event=none
halt
expect cc=2
clear tag=40
halt
wait
expect event=crw
wait
expect event=device-gone
sleep ms=1
poke b+1 hex=beef
expect buffer b hex=00beef00
wait
expect event=none
",
        )
        .unwrap();
        let mut device = FakeDevice::new(4096);
        device.responses.extend([
            Response::cc(2),
            Response::cc(0),
            Response::status(ResponseStatus::Broken, 0x1234),
        ]);
        let crw = Crw::decode(&[0x03, 0x04, 0x00, 0x05]).unwrap();
        device.events.extend([
            None,
            Some(Event::ChannelReport(crw)),
            Some(Event::DeviceGone),
            Some(Event::DeviceGone),
        ]);
        let report = run(&script, &mut device).unwrap();
        let tags: Vec<(RequestType, u64)> =
            device.requests.iter().map(|r| (r.kind, r.tag)).collect();
        assert_eq!(
            tags,
            [
                (RequestType::Halt, 1),
                (RequestType::Clear, 40),
                (RequestType::Halt, 41)
            ]
        );
        assert_eq!(report.expectations.checked, 6);
        assert_eq!(
            report.expectations.failed,
            [Failure {
                line: 18,
                message: "expected no event, got device-gone from the wait on line 17".into()
            }]
        );
        assert!(report.timeouts.is_empty(), "the first timeout was expected");
        assert!(!report.ok());
        let json = report.to_json();
        let steps = json["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 9);
        assert_eq!(
            steps[0],
            json!({"action": "wait", "line": 4, "timeout_ms": 1, "event": null, "timed_out": true, "timeout_expected": true})
        );
        assert_eq!(
            steps[1],
            json!({"action": "halt", "line": 6, "tag": 1, "status": "ok", "cc": 2, "error": null})
        );
        assert_eq!(
            steps[3],
            json!({"action": "halt", "line": 9, "tag": 41, "status": "broken", "cc": 0, "error": "0x00001234"})
        );
        assert_eq!(
            steps[4]["event"],
            json!({
                "type": "crw",
                "crw": {
                    "raw": "0x03040005",
                    "solicited": false,
                    "overflow": false,
                    "chaining": false,
                    "rsc": "0x03",
                    "ancillary": false,
                    "erc": "0x04",
                    "rsid": "0x0005"
                }
            })
        );
        assert_eq!(steps[5]["event"], json!({"type": "device-gone"}));
        assert_eq!(steps[6], json!({"action": "sleep", "line": 14, "ms": 1}));
        assert_eq!(
            steps[7],
            json!({"action": "poke", "line": 15, "addr": "0x0000000000000101", "len": 2})
        );
        assert_eq!(json["buffers"], json!({"b": "00beef00"}));
        assert_eq!(&device.ram[0x100..0x104], &[0, 0xbe, 0xef, 0]);
    }

    #[test]
    fn unit_check_with_concurrent_sense() {
        let script = Script::parse("ccws c at=0x200\nccw 0x05\nexpect irb dstat=channel-end+device-end+unit-check sense=8000\n").unwrap();
        let mut device = FakeDevice::new(4096);
        device.responses.push_back(Response::cc(0));
        let mut irb = final_irb(0x208, 0);
        irb.scsw.extended_control = true;
        irb.scsw.status_control |= StatusControl::ALERT;
        irb.scsw.device_status |= DeviceStatus::UNIT_CHECK;
        irb.esw.erw = Erw {
            concurrent_sense: true,
            sense_count: 4,
            ..Erw::default()
        };
        irb.ecw[0] = 0x80;
        irb.ecw[3] = 0x11;
        irb.ecw[31] = 0xee;
        device
            .events
            .push_back(Some(Event::Interrupt { tag: 1, irb }));
        let report = run(&script, &mut device).unwrap();
        assert!(report.ok(), "{:?}", report.expectations);
        let json = report.to_json();
        assert_eq!(json["steps"][0]["line"], 0, "implicit start");
        assert_eq!(json["steps"][1]["line"], 0, "implicit wait");
        assert_eq!(json["steps"][1]["timeout_ms"], 5000);
        let irb = &json["steps"][1]["event"]["irb"];
        assert_eq!(irb["sense"], "80000011");
        assert_eq!(
            irb["ecw"],
            format!("80000011{}ee", "00".repeat(27)).as_str()
        );
        assert_eq!(irb["esw"]["erw"], "0x01040000");
        assert_eq!(irb["esw"]["erw_flags"], json!(["concurrent-sense"]));
        assert_eq!(irb["esw"]["sense_count"], 4);
        assert_eq!(
            irb["scsw"]["flags"],
            json!(["esw-format", "format-1", "extended-control"])
        );
        assert_eq!(
            irb["scsw"]["sc"],
            json!(["alert", "primary", "secondary", "status-pending"])
        );
        assert_eq!(
            irb["scsw"]["dstat_names"],
            json!(["channel-end", "device-end", "unit-check"])
        );
        assert_eq!(irb["scsw"]["dstat"], "0x0e");
    }

    #[test]
    fn documented_report() {
        let script = Script::parse(crate::script::documented_blocks("script")[0]).unwrap();
        let mut device = FakeDevice::new(1 << 20);
        device.on_start.push((
            0x2000,
            vec![
                0xff, 0x39, 0x90, 0xe9, 0x33, 0x90, 0x0c, 0x00, 0x41, 0xfa, 0x00, 0x80,
            ],
        ));
        device.responses.push_back(Response::cc(0));
        let mut store = Response::cc(0);
        let pmcw = &mut store.schib.pmcw;
        pmcw.intparm = 0x1234_5678;
        pmcw.isc = 3;
        pmcw.enabled = true;
        pmcw.device_number_valid = true;
        pmcw.devno = 0x0190;
        pmcw.lpm = 0x80;
        pmcw.lpum = 0x80;
        pmcw.pim = 0x80;
        pmcw.pom = 0xff;
        pmcw.pam = 0x80;
        pmcw.chpid[0] = 0x42;
        pmcw.concurrent_sense = true;
        device.responses.push_back(store);
        let mut irb = final_irb(0x1108, 0);
        irb.scsw.prefetch = true;
        device
            .events
            .push_back(Some(Event::Interrupt { tag: 1, irb }));
        let report = run(&script, &mut device).unwrap();
        assert!(report.ok(), "{:?}", report.expectations);
        let documented: serde_json::Value =
            serde_json::from_str(crate::script::documented_blocks("json")[0])
                .unwrap_or_else(|e| panic!("{e}; actual:\n{}", report.to_json_string()));
        assert_eq!(
            report.to_json(),
            documented,
            "actual:\n{}",
            report.to_json_string()
        );
    }

    #[test]
    fn device_errors_abort_the_run() {
        let script =
            Script::parse("buffer b at=0x2000 len=16\nccws c at=0x200\nccw nop\n").unwrap();
        let mut device = FakeDevice::new(4096);
        match run(&script, &mut device) {
            Err(DeviceError::Ram { addr, len }) => assert_eq!((addr, len), (0x2000, 16)),
            other => panic!("{other:?}"),
        }
        let mut device = FakeDevice::new(0x4000);
        let e = run(&script, &mut device).unwrap_err();
        assert_eq!(e.to_string(), "no scripted response");
        assert_eq!(
            DeviceError::Ram {
                addr: 0x10,
                len: 0x20
            }
            .to_string(),
            "guest RAM access 0x10+0x20 out of range"
        );
    }
}
