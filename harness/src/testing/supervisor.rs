//! Sharing a topology across the processes of a nextest run.
//!
//! `cargo nextest run` runs each test in a process of its own and has no teardown hook, so
//! in a process nextest started (`NEXTEST_RUN_ID` is set, and the arguments select exactly
//! `NEXTEST_TEST_NAME`) a test that is not `isolated` does not start its topology: it takes a
//! lease on the copy that a supervisor process owns, one supervisor per run and topology.
//!
//! - The key is `NEXTEST_RUN_ID` and a hash of the embedded topology texts (file and
//!   overlays), the overlays `HARNESS_OVERLAY` names and the base directory. The supervisor's
//!   directory is `<root>/tests/<run id>-<hash>/`, where `<root>` is `$HARNESS_STATE_DIR`, else
//!   `$XDG_RUNTIME_DIR/harness`, else `/tmp/harness-<uid>`.
//! - Election: a test connects to `sock` in that directory. If nothing answers it takes an
//!   exclusive `flock` on `lock`, tries again, and if still nothing answers it starts the
//!   supervisor and keeps the lock until the socket accepts. A socket left by a dead supervisor
//!   is removed then, and so are the directories of supervisors that died (their pid file names
//!   no live process and nobody holds their lock).
//! - The supervisor is the test binary itself (`current_exe`), run with `HARNESS_ROLE=supervisor`;
//!   `harness::main!()`'s runner sees the role before anything else and finds the topology among
//!   the binary's tests by its hash. It calls `setsid`, becomes a child subreaper, and its
//!   stdin, stdout and stderr are `/dev/null` and its log file (`supervisor.log` in its
//!   directory, or `$HARNESS_SUPERVISOR_LOG`), never the test's pipes, so nextest sees no leak.
//! - Protocol: each connection is a lease. The supervisor writes one line of JSON to it: `{"ok":
//!   {"file", "state_dir", "services": [{"name", "addr", "env", "log_file"}]}}`, or `{"err":
//!   "..."}`, the same start error for every test: a topology that failed to start is not
//!   started again. The test then keeps the connection open; closing it ends the lease.
//!   Services' logs are files in the supervisor's directory, which the test reads.
//! - Requests: over its lease a test may send one line of JSON, `{"start": NAME}`,
//!   `{"stop": NAME}` or `{"restart": NAME}`, and reads one line back: `{"ok": ...}` with the
//!   copy as it is afterwards (addresses included), or `{"err": "..."}`. The supervisor runs
//!   one request at a time, so [`Topology::start`], `stop` and `restart` behave as under
//!   `cargo test`: on the shared copy, seen by every test that shares it.
//! - Teardown: when no lease is left and either the parent of the test that started the
//!   supervisor (the nextest runner) is gone or no lease came for `HARNESS_SUPERVISOR_IDLE`
//!   seconds (10 by default), the supervisor takes the lock, removes its socket, stops the
//!   services and removes its directory.
//! - A supervisor killed with SIGKILL takes its services with it: they get the orchestrator's
//!   death signal (`PR_SET_PDEATHSIG`) from the supervisor's spawner thread. What escaped their
//!   process groups stays in their cgroups until the next supervisor or runner started in the
//!   same cgroup removes them.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::shared::Shared;
use super::topology::Topology;
use crate::sys::{self, ProcessIdentity};

/// Set to `supervisor` in the process that owns a shared topology.
pub(crate) const ROLE_ENV: &str = "HARNESS_ROLE";
/// The hash of the topology the supervisor serves.
const KEY_ENV: &str = "HARNESS_SUPERVISOR_KEY";
/// The supervisor's directory.
const DIR_ENV: &str = "HARNESS_SUPERVISOR_DIR";
/// `pid:start time` of the process whose end ends the run (nextest's runner).
const WATCH_ENV: &str = "HARNESS_SUPERVISOR_WATCH";
/// Seconds without a lease after which the supervisor stops its topology.
pub const IDLE_ENV: &str = "HARNESS_SUPERVISOR_IDLE";
/// A file the supervisor appends its log to, kept after it ends (for debugging).
pub const LOG_ENV: &str = "HARNESS_SUPERVISOR_LOG";
pub use crate::orchestrator::STATE_DIR_ENV;
/// Set by nextest for every test process of a run.
const RUN_ID_ENV: &str = "NEXTEST_RUN_ID";
/// Set by nextest to the name of the one test a process runs.
const TEST_NAME_ENV: &str = "NEXTEST_TEST_NAME";

