//! Control a managed process: signal it, restart it, stop it.
//!
//! ```text
//! cargo run --example process_control
//! ```
//!
//! The process is a shell that reports every signal it receives. A `ManagedProcess` owns its
//! lifecycle: `restart` stops it gracefully and starts it again (with a new pid), the restart
//! policy brings it back when it dies, and `stop` sends `SIGTERM`, waits a grace period, then
//! `SIGKILL`s what is left. Its events form one stream across restarts.

use std::time::{Duration, Instant};

use harness::exec::{
    Command, Executor, ManagedProcess, ProcessEvent, ProcessHandle, RestartPolicy, Signal,
};

/// Reports the signals it traps; exits on `SIGTERM` after saying so. Signals reach the whole
/// process group, so the `sleep` it waits on ignores them (in a subshell), and only the shell
/// reacts.
const SERVICE: &str = r#"
ticks=0
trap 'echo "SIGHUP: reloading configuration"' HUP
trap 'echo "SIGUSR1: statistics: $ticks ticks so far"' USR1
trap 'echo "SIGTERM: shutting down gracefully"; exit 0' TERM
echo "up as pid $$"
while :; do (trap '' HUP USR1 TERM; exec sleep 0.1); ticks=$((ticks + 1)); done
"#;

fn pid(pid: Option<u32>) -> String {
    pid.map_or_else(|| "unknown".into(), |p| p.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let start = Instant::now();
        let service = ManagedProcess::new(Command::new("sh").arg("-c").arg(SERVICE))
            // Come back after a crash, at most 3 times, 200 ms after the first one.
            .with_restart(RestartPolicy::OnFailure { max_restarts: 3 })
            .with_backoff(Duration::from_millis(200))
            // How long `stop` and `restart` wait after SIGTERM before SIGKILL.
            .with_stop_grace(Duration::from_secs(3));
        let executor = Executor::local("signal-demo");
        let mut run = executor.execute(service).await?;

        // Print the events as they come, while the code below drives the process.
        let mut events = run.events;
        let printer = smol::spawn(async move {
            while let Some(event) = events.recv().await {
                let line = match event {
                    ProcessEvent::Started { pid } => format!("started, pid {pid}"),
                    ProcessEvent::Stdout(line) => format!("says: {line}"),
                    // The shell reports on stderr when a child of its own was killed.
                    ProcessEvent::Stderr(line) => format!("stderr: {line}"),
                    ProcessEvent::Exited(status) => format!("exited ({status})"),
                };
                println!("  [{:5.2}s] {line}", start.elapsed().as_secs_f64());
            }
            println!(
                "  [{:5.2}s] (event stream ended)",
                start.elapsed().as_secs_f64()
            );
        });
        let handle = &mut run.handle;
        let pause = || smol::Timer::after(Duration::from_millis(400));

        pause().await;
        println!("> running as pid {}; sending SIGHUP", pid(handle.pid()));
        handle.reload().await?;
        pause().await;

        println!("> sending SIGUSR1");
        handle.signal(Signal::User1).await?;
        pause().await;

        let before = handle.pid();
        println!("> restart(): graceful stop, then a new process");
        handle.restart().await?;
        pause().await;
        println!(
            "> pid {} -> {}; restarts so far: {}",
            pid(before),
            pid(handle.pid()),
            handle.restarts()
        );

        println!("> SIGKILL, as if it crashed: the restart policy brings it back");
        handle.kill().await?;
        pause().await;
        println!(
            "> now pid {}; restarts so far: {}",
            pid(handle.pid()),
            handle.restarts()
        );

        println!("> stop(): SIGTERM, then SIGKILL if it is still there after the grace period");
        let status = handle.stop().await?;
        printer.await;
        println!("> stopped ({status}); no restart follows a stop");
        println!("> wait() says: {}", handle.wait().await?);
        Ok(())
    })
}
