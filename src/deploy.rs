//! `harness deploy PACKAGE --host [USER@]HOST[:PORT]...`: deploy a service package to hosts
//! over SSH, in parallel, with a progress line per step and host on stderr and a summary on
//! stdout; `--rollback` and `--stop` act on what is installed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use harness::exec::LocalLauncher;
use harness::package::{DEFAULT_ROOT, Deploy, DeployHost, DeployProgress, Installed, Stage};

use crate::output::{errln, outln};
use crate::package::human;
use crate::run::EXIT_HARNESS_FAILED;

/// Exit code when a host failed (the others may have succeeded; the summary says which).
pub const EXIT_HOST_FAILED: u8 = 1;

/// The exit codes, as `harness deploy --help` lists them.
const EXIT_CODES: &str = "\
Exit codes:
  0    every host runs the package (or already did), or was rolled back or stopped
  1    a host failed: unreachable, lacking requirements, or the new release failed
       (then rolled back); the message names the host
  125  bad input: a refused or missing package, an invalid option; no host touched";

#[derive(Args)]
#[command(after_help = EXIT_CODES)]
pub struct DeployArgs {
    /// The package: a .tar.gz archive, or a package directory (built first). With --rollback
    /// or --stop, the service's name instead.
    target: String,
    /// A host to deploy to (repeatable; all are deployed to at once). USER defaults to $USER.
    #[arg(long = "host", value_name = "[USER@]HOST[:PORT]", required = true)]
    hosts: Vec<String>,
    /// The SSH private key to log in with.
    #[arg(long, short = 'i', visible_alias = "key", value_name = "FILE")]
    identity: Option<PathBuf>,
    /// The service's name on the hosts (its directory under the root); the package's name by
    /// default.
    #[arg(long, value_name = "NAME")]
    service: Option<String>,
    /// Where services are installed on the hosts: ROOT/SERVICE/{releases,current,previous,env}.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_ROOT)]
    root: String,
    /// A variable for the env file start.sh gets (repeatable). PORT comes from the manifest
    /// unless --port or --env PORT=... says otherwise.
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// PORT in the env file.
    #[arg(long)]
    port: Option<u16>,
    /// Seconds the new release may take to become healthy before it is rolled back.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    health_timeout: u64,
    /// Switch the service back to its previous release instead of deploying.
    #[arg(long, conflicts_with = "stop")]
    rollback: bool,
    /// Stop the service (its live release's stop.sh) instead of deploying.
    #[arg(long)]
    stop: bool,
    /// With --stop: then remove the service's directory (every release, the env file).
    #[arg(long, requires = "stop")]
    remove: bool,
}

