//! Support for tests against the machine's Docker engine: whether one answers, a busybox image
//! built per test (CI has no registry), and checks that a test left nothing behind.
//!
//! Where no engine answers, a test prints why it did not run and passes, unless
//! `HARNESS_REQUIRE_DOCKER=1` (which CI sets) turns that into a failure.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this file"
)]

use std::future::Future;
use std::process::Command as StdCommand;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use harness::exec::{
    BuiltImage, DockerContainer, DockerImage, EventStream, LocalLauncher, ProcessEvent, Pull,
};

/// How long any one test may take. Generous: the machine may be a loaded 2-core CI runner.
pub const TEST_DEADLINE: Duration = Duration::from_secs(180);
/// How long we wait for one event, or for something to disappear.
pub const WAIT: Duration = Duration::from_secs(30);
/// The label every container of a test carries, with the test's own id as value.
pub const TEST_LABEL: &str = "harness.test";

/// Whether the Docker engine answers; the reason if not.
pub fn docker_available() -> Result<(), String> {
    let out = StdCommand::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map_err(|e| format!("cannot run `docker`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "the Docker engine does not answer: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// True if the test can run; otherwise prints why not, or panics if Docker is required.
pub fn require_docker(test: &str) -> bool {
    match docker_available() {
        Ok(()) => true,
        Err(why) if std::env::var("HARNESS_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("{test}: HARNESS_REQUIRE_DOCKER=1 but {why}")
        }
        Err(why) => {
            eprintln!("{test}: not run: {why} (set HARNESS_REQUIRE_DOCKER=1 to fail instead)");
            false
        }
    }
}

/// Runs `fut` on smol, failing the test if it does not finish within [`TEST_DEADLINE`].
pub fn run<F: Future>(fut: F) -> F::Output {
    smol::block_on(within(TEST_DEADLINE, "the test", fut))
}

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    futures_lite::future::or(fut, async {
        smol::Timer::after(limit).await;
        panic!("{what} did not finish within {limit:?}");
    })
    .await
}

/// Reads events until one whose line is `line`, returning what came before it.
pub async fn until_line(events: &mut EventStream, line: &str) -> Vec<ProcessEvent> {
    let mut seen = Vec::new();
    loop {
        match within(WAIT, "waiting for the next event", events.recv()).await {
            Some(e) if e.line() == Some(line) => return seen,
            Some(e) => seen.push(e),
            None => panic!("the stream ended before the line {line:?}; saw {seen:?}"),
        }
    }
}

/// Every remaining event, until the stream ends.
pub async fn rest(mut events: EventStream) -> Vec<ProcessEvent> {
    within(WAIT, "waiting for the stream to end", async {
        let mut all = Vec::new();
        while let Some(e) = events.recv().await {
            all.push(e);
        }
        all
    })
    .await
}

/// One test's Docker resources: its own busybox image and a label value of its own.
///
/// If the test fails before [`finish`](Self::finish), dropping this sweeps up synchronously
/// what the test made (its containers, the compose projects that used its image, the image):
/// handles that drop during a panic remove their containers on background threads, which the
/// process may not wait for.
pub struct DockerTest {
    /// The value of [`TEST_LABEL`] on everything this test starts.
    pub id: String,
    tag: String,
    image: Option<BuiltImage<LocalLauncher>>,
}

impl DockerTest {
    /// Builds this test's busybox image; `None` if the test cannot run here.
    pub async fn start(test: &str) -> Option<DockerTest> {
        if !require_docker(test) {
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}-{}",
            test.replace('_', "-"),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let tag = format!("harness-test-busybox:{id}");
        let image = DockerImage::busybox(&tag)
            .build(&LocalLauncher)
            .await
            .expect("build the busybox test image");
        Some(DockerTest {
            id,
            tag,
            image: Some(image),
        })
    }

    /// The tag of this test's busybox image.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// A container from this test's image, labelled as this test's, never pulled.
    pub fn container(&self) -> DockerContainer {
        self.container_from(&self.tag)
    }

    /// A container from `image`, labelled as this test's, never pulled.
    pub fn container_from(&self, image: &str) -> DockerContainer {
        DockerContainer::new(image)
            .with_label(TEST_LABEL, &self.id)
            .with_pull(Pull::Never)
    }

    /// Removes the image and checks that no container or image of this test is left.
    pub async fn finish(mut self) {
        assert_gone(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={TEST_LABEL}={}", self.id),
        ])
        .await;
        assert_gone(&["ps", "-aq", "--filter", &format!("ancestor={}", self.tag)]).await;
        let image = self.image.take().expect("finish runs once");
        image.remove().await.expect("remove the test image");
        assert_gone(&["images", "-q", &self.tag]).await;
    }
}

impl Drop for DockerTest {
    fn drop(&mut self) {
        let Some(image) = self.image.take() else {
            return;
        };
        // Removed below, after the containers that use it.
        image.keep();
        let docker = |args: &[&str]| {
            StdCommand::new("docker")
                .args(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let mine = [
            format!("label={TEST_LABEL}={}", self.id),
            format!("ancestor={}", self.tag),
        ];
        let mut projects = Vec::new();
        for filter in &mine {
            let format = "{{.ID}} {{.Label \"com.docker.compose.project\"}}";
            for word in docker(&["ps", "-a", "--filter", filter, "--format", format]) {
                if word.len() == 12 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
                    docker(&["rm", "--force", "--volumes", &word]);
                } else {
                    projects.push(word);
                }
            }
        }
        for project in projects {
            let label = format!("label=com.docker.compose.project={project}");
            for net in docker(&["network", "ls", "-q", "--filter", &label]) {
                docker(&["network", "rm", &net]);
            }
            for volume in docker(&["volume", "ls", "-q", "--filter", &label]) {
                docker(&["volume", "rm", &volume]);
            }
        }
        docker(&["image", "rm", &self.tag]);
        eprintln!("swept up what test `{}` left", self.id);
    }
}

/// The lines `docker ARGS` prints.
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = StdCommand::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Waits until `docker ARGS` lists nothing, failing the test if something stays.
pub async fn assert_gone(args: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = docker_lines(args);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: `docker {}` lists {left:?}",
            args.join(" ")
        );
        smol::Timer::after(Duration::from_millis(100)).await;
    }
}

/// Waits until no file is at `path`, failing the test if one stays.
pub async fn assert_no_file(path: &str) {
    let deadline = Instant::now() + WAIT;
    while std::path::Path::new(path).exists() {
        assert!(Instant::now() < deadline, "left behind: {path}");
        smol::Timer::after(Duration::from_millis(100)).await;
    }
}

/// Fetches `/` over HTTP/1.0 from `addr`, retrying while the server is not up yet (docker's
/// port proxy accepts connections before the container listens, then closes them).
pub async fn http_get(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + WAIT;
    loop {
        let got = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match got {
            Ok(body) if !body.is_empty() => return body,
            _ if Instant::now() > deadline => panic!("no HTTP answer from {addr}: {got:?}"),
            _ => {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}
