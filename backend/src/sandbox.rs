//! Confinement after setup, in the spirit of virtiofsd: once the sockets
//! are listening and the devices are open, the backend needs no new files,
//! no network and no new privileges. In order, [`lock_down`]:
//!
//! 1. optionally enters new namespaces (`--sandbox namespace`): user (when
//!    not root), mount, network, IPC and PID, with an empty read-only root
//!    directory; the PID namespace takes a fork, and the parent only waits
//!    for the child and ends the way it ends;
//! 2. started as root, drops every capability (root then keeps only its
//!    file ownership);
//! 3. sets no_new_privs;
//! 4. installs the seccomp allow-list (`--seccomp`), compiled by
//!    libseccomp, for every thread the backend starts afterwards.

use std::path::Path;

use clap::ValueEnum;
use log::{info, warn};
use thiserror::Error;

use crate::sys;

/// What the seccomp filter does with a system call outside the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeccompMode {
    /// Kill the process (it ends with SIGSYS).
    Kill,
    /// Allow the call and have the kernel log it (audit log / dmesg): for
    /// finding what a new environment needs.
    Log,
    /// Send SIGSYS to the calling thread (a debugger sees where).
    Trap,
    /// No filter.
    None,
}

/// Namespace sandbox choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxMode {
    /// New namespaces and an empty root directory.
    Namespace,
    /// Stay in the namespaces the backend was started in.
    None,
}

/// Why confinement failed; setup stops.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// A namespace step was refused (no user namespaces, no privilege).
    #[error(
        "--sandbox namespace: {step} failed: {source} (this system does not permit the namespace sandbox here; use --sandbox none)"
    )]
    Namespace {
        /// Which step.
        step: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Dropping the capabilities of root failed.
    #[error("dropping capabilities: {0}")]
    Capabilities(String),
    /// PR_SET_NO_NEW_PRIVS failed.
    #[error("no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    /// The backend has no allow-list for this architecture.
    #[error(
        "--seccomp {mode:?}: the backend has no system call allow-list for this architecture; use --seccomp none"
    )]
    UnsupportedArch {
        /// The mode asked for.
        mode: SeccompMode,
    },
    /// libseccomp refused the filter or the kernel refused to install it.
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// The confinement settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confinement {
    /// The namespace sandbox.
    pub sandbox: SandboxMode,
    /// The seccomp mode; `None` for the default (kill where the backend has
    /// an allow-list, x86_64 and s390x; else no filter with a warning).
    pub seccomp: Option<SeccompMode>,
}

/// Confine the process. Must be called while it is single-threaded (the
/// namespace sandbox forks). With the namespace sandbox this returns in the
/// child only; the parent waits for it and exits the same way.
pub fn lock_down(confinement: Confinement) -> Result<(), SandboxError> {
    if confinement.sandbox == SandboxMode::Namespace {
        enter_namespaces()?;
    }
    drop_capabilities()?;
    sys::set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;
    let mode = match (confinement.seccomp, filter::SUPPORTED) {
        (Some(mode), _) => mode,
        (None, true) => SeccompMode::Kill,
        (None, false) => {
            warn!("no seccomp filter: the backend has no allow-list for this architecture");
            SeccompMode::None
        }
    };
    if mode != SeccompMode::None {
        filter::install(mode)?;
        info!("seccomp filter installed ({mode:?} on other system calls)");
    }
    Ok(())
}

/// Started as root, give up every capability: once set up (sockets bound,
/// images and devices open) the backend needs none, so root keeps only its
/// file ownership. The locked-memory limit is lifted first, while
/// CAP_SYS_RESOURCE still allows it: without CAP_IPC_LOCK the vfio host's
/// DMA mappings of guest RAM count against that limit.
fn drop_capabilities() -> Result<(), SandboxError> {
    if sys::geteuid() != 0 {
        return Ok(());
    }
    if let Err(e) = sys::lift_memlock_limit() {
        warn!("running as root: could not lift the locked-memory limit: {e}");
    }
    // The bounding set first (dropping from it needs CAP_SETPCAP), then
    // what the process holds and could pass on.
    for set in [
        caps::CapSet::Bounding,
        caps::CapSet::Ambient,
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| SandboxError::Capabilities(format!("{set:?}: {e}")))?;
    }
    info!("running as root: every capability dropped");
    Ok(())
}