const DEFAULT_IDLE: Duration = Duration::from_secs(10);
/// How long a test waits for a supervisor it started to accept.
const SPAWN_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// What a supervisor tells each test: the running copy, or why it did not start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Welcome {
    Ok(Copy),
    Err(String),
    /// What a command run in a service wrote, the answer to [`Request::Exec`].
    Output(super::service::ExecOutput),
}

/// What a test asks the supervisor to do to the shared copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Request {
    Start(String),
    Stop(String),
    Restart(String),
    /// Runs a command where a service runs: the service, then the command's words.
    Exec(String, Vec<String>),
    /// The copy as it is now, for a test that keeps a lease from an earlier test: another
    /// test may have restarted a service since.
    Describe,
}

impl Request {
    /// The verb and the service, for messages.
    pub(crate) fn parts(&self) -> (&'static str, &str) {
        match self {
            Request::Start(name) => ("start", name),
            Request::Stop(name) => ("stop", name),
            Request::Restart(name) => ("restart", name),
            Request::Exec(name, _) => ("run a command in", name),
            Request::Describe => ("describe", ""),
        }
    }
}

/// A running copy, as the supervisor describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Copy {
    pub(crate) file: PathBuf,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) services: Vec<RemoteService>,
}

/// One service of a running copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RemoteService {
    pub(crate) name: String,
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) log_file: Option<PathBuf>,
    /// Further ports it publishes: where it runs, and where this machine reaches it.
    #[serde(default)]
    pub(crate) ports: Vec<(u16, SocketAddr)>,
}

/// The nextest run this process belongs to, if nextest started it to run one test (`args`
/// select exactly `NEXTEST_TEST_NAME`). A program that a test runs inherits nextest's
/// variables, but not its arguments: it shares within its own process, as under `cargo test`.
pub(crate) fn nextest_run_id(args: &libtest_mimic::Arguments) -> Option<String> {
    let run_id = std::env::var(RUN_ID_ENV).ok().filter(|id| !id.is_empty())?;
    match std::env::var(TEST_NAME_ENV) {
        // Older nextest versions do not name the test.
        Err(_) => Some(run_id),
        Ok(name) => (args.exact && args.filter.as_deref() == Some(name.as_str())).then_some(run_id),
    }
}

