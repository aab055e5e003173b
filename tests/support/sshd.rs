//! A throwaway sshd on 127.0.0.1 for tests, examples and benchmarks.
//!
//! Everything it uses is its own: a config, a host key and an authorized client key, generated
//! with `ssh-keygen` into a temporary directory. It never reads the machine's sshd config or
//! keys. It logs in as the user running it (root in CI). Dropping it kills sshd and its
//! per-connection processes by pid and removes the directory.
//!
//! Include it with `#[path = "support/sshd.rs"] mod sshd;`.

// Each test, example and benchmark that includes this file uses a different part of it, so
// some items are unused in each; `expect` would fail where all of them are used.
#![allow(dead_code, reason = "shared by several crates that each use a part")]

use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long sshd may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running sshd. Dropping it stops it and removes its files.
pub struct Sshd {
    child: Child,
    port: u16,
    user: String,
    // Declared last: removed after sshd is gone.
    dir: tempfile::TempDir,
}

impl Sshd {
    /// Generates keys and a config, starts sshd on a free port of 127.0.0.1 and waits until it
    /// accepts connections.
    pub fn start() -> io::Result<Sshd> {
        let dir = tempfile::Builder::new().prefix("harness-sshd.").tempdir()?;
        let d = dir.path();
        keygen(&d.join("host_key"))?;
        keygen(&d.join("client_key"))?;
        keygen(&d.join("stranger_key"))?;
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))?;
        std::fs::create_dir(d.join("home"))?;
        std::fs::create_dir(d.join("ssh-state"))?;
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd")?;
        let user = current_user()?;

        // The free port may be taken by someone else before sshd binds it: then try another.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let mut child = spawn_sshd(d, port)?;
            match wait_listening(&mut child, port, d) {
                Ok(()) => {
                    return Ok(Sshd {
                        child,
                        port,
                        user,
                        dir,
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if attempt >= 3 || !read_log(d).contains("Address already in use") {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user to log in as: whoever runs the test.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private key that sshd accepts.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// A valid private key that sshd does not accept.
    pub fn stranger_key(&self) -> PathBuf {
        self.dir.path().join("stranger_key")
    }

    /// A `known_hosts` line for this sshd's host key.
    pub fn known_hosts_line(&self) -> String {
        let public = std::fs::read_to_string(self.dir.path().join("host_key.pub"))
            .expect("the host key was generated");
        let mut words = public.split_whitespace();
        let (kind, key) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    /// A short directory for ssh's per-connection state (its control socket), inside ours.
    pub fn ssh_state_dir(&self) -> PathBuf {
        self.dir.path().join("ssh-state")
    }

    /// Where the test's files live; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// sshd's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What sshd logged.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Each connection is served by a child of the listener in a session of its own, out of
        // reach of a group kill: find them while they are still the listener's children.
        let listener = self.child.id();
        for pid in children_of(listener) {
            kill(pid);
        }
        kill(listener);
        let _ = self.child.wait();
    }
}

fn wait_listening(child: &mut Child, port: u16, d: &Path) -> io::Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "sshd exited with {status} before listening: {}",
                read_log(d)
            )));
        }
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(io::Error::other(format!(
                "sshd did not listen on port {port} within {START_TIMEOUT:?}: {}",
                read_log(d)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_log(d: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(d.join("sshd.log")) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Writes the config for `port` into `d` and starts sshd with it.
fn spawn_sshd(d: &Path, port: u16) -> io::Result<Child> {
    let config = format!(
        "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {dir}/host_key\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             PidFile none\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             # Many remote processes run over one multiplexed connection.\n\
             MaxSessions 100\n\
             MaxStartups 100:30:200\n\
             # Sessions see a HOME of their own: the login shell would otherwise read the\n\
             # machine user's ~/.bashrc for every command, which is not ours to depend on.\n\
             SetEnv HOME={dir}/home\n",
        dir = d.display()
    );
    std::fs::write(d.join("sshd_config"), config)?;

    let log = std::fs::File::create(d.join("sshd.log"))?;
    let mut cmd = Command::new("/usr/sbin/sshd");
    cmd.args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0);
    // SAFETY: only an async-signal-safe prctl between fork and exec. sshd then dies with
    // the thread that started it, so a killed test run leaves no sshd behind.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
    cmd.spawn()
}

fn kill(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// The pids whose parent is `parent`, from `/proc`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // The command name may hold spaces and parentheses; fields follow the last ')'.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn keygen(path: &Path) -> io::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "harness-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ssh-keygen for {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// A port nothing listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn current_user() -> io::Result<String> {
    let out = Command::new("id").arg("-un").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
