//! The few raw OS calls the backend makes that neither std nor the rust-vmm
//! crates wrap. Every `unsafe` block of the daemon outside `vfio` lives here.

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
