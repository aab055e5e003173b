//! `harness up`: start a topology in the foreground, show its addresses, follow its logs until
//! Ctrl-C or SIGTERM, then tear it down; with `-d`, leave it running under a supervisor
//! ([`crate::daemon`]). With `--api`, also serve the WebSocket API over the live registry.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures_lite::future;
use harness::api::{ServerHandle, WsServer};
use harness::orchestrator::{OrchestratorError, Progress, ServiceManager, ServiceStatus};
use harness::registry::{Registry, ServiceState};
use harness::topology::{TopologyConfig, parse_duration};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::daemon;
use crate::output::{errln, outln};
use crate::run::EXIT_HARNESS_FAILED;
use crate::status::print_rows;

/// `harness up`'s exit code when the topology failed to start: a service did not start or
/// did not become healthy, and everything was stopped again.
pub const EXIT_START_FAILED: u8 = 1;

#[derive(Args)]
pub struct UpArgs {
    /// The topology file (services.yaml). Relative binary paths in it are relative to the
    /// current directory, so run this from the project's root.
    pub(crate) file: PathBuf,
    /// Merge this overlay file over the topology (repeatable). Overlays named by
    /// HARNESS_OVERLAY (`:`-separated) are applied first.
    #[arg(long = "overlay", value_name = "FILE")]
    pub(crate) overlays: Vec<PathBuf>,
    /// How long each service may take to stop after SIGTERM before it is killed.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub(crate) stop_grace: Duration,
    /// When containers' images are pulled, for services that name no `pull:` of their own:
    /// `missing` (when not on this machine), `always` or `never`. Default: HARNESS_PULL, else
    /// `missing`.
    #[arg(long, value_name = "POLICY", value_parser = parse_pull)]
    pub(crate) pull: Option<harness::topology::PullPolicy>,
    /// Start in the background: return once every service is healthy, leaving them running
    /// under a supervisor process (see `harness status`, `logs`, `down`).
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    /// Run as the supervisor of a detached run whose state directory is DIR (what `up -d`
    /// starts; not for direct use).
    #[arg(long, hide = true, value_name = "DIR", conflicts_with = "detach")]
    pub(crate) supervise: Option<PathBuf>,
}

/// `--pull`'s policy by name.
fn parse_pull(name: &str) -> Result<harness::topology::PullPolicy, String> {
    harness::topology::PullPolicy::from_name(name).ok_or_else(|| {
        format!("`{name}` is no pull policy: expected `missing`, `always` or `never`")
    })
}

/// `--api` and its token options.
#[derive(Args)]
pub struct ApiArgs {
    /// Also serve the WebSocket API on this address (port 0 picks a free one) over the live
    /// registry: clients list the services, follow their events and start, stop or restart
    /// them (`service_action`). Loopback needs no token; any other address does.
    #[arg(long, value_name = "ADDR")]
    pub(crate) api: Option<String>,
    /// The token every API client must present (Authorization: Bearer TOKEN, or
    /// ?token=TOKEN). Other local users can read command lines; --token-file is safer.
    #[arg(
        long,
        value_name = "TOKEN",
        requires = "api",
        conflicts_with = "token_file"
    )]
    pub(crate) token: Option<String>,
    /// Read the API token from this file; if it does not exist, generate a token into it
    /// (mode 0600).
    #[arg(long, value_name = "FILE", requires = "api")]
    pub(crate) token_file: Option<PathBuf>,
}

