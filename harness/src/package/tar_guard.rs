//! What the verifier lets tar-rs read: a reader between the gzip decoder and tar-rs that follows
//! the tar stream's framing as tar-rs does, block by block, and refuses an archive before
//! tar-rs reads something whole or differently from GNU tar.
//!
//! tar-rs reads GNU long-name and pax headers into memory whole, whatever size their header
//! claims, so a 2 MB archive can claim a 2 GiB name. The guard sees each header block as it
//! passes and refuses:
//!
//! - an extension header (GNU long name or link, pax) larger than [`MAX_EXTENSION`];
//! - a pax header that is malformed, names a key twice, describes a sparse file, or gives a
//!   `size` other than its entry's header (tar-rs takes the first record, GNU tar the last, and
//!   a size that moves the framing is how two parsers are made to see two archives);
//! - more entries than the limit, headers included, and a tar stream longer than the limit;
//! - anything after the end-of-archive blocks other than zeros, and an archive without them
//!   (which is how a second gzip member gets to continue a tar archive that tar-rs ended).

use std::io::{self, Read};

use super::error::Refusal;

/// The largest extension header (GNU long name or link, pax) an archive may hold.
pub(crate) const MAX_EXTENSION: u64 = 64 << 10;

const BLOCK: u64 = 512;

/// The limits a [`TarGuard`] enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Bytes of the whole tar stream: headers, content and padding.
    pub(crate) stream: u64,
    /// Headers, extension headers included.
    pub(crate) entries: u64,
}

/// The refusal a guard's read failed with, carried inside an [`io::Error`] through tar-rs.
#[derive(Debug)]
pub(crate) struct GuardRefusal(pub(crate) Refusal);

impl std::fmt::Display for GuardRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for GuardRefusal {}

/// The refusal inside `error`, if a guard made it.
pub(crate) fn refusal_of(error: &io::Error) -> Option<Refusal> {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<GuardRefusal>())
        .map(|r| r.0.clone())
}

/// A reader that checks the tar stream passing through it; see the module's docs.
pub(crate) struct TarGuard<R> {
    inner: R,
    limits: Limits,
    /// Bytes passed so far.
    pos: u64,
    /// Where the next header block starts.
    next_header: u64,
    header: [u8; BLOCK as usize],
    header_len: usize,
    /// A pax header's body being collected: its bytes so far and its length.
    pax: Option<(Vec<u8>, u64)>,
    /// A pax global header's body being collected, likewise.
    global: Option<(Vec<u8>, u64)>,
    /// The `size` of the pax header that describes the next entry, if it had one; `Some(None)`
    /// for a pax header without one.
    pending_pax: Option<Option<u64>>,
    entries: u64,
    /// Zero bytes seen from the first end-of-archive block on; `None` before it.
    end_zeros: Option<u64>,
}

impl<R: Read> TarGuard<R> {
    /// A guard over the decompressed tar stream `inner`.
    pub(crate) fn new(inner: R, limits: Limits) -> Self {
        Self {
            inner,
            limits,
            pos: 0,
            next_header: 0,
            header: [0; BLOCK as usize],
            header_len: 0,
            pax: None,
            global: None,
            pending_pax: None,
            entries: 0,
            end_zeros: None,
        }
    }

    /// Reads the rest of the stream (the padding after the end-of-archive blocks) and checks
    /// that the archive ended as a tar archive must: two zero blocks, then only zeros. Returns
    /// the inner reader.
    pub(crate) fn finish(mut self) -> io::Result<R> {
        io::copy(&mut self, &mut io::sink())?;
        match self.end_zeros {
            Some(zeros) if zeros >= 2 * BLOCK && self.header_len == 0 => Ok(self.inner),
            _ => Err(refuse(Refusal::NoEndOfArchive)),
        }
    }

