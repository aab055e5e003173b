//! Package build throughput, next to `tar czf` of the same directory in the same run.
//!
//! The directory is generated in a temporary directory: about 50 MB, half binaries (ELF files
//! copied from /usr/bin and /usr/lib, as a service's bin/ holds) and half text (log-like and
//! config-like lines, as config/ and data files hold), plus the manifest and scripts a package
//! needs. Each figure is the fastest of `PKG_BENCH_RUNS` runs (default 3), after one warm-up
//! run that brings the files into the page cache. Goal: harness at least as fast as
//! `tar czf`, with an archive of comparable size.
//!
//! Run: `cargo bench --bench package_build` (release). `PKG_BENCH_MB` sets the size in MB.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::package::{DEFAULT_LEVEL, PackageBuilder};

fn main() {
    let runs: usize = env_or("PKG_BENCH_RUNS", 3);
    let megabytes: u64 = env_or("PKG_BENCH_MB", 50);
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("bench-package");
    let (binary, text) = generate(&dir, megabytes << 20);
    let content = binary + text;
    println!(
        "package of {:.1} MB: {:.1} MB binaries, {:.1} MB text",
        mb(content),
        mb(binary),
        mb(text)
    );

    let ours = tmp.path().join("ours.tar.gz");
    let theirs = tmp.path().join("theirs.tar.gz");
    let harness_run = |level: u32| {
        let started = Instant::now();
        let built = PackageBuilder::new(&dir)
            .with_level(level)
            .build(&ours)
            .unwrap_or_else(|e| panic!("{e}"));
        (started.elapsed(), built.size)
    };
    let tar_run = || {
        let started = Instant::now();
        let status = Command::new("tar")
            .arg("czf")
            .arg(&theirs)
            .arg("-C")
            .arg(&dir)
            .arg(".")
            .status()
            .expect("tar runs");
        assert!(status.success(), "tar czf failed");
        (
            started.elapsed(),
            fs::metadata(&theirs).expect("tar's archive").len(),
        )
    };

    // Warm-up: the page cache, and the first-run costs of both.
    harness_run(DEFAULT_LEVEL);
    tar_run();
    let mut harness_times = Vec::new();
    let mut tar_times = Vec::new();
    let (mut harness_size, mut tar_size) = (0, 0);
    for _ in 0..runs {
        let (t, size) = harness_run(DEFAULT_LEVEL);
        harness_times.push(t);
        harness_size = size;
        let (t, size) = tar_run();
        tar_times.push(t);
        tar_size = size;
    }
    let harness_best = *harness_times.iter().min().expect("at least one run");
    let tar_best = *tar_times.iter().min().expect("at least one run");
    println!("fastest of {runs} runs:");
    report(
        &format!("harness package build (gzip level {DEFAULT_LEVEL})"),
        harness_best,
        content,
        harness_size,
    );
    report("tar czf (gzip -6)", tar_best, content, tar_size);
    println!(
        "  ratio (tar czf time / harness time): {:.2}, size ratio (harness / tar): {:.3}",
        tar_best.as_secs_f64() / harness_best.as_secs_f64(),
        harness_size as f64 / tar_size as f64
    );

    println!("other levels, one run each:");
    for level in [1, 9] {
        let (t, size) = harness_run(level);
        report(
            &format!("harness package build (level {level})"),
            t,
            content,
            size,
        );
    }
}

fn report(what: &str, time: Duration, content: u64, size: u64) {
    println!(
        "  {what:<40} {:8.1} ms {:7.1} MB/s, archive {:6.2} MB ({:.1} % of the content)",
        time.as_secs_f64() * 1e3,
        mb(content) / time.as_secs_f64(),
        mb(size),
        100.0 * size as f64 / content as f64
    );
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes a package of about `total` bytes into `dir`: returns (binary bytes, text bytes).
fn generate(dir: &Path, total: u64) -> (u64, u64) {
    for sub in ["bin", "lib", "scripts", "config", "data"] {
        fs::create_dir_all(dir.join(sub)).expect("create the package's directories");
    }
    fs::write(
        dir.join("manifest.yaml"),
        "name: bench-service\nversion: 1.0.0\nport: 8080\n",
    )
    .expect("write the manifest");
    for script in ["start.sh", "stop.sh", "health.sh"] {
        let path = dir.join("scripts").join(script);
        fs::write(&path, "#!/bin/sh\nexit 0\n").expect("write a script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod a script");
    }

    // Binaries: the largest ELF files of the system's bin and lib directories, up to half.
    let mut candidates = Vec::new();
    for system in [
        "/usr/bin",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ] {
        let Ok(entries) = fs::read_dir(system) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = fs::metadata(entry.path()) else {
                continue;
            };
            if meta.is_file() && meta.len() > 64 << 10 && is_elf(&entry.path()) {
                candidates.push((meta.len(), entry.path()));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    candidates.dedup_by(|a, b| a.1.file_name() == b.1.file_name());
    let mut binary = 0;
    for (size, path) in candidates {
        if binary + size > total / 2 {
            continue;
        }
        let sub = if path.starts_with("/usr/bin") {
            "bin"
        } else {
            "lib"
        };
        let name = path.file_name().expect("a file name");
        fs::copy(&path, dir.join(sub).join(name)).expect("copy a binary");
        binary += size;
    }

    // Text: log lines and config-like files of varied, repetitive-but-not-constant content.
    let mut text = 0;
    let mut rng = fastrand::Rng::with_seed(7);
    let words = [
        "request",
        "served",
        "cache",
        "miss",
        "hit",
        "upstream",
        "timeout",
        "retry",
        "GET",
        "PUT",
        "/v1/items",
        "/v1/users",
        "/health",
        "status=200",
        "status=404",
        "status=503",
        "ok",
    ];
    let mut file = 0;
    while binary + text < total {
        let path = dir.join("data").join(format!("service-{file:03}.log"));
        let mut out = std::io::BufWriter::new(fs::File::create(&path).expect("create a log"));
        let mut written = 0u64;
        while written < 1 << 20 && binary + text + written < total {
            let line = format!(
                "2026-11-27T08:{:02}:{:02}.{:03}Z INFO {} {} {} id={:08x} latency_ms={} bytes={}\n",
                rng.u32(0..60),
                rng.u32(0..60),
                rng.u32(0..1000),
                words[rng.usize(..words.len())],
                words[rng.usize(..words.len())],
                words[rng.usize(..words.len())],
                rng.u32(..),
                rng.u32(0..2000),
                rng.u32(0..100_000),
            );
            out.write_all(line.as_bytes()).expect("write a log");
            written += line.len() as u64;
        }
        out.flush().expect("write a log");
        text += written;
        file += 1;
    }
    (binary, text)
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}
