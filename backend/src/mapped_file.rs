//! Read-only shared mappings of files (the DASD's image: reads go from the
//! host's page cache straight into guest memory, one copy), and the SIGBUS
//! handler that makes a failed page-in a flag the reader checks instead of
//! the end of the process.
//!
//! A page of a file mapping that cannot be read (an I/O error of the host's
//! disk, or a file truncated by a process that ignores our lock) raises
//! SIGBUS at the access. For an address inside a registered mapping the
//! handler maps a page of zeros over the failed page, marks the mapping
//! faulted and returns, so the access completes with zeros; the owner asks
//! [`MappedFile::take_fault`] after reading and reports the data as bad
//! (and stops using the mapping, whose page is now zeros for good). A
//! SIGBUS anywhere else gets the disposition it had before.
//!
//! Every `unsafe` block of the image's read path lives here, except the
//! call of [`MappedFile::map`], whose caller states why the file's bytes do
//! not change under a slice.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Mappings the handler can recover at once (one per DASD image).
const REGISTRY_SLOTS: usize = 64;

/// One registered mapping: `[start, end)` (start 0 when the slot is free).
struct Registered {
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Registered = Registered {
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    faulted: AtomicBool::new(false),
};

static REGISTRY: [Registered; REGISTRY_SLOTS] = [FREE; REGISTRY_SLOTS];

/// The host's page size, read when the handler is installed.
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);

/// The SIGBUS disposition before ours (Rust's runtime installs one to
/// report stack overflows), put back for faults that are not ours.
struct Disposition(libc::sigaction);

// SAFETY: a sigaction is plain data (a handler address, flags and a signal
// mask); it is written once before it is shared and only read afterwards.
unsafe impl Send for Disposition {}
// SAFETY: as above: shared read-only.
unsafe impl Sync for Disposition {}

static PREVIOUS: OnceLock<io::Result<Disposition>> = OnceLock::new();

extern "C" fn on_sigbus(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // Only async-signal-safe work here: atomics, mmap and sigaction.
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler;
    // for SIGBUS, si_addr is the faulting address and si_code says why.
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    let page_size = PAGE_SIZE.load(Ordering::Relaxed);
    // A failed page-in is BUS_ADRERR; a SIGBUS sent by kill(2) or for
    // another cause is never compared with the registry.
    let slots = if code == libc::BUS_ADRERR {
        &REGISTRY[..]
    } else {
        &[]
    };
    for slot in slots {
        let start = slot.start.load(Ordering::Acquire);
        let end = slot.end.load(Ordering::Acquire);
        // A slot freed and taken again between the two loads would pair
        // one mapping's start with another's end: read start again.
        if start == 0 || start != slot.start.load(Ordering::Acquire) || addr < start || addr >= end
        {
            continue;
        }
        let page = addr & !(page_size - 1);
        // SAFETY: replaces one page inside a mapping this module made and
        // still owns (it is registered) with private zeros; no Rust object
        // lives there other than the bytes being read.
        let zeros = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                page_size,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zeros != libc::MAP_FAILED {
            slot.faulted.store(true, Ordering::Release);
            return;
        }
    }
    // Not ours (or unrecoverable): the previous disposition takes the
    // access when it faults again.
    let previous = match PREVIOUS.get() {
        Some(Ok(Disposition(previous))) => std::ptr::from_ref(previous),
        _ => std::ptr::null(),
    };
    if previous.is_null() {
        // SAFETY: resetting SIGBUS to its default action takes no memory.
        unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
    } else {
        // SAFETY: `previous` points at the disposition saved at install
        // time, which lives in a static for the rest of the process.
        unsafe { libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut()) };
    }
}

/// Install the handler once per process.
fn install_handler() -> io::Result<()> {
    let installed = PREVIOUS.get_or_init(|| {
        // SAFETY: sysconf only reads a system value.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page) {
            if page.is_power_of_two() {
                PAGE_SIZE.store(page, Ordering::Relaxed);
            }
        }
        // SAFETY: an all-zero sigaction is a valid value to fill in.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: sigemptyset initialises the mask inside `action`.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: as above, for the old disposition.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: installs a handler that only does async-signal-safe work;
        // both pointers are to live locals.
        if unsafe { libc::sigaction(libc::SIGBUS, &action, &mut previous) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Disposition(previous))
    });
    match installed {
        Ok(_) => Ok(()),
        Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
    }
}

/// A read-only, shared mapping of the first `len` bytes of a file.
#[derive(Debug)]
pub struct MappedFile {
    ptr: NonNull<u8>,
    len: usize,
    /// Its entry in the handler's registry.
    slot: usize,
}