    fn observe(&mut self, mut data: &[u8]) -> Result<(), Refusal> {
        while !data.is_empty() {
            if let Some(zeros) = &mut self.end_zeros {
                if let Some(at) = data.iter().position(|b| *b != 0) {
                    return Err(Refusal::TrailingData(format!(
                        "non-zero bytes at byte {} of the tar stream, after its end-of-archive \
                         blocks",
                        self.pos + at as u64
                    )));
                }
                *zeros += data.len() as u64;
                self.advance(data.len())?;
                return Ok(());
            }
            if self.pos >= self.next_header {
                let take = data.len().min(BLOCK as usize - self.header_len);
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                self.header_len += take;
                data = &data[take..];
                self.advance(take)?;
                if self.header_len == BLOCK as usize {
                    self.header_len = 0;
                    self.on_header()?;
                }
            } else {
                let take = data.len().min((self.next_header - self.pos) as usize);
                for (body, len) in [&mut self.pax, &mut self.global].into_iter().flatten() {
                    let want = (*len as usize).saturating_sub(body.len()).min(take);
                    body.extend_from_slice(&data[..want]);
                }
                data = &data[take..];
                self.advance(take)?;
                if self.pos == self.next_header {
                    if let Some((body, _)) = self.pax.take() {
                        self.pending_pax = Some(pax_size(&body)?);
                    }
                    if let Some((body, _)) = self.global.take() {
                        check_global(&body)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn advance(&mut self, n: usize) -> Result<(), Refusal> {
        self.pos += n as u64;
        if self.pos > self.limits.stream {
            return Err(Refusal::Oversize {
                what: "tar stream (headers, content and padding)",
                size: self.pos,
                partial: true,
                limit: self.limits.stream,
            });
        }
        Ok(())
    }

    /// A whole header block has passed; its first byte was at `self.pos - BLOCK`.
    fn on_header(&mut self) -> Result<(), Refusal> {
        let at = self.pos - BLOCK;
        if self.header.iter().all(|b| *b == 0) {
            self.end_zeros = Some(BLOCK);
            return Ok(());
        }
        self.entries += 1;
        if self.entries > self.limits.entries {
            return Err(Refusal::TooManyEntries {
                limit: self.limits.entries,
            });
        }
        let header = &self.header;
        let kind = header[156];
        // tar-rs treats L, K and x as extensions only in ustar and GNU headers; an old-style
        // header of those types reaches the verifier as an entry, which it refuses.
        let recognized = &header[257..265] == b"ustar\x0000" || &header[257..265] == b"ustar  \0";
        let extension = match kind {
            b'L' => Some("GNU long name"),
            b'K' => Some("GNU long link name"),
            b'x' => Some("pax extended"),
            b'g' => Some("pax global"),
            _ => None,
        };
        // A size tar-rs cannot read makes tar-rs fail on this header: nothing to frame.
        let Some(mut size) = header_size(&header[124..136]) else {
            return Err(Refusal::Corrupt(format!(
                "the header at byte {at} of the tar stream has an unreadable size field"
            )));
        };
        if let Some(what) = extension {
            if size > MAX_EXTENSION {
                return Err(Refusal::ExtensionTooLarge {
                    what,
                    size,
                    at,
                    limit: MAX_EXTENSION,
                });
            }
            if kind == b'x' && recognized {
                self.pax = Some((Vec::with_capacity(size as usize), size));
            }
            if kind == b'g' {
                self.global = Some((Vec::with_capacity(size as usize), size));
            }
        } else if let Some(pending) = self.pending_pax.take() {
            if let Some(pax) = pending
                && pax != size
            {
                return Err(Refusal::PaxConflict(format!(
                    "the pax header before the entry at byte {at} gives size {pax}, its header \
                     {size}"
                )));
            }
            size = pending.unwrap_or(size);
        }
        if !(recognized && matches!(kind, b'L' | b'K' | b'x')) {
            // tar-rs hands this entry to the verifier: the pax header it had is used up.
            self.pending_pax = None;
        }
        let padded = size
            .checked_add(BLOCK - 1)
            .map(|s| s & !(BLOCK - 1))
            .and_then(|s| s.checked_add(self.pos))
            .ok_or_else(|| Refusal::Corrupt(format!("the header at byte {at} overflows")))?;
        self.next_header = padded;
        if size == 0 {
            if let Some((body, _)) = self.pax.take() {
                self.pending_pax = Some(pax_size(&body)?);
            }
            self.global = None;
        }
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]).map_err(refuse)?;
        Ok(n)
    }
}

fn refuse(refusal: Refusal) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, GuardRefusal(refusal))
}

/// Whether a numeric header field starting with `first` is base-256 for tar-rs (any byte
/// with the high bit set) but not for GNU tar (only 0x80, and 0xff for negatives): such a
/// field is read differently by the two, so it is refused.
pub(crate) fn ambiguous_base256(first: u8) -> bool {
    first & 0x80 != 0 && first != 0x80
}

/// A header's size field as tar-rs reads it: base-256 when the high bit of the first byte is
/// set, otherwise octal text up to the first NUL, trimmed.
fn header_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        if ambiguous_base256(field[0]) {
            return None;
        }
        let mut n: u64 = 0;
        for (i, b) in field.iter().enumerate() {
            let b = if i == 0 { b & 0x7f } else { *b };
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    let text = std::str::from_utf8(&field[..end]).ok()?;
    u64::from_str_radix(text.trim(), 8).ok()
}

/// Checks a pax global header: tar-rs ignores it, GNU tar applies it to every entry after it,
/// so it may hold only comments (as `git archive` writes).
fn check_global(body: &[u8]) -> Result<(), Refusal> {
    for (key, _) in pax_records(body)? {
        if key != b"comment" {
            return Err(Refusal::PaxConflict(format!(
                "a pax global header sets `{}`, which GNU tar applies to every later entry and \
                 tar-rs ignores; only `comment` is allowed there",
                String::from_utf8_lossy(key)
            )));
        }
    }
    Ok(())
}

/// Checks a pax header's records and returns its `size`, if it has one.
fn pax_size(body: &[u8]) -> Result<Option<u64>, Refusal> {
    let mut size = None;
    for (key, value) in pax_records(body)? {
        if key.starts_with(b"GNU.sparse") {
            return Err(Refusal::PaxConflict(
                "a pax header describes a sparse file, which a package may not hold".into(),
            ));
        }
        if key == b"size" {
            let Some(n) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            else {
                return Err(Refusal::PaxConflict(
                    "a pax header has a size record that is not a number".into(),
                ));
            };
            size = Some(n);
        }
    }
    Ok(size)
}

/// A pax record: its key and value.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// A pax header's records, each well formed and no key twice.
fn pax_records(body: &[u8]) -> Result<Vec<PaxRecord<'_>>, Refusal> {
    let bad = |why: &str| Err(Refusal::PaxConflict(format!("a pax header {why}")));
    let mut rest = body;
    let mut records: Vec<PaxRecord<'_>> = Vec::new();
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|b| *b == b' ') else {
            return bad("has a record without a length");
        };
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            return bad("has a record whose length is not a number");
        };
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return bad("has a record whose length does not match it");
        }
        let record = &rest[space + 1..len - 1];
        rest = &rest[len..];
        let Some(eq) = record.iter().position(|b| *b == b'=') else {
            return bad("has a record without `=`");
        };
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        if records.iter().any(|(k, _)| *k == key) {
            return bad(&format!(
                "names `{}` twice, which tar implementations read differently",
                String::from_utf8_lossy(key)
            ));
        }
        records.push((key, value));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sizes_are_read_as_tar_rs_reads_them() {
        assert_eq!(header_size(b"00000001750\0"), Some(1000));
        assert_eq!(header_size(b" 1750 \0\0\0\0\0\0"), Some(1000));
        assert_eq!(header_size(b"\0\0\0\0\0\0\0\0\0\0\0\0"), None);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 2;
        big[10] = 1;
        assert_eq!(header_size(&big), Some(258));
        big[0] = 0xc9;
        assert_eq!(header_size(&big), None);
        assert_eq!(header_size(b"9\0\0\0\0\0\0\0\0\0\0\0"), None);
    }

    #[test]
    fn pax_records_are_checked() {
        assert_eq!(pax_size(b"12 path=abc\n"), Ok(None));
        assert_eq!(pax_size(b"9 size=7\n12 path=abc\n"), Ok(Some(7)));
        for (body, why) in [
            (&b"9 size=7\n9 size=8\n"[..], "twice"),
            (b"12 path=abc", "does not match"),
            (b"x path=abc\n", "not a number"),
            (b"22 GNU.sparse.size=10\n", "sparse"),
            (b"11 size=x1\n", "size record"),
        ] {
            let error = pax_size(body).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
        assert_eq!(check_global(b"16 comment=abcd\n"), Ok(()));
        let error = check_global(b"12 path=abc\n").unwrap_err().to_string();
        assert!(error.contains("sets `path`"), "{error}");
    }
}
