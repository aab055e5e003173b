//! `ManagedProcess`: a command whose lifecycle we own (restarts, graceful stop, pid tracking).
//!
//! Each managed process has a supervisor: a thread of its own running a small event loop, so
//! automatic restarts happen whatever runtime (if any) the caller uses. The supervisor owns the
//! running incarnation; the handle talks to it over a channel. Every incarnation's events pass
//! through the supervisor into one stream, so the caller sees `Started`, the lines and `Exited`
//! of each incarnation in turn, and the next `Started` only after the previous `Exited`.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::future;

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::{EventSink, EventStream, ExitStatus, ProcessEvent};
use crate::exec::launcher::{Launcher, ProcessHandle};
use crate::exec::signal::Signal;
use crate::exec::target::Target;

/// The longest pause between two automatic restarts, however many came before.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// At most this many events travel in one batch from an incarnation to the shared stream.
const BATCH_LIMIT: usize = 4096;

/// When a [`ManagedProcess`] is started again after it exits on its own.
///
/// A process that exits because of a signal sent through its handle counts like any other exit:
/// under `OnFailure`, a `SIGKILL` sent with `ProcessHandle::kill` is a failure and the process
/// comes back. Use `ManagedHandle::stop` to end it for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never restart automatically.
    #[default]
    Never,
    /// Restart after an exit that is not a success (a non-zero code or a signal), at most
    /// `max_restarts` times over the life of the handle.
    OnFailure {
        /// The most automatic restarts.
        max_restarts: u32,
    },
    /// Restart after any exit, at most `max_restarts` times over the life of the handle.
    Always {
        /// The most automatic restarts.
        max_restarts: u32,
    },
}

impl RestartPolicy {
    /// Whether an exit with `status` is followed by a restart, after `done` automatic restarts.
    fn restarts_after(self, status: ExitStatus, done: u32) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure { max_restarts } => !status.success() && done < max_restarts,
            RestartPolicy::Always { max_restarts } => done < max_restarts,
        }
    }
}

/// A [`Command`] whose lifecycle we own: it can be restarted by hand or automatically by a
/// [`RestartPolicy`], and it is stopped gracefully (`SIGTERM` to its process group, a grace
/// period, then `SIGKILL`).
///
/// Runs through any launcher; the handle is a [`ManagedHandle`].
///
/// ```no_run
/// # smol::block_on(async {
/// use std::time::Duration;
/// use harness::exec::{Command, Executor, ManagedProcess, RestartPolicy};
///
/// let server = ManagedProcess::new(Command::new("my-server").arg("--port=8080"))
///     .with_restart(RestartPolicy::OnFailure { max_restarts: 3 })
///     .with_stop_grace(Duration::from_secs(2));
/// let run = Executor::local("api").execute(server).await?;
/// run.handle.restart().await?;
/// println!("now running as pid {:?}", run.handle.pid());
/// run.handle.stop().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(()) });
/// ```
///
/// A managed process has no piped stdin and no raw stdout: each restart would replace them.
#[derive(Debug, Clone)]
#[must_use = "a ManagedProcess does nothing until an executor launches it"]
pub struct ManagedProcess {
    command: Command,
    policy: RestartPolicy,
    backoff: Duration,
    stop_grace: Duration,
}

impl ManagedProcess {
    /// Manages `command`: no automatic restarts, 100 ms backoff, 5 s stop grace period.
    pub fn new(command: Command) -> Self {
        ManagedProcess {
            command,
            policy: RestartPolicy::Never,
            backoff: Duration::from_millis(100),
            stop_grace: Duration::from_secs(5),
        }
    }

    /// Sets when the process comes back after it exits on its own.
    pub fn with_restart(mut self, policy: RestartPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the pause before the first automatic restart. Each further automatic restart waits
    /// twice as long as the one before, up to 30 s.
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets how long a stop waits after `SIGTERM` before it sends `SIGKILL`.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// The command.
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// The restart policy.
    pub fn restart_policy(&self) -> RestartPolicy {
        self.policy
    }

    fn backoff_after(&self, restarts: u32) -> Duration {
        self.backoff
            .saturating_mul(1 << restarts.min(16))
            .min(MAX_BACKOFF.max(self.backoff))
    }
}

impl Target for ManagedProcess {
    type Handle<L: Launcher> = ManagedHandle<L>;

