//! `SshLauncher`: runs commands on another host through the system `ssh`, over one multiplexed
//! connection.
//!
//! Why the system client rather than an SSH library: it reads the user's `~/.ssh/config`
//! (jump hosts, agents, certificates), and its ControlMaster mode gives cheap sessions over one
//! authenticated connection. The libraries that drive it (the `openssh` crate) need tokio.

mod files;
mod master;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::ExitStatus;
use crate::exec::launcher::Launcher;
use crate::exec::quote::quote;
use crate::exec::remote::{self, RemoteProcess, Transport};

use master::Connection;

/// How long a connection attempt may take unless [`SshBuilder::connect_timeout`] says otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive probes: one every 5 s, and 3 unanswered ones end the connection, so a dead link
/// is noticed in about 15 s instead of the kernel's TCP timeout (minutes to hours).
const KEEPALIVE_INTERVAL_SECS: u32 = 5;
const KEEPALIVE_COUNT_MAX: u32 = 3;

/// Runs commands on a remote host over SSH, through its inner launcher.
///
/// [`SshLauncher::builder`] sets the options; [`SshBuilder::connect`] opens one master
/// connection (`ssh -M`, ControlMaster). Every command then runs as a session over that
/// connection: no new TCP connection, key exchange or authentication, so a command costs a few
/// milliseconds instead of a few hundred. Clones share the connection. When the last clone is
/// dropped, the master is asked to exit (`ssh -O exit`), killed if it does not, and its private
/// directory removed; the drop waits for that (milliseconds, at most a few seconds when the
/// master hangs). If the harness dies instead, the master dies with it (`PR_SET_PDEATHSIG`
/// through the inner launcher) and the host's sshd ends the session.
///
/// Each command runs in a wrapper at the far end that reports its pid, runs it in a session
/// and process group of its own, and kills that group when the connection drops (see
/// [`RemoteProcess`]). Program, arguments, environment and working directory are quoted for
/// the remote shell, so any string arrives as it was given.
///
/// ```no_run
/// # smol::block_on(async {
/// use harness::exec::{Command, Launcher, LocalLauncher, SshLauncher};
/// let ssh = SshLauncher::builder("10.0.0.2:2222", "deploy")
///     .key("/home/me/.ssh/id_ed25519")
///     .connect(LocalLauncher)
///     .await?;
/// let out = ssh.output(&Command::new("uname").arg("-n")).await?;
/// println!("{}", out.stdout_text());
/// ssh.upload("target/release/server", "/opt/server/bin/server").await?;
/// # Ok::<(), harness::exec::LaunchError>(()) });
/// ```
///
/// # Known limits
///
/// - The master runs in the foreground as a child of the inner launcher rather than with
///   `ControlPersist`, because a persisted master forks into the background and would outlive
///   the harness. Its life is the launcher's life instead.
/// - An sshd allows 10 sessions per connection unless its `MaxSessions` says otherwise; each
///   running remote process holds one. Raise `MaxSessions` on hosts that run more at once.
/// - The remote user's login shell starts for every command, so a slow `~/.bashrc` (which bash
///   reads for commands run by sshd) slows every command.
pub struct SshLauncher<L> {
    inner: L,
    conn: Arc<Connection>,
    /// Whether commands use the master connection or open a fresh one each.
    muxed: bool,
}

impl<L: Clone> Clone for SshLauncher<L> {
    fn clone(&self) -> Self {
        SshLauncher {
            inner: self.inner.clone(),
            conn: self.conn.clone(),
            muxed: self.muxed,
        }
    }
}

impl<L> std::fmt::Debug for SshLauncher<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshLauncher")
            .field("host", &self.conn.location)
            .field("control_path", &self.conn.control)
            .field("multiplexed", &self.muxed)
            .finish()
    }
}

