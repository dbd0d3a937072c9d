//! The host channel program the `vfio` host submits for a translated guest
//! program, and the way back from the addresses the channel reports to the
//! guest's.
//!
//! # Address spaces
//!
//! The `vfio` host maps guest RAM into a VFIO type-1 container: every guest
//! RAM region becomes an IOMMU mapping at some I/O virtual address (IOVA),
//! page aligned, and in general *not* at the guest address. [`IovaMap`]
//! models that table. Besides guest RAM the container maps a *program
//! window*: the backend's own memory that holds the host CCWs and IDALs,
//! filled anew for every START from [`HostProgram::image`]. The window must
//! lie entirely below 2 GiB, because host CCWs are format-1 CCWs (31-bit
//! CDAs: the IDAL addresses and TIC targets) and the ORB's CPA is 31 bits;
//! [`IovaMap::new`] and [`HostProgram::build`] refuse it otherwise
//! ([`LayoutError::Above2G`]).
//!
//! # Layout of the program area
//!
//! ```text
//! program_iova (doubleword aligned, inside the program window, < 2 GiB)
//! |
//! v
//! +---------------------------- CCW area -----------------------------+
//! | run 0 (segment 0): entry 0 | entry 1 | ... | entry n-1 | fence | pad |
//! | run 1 (segment 1): entry n | ...           | fence | pad           |
//! | run 2 (a check not in any segment, TIC to TIC): check | fence | pad |
//! +---------------------------- IDAL area ----------------------------+
//! | IDAL of entry 0: format-2 IDAW, IDAW, ...  (8 bytes each)          |
//! | IDAL of entry 1: ...  (one IDAL per command, in entry order)       |
//! +------------- zero padding up to a 4 KiB boundary -----------------+
//! | scratch block, 4 KiB of zeros: only when a command moves no data  |
//! +-------------------------------------------------------------------+
//! ```
//!
//! * **One host CCW per entry**, in the order of [`ChannelProgram::ccws`],
//!   grouped into *runs*: each guest segment is one run, so its entries are
//!   consecutive host CCWs and sequential execution (command chaining, data
//!   chaining, the status modifier's skip) and "CPA = last CCW + 8" mean
//!   the same on both sides. A check entry outside every segment (the
//!   translator's TIC-to-TIC check point) is a run of its own.
//! * **Two fence slots after every run**, both all-zero doublewords (command
//!   code 0x00, count 0). The first is what the channel fetches if it ever
//!   runs off the end of a segment: the only way is a status modifier on the
//!   second-to-last CCW skipping the last one, and the channel then
//!   program-checks on the invalid command code with the CPA one past the
//!   fence, which maps back to the guest segment address + 8 × (len + 1),
//!   exactly what the simulated channel reports in that case. A fence is a
//!   non-chaining non-TIC CCW, so it also ends the segment walk of the
//!   kernel's vfio-ccw translator, which goes on past a TIC pointing back
//!   into its segment (as a check's TIC to itself does) and would otherwise
//!   run into the next run. The second slot (pad) is never
//!   fetched; it keeps "one past the fence" distinct from "the first CCW of
//!   the next run", so every CCW-area address maps back unambiguously: an
//!   address inside run *r* maps to `guest address of r + (address - host
//!   address of r)`, which covers the CPA pointing at a CCW, one past it, and
//!   one past the fence.
//! * **Every command becomes a format-1 CCW with the IDA flag**, the guest's
//!   command code, count, and CD/CC/SLI/SKIP/PCI flags, and a CDA designating
//!   its host IDAL of format-2 IDAWs. IDA is used even where the guest
//!   addressed directly: data IOVAs may be above 2 GiB (a format-1 CDA is 31
//!   bits), and a data area contiguous in guest memory may cross from one
//!   IOMMU mapping into another, at a different IOVA.
//! * **TIC** becomes a host TIC to the host address of the target entry
//!   (orientation loops included: the target is the exact host slot).
//! * **Check** becomes a TIC to itself. POPs: "a CCW specifying transfer in
//!   channel may not be fetched from a location designated by an immediately
//!   preceding transfer in channel ... the program-check condition is
//!   generated" (and a TIC may not be the first CCW of a program either; the
//!   same program check). The TIC is recognised in data chaining as well as in
//!   command chaining, so the channel program-checks on this CCW however it
//!   is reached, with the CPA one past it: the guest's check point + 8, as
//!   the simulated channel reports. An invalid command code (0x00) would not
//!   do: the command code of a CCW fetched for data chaining is ignored.
//!
//! # IDAWs and the block size
//!
//! The host ORB always has C64 = 1 (format-2 IDAWs: guest RAM IOVAs are
//! 64-bit; format-1 IDAWs hold 31 bits). A command's data, the
//! concatenation of its guest pieces, is mapped to IOVA extents (a piece is
//! split where it crosses from one mapping into another, adjacent extents
//! that are contiguous in IOVA space are merged) and cut into IDAWs at block
//! boundaries: the first IDAW may start anywhere in its block, every later
//! one starts on a block boundary and the channel moves to the next IDAW
//! only when it reaches one. So an IDAL can describe the data only if every
//! break between extents lies on a block boundary of the IOVA space.
//!
//! * I2K = 0 (4 KiB blocks, as Linux guests use) whenever that holds for
//!   every command of the program: the common case, one host IDAW per 4 KiB
//!   page. Mappings are page aligned, so breaks at mapping boundaries are
//!   always 4 KiB aligned, and so are the breaks of a guest IDAL with 4 KiB
//!   blocks.
//! * I2K = 1 (2 KiB blocks) when some command's data breaks in the middle of
//!   a 4 KiB block. That happens only with guest IDALs of 2 KiB blocks
//!   (format-1 IDAWs, or format-2 with T = 1) whose blocks are not pairwise
//!   contiguous, e.g. IDAWs 0x3000 and 0x5800: with 4 KiB blocks the channel
//!   would run from 0x3800 on into 0x3fff instead of switching to 0x5800. Every
//!   break is then 2 KiB aligned (guest 2 KiB blocks keep their offset within
//!   the page through a page-aligned mapping), so 2 KiB blocks always work;
//!   the block size is one ORB bit, so it applies to the whole program.
//!
//! A command without data pieces (zero count, NOP, input with SKIP) keeps its
//! count, and its IDAL has as many IDAWs as the count spans (at least one),
//! all designating the scratch block: a valid, block-aligned, mapped address
//! that is neither guest RAM nor the CCW area. The channel does not touch
//! storage for these commands; should it ever, it reads zeros or writes into
//! the scratch block and nowhere else.
//!
//! # The host ORB
//!
//! F = 1, H (C64) = 1, T (I2K) as above, P = 1 (the program is a snapshot,
//! so prefetching changes nothing; the kernel warns about P = 0), key 0
//! (storage keys are not emulated: the guest's key would make the channel
//! store into backend and guest pages of key 0 with a non-zero key, a
//! protection check the simulated channel never reports), the guest's LPM
//! and interruption parameter, and the CPA of entry 0's host CCW. Every
//! other control is zero (the translator refused the rest).
//!
//! # Mapping back
//!
//! * [`HostProgram::guest_cpa`] and [`HostProgram::guest_secondary_ccw`]:
//!   an address in the CCW area maps to the guest address with the same
//!   offset from its run's start.
//! * [`HostProgram::guest_address`], for the ESW failing-storage address:
//!   an IOVA of guest RAM maps back through the container; one in the CCW
//!   area as above; one in an IDAL to the guest IDAW that designates the
//!   same data (or to the guest CCW when the guest addressed directly).
//! * Anything else (the scratch block, the rest of the program window,
//!   unmapped IOVAs) maps to `None`: the caller reports zero rather than a
//!   host address.
//!
//! With the kernel's vfio-ccw the channel really runs the kernel's own copy
//! of this program: the kernel maps the SCSW CPA back to these IOVAs, but
//! leaves host physical addresses in the ESW. Those usually map to `None`
//! here; the guest never sees a host address either way.
//!
//! Read backward (command code xxxx1100) is refused
//! ([`LayoutError::ReadBackward`]): its data area lies *below* the address
//! the CCW designates and its later IDAWs designate the last byte of a block,
//! which the program's forward data pieces do not describe.

use std::ops::Range;

use thiserror::Error;
use vhost_user_ccw_protocol::arch::{CCW_CMD_TIC, Ccw1, CcwFlags, Idaw2, Orb};

