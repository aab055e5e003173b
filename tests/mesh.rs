//! `harness::network`'s WireGuard mesh against the real thing: `wireguard-go` on the test
//! machine and on lab hosts (network namespaces with an sshd each), TCP through the tunnels.
//!
//! Needs root, `ip netns`, sshd, `wg`, `wireguard-go` and busybox (its `nc` serves and fetches
//! on the hosts). Without them each test prints why and passes, unless
//! `HARNESS_REQUIRE_LAB=1` (CI), where that is a failure. Every test checks that nothing of its
//! meshes is left: interfaces, sockets, `wireguard-go` processes, registry directories.

#[path = "support/lab.rs"]
mod lab_support;
#[expect(dead_code, reason = "this suite uses only the deadline helpers")]
#[path = "support/local.rs"]
mod local_support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::exec::{Command, Launcher, LocalLauncher, Output, SshLauncher};
use harness::lab::Lab;
use harness::network::{
    LOCAL_NODE, Mesh, MeshError, MeshNode, PrivateKey, PublicKey, Route, mesh_leftovers,
};
use local_support::run;

/// The port each host serves its hostname on, through `busybox nc`.
const NAME_PORT: u16 = 7000;
/// How long a connection that should succeed is given (a handshake may be under way).
const REACH_WAIT: Duration = Duration::from_secs(5);
/// How long a connection attempt that should fail is given.
const CUT_WAIT: Duration = Duration::from_secs(1);
/// Set in the child process of `killed_owner_is_swept`, which starts a mesh and waits to be
/// killed.
const CHILD_ENV: &str = "HARNESS_MESH_TEST_CHILD";

type Ssh = SshLauncher<LocalLauncher>;

fn skip() -> bool {
    lab_support::skip_without_lab(&["/usr/bin/wg", "/usr/bin/wireguard-go", "/bin/busybox"])
}

async fn sh(ssh: &Ssh, script: &str) -> Output {
    ssh.output(&Command::new("sh").args(["-c", script]))
        .await
        .unwrap_or_else(|e| panic!("failed to run `{script}` on {}: {e}", ssh.host()))
}

