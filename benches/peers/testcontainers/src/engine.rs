//! A few direct calls to the Docker engine, over its unix socket, outside testcontainers: whether
//! the image is present locally, and whether a container is gone.
//!
//! Blocking and one request per connection (HTTP/1.0, so the engine closes the connection after
//! the response and never chunks it): each call is a fraction of a millisecond.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The engine's unix socket.
#[derive(Clone, Debug)]
pub struct Engine {
    pub socket: PathBuf,
}

impl Engine {
    /// The socket `DOCKER_HOST` names (`unix://PATH`), or `/var/run/docker.sock` without it.
    pub fn from_env() -> Result<Engine> {
        match std::env::var("DOCKER_HOST") {
            Err(_) => Ok(Engine {
                socket: PathBuf::from("/var/run/docker.sock"),
            }),
            Ok(host) if host.trim().is_empty() => Ok(Engine {
                socket: PathBuf::from("/var/run/docker.sock"),
            }),
            Ok(host) => match host.strip_prefix("unix://") {
                Some(path) => Ok(Engine {
                    socket: PathBuf::from(path),
                }),
                None => bail!(
                    "DOCKER_HOST={host}: only a unix:// socket is supported by this peer (it asks \
                     the engine directly whether the image is local and the container gone)"
                ),
            },
        }
    }

    /// One request with no body; the status code and the body.
    fn request(&self, method: &str, path: &str) -> Result<(u16, Vec<u8>)> {
        send(&self.socket, method, path)
            .with_context(|| format!("{method} {path} on {}", self.socket.display()))
    }

    /// Whether the engine has the image locally (`GET /images/NAME/json`).
    pub fn has_image(&self, reference: &str) -> Result<bool> {
        let (status, body) = self.request("GET", &format!("/images/{reference}/json"))?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            _ => bail!(
                "GET /images/{reference}/json: status {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
        }
    }

    /// Whether the container still exists, running or not (`GET /containers/ID/json`).
    pub fn container_exists(&self, id: &str) -> Result<bool> {
        let (status, body) = self.request("GET", &format!("/containers/{id}/json"))?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            _ => bail!(
                "GET /containers/{id}/json: status {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
        }
    }

    /// Polls every 5 ms until the container no longer exists.
    pub fn wait_gone(&self, id: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.container_exists(id)? {
            if Instant::now() >= deadline {
                bail!("container {id} still exists {timeout:?} after testcontainers removed it");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

fn send(socket: &Path, method: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let head_end = find(&answer, b"\r\n\r\n").ok_or_else(|| invalid("no end of headers"))?;
    let status_line = answer[..head_end]
        .split(|&b| b == b'\r')
        .next()
        .unwrap_or_default();
    let status = std::str::from_utf8(status_line)
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    Ok((status, answer[head_end + 4..].to_vec()))
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
