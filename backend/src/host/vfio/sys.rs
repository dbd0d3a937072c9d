//! The VFIO user API as the `vfio` host uses it: structure layouts, ioctl
//! numbers and the ioctl calls themselves. Every `unsafe` block of the
//! `vfio` host lives here; the layouts are checked against the kernel's
//! UAPI sizes and offsets in the tests below (include/uapi/linux/vfio.h and
//! vfio_ccw.h). Region reads and writes need no unsafe code: they are
//! `pread`/`pwrite` on the device fd (`FileExt`).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// ioctl type of VFIO (`';'`) and the first command number.
const VFIO_TYPE: u32 = b';' as u32;
const VFIO_BASE: u32 = 100;

/// `_IO(VFIO_TYPE, VFIO_BASE + nr)`: VFIO's ioctls carry no size or
/// direction bits (the argsz field versions the structures), so the number
/// is the same on every architecture.
const fn vfio_io(nr: u32) -> u32 {
    (VFIO_TYPE << 8) | (VFIO_BASE + nr)
}

pub const VFIO_GET_API_VERSION: u32 = vfio_io(0);
pub const VFIO_CHECK_EXTENSION: u32 = vfio_io(1);
pub const VFIO_SET_IOMMU: u32 = vfio_io(2);
pub const VFIO_GROUP_GET_STATUS: u32 = vfio_io(3);
pub const VFIO_GROUP_SET_CONTAINER: u32 = vfio_io(4);
pub const VFIO_GROUP_GET_DEVICE_FD: u32 = vfio_io(6);
pub const VFIO_DEVICE_GET_INFO: u32 = vfio_io(7);
pub const VFIO_DEVICE_GET_REGION_INFO: u32 = vfio_io(8);
pub const VFIO_DEVICE_SET_IRQS: u32 = vfio_io(10);
pub const VFIO_IOMMU_MAP_DMA: u32 = vfio_io(13);
pub const VFIO_IOMMU_UNMAP_DMA: u32 = vfio_io(14);

/// The only VFIO API version there is.
pub const VFIO_API_VERSION: i32 = 0;
/// IOMMU types (extensions).
pub const VFIO_TYPE1_IOMMU: u32 = 1;
pub const VFIO_TYPE1V2_IOMMU: u32 = 3;

/// `vfio_group_status.flags`.
pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;
/// `vfio_device_info.flags`.
pub const VFIO_DEVICE_FLAGS_CCW: u32 = 1 << 4;
/// `vfio_region_info.flags`: the info has a capability chain.
pub const VFIO_REGION_INFO_FLAG_CAPS: u32 = 1 << 3;
/// Capability id of `vfio_region_info_cap_type`.
pub const VFIO_REGION_INFO_CAP_TYPE: u16 = 2;
/// Region type of the vfio-ccw device regions and their subtypes.
pub const VFIO_REGION_TYPE_CCW: u32 = 2;
pub const VFIO_REGION_SUBTYPE_CCW_ASYNC_CMD: u32 = 1;
pub const VFIO_REGION_SUBTYPE_CCW_SCHIB: u32 = 2;
pub const VFIO_REGION_SUBTYPE_CCW_CRW: u32 = 3;
/// Region index of the I/O region (`VFIO_CCW_CONFIG_REGION_INDEX`).
pub const VFIO_CCW_CONFIG_REGION_INDEX: u32 = 0;
/// IRQ indexes of a vfio-ccw device.
pub const VFIO_CCW_IO_IRQ_INDEX: u32 = 0;
pub const VFIO_CCW_CRW_IRQ_INDEX: u32 = 1;
pub const VFIO_CCW_REQ_IRQ_INDEX: u32 = 2;
/// `vfio_irq_set.flags`.
pub const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
pub const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;
/// `vfio_iommu_type1_dma_map.flags`.
pub const VFIO_DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub const VFIO_DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