/// What `host` gets when it connects to `addr`:`port` over TCP: the peer's name, or `None`.
async fn fetch_from(ssh: &Ssh, addr: IpAddr, port: u16, wait: Duration) -> Option<String> {
    let wait = wait.as_secs();
    let out = sh(
        ssh,
        &format!("busybox nc -w {wait} {addr} {port} </dev/null"),
    )
    .await;
    let text = out.stdout_text();
    (out.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// What the test machine gets from `addr`:`port`, or `None` if it cannot connect within
/// `wait`. Refused connections are tried again until then: on a loaded machine the far end's
/// server may not listen yet, or the first handshake may still be on its way.
fn fetch_here(addr: Ipv4Addr, port: u16, wait: Duration) -> Option<String> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        if let Ok(mut stream) = TcpStream::connect_timeout(&SocketAddr::from((addr, port)), left) {
            stream.set_read_timeout(Some(REACH_WAIT)).ok()?;
            let mut text = String::new();
            stream.read_to_string(&mut text).ok()?;
            return Some(text.trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Serves `name` to every TCP connection on `addr` (the test machine's mesh address), until
/// the process ends.
fn serve_here(addr: Ipv4Addr, name: &'static str) -> u16 {
    let listener = TcpListener::bind((addr, 0)).expect("bind on the mesh address");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(format!("{name}\n").as_bytes());
        }
    });
    port
}

fn wireguard_go_count(prefix: &str) -> usize {
    mesh_leftovers(prefix)
        .iter()
        .filter(|l| l.starts_with("wireguard-go"))
        .count()
}

#[test]
fn keys_match_wg_and_bad_requests_are_refused() {
    if skip() {
        return;
    }
    // Our public key of our private key, and of one `wg genkey` made, match `wg pubkey`.
    let ours = PrivateKey::generate().unwrap();
    let theirs = std::process::Command::new("wg")
        .arg("genkey")
        .output()
        .unwrap();
    let theirs = PrivateKey::from_base64(&String::from_utf8(theirs.stdout).unwrap()).unwrap();
    for key in [ours, theirs] {
        let mut wg = std::process::Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = wg.stdin.take().unwrap();
        writeln!(stdin, "{}", key.to_base64()).unwrap();
        drop(stdin);
        let out = wg.wait_with_output().unwrap();
        assert!(out.status.success());
        let expected = PublicKey::from_base64(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert_eq!(key.public_key(), expected);
    }

    run(async {
        let err = Mesh::builder()
            .subnet("10.219.9.1/24")
            .start()
            .await
            .unwrap_err();
        assert!(
            matches!(err, MeshError::InvalidSubnet { .. }) && err.to_string().contains("host bits"),
            "{err}"
        );

        // A /30 has two addresses: the test machine's and one more. A second node is refused
        // before anything is created for either.
        let mut mesh = Mesh::builder()
            .subnet("10.219.9.0/30")
            .start()
            .await
            .unwrap();
        let prefix = mesh.interface().to_string();
        assert_eq!(mesh.local_addr(), Ipv4Addr::new(10, 219, 9, 1));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let node = |name: &str| MeshNode::new(name, LocalLauncher).at("net", ip);
        let err = mesh.add_all(vec![node("a"), node("b")]).await.unwrap_err();
        assert!(
            matches!(&err, MeshError::SubnetExhausted { node, .. } if node == "b"),
            "{err}"
        );
        let err = mesh.add_all(vec![node("a"), node("a")]).await.unwrap_err();
        assert!(
            matches!(&err, MeshError::DuplicateNode(n) if n == "a"),
            "{err}"
        );
        let err = mesh
            .add(MeshNode::new("c", LocalLauncher))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, MeshError::NoUnderlay(n) if n == "c"),
            "{err}"
        );
        let err = mesh.remove("nobody").await.unwrap_err();
        assert!(err.to_string().contains("nodes: local"), "{err}");
        assert_eq!(mesh.nodes().collect::<Vec<_>>(), [LOCAL_NODE]);

        // A second mesh on the same subnet would take the first one's routes.
        let err = Mesh::builder()
            .subnet("10.219.9.0/30")
            .start()
            .await
            .unwrap_err();
        assert!(matches!(err, MeshError::SubnetInUse { .. }), "{err}");

        // On a subnet of its own, a second mesh runs beside the first; dropped without
        // `shutdown`, it leaves nothing either.
        let second = Mesh::builder()
            .subnet("10.219.8.0/30")
            .start()
            .await
            .unwrap();
        let second_prefix = second.interface().to_string();
        assert_ne!(second_prefix, prefix);
        assert_ne!(second.listen_port(LOCAL_NODE), mesh.listen_port(LOCAL_NODE));
        assert_eq!(wireguard_go_count(&second_prefix), 1);
        drop(second);
        assert_eq!(mesh_leftovers(&second_prefix), Vec::<String>::new());

        assert_eq!(
            wireguard_go_count(&prefix),
            1,
            "{:?}",
            mesh_leftovers(&prefix)
        );
        mesh.shutdown().await.expect("the mesh shuts down cleanly");
        assert_eq!(mesh_leftovers(&prefix), Vec::<String>::new());
    });
}

#[test]
fn lan_and_wan_hosts_talk_over_the_mesh_until_removed_or_revoked() {
    if skip() {
        return;
    }
    run(async {
        // LAN hosts cannot reach the WAN; `edge` is on both, and relays for the mesh.
        let lab = Lab::builder()
            .network("lan", "10.218.1.0/24")
            .network("wan", "10.218.2.0/24")
            .host("lan-a", &["lan"])
            .host("lan-b", &["lan"])
            .host("wan-c", &["wan"])
            .host("edge", &["lan", "wan"])
            .build()
            .await
            .expect("the lab builds");
        let hosts = ["lan-a", "lan-b", "wan-c", "edge"];
        let mut ssh = Vec::new();
        let mut servers = Vec::new();
        for host in hosts {
            let s = lab.host(host).launcher().await.unwrap();
            let server = Command::new("busybox").args([
                "nc",
                "-ll",
                "-p",
                &NAME_PORT.to_string(),
                "-e",
                "hostname",
            ]);
            servers.push(s.spawn(&server).await.unwrap());
            ssh.push(s);
        }
        // The underlay as the lab makes it: no way from the LAN host to the WAN host.
        let wan_c = lab.host("wan-c").addr("wan");
        assert_eq!(fetch_from(&ssh[0], wan_c, NAME_PORT, CUT_WAIT).await, None);

        let mut mesh = Mesh::builder()
            .subnet("10.219.1.0/24")
            .lab(&lab)
            .start()
            .await
            .expect("the mesh starts");
        let prefix = mesh.interface().to_string();
        let mut nodes = Vec::new();
        for host in hosts {
            let node = MeshNode::lab_host(&lab, host).await.unwrap();
            nodes.push(node.relay(host == "edge"));
        }
        let started = Instant::now();
        let addrs = mesh.add_all(nodes).await.expect("the nodes join");
        eprintln!("4 nodes joined in {:?}", started.elapsed());
        assert_eq!(mesh.local_addr(), Ipv4Addr::new(10, 219, 1, 1));
        assert_eq!(
            addrs,
            (2..=5)
                .map(|n| Ipv4Addr::new(10, 219, 1, n))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            mesh.route("lan-a", "wan-c").unwrap(),
            Route::Via("edge".into())
        );
        assert_eq!(mesh.route("lan-a", "lan-b").unwrap(), Route::Direct);
        assert_eq!(mesh.route(LOCAL_NODE, "wan-c").unwrap(), Route::Direct);
        assert_eq!(wireguard_go_count(&prefix), 5);

        // Every pair, over mesh addresses: the test machine to each host, each host to the
        // test machine and to every other host (the LAN hosts and the WAN host via `edge`).
        let local_port = serve_here(mesh.local_addr(), "local");
        for (i, host) in hosts.iter().enumerate() {
            assert_eq!(
                fetch_here(addrs[i], NAME_PORT, REACH_WAIT).as_deref(),
                Some(*host)
            );
            let got = fetch_from(
                &ssh[i],
                IpAddr::V4(mesh.local_addr()),
                local_port,
                REACH_WAIT,
            )
            .await;
            assert_eq!(got.as_deref(), Some("local"), "{host} to the test machine");
            for (j, other) in hosts.iter().enumerate() {
                if i != j {
                    let got =
                        fetch_from(&ssh[i], IpAddr::V4(addrs[j]), NAME_PORT, REACH_WAIT).await;
                    assert_eq!(got.as_deref(), Some(*other), "{host} to {other}");
                }
            }
        }

        // A node that leaves is no one's peer any more, and its wireguard-go is gone.
        let lan_b_key = mesh.public_key("lan-b").unwrap().to_base64();
        mesh.remove("lan-b").await.expect("lan-b leaves");
        let peers = sh(&ssh[0], &format!("wg show {prefix} peers")).await;
        assert!(peers.success(), "{}", peers.stderr_text());
        assert!(!peers.stdout.contains(&lan_b_key), "{:?}", peers.stdout);
        assert_eq!(peers.stdout.len(), 2, "local and edge: {:?}", peers.stdout);
        assert_eq!(wireguard_go_count(&prefix), 4);
        assert_eq!(fetch_here(addrs[1], NAME_PORT, CUT_WAIT), None);

        // Revoking wan-c cuts it off at once, both ways, though its own interface still
        // lists its peers: the others dropped its key.
        let revoked = mesh.public_key("wan-c").unwrap().to_base64();
        assert_eq!(
            fetch_here(addrs[2], NAME_PORT, REACH_WAIT).as_deref(),
            Some("wan-c")
        );
        mesh.revoke("wan-c").await.expect("wan-c is revoked");
        assert_eq!(
            fetch_here(addrs[2], NAME_PORT, CUT_WAIT),
            None,
            "after revocation"
        );
        let back = fetch_from(&ssh[2], IpAddr::V4(mesh.local_addr()), local_port, CUT_WAIT).await;
        assert_eq!(back, None, "wan-c to the test machine after revocation");
        let to_edge = fetch_from(&ssh[2], IpAddr::V4(addrs[3]), NAME_PORT, CUT_WAIT).await;
        assert_eq!(to_edge, None, "wan-c to edge after revocation");
        let own = sh(&ssh[2], &format!("wg show {prefix} peers")).await;
        assert!(!own.stdout.is_empty(), "wan-c still has its peers");
        let edge_peers = sh(&ssh[3], &format!("wg show {prefix} peers")).await;
        assert!(!edge_peers.stdout.contains(&revoked));
        // The rest of the mesh still works.
        assert_eq!(
            fetch_here(addrs[0], NAME_PORT, REACH_WAIT).as_deref(),
            Some("lan-a")
        );
        let got = fetch_from(&ssh[0], IpAddr::V4(addrs[3]), NAME_PORT, REACH_WAIT).await;
        assert_eq!(got.as_deref(), Some("edge"));

        let started = Instant::now();
        mesh.shutdown().await.expect("the mesh shuts down cleanly");
        eprintln!("shut down in {:?}", started.elapsed());
        assert_eq!(mesh_leftovers(&prefix), Vec::<String>::new());
        for s in ssh.iter().take(3) {
            let script = format!("ip link show {prefix} 2>/dev/null; ls /run/wireguard");
            let left = sh(s, &script).await;
            assert!(left.stdout.is_empty(), "{}: {:?}", s.host(), left.stdout);
        }
        drop(servers);
        drop(ssh);
        lab.shutdown().await.expect("the lab shuts down");
    });
}

/// Kills the child when dropped, so a failing test leaves no child behind.
#[test]
fn killed_owner_is_swept() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child: start a mesh with one lab host, say its prefix, wait to be killed.
        run(async {
            let lab = Lab::builder()
                .network("lan", "10.218.5.0/24")
                .host("orphan", &["lan"])
                .build()
                .await
                .expect("the child's lab builds");
            let mut mesh = Mesh::builder()
                .subnet("10.219.5.0/24")
                .lab(&lab)
                .start()
                .await
                .expect("the child's mesh starts");
            mesh.add(MeshNode::lab_host(&lab, "orphan").await.unwrap())
                .await
                .expect("the orphan joins");
            println!("MESH {}", mesh.interface());
            smol::Timer::after(local_support::TEST_DEADLINE).await;
            drop(mesh);
        });
        return;
    }
    if skip() {
        return;
    }
    let (mut child, prefix) =
        lab_support::rerun_as_child("killed_owner_is_swept", CHILD_ENV, "MESH");
    assert_eq!(
        wireguard_go_count(&prefix),
        2,
        "{:?}",
        mesh_leftovers(&prefix)
    );

    // SIGKILL: no destructor runs. Both wireguard-go die (the local one by PDEATHSIG, the
    // host's with its host) and take their interfaces; the socket and registry entry stay.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let start = Instant::now();
    while wireguard_go_count(&prefix) > 0 || Path::new("/sys/class/net").join(&prefix).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?} outlive their owner",
            mesh_leftovers(&prefix)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = mesh_leftovers(&prefix);
    eprintln!("left by the killed owner: {left:?}");
    assert!(!left.is_empty(), "the registry entry stays until a sweep");

    run(async {
        let mesh = Mesh::builder()
            .subnet("10.219.6.0/24")
            .start()
            .await
            .unwrap();
        assert_ne!(mesh.interface(), prefix);
        assert_eq!(mesh_leftovers(&prefix), Vec::<String>::new(), "swept");
        mesh.shutdown().await.unwrap();
    });
    // The child's lab, too.
    harness::lab::sweep();
}
