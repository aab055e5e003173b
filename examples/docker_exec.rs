//! Run a container built from local files, stream its log, exec into it, and clean up.
//!
//! ```text
//! cargo run --example docker_exec
//! ```
//!
//! Needs a Docker engine, but no registry and no image: the example builds a tiny image from
//! this machine's busybox-static (`/bin/busybox`, Debian package busybox-static), starts a
//! web server container from it with a published port, fetches a page from the host, runs
//! commands inside the container with `docker exec` (environment, working directory, the same
//! `Executor` API as local processes), and stops it. Everything it creates is removed at the
//! end, also if it fails halfway: containers and images are removed when their handles drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use harness::exec::{
    Command, DockerContainer, DockerImage, Executor, LaunchError, LocalLauncher, ProcessEvent,
    ProcessHandle, Pull,
};

/// What the container runs: write a page, say so, then serve it (verbose: one log line per
/// request, on stderr).
const SERVE: &str = "mkdir -p /www && echo 'hello from a container' > /www/index.html \
                     && echo \"serving on port 8080 as $(id -un)\" \
                     && exec httpd -f -v -p 8080 -h /www";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        // 1. An image from local files, through `docker import`: no registry involved. The
        //    tag is unique so that running the example twice at once is fine.
        let tag = format!("harness-example-busybox:{}", std::process::id());
        let image = DockerImage::busybox(&tag)
            .with_bytes("greetings from the image\n", "/etc/motd", 0o644)
            .build(&LocalLauncher)
            .await?;
        println!("built image {} ({})", image.tag(), image.id());

        // 2. A container from it, with a port published on a host port Docker picks. Its log
        //    (stdout and stderr) arrives as events; `Started` carries its main pid.
        let web = DockerContainer::new(image.tag())
            .with_pull(Pull::Never)
            .with_env("GREETING", "hi")
            .with_port(8080)
            .with_init()
            .with_args(["sh", "-c", SERVE]);
        let mut run = Executor::local("web").execute(web).await?;
        let port = run.handle.host_port(8080).expect("port 8080 is published");
        println!(
            "container {} runs (pid {:?}), port 8080 is 127.0.0.1:{port}",
            run.handle.name(),
            run.handle.id()
        );
        while let Some(event) = run.events.recv().await {
            println!("  log: {event:?}");
            if matches!(&event, ProcessEvent::Stdout(l) if l.starts_with("serving")) {
                break;
            }
        }

        // 3. The published port answers on the host.
        let page = fetch(port)?;
        println!(
            "GET / from the host: {:?}",
            page.lines().last().unwrap_or("")
        );

        // 4. Commands inside the container: `Executor::docker` is the seed's API, the same
        //    `execute` and `events.recv()` as for local processes and SSH.
        let executor = Executor::docker("web", run.handle.name()).await?;
        let mut result = executor
            .execute(
                Command::new("sh")
                    .args(["-c", "echo \"$GREETING from $(pwd)\"; cat /etc/motd"])
                    .env("GREETING", "hello")
                    .current_dir("/www"),
            )
            .await?;
        while let Some(event) = result.events.recv().await {
            println!("  exec: {event:?}");
        }

        // 5. Errors name what was wrong.
        match Executor::docker("ghost", "harness-example-no-such-container").await {
            Err(e @ LaunchError::NoSuchContainer { .. }) => println!("as expected: {e}"),
            other => println!("unexpected: {other:?}"),
        }

        // 6. The server's request log arrived meanwhile; then stop it (SIGTERM, forwarded by
        //    the init), and read the rest of the log, ending with the exit status.
        let status = run.handle.stop(Duration::from_secs(5)).await?;
        while let Some(event) = run.events.recv().await {
            println!("  log: {event:?}");
        }
        println!("container stopped: {status}");

        // 7. Clean up, waiting until it is done. (Dropping the handles would also do it, in
        //    the background.)
        run.handle.remove().await?;
        image.remove().await?;
        println!("removed the container and the image");
        Ok(())
    })
}

/// Fetches `/` from the container's published port, retrying briefly while the server starts.
fn fetch(port: u16) -> std::io::Result<String> {
    let mut last = None;
    for _ in 0..50 {
        let attempt = (|| {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(body) if !body.is_empty() => return Ok(body),
            Ok(_) => {}
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the server sent nothing")))
}
