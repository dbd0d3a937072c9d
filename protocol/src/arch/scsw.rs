//! The command-mode subchannel-status word (SCSW), the format-0
//! extended-status word (ESW) and the interruption-response block (IRB).

use super::ArchError;
use super::be::{
    array, field, field_mask, flag, low_u8, low_u16, put_field, put_flag, put_u32, put_u64, u32_at,
    u64_at,
};

flag_set! {
    /// Function control, FC: SCSW word 0 bits 17-19, positioned as in the
    /// second halfword of word 0.
    pub struct FunctionControl(u16);
    mask = 0x7000;
    /// Start function.
    const START = 0x4000;
    /// Halt function.
    const HALT = 0x2000;
    /// Clear function.
    const CLEAR = 0x1000;
}

flag_set! {
    /// Activity control, AC: SCSW word 0 bits 20-26, positioned as in the
    /// second halfword of word 0.
    pub struct ActivityControl(u16);
    mask = 0x0FE0;
    /// Resume pending.
    const RESUME_PENDING = 0x0800;
    /// Start pending.
    const START_PENDING = 0x0400;
    /// Halt pending.
    const HALT_PENDING = 0x0200;
    /// Clear pending.
    const CLEAR_PENDING = 0x0100;
    /// Subchannel active.
    const SUBCHANNEL_ACTIVE = 0x0080;
    /// Device active.
    const DEVICE_ACTIVE = 0x0040;
    /// Suspended.
    const SUSPENDED = 0x0020;
}

flag_set! {
    /// Status control, SC: SCSW word 0 bits 27-31, positioned as in the
    /// rightmost byte of word 0.
    pub struct StatusControl(u8);
    mask = 0x1F;
    /// Alert status.
    const ALERT = 0x10;
    /// Intermediate status.
    const INTERMEDIATE = 0x08;
    /// Primary status.
    const PRIMARY = 0x04;
    /// Secondary status.
    const SECONDARY = 0x02;
    /// Status pending.
    const STATUS_PENDING = 0x01;
}

flag_set! {
    /// Device status: SCSW word 2 bits 0-7, the unit status from the device.
    pub struct DeviceStatus(u8);
    mask = 0xFF;
    /// Attention.
    const ATTENTION = 0x80;
    /// Status modifier.
    const STATUS_MODIFIER = 0x40;
    /// Control-unit end.
    const CONTROL_UNIT_END = 0x20;
    /// Busy.
    const BUSY = 0x10;
    /// Channel end.
    const CHANNEL_END = 0x08;
    /// Device end.
    const DEVICE_END = 0x04;
    /// Unit check.
    const UNIT_CHECK = 0x02;
    /// Unit exception.
    const UNIT_EXCEPTION = 0x01;
}

flag_set! {
    /// Subchannel status: SCSW word 2 bits 8-15.
    pub struct SubchannelStatus(u8);
    mask = 0xFF;
    /// Program-controlled interruption.
    const PROGRAM_CONTROLLED_INTERRUPTION = 0x80;
    /// Incorrect length.
    const INCORRECT_LENGTH = 0x40;
    /// Program check.
    const PROGRAM_CHECK = 0x20;
    /// Protection check.
    const PROTECTION_CHECK = 0x10;
    /// Channel-data check.
    const CHANNEL_DATA_CHECK = 0x08;
    /// Channel-control check.
    const CHANNEL_CONTROL_CHECK = 0x04;
    /// Interface-control check.
    const INTERFACE_CONTROL_CHECK = 0x02;
    /// Chaining check.
    const CHAINING_CHECK = 0x01;
}

