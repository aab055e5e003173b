//! Running the `docker` command line through a launcher, and reading what it says.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::{EventSink, EventStream, ExitStatus, Output, ProcessEvent};
use crate::exec::launcher::Launcher;

/// Set to `true` on every container, network and image harness creates, so that what a dead
/// run left behind can be found (`docker ps -a --filter label=harness.managed=true`).
pub const MANAGED_LABEL: &str = "harness.managed";

/// Set to the process id of the harness process that created a container, network or image:
/// a janitor removes what belongs to processes that are gone.
pub const OWNER_PID_LABEL: &str = "harness.pid";

/// Set to the pid namespace ([`pid_namespace`]) of the process [`OWNER_PID_LABEL`] names, whose
/// pid means something only there: a janitor in another namespace (on the host of a CI job
/// that runs in a container with the host's Docker socket) leaves it alone.
pub const OWNER_PIDNS_LABEL: &str = "harness.pidns";

/// This process's pid namespace: the inode of `/proc/self/ns/pid`, the same for every process
/// that sees the same pids.
pub fn pid_namespace() -> Option<u64> {
    static NS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *NS.get_or_init(|| {
        let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
        let link = link.to_string_lossy();
        link.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
    })
}

/// The ownership labels, as `(key, value)`: managed, the owner's pid, and its pid namespace.
pub(crate) fn owner_labels() -> Vec<(&'static str, String)> {
    let mut labels = vec![
        (MANAGED_LABEL, "true".to_string()),
        (OWNER_PID_LABEL, std::process::id().to_string()),
    ];
    if let Some(ns) = pid_namespace() {
        labels.push((OWNER_PIDNS_LABEL, ns.to_string()));
    }
    labels
}

/// A `docker` command line.
pub(crate) fn docker<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Command::new("docker").args(args)
}

