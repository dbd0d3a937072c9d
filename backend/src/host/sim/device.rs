//! Device models the simulated subchannel can front.
//!
//! A [`DeviceModel`] sees one command at a time with the channel's data area
//! for it (a data chain as one area), like a control unit on the other side
//! of the channel; chaining, incorrect-length rules and interruptions are
//! the subchannel's business. Like a real channel, the subchannel tells the
//! device whether a command opens a program and whether command chaining is
//! meant to go on ([`Chaining`]), and when the program ends
//! ([`DeviceModel::chain_ended`]): a DASD keeps its Define Extent / Locate
//! Record context for one chain. [`BufferDevice`] is a small sequential
//! device over an in-memory buffer; the 3390 DASD is in [`super::ckd`].

use vhost_user_ccw_protocol::arch::{Ciw, DeviceStatus, Sense, SenseId};

/// What the device answered to one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceResponse {
    /// Device status presented at the end of the command.
    pub status: DeviceStatus,
    /// How many bytes the device transferred or wanted to transfer. When it
    /// differs from the CCW count the channel indicates incorrect length
    /// (unless suppressed).
    pub length: usize,
}

impl DeviceResponse {
    /// Channel end and device end after `length` bytes.
    pub fn done(length: usize) -> Self {
        Self {
            status: DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END,
            length,
        }
    }

    /// Unit check: the command failed; sense data says why.
    pub fn unit_check() -> Self {
        Self {
            status: DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END | DeviceStatus::UNIT_CHECK,
            length: 0,
        }
    }
}

/// What the channel tells the device about a command's place in the chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chaining {
    /// The command is the first of its channel program.
    pub first: bool,
    /// The CCW asks for command chaining: the channel continues with the
    /// next command if this one ends with channel end and device end (and
    /// no incorrect length). A device that needs more commands (a Locate
    /// Record domain) can tell that the chain will end short.
    pub continues: bool,
}

/// The answer of [`DeviceModel::read_in_place`].
#[derive(Debug)]
pub enum InPlace<'a> {
    /// Not answered in place: nothing happened.
    No,
    /// Executed: the response (its length is the sum of the fields' lengths
    /// or less) and the bytes, field after field.
    Done(DeviceResponse, [&'a [u8]; 3]),
}

/// The answer of [`DeviceModel::write_in_place`].
#[derive(Debug)]
pub enum OutPlace<'a> {
    /// Not taken in place: nothing happened.
    No,
    /// Executed: the channel stores the bytes it offers into the fields,
    /// one after the other (zeros where it offers fewer), and the command
    /// ends with the response. The device has acted already: if the
    /// channel cannot take the guest's data (a channel data check), the
    /// fields keep what was stored up to there, the rest zeros, as a real
    /// device that received part of a record.
    Into(DeviceResponse, [&'a mut [u8]; 2]),
}

/// A device behind a simulated subchannel.
pub trait DeviceModel: Send {
    /// SENSE ID data.
    fn sense_id(&self) -> SenseId;
    /// Execute one command. `data` holds the bytes the channel offers for
    /// an output command, or receives the bytes of an input command (its
    /// length is the CCW count, summed over a data chain).
    fn execute(&mut self, cmd: u8, data: &mut [u8], chaining: Chaining) -> DeviceResponse;
    /// The channel program ended: after its last command, after an error,
    /// or because it was halted. A device that finishes work at the end of
    /// a chain (flushing writes) does it here; the status it returns (unit
    /// check, with sense set, when that failed) is added to the final
    /// status of a program that ended on its own.
    fn chain_ended(&mut self) -> DeviceStatus {
        DeviceStatus::empty()
    }
    /// Execute an input command of `len` bytes whose answer the device
    /// holds in memory, handing out the bytes in place (up to three
    /// consecutive fields, such as a record's key and data) for the channel
    /// to store: one copy less on the read path. [`InPlace::No`] (the
    /// default) means that the command has not been executed and goes to
    /// [`DeviceModel::execute`].
    fn read_in_place(&mut self, _cmd: u8, _len: usize, _chaining: Chaining) -> InPlace<'_> {
        InPlace::No
    }
    /// Execute an output command of `len` bytes whose data the device
    /// stores in memory it holds, handing out that memory (up to two
    /// consecutive fields, such as a record's key and data) for the channel
    /// to fill: one copy less on the write path. [`OutPlace::No`] (the
    /// default) means that the command has not been executed and goes to
    /// [`DeviceModel::execute`].
    fn write_in_place(&mut self, _cmd: u8, _len: usize, _chaining: Chaining) -> OutPlace<'_> {
        OutPlace::No
    }
    /// Selective reset (CLEAR SUBCHANNEL): drop contingent state.
    fn reset(&mut self);
    /// Sense data describing the last unit check.
    fn sense(&self) -> Sense;
}

/// SENSE ID (0xE4).
pub const CMD_SENSE_ID: u8 = 0xe4;
/// SENSE (0x04).
pub const CMD_SENSE: u8 = 0x04;
/// NO OPERATION (0x03).
pub const CMD_NOP: u8 = 0x03;
/// WRITE (0x01): store bytes at the current position, which advances.
pub const CMD_WRITE: u8 = 0x01;
/// READ (0x02): fetch bytes from the current position, which advances.
pub const CMD_READ: u8 = 0x02;
/// SEEK (0x07): 4-byte big-endian position operand.
pub const CMD_SEEK: u8 = 0x07;

