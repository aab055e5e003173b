//! Building and verifying real packages in temporary directories, and refusing crafted
//! archives that no builder would write.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::*;

fn write(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A valid package source in `dir`.
fn source(dir: &Path) {
    write(
        &dir.join("manifest.yaml"),
        "name: demo\nversion: 1.2.0\nport: 8080\n",
        0o644,
    );
    write(&dir.join("bin/demo"), "#!/bin/sh\necho demo\n", 0o755);
    write(&dir.join("scripts/start.sh"), "#!/bin/sh\n", 0o755);
    write(&dir.join("scripts/stop.sh"), "#!/bin/sh\n", 0o755);
    write(&dir.join("config/demo.conf"), "x = 1\n", 0o644);
}

fn refusal(error: PackageError) -> Refusal {
    match error {
        PackageError::Refused { refusal, .. } => refusal,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn builds_then_verifies_a_package() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    source(&dir);
    std::os::unix::fs::symlink("demo", dir.join("bin/demo-latest")).unwrap();
    let output = tmp.path().join("demo.tar.gz");
    let built = build(&dir, &output).unwrap();
    assert_eq!(built.manifest.name, "demo");
    let paths: Vec<&str> = built.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "bin",
            "bin/demo",
            "bin/demo-latest",
            "config",
            "config/demo.conf",
            "manifest.yaml",
            "scripts",
            "scripts/start.sh",
            "scripts/stop.sh",
        ]
    );
    let info = verify(&output).unwrap();
    assert_eq!(info.sha256, built.sha256);
    assert_eq!(info.files, built.files);
    assert_eq!(
        info.checksum_file.as_deref(),
        Some(built.checksum_path.as_path())
    );
    assert_eq!(info.size, fs::metadata(&output).unwrap().len());
    let line = fs::read_to_string(&built.checksum_path).unwrap();
    assert_eq!(line, format!("{}  demo.tar.gz\n", built.sha256));
    // Nothing else was left in the output directory.
    let mut names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["demo", "demo.tar.gz", "demo.tar.gz.sha256"]);
}

#[test]
fn a_changed_archive_fails_its_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    source(&tmp.path().join("src"));
    let output = tmp.path().join("p.tar.gz");
    let built = build(tmp.path().join("src"), &output).unwrap();
    let mut other = built.sha256.clone().into_bytes();
    other[0] = if other[0] == b'0' { b'1' } else { b'0' };
    fs::write(&built.checksum_path, [&other[..], b"  p.tar.gz\n"].concat()).unwrap();
    let error = verify(&output).unwrap_err().to_string();
    assert!(error.contains("does not match"), "{error}");
    fs::write(&built.checksum_path, "nonsense\n").unwrap();
    assert!(matches!(
        refusal(verify(&output).unwrap_err()),
        Refusal::BadChecksumFile(_)
    ));
}

