//! Channel-program translation: a guest ORB and the CCW chain it designates
//! become a validated [`ChannelProgram`] whose every data area lies inside
//! guest RAM, below the control window, within its addressing mode.
//!
//! * Everything the channel would fetch (CCWs, IDAWs) is read from guest
//!   memory exactly once into the program: a guest that rewrites its chain
//!   or its IDALs while the program runs cannot make the executed program
//!   differ from the checked one (self-modifying programs are unsupported,
//!   as with prefetching).
//! * Segments: a segment is a run of consecutive CCWs fetched from one
//!   address; it continues while a CCW chains (CC or CD), or past a TIC that
//!   points backwards into the segment (orientation loops). Every other TIC
//!   target becomes a new segment, unless an existing segment already holds
//!   it. The builder is iterative (a worklist, no recursion).
//! * Errors split in two. What the architecture defines as a program error
//!   (invalid command code, misaligned or out-of-storage addresses, TIC to
//!   TIC, zero counts where forbidden, misaligned IDAWs) does not reject the
//!   program: it becomes a check point where the channel would detect it,
//!   and the program ends there with a channel-program check after
//!   executing what precedes it, as on real hardware. What the backend does
//!   not implement (transport mode, suspend, MIDAWs, …) and programs beyond
//!   the translator's limits reject the START: the frontend presents a unit
//!   exception, as QEMU does for vfio-ccw ([`TranslateError`]).
//!
//! Limits: [`MAX_SEGMENT_CCWS`] CCWs per segment, [`MAX_SEGMENTS`] segments,
//! [`MAX_DATA_BYTES`] bytes of data in all. IDAWs per CCW are bounded by the
//! 16-bit count: at most 33 with 2K blocks, 17 with 4K blocks.

use std::ops::Range;

use thiserror::Error;
use vhost_user_ccw_protocol::arch::{Ccw, CcwFlags, Orb};
use vhost_user_ccw_protocol::wire::ProgramErrorCode;

use crate::memory::GuestRam;

/// Most CCWs one segment may hold (the kernel's bound: 2 KiB of CCWs).
pub const MAX_SEGMENT_CCWS: usize = 256;
/// Most segments one program may have.
pub const MAX_SEGMENTS: usize = 16;
/// Most data bytes all CCWs of a program may designate together.
pub const MAX_DATA_BYTES: u64 = 16 << 20;
/// Size of a CCW in guest memory.
pub const CCW_SIZE: u64 = 8;

/// Why a START is refused. Each maps to the [`ProgramErrorCode`] the
/// frontend receives with a unit-exception response.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TranslateError {
    /// A facility the backend does not implement.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The program exceeds a translator limit.
    #[error("program too large: {0}")]
    TooLarge(&'static str),
}

impl TranslateError {
    /// The protocol's code for this error.
    pub fn code(&self) -> ProgramErrorCode {
        match self {
            Self::Unsupported(_) => ProgramErrorCode::Unsupported,
            Self::TooLarge(_) => ProgramErrorCode::TooLarge,
        }
    }
}

/// Direction of a command's data transfer, from the low bits of the command
/// code (POPs: write xxxxxx01, read xxxxxx10, control xxxxxx11, sense
/// xxxx0100, TIC xxxx1000, read backward xxxx1100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From guest memory to the device (write, control).
    Out,
    /// From the device into guest memory (read, sense, read backward).
    In,
}

impl Direction {
    /// Direction of a command code; `None` for TIC and invalid codes.
    #[inline]
    pub fn of(cmd: u8) -> Option<Self> {
        // By the low four bits: xxxx0000 invalid, xx01 write, xx10 read,
        // xx11 control, 0100 sense, 1000 TIC, 1100 read backward. So: low
        // three bits zero is no command; odd codes (write, control) send,
        // even ones receive.
        if cmd & 0x07 == 0 {
            None
        } else if cmd & 1 == 1 {
            Some(Self::Out)
        } else {
            Some(Self::In)
        }
    }
}

/// A piece of a CCW's data area in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPiece {
    /// Guest address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// How a CCW designates its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// The CDA is the data address.
    Direct,
    /// The CDA designates an IDAL.
    Indirect {
        /// Format-2 (64-bit) IDAWs.
        format2: bool,
        /// Block size in bytes (2048 or 4096).
        block: u16,
        /// Guest address of the IDAL (a CCW's 31-bit data address).
        idal: u32,
    },
}

/// What a program entry is, decoded ([`ProgramCcw::kind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CcwKind {
    /// A command with its data area.
    Command {
        /// Command code.
        cmd: u8,
        /// Flags.
        flags: CcwFlags,
        /// Byte count.
        count: u16,
        /// Transfer direction.
        direction: Direction,
        /// Direct or indirect addressing.
        addressing: Addressing,
        /// Indexes into [`ChannelProgram::pieces`]; empty when the CCW
        /// accesses no storage (zero count, NOP, skipped input).
        data: Range<u32>,
    },
    /// Transfer in channel to another entry.
    Tic {
        /// Index of the target entry.
        target: u32,
    },
    /// The channel detects a program error when it reaches this point.
    Check {
        /// What is wrong (for the log and the CCW trace).
        reason: &'static str,
    },
}

/// One entry of a translated program: a CCW as fetched, or a check point.
///
/// Kept in a packed form, read through [`ProgramCcw::kind`]: a program has
/// up to thousands of entries and the translator writes one per CCW, so an
/// entry is the fetched CCW word and one word of address, data range and
/// kind bits (16 bytes) rather than a decoded enum (the decoded form's dozen
/// field stores were a quarter of the time of translating a common CCW).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProgramCcw {
    /// A command: the CCW in the format-1 layout (command code, flags,
    /// count, data address). A TIC: the target entry. A check point: the
    /// reason's index in [`check::ALL`].
    word: u64,
    /// The guest address, a command's data pieces and the kind ([`place`]).
    place: u64,
}

/// The fields of [`ProgramCcw::place`], low bits first.
mod place {
    /// Bits 0-32: the guest address the CCW was (or would have been)
    /// fetched from: a 31-bit or 24-bit CCW address, plus up to a segment.
    pub const ADDR_BITS: u32 = 33;
    /// Bits 33-50: a command's first data piece in
    /// [`super::ChannelProgram::pieces`].
    pub const PIECE_SHIFT: u32 = ADDR_BITS;
    pub const PIECE_BITS: u32 = 18;
    /// Bits 51-56: how many data pieces (at most 33).
    pub const PIECES_SHIFT: u32 = PIECE_SHIFT + PIECE_BITS;
    pub const PIECES_BITS: u32 = 6;
    /// Bits 57-61: the [`super::entry`] bits.
    pub const ENTRY_SHIFT: u32 = PIECES_SHIFT + PIECES_BITS;