/// Command-mode subchannel-status word.
///
/// Word 0 bit 16 is not defined for command mode; it is ignored on decode
/// and stored as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scsw {
    /// Subchannel key (word 0 bits 0-3).
    pub key: u8,
    /// Suspend control, S (word 0 bit 4).
    pub suspend_control: bool,
    /// ESW format, L (word 0 bit 5): a format-0 ESW is stored.
    pub esw_format: bool,
    /// Deferred condition code, CC (word 0 bits 6-7), 0 to 3.
    pub deferred_cc: u8,
    /// CCW-format, F (word 0 bit 8): format-1 CCWs.
    pub format1: bool,
    /// Prefetch, P (word 0 bit 9).
    pub prefetch: bool,
    /// Initial-status-interruption control, I (word 0 bit 10).
    pub initial_status_interruption: bool,
    /// Address-limit-checking control, A (word 0 bit 11).
    pub address_limit_checking: bool,
    /// Suppress-suspended interruption, U (word 0 bit 12).
    pub suppress_suspended_interruption: bool,
    /// Zero condition code, Z (word 0 bit 13).
    pub zero_condition_code: bool,
    /// Extended control, E (word 0 bit 14): model-dependent or sense data is
    /// stored in the ECW.
    pub extended_control: bool,
    /// Path not operational, N (word 0 bit 15).
    pub path_not_operational: bool,
    /// Function control, FC (word 0 bits 17-19).
    pub function_control: FunctionControl,
    /// Activity control, AC (word 0 bits 20-26).
    pub activity_control: ActivityControl,
    /// Status control, SC (word 0 bits 27-31).
    pub status_control: StatusControl,
    /// CCW address (word 1).
    pub cpa: u32,
    /// Device status (word 2 bits 0-7).
    pub device_status: DeviceStatus,
    /// Subchannel status (word 2 bits 8-15).
    pub subchannel_status: SubchannelStatus,
    /// Residual count (word 2 bits 16-31).
    pub count: u16,
}

impl Scsw {
    /// Size in bytes.
    pub const SIZE: usize = 12;

    /// The SCSW as stored in memory.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let word0 = put_field(u32::from(self.key), 0, 4)
            | put_flag(self.suspend_control, 4)
            | put_flag(self.esw_format, 5)
            | put_field(u32::from(self.deferred_cc), 6, 2)
            | put_flag(self.format1, 8)
            | put_flag(self.prefetch, 9)
            | put_flag(self.initial_status_interruption, 10)
            | put_flag(self.address_limit_checking, 11)
            | put_flag(self.suppress_suspended_interruption, 12)
            | put_flag(self.zero_condition_code, 13)
            | put_flag(self.extended_control, 14)
            | put_flag(self.path_not_operational, 15)
            | u32::from(self.function_control.bits())
            | u32::from(self.activity_control.bits())
            | u32::from(self.status_control.bits());
        let word2 = put_field(u32::from(self.device_status.bits()), 0, 8)
            | put_field(u32::from(self.subchannel_status.bits()), 8, 8)
            | u32::from(self.count);
        let mut out = [0; Self::SIZE];
        put_u32(&mut out, 0, word0);
        put_u32(&mut out, 4, self.cpa);
        put_u32(&mut out, 8, word2);
        out
    }

    /// Decodes a command-mode SCSW (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length.
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let b = array::<{ Self::SIZE }>(bytes, "SCSW")?;
        let word0 = u32_at(b, 0);
        let word2 = u32_at(b, 8);
        let ctrl = low_u16(word0);
        Ok(Self {
            key: low_u8(field(word0, 0, 4)),
            suspend_control: flag(word0, 4),
            esw_format: flag(word0, 5),
            deferred_cc: low_u8(field(word0, 6, 2)),
            format1: flag(word0, 8),
            prefetch: flag(word0, 9),
            initial_status_interruption: flag(word0, 10),
            address_limit_checking: flag(word0, 11),
            suppress_suspended_interruption: flag(word0, 12),
            zero_condition_code: flag(word0, 13),
            extended_control: flag(word0, 14),
            path_not_operational: flag(word0, 15),
            function_control: FunctionControl::from_bits_truncate(ctrl),
            activity_control: ActivityControl::from_bits_truncate(ctrl),
            status_control: StatusControl::from_bits_truncate(low_u8(word0)),
            cpa: u32_at(b, 4),
            device_status: DeviceStatus::from_bits_truncate(low_u8(field(word2, 0, 8))),
            subchannel_status: SubchannelStatus::from_bits_truncate(low_u8(field(word2, 8, 8))),
            count: low_u16(word2),
        })
    }

    /// Whether the status is unsolicited: deferred condition code 0 and
    /// status control exactly alert + status pending (as Linux's
    /// `scsw_cmd_is_solicited` decides).
    #[must_use]
    pub fn is_unsolicited(&self) -> bool {
        self.deferred_cc == 0
            && self.status_control == StatusControl::ALERT | StatusControl::STATUS_PENDING
    }

    /// Whether the status is intermediate status only: intermediate status
    /// without primary, secondary or alert status.
    #[must_use]
    pub fn is_intermediate_only(&self) -> bool {
        let kinds = StatusControl::INTERMEDIATE
            | StatusControl::PRIMARY
            | StatusControl::SECONDARY
            | StatusControl::ALERT;
        self.status_control & kinds == StatusControl::INTERMEDIATE
    }

    /// Whether the status ends the subchannel's activity: status is pending,
    /// it is not intermediate status only, and neither subchannel-active nor
    /// device-active is set.
    #[must_use]
    pub fn is_final(&self) -> bool {
        self.status_control.contains(StatusControl::STATUS_PENDING)
            && !self.is_intermediate_only()
            && !self
                .activity_control
                .intersects(ActivityControl::SUBCHANNEL_ACTIVE | ActivityControl::DEVICE_ACTIVE)
    }
}

