//! Deploying packages over SSH (`harness::package::Deploy`) to emulated hosts
//! ([`harness::lab`]): a real service (the fixture kv-server, packaged with its scripts) deployed
//! to three hosts at once, redeployed, upgraded, rolled back after a failing start and a
//! health check that never passes, refused for missing requirements, cut off mid-transfer, and
//! driven through the command line and the WebSocket API. Each test checks on the hosts which
//! releases exist and which run, and that nothing is left afterwards.
//!
//! Needs root, `ip netns`, `unshare` and openssh-server, as `tests/lab.rs` does. Without them
//! each test prints why and passes, unless `HARNESS_REQUIRE_LAB=1` (CI), where that is a
//! failure.

mod api_support;
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/http.rs"]
mod http;
#[path = "support/lab.rs"]
mod lab_support;
#[expect(dead_code, reason = "this suite uses only the deadline helpers")]
#[path = "support/local.rs"]
mod local_support;

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::exec::{Command, Launcher, LocalLauncher, SshLauncher};
use harness::lab::Lab;
use harness::package::{
    Deploy, DeployError, DeployHost, DeployOutcome, Installed, PackageBuilder, SshDeployer, Stage,
};
use lab_support::shut_down;
use local_support::run;

use api_support::Client;
use fixtures::bin;
use http::http;

/// The port the packaged kv-server listens on (the manifest's `port`, as `PORT`).
const PORT: u16 = 7400;

/// Where the tests install: `/root` is private to each lab host.
const ROOT: &str = "/root/harness";

fn skip() -> bool {
    lab_support::skip_without_lab(&[])
}

async fn lab(subnet: &str, hosts: &[&str]) -> Lab {
    let mut builder = Lab::builder().network("lan", subnet);
    for host in hosts {
        builder = builder.host(*host, &["lan"]);
    }
    builder.build().await.expect("the lab builds")
}

/// How a package variant behaves.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// Starts kv-server in the background; healthy once it answers `/health`.
    Good,
    /// start.sh fails before starting anything.
    FailingStart,
    /// Starts kv-server, but health.sh never succeeds.
    NeverHealthy,
}

