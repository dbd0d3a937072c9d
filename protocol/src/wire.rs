//! Protocol v1: what travels between frontend and backend.
//!
//! The transport is vhost-user (UNIX stream socket, standard control
//! messages). All channel-subsystem traffic rides on two virtqueues whose
//! element layouts are defined here; subchannel identity comes from the
//! device config space (GET_CONFIG). `docs/protocol.md` is the normative text;
//! this module is its single implementation. Integers of the protocol itself
//! are little-endian (as in virtio); architected structures embedded in
//! messages (ORB, SCSW, SCHIB, IRB, CRW, SENSE ID) keep their big-endian
//! architected layout byte for byte.

use thiserror::Error;

use crate::arch::{ArchError, Crw, Irb, Orb, Schib, Scsw, SenseId};

/// Index of the request queue (frontend → backend, one element per
/// subchannel function the guest issued).
pub const REQUEST_QUEUE: usize = 0;
/// Index of the event queue (backend → frontend, buffers posted by the
/// frontend and filled with interrupts, channel reports and notices).
pub const EVENT_QUEUE: usize = 1;
/// Number of virtqueues of a vhost-user-ccw device.
pub const NUM_QUEUES: usize = 2;
/// Largest queue size the backend accepts.
pub const MAX_QUEUE_SIZE: usize = 1024;

/// Guest physical addresses at and above this base form the control window:
/// the frontend registers its own control memory (the rings) there. No
/// channel program can ever address it: CCW and IDAW data addresses are
/// checked against guest RAM regions, which all lie below the window.
pub const CONTROL_WINDOW_BASE: u64 = 1 << 63;

/// Protocol version of this layout (config space `version`).
pub const PROTOCOL_VERSION: u16 = 1;

/// Virtio feature: the device complies with virtio 1.x (required).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// vhost-user feature: the protocol-feature handshake is available (required).
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// Device feature bit 0: protocol v1 element layouts. A frontend must ack it;
/// a later v2 will use another bit so that either side may be older.
pub const VIRTIO_CCW_F_PROTOCOL_V1: u64 = 1 << 0;
/// Device feature bit 1: the backend reports channel reports (CRW events).
pub const VIRTIO_CCW_F_CRW: u64 = 1 << 1;

/// Device features a v1 backend offers.
pub const DEVICE_FEATURES: u64 = VIRTIO_F_VERSION_1
    | VHOST_USER_F_PROTOCOL_FEATURES
    | VIRTIO_CCW_F_PROTOCOL_V1
    | VIRTIO_CCW_F_CRW;

/// vhost-user protocol features (bit numbers of the vhost-user spec) a v1
/// backend offers: REPLY_ACK (3), CONFIG (9), RESET_DEVICE (13),
/// CONFIGURE_MEM_SLOTS (15).
pub const PROTOCOL_FEATURE_BITS: [u32; 4] = [3, 9, 13, 15];

/// Config-space capability: format-0 CCWs are translated.
pub const CAP_FORMAT0_CCW: u32 = 1 << 0;
/// Config-space capability: format-1 (31-bit) IDAWs are translated.
pub const CAP_IDAW_FORMAT1: u32 = 1 << 1;
/// Config-space capability: format-2 (64-bit) IDAWs, 2K and 4K blocks.
pub const CAP_IDAW_FORMAT2: u32 = 1 << 2;
/// Config-space capability: HALT and CLEAR act on the host subchannel
/// (otherwise the frontend has to emulate them).
pub const CAP_HALT_CLEAR: u32 = 1 << 3;

