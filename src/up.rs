//! `harness up`: start a topology in the foreground, show its addresses, follow its logs until
//! Ctrl-C or SIGTERM, then tear it down.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures_lite::future;
use harness::orchestrator::{Progress, ServiceManager, ServiceStatus};
use harness::registry::{Registry, ServiceState};
use harness::topology::{TopologyConfig, parse_duration};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::run::EXIT_HARNESS_FAILED;

/// `harness up`'s exit code when the topology failed to start: a service did not start or
/// did not become healthy, and everything was stopped again.
pub const EXIT_START_FAILED: u8 = 1;

#[derive(Args)]
pub struct UpArgs {
    /// The topology file (services.yaml). Relative binary paths in it are relative to the
    /// current directory, so run this from the project's root.
    file: PathBuf,
    /// Merge this overlay file over the topology (repeatable). Overlays named by
    /// HARNESS_OVERLAY (`:`-separated) are applied first.
    #[arg(long = "overlay", value_name = "FILE")]
    overlays: Vec<PathBuf>,
    /// How long each service may take to stop after SIGTERM before it is killed.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    stop_grace: Duration,
}

pub fn up(args: UpArgs) -> ExitCode {
    let topology = match TopologyConfig::load_with_env(&args.file, &args.overlays) {
        Ok(topology) => topology,
        Err(e) => {
            eprintln!("harness up: failed to {e}");
            return ExitCode::from(EXIT_HARNESS_FAILED);
        }
    };
    // Installed before anything starts, so that Ctrl-C during the start stops it cleanly
    // instead of killing harness with its services half started.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("harness up: failed to install handlers for SIGINT and SIGTERM: {e}");
            return ExitCode::from(EXIT_HARNESS_FAILED);
        }
    };
    let (stop_tx, stop_rx) = smol::channel::bounded::<&'static str>(1);
    let signal_handle = signals.handle();
    let watcher = std::thread::Builder::new()
        .name("harness-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = stop_tx.try_send(if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                });
            }
        });
    let watcher = match watcher {
        Ok(watcher) => watcher,
        Err(e) => {
            eprintln!("harness up: failed to start the signal thread: {e}");
            return ExitCode::from(EXIT_HARNESS_FAILED);
        }
    };

    let manager = ServiceManager::new(topology, Registry::new())
        .with_stop_grace(args.stop_grace)
        .with_progress(print_progress);
    let code = smol::block_on(run(&manager, &stop_rx));
    signal_handle.close();
    let _ = watcher.join();
    code
}

async fn run(manager: &ServiceManager, stop: &smol::channel::Receiver<&'static str>) -> ExitCode {
    let logs = manager.follow_all();
    let started = future::or(async { Some(manager.start_all().await) }, async {
        let signal = stop.recv().await.unwrap_or("a signal");
        println!("harness up: received {signal} during the start; stopping");
        None
    })
    .await;
    match started {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            eprintln!("harness up: failed to {e}");
            return ExitCode::from(EXIT_START_FAILED);
        }
        // The start was abandoned: the service it was starting died with its future; the
        // rest is stopped below.
        None => return tear_down(manager).await,
    }

    print_table(&manager.status_all().await);
    println!(
        "harness up: all {} services healthy; following their logs (Ctrl-C to stop)",
        manager.topology().services.len()
    );
    let width = manager
        .topology()
        .services
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0);
    // Lines written while the services started are shown too: they were queued meanwhile.
    let signal = future::or(
        async {
            while let Ok(line) = logs.recv().await {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{:width$} | {}", line.service, line.text);
            }
            "the end of the logs"
        },
        async { stop.recv().await.unwrap_or("a signal") },
    )
    .await;
    println!("harness up: received {signal}; stopping");
    tear_down(manager).await
}

async fn tear_down(manager: &ServiceManager) -> ExitCode {
    match manager.stop_all().await {
        Ok(()) => {
            println!("harness up: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("harness up: failed to {e}");
            ExitCode::from(EXIT_HARNESS_FAILED)
        }
    }
}

fn print_progress(progress: &Progress) {
    match progress {
        Progress::Waiting {
            service,
            pid,
            dependencies,
        } => {
            let mut about = Vec::new();
            if let Some(pid) = pid {
                about.push(format!("pid {pid}"));
            }
            if !dependencies.is_empty() {
                about.push(format!("depends on {}", dependencies.join(", ")));
            }
            if about.is_empty() {
                println!("waiting for {service}");
            } else {
                println!("waiting for {service} ({})", about.join("; "));
            }
        }
        Progress::Healthy { service, after, .. } => {
            println!("{service} healthy after {} ms", after.as_millis());
        }
        Progress::Failed { service } => println!("{service} failed"),
        Progress::Exited { service, status } => println!("{service} exited with {status}"),
        Progress::Stopped { service } => println!("{service} stopped"),
        _ => {}
    }
}

fn print_table(services: &[ServiceStatus]) {
    let rows: Vec<[String; 4]> = services
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                state_name(&s.state).to_string(),
                s.addr.map_or("-".to_string(), |a| a.to_string()),
                s.pid.map_or("-".to_string(), |p| p.to_string()),
            ]
        })
        .collect();
    let header = ["SERVICE", "STATE", "ADDRESS", "PID"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn state_name(state: &ServiceState) -> &'static str {
    state.kind().as_str()
}
