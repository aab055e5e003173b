//! `harness up -d`: start a topology under a detached supervisor and return once it is healthy.
//!
//! Services get SIGKILL when the thread that forked them dies, so they cannot outlive the
//! `harness up -d` that the user ran. That process re-executes `harness` as a supervisor
//! (`up --supervise DIR`) in a session of its own, with the run's lock as its stdin (so the
//! lock is held exactly as long as the supervisor lives, however it dies) and its output in
//! files of the state directory, never in the caller's pipes. The caller relays that output
//! (the progress, then the table of services) until the supervisor reports every service
//! healthy, or exits because the start failed.
//!
//! The supervisor owns the [`ServiceManager`], keeps the registry in `registry.json`, serves
//! `--api`, and on SIGTERM, SIGINT or SIGHUP stops everything and removes the state directory.
//! When the registry cannot be saved (a full disk), it says so in its log, once per distinct
//! failure, and leaves a record for `harness status` ([`crate::save_failure`]); it sets space
//! aside at its start for both, since a full disk would refuse them too.
//! It is a child subreaper, so the orphans its services leave are removed at teardown too, and
//! it records its cgroup (where it has one) in `cgroup`: killed with SIGKILL, it leaves what
//! escaped its services' process groups in that cgroup, and whichever harness command next
//! finds the run stale kills it ([`remove_stale_cgroup`]).

use std::fs::{self, File};
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use harness::orchestrator::ServiceManager;
use harness::registry::{AutosaveGuard, Registry, SaveReport};
use harness::topology::TopologyConfig;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::output::{errln, outln};
use crate::run::EXIT_HARNESS_FAILED;
use crate::save_failure;
use crate::state::{
    Run, RunInfo, canonical, clear_except_lock, create_state_root, now_secs, run_dir_for,
    state_root, try_lock,
};
use crate::up::{
    EXIT_START_FAILED, StopSignals, UpArgs, api_token, print_progress, print_table, start_api,
    start_unless_stopped, stop_api, tear_down,
};

/// `harness up -d`'s exit code when the topology already runs under a supervisor.
pub const EXIT_ALREADY_RUNNING: u8 = 4;

/// How long the registry file may lag behind a change.
const AUTOSAVE_DEBOUNCE: Duration = Duration::from_millis(200);

/// The start of the line the supervisor prints once every service is healthy.
const READY: &str = "harness up: all ";

/// How often the caller looks at the supervisor's output.
const POLL: Duration = Duration::from_millis(50);

/// The disk space the supervisor sets aside for each of its output files, so that it can
/// still report, once the disk is full, that it cannot save the registry: some hundred lines.
const OUTPUT_RESERVE: u64 = 64 * 1024;

/// `harness up -d`: starts the supervisor and relays its output until the topology is healthy
/// (exit 0) or its start failed (exit 1, nothing left behind).
pub fn detach(args: &UpArgs, topology: &TopologyConfig) -> ExitCode {
    match detach_inner(args, topology) {
        Ok(code) => code,
        Err(e) => {
            errln!("harness up: failed to {e}");
            ExitCode::from(EXIT_HARNESS_FAILED)
        }
    }
}