/// Which host keys an SSH connection accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostKeys {
    /// The default. A host listed in the user's known-hosts files (`~/.ssh/known_hosts`,
    /// `/etc/ssh/ssh_known_hosts`) must present the key listed there. A host listed nowhere is
    /// accepted on first use and remembered for this connection only: nothing is written to the
    /// user's files. Test hosts are often recreated with new keys; this lets them in without
    /// weakening the check for hosts the user already knows.
    #[default]
    TrustNew,
    /// `StrictHostKeyChecking=accept-new` with this known-hosts file: new hosts are added to
    /// it, a changed key is refused.
    AcceptNew(PathBuf),
    /// `StrictHostKeyChecking=yes` with this known-hosts file: only hosts listed in it.
    Strict(PathBuf),
    /// Whatever the user's ssh configuration says. With `BatchMode`, an unknown host is refused
    /// unless the configuration accepts new hosts.
    System,
    /// No checking at all (`StrictHostKeyChecking=no`, no known-hosts file). Only for
    /// throwaway hosts on a network you trust.
    AcceptAny,
}

/// Options for an SSH connection; [`SshBuilder::connect`] opens it.
#[derive(Debug, Clone)]
#[must_use = "an SshBuilder does nothing until `connect` is called"]
pub struct SshBuilder {
    host: String,
    port: Option<u16>,
    user: String,
    key: Option<PathBuf>,
    connect_timeout: Duration,
    keepalive: (u32, u32),
    host_keys: HostKeys,
    options: Vec<(String, String)>,
    multiplex: bool,
    temp_dir: String,
}

impl SshLauncher<()> {
    /// Options for a connection to `host` as `user`. `host` may carry a port
    /// (`"10.0.0.2:2222"`, `"[fe80::1]:2222"`); without one, ssh's default (22, or what the
    /// user's config says) applies.
    pub fn builder(host: impl Into<String>, user: impl Into<String>) -> SshBuilder {
        let (host, port) = split_host_port(&host.into());
        SshBuilder {
            host,
            port,
            user: user.into(),
            key: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keepalive: (KEEPALIVE_INTERVAL_SECS, KEEPALIVE_COUNT_MAX),
            host_keys: HostKeys::default(),
            options: Vec::new(),
            multiplex: true,
            temp_dir: "/tmp".into(),
        }
    }
}

impl SshBuilder {
    /// Connects to `port` (overrides a port given with the host).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Authenticates with the private key at `path`, and only with it (`IdentitiesOnly`).
    /// Without a key, ssh uses the agent and the user's default keys.
    pub fn key(mut self, path: impl Into<PathBuf>) -> Self {
        self.key = Some(path.into());
        self
    }

    /// How long connecting may take: TCP connect, protocol banner, key exchange and
    /// authentication. 10 s by default. Whole seconds; a fraction rounds up.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sends a keep-alive every `interval` and drops the connection after `count` unanswered
    /// ones. By default every 5 s, 3 times: a dead link is noticed in about 15 s.
    pub fn keepalive(mut self, interval: Duration, count: u32) -> Self {
        self.keepalive = (secs_rounded_up(interval), count.max(1));
        self
    }

    /// Which host keys to accept; [`HostKeys::TrustNew`] by default.
    pub fn host_keys(mut self, policy: HostKeys) -> Self {
        self.host_keys = policy;
        self
    }

    /// Shorthand for `host_keys(HostKeys::AcceptNew(path))`: check against, and record new
    /// hosts in, the known-hosts file at `path`.
    pub fn known_hosts(self, path: impl Into<PathBuf>) -> Self {
        self.host_keys(HostKeys::AcceptNew(path.into()))
    }

    /// Passes `-o key=value` to every ssh invocation, for what the builder has no method for.
    /// Options given here override the user's config, but not the options the launcher
    /// depends on (BatchMode, the control socket, the keep-alives).
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// Whether commands share one master connection (the default). Without it, every command
    /// opens a connection of its own, as a plain `ssh host cmd` does.
    pub fn multiplex(mut self, on: bool) -> Self {
        self.multiplex = on;
        self
    }

    /// Where the connection's private directory (control socket, host-key memory) is created,
    /// on the machine where `ssh` runs: `/tmp` by default, rather than `$TMPDIR`, because a
    /// control socket path must fit in 108 bytes. Keep it short.
    pub fn temp_dir(mut self, dir: impl Into<String>) -> Self {
        self.temp_dir = dir.into();
        self
    }

    /// Opens the connection through `inner` (which runs the `ssh` client) and waits until it
    /// is ready, so an unreachable host, a refused key or a bad key file fails here, each with
    /// its own [`LaunchError`] variant naming the host or the file.
    pub async fn connect<L: Launcher>(self, inner: L) -> Result<SshLauncher<L>, LaunchError> {
        let muxed = self.multiplex;
        let conn = master::connect(self, &inner).await?;
        Ok(SshLauncher {
            inner,
            conn: Arc::new(conn),
            muxed,
        })
    }
}