    fn launch<L: Launcher>(
        &self,
        launcher: &L,
    ) -> impl Future<Output = Result<ManagedHandle<L>, LaunchError>> + Send {
        ManagedHandle::start(launcher.clone(), self.clone())
    }
}

/// What the handle and the supervisor both see.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: event_listener::Event,
}

#[derive(Default)]
struct State {
    /// The id of the running incarnation, or of the last one.
    pid: Option<u32>,
    running: bool,
    restarts: u32,
    last: Option<ExitStatus>,
    /// The supervisor has finished: stopped, given up, or its handle dropped.
    done: bool,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify(usize::MAX);
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

type Reply<T> = async_channel::Sender<Result<T, LaunchError>>;

/// A request from the handle to the supervisor.
enum Control {
    Signal(Signal, Reply<()>),
    Restart(Reply<()>),
    Stop(Reply<ExitStatus>),
}

/// The handle of a running [`ManagedProcess`].
///
/// Its event stream spans every incarnation and ends once the process is down for good.
/// Dropping the handle stops the supervisor and kills the process group of the running
/// incarnation.
pub struct ManagedHandle<L: Launcher> {
    shared: Arc<Shared>,
    /// The only sender: when the handle is dropped, the supervisor sees the channel close.
    control: async_channel::Sender<Control>,
    events: Option<EventStream>,
    _launcher: PhantomData<fn() -> L>,
}

impl<L: Launcher> ManagedHandle<L> {
    async fn start(launcher: L, spec: ManagedProcess) -> Result<Self, LaunchError> {
        let cmd = &spec.command;
        if cmd.stdin || cmd.raw_stdout {
            return Err(LaunchError::Unsupported(format!(
                "manage `{}`: a managed process cannot have piped stdin or raw stdout, \
                 since each restart would replace them",
                cmd.program
            )));
        }
        let (sink, events) = EventStream::channel();
        let (control_tx, control_rx) = async_channel::unbounded();
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = async_channel::bounded(1);
        let supervisor = Supervisor {
            launcher,
            spec,
            sink,
            shared: shared.clone(),
            control: control_rx,
        };
        std::thread::Builder::new()
            .name("harness-managed".into())
            .spawn(move || async_io::block_on(supervisor.run(ready_tx)))
            .map_err(|e| LaunchError::io("start a process supervisor thread", e))?;
        ready_rx.recv().await.map_err(|_| {
            LaunchError::Unsupported("start a managed process: its supervisor ended".into())
        })??;
        Ok(ManagedHandle {
            shared,
            control: control_tx,
            events: Some(events),
            _launcher: PhantomData,
        })
    }

    /// The process id of the running incarnation, or of the last one once none runs.
    pub fn pid(&self) -> Option<u32> {
        self.shared.read(|s| s.pid)
    }

    /// Whether an incarnation is running now (false between an exit and its restart).
    pub fn is_running(&self) -> bool {
        self.shared.read(|s| s.running)
    }

    /// How many times the process was started again, automatically or by
    /// [`ManagedHandle::restart`].
    pub fn restarts(&self) -> u32 {
        self.shared.read(|s| s.restarts)
    }

    /// Stops the running incarnation gracefully and starts a new one. Returns once the new one
    /// runs; [`ManagedHandle::pid`] then gives its id. Fails once the process is down for good.
    pub async fn restart(&self) -> Result<(), LaunchError> {
        match self.request(Control::Restart).await {
            Some(r) => r,
            None => Err(self.gone()),
        }
    }

