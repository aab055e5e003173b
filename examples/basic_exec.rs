//! Run commands through an `Executor` and print their events.
//!
//! ```text
//! cargo run --example basic_exec
//! ```
//!
//! Everything below is written against `Executor<L>` for any launcher `L`, so the same code
//! runs commands inside a container or on another host; only the executor changes:
//!
//! ```text
//! // Inside a running container (`docker exec`):
//! let executor = Executor::docker("my-service", "my-container").await?;
//! // On another machine over SSH (one multiplexed connection, key-based login):
//! let executor = Executor::ssh("my-service", "10.0.0.2", "deploy", "/home/me/.ssh/id_ed25519").await?;
//!
//! show_events(&executor).await?;
//! env_and_working_dir(&executor, "/tmp").await?;
//! ```
//!
//! (`cargo run --example docker_exec` and `cargo run --example ssh_exec` do exactly that.)

use harness::exec::{Command, Executor, Launcher, ProcessEvent, ProcessHandle};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let executor = Executor::local("basic-exec");
        println!(
            "service `{}` runs on: {}\n",
            executor.service_name(),
            executor.launcher().location()
        );

        show_events(&executor).await?;
        let dir = tempfile::tempdir()?;
        env_and_working_dir(&executor, dir.path().to_str().expect("a UTF-8 temp dir")).await?;
        errors(&executor).await;
        Ok(())
    })
}

/// The seed's canonical snippet: execute a command and read its events one by one.
async fn show_events<L: Launcher>(
    executor: &Executor<L>,
) -> Result<(), Box<dyn std::error::Error>> {
    println!("$ echo hello");
    let mut result = executor.execute(Command::new("echo").arg("hello")).await?;
    // `Started` comes first (with the pid), then the output lines, then `Exited`.
    while let Some(event) = result.events.recv().await {
        println!("  {event:?}");
    }
    println!();
    Ok(())
}

/// Environment variables and a working directory, and the output collected in one go.
async fn env_and_working_dir<L: Launcher>(
    executor: &Executor<L>,
    dir: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let script = r#"echo "GREETING=$GREETING"; echo "pwd=$(pwd)"; echo "a warning" >&2; exit 3"#;
    let cmd = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("GREETING", "hello from harness")
        .current_dir(dir);
    println!("$ {}   (GREETING set, in {dir})", cmd.display());

    let mut result = executor.execute(cmd).await?;
    while let Some(event) = result.events.recv().await {
        match event {
            ProcessEvent::Started { pid } => println!("  started, pid {pid}"),
            ProcessEvent::Stdout(line) => println!("  stdout: {line}"),
            ProcessEvent::Stderr(line) => println!("  stderr: {line}"),
            ProcessEvent::Exited(status) => println!("  ended with {status}"),
        }
    }
    // `wait` gives the status too, and can be asked again after the process has ended.
    let status = result.handle.wait().await?;
    println!("  success? {}\n", status.success());

    // Or collect everything, like `std::process::Command::output`.
    let env_clear = Command::new("/usr/bin/env").env_clear().env("ONLY", "this");
    let output = executor.launcher().output(&env_clear).await?;
    println!("$ env   (with env_clear)\n  {:?}\n", output.stdout);
    Ok(())
}

/// What goes wrong is named: the program, the directory.
async fn errors<L: Launcher>(executor: &Executor<L>) {
    for cmd in [
        Command::new("no-such-program-anywhere"),
        Command::new("true").current_dir("/no/such/directory"),
        Command::new(""),
    ] {
        match executor.execute(cmd).await {
            Ok(_) => println!("unexpectedly started"),
            Err(e) => println!("failed to {e}"),
        }
    }
}