    /// Mask of a field `bits` wide.
    pub const fn mask(bits: u32) -> u64 {
        (1 << bits) - 1
    }
}

// A program has at most 16 × 256 commands of at most 33 pieces each, and a
// CCW address is at most 32 bits plus a segment: the fields hold them all.
const _: () = {
    assert!(MAX_SEGMENTS * MAX_SEGMENT_CCWS * 33 <= 1 << place::PIECE_BITS);
    assert!(33 < 1 << place::PIECES_BITS);
    assert!(place::ENTRY_SHIFT + 5 <= 64);
};

/// The entry bits of [`ProgramCcw::place`].
mod entry {
    /// The entry is a command (with [`IN`], [`FORMAT2`], [`BLOCK_4K`]).
    pub const COMMAND: u64 = 0;
    /// The entry is a TIC.
    pub const TIC: u64 = 1;
    /// The entry is a check point.
    pub const CHECK: u64 = 2;
    /// Mask of the entry kinds.
    pub const KIND: u64 = 3;
    /// A command that moves data into guest memory.
    pub const IN: u64 = 1 << 2;
    /// Indirect addressing uses format-2 IDAWs.
    pub const FORMAT2: u64 = 1 << 3;
    /// Indirect addressing uses 4 KiB blocks.
    pub const BLOCK_4K: u64 = 1 << 4;
}

impl ProgramCcw {
    /// A command: its CCW, direction, the IDAW mode of the program and its
    /// data pieces.
    pub(crate) fn command(
        addr: u64,
        ccw: Ccw,
        direction: Direction,
        mode: Mode,
        data: Range<u32>,
    ) -> Self {
        let [c0, c1] = ccw.count.to_be_bytes();
        let [a0, a1, a2, a3] = ccw.cda.to_be_bytes();
        Self {
            word: u64::from_be_bytes([ccw.cmd, ccw.flags.bits(), c0, c1, a0, a1, a2, a3]),
            place: Self::place(addr, command_entry(direction, mode))
                | u64::from(data.start) << place::PIECE_SHIFT
                | u64::from(data.end - data.start) << place::PIECES_SHIFT,
        }
    }

    /// A TIC to entry `target`.
    pub(crate) fn tic(addr: u64, target: u32) -> Self {
        Self {
            word: u64::from(target),
            place: Self::place(addr, entry::TIC),
        }
    }

    /// A check point; `reason` is one of [`check::ALL`].
    pub(crate) fn check(addr: u64, reason: &'static str) -> Self {
        let index = check::ALL.iter().position(|r| *r == reason);
        debug_assert!(index.is_some(), "unlisted check reason {reason:?}");
        let index = index.unwrap_or(0);
        Self {
            word: u64::try_from(index).unwrap_or(0),
            place: Self::place(addr, entry::CHECK),
        }
    }

    /// The place word of an entry without data pieces.
    #[inline]
    fn place(addr: u64, entry: u64) -> u64 {
        debug_assert!(
            addr <= place::mask(place::ADDR_BITS),
            "CCW address {addr:#x}"
        );
        addr & place::mask(place::ADDR_BITS) | entry << place::ENTRY_SHIFT
    }

    /// The guest address the CCW was (or would have been) fetched from.
    #[inline]
    pub fn addr(&self) -> u64 {
        self.place & place::mask(place::ADDR_BITS)
    }

    /// The [`entry`] bits.
    #[inline]
    fn entry(&self) -> u64 {
        self.place >> place::ENTRY_SHIFT
    }

    /// A command's data pieces in [`ChannelProgram::pieces`].
    #[inline]
    fn data(&self) -> Range<u32> {
        let field = |shift, bits| (self.place >> shift) & place::mask(bits);
        let first = field(place::PIECE_SHIFT, place::PIECE_BITS);
        let len = field(place::PIECES_SHIFT, place::PIECES_BITS);
        // The fields are 18 and 6 bits wide.
        let first = u32::try_from(first).unwrap_or(0);
        first..first + u32::try_from(len).unwrap_or(0)
    }

    /// What the entry is.
    #[inline]
    pub fn kind(&self) -> CcwKind {
        let meta = self.entry();
        match meta & entry::KIND {
            entry::TIC => CcwKind::Tic {
                target: u32::try_from(self.word).unwrap_or(u32::MAX),
            },
            entry::CHECK => CcwKind::Check {
                reason: check::ALL
                    .get(usize::try_from(self.word).unwrap_or(0))
                    .copied()
                    .unwrap_or(check::ALL[0]),
            },
            _ => {
                let [cmd, flags, c0, c1, a0, a1, a2, a3] = self.word.to_be_bytes();
                let flags = CcwFlags::from_bits_truncate(flags);
                let cda = u32::from_be_bytes([a0, a1, a2, a3]);
                CcwKind::Command {
                    cmd,
                    flags,
                    count: u16::from_be_bytes([c0, c1]),
                    direction: if meta & entry::IN != 0 {
                        Direction::In
                    } else {
                        Direction::Out
                    },
                    addressing: if flags.contains(CcwFlags::IDA) {
                        Addressing::Indirect {
                            format2: meta & entry::FORMAT2 != 0,
                            block: if meta & entry::BLOCK_4K != 0 {
                                4096
                            } else {
                                2048
                            },
                            idal: cda,
                        }
                    } else {
                        Addressing::Direct
                    },
                    data: self.data(),
                }
            }
        }
    }

    /// Whether the entry is a TIC.
    #[inline]
    pub fn is_tic(&self) -> bool {
        self.entry() & entry::KIND == entry::TIC
    }
}

impl std::fmt::Debug for ProgramCcw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgramCcw")
            .field("addr", &self.addr())
            .field("kind", &self.kind())
            .finish()
    }
}

/// The [`entry`] bits of a command.
#[inline]
fn command_entry(direction: Direction, mode: Mode) -> u64 {
    let mut meta = entry::COMMAND;
    if direction == Direction::In {
        meta |= entry::IN;
    }
    if mode.format2_idaw {
        meta |= entry::FORMAT2;
    }
    if mode.block == 4096 {
        meta |= entry::BLOCK_4K;
    }
    meta
}

/// A run of consecutive CCWs fetched from one guest address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest address of the first CCW.
    pub addr: u64,
    /// Entries `first..first + len` of [`ChannelProgram::ccws`].
    pub first: u32,
    /// Number of entries.
    pub len: u32,
}

