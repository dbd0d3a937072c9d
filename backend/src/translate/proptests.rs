//! The translator and the `sim` host against a second implementation of the
//! channel: a reference interpreter that runs a channel program straight out
//! of guest memory, fetching each CCW and each IDAW when it uses them, the
//! way the Principles of Operation describe it. It shares no code with the
//! translator or the sim: only the protocol crate's decoders and the device
//! model.
//!
//! Random valid programs must end identically in both worlds (CPA, residual
//! count, device and subchannel status), leave guest memory byte for byte the
//! same and the device buffer the same. Random invalid programs (addresses
//! outside RAM, invalid command codes, bad IDAWs, bad TICs, zero counts) must
//! in addition end in a channel-program check at the CCW at fault.
//!
//! Modelling choices of the reference, where POPs leaves room:
//!
//! * A device executes a command in one go over the data of the whole data
//!   chain (the device model's contract). A data-chained CCW is therefore
//!   fetched and checked before the device runs, but a program error in it
//!   counts only if the device consumed all the data before it: POPs fetches
//!   the next CCW once the count of the current one is exhausted.
//! * Storage errors (data address, IDAL, IDAW) are recognised for a whole CCW
//!   when the channel starts to use that CCW, before any of its bytes move.
//!   A strict channel would move the bytes that precede the bad address.
//! * A program check stores device status 0 and count 0.
//! * Incorrect length follows the device model: the device's byte count
//!   against the CCW count, NOP included.
//! * CCWs of a command that has no storage to move (zero count, NOP, input
//!   with SKIP) fetch no IDAW. The translator reads their IDAL all the same;
//!   generated programs always give them a valid one.
//!
//! Where the translator departs from POPs, the generator stays clear (data
//! chains repeat their command code and have counts; a SEARCH's next CCW is
//! its TIC back), and an ignored `known_discrepancy_*` test at the end holds
//! the minimal program.

use std::sync::{Arc, Mutex};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use vhost_user_ccw_protocol::arch::{
    Ccw, CcwFlags, DeviceStatus, Idaw1, Idaw2, Orb, Sense, SenseId, StatusControl, SubchannelStatus,
};

use super::{translate, translate_general_only};
use crate::host::sim::device::{
    BufferDevice, CMD_NOP, CMD_READ, CMD_SEEK, CMD_SENSE, CMD_SENSE_ID, CMD_WRITE, Chaining,
    DeviceModel, DeviceResponse,
};
use crate::host::sim::{SimConfig, SimSubchannel};
use crate::host::{HostCc, HostEvent, HostSubchannel};
use crate::memory::GuestRam;
use crate::memory::tests::ram;

/// Guest RAM of every case: 1 MiB.
const RAM_SIZE: u64 = 0x10_0000;
/// Where the first segment of CCWs goes (plus 8 x 0..64).
const SEG1: u64 = 0x1000;
/// Where a TIC's second segment goes (plus 8 x 0..64).
const SEG2: u64 = 0x2000;
/// Where the TICs of invalid programs point.
const SEG3: u64 = 0x3000;
/// Data areas lie in `[DATA_START, IDAL_START)`.
const DATA_START: u64 = 0x1_0000;
/// IDALs lie in `[IDAL_START, RAM_SIZE)`, packed from the end of RAM down.
const IDAL_START: u64 = RAM_SIZE - 0x1000;
/// A small window where data areas often overlap; it straddles a 2K
/// boundary that is not a 4K boundary.
const DENSE_START: u64 = DATA_START + 0x600;
/// Size of that window.
const DENSE: u64 = 0x400;
/// A data or IDAL address outside RAM that still fits a format-0 CCW.
const OUTSIDE_DATA: u64 = 0x00F0_0000;
/// A CCW address outside RAM.
const OUTSIDE_CCW: u64 = 0x0020_0000;
/// Size of the device buffer.
const DEV_SIZE: usize = 512;
/// The one extra command the test device has.
const CMD_SEARCH: u8 = 0x31;
/// Most commands the reference runs before it declares a runaway.
const STEP_LIMIT: usize = 100_000;
/// Most polls of the sim before it counts as hung.
const POLLS: usize = 64;

/// The SCSW fields a program's end is compared on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ending {
    cpa: u32,
    count: u16,
    device: DeviceStatus,
    subchannel: SubchannelStatus,
}

impl Ending {
    /// Channel-program check recognised at the CCW at `at`.
    fn program_check(at: u64) -> Self {
        Self {
            cpa: u32::try_from(at + 8).expect("31-bit CCW address"),
            count: 0,
            device: DeviceStatus::empty(),
            subchannel: SubchannelStatus::PROGRAM_CHECK,
        }
    }
}

/// The reference channel.
mod reference {
    use super::*;

    /// The address of the CCW at which a program check is recognised.
    type Check = u64;

