//! `Service`: one running service of a test's topology, as a test parameter receives it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::orchestrator::{LogLine, OrchestratorError, ServiceManager};

use super::topology::{Topology, log_file_tail};

/// One service of the running topology: its name, address, environment and output.
///
/// A test receives it by naming a parameter after the service (`api_server: Service` for
/// `api-server`), or from [`Topology::service`](super::Topology::service).
#[derive(Clone)]
pub struct Service {
    pub(crate) name: String,
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) logs: LogSource,
    /// Further ports it publishes (a container's `ports:`): where it runs, where this machine
    /// reaches it.
    pub(crate) ports: Vec<(u16, SocketAddr)>,
    /// The topology it belongs to, which runs commands in it.
    pub(crate) topology: Topology,
}

/// What a command run in a service ([`Service::exec`]) wrote, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// The exit code, if it exited (rather than being killed by a signal).
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Its standard output, lines joined with `\n`.
    pub stdout: String,
    /// Its standard error, lines joined with `\n`.
    pub stderr: String,
}

impl ExecOutput {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl From<crate::exec::Output> for ExecOutput {
    fn from(output: crate::exec::Output) -> Self {
        Self {
            code: output.status.and_then(|s| s.code()),
            signal: output.status.and_then(|s| s.signal()),
            stdout: output.stdout_text(),
            stderr: output.stderr_text(),
        }
    }
}

/// Where a service's output is read from.
#[derive(Clone)]
pub(crate) enum LogSource {
    /// The manager of a copy this process started.
    Manager(ServiceManager),
    /// The log file of a copy a supervisor owns.
    File(Option<PathBuf>),
}

impl Service {
    /// The service's name in the topology file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address the test reaches the service at.
    ///
    /// # Panics
    ///
    /// If the service has no port (give it `port: auto` or a number in the topology file);
    /// [`Service::try_addr`] does not panic.
    pub fn addr(&self) -> SocketAddr {
        self.try_addr().unwrap_or_else(|| {
            panic!(
                "service {} has no address: give it `port: auto` or a port number in the \
                 topology file",
                self.name
            )
        })
    }

    /// The address, if the service has a port.
    pub fn try_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The address this machine reaches port `port` of the service at, where it runs: its
    /// own port (the number in `PORT`, for a container the port inside it), or one of a
    /// container's further `ports:`. `None` for a port the topology does not declare.
    pub fn addr_of(&self, port: u16) -> Option<SocketAddr> {
        if self.env_var("PORT").and_then(|p| p.parse::<u16>().ok()) == Some(port) {
            return self.addr;
        }
        self.ports
            .iter()
            .find(|(inside, _)| *inside == port)
            .map(|(_, addr)| *addr)
    }

    /// Every declared port of the service and the address this machine reaches it at, its
    /// own first.
    pub fn ports(&self) -> Vec<(u16, SocketAddr)> {
        let own = self
            .env_var("PORT")
            .and_then(|p| p.parse::<u16>().ok())
            .zip(self.addr);
        own.into_iter().chain(self.ports.iter().copied()).collect()
    }

    /// Runs `argv` where the service runs, to its end, and returns what it wrote and how it
    /// ended: beside a process, with the service's environment and working directory; inside
    /// a container (`docker exec`); on a LAN host, over the service's SSH connection. Works on
    /// a shared copy too (its owner runs the command). A command that runs and fails is no
    /// error: check [`ExecOutput::success`].
    ///
    /// ```ignore
    /// let out = redis.exec(&["redis-cli", "-p", "6379", "ping"]).await?;
    /// assert_eq!(out.stdout, "PONG");
    /// ```
    pub async fn exec<S: AsRef<str>>(&self, argv: &[S]) -> Result<ExecOutput, OrchestratorError> {
        self.topology.exec(&self.name, argv).await
    }

    /// The address's host part. Panics like [`Service::addr`].
    pub fn host(&self) -> IpAddr {
        self.addr().ip()
    }

    /// The address's port. Panics like [`Service::addr`].
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// `scheme://host:port`, such as `http://127.0.0.1:40123`. Panics like [`Service::addr`].
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr())
    }

    /// The variables harness gave the service (`PORT`, `<DEP>_ADDR`, and the `env:` of its
    /// target, placeholders filled in), in order.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// One variable of [`Service::env`].
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The service's last lines of output (stdout and stderr), oldest first.
    pub fn logs(&self) -> Vec<LogLine> {
        match &self.logs {
            LogSource::Manager(manager) => manager.logs(&self.name).unwrap_or_default(),
            LogSource::File(Some(file)) => log_file_tail(&self.name, file),
            LogSource::File(None) => Vec::new(),
        }
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Reads the env file harness wrote for a service (`export NAME='value'` lines, `'` written as
/// `'\''`), as a shell would.
pub(crate) fn parse_env_file(text: &str) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("export ") {
        rest = &rest[start + "export ".len()..];
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let mut value = String::new();
        let mut chars = after.char_indices().peekable();
        let mut end = after.len();
        loop {
            match chars.next() {
                Some((_, '\'')) => {
                    for (_, c) in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                        value.push(c);
                    }
                }
                Some((_, '\\')) => {
                    if let Some((_, c)) = chars.next() {
                        value.push(c);
                    }
                }
                Some((i, _)) => {
                    end = i;
                    break;
                }
                None => break,
            }
        }
        vars.push((name.to_string(), value));
        rest = &after[end..];
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::render_env_file;

    #[test]
    fn reads_back_what_the_env_file_writer_wrote() {
        let vars = [
            ("PORT", "4000"),
            ("MOTTO", "it's $5\nand `more`"),
            ("EMPTY", ""),
            ("DB_ADDR", "127.0.0.1:5432"),
        ];
        let text = render_env_file(vars).unwrap();
        let read = parse_env_file(&text);
        let expected: Vec<(String, String)> = vars
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(read, expected);
    }
}
