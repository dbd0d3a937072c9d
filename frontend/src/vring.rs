//! The driver side of a split virtqueue (virtio 1.x §2.7), laid out in the
//! frontend's control memory, as QEMU's device lays out its rings.
//!
//! The frontend is the driver: it fills descriptors, publishes them in the
//! available ring and reads completions from the used ring. The backend
//! process sees the same memory through the memory table.

use std::sync::atomic::{Ordering, fence};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Descriptor flag: the chain continues in `next`.
const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Available-ring flag: the driver does not need notifications.
const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used-ring flag: the device does not need kicks.
const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;
/// Descriptor flag: the device writes this buffer.
const VIRTQ_DESC_F_WRITE: u16 = 2;

/// One buffer of a descriptor chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Whether the device writes it.
    pub writable: bool,
}

/// Guest addresses of a queue's three areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Descriptor table.
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
    /// Number of descriptors.
    pub size: u16,
}

impl RingLayout {
    /// Bytes a ring of `size` needs from `base`, page aligned areas.
    pub fn at(base: u64, size: u16) -> Self {
        let desc_bytes = 16 * u64::from(size);
        let avail = base + desc_bytes.next_multiple_of(4096);
        let avail_bytes = 6 + 2 * u64::from(size);
        let used = avail + avail_bytes.next_multiple_of(4096);
        Self {
            desc: base,
            avail,
            used,
            size,
        }
    }

    /// First address after the rings.
    pub fn end(&self) -> u64 {
        self.used + (6 + 8 * u64::from(self.size)).next_multiple_of(4096)
    }
}

/// Errors of the driver side.
#[derive(Debug, thiserror::Error)]
pub enum VringError {
    /// Not enough free descriptors.
    #[error("virtqueue full")]
    Full,
    /// The ring memory is not mapped.
    #[error("ring memory access failed: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    /// The device returned an id that was not in flight.
    #[error("device used descriptor {0}, which was not in flight")]
    BadUsed(u32),
}

/// A split virtqueue driven from the frontend.
#[derive(Debug)]
pub struct DriverQueue {
    layout: RingLayout,
    free: Vec<u16>,
    /// Chain length per head, for returning descriptors.
    in_flight: Vec<u16>,
    avail_idx: u16,
    last_used: u16,
}

impl DriverQueue {
    /// An empty queue over zeroed ring memory.
    pub fn new(layout: RingLayout) -> Self {
        Self {
            layout,
            free: (0..layout.size).rev().collect(),
            in_flight: vec![0; usize::from(layout.size)],
            avail_idx: 0,
            last_used: 0,
        }
    }

    /// The queue's layout.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// Publish a chain; returns its head descriptor index.
    pub fn add(&mut self, mem: &GuestMemoryMmap, chain: &[Buffer]) -> Result<u16, VringError> {
        if chain.is_empty() || chain.len() > self.free.len() {
            return Err(VringError::Full);
        }
        let ids: Vec<u16> = (0..chain.len()).filter_map(|_| self.free.pop()).collect();
        for (i, (buffer, id)) in chain.iter().zip(&ids).enumerate() {
            let mut flags = if buffer.writable {
                VIRTQ_DESC_F_WRITE
            } else {
                0
            };
            let next = ids.get(i + 1).copied().unwrap_or(0);
            if i + 1 < ids.len() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            let at = self.layout.desc + 16 * u64::from(*id);
            mem.write_obj(buffer.addr.to_le(), GuestAddress(at))?;
            mem.write_obj(buffer.len.to_le(), GuestAddress(at + 8))?;
            mem.write_obj(flags.to_le(), GuestAddress(at + 12))?;
            mem.write_obj(next.to_le(), GuestAddress(at + 14))?;
        }
        let head = ids[0];
        self.in_flight[usize::from(head)] = u16::try_from(ids.len()).unwrap_or(u16::MAX);
        let slot = self.avail_idx % self.layout.size;
        mem.write_obj(
            head.to_le(),
            GuestAddress(self.layout.avail + 4 + 2 * u64::from(slot)),
        )?;
        // The descriptors and the ring entry must be visible before the index.
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.store(
            self.avail_idx.to_le(),
            GuestAddress(self.layout.avail + 2),
            Ordering::Release,
        )?;
        fence(Ordering::SeqCst);
        Ok(head)
    }

    /// Whether the device wants a notification for new buffers (it sets
    /// VIRTQ_USED_F_NO_NOTIFY in the used ring's flags when it does not).
    pub fn needs_kick(&self, mem: &GuestMemoryMmap) -> Result<bool, VringError> {
        fence(Ordering::SeqCst);
        let flags = u16::from_le(mem.load(GuestAddress(self.layout.used), Ordering::Acquire)?);
        Ok(flags & VIRTQ_USED_F_NO_NOTIFY == 0)
    }

    /// Ask the device for used-buffer notifications, or tell it not to
    /// bother (VIRTQ_AVAIL_F_NO_INTERRUPT) while the driver polls anyway.
    pub fn set_interrupts(&self, mem: &GuestMemoryMmap, enabled: bool) -> Result<(), VringError> {
        let flags: u16 = if enabled {
            0
        } else {
            VIRTQ_AVAIL_F_NO_INTERRUPT
        };
        mem.store(
            flags.to_le(),
            GuestAddress(self.layout.avail),
            Ordering::Release,
        )?;
        fence(Ordering::SeqCst);
        Ok(())
    }

    /// Take the next completion: (head, bytes written by the device).
    pub fn pop_used(&mut self, mem: &GuestMemoryMmap) -> Result<Option<(u16, u32)>, VringError> {
        let used_idx =
            u16::from_le(mem.load(GuestAddress(self.layout.used + 2), Ordering::Acquire)?);
        if used_idx == self.last_used {
            return Ok(None);
        }
        fence(Ordering::SeqCst);
        let slot = self.last_used % self.layout.size;
        let at = self.layout.used + 4 + 8 * u64::from(slot);
        let id = u32::from_le(mem.read_obj(GuestAddress(at))?);
        let len = u32::from_le(mem.read_obj(GuestAddress(at + 4))?);
        let head = u16::try_from(id).map_err(|_| VringError::BadUsed(id))?;
        let count = *self
            .in_flight
            .get(usize::from(head))
            .filter(|n| **n > 0)
            .ok_or(VringError::BadUsed(id))?;
        self.last_used = self.last_used.wrapping_add(1);
        self.in_flight[usize::from(head)] = 0;
        // Return the chain's descriptors by following `next`.
        let mut id = head;
        for _ in 0..count {
            self.free.push(id);
            let at = self.layout.desc + 16 * u64::from(id);
            id = u16::from_le(mem.read_obj(GuestAddress(at + 14))?);
        }
        Ok(Some((head, len)))
    }
}
