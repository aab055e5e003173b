//! `harness::lab` against the real thing: network namespaces, bridges, `unshare` and one sshd
//! per host, reached with `SshLauncher`.
//!
//! Needs root, `ip netns`, `unshare` and openssh-server. Without them each test prints why and
//! passes, unless `HARNESS_REQUIRE_LAB=1` (CI), where that is a failure. Every test ends by
//! checking that nothing of its labs is left: namespaces, links, processes, directories.

#[path = "support/lab.rs"]
mod lab_support;
#[expect(dead_code, reason = "this suite uses only the deadline helpers")]
#[path = "support/local.rs"]
mod local_support;

use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::exec::{Command, Launcher, LocalLauncher, Output, SshLauncher};
use harness::lab::{Lab, LabError, leftovers};
use local_support::run;

/// Set in the child process of `killed_owner_is_swept`, which builds a lab and waits to be
/// killed.
const CHILD_ENV: &str = "HARNESS_LAB_TEST_CHILD";

type Ssh = SshLauncher<LocalLauncher>;

/// Why a lab cannot run here, if it cannot (see [`lab_support::skip_without_lab`]).
fn skip() -> bool {
    lab_support::skip_without_lab(&[])
}

async fn sh(ssh: &Ssh, script: &str) -> Output {
    ssh.output(&Command::new("sh").args(["-c", script]))
        .await
        .unwrap_or_else(|e| panic!("failed to run `{script}` on {}: {e}", ssh.host()))
}

async fn connect(lab: &Lab, host: &str) -> Ssh {
    lab.host(host)
        .launcher()
        .await
        .unwrap_or_else(|e| panic!("failed to connect to host `{host}`: {e}"))
}

