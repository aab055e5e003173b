//! The one long-lived thread that starts every local child.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that cloned the child exits, not the process. A
//! child started from a short-lived thread (a blocking-pool worker, a test thread) would be
//! killed when that thread ends. So every child is started here, on a thread that lives as long
//! as the process: children then die exactly when the harness dies, however it dies. The hop to
//! this thread costs about 57 us; the clone itself is in `spawn.rs`.

use std::sync::OnceLock;
use std::sync::mpsc;

use crate::exec::spawn::{ChildStack, SpawnError, SpawnPlan, Spawned, Step};

type Reply = Result<Spawned, SpawnError>;
type Request = (SpawnPlan, async_channel::Sender<Reply>);

fn spawner() -> &'static mpsc::Sender<Request> {
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                // One stack for every child: each has exec'd or exited before the next starts.
                let mut stack = ChildStack::new();
                for (plan, reply) in rx {
                    let spawned = match &mut stack {
                        // Recorded before anyone can see it, so that no scan for orphans takes it
                        // for one (it is ours, and its watcher reaps it).
                        Ok(stack) => crate::exec::reaper::spawn_known(
                            false,
                            || crate::exec::spawn::spawn(&plan, stack),
                            |spawned| {
                                let child = spawned.as_ref().ok()?;
                                Some(child.pid.as_raw_nonzero().get() as u32)
                            },
                            || {
                                Err(SpawnError {
                                    step: Step::Prepare,
                                    error: std::io::Error::other("the harness is ending"),
                                })
                            },
                        ),
                        Err(e) => Err(SpawnError {
                            step: Step::Prepare,
                            error: std::io::Error::new(e.kind(), e.to_string()),
                        }),
                    };
                    let _ = reply.send_blocking(spawned);
                }
            })
            .expect("failed to start the harness spawner thread");
        tx
    })
}

/// Starts `plan` in a new process group, set to receive `SIGKILL` when the harness dies.
pub(crate) async fn spawn(plan: SpawnPlan) -> Result<Spawned, SpawnError> {
    let gone = || SpawnError {
        step: Step::Prepare,
        error: std::io::Error::other("the harness spawner thread is gone"),
    };
    let (tx, rx) = async_channel::bounded(1);
    spawner().send((plan, tx)).map_err(|_| gone())?;
    rx.recv().await.map_err(|_| gone())?
}
