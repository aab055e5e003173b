//! The package verifier over a whole archive: input that starts with gzip's magic bytes is
//! the archive; anything else is taken as a tar stream and gzipped first, so that mutations
//! reach the tar headers. The verifier never panics, and what it accepts is consistent: the
//! archive's size and sha256, a manifest that decodes again from its stored text, and one
//! checksum for each regular file it lists.

#![no_main]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use harness::package::{FileKind, Manifest, Verifier};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

/// One archive file per fuzzing process, rewritten for each input: in memory (`/dev/shm`)
/// where there is one, so that a full disk cannot fail a run.
fn archive_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!(
            "harness-fuzz-package-{}.tar.gz",
            std::process::id()
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let archive = if data.starts_with(&[0x1f, 0x8b]) {
        data.to_vec()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    };
    let path = archive_path();
    std::fs::write(path, &archive).unwrap();
    // Small limits keep each run short; they are checked like the default ones.
    let result = Verifier::new()
        .with_max_size(4 << 20)
        .with_max_entries(4096)
        .verify(path);
    let Ok(info) = result else {
        let _ = result.unwrap_err().to_string();
        return;
    };
    assert_eq!(info.size, archive.len() as u64);
    let sha256: String = Sha256::digest(&archive)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(info.sha256, sha256);
    let again = Manifest::from_yaml("manifest.yaml", &info.manifest_text)
        .expect("the stored manifest text decodes again");
    assert_eq!(again, info.manifest);
    let regular = info
        .files
        .iter()
        .filter(|f| f.kind == FileKind::File)
        .count();
    assert_eq!(
        regular,
        info.file_sha256.len(),
        "a checksum per regular file"
    );
    assert!(info.content_size <= 4 << 20);
});