impl<L: Launcher> SshLauncher<L> {
    /// The host as `user@host:port`.
    pub fn host(&self) -> &str {
        &self.conn.location
    }

    /// A launcher for the same host whose commands each open a fresh connection instead of
    /// using the master: slower, but independent of it. Shares the options and the host-key
    /// memory of this one.
    pub fn unmultiplexed(&self) -> Self {
        SshLauncher {
            inner: self.inner.clone(),
            conn: self.conn.clone(),
            muxed: false,
        }
    }

    /// The pid of the master `ssh` process, as the inner launcher reports it; `None` without
    /// multiplexing.
    pub fn master_pid(&self) -> Option<u32> {
        self.conn.master_pid
    }

    /// The private directory holding the control socket and the host-key memory, on the
    /// machine where `ssh` runs. It is removed when the connection closes.
    pub fn state_dir(&self) -> &str {
        &self.conn.dir
    }

    /// The local `ssh` command that runs `remote_command` (one string, parsed by the remote
    /// login shell) at the far end.
    fn ssh_command(&self, remote_command: String, base: &Command) -> Command {
        let mut args = self.conn.base_args.clone();
        match (&self.conn.control, self.muxed) {
            (Some(control), true) => {
                args.extend(["-S".into(), control.clone()]);
                args.extend(["-o".into(), "ControlMaster=no".into()]);
            }
            _ => {
                args.extend(["-o".into(), "ControlMaster=no".into()]);
                args.extend(["-o".into(), "ControlPath=none".into()]);
            }
        }
        // No terminal, and no RemoteCommand from the user's config competing with ours.
        args.extend(["-T".into(), "-o".into(), "RemoteCommand=none".into()]);
        args.extend([self.conn.destination.clone(), "--".into(), remote_command]);
        base.rewrap("ssh", args)
    }
}

impl<L: Launcher> Transport for SshLauncher<L> {
    type Inner = L;

    fn inner(&self) -> &L {
        &self.inner
    }

    fn shell_command(&self, script: &str, base: &Command) -> Command {
        // ssh joins its arguments with spaces and the remote login shell parses the result
        // again, so the command travels as one string that the login shell splits into exactly
        // `sh`, `-c` and the script. Running the script with `sh` rather than the login shell
        // keeps it POSIX whatever the user's shell is.
        self.ssh_command(format!("sh -c {}", quote(script)), base)
    }

    fn location(&self) -> String {
        self.conn.location.clone()
    }

    fn classify_failure(&self, status: ExitStatus, stderr: &str) -> LaunchError {
        self.conn.classify(status, stderr)
    }
}

impl<L: Launcher> Launcher for SshLauncher<L> {
    type Process = RemoteProcess<SshLauncher<L>>;

    async fn spawn(&self, cmd: &Command) -> Result<Self::Process, LaunchError> {
        remote::spawn(self, cmd).await
    }

    fn location(&self) -> String {
        self.conn.location.clone()
    }
}

/// Splits `host:port`, `[v6]:port`, `[v6]` and a bare host or IPv6 address.
fn split_host_port(s: &str) -> (String, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        return (
            host.to_string(),
            tail.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    match s.rsplit_once(':') {
        // More than one colon and no brackets: an IPv6 address without a port.
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host.to_string(), Some(port)),
            Err(_) => (s.to_string(), None),
        },
        _ => (s.to_string(), None),
    }
}

fn secs_rounded_up(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_split() {
        let cases = [
            ("example.com", ("example.com", None)),
            ("10.0.0.2:2222", ("10.0.0.2", Some(2222))),
            ("[fe80::1]:22", ("fe80::1", Some(22))),
            ("[::1]", ("::1", None)),
            ("::1", ("::1", None)),
            ("host:notaport", ("host:notaport", None)),
        ];
        for (input, (host, port)) in cases {
            assert_eq!(split_host_port(input), (host.to_string(), port), "{input}");
        }
    }

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(secs_rounded_up(Duration::from_millis(1500)), 2);
        assert_eq!(secs_rounded_up(Duration::from_secs(3)), 3);
        assert_eq!(secs_rounded_up(Duration::ZERO), 1);
    }
}