use crate::translate::{Addressing, CCW_SIZE, CcwKind, ChannelProgram, DataPiece, ProgramCcw};

/// IOMMU page size: container mappings are aligned to it.
pub const IOMMU_PAGE: u64 = 4096;
/// Host CCWs, IDAL addresses and the CPA are 31-bit: the program area must
/// end at or below this IOVA.
pub const PROGRAM_LIMIT: u64 = 1 << 31;
/// Size (and alignment) of the scratch block.
pub const SCRATCH_LEN: u64 = 4096;
/// Host CCW slots after each run: the fence and the pad.
pub const FENCE_SLOTS: u64 = 2;

/// Size of a format-2 IDAW.
const IDAW_SIZE: u64 = 8;
/// IDAW block sizes.
const BLOCK_4K: u64 = 4096;
const BLOCK_2K: u64 = 2048;
/// The fence: command code 0x00 (invalid), no flags, count 0, CDA 0.
const FENCE: [u8; 8] = [0; 8];
/// Guest flags a host CCW carries over (IDA is always set, S and MIDA are
/// refused by the translator).
const PASSED_FLAGS: CcwFlags = CcwFlags::CD
    .union(CcwFlags::CC)
    .union(CcwFlags::SLI)
    .union(CcwFlags::SKIP)
    .union(CcwFlags::PCI);

/// Why a host program cannot be laid out.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// The program area (or window) does not end at or below 2 GiB.
    #[error(
        "program area {iova:#x}+{len:#x} is not below 2 GiB (format-1 CCWs and the CPA are 31-bit)"
    )]
    Above2G {
        /// Start IOVA.
        iova: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The program area is not inside the container's program window.
    #[error("program area {iova:#x}+{len:#x} is not inside the mapped program window")]
    OutsideWindow {
        /// Start IOVA.
        iova: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The program area does not start on a doubleword boundary.
    #[error("program area IOVA {0:#x} is not doubleword aligned")]
    Misaligned(u32),
    /// A data piece is not (entirely) mapped in the container.
    #[error("guest data {guest:#x}+{len:#x} is not mapped in the container")]
    Unmapped {
        /// Guest address of the piece.
        guest: u64,
        /// Its length.
        len: u64,
    },
    /// A command's data breaks off a 2 KiB boundary in IOVA space: no IDAL
    /// can describe it.
    #[error("data of the CCW at {addr:#x} cannot be described by IDAWs")]
    Unrepresentable {
        /// Guest address of the CCW.
        addr: u64,
    },
    /// A read-backward command that moves data.
    #[error("read backward at {addr:#x} is not supported by the host layout")]
    ReadBackward {
        /// Guest address of the CCW.
        addr: u64,
    },
    /// The program breaks an invariant the translator guarantees.
    #[error("inconsistent channel program: {0}")]
    Inconsistent(&'static str),
    /// The container mapping is invalid.
    #[error("invalid IOVA map: {0}")]
    InvalidMap(&'static str),
}

/// One IOMMU mapping of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IovaRange {
    /// Guest physical start.
    pub guest: u64,
    /// Length in bytes.
    pub len: u64,
    /// IOVA of `guest`.
    pub iova: u64,
}

/// The IOVA window where the program area is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramWindow {
    /// Start IOVA.
    pub iova: u32,
    /// Length in bytes.
    pub len: u32,
}

impl ProgramWindow {
    fn range(self) -> Range<u64> {
        u64::from(self.iova)..u64::from(self.iova) + u64::from(self.len)
    }
}

/// What a VFIO type-1 container maps: guest RAM regions at IOVAs, and the
/// program window. Mappings are page aligned and overlap neither in guest
/// space nor in IOVA space, so both directions are unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IovaMap {
    /// Sorted by guest address. One entry per memory region: small.
    ranges: Vec<IovaRange>,
    program: ProgramWindow,
}

impl IovaMap {
    /// Check and build a map.
    pub fn new(mut ranges: Vec<IovaRange>, program: ProgramWindow) -> Result<Self, LayoutError> {
        for r in &ranges {
            if r.len == 0 {
                return Err(LayoutError::InvalidMap("empty mapping"));
            }
            if r.guest % IOMMU_PAGE != 0 || r.len % IOMMU_PAGE != 0 || r.iova % IOMMU_PAGE != 0 {
                return Err(LayoutError::InvalidMap("mapping not page aligned"));
            }
            if r.guest.checked_add(r.len).is_none() || r.iova.checked_add(r.len).is_none() {
                return Err(LayoutError::InvalidMap("mapping wraps around"));
            }
        }
        ranges.sort_unstable_by_key(|r| r.guest);
        if ranges
            .windows(2)
            .any(|w| w[0].guest + w[0].len > w[1].guest)
        {
            return Err(LayoutError::InvalidMap("guest ranges overlap"));
        }
        let mut iovas: Vec<Range<u64>> = ranges.iter().map(|r| r.iova..r.iova + r.len).collect();
        iovas.sort_unstable_by_key(|r| r.start);
        if iovas.windows(2).any(|w| w[0].end > w[1].start) {
            return Err(LayoutError::InvalidMap("IOVA ranges overlap"));
        }
        let window = program.range();
        if program.len == 0 {
            return Err(LayoutError::InvalidMap("empty program window"));
        }
        if window.end > PROGRAM_LIMIT {
            return Err(LayoutError::Above2G {
                iova: window.start,
                len: u64::from(program.len),
            });
        }
        if window.start % IOMMU_PAGE != 0 || window.end % IOMMU_PAGE != 0 {
            return Err(LayoutError::InvalidMap("program window not page aligned"));
        }
        if iovas
            .iter()
            .any(|r| r.start < window.end && window.start < r.end)
        {
            return Err(LayoutError::InvalidMap("program window overlaps guest RAM"));
        }
        Ok(Self { ranges, program })
    }

    /// The guest RAM mappings, by guest address.
    pub fn ranges(&self) -> &[IovaRange] {
        &self.ranges
    }

    /// The program window.
    pub fn program_window(&self) -> ProgramWindow {
        self.program
    }

    /// The mapping holding guest address `guest`.
    fn range_of(&self, guest: u64) -> Option<&IovaRange> {
        let i = self.ranges.partition_point(|r| r.guest <= guest);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        (guest - r.guest < r.len).then_some(r)
    }

    /// IOVA of `[guest, guest + len)` if the whole range lies in one
    /// mapping (a zero length is checked as one byte).
    pub fn iova(&self, guest: u64, len: u64) -> Option<u64> {
        let r = self.range_of(guest)?;
        let offset = guest - r.guest;
        (offset.checked_add(len.max(1))? <= r.len).then_some(r.iova + offset)
    }

    /// Guest address of a guest-RAM IOVA.
    pub fn guest(&self, iova: u64) -> Option<u64> {
        self.ranges
            .iter()
            .find(|r| iova >= r.iova && iova - r.iova < r.len)
            .map(|r| r.guest + (iova - r.iova))
    }

    /// Append the IOVA extents of a piece, split at mapping boundaries and
    /// merged with the previous extent where contiguous.
    fn extents(&self, piece: DataPiece, out: &mut Vec<Extent>) -> Result<(), LayoutError> {
        let unmapped = LayoutError::Unmapped {
            guest: piece.addr,
            len: u64::from(piece.len),
        };
        let mut guest = piece.addr;
        let mut left = u64::from(piece.len);
        while left > 0 {
            let r = self.range_of(guest).ok_or_else(|| unmapped.clone())?;
            let offset = guest - r.guest;
            let take = left.min(r.len - offset);
            let iova = r.iova + offset;
            match out.last_mut() {
                Some(last) if last.iova + last.len == iova => last.len += take,
                _ => out.push(Extent { iova, len: take }),
            }
            guest += take;
            left -= take;
        }
        Ok(())
    }
}

/// A run of data contiguous in IOVA space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    iova: u64,
    len: u64,
}

/// Whether IDAWs of `block` bytes can describe `extents`: every break
/// between extents on a block boundary.
fn fits(extents: &[Extent], block: u64) -> bool {
    let last = extents.len().saturating_sub(1);
    extents.iter().enumerate().all(|(i, e)| {
        (i == 0 || e.iova % block == 0) && (i == last || (e.iova + e.len) % block == 0)
    })
}