/// A validated channel program, ready for a host subchannel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelProgram {
    /// The guest's ORB.
    pub orb: Orb,
    /// Format-1 CCWs (else format 0).
    pub format1: bool,
    /// Every entry, segment by segment; entry 0 is the first CCW.
    pub ccws: Vec<ProgramCcw>,
    /// The segments.
    pub segments: Vec<Segment>,
    /// Data pieces of all CCWs.
    pub pieces: Vec<DataPiece>,
    /// Total bytes designated.
    pub data_bytes: u64,
}

impl ChannelProgram {
    /// Whether an SCSW channel-program address can designate a point in
    /// this program: one CCW past an entry (what the channel stores once it
    /// executed or rejected that CCW), or the first CCW.
    pub fn contains_cpa(&self, cpa: u32) -> bool {
        let cpa = u64::from(cpa);
        cpa == u64::from(self.orb.cpa) || self.ccws.iter().any(|c| c.addr() + CCW_SIZE == cpa)
    }

    /// Index of the entry fetched from guest address `addr`.
    pub fn index_of(&self, addr: u64) -> Option<usize> {
        self.ccws.iter().position(|c| c.addr() == addr)
    }

    /// The data pieces of entry `index`.
    pub fn data(&self, index: usize) -> &[DataPiece] {
        let entry = &self.ccws[index];
        if entry.entry() & entry::KIND != entry::COMMAND {
            return &[];
        }
        let data = entry.data();
        let [start, end] = [data.start, data.end].map(|i| usize::try_from(i).unwrap_or(0));
        &self.pieces[start..end]
    }

    /// Index of the entry fetched from the doubleword after entry `index`,
    /// when the program holds it: the next entry of the same segment.
    pub fn sequential(&self, index: usize) -> Option<usize> {
        let next = index + 1;
        self.segments.iter().find_map(|segment| {
            let first = usize::try_from(segment.first).ok()?;
            let end = first + usize::try_from(segment.len).ok()?;
            (first <= index && next < end).then_some(next)
        })
    }

    /// Follow TICs from entry `index` to the entry the channel executes.
    /// A TIC that reaches another TIC was made a check point by the
    /// translator, so this terminates.
    pub fn resolve(&self, index: usize) -> usize {
        let entry = &self.ccws[index];
        if entry.is_tic() {
            usize::try_from(entry.word).unwrap_or(index)
        } else {
            index
        }
    }
}

/// Reading of one ORB: what the translation depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mode {
    pub(crate) format1: bool,
    /// Format-2 IDAWs (ORB H).
    pub(crate) format2_idaw: bool,
    /// IDAW block size (2048 or 4096).
    pub(crate) block: u64,
}

impl Mode {
    /// Bytes per IDAW.
    #[inline]
    fn idaw_width(self) -> usize {
        if self.format2_idaw { 8 } else { 4 }
    }

    /// The block size as [`Addressing::Indirect`] records it.
    #[inline]
    fn block_u16(self) -> u16 {
        if self.block == 2048 { 2048 } else { 4096 }
    }
}

fn check_orb(orb: &Orb) -> Result<Mode, TranslateError> {
    // Whitelist: every ORB control is either implemented or refused here.
    if orb.transport_mode {
        return Err(TranslateError::Unsupported("transport-mode ORB"));
    }
    if orb.suspend {
        return Err(TranslateError::Unsupported("suspend control"));
    }
    if orb.midaw {
        return Err(TranslateError::Unsupported("MIDAW control"));
    }
    if orb.initial_status_interruption {
        return Err(TranslateError::Unsupported("initial-status interruption"));
    }
    if orb.address_limit_checking {
        return Err(TranslateError::Unsupported("address-limit checking"));
    }
    if orb.modification || orb.synchronization || orb.streaming {
        return Err(TranslateError::Unsupported(
            "modification/synchronization/streaming control",
        ));
    }
    // Accepted with no effect: key (no storage keys here), prefetch (the
    // program is always prefetched), suppress-suspended-interruption
    // (meaningless without suspend), incorrect-length-suppression mode
    // (SLI is honoured as in format 1), the ORB extension (not carried).
    let format2_idaw = orb.format2_idaw;
    let block = if !format2_idaw || orb.idaw_2k {
        2048
    } else {
        4096
    };
    Ok(Mode {
        format1: orb.format1,
        format2_idaw,
        block,
    })
}

/// NO OPERATION: a control command that never transfers data.
const NOP: u8 = 0x03;

/// Program-check reasons.
mod check {
    pub const CPA_ALIGNMENT: &str = ALL[0];
    pub const CCW_ADDRESS: &str = ALL[1];
    pub const COMMAND: &str = ALL[2];
    pub const TIC_TO_TIC: &str = ALL[3];
    pub const TIC_ALIGNMENT: &str = ALL[4];
    pub const ZERO_COUNT: &str = ALL[5];
    pub const CD_ZERO_COUNT: &str = ALL[6];
    pub const DATA_ADDRESS: &str = ALL[7];
    pub const IDAL_ALIGNMENT: &str = ALL[8];
    pub const IDAL_ADDRESS: &str = ALL[9];
    pub const IDAW_FORMAT1: &str = ALL[10];
    pub const IDAW_BOUNDARY: &str = ALL[11];
    pub const FLAGS: &str = ALL[12];
    pub const SUSPEND: &str = ALL[13];
    pub const NOT_FETCHED: &str = ALL[14];
    /// Every reason, in the order a check point records it.
    pub const ALL: [&str; 15] = [
        "channel-program address not doubleword aligned",
        "CCW address outside guest RAM",
        "invalid command code",
        "TIC to a TIC",
        "TIC target not doubleword aligned",
        "zero count",
        "zero count with chain data",
        "data address outside guest RAM or addressing mode",
        "IDAL not aligned for its IDAW format",
        "IDAL outside guest RAM",
        "format-1 IDAW with bit 0 set",
        "IDAW after the first not on a block boundary",
        "MIDA flag without MIDAW control",
        "suspend flag without suspend control",
        "beyond the translator's limits (reached only by a skip)",
    ];
}

/// What the builder knows about the next CCW of a segment.
#[derive(Debug, Clone, Copy)]
struct Context {
    /// It continues a data chain of this direction (its command code is
    /// ignored).
    chained: Option<Direction>,
    /// The CCW before it command-chains to it.
    command_chained: bool,
    /// It lies past a TIC: only a status modifier can lead to it, so a
    /// translator limit reached here is a check point, not a refusal.
    speculative: bool,
}