/// The filter, compiled by libseccomp (through the `libseccomp` crate),
/// which knows every architecture the backend runs on: one code path for
/// x86_64 and s390x. libseccomp also adds the checks a hand-written filter
/// tends to miss (the audit architecture first, x32 system calls on
/// x86_64).
mod filter {
    use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

    use super::{SandboxError, SeccompMode, allowed_syscalls};

    /// Filters can be built on every architecture the allow-list covers.
    pub const SUPPORTED: bool = !super::ALLOWED.is_empty();

    /// The ioctl type byte of every VFIO request (`_IO(';', …)`).
    const VFIO_IOCTL_TYPE: u8 = b';';

    /// Only the low 32 bits of an `int` argument are defined.
    const INT_ARG: u64 = 0xffff_ffff;

    fn seccomp(e: impl std::fmt::Display) -> SandboxError {
        SandboxError::Seccomp(e.to_string())
    }

    fn syscall(nr: i64) -> Result<ScmpSyscall, SandboxError> {
        i32::try_from(nr)
            .map(ScmpSyscall::from)
            .map_err(|_| seccomp(format!("system call number {nr} out of range")))
    }

    /// Compile the allow-list into a filter for `mode`; `None` for no
    /// filter.
    pub fn build(mode: SeccompMode) -> Result<Option<ScmpFilterContext>, SandboxError> {
        let mismatch = match mode {
            SeccompMode::Kill => ScmpAction::KillProcess,
            SeccompMode::Log => ScmpAction::Log,
            SeccompMode::Trap => ScmpAction::Trap,
            SeccompMode::None => return Ok(None),
        };
        if !SUPPORTED {
            return Err(SandboxError::UnsupportedArch { mode });
        }
        // libseccomp asks the kernel whether it has the action.
        let mut filter = ScmpFilterContext::new(mismatch).map_err(|e| {
            seccomp(format!(
                "{e}: the kernel must support seccomp filters with {mismatch:?} (Linux 4.14 or later)"
            ))
        })?;
        for &nr in allowed_syscalls() {
            filter
                .add_rule(ScmpAction::Allow, syscall(nr)?)
                .map_err(seccomp)?;
        }
        // prctl only to name threads (std does it for every named thread).
        filter
            .add_rule_conditional(
                ScmpAction::Allow,
                syscall(libc::SYS_prctl)?,
                &[ScmpArgCompare::new(
                    0,
                    ScmpCompareOp::MaskedEqual(INT_ARG),
                    u64::from(libc::PR_SET_NAME.unsigned_abs()),
                )],
            )
            .map_err(seccomp)?;
        // ioctl only for VFIO (the vfio host opens the device, routes its
        // interrupts and maps guest RAM at session time): request type ';'.
        filter
            .add_rule_conditional(
                ScmpAction::Allow,
                syscall(libc::SYS_ioctl)?,
                &[ScmpArgCompare::new(
                    1,
                    ScmpCompareOp::MaskedEqual(0xff00),
                    u64::from(VFIO_IOCTL_TYPE) << 8,
                )],
            )
            .map_err(seccomp)?;
        Ok(Some(filter))
    }

    /// Build and install the filter for this thread and the threads it
    /// starts afterwards.
    pub fn install(mode: SeccompMode) -> Result<(), SandboxError> {
        match build(mode)? {
            Some(filter) => filter.load().map_err(seccomp),
            None => Ok(()),
        }
    }