/// Cut extents into IDAWs: `(IOVA, offset in the data stream)`.
fn split(extents: &[Extent], block: u64, mut idaw: impl FnMut(u64, u64)) {
    let mut offset = 0;
    for e in extents {
        let end = e.iova + e.len;
        let mut at = e.iova;
        while at < end {
            idaw(at, offset);
            let next = ((at / block + 1) * block).min(end);
            offset += next - at;
            at = next;
        }
    }
}

/// How many IDAWs `split` yields.
fn idaw_count(extents: &[Extent], block: u64) -> u64 {
    let mut n = 0;
    split(extents, block, |_, _| n += 1);
    n
}

/// A run of host CCW slots: a segment (or a lone check) and its fences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// IOVA of the first slot.
    host: u64,
    /// Guest address the first slot stands for.
    guest: u64,
    /// Slots, fences included.
    slots: u64,
}

/// What a command's IDAL designates.
#[derive(Debug, Clone)]
enum Data {
    /// Not a command.
    None,
    /// IOVA extents of its pieces.
    Extents(Range<usize>),
    /// No data: IDAWs to the scratch block.
    Scratch,
}

/// A host channel program laid out for a VFIO container: the bytes to copy
/// into the program area, the host ORB, and the reverse map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProgram {
    orb: Orb,
    block: u32,
    program_iova: u32,
    ccw_area: Vec<u8>,
    idal_area: Vec<u8>,
    scratch: Option<u32>,
    image_len: u32,
    runs: Vec<Run>,
    /// Host IOVA of each entry's CCW.
    entry_host: Vec<u32>,
    /// For each host IDAW, the guest address it stands for.
    idaw_guest: Vec<u64>,
    map: IovaMap,
}

impl HostProgram {
    /// Lay out `program` at `program_iova` for the container `map`.
    pub fn build(
        program: &ChannelProgram,
        map: &IovaMap,
        program_iova: u32,
    ) -> Result<Self, LayoutError> {
        if u64::from(program_iova) % CCW_SIZE != 0 {
            return Err(LayoutError::Misaligned(program_iova));
        }
        let entries = &program.ccws;
        if entries.first().map(|e| e.addr()) != Some(u64::from(program.orb.cpa)) {
            return Err(LayoutError::Inconsistent(
                "entry 0 is not the CCW at the CPA",
            ));
        }
        let base = u64::from(program_iova);

        // Runs and the host slot of every entry.
        let mut runs = Vec::with_capacity(program.segments.len());
        let mut entry_host = vec![0u64; entries.len()];
        let mut slot = 0u64;
        for (first, len, guest) in plan_runs(program)? {
            runs.push(Run {
                host: base + slot * CCW_SIZE,
                guest,
                slots: len + FENCE_SLOTS,
            });
            for k in 0..len {
                let i = usize::try_from(first + k)
                    .map_err(|_| LayoutError::Inconsistent("entry index"))?;
                entry_host[i] = base + (slot + k) * CCW_SIZE;
            }
            slot += len + FENCE_SLOTS;
        }
        let ccw_len = slot * CCW_SIZE;

        // Data of every command, in IOVA space.
        let mut extents = Vec::with_capacity(program.pieces.len());
        let mut data = Vec::with_capacity(entries.len());
        for entry in entries {
            data.push(plan_data(program, entry, map, &mut extents)?);
        }
        let all_fit = |block| {
            data.iter().all(|d| match d {
                Data::Extents(r) => fits(&extents[r.clone()], block),
                _ => true,
            })
        };
        let block = if all_fit(BLOCK_4K) {
            BLOCK_4K
        } else if all_fit(BLOCK_2K) {
            BLOCK_2K
        } else {
            let addr = entries
                .iter()
                .zip(&data)
                .find(
                    |(_, d)| matches!(d, Data::Extents(r) if !fits(&extents[r.clone()], BLOCK_2K)),
                )
                .map_or(0, |(e, _)| e.addr());
            return Err(LayoutError::Unrepresentable { addr });
        };

        // Sizes: IDAL area, scratch block, whole image.
        let mut idaws = 0u64;
        for (entry, d) in entries.iter().zip(&data) {
            idaws += match d {
                Data::None => 0,
                Data::Extents(r) => idaw_count(&extents[r.clone()], block),
                Data::Scratch => scratch_idaws(entry, block),
            };
        }
        let idal_iova = base + ccw_len;
        let idal_end = idal_iova + idaws * IDAW_SIZE;
        let scratch = data
            .iter()
            .any(|d| matches!(d, Data::Scratch))
            .then(|| idal_end.next_multiple_of(SCRATCH_LEN));
        let end = scratch.map_or(idal_end, |s| s + SCRATCH_LEN);
        let image_len = end - base;
        if end > PROGRAM_LIMIT {
            return Err(LayoutError::Above2G {
                iova: base,
                len: image_len,
            });
        }
        let window = map.program.range();
        if base < window.start || end > window.end {
            return Err(LayoutError::OutsideWindow {
                iova: base,
                len: image_len,
            });
        }
        // Everything below 2 GiB from here on: the conversions cannot fail.
        let low = |v: u64| {
            u32::try_from(v).map_err(|_| LayoutError::Above2G {
                iova: base,
                len: image_len,
            })
        };

        // Emit.
        let mut ccw_area =
            vec![0u8; usize::try_from(ccw_len).map_err(|_| LayoutError::Inconsistent("size"))?];
        let mut idal_area = Vec::with_capacity(usize::try_from(idaws * IDAW_SIZE).unwrap_or(0));
        let mut idaw_guest = Vec::with_capacity(usize::try_from(idaws).unwrap_or(0));
        for (i, (entry, d)) in entries.iter().zip(&data).enumerate() {
            let host = entry_host[i];
            let ccw = match entry.kind() {
                CcwKind::Command {
                    cmd, flags, count, ..
                } => {
                    let cda = low(idal_iova + u64::try_from(idal_area.len()).unwrap_or(0))?;
                    let pieces = program.data(i);
                    let mut push = |iova: u64, offset: Option<u64>| {
                        idal_area.extend_from_slice(&Idaw2(iova).encode());
                        idaw_guest.push(guest_designator(entry, pieces, offset));
                    };
                    match d {
                        Data::Extents(r) => {
                            split(&extents[r.clone()], block, |iova, off| {
                                push(iova, Some(off))
                            });
                        }
                        _ => {
                            let scratch = scratch.unwrap_or(0);
                            for _ in 0..scratch_idaws(entry, block) {
                                push(scratch, None);
                            }
                        }
                    }
                    Ccw1 {
                        cmd,
                        flags: flags.intersection(PASSED_FLAGS).union(CcwFlags::IDA),
                        count,
                        cda,
                    }
                }
                CcwKind::Tic { target } => {
                    let target = usize::try_from(target).unwrap_or(usize::MAX);
                    let to = *entry_host
                        .get(target)
                        .ok_or(LayoutError::Inconsistent("TIC target out of range"))?;
                    tic(low(to)?)
                }
                CcwKind::Check { .. } => tic(low(host)?),
            };
            let at = usize::try_from(host - base).unwrap_or(0);
            ccw_area[at..at + 8].copy_from_slice(&ccw.encode());
        }
        for run in &runs {
            for k in run.slots - FENCE_SLOTS..run.slots {
                let at = usize::try_from(run.host - base + k * CCW_SIZE).unwrap_or(0);
                ccw_area[at..at + 8].copy_from_slice(&FENCE);
            }
        }

        let orb = Orb {
            intparm: program.orb.intparm,
            key: 0,
            format1: true,
            prefetch: true,
            format2_idaw: true,
            idaw_2k: block == BLOCK_2K,
            lpm: program.orb.lpm,
            cpa: low(entry_host[0])?,
            ..Orb::default()
        };
        Ok(Self {
            orb,
            block: low(block)?,
            program_iova,
            ccw_area,
            idal_area,
            scratch: scratch.map(low).transpose()?,
            image_len: low(image_len)?,
            runs,
            entry_host: entry_host.into_iter().map(low).collect::<Result<_, _>>()?,
            idaw_guest,
            map: map.clone(),
        })
    }

    /// The ORB to start the host subchannel with.
    pub fn orb(&self) -> &Orb {
        &self.orb
    }

    /// IDAW block size of the host program (2048 or 4096).
    pub fn block_size(&self) -> u32 {
        self.block
    }

    /// IOVA of the program area (the CCW area starts there).
    pub fn program_iova(&self) -> u32 {
        self.program_iova
    }

    /// The host CCWs, big-endian, for the program area at
    /// [`program_iova`](Self::program_iova).
    pub fn ccw_area(&self) -> &[u8] {
        &self.ccw_area
    }

