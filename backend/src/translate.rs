//! Channel-program translation: a guest ORB and the CCW chain it points to
//! become a validated [`ChannelProgram`] whose every data area lies inside
//! guest RAM.
//!
//! The CCWs are read from guest memory exactly once into the program, so a
//! guest that rewrites its chain while it runs cannot make the host program
//! differ from what was checked. Data areas are not copied: the host
//! subchannel transfers directly to and from guest RAM (`sim`), or through
//! I/O addresses of a mapping of it (`vfio`).
//!
//! This translator handles what the foundation needs: format-1 CCWs with
//! direct addressing, command and data chaining, bounded chains. TIC,
//! format-0 CCWs and IDAWs are rejected as unsupported with a clear error.

use thiserror::Error;
use vhost_user_ccw_protocol::arch::{Ccw, CcwFlags, Orb};
use vhost_user_ccw_protocol::wire::ProgramErrorCode;

use crate::memory::{GuestRam, RamError};

/// Most CCWs a chain may hold. A real channel has no such limit, but an
/// unbounded chain would let a guest make the backend allocate and walk
/// without end; the kernel's vfio-ccw uses the same bound per segment.
pub const MAX_CCWS: usize = 256;

/// Size of a CCW in guest memory.
pub const CCW_SIZE: u64 = 8;

/// Why a program cannot be run. Every variant maps to the
/// [`ProgramErrorCode`] the frontend receives.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TranslateError {
    /// A CCW or a data area is outside guest RAM.
    #[error("CCW at {ccw_addr:#x}: {source}")]
    OutOfRange {
        /// Guest address of the CCW concerned.
        ccw_addr: u64,
        /// The refused range.
        source: RamError,
    },
    /// A facility the translator does not implement.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The chain exceeds [`MAX_CCWS`].
    #[error("chain longer than {MAX_CCWS} CCWs")]
    TooLong,
    /// Architecturally invalid program.
    #[error("CCW at {ccw_addr:#x}: {reason}")]
    Invalid {
        /// Guest address of the CCW (or the CPA).
        ccw_addr: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

impl TranslateError {
    /// The protocol's code for this error.
    pub fn code(&self) -> ProgramErrorCode {
        match self {
            Self::OutOfRange { .. } => ProgramErrorCode::AddressOutOfRange,
            Self::Unsupported(_) => ProgramErrorCode::Unsupported,
            Self::TooLong => ProgramErrorCode::TooLarge,
            Self::Invalid { .. } => ProgramErrorCode::Invalid,
        }
    }
}

/// Direction of a command's data transfer, from the low bits of the command
/// code (POPs: write xxxxxx01, read xxxxxx10, control xxxxxx11, sense
/// xxxx0100, transfer in channel xxxx1000, read backward xxxx1100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Data flows from guest memory to the device (write, control).
    Out,
    /// Data flows from the device into guest memory (read, sense, read
    /// backward).
    In,
}

impl Direction {
    /// Direction of a command code; `None` for TIC and invalid codes.
    pub fn of(cmd: u8) -> Option<Self> {
        match cmd & 0x0f {
            0x00 | 0x08 => None,
            0x04 | 0x0c => Some(Self::In),
            low => match low & 0x03 {
                0x01 | 0x03 => Some(Self::Out),
                _ => Some(Self::In),
            },
        }
    }
}

/// One CCW of a translated program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramCcw {
    /// Guest address the CCW was fetched from.
    pub addr: u64,
    /// The CCW as fetched.
    pub ccw: Ccw,
    /// Direction of its data transfer.
    pub direction: Direction,
}

impl ProgramCcw {
    /// The guest data area `[cda, cda + count)`, already checked to lie in
    /// guest RAM (empty when the count is zero).
    pub fn data(&self) -> (u64, u32) {
        (u64::from(self.ccw.cda), u32::from(self.ccw.count))
    }
}

/// A validated channel program, ready for a host subchannel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelProgram {
    /// The guest's ORB.
    pub orb: Orb,
    /// The CCWs in chain order.
    pub ccws: Vec<ProgramCcw>,
}