fn detach_inner(args: &UpArgs, topology: &TopologyConfig) -> Result<ExitCode, String> {
    let root = state_root();
    create_state_root(&root)?;
    let dir = run_dir_for(&root, &topology.files);
    let file = canonical(&args.file);
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let lock = try_lock(&dir, true).map_err(|e| format!("lock {}/lock: {e}", dir.display()))?;
    let Some(lock) = lock else {
        let who = RunInfo::read(&dir).map_or_else(
            || "another `harness up -d` is starting it".to_string(),
            |info| format!("supervisor pid {}", info.pid),
        );
        errln!(
            "harness up: {} is already running ({who}; state in {}); stop it with `harness down \
             {}`",
            file.display(),
            dir.display(),
            quote_path(&file)
        );
        return Ok(ExitCode::from(EXIT_ALREADY_RUNNING));
    };
    // We hold the lock, so whatever is left here belongs to a run whose supervisor is gone.
    let leftovers = fs::read_dir(&dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .any(|e| e.file_name() != "lock");
    if leftovers {
        let run = Run {
            dir: dir.clone(),
            info: RunInfo::read(&dir),
            lock: None,
        };
        let pid = run
            .info
            .as_ref()
            .map_or_else(|| "?".to_string(), |i| i.pid.to_string());
        outln!(
            "harness up: removing the stale run of {} (its supervisor, pid {pid}, is gone, and \
             its services died with it)",
            run.describe()
        );
        remove_stale_cgroup(&dir);
        clear_except_lock(&dir).map_err(|e| format!("clean {}: {e}", dir.display()))?;
    }
    let result = spawn_and_relay(args, &dir, &lock);
    if !matches!(result, Ok(Relayed::Ready)) {
        // The supervisor is gone: what escaped its services must go too.
        remove_stale_cgroup(&dir);
    }
    if matches!(result, Ok(Relayed::Exited(_)) | Err(_)) {
        // The supervisor is gone (or never started): nothing may be left. It removes its
        // directory itself; this covers a supervisor that died before it could.
        let _ = fs::remove_dir_all(&dir);
    }
    match result? {
        Relayed::Ready => {
            outln!(
                "harness up: state in {}; see `harness status`, `harness logs SERVICE`; stop \
                 with `harness down {}`",
                dir.display(),
                quote_path(&file)
            );
            Ok(ExitCode::SUCCESS)
        }
        Relayed::Exited(code) => Ok(ExitCode::from(code)),
        Relayed::Died { pid, status } => {
            // Its log is kept for the user to read; the run is stale now (its lock is free), so
            // the next `harness up -d`, `status`, `logs` or `down` removes it.
            errln!(
                "harness up: failed to start {}: the supervisor (pid {pid}) {status} before every \
                 service was healthy; its services died with it; its log is {} (and \
                 supervisor.err beside it), kept until the next harness command",
                file.display(),
                dir.join("supervisor.log").display()
            );
            Ok(ExitCode::from(EXIT_START_FAILED))
        }
    }
}

/// `path` as a shell word, for a command line the user may paste.
pub(crate) fn quote_path(path: &Path) -> String {
    harness::exec::quote(&path.to_string_lossy())
}

/// How the supervisor's start ended.
enum Relayed {
    /// Every service is healthy; the supervisor goes on running.
    Ready,
    /// The supervisor exited before that, with this exit code for `up -d`.
    Exited(u8),
    /// The supervisor died before that: killed by a signal, or ended with an exit code it
    /// never uses (a panic).
    Died {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: harness::exec::ExitStatus,
    },
}

fn spawn_and_relay(args: &UpArgs, dir: &Path, lock: &File) -> Result<Relayed, String> {
    let token = api_token(&args.api)?;
    let create = |name: &str| {
        let path = dir.join(name);
        let writer = File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        let reader = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        Ok::<_, String>((writer, reader))
    };
    let (out, mut out_reader) = create("supervisor.log")?;
    let (err, mut err_reader) = create("supervisor.err")?;

    let exe = std::env::current_exe().map_err(|e| format!("find the harness executable: {e}"))?;
    let mut command = Command::new(&exe);
    command.arg("up").arg(&args.file);
    for overlay in &args.overlays {
        command.arg("--overlay").arg(overlay);
    }
    command
        .arg("--stop-grace")
        .arg(format!("{}ms", args.stop_grace.as_millis()));
    if let Some(pull) = args.pull {
        let name = harness::topology::PullPolicy::ALL
            .iter()
            .find(|(_, p)| *p == pull)
            .map(|(n, _)| *n)
            .expect("every policy has a name");
        command.arg("--pull").arg(name);
    }
    if let Some(api) = &args.api.api {
        command.arg("--api").arg(api);
    }
    if let Some(token) = token {
        let path = dir.join("api.token");
        harness::api::write_token_file(&path, &token).map_err(|e| e.to_string())?;
        command.arg("--token-file").arg(path);
    }
    command.arg("--supervise").arg(dir);
    let stdin = lock
        .try_clone()
        .map_err(|e| format!("share the lock of {}: {e}", dir.display()))?;
    // Ctrl-C during the start (or a closed terminal) is passed on to the supervisor, which
    // stops what it started.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .map_err(|e| format!("install handlers for SIGINT, SIGTERM, SIGHUP and SIGQUIT: {e}"))?;
    let mut child = command
        .stdin(Stdio::from(stdin))
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("start the supervisor {}: {e}", exe.display()))?;
    let supervisor = rustix::process::Pid::from_child(&child);

    let mut pending = Vec::new();
    let mut err_pending = Vec::new();
    loop {
        // Read before checking for the exit, so that nothing written before it is missed.
        let exited = child
            .try_wait()
            .map_err(|e| format!("wait for the supervisor: {e}"))?;
        // Passed on as they come, so that a service the start waits for is reported while it
        // is waited for (see `print_progress`), not only after a failed start.
        for line in read_lines(&mut err_reader, &mut err_pending, exited.is_some()) {
            errln!("{line}");
        }
        for line in read_lines(&mut out_reader, &mut pending, exited.is_some()) {
            outln!("{line}");
            if line.starts_with(READY) {
                return Ok(Relayed::Ready);
            }
        }
        if let Some(status) = exited {
            let code = match status.code() {
                Some(code) if code == i32::from(EXIT_HARNESS_FAILED) => EXIT_HARNESS_FAILED,
                Some(code) if code == i32::from(EXIT_START_FAILED) => EXIT_START_FAILED,
                _ => {
                    return Ok(Relayed::Died {
                        pid: child.id(),
                        status: status.into(),
                    });
                }
            };
            return Ok(Relayed::Exited(code));
        }
        if signals.pending().next().is_some() {
            let _ = rustix::process::kill_process(supervisor, rustix::process::Signal::TERM);
        }
        std::thread::sleep(POLL);
    }
}

