//! sha256 of archives as they are written or read, and `.sha256` files in `sha256sum` format.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A writer that hashes what passes through it.
pub(crate) struct HashWriter<'h, W> {
    inner: W,
    hasher: &'h mut Sha256,
}

impl<'h, W> HashWriter<'h, W> {
    pub fn new(inner: W, hasher: &'h mut Sha256) -> Self {
        Self { inner, hasher }
    }
}

impl<W: Write> Write for HashWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes through it.
pub(crate) struct HashReader<'h, R> {
    pub inner: R,
    pub hasher: &'h mut Sha256,
    /// Bytes read so far.
    pub read: u64,
}

impl<R: Read> Read for HashReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `FILE.sha256` for `FILE`.
pub fn checksum_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_os_string();
    name.push(".sha256");
    PathBuf::from(name)
}

/// Writes `<sum>  <archive's file name>\n` to `path` through a temporary file and a rename.
pub(crate) fn write_checksum_file(path: &Path, sha256: &str, archive: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temp = tempfile::Builder::new()
        .prefix(".harness-sha256-")
        .tempfile_in(dir)?;
    writeln!(temp, "{sha256}  {name}")?;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The sum recorded in a `sha256sum` line (`<hex>  <name>` or `<hex> *<name>`), or `None`
/// when the text is not one.
pub(crate) fn parse_checksum(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let (sum, _name) = line.split_once(' ')?;
    (sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| sum.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sha256sum_lines() {
        let sum = "ab".repeat(32);
        assert_eq!(
            parse_checksum(&format!("{sum}  pkg.tar.gz\n")),
            Some(sum.clone())
        );
        assert_eq!(
            parse_checksum(&format!("{} *pkg.tar.gz\n", sum.to_uppercase())),
            Some(sum)
        );
        assert_eq!(parse_checksum("abc  pkg.tar.gz\n"), None);
        assert_eq!(parse_checksum(""), None);
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(
            checksum_path(Path::new("a/b.tar.gz")),
            Path::new("a/b.tar.gz.sha256")
        );
    }
}
