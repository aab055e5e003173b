//! `harness status [FILE]`: the runs that `harness up -d` left running, a table per run, with a
//! warning when the supervisor cannot save the registry (the table may then be stale) and
//! `dead` for a service the registry says is running whose process is gone.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use harness::orchestrator::MAIN_ENDPOINT;
use harness::registry::{ExecutionKind, Location, ServiceEntry, ServiceState, Timestamp};

use crate::output::outln;
use crate::state::{Run, format_duration, live_runs};

/// Exit code of `status`, `logs` and `down` when nothing (of FILE) is running.
pub const EXIT_NOT_RUNNING: u8 = 3;

#[derive(Args)]
pub struct StatusArgs {
    /// Only the runs of this topology file (all runs in the state directory by default).
    file: Option<PathBuf>,
}

pub fn status(args: StatusArgs) -> ExitCode {
    let live = match live_runs(args.file.as_deref(), "status") {
        Ok(live) => live,
        Err(code) => return code,
    };
    for (i, run) in live.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        print_run(run);
    }
    ExitCode::SUCCESS
}

fn print_run(run: &Run) {
    let mut about = Vec::new();
    if let Some(info) = &run.info {
        about.push(format!("supervisor pid {}", info.pid));
        about.push(format!("up {}", format_duration(info.uptime())));
        if let Some(api) = info.api {
            about.push(format!("api ws://{api}"));
        }
    } else {
        about.push("starting".to_string());
    }
    outln!("{} ({})", run.describe(), about.join(", "));
    if let Some(failure) = run.save_failure() {
        let error = failure.error.map_or_else(
            || "the supervisor could not record why".to_string(),
            |e| format!("failed to {e}"),
        );
        outln!(
            "warning: the registry could not be saved at {}: {error}; what it shows may be stale",
            failure.path.display()
        );
    }
    let now = Timestamp::now().as_millis();
    let rows: Vec<[String; 6]> = run
        .services()
        .iter()
        .map(|s| {
            let dead = dead_process(s);
            let running = s.state == ServiceState::Running && dead.is_none();
            let active = s.state.is_active();
            [
                s.name.clone(),
                s.execution.kind.to_string(),
                dead.map_or_else(
                    || s.state.kind().as_str().to_string(),
                    |pid| format!("dead (process {pid} is gone)"),
                ),
                s.endpoint(MAIN_ENDPOINT)
                    .map_or("-".to_string(), |e| e.address.to_string()),
                s.execution
                    .pid
                    .filter(|_| active)
                    .map_or("-".to_string(), |p| p.to_string()),
                s.timestamps
                    .started_at
                    .filter(|_| running)
                    .map_or("-".to_string(), |t| {
                        format_duration(std::time::Duration::from_millis(
                            now.saturating_sub(t.as_millis()),
                        ))
                    }),
            ]
        })
        .collect();
    print_rows(
        ["SERVICE", "TARGET", "STATE", "ADDRESS", "PID", "UPTIME"],
        &rows,
    );
}

/// The pid of a service that the registry says is running as a process of this machine, when
/// that process is gone: no such pid, only its zombie, or another process that got its pid
/// (a start time other than the one recorded at its spawn).
fn dead_process(service: &ServiceEntry) -> Option<u32> {
    let local_process =
        service.location == Location::Local && service.execution.kind == ExecutionKind::Process;
    if service.state != ServiceState::Running || !local_process {
        return None;
    }
    let pid = service.execution.pid?;
    let alive = match service.execution.process_identity() {
        Some(identity) => identity.is_alive(),
        // A registry from a harness that did not record start times.
        None => harness::sys::alive(pid),
    };
    (!alive).then_some(pid)
}

/// Prints a table whose columns are as wide as their widest cell.
pub fn print_rows<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let header = header.map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        outln!("{}", line.join("  ").trim_end());
    }
}
