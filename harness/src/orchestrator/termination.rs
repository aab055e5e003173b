//! What a process ended by SIGTERM, SIGINT, SIGHUP (a closed terminal, a lost SSH session) or
//! SIGQUIT removes first: its runs' temporary state
//! directories and their containers, networks and images. Its services need nothing here: they
//! get their death signal (`PR_SET_PDEATHSIG`) when the process ends.
//!
//! A signal handler can do nothing of that (no allocation, no locks), so a thread of its own
//! waits for the signal (signal-hook's self-pipe), removes what the runs made, then lets the
//! signal's default action end the process, as it would have without the handler.

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

use super::{docker, temp_dir};

/// Helper processes of ours (the test runner's workers) that have runs of their own, by pid
/// and pidfd: ended first, with SIGTERM, and waited for, so that nothing of theirs outlives
/// this process. Signalled through the pidfd, never by pid, so a helper reaped meanwhile is
/// never mistaken for a later process with its pid.
static HELPERS: std::sync::Mutex<Vec<(u32, std::os::fd::OwnedFd)>> =
    std::sync::Mutex::new(Vec::new());

/// How long the helpers have to tear their runs down after SIGTERM.
const HELPERS_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Has a signal that ends this process end the child `pid` first and wait for it. Without
/// pidfds (Linux before 5.3) it is left to its death signal.
pub(crate) fn end_helper_first(pid: u32) {
    let Some(raw) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    match rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => HELPERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((pid, fd)),
        Err(e) => tracing::debug!(pid, "no pidfd for a helper process: {e}"),
    }
}

/// The child `pid` has ended and been reaped: nothing to end any more.
pub(crate) fn forget_helper(pid: u32) {
    HELPERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(p, _)| *p != pid);
}

/// SIGTERM to each helper, then waits until each has ended or [`HELPERS_GRACE`] has passed.
fn end_helpers() {
    let helpers = HELPERS.lock().unwrap_or_else(|e| e.into_inner());
    for (_, fd) in helpers.iter() {
        let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::TERM);
    }
    let deadline = std::time::Instant::now() + HELPERS_GRACE;
    for (_, fd) in helpers.iter() {
        // A pidfd is readable once its process has ended.
        let mut poll = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(fd),
            events: libc::POLLIN,
            revents: 0,
        }];
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `poll` is one valid pollfd, exclusively borrowed.
        unsafe { libc::poll(poll.as_mut_ptr(), 1, ms) };
    }
}

/// Set once an ending signal has arrived: from then on the thread that handles it ends the
/// process, not `main` returning.
static ENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long `main` waits for the handling thread before it returns anyway.
const ENDING_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// `code`, for `main` to return, unless an ending signal is being handled: then it waits for
/// the handling thread to end the process as the signal says. The tests a signal ends fail
/// (their workers get SIGTERM first, their services go), and `main` returning 101 then would
/// end the process before its runs are removed and with the wrong status.
pub(crate) fn unless_ending(code: std::process::ExitCode) -> std::process::ExitCode {
    let deadline = std::time::Instant::now() + ENDING_WAIT;
    while ENDING.load(std::sync::atomic::Ordering::SeqCst) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            tracing::warn!("the removal of this process's runs did not end; exiting anyway");
            break;
        }
        std::thread::park_timeout(left);
    }
    code
}

/// The signals that end a run after its teardown.
pub(crate) const ENDING_SIGNALS: [i32; 4] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT];

/// From now on, SIGTERM, SIGINT, SIGHUP and SIGQUIT remove what this process's runs made
/// before they end it.
/// Only for a program that owns its process and has no handler of its own (the test runner of
/// `harness::main!()`); calls after the first do nothing.
pub(crate) fn remove_on_termination() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let mut signals = match signal_hook::iterator::Signals::new(ENDING_SIGNALS) {
            Ok(signals) => signals,
            Err(e) => {
                tracing::warn!("handle SIGTERM, SIGINT, SIGHUP and SIGQUIT: {e}");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("harness-termination".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    ENDING.store(true, std::sync::atomic::Ordering::SeqCst);
                    end_helpers();
                    temp_dir::remove_live();
                    async_io::block_on(docker::remove_own_runs());
                    // Last, as nothing starts after it. The services would die with the
                    // process (their death signal), but not what left their process groups,
                    // nor what is still in them.
                    crate::exec::reaper::remove_everything_now();
                    // SIGQUIT's own action would dump a core of a process that did nothing
                    // wrong: it ends as the shell reports a signal, 128 + its number.
                    if signal != SIGQUIT {
                        let _ = signal_hook::low_level::emulate_default_handler(signal);
                    }
                    // Not reached for the others, whose default action ends the process.
                    std::process::exit(128 + signal);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("start the thread that handles the ending signals: {e}");
        }
    });
}