/// Shuts `lab` down and checks that nothing of it is left, by name and by pid.
async fn shut_down(lab: Lab) {
    let prefix = lab.prefix().to_string();
    let pids: Vec<u32> = lab.hosts().map(|h| h.pid()).collect();
    lab_support::shut_down(lab).await;
    for pid in pids {
        assert!(!alive(pid), "host process {pid} of lab {prefix} still runs");
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

#[test]
fn lan_hosts_reach_each_other_but_not_the_wan() {
    if skip() {
        return;
    }
    run(async {
        let started = Instant::now();
        let lab = Lab::builder()
            .network("lan", "10.213.1.0/24")
            .network("wan", "10.213.2.0/24")
            .host("alpha", &["lan"])
            .host("beta", &["lan"])
            .host("remote", &["wan"])
            .host("border", &["lan", "wan"])
            .build()
            .await
            .expect("the lab builds");
        eprintln!("built 4 hosts in {:?}", started.elapsed());
        let alpha = connect(&lab, "alpha").await;
        let beta = connect(&lab, "beta").await;
        let remote = connect(&lab, "remote").await;

        for (name, ssh) in [("alpha", &alpha), ("beta", &beta), ("remote", &remote)] {
            // UTS namespace: its own hostname. PID namespace: sshd is PID 1, and the host
            // sees only its own processes (sshd, the session, the command).
            let out = sh(ssh, "hostname; cat /proc/1/comm; ps -e -o pid= | wc -l").await;
            assert!(out.success(), "{name}: {out:?}");
            assert_eq!(
                out.stdout[..2],
                [name.to_string(), "sshd".to_string()],
                "{name}"
            );
            let processes: u32 = out.stdout[2].trim().parse().unwrap();
            assert!(
                processes < 20,
                "{name} sees {processes} processes: not its own PID namespace"
            );
        }

        // LAN to LAN works; LAN to WAN has no route.
        let beta_addr = lab.host("beta").addr("lan");
        let remote_addr = lab.host("remote").addr("wan");
        let out = sh(
            &alpha,
            &format!("nc -z -w 3 {beta_addr} 22 && echo reached"),
        )
        .await;
        assert_eq!(out.stdout, ["reached"], "alpha to beta: {out:?}");
        let out = sh(
            &alpha,
            &format!("nc -z -w 3 {remote_addr} 22 && echo reached || echo unreachable"),
        )
        .await;
        assert_eq!(out.stdout, ["unreachable"], "alpha to remote: {out:?}");
        // A host on both networks reaches both, through eth0 and eth1.
        let border = connect(&lab, "border").await;
        let out = sh(
            &border,
            &format!("nc -z -w 3 {beta_addr} 22 && nc -z -w 3 {remote_addr} 22 && echo both"),
        )
        .await;
        assert_eq!(out.stdout, ["both"], "border to beta and remote: {out:?}");
        drop(border);
        let out = sh(&alpha, "ip -4 route").await;
        assert!(
            out.stdout.iter().all(|r| r.starts_with("10.213.1.0/24")),
            "alpha has only its LAN route: {:?}",
            out.stdout
        );

        // The test machine reaches every host (it joins each network).
        for host in lab.hosts() {
            TcpStream::connect_timeout(&host.ssh_addr(), Duration::from_secs(3)).unwrap_or_else(
                |e| panic!("connect to {} at {}: {e}", host.name(), host.ssh_addr()),
            );
        }

        // Every host reaches the test machine at its network's gateway address.
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        for (name, ssh, net) in [("alpha", &alpha, "lan"), ("remote", &remote, "wan")] {
            let gateway = lab.network(net).unwrap().gateway();
            let out = sh(ssh, &format!("nc -z -w 3 {gateway} {port} && echo reached")).await;
            assert_eq!(
                out.stdout,
                ["reached"],
                "{name} to the test machine: {out:?}"
            );
        }
        drop(listener);

        // Mount namespace: /tmp and /root are each host's own.
        let marker = format!("lab-marker-{}", lab.prefix());
        let out = sh(
            &alpha,
            &format!("touch /tmp/{marker} /root/{marker} && echo ok"),
        )
        .await;
        assert_eq!(out.stdout, ["ok"], "{out:?}");
        let out = sh(
            &beta,
            &format!("ls /tmp/{marker} /root/{marker} 2>/dev/null | wc -l"),
        )
        .await;
        assert_eq!(out.stdout, ["0"], "beta sees alpha's files");
        assert!(!std::path::Path::new(&format!("/tmp/{marker}")).exists());

        drop((alpha, beta, remote));
        let stopping = Instant::now();
        shut_down(lab).await;
        eprintln!("shut down and checked in {:?}", stopping.elapsed());
    });
}

#[test]
fn two_labs_run_at_once() {
    if skip() {
        return;
    }
    run(async {
        let build = |subnet: &'static str| {
            Lab::builder()
                .network("lan", subnet)
                .host("node", &["lan"])
                .build()
        };
        let (one, two) = futures_lite::future::zip(build("10.213.3.0/24"), build("auto")).await;
        let (one, two) = (one.expect("lab one builds"), two.expect("lab two builds"));
        assert_ne!(one.prefix(), two.prefix());
        // `auto` chose a free /24 of 10.231.0.0/16.
        let auto = two.network("lan").unwrap().subnet().to_string();
        assert!(
            auto.starts_with("10.231.") && auto.ends_with(".0/24"),
            "{auto}"
        );
        assert_ne!(one.host("node").namespace(), two.host("node").namespace());

        for lab in [&one, &two] {
            let ssh = connect(lab, "node").await;
            let out = sh(
                &ssh,
                "hostname; ip -4 -o addr show dev eth0 | awk '{print $4}'",
            )
            .await;
            let addr = format!("{}/24", lab.host("node").addr("lan"));
            assert_eq!(
                out.stdout,
                ["node".to_string(), addr],
                "lab {}",
                lab.prefix()
            );
        }

        // Nothing connects the two labs.
        let ssh = connect(&one, "node").await;
        let other = two.host("node").addr("lan");
        let out = sh(
            &ssh,
            &format!("nc -z -w 3 {other} 22 && echo reached || echo unreachable"),
        )
        .await;
        assert_eq!(out.stdout, ["unreachable"], "lab one to lab two: {out:?}");
        drop(ssh);

        // A third lab on a subnet that one of them routes is refused, naming the route.
        let err = build("10.213.3.0/24")
            .await
            .expect_err("a subnet in use is refused");
        assert!(matches!(err, LabError::SubnetInUse { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("{}-0", one.prefix())),
            "{err}"
        );

        // Another `auto` network, while lab two holds the first free one, gets the next.
        let three = build("auto").await.expect("lab three builds");
        let third = three.network("lan").unwrap().subnet().to_string();
        assert!(
            third.starts_with("10.231.") && third != auto,
            "{third}, {auto}"
        );
        shut_down(three).await;

        shut_down(one).await;
        shut_down(two).await;
    });
}

#[test]
fn a_dropped_lab_leaves_nothing() {
    if skip() {
        return;
    }
    run(async {
        let lab = Lab::builder()
            .network("lan", "10.213.5.0/24")
            .host("solo", &["lan"])
            .build()
            .await
            .expect("the lab builds");
        let prefix = lab.prefix().to_string();
        let pid = lab.host("solo").pid();
        assert!(alive(pid));
        assert!(!leftovers(&prefix).is_empty(), "a running lab is visible");
        drop(lab);
        assert_eq!(leftovers(&prefix), Vec::<String>::new());
        assert!(!alive(pid));
    });
}

/// Kills the child when dropped, so a failing test leaves no child behind.
#[test]
fn killed_owner_is_swept() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child: build a lab, say its prefix, and wait to be killed.
        run(async {
            let lab = Lab::builder()
                .network("lan", "10.213.6.0/24")
                .host("orphan", &["lan"])
                .build()
                .await
                .expect("the child's lab builds");
            let pid = lab.host("orphan").pid();
            println!("LAB {} {pid}", lab.prefix());
            smol::Timer::after(local_support::TEST_DEADLINE).await;
            drop(lab);
        });
        return;
    }
    if skip() {
        return;
    }
    let (mut child, said) = lab_support::rerun_as_child("killed_owner_is_swept", CHILD_ENV, "LAB");
    let (prefix, host_pid) = said.split_once(' ').unwrap();
    let (prefix, host_pid) = (prefix.to_string(), host_pid.parse::<u32>().unwrap());
    assert!(!leftovers(&prefix).is_empty(), "the child's lab runs");

    // SIGKILL: no destructor, no teardown. The host dies with its owner (PDEATHSIG), but its
    // namespaces, links and directory stay until a sweep.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let start = Instant::now();
    while alive(host_pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "host {host_pid} outlives its owner"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("left by the killed owner: {:?}", leftovers(&prefix));

    run(async {
        let lab = Lab::builder()
            .network("lan", "10.213.7.0/24")
            .host("sweeper", &["lan"])
            .build()
            .await
            .expect("the sweeping lab builds");
        assert_eq!(
            leftovers(&prefix),
            Vec::<String>::new(),
            "the dead lab is swept"
        );
        shut_down(lab).await;
    });
}

#[test]
fn bad_declarations_are_refused_before_anything_is_created() {
    let cases: [(harness::lab::LabBuilder, &str); 5] = [
        (
            Lab::builder()
                .network("lan", "10.213.8.0/24")
                .host("a", &["wan"]),
            "attach host `a` to network `wan`: no such network (declared: lan)",
        ),
        (
            Lab::builder()
                .network("lan", "10.213.8.0/24")
                .host("Bad_Name", &["lan"]),
            "use host name `Bad_Name`",
        ),
        (
            Lab::builder()
                .network("lan", "10.213.8.1/24")
                .host("a", &["lan"]),
            "use subnet `10.213.8.1/24` for network `lan`: host bits are set",
        ),
        (
            Lab::builder()
                .network("tiny", "10.213.8.0/30")
                .host("a", &["tiny"])
                .host("b", &["tiny"]),
            "no address left for host `b`",
        ),
        (
            Lab::builder()
                .network("lan", "10.213.8.0/24")
                .host("a", &[]),
            "attached to no network",
        ),
    ];
    for (builder, expected) in cases {
        let err = run(builder.build()).expect_err(expected);
        assert!(
            err.to_string().contains(expected),
            "got: {err}\nwanted: {expected}"
        );
    }
}

/// `pid start-time` of this process, as a lab's `owner` file holds it.
fn own_owner_token() -> String {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let start = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    format!("{} {start}", std::process::id())
}

/// Removes by hand what `sweep_removes_only_labs_whose_owner_is_dead` made, whatever happened.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let registry = std::path::Path::new(harness::lab::REGISTRY_DIR);
        for prefix in &self.0 {
            let quiet = |args: &[&str]| {
                let _ = std::process::Command::new("ip")
                    .args(args)
                    .stderr(Stdio::null())
                    .status();
            };
            quiet(&["netns", "del", &format!("{prefix}-host")]);
            quiet(&["link", "del", &format!("{prefix}-0")]);
            let _ = std::fs::remove_dir_all(registry.join(prefix));
            let _ = std::fs::remove_dir_all(registry.join(format!(".{prefix}")));
        }
    }
}

