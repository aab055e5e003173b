//! Deploying a 50 MB package to 3 lab hosts at once, next to `ssh host 'cat > file'` and
//! `ssh host 'tar -xzf - -C dir'` of the same archive to the same 3 hosts at once, in the same
//! run. The second baseline is what the host's checks of the extracted tree are measured
//! against.
//!
//! The package holds incompressible bytes (random data in `bin/`), so the archive is as large
//! as its content and the transfer dominates. A deployment here is the whole of it: verify the
//! archive (one gunzip and sha256 pass), connect, check the host, stream and extract while
//! hashing, write the env file, switch, run `start.sh` and `health.sh`. The baseline opens a
//! fresh connection per host too (plain `ssh`, as a user would) and only copies the bytes.
//! Between runs the service directory is removed (not timed), so every run deploys afresh.
//! Each figure is the fastest of `DEPLOY_BENCH_RUNS` runs (default 3).
//!
//! Needs what a lab needs (root, `ip netns`, `unshare`, openssh-server); prints why and exits
//! otherwise. Run: `cargo bench --bench deploy`. `DEPLOY_BENCH_MB` sets the size in MB.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::lab::Lab;
use harness::package::{Deploy, DeployHost, Installed, PackageBuilder, Stage};

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
const ROOT: &str = "/root/harness";