    /// POPs command classes, from the low bits of the command code.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Class {
        Write,
        Read,
        Control,
        Sense,
    }

    fn class(cmd: u8) -> Option<Class> {
        match cmd & 0x0f {
            // Invalid, and TIC (handled at fetch).
            0x00 | 0x08 => None,
            0x04 => Some(Class::Sense),
            0x0c => unreachable!("read backward is never generated"),
            low => match low & 0x03 {
                0x01 => Some(Class::Write),
                0x02 => Some(Class::Read),
                _ => Some(Class::Control),
            },
        }
    }

    /// A CCW in use, with the storage it designates.
    struct Part {
        addr: u64,
        flags: CcwFlags,
        count: u16,
        /// `(address, length)` of the bytes it moves; empty when it moves none.
        area: Vec<(u64, usize)>,
    }

    /// How one command ended.
    enum Next {
        /// Command chaining goes on with the CCW at this address.
        Chain(u64),
        /// The program ended.
        End(Ending),
    }

    pub(super) struct Channel<'a> {
        ram: &'a GuestRam,
        device: &'a mut dyn DeviceModel,
        format1: bool,
        format2_idaw: bool,
        block: u64,
    }

    impl<'a> Channel<'a> {
        pub(super) fn new(orb: &Orb, ram: &'a GuestRam, device: &'a mut dyn DeviceModel) -> Self {
            // Format-1 IDAWs address 2K blocks; format-2 IDAWs 4K blocks,
            // unless the ORB's 2K-IDAW control asks for 2K.
            let block = if orb.format2_idaw && !orb.idaw_2k {
                4096
            } else {
                2048
            };
            Self {
                ram,
                device,
                format1: orb.format1,
                format2_idaw: orb.format2_idaw,
                block,
            }
        }

        /// Run the program at `cpa`; `None` if it does not end.
        pub(super) fn run(&mut self, cpa: u64) -> Option<Ending> {
            let mut next = cpa;
            for _ in 0..STEP_LIMIT {
                match self.command(next) {
                    Ok(Next::Chain(addr)) => next = addr,
                    Ok(Next::End(ending)) => return Some(ending),
                    Err(at) => return Some(Ending::program_check(at)),
                }
            }
            None
        }

        /// Fetch the CCW at `addr`, following one TIC.
        fn fetch(&self, mut addr: u64) -> Result<(u64, Ccw), Check> {
            let mut after_tic = false;
            loop {
                if addr % 8 != 0 {
                    return Err(addr);
                }
                let mut raw = [0u8; 8];
                self.ram.read(addr, &mut raw).map_err(|_| addr)?;
                let ccw = Ccw::decode(self.format1, &raw).map_err(|_| addr)?;
                if !ccw.is_tic(self.format1) {
                    return Ok((addr, ccw));
                }
                if after_tic {
                    // TIC to TIC.
                    return Err(addr);
                }
                after_tic = true;
                addr = u64::from(ccw.cda);
            }
        }

        /// The storage a CCW of a command of this direction moves, checked.
        /// The IDAWs are fetched one by one as the data reaches their block.
        fn area(
            &self,
            at: u64,
            ccw: &Ccw,
            input: bool,
            nop: bool,
        ) -> Result<Vec<(u64, usize)>, Check> {
            let skipped = input && ccw.flags.contains(CcwFlags::SKIP);
            if ccw.count == 0 || nop || skipped {
                return Ok(Vec::new());
            }
            let count = u64::from(ccw.count);
            let usize_of = |n: u64| usize::try_from(n).expect("small");
            if !ccw.flags.contains(CcwFlags::IDA) {
                let addr = u64::from(ccw.cda);
                let limit: u64 = if self.format1 { 1 << 31 } else { 1 << 24 };
                if addr + count > limit || self.ram.check(addr, count).is_err() {
                    return Err(at);
                }
                return Ok(vec![(addr, usize::from(ccw.count))]);
            }
            let idal = u64::from(ccw.cda);
            let width: u64 = if self.format2_idaw { 8 } else { 4 };
            if idal % width != 0 {
                return Err(at);
            }
            let mut pieces = Vec::new();
            let mut done = 0u64;
            let mut index = 0u64;
            while done < count {
                let mut raw = [0u8; 8];
                let raw = &mut raw[..usize_of(width)];
                self.ram.read(idal + index * width, raw).map_err(|_| at)?;
                let data = if self.format2_idaw {
                    Idaw2::decode(raw).map_err(|_| at)?.0
                } else {
                    // Bit 0 of a format-1 IDAW must be zero.
                    u64::from(Idaw1::decode(raw).map_err(|_| at)?.0)
                };
                if index > 0 && data % self.block != 0 {
                    return Err(at);
                }
                let len = (count - done).min(self.block - data % self.block);
                if data.checked_add(len).is_none() || self.ram.check(data, len).is_err() {
                    return Err(at);
                }
                pieces.push((data, usize_of(len)));
                done += len;
                index += 1;
            }
            Ok(pieces)
        }

        /// Execute the command whose CCW is at `addr`, with its data chain.
        fn command(&mut self, addr: u64) -> Result<Next, Check> {
            let (head_addr, head) = self.fetch(addr)?;
            let class = class(head.cmd).ok_or(head_addr)?;
            let input = matches!(class, Class::Read | Class::Sense);
            let nop = head.cmd == CMD_NOP;
            // Format 0 forbids a zero count; format 1 forbids it with CD.
            if head.count == 0 && (!self.format1 || head.flags.contains(CcwFlags::CD)) {
                return Err(head_addr);
            }
            let area = self.area(head_addr, &head, input, nop)?;
            let mut parts = vec![Part {
                addr: head_addr,
                flags: head.flags,
                count: head.count,
                area,
            }];
            // Data chaining: each new CCW designates more storage for the
            // same command; its command code is ignored (TIC aside), a zero
            // count is a program error.
            let mut broken = None;
            while let Some(last) = parts.last().filter(|p| p.flags.contains(CcwFlags::CD)) {
                let next = self.fetch(last.addr + 8).and_then(|(at, ccw)| {
                    if ccw.count == 0 {
                        return Err(at);
                    }
                    Ok(Part {
                        addr: at,
                        flags: ccw.flags,
                        count: ccw.count,
                        area: self.area(at, &ccw, input, nop)?,
                    })
                });
                match next {
                    Ok(part) => parts.push(part),
                    Err(at) => {
                        broken = Some(at);
                        break;
                    }
                }
            }

            let total: usize = parts.iter().map(|p| usize::from(p.count)).sum();
            let mut buffer = vec![0u8; total];
            if !input {
                let mut at = 0;
                for part in &parts {
                    let mut offset = at;
                    for &(addr, len) in &part.area {
                        self.ram
                            .read(addr, &mut buffer[offset..offset + len])
                            .expect("checked area");
                        offset += len;
                    }
                    at += usize::from(part.count);
                }
            }
            let response = self
                .device
                .execute(head.cmd, &mut buffer, Chaining::default());
            let moved = response.length.min(total);
            if input {
                let mut at = 0;
                for part in &parts {
                    let mut left = moved.saturating_sub(at).min(usize::from(part.count));
                    let mut offset = at;
                    for &(addr, len) in &part.area {
                        let n = len.min(left);
                        if n == 0 {
                            break;
                        }
                        self.ram
                            .write(addr, &buffer[offset..offset + n])
                            .expect("checked area");
                        offset += n;
                        left -= n;
                    }
                    at += usize::from(part.count);
                }
            }
            if let Some(at) = broken {
                // The count of the last good CCW ran out: the channel fetched
                // the next one and found it bad.
                if response.length >= total {
                    return Err(at);
                }
            }

            // The CCW in use when the transfer stopped, and its residual.
            let mut current = parts.len() - 1;
            let mut residual = 0usize;
            let mut before = 0usize;
            if moved < total {
                for (i, part) in parts.iter().enumerate() {
                    let end = before + usize::from(part.count);
                    if moved < end {
                        current = i;
                        residual = end - moved;
                        break;
                    }
                    before = end;
                }
            }
            let part = &parts[current];
            // SLI suppresses incorrect length, unless CD is set (CD also
            // overrides CC).
            let sli = part.flags.contains(CcwFlags::SLI) && !part.flags.contains(CcwFlags::CD);
            // A command rejected at once (unit check, nothing transferred)
            // never began its transfer: no incorrect length.
            let rejected =
                response.status.contains(DeviceStatus::UNIT_CHECK) && response.length == 0;
            let incorrect_length = response.length != total && !sli && !rejected;
            let status = response.status;
            let ending = Ending {
                cpa: u32::try_from(part.addr + 8).expect("31-bit CCW address"),
                count: u16::try_from(residual).expect("residual fits the count"),
                device: status,
                subchannel: if incorrect_length {
                    SubchannelStatus::INCORRECT_LENGTH
                } else {
                    SubchannelStatus::empty()
                },
            };
            let normal = DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END;
            let modifier = status == normal | DeviceStatus::STATUS_MODIFIER;
            let chains = part.flags.contains(CcwFlags::CC)
                && !part.flags.contains(CcwFlags::CD)
                && !incorrect_length
                && (status == normal || modifier);
            if chains {
                // Status modifier: the channel skips one CCW.
                let skip = if modifier { 16 } else { 8 };
                return Ok(Next::Chain(part.addr + skip));
            }
            Ok(Next::End(ending))
        }
    }
}