#[test]
fn build_refuses_what_a_package_may_not_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let output = tmp.path().join("out.tar.gz");
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        source(&dir);
        dir
    };

    let dir = fresh("no-stop");
    fs::remove_file(dir.join("scripts/stop.sh")).unwrap();
    assert_eq!(
        refusal(build(&dir, &output).unwrap_err()),
        Refusal::MissingScript(STOP_SCRIPT)
    );

    let dir = fresh("not-exec");
    fs::set_permissions(
        dir.join("scripts/start.sh"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert!(matches!(
        refusal(build(&dir, &output).unwrap_err()),
        Refusal::NotExecutable { path, mode: 0o644 } if path == START_SCRIPT
    ));

    let dir = fresh("abs-link");
    std::os::unix::fs::symlink("/etc/passwd", dir.join("config/passwd")).unwrap();
    assert!(matches!(
        refusal(build(&dir, &output).unwrap_err()),
        Refusal::LinkOutside { path, .. } if path == "config/passwd"
    ));

    let dir = fresh("up-link");
    std::os::unix::fs::symlink("../../x", dir.join("config/x")).unwrap();
    assert!(matches!(
        refusal(build(&dir, &output).unwrap_err()),
        Refusal::LinkOutside { path, .. } if path == "config/x"
    ));

    let dir = fresh("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("bin/pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    assert_eq!(
        refusal(build(&dir, &output).unwrap_err()),
        Refusal::Unsupported {
            path: "bin/pipe".into(),
            kind: "fifo".into()
        }
    );

    let dir = fresh("big");
    let error = PackageBuilder::new(&dir)
        .with_max_size(10)
        .build(&output)
        .unwrap_err();
    assert!(matches!(
        refusal(error),
        Refusal::Oversize { limit: 10, .. }
    ));

    let dir = fresh("inside");
    assert!(matches!(
        refusal(build(&dir, dir.join("p.tar.gz")).unwrap_err()),
        Refusal::OutputInside(_)
    ));

    let dir = fresh("bad-name");
    write(
        &dir.join("manifest.yaml"),
        "name: Demo\nversion: 1\n",
        0o644,
    );
    let error = build(&dir, &output).unwrap_err();
    assert!(error.is_refusal());
    let message = error.to_string();
    assert!(
        message.contains("bad-name/manifest.yaml:1:7: invalid package name `Demo`"),
        "{message}"
    );

    // Nothing was written by any of the refused builds.
    assert!(!output.exists());
    assert!(!fs::read_dir(tmp.path()).unwrap().any(|e| {
        let name = e.unwrap().file_name();
        name.to_string_lossy().starts_with(".harness-")
    }));
}

#[test]
fn progress_is_reported_up_to_the_total() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("src");
    source(&dir);
    fs::write(dir.join("bin/blob"), vec![7u8; 9 << 20]).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let built = PackageBuilder::new(&dir)
        .with_progress(move |p| log.lock().unwrap().push(*p))
        .build(tmp.path().join("p.tar.gz"))
        .unwrap();
    let seen = seen.lock().unwrap();
    let last = seen.last().unwrap();
    assert_eq!(last.bytes_done, built.content_size);
    assert_eq!(last.files_done, built.files.len());
    // Within the 9 MiB file, progress came more than once.
    assert!(seen.len() > built.files.len(), "{}", seen.len());
}

/// A raw archive entry: name bytes, type, link name, data.
type Raw<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

/// An archive of raw entries.
fn crafted(path: &Path, entries: &[Raw<'_>]) {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, kind, link, data) in entries {
        let mut header = tar::Header::new_gnu();
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        gnu.linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        tar.append(&header, *data).unwrap();
    }
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    fs::File::create(path).unwrap().write_all(&bytes).unwrap();
}

#[test]
fn verify_refuses_crafted_archives() {
    use tar::EntryType::{Block, Char, Directory, Fifo, Link, Regular, Symlink};
    let tmp = tempfile::tempdir().unwrap();
    let manifest: &[u8] = b"name: demo\nversion: 1\n";
    let good: Vec<Raw<'_>> = vec![
        (b"./", Directory, b"", b""),
        (b"./manifest.yaml", Regular, b"", manifest),
        (b"./scripts/", Directory, b"", b""),
        (b"./scripts/start.sh", Regular, b"", b"#!/bin/sh\n"),
        (b"./scripts/stop.sh", Regular, b"", b"#!/bin/sh\n"),
    ];
    let path = tmp.path().join("p.tar.gz");
    crafted(&path, &good);
    let info = verify(&path).unwrap();
    assert_eq!(info.files.len(), 4);
    assert_eq!(info.checksum_file, None);

    let cases: Vec<(Raw<'_>, Refusal)> = vec![
        (
            (b"/etc/cron.d/x", Regular, b"", b""),
            Refusal::AbsolutePath("/etc/cron.d/x".into()),
        ),
        (
            (b"bin/../../x", Regular, b"", b""),
            Refusal::ParentDir("bin/../../x".into()),
        ),
        (
            (b"dev", Char, b"", b""),
            Refusal::Unsupported {
                path: "dev".into(),
                kind: "character device".into(),
            },
        ),
        (
            (b"disk", Block, b"", b""),
            Refusal::Unsupported {
                path: "disk".into(),
                kind: "block device".into(),
            },
        ),
        (
            (b"pipe", Fifo, b"", b""),
            Refusal::Unsupported {
                path: "pipe".into(),
                kind: "fifo".into(),
            },
        ),
        (
            (b"hard", Link, b"manifest.yaml", b""),
            Refusal::Unsupported {
                path: "hard".into(),
                kind: "hard link".into(),
            },
        ),
        (
            (b"etc", Symlink, b"/etc", b""),
            Refusal::LinkOutside {
                path: "etc".into(),
                target: "/etc".into(),
                why: "its target is an absolute path; use a relative one",
            },
        ),
        (
            (b"scripts/up", Symlink, b"../..", b""),
            Refusal::LinkOutside {
                path: "scripts/up".into(),
                target: "../..".into(),
                why: "its target climbs above the package root",
            },
        ),
        (
            (b"scripts/start.sh", Regular, b"", b"again"),
            Refusal::Duplicate("scripts/start.sh".into()),
        ),
        (
            (b"manifest.yaml/x", Regular, b"", b""),
            Refusal::BelowNonDirectory {
                path: "manifest.yaml/x".into(),
                parent: "manifest.yaml".into(),
            },
        ),
    ];
    for (entry, expected) in cases {
        let mut entries = good.clone();
        entries.push(entry);
        crafted(&path, &entries);
        assert_eq!(refusal(verify(&path).unwrap_err()), expected);
    }

    crafted(&path, &good[..4]);
    assert_eq!(
        refusal(verify(&path).unwrap_err()),
        Refusal::MissingScript(STOP_SCRIPT)
    );
    crafted(&path, &good[2..]);
    assert_eq!(
        refusal(verify(&path).unwrap_err()),
        Refusal::MissingManifest
    );

    let mut big = good.clone();
    let blob = vec![0u8; 4096];
    big.push((b"blob", Regular, b"", &blob));
    crafted(&path, &big);
    let error = Verifier::new()
        .with_max_size(2048)
        .verify(&path)
        .unwrap_err();
    assert!(matches!(refusal(error), Refusal::Oversize { .. }));

    fs::write(&path, b"not a gzip file").unwrap();
    assert!(matches!(
        refusal(verify(&path).unwrap_err()),
        Refusal::Corrupt(_)
    ));
}

#[test]
fn a_bad_manifest_in_an_archive_is_located_inside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.tar.gz");
    crafted(
        &path,
        &[
            (
                b"manifest.yaml",
                tar::EntryType::Regular,
                b"",
                b"name: demo\nversion: 1\nprot: 80\n",
            ),
            (b"scripts/start.sh", tar::EntryType::Regular, b"", b""),
            (b"scripts/stop.sh", tar::EntryType::Regular, b"", b""),
        ],
    );
    let message = verify(&path).unwrap_err().to_string();
    let expected = format!(
        "{}!/manifest.yaml:3:1: unknown field `prot`, did you mean `port`?",
        path.display()
    );
    assert!(message.contains(&expected), "{message}");
}
