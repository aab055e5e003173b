//! `testcontainers-peer IMAGE:TAG CONTAINER_PORT ROUNDS`
//!
//! Times testcontainers-rs (its async API, on a multi-threaded tokio runtime) starting one
//! container from a local image and tearing it down again, ROUNDS times, and prints one line a
//! round: `round N start_ms S teardown_ms T`.
//!
//! - start: `GenericImage::new(IMAGE, TAG).with_exposed_port(PORT/tcp).start()`, then
//!   `get_host_port_ipv4(PORT)`, then `GET / HTTP/1.1` to 127.0.0.1:<mapped port> every 5 ms
//!   until a status line with ` 200 ` comes back.
//! - teardown: dropping the `ContainerAsync` (testcontainers' own removal, a forced remove
//!   with volumes), then the engine asked until the container no longer exists.
//!
//! README.md beside this file tells more, and why no API-version workaround is needed for a
//! 1.41 engine.

mod engine;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testcontainers::GenericImage;
use testcontainers::core::IntoContainerPort;
use testcontainers::runners::AsyncRunner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use engine::Engine;

const USAGE: &str = "usage: testcontainers-peer IMAGE:TAG CONTAINER_PORT ROUNDS";
/// How long a container may take to answer 200 once testcontainers has started it.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a removed container may still be listed by the engine.
const GONE_TIMEOUT: Duration = Duration::from_secs(30);
/// The readiness poll's period.
const POLL: Duration = Duration::from_millis(5);

struct Args {
    name: String,
    tag: String,
    port: u16,
    rounds: u32,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testcontainers-peer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Args> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, port, rounds] = args.as_slice() else {
        bail!("expected 3 arguments, got {}\n{USAGE}", args.len());
    };
    // The tag is after the last ':' that comes after the last '/' (a registry may have a port).
    let (name, tag) = match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') && !name.is_empty() && !tag.is_empty() => {
            (name.to_string(), tag.to_string())
        }
        _ => bail!("IMAGE:TAG {image:?} has no tag\n{USAGE}"),
    };
    let port = port.parse().map_err(|e| {
        anyhow::anyhow!("CONTAINER_PORT {port:?} is not a port number ({e})\n{USAGE}")
    })?;
    let rounds = rounds
        .parse()
        .map_err(|e| anyhow::anyhow!("ROUNDS {rounds:?} is not a count ({e})\n{USAGE}"))?;
    Ok(Args {
        name,
        tag,
        port,
        rounds,
    })
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let engine = Engine::from_env()?;

    // testcontainers pulls only when creating the container fails with 404 (no such image).
    // The image must be local: refuse up front rather than let it try a registry.
    let reference = format!("{}:{}", args.name, args.tag);
    if !engine
        .has_image(&reference)
        .context("asking the Docker engine for the image")?
    {
        bail!(
            "image {reference} is not present locally (testcontainers would try to pull it, and \
             this peer measures local images only)"
        );
    }

    // No API-version pinning is needed for an older engine (20.10 speaks 1.41 at most): bollard
    // 0.21 is built with version 1.53 but sends its request paths unversioned (`/containers/
    // create`, not `/v1.53/containers/create`), and the engine serves those at its own version.
    // README.md, "Docker API version".
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(rounds(&args, &engine))
}

async fn rounds(args: &Args, engine: &Engine) -> Result<()> {
    let port = args.port.tcp();
    let mut stdout = std::io::stdout();
    for n in 1..=args.rounds {
        let t0 = Instant::now();
        let container = GenericImage::new(args.name.clone(), args.tag.clone())
            .with_exposed_port(port)
            .start()
            .await
            .with_context(|| {
                format!(
                    "round {n}: starting a container from {}:{}",
                    args.name, args.tag
                )
            })?;
        let id = container.id().to_string();
        // From here an early return drops the container, which removes it.
        let host_port = container
            .get_host_port_ipv4(port)
            .await
            .with_context(|| format!("round {n}: the host port mapped to {port}"))?;
        wait_http_200(host_port)
            .await
            .with_context(|| format!("round {n}: container {id} on 127.0.0.1:{host_port}"))?;
        let t1 = Instant::now();

        // A testcontainers user's teardown: the drop removes the container (force, volumes)
        // and, on a multi-threaded runtime, returns once the engine has answered.
        drop(container);
        engine
            .wait_gone(&id, GONE_TIMEOUT)
            .with_context(|| format!("round {n}: after dropping the container"))?;
        let t2 = Instant::now();
        docker_cli_agrees_gone(engine, &id).with_context(|| format!("round {n}"))?;

        writeln!(
            stdout,
            "round {n} start_ms {:.3} teardown_ms {:.3}",
            ms(t1 - t0),
            ms(t2 - t1)
        )
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `GET / HTTP/1.1` every 5 ms until the status line has ` 200 `.
async fn wait_http_200(port: u16) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let last = match get_status_line(port).await {
            Ok(line) if line.contains(" 200 ") => return Ok(()),
            Ok(line) => format!("answered {line:?}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("no 200 answer to GET / within {READY_TIMEOUT:?} (last try: {last})");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One try: the response's status line (empty if the connection closed before one came).
async fn get_status_line(port: u16) -> std::io::Result<String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::with_capacity(512);
        loop {
            if let Some(end) = engine::find(&answer, b"\r\n") {
                answer.truncate(end);
                break;
            }
            if answer.len() > 8192 || stream.read_buf(&mut answer).await? == 0 {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Outside the timed span: `docker ps -a -q --filter id=ID` lists nothing either (skipped when
/// there is no docker CLI).
fn docker_cli_agrees_gone(engine: &Engine, id: &str) -> Result<()> {
    let output = std::process::Command::new("docker")
        .args(["ps", "-a", "-q", "--no-trunc", "--filter"])
        .arg(format!("id={id}"))
        .env("DOCKER_HOST", format!("unix://{}", engine.socket.display()))
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("running docker ps"),
    };
    if !output.status.success() {
        bail!(
            "docker ps -a --filter id={id} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let listed = String::from_utf8_lossy(&output.stdout);
    if !listed.trim().is_empty() {
        bail!("docker ps -a still lists container {id} after testcontainers removed it");
    }
    Ok(())
}
