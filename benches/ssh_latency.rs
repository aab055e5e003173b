//! Per-command latency over SSH: `true` run through the multiplexed connection, next to the
//! same command with a fresh `ssh` connection each time, in the same run against the same
//! throwaway sshd on 127.0.0.1.
//!
//! ```text
//! cargo bench --bench ssh_latency
//! ```
//!
//! Goal: under 20 ms per muxed command, and at least 5 times faster than a fresh connection.
//! Both paths run the full launcher: the remote wrapper, the pid report, the watchdog, the
//! events. Only the connection differs.

#[path = "../tests/support/sshd.rs"]
mod sshd;

use std::time::{Duration, Instant};

use harness::exec::{Command, Launcher, LocalLauncher, SshLauncher};

const MUXED_RUNS: usize = 200;
const FRESH_RUNS: usize = 30;
const WARMUP_RUNS: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sshd = sshd::Sshd::start()?;
    smol::block_on(async {
        let ssh = SshLauncher::builder(sshd.host(), sshd.user())
            .key(sshd.key())
            .temp_dir(sshd.ssh_state_dir().to_string_lossy())
            .connect(LocalLauncher)
            .await?;
        let fresh = ssh.unmultiplexed();

        let muxed = measure(&ssh, MUXED_RUNS).await?;
        let fresh = measure(&fresh, FRESH_RUNS).await?;

        println!("ssh latency of `true` against sshd on 127.0.0.1");
        report("multiplexed", &muxed);
        report("fresh connection", &fresh);
        let (m50, f50) = (percentile(&muxed, 50), percentile(&fresh, 50));
        let ratio = f50.as_secs_f64() / m50.as_secs_f64();
        println!("fresh / multiplexed at p50: {ratio:.1}x");
        println!(
            "goal: muxed p50 under 20 ms ({}), at least 5x faster ({})",
            verdict(m50 < Duration::from_millis(20)),
            verdict(ratio >= 5.0)
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

/// Runs `true` `runs` times after a warm-up and returns each run's wall time, sorted.
async fn measure(
    ssh: &SshLauncher<LocalLauncher>,
    runs: usize,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let cmd = Command::new("true");
    for _ in 0..WARMUP_RUNS {
        ssh.run_checked(&cmd, "warm up").await?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        ssh.run_checked(&cmd, "run `true`").await?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i]
}

fn report(name: &str, sorted: &[Duration]) {
    println!(
        "  {name:<17} {:>4} runs   p50 {:>7.2} ms   p90 {:>7.2} ms   min {:>7.2} ms",
        sorted.len(),
        ms(percentile(sorted, 50)),
        ms(percentile(sorted, 90)),
        ms(sorted[0]),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