    /// IOVA of the IDAL area (right after the CCW area).
    pub fn idal_iova(&self) -> u32 {
        let len = u32::try_from(self.ccw_area.len()).unwrap_or(u32::MAX);
        self.program_iova.saturating_add(len)
    }

    /// The host IDALs (format-2 IDAWs), big-endian, for
    /// [`idal_iova`](Self::idal_iova).
    pub fn idal_area(&self) -> &[u8] {
        &self.idal_area
    }

    /// IOVA of the scratch block, if a command needs one.
    pub fn scratch_iova(&self) -> Option<u32> {
        self.scratch
    }

    /// Length of the whole program area image.
    pub fn image_len(&self) -> u32 {
        self.image_len
    }

    /// The whole program area: CCWs, IDALs, zero padding and the zeroed
    /// scratch block, ready to copy to [`program_iova`](Self::program_iova).
    pub fn image(&self) -> Vec<u8> {
        let mut image = vec![0u8; usize::try_from(self.image_len).unwrap_or(0)];
        let ccws = self.ccw_area.len();
        image[..ccws].copy_from_slice(&self.ccw_area);
        image[ccws..ccws + self.idal_area.len()].copy_from_slice(&self.idal_area);
        image
    }

    /// Host IOVA of the CCW of program entry `index`.
    pub fn host_ccw(&self, index: usize) -> Option<u32> {
        self.entry_host.get(index).copied()
    }

    /// The guest CPA for a host SCSW CPA: the same offset from the guest
    /// segment as from its host run (a CPA at a CCW, one past it, or one
    /// past a fence). `None` outside the CCW area.
    pub fn guest_cpa(&self, host_cpa: u32) -> Option<u32> {
        self.ccw_guest(u64::from(host_cpa))
            .and_then(|g| u32::try_from(g).ok())
    }

    /// The guest address for an ESW failing-storage address: guest RAM maps
    /// back through the container, the CCW area as for
    /// [`guest_cpa`](Self::guest_cpa), a host IDAW to the guest IDAW (or, for
    /// a directly addressed guest CCW, the CCW) designating the same data.
    /// `None` for anything else (scratch block, rest of the program window,
    /// unmapped IOVAs).
    pub fn guest_address(&self, host_iova: u64) -> Option<u64> {
        let ccws = u64::from(self.program_iova);
        let idals = u64::from(self.idal_iova());
        let idal_end = idals + u64::try_from(self.idal_area.len()).ok()?;
        if (ccws..idals).contains(&host_iova) {
            return self.ccw_guest(host_iova);
        }
        if (idals..idal_end).contains(&host_iova) {
            let j = usize::try_from((host_iova - idals) / IDAW_SIZE).ok()?;
            return self.idaw_guest.get(j).copied();
        }
        if self.map.program.range().contains(&host_iova) {
            return None;
        }
        self.map.guest(host_iova)
    }

    /// The guest CCW address for an ESW secondary-CCW address (a host CCW
    /// address); as [`guest_cpa`](Self::guest_cpa).
    pub fn guest_secondary_ccw(&self, host_ccw: u32) -> Option<u32> {
        self.guest_cpa(host_ccw)
    }

    /// An address in the CCW area, mapped with the offset from its run.
    fn ccw_guest(&self, iova: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.host <= iova);
        let run = self.runs.get(i.checked_sub(1)?)?;
        let offset = iova - run.host;
        (offset < run.slots * CCW_SIZE).then(|| run.guest.checked_add(offset))?
    }
}

/// A host TIC to `target`.
fn tic(target: u32) -> Ccw1 {
    Ccw1 {
        cmd: CCW_CMD_TIC,
        flags: CcwFlags::empty(),
        count: 0,
        cda: target,
    }
}

/// The runs of a program as `(first entry, entries, guest address)`, in
/// entry order: every segment, and every entry outside all segments alone.
fn plan_runs(program: &ChannelProgram) -> Result<Vec<(u64, u64, u64)>, LayoutError> {
    let n = program.ccws.len();
    let mut owner: Vec<Option<usize>> = vec![None; n];
    for (s, seg) in program.segments.iter().enumerate() {
        let first = usize::try_from(seg.first).unwrap_or(usize::MAX);
        let len = usize::try_from(seg.len).unwrap_or(usize::MAX);
        let end = first
            .checked_add(len)
            .filter(|&end| len > 0 && end <= n)
            .ok_or(LayoutError::Inconsistent("segment out of range"))?;
        for (k, i) in (first..end).enumerate() {
            if owner[i].replace(s).is_some() {
                return Err(LayoutError::Inconsistent("entry in two segments"));
            }
            if program.ccws[i].addr() != seg.addr + CCW_SIZE * k as u64 {
                return Err(LayoutError::Inconsistent("segment entries not consecutive"));
            }
        }
    }
    let mut runs = Vec::with_capacity(program.segments.len());
    let mut i = 0;
    while i < n {
        let (len, guest) = match owner[i] {
            Some(s) => {
                let seg = &program.segments[s];
                (usize::try_from(seg.len).unwrap_or(1), seg.addr)
            }
            None => (1, program.ccws[i].addr()),
        };
        runs.push((i as u64, len as u64, guest));
        i += len;
    }
    Ok(runs)
}

/// Map a command's pieces into IOVA extents (appended to `extents`).
fn plan_data(
    program: &ChannelProgram,
    entry: &ProgramCcw,
    map: &IovaMap,
    extents: &mut Vec<Extent>,
) -> Result<Data, LayoutError> {
    let (cmd, flags, count, data) = match entry.kind() {
        CcwKind::Command {
            cmd,
            flags,
            count,
            data,
            ..
        } => (cmd, flags, count, data),
        CcwKind::Tic { target }
            if usize::try_from(target)
                .ok()
                .is_none_or(|t| t >= program.ccws.len()) =>
        {
            return Err(LayoutError::Inconsistent("TIC target out of range"));
        }
        CcwKind::Tic { .. } | CcwKind::Check { .. } => return Ok(Data::None),
    };
    if flags.intersects(CcwFlags::S.union(CcwFlags::MIDA)) {
        return Err(LayoutError::Inconsistent("suspend or MIDA flag"));
    }
    let pieces = usize::try_from(data.start)
        .ok()
        .zip(usize::try_from(data.end).ok())
        .and_then(|(start, end)| program.pieces.get(start..end))
        .ok_or(LayoutError::Inconsistent("data pieces out of range"))?;
    if pieces.is_empty() {
        return Ok(Data::Scratch);
    }
    if cmd & 0x0f == 0x0c {
        return Err(LayoutError::ReadBackward { addr: entry.addr() });
    }
    let total: u64 = pieces.iter().map(|p| u64::from(p.len)).sum();
    if total != u64::from(count) {
        return Err(LayoutError::Inconsistent(
            "data pieces do not add up to the count",
        ));
    }
    // A fresh list per command: extents of different commands never merge.
    let mut own = Vec::with_capacity(pieces.len());
    for piece in pieces {
        map.extents(*piece, &mut own)?;
    }
    let start = extents.len();
    extents.append(&mut own);
    Ok(Data::Extents(start..extents.len()))
}

/// IDAWs of a command without data: the blocks its count spans, at least one.
fn scratch_idaws(entry: &ProgramCcw, block: u64) -> u64 {
    match entry.kind() {
        CcwKind::Command { count, .. } => u64::from(count).div_ceil(block).max(1),
        _ => 0,
    }
}

/// The guest address a host IDAW of `entry` stands for: the guest IDAW
/// designating the data at `offset` (the first one when there is no data),
/// or the CCW itself when the guest addressed directly.
fn guest_designator(entry: &ProgramCcw, pieces: &[DataPiece], offset: Option<u64>) -> u64 {
    let CcwKind::Command { addressing, .. } = entry.kind() else {
        return entry.addr();
    };
    match addressing {
        Addressing::Direct => entry.addr(),
        Addressing::Indirect {
            format2,
            block,
            idal,
        } => {
            let width: u64 = if format2 { 8 } else { 4 };
            let block = u64::from(block).max(1);
            let index = match (offset, pieces.first()) {
                (Some(offset), Some(first)) => {
                    let in_first = block - first.addr % block;
                    if offset < in_first {
                        0
                    } else {
                        1 + (offset - in_first) / block
                    }
                }
                _ => 0,
            };
            u64::from(idal) + index * width
        }
    }
}

