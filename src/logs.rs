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
    let read_error = |e: std::io::Error| format!("failed to read {}: {e}", path.display());
    let (offset, open) = match args.lines {
        Some(n) => {
            // The live file is open already: its length is where following goes on from, and
            // the tail read after this may hold a few lines more, never fewer.
            let offset = file.metadata().map(|m| m.len()).unwrap_or(0);
            let text = read_log_tail(&path, n).map_err(read_error)?;
            (offset, out.write_all(&text).is_ok())
        }
        None => {
            // Rotated files first, oldest first, then the live file as far as it goes now.
            let mut open = true;
            for older in log_files(&path).iter().filter(|p| **p != path) {
                if open && let Ok(mut older) = File::open(older) {
                    // A rotated file that cannot be read is skipped; the live one must be.
                    open = copy(&mut older, &mut out).is_ok_and(|(_, open)| open);
                }
            }
            match open {
                true => copy(&mut file, &mut out).map_err(read_error)?,
                false => (0, false),
            }
        }
    };
    // Nobody reads any more (`harness logs web | head -3`): that is not a failure.
    if !open || out.flush().is_err() {
        return Ok(ExitCode::SUCCESS);
    }
    drop(out);
    if args.follow {
        follow(run, &path, file, offset);
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies `from` to `out`, returning the bytes read and whether `out` still takes bytes: a
/// read error is an error, a write error (a closed pipe) only ends the copy.
fn copy(
    from: &mut impl std::io::Read,
    out: &mut impl std::io::Write,
) -> std::io::Result<(u64, bool)> {
    let mut buf = vec![0; 64 << 10];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok((total, true)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        if out.write_all(&buf[..n]).is_err() {
            return Ok((total, false));
        }
    }
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