/// Errors decoding protocol messages.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The element is shorter than its layout requires.
    #[error("{what}: need {expected} bytes, got {actual}")]
    Length {
        /// Which message.
        what: &'static str,
        /// Bytes the layout needs.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// A type or status code this protocol version does not define.
    #[error("{what}: unknown code {code}")]
    UnknownCode {
        /// Which field.
        what: &'static str,
        /// The value found.
        code: u32,
    },
    /// A field that must be zero is not.
    #[error("{what}: reserved field is not zero")]
    Reserved {
        /// Which message.
        what: &'static str,
    },
    /// An embedded architected structure is malformed.
    #[error(transparent)]
    Arch(#[from] ArchError),
}

fn need(what: &'static str, bytes: &[u8], expected: usize) -> Result<(), WireError> {
    if bytes.len() < expected {
        return Err(WireError::Length {
            what,
            expected,
            actual: bytes.len(),
        });
    }
    Ok(())
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn le64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

fn le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// Subchannel function the guest issued (requestq element type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RequestType {
    /// START SUBCHANNEL: body carries ORB and SCSW.
    Start = 1,
    /// HALT SUBCHANNEL.
    Halt = 2,
    /// CLEAR SUBCHANNEL.
    Clear = 3,
    /// STORE SUBCHANNEL: the response carries the current SCHIB.
    Store = 4,
}

impl TryFrom<u32> for RequestType {
    type Error = WireError;
    fn try_from(code: u32) -> Result<Self, WireError> {
        Ok(match code {
            1 => Self::Start,
            2 => Self::Halt,
            3 => Self::Clear,
            4 => Self::Store,
            code => {
                return Err(WireError::UnknownCode {
                    what: "request type",
                    code,
                });
            }
        })
    }
}

/// A requestq element's device-readable part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Which function.
    pub kind: RequestType,
    /// Opaque frontend value, echoed in the event that ends this function.
    pub tag: u64,
    /// For START: the ORB exactly as the guest supplied it.
    pub orb: Orb,
    /// For START: the SCSW as the frontend holds it (function control must
    /// show start).
    pub scsw: Scsw,
}

impl Request {
    /// Bytes of the request header (type, flags, tag).
    pub const HEADER_SIZE: usize = 16;
    /// Bytes of a START request (header + ORB + SCSW).
    pub const START_SIZE: usize = Self::HEADER_SIZE + Orb::SIZE + Scsw::SIZE;

    /// A request without a body (HALT, CLEAR, STORE).
    pub fn new(kind: RequestType, tag: u64) -> Self {
        Self {
            kind,
            tag,
            orb: Orb::default(),
            scsw: Scsw::default(),
        }
    }

    /// A START request.
    pub fn start(tag: u64, orb: Orb, scsw: Scsw) -> Self {
        Self {
            kind: RequestType::Start,
            tag,
            orb,
            scsw,
        }
    }

    /// Encoded size of this request.
    pub fn size(&self) -> usize {
        match self.kind {
            RequestType::Start => Self::START_SIZE,
            _ => Self::HEADER_SIZE,
        }
    }

    /// Encode into the element's readable bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        out.extend_from_slice(&(self.kind as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.tag.to_le_bytes());
        if self.kind == RequestType::Start {
            out.extend_from_slice(&self.orb.encode());
            out.extend_from_slice(&self.scsw.encode());
        }
        out
    }

    /// Decode the readable bytes of a requestq element.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        need("request header", bytes, Self::HEADER_SIZE)?;
        let kind = RequestType::try_from(le32(bytes, 0))?;
        if le32(bytes, 4) != 0 {
            return Err(WireError::Reserved { what: "request" });
        }
        let tag = le64(bytes, 8);
        if kind != RequestType::Start {
            return Ok(Self::new(kind, tag));
        }
        need("START request", bytes, Self::START_SIZE)?;
        let orb = Orb::decode(&bytes[16..16 + Orb::SIZE])?;
        let scsw = Scsw::decode(&bytes[16 + Orb::SIZE..Self::START_SIZE])?;
        Ok(Self::start(tag, orb, scsw))
    }
}

/// How the backend completed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ResponseStatus {
    /// The instruction completed with the condition code in `cc`.
    Ok = 0,
    /// START only: the channel program cannot be run (untranslatable,
    /// unsupported, or outside guest RAM; `error` says why). The frontend
    /// presents a unit-exception interruption and condition code 0, as QEMU
    /// does for vfio-ccw.
    UnitException = 1,
    /// The element itself was malformed; nothing happened.
    BadRequest = 2,
    /// The backend failed; the subchannel takes no more I/O in this session.
    /// The frontend presents the subchannel as not operational.
    Broken = 3,
    /// The frontend did not negotiate `VIRTIO_CCW_F_PROTOCOL_V1`.
    Unsupported = 4,
}

impl TryFrom<u32> for ResponseStatus {
    type Error = WireError;
    fn try_from(code: u32) -> Result<Self, WireError> {
        Ok(match code {
            0 => Self::Ok,
            1 => Self::UnitException,
            2 => Self::BadRequest,
            3 => Self::Broken,
            4 => Self::Unsupported,
            code => {
                return Err(WireError::UnknownCode {
                    what: "response status",
                    code,
                });
            }
        })
    }
}