    /// Stops the process for good: `SIGTERM` to its group, then `SIGKILL` after the grace
    /// period. No automatic restart follows. Returns the last incarnation's exit status;
    /// stopping a process that is already down returns its last status.
    pub async fn stop(&self) -> Result<ExitStatus, LaunchError> {
        match self.request(Control::Stop).await {
            Some(r) => r,
            None => self.last_status(),
        }
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Control,
    ) -> Option<Result<T, LaunchError>> {
        let (tx, rx) = async_channel::bounded(1);
        self.control.send(make(tx)).await.ok()?;
        rx.recv().await.ok()
    }

    fn gone(&self) -> LaunchError {
        LaunchError::AlreadyExited {
            pid: self.pid().unwrap_or(0),
        }
    }

    fn last_status(&self) -> Result<ExitStatus, LaunchError> {
        self.shared.read(|s| s.last).ok_or_else(|| {
            LaunchError::Unsupported("wait for a managed process: it never exited".into())
        })
    }
}

impl<L: Launcher> ProcessHandle for ManagedHandle<L> {
    fn id(&self) -> Option<u32> {
        self.pid()
    }

    fn take_events(&mut self) -> Option<EventStream> {
        self.events.take()
    }

    /// Sends `signal` to the running incarnation's process group. Fails between an exit and
    /// its restart, and once the process is down for good.
    async fn signal(&self, signal: Signal) -> Result<(), LaunchError> {
        match self.request(|reply| Control::Signal(signal, reply)).await {
            Some(r) => r,
            None => Err(self.gone()),
        }
    }

    /// Waits until the process is down for good (stopped, or the restart policy gave up) and
    /// returns the last incarnation's exit status.
    async fn wait(&mut self) -> Result<ExitStatus, LaunchError> {
        loop {
            let listener = self.shared.changed.listen();
            if self.shared.read(|s| s.done) {
                return self.last_status();
            }
            listener.await;
        }
    }

    /// The last exit status, once the process is down for good.
    fn try_status(&self) -> Option<ExitStatus> {
        self.shared.read(|s| if s.done { s.last } else { None })
    }
}

impl<L: Launcher> std::fmt::Debug for ManagedHandle<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.read(|s| {
            f.debug_struct("ManagedHandle")
                .field("pid", &s.pid)
                .field("running", &s.running)
                .field("restarts", &s.restarts)
                .field("last", &s.last)
                .field("done", &s.done)
                .finish()
        })
    }
}

/// One run of the command.
struct Incarnation<P> {
    process: P,
    events: EventStream,
}

impl<P: ProcessHandle> Incarnation<P> {
    /// The events that are ready, at least one; `None` once the stream has ended.
    async fn next_batch(&mut self) -> Option<Vec<ProcessEvent>> {
        let first = self.events.recv().await?;
        let mut batch = vec![first];
        while batch.len() < BATCH_LIMIT {
            match self.events.try_recv() {
                Some(e) => batch.push(e),
                None => break,
            }
        }
        Some(batch)
    }
}

/// What woke the supervisor up.
enum Wake {
    Batch(Option<Vec<ProcessEvent>>),
    Control(Option<Control>),
    Due,
}

/// Owns the running incarnation on a thread of its own.
struct Supervisor<L: Launcher> {
    launcher: L,
    spec: ManagedProcess,
    sink: EventSink,
    shared: Arc<Shared>,
    control: async_channel::Receiver<Control>,
}

impl<L: Launcher> Supervisor<L> {
    async fn run(self, ready: Reply<()>) {
        let first = match self.spawn().await {
            Ok(inc) => {
                let _ = ready.send(Ok(())).await;
                inc
            }
            Err(e) => {
                let _ = ready.send(Err(e)).await;
                return;
            }
        };
        self.supervise(first).await;
        self.shared.update(|s| {
            s.running = false;
            s.done = true;
        });
        // Requests already queued would otherwise wait forever: a closed channel keeps its
        // messages (and their reply senders) for as long as the handle holds its sender.
        self.control.close();
        while let Ok(request) = self.control.try_recv() {
            self.refuse(request).await;
        }
        // Dropping `self` drops the last sink: the caller's event stream ends here.
    }