/// Subchannel logout: word 0 of a format-0 ESW, kept as stored.
///
/// Format-1 to format-3 ESWs hold only the last-path-used mask in this word
/// (byte 1), so [`SubchannelLogout::lpum`] is meaningful for every format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubchannelLogout(pub u32);

impl SubchannelLogout {
    /// A logout holding only a last-path-used mask, as stored for format-1
    /// ESWs and by QEMU for virtual subchannels (`0x00800000` for LPUM 0x80).
    #[must_use]
    pub const fn from_lpum(lpum: u8) -> Self {
        Self(u32::from_be_bytes([0, lpum, 0, 0]))
    }

    /// Extended-status flags, ESF (bits 1-7).
    #[must_use]
    pub const fn extended_status_flags(self) -> u8 {
        low_u8(field(self.0, 1, 7))
    }

    /// Last-path-used mask, LPUM (bits 8-15).
    #[must_use]
    pub const fn lpum(self) -> u8 {
        low_u8(field(self.0, 8, 8))
    }

    /// Ancillary report, A (bit 16).
    #[must_use]
    pub const fn ancillary_report(self) -> bool {
        flag(self.0, 16)
    }

    /// Field-validity flags, FVF (bits 17-21).
    #[must_use]
    pub const fn field_validity_flags(self) -> u8 {
        low_u8(field(self.0, 17, 5))
    }

    /// Storage-access code, SA (bits 22-23).
    #[must_use]
    pub const fn storage_access_code(self) -> u8 {
        low_u8(field(self.0, 22, 2))
    }

    /// Termination code, TC (bits 24-25).
    #[must_use]
    pub const fn termination_code(self) -> u8 {
        low_u8(field(self.0, 24, 2))
    }

    /// Device-status check, D (bit 26).
    #[must_use]
    pub const fn device_status_check(self) -> bool {
        flag(self.0, 26)
    }

    /// Secondary error, E (bit 27).
    #[must_use]
    pub const fn secondary_error(self) -> bool {
        flag(self.0, 27)
    }

    /// I/O-error alert, A (bit 28).
    #[must_use]
    pub const fn io_error_alert(self) -> bool {
        flag(self.0, 28)
    }

    /// Sequence code, SC (bits 29-31).
    #[must_use]
    pub const fn sequence_code(self) -> u8 {
        low_u8(field(self.0, 29, 3))
    }
}

/// Extended-report word: word 1 of every ESW format.
///
/// Bit 0 and bits 16-31 are reserved and must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Erw {
    /// Request logging only, L (bit 1).
    pub request_logging: bool,
    /// Extended-subchannel-logout pending, E (bit 2).
    pub extended_logout_pending: bool,
    /// Authorization check, A (bit 3).
    pub authorization_check: bool,
    /// Path-verification required, P (bit 4).
    pub path_verification_required: bool,
    /// Channel-path timeout, T (bit 5).
    pub channel_path_timeout: bool,
    /// Failing-storage-address validity, F (bit 6).
    pub failing_storage_address_valid: bool,
    /// Concurrent sense, S (bit 7): the ECW holds sense data.
    pub concurrent_sense: bool,
    /// Secondary-CCW-address validity, C (bit 8).
    pub secondary_ccw_address_valid: bool,
    /// Failing-storage-address format, R (bit 9): the failing-storage
    /// address is a 64-bit address.
    pub failing_storage_address_format: bool,
    /// Sense count, SCNT (bits 10-15): number of sense bytes in the ECW when
    /// `concurrent_sense` is set.
    pub sense_count: u8,
}

