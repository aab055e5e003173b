//! The shared SSH connection: option list, the ControlMaster process, failure classification,
//! and closing it when the last launcher goes.

use std::future::Future;
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::{ExitStatus, ProcessEvent};
use crate::exec::launcher::{Launcher, ProcessHandle};
use crate::exec::quote::quote;

use super::{HostKeys, SshBuilder, secs_rounded_up};

/// What the master prints (through `LocalCommand`) once it is authenticated and its control
/// socket listens: ssh runs the local command after it starts the mux listener.
const READY_LINE: &str = "__HARNESS_SSH_READY__";
/// How long the master may outlive its connect timeout before we give up on it ourselves. ssh
/// enforces `ConnectTimeout` for the TCP connect and the protocol banner; the grace lets its own,
/// more precise message win, while authentication that stalls is still cut off.
const DEADLINE_GRACE: Duration = Duration::from_secs(2);
/// Bounds for the steps of closing, so dropping a launcher never hangs.
const CLOSE_STEP: Duration = Duration::from_secs(3);
const CLOSE_TOTAL: Duration = Duration::from_secs(10);
/// The exit code of the setup script when the key file is unusable.
const BAD_KEY_EXIT: i32 = 3;

/// One SSH destination with its options, shared by every clone of a launcher.
pub(super) struct Connection {
    /// `user@host`, as ssh takes it.
    pub(super) destination: String,
    /// `user@host:port`, for messages.
    pub(super) location: String,
    /// Options every ssh invocation gets.
    pub(super) base_args: Vec<String>,
    /// The private directory (mode 0700) on the machine where ssh runs.
    pub(super) dir: String,
    /// The control socket, when multiplexing.
    pub(super) control: Option<String>,
    pub(super) master_pid: Option<u32>,
    connect_timeout: Duration,
    /// Closes the master and removes the directory; taken and run once, on drop.
    close: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let close = self
            .close
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(close) = close {
            close();
        }
    }
}

impl Connection {
    /// Turns what a failed ssh client said into the error a user can act on.
    pub(super) fn classify(&self, status: ExitStatus, stderr: &str) -> LaunchError {
        classify(&self.location, self.connect_timeout, status, stderr)
    }
}

/// Opens a connection as `b` describes, running ssh through `inner`.
pub(super) async fn connect<L: Launcher>(
    b: SshBuilder,
    inner: &L,
) -> Result<Connection, LaunchError> {
    let location = match b.port {
        Some(port) if b.host.contains(':') => format!("{}@[{}]:{port}", b.user, b.host),
        Some(port) => format!("{}@{}:{port}", b.user, b.host),
        None => format!("{}@{}", b.user, b.host),
    };
    // ssh would read a leading `-` as an option.
    for (what, value) in [("host", &b.host), ("user", &b.user)] {
        if value.is_empty() || value.starts_with('-') {
            return Err(LaunchError::Unreachable {
                host: location,
                reason: format!("`{value}` is not a valid {what} name"),
            });
        }
    }
    let dir = prepare(&b, inner).await?;
    match open(&b, inner, location, dir.clone()).await {
        Ok(conn) => Ok(conn),
        Err(e) => {
            let _ = inner.output(&remove_dir(&dir)).await;
            Err(e)
        }
    }
}

/// Checks the key file and creates the private directory, in one round trip to wherever the
/// inner launcher runs ssh (this machine, or the first hop of a nested launcher).
async fn prepare<L: Launcher>(b: &SshBuilder, inner: &L) -> Result<String, LaunchError> {
    let mut script = String::new();
    if let Some(key) = &b.key {
        // A missing or wrong key would otherwise surface as a vague "Permission denied".
        script.push_str(&format!(
            "k={}\n\
             [ -e \"$k\" ] || {{ echo 'no such file'; exit {BAD_KEY_EXIT}; }}\n\
             [ -f \"$k\" ] || {{ echo 'not a regular file'; exit {BAD_KEY_EXIT}; }}\n\
             [ -r \"$k\" ] || {{ echo 'not readable'; exit {BAD_KEY_EXIT}; }}\n\
             if ! grep -q 'PRIVATE KEY-----' \"$k\"; then\n\
             \x20 if grep -qE '^(ssh-|ecdsa-|sk-)' \"$k\"; then echo 'this is a public key, not a private key'\n\
             \x20 else echo 'not a private key (no PRIVATE KEY block)'; fi\n\
             \x20 exit {BAD_KEY_EXIT}\n\
             fi\n",
            quote(&key.to_string_lossy())
        ));
    }
    let template = format!("{}/hssh.XXXXXX", b.temp_dir.trim_end_matches('/'));
    script.push_str(&format!("exec mktemp -d {}\n", quote(&template)));
    let cmd = Command::new("sh").arg("-c").arg(script);
    let out = inner.output(&cmd).await?;
    match out.status.and_then(|s| s.code()) {
        Some(0) if !out.stdout_text().trim().is_empty() => Ok(out.stdout_text().trim().into()),
        Some(BAD_KEY_EXIT) => Err(LaunchError::BadKey {
            path: b.key.clone().unwrap_or_default(),
            reason: out.stdout_text().trim().to_string(),
        }),
        _ => Err(LaunchError::CommandFailed {
            doing: format!("create a private directory for ssh on {}", inner.location()),
            command: format!("mktemp -d {template}"),
            status: out.status.unwrap_or(ExitStatus::from_code(-1)),
            stderr: out.stderr_text(),
        }),
    }
}