    /// Answers a request that came in after the process went down for good.
    async fn refuse(&self, request: Control) {
        let (last, pid) = self.shared.read(|s| (s.last, s.pid.unwrap_or(0)));
        match request {
            Control::Signal(_, reply) | Control::Restart(reply) => {
                let _ = reply.send(Err(LaunchError::AlreadyExited { pid })).await;
            }
            Control::Stop(reply) => {
                let _ = reply
                    .send(Ok(last.unwrap_or(ExitStatus::from_code(-1))))
                    .await;
            }
        }
    }

    async fn supervise(&self, first: Incarnation<L::Process>) {
        let mut current = Some(first);
        let mut auto_restarts = 0;
        // When the next automatic restart is due, while no incarnation runs.
        let mut due: Option<Instant> = None;
        loop {
            let wake = match (&mut current, due) {
                (Some(inc), _) => {
                    future::or(async { Wake::Batch(inc.next_batch().await) }, async {
                        Wake::Control(self.control.recv().await.ok())
                    })
                    .await
                }
                (None, Some(at)) => {
                    future::or(
                        async {
                            Timer::at(at).await;
                            Wake::Due
                        },
                        async { Wake::Control(self.control.recv().await.ok()) },
                    )
                    .await
                }
                (None, None) => return,
            };
            match wake {
                Wake::Batch(batch) => {
                    let status = match batch {
                        Some(batch) => self.forward(batch),
                        None => Some(self.lost_exit(current.as_mut().expect("running")).await),
                    };
                    let Some(status) = status else { continue };
                    current = None;
                    if self.spec.policy.restarts_after(status, auto_restarts) {
                        let pause = self.spec.backoff_after(auto_restarts);
                        tracing::info!(command = %self.spec.command.display(), %status, ?pause, "restarting");
                        due = Some(Instant::now() + pause);
                    } else {
                        return;
                    }
                }
                Wake::Due => {
                    auto_restarts += 1;
                    due = None;
                    match self.spawn().await {
                        Ok(inc) => {
                            self.shared.update(|s| s.restarts += 1);
                            current = Some(inc);
                        }
                        Err(e) => {
                            tracing::warn!(command = %self.spec.command.display(), error = %e, "restart failed");
                            let last = self
                                .shared
                                .read(|s| s.last)
                                .unwrap_or(ExitStatus::from_code(-1));
                            if !self.spec.policy.restarts_after(last, auto_restarts) {
                                return;
                            }
                            due = Some(Instant::now() + self.spec.backoff_after(auto_restarts));
                        }
                    }
                }
                // The handle is gone: dropping the incarnation kills its process group.
                Wake::Control(None) => return,
                Wake::Control(Some(Control::Signal(signal, reply))) => {
                    let result = match &current {
                        Some(inc) => inc.process.signal(signal).await,
                        None => Err(LaunchError::AlreadyExited {
                            pid: self.shared.read(|s| s.pid).unwrap_or(0),
                        }),
                    };
                    let _ = reply.send(result).await;
                }
                Wake::Control(Some(Control::Restart(reply))) => {
                    if let Some(inc) = current.take() {
                        self.stop_incarnation(inc).await;
                    }
                    due = None;
                    match self.spawn().await {
                        Ok(inc) => {
                            self.shared.update(|s| s.restarts += 1);
                            current = Some(inc);
                            let _ = reply.send(Ok(())).await;
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e)).await;
                            return;
                        }
                    }
                }
                Wake::Control(Some(Control::Stop(reply))) => {
                    let status = match current.take() {
                        Some(inc) => self.stop_incarnation(inc).await,
                        None => self
                            .shared
                            .read(|s| s.last)
                            .unwrap_or(ExitStatus::from_code(-1)),
                    };
                    // Mark the process down before answering, so `wait` right after `stop`
                    // returns at once.
                    self.shared.update(|s| s.done = true);
                    let _ = reply.send(Ok(status)).await;
                    return;
                }
            }
        }
    }

    /// Starts a new incarnation and records its pid.
    async fn spawn(&self) -> Result<Incarnation<L::Process>, LaunchError> {
        let mut process = self.launcher.spawn(&self.spec.command).await?;
        let events = process
            .take_events()
            .expect("a freshly spawned process has its events");
        let pid = process.id();
        tracing::debug!(?pid, command = %self.spec.command.display(), "managed process started");
        self.shared.update(|s| {
            s.pid = pid;
            s.running = true;
        });
        Ok(Incarnation { process, events })
    }

    /// Passes a batch on to the caller; the exit status if the incarnation has exited.
    fn forward(&self, batch: Vec<ProcessEvent>) -> Option<ExitStatus> {
        let status = batch.iter().find_map(|e| match e {
            ProcessEvent::Exited(s) => Some(*s),
            _ => None,
        });
        // Nobody may be listening; the process is supervised all the same.
        self.sink.send(batch);
        if let Some(status) = status {
            self.exited(status);
        }
        status
    }

    /// The incarnation's stream ended without an `Exited` event (a launcher that does not
    /// announce exits): ask the process, and tell the caller.
    async fn lost_exit(&self, inc: &mut Incarnation<L::Process>) -> ExitStatus {
        let status = inc
            .process
            .wait()
            .await
            .unwrap_or(ExitStatus::from_code(-1));
        self.sink.send_one(ProcessEvent::Exited(status));
        self.exited(status);
        status
    }

    fn exited(&self, status: ExitStatus) {
        self.shared.update(|s| {
            s.running = false;
            s.last = Some(status);
        });
    }

    /// `SIGTERM` to the group, the grace period, then `SIGKILL`; forwards the incarnation's
    /// last words meanwhile.
    async fn stop_incarnation(&self, mut inc: Incarnation<L::Process>) -> ExitStatus {
        // An error means it has already exited; its `Exited` event is on its way.
        let _ = inc.process.terminate().await;
        let deadline = Instant::now() + self.spec.stop_grace;
        if let Some(status) = self.drain(&mut inc, Some(deadline)).await {
            return status;
        }
        tracing::debug!(
            command = %self.spec.command.display(),
            grace = ?self.spec.stop_grace,
            "still running after SIGTERM, sending SIGKILL"
        );
        let _ = inc.process.kill().await;
        match self.drain(&mut inc, None).await {
            Some(status) => status,
            None => unreachable!("draining without a deadline ends with the exit"),
        }
    }

    /// Forwards events until the incarnation exits (its status) or `deadline` passes (`None`).
    async fn drain(
        &self,
        inc: &mut Incarnation<L::Process>,
        deadline: Option<Instant>,
    ) -> Option<ExitStatus> {
        loop {
            let batch = match deadline {
                Some(at) => {
                    future::or(async { Some(inc.next_batch().await) }, async {
                        Timer::at(at).await;
                        None
                    })
                    .await?
                }
                None => inc.next_batch().await,
            };
            match batch {
                Some(batch) => {
                    if let Some(status) = self.forward(batch) {
                        return Some(status);
                    }
                }
                None => return Some(self.lost_exit(inc).await),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_count_automatic_restarts() {
        let fail = ExitStatus::from_code(1);
        let ok = ExitStatus::from_code(0);
        let killed = ExitStatus::from_signal(9);
        assert!(!RestartPolicy::Never.restarts_after(fail, 0));
        let on_failure = RestartPolicy::OnFailure { max_restarts: 2 };
        assert!(on_failure.restarts_after(fail, 0));
        assert!(on_failure.restarts_after(killed, 1));
        assert!(!on_failure.restarts_after(fail, 2));
        assert!(!on_failure.restarts_after(ok, 0));
        let always = RestartPolicy::Always { max_restarts: 1 };
        assert!(always.restarts_after(ok, 0));
        assert!(!always.restarts_after(ok, 1));
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        let m = ManagedProcess::new(Command::new("true")).with_backoff(Duration::from_millis(100));
        assert_eq!(m.backoff_after(0), Duration::from_millis(100));
        assert_eq!(m.backoff_after(3), Duration::from_millis(800));
        assert_eq!(m.backoff_after(40), MAX_BACKOFF);
    }
}
