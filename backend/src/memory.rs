//! Guest memory as the memory table describes it, checked before use.
//!
//! vhost-user-backend maps every region the frontend sends without looking at
//! the file behind it, and installs the mapping before telling us. A region
//! whose `mmap_offset + size` runs past the end of its file would raise SIGBUS
//! on first touch, so nothing here hands out memory that has not been checked
//! against `fstat`. The table is also split into guest RAM (below
//! [`CONTROL_WINDOW_BASE`]), the only place channel programs may address, and
//! the control window holding the frontend's rings.

use std::sync::Arc;

use thiserror::Error;
use vhost_user_ccw_protocol::wire::CONTROL_WINDOW_BASE;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

/// What is wrong with a memory table.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MemoryError {
    /// A region is not backed by a file descriptor.
    #[error("memory region at {gpa:#x} is not backed by a file descriptor")]
    NoFile {
        /// Guest physical start of the region.
        gpa: u64,
    },
    /// A region's `mmap_offset + size` exceeds the size of its file.
    #[error(
        "memory region at {gpa:#x}: offset {offset:#x} + size {size:#x} exceeds the file size {file_size:#x}"
    )]
    BeyondFile {
        /// Guest physical start of the region.
        gpa: u64,
        /// Offset into the file.
        offset: u64,
        /// Region size.
        size: u64,
        /// Real size of the file.
        file_size: u64,
    },
    /// `fstat` on a region's file failed.
    #[error("memory region at {gpa:#x}: fstat failed: {reason}")]
    Stat {
        /// Guest physical start of the region.
        gpa: u64,
        /// The OS error text.
        reason: String,
    },
    /// A region straddles the start of the control window.
    #[error(
        "memory region at {gpa:#x} (size {size:#x}) straddles the control window at {CONTROL_WINDOW_BASE:#x}"
    )]
    StraddlesWindow {
        /// Guest physical start of the region.
        gpa: u64,
        /// Region size.
        size: u64,
    },
}

/// Check every region of a freshly built memory table.
pub fn validate(mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for region in mem.iter() {
        validate_region(region)?;
    }
    Ok(())
}

fn validate_region(region: &GuestRegionMmap) -> Result<(), MemoryError> {
    let gpa = region.start_addr().0;
    let size = region.len();
    let end = gpa.saturating_add(size);
    if gpa < CONTROL_WINDOW_BASE && end > CONTROL_WINDOW_BASE {
        return Err(MemoryError::StraddlesWindow { gpa, size });
    }
    let file_offset = region.file_offset().ok_or(MemoryError::NoFile { gpa })?;
    let file_size = file_offset
        .file()
        .metadata()
        .map_err(|e| MemoryError::Stat {
            gpa,
            reason: e.to_string(),
        })?
        .len();
    let offset = file_offset.start();
    match offset.checked_add(size) {
        Some(needed) if needed <= file_size => Ok(()),
        _ => Err(MemoryError::BeyondFile {
            gpa,
            offset,
            size,
            file_size,
        }),
    }
}

/// Why a guest-RAM access was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RamError {
    /// The range is not entirely inside guest RAM.
    #[error("guest range {addr:#x}+{len:#x} is not inside guest RAM")]
    OutOfRange {
        /// Start of the range.
        addr: u64,
        /// Length of the range.
        len: u64,
    },
}

/// A validated memory table, viewed as guest RAM for channel programs.
///
/// Cloning is cheap; a clone keeps the mapping alive, so a program in flight
/// can never touch memory that a later SET_MEM_TABLE unmapped.
#[derive(Debug, Clone)]
pub struct GuestRam {
    mem: Arc<GuestMemoryMmap>,
    /// Guest RAM as sorted, merged `[start, end)` ranges below the control
    /// window: the only addresses a channel program may use.
    ram: Arc<[(u64, u64)]>,
}