struct Builder<'a> {
    ram: &'a GuestRam,
    mode: Mode,
    program: ChannelProgram,
    /// TIC entries whose target is not resolved yet, with the direction a
    /// data chain running through the TIC carries into the target.
    pending_tics: Vec<(usize, u64, Option<Direction>)>,
    idals: IdalWindow,
    /// The RAM range that held the last data area checked: a program keeps
    /// its data in one range, so most checks are two comparisons.
    data_range: (u64, u64),
    /// Whether runs of common CCWs take [`Builder::common_run`].
    common_path: bool,
    /// Where [`Builder::common_block`] writes a block's entries.
    scratch: Scratch,
}

/// Entries and data pieces of the CCWs a [`BlockCheck`] took, before they
/// are appended to the program.
struct Scratch {
    entries: [ProgramCcw; BULK],
    pieces: [DataPiece; BULK],
}

/// What a [`BlockCheck`] took of a block: how many CCWs, their data bytes,
/// and where it stopped.
struct Taken {
    ccws: usize,
    bytes: u64,
    end: BlockEnd,
}

/// What [`Builder::common_block`] checks a block of CCWs against, for
/// format-2 IDAWs or not, 4 KiB IDAW blocks or 2 KiB. Both checks write
/// the entries and pieces of the CCWs they take into scratch arrays.
struct BlockCheck<'w, const FORMAT2: bool, const BLOCK_4K: bool> {
    /// The IDAL window's bytes and the guest address of the first.
    window: &'w [u8],
    idal_base: u64,
    /// The RAM range data areas are checked against, as `at - low <=
    /// span - count`: one comparison, exact since the range can hold any
    /// count (`span >= u16::MAX`).
    low: u64,
    span: u64,
    /// The first entry's [`ProgramCcw::place`] without entry bits: entry
    /// i's is `place + i * STEP`, i CCWs on and i pieces on (each CCW
    /// here has one piece).
    place: u64,
    /// The entry bits of a command that sends, or receives.
    send: u64,
    receive: u64,
}

impl<const FORMAT2: bool, const BLOCK_4K: bool> BlockCheck<'_, FORMAT2, BLOCK_4K> {
    /// Bytes per IDAW.
    const WIDTH: usize = if FORMAT2 { 8 } else { 4 };
    /// IDAW block size.
    const SIZE: u64 = if BLOCK_4K { 4096 } else { 2048 };
    /// From one entry's place to the next one's.
    const STEP: u64 = CCW_SIZE | 1 << place::PIECE_SHIFT;
    /// Flags that end a run: CD, skip, suspend, MIDA.
    const UNUSUAL: u64 = (CcwFlags::CD.bits() as u64
        | CcwFlags::SKIP.bits() as u64
        | CcwFlags::S.bits() as u64
        | CcwFlags::MIDA.bits() as u64)
        << 48;
    const CC: u64 = (CcwFlags::CC.bits() as u64) << 48;
    const IDA: u64 = (CcwFlags::IDA.bits() as u64) << 48;
    /// The bits of a CCW word a uniform block repeats: command code,
    /// flags but CC, count.
    const HEADER: u64 = !(Self::CC | 0xffff_ffff);

    /// The entry bits of a CCW with this header, if a run may hold it: a
    /// command with a count, none of the [`Self::UNUSUAL`] flags, not a
    /// NOP.
    #[inline(always)]
    fn header(&self, word: u64) -> Option<u64> {
        let [cmd, ..] = word.to_be_bytes();
        if word & Self::UNUSUAL != 0 || word & 0xffff << 32 == 0 || cmd == NOP {
            return None;
        }
        match Direction::of(cmd)? {
            Direction::Out => Some(self.send),
            Direction::In => Some(self.receive),
        }
    }

    /// A block whose CCWs all have the first one's header and, with IDA,
    /// IDALs that follow each other in the window (Linux's block I/O:
    /// READ or WRITE of one block each, IDALs allocated together): each
    /// CCW is compared with the first, and only its IDAW or data address
    /// is checked. Everything or nothing: `None` leaves the block to
    /// [`BlockCheck::careful`].
    #[inline(always)]
    fn uniform(
        &self,
        block: &[u8],
        entries: &mut [ProgramCcw; BULK],
        pieces: &mut [DataPiece; BULK],
    ) -> Option<Taken> {
        let first = u64::from_be_bytes(block.get(..8)?.try_into().ok()?);
        let direction = self.header(first)?;
        let count = (first >> 32) & 0xffff;
        let limit = self.span - count;
        let len = u32::try_from(count).ok()?;
        let mut place = self.place | direction;
        let mut taken = 0;
        let mut end = BlockEnd::Full;
        if first & Self::IDA != 0 {
            let cda = first & 0xffff_ffff;
            let offset = usize::try_from(cda.wrapping_sub(self.idal_base)).ok()?;
            let idals = self
                .window
                .get(offset..offset.checked_add(block.len() / 8 * Self::WIDTH)?)?;
            // Aligned, all below 2 GiB (bit 0 of a format-1 address is an
            // address error), and one block can hold the count.
            let past = cda + u64::try_from(idals.len()).ok()?;
            if cda % Self::WIDTH as u64 != 0 || past > 1 << 31 || count > Self::SIZE {
                return None;
            }
            let room = Self::SIZE - count;
            let mut expected = first & !Self::CC;
            let zipped = block.chunks_exact(8).zip(idals.chunks_exact(Self::WIDTH));
            for (((ccw, idaw), entry), piece) in zipped.zip(entries.iter_mut()).zip(pieces) {
                let word = u64::from_be_bytes(ccw.try_into().ok()?);
                let idaw = idaw_value(idaw);
                if word & !Self::CC != expected
                    || (!FORMAT2 && idaw >= 1 << 31)
                    || idaw & (Self::SIZE - 1) > room
                    || idaw.wrapping_sub(self.low) > limit
                {
                    return None;
                }
                *entry = ProgramCcw { word, place };
                *piece = DataPiece { addr: idaw, len };
                expected += Self::WIDTH as u64;
                place += Self::STEP;
                taken += 1;
                if word & Self::CC == 0 {
                    end = BlockEnd::ChainEnds;
                    break;
                }
            }
        } else {
            for ((ccw, entry), piece) in block.chunks_exact(8).zip(entries.iter_mut()).zip(pieces) {
                let word = u64::from_be_bytes(ccw.try_into().ok()?);
                let cda = word & 0xffff_ffff;
                // The header, and the data area within 31 bits (bit 0 of
                // the address included).
                if (word ^ first) & Self::HEADER != 0
                    || cda + count > 1 << 31
                    || cda.wrapping_sub(self.low) > limit
                {
                    return None;
                }
                *entry = ProgramCcw { word, place };
                *piece = DataPiece { addr: cda, len };
                place += Self::STEP;
                taken += 1;
                if word & Self::CC == 0 {
                    end = BlockEnd::ChainEnds;
                    break;
                }
            }
        }
        Some(Taken {
            ccws: taken,
            bytes: count * taken as u64,
            end,
        })
    }

    /// Any block: CCW by CCW, up to the first one a run may not hold.
    #[inline(always)]
    fn careful(
        &self,
        block: &[u8],
        entries: &mut [ProgramCcw; BULK],
        pieces: &mut [DataPiece; BULK],
    ) -> Taken {
        let mut place = self.place;
        let mut taken = 0;
        let mut bytes = 0;
        let mut end = BlockEnd::Full;
        for ((ccw, entry), piece) in block.chunks_exact(8).zip(entries.iter_mut()).zip(pieces) {
            let Ok(ccw) = <[u8; 8]>::try_from(ccw) else {
                break;
            };
            let word = u64::from_be_bytes(ccw);
            let Some(direction) = self.header(word) else {
                break;
            };
            let count = (word >> 32) & 0xffff;
            let cda = word & 0xffff_ffff;
            let at = if word & Self::IDA != 0 {
                // One IDAW that holds the whole count: the usual 4 KiB
                // block through an aligned IDAW.
                let Some(idaw) = usize::try_from(cda.wrapping_sub(self.idal_base))
                    .ok()
                    .and_then(|offset| self.window.get(offset..offset.checked_add(Self::WIDTH)?))
                else {
                    break;
                };
                let idaw = idaw_value(idaw);
                if cda % Self::WIDTH as u64 != 0
                    || cda >= 1 << 31
                    || (idaw & (Self::SIZE - 1)) + count > Self::SIZE
                    || (!FORMAT2 && idaw >= 1 << 31)
                {
                    break;
                }
                idaw
            } else {
                // Within the 31-bit space (bit 0 of the address included).
                if cda + count > 1 << 31 {
                    break;
                }
                cda
            };
            if at.wrapping_sub(self.low) > self.span - count {
                end = BlockEnd::OutOfRange(at);
                break;
            }
            *entry = ProgramCcw {
                word,
                place: place | direction,
            };
            *piece = DataPiece {
                addr: at,
                len: u32::try_from(count).unwrap_or(0),
            };
            place += Self::STEP;
            bytes += count;
            taken += 1;
            if word & Self::CC == 0 {
                end = BlockEnd::ChainEnds;
                break;
            }
        }
        if end == BlockEnd::Full && taken * 8 < block.len() {
            end = BlockEnd::Declined;
        }
        Taken {
            ccws: taken,
            bytes,
            end,
        }
    }
}

