//! Health checks: `tcp`, `http`, `command`, `log` and `docker` probes, tried until the service
//! is healthy, exits, or fails too often.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use async_io::Timer;
use async_net::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};

use crate::exec::{Command, Launcher, LocalLauncher};
use crate::registry::{HealthResult, Registry};
use crate::topology::{HealthCheck, Probe};

use super::error::StartFailure;
use super::executor::RunningService;
use super::logs::LogBuffer;
use super::waiting::{ReportSchedule, WaitReport, describe_check};

/// How many lines of what a `command` check wrote a failure report shows: the last ones, after
/// the service's own output.
pub const CHECK_OUTPUT_LINES: usize = 10;

/// How many characters of one line of a check's output are kept; the rest is cut off.
const CHECK_LINE_CHARS: usize = 200;

/// What a probe needs to know about the service it checks.
#[derive(Clone, Copy)]
pub(crate) struct ProbeContext<'a> {
    /// The address at which this machine reaches the service: `127.0.0.1:HOST_PORT`, or a LAN
    /// host's address and the port.
    pub(crate) addr: Option<SocketAddr>,
    /// Where the service itself listens when something else stands in front of `port`: a
    /// container's address on its network, behind the port Docker publishes.
    pub(crate) direct: Option<SocketAddr>,
    pub(crate) log: &'a LogBuffer,
    pub(crate) env: &'a [(String, String)],
    pub(crate) base_dir: &'a Path,
    /// The service's container, if it runs in one.
    pub(crate) container: Option<&'a str>,
    /// Whether `addr` is a port Docker's proxy publishes and `direct` cannot be tried from
    /// here (the engine runs elsewhere): the proxy accepts whether or not the container
    /// listens, and then closes at once if it does not.
    pub(crate) proxied: bool,
    /// The test of the container's `HEALTHCHECK`, as `docker exec` runs it: found by
    /// [`wait_healthy`] for a `docker` probe.
    pub(crate) image_test: Option<&'a [String]>,
}

/// The check used when a service has none: a `tcp` connect when it has a port (a port that
/// accepts connections is the least a dependent needs), otherwise none at all: the service
/// counts as healthy once it runs.
pub(crate) fn default_check(port: Option<u16>) -> Option<HealthCheck> {
    port.map(|_| HealthCheck {
        probe: Probe::Tcp,
        interval: HealthCheck::DEFAULT_INTERVAL,
        timeout: HealthCheck::DEFAULT_TIMEOUT,
        retries: HealthCheck::DEFAULT_RETRIES,
        start_period: HealthCheck::DEFAULT_START_PERIOD,
    })
}

/// Why one try of a check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeFailure {
    /// One line: what went wrong, such as `GET http://127.0.0.1:4567/health answered 503,
    /// expected 200`.
    pub(crate) reason: String,
    /// The last lines a `command` check wrote (at most [`CHECK_OUTPUT_LINES`]), standard output
    /// then standard error; empty for the other checks.
    pub(crate) output: Vec<String>,
}

impl From<String> for ProbeFailure {
    fn from(reason: String) -> Self {
        Self {
            reason,
            output: Vec::new(),
        }
    }
}