pub fn up(args: UpArgs) -> ExitCode {
    if let Some(dir) = &args.supervise {
        return daemon::supervise(&args, dir);
    }
    let topology = match TopologyConfig::load_with_env(&args.file, &args.overlays) {
        Ok(topology) => topology,
        Err(e) => {
            errln!("harness up: failed to {e}");
            return ExitCode::from(EXIT_HARNESS_FAILED);
        }
    };
    if args.detach {
        return daemon::detach(&args, &topology);
    }
    let token = match api_token(&args.api) {
        Ok(token) => token,
        Err(e) => {
            errln!("harness up: failed to {e}");
            return ExitCode::from(EXIT_HARNESS_FAILED);
        }
    };
    // Orphans the services leave come to us, to be removed at teardown.
    if let Err(e) = harness::exec::become_subreaper() {
        tracing::debug!("failed to become a child subreaper: {e}");
    }
    // Installed before anything starts, so that Ctrl-C during the start stops it cleanly
    // instead of killing harness with its services half started.
    let stop = match StopSignals::install() {
        Ok(stop) => stop,
        Err(e) => {
            errln!("harness up: failed to {e}");
            return ExitCode::from(EXIT_HARNESS_FAILED);
        }
    };

    let cargo_bins = match crate::cargo_bins::resolve(&topology) {
        Ok(bins) => bins,
        Err(e) => {
            errln!("harness up: failed to {e}");
            return ExitCode::from(EXIT_HARNESS_FAILED);
        }
    };
    let mut manager =
        ServiceManager::new(topology, Registry::new()).with_stop_grace(args.stop_grace);
    if let Some(pull) = args.pull {
        manager = manager.with_pull(pull);
    }
    let manager = manager
        .with_cargo_bins(cargo_bins)
        .with_progress(print_progress);
    let api = match start_api(&args.api, token, &manager) {
        Ok(api) => api,
        Err(e) => {
            errln!("harness up: failed to {e}");
            return ExitCode::from(EXIT_HARNESS_FAILED);
        }
    };
    let code = smol::block_on(run(&manager, &stop.receiver));
    stop_api(api);
    stop.close();
    harness::exec::remove_descendants();
    code
}

/// SIGINT, SIGTERM and SIGHUP (the terminal closed), turned into a message on a channel by a
/// thread of their own.
pub(crate) struct StopSignals {
    /// Receives the name of the first signal.
    pub(crate) receiver: smol::channel::Receiver<&'static str>,
    handle: Handle,
    watcher: std::thread::JoinHandle<()>,
}

impl StopSignals {
    /// From now on SIGINT, SIGTERM, SIGHUP and SIGQUIT no longer kill the process: the first
    /// one is sent to [`StopSignals::receiver`].
    pub(crate) fn install() -> Result<StopSignals, String> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]).map_err(|e| {
            format!("install handlers for SIGINT, SIGTERM, SIGHUP and SIGQUIT: {e}")
        })?;
        let (stop_tx, receiver) = smol::channel::bounded::<&'static str>(1);
        let handle = signals.handle();
        let watcher = std::thread::Builder::new()
            .name("harness-signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    let _ = stop_tx.try_send(match signal {
                        SIGINT => "SIGINT",
                        SIGHUP => "SIGHUP",
                        SIGQUIT => "SIGQUIT",
                        _ => "SIGTERM",
                    });
                }
            })
            .map_err(|e| format!("start the signal thread: {e}"))?;
        Ok(StopSignals {
            receiver,
            handle,
            watcher,
        })
    }

    /// Stops watching.
    pub(crate) fn close(self) {
        self.handle.close();
        let _ = self.watcher.join();
    }
}

/// The token the API requires: --token, else the one in --token-file (generated into it if
/// the file does not exist); none for a loopback address; an error for any other address
/// without one.
pub(crate) fn api_token(args: &ApiArgs) -> Result<Option<String>, String> {
    let Some(addr) = &args.api else {
        return Ok(None);
    };
    if let Some(token) = &args.token {
        if token.is_empty() {
            return Err("use --token: it is empty".into());
        }
        return Ok(Some(token.clone()));
    }
    if let Some(path) = &args.token_file {
        if path.exists() {
            return harness::api::read_token_file(path)
                .map(Some)
                .map_err(|e| e.to_string());
        }
        let token = harness::api::generate_token().map_err(|e| e.to_string())?;
        harness::api::write_token_file(path, &token).map_err(|e| e.to_string())?;
        outln!(
            "harness up: API token written to {} (mode 0600)",
            path.display()
        );
        return Ok(Some(token));
    }
    let addrs = resolve(addr)?;
    if addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "serve the API on {addr}: other machines can reach it, so it needs --token or \
             --token-file"
        ));
    }
    Ok(None)
}

fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    Ok(addr
        .to_socket_addrs()
        .map_err(|e| format!("resolve --api {addr}: {e}"))?
        .collect())
}

/// Serves the WebSocket API over the manager's registry, with the manager as the controller
/// of `service_action`, on a thread of the server's own; `None` without `--api`.
pub(crate) fn start_api(
    args: &ApiArgs,
    token: Option<String>,
    manager: &ServiceManager,
) -> Result<Option<ServerHandle>, String> {
    let Some(addr) = &args.api else {
        return Ok(None);
    };
    let addrs = resolve(addr)?;
    let mut builder =
        WsServer::builder(manager.registry().clone()).with_controller(Arc::new(manager.clone()));
    if let Some(token) = token {
        builder = builder.with_token(token);
    }
    let server = smol::block_on(builder.bind(&addrs[..])).map_err(|e| e.to_string())?;
    let handle = server
        .start()
        .map_err(|e| format!("serve the WebSocket API: {e}"))?;
    // Tests and scripts read this line to learn the port when --api asked for port 0.
    outln!("harness up: API listening on ws://{}", handle.local_addr());
    Ok(Some(handle))
}

