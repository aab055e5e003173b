//! The WireGuard mesh's figures, each next to a baseline measured in the same run:
//!
//! - bring-up of a mesh of the test machine and 3, then 10, lab hosts (start, every node
//!   joined, then every pair of nodes reachable over mesh addresses, checked with one ping per
//!   pair), next to the time the lab itself took to build;
//! - TCP throughput from the test machine to a lab host through the mesh (wireguard-go at both
//!   ends), next to the direct link between the same two endpoints: the same bytes, the same
//!   receiver (`busybox nc`), only the destination address differs.
//!
//! ```text
//! cargo bench --bench mesh
//! ```
//!
//! Needs root, `ip netns`, sshd, `wg`, `wireguard-go` and busybox, as `tests/mesh.rs` does.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use harness::exec::{Command, Launcher, LocalLauncher, SshLauncher};
use harness::lab::Lab;
use harness::network::{Mesh, MeshNode};

/// Bytes sent per throughput run.
const PAYLOAD: usize = 200 * 1024 * 1024;
const RECEIVER_PORT: u16 = 7001;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    smol::block_on(async {
        for (i, hosts) in [3usize, 10].into_iter().enumerate() {
            bring_up(i as u8, hosts).await?;
        }
        throughput().await
    })
}

/// Builds a lab of `hosts` hosts on one network, then a mesh of all of them, and reports both.
async fn bring_up(run: u8, hosts: usize) -> Result<(), Error> {
    let names: Vec<String> = (0..hosts).map(|i| format!("n{i}")).collect();
    let mut builder = Lab::builder().network("lan", format!("10.220.{run}.0/24"));
    for name in &names {
        builder = builder.host(name, &["lan"]);
    }
    let started = Instant::now();
    let lab = builder.build().await?;
    let lab_time = started.elapsed();
    let mut launchers = Vec::new();
    for name in &names {
        launchers.push(lab.host(name).launcher().await?);
    }

    let started = Instant::now();
    let mut mesh = Mesh::builder()
        .subnet(format!("10.221.{run}.0/24"))
        .lab(&lab)
        .start()
        .await?;
    let nodes = names
        .iter()
        .zip(&launchers)
        .map(|(name, ssh)| {
            let mut node = MeshNode::new(name, ssh.clone());
            node = node.at("lan", lab.host(name).addr("lan"));
            node
        })
        .collect();
    let addrs = mesh.add_all(nodes).await?;
    let joined = started.elapsed();
    let mut all: Vec<Ipv4Addr> = addrs.clone();
    all.push(mesh.local_addr());
    // Every node pings every other node (and the test machine), all at once.
    let probes = launchers.iter().zip(&addrs).map(|(ssh, own)| {
        let targets: Vec<String> = all
            .iter()
            .filter(|a| *a != own)
            .map(|a| a.to_string())
            .collect();
        let script = format!(
            "for a in {}; do (busybox ping -c 1 -W 5 $a >/dev/null || echo unreachable $a) & done; wait",
            targets.join(" ")
        );
        let ssh = ssh.clone();
        smol::spawn(async move { ssh.output(&Command::new("sh").args(["-c", &script])).await })
    });
    let probes: Vec<_> = probes.collect();
    for (probe, name) in probes.into_iter().zip(&names) {
        let out = probe.await?;
        if !out.stdout.is_empty() || !out.success() {
            return Err(format!("from {name}: {:?} {}", out.stdout, out.stderr_text()).into());
        }
    }
    let reachable = started.elapsed();

    let started = Instant::now();
    mesh.shutdown().await?;
    let down = started.elapsed();
    drop(launchers);
    lab.shutdown().await?;

    println!("mesh of the test machine and {hosts} lab hosts:");
    println!("  lab build (baseline)       {}", ms(lab_time));
    println!("  mesh start to all joined   {}", ms(joined));
    println!("  mesh start to all pairs up {}", ms(reachable));
    println!("  mesh shutdown              {}", ms(down));
    println!(
        "  mesh bring-up / lab build: {:.2}x",
        reachable.as_secs_f64() / lab_time.as_secs_f64()
    );
    Ok(())
}

/// Sends [`PAYLOAD`] bytes from the test machine to one lab host, over the direct link and
/// through the mesh, to the same receiver.
async fn throughput() -> Result<(), Error> {
    let lab = Lab::builder()
        .network("lan", "10.220.9.0/24")
        .host("sink", &["lan"])
        .build()
        .await?;
    let ssh = lab.host("sink").launcher().await?;
    let mut mesh = Mesh::builder()
        .subnet("10.221.9.0/24")
        .lab(&lab)
        .start()
        .await?;
    let mesh_addr = mesh.add(MeshNode::lab_host(&lab, "sink").await?).await?;
    let direct_addr = lab.host("sink").addr("lan");

    let direct = send(&ssh, direct_addr).await?;
    let tunnel = send(&ssh, IpAddr::V4(mesh_addr)).await?;
    mesh.shutdown().await?;
    drop(ssh);
    lab.shutdown().await?;

    let mb = PAYLOAD as f64 / 1e6;
    let rate = |d: Duration| mb * 8.0 / d.as_secs_f64();
    println!(
        "TCP, {} MiB from the test machine to a lab host:",
        PAYLOAD >> 20
    );
    println!(
        "  direct link (baseline) {} ({:.0} Mbit/s)",
        ms(direct),
        rate(direct)
    );
    println!(
        "  through the mesh       {} ({:.0} Mbit/s)",
        ms(tunnel),
        rate(tunnel)
    );
    println!(
        "  mesh / direct throughput: {:.2}",
        direct.as_secs_f64() / tunnel.as_secs_f64()
    );
    Ok(())
}

/// Starts a receiver on the host that discards what it reads and closes at end of input,
/// then times sending the payload to `addr` until the receiver has closed (so every byte
/// arrived).
async fn send(ssh: &SshLauncher<LocalLauncher>, addr: IpAddr) -> Result<Duration, Error> {
    let receiver = Command::new("sh").args([
        "-c",
        &format!("exec busybox nc -l -p {RECEIVER_PORT} >/dev/null"),
    ]);
    let receiver = ssh.spawn(&receiver).await?;
    let target = SocketAddr::new(addr, RECEIVER_PORT);
    let elapsed = blocking::unblock(move || -> std::io::Result<Duration> {
        // The receiver may take a moment to listen.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let chunk = vec![0x5au8; 1 << 20];
        let started = Instant::now();
        let mut left = PAYLOAD;
        while left > 0 {
            let n = left.min(chunk.len());
            stream.write_all(&chunk[..n])?;
            left -= n;
        }
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest)?;
        Ok(started.elapsed())
    })
    .await?;
    drop(receiver);
    Ok(elapsed)
}

fn ms(d: Duration) -> String {
    format!("{:>8.1} ms", d.as_secs_f64() * 1000.0)
}