/// Bytes of guest memory fetched for IDALs. IDALs of consecutive CCWs
/// usually lie together (Linux allocates them with the CCWs), so one read
/// serves many: a read per IDAL through vm-memory cost more than the rest
/// of the translation of a CCW.
struct IdalWindow {
    base: u64,
    len: usize,
    bytes: [u8; IDAL_WINDOW],
}

/// Size of the IDAL window: a multiple of the longest IDAL (33 format-2
/// IDAWs, 264 bytes), small enough that a refill for a scattered IDAL stays
/// cheap.
const IDAL_WINDOW: usize = 1024;

/// Bytes of the longest IDAL: 33 format-2 IDAWs.
const LONGEST_IDAL: usize = 33 * 8;

/// CCWs [`Builder::common_run`] checks before it records them.
const BULK: usize = 32;

/// Where [`Builder::common_block`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockEnd {
    /// It took every CCW of the block; the last one chains on.
    Full,
    /// After a CCW that ends the chain.
    ChainEnds,
    /// At a CCW whose data area (at this address) is outside the RAM range
    /// it checked against.
    OutOfRange(u64),
    /// At a CCW it does not take for another reason.
    Declined,
}

impl IdalWindow {
    /// The IDAL at `addr`, `width` bytes per IDAW, as long as `idaws`
    /// computes from its first IDAW. The first IDAW and the rest come from
    /// one fetch, so a guest rewriting its IDAL meanwhile cannot make the
    /// count of IDAWs disagree with the IDAWs used (the 2026 double-fetch
    /// bug class). `None` when the IDAL is not inside guest RAM.
    fn idal(
        &mut self,
        ram: &GuestRam,
        addr: u64,
        width: usize,
        idaws: impl Fn(u64) -> u64,
    ) -> Option<&[u8]> {
        if !self.holds(addr, width) && !self.refill(ram, addr) {
            return None;
        }
        loop {
            let offset = usize::try_from(addr - self.base).ok()?;
            let first = idaw_value(self.bytes.get(offset..offset + width)?);
            let len = usize::try_from(idaws(first)).ok()? * width;
            if self.holds(addr, len) {
                return self.bytes.get(offset..offset + len);
            }
            // Not all in this fetch: fetch again from the IDAL's start
            // (once: a window that starts there and still misses the end
            // means guest RAM ends first).
            if self.base == addr || !self.refill(ram, addr) {
                return None;
            }
        }
    }

    fn holds(&self, addr: u64, len: usize) -> bool {
        addr >= self.base
            && usize::try_from(addr - self.base)
                .ok()
                .and_then(|offset| offset.checked_add(len))
                .is_some_and(|end| end <= self.len)
    }

    /// Fetch the window again so that it holds the IDAL at `addr`: from
    /// `addr` on, or, when `addr` lies below the window (IDALs that
    /// descend), ending a longest IDAL past it.
    fn refill(&mut self, ram: &GuestRam, addr: u64) -> bool {
        let start = if self.len > 0 && addr < self.base {
            let below = (IDAL_WINDOW - LONGEST_IDAL) as u64;
            let range_start = ram.range_of(addr).map_or(addr, |(start, _)| start);
            addr.saturating_sub(below).max(range_start)
        } else {
            addr
        };
        let len = ram.contiguous_len(start, IDAL_WINDOW as u64);
        let len = usize::try_from(len).unwrap_or(0);
        if len == 0 || ram.read(start, &mut self.bytes[..len]).is_err() {
            self.len = 0;
            return false;
        }
        self.base = start;
        self.len = len;
        true
    }
}

/// Whether `[addr, addr + len)` lies in guest RAM, trying the range of the
/// previous check first.
fn in_ram(ram: &GuestRam, range: &mut (u64, u64), addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len.max(1)) else {
        return false;
    };
    if addr >= range.0 && end <= range.1 {
        return true;
    }
    match ram.range_of(addr) {
        Some(found) => {
            *range = found;
            end <= found.1
        }
        None => false,
    }
}

