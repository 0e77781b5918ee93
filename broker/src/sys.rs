//! The few raw system calls the broker needs: signal masks for a clean SIGTERM, the
//! io_uring availability probe, and the open-file limit. All `unsafe` in the broker lives here, each block with its
//! SAFETY comment.
#![allow(unsafe_code)]

use std::io;

/// Blocks SIGTERM and SIGINT in the calling thread (threads spawned afterwards inherit the
/// mask), so that only `wait_for_termination` receives them.
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set()?;
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits until SIGTERM or SIGINT arrives; returns the signal number.
pub fn wait_for_termination() -> io::Result<i32> {
    let set = termination_set()?;
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is initialised and `signal` is a valid out pointer for the call.
    let rc = unsafe { libc::sigwait(&set, &mut signal) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(signal)
}

fn termination_set() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` points to a live sigset_t.
    unsafe {
        if libc::sigemptyset(&mut set) != 0
            || libc::sigaddset(&mut set, libc::SIGTERM) != 0
            || libc::sigaddset(&mut set, libc::SIGINT) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(set)
}

/// RLIMIT_NOFILE before and after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft_before: u64,
    pub hard: u64,
    /// The soft limit now in force (= hard unless raising it failed).
    pub soft: u64,
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit (what a process may do without
/// privileges), so the open-file budget is as large as the operator allows.
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (soft_before, hard) = (rl.rlim_cur, rl.rlim_max);
    if soft_before >= hard {
        return Ok(NofileLimit {
            soft_before,
            hard,
            soft: soft_before,
        });
    }
    let raised = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: a valid pointer to an initialised rlimit; raising soft up to hard is allowed.
    let soft = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        hard
    } else {
        soft_before
    };
    Ok(NofileLimit {
        soft_before,
        hard,
        soft,
    })
}

/// What `/proc/sys/kernel/io_uring_disabled` says (0 enabled, 1 restricted to a group,
/// 2 disabled); None when the file does not exist (kernels before 6.6).
pub fn io_uring_disabled_sysctl() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// A human explanation and fix for an io_uring set-up failure.
pub fn io_uring_help(error: &io::Error) -> String {
    let sysctl = io_uring_disabled_sysctl();
    let mut msg = format!("io_uring is not usable ({error}).");
    match (sysctl, error.raw_os_error()) {
        (Some(2), _) => msg.push_str(
            " io_uring is disabled by the kernel: set `sysctl -w kernel.io_uring_disabled=0`.",
        ),
        (Some(1), _) => msg.push_str(
            " io_uring is restricted to the group in kernel.io_uring_group: add this user to it \
             or set `sysctl -w kernel.io_uring_disabled=0`.",
        ),
        (_, Some(libc::ENOSYS)) => {
            msg.push_str(" The kernel lacks io_uring: Sluice needs Linux 5.19 or newer.")
        }
        (_, Some(libc::EPERM)) => msg.push_str(
            " A seccomp profile blocks io_uring (containers do this by default): run with \
             `--security-opt seccomp=unconfined` or a profile that allows io_uring_setup, \
             io_uring_enter and io_uring_register.",
        ),
        (_, Some(libc::ENOMEM)) => {
            msg.push_str(" The ring could not lock memory: raise `ulimit -l` (RLIMIT_MEMLOCK).")
        }
        _ => {}
    }
    msg
}

/// Adopts an owned descriptor as a compio file (for splicing a dup'ed segment fd).
pub fn compio_file_from_owned(fd: std::os::fd::OwnedFd) -> compio::fs::File {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: `fd` is open and owned by us; ownership moves into the File, which closes it.
    unsafe { compio::fs::File::from_raw_fd(fd.into_raw_fd()) }
}

/// Space on the filesystem holding a path (statvfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes an unprivileged writer may still use (`f_bavail`).
    pub available_bytes: u64,
    pub total_bytes: u64,
}

/// statvfs(2) of `path`: one syscall, no I/O on most filesystems.
#[allow(clippy::unnecessary_cast)] // the statvfs field types differ between targets
pub fn fs_space(path: &std::path::Path) -> io::Result<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `st` a valid out-pointer, both live for
    // the call.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = (st.f_frsize as u64).max(1);
    Ok(FsSpace {
        available_bytes: (st.f_bavail as u64).saturating_mul(unit),
        total_bytes: (st.f_blocks as u64).saturating_mul(unit),
    })
}

/// Asks for a pipe buffer of `bytes`; returns the size the kernel granted.
pub fn set_pipe_size(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on a live borrowed descriptor; F_SETPIPE_SZ takes an int argument.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// Hands the allocator's free memory back to the kernel (glibc `malloc_trim(0)`: every
/// arena's free pages are `madvise`d away, not only the heap tops glibc trims by itself).
/// Returns whether anything was released. A no-op elsewhere than glibc.
///
/// Why: memory freed after a burst (thousands of connections closing) stays in glibc's arenas
/// and counts in RSS; later bursts touch other pages of it, so RSS crept up round after round
/// (issue 12 item 8: 44 -> 323 MB over 14 rounds of 5,000 connections, while the live heap went
/// back to its baseline each time). Cost: a walk of the free lists under each arena's lock,
/// ~1 ms per 100 MB free; called at most once per housekeeping interval after churn.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only works on the allocator's own free lists.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Allocations at least this large are mapped lazily (see `BrokerAlloc`).
pub const LAZY_ALLOC_BYTES: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

/// The broker's global allocator: the system allocator, except that allocations of
/// `LAZY_ALLOC_BYTES` or more are anonymous `MAP_NORESERVE` mappings.
///
/// Why: kafka-protocol sizes a decoded array with `Vec::with_capacity(count)` straight from
/// the wire, before reading any element. A hostile request claiming 2^31 elements asks for
/// hundreds of GiB; the system allocator refuses and Rust aborts the whole process (allocation
/// failure is not a panic). A lazy mapping of that size succeeds without touching memory, the
/// decoder then fails on the first missing element, the Vec is dropped and the mapping
/// unmapped, and only that connection is closed. Legitimate allocations never come near
/// 1 GiB (frames are capped at `kafka.frame_bytes_max`).
pub struct BrokerAlloc;

fn is_lazy(size: usize, align: usize) -> bool {
    size >= LAZY_ALLOC_BYTES && align <= PAGE_BYTES
}

// SAFETY: every pointer handed out is either from `System` (and returned to it) or from
// mmap (and returned to munmap with the same size); `is_lazy` decides by the layout, which
// Rust guarantees is the same at dealloc as at alloc.
unsafe impl std::alloc::GlobalAlloc for BrokerAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            return map_lazy(layout.size());
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            // Anonymous mappings are zero-filled.
            return map_lazy(layout.size());
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if is_lazy(layout.size(), layout.align()) {
            // SAFETY: `ptr` came from `map_lazy(layout.size())`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
            return;
        }
        // SAFETY: `ptr` came from System with this layout.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if !is_lazy(layout.size(), layout.align()) && !is_lazy(new_size, layout.align()) {
            // SAFETY: both sides belong to System.
            return unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees new_size > 0 and a valid layout for it.
        let new_layout =
            unsafe { std::alloc::Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh allocation, then a copy of the overlapping prefix, then the old one
        // is released with its own layout.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

fn map_lazy(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

/// (total, available) bytes of the file system holding `path`.
pub fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; zeroed is a valid initial value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

/// Restores SIGPIPE's default action (terminate quietly) for the CLI commands, so
/// `sluice topic list | head` ends like other Unix tools instead of panicking on EPIPE in
/// `println!`. The broker (`sluice start`) keeps Rust's default of ignoring SIGPIPE.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL installs no handler; changing a disposition has no other precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
