//! One thread per local child: it reads the child's output pipes and sees it exit, with one
//! `poll` over both pipes and a pidfd.
//!
//! One thread rather than three (a reader per pipe and a blocking waiter): threads are cheap to
//! start (38 us), but each one kept per child is stack and bookkeeping for as long as the child
//! lives, and a topology of a hundred services kept three hundred of them.
//!
//! Each running child holds three descriptors of ours: its two output pipes and its pidfd (four
//! with a stdin pipe). With the common soft limit of 1024 open files (`ulimit -n`), that is room
//! for about 300 children; raise the limit for more.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::process::{Pid, WaitId, WaitIdOptions};

use crate::exec::event::{ExitStatus, OutputStream, ProcessEvent};
use crate::exec::pipe::{LineRoute, LineSplitter};

/// How long an exited process's pipes may stay open (held by its own children) before the
/// `Exited` event is sent anyway.
const PIPE_DRAIN_GRACE: Duration = Duration::from_millis(200);

/// How often the exit is checked for on kernels without pidfds (before Linux 5.2).
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A child to watch: its pid, its pidfd if the kernel gave one, and the pipes to read.
pub(crate) struct Watched {
    pub(crate) pid: Pid,
    pub(crate) pidfd: Option<OwnedFd>,
    /// The output pipes read as lines (stdout is absent when the caller takes it raw).
    pub(crate) outputs: Vec<(OwnedFd, OutputStream)>,
    pub(crate) route: LineRoute,
    /// Whether to send `Exited` (see `Command::announce_exit`).
    pub(crate) announce_exit: bool,
}

/// A pipe the thread polls: an output pipe cut into lines, or (`lines` is `None`) the pipe that
/// closes when a stream read on a thread of its own has ended.
struct Output {
    fd: OwnedFd,
    lines: Option<LineSplitter>,
}

/// Reads the child's output until its pipes close and reports its exit after its last line.
///
/// `on_exit` runs as soon as the child has exited (it has not been reaped: see `local.rs`), before
/// the pipes are drained, and returns the status to announce. `Exited` is sent once both pipes
/// are closed, or `PIPE_DRAIN_GRACE` after the exit if a child of the child still holds them; the
/// thread then keeps draining them, so that grandchild never blocks on a full pipe.
pub(crate) fn watch(child: Watched, on_exit: impl FnOnce(Pid) -> ExitStatus) {
    let Watched {
        pid,
        mut pidfd,
        outputs,
        route,
        announce_exit,
    } = child;
    let mut outputs: Vec<Output> = outputs
        .into_iter()
        .map(|(fd, stream)| {
            // A tap may hold a stdout line until a line arrives on stderr (remote launchers wait
            // for the remote pid, reported on stderr, so that `Started` comes first), which one
            // thread reading both could never deliver: stdout then gets a thread of its own.
            if stream == OutputStream::Stdout && route.tap.is_some() {
                let thread = format!("harness-out-{}", pid.as_raw_nonzero());
                match read_on_own_thread(&fd, stream, &route, thread) {
                    Ok(done) => {
                        return Output {
                            fd: done,
                            lines: None,
                        };
                    }
                    Err(e) => tracing::warn!("failed to start a thread to read stdout: {e}"),
                }
            }
            Output {
                fd,
                lines: Some(LineSplitter::new(stream)),
            }
        })
        .collect();
    let mut on_exit = Some(on_exit);
    let mut exited_at: Option<(Instant, ExitStatus)> = None;
    let mut announced = !announce_exit;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some((at, status)) = exited_at
            && !announced
            && (outputs.is_empty() || at.elapsed() >= PIPE_DRAIN_GRACE)
        {
            route.sink.send_one(ProcessEvent::Exited(status));
            announced = true;
        }
        if exited_at.is_some() && outputs.is_empty() {
            return;
        }

        let watch_exit = exited_at.is_none();
        let mut fds: Vec<libc::pollfd> = outputs.iter().map(|o| pollfd(o.fd.as_raw_fd())).collect();
        if watch_exit && let Some(fd) = &pidfd {
            fds.push(pollfd(fd.as_raw_fd()));
        }
        let timeout = match exited_at {
            Some((at, _)) if !announced => Some(PIPE_DRAIN_GRACE.saturating_sub(at.elapsed())),
            Some(_) => None,
            None if pidfd.is_none() => Some(EXIT_POLL_INTERVAL),
            None => None,
        };
        if let Err(e) = poll(&mut fds, timeout) {
            // Only EINVAL or ENOMEM: nothing better to do than to retry a little later.
            tracing::warn!(pid = pid.as_raw_nonzero(), "failed to poll a child: {e}");
            std::thread::sleep(EXIT_POLL_INTERVAL);
            continue;
        }

        // Output first: what the child wrote before it exited is read before its exit is seen.
        let mut closed = Vec::new();
        for (i, (out, fd)) in outputs.iter_mut().zip(&fds).enumerate() {
            if fd.revents == 0 {
                continue;
            }
            match rustix::io::read(&out.fd, &mut buf[..]) {
                Ok(0) => closed.push(i),
                Ok(n) => {
                    if let Some(lines) = &mut out.lines {
                        lines.feed(&buf[..n], &route);
                    }
                }
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                Err(_) => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            if let Some(mut lines) = outputs.remove(i).lines {
                lines.finish(&route);
            }
        }

        let exit_seen = match &pidfd {
            Some(_) => watch_exit && fds.last().is_some_and(|fd| fd.revents != 0),
            None => watch_exit && has_exited(pid),
        };
        if exit_seen && let Some(on_exit) = on_exit.take() {
            exited_at = Some((Instant::now(), on_exit(pid)));
            pidfd = None;
        }
    }
}