/// Closes the API's connections and stops its thread.
pub(crate) fn stop_api(api: Option<ServerHandle>) {
    if let Some(api) = api
        && let Err(e) = api.shutdown()
    {
        errln!("harness up: warning: failed to stop the WebSocket API: {e}");
    }
}

/// Starts every service, unless a stop signal comes first: then `None` (the start was
/// abandoned; what it started must be stopped).
pub(crate) async fn start_unless_stopped(
    manager: &ServiceManager,
    stop: &smol::channel::Receiver<&'static str>,
) -> Option<Result<(), OrchestratorError>> {
    future::or(async { Some(manager.start_all().await) }, async {
        let signal = stop.recv().await.unwrap_or("a signal");
        outln!("harness up: received {signal} during the start; stopping");
        None
    })
    .await
}

async fn run(manager: &ServiceManager, stop: &smol::channel::Receiver<&'static str>) -> ExitCode {
    let logs = manager.follow_all();
    let started = start_unless_stopped(manager, stop).await;
    match started {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            errln!("harness up: failed to {e}");
            return ExitCode::from(EXIT_START_FAILED);
        }
        // The start was abandoned: the service it was starting died with its future; the
        // rest is stopped below.
        None => return tear_down(manager).await,
    }

    print_table(manager.topology(), &manager.status_all().await);
    outln!(
        "harness up: all {}; following their logs (Ctrl-C to stop)",
        started_count(manager.topology())
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
    outln!("harness up: received {signal}; stopping");
    tear_down(manager).await
}

pub(crate) async fn tear_down(manager: &ServiceManager) -> ExitCode {
    match manager.stop_all().await {
        Ok(()) => {
            outln!("harness up: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("harness up: failed to {e}");
            ExitCode::from(EXIT_HARNESS_FAILED)
        }
    }
}

/// What a started topology counts, for `harness up: all ...`: `4 services healthy`, or
/// `3 services healthy and 1 job completed` when it has jobs.
pub(crate) fn started_count(topology: &TopologyConfig) -> String {
    let jobs = topology.services.values().filter(|s| s.job).count();
    let services = topology.services.len() - jobs;
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let healthy = format!("{} healthy", plural(services, "service", "services"));
    match jobs {
        0 => healthy,
        _ => format!("{healthy} and {} completed", plural(jobs, "job", "jobs")),
    }
}

pub(crate) fn print_progress(progress: &Progress) {
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
                outln!("waiting for {service}");
            } else {
                outln!("waiting for {service} ({})", about.join("; "));
            }
        }
        // On stderr, as the test runner prints it: stdout is the table and the services' logs.
        Progress::StillWaiting(waiting) => errln!("harness: {waiting}"),
        Progress::Healthy { service, after, .. } => {
            outln!("{service} healthy after {} ms", after.as_millis());
        }
        Progress::Completed { service, after } => {
            outln!("{service} completed after {} ms", after.as_millis());
        }
        Progress::Lab { hosts } => outln!("building the lab ({hosts} hosts)"),
        Progress::Failed { service } => outln!("{service} failed"),
        Progress::Exited { service, status } => outln!("{service} {status}"),
        Progress::Stopped { service } => outln!("{service} stopped"),
        Progress::Pulling {
            service,
            image,
            status,
        } => outln!("{service}: pull {image}: {status}"),
        _ => {}
    }
}

/// Prints the services of `topology` with where they run and their addresses.
pub(crate) fn print_table(topology: &TopologyConfig, services: &[ServiceStatus]) {
    let rows: Vec<[String; 5]> = services
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                topology
                    .service(&s.name)
                    .map_or("-", |c| c.target.kind())
                    .to_string(),
                state_name(&s.state).to_string(),
                s.addr.map_or("-".to_string(), |a| a.to_string()),
                s.pid.map_or("-".to_string(), |p| p.to_string()),
            ]
        })
        .collect();
    print_rows(["SERVICE", "TARGET", "STATE", "ADDRESS", "PID"], &rows);
}

fn state_name(state: &ServiceState) -> &'static str {
    state.kind().as_str()
}