/// Leaves a lab's traces by hand (a directory with an owner file, a namespace, a root link),
/// as a killed owner would, and checks that `sweep` removes them only when the owner is dead.
#[test]
fn sweep_removes_only_labs_whose_owner_is_dead() {
    if skip() {
        return;
    }
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    // Not hex after `hx`: no real lab takes these prefixes.
    let dead = format!("hxz{}", std::process::id() % 1000);
    let live = format!("hxy{}", std::process::id() % 1000);
    let registry = std::path::Path::new(harness::lab::REGISTRY_DIR);
    let _cleanup = Cleanup(vec![dead.clone(), live.clone()]);
    // The namespace and links first, the registry entry last: labs built by other tests sweep
    // too, and must find the dead lab whole.
    ip(&["netns", "add", &format!("{dead}-host")]);
    ip(&[
        "link",
        "add",
        &format!("{dead}-0"),
        "type",
        "veth",
        "peer",
        "name",
        &format!("{dead}-1"),
    ]);
    // A pid that is no longer ours: a finished child, with a start time that cannot match.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    for (prefix, owner) in [
        (&dead, format!("{} 1", gone.id())),
        (&live, own_owner_token()),
    ] {
        // Written under a hidden name, which sweeps skip, then renamed in one step.
        let staging = registry.join(format!(".{prefix}"));
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("owner"), owner).unwrap();
        std::fs::rename(&staging, registry.join(prefix)).unwrap();
    }

    harness::lab::sweep();
    let live_left = leftovers(&live);
    std::fs::remove_dir_all(registry.join(&live)).unwrap();
    assert_eq!(
        live_left.len(),
        1,
        "the live lab's directory stays: {live_left:?}"
    );
    assert_eq!(leftovers(&dead), Vec::<String>::new());
}