/// Starts the master (or, without multiplexing, tries one fresh connection) and waits until it
/// is ready.
async fn open<L: Launcher>(
    b: &SshBuilder,
    inner: &L,
    location: String,
    dir: String,
) -> Result<Connection, LaunchError> {
    let destination = format!("{}@{}", b.user, b.host);
    let base_args = base_args(b, &dir);
    let fail =
        |status: ExitStatus, stderr: &str| classify(&location, b.connect_timeout, status, stderr);

    let mut master = None;
    let mut master_pid = None;
    let control = b.multiplex.then(|| format!("{dir}/m"));
    if let Some(control) = &control {
        let mut args = base_args.clone();
        args.extend(
            [
                "-M",
                "-N",
                "-o",
                "ControlMaster=yes",
                "-o",
                &format!("ControlPath={control}"),
                // A persisted master forks into the background, out of reach of
                // PR_SET_PDEATHSIG; ours stays in the foreground and lives as long as we do.
                "-o",
                "ControlPersist=no",
                "-o",
                "PermitLocalCommand=yes",
                "-o",
                &format!("LocalCommand=echo {READY_LINE}"),
                &destination,
            ]
            .map(String::from),
        );
        let mut process = inner.spawn(&Command::new("ssh").args(args)).await?;
        let mut events = process
            .take_events()
            .expect("a fresh handle has its events");
        let deadline = b.connect_timeout + DEADLINE_GRACE;
        let ready = with_deadline(deadline, async {
            let mut stderr = Vec::new();
            while let Some(event) = events.recv().await {
                match event {
                    ProcessEvent::Stdout(line) if line.trim() == READY_LINE => return Ok(()),
                    ProcessEvent::Stderr(line) => stderr.push(line),
                    ProcessEvent::Exited(status) => return Err(fail(status, &stderr.join("\n"))),
                    _ => {}
                }
            }
            Err(fail(ExitStatus::from_code(-1), &stderr.join("\n")))
        })
        .await;
        match ready {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            // Dropping `process` kills the master.
            None => {
                return Err(LaunchError::Timeout {
                    host: location,
                    after: b.connect_timeout,
                });
            }
        }
        // The event stream is dropped here: its reader keeps draining the master's output,
        // which is quiet from now on (LogLevel=ERROR).
        let mut check = base_args.clone();
        check.extend(["-S", control, "-O", "check", &destination].map(String::from));
        inner
            .run_checked(
                &Command::new("ssh").args(check),
                &format!("check the ssh master connection to {location}"),
            )
            .await?;
        master_pid = process.id();
        master = Some(process);
    } else {
        // Without a master, prove the host and key work now rather than at the first command.
        let mut args = base_args.clone();
        args.extend(
            [
                "-o",
                "ControlMaster=no",
                "-o",
                "ControlPath=none",
                "-T",
                &destination,
                "--",
                "true",
            ]
            .map(String::from),
        );
        let out = with_deadline(
            b.connect_timeout + DEADLINE_GRACE,
            inner.output(&Command::new("ssh").args(args)),
        )
        .await
        .ok_or_else(|| LaunchError::Timeout {
            host: location.clone(),
            after: b.connect_timeout,
        })??;
        if !out.success() {
            return Err(fail(
                out.status.unwrap_or(ExitStatus::from_code(-1)),
                &out.stderr_text(),
            ));
        }
    }

    let exit = control.as_ref().map(|control| {
        let mut args = base_args.clone();
        args.extend(["-S", control, "-O", "exit", &destination].map(String::from));
        Command::new("ssh").args(args)
    });
    let close_inner = inner.clone();
    let rm = remove_dir(&dir);
    let close: Box<dyn FnOnce() + Send> =
        Box::new(move || close_connection(close_inner, master, exit, rm));
    tracing::debug!(host = %location, ?control, ?master_pid, "ssh connection ready");
    Ok(Connection {
        destination,
        location,
        base_args,
        dir,
        control,
        master_pid,
        connect_timeout: b.connect_timeout,
        close: Mutex::new(Some(close)),
    })
}