/// `struct ccw_io_region` (packed, 124 bytes): ORB, SCSW, IRB, and a u32
/// return code at 120.
pub const IO_ORB: u64 = 0;
pub const IO_SCSW: u64 = 12;
pub const IO_IRB: u64 = 24;
pub const IO_REGION_SIZE: u64 = 124;
/// `struct ccw_cmd_region` (8 bytes): command, return code.
pub const CMD_REGION_SIZE: u64 = 8;
pub const VFIO_CCW_ASYNC_CMD_HSCH: u32 = 1;
pub const VFIO_CCW_ASYNC_CMD_CSCH: u32 = 2;
/// `struct ccw_schib_region` (52 bytes).
pub const SCHIB_REGION_SIZE: u64 = 52;
/// `struct ccw_crw_region` (8 bytes): CRW, pad.
pub const CRW_REGION_SIZE: u64 = 8;

/// `struct vfio_group_status`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GroupStatus {
    pub argsz: u32,
    pub flags: u32,
}

/// `struct vfio_device_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DeviceInfo {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
    pub cap_offset: u32,
    pub pad: u32,
}

/// `struct vfio_region_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}

/// `struct vfio_info_cap_header` followed by `vfio_region_info_cap_type`'s
/// type and subtype.
pub const CAP_HEADER_SIZE: usize = 8;
pub const CAP_TYPE_SIZE: usize = 16;

/// `struct vfio_irq_set` with one eventfd as its data.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IrqSetEventfd {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
    pub fd: i32,
}

/// `struct vfio_iommu_type1_dma_map`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap` (without its flexible data).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
}

/// Size of a UAPI structure for its `argsz` field.
fn argsz<T>() -> u32 {
    u32::try_from(size_of::<T>()).unwrap_or(u32::MAX)
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An ioctl whose argument is an integer (or none).
pub fn ioctl_value(fd: &impl AsRawFd, request: u32, value: libc::c_ulong) -> io::Result<i32> {
    // SAFETY: every request passed here (GET_API_VERSION, CHECK_EXTENSION,
    // SET_IOMMU) takes its argument by value; the kernel dereferences no
    // pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::Ioctl::from(request), value) })
}

/// An ioctl that reads and/or writes one `#[repr(C)]` UAPI structure.
fn ioctl_struct<T>(fd: &impl AsRawFd, request: u32, arg: &mut T) -> io::Result<i32> {
    // SAFETY: `arg` is a live, exclusively borrowed structure whose layout is
    // the UAPI structure of `request` (checked in the tests), and its argsz
    // field limits the kernel to `size_of::<T>()` bytes.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::Ioctl::from(request),
            std::ptr::from_mut(arg),
        )
    })
}

/// VFIO_GROUP_GET_STATUS.
pub fn group_status(group: &File) -> io::Result<GroupStatus> {
    let mut status = GroupStatus {
        argsz: argsz::<GroupStatus>(),
        ..GroupStatus::default()
    };
    ioctl_struct(group, VFIO_GROUP_GET_STATUS, &mut status)?;
    Ok(status)
}

/// VFIO_GROUP_SET_CONTAINER.
pub fn group_set_container(group: &File, container: &File) -> io::Result<()> {
    let mut fd: i32 = container.as_raw_fd();
    ioctl_struct(group, VFIO_GROUP_SET_CONTAINER, &mut fd).map(drop)
}