    // The allow-list exists for these two architectures only.
    #[cfg(all(test, any(target_arch = "x86_64", target_arch = "s390x")))]
    mod tests {
        use std::io::Read;

        use super::*;

        /// The BPF program libseccomp generates for `mode`, as
        /// (code, jt, jf, k) in native byte order.
        fn program(mode: SeccompMode) -> Vec<(u16, u8, u8, u32)> {
            let filter = build(mode).unwrap().expect("a filter");
            let path = std::env::temp_dir()
                .join(format!("vuc-seccomp-{}-{mode:?}.bpf", std::process::id()));
            filter
                .export_bpf(std::fs::File::create(&path).unwrap())
                .unwrap();
            let mut bytes = Vec::new();
            std::fs::File::open(&path)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            std::fs::remove_file(&path).unwrap();
            assert_eq!(bytes.len() % 8, 0);
            bytes
                .chunks_exact(8)
                .map(|i| {
                    (
                        u16::from_ne_bytes([i[0], i[1]]),
                        i[2],
                        i[3],
                        u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
                    )
                })
                .collect()
        }

        #[test]
        fn every_mode_compiles_to_a_program_that_checks_the_architecture() {
            const BPF_RET_K: u16 = 0x06;
            let native = if cfg!(target_arch = "s390x") {
                0x8000_0016 // AUDIT_ARCH_S390X
            } else {
                0xc000_003e // AUDIT_ARCH_X86_64
            };
            for (mode, action) in [
                (SeccompMode::Kill, 0x8000_0000_u32), // SECCOMP_RET_KILL_PROCESS
                (SeccompMode::Log, 0x7ffc_0000),      // SECCOMP_RET_LOG
                (SeccompMode::Trap, 0x0003_0000),     // SECCOMP_RET_TRAP
            ] {
                let program = program(mode);
                // One comparison per allowed call at least.
                assert!(program.len() > allowed_syscalls().len(), "{mode:?}");
                // The first thing checked is the audit architecture (at
                // offset 4 of seccomp_data).
                assert_eq!(program[0], (0x20, 0, 0, 4), "{mode:?}: load arch");
                assert_eq!(program[1].3, native, "{mode:?}: compare arch");
                let returns: Vec<u32> = program
                    .iter()
                    .filter(|i| i.0 == BPF_RET_K)
                    .map(|i| i.3)
                    .collect();
                assert!(returns.contains(&0x7fff_0000), "{mode:?}: allow");
                assert!(returns.contains(&action), "{mode:?}: {returns:x?}");
            }
            assert!(build(SeccompMode::None).unwrap().is_none());
        }
    }
}

/// The system calls the backend makes after setup (besides prctl to name
/// threads): serving connections (accept, the vhost-user messages with
/// their fds, mmap of guest memory, fstat of the memory fds), the event
/// loops (epoll, eventfd, timerfd, poll), threads and their exit, memory
/// allocation, logging, image I/O (pread/pwrite/fsync), the control socket,
/// sleeping, and a panic's abort. Found by tracing the whole test-suite
/// (docs/operations.md says how to redo that); kept in the syscall numbers
/// of each architecture.
pub fn allowed_syscalls() -> &'static [i64] {
    ALLOWED
}