/// A [`BufferDevice`] shared with the test (to read its buffer after the
/// run), plus SEARCH (0x31, an output command): compare the data with the
/// next bytes of the buffer, which advance; equal presents status modifier,
/// running off the end unit exception. A SEARCH with a TIC back to it is an
/// orientation loop that ends.
#[derive(Debug, Clone)]
struct TestDevice(Arc<Mutex<BufferDevice>>);

impl TestDevice {
    /// A device whose first half is zeros and second half random.
    fn new(seed: u64) -> Self {
        let mut device = BufferDevice::new(DEV_SIZE);
        let mut contents = vec![0u8; DEV_SIZE];
        let mut rng = SplitMix(seed ^ 0xdead_beef);
        for byte in &mut contents[DEV_SIZE / 2..] {
            *byte = rng.byte();
        }
        assert_eq!(
            device
                .execute(CMD_WRITE, &mut contents, Chaining::default())
                .length,
            DEV_SIZE
        );
        assert_eq!(
            device
                .execute(CMD_SEEK, &mut [0; 4], Chaining::default())
                .length,
            4
        );
        Self(Arc::new(Mutex::new(device)))
    }

    fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap().contents().to_vec()
    }
}

impl DeviceModel for TestDevice {
    fn sense_id(&self) -> SenseId {
        self.0.lock().unwrap().sense_id()
    }

    fn execute(&mut self, cmd: u8, data: &mut [u8], chaining: Chaining) -> DeviceResponse {
        let mut device = self.0.lock().unwrap();
        if cmd != CMD_SEARCH {
            return device.execute(cmd, data, chaining);
        }
        let mut record = vec![0u8; data.len()];
        let got = device.execute(CMD_READ, &mut record, chaining).length;
        let mut status = DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END;
        if got < data.len() {
            status |= DeviceStatus::UNIT_EXCEPTION;
        } else if record == data {
            status |= DeviceStatus::STATUS_MODIFIER;
        }
        DeviceResponse {
            status,
            length: data.len(),
        }
    }

    fn reset(&mut self) {
        self.0.lock().unwrap().reset();
    }

    fn sense(&self) -> Sense {
        self.0.lock().unwrap().sense()
    }
}

/// splitmix64: reproducible fill patterns.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn byte(&mut self) -> u8 {
        self.next().to_be_bytes()[0]
    }
}

// ---------------------------------------------------------------------------
// Programs.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Write,
    Read,
    Seek,
    Nop,
    Sense,
    SenseId,
    Search,
}

impl Kind {
    fn cmd(self) -> u8 {
        match self {
            Self::Write => CMD_WRITE,
            Self::Read => CMD_READ,
            Self::Seek => CMD_SEEK,
            Self::Nop => CMD_NOP,
            Self::Sense => CMD_SENSE,
            Self::SenseId => CMD_SENSE_ID,
            Self::Search => CMD_SEARCH,
        }
    }
}

/// One command CCW before layout. `place`, `place2` and `aux` are raw
/// randomness the layout turns into addresses, IDAWs and operands.
#[derive(Debug, Clone)]
struct CcwSpec {
    kind: Kind,
    cd: bool,
    cc: bool,
    sli: bool,
    skip: bool,
    ida: bool,
    count: u16,
    place: u32,
    place2: u32,
    aux: u32,
}

/// The program error an invalid program carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Direct data area outside RAM (straddling its end, or far away).
    DataOutsideRam,
    /// Command code with low nibble zero.
    BadCommand,
    /// The second IDAW is not on a block boundary.
    MisalignedIdaw,
    /// The first IDAW has bit 0 set (format 1) or points far outside RAM.
    IdawOutsideRam,
    /// The IDAL itself is outside RAM.
    IdalOutsideRam,
    /// A TIC to a CCW address outside RAM.
    CcwOutsideRam,
    /// A TIC to an address that is not doubleword aligned.
    TicMisaligned,
    /// A TIC to a TIC.
    TicToTic,
    /// Zero count in format 0, or with CD in format 1.
    ZeroCount,
}

#[derive(Debug, Clone)]
struct ProgramSpec {
    format1: bool,
    format2_idaw: bool,
    idaw_2k: bool,
    ccws: Vec<CcwSpec>,
    /// A TIC to a second segment before this CCW.
    split: Option<usize>,
    /// The CCW made invalid, and how.
    fault: Option<(usize, Fault)>,
    /// Guest memory and device contents.
    seed: u64,
    seg1: u64,
    seg2: u64,
}

