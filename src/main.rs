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

mod run;
mod serve;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run services anywhere: local processes, Docker containers, hosts over SSH.
#[derive(Parser)]
#[command(name = "harness", version, about, propagate_version = true)]
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
    /// SIGTERM, then stop everything.
    Up(up::UpArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("HARNESS_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Up(args) => up::up(args),
    }
}
