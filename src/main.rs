//! The `harness` command line: a thin layer over the `harness` library.
//!
//! Exit codes, as `docker run` and `ssh` use them: the program's own exit code when it ran;
//! 128 + N when it was killed by signal N; 125 when harness itself failed (bad arguments, an
//! unreachable host, a missing container); 126 when the program cannot be executed; 127 when it
//! does not exist.
//!
//! `harness up` exits with 0 once it has torn the topology down after Ctrl-C or SIGTERM; 1 when
//! the topology failed to start (a service did not start or did not become healthy; the error
//! names it and shows its last lines of output, and everything was stopped again); 125 when the
//! topology file is invalid (nothing was started) or the teardown failed.
//!
//! `harness up -d` exits with 0 once every service is healthy and runs on under a supervisor;
//! 1 when the start failed (nothing is left); 4 when the topology already runs (the message
//! names the supervisor's pid); 125 when the file is invalid or harness failed.
//! `harness status`, `logs` and `down` exit with 0 when they did their job, 3 when nothing (of
//! FILE) is running (a stale run, whose supervisor died, is removed and counts as not
//! running), and 125 on any other failure (an unknown service, an ambiguous one, several runs
//! for `down` without FILE, a supervisor that would not stop).
//!
//! `harness package build` and `inspect` exit with 0 when the package is valid (and was
//! written); 1 when it is refused (a rule it breaks, an invalid manifest, a checksum that does
//! not match; the message names the entry or the file and line); 125 when a file could not be
//! read or written.
//!
//! `harness deploy` exits with 0 when every host runs the package (or already did), or was
//! rolled back or stopped as asked; 1 when a host failed (the message names it; a new release
//! that failed was rolled back); 125 on bad input (a refused package, a bad option), when no host
//! was touched.

mod cargo_bins;
mod daemon;
mod deploy;
mod down;
mod logs;
mod output;
mod package;
mod run;
mod save_failure;
mod serve;
mod state;
mod status;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit codes, as `harness --help` lists them (the module's doc says the same).
const EXIT_CODES: &str = "\
Exit codes:
  run          the program's own; 128+N when killed by signal N; 125 harness failed;
               126 not executable; 127 not found
  up           0 stopped after Ctrl-C, SIGTERM, SIGHUP or SIGQUIT; 1 the start failed
               (everything stopped); 125 invalid file or harness failed
  up -d        0 all healthy, running in the background; 1 the start failed (nothing
               left); 4 already running; 125 invalid file or harness failed
  status, logs, down
               0 done; 3 nothing (of FILE) is running; 125 unknown or ambiguous service,
               several runs for down without FILE, or harness failed
  serve        0 stopped after Ctrl-C, SIGTERM, SIGHUP or SIGQUIT; 125 harness failed
  package      0 valid (and written); 1 refused: a rule, the manifest or the checksum;
               125 a file could not be read or written
  deploy       0 every host deployed (or already was), rolled back or stopped;
               1 a host failed (a failed release is rolled back); 125 bad input,
               no host touched";

/// Run services anywhere: local processes, Docker containers, hosts over SSH.
#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about,
    propagate_version = true,
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one command here, on a host over SSH, or inside a container, and stream its output
    /// as it arrives.
    Run(run::RunArgs),
    /// Serve the WebSocket API over a registry kept in a file, until Ctrl-C or SIGTERM.
    Serve(serve::ServeArgs),
    /// Start a topology, print its services' addresses, follow their logs until Ctrl-C or
    /// SIGTERM, then stop everything. With -d, return once it is healthy and leave it running.
    Up(up::UpArgs),
    /// Show the topologies that `harness up -d` left running: each service's state, address,
    /// pid and uptime. Exit code 3 when nothing is running.
    Status(status::StatusArgs),
    /// Print a service's output in a topology that `harness up -d` left running; -f follows it.
    Logs(logs::LogsArgs),
    /// Stop a topology that `harness up -d` left running and remove its state.
    Down(down::DownArgs),
    /// Build a service package from a directory, or verify and inspect one.
    Package(package::PackageArgs),
    /// Deploy a package to hosts over SSH, in parallel: versioned releases, an atomic switch,
    /// rollback when the new release fails. --rollback and --stop act on what is installed.
    Deploy(deploy::DeployArgs),
}

fn main() -> ExitCode {
    // HARNESS_LOG, else RUST_LOG, as the test runner reads them; errors only when neither is
    // set.
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::ERROR.into())
        .parse_lossy(harness::testing::tracing_directives().unwrap_or_default());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // A topology of a few hundred services needs more descriptors than the usual soft limit
    // of 1024; the detached supervisor is this binary too, so it raises its own here.
    if let Err(e) = harness::limits::raise_open_files_limit() {
        tracing::warn!("failed to raise the soft limit of open files to the hard one: {e}");
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Up(args) => up::up(args),
        Command::Status(args) => status::status(args),
        Command::Logs(args) => logs::logs(args),
        Command::Down(args) => down::down(args),
        Command::Package(args) => package::package(args),
        Command::Deploy(args) => deploy::deploy(args),
    }
}
