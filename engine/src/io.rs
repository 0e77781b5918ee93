//! The I/O seam: every file operation the engine performs goes through here.
//!
//! Owns: positional reads and writes on compio (io_uring), fdatasync, directory fsync,
//! and `fallocate`, which compio 0.19 does not wrap (the one `unsafe` block of the crate).
//! Invariants: reads return at most what the file holds (short at EOF, never an error);
//! writes are all-or-error.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use compio::BufResult;
use compio::buf::{IntoInner, IoBuf, IoVectoredBuf};
use compio::fs::{File, OpenOptions};
use compio::io::{AsyncReadAt, AsyncWriteAtExt};

/// Opens (creating if missing) a file for reading and writing.
pub(crate) async fn open_rw(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .open(path)
        .await
}

/// Reads up to `len` bytes at `pos` into a fresh buffer; shorter only at end of file.
pub(crate) async fn read_up_to(file: &File, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    let (res, buf) = read_append(file, Vec::with_capacity(len), pos, len).await;
    res.map(|_| buf)
}

/// Appends up to `len` bytes read at `pos` to `buf`; returns how many were read (fewer only
/// at end of file). The buffer comes back in every case.
pub(crate) async fn read_append(
    file: &File,
    mut buf: Vec<u8>,
    pos: u64,
    len: usize,
) -> (io::Result<usize>, Vec<u8>) {
    let start = buf.len();
    let target = start + len;
    buf.reserve(len);
    while buf.len() < target {
        let filled = buf.len();
        let BufResult(res, slice) = file
            .read_at(buf.slice(filled..target), pos + (filled - start) as u64)
            .await;
        buf = slice.into_inner();
        match res {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return (Err(e), buf),
        }
    }
    let read = buf.len() - start;
    (Ok(read), buf)
}

/// Writes all of `buf` at `pos` (page cache; durability comes from [`sync_data`]).
pub(crate) async fn write_all<T: IoBuf>(file: &File, buf: T, pos: u64) -> (io::Result<()>, T) {
    let mut f = file;
    let BufResult(res, buf) = f.write_all_at(buf, pos).await;
    (res, buf)
}

/// Vectored write of all of `buf` at `pos`.
pub(crate) async fn write_vectored_all<T: IoVectoredBuf>(
    file: &File,
    buf: T,
    pos: u64,
) -> (io::Result<()>, T) {
    let mut f = file;
    let BufResult(res, buf) = f.write_vectored_all_at(buf, pos).await;
    (res, buf)
}

pub(crate) async fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data().await
}

/// fsyncs a directory so that entries created or renamed in it survive a crash.
pub(crate) async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = File::open(dir).await?;
    d.sync_all().await?;
    d.close().await
}

/// Allocates `[0, len)` of `file` (mode 0: the size grows to `len`, new bytes read as zero).
/// Blocking, but only at segment creation, and cheap on extent-based filesystems.
pub(crate) fn fallocate(file: &File, len: u64) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is a valid open descriptor borrowed from `file` for the duration of the
    // call; fallocate takes no pointers and touches no Rust memory.
    let rc = unsafe { libc::fallocate(fd, 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // Filesystems without fallocate (tmpfs on old kernels, some overlays): skip it,
        // preallocation is an optimisation.
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
        _ => Err(err),
    }
}

/// Replaces `path` in `dir` with `bytes` atomically: written to `tmp`, fdatasync, renamed
/// over `path`, then the directory fsynced (the checkpoint and the producer-state snapshots).
pub(crate) async fn replace_file(
    dir: &Path,
    tmp: &Path,
    path: &Path,
    bytes: Vec<u8>,
) -> Result<(), crate::error::LogError> {
    use crate::error::LogError;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .await
        .map_err(|e| LogError::io("create", tmp, e))?;
    let (res, _) = write_all(&file, bytes, 0).await;
    res.map_err(|e| LogError::io("write", tmp, e))?;
    sync_data(&file)
        .await
        .map_err(|e| LogError::io("fdatasync", tmp, e))?;
    file.close()
        .await
        .map_err(|e| LogError::io("close", tmp, e))?;
    compio::fs::rename(tmp, path)
        .await
        .map_err(|e| LogError::io("rename", path, e))?;
    sync_dir(dir)
        .await
        .map_err(|e| LogError::io("fsync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_fallocate() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let file = open_rw(&path, true).await.unwrap();
            let (res, _) = write_all(&file, b"hello world".to_vec(), 0).await;
            res.unwrap();
            assert_eq!(read_up_to(&file, 6, 100).await.unwrap(), b"world");
            fallocate(&file, 8192).unwrap();
            let tail = read_up_to(&file, 0, 10_000).await.unwrap();
            assert_eq!(tail.len(), 8192);
            assert_eq!(&tail[..11], b"hello world");
            assert!(tail[11..].iter().all(|&b| b == 0));
            sync_data(&file).await.unwrap();
            sync_dir(dir.path()).await.unwrap();
        });
    }
}
