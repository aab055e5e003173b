//! Setting disk space aside for a file.

use std::io;
use std::os::fd::AsFd;

/// Allocates `len` bytes of disk space for the file open as `fd`, from its current end on,
/// without changing its size (`fallocate` with `FALLOC_FL_KEEP_SIZE`): writing up to `len`
/// bytes more later succeeds even once the file system is full. Works on tmpfs, ext4, xfs and
/// btrfs; elsewhere, and for what is no regular file (a pipe, a terminal), it fails, and the
/// caller goes on without.
pub fn reserve_space(fd: impl AsFd, len: u64) -> io::Result<()> {
    let end = rustix::fs::fstat(&fd)?.st_size;
    let end = u64::try_from(end).unwrap_or(0);
    rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::KEEP_SIZE, end, len)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_is_reserved_without_growing_the_file() {
        let file = tempfile::tempfile().unwrap();
        match reserve_space(&file, 8192) {
            Ok(()) => assert_eq!(file.metadata().unwrap().len(), 0),
            // A temporary directory on a file system without fallocate: nothing to check.
            Err(e) => eprintln!("fallocate is not supported here: {e}"),
        }
    }
}
