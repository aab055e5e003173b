//! `ProcessExecutor`: a service as a local process.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_io::Timer;
use futures_lite::future;

use crate::exec::{
    Command, EventStream, ExitStatus, LaunchError, Launcher, LocalLauncher, LocalProcess,
    OutputStream, ProcessEvent, ProcessHandle,
};
use crate::topology::ServiceTarget;

use super::error::StartFailure;
use super::executor::{BoxFuture, RunningService, ServiceExecutor, StartSpec, StopRequest};
use super::logs::LogBuffer;

/// Runs `process:` targets on this machine with [`LocalLauncher`]: each in a process group of
/// its own, killed if harness dies.
///
/// The process inherits the caller's environment, plus the injected variables and the
/// topology's `env` (as `std::process` and process-compose do). A `binary` with a `/` is a
/// path, relative to the manager's base directory (the current directory unless set); a bare
/// name is looked up in `PATH`. The process runs in its `working_dir`, else in the base
/// directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessExecutor;

impl ServiceExecutor for ProcessExecutor {
    fn start<'a>(
        &'a self,
        spec: &'a StartSpec,
        log: LogBuffer,
    ) -> BoxFuture<'a, Result<Box<dyn RunningService>, StartFailure>> {
        Box::pin(async move {
            let ServiceTarget::Process(target) = &spec.service.target else {
                return Err(StartFailure::Unsupported(spec.service.target.kind()));
            };
            let binary = resolve_binary(&target.binary, &spec.base_dir)?;
            let dir = match &target.working_dir {
                Some(dir) => spec.base_dir.join(dir),
                None => spec.base_dir.clone(),
            };
            let env = spec.env();
            let dir = dir.to_string_lossy().into_owned();
            let command = Command::new(binary.to_string_lossy())
                .args(&target.args)
                .envs(env.clone())
                .current_dir(dir.clone())
                .bounded_output(OUTPUT_BATCHES)
                .own_cgroup(&spec.service.name);
            let mut process = LocalLauncher
                .spawn(&command)
                .await
                .map_err(StartFailure::Launch)?;
            let events = process
                .take_events()
                .expect("a fresh handle has its events");
            let exit = pump_events(events, log, format!("harness-log-{}", process.pid()))?;
            Ok(Box::new(LocalService {
                process,
                exit,
                env,
                dir,
            }) as Box<dyn RunningService>)
        })
    }
}

/// How many batches of a service's output (a pipe read each, at most 64 KiB) wait for its log:
/// beyond that the service blocks on its pipe until the log catches up.
pub(crate) const OUTPUT_BATCHES: usize = 16;

/// Lines written to the log file between two flushes when more keep coming.
const FLUSH_EVERY: usize = 4096;

/// Feeds a service's output into `log` on a thread of its own named `thread`, so that it keeps
/// flowing whether or not anybody awaits anything, and records its exit (after its last line)
/// in the returned watch. The file is flushed whenever no more output is waiting.
pub(crate) fn pump_events(
    mut events: EventStream,
    log: LogBuffer,
    thread: String,
) -> Result<Arc<Mutex<ExitWatch>>, StartFailure> {
    let exit = Arc::new(Mutex::new(ExitWatch::default()));
    let watch = exit.clone();
    std::thread::Builder::new()
        .name(thread)
        .spawn(move || {
            let handle = |event| match event {
                ProcessEvent::Stdout(line) => log.push_buffered(OutputStream::Stdout, line),
                ProcessEvent::Stderr(line) => log.push_buffered(OutputStream::Stderr, line),
                ProcessEvent::Exited(status) => {
                    log.flush();
                    ExitWatch::exited(&watch, status);
                }
                ProcessEvent::Started { .. } => {}
            };
            future::block_on(async {
                while let Some(event) = events.recv().await {
                    handle(event);
                    for _ in 0..FLUSH_EVERY {
                        match events.try_recv() {
                            Some(event) => handle(event),
                            None => break,
                        }
                    }
                    log.flush();
                }
            })
        })
        .map_err(|source| StartFailure::Io {
            doing: "start a log reader thread",
            source,
        })?;
    Ok(exit)
}