/// A program laid out in a RAM image.
struct Built {
    orb: Orb,
    image: Vec<u8>,
    /// CPA of the program check an invalid program must end in.
    expected_check: Option<u32>,
    /// The CCWs as written, for failure messages.
    listing: Vec<String>,
}

/// Make the random CCWs a valid program (then break the faulty one).
fn normalize(ccws: &mut [CcwSpec], format1: bool, fault: Option<(usize, Fault)>) {
    let n = ccws.len();
    for c in ccws.iter_mut() {
        if !format1 {
            c.count = c.count.max(1);
        }
        if c.kind == Kind::Search {
            c.cd = false;
            c.count = 1 + c.count % 4;
        }
        // Often the count the device wants, as real programs have it.
        if !c.cd && c.aux & 4 != 0 {
            match c.kind {
                Kind::Seek => c.count = 4,
                Kind::SenseId => c.count = 12,
                Kind::Sense => c.count = 32,
                _ => {}
            }
        }
        if c.cd {
            c.count = c.count.max(1);
        }
    }
    ccws[n - 1].cc = false;
    ccws[n - 1].cd = false;
    if let Some((j, fault)) = fault {
        let chained_in = j > 0 && ccws[j - 1].cd;
        let moving = |c: &mut CcwSpec| {
            c.skip = false;
            c.count = c.count.max(2);
            if !chained_in && matches!(c.kind, Kind::Nop | Kind::Search) {
                c.kind = Kind::Read;
            }
        };
        match fault {
            Fault::DataOutsideRam => {
                ccws[j].ida = false;
                moving(&mut ccws[j]);
            }
            Fault::MisalignedIdaw | Fault::IdawOutsideRam | Fault::IdalOutsideRam => {
                ccws[j].ida = true;
                moving(&mut ccws[j]);
            }
            Fault::BadCommand => {
                // Data chaining ignores the command code: make it a command.
                if chained_in {
                    ccws[j - 1].cd = false;
                    ccws[j - 1].cc = true;
                }
            }
            Fault::ZeroCount => {
                ccws[j].count = 0;
                ccws[j].cd |= format1;
            }
            Fault::CcwOutsideRam | Fault::TicMisaligned | Fault::TicToTic => {}
        }
    }
    // A data chain continues one command: the CCWs it chains to repeat the
    // command code (data chaining ignores it; the translator does not, see
    // the ignored tests below) and have a count.
    for i in 1..n {
        if ccws[i - 1].cd {
            ccws[i].kind = ccws[i - 1].kind;
            if fault.map(|(j, _)| j) != Some(i) {
                ccws[i].count = ccws[i].count.max(1);
            }
        }
    }
}

struct Layout {
    image: Vec<u8>,
    idal_cursor: u64,
    block: u64,
    format1: bool,
    format2_idaw: bool,
    listing: Vec<String>,
}