// SAFETY: the mapping is read-only memory owned by this value; it is
// unmapped only when the value is dropped, so it can move between threads
// and be read from several at once.
unsafe impl Send for MappedFile {}
// SAFETY: as above: shared access only reads.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Map the first `len` bytes of `file` (which must hold them).
    ///
    /// # Safety
    ///
    /// [`MappedFile::bytes`] hands out slices of the file's pages: while
    /// one is alive the file's bytes must not change, neither through
    /// another process (the caller holds a lock that keeps writers out) nor
    /// through this one (it writes the file only while no slice is held).
    pub unsafe fn map(file: &File, len: usize) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        install_handler()?;
        let slot = REGISTRY
            .iter()
            .position(|slot| {
                slot.start
                    .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| io::Error::other("too many mapped files"))?;
        // SAFETY: a fresh shared, read-only mapping of a descriptor we own;
        // the kernel picks the address, so nothing existing is replaced.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        let Some(ptr) = NonNull::new(ptr.cast::<u8>()).filter(|_| ptr != libc::MAP_FAILED) else {
            let error = io::Error::last_os_error();
            REGISTRY[slot].start.store(0, Ordering::Release);
            return Err(error);
        };
        let registered = &REGISTRY[slot];
        registered.faulted.store(false, Ordering::Relaxed);
        registered
            .end
            .store(ptr.as_ptr() as usize + len, Ordering::Release);
        registered
            .start
            .store(ptr.as_ptr() as usize, Ordering::Release);
        Ok(Self { ptr, len, slot })
    }

    /// The mapped bytes. A page that failed to load reads as zeros; see
    /// [`MappedFile::take_fault`].
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live read-only mapping of `len` bytes for as
        // long as `self` is; its bytes do not change while the slice lives
        // (the contract of `map`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Whether a page failed to load since the last call: the bytes read
    /// meanwhile may be zeros instead of the file's, and the failed pages
    /// stay zeros in this mapping.
    pub fn take_fault(&self) -> bool {
        REGISTRY[self.slot].faulted.swap(false, Ordering::AcqRel)
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        let registered = &REGISTRY[self.slot];
        registered.end.store(0, Ordering::Release);
        registered.start.store(usize::MAX, Ordering::Release);
        // SAFETY: unmaps exactly the mapping made in `map` (including any
        // zero pages the handler put inside it); no slice of it outlives
        // `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        registered.start.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    use super::*;

    fn file_of_pages(pages: usize) -> (File, usize) {
        // The handler's installation reads the host's page size.
        install_handler().expect("SIGBUS handler");
        let page = PAGE_SIZE.load(Ordering::Relaxed);
        let mut file = vmm_sys_util::tempfile::TempFile::new()
            .expect("temp file")
            .into_file();
        for i in 0..pages {
            file.write_all(&vec![u8::try_from(i + 1).unwrap_or(0xff); page])
                .expect("write page");
        }
        (file, page)
    }

    #[test]
    fn mapping_reads_the_file_and_sees_later_writes() {
        let (file, page) = file_of_pages(3);
        // SAFETY: no slice of the mapping is held across the write below.
        let map = unsafe { MappedFile::map(&file, 3 * page) }.expect("map");
        assert_eq!(map.bytes()[0], 1);
        assert_eq!(map.bytes()[2 * page + 7], 3);
        file.write_all_at(b"new", 5).expect("write");
        assert_eq!(&map.bytes()[5..8], b"new");
        assert!(!map.take_fault());
    }

    #[test]
    fn truncated_file_reads_as_zeros_and_a_fault_not_sigbus() {
        let (file, page) = file_of_pages(3);
        // SAFETY: the truncation happens while no slice is held; the pages
        // it removes read as zeros afterwards (what is tested).
        let map = unsafe { MappedFile::map(&file, 3 * page) }.expect("map");
        file.set_len(u64::try_from(page).expect("page"))
            .expect("truncate");
        // Past the end of the file now: SIGBUS without the handler.
        let past_end = &map.bytes()[page..3 * page];
        assert!(past_end.iter().all(|&b| b == 0));
        assert!(map.take_fault(), "the failed page-in is reported");
        assert!(!map.take_fault(), "and reported once");
        assert_eq!(map.bytes()[10], 1, "pages still in the file read as before");
    }

    #[test]
    fn dropped_mappings_free_their_registry_slot() {
        let (file, page) = file_of_pages(1);
        for _ in 0..2 * REGISTRY_SLOTS {
            // SAFETY: nothing writes the file.
            let map = unsafe { MappedFile::map(&file, page) }.expect("map");
            assert_eq!(map.bytes()[0], 1);
        }
    }
}
