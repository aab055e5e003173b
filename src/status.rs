//! `harness status [FILE]`: the runs that `harness up -d` left running, a table per run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use harness::orchestrator::MAIN_ENDPOINT;
use harness::registry::{ServiceState, Timestamp};

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
    let now = Timestamp::now().as_millis();
    let rows: Vec<[String; 6]> = run
        .services()
        .iter()
        .map(|s| {
            let running = s.state == ServiceState::Running;
            let active = s.state.is_active();
            [
                s.name.clone(),
                s.execution.kind.to_string(),
                s.state.kind().as_str().to_string(),
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