/// Options every ssh invocation of this connection gets. ssh keeps the first value it sees for
/// an option, so ours come before the caller's extra options and override the user's config.
fn base_args(b: &SshBuilder, dir: &str) -> Vec<String> {
    let mut o: Vec<(String, String)> = vec![
        // Never prompt: a password or passphrase prompt would hang a test run.
        ("BatchMode".into(), "yes".into()),
        // Errors only: no "Permanently added ... to the list of known hosts" in the events.
        ("LogLevel".into(), "ERROR".into()),
        (
            "ConnectTimeout".into(),
            secs_rounded_up(b.connect_timeout).to_string(),
        ),
        ("ServerAliveInterval".into(), b.keepalive.0.to_string()),
        ("ServerAliveCountMax".into(), b.keepalive.1.to_string()),
    ];
    match &b.host_keys {
        HostKeys::TrustNew => {
            // accept-new records a new host in the first file only: ours, private to this
            // connection. The user's files are still read, so a known host must match.
            o.push((
                "UserKnownHostsFile".into(),
                format!("{dir}/known_hosts ~/.ssh/known_hosts ~/.ssh/known_hosts2"),
            ));
            o.push(("StrictHostKeyChecking".into(), "accept-new".into()));
        }
        HostKeys::AcceptNew(path) => {
            o.push(("UserKnownHostsFile".into(), ssh_path(path)));
            o.push(("StrictHostKeyChecking".into(), "accept-new".into()));
        }
        HostKeys::Strict(path) => {
            o.push(("UserKnownHostsFile".into(), ssh_path(path)));
            o.push(("StrictHostKeyChecking".into(), "yes".into()));
        }
        HostKeys::System => {}
        HostKeys::AcceptAny => {
            o.push(("UserKnownHostsFile".into(), "/dev/null".into()));
            o.push(("StrictHostKeyChecking".into(), "no".into()));
        }
    }
    if let Some(key) = &b.key {
        o.push(("IdentityFile".into(), ssh_path(key)));
        o.push(("IdentitiesOnly".into(), "yes".into()));
    }
    o.extend(b.options.iter().cloned());
    let mut args = Vec::new();
    for (k, v) in o {
        args.push("-o".to_string());
        args.push(format!("{k}={v}"));
    }
    if let Some(port) = b.port {
        args.extend(["-p".to_string(), port.to_string()]);
    }
    args
}

/// A path as an ssh option value: ssh splits values on whitespace unless they are quoted.
fn ssh_path(path: &std::path::Path) -> String {
    let s = path.to_string_lossy();
    if s.contains(char::is_whitespace) {
        format!("\"{s}\"")
    } else {
        s.into_owned()
    }
}

fn remove_dir(dir: &str) -> Command {
    Command::new("rm").args(["-rf", "--", dir])
}

