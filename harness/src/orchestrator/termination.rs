//! What a process ended by SIGTERM or SIGINT removes first: its runs' temporary state
//! directories and their containers, networks and images. Its services need nothing here: they
//! get their death signal (`PR_SET_PDEATHSIG`) when the process ends.
//!
//! A signal handler can do nothing of that (no allocation, no locks), so a thread of its own
//! waits for the signal (signal-hook's self-pipe), removes what the runs made, then lets the
//! signal's default action end the process, as it would have without the handler.

use signal_hook::consts::{SIGINT, SIGTERM};

use super::{docker, temp_dir};

/// From now on, SIGTERM and SIGINT remove what this process's runs made before they end it.
/// Only for a program that owns its process and has no handler of its own (the test runner of
/// `harness::main!()`); calls after the first do nothing.
pub(crate) fn remove_on_termination() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
            Ok(signals) => signals,
            Err(e) => {
                tracing::warn!("handle SIGTERM and SIGINT: {e}");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("harness-termination".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    temp_dir::remove_live();
                    async_io::block_on(docker::remove_own_runs());
                    // Last, as nothing starts after it. The services would die with the
                    // process (their death signal), but not what left their process groups,
                    // nor what is still in them.
                    crate::exec::reaper::remove_everything_now();
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    // Not reached for SIGTERM and SIGINT, whose default action ends the process.
                    std::process::exit(128 + signal);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("start the thread that handles SIGTERM and SIGINT: {e}");
        }
    });
}
