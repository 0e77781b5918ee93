//! The crate's only `unsafe`: thin wrappers over the few libc calls std does not offer
//! (effective uid, rlimits, fallocate, statvfs). Each wrapper is safe to call and returns
//! `io::Result`; nothing here keeps pointers beyond the call.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The resource limits the tuners look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rlimit {
    /// RLIMIT_NOFILE: open file descriptors.
    Nofile,
    /// RLIMIT_MEMLOCK: bytes of locked memory (io_uring rings on old kernels, registered buffers).
    Memlock,
}

/// `RLIM_INFINITY` as this crate reports it.
pub const RLIM_UNLIMITED: u64 = u64::MAX;

/// True when the effective uid is 0.
pub fn is_effective_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// (soft, hard) limit of this process; `RLIM_UNLIMITED` for infinity.
pub fn getrlimit(which: Rlimit) -> io::Result<(u64, u64)> {
    let resource = match which {
        Rlimit::Nofile => libc::RLIMIT_NOFILE,
        Rlimit::Memlock => libc::RLIMIT_MEMLOCK,
    };
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit that outlives the call.
    let rc = unsafe { libc::getrlimit(resource, &mut limit) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let conv = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            RLIM_UNLIMITED
        } else {
            v
        }
    };
    Ok((conv(limit.rlim_cur), conv(limit.rlim_max)))
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit; returns the new soft limit.
/// The broker calls this at start-up (Kafka brokers hold many segment files open).
pub fn raise_nofile_soft_limit() -> io::Result<u64> {
    let (_, hard) = getrlimit(Rlimit::Nofile)?;
    let hard_raw = if hard == RLIM_UNLIMITED {
        libc::RLIM_INFINITY
    } else {
        hard
    };
    let limit = libc::rlimit {
        rlim_cur: hard_raw,
        rlim_max: hard_raw,
    };
    // SAFETY: `limit` is a valid rlimit read by the call only.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(hard)
}

/// Reserves `bytes` of real blocks for `file` (mode 0: allocate and extend the size).
pub fn fallocate(file: &File, bytes: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "fallocate length too large"))?;
    // SAFETY: the fd is open for the duration of the call (borrowed from `file`).
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` is writable; both outlive the call.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Splits a Linux `dev_t` into (major, minor) the way glibc's `gnu_dev_major/minor` do.
pub fn dev_major_minor(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_numbers_split_like_glibc() {
        // makedev(254, 0) and makedev(259, 65537) (extended minor).
        assert_eq!(dev_major_minor(0xfe00), (254, 0));
        let dev = (259u64 << 8) | (0x10_0000u64 << 12) | 1;
        assert_eq!(dev_major_minor(dev), (259, 0x100001));
    }
}