/// ERW bit 0 and bits 16-31.
const ERW_RESERVED: u32 = 0x8000_FFFF;

impl Erw {
    /// Size in bytes.
    pub const SIZE: usize = 4;

    fn to_word(self) -> u32 {
        put_flag(self.request_logging, 1)
            | put_flag(self.extended_logout_pending, 2)
            | put_flag(self.authorization_check, 3)
            | put_flag(self.path_verification_required, 4)
            | put_flag(self.channel_path_timeout, 5)
            | put_flag(self.failing_storage_address_valid, 6)
            | put_flag(self.concurrent_sense, 7)
            | put_flag(self.secondary_ccw_address_valid, 8)
            | put_flag(self.failing_storage_address_format, 9)
            | put_field(u32::from(self.sense_count), 10, 6)
    }

    fn from_word(word: u32) -> Result<Self, ArchError> {
        if word & ERW_RESERVED != 0 {
            return Err(ArchError::Reserved {
                what: "ERW",
                field: if word & field_mask(0, 1) != 0 {
                    "bit 0"
                } else {
                    "bits 16-31"
                },
            });
        }
        Ok(Self {
            request_logging: flag(word, 1),
            extended_logout_pending: flag(word, 2),
            authorization_check: flag(word, 3),
            path_verification_required: flag(word, 4),
            channel_path_timeout: flag(word, 5),
            failing_storage_address_valid: flag(word, 6),
            concurrent_sense: flag(word, 7),
            secondary_ccw_address_valid: flag(word, 8),
            failing_storage_address_format: flag(word, 9),
            sense_count: low_u8(field(word, 10, 6)),
        })
    }

    /// The ERW as stored in memory.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        self.to_word().to_be_bytes()
    }

    /// Decodes an ERW (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length, [`ArchError::Reserved`] if
    /// bit 0 or any of bits 16-31 is set.
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        Self::from_word(u32_at(array::<{ Self::SIZE }>(bytes, "ERW")?, 0))
    }
}

/// Format-0 extended-status word.
///
/// Format-1 to format-3 ESWs (SCSW `esw_format` clear) decode with the same
/// layout: their word 0 holds the LPUM in byte 1 (or the device-connect-time
/// interval in bytes 2-3 for format 2), words 2-4 are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Esw {
    /// Subchannel logout (word 0).
    pub subchannel_logout: SubchannelLogout,
    /// Extended-report word (word 1).
    pub erw: Erw,
    /// Failing-storage address (words 2-3), valid when
    /// `erw.failing_storage_address_valid`; a 64-bit address when
    /// `erw.failing_storage_address_format`, else a 31-bit address in word 2.
    pub failing_storage_address: u64,
    /// Secondary-CCW address (word 4), valid when
    /// `erw.secondary_ccw_address_valid`.
    pub secondary_ccw_address: u32,
}

impl Esw {
    /// Size in bytes.
    pub const SIZE: usize = 20;

    /// The ESW as stored in memory.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        put_u32(&mut out, 0, self.subchannel_logout.0);
        put_u32(&mut out, 4, self.erw.to_word());
        put_u64(&mut out, 8, self.failing_storage_address);
        put_u32(&mut out, 16, self.secondary_ccw_address);
        out
    }

    /// Decodes an ESW (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length, and the errors of
    /// [`Erw::decode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let b = array::<{ Self::SIZE }>(bytes, "ESW")?;
        Ok(Self {
            subchannel_logout: SubchannelLogout(u32_at(b, 0)),
            erw: Erw::from_word(u32_at(b, 4))?,
            failing_storage_address: u64_at(b, 8),
            secondary_ccw_address: u32_at(b, 16),
        })
    }
}

/// Interruption-response block, as stored by TEST SUBCHANNEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Irb {
    /// Subchannel-status word (bytes 0-11).
    pub scsw: Scsw,
    /// Extended-status word (bytes 12-31).
    pub esw: Esw,
    /// Extended-control word (bytes 32-63): sense data when
    /// `esw.erw.concurrent_sense`, else model-dependent data when
    /// `scsw.extended_control`.
    pub ecw: [u8; 32],
    /// Extended-measurement word (bytes 64-95).
    pub emw: [u8; 32],
}

