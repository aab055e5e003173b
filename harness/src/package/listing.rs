//! What a host must find after it extracts a package: the verified tree as one line per entry,
//! in the form the host's `find -printf` and `sha256sum` print, sorted as `LC_ALL=C sort`
//! sorts; and the shell that makes the host's own listing.
//!
//! The host extracts with `umask 022`, `--no-same-owner` and `--no-same-permissions`, so a mode
//! there is the archive's less the group and other write bits, and a directory the archive
//! only implies is `755`. Matching the listing line for line shows that the host's tar read the
//! archive the verifier read: the same entries, types, modes, sizes, link targets and file
//! contents, and nothing else (no device, no setuid bit, no entry a second reading smuggled in).

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use super::checksum::hex;
use super::rules::FileKind;
use super::verify::PackageInfo;

/// The line after the host's listing, with the number of lines it has.
pub(crate) const END_MARK: &str = "harness-listing-end";

/// How many lines of its listing a host sends back when it does not match.
const SENT_LINES: usize = 20_000;

/// How many differences an error names.
const SHOWN: usize = 6;

/// The lines the host's listing of `info`'s tree must have, sorted.
pub(crate) fn expected(info: &PackageInfo) -> Vec<String> {
    let mut lines = Vec::with_capacity(info.files.len() * 2);
    let listed: BTreeSet<&str> = info.files.iter().map(|f| f.path.as_str()).collect();
    let mut implied = BTreeSet::new();
    for file in &info.files {
        let mut end = 0;
        while let Some(slash) = file.path[end..].find('/') {
            let parent = &file.path[..end + slash];
            if !listed.contains(parent) {
                implied.insert(parent);
            }
            end += slash + 1;
        }
        let mode = file.mode & 0o755;
        let path = &file.path;
        match &file.kind {
            FileKind::Directory => lines.push(format!("d\t{mode:o}\t{path}")),
            FileKind::Symlink { target } => lines.push(format!("l\t{path}\t{target}")),
            FileKind::File => {
                lines.push(format!("f\t{mode:o}\t{}\t{path}", file.size));
                let sha = info.file_sha256.get(path).map_or("", String::as_str);
                lines.push(sha256sum_line(sha, path));
            }
        }
    }
    lines.extend(implied.into_iter().map(|dir| format!("d\t755\t{dir}")));
    lines.sort();
    lines
}

/// `sha256sum ./PATH`'s line: GNU coreutils escapes a backslash in a name and marks the line
/// with a leading one (names with newlines are refused before this).
fn sha256sum_line(sha: &str, path: &str) -> String {
    if path.contains('\\') {
        format!("\\{sha}  ./{}", path.replace('\\', "\\\\"))
    } else {
        format!("{sha}  ./{path}")
    }
}

/// The sha256 of a listing as the host hashes its file: each line followed by a newline.
pub(crate) fn digest(lines: &[String]) -> String {
    let mut hasher = Sha256::new();
    for line in lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

/// Shell that lists the tree in `"$t/pkg"` into `"$t/listing"`, compares its sha256 with
/// `"$wantl"`, and on a mismatch prints the listing (at most [`SENT_LINES`] lines, then
/// [`END_MARK`] and the count) and exits with 3.
pub(crate) fn host_check() -> String {
    format!(
        "find \"$t/pkg\" -maxdepth 0 -printf '' 2>/dev/null || {{\n\
         \x20 echo \"this host's find has no -printf: GNU findutils is needed to check what was extracted\" >&2; exit 1; }}\n\
         (cd \"$t/pkg\" && find . -mindepth 1 \\( -type d -printf 'd\\t%m\\t%P\\n' \\) \
         -o \\( -type f -printf 'f\\t%m\\t%s\\t%P\\n' -exec sha256sum -- {{}} + \\) \
         -o \\( -type l -printf 'l\\t%P\\t%l\\n' \\) -o -printf '?\\t%y\\t%m\\t%P\\n') \
         | LC_ALL=C sort >\"$t/listing\"\n\
         gotl=$(sha256sum <\"$t/listing\" | cut -d' ' -f1)\n\
         if [ \"$gotl\" != \"$wantl\" ]; then\n\
         \x20 head -n {SENT_LINES} \"$t/listing\"\n\
         \x20 echo \"{END_MARK} $(wc -l <\"$t/listing\")\"\n\
         \x20 echo \"the extracted tree differs from the verified package\" >&2\n\
         \x20 exit 3\n\
         fi\n"
    )
}

/// What a host's listing (`said`, its stdout) has that `expected` lacks and the reverse, as a
/// sentence; `None` when `said` holds no listing.
pub(crate) fn differences(expected: &[String], said: &[String]) -> Option<String> {
    let end = said.iter().position(|l| l.starts_with(END_MARK))?;
    let total: usize = said[end][END_MARK.len()..].trim().parse().unwrap_or(end);
    let host: BTreeSet<&str> = said[..end].iter().map(String::as_str).collect();
    let wanted: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    // Entries first, then the content hashes: what is there reads better than its sums.
    let is_hash = |l: &&&str| l.as_bytes().get(1).is_none_or(|b| *b != b'\t');
    let show = |mut lines: Vec<&&str>| {
        lines.sort_by_key(|l| is_hash(l));
        let mut text: Vec<String> = lines
            .iter()
            .take(SHOWN)
            .map(|l| format!("`{}`", l.replace('\t', " ")))
            .collect();
        if lines.len() > SHOWN {
            text.push(format!("and {} more", lines.len() - SHOWN));
        }
        text.join(", ")
    };
    let extra: Vec<&&str> = host.difference(&wanted).collect();
    let mut parts = Vec::new();
    if !extra.is_empty() {
        parts.push(format!(
            "the host extracted {}, which the verified package does not hold",
            show(extra)
        ));
    }
    if total <= end {
        let missing: Vec<&&str> = wanted.difference(&host).collect();
        if !missing.is_empty() {
            parts.push(format!(
                "the verified package holds {}, which the host did not extract",
                show(missing)
            ));
        }
    }
    if parts.is_empty() {
        parts.push(format!(
            "the host's listing of {total} lines differs in order or count"
        ));
    }
    Some(format!(
        "the host's tar extracted a different tree from the one verified here, so nothing was \
         installed: {}",
        parts.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256sum_lines_escape_backslashes_as_coreutils_does() {
        assert_eq!(sha256sum_line("ab", "bin/x"), "ab  ./bin/x");
        assert_eq!(sha256sum_line("ab", "a\\b"), "\\ab  ./a\\\\b");
    }

    #[test]
    fn differences_name_what_is_extra_and_missing() {
        let expected = vec!["d\t755\tbin".to_string(), "f\t755\t3\tbin/x".to_string()];
        let said: Vec<String> = [
            "d\t755\tbin",
            "f\t4755\t3\tbin/x",
            "?\tc\t644\tnull",
            "harness-listing-end 3",
        ]
        .map(String::from)
        .to_vec();
        let text = differences(&expected, &said).unwrap();
        assert!(
            text.contains("extracted `? c 644 null`, `f 4755 3 bin/x`, which"),
            "{text}"
        );
        assert!(
            text.contains("holds `f 755 3 bin/x`, which the host did not"),
            "{text}"
        );
        assert_eq!(differences(&expected, &["other".into()]), None);
    }
}