#[cfg(test)]
mod tests {
    use vhost_user_ccw_protocol::arch::{Ccw, CcwFlags, Idaw2, Orb};

    use super::*;
    use crate::memory::tests::{put_ccw0 as put0, put_ccw1 as put, ram};
    use crate::translate::{Direction, Mode, ProgramCcw, Segment, translate};

    /// Guest RAM size of the test guests.
    const RAM: usize = 0x10_0000;
    /// Where the tests put the program area.
    const PROGRAM_IOVA: u32 = 0x7000_0000;
    /// Guest `[0, 0x8_0000)` is mapped here (above 4 GiB)...
    const LOW_IOVA: u64 = 0x1_0000_0000;
    /// ... and guest `[0x8_0000, 0x10_0000)` here, below it.
    const HIGH_IOVA: u64 = 0x20_0000;
    const SPLIT: u64 = 0x8_0000;

    fn map() -> IovaMap {
        IovaMap::new(
            vec![
                IovaRange {
                    guest: SPLIT,
                    len: SPLIT,
                    iova: HIGH_IOVA,
                },
                IovaRange {
                    guest: 0,
                    len: SPLIT,
                    iova: LOW_IOVA,
                },
            ],
            ProgramWindow {
                iova: PROGRAM_IOVA,
                len: 0x10_0000,
            },
        )
        .unwrap()
    }

    fn orb(cpa: u32) -> Orb {
        Orb {
            intparm: 0x1234_5678,
            key: 3,
            format1: true,
            lpm: 0x80,
            cpa,
            ..Orb::default()
        }
    }

    fn orb_idaw(cpa: u32, format2: bool, two_k: bool) -> Orb {
        Orb {
            format2_idaw: format2,
            idaw_2k: two_k,
            ..orb(cpa)
        }
    }

    fn build(program: &ChannelProgram) -> HostProgram {
        let hp = HostProgram::build(program, &map(), PROGRAM_IOVA).unwrap();
        check_invariants(program, &hp, &map());
        hp
    }

    /// The host CCW at `iova`, decoded as the channel will.
    fn ccw_at(hp: &HostProgram, iova: u32) -> Ccw {
        let at = usize::try_from(iova - hp.program_iova()).unwrap();
        Ccw::decode(true, &hp.ccw_area()[at..at + 8]).unwrap()
    }

    fn ccw_bytes(hp: &HostProgram, iova: u32) -> [u8; 8] {
        let at = usize::try_from(iova - hp.program_iova()).unwrap();
        hp.ccw_area()[at..at + 8].try_into().unwrap()
    }

    /// `n` IDAWs of the IDAL at `iova`, decoded.
    fn idal(hp: &HostProgram, iova: u32, n: usize) -> Vec<u64> {
        let at = usize::try_from(iova - hp.idal_iova()).unwrap();
        hp.idal_area()[at..at + 8 * n]
            .chunks(8)
            .map(|b| Idaw2::decode(b).unwrap().0)
            .collect()
    }

    fn merge(ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (addr, len) in ranges {
            match out.last_mut() {
                Some(last) if last.0 + last.1 == addr => last.1 += len,
                _ => out.push((addr, len)),
            }
        }
        out
    }