impl Irb {
    /// Size in bytes.
    pub const SIZE: usize = 96;

    /// The IRB as stored in memory.
    #[must_use]
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        out[0..12].copy_from_slice(&self.scsw.encode());
        out[12..32].copy_from_slice(&self.esw.encode());
        out[32..64].copy_from_slice(&self.ecw);
        out[64..96].copy_from_slice(&self.emw);
        out
    }

    /// Decodes an IRB (exactly [`Self::SIZE`] bytes).
    ///
    /// # Errors
    ///
    /// [`ArchError::Length`] for a wrong length, and the errors of
    /// [`Scsw::decode`] and [`Esw::decode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, ArchError> {
        let b = array::<{ Self::SIZE }>(bytes, "IRB")?;
        let mut ecw = [0; 32];
        ecw.copy_from_slice(&b[32..64]);
        let mut emw = [0; 32];
        emw.copy_from_slice(&b[64..96]);
        Ok(Self {
            scsw: Scsw::decode(&b[0..12])?,
            esw: Esw::decode(&b[12..32])?,
            ecw,
            emw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A field setter and the bytes it must produce.
    type Case<T, B> = (fn(&mut T), B);

    /// SCSW of a final interruption: key 0, L, F, CC 0, FC start, SC
    /// primary + secondary + status pending, CPA 0x1008, CE + DE, count 0.
    const FINAL_SCSW: [u8; 12] = [
        0x04, 0x80, 0x40, 0x07, 0x00, 0x00, 0x10, 0x08, 0x0C, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn scsw_known_bytes() {
        let scsw = Scsw::decode(&FINAL_SCSW).unwrap();
        assert_eq!(
            scsw,
            Scsw {
                esw_format: true,
                format1: true,
                function_control: FunctionControl::START,
                status_control: StatusControl::PRIMARY
                    | StatusControl::SECONDARY
                    | StatusControl::STATUS_PENDING,
                cpa: 0x1008,
                device_status: DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END,
                ..Scsw::default()
            }
        );
        assert_eq!(scsw.encode(), FINAL_SCSW);
        assert!(scsw.is_final());
        assert!(!scsw.is_unsolicited());
        assert!(!scsw.is_intermediate_only());
    }

    #[test]
    fn scsw_every_field_has_its_bits() {
        let cases: [Case<Scsw, [u8; 12]>; 23] = [
            (|s| s.key = 0xA, [0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            (
                |s| s.suspend_control = true,
                [0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.esw_format = true,
                [0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.deferred_cc = 3,
                [0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.format1 = true,
                [0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.prefetch = true,
                [0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.initial_status_interruption = true,
                [0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.address_limit_checking = true,
                [0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.suppress_suspended_interruption = true,
                [0, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.zero_condition_code = true,
                [0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.extended_control = true,
                [0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.path_not_operational = true,
                [0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.function_control = FunctionControl::all(),
                [0, 0, 0x70, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.activity_control = ActivityControl::RESUME_PENDING,
                [0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.activity_control = ActivityControl::CLEAR_PENDING,
                [0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.activity_control = ActivityControl::SUBCHANNEL_ACTIVE,
                [0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.activity_control = ActivityControl::SUSPENDED,
                [0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.status_control = StatusControl::ALERT,
                [0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.status_control = StatusControl::STATUS_PENDING,
                [0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                |s| s.cpa = 0x7FFF_FFF8,
                [0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xF8, 0, 0, 0, 0],
            ),
            (
                |s| s.device_status = DeviceStatus::UNIT_CHECK,
                [0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0, 0, 0],
            ),
            (
                |s| s.subchannel_status = SubchannelStatus::INCORRECT_LENGTH,
                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0],
            ),
            (
                |s| s.count = 0x1234,
                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34],
            ),
        ];
        for (set, bytes) in cases {
            let mut scsw = Scsw::default();
            set(&mut scsw);
            assert_eq!(scsw.encode(), bytes, "{scsw:?}");
            assert_eq!(Scsw::decode(&bytes), Ok(scsw));
        }
    }

    #[test]
    fn scsw_flag_constants() {
        assert_eq!(FunctionControl::START.bits(), 0x4000);
        assert_eq!(FunctionControl::HALT.bits(), 0x2000);
        assert_eq!(FunctionControl::CLEAR.bits(), 0x1000);
        assert_eq!(ActivityControl::START_PENDING.bits(), 0x0400);
        assert_eq!(ActivityControl::HALT_PENDING.bits(), 0x0200);
        assert_eq!(ActivityControl::DEVICE_ACTIVE.bits(), 0x0040);
        assert_eq!(StatusControl::INTERMEDIATE.bits(), 0x08);
        assert_eq!(StatusControl::PRIMARY.bits(), 0x04);
        assert_eq!(StatusControl::SECONDARY.bits(), 0x02);
        assert_eq!(DeviceStatus::ATTENTION.bits(), 0x80);
        assert_eq!(DeviceStatus::STATUS_MODIFIER.bits(), 0x40);
        assert_eq!(DeviceStatus::CONTROL_UNIT_END.bits(), 0x20);
        assert_eq!(DeviceStatus::BUSY.bits(), 0x10);
        assert_eq!(DeviceStatus::UNIT_EXCEPTION.bits(), 0x01);
        assert_eq!(
            SubchannelStatus::PROGRAM_CONTROLLED_INTERRUPTION.bits(),
            0x80
        );
        assert_eq!(SubchannelStatus::PROGRAM_CHECK.bits(), 0x20);
        assert_eq!(SubchannelStatus::PROTECTION_CHECK.bits(), 0x10);
        assert_eq!(SubchannelStatus::CHANNEL_DATA_CHECK.bits(), 0x08);
        assert_eq!(SubchannelStatus::CHANNEL_CONTROL_CHECK.bits(), 0x04);
        assert_eq!(SubchannelStatus::INTERFACE_CONTROL_CHECK.bits(), 0x02);
        assert_eq!(SubchannelStatus::CHAINING_CHECK.bits(), 0x01);
    }

    #[test]
    fn scsw_bit_16_is_ignored() {
        let mut bytes = FINAL_SCSW;
        bytes[2] |= 0x80;
        let scsw = Scsw::decode(&bytes).unwrap();
        assert_eq!(scsw.function_control, FunctionControl::START);
        assert_eq!(scsw.encode(), FINAL_SCSW);
    }

    #[test]
    fn scsw_narrow_fields_truncate() {
        let scsw = Scsw {
            key: 0x1F,
            deferred_cc: 0x06,
            ..Scsw::default()
        };
        assert_eq!(scsw.encode()[0], 0xF2);
    }

    #[test]
    fn scsw_classification() {
        let attention = Scsw {
            status_control: StatusControl::ALERT | StatusControl::STATUS_PENDING,
            device_status: DeviceStatus::ATTENTION,
            ..Scsw::default()
        };
        assert!(attention.is_unsolicited());
        assert!(attention.is_final());
        assert!(
            !Scsw {
                deferred_cc: 1,
                ..attention
            }
            .is_unsolicited()
        );
        assert!(
            !Scsw {
                status_control: StatusControl::ALERT
                    | StatusControl::PRIMARY
                    | StatusControl::STATUS_PENDING,
                ..attention
            }
            .is_unsolicited()
        );

        let pci = Scsw {
            function_control: FunctionControl::START,
            activity_control: ActivityControl::SUBCHANNEL_ACTIVE | ActivityControl::DEVICE_ACTIVE,
            status_control: StatusControl::INTERMEDIATE | StatusControl::STATUS_PENDING,
            subchannel_status: SubchannelStatus::PROGRAM_CONTROLLED_INTERRUPTION,
            ..Scsw::default()
        };
        assert!(pci.is_intermediate_only());
        assert!(!pci.is_final());
        assert!(!pci.is_unsolicited());

        let primary_only = Scsw {
            function_control: FunctionControl::START,
            activity_control: ActivityControl::DEVICE_ACTIVE,
            status_control: StatusControl::PRIMARY | StatusControl::STATUS_PENDING,
            ..Scsw::default()
        };
        assert!(!primary_only.is_intermediate_only());
        assert!(!primary_only.is_final());

        let not_pending = Scsw {
            status_control: StatusControl::PRIMARY | StatusControl::SECONDARY,
            ..Scsw::default()
        };
        assert!(!not_pending.is_final());
    }

    #[test]
    fn subchannel_logout_fields() {
        assert_eq!(SubchannelLogout::from_lpum(0x80).0, 0x0080_0000);
        assert_eq!(SubchannelLogout::from_lpum(0x80).lpum(), 0x80);
        // ESF 0x41, LPUM 0x20, A, FVF 0x1F, SA 2, TC 1, D, E, A, SC 5.
        let log = SubchannelLogout(0x4120_FE7D);
        assert_eq!(log.extended_status_flags(), 0x41);
        assert_eq!(log.lpum(), 0x20);
        assert!(log.ancillary_report());
        assert_eq!(log.field_validity_flags(), 0x1F);
        assert_eq!(log.storage_access_code(), 2);
        assert_eq!(log.termination_code(), 1);
        assert!(log.device_status_check());
        assert!(log.secondary_error());
        assert!(log.io_error_alert());
        assert_eq!(log.sequence_code(), 5);
        let zero = SubchannelLogout(0);
        assert!(!zero.ancillary_report() && !zero.device_status_check());
        assert!(!zero.secondary_error() && !zero.io_error_alert());
    }

    #[test]
    fn erw_every_field_has_its_bits() {
        let cases: [Case<Erw, u32>; 10] = [
            (|e| e.request_logging = true, 0x4000_0000),
            (|e| e.extended_logout_pending = true, 0x2000_0000),
            (|e| e.authorization_check = true, 0x1000_0000),
            (|e| e.path_verification_required = true, 0x0800_0000),
            (|e| e.channel_path_timeout = true, 0x0400_0000),
            (|e| e.failing_storage_address_valid = true, 0x0200_0000),
            (|e| e.concurrent_sense = true, 0x0100_0000),
            (|e| e.secondary_ccw_address_valid = true, 0x0080_0000),
            (|e| e.failing_storage_address_format = true, 0x0040_0000),
            (|e| e.sense_count = 0x3F, 0x003F_0000),
        ];
        for (set, word) in cases {
            let mut erw = Erw::default();
            set(&mut erw);
            assert_eq!(erw.encode(), word.to_be_bytes(), "{erw:?}");
            assert_eq!(Erw::decode(&word.to_be_bytes()), Ok(erw));
        }
    }

    #[test]
    fn erw_rejects_reserved_bits() {
        assert_eq!(
            Erw::decode(&[0x80, 0, 0, 0]),
            Err(ArchError::Reserved {
                what: "ERW",
                field: "bit 0"
            })
        );
        for bytes in [[0, 0, 0x80, 0], [0, 0, 0, 0x01], [0x01, 0x20, 0x20, 0x00]] {
            assert_eq!(
                Erw::decode(&bytes),
                Err(ArchError::Reserved {
                    what: "ERW",
                    field: "bits 16-31"
                })
            );
        }
        assert_eq!(
            Erw::decode(&[0; 3]),
            Err(ArchError::Length {
                what: "ERW",
                expected: 4,
                actual: 3
            })
        );
    }

    /// IRB of a unit check with 32 bytes of concurrent sense, as a virtual
    /// subchannel presents it.
    fn unit_check_irb_bytes() -> [u8; 96] {
        let mut b = [0u8; 96];
        // SCSW: L, F, E; FC start; SC alert+primary+secondary+pending;
        // CPA 0x2010; CE+DE+UC.
        b[..12].copy_from_slice(&[
            0x04, 0x82, 0x40, 0x17, 0x00, 0x00, 0x20, 0x10, 0x0E, 0x00, 0x00, 0x00,
        ]);
        // ESW: logout LPUM 0x80; ERW concurrent sense, count 32.
        b[12..20].copy_from_slice(&[0x00, 0x80, 0x00, 0x00, 0x01, 0x20, 0x00, 0x00]);
        // ECW: sense byte 0 command reject.
        b[32] = 0x80;
        b[95] = 0xEE;
        b
    }

    #[test]
    fn irb_known_bytes() {
        let bytes = unit_check_irb_bytes();
        let irb = Irb::decode(&bytes).unwrap();
        assert!(irb.scsw.esw_format && irb.scsw.format1 && irb.scsw.extended_control);
        assert_eq!(
            irb.scsw.status_control,
            StatusControl::ALERT
                | StatusControl::PRIMARY
                | StatusControl::SECONDARY
                | StatusControl::STATUS_PENDING
        );
        assert_eq!(irb.scsw.cpa, 0x2010);
        assert_eq!(
            irb.scsw.device_status,
            DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END | DeviceStatus::UNIT_CHECK
        );
        assert_eq!(
            irb.esw,
            Esw {
                subchannel_logout: SubchannelLogout::from_lpum(0x80),
                erw: Erw {
                    concurrent_sense: true,
                    sense_count: 32,
                    ..Erw::default()
                },
                failing_storage_address: 0,
                secondary_ccw_address: 0,
            }
        );
        assert_eq!(irb.ecw[0], 0x80);
        assert_eq!(irb.ecw[1..], [0; 31]);
        assert_eq!(irb.emw[31], 0xEE);
        assert_eq!(irb.encode(), bytes);
    }

    #[test]
    fn esw_known_bytes() {
        let bytes = [
            0x00, 0x40, 0x00, 0x00, // LPUM 0x40
            0x02, 0xC0, 0x00, 0x00, // F, C, R
            0x00, 0x00, 0x00, 0x01, 0x23, 0x45, 0x67, 0x88, // failing address
            0x00, 0x00, 0x30, 0x08, // secondary CCW address
        ];
        let esw = Esw::decode(&bytes).unwrap();
        assert_eq!(
            esw,
            Esw {
                subchannel_logout: SubchannelLogout(0x0040_0000),
                erw: Erw {
                    failing_storage_address_valid: true,
                    secondary_ccw_address_valid: true,
                    failing_storage_address_format: true,
                    ..Erw::default()
                },
                failing_storage_address: 0x0000_0001_2345_6788,
                secondary_ccw_address: 0x3008,
            }
        );
        assert_eq!(esw.encode(), bytes);
    }

    #[test]
    fn irb_and_esw_errors() {
        assert_eq!(
            Irb::decode(&[0; 95]),
            Err(ArchError::Length {
                what: "IRB",
                expected: 96,
                actual: 95
            })
        );
        assert_eq!(
            Esw::decode(&[0; 21]),
            Err(ArchError::Length {
                what: "ESW",
                expected: 20,
                actual: 21
            })
        );
        assert_eq!(
            Scsw::decode(&[0; 13]),
            Err(ArchError::Length {
                what: "SCSW",
                expected: 12,
                actual: 13
            })
        );
        let mut bytes = unit_check_irb_bytes();
        bytes[16] = 0x80;
        assert_eq!(
            Irb::decode(&bytes),
            Err(ArchError::Reserved {
                what: "ERW",
                field: "bit 0"
            })
        );
        let mut bytes = [0u8; 20];
        bytes[7] = 0x01;
        assert_eq!(
            Esw::decode(&bytes),
            Err(ArchError::Reserved {
                what: "ERW",
                field: "bits 16-31"
            })
        );
    }

    fn valid_irb_bytes() -> impl Strategy<Value = [u8; 96]> {
        (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, ecw, emw)| {
            let mut b = [0u8; 96];
            b[..32].copy_from_slice(&a);
            // SCSW word 0 bit 16 ignored; ERW bit 0 and bits 16-31 reserved.
            b[2] &= 0x7F;
            b[16] &= 0x7F;
            b[18] = 0;
            b[19] = 0;
            b[32..64].copy_from_slice(&ecw);
            b[64..].copy_from_slice(&emw);
            b
        })
    }

    proptest! {
        #[test]
        fn irb_round_trip(bytes in valid_irb_bytes()) {
            let irb = Irb::decode(&bytes).unwrap();
            prop_assert_eq!(irb.encode(), bytes);
            prop_assert_eq!(&irb.scsw.encode()[..], &bytes[..12]);
            prop_assert_eq!(&irb.esw.encode()[..], &bytes[12..32]);
            prop_assert_eq!(irb.scsw.count, u16::from_be_bytes([bytes[10], bytes[11]]));
            prop_assert_eq!(irb.scsw.status_control.bits(), bytes[3] & 0x1F);
            prop_assert_eq!(Irb::decode(&irb.encode()), Ok(irb));
        }
    }
}