/// Writes the package source `kv` `version` into `dir/kv-<version>`: manifest, `bin/kv-server`
/// (a script that execs the fixture kv-server from where the hosts see it: the binary itself
/// would make every build pack 8 MB with unoptimised compression), and start, stop and health
/// scripts.
fn package_source(
    lab: &Lab,
    dir: &Path,
    version: &str,
    variant: Variant,
    requires: &[&str],
) -> PathBuf {
    let root = dir.join(format!("kv-{version}"));
    for sub in ["bin", "scripts"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let mut manifest = format!("name: kv\nversion: {version}\nport: {PORT}\n");
    if !requires.is_empty() {
        manifest.push_str("system_requires:\n");
        for r in requires {
            manifest.push_str(&format!("  - {r}\n"));
        }
    }
    std::fs::write(root.join("manifest.yaml"), manifest).unwrap();
    let wrapper = root.join("bin/kv-server");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {} \"$@\"\n", kv_server(lab).display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let start = match variant {
        Variant::FailingStart => "#!/bin/sh\necho \"kv: cannot read config/kv.conf\" >&2\nexit 3\n",
        _ => {
            "#!/bin/sh\n\
             set -eu\n\
             W=\"$1\"\n\
             . \"$2\"\n\
             cd \"$W\"\n\
             KV_BACKEND=memory setsid ./bin/kv-server >service.log 2>&1 </dev/null &\n\
             echo $! >service.pid\n"
        }
    };
    let health = match variant {
        Variant::NeverHealthy => "#!/bin/sh\necho \"kv: still warming up\"\nexit 1\n",
        _ => {
            "#!/bin/bash\n\
             cd \"$1\" && [ -f service.pid ] && kill -0 \"$(cat service.pid)\" 2>/dev/null || exit 1\n\
             exec 3<>\"/dev/tcp/127.0.0.1/$PORT\" || exit 1\n\
             printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3\n\
             head -n 1 <&3 | grep -q ' 200'\n"
        }
    };
    let stop = "#!/bin/sh\n\
                cd \"$1\" || exit 1\n\
                [ -f service.pid ] || exit 0\n\
                pid=$(cat service.pid)\n\
                kill \"$pid\" 2>/dev/null\n\
                i=0\n\
                while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done\n\
                kill -KILL \"$pid\" 2>/dev/null\n\
                rm -f service.pid\n\
                exit 0\n";
    for (name, text) in [
        ("start.sh", start),
        ("health.sh", health),
        ("stop.sh", stop),
    ] {
        let path = root.join("scripts").join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    root
}

/// The fixture kv-server, at a path the hosts of `lab` see: a copy in the lab's directory
/// when it lies under `/tmp`, which every lab host replaces with a private one.
fn kv_server(lab: &Lab) -> PathBuf {
    let binary = bin("kv-server");
    if !binary.starts_with("/tmp") {
        return binary;
    }
    let copy = lab.dir().join("kv-server");
    if !copy.exists() {
        std::fs::copy(&binary, &copy).unwrap();
    }
    copy
}

/// A host of the lab as deployment reaches it: root, the lab's key, its known hosts.
fn deploy_host(lab: &Lab, name: &str) -> DeployHost {
    DeployHost::new(name, lab.host(name).ssh_builder())
}

/// The release directories (under `ROOT/kv/releases`) in which a kv-server runs on a host,
/// sorted: read from `/proc` in the host's own PID namespace.
async fn running_releases(ssh: &SshLauncher<LocalLauncher>) -> Vec<String> {
    let out = ssh
        .output(
            &Command::new("sh")
                .arg("-c")
                .arg("for p in $(pgrep -x kv-server); do readlink /proc/$p/cwd; done; exit 0"),
        )
        .await
        .unwrap();
    let mut dirs: Vec<String> = out
        .stdout
        .iter()
        .map(|d| d.rsplit('/').next().unwrap_or("").to_string())
        .collect();
    dirs.sort();
    dirs
}

/// What `ROOT/kv` holds on a host: `current`, `previous` and the release directories
/// (sorted), and the leftovers of interrupted uploads.
#[derive(Debug, PartialEq)]
struct OnHost {
    current: Option<String>,
    previous: Option<String>,
    releases: Vec<String>,
    incoming: usize,
}

async fn on_host(ssh: &SshLauncher<LocalLauncher>) -> OnHost {
    let status = Installed::new(ROOT, "kv")
        .status(ssh, "host")
        .await
        .unwrap();
    let listing = ssh
        .output(&Command::new("sh").arg("-c").arg(format!(
            "ls -A {ROOT}/kv/releases 2>/dev/null; echo --; ls -A {ROOT}/kv 2>/dev/null | grep -c '^.incoming-'; exit 0"
        )))
        .await
        .unwrap();
    let mut parts = listing.stdout.split(|l| l == "--");
    let entries: Vec<String> = parts.next().unwrap_or_default().to_vec();
    // Each release directory has its sha256 beside it, and no sum outlives its release.
    let (sums, mut releases): (Vec<String>, Vec<String>) =
        entries.into_iter().partition(|e| e.starts_with('.'));
    releases.sort();
    let mut sums: Vec<String> = sums
        .iter()
        .map(|s| {
            s.trim_start_matches('.')
                .trim_end_matches(".sha256")
                .to_string()
        })
        .collect();
    sums.sort();
    assert_eq!(sums, releases, "sha256 files beside the releases");
    let incoming = parts
        .next()
        .and_then(|l| l.first())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    OnHost {
        current: status.current,
        previous: status.previous,
        releases,
        incoming,
    }
}

fn kv_addr(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, PORT)
}

/// Stores `value` under `key` on the kv-server at `addr` and reads it back.
fn kv_round_trip(addr: SocketAddr, key: &str, value: &str) {
    let put = http(addr, "PUT", &format!("/kv/{key}"), value);
    assert!(put.status < 300, "PUT on {addr}: {}", put.status);
    let get = http(addr, "GET", &format!("/kv/{key}"), "");
    assert_eq!(
        (get.status, get.body.as_str()),
        (200, value),
        "GET on {addr}"
    );
}

/// The (host, stage) of every progress report, in order.
type Seen = Arc<Mutex<Vec<(String, &'static str)>>>;

/// Records every progress report.
fn recorder() -> (
    Seen,
    impl Fn(&harness::package::DeployProgress) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (seen, move |p: &harness::package::DeployProgress| {
        sink.lock().unwrap().push((p.host.clone(), p.stage.name()));
    })
}

#[test]
fn parallel_deploy_upgrade_failed_start_unhealthy_rollback_and_removal() {
    if skip() {
        return;
    }
    run(async {
        let hosts = ["alpha", "beta", "gamma"];
        let lab = lab("10.226.1.0/24", &hosts).await;
        let src = tempfile::tempdir().unwrap();
        let v1 = package_source(
            &lab,
            src.path(),
            "1.0.0",
            Variant::Good,
            &["/bin/sh", "/bin/bash"],
        );
        let targets: Vec<DeployHost> = hosts.iter().map(|h| deploy_host(&lab, h)).collect();

        // v1 to three hosts at once, from the package directory (built once).
        let (seen, record) = recorder();
        let deploy = Deploy::new(&v1).with_root(ROOT).with_progress(record);
        let results = deploy
            .to_hosts(&targets)
            .await
            .expect("the package is valid");
        for (host, result) in hosts.iter().zip(&results) {
            let report = result.as_ref().unwrap_or_else(|e| panic!("{host}: {e}"));
            assert_eq!(report.outcome, DeployOutcome::Deployed { replaced: None });
            assert_eq!(report.release, "kv-1.0.0");
            assert_eq!(report.path, format!("{ROOT}/kv/releases/kv-1.0.0"));
            assert!(report.bytes_sent > 0);
            kv_round_trip(kv_addr(lab.host(host).addr("lan")), "k", host);
        }
        for host in hosts {
            let stages: Vec<&str> = seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(h, _)| h == host)
                .map(|(_, s)| *s)
                .collect();
            let mut steps = stages.clone();
            steps.dedup();
            assert_eq!(
                steps,
                [
                    "verify", "connect", "check", "upload", "extract", "switch", "start", "health",
                    "done"
                ],
                "{host}"
            );
        }

        // The same package again: nothing sent, nothing restarted (the value survives).
        let (seen, record) = recorder();
        let again = Deploy::new(&v1).with_root(ROOT).with_progress(record);
        for result in again.to_hosts(&targets).await.unwrap() {
            let report = result.unwrap();
            assert_eq!(
                report.outcome,
                DeployOutcome::AlreadyDeployed,
                "{}",
                report.host
            );
            assert_eq!(report.bytes_sent, 0);
        }
        assert_eq!(
            seen.lock()
                .unwrap()
                .iter()
                .filter(|(_, s)| *s == "skipped")
                .count(),
            3
        );
        kv_round_trip(kv_addr(lab.host("alpha").addr("lan")), "k2", "v");
        let alpha_addr = kv_addr(lab.host("alpha").addr("lan"));
        assert_eq!(http(alpha_addr, "GET", "/kv/k", "").body, "alpha");

        // v2 to alpha: current switches, v1 is kept as previous and stopped.
        let alpha = lab.host("alpha").launcher().await.unwrap();
        let v2 = package_source(&lab, src.path(), "2.0.0", Variant::Good, &[]);
        let report = Deploy::new(&v2)
            .with_root(ROOT)
            .with_env("KV_NOTE", "it's $HOME")
            .on(&alpha, "alpha")
            .await
            .unwrap();
        assert_eq!(
            report.outcome,
            DeployOutcome::Deployed {
                replaced: Some("kv-1.0.0".into())
            }
        );
        let state = on_host(&alpha).await;
        assert_eq!(state.current.as_deref(), Some("kv-2.0.0"));
        assert_eq!(state.previous.as_deref(), Some("kv-1.0.0"));
        assert_eq!(state.releases, ["kv-1.0.0", "kv-2.0.0"]);
        assert_eq!(running_releases(&alpha).await, ["kv-2.0.0"]);
        // A fresh process: the value stored in v1 is gone, the service answers.
        assert_eq!(http(alpha_addr, "GET", "/kv/k", "").status, 404);
        kv_round_trip(alpha_addr, "k", "two");
        let env = alpha
            .output(&Command::new("cat").arg(format!("{ROOT}/kv/env")))
            .await
            .unwrap();
        assert_eq!(
            env.stdout,
            ["export PORT='7400'", "export KV_NOTE='it'\\''s $HOME'"]
        );

        // v3's start.sh fails: v2 is running again (the same value is gone: it restarted),
        // current unchanged, v3 removed, and the error shows start.sh's output.
        let v3 = package_source(&lab, src.path(), "3.0.0", Variant::FailingStart, &[]);
        let error = Deploy::new(&v3)
            .with_root(ROOT)
            .on(&alpha, "alpha")
            .await
            .unwrap_err();
        let DeployError::RolledBack { step, restored, .. } = &error else {
            panic!("expected a rollback, got {error}");
        };
        assert_eq!((*step, restored.as_deref()), ("start.sh", Some("kv-2.0.0")));
        assert!(
            error.to_string().contains("kv: cannot read config/kv.conf"),
            "{error}"
        );
        assert!(error.to_string().contains("alpha"), "{error}");
        let state = on_host(&alpha).await;
        assert_eq!(
            (state.current.as_deref(), state.previous.as_deref()),
            (Some("kv-2.0.0"), Some("kv-1.0.0"))
        );
        assert_eq!(state.releases, ["kv-1.0.0", "kv-2.0.0"]);
        assert_eq!(running_releases(&alpha).await, ["kv-2.0.0"]);
        kv_round_trip(alpha_addr, "k", "after-v3");
        let env = alpha
            .output(&Command::new("cat").arg(format!("{ROOT}/kv/env")))
            .await
            .unwrap();
        assert_eq!(
            env.stdout[1], "export KV_NOTE='it'\\''s $HOME'",
            "v2's env file is back"
        );

        // v4 starts but never becomes healthy: it is stopped, v2 runs again.
        let v4 = package_source(&lab, src.path(), "4.0.0", Variant::NeverHealthy, &[]);
        let error = Deploy::new(&v4)
            .with_root(ROOT)
            .with_health_timeout(Duration::from_secs(2))
            .on(&alpha, "alpha")
            .await
            .unwrap_err();
        let DeployError::RolledBack { step, .. } = &error else {
            panic!("expected a rollback, got {error}");
        };
        assert_eq!(*step, "health.sh");
        assert!(
            error.to_string().contains("kv: still warming up"),
            "{error}"
        );
        assert_eq!(running_releases(&alpha).await, ["kv-2.0.0"]);
        assert_eq!(on_host(&alpha).await.releases, ["kv-1.0.0", "kv-2.0.0"]);
        kv_round_trip(alpha_addr, "k", "after-v4");

        // Rolling back switches to v1 (with its env file), and v2 becomes previous.
        let live = Installed::new(ROOT, "kv")
            .rollback(&alpha, "alpha")
            .await
            .unwrap();
        assert_eq!(live, "kv-1.0.0");
        let state = on_host(&alpha).await;
        assert_eq!(
            (state.current.as_deref(), state.previous.as_deref()),
            (Some("kv-1.0.0"), Some("kv-2.0.0"))
        );
        assert_eq!(running_releases(&alpha).await, ["kv-1.0.0"]);
        kv_round_trip(alpha_addr, "k", "rolled-back");
        let env = alpha
            .output(&Command::new("cat").arg(format!("{ROOT}/kv/env")))
            .await
            .unwrap();
        assert_eq!(env.stdout, ["export PORT='7400'"]);

        // Stop and remove everywhere: no process, no directory.
        for host in hosts {
            let ssh = lab.host(host).launcher().await.unwrap();
            let stopped = Installed::new(ROOT, "kv")
                .stop(&ssh, host, true)
                .await
                .unwrap();
            assert!(stopped.is_some(), "{host}");
            assert_eq!(running_releases(&ssh).await, Vec::<String>::new(), "{host}");
            let gone = ssh
                .output(&Command::new("test").args(["-e", &format!("{ROOT}/kv")]))
                .await
                .unwrap();
            assert!(!gone.success(), "{ROOT}/kv is still on {host}");
        }
        drop(alpha);
        shut_down(lab).await;
    });
}

#[test]
fn missing_requirements_are_refused_with_the_host_named_and_nothing_changed() {
    if skip() {
        return;
    }
    run(async {
        let lab = lab("10.226.2.0/24", &["delta"]).await;
        let src = tempfile::tempdir().unwrap();
        let pkg = package_source(
            &lab,
            src.path(),
            "1.0.0",
            Variant::Good,
            &[
                "/usr/bin/no-such-tool",
                "/bin/sh",
                "/usr/lib/no-such-lib.so.1",
            ],
        );
        let ssh = lab.host("delta").launcher().await.unwrap();
        let error = Deploy::new(&pkg)
            .with_root(ROOT)
            .on(&ssh, "delta")
            .await
            .unwrap_err();
        match &error {
            DeployError::MissingRequirements { host, missing, .. } => {
                assert_eq!(host, "delta");
                assert_eq!(
                    missing,
                    &["/usr/bin/no-such-tool", "/usr/lib/no-such-lib.so.1"]
                );
            }
            other => panic!("expected missing requirements, got {other}"),
        }
        assert!(error.to_string().contains("delta"), "{error}");
        let untouched = ssh
            .output(&Command::new("test").args(["-e", ROOT]))
            .await
            .unwrap();
        assert!(!untouched.success(), "{ROOT} was created on the host");
        drop(ssh);
        shut_down(lab).await;
    });
}

#[test]
fn a_connection_cut_mid_transfer_leaves_no_partial_release() {
    if skip() {
        return;
    }
    run(async {
        let lab = lab("10.226.3.0/24", &["echo"]).await;
        let src = tempfile::tempdir().unwrap();
        let v1 = package_source(&lab, src.path(), "1.0.0", Variant::Good, &[]);
        let ssh = lab.host("echo").launcher().await.unwrap();
        Deploy::new(&v1)
            .with_root(ROOT)
            .on(&ssh, "echo")
            .await
            .unwrap();

        // v2 carries 16 MiB of random bytes: the cut comes after the first 4 MiB are reported sent.
        let v2 = package_source(&lab, src.path(), "2.0.0", Variant::Good, &[]);
        let mut noise = vec![0u8; 16 << 20];
        let mut rng = fastrand::Rng::with_seed(7);
        rng.fill(&mut noise);
        std::fs::write(v2.join("bin/blob"), &noise).unwrap();
        let archive = src.path().join("kv-2.0.0.tar.gz");
        PackageBuilder::new(&v2)
            .with_level(1)
            .build(&archive)
            .unwrap();

        // Kill the master connection once 4 MiB are through.
        let master = ssh.master_pid().expect("a multiplexed connection");
        let killed = Arc::new(Mutex::new(false));
        let k = killed.clone();
        let error = Deploy::new(&archive)
            .with_root(ROOT)
            .with_progress(move |p| {
                if let Stage::Upload { sent, .. } = p.stage
                    && sent >= 4 << 20
                    && !*k.lock().unwrap()
                {
                    *k.lock().unwrap() = true;
                    let pid = rustix::process::Pid::from_raw(master as i32).unwrap();
                    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
                }
            })
            .on(&ssh, "echo")
            .await
            .unwrap_err();
        assert!(
            *killed.lock().unwrap(),
            "the transfer ended before it could be cut: {error}"
        );
        assert!(
            matches!(&error, DeployError::Step { step, .. } if step.starts_with("upload")),
            "{error}"
        );
        drop(ssh);

        // A new connection: v1 is still live and running, no v2 release exists.
        let ssh = lab.host("echo").launcher().await.unwrap();
        let state = on_host(&ssh).await;
        assert_eq!(state.current.as_deref(), Some("kv-1.0.0"));
        assert_eq!(state.releases, ["kv-1.0.0"]);
        assert_eq!(running_releases(&ssh).await, ["kv-1.0.0"]);
        kv_round_trip(kv_addr(lab.host("echo").addr("lan")), "k", "v1");

        // The next deployment sweeps what the cut one left and goes through.
        let report = Deploy::new(&archive)
            .with_root(ROOT)
            .on(&ssh, "echo")
            .await
            .unwrap();
        assert_eq!(report.release, "kv-2.0.0");
        let state = on_host(&ssh).await;
        assert_eq!(state.incoming, 0);
        assert_eq!(state.releases, ["kv-1.0.0", "kv-2.0.0"]);
        assert_eq!(running_releases(&ssh).await, ["kv-2.0.0"]);

        // Stopped by hand, the same package deployed again is started again, not sent.
        let stopped = Installed::new(ROOT, "kv").stop(&ssh, "echo", false).await;
        assert_eq!(stopped.unwrap().as_deref(), Some("kv-2.0.0"));
        assert_eq!(running_releases(&ssh).await, Vec::<String>::new());
        let report = Deploy::new(&archive)
            .with_root(ROOT)
            .on(&ssh, "echo")
            .await
            .unwrap();
        assert_eq!(
            (report.outcome, report.bytes_sent),
            (DeployOutcome::Restarted, 0)
        );
        assert_eq!(running_releases(&ssh).await, ["kv-2.0.0"]);
        kv_round_trip(kv_addr(lab.host("echo").addr("lan")), "k", "v2");

        Installed::new(ROOT, "kv")
            .stop(&ssh, "echo", true)
            .await
            .unwrap();
        assert_eq!(running_releases(&ssh).await, Vec::<String>::new());
        drop(ssh);
        shut_down(lab).await;
    });
}

#[test]
fn the_command_line_deploys_rolls_back_and_refuses_bad_input() {
    if skip() {
        return;
    }
    let exe = env!("CARGO_BIN_EXE_harness");
    run(async {
        let lab = lab("10.226.4.0/24", &["fox", "golf"]).await;
        let src = tempfile::tempdir().unwrap();
        let v1 = package_source(&lab, src.path(), "1.0.0", Variant::Good, &[]);
        let v2 = package_source(&lab, src.path(), "2.0.0", Variant::Good, &[]);
        let key = lab.key();
        let cli = |args: &[String]| {
            let out = std::process::Command::new(exe)
                .arg("deploy")
                .args(args)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let host_args = |pkg: &Path| -> Vec<String> {
            let mut a = vec![pkg.display().to_string()];
            for h in ["fox", "golf"] {
                a.extend(["--host".into(), format!("root@{}", lab.host(h).addr("lan"))]);
            }
            a.extend([
                "--identity".into(),
                key.display().to_string(),
                "--root".into(),
                ROOT.into(),
                "--env".into(),
                "KV_NOTE=cli".into(),
            ]);
            a
        };
        for pkg in [&v1, &v2] {
            let (code, stdout, stderr) = cli(&host_args(pkg));
            assert_eq!(code, Some(0), "{stdout}\n{stderr}");
            for h in ["fox", "golf"] {
                let ip = lab.host(h).addr("lan").to_string();
                assert!(
                    stdout
                        .lines()
                        .any(|l| l.contains(&ip) && l.contains("deployed")),
                    "no summary line for {ip}:\n{stdout}"
                );
                assert!(stderr.contains(&format!("root@{ip}: ")), "{stderr}");
            }
        }
        for h in ["fox", "golf"] {
            kv_round_trip(kv_addr(lab.host(h).addr("lan")), "k", "v2");
        }

        // --rollback on one host.
        let fox = format!("root@{}", lab.host("fox").addr("lan"));
        let args: Vec<String> = [
            "kv",
            "--rollback",
            "--host",
            &fox,
            "--identity",
            &key.display().to_string(),
            "--root",
            ROOT,
        ]
        .map(String::from)
        .to_vec();
        let (code, stdout, stderr) = cli(&args);
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        assert!(stdout.contains("kv-1.0.0"), "{stdout}");
        let ssh = lab.host("fox").launcher().await.unwrap();
        assert_eq!(running_releases(&ssh).await, ["kv-1.0.0"]);

        // A failing host: exit 1 and the host named; bad input: 125, nothing tried.
        let v3 = package_source(&lab, src.path(), "3.0.0", Variant::FailingStart, &[]);
        let (code, _, stderr) = cli(&host_args(&v3));
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&fox) && stderr.contains("rolled back"),
            "{stderr}"
        );
        let (code, _, stderr) = cli(&[
            src.path().join("nothing-here").display().to_string(),
            "--host".into(),
            fox.clone(),
        ]);
        assert_eq!(code, Some(125), "{stderr}");
        let (code, _, stderr) = cli(&[
            v1.display().to_string(),
            "--host".into(),
            fox.clone(),
            "--env".into(),
            "NOEQUALS".into(),
        ]);
        assert_eq!(code, Some(125), "{stderr}");

        // The smuggling archive: v1's tar without its end-of-archive blocks as one gzip
        // member, then a second member that `tar -xzf` on the host would read on into (a link
        // over a file harness writes as root, a setuid file, a new start.sh). Refused here, so
        // no host is touched.
        let before = on_host(&ssh).await;
        let work = tempfile::tempdir().unwrap();
        let sh = |script: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(work.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{script}: {out:?}");
        };
        sh(&format!(
            "tar -cf m1.tar -C {} . && mkdir -p two/scripts two/bin \
             && ln -s /etc/harness-victim two/.harness-sha256 \
             && printf '#!/bin/sh\\nid\\n' >two/bin/root-shell && chmod 4755 two/bin/root-shell \
             && printf '#!/bin/sh\\nexit 7\\n' >two/scripts/start.sh && chmod 755 two/scripts/start.sh \
             && tar -czf m2.tar.gz -C two .",
            v1.display()
        ));
        let mut m1 = std::fs::read(work.path().join("m1.tar")).unwrap();
        while m1.len() >= 512 && m1[m1.len() - 512..].iter().all(|b| *b == 0) {
            m1.truncate(m1.len() - 512);
        }
        std::fs::write(work.path().join("m1.tar"), &m1).unwrap();
        sh("gzip -c m1.tar >attack.tar.gz && cat m2.tar.gz >>attack.tar.gz");
        let attack = work.path().join("attack.tar.gz");
        let (code, stdout, stderr) = cli(&host_args(&attack));
        assert_eq!(code, Some(125), "{stdout}\n{stderr}");
        assert!(
            stderr.contains("its tar archive has no end-of-archive blocks"),
            "{stderr}"
        );
        assert_eq!(on_host(&ssh).await, before);

        for h in ["fox", "golf"] {
            let ssh = lab.host(h).launcher().await.unwrap();
            Installed::new(ROOT, "kv")
                .stop(&ssh, h, true)
                .await
                .unwrap();
            assert_eq!(running_releases(&ssh).await, Vec::<String>::new());
        }
        drop(ssh);
        shut_down(lab).await;
    });
}

