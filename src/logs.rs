//! `harness logs SERVICE [FILE] [-f] [-n N]`: a service's output in a run that `harness up -d`
//! left running, from its log file (`<state>/services/SERVICE.log`).

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use harness::orchestrator::{log_files, read_log_tail};

use crate::output::errln;
use crate::run::EXIT_HARNESS_FAILED;
use crate::state::{Run, live_runs};

/// How often `-f` looks for new lines.
const POLL: Duration = Duration::from_millis(100);

/// How often `-f` checks that the run is still there.
const LIVENESS: Duration = Duration::from_millis(500);

#[derive(Args)]
pub struct LogsArgs {
    /// The service.
    service: String,
    /// The topology file of the run, when several runs have a service of that name.
    file: Option<PathBuf>,
    /// Keep printing new lines until Ctrl-C, or until the run is stopped.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines (all by default).
    #[arg(short = 'n', long, value_name = "N")]
    lines: Option<usize>,
}

pub fn logs(args: LogsArgs) -> ExitCode {
    match logs_inner(&args) {
        Ok(code) => code,
        Err(e) => {
            errln!("harness logs: {e}");
            ExitCode::from(EXIT_HARNESS_FAILED)
        }
    }
}

fn logs_inner(args: &LogsArgs) -> Result<ExitCode, String> {
    let live = match live_runs(args.file.as_deref(), "logs") {
        Ok(live) => live,
        Err(code) => return Ok(code),
    };
    let names = |run: &Run| -> Vec<String> { run.services().into_iter().map(|s| s.name).collect() };
    let with: Vec<&Run> = live
        .iter()
        .filter(|run| names(run).contains(&args.service))
        .collect();
    let run = match with[..] {
        [run] => run,
        [] => {
            let mut known: Vec<String> = live.iter().flat_map(names).collect();
            known.sort();
            known.dedup();
            return Err(format!(
                "no service named {} is running; running services: {}",
                args.service,
                known.join(", ")
            ));
        }
        _ => {
            let runs: Vec<String> = with.iter().map(|r| r.describe()).collect();
            return Err(format!(
                "service {} runs in several topologies ({}); name one: harness logs {} FILE",
                args.service,
                runs.join("; "),
                args.service
            ));
        }
    };
    let path = run.log_file(&args.service);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "service {} has no output yet: it has not been started",
                args.service
            ));
        }
        Err(e) => return Err(format!("failed to open {}: {e}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    let offset = match args.lines {
        Some(n) => {
            // The live file is open already: its length is where following goes on from, and
            // the tail read after this may hold a few lines more, never fewer.
            let offset = file.metadata().map(|m| m.len()).unwrap_or(0);
            let text = read_log_tail(&path, n)
                .map_err(|e| format!("failed to read {}: {e}", path.display()))?;
            let _ = out.write_all(&text);
            offset
        }
        None => {
            // Rotated files first, oldest first, then the live file as far as it goes now.
            for older in log_files(&path).iter().filter(|p| **p != path) {
                if let Ok(mut older) = File::open(older) {
                    let _ = std::io::copy(&mut older, &mut out);
                }
            }
            std::io::copy(&mut file, &mut out)
                .map_err(|e| format!("failed to read {}: {e}", path.display()))?
        }
    };
    let _ = out.flush();
    drop(out);
    if args.follow {
        follow(run, &path, file, offset);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints what is appended to the log from `offset` on, until the run is gone (Ctrl-C ends
/// the process). When the log is rotated (`path` is a new file), the rest of the old file is
/// printed and following goes on in the new one from its start.
fn follow(run: &Run, path: &Path, mut file: File, mut offset: u64) {
    use std::os::unix::fs::MetadataExt as _;
    let mut checked = Instant::now();
    let mut buf = Vec::new();
    loop {
        std::thread::sleep(POLL);
        let rotated = match (file.metadata(), std::fs::metadata(path)) {
            (Ok(open), Ok(now)) => (open.dev(), open.ino()) != (now.dev(), now.ino()),
            _ => false,
        };
        if let Ok(meta) = file.metadata()
            && meta.len() < offset
        {
            // Truncated (a log kept in one file starts again): from its beginning.
            offset = 0;
        }
        buf.clear();
        if file.seek(SeekFrom::Start(offset)).is_ok() && file.read_to_end(&mut buf).is_ok() {
            offset += buf.len() as u64;
            let mut out = std::io::stdout().lock();
            if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
                return;
            }
        }
        if rotated && let Ok(new) = File::open(path) {
            file = new;
            offset = 0;
            continue;
        }
        if checked.elapsed() >= LIVENESS {
            checked = Instant::now();
            if !run.alive() {
                return;
            }
        }
    }
}