/// Tries `check` until it succeeds; returns how many tries it took.
///
/// As in Docker, failures during the start period do not count, and the first success makes the
/// service healthy at once; after the start period, `retries` consecutive failures fail it. A
/// service that exits meanwhile fails at once. Every result goes to the registry, and while the
/// service is not healthy, `report` hears about it now and then (see [`ReportSchedule`]).
///
/// Most services are ready within milliseconds, so the first tries come sooner than
/// `interval`: see [`pause`].
pub(crate) async fn wait_healthy(
    name: &str,
    check: &HealthCheck,
    service: &dyn RunningService,
    context: &ProbeContext<'_>,
    registry: &Registry,
    report: &mut (dyn FnMut(WaitReport) + Send),
) -> Result<u32, StartFailure> {
    let image_test = match (&check.probe, context.container) {
        (Probe::Docker, Some(container)) => Some(image_test(container).await?),
        (Probe::Docker, None) => {
            return Err(unhealthy(
                "a `docker` check needs a container, and the service runs in none".to_string(),
            ));
        }
        _ => None,
    };
    let context = &ProbeContext {
        image_test: image_test.as_deref(),
        ..*context
    };
    let started = Instant::now();
    let mut schedule = ReportSchedule::new();
    let mut tries = 0;
    let mut failures = 0;
    loop {
        if let Some(status) = service.exit_status() {
            return Err(StartFailure::Exited(status));
        }
        tries += 1;
        let begun = Instant::now();
        let outcome = probe(&check.probe, check.timeout, context).await;
        let latency = begun.elapsed();
        let result = match &outcome {
            Ok(detail) => HealthResult::new(true, detail.clone(), latency),
            Err(failure) => HealthResult::new(false, failure.reason.clone(), latency),
        };
        // The registry may have dropped the service meanwhile; the check goes on regardless.
        let _ = registry.record_health(name, result).await;
        match outcome {
            Ok(_) => return Ok(tries),
            Err(failure) => {
                // A probe that failed because the service died says less than its exit does.
                if let Some(status) = service.exit_status() {
                    return Err(StartFailure::Exited(status));
                }
                if started.elapsed() >= check.start_period {
                    failures += 1;
                    if failures >= check.retries.max(1) {
                        return Err(StartFailure::Unhealthy {
                            tries,
                            last_error: failure.reason,
                            check_output: failure.output,
                        });
                    }
                }
                let waited = started.elapsed();
                if schedule.due(waited) {
                    report(WaitReport {
                        service: name.to_string(),
                        check: describe_check(&check.probe, context),
                        tries,
                        waited,
                        last_error: failure.reason,
                    });
                }
            }
        }
        Timer::after(pause(tries, check.interval)).await;
    }
}

/// The pause after try number `tries` (from 1): 1 ms, doubling each try, up to `interval`. A
/// fixed 100 ms interval would make every service in a dependency chain cost up to 100 ms more
/// than it needs; the doubling keeps a service that takes long from being polled hard.
pub(crate) fn pause(tries: u32, interval: Duration) -> Duration {
    let first = Duration::from_millis(1);
    first
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(interval)
}

/// One try of `probe`, bounded by `timeout`. `Ok` carries a short description of the success.
pub(crate) async fn probe(
    probe: &Probe,
    timeout: Duration,
    context: &ProbeContext<'_>,
) -> Result<String, ProbeFailure> {
    let attempt = async {
        let result = match probe {
            Probe::Tcp => {
                // Docker's proxy accepts on a published port whether or not the container
                // listens behind it, so a container is first tried where it listens itself.
                if let Some(direct) = context.direct {
                    TcpStream::connect(direct)
                        .await
                        .map_err(|e| format!("connect to {direct} (in the container): {e}"))?;
                }
                let addr = addr_of(context.addr)?;
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connect to {addr}: {e}"))?;
                if context.direct.is_none() && context.proxied {
                    stays_open(stream, addr).await?;
                }
                Ok(format!("{addr} accepts connections"))
            }
            Probe::Http { path, status } => {
                let addr = addr_of(context.addr)?;
                let got = http_status(addr, path).await?;
                if got == *status {
                    Ok(format!("GET {path} answered {got}"))
                } else {
                    Err(format!(
                        "GET http://{addr}{path} answered {got}, expected {status}"
                    ))
                }
            }
            Probe::Command(argv) => return run_command(argv, context).await,
            Probe::Docker => {
                let (Some(container), Some(test)) = (context.container, context.image_test) else {
                    return Err("no HEALTHCHECK test to run".to_string().into());
                };
                let exec = Command::new("docker")
                    .arg("exec")
                    .arg(short_id(container))
                    .args(test.iter().cloned());
                return run_check(exec).await;
            }
            Probe::Log(pattern) => {
                if context.log.matched() {
                    Ok(format!("a line matched `{}`", pattern.as_str()))
                } else {
                    Err(format!("no line matched `{}` yet", pattern.as_str()))
                }
            }
        };
        result.map_err(ProbeFailure::from)
    };
    future::or(attempt, async {
        Timer::after(timeout).await;
        Err(format!("no answer within {timeout:?}").into())
    })
    .await
}