/// Sorts a failed ssh client's complaint into unreachable, refused credentials, bad key or
/// timeout.
fn classify(location: &str, timeout: Duration, status: ExitStatus, stderr: &str) -> LaunchError {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("@@@"))
        .collect();
    let reason = if lines.is_empty() {
        format!("ssh {status} and said nothing")
    } else {
        let tail = &lines[lines.len().saturating_sub(3)..];
        tail.iter()
            .map(|l| l.strip_prefix("ssh: ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let said = stderr.to_ascii_lowercase();
    let host = location.to_string();
    // ssh names the key file itself when it cannot use it, then goes on to fail authentication.
    if let Some(path) = key_complaint(stderr) {
        return LaunchError::BadKey { path, reason };
    }
    if said.contains("permission denied")
        || said.contains("too many authentication failures")
        || said.contains("host key verification failed")
        || said.contains("no matching host key type")
    {
        LaunchError::AuthFailed { host, reason }
    } else if said.contains("timed out") {
        LaunchError::Timeout {
            host,
            after: timeout,
        }
    } else {
        LaunchError::Unreachable { host, reason }
    }
}

/// The key file ssh refused to load, if it said so: `Load key "PATH": invalid format`, or
/// `Warning: Identity file PATH not accessible: ...`.
fn key_complaint(stderr: &str) -> Option<std::path::PathBuf> {
    for line in stderr.lines() {
        if let Some(rest) = line.trim().strip_prefix("Load key \"")
            && let Some((path, _)) = rest.split_once("\":")
        {
            return Some(path.into());
        }
        if let Some(rest) = line.trim().strip_prefix("Warning: Identity file ")
            && let Some((path, _)) = rest.split_once(" not accessible")
        {
            return Some(path.into());
        }
    }
    None
}

/// Asks the master to exit, makes sure it has, and removes the private directory. Runs on a
/// thread of its own, bounded in time, because it is called from `Drop`, which cannot await
/// and may run inside any runtime.
fn close_connection<L: Launcher>(
    inner: L,
    master: Option<L::Process>,
    exit: Option<Command>,
    rm: Command,
) {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let work = move || {
        futures_lite::future::block_on(async {
            let mut master = master;
            if let (Some(process), Some(exit)) = (&mut master, &exit) {
                let _ = with_deadline(CLOSE_STEP, inner.output(exit)).await;
                let _ = with_deadline(CLOSE_STEP, process.wait()).await;
            }
            // Kills the master if it did not exit on request.
            drop(master);
            let _ = with_deadline(CLOSE_STEP, inner.output(&rm)).await;
        });
        let _ = done_tx.send(());
    };
    match std::thread::Builder::new()
        .name("harness-ssh-close".into())
        .spawn(work)
    {
        Ok(_) => {
            let _ = done_rx.recv_timeout(CLOSE_TOTAL);
        }
        Err(e) => tracing::warn!("could not close an ssh connection cleanly: {e}"),
    }
}

/// Runs `fut` until it finishes or `limit` passes; `None` on timeout. The timer is a thread
/// that sleeps on a channel, so it works without any async runtime and ends as soon as the
/// future wins.
pub(super) async fn with_deadline<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let (fired_tx, fired_rx) = async_channel::bounded::<()>(1);
    let (cancel_tx, cancel_rx) = mpsc::channel::<()>();
    let timer = std::thread::Builder::new()
        .name("harness-deadline".into())
        .spawn(move || {
            let _ = cancel_rx.recv_timeout(limit);
            drop(fired_tx);
        });
    if timer.is_err() {
        // No thread, no timer: wait without a limit rather than fail.
        return Some(fut.await);
    }
    let result = futures_lite::future::or(async { Some(fut.await) }, async {
        let _ = fired_rx.recv().await;
        None
    })
    .await;
    drop(cancel_tx);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: &LaunchError) -> &'static str {
        match e {
            LaunchError::Unreachable { .. } => "unreachable",
            LaunchError::AuthFailed { .. } => "auth",
            LaunchError::BadKey { .. } => "badkey",
            LaunchError::Timeout { .. } => "timeout",
            _ => "other",
        }
    }

    #[test]
    fn ssh_complaints_are_sorted() {
        let t = Duration::from_secs(10);
        let s = ExitStatus::from_code(255);
        let cases = [
            (
                "ssh: connect to host 127.0.0.1 port 1: Connection refused",
                "unreachable",
            ),
            (
                "ssh: Could not resolve hostname nowhere: Name or service not known",
                "unreachable",
            ),
            ("root@127.0.0.1: Permission denied (publickey).", "auth"),
            ("Host key verification failed.", "auth"),
            ("Connection timed out during banner exchange", "timeout"),
            (
                "Load key \"/tmp/k\": invalid format\nroot@h: Permission denied (publickey).",
                "badkey",
            ),
            ("", "unreachable"),
        ];
        for (stderr, want) in cases {
            let e = classify("root@h:22", t, s, stderr);
            assert_eq!(kind(&e), want, "{stderr:?} -> {e}");
            assert!(
                e.to_string().contains("root@h:22") || kind(&e) == "badkey",
                "{e}"
            );
        }
    }

    #[test]
    fn deadline_cuts_a_stuck_future_and_lets_a_quick_one_through() {
        smol::block_on(async {
            let stuck = with_deadline(
                Duration::from_millis(50),
                futures_lite::future::pending::<()>(),
            )
            .await;
            assert_eq!(stuck, None);
            let quick = with_deadline(Duration::from_secs(60), async { 7 }).await;
            assert_eq!(quick, Some(7));
        });
    }
}