impl ChannelProgram {
    /// Whether an SCSW channel-program address can designate a point in
    /// this program: one CCW past a CCW of it (what the channel stores once
    /// that CCW was executed), or its first CCW (stored when the channel
    /// could not even fetch it).
    pub fn contains_cpa(&self, cpa: u32) -> bool {
        let cpa = u64::from(cpa);
        cpa == u64::from(self.orb.cpa) || self.ccws.iter().any(|c| c.addr + CCW_SIZE == cpa)
    }

    /// Index of the CCW fetched from guest address `addr`.
    pub fn index_of(&self, addr: u64) -> Option<usize> {
        self.ccws.iter().position(|c| c.addr == addr)
    }
}

/// Translate the program the ORB designates.
pub fn translate(orb: &Orb, ram: &GuestRam) -> Result<ChannelProgram, TranslateError> {
    check_orb(orb)?;
    let mut ccws = Vec::new();
    let mut addr = u64::from(orb.cpa);
    if addr % CCW_SIZE != 0 {
        return Err(TranslateError::Invalid {
            ccw_addr: addr,
            reason: "channel-program address is not doubleword aligned",
        });
    }
    loop {
        if ccws.len() == MAX_CCWS {
            return Err(TranslateError::TooLong);
        }
        let mut raw = [0u8; 8];
        ram.read(addr, &mut raw)
            .map_err(|source| TranslateError::OutOfRange {
                ccw_addr: addr,
                source,
            })?;
        let ccw = Ccw::decode(true, &raw).map_err(|_| TranslateError::Invalid {
            ccw_addr: addr,
            reason: "malformed format-1 CCW",
        })?;
        let program_ccw = check_ccw(addr, ccw, ram)?;
        ccws.push(program_ccw);
        if !ccw.flags.contains(CcwFlags::CD) && !ccw.flags.contains(CcwFlags::CC) {
            break;
        }
        addr += CCW_SIZE;
    }
    Ok(ChannelProgram { orb: *orb, ccws })
}

fn check_orb(orb: &Orb) -> Result<(), TranslateError> {
    if orb.transport_mode {
        return Err(TranslateError::Unsupported("transport-mode ORB"));
    }
    if orb.suspend {
        return Err(TranslateError::Unsupported("suspend control"));
    }
    if orb.midaw {
        return Err(TranslateError::Unsupported("MIDAW"));
    }
    if !orb.format1 {
        return Err(TranslateError::Unsupported("format-0 CCWs"));
    }
    Ok(())
}