/// FNV-1a: stable across builds and processes, unlike std's hasher.
pub(crate) fn fnv(parts: &[&[u8]]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// The supervisor's directory for `run_id` and topology `key`.
fn supervisor_dir(run_id: &str, key: &str) -> PathBuf {
    let run: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    crate::orchestrator::state_root()
        .join("tests")
        .join(format!("{run}-{key}"))
}

/// Takes a lease on the copy of `shared`'s topology that the run's supervisor owns, starting
/// the supervisor if none runs.
pub(crate) fn lease(shared: &Shared, run_id: &str) -> Result<Topology, String> {
    if std::env::var_os(ROLE_ENV).is_some() {
        // A supervisor that ran tests would start supervisors without end.
        return Err(format!(
            "share topology {}: this process is a supervisor ({ROLE_ENV} is set) and runs no \
             tests",
            shared.label()
        ));
    }
    let key = shared.fingerprint();
    let dir = supervisor_dir(run_id, &key);
    let label = shared.label();
    for _ in 0..20 {
        if let Some(answer) = connect(&dir) {
            return welcome(answer);
        }
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
        rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
        // A supervisor that was tearing down removed the file we locked: start over.
        let same = match (lock.metadata(), fs::metadata(&lock_path)) {
            (Ok(held), Ok(now)) => held.ino() == now.ino() && held.dev() == now.dev(),
            _ => false,
        };
        if !same {
            continue;
        }
        if let Some(answer) = connect(&dir) {
            return welcome(answer);
        }
        sweep(dir.parent().unwrap_or(&dir), &dir);
        spawn(shared, &key, &dir)?;
        drop(lock);
        if let Some(answer) = connect(&dir) {
            return welcome(answer);
        }
    }
    Err(format!(
        "share topology {label}: its supervisor in {} went away again and again",
        dir.display()
    ))
}

/// Takes a lease on the copy of `shared`'s topology that the runner which started this worker
/// serves on `socket` (`worker.rs`).
pub(crate) fn lease_at(shared: &Shared, socket: &Path) -> Result<Topology, String> {
    match connect_to(socket) {
        Some(answer) => welcome(answer),
        None => Err(format!(
            "share topology {}: the test runner does not answer on {}",
            shared.label(),
            socket.display()
        )),
    }
}

/// Removes what supervisors that died (SIGKILL) left in `tests`, other than `ours`: the
/// directories whose `supervisor.pid` names no live process and whose lock nobody holds.
fn sweep(tests: &Path, ours: &Path) {
    let Ok(entries) = fs::read_dir(tests) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        if dir == ours {
            continue;
        }
        // No pid file yet: a supervisor being started.
        let Some(pid) = fs::read_to_string(dir.join("supervisor.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if sys::alive(pid) {
            continue;
        }
        let Ok(lock) = File::open(dir.join("lock")) else {
            continue;
        };
        let locked = rustix::fs::flock(
            lock.as_fd(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        );
        if locked.is_ok() {
            log(&format!(
                "remove {}, left by a dead supervisor",
                dir.display()
            ));
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// Connects to the supervisor and reads its welcome; `None` when none answers.
fn connect(dir: &Path) -> Option<(Welcome, UnixStream)> {
    connect_to(&dir.join("sock"))
}

/// Connects to the socket and reads its welcome; `None` when nothing answers.
fn connect_to(socket: &Path) -> Option<(Welcome, UnixStream)> {
    let stream = UnixStream::connect(socket).ok()?;
    let mut line = String::new();
    // No timeout: the supervisor answers once the topology has started or failed to; if it
    // dies meanwhile the connection ends.
    let read = BufReader::new(&stream).read_line(&mut line).ok()?;
    if read == 0 {
        // It is tearing down.
        std::thread::sleep(POLL);
        return None;
    }
    let welcome = serde_json::from_str(&line).ok()?;
    Some((welcome, stream))
}

fn welcome((welcome, stream): (Welcome, UnixStream)) -> Result<Topology, String> {
    match welcome {
        Welcome::Ok(copy) => Ok(Topology::leased(copy, stream)),
        Welcome::Err(message) => Err(message),
        Welcome::Output(_) => Err("the lease began with a command's output".to_string()),
    }
}

/// `pid:start time` of this process's parent, to tell it from a later process with its pid.
fn parent_identity() -> Option<String> {
    let pid = rustix::process::getppid()?.as_raw_nonzero().get();
    let parent = ProcessIdentity::of(pid.unsigned_abs())?;
    Some(format!("{}:{}", parent.pid, parent.start_time))
}

/// Whether the process `pid:start time` still runs.
fn alive(identity: &str) -> bool {
    identity
        .split_once(':')
        .and_then(|(pid, start_time)| ProcessIdentity::parse(pid, start_time))
        .is_some_and(|process| process.is_alive())
}

/// Starts the supervisor, out of the test's session and pipes, and waits until it accepts.
fn spawn(shared: &Shared, key: &str, dir: &Path) -> Result<(), String> {
    let sock = dir.join("sock");
    // What a dead supervisor left.
    let _ = fs::remove_file(&sock);
    let exe = std::env::current_exe().map_err(|e| format!("find the test binary: {e}"))?;
    let log_path = std::env::var_os(LOG_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("supervisor.log"));
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("open {}: {e}", log_path.display()))?;
    let err = log
        .try_clone()
        .map_err(|e| format!("open {}: {e}", log_path.display()))?;
    let mut command = Command::new(&exe);
    command
        .env(ROLE_ENV, "supervisor")
        .env(KEY_ENV, key)
        .env(DIR_ENV, dir)
        .env(super::runner::BASE_DIR_ENV, shared.base_dir())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    if let Some(parent) = parent_identity() {
        command.env(WATCH_ENV, parent);
    }
    // It outlives this test on purpose: this process's teardown must not take it for an
    // orphan of a service.
    let mut child = crate::exec::reaper::spawn_known(
        true,
        || command.spawn(),
        |spawned| spawned.as_ref().ok().map(std::process::Child::id),
        || Err(std::io::Error::other("this process is ending")),
    )
    .map_err(|e| format!("start the supervisor {}: {e}", exe.display()))?;
    let deadline = Instant::now() + SPAWN_WAIT;
    loop {
        if UnixStream::connect(&sock).is_ok() {
            // Reaped by init once this process ends; not waited for.
            drop(child);
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "the supervisor of topology {} ended ({status}) before it listened; its log \
                 {}:\n{log}",
                shared.label(),
                log_path.display()
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the supervisor of topology {} did not listen on {} within {}s",
                shared.label(),
                sock.display(),
                SPAWN_WAIT.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// If this process is a supervisor, runs it over the one of `shareds` it serves.
pub(crate) fn run_if_supervisor(shareds: &[Arc<Shared>]) -> Option<ExitCode> {
    if std::env::var_os(ROLE_ENV).is_none_or(|role| role != "supervisor") {
        return None;
    }
    let (Some(key), Some(dir)) = (std::env::var(KEY_ENV).ok(), std::env::var_os(DIR_ENV)) else {
        eprintln!("harness supervisor: {KEY_ENV} and {DIR_ENV} must be set");
        return Some(ExitCode::FAILURE);
    };
    let Some(shared) = shareds.iter().find(|s| s.fingerprint() == key) else {
        eprintln!("harness supervisor: no topology of this binary has the hash {key}");
        return Some(ExitCode::FAILURE);
    };
    Some(supervise(shared, Path::new(&dir)))
}

fn log(message: &str) {
    eprintln!("harness supervisor {}: {message}", std::process::id());
}

fn supervise(shared: &Shared, dir: &Path) -> ExitCode {
    // It owns every service of the topology, so it needs the descriptors more than anyone;
    // the runner raised the limit already unless a `main` of the user's own called us.
    if let Err(e) = crate::limits::raise_open_files_limit() {
        log(&format!(
            "failed to raise the soft limit of open files to the hard one: {e}"
        ));
    }
    // Out of the test's session and process group: nextest's signals to the test do not reach
    // us. Orphaned services' descendants come to us rather than to init, to be removed at
    // teardown.
    let _ = rustix::process::setsid();
    if let Err(e) = crate::exec::become_subreaper() {
        log(&format!("failed to become a child subreaper: {e}"));
    }
    // Ended by a signal (`kill`, a shutdown), it removes its copy's containers, networks,
    // images and state first, as the runner does.
    crate::orchestrator::remove_on_termination();
    let sock = dir.join("sock");
    let listener = match UnixListener::bind(&sock) {
        Ok(listener) => listener,
        Err(e) => {
            log(&format!("listen on {}: {e}", sock.display()));
            return ExitCode::FAILURE;
        }
    };
    let _ = fs::write(dir.join("supervisor.pid"), std::process::id().to_string());
    let idle = std::env::var(IDLE_ENV)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_IDLE);
    let watch = std::env::var(WATCH_ENV).ok();
    log(&format!("starting topology {}", shared.label()));
    let started = shared.start_supervised(&dir.join("services"));
    let welcome = match &started {
        Ok(topology) => {
            log(&format!("started topology {}", shared.label()));
            Welcome::Ok(topology.describe())
        }
        Err(message) => {
            log(&format!("failed to start: {message}"));
            Welcome::Err(message.clone())
        }
    };
    let line = welcome_line(&welcome);
    serve(
        &listener,
        &line,
        started.as_ref().ok(),
        idle,
        watch.as_deref(),
    );
    log("tearing down");
    // Under the lock, so that no test elects a new supervisor over what we remove.
    let lock_path = dir.join("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path);
    if let Ok(lock) = &lock {
        let _ = rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive);
    }
    let _ = fs::remove_file(&sock);
    drop(listener);
    let mut code = ExitCode::SUCCESS;
    if let Ok(topology) = started
        && let Err(e) = async_io::block_on(topology.shut_down())
    {
        log(&format!("stop topology {}: {e}", shared.label()));
        code = ExitCode::FAILURE;
    }
    let left = crate::exec::remove_descendants();
    if left > 0 {
        log(&format!(
            "killed {left} processes that had left their services"
        ));
    }
    for name in ["supervisor.pid", "supervisor.log"] {
        let _ = fs::remove_file(dir.join(name));
    }
    let _ = fs::remove_dir_all(dir.join("services"));
    let _ = fs::remove_file(&lock_path);
    // Fails when a test made a new lock file meanwhile: the directory is its now.
    let _ = fs::remove_dir(dir);
    log("done");
    code
}

/// The leases a supervisor has handed out.
struct Leases {
    held: usize,
    last_release: Instant,
    /// Set once the supervisor has decided to tear down: later connections get no welcome, so
    /// their tests elect a new supervisor (after this one's teardown, under the lock).
    closing: bool,
}

fn lock_leases(leases: &Mutex<Leases>) -> std::sync::MutexGuard<'_, Leases> {
    leases.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands out leases until none is left and the run is over or idle.
///
/// A thread accepts each test as it connects, so a lease costs a round trip rather than a poll
/// interval; the decision to tear down takes the same lock as handing out a lease, so no test
/// is welcomed to a topology that is going away.
fn serve(
    listener: &UnixListener,
    welcome: &str,
    topology: Option<&Topology>,
    idle: Duration,
    watch: Option<&str>,
) {
    let accepting = match listener.try_clone() {
        Ok(listener) => listener,
        Err(e) => {
            log(&format!("share the socket with the accepting thread: {e}"));
            return;
        }
    };
    let leases = Arc::new(Mutex::new(Leases {
        held: 0,
        last_release: Instant::now(),
        closing: false,
    }));
    let welcome = welcome.to_string();
    let handed_out = leases.clone();
    let topology = topology.cloned();
    // One request at a time, as one test process would make them.
    let one_at_a_time = Arc::new(Mutex::new(()));
    std::thread::spawn(move || {
        for stream in accepting.incoming() {
            let mut stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    log(&format!("accept: {e}"));
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            {
                let mut leases = lock_leases(&handed_out);
                if leases.closing || stream.write_all(welcome.as_bytes()).is_err() {
                    continue;
                }
                leases.held += 1;
            }
            let released = handed_out.clone();
            let topology = topology.clone();
            let one_at_a_time = one_at_a_time.clone();
            std::thread::spawn(move || {
                // Requests until the test's side closes, which ends the lease.
                answer_requests(&mut stream, topology.as_ref(), &one_at_a_time, log);
                let mut leases = lock_leases(&released);
                leases.held -= 1;
                leases.last_release = Instant::now();
            });
        }
    });
    loop {
        {
            let mut leases = lock_leases(&leases);
            if leases.held == 0 {
                let run_over = watch.is_some_and(|w| !alive(w));
                if run_over || leases.last_release.elapsed() >= idle {
                    leases.closing = true;
                    log(match run_over {
                        true => "the run is over and no test holds a lease",
                        false => "no test held a lease for the idle timeout",
                    });
                    return;
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// `welcome` as the line a lease begins with.
pub(crate) fn welcome_line(welcome: &Welcome) -> String {
    let mut line = serde_json::to_string(welcome).unwrap_or_else(|e| {
        serde_json::to_string(&Welcome::Err(format!("describe the copy: {e}"))).unwrap_or_default()
    });
    line.push('\n');
    line
}

/// Answers a lease's requests until the test closes it, one at a time (`one`); `note` hears of
/// each.
pub(crate) fn answer_requests(
    stream: &mut UnixStream,
    topology: Option<&Topology>,
    one: &Mutex<()>,
    note: fn(&str),
) {
    let Ok(reading) = stream.try_clone() else {
        return;
    };
    let mut lines = BufReader::new(reading);
    let mut line = String::new();
    while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
        let answer = match (serde_json::from_str::<Request>(&line), topology) {
            (Err(e), _) => Welcome::Err(format!("a request the supervisor does not know: {e}")),
            // No test gets a lease on a copy that failed to start.
            (Ok(_), None) => Welcome::Err("the topology did not start".to_string()),
            (Ok(Request::Describe), Some(topology)) => {
                // After a start, stop or restart under way, not halfway through one.
                let _one = one.lock().unwrap_or_else(|e| e.into_inner());
                Welcome::Ok(topology.describe())
            }
            (Ok(request), Some(topology)) => {
                let _one = one.lock().unwrap_or_else(|e| e.into_inner());
                let (verb, service) = request.parts();
                note(&format!("{verb} {service}, as a test asked"));
                let done = async_io::block_on(async {
                    match &request {
                        Request::Start(name) => topology.start(name).await.map(|()| None),
                        Request::Stop(name) => topology.stop(name).await.map(|()| None),
                        Request::Restart(name) => topology.restart(name).await.map(|()| None),
                        Request::Exec(name, argv) => topology.exec(name, argv).await.map(Some),
                        Request::Describe => Ok(None),
                    }
                });
                match done {
                    Ok(None) => Welcome::Ok(topology.describe()),
                    Ok(Some(output)) => Welcome::Output(output),
                    Err(e) => Welcome::Err(e.to_string()),
                }
            }
        };
        line.clear();
        let mut reply = serde_json::to_string(&answer).unwrap_or_default();
        reply.push('\n');
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_every_part_and_their_boundaries() {
        assert_eq!(fnv(&[b"a", b"b"]), fnv(&[b"a", b"b"]));
        assert_ne!(fnv(&[b"ab", b""]), fnv(&[b"a", b"b"]));
        assert_ne!(fnv(&[b"a"]), fnv(&[b"b"]));
    }

    #[test]
    fn this_process_parent_is_alive_and_a_made_up_one_is_not() {
        let parent = parent_identity().expect("a parent");
        assert!(alive(&parent), "{parent}");
        let (pid, start) = parent.split_once(':').unwrap();
        assert!(!alive(&format!(
            "{pid}:{}",
            start.parse::<u64>().unwrap() + 1
        )));
    }
}
