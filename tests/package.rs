//! `harness package build` and `inspect`, run as a user runs them: reproducible archives,
//! the refusals with their reasons and exit codes, and the example package's scripts run for
//! real against an echo server.

#[path = "support/fixtures.rs"]
mod fixtures;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const REFUSED: i32 = 1;
const HARNESS_FAILED: i32 = 125;

fn harness(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_harness"));
    command.args(args).env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().expect("the harness binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// Copies a directory tree (files, directories, links), keeping modes.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&src, &dst);
        } else if kind.is_symlink() {
            symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A copy of the example package `packages/load-generator` in a temp dir.
fn example(tmp: &Path, name: &str) -> PathBuf {
    let dir = tmp.join(name);
    copy_tree(
        &fixtures::workspace_dir().join("packages/load-generator"),
        &dir,
    );
    dir
}

fn build(dir: &Path, output: &Path) -> Output {
    harness(
        &["package", "build", arg(dir), "--output", arg(output)],
        &[],
    )
}

fn assert_refused(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(REFUSED), "stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            walk(&path, out);
        }
    }
}

#[test]
fn builds_are_byte_identical_whatever_the_times_owners_and_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = example(tmp.path(), "src");
    symlink("load-generator", dir.join("bin/lg")).unwrap();
    let first = tmp.path().join("first.tar.gz");
    let out = build(&dir, &first);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = fs::read(&first).unwrap();
    let sum = fs::read_to_string(tmp.path().join("first.tar.gz.sha256")).unwrap();
    let (hex, name) = sum.trim_end().split_once("  ").unwrap();
    assert_eq!(name, "first.tar.gz");
    assert_eq!(text(&out.stdout), format!("{hex}  {}\n", first.display()));
    assert!(text(&out.stderr).contains("built load-generator 0.1.0: 10 entries"));

    // The same bytes again, after new times, another owner and a group-writable umask.
    let mut paths = Vec::new();
    walk(&dir, &mut paths);
    for path in &paths {
        let meta = fs::symlink_metadata(path).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let touched = Command::new("touch")
            .args(["-d", "2030-01-02 03:04:05", arg(path)])
            .status()
            .unwrap();
        assert!(touched.success());
        std::os::unix::fs::lchown(path, Some(4321), Some(4321)).unwrap();
        chmod(path, meta.permissions().mode() | 0o020);
    }
    let second = tmp.path().join("second.tar.gz");
    assert!(build(&dir, &second).status.success());
    assert!(
        fs::read(&second).unwrap() == bytes,
        "the rebuilt archive differs"
    );
    let second_sum = fs::read_to_string(tmp.path().join("second.tar.gz.sha256")).unwrap();
    assert!(second_sum.starts_with(hex));

    // gzip: no file name flag, no time.
    assert_eq!(&bytes[..4], [0x1f, 0x8b, 8, 0]);
    assert_eq!(&bytes[4..8], [0, 0, 0, 0]);
    // Sorted entries, 0/0 owners without names, time 0, modes with only the execute bit.
    let listing = Command::new("tar")
        .args(["--numeric-owner", "-tvzf", arg(&first)])
        .output()
        .unwrap();
    let listing: Vec<String> = text(&listing.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let expected = [
        "drwxr-xr-x 0/0 0 1970-01-01 00:00 bin/",
        "lrwxrwxrwx 0/0 0 1970-01-01 00:00 bin/lg -> load-generator",
        "-rwxr-xr-x 0/0 1693 1970-01-01 00:00 bin/load-generator",
        "drwxr-xr-x 0/0 0 1970-01-01 00:00 config/",
        "-rw-r--r-- 0/0 63 1970-01-01 00:00 config/load-generator.conf",
    ];
    assert_eq!(listing[..5], expected);
    let names: Vec<&str> = listing
        .iter()
        .map(|l| l.split(" -> ").next().unwrap().rsplit(' ').next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let names = Command::new("tar")
        .args(["-tvzf", arg(&first)])
        .output()
        .unwrap();
    assert!(text(&names.stdout).lines().all(|l| l.contains(" 0/0 ")));

    // SOURCE_DATE_EPOCH sets the entries' time, and only that.
    let dated = tmp.path().join("dated.tar.gz");
    let out = harness(
        &["package", "build", arg(&dir), "-o", arg(&dated)],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert!(out.status.success());
    let listing = Command::new("tar")
        .args(["--utc", "-tvzf", arg(&dated)])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(text(&listing.stdout).contains("2023-11-14 22:13 bin/"));
}

#[test]
fn inspect_verifies_and_shows_manifest_files_and_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = example(tmp.path(), "src");
    let archive = tmp.path().join("lg.tar.gz");
    assert!(build(&dir, &archive).status.success());
    let sum = fs::read_to_string(tmp.path().join("lg.tar.gz.sha256")).unwrap();
    let hex = &sum[..64];

    let out = harness(&["package", "inspect", arg(&archive)], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "package:  load-generator 0.1.0\n",
        "installs: /opt/harness/load-generator/releases/load-generator-0.1.0 (by default",
        &format!("sha256:   {hex} (matches {}.sha256)\n", archive.display()),
        "  name: load-generator\n",
        "  -rwxr-xr-x 1693  bin/load-generator\n",
        "  drwxr-xr-x    0  scripts/\n",
        "  -rwxr-xr-x  937  scripts/start.sh\n",
        "verified: 9 entries, rules and checksum ok\n",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }

    // A changed checksum file, or a changed archive, is refused.
    let mut wrong = hex.to_string().into_bytes();
    wrong[10] = if wrong[10] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    fs::write(
        tmp.path().join("lg.tar.gz.sha256"),
        format!("{wrong}  lg.tar.gz\n"),
    )
    .unwrap();
    let out = harness(&["package", "inspect", arg(&archive)], &[]);
    assert_refused(
        &out,
        &[&format!("sha256 {hex} does not match"), "lg.tar.gz.sha256"],
    );

    // Without a checksum file, the archive's own rules are still checked.
    fs::remove_file(tmp.path().join("lg.tar.gz.sha256")).unwrap();
    let out = harness(&["package", "inspect", arg(&archive)], &[]);
    assert!(text(&out.stdout).contains("(no .sha256 file to check)"));

    let out = harness(
        &[
            "package",
            "inspect",
            arg(&tmp.path().join("missing.tar.gz")),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(HARNESS_FAILED));
    assert!(text(&out.stderr).contains("missing.tar.gz"));
}

#[test]
fn build_refuses_with_the_entry_and_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let output = tmp.path().join("out.tar.gz");

    let dir = example(tmp.path(), "no-start");
    fs::remove_file(dir.join("scripts/start.sh")).unwrap();
    assert_refused(
        &build(&dir, &output),
        &["missing required script scripts/start.sh"],
    );

    let dir = example(tmp.path(), "no-stop");
    fs::remove_file(dir.join("scripts/stop.sh")).unwrap();
    assert_refused(
        &build(&dir, &output),
        &["missing required script scripts/stop.sh"],
    );

    let dir = example(tmp.path(), "not-exec");
    chmod(&dir.join("scripts/health.sh"), 0o644);
    assert_refused(
        &build(&dir, &output),
        &[
            "scripts/health.sh is not executable (mode 0644)",
            "chmod +x",
        ],
    );

    let dir = example(tmp.path(), "abs-link");
    symlink("/etc/passwd", dir.join("config/passwd")).unwrap();
    assert_refused(
        &build(&dir, &output),
        &["link config/passwd -> /etc/passwd points outside the package"],
    );

    let dir = example(tmp.path(), "up-link");
    symlink("../../../etc", dir.join("config/etc")).unwrap();
    assert_refused(
        &build(&dir, &output),
        &[
            "link config/etc -> ../../../etc points outside the package: its target climbs above the package root",
        ],
    );

    let dir = example(tmp.path(), "fifo");
    let made = Command::new("mkfifo")
        .arg(dir.join("bin/control"))
        .status()
        .unwrap();
    assert!(made.success());
    assert_refused(&build(&dir, &output), &["entry bin/control is a fifo"]);

    // Device nodes need root (CAP_MKNOD); CI runs as root.
    let dir = example(tmp.path(), "device");
    let made = Command::new("mknod")
        .args([arg(&dir.join("bin/null")), "c", "1", "3"])
        .status()
        .unwrap();
    if made.success() {
        assert_refused(
            &build(&dir, &output),
            &["entry bin/null is a character device"],
        );
    } else {
        eprintln!("skipping the device case: mknod needs root");
    }

    let dir = example(tmp.path(), "bad-name");
    fs::write(
        dir.join("manifest.yaml"),
        "name: Load_Generator\nversion: 1.0 beta\nsytem_requires: []\n",
    )
    .unwrap();
    let manifest = dir.join("manifest.yaml");
    let manifest = manifest.display();
    assert_refused(
        &build(&dir, &output),
        &[
            &format!("{manifest}:1:7: invalid package name `Load_Generator`"),
            "lowercase ASCII letters, digits and `-`",
            "did you mean `load-generator`?",
            &format!("{manifest}:2:10: invalid version `1.0 beta`: ` ` is not allowed"),
            &format!(
                "{manifest}:3:1: unknown field `sytem_requires`, did you mean `system_requires`?"
            ),
        ],
    );

    let dir = example(tmp.path(), "oversize");
    fs::write(dir.join("bin/blob"), vec![1u8; 5000]).unwrap();
    let out = harness(
        &[
            "package",
            "build",
            arg(&dir),
            "-o",
            arg(&output),
            "--max-size",
            "4K",
        ],
        &[],
    );
    assert_refused(&out, &["it holds more than 4096 bytes", "--max-size"]);

    let out = build(&tmp.path().join("nowhere"), &output);
    assert_eq!(out.status.code(), Some(HARNESS_FAILED));
    assert!(text(&out.stderr).contains("nowhere"));

    // A refused build leaves nothing: no archive, no checksum, no temporary file.
    let left: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gz") || n.ends_with(".sha256") || n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_refused_build_keeps_the_previous_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = example(tmp.path(), "src");
    let output = tmp.path().join("lg.tar.gz");
    assert!(build(&dir, &output).status.success());
    let before = fs::read(&output).unwrap();
    fs::remove_file(dir.join("scripts/stop.sh")).unwrap();
    assert_refused(&build(&dir, &output), &["scripts/stop.sh"]);
    assert!(fs::read(&output).unwrap() == before);
    assert!(
        harness(&["package", "inspect", arg(&output)], &[])
            .status
            .success()
    );
}

/// On a terminal, build shows its progress in files and bytes; elsewhere only the summary.
/// `script` (util-linux, essential in Debian) gives the command a terminal.
#[test]
fn build_shows_progress_on_a_terminal_and_a_summary_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = example(tmp.path(), "src");
    fs::write(dir.join("bin/blob"), vec![3u8; 6 << 20]).unwrap();
    let output = tmp.path().join("lg.tar.gz");

    let out = build(&dir, &output);
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("packing:"), "{stderr}");
    assert!(
        stderr.starts_with("built load-generator 0.1.0: 10 entries, 6.0 MiB in "),
        "{stderr}"
    );
    assert!(stderr.contains("/s), "), "{stderr}");

    let command = format!(
        "{} package build {} --output {} 2>&1",
        env!("CARGO_BIN_EXE_harness"),
        arg(&dir),
        arg(&output)
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("\rpacking: "), "{shown:?}");
    assert!(shown.contains(" / 10 files, "), "{shown:?}");
    assert!(shown.contains("6.0 MiB / 6.0 MiB"), "{shown:?}");
    assert!(
        shown.contains("built load-generator 0.1.0: 10 entries"),
        "{shown:?}"
    );
}