fn check_ccw(addr: u64, ccw: Ccw, ram: &GuestRam) -> Result<ProgramCcw, TranslateError> {
    let flags = ccw.flags;
    if ccw.is_tic(true) {
        return Err(TranslateError::Unsupported("transfer in channel"));
    }
    let direction = Direction::of(ccw.cmd).ok_or(TranslateError::Invalid {
        ccw_addr: addr,
        reason: "invalid command code",
    })?;
    if flags.contains(CcwFlags::IDA) {
        return Err(TranslateError::Unsupported("indirect data addressing"));
    }
    if flags.contains(CcwFlags::MIDA) {
        return Err(TranslateError::Unsupported("MIDAW"));
    }
    if flags.contains(CcwFlags::S) {
        return Err(TranslateError::Unsupported("suspend flag"));
    }
    if flags.contains(CcwFlags::PCI) {
        return Err(TranslateError::Unsupported(
            "program-controlled interruption",
        ));
    }
    if ccw.count == 0 && flags.contains(CcwFlags::CD) {
        return Err(TranslateError::Invalid {
            ccw_addr: addr,
            reason: "zero count with chain data",
        });
    }
    if ccw.count > 0 {
        ram.check(u64::from(ccw.cda), u64::from(ccw.count))
            .map_err(|source| TranslateError::OutOfRange {
                ccw_addr: addr,
                source,
            })?;
    }
    Ok(ProgramCcw {
        addr,
        ccw,
        direction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::tests::ram;

    fn put_ccw(ram: &GuestRam, addr: u64, cmd: u8, flags: u8, count: u16, cda: u32) {
        let ccw = Ccw {
            cmd,
            flags: CcwFlags::from_bits_truncate(flags),
            count,
            cda,
        };
        ram.write(addr, &ccw.encode_format1().unwrap()).unwrap();
    }

    fn orb(cpa: u32) -> Orb {
        Orb {
            format1: true,
            prefetch: true,
            lpm: 0x80,
            cpa,
            ..Orb::default()
        }
    }

    #[test]
    fn chained_program_is_fetched_in_order() {
        let ram = ram(0x10000);
        put_ccw(&ram, 0x1000, 0x01, 0x40, 16, 0x2000);
        put_ccw(&ram, 0x1008, 0x02, 0x80, 8, 0x3000);
        put_ccw(&ram, 0x1010, 0x02, 0x20, 8, 0x3008);
        put_ccw(&ram, 0x1018, 0x03, 0x00, 0, 0);
        let program = translate(&orb(0x1000), &ram).unwrap();
        assert_eq!(
            program.ccws.len(),
            3,
            "the chain ends at the CCW without CC/CD"
        );
        assert_eq!(program.ccws[1].data(), (0x3000, 8));
        assert_eq!(program.ccws[0].direction, Direction::Out);
        assert_eq!(program.ccws[2].direction, Direction::In);
        assert_eq!(program.index_of(0x1010), Some(2));
    }

    #[test]
    fn data_area_outside_ram_is_refused() {
        let ram = ram(0x10000);
        put_ccw(&ram, 0x1000, 0x02, 0x00, 0x100, 0xff80);
        let err = translate(&orb(0x1000), &ram).unwrap_err();
        assert_eq!(err.code(), ProgramErrorCode::AddressOutOfRange);
    }

    #[test]
    fn cpa_outside_ram_is_refused() {
        let ram = ram(0x10000);
        let err = translate(&orb(0x7fff_fff8), &ram).unwrap_err();
        assert!(matches!(
            err,
            TranslateError::OutOfRange {
                ccw_addr: 0x7fff_fff8,
                ..
            }
        ));
    }

    #[test]
    fn chain_of_256_chained_ccws_is_refused_without_reading_a_257th() {
        let ram = ram(0x10000);
        for i in 0..256u64 {
            put_ccw(&ram, 0x1000 + i * 8, 0x03, 0x40, 0, 0);
        }
        // The 257th slot holds garbage that must never be fetched.
        ram.write(0x1000 + 256 * 8, &[0xff; 8]).unwrap();
        assert_eq!(translate(&orb(0x1000), &ram), Err(TranslateError::TooLong));
        put_ccw(&ram, 0x1000 + 255 * 8, 0x03, 0x00, 0, 0);
        assert_eq!(translate(&orb(0x1000), &ram).unwrap().ccws.len(), 256);
    }

    #[test]
    fn unsupported_facilities_are_named() {
        let ram = ram(0x10000);
        put_ccw(&ram, 0x1000, 0x08, 0x00, 0, 0x1000);
        assert_eq!(
            translate(&orb(0x1000), &ram),
            Err(TranslateError::Unsupported("transfer in channel"))
        );
        put_ccw(&ram, 0x1000, 0x02, 0x04, 8, 0x2000);
        assert_eq!(
            translate(&orb(0x1000), &ram).unwrap_err().code(),
            ProgramErrorCode::Unsupported
        );
        let mut transport = orb(0x1000);
        transport.transport_mode = true;
        assert_eq!(
            translate(&transport, &ram),
            Err(TranslateError::Unsupported("transport-mode ORB"))
        );
        put_ccw(&ram, 0x1000, 0x00, 0x00, 8, 0x2000);
        assert_eq!(
            translate(&orb(0x1000), &ram).unwrap_err().code(),
            ProgramErrorCode::Invalid
        );
        assert_eq!(
            translate(&orb(0x1004), &ram).unwrap_err().code(),
            ProgramErrorCode::Invalid
        );
    }
}