/// The complete lines that arrived in `file` since the last call (and, with `all`, the last
/// unfinished one too).
fn read_lines(file: &mut File, pending: &mut Vec<u8>, all: bool) -> Vec<String> {
    let _ = file.read_to_end(pending);
    let mut lines = Vec::new();
    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=end).collect();
        lines.push(String::from_utf8_lossy(&line[..end]).into_owned());
    }
    if all && !pending.is_empty() {
        lines.push(String::from_utf8_lossy(pending).into_owned());
        pending.clear();
    }
    lines
}

/// The supervisor (`harness up FILE --supervise DIR`): starts the topology, reports, then
/// keeps it running until SIGTERM or SIGINT; removes `dir` when it ends.
pub fn supervise(args: &UpArgs, dir: &Path) -> ExitCode {
    // Out of the caller's session: the terminal's Ctrl-C and hangup no longer reach us.
    let _ = rustix::process::setsid();
    // Orphans the services leave come to us, to be removed at teardown.
    if let Err(e) = harness::exec::become_subreaper() {
        tracing::debug!("failed to become a child subreaper: {e}");
    }
    if let Some(cgroup) = harness::exec::run_cgroup() {
        let path = dir.join(CGROUP_FILE);
        if let Err(e) = fs::write(&path, cgroup.as_os_str().as_encoded_bytes()) {
            errln!(
                "harness up: warning: failed to write {}: {e}",
                path.display()
            );
        }
    }
    let code = supervise_inner(args, dir).unwrap_or_else(|e| {
        errln!("harness up: failed to {e}");
        ExitCode::from(EXIT_HARNESS_FAILED)
    });
    harness::exec::remove_descendants();
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        errln!("harness up: failed to remove {}: {e}", dir.display());
    }
    code
}

