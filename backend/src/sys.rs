//! The few raw OS calls the backend makes that neither std nor the rust-vmm
//! crates wrap. Every `unsafe` block of the daemon outside `vfio` and
//! `mapped_file` (the image mapping and its SIGBUS handler, and the one
//! call of the unsafe `MappedFile::map` in `ckd/image.rs`) lives here.

use std::io;
use std::os::fd::AsRawFd;

/// Put a file descriptor into non-blocking mode.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL on a descriptor we own reads its flags; no memory is
    // passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL with an integer argument changes only the file status
    // flags of a descriptor we own.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Take an exclusive advisory lock (flock) on an open file without
/// waiting: `Ok(false)` when another open file description holds one.
pub fn try_lock_exclusive(file: &impl AsRawFd) -> io::Result<bool> {
    let fd = file.as_raw_fd();
    // SAFETY: flock on a descriptor we own only changes its lock state; no
    // memory is involved.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(error)
    }
}

/// Our process id.
pub fn getpid() -> u32 {
    std::process::id()
}

/// Take ownership of an inherited listening UNIX socket (`--fd N` or
/// systemd's fd 3).
pub fn listener_from_fd(fd: std::os::fd::RawFd) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only queries the descriptor flags; it fails with EBADF
    // for a descriptor that is not open, which we report instead of wrapping.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not an open file descriptor"),
        ));
    }
    // SAFETY: the descriptor is open and was handed to this process to serve
    // as its listening socket (by --fd or LISTEN_FDS); nothing else in the
    // process owns it, so the listener may close it on drop.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    // A descriptor that is not a UNIX socket has no UNIX local address.
    listener.local_addr().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is not a listening UNIX socket: {e}"),
        )
    })?;
    Ok(listener)
}

/// The effective user id.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Lift the locked-memory limit (soft and hard): the vfio host pins guest
/// RAM for DMA, which the kernel counts against it once the process has no
/// CAP_IPC_LOCK. Raising the hard limit needs CAP_SYS_RESOURCE.
pub fn lift_memlock_limit() -> std::io::Result<()> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the structure, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The real group id.
pub fn getgid() -> u32 {
    // SAFETY: getgid has no arguments and cannot fail.
    unsafe { libc::getgid() }
}

/// Never gain privileges again (set-user-id binaries, file capabilities):
/// the precondition for an unprivileged seccomp filter.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Move the process into new namespaces (`CLONE_NEW*` flags).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes a flag word and changes only this process's
    // namespace membership.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &std::path::Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// mount(2) without file system data.
pub fn mount(
    source: &str,
    target: &std::path::Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let source = std::ffi::CString::new(source)?;
    let fstype = std::ffi::CString::new(fstype)?;
    let data = std::ffi::CString::new(data)?;
    let target = c_path(target)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call; the kernel copies what it needs.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make the current directory the root: pivot_root(".", ".") then detach
/// the old root, which the pivot stacked on top of the new one.
pub fn pivot_to_cwd() -> io::Result<()> {
    let dot = c"."; // both the new root and where the old one goes
    // SAFETY: pivot_root takes two NUL-terminated paths that outlive the
    // call; glibc has no wrapper, hence syscall().
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: umount2 takes a NUL-terminated path and a flag word.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// exit(code).
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// fork(2): `Some(pid)` in the parent, `None` in the child. Only for a
/// single-threaded process (the child gets the calling thread only).
pub fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: the caller is single-threaded (setup has spawned no thread
    // yet), so the child inherits no lock held by another thread.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// Have the kernel SIGKILL this process when its parent dies.
pub fn kill_with_parent() -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Wait for a child to end.
pub fn wait_child(pid: libc::pid_t) -> io::Result<ChildExit> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into the local we pass.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(if libc::WIFSIGNALED(status) {
                ChildExit::Signaled(libc::WTERMSIG(status))
            } else {
                ChildExit::Exited(libc::WEXITSTATUS(status))
            });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// End this process the way a child ended: same exit code, or killed by
/// the same signal (so a supervisor sees what happened to the real work).
pub fn exit_like(how: ChildExit) -> ! {
    match how {
        ChildExit::Exited(code) => std::process::exit(code),
        ChildExit::Signaled(signal) => {
            // SAFETY: resetting a signal to its default action and sending
            // it to ourselves; no handler runs.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
                libc::kill(libc::getpid(), signal);
            }
            std::process::exit(128 + signal)
        }
    }
}

/// The group id of a group name, from the system's group database.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    let cname = std::ffi::CString::new(name)?;
    let mut buffer: Vec<libc::c_char> = vec![0; 16 * 1024];
    // SAFETY: group is plain old data, filled in by getgrnam_r.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local of the size passed;
    // getgrnam_r points `result` into `group` or sets it to NULL.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut group,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok((!result.is_null()).then_some(group.gr_gid))
}

/// A system call the seccomp allow-list does not contain (test hook): the
/// personality query changes nothing.
pub fn forbidden_probe() -> i64 {
    // SAFETY: personality(0xffffffff) only reads the execution domain.
    unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffff_u64) }
}