/// A requestq element's device-writable part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Outcome class.
    pub status: ResponseStatus,
    /// Condition code for the guest instruction (valid with `Ok`).
    pub cc: u8,
    /// Detail code: a [`ProgramErrorCode`] for `UnitException`, otherwise 0
    /// or an implementation-defined diagnostic.
    pub error: u32,
    /// The current SCHIB (STORE with cc 0; zero otherwise).
    pub schib: Schib,
}

impl Response {
    /// Bytes of a response.
    pub const SIZE: usize = 16 + Schib::SIZE + 4;

    /// A plain condition-code response.
    pub fn cc(cc: u8) -> Self {
        Self {
            status: ResponseStatus::Ok,
            cc,
            error: 0,
            schib: Schib::default(),
        }
    }

    /// A response with a status other than `Ok`.
    pub fn status(status: ResponseStatus, error: u32) -> Self {
        Self {
            status,
            cc: 0,
            error,
            schib: Schib::default(),
        }
    }

    /// Encode into the element's writable bytes.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..4].copy_from_slice(&(self.status as u32).to_le_bytes());
        out[4] = self.cc;
        out[8..12].copy_from_slice(&self.error.to_le_bytes());
        out[16..16 + Schib::SIZE].copy_from_slice(&self.schib.encode());
        out
    }

    /// Decode the writable bytes the backend filled.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        need("response", bytes, Self::SIZE)?;
        let status = ResponseStatus::try_from(le32(bytes, 0))?;
        if bytes[4] > 3 {
            return Err(WireError::UnknownCode {
                what: "condition code",
                code: u32::from(bytes[4]),
            });
        }
        Ok(Self {
            status,
            cc: bytes[4],
            error: le32(bytes, 8),
            schib: Schib::decode(&bytes[16..16 + Schib::SIZE])?,
        })
    }
}

/// Why a START was answered with [`ResponseStatus::UnitException`]. The
/// numeric values are part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ProgramErrorCode {
    /// A CCW, IDAW or data area lies outside guest RAM (or in the control
    /// window).
    AddressOutOfRange = 1,
    /// The ORB or a CCW uses a facility the backend does not implement
    /// (transport mode, suspend, MIDAW, …).
    Unsupported = 2,
    /// The program exceeds a translator limit (CCWs per segment, segments,
    /// data bytes, IDAWs per CCW).
    TooLarge = 3,
    /// The program is architecturally invalid (bad alignment, TIC to TIC,
    /// invalid command code, zero count where not allowed, …).
    Invalid = 4,
    /// The request's SCSW does not show the start function.
    BadFunction = 5,
}

impl TryFrom<u32> for ProgramErrorCode {
    type Error = WireError;
    fn try_from(code: u32) -> Result<Self, WireError> {
        Ok(match code {
            1 => Self::AddressOutOfRange,
            2 => Self::Unsupported,
            3 => Self::TooLarge,
            4 => Self::Invalid,
            5 => Self::BadFunction,
            code => {
                return Err(WireError::UnknownCode {
                    what: "program error",
                    code,
                });
            }
        })
    }
}

/// What an eventq element carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An I/O interruption: the full IRB. `tag` is the tag of the request
    /// whose function this interruption reports, 0 when unsolicited.
    Interrupt {
        /// Tag of the START/HALT/CLEAR this interruption belongs to.
        tag: u64,
        /// The interruption-response block the guest's TSCH stores.
        irb: Irb,
    },
    /// A channel report for the guest's STORE CHANNEL REPORT WORD.
    ChannelReport(Crw),
    /// The device is gone; the subchannel is not operational.
    DeviceGone,
}

impl Event {
    /// Bytes of an eventq element (header + the largest payload, the IRB).
    pub const SIZE: usize = 16 + Irb::SIZE;
    const TYPE_INTERRUPT: u32 = 1;
    const TYPE_CRW: u32 = 2;
    const TYPE_DEVICE_GONE: u32 = 3;

    /// Encode into a writable eventq buffer.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        let (kind, tag) = match self {
            Event::Interrupt { tag, irb } => {
                out[16..].copy_from_slice(&irb.encode());
                (Self::TYPE_INTERRUPT, *tag)
            }
            Event::ChannelReport(crw) => {
                out[16..16 + Crw::SIZE].copy_from_slice(&crw.encode());
                (Self::TYPE_CRW, 0)
            }
            Event::DeviceGone => (Self::TYPE_DEVICE_GONE, 0),
        };
        out[0..4].copy_from_slice(&kind.to_le_bytes());
        out[8..16].copy_from_slice(&tag.to_le_bytes());
        out
    }

    /// Decode an eventq buffer the backend filled.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        need("event", bytes, Self::SIZE)?;
        if le32(bytes, 4) != 0 {
            return Err(WireError::Reserved { what: "event" });
        }
        let tag = le64(bytes, 8);
        match le32(bytes, 0) {
            Self::TYPE_INTERRUPT => Ok(Event::Interrupt {
                tag,
                irb: Irb::decode(&bytes[16..])?,
            }),
            Self::TYPE_CRW => Ok(Event::ChannelReport(Crw::decode(
                &bytes[16..16 + Crw::SIZE],
            )?)),
            Self::TYPE_DEVICE_GONE => Ok(Event::DeviceGone),
            code => Err(WireError::UnknownCode {
                what: "event type",
                code,
            }),
        }
    }
}