pub fn deploy(args: DeployArgs) -> ExitCode {
    let mut hosts = Vec::new();
    for spec in &args.hosts {
        match DeployHost::parse(spec) {
            Ok(mut host) => {
                if let Some(key) = &args.identity {
                    host.ssh = host.ssh.key(key);
                }
                hosts.push(host);
            }
            Err(e) => return bad_input(&e),
        }
    }
    if args.rollback || args.stop {
        let service = args.service.clone().unwrap_or_else(|| args.target.clone());
        return smol::block_on(installed_verb(&args, &service, &hosts));
    }
    let mut deploy = Deploy::new(&args.target)
        .with_root(&args.root)
        .with_health_timeout(Duration::from_secs(args.health_timeout));
    if let Some(service) = &args.service {
        deploy = deploy.with_service(service);
    }
    if let Some(port) = args.port {
        deploy = deploy.with_port(port);
    }
    for var in &args.env {
        match var.split_once('=') {
            Some((k, v)) if !k.is_empty() => deploy = deploy.with_env(k, v),
            _ => return bad_input(&format!("`--env {var}` is not KEY=VALUE")),
        }
    }
    let lines = Arc::new(Mutex::new(ProgressLines::default()));
    let deploy = deploy.with_progress(move |p| lines.lock().unwrap().show(p));
    let started = Instant::now();
    let results = match smol::block_on(deploy.to_hosts(&hosts)) {
        Ok(results) => results,
        Err(e) => return bad_input(&e.to_string()),
    };
    let mut rows = Vec::new();
    let mut failures = 0;
    for (host, result) in hosts.iter().zip(results) {
        match result {
            Ok(r) => rows.push([
                host.name.clone(),
                r.outcome.to_string(),
                r.release,
                format!("{:.2} s", r.elapsed.as_secs_f64()),
            ]),
            Err(e) => {
                failures += 1;
                errln!("harness deploy: failed to {e}");
                let what = match &e {
                    harness::package::DeployError::RolledBack { restored, .. } => match restored {
                        Some(r) => format!("failed, rolled back to {r}"),
                        None => "failed, removed again".to_string(),
                    },
                    _ => "failed".to_string(),
                };
                rows.push([host.name.clone(), what, String::new(), String::new()]);
            }
        }
    }
    print_table(["HOST", "RESULT", "RELEASE", "TIME"], &rows);
    errln!(
        "{} of {} hosts ok in {:.2} s",
        rows.len() - failures,
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    if failures > 0 {
        ExitCode::from(EXIT_HOST_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// `--rollback` or `--stop` on every host, one after the other.
async fn installed_verb(args: &DeployArgs, service: &str, hosts: &[DeployHost]) -> ExitCode {
    let installed = Installed::new(&args.root, service)
        .with_health_timeout(Duration::from_secs(args.health_timeout));
    let mut rows = Vec::new();
    let mut failed = false;
    for host in hosts {
        let result = async {
            let ssh = host
                .ssh
                .clone()
                .connect(LocalLauncher)
                .await
                .map_err(|e| format!("reach {}: {e}", host.name))?;
            if args.rollback {
                errln!("{}: rolling {service} back", host.name);
                let live = installed
                    .rollback(&ssh, &host.name)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(["rolled back".to_string(), live])
            } else {
                errln!("{}: stopping {service}", host.name);
                let stopped = installed
                    .stop(&ssh, &host.name, args.remove)
                    .await
                    .map_err(|e| e.to_string())?;
                let what = if args.remove {
                    "stopped, removed"
                } else {
                    "stopped"
                };
                Ok([what.to_string(), stopped.unwrap_or_default()])
            }
        }
        .await;
        match result {
            Ok([what, release]) => rows.push([host.name.clone(), what, release]),
            Err(e) => {
                failed = true;
                errln!("harness deploy: failed to {e}");
                rows.push([host.name.clone(), "failed".into(), String::new()]);
            }
        }
    }
    print_table(["HOST", "RESULT", "RELEASE"], &rows);
    if failed {
        ExitCode::from(EXIT_HOST_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

fn bad_input(message: &str) -> ExitCode {
    errln!("harness deploy: failed to {message}");
    ExitCode::from(EXIT_HARNESS_FAILED)
}

/// Progress on stderr: a line per host at every new stage, and during the upload one every
/// 25 % or every second.
#[derive(Default)]
struct ProgressLines {
    last: std::collections::HashMap<String, (&'static str, u8, Instant)>,
}

impl ProgressLines {
    fn show(&mut self, p: &DeployProgress) {
        let now = Instant::now();
        let percent = p.stage.percent();
        let name = p.stage.name();
        if let Some((stage, at_percent, at)) = self.last.get(&p.host)
            && *stage == name
            && !p.stage.is_final()
            && (name != "upload"
                || (percent < at_percent.saturating_add(17) && now - *at < Duration::from_secs(1)))
        {
            return;
        }
        self.last.insert(p.host.clone(), (name, percent, now));
        let line = match &p.stage {
            Stage::Upload { sent, total } => format!(
                "{}: upload {} of {} ({}%)",
                p.host,
                human(*sent),
                human(*total),
                if *total == 0 { 100 } else { sent * 100 / total }
            ),
            Stage::Failed | Stage::RolledBack => format!("{}: {name}", p.host),
            _ => format!("{}: {name}: {}", p.host, p.message),
        };
        errln!("{line}");
    }
}

fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; N]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(header);
    for row in rows {
        line(std::array::from_fn(|i| row[i].as_str()));
    }
}
