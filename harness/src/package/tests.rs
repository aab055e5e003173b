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

/// A raw 512-byte tar header (GNU format) of `kind` at `name`, claiming `size` bytes.
fn header(name: &[u8], kind: tar::EntryType, link: &[u8], size: u64, mode: u32) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    let gnu = header.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name);
    gnu.linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// A raw archive entry with its mode: name bytes, type, link name, data, mode.
type RawMode<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8], u32);

/// A tar stream of whole entries, without the end-of-archive blocks.
fn entries(list: &[RawMode<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data, mode) in list {
        out.extend(header(name, *kind, link, data.len() as u64, *mode));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

const END: [u8; 1024] = [0; 1024];

fn good_entries() -> Vec<u8> {
    use tar::EntryType::{Directory, Regular};
    entries(&[
        (
            b"manifest.yaml",
            Regular,
            b"",
            b"name: demo\nversion: 1\n",
            0o644,
        ),
        (b"scripts/", Directory, b"", b"", 0o755),
        (b"scripts/start.sh", Regular, b"", b"#!/bin/sh\n", 0o755),
        (b"scripts/stop.sh", Regular, b"", b"#!/bin/sh\n", 0o755),
    ])
}

fn verify_bytes(bytes: &[u8]) -> Result<PackageInfo, PackageError> {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.tar.gz");
    fs::write(&path, bytes).unwrap();
    Verifier::new().with_max_size(10 << 20).verify(&path)
}

#[test]
fn what_the_host_would_read_past_the_verified_archive_is_refused() {
    use tar::EntryType::{Char, Regular, Symlink};
    let good = good_entries();
    let whole = [good.clone(), END.to_vec()].concat();
    let info = verify_bytes(&gzip(&whole)).unwrap();
    assert_eq!(info.file_sha256.len(), 3);
    assert_eq!(
        info.file_sha256["scripts/start.sh"],
        super::checksum::hex(&<sha2::Sha256 as sha2::Digest>::digest(b"#!/bin/sh\n"))
    );

    // The smuggling archive: the package without its end blocks as member 1, and a second
    // tar (a link over harness's checksum file, a setuid file, a device, a new start.sh) as
    // member 2, which `tar -xzf` on the host reads on from where member 1 stopped.
    let smuggled = entries(&[
        (b".harness-sha256", Symlink, b"/etc/victim", b"", 0o777),
        (b"bin/root-shell", Regular, b"", b"#!/bin/sh\n", 0o4755),
        (b"dev-null", Char, b"", b"", 0o666),
        (
            b"scripts/start.sh",
            Regular,
            b"",
            b"#!/bin/sh\nexit 7\n",
            0o755,
        ),
    ]);
    let member2 = gzip(&[smuggled.clone(), END.to_vec()].concat());
    let attack = [gzip(&good), member2.clone()].concat();
    assert_eq!(
        refusal(verify_bytes(&attack).unwrap_err()),
        Refusal::NoEndOfArchive
    );
    // A whole package with a second member after it.
    let second = [gzip(&whole), member2].concat();
    assert_eq!(
        refusal(verify_bytes(&second).unwrap_err()),
        Refusal::TrailingData("a second gzip member after the first".into())
    );
    // Bytes after the gzip stream, and entries after the end blocks inside it.
    let trailing = [gzip(&whole), b"junk".to_vec()].concat();
    assert_eq!(
        refusal(verify_bytes(&trailing).unwrap_err()),
        Refusal::TrailingData("bytes after its gzip stream".into())
    );
    let after_end = gzip(&[good.clone(), END.to_vec(), smuggled].concat());
    let error = refusal(verify_bytes(&after_end).unwrap_err()).to_string();
    assert!(error.contains("after its end-of-archive blocks"), "{error}");
    // One zero block is not an end.
    let lone = gzip(&[good, END[..512].to_vec()].concat());
    assert_eq!(
        refusal(verify_bytes(&lone).unwrap_err()),
        Refusal::NoEndOfArchive
    );
}

#[test]
fn setuid_setgid_sticky_control_characters_and_reserved_names_are_refused() {
    use tar::EntryType::{Directory, Regular};
    let cases: Vec<(&[u8], tar::EntryType, u32, Refusal)> = vec![
        (
            b"bin/su",
            Regular,
            0o4755,
            Refusal::SpecialBits {
                path: "bin/su".into(),
                mode: 0o4755,
            },
        ),
        (
            b"bin/g",
            Regular,
            0o2755,
            Refusal::SpecialBits {
                path: "bin/g".into(),
                mode: 0o2755,
            },
        ),
        (
            b"tmp/",
            Directory,
            0o1777,
            Refusal::SpecialBits {
                path: "tmp".into(),
                mode: 0o1777,
            },
        ),
        (
            b"a\nb",
            Regular,
            0o644,
            Refusal::ControlCharacter("a\nb".into()),
        ),
        (
            b"./.harness-start.sh.log",
            Regular,
            0o644,
            Refusal::Reserved(".harness-start.sh.log".into()),
        ),
    ];
    for (name, kind, mode, expected) in cases {
        let bytes = [
            good_entries(),
            entries(&[(name, kind, b"", b"", mode)]),
            END.to_vec(),
        ]
        .concat();
        assert_eq!(refusal(verify_bytes(&gzip(&bytes)).unwrap_err()), expected);
    }
}

#[test]
fn header_bombs_are_refused_before_they_are_read() {
    use tar::EntryType::{Directory, GNULongName, XHeader};
    let bomb = |kind| {
        let mut bytes = header(b"././@LongLink", kind, b"", 2 << 30, 0o644);
        // Enough of the claimed content to show that it is not read: 1 MiB of it.
        bytes.resize(512 + (1 << 20), b'a');
        gzip(&bytes)
    };
    for (kind, what) in [(GNULongName, "GNU long name"), (XHeader, "pax extended")] {
        assert_eq!(
            refusal(verify_bytes(&bomb(kind)).unwrap_err()),
            Refusal::ExtensionTooLarge {
                what,
                size: 2 << 30,
                at: 0,
                limit: super::tar_guard::MAX_EXTENSION,
            }
        );
    }

    // Every header counts against the limits: directories have no content, but 4,000 of
    // them are 2 MB of tar stream.
    let names: Vec<String> = (0..4000).map(|i| format!("d{i}/")).collect();
    let dirs: Vec<RawMode<'_>> = names
        .iter()
        .map(|n| (n.as_bytes(), Directory, &b""[..], &b""[..], 0o755))
        .collect();
    let bytes = gzip(&[good_entries(), entries(&dirs), END.to_vec()].concat());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("dirs.tar.gz");
    fs::write(&path, &bytes).unwrap();
    let error = Verifier::new()
        .with_max_size(1 << 20)
        .verify(&path)
        .unwrap_err();
    assert!(
        matches!(refusal(error), Refusal::Oversize { what, .. } if what.starts_with("tar stream"))
    );
    let error = Verifier::new()
        .with_max_entries(1000)
        .verify(&path)
        .unwrap_err();
    assert_eq!(refusal(error), Refusal::TooManyEntries { limit: 1000 });
    assert_eq!(Verifier::new().verify(&path).unwrap().files.len(), 4004);
}

#[test]
fn pax_headers_that_parsers_read_differently_are_refused() {
    use tar::EntryType::{Regular, XHeader};
    let with_pax = |pax: &[u8], data: &[u8]| {
        let bytes = [
            good_entries(),
            entries(&[
                (b"././@PaxHeader", XHeader, b"", pax, 0o644),
                (b"bin/x", Regular, b"", data, 0o755),
            ]),
            END.to_vec(),
        ]
        .concat();
        verify_bytes(&gzip(&bytes))
    };
    // A pax size that agrees with the header, and a pax path, are fine.
    let info = with_pax(b"9 size=3\n", b"abc").unwrap();
    assert_eq!(info.files.last().unwrap().size, 3);
    let info = with_pax(b"17 path=bin/long\n", b"abc").unwrap();
    assert_eq!(info.files.last().unwrap().path, "bin/long");
    for (pax, why) in [
        (&b"9 size=0\n"[..], "gives size 0, its header 3"),
        (b"9 size=3\n9 size=0\n", "twice"),
        (b"17 path=bin/long\n17 path=bin/evil\n", "twice"),
        (b"25 GNU.sparse.realsize=9\n", "sparse"),
    ] {
        let error = refusal(with_pax(pax, b"abc").unwrap_err()).to_string();
        assert!(error.contains(why), "{why}: {error}");
    }
}

/// Runs the host's upload script for `release` in the service directory `dir` on this machine,
/// with `archive` on its stdin; returns whether it succeeded and its stdout lines and stderr.
fn host_upload(
    dir: &Path,
    archive: &[u8],
    release: &str,
    listing: &[String],
) -> (bool, Vec<String>, String) {
    use sha2::Digest;
    let remote = super::deploy_remote::Remote {
        launcher: &crate::exec::LocalLauncher,
        dir: dir.to_str().unwrap().to_string(),
    };
    let sha = super::checksum::hex(&sha2::Sha256::digest(archive));
    let script = remote.upload_script(release, &sha, &super::listing::digest(listing));
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(archive).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.success(),
        stdout.lines().map(String::from).collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_host_installs_exactly_the_verified_tree_and_records_its_sum_outside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("demo");
    source(&src);
    std::os::unix::fs::symlink("demo", src.join("bin/demo-latest")).unwrap();
    let archive = tmp.path().join("demo.tar.gz");
    let built = build(&src, &archive).unwrap();
    let info = verify(&archive).unwrap();
    let listing = super::listing::expected(&info);
    let service = tmp.path().join("svc");
    let (ok, out, err) = host_upload(
        &service,
        &fs::read(&archive).unwrap(),
        "demo-1.2.0",
        &listing,
    );
    assert!(ok, "{out:?} {err}");
    let release = service.join("releases/demo-1.2.0");
    assert_eq!(
        fs::read_to_string(release.join("bin/demo")).unwrap(),
        "#!/bin/sh\necho demo\n"
    );
    let mode = fs::metadata(release.join("bin/demo"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    assert_eq!(
        fs::read_to_string(service.join("releases/.demo-1.2.0.sha256")).unwrap(),
        format!("{}\n", built.sha256)
    );
    assert!(!release.join(".harness-sha256").exists());
    let left: Vec<_> = fs::read_dir(&service)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["releases"], "no .incoming-* left");
}

#[test]
fn the_host_refuses_a_tree_other_than_the_verified_one_and_installs_nothing() {
    use tar::EntryType::{Char, Regular, Symlink};
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    let good = good_entries();
    let info = verify_bytes(&gzip(&[good.clone(), END.to_vec()].concat())).unwrap();
    let listing = super::listing::expected(&info);
    // What the host's tar reads of the smuggling archive of issue: the package, then a
    // second member's link over the old checksum file, a setuid file, a device and a new
    // start.sh. Sent with its own sha256, as if a verifier had been fooled into passing it.
    let victim_link = victim.to_str().unwrap().as_bytes().to_vec();
    let smuggled = entries(&[
        (b".harness-sha256", Symlink, &victim_link, b"", 0o777),
        (b"bin/root-shell", Regular, b"", b"#!/bin/sh\n", 0o4755),
        (b"null2", Char, b"", b"", 0o666),
        (
            b"scripts/start.sh",
            Regular,
            b"",
            b"#!/bin/sh\nexit 7\n",
            0o755,
        ),
    ]);
    let attack = [gzip(&good), gzip(&[smuggled, END.to_vec()].concat())].concat();
    let service = tmp.path().join("svc");
    let (ok, out, err) = host_upload(&service, &attack, "demo-1", &listing);
    assert!(!ok, "{out:?}");
    assert!(err.contains("differs from the verified package"), "{err}");
    let reason = super::listing::differences(&listing, &out).unwrap();
    for needle in [
        "`l .harness-sha256 ",
        "`f 755 10 bin/root-shell`",
        "null2`",
        "`f 755 17 scripts/start.sh`",
        "holds `f 755 10 scripts/start.sh`",
    ] {
        assert!(reason.contains(needle), "{needle}: {reason}");
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    let releases: Vec<_> = fs::read_dir(service.join("releases")).unwrap().collect();
    assert!(releases.is_empty(), "{releases:?}");
    let left: Vec<_> = fs::read_dir(&service)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["releases"], "no .incoming-* left");
}

/// Rewrites the checksum of every header-looking block, so that mutated headers get past
/// tar-rs's checksum test and reach the deeper checks.
fn fix_checksums(tar: &mut [u8]) {
    for block in tar.chunks_mut(512) {
        if block.len() < 512 || block.iter().all(|b| *b == 0) || &block[257..262] != b"ustar" {
            continue;
        }
        block[148..156].copy_from_slice(b"        ");
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
}

/// A package's tar stream with the extensions attackers use: a GNU long name, a pax path, a
/// link, nested directories.
fn rich_entries() -> Vec<u8> {
    use tar::EntryType::{Directory, GNULongName, Regular, Symlink, XHeader};
    let long = format!("bin/{}", "n".repeat(150));
    [
        good_entries(),
        entries(&[
            (b"bin/", Directory, b"", b"", 0o755),
            (b"././@LongLink", GNULongName, b"", long.as_bytes(), 0o644),
            (b"bin/short", Regular, b"", b"long named\n", 0o755),
            (
                b"././@PaxHeader",
                XHeader,
                b"",
                b"20 path=bin/paxname\n",
                0o644,
            ),
            (b"bin/p", Regular, b"", b"pax named\n", 0o644),
            (b"bin/link", Symlink, b"short", b"", 0o777),
            (b"config/a/b/", Directory, b"", b"", 0o700),
            (b"config/a/b/c.conf", Regular, b"", b"k = v\n", 0o600),
        ]),
    ]
    .concat()
}

/// Seeded property test: mutated archives never make the verifier panic or read much, and
/// every mutated archive it accepts is extracted by the host's GNU tar to exactly the tree it
/// verified (the upload script's listing check passes). A failure prints the seed.
#[test]
fn mutated_archives_are_refused_or_extracted_exactly_as_verified() {
    let base = [rich_entries(), END.to_vec()].concat();
    assert!(verify_bytes(&gzip(&base)).is_ok());
    let tmp = tempfile::tempdir().unwrap();
    let seed = std::env::var("HARNESS_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let cases: u64 = std::env::var("HARNESS_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..cases {
        let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(case));
        let mut tar = base.clone();
        for _ in 0..rng.usize(1..4) {
            if tar.len() < 512 {
                break;
            }
            match rng.u8(0..6) {
                // A byte of a header: name, mode, size, type, link name, magic, prefix.
                0 | 1 => {
                    let block = rng.usize(0..tar.len() / 512) * 512;
                    let at = block
                        + *rng
                            .choice(&[
                                0, 1, 50, 99, 100, 103, 124, 130, 135, 156, 157, 200, 257, 345, 400,
                            ])
                            .unwrap();
                    tar[at] = *rng.choice(b"\0 ./0123457xLKgS5\n\\a\xff").unwrap();
                }
                // Any byte.
                2 => {
                    let at = rng.usize(0..tar.len());
                    tar[at] = rng.u8(..);
                }
                // Cut the stream, or append to it.
                3 => tar.truncate(rng.usize(0..tar.len()) / 512 * 512),
                4 => tar.extend(rich_entries()),
                // Repeat a block.
                _ => {
                    let block = rng.usize(0..tar.len() / 512) * 512;
                    let copy = tar[block..block + 512].to_vec();
                    let to = rng.usize(0..tar.len() / 512) * 512;
                    tar.splice(to..to, copy);
                }
            }
        }
        if rng.bool() {
            fix_checksums(&mut tar);
        }
        let archive = gzip(&tar);
        let Ok(info) = verify_bytes(&archive) else {
            refused += 1;
            continue;
        };
        accepted += 1;
        let listing = super::listing::expected(&info);
        let service = tmp.path().join(format!("svc-{case}"));
        let (ok, out, err) = host_upload(&service, &archive, "demo-1", &listing);
        let saved = tmp.path().join("failing.tar.gz");
        if !ok {
            fs::write(&saved, &archive).unwrap();
            let keep = std::env::temp_dir().join(format!("harness-proptest-{seed}-{case}.tar.gz"));
            let _ = fs::copy(&saved, &keep);
            panic!(
                "seed {} (HARNESS_PROPTEST_SEED={seed}, case {case}, saved as {}): the host \
                 extracted another tree than the verified one: {}\n{err}",
                seed.wrapping_add(case),
                keep.display(),
                super::listing::differences(&listing, &out).unwrap_or_default()
            );
        }
        fs::remove_dir_all(&service).unwrap();
    }
    println!(
        "{cases} mutated archives: {accepted} accepted and extracted as verified, {refused} refused"
    );
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

/// What the mutation test above found GNU tar and tar-rs reading differently, each refused.
#[test]
fn archives_the_mutation_test_found_are_refused() {
    use tar::EntryType::{Directory, Regular, XGlobalHeader};
    let with = |extra: Vec<u8>| {
        let bytes = [good_entries(), extra, END.to_vec()].concat();
        refusal(verify_bytes(&gzip(&bytes)).unwrap_err()).to_string()
    };
    let patched = |kind, name: &[u8], data: &[u8], patch: &dyn Fn(&mut [u8])| {
        let mut bytes = entries(&[(name, kind, b"", data, 0o644)]);
        patch(&mut bytes[..512]);
        fix_checksums(&mut bytes);
        bytes
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A directory with content: tar-rs skips it, GNU tar reads it as the next header.
        (
            patched(Directory, b"d/", b"", &|h| {
                h[124..136].copy_from_slice(b"00000000232\0")
            }),
            "is a directory or link with 154 bytes",
        ),
        // A global pax path: GNU tar renames every later entry, tar-rs ignores it.
        (
            [
                entries(&[(b"g", XGlobalHeader, b"", b"20 path=bin/paxname\n", 0o644)]),
                entries(&[(b"bin/x", Regular, b"", b"x", 0o644)]),
            ]
            .concat(),
            "a pax global header sets `path`",
        ),
        // A base-256 mark GNU tar does not take.
        (
            patched(Regular, b"x", b"x", &|h| h[116] = 0xc9),
            "has an unreadable gid field",
        ),
        (
            patched(Regular, b"x", b"x", &|h| {
                h[136..148].copy_from_slice(b"0000(000000\0")
            }),
            "has an unreadable mtime field",
        ),
        // A file where the package root is.
        (
            patched(Regular, b"x", b"x", &|h| h[..100].fill(0)),
            "(the package root) is not a directory",
        ),
    ];
    for (extra, needle) in cases {
        let error = with(extra);
        assert!(error.contains(needle), "{needle}: {error}");
    }
}