/// Translate the program the ORB designates.
pub fn translate(orb: &Orb, ram: &GuestRam) -> Result<ChannelProgram, TranslateError> {
    translate_with(orb, ram, true)
}

/// [`translate`] without [`Builder::common_run`]: every CCW through the
/// general path, for the tests and the fuzz target that prove both build
/// the same program.
#[doc(hidden)]
pub fn translate_general_only(orb: &Orb, ram: &GuestRam) -> Result<ChannelProgram, TranslateError> {
    translate_with(orb, ram, false)
}

fn translate_with(
    orb: &Orb,
    ram: &GuestRam,
    common_path: bool,
) -> Result<ChannelProgram, TranslateError> {
    let mode = check_orb(orb)?;
    let mut builder = Builder {
        ram,
        mode,
        program: ChannelProgram {
            orb: *orb,
            format1: mode.format1,
            // Sized by the first segment's fetch (one allocation each).
            ccws: Vec::new(),
            segments: Vec::with_capacity(1),
            pieces: Vec::new(),
            data_bytes: 0,
        },
        pending_tics: Vec::new(),
        idals: IdalWindow {
            base: 0,
            len: 0,
            bytes: [0; IDAL_WINDOW],
        },
        // Most programs keep their data in the range at 0: no lookup
        // before the first data area.
        data_range: ram.range_of(0).unwrap_or((0, 0)),
        common_path,
        scratch: Scratch {
            entries: [ProgramCcw { word: 0, place: 0 }; BULK],
            pieces: [DataPiece { addr: 0, len: 0 }; BULK],
        },
    };
    builder.build(u64::from(orb.cpa))?;
    Ok(builder.program)
}

