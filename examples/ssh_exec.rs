//! Run commands on another host over SSH: stream a command's events, pass environment and a
//! working directory, stop a remote process with a signal, and move a file there and back.
//!
//! ```text
//! cargo run --example ssh_exec
//! ```
//!
//! With `HARNESS_SSH_HOST` (`host` or `host:port`), `HARNESS_SSH_USER` and `HARNESS_SSH_KEY`
//! (a private key file) set, it uses that host. Otherwise it starts a throwaway sshd on
//! 127.0.0.1 with keys of its own (it needs `/usr/sbin/sshd` and `ssh-keygen`, from the
//! openssh-server and openssh-client packages) and removes it at the end.

#[path = "../tests/support/sshd.rs"]
mod sshd;

use std::error::Error;
use std::path::PathBuf;

use harness::exec::{Command, Executor, Launcher, ProcessEvent, ProcessHandle};

fn main() -> Result<(), Box<dyn Error>> {
    // The library needs no particular async runtime; smol's block_on is enough here.
    smol::block_on(run())
}

async fn run() -> Result<(), Box<dyn Error>> {
    // Keep the throwaway sshd (if any) alive until the end of `run`: dropping it stops sshd.
    let (_sshd, host, user, key) = match (
        std::env::var("HARNESS_SSH_HOST"),
        std::env::var("HARNESS_SSH_USER"),
        std::env::var("HARNESS_SSH_KEY"),
    ) {
        (Ok(host), Ok(user), Ok(key)) => (None, host, user, PathBuf::from(key)),
        _ => {
            let sshd = sshd::Sshd::start()?;
            println!("started a throwaway sshd on {}", sshd.host());
            let (host, user, key) = (sshd.host(), sshd.user().to_string(), sshd.key());
            (Some(sshd), host, user, key)
        }
    };

    // One master connection (ssh ControlMaster) is opened here; every command below runs as a
    // session over it, in a few milliseconds. A bad host or key fails here, with an error that
    // says which.
    let executor = Executor::ssh("demo", &host, &user, &key).await?;
    let ssh = executor.launcher();
    println!("connected to {}", ssh.host());

    // 1. Execute: events arrive as the remote command runs. `Started` carries the remote pid.
    let mut result = executor
        .execute(Command::new("sh").args(["-c", "echo hello from $(uname -n); echo oops >&2"]))
        .await?;
    while let Some(event) = result.events.recv().await {
        println!("  event: {event:?}");
    }

    // 2. Environment and working directory. Values are quoted for the remote shell, so quotes,
    //    spaces and `$` arrive exactly as given.
    let out = ssh
        .output(
            &Command::new("sh")
                .args(["-c", "echo \"GREETING=$GREETING, in $(pwd)\""])
                .env("GREETING", "it's a \"quoted\" $value")
                .current_dir("/tmp"),
        )
        .await?;
    println!("  {}", out.stdout_text());

    // 3. A signal. The remote process runs in a process group of its own; `terminate` sends
    //    SIGTERM to that whole group over the connection.
    let mut sleeper = executor
        .execute(Command::new("sh").args(["-c", "sleep 300 & wait"]))
        .await?;
    if let Some(ProcessEvent::Started { pid }) = sleeper.events.recv().await {
        println!("  started a remote sleep, pid {pid}; sending SIGTERM");
    }
    sleeper.handle.terminate().await?;
    let status = sleeper.handle.wait().await?;
    println!("  it ended with {status} (128 + 15: the shell's way to say SIGTERM)");

    // 4. Files: upload keeps the mode and lands atomically; download streams the bytes back.
    let local_dir = tempfile::tempdir()?;
    let local = local_dir.path().join("notes.txt");
    std::fs::write(&local, "first line\nsecond line\n")?;
    let remote = format!("/tmp/harness-ssh-exec-{}.txt", std::process::id());
    ssh.upload(&local, &remote).await?;
    let back = local_dir.path().join("notes-back.txt");
    ssh.download(&remote, &back).await?;
    println!(
        "  uploaded {} to {remote} and downloaded it again: {}",
        local.display(),
        if std::fs::read(&local)? == std::fs::read(&back)? {
            "identical"
        } else {
            "DIFFERENT"
        }
    );
    ssh.run_checked(
        &Command::new("rm").args(["-f", &remote]),
        "remove the demo file",
    )
    .await?;

    // Dropping the executor closes the master connection and removes its control socket.
    Ok(())
}
