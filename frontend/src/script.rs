//! Channel-program scripts: a small line-oriented text format describing what
//! to place in guest memory (data buffers, IDALs, CCW lists), the ORB to start
//! with, the subchannel functions to issue and the results to expect.
//!
//! [`Script::parse`] turns the text into a [`Script`]: every name is resolved
//! to a guest address, every CCW and IDAW is encoded into the bytes placed in
//! guest memory ([`Placement`]), and actions and expectations become an
//! ordered list of [`Step`]s with concrete tags and ORBs.
//! [`crate::runner::run`] executes a script against a device.
//!
//! `docs/program-format.md` is the reference for the format. In short:
//!
//! ```text
//! memory size=16M
//! buffer id at=0x2000 len=40 fill=0x00
//! ccws chain at=0x1000
//! ccw sense-id flags=SLI count=40 data=id
//! start
//! wait
//! expect irb fc=start dstat=0x0c cstat=0
//! ```
//!
//! Parsing validates what a script can get wrong (undefined or repeated
//! names, overlapping placements, values outside their architected width,
//! placements outside guest memory) and reports it as a [`ScriptError`]
//! carrying the 1-based line number. Addresses inside CCWs, IDAWs and the ORB
//! are deliberately *not* checked against the memory size, so that a script
//! can exercise the device's own range checks.

use std::collections::HashMap;
use std::ops::{BitAnd, BitOr};
use std::str::FromStr;

use thiserror::Error;
use vhost_user_ccw_protocol::arch::{
    ActivityControl, Ccw, CcwFlags, DeviceStatus, FunctionControl, Idaw1, Idaw2, Orb,
    StatusControl, SubchannelStatus,
};
use vhost_user_ccw_protocol::wire::{ProgramErrorCode, ResponseStatus};

/// Guest RAM size when the script has no `memory` directive (16 MiB).
pub const DEFAULT_MEMORY_SIZE: u64 = 16 << 20;
/// Largest guest RAM size a script may ask for (1 GiB).
pub const MAX_MEMORY_SIZE: u64 = 1 << 30;
/// Guest RAM sizes are multiples of this (4 KiB).
pub const MEMORY_GRANULE: u64 = 4 << 10;
/// Timeout of a `wait` without `timeout-ms=` (milliseconds).
pub const DEFAULT_WAIT_MS: u64 = 5000;

/// Largest data address of a format-0 CCW (24 bits).
const MAX_FORMAT0_ADDR: u64 = 0x00FF_FFFF;
/// Largest 31-bit address (format-1 CCW data address, format-1 IDAW, CPA).
const MAX_31BIT_ADDR: u64 = 0x7FFF_FFFF;

/// Why a script does not parse. Every variant carries the 1-based line
/// number of the offending line; line 0 stands for the script as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScriptError {
    /// The line is malformed: unknown directive or key, missing or repeated
    /// key, wrong number of words, unterminated string, misplaced directive.
    #[error("line {line}: {message}")]
    Syntax {
        /// Line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value is malformed or outside its permitted range.
    #[error("line {line}: {message}")]
    Value {
        /// Line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A name is defined a second time.
    #[error("line {line}: `{name}` is already defined on line {first}")]
    Duplicate {
        /// Line of the second definition.
        line: usize,
        /// The name.
        name: String,
        /// Line of the first definition.
        first: usize,
    },
    /// A name is used but never defined.
    #[error("line {line}: `{name}` is not defined")]
    Undefined {
        /// Line of the use.
        line: usize,
        /// The name.
        name: String,
    },
    /// A name refers to the wrong kind of object for where it is used.
    #[error("line {line}: `{name}` is {kind}, expected {expected}")]
    WrongKind {
        /// Line of the use.
        line: usize,
        /// The name.
        name: String,
        /// What the name is ("a buffer", "an IDAL", "a CCW list").
        kind: &'static str,
        /// What the use requires.
        expected: &'static str,
    },
    /// Two placements share guest memory.
    #[error(
        "line {line}: {what} [{start:#x}, {end:#x}) overlaps {other} (line {other_line}) [{other_start:#x}, {other_end:#x})"
    )]
    Overlap {
        /// Line of the later placement.
        line: usize,
        /// The later placement ("buffer `b`").
        what: String,
        /// Its first address.
        start: u64,
        /// Its end address (exclusive).
        end: u64,
        /// The earlier placement.
        other: String,
        /// Line of the earlier placement.
        other_line: usize,
        /// Its first address.
        other_start: u64,
        /// Its end address (exclusive).
        other_end: u64,
    },
    /// A placement or memory modification does not fit in guest memory.
    #[error(
        "line {line}: {what} [{start:#x}, {end:#x}) lies outside guest memory of {memory_size:#x} bytes"
    )]
    OutsideMemory {
        /// Line of the placement.
        line: usize,
        /// The placement ("ccws `chain`").
        what: String,
        /// Its first address.
        start: u64,
        /// Its end address (exclusive).
        end: u64,
        /// The guest memory size.
        memory_size: u64,
    },
}

impl ScriptError {
    /// The 1-based line number the error refers to (0: the whole script).
    #[must_use]
    pub fn line(&self) -> usize {
        match self {
            Self::Syntax { line, .. }
            | Self::Value { line, .. }
            | Self::Duplicate { line, .. }
            | Self::Undefined { line, .. }
            | Self::WrongKind { line, .. }
            | Self::Overlap { line, .. }
            | Self::OutsideMemory { line, .. } => *line,
        }
    }
}

fn syntax(line: usize, message: impl Into<String>) -> ScriptError {
    ScriptError::Syntax {
        line,
        message: message.into(),
    }
}

fn value(line: usize, message: impl Into<String>) -> ScriptError {
    ScriptError::Value {
        line,
        message: message.into(),
    }
}

/// A parsed, fully resolved script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Guest RAM size in bytes.
    pub memory_size: u64,
    /// What to write into guest RAM before the first step, in definition
    /// order. Placements never overlap and lie inside guest RAM.
    pub placements: Vec<Placement>,
    /// The named data buffers, in definition order (reported at the end of a
    /// run).
    pub buffers: Vec<BufferDef>,
    /// Actions and expectations, in order.
    pub steps: Vec<Step>,
}

/// Bytes placed in guest RAM before the run: a buffer, an IDAL or a CCW list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// What the bytes are, as the script defines them (`buffer id`,
    /// `idal list`, `ccws chain`).
    pub what: String,
    /// Line of the definition.
    pub line: usize,
    /// Guest address of the first byte.
    pub addr: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A named data buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferDef {
    /// The buffer's name.
    pub name: String,
    /// Line of the definition.
    pub line: usize,
    /// Guest address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// One action or expectation, with the line it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line of the directive; 0 for the implicit `start` and `wait`
    /// of a script without actions.
    pub line: usize,
    /// What to do.
    pub kind: StepKind,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Issue START SUBCHANNEL with this ORB.
    Start {
        /// Request tag.
        tag: u64,
        /// The ORB, CPA and format resolved.
        orb: Orb,
    },
    /// Issue HALT SUBCHANNEL.
    Halt {
        /// Request tag.
        tag: u64,
    },
    /// Issue CLEAR SUBCHANNEL.
    Clear {
        /// Request tag.
        tag: u64,
    },
    /// Issue STORE SUBCHANNEL (tag 0).
    Store,
    /// Wait for the next event.
    Wait {
        /// How long to wait, in milliseconds.
        timeout_ms: u64,
        /// The script expects no event (`expect event=none` follows), so a
        /// timeout is not a failure.
        timeout_expected: bool,
    },
    /// Pause.
    Sleep {
        /// How long, in milliseconds.
        ms: u64,
    },
    /// Write bytes into guest RAM.
    Poke {
        /// Guest address.
        addr: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Check a result.
    Expect(Expectation),
}

/// Kind of an event on the event queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An I/O interruption.
    Interrupt,
    /// A channel report.
    ChannelReport,
    /// The device is gone.
    DeviceGone,
}

impl EventKind {
    /// The name the script and the report use.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Interrupt => "interrupt",
            Self::ChannelReport => "crw",
            Self::DeviceGone => "device-gone",
        }
    }
}

/// A check of the results so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// The last request completed with status ok and this condition code.
    Cc(u8),
    /// The last request completed with this status and/or error code.
    Response {
        /// Expected status, if checked.
        status: Option<ResponseStatus>,
        /// Expected error code, if checked.
        error: Option<ProgramErrorCode>,
    },
    /// The last `wait` returned this kind of event (`None`: it timed out).
    Event(Option<EventKind>),
    /// The last interrupt event matches.
    Irb(IrbExpectation),
    /// Guest memory at a buffer holds these bytes.
    Buffer {
        /// The buffer's name.
        name: String,
        /// The buffer's address.
        addr: u64,
        /// The expected leading bytes of the buffer.
        bytes: Vec<u8>,
    },
    /// The SCHIB of the last STORE matches.
    Schib(SchibExpectation),
}

/// Fields of the last interrupt to check; `None` fields are not checked.
/// Flag sets are compared for equality.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IrbExpectation {
    /// Event tag.
    pub tag: Option<u64>,
    /// SCSW function control.
    pub fc: Option<FunctionControl>,
    /// SCSW activity control.
    pub ac: Option<ActivityControl>,
    /// SCSW status control.
    pub sc: Option<StatusControl>,
    /// SCSW device status.
    pub dstat: Option<DeviceStatus>,
    /// SCSW subchannel status.
    pub cstat: Option<SubchannelStatus>,
    /// SCSW residual count.
    pub count: Option<u16>,
    /// SCSW CCW address.
    pub cpa: Option<u32>,
    /// SCSW deferred condition code.
    pub cc: Option<u8>,
    /// Leading bytes of the ECW (sense data).
    pub sense: Option<Vec<u8>>,
}

/// Fields of the last STORE's SCHIB to check; `None` fields are not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchibExpectation {
    /// Path-installed mask.
    pub pim: Option<u8>,
    /// Path-available mask.
    pub pam: Option<u8>,
    /// Path-operational mask.
    pub pom: Option<u8>,
    /// Logical-path mask.
    pub lpm: Option<u8>,
    /// Last-path-used mask.
    pub lpum: Option<u8>,
    /// Path-not-operational mask.
    pub pnom: Option<u8>,
    /// Device number.
    pub devno: Option<u16>,
    /// Enabled bit.
    pub enabled: Option<bool>,
}

impl Script {
    /// Parses and resolves a script.
    ///
    /// # Errors
    ///
    /// The first [`ScriptError`] found, with its line number.
    pub fn parse(text: &str) -> Result<Self, ScriptError> {
        let mut parser = Parser::default();
        for (index, line) in text.lines().enumerate() {
            parser.parse_line(index + 1, line)?;
        }
        parser.finish()
    }

    /// The buffer of this name.
    #[must_use]
    pub fn buffer(&self, name: &str) -> Option<&BufferDef> {
        self.buffers.iter().find(|b| b.name == name)
    }
}

impl FromStr for Script {
    type Err = ScriptError;
    fn from_str(text: &str) -> Result<Self, ScriptError> {
        Self::parse(text)
    }
}

// ---------------------------------------------------------------------------
// Names shared with the runner's report.

/// CCW command mnemonics.
const COMMANDS: [(&str, u8); 7] = [
    ("write", 0x01),
    ("read", 0x02),
    ("nop", 0x03),
    ("sense", 0x04),
    ("seek", 0x07),
    ("tic", 0x08),
    ("sense-id", 0xE4),
];