/// `--label` arguments for what harness owns: the ownership labels, then `extra`.
pub(crate) fn label_args<'a>(extra: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut args = Vec::new();
    for (k, v) in owner_labels() {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    for (k, v) in extra {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    args
}

/// A name nobody else uses: `PREFIX-` and twelve hex digits. The hasher's keys are random per
/// process, and the counter and clock make each call differ.
pub(crate) fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("{prefix}-{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Whether docker said the container it was asked about does not exist.
pub(crate) fn is_no_such_container(stderr: &str) -> bool {
    stderr.contains("No such container") || stderr.contains("No such object")
}

/// Whether docker said an image is missing and could not be pulled.
pub(crate) fn is_missing_image(stderr: &str) -> bool {
    [
        "Unable to find image",
        "No such image",
        "pull access denied",
        "manifest unknown",
        "repository does not exist",
    ]
    .iter()
    .any(|s| stderr.contains(s))
}

/// The reason, if docker could not reach its engine at all.
pub(crate) fn engine_unreachable(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|l| {
            l.contains("Cannot connect to the Docker daemon")
                || l.contains("permission denied while trying to connect to the Docker daemon")
                || l.contains("error during connect")
        })
        .map(|l| l.trim().to_string())
}

/// The error for a docker command that failed while `doing` something.
pub(crate) fn failure<L: Launcher>(
    launcher: &L,
    cmd: &Command,
    out: &Output,
    doing: &str,
) -> LaunchError {
    let stderr = out.stderr_text();
    if let Some(reason) = engine_unreachable(&stderr) {
        return LaunchError::Unreachable {
            host: format!("the Docker engine ({})", launcher.location()),
            reason,
        };
    }
    LaunchError::CommandFailed {
        doing: doing.to_string(),
        command: cmd.display(),
        status: out.status.unwrap_or(ExitStatus::from_code(-1)),
        stderr,
    }
}

/// Runs `docker ARGS` and fails unless it exits with 0.
pub(crate) async fn run<L: Launcher>(
    launcher: &L,
    args: Vec<String>,
    doing: &str,
) -> Result<Output, LaunchError> {
    let cmd = docker(args);
    let out = launcher.output(&cmd).await?;
    if out.success() {
        Ok(out)
    } else {
        Err(failure(launcher, &cmd, &out, doing))
    }
}

/// A cleanup command that runs when dropped, unless it ran (or was disarmed) before.
///
/// Drop cannot await, so the command runs on a thread of its own and nobody waits for it; the
/// owner's `async` removal method is the way to know it is done.
pub(crate) struct Removal<L: Launcher> {
    launcher: L,
    cmd: Option<Command>,
    what: String,
}

impl<L: Launcher> Removal<L> {
    pub(crate) fn new(launcher: L, cmd: Command, what: String) -> Self {
        Removal {
            launcher,
            cmd: Some(cmd),
            what,
        }
    }

    /// Runs the cleanup now and waits for it.
    pub(crate) async fn run(&mut self) -> Result<Output, LaunchError> {
        let Some(cmd) = self.cmd.take() else {
            return Ok(Output::default());
        };
        let out = self.launcher.output(&cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(failure(&self.launcher, &cmd, &out, &self.what))
        }
    }

    /// Never runs the cleanup.
    pub(crate) fn disarm(&mut self) {
        self.cmd = None;
    }
}

impl<L: Launcher> Drop for Removal<L> {
    fn drop(&mut self) {
        let Some(cmd) = self.cmd.take() else {
            return;
        };
        let launcher = self.launcher.clone();
        let what = std::mem::take(&mut self.what);
        let spawned = std::thread::Builder::new()
            .name("harness-docker-cleanup".into())
            .spawn(move || {
                match futures_lite::future::block_on(launcher.output(&cmd)) {
                    Ok(out) if out.success() => tracing::debug!(%what, "cleaned up"),
                    Ok(out) => {
                        tracing::warn!(%what, stderr = %out.stderr_text(), "cleanup failed")
                    }
                    Err(e) => tracing::warn!(%what, error = %e, "cleanup failed"),
                };
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start a cleanup thread");
        }
    }
}

/// Forwards the events of a docker client (`docker start -a`, `docker logs -f`) to `sink` on a
/// thread of its own, after `first`. The client's own `Started` is dropped, since `first` says
/// which process runs; its `Exited` is handed to `finish`, which returns the `Exited` to send
/// (a client that only follows logs does not know how the container ended).
pub(crate) fn forward_events<F>(
    mut client: EventStream,
    sink: EventSink,
    first: ProcessEvent,
    name: String,
    finish: F,
) -> Result<(), LaunchError>
where
    F: FnOnce(Option<ExitStatus>) -> Option<ExitStatus> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut listening = sink.send_one(first);
            let mut exit = None;
            futures_lite::future::block_on(async {
                while let Some(event) = client.recv().await {
                    let mut batch = Vec::new();
                    let mut next = Some(event);
                    while let Some(event) = next {
                        match event {
                            ProcessEvent::Started { .. } => {}
                            ProcessEvent::Exited(s) => exit = Some(s),
                            line => batch.push(line),
                        }
                        next = client.try_recv();
                    }
                    if listening {
                        listening = sink.send(batch);
                    }
                }
            });
            if let Some(status) = finish(exit)
                && listening
            {
                sink.send_one(ProcessEvent::Exited(status));
            }
        })
        .map(|_| ())
        .map_err(|e| LaunchError::io("start an event forwarding thread", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ() {
        let a = unique_name("harness");
        let b = unique_name("harness");
        assert_ne!(a, b);
        assert!(
            a.starts_with("harness-") && a.len() == "harness-".len() + 12,
            "{a}"
        );
    }

    #[test]
    fn labels_name_the_owner() {
        let args = label_args([("role", "db")]);
        assert_eq!(
            args,
            [
                "--label".to_string(),
                "harness.managed=true".into(),
                "--label".into(),
                format!("harness.pid={}", std::process::id()),
                "--label".into(),
                format!(
                    "harness.pidns={}",
                    pid_namespace().expect("a pid namespace")
                ),
                "--label".into(),
                "role=db".into(),
            ]
        );
    }

    #[test]
    fn docker_messages_are_recognised() {
        assert!(is_no_such_container(
            "Error response from daemon: No such container: x"
        ));
        assert!(is_missing_image(
            "Unable to find image 'x:1' locally\nError response from daemon: pull access denied for x"
        ));
        assert!(
            engine_unreachable("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
                .is_some()
        );
        assert!(engine_unreachable("Error: No such object: x").is_none());
    }
}
