//! The one long-lived thread that forks every local child.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process. A
//! child forked from a short-lived thread (a blocking-pool worker, a test thread) would be killed
//! when that thread ends. So every child is forked here, on a thread that lives as long as the
//! process: children then die exactly when the harness dies, however it dies.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command as StdCommand};
use std::sync::OnceLock;
use std::sync::mpsc;

type Request = (StdCommand, async_channel::Sender<io::Result<Child>>);

fn spawner() -> &'static mpsc::Sender<Request> {
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send_blocking(cmd.spawn());
                }
            })
            .expect("failed to start the harness spawner thread");
        tx
    })
}

/// Spawns `cmd` in a new process group, set to receive `SIGKILL` when the harness dies.
pub(crate) async fn spawn(mut cmd: StdCommand) -> io::Result<Child> {
    let parent = rustix::process::getpid();
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes two raw syscalls
    // (prctl, getppid), both async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died between fork and prctl; then no signal will ever come.
            if rustix::process::getppid() != Some(parent) {
                return Err(io::Error::other(
                    "the harness exited while this process was starting",
                ));
            }
            Ok(())
        });
    }
    let (tx, rx) = async_channel::bounded(1);
    spawner()
        .send((cmd, tx))
        .map_err(|_| io::Error::other("the harness spawner thread is gone"))?;
    rx.recv()
        .await
        .map_err(|_| io::Error::other("the harness spawner thread is gone"))?
}