impl Layout {
    fn write(&mut self, addr: u64, bytes: &[u8]) {
        let at = usize::try_from(addr).unwrap();
        self.image[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn ccw(&mut self, addr: u64, ccw: Ccw) {
        let bytes = if self.format1 {
            ccw.encode_format1().unwrap()
        } else {
            ccw.encode_format0().unwrap()
        };
        self.write(addr, &bytes);
        self.listing.push(format!(
            "{addr:#07x}: cmd {:#04x} {:?} count {} cda {:#x}",
            ccw.cmd, ccw.flags, ccw.count, ccw.cda
        ));
    }

    fn tic(&mut self, addr: u64, target: u64) {
        self.ccw(
            addr,
            Ccw {
                cmd: 0x08,
                flags: CcwFlags::empty(),
                count: 0,
                cda: u32::try_from(target).unwrap(),
            },
        );
    }

    /// A data area of `len` bytes: half the time in a small window where
    /// areas overlap.
    fn pick(place: u32, len: u64) -> u64 {
        let (start, span) = if place & 1 == 0 {
            (DENSE_START, DENSE)
        } else {
            (DATA_START, IDAL_START - DATA_START)
        };
        start + u64::from(place >> 1) % (span - len + 1)
    }

    fn command(&mut self, addr: u64, c: &CcwSpec, fault: Option<Fault>) {
        let cmd = if fault == Some(Fault::BadCommand) {
            c.aux.to_be_bytes()[3] & 0xf0
        } else {
            c.kind.cmd()
        };
        let mut flags = CcwFlags::empty();
        flags.set(CcwFlags::CD, c.cd);
        flags.set(CcwFlags::CC, c.cc);
        flags.set(CcwFlags::SLI, c.sli);
        flags.set(CcwFlags::SKIP, c.skip);
        flags.set(CcwFlags::IDA, c.ida);
        let cda = if c.ida {
            self.indirect(c, fault)
        } else {
            self.direct(c, fault)
        };
        self.ccw(
            addr,
            Ccw {
                cmd,
                flags,
                count: c.count,
                cda: u32::try_from(cda).unwrap(),
            },
        );
    }

    fn direct(&mut self, c: &CcwSpec, fault: Option<Fault>) -> u64 {
        let count = u64::from(c.count);
        if fault == Some(Fault::DataOutsideRam) {
            return if c.place & 1 == 0 {
                OUTSIDE_DATA
            } else {
                RAM_SIZE - count / 2
            };
        }
        let addr = Self::pick(c.place, count);
        self.operand(c, &[(addr, count)]);
        addr
    }

    fn indirect(&mut self, c: &CcwSpec, fault: Option<Fault>) -> u64 {
        if fault == Some(Fault::IdalOutsideRam) {
            return OUTSIDE_DATA;
        }
        let block = self.block;
        // The channel and the translator look at least at the first IDAW.
        let count = u64::from(c.count.max(1));
        let blocks = (IDAL_START - DATA_START) / block;
        let cross = c.place2 & 1 == 1 || fault == Some(Fault::MisalignedIdaw);
        let first = if cross {
            // Just before a 2K boundary (a block boundary for a misaligned
            // IDAW to follow), so that the data crosses into the next IDAW
            // with 2K blocks, and with 4K blocks only at 4K boundaries.
            let step = if fault == Some(Fault::MisalignedIdaw) {
                block
            } else {
                2048
            };
            let steps = (IDAL_START - DATA_START) / step;
            let boundary = DATA_START + (1 + u64::from(c.place >> 1) % (steps - 2)) * step;
            let before = 1 + u64::from(c.place2 >> 1) % (count - 1).max(1);
            boundary - before
        } else {
            Self::pick(c.place, count)
        };
        let in_first = block - first % block;
        let idaws = 1 + count.saturating_sub(in_first).div_ceil(block);
        let mut values = vec![first];
        let mut rng = SplitMix(u64::from(c.place2));
        for _ in 1..idaws {
            values.push(DATA_START + rng.next() % (blocks - 1) * block);
        }
        let mut pieces = Vec::new();
        let mut left = u64::from(c.count);
        for &value in &values {
            let len = left.min(block - value % block);
            if len > 0 {
                pieces.push((value, len));
            }
            left -= len;
        }
        match fault {
            Some(Fault::MisalignedIdaw) => values[1] += 8 * (1 + u64::from(c.aux % 8)),
            Some(Fault::IdawOutsideRam) => {
                values[0] |= if self.format2_idaw {
                    1 << 63
                } else {
                    0x8000_0000
                }
            }
            _ => self.operand(c, &pieces),
        }
        // The IDAL, packed down from the end of RAM, sometimes with a gap.
        let width: u64 = if self.format2_idaw { 8 } else { 4 };
        let gap = if c.aux & 2 == 0 { 0 } else { width };
        self.idal_cursor -= idaws * width + gap;
        let idal = self.idal_cursor;
        assert!(idal >= IDAL_START, "IDAL region overflow");
        for (i, value) in (0u64..).zip(&values) {
            if self.format2_idaw {
                self.write(idal + i * 8, &value.to_be_bytes());
            } else {
                self.write(idal + i * 4, &u32::try_from(*value).unwrap().to_be_bytes());
            }
        }
        idal
    }

    /// SEEK positions and SEARCH keys, written into the data area.
    fn operand(&mut self, c: &CcwSpec, pieces: &[(u64, u64)]) {
        let bytes = match c.kind {
            Kind::Seek => (c.aux % (u32::try_from(DEV_SIZE).unwrap() + 8)).to_be_bytes(),
            Kind::Search if c.aux & 1 == 0 => [0; 4],
            Kind::Search => c.aux.to_be_bytes(),
            _ => return,
        };
        let mut bytes = bytes.iter();
        for &(addr, len) in pieces {
            for offset in 0..len {
                let Some(&byte) = bytes.next() else {
                    return;
                };
                self.write(addr + offset, &[byte]);
            }
        }
    }
}

fn build(spec: &ProgramSpec) -> Built {
    let mut ccws = spec.ccws.clone();
    let n = ccws.len();
    normalize(&mut ccws, spec.format1, spec.fault);
    // Guest memory: random bytes with a prime period (cheap in debug
    // builds), so that data moved from or to the wrong 2K or 4K block never
    // looks right.
    const PERIOD: usize = 4093;
    let mut rng = SplitMix(spec.seed);
    let pattern: Vec<u8> = (0..PERIOD).map(|_| rng.byte()).collect();
    let size = usize::try_from(RAM_SIZE).unwrap();
    let mut image = Vec::with_capacity(size + PERIOD);
    while image.len() < size {
        image.extend_from_slice(&pattern);
    }
    image.truncate(size);
    let mut layout = Layout {
        image,
        idal_cursor: RAM_SIZE,
        block: if spec.format2_idaw && !spec.idaw_2k {
            4096
        } else {
            2048
        },
        format1: spec.format1,
        format2_idaw: spec.format2_idaw,
        listing: Vec::new(),
    };
    let seg1 = SEG1 + 8 * spec.seg1;
    let seg2 = SEG2 + 8 * spec.seg2;
    let split = spec.split.filter(|&k| k < n);
    let mut addr = seg1;
    let mut addrs = vec![0u64; n];
    let mut expected_check = None;
    for i in 0..n {
        if split == Some(i) {
            layout.tic(addr, seg2);
            addr = seg2;
        }
        let fault = spec.fault.filter(|(j, _)| *j == i).map(|(_, f)| f);
        if let Some(fault) = fault {
            let chained_in = i > 0 && ccws[i - 1].cd;
            let check = match fault {
                Fault::CcwOutsideRam => {
                    layout.tic(addr, OUTSIDE_CCW);
                    addr += 8;
                    OUTSIDE_CCW
                }
                Fault::TicMisaligned => {
                    layout.tic(addr, SEG3 + 4);
                    addr += 8;
                    SEG3 + 4
                }
                Fault::TicToTic => {
                    layout.tic(addr, SEG3);
                    layout.tic(SEG3, SEG3 + 0x100);
                    // The translator translates the second TIC's target
                    // although the channel never gets there: garbage there
                    // would refuse the START (the ignored test
                    // known_discrepancy_tic_to_tic_target_is_still_translated),
                    // so it is a harmless NOP.
                    layout.ccw(
                        SEG3 + 0x100,
                        Ccw {
                            cmd: CMD_NOP,
                            flags: CcwFlags::SLI,
                            count: 1,
                            cda: 0,
                        },
                    );
                    addr += 8;
                    SEG3
                }
                _ => addr,
            };
            if !chained_in {
                expected_check = Some(u32::try_from(check + 8).unwrap());
            }
        }
        addrs[i] = addr;
        layout.command(addr, &ccws[i], fault);
        addr += 8;
        if ccws[i].kind == Kind::Search && ccws[i].cc {
            // Orientation loop: SEARCH, TIC back to it, and on a match the
            // status modifier skips the TIC.
            layout.tic(addr, addrs[i]);
            addr += 8;
        }
    }
    let orb = Orb {
        format1: spec.format1,
        prefetch: true,
        format2_idaw: spec.format2_idaw,
        idaw_2k: spec.idaw_2k,
        lpm: 0x80,
        cpa: u32::try_from(seg1).unwrap(),
        intparm: 0x1234_5678,
        ..Orb::default()
    };
    Built {
        orb,
        image: layout.image,
        expected_check,
        listing: layout.listing,
    }
}

// ---------------------------------------------------------------------------
// The two worlds.

fn guest(image: &[u8]) -> GuestRam {
    let ram = ram(usize::try_from(RAM_SIZE).unwrap());
    ram.write(0, image).unwrap();
    ram
}

fn snapshot(ram: &GuestRam) -> Vec<u8> {
    let mut bytes = vec![0u8; usize::try_from(RAM_SIZE).unwrap()];
    ram.read(0, &mut bytes).unwrap();
    bytes
}

/// What a world leaves behind.
#[derive(Debug)]
struct World {
    ending: Ending,
    memory: Vec<u8>,
    device: Vec<u8>,
}

fn run_reference(built: &Built, seed: u64) -> World {
    let ram = guest(&built.image);
    let mut device = TestDevice::new(seed);
    let ending = reference::Channel::new(&built.orb, &ram, &mut device)
        .run(u64::from(built.orb.cpa))
        .expect("generated programs end");
    World {
        ending,
        memory: snapshot(&ram),
        device: device.contents(),
    }
}

fn run_sim(built: &Built, seed: u64) -> Result<World, String> {
    let ram = guest(&built.image);
    let device = TestDevice::new(seed);
    let program = Arc::new(translate(&built.orb, &ram).map_err(|e| format!("translate: {e}"))?);
    let mut sim = SimSubchannel::new(SimConfig::default(), Box::new(device.clone()))
        .map_err(|e| e.to_string())?;
    sim.enable().map_err(|e| e.to_string())?;
    let cc = sim.start(Arc::clone(&program), ram.clone());
    if cc != HostCc::Accepted {
        return Err(format!("start: {cc:?}"));
    }
    let mut events = Vec::new();
    for _ in 0..POLLS {
        sim.poll(&mut events).map_err(|e| e.to_string())?;
        let irb = events.iter().find_map(|e| match e {
            HostEvent::Interrupt(irb) => Some(*irb),
            _ => None,
        });
        if let Some(irb) = irb {
            let scsw = irb.scsw;
            if !scsw.status_control.contains(StatusControl::PRIMARY) {
                return Err(format!("not a final interruption: {scsw:?}"));
            }
            // The state machine takes a final CPA outside the program for a
            // broken host (subchannel/table.rs).
            if !program.contains_cpa(scsw.cpa) {
                return Err(format!("final CPA {:#x} outside the program", scsw.cpa));
            }
            if sim.holds_program().is_some() {
                return Err("the host still holds the program after its end".into());
            }
            return Ok(World {
                ending: Ending {
                    cpa: scsw.cpa,
                    count: scsw.count,
                    device: scsw.device_status,
                    subchannel: scsw.subchannel_status,
                },
                memory: snapshot(&ram),
                device: device.contents(),
            });
        }
        events.clear();
    }
    Err(format!("no interruption after {POLLS} polls"))
}

/// Run both worlds and compare everything they leave.
fn compare(spec: &ProgramSpec) -> Result<Ending, TestCaseError> {
    let built = build(spec);
    let listing = built.listing.join("\n");
    let reference = run_reference(&built, spec.seed);
    let sim = run_sim(&built, spec.seed)
        .map_err(|e| TestCaseError::fail(format!("{e}\nprogram:\n{listing}")))?;
    prop_assert_eq!(
        sim.ending,
        reference.ending,
        "sim (left) and reference (right) end differently\nprogram:\n{}",
        listing
    );
    if sim.memory != reference.memory {
        let at = sim
            .memory
            .iter()
            .zip(&reference.memory)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        prop_assert!(
            false,
            "guest memory differs first at {:#x}: sim {:#04x}, reference {:#04x}\nprogram:\n{}",
            at,
            sim.memory[at],
            reference.memory[at],
            listing
        );
    }
    prop_assert_eq!(
        &sim.device,
        &reference.device,
        "device contents differ\nprogram:\n{}",
        listing
    );
    if let Some(cpa) = built.expected_check {
        prop_assert_eq!(
            reference.ending,
            Ending::program_check(u64::from(cpa) - 8),
            "the invalid program must end in a program check at its fault\nprogram:\n{}",
            listing
        );
    }
    Ok(reference.ending)
}

// ---------------------------------------------------------------------------
// Strategies.

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Write),
        3 => Just(Kind::Read),
        1 => Just(Kind::Seek),
        1 => Just(Kind::Nop),
        1 => Just(Kind::Sense),
        1 => Just(Kind::SenseId),
        2 => Just(Kind::Search),
    ]
}