/// How long a connection through Docker's proxy must stay open, silent, for the container
/// behind it to count as listening.
const PROXY_SETTLE: Duration = Duration::from_millis(50);

/// Whether a connection to `addr` through Docker's proxy reaches a listener: the proxy closes
/// it at once when the container does not listen, and keeps it open (or passes on what the
/// server says first) when it does.
async fn stays_open(mut stream: TcpStream, addr: SocketAddr) -> Result<(), String> {
    let mut byte = [0u8; 1];
    let read = future::or(async { Some(stream.read(&mut byte).await) }, async {
        Timer::after(PROXY_SETTLE).await;
        None
    })
    .await;
    match read {
        None | Some(Ok(1..)) => Ok(()),
        Some(Ok(_)) => Err(format!(
            "{addr} accepted and closed at once: nothing listens behind Docker's proxy yet"
        )),
        Some(Err(e)) => Err(format!(
            "{addr} accepted, then: {e} (nothing listens behind Docker's proxy yet)"
        )),
    }
}

fn addr_of(addr: Option<SocketAddr>) -> Result<SocketAddr, String> {
    addr.ok_or_else(|| "the service has no port to check".to_string())
}

/// A minimal HTTP/1.1 GET: sends the request and reads the status line.
async fn http_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: harness\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send GET {path} to {addr}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read the answer to GET {path} from {addr}: {e}"))?;
        if n == 0 || head.len() > 4096 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    parse_status_line(line)
        .ok_or_else(|| format!("GET {path} from {addr}: not an HTTP answer: {line:?}"))
}

/// The status code of `HTTP/1.1 200 OK`.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Runs a `command` check. Its output is kept apart from the service's log: a failure says the
/// exit status and the last line the command wrote (standard error first), and carries its
/// last [`CHECK_OUTPUT_LINES`] lines, so that a chatty check neither floods the failure
/// report nor pushes the service's own lines out of it.
async fn run_command(argv: &[String], context: &ProbeContext<'_>) -> Result<String, ProbeFailure> {
    let Some((program, args)) = argv.split_first() else {
        return Err("the health check's command is empty".to_string().into());
    };
    let command = Command::new(program.clone())
        .args(args)
        .envs(context.env.iter().cloned())
        .current_dir(context.base_dir.to_string_lossy());
    run_check(command).await
}

/// A start failure of a check that cannot be tried at all.
fn unhealthy(reason: String) -> StartFailure {
    StartFailure::Unhealthy {
        tries: 0,
        last_error: reason,
        check_output: Vec::new(),
    }
}

/// The first 12 characters of a container id, as `docker ps` shows it.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The test of container `id`'s `HEALTHCHECK` (its image's, unless `docker run` replaced it),
/// as `docker exec` runs it: `CMD-SHELL` through the container's shell, `CMD` as written.
async fn image_test(id: &str) -> Result<Vec<String>, StartFailure> {
    let inspect = Command::new("docker").args([
        "inspect",
        "--format",
        "{{json .Config.Healthcheck}} {{json .Config.Shell}} {{.Config.Image}}",
        id,
    ]);
    let out = LocalLauncher
        .output(&inspect)
        .await
        .map_err(StartFailure::Launch)?;
    if !out.success() {
        return Err(unhealthy(format!(
            "`{}` failed: {}",
            inspect.display(),
            out.stderr_text().trim()
        )));
    }
    let text = out.stdout_text();
    let mut values = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
    let check = values.next().and_then(Result::ok).unwrap_or_default();
    let shell = values.next().and_then(Result::ok).unwrap_or_default();
    let image = text
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let words = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let test = words(&check["Test"]);
    match test.split_first() {
        Some((kind, args)) if kind == "CMD" && !args.is_empty() => Ok(args.to_vec()),
        Some((kind, [script])) if kind == "CMD-SHELL" => {
            let mut shell = words(&shell);
            if shell.is_empty() {
                shell = vec!["/bin/sh".to_string(), "-c".to_string()];
            }
            shell.push(script.clone());
            Ok(shell)
        }
        _ => Err(unhealthy(format!(
            "image `{image}` has no HEALTHCHECK to run (`docker: {{}}` runs the image's own); \
             give the service a `tcp`, `http`, `command` or `log` check instead"
        ))),
    }
}