/// The device config space, read with GET_CONFIG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpace {
    /// Layout version, [`PROTOCOL_VERSION`].
    pub version: u16,
    /// Channel-subsystem id of the host subchannel.
    pub cssid: u8,
    /// Subchannel-set id.
    pub ssid: u8,
    /// Subchannel number.
    pub schno: u16,
    /// Device number.
    pub devno: u16,
    /// `CAP_*` bits.
    pub capabilities: u32,
    /// The host SCHIB at open time: path masks, CHPIDs, device number.
    pub schib: Schib,
    /// Channel-path types of the eight CHPIDs.
    pub chpid_type: [u8; 8],
    /// SENSE ID data of the device.
    pub sense_id: SenseId,
}

impl ConfigSpace {
    /// Bytes of the config space.
    pub const SIZE: usize = 120;
    const SCHIB_AT: usize = 16;
    const CHPID_TYPE_AT: usize = Self::SCHIB_AT + Schib::SIZE;
    const SENSE_ID_LEN_AT: usize = Self::CHPID_TYPE_AT + 8;
    const SENSE_ID_AT: usize = Self::SENSE_ID_LEN_AT + 4;

    /// Encode the whole config space.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..2].copy_from_slice(&self.version.to_le_bytes());
        out[2] = self.cssid;
        out[3] = self.ssid;
        out[4..6].copy_from_slice(&self.schno.to_le_bytes());
        out[6..8].copy_from_slice(&self.devno.to_le_bytes());
        out[8..12].copy_from_slice(&self.capabilities.to_le_bytes());
        out[Self::SCHIB_AT..Self::CHPID_TYPE_AT].copy_from_slice(&self.schib.encode());
        out[Self::CHPID_TYPE_AT..Self::SENSE_ID_LEN_AT].copy_from_slice(&self.chpid_type);
        let sense_id = self.sense_id.encode();
        let len = sense_id.len().min(SenseId::MAX_SIZE);
        out[Self::SENSE_ID_LEN_AT] = u8::try_from(len).unwrap_or(u8::MAX);
        out[Self::SENSE_ID_AT..Self::SENSE_ID_AT + len].copy_from_slice(&sense_id[..len]);
        out
    }

    /// Decode a config space read from the backend.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        need("config space", bytes, Self::SIZE)?;
        let sense_id_len = usize::from(bytes[Self::SENSE_ID_LEN_AT]);
        if sense_id_len > SenseId::MAX_SIZE {
            return Err(WireError::Length {
                what: "config SENSE ID data",
                expected: SenseId::MAX_SIZE,
                actual: sense_id_len,
            });
        }
        let mut chpid_type = [0u8; 8];
        chpid_type.copy_from_slice(&bytes[Self::CHPID_TYPE_AT..Self::SENSE_ID_LEN_AT]);
        Ok(Self {
            version: le16(bytes, 0),
            cssid: bytes[2],
            ssid: bytes[3],
            schno: le16(bytes, 4),
            devno: le16(bytes, 6),
            capabilities: le32(bytes, 8),
            schib: Schib::decode(&bytes[Self::SCHIB_AT..Self::CHPID_TYPE_AT])?,
            chpid_type,
            sense_id: SenseId::decode(&bytes[Self::SENSE_ID_AT..Self::SENSE_ID_AT + sense_id_len])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{DeviceStatus, FunctionControl, StatusControl};

    fn sample_orb() -> Orb {
        Orb {
            intparm: 0xdead_beef,
            format1: true,
            prefetch: true,
            lpm: 0x80,
            cpa: 0x1000,
            ..Orb::default()
        }
    }

    #[test]
    fn start_request_layout() {
        let scsw = Scsw {
            function_control: FunctionControl::START,
            ..Scsw::default()
        };
        let req = Request::start(7, sample_orb(), scsw);
        let bytes = req.encode();
        assert_eq!(bytes.len(), 40);
        assert_eq!(&bytes[0..4], &[1, 0, 0, 0]);
        assert_eq!(&bytes[8..16], &[7, 0, 0, 0, 0, 0, 0, 0]);
        // ORB word 0 (intparm) big-endian, then ORB word 2 (CPA).
        assert_eq!(&bytes[16..20], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&bytes[24..28], &[0, 0, 0x10, 0]);
        assert_eq!(Request::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn short_or_unknown_requests_are_rejected() {
        assert!(matches!(
            Request::decode(&[1, 0, 0]),
            Err(WireError::Length { .. })
        ));
        let mut bytes = Request::new(RequestType::Halt, 1).encode();
        assert_eq!(bytes.len(), 16);
        bytes[0] = 9;
        assert_eq!(
            Request::decode(&bytes),
            Err(WireError::UnknownCode {
                what: "request type",
                code: 9
            })
        );
        // A START header without its body.
        let mut start = Request::new(RequestType::Halt, 1).encode();
        start[0] = 1;
        assert!(matches!(
            Request::decode(&start),
            Err(WireError::Length { .. })
        ));
        let mut flags = Request::new(RequestType::Store, 1).encode();
        flags[5] = 1;
        assert_eq!(
            Request::decode(&flags),
            Err(WireError::Reserved { what: "request" })
        );
    }

    #[test]
    fn response_round_trip() {
        let mut resp = Response::cc(2);
        resp.schib.pmcw.devno = 0x1234;
        let bytes = resp.encode();
        assert_eq!(bytes.len(), 72);
        assert_eq!(bytes[4], 2);
        assert_eq!(Response::decode(&bytes).unwrap(), resp);
        let ue = Response::status(
            ResponseStatus::UnitException,
            ProgramErrorCode::AddressOutOfRange as u32,
        );
        let back = Response::decode(&ue.encode()).unwrap();
        assert_eq!(back.status, ResponseStatus::UnitException);
        assert_eq!(
            ProgramErrorCode::try_from(back.error).unwrap(),
            ProgramErrorCode::AddressOutOfRange
        );
        let mut bad = Response::cc(0).encode();
        bad[4] = 4;
        assert!(Response::decode(&bad).is_err());
    }

    #[test]
    fn event_round_trip() {
        let mut irb = Irb::default();
        irb.scsw.function_control = FunctionControl::START;
        irb.scsw.status_control =
            StatusControl::PRIMARY | StatusControl::SECONDARY | StatusControl::STATUS_PENDING;
        irb.scsw.device_status = DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END;
        irb.scsw.cpa = 0x1008;
        let ev = Event::Interrupt { tag: 42, irb };
        let bytes = ev.encode();
        assert_eq!(bytes.len(), 112);
        assert_eq!(&bytes[0..4], &[1, 0, 0, 0]);
        assert_eq!(bytes[16 + 8], 0x0c, "device status byte of the SCSW");
        assert_eq!(Event::decode(&bytes).unwrap(), ev);
        assert_eq!(
            Event::decode(&Event::DeviceGone.encode()).unwrap(),
            Event::DeviceGone
        );
        let crw = Crw::decode(&[0x03, 0x83, 0x00, 0x05]).unwrap();
        let ev = Event::ChannelReport(crw);
        assert_eq!(Event::decode(&ev.encode()).unwrap(), ev);
    }

    #[test]
    fn config_space_round_trip() {
        let sense_id = SenseId::decode(&[0xff, 0x39, 0x90, 0xe9, 0x33, 0x90, 0x0c, 0x00]).unwrap();
        let mut cfg = ConfigSpace {
            version: PROTOCOL_VERSION,
            cssid: 0xfe,
            ssid: 0,
            schno: 5,
            devno: 0x0190,
            capabilities: CAP_FORMAT0_CCW | CAP_HALT_CLEAR,
            schib: Schib::default(),
            chpid_type: [0x32, 0, 0, 0, 0, 0, 0, 0],
            sense_id,
        };
        cfg.schib.pmcw.pim = 0x80;
        cfg.schib.pmcw.chpid[0] = 0x42;
        let bytes = cfg.encode();
        assert_eq!(&bytes[0..8], &[1, 0, 0xfe, 0, 5, 0, 0x90, 0x01]);
        assert_eq!(bytes[ConfigSpace::SENSE_ID_LEN_AT], 8);
        assert_eq!(ConfigSpace::decode(&bytes).unwrap(), cfg);
    }
}