impl GuestRam {
    /// Wrap a table that [`validate`] accepted.
    pub fn new(mem: Arc<GuestMemoryMmap>) -> Self {
        let mut ranges: Vec<(u64, u64)> = mem
            .iter()
            .map(|r| (r.start_addr().0, r.start_addr().0.saturating_add(r.len())))
            .filter(|(start, _)| *start < CONTROL_WINDOW_BASE)
            .map(|(start, end)| (start, end.min(CONTROL_WINDOW_BASE)))
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => merged.push((start, end)),
            }
        }
        Self {
            mem,
            ram: merged.into(),
        }
    }

    /// `size` bytes of anonymous memory at guest address 0, as guest RAM:
    /// for tools without a frontend (benchmarks, fuzz targets). Anonymous
    /// memory has no file that could be too short, so there is nothing for
    /// [`validate`] to check.
    pub fn anonymous(size: usize) -> std::io::Result<GuestRam> {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)])
            .map_err(std::io::Error::other)?;
        Ok(Self::new(Arc::new(mem)))
    }

    /// How many references keep this mapping alive (tests check that a
    /// failed translation keeps none).
    #[cfg(test)]
    pub(crate) fn references(&self) -> usize {
        Arc::strong_count(&self.mem)
    }

    /// The whole table (RAM and control window), for the virtqueues.
    pub fn table(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The RAM range `[start, end)` holding `addr` (ranges are maximal:
    /// adjacent regions are merged).
    pub fn range_of(&self, addr: u64) -> Option<(u64, u64)> {
        let i = self.ram.partition_point(|(start, _)| *start <= addr);
        let (start, end) = *self.ram.get(i.checked_sub(1)?)?;
        (addr < end).then_some((start, end))
    }

    /// How many bytes from `addr` on are guest RAM without a hole, at most
    /// `max`; 0 when `addr` is not in guest RAM.
    pub fn contiguous_len(&self, addr: u64, max: u64) -> u64 {
        self.range_of(addr)
            .map_or(0, |(_, end)| (end - addr).min(max))
    }

    /// Whether `[addr, addr + len)` lies entirely in guest RAM, below the
    /// control window and without holes. A zero-length range is checked as
    /// one byte: a CCW address must still name RAM.
    pub fn check(&self, addr: u64, len: u64) -> Result<(), RamError> {
        let len = len.max(1);
        if self.contiguous_len(addr, len) == len {
            Ok(())
        } else {
            Err(RamError::OutOfRange { addr, len })
        }
    }

    /// Read guest RAM; the whole range is checked first.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), RamError> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        self.check(addr, len)?;
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| RamError::OutOfRange { addr, len })
    }

    /// Write guest RAM; the whole range is checked before any byte is written.
    pub fn write(&self, addr: u64, buf: &[u8]) -> Result<(), RamError> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        self.check(addr, len)?;
        self.mem
            .write_slice(buf, GuestAddress(addr))
            .map_err(|_| RamError::OutOfRange { addr, len })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs::File;
    use vhost_user_ccw_protocol::arch::{Ccw, CcwFlags};
    use vm_memory::FileOffset;

    /// A memfd-backed region of `file_size` bytes, mapped `size` bytes at
    /// `offset` (sizes in pages, so the mapping itself succeeds).
    pub(crate) fn region(gpa: u64, file_size: u64, offset: u64, size: usize) -> GuestRegionMmap {
        let file: File = vmm_sys_util::tempfile::TempFile::new()
            .expect("tempfile")
            .into_file();
        file.set_len(file_size).expect("set_len");
        GuestRegionMmap::from_range(GuestAddress(gpa), size, Some(FileOffset::new(file, offset)))
            .expect("map region")
    }

    /// Write a format-1 CCW into guest RAM.
    pub(crate) fn put_ccw1(
        ram: &GuestRam,
        addr: u64,
        cmd: u8,
        flags: CcwFlags,
        count: u16,
        cda: u32,
    ) {
        put_ccw(
            ram,
            true,
            addr,
            Ccw {
                cmd,
                flags,
                count,
                cda,
            },
        );
    }

    /// Write a format-0 CCW into guest RAM.
    pub(crate) fn put_ccw0(
        ram: &GuestRam,
        addr: u64,
        cmd: u8,
        flags: CcwFlags,
        count: u16,
        cda: u32,
    ) {
        put_ccw(
            ram,
            false,
            addr,
            Ccw {
                cmd,
                flags,
                count,
                cda,
            },
        );
    }

    fn put_ccw(ram: &GuestRam, format1: bool, addr: u64, ccw: Ccw) {
        let bytes = if format1 {
            ccw.encode_format1()
        } else {
            ccw.encode_format0()
        };
        ram.write(addr, &bytes.unwrap()).unwrap();
    }

    pub(crate) fn ram(size: usize) -> GuestRam {
        let mem = GuestMemoryMmap::from_regions(vec![region(0, size as u64, 0, size)]).unwrap();
        validate(&mem).unwrap();
        GuestRam::new(Arc::new(mem))
    }

    #[test]
    fn region_beyond_its_file_is_rejected() {
        let mem = GuestMemoryMmap::from_regions(vec![region(0, 0x1000, 0x1000, 0x2000)]).unwrap();
        assert_eq!(
            validate(&mem),
            Err(MemoryError::BeyondFile {
                gpa: 0,
                offset: 0x1000,
                size: 0x2000,
                file_size: 0x1000
            })
        );
    }

    #[test]
    fn region_exactly_filling_its_file_is_accepted() {
        let mem = GuestMemoryMmap::from_regions(vec![region(0, 0x3000, 0x1000, 0x2000)]).unwrap();
        assert_eq!(validate(&mem), Ok(()));
    }

    #[test]
    fn region_straddling_the_control_window_is_rejected() {
        let gpa = CONTROL_WINDOW_BASE - 0x1000;
        let mem = GuestMemoryMmap::from_regions(vec![region(gpa, 0x2000, 0, 0x2000)]).unwrap();
        assert_eq!(
            validate(&mem),
            Err(MemoryError::StraddlesWindow { gpa, size: 0x2000 })
        );
    }

    #[test]
    fn ram_checks_cover_holes_and_the_control_window() {
        let mem = GuestMemoryMmap::from_regions(vec![
            region(0, 0x1000, 0, 0x1000),
            region(0x2000, 0x1000, 0, 0x1000),
            region(CONTROL_WINDOW_BASE, 0x1000, 0, 0x1000),
        ])
        .unwrap();
        validate(&mem).unwrap();
        let ram = GuestRam::new(Arc::new(mem));
        assert!(ram.check(0, 0x1000).is_ok());
        assert!(ram.check(0xfff, 1).is_ok());
        assert!(ram.check(0xfff, 2).is_err(), "range crossing into a hole");
        assert!(ram.check(0x1800, 0).is_err(), "zero-length range in a hole");
        assert!(ram.check(CONTROL_WINDOW_BASE, 8).is_err(), "control window");
        assert!(ram.check(u64::MAX, 2).is_err(), "overflow");
        let mut buf = [0xaa; 16];
        assert!(ram.write(0xff8, &buf).is_err());
        ram.read(0xff0, &mut buf).unwrap();
        assert_eq!(buf, [0; 16], "a refused write left memory untouched");
    }
}