/// Archives made with GNU tar, which writes what our builder never would.
#[test]
fn inspect_refuses_archives_that_break_the_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = example(tmp.path(), "src");
    let archive = tmp.path().join("bad.tar.gz");
    let gnu_tar = |args: &[&str]| {
        let out = Command::new("tar").args(args).output().unwrap();
        assert!(out.status.success(), "tar {args:?}: {}", text(&out.stderr));
    };
    let inspect = || harness(&["package", "inspect", arg(&archive)], &[]);

    // A whole valid package made by tar is accepted, `./` entries and all.
    gnu_tar(&["-czf", arg(&archive), "-C", arg(&dir), "."]);
    let out = inspect();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let outside = tmp.path().join("outside.txt");
    fs::write(&outside, "x").unwrap();
    gnu_tar(&["-czPf", arg(&archive), "-C", arg(&dir), ".", arg(&outside)]);
    assert_refused(
        &inspect(),
        &[&format!("entry {} has an absolute path", outside.display())],
    );

    gnu_tar(&[
        "-czPf",
        arg(&archive),
        "-C",
        arg(&dir),
        ".",
        "../outside.txt",
    ]);
    assert_refused(&inspect(), &["entry ../outside.txt has a `..` component"]);

    symlink("/etc", dir.join("config/etc")).unwrap();
    gnu_tar(&["-czf", arg(&archive), "-C", arg(&dir), "."]);
    assert_refused(
        &inspect(),
        &["link config/etc -> /etc points outside the package: its target is an absolute path"],
    );
    fs::remove_file(dir.join("config/etc")).unwrap();

    assert!(
        Command::new("mkfifo")
            .arg(dir.join("pipe"))
            .status()
            .unwrap()
            .success()
    );
    gnu_tar(&["-czf", arg(&archive), "-C", arg(&dir), "."]);
    assert_refused(&inspect(), &["entry pipe is a fifo"]);
    fs::remove_file(dir.join("pipe")).unwrap();

    chmod(&dir.join("scripts/start.sh"), 0o644);
    gnu_tar(&["-czf", arg(&archive), "-C", arg(&dir), "."]);
    assert_refused(&inspect(), &["scripts/start.sh is not executable"]);
    chmod(&dir.join("scripts/start.sh"), 0o755);

    fs::write(dir.join("bin/blob"), vec![0u8; 8192]).unwrap();
    gnu_tar(&["-czf", arg(&archive), "-C", arg(&dir), "."]);
    let out = harness(
        &["package", "inspect", arg(&archive), "--max-size", "8K"],
        &[],
    );
    assert_refused(&out, &["it holds more than 8192 bytes"]);

    fs::remove_file(dir.join("bin/blob")).unwrap();

    chmod(&dir.join("bin/load-generator"), 0o4755);
    gnu_tar(&["-czf", arg(&archive), "-C", arg(&dir), "."]);
    assert_refused(
        &inspect(),
        &["entry bin/load-generator has mode 4755: setuid, setgid and sticky bits are refused"],
    );
    chmod(&dir.join("bin/load-generator"), 0o755);

    // Two packages in one file: the host's tar would read on into the second.
    gnu_tar(&["-czf", arg(&archive), "-C", arg(&dir), "."]);
    let one = fs::read(&archive).unwrap();
    fs::write(&archive, [one.clone(), one].concat()).unwrap();
    assert_refused(&inspect(), &["it has a second gzip member after the first"]);

    // A 2 GiB long name in a small file is refused at its header, whatever --max-size says.
    let mut header = [0u8; 512];
    header[..13].copy_from_slice(b"././@LongLink");
    header[100..108].copy_from_slice(b"0000644\0");
    header[124..136].copy_from_slice(b"20000000000\0");
    header[156] = b'L';
    header[257..265].copy_from_slice(b"ustar  \0");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let raw = tmp.path().join("bomb.tar");
    fs::write(&raw, [header.to_vec(), vec![b'a'; 4 << 20]].concat()).unwrap();
    let gz = Command::new("gzip")
        .args(["-1c", arg(&raw)])
        .output()
        .unwrap();
    assert!(gz.status.success());
    fs::write(&archive, gz.stdout).unwrap();
    let out = harness(
        &["package", "inspect", arg(&archive), "--max-size", "10M"],
        &[],
    );
    assert_refused(
        &out,
        &["its GNU long name header at byte 0 of the tar stream claims 2147483648 bytes"],
    );

    fs::write(&archive, b"\x1f\x8bnot really").unwrap();
    assert_refused(&inspect(), &["it is not a valid tar.gz archive"]);
}