fn ccw_spec(kinds: BoxedStrategy<Kind>) -> impl Strategy<Value = CcwSpec> {
    use prop::bool::weighted;
    (
        kinds,
        (
            weighted(0.2),
            weighted(0.9),
            weighted(0.8),
            weighted(0.15),
            weighted(0.35),
        ),
        prop_oneof![1 => Just(0u16), 6 => 1u16..=300],
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(kind, (cd, cc, sli, skip, ida), count, place, place2, aux)| CcwSpec {
                kind,
                cd,
                cc,
                sli,
                skip,
                ida,
                count,
                place,
                place2,
                aux,
            },
        )
}

/// `(format1, format2_idaw, idaw_2k, seed, seg1, seg2)`.
fn frame() -> impl Strategy<Value = (bool, bool, bool, u64, u64, u64)> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
        0u64..64,
        0u64..64,
    )
}

fn valid_program() -> impl Strategy<Value = ProgramSpec> {
    (
        frame(),
        vec(ccw_spec(kind().boxed()), 1..=12),
        prop::option::weighted(0.3, 0usize..12),
    )
        .prop_map(
            |((format1, format2_idaw, idaw_2k, seed, seg1, seg2), ccws, split)| ProgramSpec {
                format1,
                format2_idaw,
                idaw_2k,
                ccws,
                split,
                fault: None,
                seed,
                seg1,
                seg2,
            },
        )
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::DataOutsideRam),
        Just(Fault::BadCommand),
        Just(Fault::MisalignedIdaw),
        Just(Fault::IdawOutsideRam),
        Just(Fault::IdalOutsideRam),
        Just(Fault::CcwOutsideRam),
        Just(Fault::TicMisaligned),
        Just(Fault::TicToTic),
        Just(Fault::ZeroCount),
    ]
}

