//! `harness down [FILE]`: stop a run that `harness up -d` left running: SIGTERM to its
//! supervisor, which stops every service and removes the run's state directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use rustix::process::{Pid, Signal};

use crate::output::{errln, outln};
use crate::run::EXIT_HARNESS_FAILED;
use crate::state::{Run, RunInfo, live_runs};

/// Time for the supervisor's own teardown, beyond the services' stop grace.
const TEARDOWN_MARGIN: Duration = Duration::from_secs(10);

/// How long to wait for the supervisor after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

#[derive(Args)]
pub struct DownArgs {
    /// Stop the runs of this topology file; without it, the one run there is (several are
    /// refused and listed).
    file: Option<PathBuf>,
}

pub fn down(args: DownArgs) -> ExitCode {
    let live = match live_runs(args.file.as_deref(), "down") {
        Ok(live) => live,
        Err(code) => return code,
    };
    if args.file.is_none() && live.len() > 1 {
        errln!("harness down: several topologies are running; name the one to stop:");
        for run in &live {
            match &run.info {
                Some(info) => errln!("  harness down {}", crate::daemon::quote_path(&info.file)),
                None => errln!("  {} (still starting)", run.describe()),
            }
        }
        return ExitCode::from(EXIT_HARNESS_FAILED);
    }
    let mut code = ExitCode::SUCCESS;
    for run in &live {
        if let Err(e) = stop(run) {
            errln!("harness down: failed to {e}");
            code = ExitCode::from(EXIT_HARNESS_FAILED);
        }
    }
    code
}

fn stop(run: &Run) -> Result<(), String> {
    let Some(info) = &run.info else {
        return Err(format!(
            "stop {}: it is still starting (no supervisor recorded yet); try again",
            run.dir.display()
        ));
    };
    let services: Vec<String> = run.services().into_iter().map(|s| s.name).collect();
    let pid = Pid::from_raw(info.pid as i32)
        .ok_or_else(|| format!("stop {}: bad supervisor pid {}", run.describe(), info.pid))?;
    let bound = info.stop_grace * u32::try_from(services.len().max(1)).unwrap_or(u32::MAX)
        + TEARDOWN_MARGIN;
    // Checked just before signalling, so that a pid recycled since is never signalled.
    if info.supervisor_alive() {
        rustix::process::kill_process(pid, Signal::TERM)
            .map_err(|e| format!("send SIGTERM to the supervisor (pid {}): {e}", info.pid))?;
        if !wait_gone(info, bound) {
            errln!(
                "harness down: the supervisor (pid {}) did not stop within {bound:?}; killing \
                 it (its services die with it)",
                info.pid
            );
            if info.supervisor_alive() {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
            if !wait_gone(info, KILL_WAIT) {
                return Err(format!(
                    "stop the supervisor (pid {}) of {}: it is still running",
                    info.pid,
                    run.describe()
                ));
            }
        }
    }
    // The supervisor removes the directory as its last step; this covers one that was killed.
    if run.dir.exists() {
        crate::daemon::remove_stale_cgroup(&run.dir);
        std::fs::remove_dir_all(&run.dir)
            .map_err(|e| format!("remove {}: {e}", run.dir.display()))?;
    }
    outln!(
        "harness down: stopped {} ({}; supervisor pid {})",
        run.describe(),
        if services.is_empty() {
            "no services".to_string()
        } else {
            services.join(", ")
        },
        info.pid
    );
    Ok(())
}

/// Waits until the supervisor has exited; false if it still runs after `bound`.
fn wait_gone(info: &RunInfo, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    while info.supervisor_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