/// CCW flag names.
const CCW_FLAGS: [(&str, CcwFlags); 8] = [
    ("CD", CcwFlags::CD),
    ("CC", CcwFlags::CC),
    ("SLI", CcwFlags::SLI),
    ("SKIP", CcwFlags::SKIP),
    ("PCI", CcwFlags::PCI),
    ("IDA", CcwFlags::IDA),
    ("S", CcwFlags::S),
    ("MIDA", CcwFlags::MIDA),
];

/// Function-control names.
pub(crate) const FC_NAMES: [(&str, FunctionControl); 3] = [
    ("start", FunctionControl::START),
    ("halt", FunctionControl::HALT),
    ("clear", FunctionControl::CLEAR),
];

/// Activity-control names.
pub(crate) const AC_NAMES: [(&str, ActivityControl); 7] = [
    ("resume-pending", ActivityControl::RESUME_PENDING),
    ("start-pending", ActivityControl::START_PENDING),
    ("halt-pending", ActivityControl::HALT_PENDING),
    ("clear-pending", ActivityControl::CLEAR_PENDING),
    ("subchannel-active", ActivityControl::SUBCHANNEL_ACTIVE),
    ("device-active", ActivityControl::DEVICE_ACTIVE),
    ("suspended", ActivityControl::SUSPENDED),
];

/// Status-control names.
pub(crate) const SC_NAMES: [(&str, StatusControl); 5] = [
    ("alert", StatusControl::ALERT),
    ("intermediate", StatusControl::INTERMEDIATE),
    ("primary", StatusControl::PRIMARY),
    ("secondary", StatusControl::SECONDARY),
    ("status-pending", StatusControl::STATUS_PENDING),
];

/// Device-status names.
pub(crate) const DSTAT_NAMES: [(&str, DeviceStatus); 8] = [
    ("attention", DeviceStatus::ATTENTION),
    ("status-modifier", DeviceStatus::STATUS_MODIFIER),
    ("control-unit-end", DeviceStatus::CONTROL_UNIT_END),
    ("busy", DeviceStatus::BUSY),
    ("channel-end", DeviceStatus::CHANNEL_END),
    ("device-end", DeviceStatus::DEVICE_END),
    ("unit-check", DeviceStatus::UNIT_CHECK),
    ("unit-exception", DeviceStatus::UNIT_EXCEPTION),
];

/// Subchannel-status names.
pub(crate) const CSTAT_NAMES: [(&str, SubchannelStatus); 8] = [
    ("pci", SubchannelStatus::PROGRAM_CONTROLLED_INTERRUPTION),
    ("incorrect-length", SubchannelStatus::INCORRECT_LENGTH),
    ("program-check", SubchannelStatus::PROGRAM_CHECK),
    ("protection-check", SubchannelStatus::PROTECTION_CHECK),
    ("channel-data-check", SubchannelStatus::CHANNEL_DATA_CHECK),
    (
        "channel-control-check",
        SubchannelStatus::CHANNEL_CONTROL_CHECK,
    ),
    (
        "interface-control-check",
        SubchannelStatus::INTERFACE_CONTROL_CHECK,
    ),
    ("chaining-check", SubchannelStatus::CHAINING_CHECK),
];

const STATUS_NAMES: [(&str, ResponseStatus); 5] = [
    ("ok", ResponseStatus::Ok),
    ("unit-exception", ResponseStatus::UnitException),
    ("bad-request", ResponseStatus::BadRequest),
    ("broken", ResponseStatus::Broken),
    ("unsupported", ResponseStatus::Unsupported),
];

const ERROR_NAMES: [(&str, ProgramErrorCode); 5] = [
    ("address-out-of-range", ProgramErrorCode::AddressOutOfRange),
    ("unsupported", ProgramErrorCode::Unsupported),
    ("too-large", ProgramErrorCode::TooLarge),
    ("invalid", ProgramErrorCode::Invalid),
    ("bad-function", ProgramErrorCode::BadFunction),
];

/// The script and report name of a response status.
#[must_use]
pub fn status_name(status: ResponseStatus) -> &'static str {
    STATUS_NAMES
        .iter()
        .find(|(_, s)| *s == status)
        .map_or("?", |(n, _)| n)
}

/// The script and report name of a program error code.
#[must_use]
pub fn error_name(error: ProgramErrorCode) -> &'static str {
    ERROR_NAMES
        .iter()
        .find(|(_, e)| *e == error)
        .map_or("?", |(n, _)| n)
}

/// Names of the flags of `set` that appear in `table`, in table order.
pub(crate) fn flag_names<T>(set: T, table: &[(&'static str, T)]) -> Vec<&'static str>
where
    T: Copy + PartialEq + BitAnd<Output = T>,
{
    table
        .iter()
        .filter(|&&(_, flag)| set & flag == flag)
        .map(|&(name, _)| name)
        .collect()
}

/// `a+b+c`, or `none` for the empty set.
pub(crate) fn joined_names<T>(set: T, table: &[(&'static str, T)]) -> String
where
    T: Copy + PartialEq + BitAnd<Output = T>,
{
    let names = flag_names(set, table);
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join("+")
    }
}

/// Lowercase hex of bytes, without separators.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn len64(len: usize) -> u64 {
    u64::try_from(len).expect("usize fits in u64")
}

// ---------------------------------------------------------------------------
// Values.

/// Parses a number: decimal or `0x` hex, `_` allowed between digits, with an
/// optional K/M/G suffix when `suffix` is set.
fn parse_number(text: &str, suffix: bool) -> Result<u64, String> {
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') if suffix => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') if suffix => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') if suffix => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let (radix, body) = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => (16, hex),
        None => (10, digits),
    };
    let valid = !body.is_empty()
        && !body.starts_with('_')
        && !body.ends_with('_')
        && body.chars().all(|c| c == '_' || c.is_digit(radix));
    if !valid {
        return Err(format!("`{text}` is not a number"));
    }
    if radix == 10 && body.len() > 1 && body.starts_with('0') {
        return Err(format!(
            "`{text}` has a leading zero: write 0x{body} for hex or drop the zero for decimal"
        ));
    }
    let clean: String = body.chars().filter(|&c| c != '_').collect();
    u64::from_str_radix(&clean, radix)
        .ok()
        .and_then(|v| v.checked_mul(1 << shift))
        .ok_or_else(|| format!("`{text}` does not fit in 64 bits"))
}

/// Parses hex bytes; `_ : - .` and white space may separate them.
fn parse_hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    let body = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let mut digits = Vec::new();
    for c in body.chars() {
        if c.is_whitespace() || matches!(c, '_' | ':' | '-' | '.') {
            continue;
        }
        let d = c
            .to_digit(16)
            .ok_or_else(|| format!("`{c}` is not a hex digit"))?;
        digits.push(u8::try_from(d).expect("hex digit fits in u8"));
    }
    if digits.is_empty() {
        return Err("no hex bytes".to_owned());
    }
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    Ok(digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect())
}

/// Parses a flag set: `none`, names joined by `+` or `|` (case-insensitive),
/// or (when `numeric` is set) a number.
fn parse_flag_set<T>(
    text: &str,
    table: &[(&'static str, T)],
    numeric: Option<fn(u8) -> T>,
) -> Result<T, String>
where
    T: Copy + Default + BitOr<Output = T>,
{
    if let Some(from_bits) = numeric {
        if text.starts_with(|c: char| c.is_ascii_digit()) {
            let n = parse_number(text, false)?;
            let byte = u8::try_from(n).map_err(|_| format!("`{text}` does not fit in a byte"))?;
            return Ok(from_bits(byte));
        }
    }
    if text.eq_ignore_ascii_case("none") {
        return Ok(T::default());
    }
    let mut set = T::default();
    for part in text.split(['+', '|']) {
        let flag = table
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(part))
            .map(|&(_, flag)| flag)
            .ok_or_else(|| {
                let known: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
                format!("unknown flag `{part}` (known: {})", known.join(", "))
            })?;
        set = set | flag;
    }
    Ok(set)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// An address operand: a number or `NAME[+OFFSET]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operand {
    Addr(u64),
    Name { name: String, offset: u64 },
}

fn parse_operand(text: &str) -> Result<Operand, String> {
    if text.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_number(text, true).map(Operand::Addr);
    }
    let (name, offset) = match text.split_once('+') {
        Some((name, offset)) => (name, parse_number(offset, true)?),
        None => (text, 0),
    };
    if !valid_name(name) {
        return Err(format!("`{text}` is neither an address nor NAME[+OFFSET]"));
    }
    Ok(Operand::Name {
        name: name.to_owned(),
        offset,
    })
}

// ---------------------------------------------------------------------------
// Tokens.

#[derive(Debug)]
enum Token {
    Word(String),
    Pair(Pair),
}

#[derive(Debug)]
struct Pair {
    key: String,
    value: Vec<u8>,
}

fn read_quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut Vec<u8>,
    line: usize,
) -> Result<(), ScriptError> {
    loop {
        let c = chars
            .next()
            .ok_or_else(|| syntax(line, "unterminated quoted string"))?;
        let byte = match c {
            '"' => return Ok(()),
            '\\' => match chars.next() {
                Some('"') => b'"',
                Some('\\') => b'\\',
                Some('n') => b'\n',
                Some('t') => b'\t',
                Some('r') => b'\r',
                Some('0') => 0,
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).collect();
                    if hex.len() != 2 {
                        return Err(syntax(line, "`\\x` needs two hex digits"));
                    }
                    u8::from_str_radix(&hex, 16)
                        .map_err(|_| syntax(line, format!("`\\x{hex}`: not two hex digits")))?
                }
                Some(other) => {
                    return Err(syntax(line, format!("unknown escape `\\{other}`")));
                }
                None => return Err(syntax(line, "unterminated quoted string")),
            },
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        };
        out.push(byte);
    }
}