/// A prefix that always chains to the fault (CC and SLI, commands that end
/// normally), the faulty CCW, maybe data-chained from the prefix, and a
/// suffix it never reaches.
fn invalid_program() -> impl Strategy<Value = ProgramSpec> {
    let safe = prop_oneof![
        Just(Kind::Nop),
        Just(Kind::Read),
        Just(Kind::Write),
        Just(Kind::SenseId)
    ]
    .boxed();
    let moving = prop_oneof![
        Just(Kind::Read),
        Just(Kind::Write),
        Just(Kind::Seek),
        Just(Kind::Sense),
        Just(Kind::SenseId)
    ]
    .boxed();
    (
        frame(),
        vec(ccw_spec(safe), 0..=4),
        ccw_spec(moving),
        fault(),
        prop::bool::weighted(0.25),
        vec(ccw_spec(kind().boxed()), 0..=2),
    )
        .prop_map(
            |(
                (format1, format2_idaw, idaw_2k, seed, seg1, seg2),
                prefix,
                faulty,
                fault,
                cd_in,
                suffix,
            )| {
                let mut ccws: Vec<CcwSpec> = prefix
                    .into_iter()
                    .map(|c| CcwSpec {
                        cc: true,
                        sli: true,
                        cd: false,
                        ..c
                    })
                    .collect();
                let at = ccws.len();
                if cd_in {
                    if let Some(last) = ccws.last_mut() {
                        last.cd = true;
                    }
                }
                ccws.push(faulty);
                ccws.extend(suffix);
                ProgramSpec {
                    format1,
                    format2_idaw,
                    idaw_2k,
                    ccws,
                    split: None,
                    fault: Some((at, fault)),
                    seed,
                    seg1,
                    seg2,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Valid programs: translate + sim and the reference interpreter end the
    /// same, with the same guest memory and device contents.
    #[test]
    fn translated_program_on_sim_matches_reference_interpreter(spec in valid_program()) {
        compare(&spec)?;
    }

    /// The common-CCW fast path builds exactly the program the general
    /// path builds, for valid and invalid programs alike.
    #[test]
    fn common_path_builds_the_program_of_the_general_path(
        spec in prop_oneof![valid_program(), invalid_program()]
    ) {
        let built = build(&spec);
        let ram = guest(&built.image);
        prop_assert_eq!(
            translate(&built.orb, &ram),
            translate_general_only(&built.orb, &ram),
            "program:\n{}",
            built.listing.join("\n")
        );
    }

    /// Invalid programs: both end in a channel-program check at the CCW at
    /// fault (when the prefix reaches it as a command), with identical memory.
    #[test]
    fn invalid_program_checks_at_the_same_cpa_as_reference_interpreter(spec in invalid_program()) {
        compare(&spec)?;
    }
}

// ---------------------------------------------------------------------------
// Discrepancies the reference found in the translator, as minimal programs
// (`known_discrepancy_*`). Each failed when it was found; all are fixed, and
// the tests stay as regression guards for them.

/// Run a hand-written format-1 program at 0x1000, over memory filled with
/// 0x5a plus `data`, in both worlds.
fn both_worlds(ccws: &[(u64, Ccw)], data: &[(u64, &[u8])]) -> (Result<World, String>, World) {
    let spec_seed = 1;
    let mut layout = Layout {
        image: vec![0x5a; usize::try_from(RAM_SIZE).unwrap()],
        idal_cursor: RAM_SIZE,
        block: 2048,
        format1: true,
        format2_idaw: false,
        listing: Vec::new(),
    };
    for &(addr, ccw) in ccws {
        layout.ccw(addr, ccw);
    }
    for &(addr, bytes) in data {
        layout.write(addr, bytes);
    }
    let built = Built {
        orb: Orb {
            format1: true,
            prefetch: true,
            lpm: 0x80,
            cpa: 0x1000,
            ..Orb::default()
        },
        image: layout.image,
        expected_check: None,
        listing: layout.listing,
    };
    (run_sim(&built, spec_seed), run_reference(&built, spec_seed))
}

fn ccw(cmd: u8, flags: CcwFlags, count: u16, cda: u32) -> Ccw {
    Ccw {
        cmd,
        flags,
        count,
        cda,
    }
}

fn assert_same(ccws: &[(u64, Ccw)], data: &[(u64, &[u8])]) {
    let (sim, reference) = both_worlds(ccws, data);
    let sim = sim.expect("the sim runs the program");
    assert_eq!(
        sim.ending, reference.ending,
        "sim (left) vs reference (right)"
    );
    assert!(sim.memory == reference.memory, "guest memory differs");
    assert_eq!(sim.device, reference.device, "device contents differ");
}

/// The hand-written helper agrees with itself on an ordinary program.
#[test]
fn hand_written_read_write_chain_matches_reference_interpreter() {
    assert_same(
        &[
            (0x1000, ccw(CMD_WRITE, CcwFlags::CD, 4, 0x1_0000)),
            (0x1008, ccw(CMD_WRITE, CcwFlags::CC, 4, 0x1_0100)),
            (0x1010, ccw(CMD_SEEK, CcwFlags::CC, 4, 0x1_0200)),
            (0x1018, ccw(CMD_READ, CcwFlags::CD, 3, 0x1_0300)),
            (
                0x1020,
                ccw(CMD_READ, CcwFlags::SKIP | CcwFlags::SLI, 5, 0x1_0400),
            ),
        ],
        &[],
    );
}

/// Found by the invalid-program property (fixed in the sim): SENSE ID wants
/// 12 bytes, the first CCW offers 1 and data-chains to a CCW whose data is
/// outside RAM. The channel fetches that CCW as soon as the byte is
/// transferred: a program check there, not incorrect length.
#[test]
fn data_chaining_into_a_bad_ccw_after_the_device_wanted_more_is_a_program_check() {
    let program = [
        (
            0x1000,
            ccw(CMD_SENSE_ID, CcwFlags::CD | CcwFlags::CC, 1, 0x1_0000),
        ),
        (0x1008, ccw(CMD_SENSE_ID, CcwFlags::empty(), 2, 0x00F0_0000)),
    ];
    assert_same(&program, &[]);
    let (_, reference) = both_worlds(&program, &[]);
    assert_eq!(reference.ending, Ending::program_check(0x1008));
}

/// POPs: during data chaining the command code of the new CCW is ignored
/// (unless it is a TIC). The translator classifies each data-chained CCW by
/// its own command code: a NOP code in a READ's data chain gets no data
/// area, so the bytes the device reads for it are dropped.
#[test]
fn known_discrepancy_data_chained_nop_code_drops_read_data() {
    assert_same(
        &[
            (0x1000, ccw(CMD_READ, CcwFlags::CD, 4, 0x1_0000)),
            (0x1008, ccw(CMD_NOP, CcwFlags::empty(), 4, 0x1_0010)),
        ],
        &[],
    );
}

/// Same cause: a WRITE code with SKIP in a READ's data chain is taken as
/// output (SKIP ignored), so the skipped bytes are stored anyway.
#[test]
fn known_discrepancy_data_chained_write_code_ignores_skip_of_read() {
    assert_same(
        &[
            (0x1000, ccw(CMD_READ, CcwFlags::CD, 4, 0x1_0000)),
            (0x1008, ccw(CMD_WRITE, CcwFlags::SKIP, 4, 0x1_0010)),
        ],
        &[],
    );
}

/// Same cause: an invalid command code (low nibble 0) in a data-chained
/// CCW becomes a program check, where the channel ignores the code.
#[test]
fn known_discrepancy_data_chained_invalid_code_is_a_program_check() {
    assert_same(
        &[
            (0x1000, ccw(CMD_READ, CcwFlags::CD, 4, 0x1_0000)),
            (0x1008, ccw(0x00, CcwFlags::empty(), 4, 0x1_0010)),
        ],
        &[],
    );
}

/// POPs (and Hercules): a CCW fetched by data chaining must not have a zero
/// count, whether or not it has CD itself. The translator only refuses a
/// zero count with CD.
#[test]
fn known_discrepancy_zero_count_in_data_chained_ccw_is_accepted() {
    assert_same(
        &[
            (0x1000, ccw(CMD_READ, CcwFlags::CD, 4, 0x1_0000)),
            (0x1008, ccw(CMD_READ, CcwFlags::empty(), 0, 0x1_0010)),
        ],
        &[],
    );
}

/// Status modifier skips the CCW after the one that presented it, also when
/// that CCW is a TIC to elsewhere. The translator ends a segment at a
/// forward TIC, so the CCW after it is not in the program and the sim
/// program-checks where the channel runs it, with CPA 0x1018: outside the
/// program, which the subchannel state machine takes for a broken host.
#[test]
fn known_discrepancy_status_modifier_skipping_a_forward_tic() {
    // The device's first bytes are zero: SEARCH for 0x00 matches.
    assert_same(
        &[
            (0x1000, ccw(CMD_SEARCH, CcwFlags::CC, 1, 0x1_0000)),
            (0x1008, ccw(0x08, CcwFlags::empty(), 0, 0x2000)),
            (0x1010, ccw(CMD_NOP, CcwFlags::empty(), 0, 0)),
            (0x2000, ccw(CMD_NOP, CcwFlags::empty(), 0, 0)),
        ],
        &[(0x1_0000, &[0])],
    );
}

/// A TIC to a TIC program-checks at the second TIC; the channel never looks
/// at the second TIC's target. The translator still translates that target,
/// so whatever is there can refuse the whole START (here a suspend flag:
/// "unsupported"), where the guest should see a program check.
#[test]
fn known_discrepancy_tic_to_tic_target_is_still_translated() {
    assert_same(
        &[
            (0x1000, ccw(0x08, CcwFlags::empty(), 0, 0x3000)),
            (0x3000, ccw(0x08, CcwFlags::empty(), 0, 0x3100)),
            (0x3100, ccw(CMD_READ, CcwFlags::S, 4, 0x1_0000)),
        ],
        &[],
    );
}

/// Same class: the translator reads on past a TIC back into the segment
/// (an orientation loop), and refuses the START for whatever it finds
/// there, although the channel gets there only by a status modifier. Here
/// the SEARCH never matches (the device holds no 0x5a5a5a5a), the loop ends
/// in unit exception, and the bytes after the TIC (0x5a: suspend flag set)
/// are never used.
#[test]
fn known_discrepancy_garbage_after_a_backward_tic_refuses_the_start() {
    assert_same(
        &[
            (0x1000, ccw(CMD_SEARCH, CcwFlags::CC, 4, 0x1_0000)),
            (0x1008, ccw(0x08, CcwFlags::empty(), 0, 0x1000)),
        ],
        &[],
    );
}

/// Found by the fuzz target: a data chain that loops through a TIC made the
/// sim collect the chain forever (the event loop hung, memory grew without
/// bound). The channel keeps transferring until the device stops: the
/// 512-byte device takes 128 rounds of 4 bytes, the count of the CCW in use
/// then is not exhausted: incorrect length.
#[test]
fn data_chain_looping_through_a_tic_ends_on_the_sim() {
    let mut layout = Layout {
        image: vec![0x5a; usize::try_from(RAM_SIZE).unwrap()],
        idal_cursor: RAM_SIZE,
        block: 2048,
        format1: true,
        format2_idaw: false,
        listing: Vec::new(),
    };
    layout.ccw(0x1000, ccw(CMD_WRITE, CcwFlags::CD, 4, 0x1_0000));
    layout.ccw(0x1008, ccw(0x08, CcwFlags::empty(), 0, 0x1000));
    // The translator reads on past a backward TIC.
    layout.ccw(0x1010, ccw(CMD_NOP, CcwFlags::empty(), 0, 0));
    let built = Built {
        orb: Orb {
            format1: true,
            prefetch: true,
            lpm: 0x80,
            cpa: 0x1000,
            ..Orb::default()
        },
        image: layout.image,
        expected_check: None,
        listing: layout.listing,
    };
    let sim = run_sim(&built, 1).expect("the program ends");
    assert_eq!(
        sim.ending,
        Ending {
            cpa: 0x1008,
            count: 4,
            device: DeviceStatus::CHANNEL_END | DeviceStatus::DEVICE_END,
            subchannel: SubchannelStatus::INCORRECT_LENGTH,
        }
    );
    assert_eq!(&sim.device[..4], &[0x5a; 4]);
    assert_eq!(&sim.device[DEV_SIZE - 4..], &[0x5a; 4]);
}
