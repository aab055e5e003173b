//! Descendants that left their service: a process that owns services becomes a child subreaper,
//! so the orphans its services leave (a daemon that double forks, a `setsid` helper) become its
//! children instead of init's, and at teardown it kills and reaps them.
//!
//! Only children we did not start on purpose are touched. Every child the spawner thread
//! starts is recorded here until it is reaped, and so is any other child meant to outlive
//! teardown ([`keep`]). A child of ours in our own process group is left alone too: that is
//! what `std::process::Command` makes, for instance a child a test body started and waits for.
//! What remains is an orphan we adopted, and only those are killed and reaped, each by its pid
//! (no `waitpid(-1)`, which would steal the exit status of a child someone else waits for). A
//! child's pid cannot be reused before its parent reaps it, so killing it by pid is safe.
//!
//! Adopted orphans that exit while the run goes on are reaped as they do (on `SIGCHLD`, by a
//! thread of ours), so that a service that keeps leaving short-lived orphans does not fill the
//! process table with our zombies. A child is recorded under the same lock as the scan for
//! orphans, from before it is started until it is recorded, so no scan can take it for one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// How many times teardown looks for adopted orphans: each round's victims may leave orphans
/// of their own, which come to us once their parent is gone.
const ROUNDS: usize = 50;

/// Whether this process is a child subreaper.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// Set (under the lock of the known children) once the process is ending on a signal: nothing
/// starts any more, so nothing starts after its children's groups were killed.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// The children we started on purpose and that someone waits for.
/// Each is mapped to whether it is meant to outlive this process (a supervisor for nextest).
fn known() -> MutexGuard<'static, BTreeMap<i32, bool>> {
    static KNOWN: Mutex<BTreeMap<i32, bool>> = Mutex::new(BTreeMap::new());
    KNOWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphaned descendants
/// become its children rather than init's, so that [`remove_descendants`] can find them. For a
/// process that owns services for as long as it lives: `harness up`, a detached supervisor, a
/// test runner.
pub fn become_subreaper() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    if !SUBREAPER.swap(true, Ordering::AcqRel) {
        reap_on_sigchld();
    }
    Ok(())
}

/// Reaps the adopted orphans that exit from now on, on a thread of its own.
fn reap_on_sigchld() {
    let mut signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGCHLD]) {
        Ok(signals) => signals,
        Err(e) => {
            tracing::debug!(
                "failed to handle SIGCHLD; adopted orphans are reaped at teardown: {e}"
            );
            return;
        }
    };
    let started = std::thread::Builder::new()
        .name("harness-reaper".into())
        .spawn(move || {
            for _ in signals.forever() {
                reap_adopted_zombies();
            }
        });
    if let Err(e) = started {
        tracing::debug!(
            "failed to start the reaper thread; adopted orphans are reaped at teardown: {e}"
        );
    }
}

/// Runs `spawn`, which starts a child on purpose, and records the child `pid_of` names, under
/// the lock every scan for orphans holds: no scan can see the child before it is recorded.
/// Once the process is ending on a signal, returns `closed()` instead. A child that `outlives`
/// this process on purpose is left running when it ends on a signal.
pub(crate) fn spawn_known<T>(
    outlives: bool,
    spawn: impl FnOnce() -> T,
    pid_of: impl FnOnce(&T) -> Option<u32>,
    closed: impl FnOnce() -> T,
) -> T {
    let mut known = known();
    if CLOSED.load(Ordering::Acquire) {
        return closed();
    }
    let spawned = spawn();
    if let Some(pid) = pid_of(&spawned).and_then(|p| i32::try_from(p).ok()) {
        known.insert(pid, outlives);
    }
    spawned
}

/// Forgets `pid` once it has been reaped (its pid may be reused from now on).
pub(crate) fn reaped(pid: Pid) {
    known().remove(&pid.as_raw_nonzero().get());
}

/// Kills and reaps every orphan this process adopted as a subreaper, then kills and removes
/// what is left in this process's cgroups (see [`run_cgroup`](crate::exec::run_cgroup)).
/// Call it after the services stopped, as the last step of a teardown; returns how many
/// processes it found.
pub fn remove_descendants() -> usize {
    let mut found = crate::exec::cgroup::remove_run_cgroup();
    found += kill_adopted();
    found
}

/// For a process about to end on a signal, whose services have not been stopped: kills the
/// process group of every child it started (the death signal would take only the children
/// themselves, later, and what their groups still hold would be orphaned to init once we are
/// gone), waits a moment for them to die, then does what [`remove_descendants`] does.
pub(crate) fn remove_everything_now() -> usize {
    let children: Vec<i32> = {
        let known = known();
        CLOSED.store(true, Ordering::Release);
        known
            .iter()
            .filter(|&(_, &outlives)| !outlives)
            .map(|(&pid, _)| pid)
            .collect()
    };
    for &pid in &children {
        if let Some(pid) = Pid::from_raw(pid) {
            // Our unreaped child, so its pid, which is also its group's id, is still ours.
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while children.iter().any(|&pid| running(pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    remove_descendants()
}

/// Whether `pid` runs (exists and is no zombie).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Reaps the adopted orphans that have exited already, without killing anything: a cgroup
/// they were in cannot be removed while they are zombies of ours on some kernels.
pub(crate) fn reap_adopted_zombies() {
    if !SUBREAPER.load(Ordering::Acquire) {
        return;
    }
    let known = known();
    for child in adopted(&known) {
        if child.zombie {
            // A zombie: the wait returns at once.
            reap(child.pid);
        }
    }
}

/// Kills and reaps the adopted orphans, round after round until none is left.
fn kill_adopted() -> usize {
    if !SUBREAPER.load(Ordering::Acquire) {
        return 0;
    }
    let mut found = 0;
    for _ in 0..ROUNDS {
        let children = {
            let known = known();
            let children = adopted(&known);
            for child in &children {
                if !child.zombie {
                    let _ = rustix::process::kill_process(child.pid, Signal::KILL);
                }
            }
            children
        };
        if children.is_empty() {
            break;
        }
        for child in &children {
            reap(child.pid);
        }
        found += children.iter().filter(|c| !c.zombie).count();
        // The victims' own children are reparented to us as they die; the next round finds
        // them.
        std::thread::sleep(Duration::from_millis(1));
    }
    if found > 0 {
        tracing::debug!(found, "killed descendants that had left their services");
    }
    found
}

/// Waits for the child `pid`, which is dead or dying.
fn reap(pid: Pid) {
    loop {
        match rustix::process::waitid(WaitId::Pid(pid), WaitIdOptions::EXITED) {
            Err(rustix::io::Errno::INTR) => continue,
            _ => return,
        }
    }
}

/// A child of ours that we did not start on purpose.
struct Adopted {
    pid: Pid,
    zombie: bool,
}

/// Our children (from `/proc/*/stat`) that are neither `known` nor in our process group.
fn adopted(known: &BTreeMap<i32, bool>) -> Vec<Adopted> {
    let me = rustix::process::getpid();
    let our_group = rustix::process::getpgrp();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !known.contains_key(pid))
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name (field 2) may hold spaces and parentheses: the fields are
            // counted after its closing parenthesis, the last one.
            let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
            let state = fields.next()?;
            let ppid: i32 = fields.next()?.parse().ok()?;
            let pgid: i32 = fields.next()?.parse().ok()?;
            (ppid == me.as_raw_nonzero().get() && Pid::from_raw(pgid) != Some(our_group)).then(
                || Adopted {
                    pid: Pid::from_raw(pid).expect("a /proc entry is a positive pid"),
                    zombie: state == "Z",
                },
            )
        })
        .collect()
}