impl Builder<'_> {
    fn build(&mut self, cpa: u64) -> Result<(), TranslateError> {
        if cpa % CCW_SIZE != 0 {
            self.push_check(cpa, check::CPA_ALIGNMENT);
            return Ok(());
        }
        self.segment(cpa, None)?;
        // Resolve TICs; every unresolved target starts a new segment.
        while let Some((tic, target, chained)) = self.pending_tics.pop() {
            let index = match self.program.index_of(target) {
                Some(existing) => existing,
                None => {
                    let first = self.program.ccws.len();
                    if target % CCW_SIZE != 0 {
                        self.push_check(target, check::TIC_ALIGNMENT);
                    } else {
                        self.segment(target, chained)?;
                    }
                    first
                }
            };
            let index = if self.program.ccws[index].is_tic() {
                // A TIC may not designate another TIC: the channel
                // program-checks when it fetches the second one.
                let at = self.program.ccws[index].addr();
                self.push_check_detached(at, check::TIC_TO_TIC)
            } else {
                index
            };
            self.program.ccws[tic] = ProgramCcw::tic(
                self.program.ccws[tic].addr(),
                u32::try_from(index).unwrap_or(u32::MAX),
            );
        }
        Ok(())
    }

    fn push_check(&mut self, addr: u64, reason: &'static str) {
        let first = self.program.ccws.len();
        self.program.ccws.push(ProgramCcw::check(addr, reason));
        self.program.segments.push(Segment {
            addr,
            first: u32::try_from(first).unwrap_or(u32::MAX),
            len: 1,
        });
    }

    /// A check point reached only through a link (TIC to TIC): not part of
    /// any segment, so that looking the address up still finds the TIC.
    fn push_check_detached(&mut self, addr: u64, reason: &'static str) -> usize {
        self.program.ccws.push(ProgramCcw::check(addr, reason));
        self.program.ccws.len() - 1
    }

    /// Fetch one segment starting at `start`. `chained` is the direction
    /// of a data chain that continues into its first CCW.
    fn segment(&mut self, start: u64, chained: Option<Direction>) -> Result<(), TranslateError> {
        if self.program.segments.len() == MAX_SEGMENTS {
            return Err(TranslateError::TooLarge("more than 16 segments"));
        }
        let first = self.program.ccws.len();
        self.program.segments.push(Segment {
            addr: start,
            first: u32::try_from(first).unwrap_or(u32::MAX),
            len: 0,
        });
        // Fetch the CCWs in one read, up to the segment limit or the end of
        // contiguous RAM: a chain that runs past it program-checks there.
        let max = (MAX_SEGMENT_CCWS as u64) * CCW_SIZE;
        let available = self.ram.contiguous_len(start, max) / CCW_SIZE;
        let mut raw = [0u8; MAX_SEGMENT_CCWS * 8];
        let bytes = usize::try_from(available * CCW_SIZE).unwrap_or(0);
        if bytes > 0 && self.ram.read(start, &mut raw[..bytes]).is_err() {
            self.push_check_in_segment(start, check::CCW_ADDRESS);
            return Ok(());
        }
        // Room for every CCW the segment can hold: growing by doubling cost
        // more than the allocation (at most 256 entries).
        let room = usize::try_from(available).unwrap_or(0) + 1;
        self.program.ccws.reserve(room);
        self.program.pieces.reserve(room);
        let mut context = Context {
            chained,
            command_chained: false,
            speculative: false,
        };
        let mut slot = 0usize;
        loop {
            let addr = start + CCW_SIZE * slot as u64;
            if slot == MAX_SEGMENT_CCWS {
                if context.speculative {
                    // Past a TIC only a status modifier can lead here; the
                    // channel would program-check if it ever did.
                    self.push_check_in_segment(addr, check::NOT_FETCHED);
                    break;
                }
                return Err(TranslateError::TooLarge(
                    "more than 256 chained CCWs in a segment",
                ));
            }
            if slot as u64 >= available {
                self.push_check_in_segment(addr, check::CCW_ADDRESS);
                break;
            }
            if self.common_path && context.chained.is_none() && self.mode.format1 {
                let end = usize::try_from(available)
                    .unwrap_or(0)
                    .min(MAX_SEGMENT_CCWS);
                let (taken, chains) = self.common_run(start, &raw[..end * 8], slot);
                if taken > 0 {
                    slot += taken;
                    if !chains {
                        break;
                    }
                    context = Context {
                        chained: None,
                        command_chained: true,
                        speculative: context.speculative,
                    };
                    continue;
                }
            }
            let bytes = &raw[slot * 8..slot * 8 + 8];
            let ccw = match Ccw::decode(self.mode.format1, bytes) {
                Ok(ccw) => ccw,
                Err(_) => {
                    // Format-1 CDA bit 0 set: an invalid address.
                    self.push_check_in_segment(addr, check::DATA_ADDRESS);
                    break;
                }
            };
            slot += 1;
            if ccw.is_tic(self.mode.format1) {
                let target = u64::from(ccw.cda);
                let index = self.program.ccws.len();
                self.push_in_segment(ProgramCcw::tic(addr, u32::MAX));
                self.pending_tics.push((index, target, context.chained));
                // A status modifier on the CCW before the TIC skips it (a
                // search loop: SEARCH; TIC *-8; READ), and so does an
                // orientation loop back into this segment: the CCW after the
                // TIC must be there. It is reached by command chaining only.
                let backwards = target >= start && target < addr;
                if backwards || context.command_chained {
                    context = Context {
                        chained: None,
                        command_chained: false,
                        speculative: true,
                    };
                    continue;
                }
                break;
            }
            match self.command(addr, ccw, &context)? {
                Some(next) => context = next,
                None => break,
            }
        }
        Ok(())
    }

    fn push_in_segment(&mut self, entry: ProgramCcw) {
        self.program.ccws.push(entry);
        if let Some(segment) = self.program.segments.last_mut() {
            segment.len += 1;
        }
    }

    fn push_check_in_segment(&mut self, addr: u64, reason: &'static str) {
        self.push_in_segment(ProgramCcw::check(addr, reason));
    }

    /// A run of common CCWs, from `slot` of the segment fetched into `raw`
    /// on: format-1 commands with a count, no data chaining, skip, suspend
    /// or MIDA flag, not NOPs, with one data piece (direct, or one IDAW
    /// from the IDAL window) in the RAM range of the previous data area.
    /// Records them and returns how many it took and whether the last one
    /// command-chains. It stops before the first CCW that is not common,
    /// leaving it to [`Builder::command`], which decides every case.
    ///
    /// Most channel programs are such CCWs only (Linux's block I/O: one
    /// 4 KiB block per CCW). They are taken in blocks of [`BULK`]
    /// ([`BlockCheck`]): a block whose CCWs repeat the first one's header
    /// with IDALs in a row is checked by comparing each CCW with the first
    /// and checking its data address; any other block CCW by CCW. Entries
    /// are written to scratch arrays and appended a block at a time, which
    /// keeps the loops' state in registers. It is instantiated per IDAW
    /// format and block size, so widths, masks and shifts are constants.
    fn common_run(&mut self, start: u64, raw: &[u8], slot: usize) -> (usize, bool) {
        match (self.mode.format2_idaw, self.mode.block == 4096) {
            (true, true) => self.common_run_in::<true, true>(start, raw, slot),
            (true, false) => self.common_run_in::<true, false>(start, raw, slot),
            (false, true) => self.common_run_in::<false, true>(start, raw, slot),
            (false, false) => self.common_run_in::<false, false>(start, raw, slot),
        }
    }

    /// [`Builder::common_run`] for format-2 IDAWs or not, 4 KiB blocks or
    /// 2 KiB.
    #[inline(never)]
    fn common_run_in<const FORMAT2: bool, const BLOCK_4K: bool>(
        &mut self,
        start: u64,
        raw: &[u8],
        slot: usize,
    ) -> (usize, bool) {
        let width = if FORMAT2 { 8 } else { 4 };
        let mut next = slot;
        let mut chains = false;
        loop {
            // As many CCWs as cannot pass the data limit even at the
            // largest count; near the limit the general path checks each.
            let room = (MAX_DATA_BYTES - self.program.data_bytes) / u64::from(u16::MAX);
            let len = usize::try_from(room).unwrap_or(BULK).min(BULK) * 8;
            let rest = raw.get(next * 8..).unwrap_or(&[]);
            let block = rest.get(..len.min(rest.len())).unwrap_or(&[]);
            let Some(first) = block.get(..8) else {
                break;
            };
            // IDALs of consecutive CCWs lie together: a block whose first
            // IDAL is past the window moves the window there.
            if first[1] & CcwFlags::IDA.bits() != 0 {
                let idal = u64::from(u32::from_be_bytes([first[4], first[5], first[6], first[7]]));
                if !self.idals.holds(idal, width) {
                    self.idals.refill(self.ram, idal);
                }
            }
            let addr = start + CCW_SIZE * next as u64;
            let (taken, end) = self.common_block::<FORMAT2, BLOCK_4K>(addr, block);
            next += taken;
            if taken > 0 {
                chains = end != BlockEnd::ChainEnds;
            }
            match end {
                BlockEnd::Full => {}
                // A data area in another RAM range: check the block from
                // there against that range.
                BlockEnd::OutOfRange(at) => match self.ram.range_of(at) {
                    Some(range) if range != self.data_range => self.data_range = range,
                    _ => break,
                },
                _ => break,
            }
        }
        (next - slot, chains)
    }

    /// Check the CCWs of `block` (fetched from `addr` on), record the
    /// common prefix, and return its length and where it stopped.
    #[inline(always)]
    fn common_block<const FORMAT2: bool, const BLOCK_4K: bool>(
        &mut self,
        addr: u64,
        block: &[u8],
    ) -> (usize, BlockEnd) {
        let (low, high) = self.data_range;
        if high - low < u64::from(u16::MAX) {
            return (0, BlockEnd::Declined);
        }
        let [send, receive] = [Direction::Out, Direction::In]
            .map(|direction| command_entry(direction, self.mode) << place::ENTRY_SHIFT);
        let first_piece = u64::try_from(self.program.pieces.len()).unwrap_or(0);
        let check = BlockCheck::<FORMAT2, BLOCK_4K> {
            window: self.idals.bytes.get(..self.idals.len).unwrap_or(&[]),
            idal_base: self.idals.base,
            low,
            span: high - low,
            place: addr | first_piece << place::PIECE_SHIFT | 1 << place::PIECES_SHIFT,
            send,
            receive,
        };
        let Scratch { entries, pieces } = &mut self.scratch;
        let Taken {
            ccws: taken,
            bytes,
            end,
        } = check
            .uniform(block, entries, pieces)
            .unwrap_or_else(|| check.careful(block, entries, pieces));
        self.program
            .ccws
            .extend_from_slice(entries.get(..taken).unwrap_or(&[]));
        self.program
            .pieces
            .extend_from_slice(pieces.get(..taken).unwrap_or(&[]));
        self.program.data_bytes += bytes;
        if let Some(segment) = self.program.segments.last_mut() {
            segment.len += u32::try_from(taken).unwrap_or(0);
        }
        (taken, end)
    }

    /// Add a command CCW (or, for a program error, a check point). Returns
    /// the context of the next CCW when the chain continues, `None` when
    /// the segment ends here.
    fn command(
        &mut self,
        addr: u64,
        ccw: Ccw,
        context: &Context,
    ) -> Result<Option<Context>, TranslateError> {
        let flags = ccw.flags;
        // Whitelist of CCW flags. The ORB refused suspend and MIDAW
        // control, so these flags are program errors (POPs: suspend flag
        // without suspend control, MIDA flag without MIDAW control).
        if flags.contains(CcwFlags::S) {
            self.push_check_in_segment(addr, check::SUSPEND);
            return Ok(None);
        }
        if flags.contains(CcwFlags::MIDA) {
            self.push_check_in_segment(addr, check::FLAGS);
            return Ok(None);
        }
        // In a data chain the command code is ignored: the CCW continues
        // the transfer of the command that started the chain.
        let direction = match context.chained {
            Some(direction) => direction,
            None => match Direction::of(ccw.cmd) {
                Some(direction) => direction,
                None => {
                    self.push_check_in_segment(addr, check::COMMAND);
                    return Ok(None);
                }
            },
        };
        if ccw.count == 0 {
            if !self.mode.format1 {
                self.push_check_in_segment(addr, check::ZERO_COUNT);
                return Ok(None);
            }
            if flags.contains(CcwFlags::CD) || context.chained.is_some() {
                self.push_check_in_segment(addr, check::CD_ZERO_COUNT);
                return Ok(None);
            }
        }
        self.program.data_bytes += u64::from(ccw.count);
        if self.program.data_bytes > MAX_DATA_BYTES {
            if context.speculative {
                self.push_check_in_segment(addr, check::NOT_FETCHED);
                return Ok(None);
            }
            return Err(TranslateError::TooLarge("more than 16 MiB of data"));
        }
        let first_piece = self.program.pieces.len();
        let addressing = if flags.contains(CcwFlags::IDA) {
            let format2 = self.mode.format2_idaw;
            Addressing::Indirect {
                format2,
                block: self.mode.block_u16(),
                idal: ccw.cda,
            }
        } else {
            Addressing::Direct
        };
        // A CCW accesses storage only if it moves data: not for a zero
        // count, a NOP, or input with SKIP. The IDAL is fetched all the
        // same when the CCW has one.
        let nop = context.chained.is_none() && ccw.cmd == NOP;
        let moves_data = ccw.count > 0
            && !nop
            && !(direction == Direction::In && flags.contains(CcwFlags::SKIP));
        let fault = match addressing {
            Addressing::Direct if moves_data => self.direct(ccw),
            Addressing::Direct => None,
            Addressing::Indirect { .. } => self.indirect(ccw, moves_data),
        };
        if let Some(reason) = fault {
            self.program.pieces.truncate(first_piece);
            self.push_check_in_segment(addr, reason);
            return Ok(None);
        }
        let data = u32::try_from(first_piece).unwrap_or(u32::MAX)
            ..u32::try_from(self.program.pieces.len()).unwrap_or(u32::MAX);
        self.push_in_segment(ProgramCcw::command(addr, ccw, direction, self.mode, data));
        // CD takes precedence over CC.
        Ok(if flags.contains(CcwFlags::CD) {
            Some(Context {
                chained: Some(direction),
                command_chained: false,
                speculative: context.speculative,
            })
        } else if flags.contains(CcwFlags::CC) {
            Some(Context {
                chained: None,
                command_chained: true,
                speculative: context.speculative,
            })
        } else {
            None
        })
    }

    /// Direct addressing: the data area in guest RAM and within the format's
    /// addressing mode (24-bit for format 0, 31-bit for format 1).
    fn direct(&mut self, ccw: Ccw) -> Option<&'static str> {
        let addr = u64::from(ccw.cda);
        let len = u64::from(ccw.count);
        let limit = if self.mode.format1 { 1 << 31 } else { 1 << 24 };
        if addr + len > limit || !in_ram(self.ram, &mut self.data_range, addr, len) {
            return Some(check::DATA_ADDRESS);
        }
        self.program.pieces.push(DataPiece {
            addr,
            len: u32::from(ccw.count),
        });
        None
    }

    /// Indirect addressing: fetch the IDAL once, exactly as long as the
    /// count needs, and check every block.
    fn indirect(&mut self, ccw: Ccw, moves_data: bool) -> Option<&'static str> {
        let idal = u64::from(ccw.cda);
        let format2 = self.mode.format2_idaw;
        let width = self.mode.idaw_width();
        if idal % (width as u64) != 0 {
            return Some(check::IDAL_ALIGNMENT);
        }
        let block = self.mode.block;
        // Blocks are powers of two: masks and shifts, not divisions (a
        // division per CCW was half the translation time).
        let mask = block - 1;
        let shift = block.trailing_zeros();
        let count = u64::from(ccw.count.max(1));
        let idaws =
            |first: u64| 1 + ((count.saturating_sub(block - (first & mask)) + mask) >> shift);
        let Some(list) = self.idals.idal(self.ram, idal, width, idaws) else {
            return Some(check::IDAL_ADDRESS);
        };
        if !moves_data {
            return None;
        }
        let limit: u64 = if format2 { u64::MAX } else { 1 << 31 };
        let mut remaining = u64::from(ccw.count);
        for (i, idaw) in list.chunks_exact(width).enumerate() {
            let addr = idaw_value(idaw);
            if !format2 && addr & 0x8000_0000 != 0 {
                return Some(check::IDAW_FORMAT1);
            }
            if i > 0 && addr & mask != 0 {
                return Some(check::IDAW_BOUNDARY);
            }
            let len = remaining.min(block - (addr & mask));
            if addr.checked_add(len).is_none_or(|end| end > limit)
                || !in_ram(self.ram, &mut self.data_range, addr, len)
            {
                return Some(check::DATA_ADDRESS);
            }
            self.program.pieces.push(DataPiece {
                addr,
                len: u32::try_from(len).unwrap_or(0),
            });
            remaining -= len;
        }
        None
    }
}

/// The address in a format-2 (8-byte) or format-1 (4-byte) IDAW.
fn idaw_value(bytes: &[u8]) -> u64 {
    // Whole-word loads: a byte-by-byte fold was a fifth of the time.
    if let Ok(format2) = <[u8; 8]>::try_from(bytes) {
        u64::from_be_bytes(format2)
    } else if let Ok(format1) = <[u8; 4]>::try_from(bytes) {
        u64::from(u32::from_be_bytes(format1))
    } else {
        bytes.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b))
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
