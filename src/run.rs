//! `harness run`: one command through any launcher, its events printed as they arrive.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::output::{errln, outln};
use clap::Args;
use harness::exec::{Command, Executor, LaunchError, Launcher, ProcessEvent, SshLauncher};

/// Exit code for a failure of harness itself, as `docker run` uses it.
pub const EXIT_HARNESS_FAILED: u8 = 125;
/// Exit code for a program that exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// Exit code for a program that does not exist.
pub const EXIT_NOT_FOUND: u8 = 127;

#[derive(Args)]
pub struct RunArgs {
    /// Run on this host over SSH: USER@HOST or USER@HOST:PORT.
    #[arg(long, value_name = "USER@HOST[:PORT]", conflicts_with = "docker")]
    ssh: Option<String>,
    /// Private key for --ssh.
    #[arg(long, value_name = "FILE", requires = "ssh")]
    key: Option<PathBuf>,
    /// Run inside this running container (docker exec).
    #[arg(long, value_name = "CONTAINER")]
    docker: Option<String>,
    /// Working directory for the program.
    #[arg(long, short = 'C', value_name = "DIR")]
    dir: Option<String>,
    /// Environment variable for the program (repeatable).
    #[arg(long, short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Prefix each line with the time since start and its stream.
    #[arg(long, short = 't')]
    timestamps: bool,
    /// The program and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

pub fn run(args: RunArgs) -> ExitCode {
    let mut cmd = Command::new(&args.command[0])
        .args(args.command[1..].iter().cloned())
        .envs(args.env.clone());
    if let Some(dir) = &args.dir {
        cmd = cmd.current_dir(dir);
    }
    let timestamps = args.timestamps;
    let result = smol::block_on(async {
        if let Some(target) = &args.ssh {
            let (user, host) = target.split_once('@').ok_or_else(|| {
                LaunchError::Unsupported(format!(
                    "use `{target}` as an ssh target: expected USER@HOST[:PORT]"
                ))
            })?;
            let mut builder = SshLauncher::builder(host, user);
            if let Some(key) = &args.key {
                builder = builder.key(key);
            }
            let launcher = builder.connect(harness::exec::LocalLauncher).await?;
            stream(Executor::new("run", launcher), cmd, timestamps).await
        } else if let Some(container) = &args.docker {
            stream(
                Executor::docker("run", container.clone()).await?,
                cmd,
                timestamps,
            )
            .await
        } else {
            stream(Executor::local("run"), cmd, timestamps).await
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            errln!("harness: failed to {e}");
            ExitCode::from(match e {
                LaunchError::NotFound { .. } => EXIT_NOT_FOUND,
                LaunchError::PermissionDenied { .. } => EXIT_NOT_EXECUTABLE,
                _ => EXIT_HARNESS_FAILED,
            })
        }
    }
}

/// Prints the events of `cmd` as they arrive; returns the exit code to pass on.
async fn stream<L: Launcher>(
    executor: Executor<L>,
    cmd: Command,
    timestamps: bool,
) -> Result<u8, LaunchError> {
    let start = Instant::now();
    let mut result = executor.execute(cmd).await?;
    let prefix = |stream: &str| {
        if timestamps {
            format!("{:>8.3}s {stream} ", start.elapsed().as_secs_f64())
        } else {
            String::new()
        }
    };
    let mut code = None;
    while let Some(event) = result.events.recv().await {
        match event {
            ProcessEvent::Stdout(line) => outln!("{}{line}", prefix("out")),
            ProcessEvent::Stderr(line) => errln!("{}{line}", prefix("err")),
            ProcessEvent::Started { pid } if timestamps => {
                errln!("{}started, pid {pid}", prefix("---"))
            }
            ProcessEvent::Exited(status) => {
                if timestamps {
                    errln!("{}{status}", prefix("---"));
                }
                code = Some(match (status.code(), status.signal()) {
                    (Some(c), _) => c.clamp(0, 255) as u8,
                    (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
                    (None, None) => EXIT_HARNESS_FAILED,
                });
            }
            ProcessEvent::Started { .. } => {}
        }
    }
    Ok(code.unwrap_or(EXIT_HARNESS_FAILED))
}