/// Control-unit type the buffer device reports (a private identity: no real
/// driver binds to it by accident).
pub const BUFFER_CU_TYPE: u16 = 0x5000;
/// Device type the buffer device reports.
pub const BUFFER_DEV_TYPE: u16 = 0x5001;

/// A sequential device over an in-memory buffer: READ and WRITE move bytes
/// at a position that SEEK sets; reads and writes stop at the end of the
/// buffer (the channel then sees fewer bytes than it asked for).
#[derive(Debug)]
pub struct BufferDevice {
    data: Vec<u8>,
    position: usize,
    sense: Sense,
}

impl BufferDevice {
    /// A device holding `size` zero bytes.
    pub fn new(size: usize) -> Self {
        Self {
            data: vec![0; size],
            position: 0,
            sense: Sense::default(),
        }
    }

    /// The buffer's bytes (tests compare two devices with it).
    pub fn contents(&self) -> &[u8] {
        &self.data
    }

    fn reject(&mut self) -> DeviceResponse {
        self.sense = Sense::default();
        self.sense.0[0] = Sense::COMMAND_REJECT;
        DeviceResponse::unit_check()
    }
}

impl DeviceModel for BufferDevice {
    fn sense_id(&self) -> SenseId {
        SenseId {
            cu_type: BUFFER_CU_TYPE,
            cu_model: 0x01,
            dev_type: BUFFER_DEV_TYPE,
            dev_model: 0x01,
            ciws: vec![Ciw {
                command_type: Ciw::TYPE_RCD,
                command: 0xfa,
                count: 0x80,
            }],
        }
    }

    fn execute(&mut self, cmd: u8, data: &mut [u8], _chaining: Chaining) -> DeviceResponse {
        match cmd {
            CMD_NOP => DeviceResponse::done(0),
            CMD_SENSE_ID => {
                let bytes = self.sense_id().encode();
                let n = bytes.len().min(data.len());
                data[..n].copy_from_slice(&bytes[..n]);
                DeviceResponse::done(bytes.len())
            }
            CMD_SENSE => {
                let bytes = self.sense.encode();
                let n = bytes.len().min(data.len());
                data[..n].copy_from_slice(&bytes[..n]);
                self.sense = Sense::default();
                DeviceResponse::done(bytes.len())
            }
            CMD_SEEK => {
                let Some(operand) = data.get(..4) else {
                    return self.reject();
                };
                let position = u32::from_be_bytes([operand[0], operand[1], operand[2], operand[3]]);
                match usize::try_from(position) {
                    Ok(position) if position <= self.data.len() => {
                        self.position = position;
                        DeviceResponse::done(4)
                    }
                    _ => self.reject(),
                }
            }
            CMD_READ => {
                let n = data.len().min(self.data.len() - self.position);
                data[..n].copy_from_slice(&self.data[self.position..self.position + n]);
                self.position += n;
                DeviceResponse::done(n)
            }
            CMD_WRITE => {
                let n = data.len().min(self.data.len() - self.position);
                self.data[self.position..self.position + n].copy_from_slice(&data[..n]);
                self.position += n;
                DeviceResponse::done(n)
            }
            _ => self.reject(),
        }
    }

    fn reset(&mut self) {
        self.sense = Sense::default();
    }

    fn sense(&self) -> Sense {
        self.sense
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sense_id_reports_the_private_identity() {
        let mut dev = BufferDevice::new(16);
        let mut buf = [0u8; 40];
        let resp = dev.execute(CMD_SENSE_ID, &mut buf, Chaining::default());
        assert_eq!(resp.length, 12, "7 bytes + reserved byte + one CIW");
        assert_eq!(&buf[..7], &[0xff, 0x50, 0x00, 0x01, 0x50, 0x01, 0x01]);
        assert_eq!(&buf[8..12], &[0x40, 0xfa, 0x00, 0x80]);
    }

    #[test]
    fn reads_and_writes_stop_at_the_end_of_the_buffer() {
        let mut dev = BufferDevice::new(8);
        let resp = dev.execute(CMD_WRITE, &mut [1, 2, 3, 4, 5, 6], Chaining::default());
        assert_eq!(resp, DeviceResponse::done(6));
        let resp = dev.execute(CMD_WRITE, &mut [7, 8, 9, 10], Chaining::default());
        assert_eq!(resp.length, 2, "only two bytes fit");
        assert_eq!(
            dev.execute(CMD_SEEK, &mut [0, 0, 0, 4], Chaining::default()),
            DeviceResponse::done(4)
        );
        let mut buf = [0u8; 8];
        assert_eq!(
            dev.execute(CMD_READ, &mut buf, Chaining::default()).length,
            4
        );
        assert_eq!(&buf[..4], &[5, 6, 7, 8]);
    }

    #[test]
    fn unknown_command_is_rejected_with_sense() {
        let mut dev = BufferDevice::new(8);
        let resp = dev.execute(0x27, &mut [], Chaining::default());
        assert!(resp.status.contains(DeviceStatus::UNIT_CHECK));
        let mut sense = [0u8; 32];
        assert_eq!(
            dev.execute(CMD_SENSE, &mut sense, Chaining::default())
                .length,
            32
        );
        assert_eq!(sense[0], Sense::COMMAND_REJECT);
        dev.execute(CMD_SENSE, &mut sense, Chaining::default());
        assert_eq!(sense[0], 0, "sense is reset once read");
        assert!(
            dev.execute(CMD_SEEK, &mut [0, 0, 0, 9], Chaining::default())
                .status
                .contains(DeviceStatus::UNIT_CHECK)
        );
    }
}