    /// What must hold for every program: each entry's host CCW says what
    /// the entry says, each IDAL describes exactly the guest data (walked
    /// with the channel's block rules and mapped back through the
    /// container), the fences are invalid CCWs, and every CPA round-trips.
    fn check_invariants(program: &ChannelProgram, hp: &HostProgram, map: &IovaMap) {
        let block = u64::from(hp.block_size());
        for (i, entry) in program.ccws.iter().enumerate() {
            let host = hp.host_ccw(i).unwrap();
            let ccw = ccw_at(hp, host);
            match entry.kind() {
                CcwKind::Command {
                    cmd, flags, count, ..
                } => {
                    assert_eq!(ccw.cmd, cmd);
                    assert_eq!(ccw.count, count);
                    assert_eq!(
                        ccw.flags,
                        flags.intersection(PASSED_FLAGS).union(CcwFlags::IDA)
                    );
                    // Walk the IDAL as the channel does.
                    let first = idal(hp, ccw.cda, 1)[0];
                    let mut left = u64::from(count);
                    let mut n = 1 + left.saturating_sub(block - first % block).div_ceil(block);
                    if program.data(i).is_empty() {
                        let scratch = u64::from(hp.scratch_iova().unwrap());
                        n = u64::from(count).div_ceil(block).max(1);
                        let idaws = idal(hp, ccw.cda, usize::try_from(n).unwrap());
                        assert!(idaws.iter().all(|&a| a == scratch), "entry {i}: {idaws:x?}");
                        continue;
                    }
                    let idaws = idal(hp, ccw.cda, usize::try_from(n).unwrap());
                    let mut stream = Vec::new();
                    for (k, &a) in idaws.iter().enumerate() {
                        assert!(k == 0 || a % block == 0, "entry {i}: IDAW {k} {a:#x}");
                        let len = left.min(block - a % block);
                        let guest = map.guest(a).unwrap();
                        assert_eq!(map.guest(a + len - 1), Some(guest + len - 1));
                        stream.push((guest, len));
                        left -= len;
                    }
                    assert_eq!(left, 0);
                    let pieces = program.data(i).iter().map(|p| (p.addr, u64::from(p.len)));
                    assert_eq!(merge(stream), merge(pieces), "entry {i}");
                }
                CcwKind::Tic { target } => {
                    assert_eq!(ccw.cmd, 0x08);
                    let target = usize::try_from(target).unwrap();
                    assert_eq!(ccw.cda, hp.host_ccw(target).unwrap());
                }
                CcwKind::Check { .. } => {
                    assert_eq!(ccw.cmd, 0x08);
                    assert_eq!(ccw.cda, host, "a check is a TIC to itself");
                }
            }
            // CPA round trips: at the CCW, and one past it.
            let guest = u32::try_from(entry.addr()).unwrap();
            assert_eq!(hp.guest_cpa(host), Some(guest), "entry {i}");
            assert_eq!(hp.guest_cpa(host + 8), Some(guest + 8), "entry {i}");
            assert_eq!(hp.guest_secondary_ccw(host), Some(guest), "entry {i}");
            assert_eq!(
                hp.guest_address(u64::from(host) + 3),
                Some(entry.addr() + 3)
            );
        }
        for seg in &program.segments {
            let last = usize::try_from(seg.first + seg.len - 1).unwrap();
            let fence = hp.host_ccw(last).unwrap() + 8;
            assert_eq!(ccw_bytes(hp, fence), [0; 8]);
            assert_eq!(ccw_bytes(hp, fence + 8), [0; 8]);
            let one_past_fence = seg.addr + 8 * (u64::from(seg.len) + 1);
            assert_eq!(hp.guest_cpa(fence + 8).map(u64::from), Some(one_past_fence));
        }
        assert_eq!(hp.orb().cpa, hp.host_ccw(0).unwrap());
        let image = hp.image();
        assert_eq!(image.len(), usize::try_from(hp.image_len()).unwrap());
        let ccws = hp.ccw_area().len();
        assert_eq!(&image[..ccws], hp.ccw_area());
        assert_eq!(&image[ccws..ccws + hp.idal_area().len()], hp.idal_area());
        assert!(image[ccws + hp.idal_area().len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn iova_map_lookups_need_one_mapping() {
        let map = map();
        assert_eq!(map.ranges()[0].guest, 0, "sorted by guest address");
        assert_eq!(map.iova(0x7_f000, 0x1000), Some(LOW_IOVA + 0x7_f000));
        assert_eq!(
            map.iova(0x7_f000, 0x1001),
            None,
            "crosses into the next mapping"
        );
        assert_eq!(map.iova(SPLIT, 0), Some(HIGH_IOVA));
        assert_eq!(map.iova(0x10_0000, 1), None);
        assert_eq!(map.iova(u64::MAX, 2), None);
        assert_eq!(map.guest(HIGH_IOVA + 5), Some(SPLIT + 5));
        assert_eq!(map.guest(LOW_IOVA + SPLIT), None);
        assert_eq!(map.guest(u64::from(PROGRAM_IOVA)), None);
    }

    #[test]
    fn invalid_iova_maps_are_refused() {
        let window = ProgramWindow {
            iova: PROGRAM_IOVA,
            len: 0x1000,
        };
        let range = |guest, len, iova| IovaRange { guest, len, iova };
        let cases = [
            (vec![range(0, 0, 0)], "empty mapping"),
            (vec![range(0x800, 0x1000, 0)], "mapping not page aligned"),
            (vec![range(0, 0x1000, 0x10)], "mapping not page aligned"),
            (
                vec![range(0, 0x2000, 0), range(0x1000, 0x1000, 0x10_0000)],
                "guest ranges overlap",
            ),
            (
                vec![range(0, 0x2000, 0), range(0x4000, 0x1000, 0x1000)],
                "IOVA ranges overlap",
            ),
            (
                vec![range(0, 0x1000, u64::from(PROGRAM_IOVA))],
                "program window overlaps guest RAM",
            ),
        ];
        for (ranges, why) in cases {
            assert_eq!(
                IovaMap::new(ranges, window),
                Err(LayoutError::InvalidMap(why))
            );
        }
        let window = ProgramWindow {
            iova: 0x7fff_f000,
            len: 0x2000,
        };
        assert_eq!(
            IovaMap::new(Vec::new(), window),
            Err(LayoutError::Above2G {
                iova: 0x7fff_f000,
                len: 0x2000
            })
        );
    }

    #[test]
    fn sense_id() {
        let ram = ram(RAM);
        put(&ram, 0x1000, 0xe4, CcwFlags::SLI, 0x20, 0x2000);
        let program = translate(&orb(0x1000), &ram).unwrap();
        let hp = build(&program);
        assert_eq!(
            hp.ccw_area(),
            &[
                0xe4, 0x24, 0x00, 0x20, 0x70, 0x00, 0x00, 0x18, // SENSE ID, SLI+IDA
                0, 0, 0, 0, 0, 0, 0, 0, // fence
                0, 0, 0, 0, 0, 0, 0, 0, // pad
            ]
        );
        assert_eq!(hp.idal_iova(), 0x7000_0018);
        assert_eq!(
            hp.idal_area(),
            &[0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x20, 0x00]
        );
        assert_eq!(hp.scratch_iova(), None);
        assert_eq!(hp.image_len(), 0x20);
        assert_eq!(
            *hp.orb(),
            Orb {
                intparm: 0x1234_5678,
                key: 0,
                format1: true,
                prefetch: true,
                format2_idaw: true,
                idaw_2k: false,
                lpm: 0x80,
                cpa: 0x7000_0000,
                ..Orb::default()
            }
        );
        assert_eq!(hp.guest_cpa(0x7000_0000), Some(0x1000));
        assert_eq!(hp.guest_cpa(0x7000_0008), Some(0x1008));
        assert_eq!(
            hp.guest_cpa(0x7000_0010),
            Some(0x1010),
            "one past the fence"
        );
        assert_eq!(hp.guest_cpa(0x7000_0018), None, "the IDAL area is no CCW");
        // Failing storage: the data, and the IDAW of a direct guest CCW.
        assert_eq!(hp.guest_address(LOW_IOVA + 0x2010), Some(0x2010));
        assert_eq!(hp.guest_address(0x7000_0018), Some(0x1000));
        assert_eq!(hp.guest_address(0x7000_001f), Some(0x1000));
    }

    #[test]
    fn chained_read_with_format2_idaws_over_two_mappings() {
        let ram = ram(RAM);
        put(&ram, 0x1000, 0x07, CcwFlags::CC, 6, 0x2000);
        put(
            &ram,
            0x1008,
            0x06,
            CcwFlags::IDA | CcwFlags::SLI,
            0x1c00,
            0x4000,
        );
        for (k, idaw) in [0x7_f800u64, 0x8_0000, 0x8_1000].iter().enumerate() {
            ram.write(0x4000 + 8 * k as u64, &Idaw2(*idaw).encode())
                .unwrap();
        }
        let program = translate(&orb_idaw(0x1000, true, false), &ram).unwrap();
        let hp = build(&program);
        assert_eq!(hp.block_size(), 4096);
        assert!(!hp.orb().idaw_2k);
        assert_eq!(
            ccw_bytes(&hp, 0x7000_0000),
            [0x07, 0x44, 0x00, 0x06, 0x70, 0x00, 0x00, 0x20]
        );
        assert_eq!(
            ccw_bytes(&hp, 0x7000_0008),
            [0x06, 0x24, 0x1c, 0x00, 0x70, 0x00, 0x00, 0x28]
        );
        assert_eq!(idal(&hp, 0x7000_0020, 1), [LOW_IOVA + 0x2000]);
        // Half a page at the end of the low mapping, then two pages of the
        // high one (contiguous there: one extent, still two IDAWs).
        assert_eq!(
            idal(&hp, 0x7000_0028, 3),
            [0x1_0007_f800, 0x20_0000, 0x20_1000]
        );
        assert_eq!(hp.image_len(), 0x40);
        // Failing storage in the data and in the IDAL.
        assert_eq!(hp.guest_address(HIGH_IOVA + 0x1010), Some(0x8_1010));
        assert_eq!(hp.guest_address(LOW_IOVA + 0x7_f900), Some(0x7_f900));
        assert_eq!(hp.guest_address(0x7000_0028), Some(0x4000));
        assert_eq!(hp.guest_address(0x7000_0030), Some(0x4008));
        assert_eq!(hp.guest_address(0x7000_003d), Some(0x4010));
        // Nowhere.
        assert_eq!(
            hp.guest_address(0x7000_0040),
            None,
            "window beyond the image"
        );
        assert_eq!(hp.guest_address(0x5000_0000), None);
        assert_eq!(hp.guest_address(LOW_IOVA + SPLIT), None);
        assert_eq!(hp.guest_cpa(0x6fff_fff8), None);
        assert_eq!(hp.guest_cpa(0x7000_0020), None);
        assert_eq!(hp.guest_cpa(0x1000), None, "a guest address is no host CPA");
        assert_eq!(hp.guest_secondary_ccw(0), None);
    }

    #[test]
    fn data_chaining_across_a_mapping_boundary() {
        let ram = ram(RAM);
        put(&ram, 0x1000, 0x02, CcwFlags::CD, 0x100, 0x3000);
        put(&ram, 0x1008, 0x02, CcwFlags::SLI, 0x100, 0x7_ff80);
        let program = translate(&orb(0x1000), &ram).unwrap();
        let hp = build(&program);
        assert_eq!(
            ccw_bytes(&hp, 0x7000_0000),
            [0x02, 0x84, 0x01, 0x00, 0x70, 0x00, 0x00, 0x20]
        );
        assert_eq!(
            ccw_bytes(&hp, 0x7000_0008),
            [0x02, 0x24, 0x01, 0x00, 0x70, 0x00, 0x00, 0x28]
        );
        assert_eq!(idal(&hp, 0x7000_0020, 1), [LOW_IOVA + 0x3000]);
        // Contiguous in the guest, not in IOVA space: two IDAWs, the second
        // on a block boundary.
        assert_eq!(idal(&hp, 0x7000_0028, 2), [0x1_0007_ff80, HIGH_IOVA]);
        assert_eq!(hp.guest_address(0x7000_0030), Some(0x1008));
        assert_eq!(hp.guest_address(HIGH_IOVA + 0x7f), Some(0x8_007f));
    }

    #[test]
    fn a_direct_area_is_cut_at_block_boundaries() {
        // 0x1800 bytes from 0x2100: the first IDAW keeps the offset, the
        // next starts on the 4 KiB boundary.
        let ram = ram(RAM);
        put(&ram, 0x1000, 0x01, CcwFlags::empty(), 0x1800, 0x2100);
        let program = translate(&orb(0x1000), &ram).unwrap();
        let hp = build(&program);
        assert_eq!(ccw_at(&hp, 0x7000_0000).cda, 0x7000_0018);
        assert_eq!(
            idal(&hp, 0x7000_0018, 2),
            [LOW_IOVA + 0x2100, LOW_IOVA + 0x3000]
        );
        assert_eq!(hp.idal_area().len(), 16);
        assert_eq!(hp.guest_address(0x7000_0020), Some(0x1000));
    }

    #[test]
    fn tic_to_a_second_segment_and_an_orientation_loop() {
        let ram = ram(RAM);
        put(&ram, 0x1000, 0x31, CcwFlags::CC, 5, 0x2000);
        put(&ram, 0x1008, 0x08, CcwFlags::empty(), 0, 0x1000);
        put(&ram, 0x1010, 0x06, CcwFlags::CC, 0x200, 0x3000);
        put(&ram, 0x1018, 0x08, CcwFlags::empty(), 0, 0x5000);
        put(&ram, 0x5000, 0x03, CcwFlags::empty(), 0, 0);
        let program = translate(&orb(0x1000), &ram).unwrap();
        assert_eq!(program.segments.len(), 2);
        let hp = build(&program);
        // The READ command-chains to the TIC, so a status modifier could
        // skip it: the segment goes on to 0x1020 (zeros: a check point).
        let expected: [[u8; 8]; 10] = [
            [0x31, 0x44, 0x00, 0x05, 0x70, 0x00, 0x00, 0x50],
            [0x08, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x00], // back to the search
            [0x06, 0x44, 0x02, 0x00, 0x70, 0x00, 0x00, 0x58],
            [0x08, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x38], // to segment 1
            [0x08, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x20], // check point
            [0; 8],
            [0; 8],
            [0x03, 0x04, 0x00, 0x00, 0x70, 0x00, 0x00, 0x60], // NOP
            [0; 8],
            [0; 8],
        ];
        assert_eq!(hp.ccw_area(), expected.concat());
        assert_eq!(
            idal(&hp, 0x7000_0050, 2),
            [LOW_IOVA + 0x2000, LOW_IOVA + 0x3000]
        );
        // The NOP's IDAW: the scratch block on the next page.
        assert_eq!(hp.scratch_iova(), Some(0x7000_1000));
        assert_eq!(idal(&hp, 0x7000_0060, 1), [0x7000_1000]);
        assert_eq!(hp.image_len(), 0x2000);
        assert_eq!(
            hp.guest_cpa(0x7000_0020),
            Some(0x1020),
            "one past the last TIC"
        );
        assert_eq!(hp.guest_cpa(0x7000_0038), Some(0x5000));
        assert_eq!(hp.guest_cpa(0x7000_0040), Some(0x5008));
        assert_eq!(hp.guest_address(0x7000_1000), None, "scratch block");
        assert_eq!(hp.guest_address(0x7000_0068), None, "padding");
        assert_eq!(hp.guest_address(0x7000_0060), Some(0x5000));
    }

    #[test]
    fn check_points_become_tics_to_themselves() {
        // Invalid command code after a chained SENSE.
        let ram = ram(RAM);
        put(&ram, 0x1000, 0x04, CcwFlags::CC, 8, 0x2000);
        put(&ram, 0x1008, 0x00, CcwFlags::empty(), 8, 0x3000);
        let program = translate(&orb(0x1000), &ram).unwrap();
        assert!(matches!(program.ccws[1].kind(), CcwKind::Check { .. }));
        let hp = build(&program);
        assert_eq!(
            ccw_bytes(&hp, 0x7000_0008),
            [0x08, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x08]
        );
        // The channel program-checks there: CPA one past it, as the
        // simulated channel reports (0x1010).
        assert_eq!(hp.guest_cpa(0x7000_0010), Some(0x1010));

        // Data chaining into a check point (zero count with CD): a TIC is
        // recognised in data chaining, an invalid command code would not be.
        let ram = crate::memory::tests::ram(RAM);
        put(&ram, 0x1000, 0x02, CcwFlags::CD, 0x10, 0x3000);
        put(&ram, 0x1008, 0x02, CcwFlags::CD, 0, 0x3010);
        let program = translate(&orb(0x1000), &ram).unwrap();
        assert!(matches!(program.ccws[1].kind(), CcwKind::Check { .. }));
        let hp = build(&program);
        assert_eq!(
            ccw_bytes(&hp, 0x7000_0008),
            [0x08, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x08]
        );

        // A misaligned CPA: the check is the first CCW.
        let program = translate(&orb(0x1004), &ram).unwrap();
        let hp = build(&program);
        assert_eq!(
            ccw_bytes(&hp, 0x7000_0000),
            [0x08, 0x00, 0x00, 0x00, 0x70, 0x00, 0x00, 0x00]
        );
        assert_eq!(hp.guest_cpa(0x7000_0008), Some(0x100c));
    }

    #[test]
    fn tic_to_tic_check_is_a_run_of_its_own() {
        let ram = ram(RAM);
        put(&ram, 0x1000, 0x03, CcwFlags::CC, 0, 0);
        put(&ram, 0x1008, 0x08, CcwFlags::empty(), 0, 0x5000);
        // Reached only if a status modifier skipped the TIC.
        put(&ram, 0x1010, 0x03, CcwFlags::empty(), 0, 0);
        put(&ram, 0x5000, 0x08, CcwFlags::empty(), 0, 0x6000);
        put(&ram, 0x6000, 0x03, CcwFlags::empty(), 0, 0);
        let program = translate(&orb(0x1000), &ram).unwrap();
        // Entries: NOP, TIC, NOP (segment 0); TIC (segment 1); the
        // detached check at 0x5000; NOP (segment 2).
        assert_eq!(program.ccws.len(), 6);
        assert!(matches!(program.ccws[4].kind(), CcwKind::Check { .. }));
        assert_eq!(program.ccws[1].kind(), CcwKind::Tic { target: 4 });
        let hp = build(&program);
        let hosts: Vec<u32> = (0..6).map(|i| hp.host_ccw(i).unwrap()).collect();
        assert_eq!(
            hosts,
            [
                0x7000_0000,
                0x7000_0008,
                0x7000_0010,
                0x7000_0028,
                0x7000_0040,
                0x7000_0058
            ]
        );
        assert_eq!(ccw_at(&hp, 0x7000_0008).cda, 0x7000_0040);
        assert_eq!(ccw_at(&hp, 0x7000_0040).cda, 0x7000_0040);
        // The channel stops at the second TIC: CPA = guest 0x5000 + 8.
        assert_eq!(hp.guest_cpa(0x7000_0048), Some(0x5008));
        assert_eq!(
            hp.guest_cpa(0x7000_0050),
            Some(0x5010),
            "one past its fence"
        );
    }

    #[test]
    fn a_status_modifier_off_the_end_of_a_segment_meets_the_fence() {
        // SEARCH (CC) then a READ that ends the chain: a status modifier on
        // the search skips the read and fetches the CCW after it.
        let ram = ram(RAM);
        put(&ram, 0x1000, 0x31, CcwFlags::CC, 5, 0x2000);
        put(&ram, 0x1008, 0x06, CcwFlags::empty(), 0x10, 0x3000);
        let program = translate(&orb(0x1000), &ram).unwrap();
        let hp = build(&program);
        let fence = ccw_at(&hp, 0x7000_0010);
        assert_eq!(
            fence,
            Ccw {
                cmd: 0x00,
                flags: CcwFlags::empty(),
                count: 0,
                cda: 0
            }
        );
        // Invalid command code: program check, CPA one past the fence; the
        // simulated channel reports guest 0x1000 + 16 + 8.
        assert_eq!(hp.guest_cpa(0x7000_0018), Some(0x1018));
    }

    #[test]
    fn format1_idaws_with_2k_blocks_need_i2k() {
        let ram = ram(RAM);
        put(
            &ram,
            0x1000,
            0x02,
            CcwFlags::IDA | CcwFlags::CC,
            0x1000,
            0x4000,
        );
        ram.write(0x4000, &0x3000u32.to_be_bytes()).unwrap();
        ram.write(0x4004, &0x5800u32.to_be_bytes()).unwrap();
        put(&ram, 0x1008, 0x01, CcwFlags::empty(), 0x2000, 0x6000);
        let program = translate(&orb_idaw(0x1000, false, false), &ram).unwrap();
        let hp = build(&program);
        // 0x3000..0x3800 then 0x5800: a break inside a 4 KiB block.
        assert_eq!(hp.block_size(), 2048);
        assert!(hp.orb().idaw_2k);
        assert!(hp.orb().format2_idaw);
        assert_eq!(ccw_at(&hp, 0x7000_0000).cda, 0x7000_0020);
        assert_eq!(
            idal(&hp, 0x7000_0020, 2),
            [LOW_IOVA + 0x3000, LOW_IOVA + 0x5800]
        );
        // The direct write follows the program's block size.
        assert_eq!(ccw_at(&hp, 0x7000_0008).cda, 0x7000_0030);
        assert_eq!(
            idal(&hp, 0x7000_0030, 4),
            [
                LOW_IOVA + 0x6000,
                LOW_IOVA + 0x6800,
                LOW_IOVA + 0x7000,
                LOW_IOVA + 0x7800
            ]
        );
        // Host IDAWs map back to the 4-byte guest IDAWs.
        assert_eq!(hp.guest_address(0x7000_0020), Some(0x4000));
        assert_eq!(hp.guest_address(0x7000_0028), Some(0x4004));
        assert_eq!(hp.guest_address(0x7000_0038), Some(0x1008));
    }

    #[test]
    fn contiguous_2k_blocks_fit_4k_idaws() {
        let ram = ram(RAM);
        put(&ram, 0x1000, 0x02, CcwFlags::IDA, 0x1000, 0x4000);
        ram.write(0x4000, &0x3000u32.to_be_bytes()).unwrap();
        ram.write(0x4004, &0x3800u32.to_be_bytes()).unwrap();
        let program = translate(&orb_idaw(0x1000, false, false), &ram).unwrap();
        let hp = build(&program);
        assert_eq!(hp.block_size(), 4096);
        assert!(!hp.orb().idaw_2k);
        assert_eq!(idal(&hp, 0x7000_0018, 1), [LOW_IOVA + 0x3000]);
        assert_eq!(hp.idal_area().len(), 8);
    }

    #[test]
    fn commands_without_data_use_the_scratch_block() {
        let ram = ram(RAM);
        put(
            &ram,
            0x1000,
            0x02,
            CcwFlags::CC | CcwFlags::SKIP,
            0x2800,
            0x9000,
        );
        put(&ram, 0x1008, 0x03, CcwFlags::empty(), 0, 0);
        let program = translate(&orb(0x1000), &ram).unwrap();
        assert!(program.pieces.is_empty());
        let hp = build(&program);
        assert_eq!(
            ccw_bytes(&hp, 0x7000_0000),
            [0x02, 0x54, 0x28, 0x00, 0x70, 0x00, 0x00, 0x20]
        );
        assert_eq!(hp.scratch_iova(), Some(0x7000_1000));
        // The count is kept: 0x2800 bytes span three blocks.
        assert_eq!(idal(&hp, 0x7000_0020, 3), [0x7000_1000; 3]);
        assert_eq!(ccw_at(&hp, 0x7000_0008).cda, 0x7000_0038);
        assert_eq!(idal(&hp, 0x7000_0038, 1), [0x7000_1000]);
        assert_eq!(hp.idal_area().len(), 0x20);
        let image = hp.image();
        assert_eq!(image.len(), 0x2000);
        assert!(image[0x1000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn format0_program_becomes_format1() {
        let ram = ram(RAM);
        put0(&ram, 0x1000, 0x02, CcwFlags::CC, 0x10, 0x3000);
        put0(&ram, 0x1008, 0x18, CcwFlags::empty(), 0, 0x5000);
        put0(&ram, 0x5000, 0x03, CcwFlags::empty(), 1, 0);
        let format0 = Orb {
            format1: false,
            ..orb(0x1000)
        };
        let program = translate(&format0, &ram).unwrap();
        assert!(!program.format1);
        let hp = build(&program);
        assert!(hp.orb().format1);
        assert_eq!(
            ccw_at(&hp, 0x7000_0008),
            Ccw {
                cmd: 0x08,
                flags: CcwFlags::empty(),
                count: 0,
                // Segment 0: READ, TIC, and the check point after the TIC
                // (zeros: a zero-count format-0 CCW), fence, pad.
                cda: 0x7000_0028
            },
            "the format-0 TIC 0x18 is a format-1 TIC 0x08"
        );
    }

    #[test]
    fn program_area_must_be_below_2g_inside_the_window_and_aligned() {
        let ram = ram(RAM);
        put(&ram, 0x1000, 0xe4, CcwFlags::SLI, 0x20, 0x2000);
        let program = translate(&orb(0x1000), &ram).unwrap();
        let map = map();
        assert_eq!(
            HostProgram::build(&program, &map, 0x8000_0000),
            Err(LayoutError::Above2G {
                iova: 0x8000_0000,
                len: 0x20
            })
        );
        assert_eq!(
            HostProgram::build(&program, &map, 0x7fff_fff0),
            Err(LayoutError::Above2G {
                iova: 0x7fff_fff0,
                len: 0x20
            })
        );
        assert_eq!(
            HostProgram::build(&program, &map, 0x6000_0000),
            Err(LayoutError::OutsideWindow {
                iova: 0x6000_0000,
                len: 0x20
            })
        );
        assert_eq!(
            HostProgram::build(&program, &map, 0x700f_fff0),
            Err(LayoutError::OutsideWindow {
                iova: 0x700f_fff0,
                len: 0x20
            })
        );
        assert_eq!(
            HostProgram::build(&program, &map, 0x7000_0004),
            Err(LayoutError::Misaligned(0x7000_0004))
        );
        // Anywhere inside the window is fine: addresses follow.
        let hp = HostProgram::build(&program, &map, 0x7000_0800).unwrap();
        check_invariants(&program, &hp, &map);
        assert_eq!(ccw_at(&hp, 0x7000_0800).cda, 0x7000_0818);
        assert_eq!(hp.guest_cpa(0x7000_0808), Some(0x1008));
    }

    #[test]
    fn unmapped_data_is_refused() {
        let ram = ram(RAM);
        put(&ram, 0x1000, 0x02, CcwFlags::empty(), 0x100, 0x8_1000);
        let program = translate(&orb(0x1000), &ram).unwrap();
        let low_only = IovaMap::new(
            vec![IovaRange {
                guest: 0,
                len: SPLIT,
                iova: LOW_IOVA,
            }],
            map().program_window(),
        )
        .unwrap();
        assert_eq!(
            HostProgram::build(&program, &low_only, PROGRAM_IOVA),
            Err(LayoutError::Unmapped {
                guest: 0x8_1000,
                len: 0x100
            })
        );
    }

    #[test]
    fn read_backward_is_refused() {
        let ram = ram(RAM);
        put(&ram, 0x1000, 0x0c, CcwFlags::empty(), 0x10, 0x3010);
        let program = translate(&orb(0x1000), &ram).unwrap();
        assert_eq!(
            HostProgram::build(&program, &map(), PROGRAM_IOVA),
            Err(LayoutError::ReadBackward { addr: 0x1000 })
        );
    }

    fn one_command(pieces: Vec<DataPiece>, count: u16) -> ChannelProgram {
        let n = u32::try_from(pieces.len()).unwrap();
        ChannelProgram {
            orb: orb(0x1000),
            format1: true,
            ccws: vec![ProgramCcw::command(
                0x1000,
                Ccw {
                    cmd: 0x02,
                    flags: CcwFlags::empty(),
                    count,
                    cda: 0,
                },
                Direction::In,
                Mode {
                    format1: true,
                    format2_idaw: false,
                    block: 2048,
                },
                0..n,
            )],
            segments: vec![Segment {
                addr: 0x1000,
                first: 0,
                len: 1,
            }],
            pieces,
            data_bytes: u64::from(count),
        }
    }

    #[test]
    fn data_no_idal_can_describe_is_refused() {
        let piece = |addr, len| DataPiece { addr, len };
        let program = one_command(vec![piece(0x1000, 0x100), piece(0x3000, 0x100)], 0x200);
        assert_eq!(
            HostProgram::build(&program, &map(), PROGRAM_IOVA),
            Err(LayoutError::Unrepresentable { addr: 0x1000 })
        );
        let program = one_command(vec![piece(0x1000, 0x100)], 0x200);
        assert_eq!(
            HostProgram::build(&program, &map(), PROGRAM_IOVA),
            Err(LayoutError::Inconsistent(
                "data pieces do not add up to the count"
            ))
        );
    }

    #[test]
    fn inconsistent_programs_are_refused() {
        let mut program = one_command(Vec::new(), 0);
        program.ccws[0] = ProgramCcw::tic(0x1000, 7);
        assert_eq!(
            HostProgram::build(&program, &map(), PROGRAM_IOVA),
            Err(LayoutError::Inconsistent("TIC target out of range"))
        );
        let mut program = one_command(Vec::new(), 0);
        program.orb.cpa = 0x2000;
        assert_eq!(
            HostProgram::build(&program, &map(), PROGRAM_IOVA),
            Err(LayoutError::Inconsistent(
                "entry 0 is not the CCW at the CPA"
            ))
        );
        let mut program = one_command(Vec::new(), 0);
        program.segments[0].len = 2;
        assert_eq!(
            HostProgram::build(&program, &map(), PROGRAM_IOVA),
            Err(LayoutError::Inconsistent("segment out of range"))
        );
    }
}