/// The program to run: a path resolved against `base` (and checked, so that a missing binary
/// is reported with its full path), or a bare name left for `PATH`.
pub(crate) fn resolve_binary(binary: &str, base: &Path) -> Result<PathBuf, StartFailure> {
    if !binary.contains('/') {
        return Ok(PathBuf::from(binary));
    }
    // `./target/debug/x` under `/project` reads better as `/project/target/debug/x`.
    let path: PathBuf = base
        .join(binary)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    check_binary(&path)?;
    Ok(path)
}

/// Fails unless `path` is a file (or a link to one): a missing path and a directory (or FIFO,
/// device, socket) are told apart.
pub(crate) fn check_binary(path: &Path) -> Result<(), StartFailure> {
    use std::os::unix::fs::FileTypeExt as _;
    let Ok(metadata) = std::fs::metadata(path) else {
        return Err(StartFailure::MissingBinary(path.to_path_buf()));
    };
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(StartFailure::NotAProgram {
        path: path.to_path_buf(),
        kind: what,
    })
}

struct LocalService {
    process: LocalProcess,
    exit: Arc<Mutex<ExitWatch>>,
    /// Its environment and working directory, which [`RunningService::exec`] runs with.
    env: Vec<(String, String)>,
    dir: String,
}

/// The exit of a service as its output reader saw it (after its last line), and who to tell.
#[derive(Default)]
pub(crate) struct ExitWatch {
    status: Option<ExitStatus>,
    notify: Option<Box<dyn FnOnce(ExitStatus) + Send>>,
}

impl ExitWatch {
    /// How it ended, once it has.
    pub(crate) fn status(watch: &Mutex<ExitWatch>) -> Option<ExitStatus> {
        watch.lock().unwrap_or_else(|e| e.into_inner()).status
    }

    /// Calls `notify` once, when the service ends (at once if it already has).
    pub(crate) fn on_exit(watch: &Mutex<ExitWatch>, notify: Box<dyn FnOnce(ExitStatus) + Send>) {
        let mut guard = watch.lock().unwrap_or_else(|e| e.into_inner());
        match guard.status {
            Some(status) => {
                drop(guard);
                notify(status);
            }
            None => guard.notify = Some(notify),
        }
    }

    fn exited(watch: &Mutex<ExitWatch>, status: ExitStatus) {
        let notify = {
            let mut watch = watch.lock().unwrap_or_else(|e| e.into_inner());
            watch.status = Some(status);
            watch.notify.take()
        };
        if let Some(notify) = notify {
            notify(status);
        }
    }
}

impl RunningService for LocalService {
    fn pid(&self) -> Option<u32> {
        Some(self.process.pid())
    }

    fn exec(
        &self,
        argv: &[String],
    ) -> BoxFuture<'static, Result<crate::exec::Output, LaunchError>> {
        let command = super::executor::exec_command(argv)
            .map(|command| command.envs(self.env.clone()).current_dir(self.dir.clone()));
        Box::pin(async move { LocalLauncher.output(&command?).await })
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        self.process.try_status()
    }

    fn on_exit(&self, notify: Box<dyn FnOnce(ExitStatus) + Send>) {
        ExitWatch::on_exit(&self.exit, notify);
    }

    fn stop(&mut self, how: StopRequest) -> BoxFuture<'_, Result<ExitStatus, LaunchError>> {
        Box::pin(async move {
            let status = stop_gracefully(&mut self.process, how).await;
            // What left the process group (a daemon that double forked) is still in the
            // service's cgroup.
            self.process.remove_cgroup();
            status
        })
    }
}

/// Stops `process` as every executor does: `how.signal` (SIGTERM unless the service says
/// otherwise) to its process group, up to `how.grace` to end, then SIGKILL. Returns how it
/// ended (at once if it already has).
pub(crate) async fn stop_gracefully<P: ProcessHandle>(
    process: &mut P,
    how: StopRequest,
) -> Result<ExitStatus, LaunchError> {
    if let Some(status) = process.try_status() {
        return Ok(status);
    }
    let grace = how.grace;
    match process.signal(how.signal).await {
        Ok(()) | Err(LaunchError::AlreadyExited { .. }) => {}
        Err(e) => return Err(e),
    }
    let ended = future::or(async { Some(process.wait().await) }, async {
        Timer::after(grace).await;
        None
    })
    .await;
    if let Some(status) = ended {
        return status;
    }
    match process.kill().await {
        Ok(()) | Err(LaunchError::AlreadyExited { .. }) => {}
        Err(e) => return Err(e),
    }
    process.wait().await
}
