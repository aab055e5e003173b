//! `harness logs SERVICE [FILE] [-f] [-n N]`: a service's output in a run that `harness up -d`
//! left running, from its log file (`<state>/services/SERVICE.log`).

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

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
    let mut text = Vec::new();
    file.read_to_end(&mut text)
        .map_err(|e| format!("failed to read {}: {e}", path.display()))?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(tail(&text, args.lines));
    let _ = out.flush();
    drop(out);
    if args.follow {
        follow(run, &mut file, text.len() as u64);
    }
    Ok(ExitCode::SUCCESS)
}

/// The last `lines` lines of `text` (all of it for `None`).
fn tail(text: &[u8], lines: Option<usize>) -> &[u8] {
    let Some(lines) = lines else { return text };
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut start = body.len();
    for _ in 0..lines {
        match body[..start].iter().rposition(|&b| b == b'\n') {
            Some(newline) => start = newline,
            None => return text,
        }
    }
    if lines == 0 {
        return &[];
    }
    &text[start + 1..]
}

/// Prints what is appended to the log from `offset` on, until the run is gone (Ctrl-C ends
/// the process).
fn follow(run: &Run, file: &mut File, mut offset: u64) {
    let mut checked = Instant::now();
    let mut buf = Vec::new();
    loop {
        std::thread::sleep(POLL);
        if let Ok(meta) = file.metadata()
            && meta.len() < offset
        {
            // Truncated: start again from its beginning.
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
        if checked.elapsed() >= LIVENESS {
            checked = Instant::now();
            if !run.alive() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail(b"a\nb\nc\n", Some(2)), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", Some(2)), b"b\nc");
        assert_eq!(tail(b"a\nb\n", Some(5)), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", None), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", Some(0)), b"");
    }
}