#[test]
fn the_api_deploys_through_its_deployer_and_publishes_progress() {
    if skip() {
        return;
    }
    run(async {
        let lab = lab("10.226.5.0/24", &["hotel"]).await;
        let src = tempfile::tempdir().unwrap();
        let v1 = package_source(&lab, src.path(), "1.0.0", Variant::Good, &[]);
        let registry = harness::registry::Registry::new();
        let deployer = SshDeployer::new([("hotel", deploy_host(&lab, "hotel"))]).with_root(ROOT);
        let server = harness::api::WsServer::builder(registry.clone())
            .with_deployer(Arc::new(deployer))
            .bind("127.0.0.1:0")
            .await
            .unwrap()
            .start()
            .unwrap();
        let mut client = Client::connect(server.local_addr()).await;
        client
            .ok(
                "subscribe",
                serde_json::json!({"events": ["deployment_progress"]}),
            )
            .await;
        let deployed = client
            .ok(
                "deploy_package",
                serde_json::json!({
                    "package": v1.display().to_string(),
                    "host": "hotel",
                    // Named, so that the progress events (which the server labels before the
                    // package is read) carry the service's name rather than the path.
                    "service": "kv",
                    "options": {"env": {"KV_NOTE": "api"}}
                }),
            )
            .await;
        assert_eq!(
            deployed["deployment"],
            serde_json::json!({
                "service": "kv", "host": "hotel", "version": "1.0.0",
                "install_path": format!("{ROOT}/kv/releases/kv-1.0.0")
            })
        );
        let mut stages = Vec::new();
        let mut percents = Vec::new();
        loop {
            let e = client.event().await;
            assert_eq!(e["action"], "deployment_progress");
            assert_eq!(e["params"]["host"], "hotel");
            assert_eq!(e["params"]["service"], "kv");
            let stage = e["params"]["stage"].as_str().unwrap().to_string();
            percents.push(e["params"]["percent"].as_u64().unwrap());
            let last = stage == "done";
            if stages.last() != Some(&stage) {
                stages.push(stage);
            }
            if last {
                break;
            }
        }
        assert_eq!(
            stages,
            [
                "verify", "connect", "check", "upload", "extract", "switch", "start", "health",
                "done"
            ]
        );
        assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
        assert_eq!(percents.last(), Some(&100));
        kv_round_trip(kv_addr(lab.host("hotel").addr("lan")), "k", "api");

        // v2, then `rollback: true` switches back to v1.
        let v2 = package_source(&lab, src.path(), "2.0.0", Variant::Good, &[]);
        let params = serde_json::json!({"package": v2.display().to_string(), "service": "kv"});
        assert_eq!(
            client.ok("deploy_package", params).await["deployment"]["version"],
            "2.0.0"
        );
        let rolled = client
            .ok(
                "deploy_package",
                serde_json::json!({"package": "kv", "service": "kv", "options": {"rollback": true}}),
            )
            .await;
        assert_eq!(rolled["deployment"]["version"], "kv-1.0.0");
        let ssh = lab.host("hotel").launcher().await.unwrap();
        assert_eq!(running_releases(&ssh).await, ["kv-1.0.0"]);

        // An unknown host is refused with the known ones listed.
        let refused = client
            .err(
                "deploy_package",
                serde_json::json!({"package": v1.display().to_string(), "host": "nowhere"}),
            )
            .await;
        assert_eq!(refused["code"], "action_failed");
        assert!(
            refused["message"].as_str().unwrap().contains("hotel"),
            "{refused}"
        );
        client.close().await;
        server.shutdown().expect("the server stops");

        Installed::new(ROOT, "kv")
            .stop(&ssh, "hotel", true)
            .await
            .unwrap();
        assert_eq!(running_releases(&ssh).await, Vec::<String>::new());
        drop(ssh);
        shut_down(lab).await;
    });
}