/// Reads `fd` to its end on a new thread. Returns a pipe that reaches end of file when the
/// thread is done (it holds the other end).
fn read_on_own_thread(
    fd: &OwnedFd,
    stream: OutputStream,
    route: &LineRoute,
    name: String,
) -> io::Result<OwnedFd> {
    let pipe = fd.try_clone()?;
    let (done, done_writer) = crate::exec::spawn::pipe()?;
    let route = route.clone();
    std::thread::Builder::new().name(name).spawn(move || {
        let mut lines = LineSplitter::new(stream);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rustix::io::read(&pipe, &mut buf[..]) {
                Ok(0) => break,
                Ok(n) => lines.feed(&buf[..n], &route),
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => break,
            }
        }
        lines.finish(&route);
        drop(done_writer);
    })?;
    Ok(done)
}

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// `poll(2)`, retried on EINTR; `None` waits without a time limit.
fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let ms = timeout.map_or(-1, |t| {
        // Round up, so a wait of 0.4 ms does not spin as a wait of 0.
        i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
    });
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Whether the child has exited, without reaping it (the fallback without a pidfd).
fn has_exited(pid: Pid) -> bool {
    matches!(
        rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        ),
        Ok(Some(_)) | Err(_)
    )
}

/// Waits until the child has exited and returns how it ended (`None` if that could not be
/// read). With `reap` false the child stays a zombie (see `local.rs`).
pub(crate) fn wait_exit(pid: Pid, reap: bool) -> Option<ExitStatus> {
    let options = if reap {
        WaitIdOptions::EXITED
    } else {
        WaitIdOptions::EXITED | WaitIdOptions::NOWAIT
    };
    loop {
        match rustix::process::waitid(WaitId::Pid(pid), options) {
            Err(rustix::io::Errno::INTR) => continue,
            Ok(Some(st)) => {
                if reap {
                    crate::exec::reaper::reaped(pid);
                }
                return st
                    .exit_status()
                    .map(ExitStatus::from_code)
                    .or_else(|| st.terminating_signal().map(ExitStatus::from_signal));
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::exec::event::EventStream;
    use crate::exec::spawn::{ChildStack, SpawnPlan, spawn};

    /// Starts `sh -c script` and watches it on a thread, with or without its pidfd.
    fn watch_sh(script: &str, use_pidfd: bool) -> (EventStream, std::thread::JoinHandle<()>) {
        let plan = SpawnPlan::new(
            "sh",
            &["-c".to_string(), script.to_string()],
            &BTreeMap::new(),
            false,
            None,
            false,
        )
        .unwrap();
        let child = spawn(&plan, &mut ChildStack::new().unwrap()).unwrap();
        assert!(child.pidfd.is_some(), "Linux 5.2 or later gives a pidfd");
        let (sink, events) = EventStream::channel();
        let watched = Watched {
            pid: child.pid,
            pidfd: child.pidfd.filter(|_| use_pidfd),
            outputs: vec![
                (child.stderr, OutputStream::Stderr),
                (child.stdout, OutputStream::Stdout),
            ],
            route: LineRoute {
                sink,
                filter: None,
                tap: None,
                max_line: None,
            },
            announce_exit: true,
        };
        let thread = std::thread::spawn(move || {
            watch(watched, |pid| {
                let status = wait_exit(pid, false).unwrap();
                // Not reaped by the wait above: this one still finds it.
                assert_eq!(wait_exit(pid, true), Some(status));
                status
            });
        });
        (events, thread)
    }

    #[test]
    fn lines_come_before_the_exit_with_or_without_a_pidfd() {
        for use_pidfd in [true, false] {
            let (events, thread) = watch_sh("echo a; echo b >&2; printf c; exit 4", use_pidfd);
            let out = futures_lite::future::block_on(events.collect());
            thread.join().unwrap();
            assert_eq!(out.stdout, ["a", "c"]);
            assert_eq!(out.stderr, ["b"]);
            assert_eq!(out.status, Some(ExitStatus::from_code(4)));
        }
    }

    #[test]
    fn a_grandchild_holding_the_pipes_does_not_hold_back_the_exit() {
        // The shell exits at once; its sleep keeps stdout open.
        let (mut events, thread) = watch_sh("exec 2>&-; sleep 300 & echo $!", true);
        let next = |events: &mut EventStream| futures_lite::future::block_on(events.recv());
        let Some(ProcessEvent::Stdout(pid)) = next(&mut events) else {
            panic!("the shell prints its child's pid");
        };
        let sleep = Pid::from_raw(pid.parse().unwrap()).unwrap();
        let exited = next(&mut events);
        let sleep_alive = rustix::process::test_kill_process(sleep).is_ok();
        let _ = rustix::process::kill_process(sleep, rustix::process::Signal::KILL);
        assert_eq!(exited, Some(ProcessEvent::Exited(ExitStatus::from_code(0))));
        assert!(
            sleep_alive,
            "`Exited` came while the sleep still held stdout"
        );
        // The thread ends once the killed sleep has closed the pipe.
        thread.join().unwrap();
        assert_eq!(next(&mut events), None);
    }
}