/// Splits a line into words and `key=value` pairs; `#` outside quotes starts
/// a comment.
fn tokenize(text: &str, line: usize) -> Result<Vec<Token>, ScriptError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => return Ok(tokens),
            Some(_) => {}
        }
        let mut key = String::new();
        let mut value: Option<Vec<u8>> = None;
        let mut quoted = false;
        while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && c != '#') {
            match (&mut value, c) {
                (None, '=') => value = Some(Vec::new()),
                (None, '"') => {
                    return Err(syntax(line, "a quoted string must be a value: KEY=\"...\""));
                }
                (None, c) => key.push(c),
                (Some(v), '"') => {
                    read_quoted(&mut chars, v, line)?;
                    quoted = true;
                }
                (Some(v), c) => {
                    let mut buf = [0; 4];
                    v.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        match value {
            None => tokens.push(Token::Word(key)),
            Some(_) if key.is_empty() => {
                return Err(syntax(line, "`=` without a key before it"));
            }
            Some(v) if v.is_empty() && !quoted => {
                return Err(syntax(line, format!("`{key}=` has no value")));
            }
            Some(v) => tokens.push(Token::Pair(Pair { key, value: v })),
        }
    }
}

/// The words and pairs of one directive line.
struct Args {
    line: usize,
    directive: String,
    words: Vec<String>,
    pairs: Vec<Pair>,
    asked: Vec<&'static str>,
}

impl Args {
    fn new(line: usize, tokens: Vec<Token>) -> Result<Self, ScriptError> {
        let mut tokens = tokens.into_iter();
        let directive = match tokens.next() {
            Some(Token::Word(word)) => word,
            Some(Token::Pair(pair)) => {
                return Err(syntax(
                    line,
                    format!("a line starts with a directive, not `{}=`", pair.key),
                ));
            }
            None => return Err(syntax(line, "empty line")),
        };
        let mut words = Vec::new();
        let mut pairs: Vec<Pair> = Vec::new();
        for token in tokens {
            match token {
                Token::Word(word) => words.push(word),
                Token::Pair(pair) => {
                    if pairs.iter().any(|p| p.key == pair.key) {
                        return Err(syntax(line, format!("`{}=` is given twice", pair.key)));
                    }
                    pairs.push(pair);
                }
            }
        }
        Ok(Self {
            line,
            directive,
            words,
            pairs,
            asked: Vec::new(),
        })
    }

    /// Exactly `n` words after the directive.
    fn words(&self, n: usize, usage: &str) -> Result<&[String], ScriptError> {
        if self.words.len() == n {
            Ok(&self.words)
        } else {
            Err(syntax(self.line, format!("usage: {usage}")))
        }
    }

    fn raw(&mut self, key: &'static str) -> Option<Vec<u8>> {
        self.asked.push(key);
        let index = self.pairs.iter().position(|p| p.key == key)?;
        Some(self.pairs.remove(index).value)
    }

    fn text(&mut self, key: &'static str) -> Result<Option<String>, ScriptError> {
        let line = self.line;
        self.raw(key)
            .map(|v| {
                String::from_utf8(v).map_err(|_| value(line, format!("{key}=: not valid UTF-8")))
            })
            .transpose()
    }

    fn with<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ScriptError> {
        let line = self.line;
        match self.text(key)? {
            None => Ok(None),
            Some(text) => parse(&text)
                .map(Some)
                .map_err(|message| value(line, format!("{key}=: {message}"))),
        }
    }

    fn number(&mut self, key: &'static str, max: u64) -> Result<Option<u64>, ScriptError> {
        self.with(key, |text| {
            let n = parse_number(text, false)?;
            if n > max {
                return Err(format!("{n:#x} is larger than {max:#x}"));
            }
            Ok(n)
        })
    }

    fn size(&mut self, key: &'static str) -> Result<Option<u64>, ScriptError> {
        self.with(key, |text| parse_number(text, true))
    }

    fn byte(&mut self, key: &'static str) -> Result<Option<u8>, ScriptError> {
        Ok(self
            .number(key, 0xFF)?
            .map(|n| u8::try_from(n).expect("checked against 0xff")))
    }

    fn bool(&mut self, key: &'static str) -> Result<Option<bool>, ScriptError> {
        self.with(key, |text| match text {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(format!("`{text}` is not 0 or 1")),
        })
    }

    fn tag(&mut self) -> Result<Option<u64>, ScriptError> {
        self.with("tag", |text| match parse_number(text, false)? {
            0 => Err("tag 0 is reserved for unsolicited interrupts".to_owned()),
            n => Ok(n),
        })
    }

    fn operand(&mut self, key: &'static str) -> Result<Option<Operand>, ScriptError> {
        self.with(key, parse_operand)
    }

    fn required<T>(&self, key: &str, found: Option<T>) -> Result<T, ScriptError> {
        found.ok_or_else(|| syntax(self.line, format!("`{}` needs {key}=", self.directive)))
    }

    /// Bytes given as `hex=` or `text=` (at most one of them).
    fn content(&mut self) -> Result<Option<Vec<u8>>, ScriptError> {
        let hex = self.with("hex", parse_hex_bytes)?;
        let text = self.raw("text");
        match (hex, text) {
            (Some(_), Some(_)) => Err(syntax(self.line, "give only one of hex= and text=")),
            (Some(bytes), None) | (None, Some(bytes)) => Ok(Some(bytes)),
            (None, None) => Ok(None),
        }
    }

    /// Fails on keys that were never asked for.
    fn finish(self) -> Result<(), ScriptError> {
        match self.pairs.first() {
            None => Ok(()),
            Some(pair) => {
                let known = if self.asked.is_empty() {
                    "none".to_owned()
                } else {
                    self.asked.join(", ")
                };
                Err(syntax(
                    self.line,
                    format!(
                        "unknown key `{}=` for `{}` (known: {known})",
                        pair.key, self.directive
                    ),
                ))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// First pass: definitions and raw steps, names unresolved.

#[derive(Debug)]
struct RawCcw {
    line: usize,
    cmd: u8,
    flags: CcwFlags,
    count: Option<u64>,
    data: Option<Operand>,
}

#[derive(Debug)]
enum DefKind {
    Buffer(Vec<u8>),
    Idal {
        format2: bool,
        entries: Vec<Operand>,
    },
    List {
        format1: bool,
        ccws: Vec<RawCcw>,
    },
}

#[derive(Debug)]
struct Def {
    line: usize,
    name: String,
    addr: u64,
    kind: DefKind,
}

impl Def {
    fn len(&self) -> u64 {
        match &self.kind {
            DefKind::Buffer(bytes) => len64(bytes.len()),
            DefKind::Idal { format2, entries } => {
                len64(entries.len()) * if *format2 { 8 } else { 4 }
            }
            DefKind::List { ccws, .. } => len64(ccws.len()) * 8,
        }
    }

    fn what(&self) -> String {
        let directive = match self.kind {
            DefKind::Buffer(_) => "buffer",
            DefKind::Idal { .. } => "idal",
            DefKind::List { .. } => "ccws",
        };
        format!("{directive} `{}`", self.name)
    }
}

#[derive(Debug, Clone)]
struct OrbSpec {
    line: usize,
    cpa: Option<Operand>,
    format1: Option<bool>,
    orb: Orb,
}

impl Default for OrbSpec {
    fn default() -> Self {
        Self {
            line: 0,
            cpa: None,
            format1: None,
            orb: Orb {
                prefetch: true,
                lpm: 0x80,
                ..Orb::default()
            },
        }
    }
}

#[derive(Debug)]
enum RawExpect {
    Cc(u8),
    Response {
        status: Option<ResponseStatus>,
        error: Option<ProgramErrorCode>,
    },
    Event(Option<EventKind>),
    Irb {
        expect: IrbExpectation,
        cpa: Option<Operand>,
    },
    Buffer {
        name: String,
        content: BufferContent,
    },
    Schib(SchibExpectation),
}

#[derive(Debug)]
enum BufferContent {
    Bytes(Vec<u8>),
    Fill(u8),
}

#[derive(Debug)]
enum RawStep {
    Orb(OrbSpec),
    Start { tag: Option<u64> },
    Halt { tag: Option<u64> },
    Clear { tag: Option<u64> },
    Store,
    Wait { timeout_ms: u64 },
    Sleep { ms: u64 },
    Poke { addr: Operand, bytes: Vec<u8> },
    Expect(RawExpect),
}

impl RawStep {
    fn is_action(&self) -> bool {
        !matches!(self, Self::Orb(_) | Self::Expect(_))
    }
}

#[derive(Debug, Default)]
struct Parser {
    memory: Option<(usize, u64)>,
    defs: Vec<Def>,
    steps: Vec<(usize, RawStep)>,
    /// Index in `defs` of the CCW list `ccw` lines append to.
    open_list: Option<usize>,
}

const BUFFER_USAGE: &str = "buffer NAME at=ADDR (len=N [fill=BYTE] | hex=HEX | text=\"...\")";
const IDAL_USAGE: &str = "idal NAME at=ADDR format=1|2 entries=E1,E2,...";
const CCWS_USAGE: &str = "ccws NAME at=ADDR [format=0|1]";
const CCW_USAGE: &str = "ccw CMD [flags=F1|F2...] [count=N] [data=ADDR|NAME[+OFF]]";
const POKE_USAGE: &str = "poke ADDR (hex=HEX | text=\"...\")";

impl Parser {
    fn parse_line(&mut self, line: usize, text: &str) -> Result<(), ScriptError> {
        let tokens = tokenize(text, line)?;
        if tokens.is_empty() {
            return Ok(());
        }
        let mut args = Args::new(line, tokens)?;
        let directive = args.directive.clone();
        if directive != "ccw" {
            self.open_list = None;
        }
        match directive.as_str() {
            "memory" => self.memory_directive(&mut args)?,
            "buffer" => self.buffer(&mut args)?,
            "idal" => self.idal(&mut args)?,
            "ccws" => self.ccws(&mut args)?,
            "ccw" => self.ccw(&mut args)?,
            "orb" => {
                let spec = orb_spec(&mut args)?;
                self.steps.push((line, RawStep::Orb(spec)));
            }
            "start" | "halt" | "clear" => {
                args.words(0, &format!("{directive} [tag=N]"))?;
                let tag = args.tag()?;
                let step = match directive.as_str() {
                    "start" => RawStep::Start { tag },
                    "halt" => RawStep::Halt { tag },
                    _ => RawStep::Clear { tag },
                };
                self.steps.push((line, step));
            }
            "store" => {
                args.words(0, "store")?;
                self.steps.push((line, RawStep::Store));
            }
            "wait" => {
                args.words(0, "wait [timeout-ms=N]")?;
                let timeout_ms = args
                    .number("timeout-ms", u64::MAX)?
                    .unwrap_or(DEFAULT_WAIT_MS);
                self.steps.push((line, RawStep::Wait { timeout_ms }));
            }
            "sleep" => {
                args.words(0, "sleep ms=N")?;
                let ms = args.number("ms", u64::MAX)?;
                let ms = args.required("ms", ms)?;
                self.steps.push((line, RawStep::Sleep { ms }));
            }
            "poke" => {
                let addr = parse_operand(&args.words(1, POKE_USAGE)?[0])
                    .map_err(|message| value(line, message))?;
                let bytes = args.content()?;
                let bytes = args.required("hex= or text", bytes)?;
                if bytes.is_empty() {
                    return Err(value(line, "poke writes no bytes"));
                }
                self.steps.push((line, RawStep::Poke { addr, bytes }));
            }
            "expect" => {
                for expect in expect(&mut args)? {
                    self.steps.push((line, RawStep::Expect(expect)));
                }
            }
            other => return Err(syntax(line, format!("unknown directive `{other}`"))),
        }
        args.finish()
    }

    fn name(args: &Args, usage: &str) -> Result<String, ScriptError> {
        let name = &args.words(1, usage)?[0];
        if valid_name(name) {
            Ok(name.clone())
        } else {
            Err(syntax(
                args.line,
                format!(
                    "`{name}` is not a valid name (a letter or `_`, then letters, digits, `_`, `-`, `.`)"
                ),
            ))
        }
    }

    fn memory_directive(&mut self, args: &mut Args) -> Result<(), ScriptError> {
        args.words(0, "memory size=SIZE")?;
        let size = args.size("size")?;
        let size = args.required("size", size)?;
        if let Some((first, _)) = self.memory {
            return Err(syntax(
                args.line,
                format!("memory size is already set on line {first}"),
            ));
        }
        if size == 0 || size > MAX_MEMORY_SIZE || size % MEMORY_GRANULE != 0 {
            return Err(value(
                args.line,
                format!("memory size {size:#x} must be a multiple of 4K between 4K and 1G"),
            ));
        }
        self.memory = Some((args.line, size));
        Ok(())
    }

    fn buffer(&mut self, args: &mut Args) -> Result<(), ScriptError> {
        let name = Self::name(args, BUFFER_USAGE)?;
        let at = args.size("at")?;
        let addr = args.required("at", at)?;
        let len = args.size("len")?;
        let fill = args.byte("fill")?.unwrap_or(0);
        let content = args.content()?;
        if content.is_none() && len.is_none() {
            return Err(syntax(args.line, format!("usage: {BUFFER_USAGE}")));
        }
        let mut bytes = content.unwrap_or_default();
        let total = len.unwrap_or(len64(bytes.len()));
        if total < len64(bytes.len()) {
            return Err(value(
                args.line,
                format!(
                    "len={total:#x} is shorter than the {} bytes of content",
                    bytes.len()
                ),
            ));
        }
        if total == 0 {
            return Err(value(args.line, format!("buffer `{name}` is empty")));
        }
        if total > MAX_MEMORY_SIZE {
            return Err(value(
                args.line,
                format!("buffer `{name}` of {total:#x} bytes is larger than any guest memory"),
            ));
        }
        bytes.resize(usize::try_from(total).expect("at most 1G"), fill);
        self.defs.push(Def {
            line: args.line,
            name,
            addr,
            kind: DefKind::Buffer(bytes),
        });
        Ok(())
    }

    fn idal(&mut self, args: &mut Args) -> Result<(), ScriptError> {
        let name = Self::name(args, IDAL_USAGE)?;
        let at = args.size("at")?;
        let addr = args.required("at", at)?;
        let format = args.number("format", u64::MAX)?;
        let format2 = match args.required("format", format)? {
            1 => false,
            2 => true,
            other => {
                return Err(value(
                    args.line,
                    format!("format={other}: IDAL format is 1 or 2"),
                ));
            }
        };
        let entries = args.with("entries", |text| {
            text.split(',')
                .map(parse_operand)
                .collect::<Result<Vec<_>, _>>()
        })?;
        let entries = args.required("entries", entries)?;
        let align = if format2 { 8 } else { 4 };
        if addr % align != 0 {
            return Err(value(
                args.line,
                format!(
                    "a format-{} IDAL must be {align}-byte aligned, {addr:#x} is not",
                    if format2 { 2 } else { 1 }
                ),
            ));
        }
        self.defs.push(Def {
            line: args.line,
            name,
            addr,
            kind: DefKind::Idal { format2, entries },
        });
        Ok(())
    }

    fn ccws(&mut self, args: &mut Args) -> Result<(), ScriptError> {
        let name = Self::name(args, CCWS_USAGE)?;
        let at = args.size("at")?;
        let addr = args.required("at", at)?;
        let format1 = match args.number("format", u64::MAX)?.unwrap_or(1) {
            0 => false,
            1 => true,
            other => {
                return Err(value(
                    args.line,
                    format!("format={other}: CCW format is 0 or 1"),
                ));
            }
        };
        if addr % 8 != 0 {
            return Err(value(
                args.line,
                format!("a CCW list must be 8-byte aligned, {addr:#x} is not"),
            ));
        }
        self.open_list = Some(self.defs.len());
        self.defs.push(Def {
            line: args.line,
            name,
            addr,
            kind: DefKind::List {
                format1,
                ccws: Vec::new(),
            },
        });
        Ok(())
    }

    fn ccw(&mut self, args: &mut Args) -> Result<(), ScriptError> {
        let line = args.line;
        let Some(list) = self.open_list else {
            return Err(syntax(
                line,
                "`ccw` must follow a `ccws` line or another `ccw`",
            ));
        };
        let cmd_text = &args.words(1, CCW_USAGE)?[0];
        let cmd = match COMMANDS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(cmd_text))
        {
            Some(&(_, cmd)) => cmd,
            None => parse_number(cmd_text, false)
                .ok()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| {
                    value(
                        line,
                        format!(
                            "`{cmd_text}` is not a command: a byte such as 0xE4 or one of \
                             sense-id, sense, nop, read, write, seek, tic"
                        ),
                    )
                })?,
        };
        let flags = args
            .with("flags", |text| {
                parse_flag_set(text, &CCW_FLAGS, Some(CcwFlags::from_bits_truncate))
            })?
            .unwrap_or_default();
        let count = args.size("count")?;
        if let Some(count) = count {
            if count > 0xFFFF {
                return Err(value(
                    line,
                    format!("count={count:#x} is larger than 65535"),
                ));
            }
        }
        let data = args.operand("data")?;
        let DefKind::List { ccws, .. } = &mut self.defs[list].kind else {
            unreachable!("open_list indexes a CCW list");
        };
        ccws.push(RawCcw {
            line,
            cmd,
            flags,
            count,
            data,
        });
        Ok(())
    }
}

fn orb_spec(args: &mut Args) -> Result<OrbSpec, ScriptError> {
    args.words(
        0,
        "orb [cpa=ADDR|LIST[+OFF]] [intparm=N] [key=N] [lpm=N] [format=0|1] ...",
    )?;
    let mut spec = OrbSpec {
        line: args.line,
        ..OrbSpec::default()
    };
    spec.cpa = args.operand("cpa")?;
    spec.format1 = args.bool("format")?;
    let orb = &mut spec.orb;
    if let Some(intparm) = args.number("intparm", u64::from(u32::MAX))? {
        orb.intparm = u32::try_from(intparm).expect("checked against u32::MAX");
    }
    if let Some(key) = args.number("key", 15)? {
        orb.key = u8::try_from(key).expect("checked against 15");
    }
    if let Some(lpm) = args.byte("lpm")? {
        orb.lpm = lpm;
    }
    let bools: [(&'static str, &mut bool); 14] = [
        ("prefetch", &mut orb.prefetch),
        ("c64", &mut orb.format2_idaw),
        ("i2k", &mut orb.idaw_2k),
        ("sli", &mut orb.incorrect_length_suppression),
        ("suspend", &mut orb.suspend),
        ("streaming", &mut orb.streaming),
        ("modification", &mut orb.modification),
        ("sync", &mut orb.synchronization),
        ("isi", &mut orb.initial_status_interruption),
        ("alc", &mut orb.address_limit_checking),
        ("ssi", &mut orb.suppress_suspended_interruption),
        ("transport", &mut orb.transport_mode),
        ("midaw", &mut orb.midaw),
        ("ext", &mut orb.orb_extension),
    ];
    for (key, field) in bools {
        if let Some(value) = args.bool(key)? {
            *field = value;
        }
    }
    Ok(spec)
}

fn expect(args: &mut Args) -> Result<Vec<RawExpect>, ScriptError> {
    let line = args.line;
    let what = args.words.first().cloned();
    match what.as_deref() {
        None => {
            let mut out = Vec::new();
            if let Some(cc) = args.number("cc", 3)? {
                out.push(RawExpect::Cc(u8::try_from(cc).expect("checked against 3")));
            }
            let status = args.with("status", |text| lookup_name(text, &STATUS_NAMES, "status"))?;
            let error = args.with("error", |text| lookup_name(text, &ERROR_NAMES, "error"))?;
            if status.is_some() || error.is_some() {
                out.push(RawExpect::Response { status, error });
            }
            let event = args.with("event", |text| match text {
                "interrupt" => Ok(Some(EventKind::Interrupt)),
                "crw" => Ok(Some(EventKind::ChannelReport)),
                "device-gone" => Ok(Some(EventKind::DeviceGone)),
                "none" => Ok(None),
                _ => Err(format!(
                    "unknown event `{text}` (known: interrupt, crw, device-gone, none)"
                )),
            })?;
            if let Some(event) = event {
                out.push(RawExpect::Event(event));
            }
            if out.is_empty() && args.pairs.is_empty() {
                return Err(syntax(
                    line,
                    "usage: expect cc=N | status=S [error=E] | event=E | irb ... | buffer NAME ... | schib ...",
                ));
            }
            Ok(out)
        }
        Some("irb") => {
            args.words(1, "expect irb [tag=N] [fc=F] [ac=A] [sc=S] [dstat=N] [cstat=N] [count=N] [cpa=ADDR] [cc=N] [sense=HEX]")?;
            let expect = IrbExpectation {
                tag: args.number("tag", u64::MAX)?,
                fc: args.with("fc", |t| parse_flag_set(t, &FC_NAMES, None))?,
                ac: args.with("ac", |t| parse_flag_set(t, &AC_NAMES, None))?,
                sc: args.with("sc", |t| parse_flag_set(t, &SC_NAMES, None))?,
                dstat: args.with("dstat", |t| {
                    parse_flag_set(t, &DSTAT_NAMES, Some(DeviceStatus::from_bits_truncate))
                })?,
                cstat: args.with("cstat", |t| {
                    parse_flag_set(t, &CSTAT_NAMES, Some(SubchannelStatus::from_bits_truncate))
                })?,
                count: args
                    .number("count", 0xFFFF)?
                    .map(|n| u16::try_from(n).expect("checked against 0xffff")),
                cpa: None,
                cc: args
                    .number("cc", 3)?
                    .map(|n| u8::try_from(n).expect("checked against 3")),
                sense: args.with("sense", |t| {
                    let bytes = parse_hex_bytes(t)?;
                    if bytes.len() > 32 {
                        return Err(format!("{} bytes; the ECW has 32", bytes.len()));
                    }
                    Ok(bytes)
                })?,
            };
            let cpa = args.operand("cpa")?;
            Ok(vec![RawExpect::Irb { expect, cpa }])
        }
        Some("buffer") => {
            let usage = "expect buffer NAME (hex=HEX | text=\"...\" | fill=BYTE)";
            let name = args.words(2, usage)?[1].clone();
            let fill = args.byte("fill")?;
            let content = args.content()?;
            let content = match (content, fill) {
                (Some(bytes), None) if !bytes.is_empty() => BufferContent::Bytes(bytes),
                (None, Some(fill)) => BufferContent::Fill(fill),
                _ => return Err(syntax(line, format!("usage: {usage}"))),
            };
            Ok(vec![RawExpect::Buffer { name, content }])
        }
        Some("schib") => {
            args.words(1, "expect schib [pim=N] [pam=N] [pom=N] [lpm=N] [lpum=N] [pnom=N] [devno=N] [enabled=0|1]")?;
            Ok(vec![RawExpect::Schib(SchibExpectation {
                pim: args.byte("pim")?,
                pam: args.byte("pam")?,
                pom: args.byte("pom")?,
                lpm: args.byte("lpm")?,
                lpum: args.byte("lpum")?,
                pnom: args.byte("pnom")?,
                devno: args
                    .number("devno", 0xFFFF)?
                    .map(|n| u16::try_from(n).expect("checked against 0xffff")),
                enabled: args.bool("enabled")?,
            })])
        }
        Some(other) => Err(syntax(
            line,
            format!(
                "unknown expectation `{other}` (known: irb, buffer, schib, or cc=/status=/error=/event=)"
            ),
        )),
    }
}

fn lookup_name<T: Copy>(text: &str, table: &[(&'static str, T)], what: &str) -> Result<T, String> {
    table
        .iter()
        .find(|(name, _)| *name == text)
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            let known: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            format!("unknown {what} `{text}` (known: {})", known.join(", "))
        })
}

// ---------------------------------------------------------------------------
// Second pass: resolution.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SymbolKind {
    Buffer,
    Idal,
    List { format1: bool },
}

impl SymbolKind {
    fn noun(self) -> &'static str {
        match self {
            Self::Buffer => "a buffer",
            Self::Idal => "an IDAL",
            Self::List { .. } => "a CCW list",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Self::Buffer => "buffer",
            Self::Idal => "IDAL",
            Self::List { .. } => "CCW list",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    line: usize,
    addr: u64,
    len: u64,
    kind: SymbolKind,
}

/// A resolved operand: its address and, for a name, what the name is.
struct Resolved {
    addr: u64,
    /// The symbol and the offset into it.
    symbol: Option<(Symbol, u64)>,
}

struct Resolver {
    symbols: HashMap<String, Symbol>,
    first_list: Option<Symbol>,
}

impl Resolver {
    fn new(defs: &[Def]) -> Result<Self, ScriptError> {
        let mut symbols: HashMap<String, Symbol> = HashMap::new();
        let mut first_list = None;
        for def in defs {
            if let Some(first) = symbols.get(&def.name) {
                return Err(ScriptError::Duplicate {
                    line: def.line,
                    name: def.name.clone(),
                    first: first.line,
                });
            }
            let kind = match &def.kind {
                DefKind::Buffer(_) => SymbolKind::Buffer,
                DefKind::Idal { .. } => SymbolKind::Idal,
                DefKind::List { format1, .. } => SymbolKind::List { format1: *format1 },
            };
            let symbol = Symbol {
                line: def.line,
                addr: def.addr,
                len: def.len(),
                kind,
            };
            if matches!(kind, SymbolKind::List { .. }) && first_list.is_none() {
                first_list = Some(symbol);
            }
            symbols.insert(def.name.clone(), symbol);
        }
        Ok(Self {
            symbols,
            first_list,
        })
    }

    fn symbol(&self, line: usize, name: &str) -> Result<Symbol, ScriptError> {
        self.symbols
            .get(name)
            .copied()
            .ok_or_else(|| ScriptError::Undefined {
                line,
                name: name.to_owned(),
            })
    }

    fn resolve(&self, line: usize, operand: &Operand) -> Result<Resolved, ScriptError> {
        match operand {
            Operand::Addr(addr) => Ok(Resolved {
                addr: *addr,
                symbol: None,
            }),
            Operand::Name { name, offset } => {
                let symbol = self.symbol(line, name)?;
                if *offset > symbol.len {
                    return Err(value(
                        line,
                        format!(
                            "offset {offset:#x} is beyond the end of {} `{name}` ({:#x} bytes)",
                            symbol.kind.word(),
                            symbol.len
                        ),
                    ));
                }
                Ok(Resolved {
                    addr: symbol.addr + offset,
                    symbol: Some((symbol, *offset)),
                })
            }
        }
    }

    /// Resolves an operand that, if it is a name, must be of an allowed kind.
    fn resolve_kind(
        &self,
        line: usize,
        operand: &Operand,
        allowed: fn(SymbolKind) -> bool,
        expected: &'static str,
    ) -> Result<Resolved, ScriptError> {
        let resolved = self.resolve(line, operand)?;
        if let (Some((symbol, _)), Operand::Name { name, .. }) = (&resolved.symbol, operand) {
            if !allowed(symbol.kind) {
                return Err(ScriptError::WrongKind {
                    line,
                    name: name.clone(),
                    kind: symbol.kind.noun(),
                    expected,
                });
            }
        }
        Ok(resolved)
    }

    fn encode_ccw(&self, ccw: &RawCcw, format1: bool) -> Result<[u8; 8], ScriptError> {
        let line = ccw.line;
        let tic = Ccw {
            cmd: ccw.cmd,
            ..Ccw::default()
        }
        .is_tic(format1);
        let ida = ccw.flags.contains(CcwFlags::IDA);
        let (cda, default_count) = match &ccw.data {
            None => (0, 0),
            Some(operand) => {
                let resolved = self.resolve(line, operand)?;
                match (&resolved.symbol, operand) {
                    (Some((symbol, offset)), Operand::Name { name, .. }) => {
                        let wrong = |expected| ScriptError::WrongKind {
                            line,
                            name: name.clone(),
                            kind: symbol.kind.noun(),
                            expected,
                        };
                        match symbol.kind {
                            SymbolKind::List { .. } if !tic => {
                                return Err(wrong(
                                    "a buffer or an IDAL (only a TIC's data names a CCW list)",
                                ));
                            }
                            SymbolKind::Buffer | SymbolKind::Idal if tic => {
                                return Err(wrong("a CCW list or an address (the data of a TIC)"));
                            }
                            SymbolKind::Buffer if ida => {
                                return Err(value(
                                    line,
                                    format!(
                                        "flags include IDA, so data= must name an IDAL, but `{name}` is a buffer"
                                    ),
                                ));
                            }
                            SymbolKind::Idal if !ida => {
                                return Err(value(
                                    line,
                                    format!("data= names IDAL `{name}`, so flags must include IDA"),
                                ));
                            }
                            SymbolKind::Buffer => (resolved.addr, symbol.len - offset),
                            _ => (resolved.addr, 0),
                        }
                    }
                    _ => (resolved.addr, 0),
                }
            }
        };
        let count = ccw.count.unwrap_or(default_count);
        let count = u16::try_from(count).map_err(|_| {
            value(
                line,
                format!("count {count:#x} (the buffer's length) is larger than 65535; give count="),
            )
        })?;
        let (limit, bits) = if format1 {
            (MAX_31BIT_ADDR, 31)
        } else {
            (MAX_FORMAT0_ADDR, 24)
        };
        if cda > limit {
            return Err(value(
                line,
                format!(
                    "data address {cda:#x} does not fit in the {bits} bits of a format-{} CCW",
                    u8::from(format1)
                ),
            ));
        }
        let ccw = Ccw {
            cmd: ccw.cmd,
            flags: ccw.flags,
            count,
            cda: u32::try_from(cda).expect("checked against 31 bits"),
        };
        let encoded = if format1 {
            ccw.encode_format1()
        } else {
            ccw.encode_format0()
        };
        Ok(encoded.expect("data address checked"))
    }

    fn encode(&self, def: &Def) -> Result<Vec<u8>, ScriptError> {
        match &def.kind {
            DefKind::Buffer(bytes) => Ok(bytes.clone()),
            DefKind::Idal { format2, entries } => {
                let mut out = Vec::new();
                for entry in entries {
                    let addr = self
                        .resolve_kind(def.line, entry, |k| k == SymbolKind::Buffer, "a buffer")?
                        .addr;
                    if *format2 {
                        out.extend_from_slice(&Idaw2(addr).encode());
                    } else {
                        let addr = u32::try_from(addr)
                            .ok()
                            .filter(|&a| u64::from(a) <= MAX_31BIT_ADDR)
                            .ok_or_else(|| {
                                value(
                                    def.line,
                                    format!(
                                        "IDAW address {addr:#x} does not fit in the 31 bits of a format-1 IDAW"
                                    ),
                                )
                            })?;
                        out.extend_from_slice(&Idaw1(addr).encode());
                    }
                }
                Ok(out)
            }
            DefKind::List { format1, ccws } => {
                if ccws.is_empty() {
                    return Err(syntax(
                        def.line,
                        format!("CCW list `{}` has no `ccw` lines", def.name),
                    ));
                }
                let mut out = Vec::with_capacity(ccws.len() * 8);
                for ccw in ccws {
                    out.extend_from_slice(&self.encode_ccw(ccw, *format1)?);
                }
                Ok(out)
            }
        }
    }

    /// The ORB of a START at `start_line` under `spec`.
    fn orb(&self, spec: &OrbSpec, start_line: usize) -> Result<Orb, ScriptError> {
        let (cpa, list_format1, line) = match &spec.cpa {
            Some(operand) => {
                let resolved = self.resolve_kind(
                    spec.line,
                    operand,
                    |k| matches!(k, SymbolKind::List { .. }),
                    "a CCW list",
                )?;
                let format1 = match resolved.symbol {
                    Some((
                        Symbol {
                            kind: SymbolKind::List { format1 },
                            ..
                        },
                        _,
                    )) => Some(format1),
                    _ => None,
                };
                (resolved.addr, format1, spec.line)
            }
            None => match self.first_list {
                Some(Symbol {
                    addr,
                    kind: SymbolKind::List { format1 },
                    ..
                }) => (addr, Some(format1), spec.line),
                _ => {
                    return Err(value(
                        start_line,
                        "nothing to start: define a `ccws` list or give `orb cpa=`",
                    ));
                }
            },
        };
        if cpa > MAX_31BIT_ADDR {
            return Err(value(
                line,
                format!("channel-program address {cpa:#x} does not fit in 31 bits"),
            ));
        }
        Ok(Orb {
            cpa: u32::try_from(cpa).expect("checked against 31 bits"),
            format1: spec.format1.or(list_format1).unwrap_or(true),
            ..spec.orb
        })
    }

    fn expectation(&self, line: usize, raw: RawExpect) -> Result<Expectation, ScriptError> {
        Ok(match raw {
            RawExpect::Cc(cc) => Expectation::Cc(cc),
            RawExpect::Response { status, error } => Expectation::Response { status, error },
            RawExpect::Event(event) => Expectation::Event(event),
            RawExpect::Irb { mut expect, cpa } => {
                if let Some(operand) = cpa {
                    let addr = self.resolve(line, &operand)?.addr;
                    expect.cpa = Some(u32::try_from(addr).map_err(|_| {
                        value(line, format!("cpa={addr:#x} does not fit in 32 bits"))
                    })?);
                }
                Expectation::Irb(expect)
            }
            RawExpect::Buffer { name, content } => {
                let symbol = self.symbol(line, &name)?;
                if symbol.kind != SymbolKind::Buffer {
                    return Err(ScriptError::WrongKind {
                        line,
                        name,
                        kind: symbol.kind.noun(),
                        expected: "a buffer",
                    });
                }
                let bytes = match content {
                    BufferContent::Bytes(bytes) => {
                        if len64(bytes.len()) > symbol.len {
                            return Err(value(
                                line,
                                format!(
                                    "{} expected bytes, but buffer `{name}` has only {}",
                                    bytes.len(),
                                    symbol.len
                                ),
                            ));
                        }
                        bytes
                    }
                    BufferContent::Fill(fill) => {
                        vec![fill; usize::try_from(symbol.len).expect("buffers are at most 1G")]
                    }
                };
                Expectation::Buffer {
                    name,
                    addr: symbol.addr,
                    bytes,
                }
            }
            RawExpect::Schib(expect) => Expectation::Schib(expect),
        })
    }
}

fn check_memory(
    line: usize,
    what: impl FnOnce() -> String,
    addr: u64,
    len: u64,
    memory_size: u64,
) -> Result<u64, ScriptError> {
    match addr.checked_add(len) {
        Some(end) if end <= memory_size => Ok(end),
        end => Err(ScriptError::OutsideMemory {
            line,
            what: what(),
            start: addr,
            end: end.unwrap_or(u64::MAX),
            memory_size,
        }),
    }
}

impl Parser {
    fn finish(self) -> Result<Script, ScriptError> {
        let memory_size = self.memory.map_or(DEFAULT_MEMORY_SIZE, |(_, size)| size);
        let resolver = Resolver::new(&self.defs)?;

        let mut placements: Vec<Placement> = Vec::new();
        let mut buffers = Vec::new();
        for def in &self.defs {
            let bytes = resolver.encode(def)?;
            let start = def.addr;
            let end = check_memory(
                def.line,
                || def.what(),
                start,
                len64(bytes.len()),
                memory_size,
            )?;
            if let Some(other) = placements.iter().find(|p| {
                let other_end = p.addr + len64(p.bytes.len());
                start < other_end && p.addr < end
            }) {
                return Err(ScriptError::Overlap {
                    line: def.line,
                    what: def.what(),
                    start,
                    end,
                    other: other.what.clone(),
                    other_line: other.line,
                    other_start: other.addr,
                    other_end: other.addr + len64(other.bytes.len()),
                });
            }
            if let DefKind::Buffer(_) = def.kind {
                buffers.push(BufferDef {
                    name: def.name.clone(),
                    line: def.line,
                    addr: def.addr,
                    len: len64(bytes.len()),
                });
            }
            placements.push(Placement {
                what: def.what(),
                line: def.line,
                addr: def.addr,
                bytes,
            });
        }

        let mut raw_steps = self.steps;
        if !raw_steps.iter().any(|(_, step)| step.is_action()) {
            let at = raw_steps
                .iter()
                .position(|(_, step)| matches!(step, RawStep::Expect(_)))
                .unwrap_or(raw_steps.len());
            raw_steps.insert(at, (0, RawStep::Start { tag: None }));
            raw_steps.insert(
                at + 1,
                (
                    0,
                    RawStep::Wait {
                        timeout_ms: DEFAULT_WAIT_MS,
                    },
                ),
            );
        }

        let mut steps: Vec<Step> = Vec::new();
        let mut orb = OrbSpec::default();
        let mut last_tag = 0u64;
        let mut next_tag = |tag: Option<u64>| {
            let tag = tag.unwrap_or(last_tag.wrapping_add(1).max(1));
            last_tag = tag;
            tag
        };
        for (line, raw) in raw_steps {
            let kind = match raw {
                RawStep::Orb(spec) => {
                    // Validate the cpa where it is written, even if no START
                    // follows.
                    if spec.cpa.is_some() {
                        resolver.orb(&spec, line)?;
                    }
                    orb = spec;
                    continue;
                }
                RawStep::Start { tag } => StepKind::Start {
                    orb: resolver.orb(&orb, line)?,
                    tag: next_tag(tag),
                },
                RawStep::Halt { tag } => StepKind::Halt { tag: next_tag(tag) },
                RawStep::Clear { tag } => StepKind::Clear { tag: next_tag(tag) },
                RawStep::Store => StepKind::Store,
                RawStep::Wait { timeout_ms } => StepKind::Wait {
                    timeout_ms,
                    timeout_expected: false,
                },
                RawStep::Sleep { ms } => StepKind::Sleep { ms },
                RawStep::Poke { addr, bytes } => {
                    let addr = resolver.resolve(line, &addr)?.addr;
                    check_memory(
                        line,
                        || "poke".to_owned(),
                        addr,
                        len64(bytes.len()),
                        memory_size,
                    )?;
                    StepKind::Poke { addr, bytes }
                }
                RawStep::Expect(RawExpect::Event(None)) => {
                    match steps.last_mut() {
                        Some(Step {
                            kind:
                                StepKind::Wait {
                                    timeout_expected, ..
                                },
                            ..
                        }) => *timeout_expected = true,
                        _ => {
                            return Err(syntax(
                                line,
                                "`expect event=none` must directly follow a `wait`",
                            ));
                        }
                    }
                    StepKind::Expect(Expectation::Event(None))
                }
                RawStep::Expect(raw) => StepKind::Expect(resolver.expectation(line, raw)?),
            };
            steps.push(Step { line, kind });
        }

        Ok(Script {
            memory_size,
            placements,
            buffers,
            steps,
        })
    }
}

/// The fenced code blocks of `docs/program-format.md` with this info string
/// (`script`, `json`), for tests that keep the documentation honest.
#[cfg(test)]
pub(crate) fn documented_blocks(info: &str) -> Vec<&'static str> {
    const DOC: &str = include_str!("../../docs/program-format.md");
    let fence = format!("```{info}\n");
    let mut blocks = Vec::new();
    let mut rest = DOC;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").expect("closed code block");
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_scripts_parse() {
        let blocks = documented_blocks("script");
        assert_eq!(blocks.len(), 5);
        for block in blocks {
            match Script::parse(block) {
                Ok(_) => {}
                // Fragments without a channel program.
                Err(e) if e.line() == 0 => {
                    assert!(!block.contains("ccws"), "{e}");
                }
                Err(e) => panic!("{e}\n{block}"),
            }
        }
    }

    #[test]
    fn documented_example_is_what_the_doc_says() {
        let script = Script::parse(documented_blocks("script")[0]).unwrap();
        assert_eq!(script.memory_size, 1 << 20);
        let placed: Vec<(&str, u64, &[u8])> = script
            .placements
            .iter()
            .map(|p| (p.what.as_str(), p.addr, p.bytes.as_slice()))
            .collect();
        assert_eq!(
            placed,
            [
                ("buffer `id`", 0x2000, &[0xff; 40][..]),
                (
                    "ccws `main`",
                    0x1000,
                    &[
                        0xE4, 0x60, 0x00, 0x28, 0x00, 0x00, 0x20, 0x00, // sense-id CC|SLI
                        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x11, 0x00, // tic to tail
                    ][..]
                ),
                (
                    "ccws `tail`",
                    0x1100,
                    &[0x03, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00][..]
                ),
            ]
        );
        assert_eq!(script.steps.len(), 9);
    }

    fn err(text: &str) -> ScriptError {
        Script::parse(text).expect_err("script should not parse")
    }

    fn err_at(text: &str) -> (usize, String) {
        let e = err(text);
        (e.line(), e.to_string())
    }

    const EXAMPLE: &str = "\
# SENSE ID, then a NOP chained through a TIC.
memory size=1M
buffer id at=0x2000 len=40 fill=0xff
buffer data at=0x3000 text=\"AB\\x01\"   # three bytes
idal list at=0x4000 format=2 entries=data,data+2,0x5000
ccws chain at=0x1000
ccw sense-id flags=SLI count=40 data=id
ccw tic data=tail
ccws tail at=0x1800 format=1
ccw read flags=CC|IDA count=3 data=list
ccw nop flags=SLI
orb intparm=0xdeadbeef lpm=0x40
start
wait timeout-ms=200
expect cc=0
expect irb fc=start sc=primary+secondary+status-pending dstat=0x0c cstat=0 cpa=tail+16 count=0
expect buffer data hex=414201
store
expect schib pim=0x80 devno=0x0190 enabled=1
";

    #[test]
    fn example_placements_are_encoded() {
        let script = Script::parse(EXAMPLE).unwrap();
        assert_eq!(script.memory_size, 0x10_0000);
        let placed: Vec<(&str, usize, u64, &[u8])> = script
            .placements
            .iter()
            .map(|p| (p.what.as_str(), p.line, p.addr, p.bytes.as_slice()))
            .collect();
        assert_eq!(placed.len(), 5);
        assert_eq!(placed[0].0, "buffer `id`");
        assert_eq!((placed[0].1, placed[0].2), (3, 0x2000));
        assert_eq!(placed[0].3, &[0xff; 40][..]);
        assert_eq!(
            placed[1],
            ("buffer `data`", 4, 0x3000, &[0x41, 0x42, 0x01][..])
        );
        assert_eq!(
            placed[2],
            (
                "idal `list`",
                5,
                0x4000,
                &[
                    0, 0, 0, 0, 0, 0, 0x30, 0x00, //
                    0, 0, 0, 0, 0, 0, 0x30, 0x02, //
                    0, 0, 0, 0, 0, 0, 0x50, 0x00,
                ][..]
            )
        );
        assert_eq!(
            placed[3],
            (
                "ccws `chain`",
                6,
                0x1000,
                &[
                    0xE4, 0x20, 0x00, 0x28, 0x00, 0x00, 0x20, 0x00, // sense-id
                    0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, 0x00, // tic
                ][..]
            )
        );
        assert_eq!(
            placed[4],
            (
                "ccws `tail`",
                9,
                0x1800,
                &[
                    0x02, 0x44, 0x00, 0x03, 0x00, 0x00, 0x40, 0x00, // read
                    0x03, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // nop
                ][..]
            )
        );
        assert_eq!(
            script.buffers,
            vec![
                BufferDef {
                    name: "id".into(),
                    line: 3,
                    addr: 0x2000,
                    len: 40
                },
                BufferDef {
                    name: "data".into(),
                    line: 4,
                    addr: 0x3000,
                    len: 3
                },
            ]
        );
        assert_eq!(script.buffer("data").map(|b| b.addr), Some(0x3000));
    }

    #[test]
    fn example_steps_are_resolved() {
        let script = Script::parse(EXAMPLE).unwrap();
        let orb = Orb {
            intparm: 0xdead_beef,
            format1: true,
            prefetch: true,
            lpm: 0x40,
            cpa: 0x1000,
            ..Orb::default()
        };
        let expected = vec![
            Step {
                line: 13,
                kind: StepKind::Start { tag: 1, orb },
            },
            Step {
                line: 14,
                kind: StepKind::Wait {
                    timeout_ms: 200,
                    timeout_expected: false,
                },
            },
            Step {
                line: 15,
                kind: StepKind::Expect(Expectation::Cc(0)),
            },
            Step {
                line: 16,
                kind: StepKind::Expect(Expectation::Irb(IrbExpectation {
                    fc: Some(FunctionControl::START),
                    sc: Some(
                        StatusControl::PRIMARY
                            | StatusControl::SECONDARY
                            | StatusControl::STATUS_PENDING,
                    ),
                    dstat: Some(DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END),
                    cstat: Some(SubchannelStatus::empty()),
                    cpa: Some(0x1810),
                    count: Some(0),
                    ..IrbExpectation::default()
                })),
            },
            Step {
                line: 17,
                kind: StepKind::Expect(Expectation::Buffer {
                    name: "data".into(),
                    addr: 0x3000,
                    bytes: vec![0x41, 0x42, 0x01],
                }),
            },
            Step {
                line: 18,
                kind: StepKind::Store,
            },
            Step {
                line: 19,
                kind: StepKind::Expect(Expectation::Schib(SchibExpectation {
                    pim: Some(0x80),
                    devno: Some(0x0190),
                    enabled: Some(true),
                    ..SchibExpectation::default()
                })),
            },
        ];
        assert_eq!(script.steps, expected);
        assert_eq!(
            orb.encode(),
            [
                0xde, 0xad, 0xbe, 0xef, 0x00, 0xc0, 0x40, 0x00, 0, 0, 0x10, 0
            ]
        );
    }

    #[test]
    fn sense_id_ccw_bytes() {
        let script = Script::parse(
            "buffer id at=0x2000 len=40\nccws chain at=0x1000\nccw sense-id flags=SLI count=40 data=id\n",
        )
        .unwrap();
        assert_eq!(script.placements[1].addr, 0x1000);
        assert_eq!(
            script.placements[1].bytes,
            [0xE4, 0x20, 0x00, 0x28, 0x00, 0x00, 0x20, 0x00]
        );
    }

    #[test]
    fn implicit_start_and_wait() {
        let script =
            Script::parse("ccws c at=0x100\nccw nop\nexpect irb dstat=channel-end+device-end\n")
                .unwrap();
        assert_eq!(script.memory_size, DEFAULT_MEMORY_SIZE);
        assert_eq!(script.placements[0].bytes, [0x03, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(script.steps.len(), 3);
        assert_eq!(
            script.steps[0],
            Step {
                line: 0,
                kind: StepKind::Start {
                    tag: 1,
                    orb: Orb {
                        format1: true,
                        prefetch: true,
                        lpm: 0x80,
                        cpa: 0x100,
                        ..Orb::default()
                    }
                }
            }
        );
        assert_eq!(
            script.steps[1],
            Step {
                line: 0,
                kind: StepKind::Wait {
                    timeout_ms: 5000,
                    timeout_expected: false
                }
            }
        );
        assert_eq!(script.steps[2].line, 3);
        // Without expectations the implicit steps are the whole program.
        let script = Script::parse("ccws c at=0x100\nccw nop\n").unwrap();
        assert_eq!(script.steps.len(), 2);
    }

    #[test]
    fn format0_list_and_orb_format_default() {
        let script = Script::parse(
            "buffer b at=0x20000 len=0x100\nccws c at=0x100 format=0\nccw write flags=CC data=b\nccw 0x27 count=4K\nstart tag=7\nhalt\nclear tag=3\nstore\nstart\n",
        )
        .unwrap();
        assert_eq!(
            script.placements[1].bytes,
            [
                0x01, 0x02, 0x00, 0x00, 0x40, 0x00, 0x01, 0x00, // write, count 0x100
                0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, // count 4K
            ]
        );
        let kinds: Vec<&StepKind> = script.steps.iter().map(|s| &s.kind).collect();
        let StepKind::Start { tag: 7, orb } = kinds[0] else {
            panic!("{kinds:?}");
        };
        assert!(!orb.format1, "format follows the list");
        assert_eq!(kinds[1], &StepKind::Halt { tag: 8 });
        assert_eq!(kinds[2], &StepKind::Clear { tag: 3 });
        assert_eq!(kinds[3], &StepKind::Store);
        assert!(matches!(kinds[4], StepKind::Start { tag: 4, .. }));
    }

    #[test]
    fn orb_keys() {
        let script = Script::parse(
            "ccws c at=0x100\nccw nop\norb cpa=0x7ffffff8 key=6 format=0 prefetch=0 c64=1 i2k=1 sli=1 suspend=1 isi=1 alc=1 ssi=1 midaw=1 ext=1 transport=1 streaming=1 modification=1 sync=1\nstart\n",
        )
        .unwrap();
        let StepKind::Start { orb, .. } = &script.steps[0].kind else {
            panic!();
        };
        assert_eq!(
            *orb,
            Orb {
                intparm: 0,
                key: 6,
                suspend: true,
                streaming: true,
                modification: true,
                synchronization: true,
                format1: false,
                prefetch: false,
                initial_status_interruption: true,
                address_limit_checking: true,
                suppress_suspended_interruption: true,
                transport_mode: true,
                format2_idaw: true,
                idaw_2k: true,
                lpm: 0x80,
                incorrect_length_suppression: true,
                midaw: true,
                orb_extension: true,
                cpa: 0x7fff_fff8,
            }
        );
    }

    #[test]
    fn orb_replaces_and_applies_to_later_starts() {
        let script = Script::parse(
            "ccws a at=0x100\nccw nop\nccws b at=0x200 format=0\nccw nop\nstart\norb cpa=b+8 intparm=5\nstart\norb\nstart\n",
        )
        .unwrap();
        let orbs: Vec<(u32, u32, bool)> = script
            .steps
            .iter()
            .map(|s| match s.kind {
                StepKind::Start { orb, .. } => (orb.cpa, orb.intparm, orb.format1),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            orbs,
            [(0x100, 0, true), (0x208, 5, false), (0x100, 0, true)]
        );
    }

    #[test]
    fn poke_sleep_and_event_expectations() {
        let script = Script::parse(
            "buffer b at=0x800 len=16\nccws c at=0x100\nccw nop\nstart\npoke b+4 hex=\"de ad\"\npoke 0x900 text=\"x\"\nsleep ms=10\nwait timeout-ms=50\nexpect event=none\nwait\nexpect event=crw status=ok error=invalid cc=1\nexpect buffer b fill=0\n",
        )
        .unwrap();
        let kinds: Vec<StepKind> = script.steps.into_iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds[1],
            StepKind::Poke {
                addr: 0x804,
                bytes: vec![0xde, 0xad]
            }
        );
        assert_eq!(
            kinds[2],
            StepKind::Poke {
                addr: 0x900,
                bytes: vec![b'x']
            }
        );
        assert_eq!(kinds[3], StepKind::Sleep { ms: 10 });
        assert_eq!(
            kinds[4],
            StepKind::Wait {
                timeout_ms: 50,
                timeout_expected: true
            }
        );
        assert_eq!(kinds[5], StepKind::Expect(Expectation::Event(None)));
        assert_eq!(
            kinds[6],
            StepKind::Wait {
                timeout_ms: 5000,
                timeout_expected: false
            }
        );
        assert_eq!(kinds[7], StepKind::Expect(Expectation::Cc(1)));
        assert_eq!(
            kinds[8],
            StepKind::Expect(Expectation::Response {
                status: Some(ResponseStatus::Ok),
                error: Some(ProgramErrorCode::Invalid)
            })
        );
        assert_eq!(
            kinds[9],
            StepKind::Expect(Expectation::Event(Some(EventKind::ChannelReport)))
        );
        assert_eq!(
            kinds[10],
            StepKind::Expect(Expectation::Buffer {
                name: "b".into(),
                addr: 0x800,
                bytes: vec![0; 16]
            })
        );
    }

    #[test]
    fn format1_idal_and_buffer_padding() {
        let script = Script::parse(
            "buffer b at=0x1000 len=8 hex=01:02 fill=0xee\nidal i at=0x2004 format=1 entries=b+4,0x7ffff000\nccws c at=0x3000\nccw write flags=IDA data=i count=8\n",
        )
        .unwrap();
        assert_eq!(
            script.placements[0].bytes,
            [1, 2, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee]
        );
        assert_eq!(
            script.placements[1].bytes,
            [0, 0, 0x10, 0x04, 0x7f, 0xff, 0xf0, 0x00]
        );
        assert_eq!(
            script.placements[2].bytes,
            [0x01, 0x04, 0, 8, 0, 0, 0x20, 0x04]
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0", false), Ok(0));
        assert_eq!(parse_number("4096", false), Ok(4096));
        assert_eq!(parse_number("0x1_000", false), Ok(0x1000));
        assert_eq!(parse_number("16M", true), Ok(16 << 20));
        assert_eq!(parse_number("4k", true), Ok(4096));
        assert_eq!(parse_number("1G", true), Ok(1 << 30));
        assert_eq!(
            parse_number("16M", false),
            Err("`16M` is not a number".to_owned())
        );
        assert_eq!(
            parse_number("0190", false),
            Err(
                "`0190` has a leading zero: write 0x0190 for hex or drop the zero for decimal"
                    .to_owned()
            )
        );
        assert_eq!(
            parse_number("+5", false),
            Err("`+5` is not a number".to_owned())
        );
        assert_eq!(
            parse_number("0x", false),
            Err("`0x` is not a number".to_owned())
        );
        assert_eq!(
            parse_number("0x10000000000000000", false),
            Err("`0x10000000000000000` does not fit in 64 bits".to_owned())
        );
        assert_eq!(
            parse_number("0xffffffffffffffffK", true),
            Err("`0xffffffffffffffffK` does not fit in 64 bits".to_owned())
        );
        assert_eq!(
            parse_hex_bytes("E4 20:00_28"),
            Ok(vec![0xe4, 0x20, 0x00, 0x28])
        );
        assert_eq!(
            parse_hex_bytes("0xabc"),
            Err("odd number of hex digits (3)".to_owned())
        );
        assert_eq!(
            parse_hex_bytes("zz"),
            Err("`z` is not a hex digit".to_owned())
        );
    }

    #[test]
    fn quoted_text_and_comments() {
        let script = Script::parse(
            "buffer t at=0x100 text=\"a # b\\\"\\\\\\n\\t\\r\\0\\x7F\"  # comment\n  # only a comment\n\nccws c at=0x200 # x\nccw nop#y\n",
        )
        .unwrap();
        assert_eq!(
            script.placements[0].bytes,
            b"a # b\"\\\n\t\r\0\x7f".to_vec()
        );
        assert_eq!(script.placements[1].bytes, [3, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn syntax_errors() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "frobnicate x=1",
                1,
                "line 1: unknown directive `frobnicate`",
            ),
            (
                "\n\nbuffer b at=0x100 len=4 size=3",
                3,
                "line 3: unknown key `size=` for `buffer` (known: at, len, fill, hex, text)",
            ),
            (
                "buffer b at=0x100 len=4 len=5",
                1,
                "line 1: `len=` is given twice",
            ),
            (
                "buffer b at=0x100 text=\"abc",
                1,
                "line 1: unterminated quoted string",
            ),
            (
                "buffer b at=0x100 text=\"\\q\"",
                1,
                "line 1: unknown escape `\\q`",
            ),
            (
                "buffer b at=0x100 text=\"\\x4\"",
                1,
                "line 1: `\\x4\"`: not two hex digits",
            ),
            (
                "buffer \"b\" at=0x100",
                1,
                "line 1: a quoted string must be a value: KEY=\"...\"",
            ),
            ("buffer b at= len=3", 1, "line 1: `at=` has no value"),
            ("buffer b =3", 1, "line 1: `=` without a key before it"),
            (
                "at=3",
                1,
                "line 1: a line starts with a directive, not `at=`",
            ),
            (
                "buffer at=0x100 len=3",
                1,
                "line 1: usage: buffer NAME at=ADDR (len=N [fill=BYTE] | hex=HEX | text=\"...\")",
            ),
            (
                "buffer b at=0x100",
                1,
                "line 1: usage: buffer NAME at=ADDR (len=N [fill=BYTE] | hex=HEX | text=\"...\")",
            ),
            ("buffer b len=3", 1, "line 1: `buffer` needs at="),
            (
                "buffer 9b at=0x100 len=3",
                1,
                "line 1: `9b` is not a valid name (a letter or `_`, then letters, digits, `_`, `-`, `.`)",
            ),
            (
                "buffer b at=0x100 hex=00 text=\"a\"",
                1,
                "line 1: give only one of hex= and text=",
            ),
            (
                "ccw nop",
                1,
                "line 1: `ccw` must follow a `ccws` line or another `ccw`",
            ),
            (
                "ccws c at=0x100\nbuffer b at=0x200 len=1\nccw nop",
                3,
                "line 3: `ccw` must follow a `ccws` line or another `ccw`",
            ),
            (
                "ccws c at=0x100\nccw",
                2,
                "line 2: usage: ccw CMD [flags=F1|F2...] [count=N] [data=ADDR|NAME[+OFF]]",
            ),
            (
                "ccws c at=0x100",
                1,
                "line 1: CCW list `c` has no `ccw` lines",
            ),
            (
                "memory size=1M\nmemory size=2M",
                2,
                "line 2: memory size is already set on line 1",
            ),
            ("store now", 1, "line 1: usage: store"),
            ("sleep", 1, "line 1: `sleep` needs ms="),
            ("poke 0x100", 1, "line 1: `poke` needs hex= or text="),
            (
                "expect",
                1,
                "line 1: usage: expect cc=N | status=S [error=E] | event=E | irb ... | buffer NAME ... | schib ...",
            ),
            (
                "expect sense",
                1,
                "line 1: unknown expectation `sense` (known: irb, buffer, schib, or cc=/status=/error=/event=)",
            ),
            (
                "expect buffer b",
                1,
                "line 1: usage: expect buffer NAME (hex=HEX | text=\"...\" | fill=BYTE)",
            ),
            (
                "expect irb dstat=0x0c foo=1",
                1,
                "line 1: unknown key `foo=` for `expect` (known: tag, fc, ac, sc, dstat, cstat, count, cc, sense, cpa)",
            ),
            (
                "ccws c at=0x100\nccw nop\nstart\nexpect event=none",
                4,
                "line 4: `expect event=none` must directly follow a `wait`",
            ),
            (
                "memory size=1M\nstart",
                2,
                "line 2: nothing to start: define a `ccws` list or give `orb cpa=`",
            ),
            (
                "memory size=1M",
                0,
                "line 0: nothing to start: define a `ccws` list or give `orb cpa=`",
            ),
        ];
        for &(text, line, message) in cases {
            let (got_line, got) = err_at(text);
            assert_eq!(got, message, "{text:?}");
            assert_eq!(got_line, line, "{text:?}");
            assert!(
                matches!(
                    err(text),
                    ScriptError::Syntax { .. } | ScriptError::Value { .. }
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn value_errors() {
        let list = "ccws c at=0x100\n";
        let cases: &[(String, usize, &str)] = &[
            ("memory size=2G".into(), 1, "line 1: memory size 0x80000000 must be a multiple of 4K between 4K and 1G"),
            ("memory size=5000".into(), 1, "line 1: memory size 0x1388 must be a multiple of 4K between 4K and 1G"),
            ("memory size=0".into(), 1, "line 1: memory size 0x0 must be a multiple of 4K between 4K and 1G"),
            ("buffer b at=0x100 len=12Q".into(), 1, "line 1: len=: `12Q` is not a number"),
            ("buffer b at=0x100 len=0190".into(), 1, "line 1: len=: `0190` has a leading zero: write 0x0190 for hex or drop the zero for decimal"),
            ("buffer b at=0x100 len=2 hex=010203".into(), 1, "line 1: len=0x2 is shorter than the 3 bytes of content"),
            ("buffer b at=0x100 text=\"\"".into(), 1, "line 1: buffer `b` is empty"),
            ("buffer b at=0x100 len=2G".into(), 1, "line 1: buffer `b` of 0x80000000 bytes is larger than any guest memory"),
            ("buffer b at=0x100 len=4 fill=256".into(), 1, "line 1: fill=: 0x100 is larger than 0xff"),
            ("buffer b at=0x100 hex=abc".into(), 1, "line 1: hex=: odd number of hex digits (3)"),
            ("idal i at=0x100 format=3 entries=0".into(), 1, "line 1: format=3: IDAL format is 1 or 2"),
            ("idal i at=0x104 format=2 entries=0".into(), 1, "line 1: a format-2 IDAL must be 8-byte aligned, 0x104 is not"),
            ("idal i at=0x102 format=1 entries=0".into(), 1, "line 1: a format-1 IDAL must be 4-byte aligned, 0x102 is not"),
            ("idal i at=0x100 format=1 entries=0x80000000".into(), 1, "line 1: IDAW address 0x80000000 does not fit in the 31 bits of a format-1 IDAW"),
            ("idal i at=0x100 format=1 entries=0,,1".into(), 1, "line 1: entries=: `` is neither an address nor NAME[+OFFSET]"),
            ("ccws c at=0x104".into(), 1, "line 1: a CCW list must be 8-byte aligned, 0x104 is not"),
            ("ccws c at=0x100 format=2".into(), 1, "line 1: format=2: CCW format is 0 or 1"),
            (format!("{list}ccw 0x100"), 2, "line 2: `0x100` is not a command: a byte such as 0xE4 or one of sense-id, sense, nop, read, write, seek, tic"),
            (format!("{list}ccw bogus"), 2, "line 2: `bogus` is not a command: a byte such as 0xE4 or one of sense-id, sense, nop, read, write, seek, tic"),
            (format!("{list}ccw nop flags=CC|XX"), 2, "line 2: flags=: unknown flag `XX` (known: CD, CC, SLI, SKIP, PCI, IDA, S, MIDA)"),
            (format!("{list}ccw read count=65536"), 2, "line 2: count=0x10000 is larger than 65535"),
            (format!("{list}ccw read data=0x80000000"), 2, "line 2: data address 0x80000000 does not fit in the 31 bits of a format-1 CCW"),
            ("ccws c at=0x100 format=0\nccw read data=0x1000000".into(), 2, "line 2: data address 0x1000000 does not fit in the 24 bits of a format-0 CCW"),
            ("buffer b at=0x1000 len=64K\nccws c at=0x100\nccw read data=b".into(), 3, "line 3: count 0x10000 (the buffer's length) is larger than 65535; give count="),
            ("buffer b at=0x1000 len=4\nccws c at=0x100\nccw read data=b+5".into(), 3, "line 3: offset 0x5 is beyond the end of buffer `b` (0x4 bytes)"),
            ("buffer b at=0x1000 len=4\nccws c at=0x100\nccw read flags=IDA data=b".into(), 3, "line 3: flags include IDA, so data= must name an IDAL, but `b` is a buffer"),
            ("buffer b at=0x1000 len=4\nidal i at=0x2000 format=2 entries=b\nccws c at=0x100\nccw read data=i".into(), 4, "line 4: data= names IDAL `i`, so flags must include IDA"),
            (format!("{list}ccw nop\norb cpa=0x80000000"), 3, "line 3: channel-program address 0x80000000 does not fit in 31 bits"),
            (format!("{list}ccw nop\norb key=16"), 3, "line 3: key=: 0x10 is larger than 0xf"),
            (format!("{list}ccw nop\norb format=2"), 3, "line 3: format=: `2` is not 0 or 1"),
            (format!("{list}ccw nop\nstart tag=0"), 3, "line 3: tag=: tag 0 is reserved for unsolicited interrupts"),
            (format!("{list}ccw nop\nexpect cc=4"), 3, "line 3: cc=: 0x4 is larger than 0x3"),
            (format!("{list}ccw nop\nexpect status=fine"), 3, "line 3: status=: unknown status `fine` (known: ok, unit-exception, bad-request, broken, unsupported)"),
            (format!("{list}ccw nop\nexpect error=oops"), 3, "line 3: error=: unknown error `oops` (known: address-out-of-range, unsupported, too-large, invalid, bad-function)"),
            (format!("{list}ccw nop\nexpect event=irq"), 3, "line 3: event=: unknown event `irq` (known: interrupt, crw, device-gone, none)"),
            (format!("{list}ccw nop\nexpect irb fc=start+stop"), 3, "line 3: fc=: unknown flag `stop` (known: start, halt, clear)"),
            (format!("{list}ccw nop\nexpect irb dstat=0x100"), 3, "line 3: dstat=: `0x100` does not fit in a byte"),
            (format!("{list}ccw nop\nexpect irb sense={}", "00".repeat(33)), 3, "line 3: sense=: 33 bytes; the ECW has 32"),
            (format!("{list}ccw nop\nexpect irb cpa=0x100000000"), 3, "line 3: cpa=0x100000000 does not fit in 32 bits"),
            (format!("{list}ccw nop\nbuffer b at=0x1000 len=2\nexpect buffer b hex=010203"), 4, "line 4: 3 expected bytes, but buffer `b` has only 2"),
            (format!("{list}ccw nop\npoke c+9 hex=00"), 3, "line 3: offset 0x9 is beyond the end of CCW list `c` (0x8 bytes)"),
            (format!("{list}ccw nop\nexpect schib devno=0x10000"), 3, "line 3: devno=: 0x10000 is larger than 0xffff"),
        ];
        for (text, line, message) in cases {
            let e = err(text);
            assert_eq!(e.to_string(), *message, "{text:?}");
            assert_eq!(e.line(), *line, "{text:?}");
        }
    }

    #[test]
    fn name_errors() {
        let e = err("buffer b at=0x100 len=4\nccws b at=0x200\nccw nop");
        assert_eq!(
            e,
            ScriptError::Duplicate {
                line: 2,
                name: "b".into(),
                first: 1
            }
        );
        assert_eq!(e.to_string(), "line 2: `b` is already defined on line 1");

        let e = err("ccws c at=0x100\nccw read data=nowhere");
        assert_eq!(
            e,
            ScriptError::Undefined {
                line: 2,
                name: "nowhere".into()
            }
        );
        assert_eq!(e.to_string(), "line 2: `nowhere` is not defined");

        for (text, line, message) in [
            (
                "ccws c at=0x100\nccw nop\norb cpa=d\nbuffer d at=0x200 len=4",
                3,
                "line 3: `d` is a buffer, expected a CCW list",
            ),
            (
                "ccws c at=0x100\nccw read data=c",
                2,
                "line 2: `c` is a CCW list, expected a buffer or an IDAL (only a TIC's data names a CCW list)",
            ),
            (
                "buffer b at=0x200 len=4\nccws c at=0x100\nccw tic data=b",
                3,
                "line 3: `b` is a buffer, expected a CCW list or an address (the data of a TIC)",
            ),
            (
                "ccws c at=0x100\nccw nop\nidal i at=0x200 format=1 entries=c",
                3,
                "line 3: `c` is a CCW list, expected a buffer",
            ),
            (
                "ccws c at=0x100\nccw nop\nexpect buffer c fill=0",
                3,
                "line 3: `c` is a CCW list, expected a buffer",
            ),
            (
                "ccws c at=0x100\nccw nop\nexpect buffer z fill=0",
                3,
                "line 3: `z` is not defined",
            ),
            (
                "ccws c at=0x100\nccw nop\nexpect irb cpa=z+8",
                3,
                "line 3: `z` is not defined",
            ),
        ] {
            let e = err(text);
            assert_eq!(e.to_string(), message, "{text:?}");
            assert_eq!(e.line(), line, "{text:?}");
        }
    }

    #[test]
    fn memory_errors() {
        let e = err("memory size=64K\nbuffer b at=0xfff0 len=0x20");
        assert_eq!(
            e,
            ScriptError::OutsideMemory {
                line: 2,
                what: "buffer `b`".into(),
                start: 0xfff0,
                end: 0x10010,
                memory_size: 0x10000
            }
        );
        assert_eq!(
            e.to_string(),
            "line 2: buffer `b` [0xfff0, 0x10010) lies outside guest memory of 0x10000 bytes"
        );
        // The memory directive may come last.
        let e = err("ccws c at=0x10000\nccw nop\nmemory size=64K");
        assert_eq!(
            e.to_string(),
            "line 1: ccws `c` [0x10000, 0x10008) lies outside guest memory of 0x10000 bytes"
        );
        let e = err("ccws c at=0x100\nccw nop\npoke 0xffffff hex=0000");
        assert_eq!(
            e.to_string(),
            "line 3: poke [0xffffff, 0x1000001) lies outside guest memory of 0x1000000 bytes"
        );
        let e = err("buffer b at=0xffffffffffffffff len=2");
        assert_eq!(e.line(), 1);
        assert!(matches!(
            e,
            ScriptError::OutsideMemory { end: u64::MAX, .. }
        ));
        // Addresses inside CCWs and the ORB are not checked against memory.
        let script = Script::parse("memory size=64K\nccws c at=0x100\nccw read count=4 data=0x7ffff000\norb cpa=0x7ffff000\nstart").unwrap();
        assert_eq!(
            script.placements[0].bytes,
            [0x02, 0, 0, 4, 0x7f, 0xff, 0xf0, 0]
        );
    }

    #[test]
    fn overlap_errors() {
        let e = err("buffer a at=0x1000 len=0x100\nccws c at=0x10f8\nccw nop\nccw nop");
        assert_eq!(
            e,
            ScriptError::Overlap {
                line: 2,
                what: "ccws `c`".into(),
                start: 0x10f8,
                end: 0x1108,
                other: "buffer `a`".into(),
                other_line: 1,
                other_start: 0x1000,
                other_end: 0x1100
            }
        );
        assert_eq!(
            e.to_string(),
            "line 2: ccws `c` [0x10f8, 0x1108) overlaps buffer `a` (line 1) [0x1000, 0x1100)"
        );
        // Adjacent placements do not overlap.
        Script::parse("buffer a at=0x1000 len=0x100\nccws c at=0x1100\nccw nop").unwrap();
        let e = err("buffer a at=0x1000 len=0x100\nidal i at=0xff8 format=2 entries=a,a");
        assert_eq!(
            e.to_string(),
            "line 2: idal `i` [0xff8, 0x1008) overlaps buffer `a` (line 1) [0x1000, 0x1100)"
        );
    }

    #[test]
    fn tic_to_list_offset_and_flag_numbers() {
        let script = Script::parse(
            "ccws a at=0x100 format=0\nccw nop flags=0x60\nccw TIC data=a+8\nccw 0x18 data=a\n",
        )
        .unwrap();
        assert_eq!(
            script.placements[0].bytes,
            [
                0x03, 0x00, 0x00, 0x00, 0x60, 0, 0, 0, // nop CC+SLI
                0x08, 0x00, 0x01, 0x08, 0x00, 0, 0, 0, // TIC to the second CCW
                0x18, 0x00, 0x01, 0x00, 0x00, 0, 0, 0, // format-0 TIC (bits 4-7 are 8)
            ]
        );
        // In format 1 only 0x08 is a TIC, so 0x18 may not name a list.
        let e = err("ccws a at=0x100\nccw 0x18 data=a\n");
        assert_eq!(
            e.to_string(),
            "line 2: `a` is a CCW list, expected a buffer or an IDAL (only a TIC's data names a CCW list)"
        );
    }
}