/// VFIO_GROUP_GET_DEVICE_FD: open the device named `name` in the group.
/// Opening it makes vfio-ccw enable the subchannel.
pub fn group_get_device_fd(group: &File, name: &CStr) -> io::Result<File> {
    // SAFETY: the argument is a NUL-terminated string that outlives the
    // call; the kernel only reads it.
    let fd = check(unsafe {
        libc::ioctl(
            group.as_raw_fd(),
            libc::Ioctl::from(VFIO_GROUP_GET_DEVICE_FD),
            name.as_ptr(),
        )
    })?;
    // SAFETY: on success the ioctl returned a new descriptor that nothing
    // else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// VFIO_DEVICE_GET_INFO.
pub fn device_info(device: &File) -> io::Result<DeviceInfo> {
    let mut info = DeviceInfo {
        argsz: argsz::<DeviceInfo>(),
        ..DeviceInfo::default()
    };
    ioctl_struct(device, VFIO_DEVICE_GET_INFO, &mut info)?;
    Ok(info)
}

/// VFIO_DEVICE_GET_REGION_INFO with its capability chain: the fixed part,
/// and the whole buffer the kernel filled (capability offsets count from
/// its start).
pub fn region_info(device: &File, index: u32) -> io::Result<(RegionInfo, Vec<u8>)> {
    let mut info = RegionInfo {
        argsz: argsz::<RegionInfo>(),
        index,
        ..RegionInfo::default()
    };
    ioctl_struct(device, VFIO_DEVICE_GET_REGION_INFO, &mut info)?;
    let want = usize::try_from(info.argsz).unwrap_or(0);
    if info.flags & VFIO_REGION_INFO_FLAG_CAPS == 0 || want <= size_of::<RegionInfo>() {
        return Ok((info, Vec::new()));
    }
    // Room for the chain, in u64 units so the buffer is aligned for the
    // structure at its start.
    let mut buffer = vec![0u64; want.div_ceil(8)];
    let bytes = buffer.len() * 8;
    let header = RegionInfo {
        argsz: u32::try_from(bytes).unwrap_or(u32::MAX),
        index,
        ..RegionInfo::default()
    };
    // SAFETY: ioctl on a buffer of `bytes` bytes, 8-byte aligned, starting
    // with a `vfio_region_info` whose argsz tells the kernel the buffer's
    // size; the kernel writes at most that many bytes.
    check(unsafe {
        let ptr = buffer.as_mut_ptr().cast::<RegionInfo>();
        ptr.write(header);
        libc::ioctl(
            device.as_raw_fd(),
            libc::Ioctl::from(VFIO_DEVICE_GET_REGION_INFO),
            ptr,
        )
    })?;
    let raw: Vec<u8> = buffer.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let info = parse_region_info(&raw).ok_or_else(|| io::Error::other("short region info"))?;
    Ok((info, raw))
}

fn ne_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn ne_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The fixed part of a region-info buffer.
pub fn parse_region_info(raw: &[u8]) -> Option<RegionInfo> {
    Some(RegionInfo {
        argsz: ne_u32(raw, 0)?,
        flags: ne_u32(raw, 4)?,
        index: ne_u32(raw, 8)?,
        cap_offset: ne_u32(raw, 12)?,
        size: ne_u64(raw, 16)?,
        offset: ne_u64(raw, 24)?,
    })
}

/// The (type, subtype) of a region-info buffer's type capability, if its
/// chain has one. The chain is walked with bounds checks and at most 64
/// steps, so a malformed chain ends the walk instead of looping.
pub fn region_type(raw: &[u8]) -> Option<(u32, u32)> {
    let info = parse_region_info(raw)?;
    if info.flags & VFIO_REGION_INFO_FLAG_CAPS == 0 {
        return None;
    }
    let mut at = usize::try_from(info.cap_offset).ok()?;
    for _ in 0..64 {
        if at < size_of::<RegionInfo>() || at + CAP_HEADER_SIZE > raw.len() {
            return None;
        }
        let id = u16::from_ne_bytes(raw.get(at..at + 2)?.try_into().ok()?);
        let next = ne_u32(raw, at + 4)?;
        if id == VFIO_REGION_INFO_CAP_TYPE && at + CAP_TYPE_SIZE <= raw.len() {
            return Some((
                ne_u32(raw, at + CAP_HEADER_SIZE)?,
                ne_u32(raw, at + CAP_HEADER_SIZE + 4)?,
            ));
        }
        if next == 0 {
            return None;
        }
        at = usize::try_from(next).ok()?;
    }
    None
}

/// VFIO_DEVICE_SET_IRQS: route IRQ `index` to `eventfd`, or stop
/// signalling it (`None`).
pub fn set_irq_eventfd(device: &File, index: u32, eventfd: Option<RawFd>) -> io::Result<()> {
    let mut set = IrqSetEventfd {
        argsz: argsz::<IrqSetEventfd>(),
        flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
        index,
        start: 0,
        count: 1,
        fd: eventfd.unwrap_or(-1),
    };
    ioctl_struct(device, VFIO_DEVICE_SET_IRQS, &mut set).map(drop)
}

/// VFIO_IOMMU_MAP_DMA: make `size` bytes of our address space at `vaddr`
/// reachable by the device at `iova`, for reading and writing.
///
/// The caller keeps the memory mapped until [`dma_unmap`] (the kernel pins
/// its pages while the channel uses them).
pub fn dma_map(container: &File, vaddr: u64, iova: u64, size: u64) -> io::Result<()> {
    let mut map = DmaMap {
        argsz: argsz::<DmaMap>(),
        flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        vaddr,
        iova,
        size,
    };
    ioctl_struct(container, VFIO_IOMMU_MAP_DMA, &mut map).map(drop)
}

/// VFIO_IOMMU_UNMAP_DMA; how many bytes the kernel unmapped.
pub fn dma_unmap(container: &File, iova: u64, size: u64) -> io::Result<u64> {
    let mut unmap = DmaUnmap {
        argsz: argsz::<DmaUnmap>(),
        flags: 0,
        iova,
        size,
    };
    ioctl_struct(container, VFIO_IOMMU_UNMAP_DMA, &mut unmap)?;
    Ok(unmap.size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn ioctl_numbers_match_the_uapi() {
        // VFIO_GET_API_VERSION = _IO(';', 100) = 0x3b64, and so on.
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_CHECK_EXTENSION, 0x3b65);
        assert_eq!(VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(VFIO_GROUP_GET_STATUS, 0x3b67);
        assert_eq!(VFIO_GROUP_SET_CONTAINER, 0x3b68);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(VFIO_DEVICE_GET_INFO, 0x3b6b);
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(VFIO_DEVICE_SET_IRQS, 0x3b6e);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
    }

    #[test]
    fn structure_layouts_match_the_uapi() {
        assert_eq!(size_of::<GroupStatus>(), 8);
        assert_eq!(size_of::<DeviceInfo>(), 24);
        assert_eq!(offset_of!(DeviceInfo, num_regions), 8);
        assert_eq!(offset_of!(DeviceInfo, cap_offset), 16);
        assert_eq!(size_of::<RegionInfo>(), 32);
        assert_eq!(offset_of!(RegionInfo, index), 8);
        assert_eq!(offset_of!(RegionInfo, cap_offset), 12);
        assert_eq!(offset_of!(RegionInfo, size), 16);
        assert_eq!(offset_of!(RegionInfo, offset), 24);
        // vfio_irq_set is 20 bytes; one s32 eventfd follows as data[].
        assert_eq!(offset_of!(IrqSetEventfd, fd), 20);
        assert_eq!(size_of::<IrqSetEventfd>(), 24);
        assert_eq!(size_of::<DmaMap>(), 32);
        assert_eq!(offset_of!(DmaMap, vaddr), 8);
        assert_eq!(offset_of!(DmaMap, iova), 16);
        assert_eq!(offset_of!(DmaMap, size), 24);
        assert_eq!(size_of::<DmaUnmap>(), 24);
        assert_eq!(offset_of!(DmaUnmap, iova), 8);
        assert_eq!(offset_of!(DmaUnmap, size), 16);
    }

    #[test]
    fn ccw_region_layouts_match_the_uapi() {
        // struct ccw_io_region: orb_area[12], scsw_area[12], irb_area[96],
        // ret_code, packed.
        assert_eq!(IO_SCSW, IO_ORB + 12);
        assert_eq!(IO_IRB, IO_SCSW + 12);
        // ret_code (u32) follows the IRB and ends the region.
        assert_eq!(IO_REGION_SIZE, IO_IRB + 96 + 4);
        assert_eq!(CMD_REGION_SIZE, 8);
        assert_eq!(SCHIB_REGION_SIZE, 52);
        assert_eq!(CRW_REGION_SIZE, 8);
    }

    /// A region-info buffer as the kernel fills it: the fixed part, then
    /// capabilities at the offsets given.
    fn info_with_caps(caps: &[(usize, u16, u32, &[u8])]) -> Vec<u8> {
        let mut raw = vec![0u8; 32];
        let total = caps
            .iter()
            .map(|(at, _, _, body)| at + CAP_HEADER_SIZE + body.len())
            .max()
            .unwrap_or(32);
        raw.resize(total, 0);
        raw[0..4].copy_from_slice(&u32::try_from(total).unwrap().to_ne_bytes());
        raw[4..8].copy_from_slice(&(VFIO_REGION_INFO_FLAG_CAPS | 3).to_ne_bytes());
        raw[8..12].copy_from_slice(&4u32.to_ne_bytes());
        let first = u32::try_from(caps.first().map_or(0, |c| c.0)).unwrap();
        raw[12..16].copy_from_slice(&first.to_ne_bytes());
        raw[16..24].copy_from_slice(&8u64.to_ne_bytes());
        raw[24..32].copy_from_slice(&(4u64 << 40).to_ne_bytes());
        for (at, id, next, body) in caps {
            raw[*at..at + 2].copy_from_slice(&id.to_ne_bytes());
            raw[at + 2..at + 4].copy_from_slice(&1u16.to_ne_bytes());
            raw[at + 4..at + 8].copy_from_slice(&next.to_ne_bytes());
            raw[at + 8..at + 8 + body.len()].copy_from_slice(body);
        }
        raw
    }

    fn type_body(kind: u32, subtype: u32) -> Vec<u8> {
        [kind.to_ne_bytes(), subtype.to_ne_bytes()].concat()
    }

    #[test]
    fn region_type_is_found_along_the_capability_chain() {
        let crw = type_body(VFIO_REGION_TYPE_CCW, VFIO_REGION_SUBTYPE_CCW_CRW);
        // Another capability (id 1, sparse mmap) first, then the type.
        let raw = info_with_caps(&[(32, 1, 48, &[0u8; 8]), (48, 2, 0, &crw)]);
        let info = parse_region_info(&raw).unwrap();
        assert_eq!(info.index, 4);
        assert_eq!(info.size, 8);
        assert_eq!(info.offset, 4 << 40);
        assert_eq!(
            region_type(&raw),
            Some((VFIO_REGION_TYPE_CCW, VFIO_REGION_SUBTYPE_CCW_CRW))
        );
    }

    #[test]
    fn malformed_capability_chains_end_the_walk() {
        let schib = type_body(VFIO_REGION_TYPE_CCW, VFIO_REGION_SUBTYPE_CCW_SCHIB);
        // A chain without a type capability.
        assert_eq!(region_type(&info_with_caps(&[(32, 1, 0, &[0u8; 8])])), None);
        // A loop (next points to itself).
        assert_eq!(
            region_type(&info_with_caps(&[(32, 1, 32, &[0u8; 8])])),
            None
        );
        // Next points into the fixed part or past the buffer.
        assert_eq!(region_type(&info_with_caps(&[(32, 1, 8, &[0u8; 8])])), None);
        assert_eq!(
            region_type(&info_with_caps(&[(32, 1, 4096, &[0u8; 8])])),
            None
        );
        // A type capability cut short by the end of the buffer.
        let mut raw = info_with_caps(&[(32, 2, 0, &schib)]);
        raw.truncate(44);
        assert_eq!(region_type(&raw), None);
        // No CAPS flag: no chain to walk.
        let mut raw = info_with_caps(&[(32, 2, 0, &schib)]);
        raw[4..8].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(region_type(&raw), None);
    }
}