/// Kills a process this test started (through the package's start script) if it is still
/// there when the test ends, also when it fails.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The echo server, killed and reaped when the test ends.
struct EchoServer(std::process::Child);

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example package, extracted as deployment will, runs: start.sh starts the load
/// generator against a real echo server, health.sh sees replies, stop.sh stops it.
#[test]
fn the_example_package_runs_from_its_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("lg.tar.gz");
    let source = fixtures::workspace_dir().join("packages/load-generator");
    let out = build(&source, &archive);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let work = tmp.path().join("opt/load-generator-0.1.0");
    fs::create_dir_all(&work).unwrap();
    let untar = Command::new("tar")
        .args(["-xzf", arg(&archive), "-C", arg(&work)])
        .status()
        .unwrap();
    assert!(untar.success());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let echo = Command::new(fixtures::bin("echo-server"))
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _echo = EchoServer(echo);
    let env = tmp.path().join("service.env");
    fs::write(&env, format!("ECHO_SERVER_ADDR=127.0.0.1:{port}\n")).unwrap();

    let started = Command::new(work.join("scripts/start.sh"))
        .args([arg(&work), arg(&env)])
        .status()
        .unwrap();
    assert!(started.success());
    let pid: u32 = fs::read_to_string(work.join("service.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _generator = KillOnDrop(pid);
    let health = || {
        Command::new(work.join("scripts/health.sh"))
            .arg(arg(&work))
            .status()
            .unwrap()
            .success()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !health() {
        assert!(
            Instant::now() < deadline,
            "never healthy; stats: {:?}, log: {:?}",
            fs::read_to_string(work.join("stats")),
            fs::read_to_string(work.join("logs/service.log"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = fs::read_to_string(work.join("stats")).unwrap();
    assert!(stats.starts_with("sent "), "{stats}");

    let stopped = Command::new(work.join("scripts/stop.sh"))
        .arg(arg(&work))
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(!work.join("service.pid").exists());
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid));
    assert!(!health());
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}