/// Runs `command` here: success is exit status 0; a failure says the status and the last line
/// the command wrote, and keeps its last lines.
async fn run_check(command: Command) -> Result<String, ProbeFailure> {
    let output = LocalLauncher
        .output(&command)
        .await
        .map_err(|e| ProbeFailure::from(e.to_string()))?;
    match output.status {
        Some(status) if status.success() => Ok(format!("`{}` exited with 0", command.display())),
        status => {
            let status = status.map_or("no status".to_string(), |s| s.to_string());
            let last_line = |lines: &[String]| {
                lines
                    .iter()
                    .rev()
                    .map(|l| l.trim())
                    .find(|l| !l.is_empty())
                    .map(cut)
            };
            let reason = match last_line(&output.stderr).or_else(|| last_line(&output.stdout)) {
                Some(line) => format!("`{}` {status}: {line}", command.display()),
                None => format!("`{}` {status}", command.display()),
            };
            let lines: Vec<&String> = output
                .stdout
                .iter()
                .chain(&output.stderr)
                .filter(|l| !l.trim().is_empty())
                .collect();
            let output = lines[lines.len().saturating_sub(CHECK_OUTPUT_LINES)..]
                .iter()
                .map(|l| cut(l.trim_end()))
                .collect();
            Err(ProbeFailure { reason, output })
        }
    }
}

/// `line`, cut to [`CHECK_LINE_CHARS`] characters.
fn cut(line: &str) -> String {
    match line.char_indices().nth(CHECK_LINE_CHARS) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_from_1_ms_to_the_interval() {
        let interval = Duration::from_millis(100);
        let pauses: Vec<u128> = (1..=9).map(|t| pause(t, interval).as_millis()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 64, 100, 100]);
        assert_eq!(pause(1000, interval), interval);
        assert_eq!(pause(3, Duration::from_millis(2)), Duration::from_millis(2));
    }

    /// The failure of a `command` check of `script`, run by `sh -c`.
    fn command_failure(script: &str) -> ProbeFailure {
        let log = LogBuffer::new("svc", 10);
        let context = ProbeContext {
            container: None,
            proxied: false,
            image_test: None,
            addr: None,
            direct: None,
            log: &log,
            env: &[],
            base_dir: Path::new("/"),
        };
        let argv = ["sh", "-c", script].map(String::from).to_vec();
        future::block_on(probe(
            &Probe::Command(argv),
            Duration::from_secs(30),
            &context,
        ))
        .unwrap_err()
    }

    #[test]
    fn a_failed_command_says_its_exit_and_last_line_and_keeps_only_its_last_lines() {
        let script = "echo on stdout; i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo \"err $i\" >&2; \
                      done; exit 2";
        let failure = command_failure(script);
        assert_eq!(
            failure.reason,
            format!("`sh -c '{script}'` exited with code 2: err 30")
        );
        let expected: Vec<String> = (21..=30).map(|i| format!("err {i}")).collect();
        assert_eq!(failure.output, expected);

        // A check that says why on stdout only (as pg_isready does) is quoted too.
        let failure = command_failure("echo '127.0.0.1:5432 - no response'; exit 2");
        assert!(
            failure
                .reason
                .ends_with("exited with code 2: 127.0.0.1:5432 - no response"),
            "{failure:?}"
        );
        assert_eq!(failure.output, ["127.0.0.1:5432 - no response"]);

        let long = command_failure("printf '%0300d\\n' 0 >&2; exit 1");
        assert!(
            long.reason
                .ends_with(&format!(": {}...", "0".repeat(CHECK_LINE_CHARS))),
            "{long:?}"
        );
    }

    #[test]
    fn reads_status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
    }
}