fn main() {
    if !rustix::process::geteuid().is_root() || !Path::new("/usr/sbin/sshd").exists() {
        println!("skipped: a lab needs root and /usr/sbin/sshd");
        return;
    }
    let runs: usize = env_or("DEPLOY_BENCH_RUNS", 3);
    let megabytes: usize = env_or("DEPLOY_BENCH_MB", 50);
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let archive = tmp.path().join("bench-1.0.0.tar.gz");
    build_package(&tmp.path().join("src"), megabytes << 20, &archive);
    let size = std::fs::metadata(&archive).expect("the archive").len();
    println!(
        "package: {:.1} MB archive of {megabytes} MB random bytes, to {} lab hosts at once",
        mb(size),
        HOSTS.len()
    );

    smol::block_on(async {
        let mut builder = Lab::builder().network("lan", "10.226.9.0/24");
        for h in HOSTS {
            builder = builder.host(h, &["lan"]);
        }
        let lab = builder.build().await.expect("the lab builds");
        let hosts: Vec<DeployHost> = HOSTS
            .iter()
            .map(|h| DeployHost::new(*h, lab.host(h).ssh_builder()))
            .collect();

        let mut deploy_times = Vec::new();
        let mut transfer_times = Vec::new();
        let mut cat_times = Vec::new();
        let mut untar_times = Vec::new();
        let mut mux_times = Vec::new();
        let mut fastest: Option<(Duration, Timeline)> = None;
        for run in 0..=runs {
            let (total, transfer, timeline) = deploy_once(&archive, &hosts).await;
            for h in HOSTS {
                let ssh = lab.host(h).launcher().await.expect("connect");
                Installed::new(ROOT, "bench")
                    .stop(&ssh, h, true)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            let cat = cat_once(&lab, &archive);
            let untar = untar_once(&lab, &archive);
            let muxed = upload_once(&lab, &archive).await;
            // The first round warms the page cache and the hosts' sshd; it is not counted.
            if run > 0 {
                if fastest.as_ref().is_none_or(|(t, _)| total < *t) {
                    fastest = Some((total, timeline));
                }
                deploy_times.push(total);
                transfer_times.push(transfer);
                cat_times.push(cat);
                untar_times.push(untar);
                mux_times.push(muxed);
            }
        }
        let best = |v: &[Duration]| *v.iter().min().expect("at least one run");
        let (deploy, transfer, cat) =
            (best(&deploy_times), best(&transfer_times), best(&cat_times));
        let total_mb = mb(size) * HOSTS.len() as f64;
        println!("fastest of {runs} runs:");
        println!(
            "  harness deploy (verify, connect, stream, extract, switch, start, health): {:>6.2} s  {:>6.1} MB/s",
            deploy.as_secs_f64(),
            total_mb / deploy.as_secs_f64()
        );
        println!(
            "    of which until every host had the release extracted and checked:     {:>6.2} s",
            transfer.as_secs_f64()
        );
        println!(
            "  ssh HOST 'cat > file' to each host at once (baseline):                  {:>6.2} s  {:>6.1} MB/s",
            cat.as_secs_f64(),
            total_mb / cat.as_secs_f64()
        );
        let untar = best(&untar_times);
        println!(
            "  ssh HOST 'tar -xzf - -C DIR' to each host at once (baseline):            {:>6.2} s  {:>6.1} MB/s",
            untar.as_secs_f64(),
            total_mb / untar.as_secs_f64()
        );
        let mux = best(&mux_times);
        println!(
            "  SshLauncher::upload to each host at once, connections already open:     {:>6.2} s  {:>6.1} MB/s",
            mux.as_secs_f64(),
            total_mb / mux.as_secs_f64()
        );
        println!(
            "ratio deploy / baseline: {:.2} (transfer part: {:.2})",
            deploy.as_secs_f64() / cat.as_secs_f64(),
            transfer.as_secs_f64() / cat.as_secs_f64()
        );
        println!(
            "ratio transfer part / ssh + tar by hand: {:.2} (the host's listing and sha256 checks)",
            transfer.as_secs_f64() / untar.as_secs_f64()
        );
        if let Some((_, timeline)) = fastest {
            let steps: Vec<String> = timeline
                .iter()
                .map(|(stage, at)| format!("{stage} {:.2}", at.as_secs_f64()))
                .collect();
            println!(
                "stages on {} in the fastest run (s): {}",
                HOSTS[0],
                steps.join(", ")
            );
        }
        lab.shutdown().await.expect("the lab shuts down");
    });
}

/// When each stage of the first host began, from the start of the deployment.
type Timeline = Vec<(&'static str, Duration)>;

/// One deployment to every host; returns the whole time, the time until the last host had its
/// release extracted and checked (its `switch` stage began), and the first host's timeline.
async fn deploy_once(archive: &Path, hosts: &[DeployHost]) -> (Duration, Duration, Timeline) {
    let started = Instant::now();
    let switched = Arc::new(Mutex::new(Vec::new()));
    let timeline = Arc::new(Mutex::new(Timeline::new()));
    let (seen, steps) = (switched.clone(), timeline.clone());
    let results = Deploy::new(archive)
        .with_root(ROOT)
        .with_progress(move |p| {
            if p.stage == Stage::Switch {
                seen.lock().unwrap().push(started.elapsed());
            }
            let mut steps = steps.lock().unwrap();
            if p.host == HOSTS[0] && steps.last().map(|(s, _)| *s) != Some(p.stage.name()) {
                steps.push((p.stage.name(), started.elapsed()));
            }
        })
        .to_hosts(hosts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let total = started.elapsed();
    for r in results {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    let transfer = switched
        .lock()
        .unwrap()
        .iter()
        .copied()
        .max()
        .unwrap_or(total);
    let timeline = timeline.lock().unwrap().clone();
    (total, transfer, timeline)
}

/// `ssh root@HOST 'cat > /root/bench.tar.gz' < archive` to every host at once, each over a
/// fresh connection.
fn cat_once(lab: &Lab, archive: &Path) -> Duration {
    ssh_each(lab, archive, "cat > /root/bench.tar.gz")
}

/// `ssh root@HOST 'tar -xzf - -C DIR' < archive` to every host at once, into a fresh
/// directory: an upload and extraction by hand, without harness's checks of what the host
/// extracted (listing, modes, sha256 of every file).
fn untar_once(lab: &Lab, archive: &Path) -> Duration {
    ssh_each(
        lab,
        archive,
        "rm -rf /root/bench-untar && mkdir /root/bench-untar && tar -xzf - -C /root/bench-untar",
    )
}

/// Runs `remote` on every host at once with the archive on its standard input, each over a
/// fresh connection; returns how long until the last one ended.
fn ssh_each(lab: &Lab, archive: &Path, remote: &str) -> Duration {
    let started = Instant::now();
    let children: Vec<_> = HOSTS
        .iter()
        .map(|h| {
            Command::new("ssh")
                .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i"])
                .arg(lab.key())
                .arg("-o")
                .arg(format!(
                    "UserKnownHostsFile={}",
                    lab.known_hosts().display()
                ))
                .arg(format!("root@{}", lab.host(h).addr("lan")))
                .arg(remote)
                .stdin(std::fs::File::open(archive).expect("the archive"))
                .stdout(Stdio::null())
                .spawn()
                .expect("ssh runs")
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().expect("ssh ends").success(),
            "ssh {remote:?} failed"
        );
    }
    started.elapsed()
}

/// `SshLauncher::upload` of the archive to every host at once, over connections opened
/// beforehand (not timed): what the multiplexed connection costs for the bytes alone.
async fn upload_once(lab: &Lab, archive: &Path) -> Duration {
    let mut conns = Vec::new();
    for h in HOSTS {
        conns.push(lab.host(h).launcher().await.expect("connect"));
    }
    let started = Instant::now();
    let up = |i: usize| conns[i].upload(archive, "/root/bench-mux.tar.gz");
    let (a, (b, c)) =
        futures_lite::future::zip(up(0), futures_lite::future::zip(up(1), up(2))).await;
    let elapsed = started.elapsed();
    for r in [a, b, c] {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    elapsed
}

/// A package whose `bin/blob` holds `bytes` random bytes, with a start script that runs a
/// process in the background, and stop and health scripts for it.
fn build_package(dir: &Path, bytes: usize, archive: &Path) {
    for sub in ["bin", "scripts"] {
        std::fs::create_dir_all(dir.join(sub)).expect("create the package directory");
    }
    std::fs::write(dir.join("manifest.yaml"), "name: bench\nversion: 1.0.0\n").expect("manifest");
    let mut blob = vec![0u8; bytes];
    fastrand::Rng::with_seed(1).fill(&mut blob);
    std::fs::write(dir.join("bin/blob"), blob).expect("blob");
    let scripts = [
        (
            "start.sh",
            "#!/bin/sh\ncd \"$1\" && { setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $! >service.pid; }\n",
        ),
        (
            "stop.sh",
            "#!/bin/sh\ncd \"$1\" && [ -f service.pid ] && kill \"$(cat service.pid)\"; rm -f service.pid; exit 0\n",
        ),
        (
            "health.sh",
            "#!/bin/sh\ncd \"$1\" && kill -0 \"$(cat service.pid)\"\n",
        ),
    ];
    for (name, text) in scripts {
        let path = dir.join("scripts").join(name);
        std::fs::write(&path, text).expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    PackageBuilder::new(dir)
        .build(archive)
        .unwrap_or_else(|e| panic!("{e}"));
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