/// The calls by name; libc gives each architecture its own numbers.
macro_rules! common_syscalls {
    ($($extra:ident),* $(,)?) => {
        [
            libc::SYS_accept4,
            libc::SYS_brk,
            libc::SYS_clock_gettime,
            libc::SYS_clock_nanosleep,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_close,
            libc::SYS_epoll_create1,
            libc::SYS_epoll_ctl,
            libc::SYS_epoll_pwait,
            libc::SYS_eventfd2,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_fcntl,
            libc::SYS_fdatasync,
            libc::SYS_fsync,
            libc::SYS_futex,
            libc::SYS_getpid,
            libc::SYS_getrandom,
            libc::SYS_gettid,
            libc::SYS_lseek,
            libc::SYS_madvise,
            libc::SYS_mmap,
            libc::SYS_mprotect,
            libc::SYS_mremap,
            libc::SYS_munmap,
            libc::SYS_nanosleep,
            libc::SYS_ppoll,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_read,
            libc::SYS_readv,
            libc::SYS_recvfrom,
            libc::SYS_recvmsg,
            libc::SYS_restart_syscall,
            libc::SYS_rseq,
            libc::SYS_rt_sigaction,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_sched_getaffinity,
            libc::SYS_sched_yield,
            libc::SYS_sendmsg,
            libc::SYS_sendto,
            libc::SYS_set_robust_list,
            libc::SYS_setsockopt,
            libc::SYS_shutdown,
            libc::SYS_sigaltstack,
            libc::SYS_statx,
            libc::SYS_tgkill,
            libc::SYS_timerfd_gettime,
            libc::SYS_timerfd_settime,
            libc::SYS_write,
            libc::SYS_writev,
            $(libc::$extra,)*
        ]
    };
}

// x86_64 and s390x also have the older calls glibc still uses; libc maps
// every name to the architecture's own number.
#[cfg(any(target_arch = "x86_64", target_arch = "s390x"))]
const ALLOWED: &[i64] = &common_syscalls!(SYS_epoll_wait, SYS_fstat, SYS_newfstatat, SYS_poll,);

#[cfg(not(any(target_arch = "x86_64", target_arch = "s390x")))]
const ALLOWED: &[i64] = &[];

/// Pivot into an empty directory inside new namespaces.
fn enter_namespaces() -> Result<(), SandboxError> {
    let err = |step: &'static str| move |source| SandboxError::Namespace { step, source };
    let root = sys::geteuid() == 0;
    let (uid, gid) = (sys::geteuid(), sys::getgid());
    // Root keeps its user namespace: a new one would cut it off from the
    // host devices it may need; others need one to be allowed the rest.
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
    if !root {
        flags |= libc::CLONE_NEWUSER;
    }
    sys::unshare(flags).map_err(err("unshare"))?;
    if !root {
        // Keep our own ids inside the user namespace.
        std::fs::write("/proc/self/setgroups", "deny").map_err(err("setgroups"))?;
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")).map_err(err("uid_map"))?;
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")).map_err(err("gid_map"))?;
    }
    // Nothing we mount may propagate back to the host.
    sys::mount("", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE, "")
        .map_err(err("making mounts private"))?;
    // An empty tmpfs as the new root, over /tmp which every system has
    // (the mount exists only in our namespace).
    let new_root = Path::new("/tmp");
    sys::mount(
        "tmpfs",
        new_root,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "size=4k,mode=0555",
    )
    .map_err(err("mounting the empty root"))?;
    std::env::set_current_dir(new_root).map_err(err("chdir"))?;
    sys::pivot_to_cwd().map_err(err("pivot_root"))?;
    std::env::set_current_dir("/").map_err(err("chdir /"))?;
    sys::mount(
        "",
        Path::new("/"),
        "",
        libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        "",
    )
    .map_err(err("remounting the root read-only"))?;
    // The new PID namespace takes effect for children: the backend goes on
    // in a child (PID 1 there), and dies with us if we are killed.
    match sys::fork().map_err(err("fork"))? {
        Some(child) => {
            let how = sys::wait_child(child).map_err(err("waitpid"))?;
            sys::exit_like(how)
        }
        None => sys::kill_with_parent().map_err(err("PR_SET_PDEATHSIG")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_has_no_duplicates_and_not_the_probe() {
        let mut list = allowed_syscalls().to_vec();
        list.sort_unstable();
        list.dedup();
        assert_eq!(list.len(), allowed_syscalls().len());
        assert!(!list.contains(&libc::SYS_personality));
        for dangerous in [libc::SYS_execve, libc::SYS_ptrace, libc::SYS_mount] {
            assert!(!list.contains(&dangerous));
        }
    }
}