fn supervise_inner(args: &UpArgs, dir: &Path) -> Result<ExitCode, String> {
    let topology =
        TopologyConfig::load_with_env(&args.file, &args.overlays).map_err(|e| e.to_string())?;
    let token = api_token(&args.api)?;
    let stop = StopSignals::install()?;
    let registry_file = dir.join("registry.json");
    // Best effort, like every write to a full disk.
    let _ = harness::sys::reserve_space(std::io::stdout(), OUTPUT_RESERVE);
    let _ = harness::sys::reserve_space(std::io::stderr(), OUTPUT_RESERVE);
    save_failure::reserve(dir);
    let registry = Registry::new();
    let autosave = registry
        .autosave_reporting(&registry_file, AUTOSAVE_DEBOUNCE, report_saves(dir))
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = topology.services.keys().cloned().collect();
    let cargo_bins = crate::cargo_bins::resolve(&topology)?;
    let mut manager =
        ServiceManager::new(topology, registry.clone()).with_stop_grace(args.stop_grace);
    if let Some(pull) = args.pull {
        manager = manager.with_pull(pull);
    }
    let manager = manager
        .with_cargo_bins(cargo_bins)
        .with_state_dir(dir.join("services"))
        .with_progress(print_progress);
    let api = start_api(&args.api, token, &manager)?;

    let pid = std::process::id();
    let info = RunInfo {
        pid,
        start_time: harness::sys::start_time(pid).unwrap_or(0),
        file: canonical(&args.file),
        overlays: args.overlays.iter().map(|o| canonical(o)).collect(),
        stop_grace: args.stop_grace,
        api: api.as_ref().map(|a| a.local_addr()),
        started: now_secs(),
        services: names.clone(),
    };
    info.write(dir)
        .map_err(|e| format!("write {}/run: {e}", dir.display()))?;

    let started = smol::block_on(start_unless_stopped(&manager, &stop.receiver));
    let code = match started {
        Some(Ok(())) => {
            // Saved now rather than after the debounce, so that `harness status` right after
            // `up -d` returns sees every service running: stopping the guard writes what is not
            // saved yet, and no save of an older state can land after it.
            finish(autosave);
            let autosave =
                registry.autosave_reporting(&registry_file, AUTOSAVE_DEBOUNCE, report_saves(dir));
            print_table(manager.topology(), &smol::block_on(manager.status_all()));
            outln!(
                "{READY}{}; running in the background (supervisor pid {pid})",
                crate::up::started_count(manager.topology())
            );
            let code = smol::block_on(async {
                let signal = stop.receiver.recv().await.unwrap_or("a signal");
                outln!("harness up: received {signal}; stopping");
                tear_down(&manager).await
            });
            match autosave {
                Ok(autosave) => finish(autosave),
                Err(e) => errln!("harness up: warning: failed to {e}"),
            }
            code
        }
        Some(Err(e)) => {
            errln!("harness up: failed to {e}");
            finish(autosave);
            ExitCode::from(EXIT_START_FAILED)
        }
        None => {
            smol::block_on(tear_down(&manager));
            finish(autosave);
            ExitCode::from(EXIT_START_FAILED)
        }
    };
    stop_api(api);
    stop.close();
    Ok(code)
}

/// What the supervisor does when saving the registry begins to fail, or works again: says so
/// in its log, and leaves (or removes) the record that `harness status` reads.
fn report_saves(dir: &Path) -> impl FnMut(SaveReport) + Send + 'static {
    let dir = dir.to_owned();
    move |report| match report {
        SaveReport::Failed(failure) => {
            errln!(
                "harness up: warning: {failure}; `harness status` shows what was saved last, \
                 which may be stale"
            );
            if let Err(e) = save_failure::record(&dir, &failure) {
                errln!(
                    "harness up: warning: failed to record that in {}: {e}",
                    dir.display()
                );
            }
        }
        SaveReport::Recovered(failure) => {
            errln!(
                "harness up: the registry is saved at {} again, after {} failed attempts",
                failure.path.display(),
                failure.attempts
            );
            save_failure::clear(&dir);
        }
        _ => {}
    }
}

/// The file of a run's directory that names the supervisor's cgroup.
const CGROUP_FILE: &str = "cgroup";

/// Kills what a dead supervisor left in its cgroup (the descendants of its services that
/// escaped their process groups, which its death signal does not reach) and removes the cgroup.
pub(crate) fn remove_stale_cgroup(dir: &Path) {
    if let Ok(cgroup) = fs::read_to_string(dir.join(CGROUP_FILE)) {
        harness::exec::remove_stale_cgroup(Path::new(cgroup.trim_end()));
    }
}

/// Writes the registry's last changes.
fn finish(autosave: AutosaveGuard) {
    if let Err(e) = autosave.stop() {
        errln!("harness up: warning: failed to {e}");
    }
}
