//! Starting a child process without `fork`: `clone(CLONE_VM | CLONE_VFORK)` and a child that
//! makes only raw system calls before `execve`.
//!
//! # Why not `std::process::Command`
//!
//! Setting `PR_SET_PDEATHSIG` needs code between clone and exec. std runs such code (`pre_exec`)
//! only on its `fork` path, and `fork` copies the parent's page tables, which grow with every
//! thread the harness keeps. Measured on 2 shared cores: with 300 idle threads, `fork` + exec
//! took 3.77 ms against 0.58 ms for `posix_spawn`; with no threads, 0.44 against 0.42 ms. With
//! the fork, and three threads per child, one `LocalLauncher::spawn` took 9.0 ms at 100 live
//! children and 30.4 ms at 300 (std's `posix_spawn`: 0.26 ms), and a 100-service topology came
//! up in 1212 ms against 168 ms for the same programs spawned directly. Without it, and one
//! thread per child: 1.3 ms and 1.7 ms (std: 0.83 and 1.14 ms in that run, the machine being
//! busier), and 180 ms against 176 ms. `benches/spawn.rs` and `benches/orchestrator.rs` print
//! the current figures.
//!
//! # How
//!
//! Like glibc's `posix_spawn`, the child shares the parent's memory (`CLONE_VM`), runs on a
//! small stack of its own, and the calling thread sleeps until the child has called `execve` or
//! exited (`CLONE_VFORK`), so nothing is copied. Everything the child needs (argv, envp, every
//! `PATH` candidate, the working directory, the descriptors) is prepared before the clone; the
//! child allocates nothing, takes no lock and only calls async-signal-safe libc wrappers. It
//! resets caught signals to their default action (its handlers would run in our memory), joins
//! a new process group (pgid = pid), sets `PR_SET_PDEATHSIG` to `SIGKILL`, checks that its
//! parent did not die meanwhile (`getppid`), moves the pipes onto fds 0 to 2, changes directory,
//! empties its signal mask and execs. A failure is written into a word the parent reads after
//! the clone returns (the memory is shared), with the step that failed and its errno. The
//! parent also gets a pidfd for the child from the clone itself (`CLONE_PIDFD`), so a waiting
//! thread can poll the exit beside the output pipes.
//!
//! `PATH` is searched as `execvp` does (the child's `PATH`, `/bin:/usr/bin` when it has none,
//! `EACCES` remembered while later directories are tried), but a file without a `#!` line is not
//! handed to `/bin/sh`: it fails with `ENOEXEC`, as with `posix_spawnp`.
//!
//! Linux only, on architectures whose stack grows down (all but PA-RISC).

use std::collections::BTreeMap;
use std::ffi::{CString, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicI32, Ordering};

/// The search path `execvp` uses when the environment has no `PATH`.
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// The child's stack. The child's frames are a few hundred bytes; the rest is headroom.
const CHILD_STACK_SIZE: usize = 64 * 1024;

/// A command with every string converted for `execve`, ready to be started by [`spawn`].
///
/// Built on the caller's thread, so the spawner thread only clones.
pub(crate) struct SpawnPlan {
    /// The paths to try, in order: the program itself when it names a path, otherwise one per
    /// `PATH` entry.
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    stdin_piped: bool,
    /// A cgroup's `cgroup.procs`, open for writing: the child joins that cgroup before exec.
    cgroup_procs: Option<OwnedFd>,
}

impl SpawnPlan {
    /// Prepares `program` with `args`, the environment (inherited unless `env_clear`, with `env`
    /// on top) and the working directory. Fails only on a string with a NUL byte.
    pub(crate) fn new(
        program: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        env_clear: bool,
        cwd: Option<&str>,
        stdin_piped: bool,
    ) -> io::Result<SpawnPlan> {
        // The inherited variables the command does not set, then the command's own, each as
        // `KEY=VALUE`; `PATH` is kept aside for the search below.
        let mut envp = Vec::new();
        let mut path: Option<Vec<u8>> = None;
        if !env_clear {
            for (k, v) in std::env::vars_os() {
                if k.to_str().is_some_and(|k| env.contains_key(k)) {
                    continue;
                }
                if k == "PATH" {
                    path = Some(v.as_bytes().to_vec());
                }
                envp.push(env_entry(k.as_bytes(), v.as_bytes())?);
            }
        }
        for (k, v) in env {
            if k == "PATH" {
                path = Some(v.as_bytes().to_vec());
            }
            envp.push(env_entry(k.as_bytes(), v.as_bytes())?);
        }
        let candidates = if program.contains('/') {
            vec![cstring(program.as_bytes())?]
        } else {
            path.as_deref()
                .unwrap_or(DEFAULT_PATH)
                .split(|&b| b == b':')
                .map(|dir| match dir {
                    // An empty entry is the current directory.
                    b"" => cstring(program.as_bytes()),
                    dir => {
                        let mut full = Vec::with_capacity(dir.len() + program.len() + 1);
                        full.extend_from_slice(dir);
                        if !full.ends_with(b"/") {
                            full.push(b'/');
                        }
                        full.extend_from_slice(program.as_bytes());
                        cstring(&full)
                    }
                })
                .collect::<io::Result<_>>()?
        };
        let argv = std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .map(|a| cstring(a.as_bytes()))
            .collect::<io::Result<_>>()?;
        Ok(SpawnPlan {
            candidates,
            argv,
            envp,
            cwd: cwd.map(|d| cstring(d.as_bytes())).transpose()?,
            stdin_piped,
            cgroup_procs: None,
        })
    }

    /// Makes the child join the cgroup whose `cgroup.procs` this is, before it execs.
    pub(crate) fn with_cgroup(mut self, procs: OwnedFd) -> SpawnPlan {
        self.cgroup_procs = Some(procs);
        self
    }
}

fn env_entry(key: &[u8], value: &[u8]) -> io::Result<CString> {
    let mut kv = Vec::with_capacity(key.len() + value.len() + 2);
    kv.extend_from_slice(key);
    kv.push(b'=');
    kv.extend_from_slice(value);
    cstring(&kv)
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "`{}` contains a NUL byte",
                String::from_utf8_lossy(bytes).replace('\0', "\\0")
            ),
        )
    })
}

/// A started child: its pid, a pidfd (none on kernels older than 5.2) and our ends of its pipes.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) pid: rustix::process::Pid,
    pub(crate) pidfd: Option<OwnedFd>,
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
    /// Why the child could not join the planned cgroup (it runs outside it).
    pub(crate) cgroup_error: Option<io::Error>,
}

/// The step of starting a child that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Making pipes, opening `/dev/null`, allocating the stack, or the clone itself.
    Prepare,
    /// Joining a new process group.
    ProcessGroup,
    /// Setting `PR_SET_PDEATHSIG`.
    DeathSignal,
    /// The parent died between the clone and `prctl`, so no death signal would ever come.
    ParentGone,
    /// Moving the pipes onto fds 0 to 2.
    Stdio,
    /// Changing to the working directory.
    Chdir,
    /// `execve` (for every `PATH` candidate).
    Exec,
}

impl Step {
    fn code(self) -> i32 {
        match self {
            Step::Prepare => 1,
            Step::ProcessGroup => 2,
            Step::DeathSignal => 3,
            Step::ParentGone => 4,
            Step::Stdio => 5,
            Step::Chdir => 6,
            Step::Exec => 7,
        }
    }

    fn from_code(code: i32) -> Option<Step> {
        [
            Step::Prepare,
            Step::ProcessGroup,
            Step::DeathSignal,
            Step::ParentGone,
            Step::Stdio,
            Step::Chdir,
            Step::Exec,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }
}

/// Why a child could not be started: the step that failed and the error it got.
#[derive(Debug)]
pub(crate) struct SpawnError {
    pub(crate) step: Step,
    pub(crate) error: io::Error,
}

impl SpawnError {
    fn prepare(error: io::Error) -> SpawnError {
        SpawnError {
            step: Step::Prepare,
            error,
        }
    }
}

/// The memory the child runs on: mapped once, with a guard page below it, and reused for every
/// child started by its owner. Reuse is safe because the clone returns only once the child no
/// longer runs on it (it has exec'd or exited), and `spawn` takes it by `&mut`.
pub(crate) struct ChildStack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread moves ownership.
unsafe impl Send for ChildStack {}

impl ChildStack {
    pub(crate) fn new() -> io::Result<ChildStack> {
        // SAFETY: sysconf only reads a constant of the system.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = CHILD_STACK_SIZE + page;
        // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // The lowest page traps an overflow instead of letting the child write below its stack.
        // SAFETY: the first page of the mapping made above.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the top of the mapping (stacks grow down), 16-byte aligned.
    fn top(&mut self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which is what clone expects.
        let end = unsafe { self.base.cast::<u8>().add(self.len) };
        end.wrapping_sub(end as usize % 16).cast()
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no child runs on it (see the type's docs).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// What the child reads (through the pointer clone hands it) and where it reports a failure.
struct ChildContext {
    /// NULL-terminated pointer arrays into the plan's strings, which outlive the child's use.
    candidates: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: *const libc::c_char,
    /// The fds to move onto 0, 1 and 2.
    stdio: [RawFd; 3],
    parent: libc::pid_t,
    /// `cgroup.procs` of the cgroup to join, or -1.
    cgroup_procs: RawFd,
    /// The errno of a failed join, 0 if it worked (or there was none to make).
    cgroup_errno: AtomicI32,
    /// The highest signal number, read here rather than in the child.
    max_signal: c_int,
    /// `Step::code` of the failed step, 0 if the child never wrote it (it exec'd).
    failed_step: AtomicI32,
    errno: AtomicI32,
}

/// Starts the planned command as a child of the calling thread, which should live as long as the
/// process (`PR_SET_PDEATHSIG` fires when it exits).
pub(crate) fn spawn(plan: &SpawnPlan, stack: &mut ChildStack) -> Result<Spawned, SpawnError> {
    let (stdin_child, stdin_ours) = if plan.stdin_piped {
        let (read, write) = pipe().map_err(SpawnError::prepare)?;
        (read, Some(write))
    } else {
        let null = std::fs::File::open("/dev/null").map_err(SpawnError::prepare)?;
        (OwnedFd::from(null), None)
    };
    let (stdout_ours, stdout_child) = pipe().map_err(SpawnError::prepare)?;
    let (stderr_ours, stderr_child) = pipe().map_err(SpawnError::prepare)?;

    let ptrs = |strings: &[CString]| -> Vec<*const libc::c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let ctx = ChildContext {
        candidates: ptrs(&plan.candidates),
        argv: ptrs(&plan.argv),
        envp: ptrs(&plan.envp),
        cwd: plan.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        stdio: [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ],
        parent: rustix::process::getpid().as_raw_nonzero().get(),
        cgroup_procs: plan.cgroup_procs.as_ref().map_or(-1, AsRawFd::as_raw_fd),
        cgroup_errno: AtomicI32::new(0),
        max_signal: libc::SIGRTMAX(),
        failed_step: AtomicI32::new(0),
        errno: AtomicI32::new(0),
    };

    let (pid, pidfd) = clone_child(&ctx, stack)?;
    // The child has exec'd or exited: its copies of the fds are its own now.
    drop((stdin_child, stdout_child, stderr_child));

    if let Some(step) = Step::from_code(ctx.failed_step.load(Ordering::Acquire)) {
        // The child exited without exec: collect it so no zombie stays behind.
        loop {
            // SAFETY: waits for our own child, which has exited or is exiting.
            let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            if r != -1 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
        let errno = ctx.errno.load(Ordering::Acquire);
        let error = if step == Step::ParentGone {
            io::Error::other("the harness exited while this process was starting")
        } else {
            io::Error::from_raw_os_error(errno)
        };
        return Err(SpawnError { step, error });
    }
    let cgroup_error = match ctx.cgroup_errno.load(Ordering::Acquire) {
        0 => None,
        errno => Some(io::Error::from_raw_os_error(errno)),
    };
    Ok(Spawned {
        pid: rustix::process::Pid::from_raw(pid).expect("clone returns a positive pid"),
        pidfd,
        stdin: stdin_ours,
        stdout: stdout_ours,
        stderr: stderr_ours,
        cgroup_error,
    })
}

/// `pipe2(O_CLOEXEC)`: (read end, write end). Close-on-exec, so no other child inherits them.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Clones the child with all signals blocked in the calling thread (so no handler of ours runs
/// on the child's side of the shared memory before it resets them), and returns its pid and
/// pidfd once it has exec'd or exited.
fn clone_child(
    ctx: &ChildContext,
    stack: &mut ChildStack,
) -> Result<(libc::pid_t, Option<OwnedFd>), SpawnError> {
    let blocked = SignalsBlocked::new().map_err(SpawnError::prepare)?;
    let arg = std::ptr::from_ref(ctx).cast_mut().cast::<c_void>();
    let mut pidfd: c_int = -1;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: `child_main` only reads `ctx` (alive until this call returns, which is after the
    // child stopped using it) and writes its atomics; it allocates nothing and ends in execve or
    // _exit. The stack is ours alone for the duration (`&mut`). With CLONE_PIDFD the kernel
    // stores the pidfd in `pidfd` (the parent_tid argument).
    let mut pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            flags | libc::CLONE_PIDFD,
            arg,
            &raw mut pidfd,
        )
    };
    if pid == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Linux before 5.2 knows no CLONE_PIDFD; the exit is then polled for instead.
        pidfd = -1;
        // SAFETY: as above, without the pidfd.
        pid = unsafe { libc::clone(child_main, stack.top(), flags, arg) };
    }
    let clone_error = io::Error::last_os_error();
    drop(blocked);
    if pid == -1 {
        return Err(SpawnError::prepare(clone_error));
    }
    // SAFETY: when set, the kernel gave us this new descriptor, owned by nothing else.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Ok((pid, pidfd))
}

/// Blocks every signal in the calling thread until dropped.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> io::Result<SignalsBlocked> {
        // SAFETY: sigset_t is plain data; sigfillset initialises `all`, pthread_sigmask fills
        // `old`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            match libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) {
                0 => Ok(SignalsBlocked(old)),
                e => Err(io::Error::from_raw_os_error(e)),
            }
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// The child, between clone and exec. Runs on the child stack in the parent's memory while the
/// parent thread sleeps: it must not allocate, lock, unwind or touch anything but `ctx` (errno,
/// which the libc wrappers set, is the sleeping parent thread's, as with `vfork`).
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildContext` that `clone_child` passed, alive while the parent
    // sleeps.
    let ctx = unsafe { &*arg.cast::<ChildContext>() };
    // SAFETY: we are the freshly cloned child, which is what `exec_child` requires.
    let (step, errno) = unsafe { exec_child(ctx) };
    ctx.errno.store(errno, Ordering::Release);
    ctx.failed_step.store(step.code(), Ordering::Release);
    // SAFETY: ends the child without running anything of the parent's (no atexit, no flush).
    unsafe { libc::_exit(127) }
}

/// Sets the child up and execs; returns only on failure, with the failed step and errno.
///
/// # Safety
///
/// Call only in the child made by `clone_child`, with every signal blocked.
unsafe fn exec_child(ctx: &ChildContext) -> (Step, i32) {
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY (for the block): each call is a thin async-signal-safe wrapper around one system
    // call, given pointers into `ctx` (alive, see `child_main`) or to locals.
    unsafe {
        // A handler of ours would run in the parent's memory: catch nothing until exec, which
        // resets handled signals anyway. Ignored signals stay ignored across exec, as with std,
        // except SIGPIPE, which the Rust runtime ignores and std resets for its children.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=ctx.max_signal {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
                && old.sa_sigaction != libc::SIG_DFL
            {
                libc::sigaction(sig, &default, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0 {
            return (Step::ProcessGroup, errno());
        }
        // Joined before anything else runs, so nothing the program starts is outside. A
        // failure is no reason not to run: the child says why, and runs where it is.
        if ctx.cgroup_procs >= 0 && libc::write(ctx.cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
            ctx.cgroup_errno.store(errno().max(1), Ordering::Release);
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return (Step::DeathSignal, errno());
        }
        if libc::getppid() != ctx.parent {
            return (Step::ParentGone, 0);
        }
        for (target, &fd) in (0..).zip(&ctx.stdio) {
            // dup2 onto itself would keep close-on-exec set: clear it instead.
            let moved = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if moved == -1 {
                return (Step::Stdio, errno());
            }
        }
        if !ctx.cwd.is_null() && libc::chdir(ctx.cwd) != 0 {
            return (Step::Chdir, errno());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());

        // As execvp: remember EACCES, skip directories where the file is not, stop at any
        // other error.
        let mut error = libc::ENOENT;
        let mut denied = false;
        for &path in &ctx.candidates {
            if path.is_null() {
                break;
            }
            libc::execve(path, ctx.argv.as_ptr(), ctx.envp.as_ptr());
            error = errno();
            match error {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => return (Step::Exec, error),
            }
        }
        (Step::Exec, if denied { libc::EACCES } else { error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(program: &str, args: &[&str]) -> SpawnPlan {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        SpawnPlan::new(program, &args, &BTreeMap::new(), false, None, false).unwrap()
    }

    fn reap(pid: rustix::process::Pid) -> i32 {
        let st = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
            .unwrap()
            .unwrap()
            .1;
        st.exit_status().unwrap()
    }

    /// Runs `program` with `args` and returns its stdout and exit code.
    fn run(program: &str, args: &[&str]) -> (rustix::process::Pid, String) {
        let mut stack = ChildStack::new().unwrap();
        let child = spawn(&plan(program, args), &mut stack).unwrap();
        let out = std::io::read_to_string(std::fs::File::from(child.stdout)).unwrap();
        assert_eq!(reap(child.pid), 0, "{program} {args:?}: {out}");
        (child.pid, out)
    }

    #[test]
    fn a_child_leads_its_own_group() {
        // Field 5 of /proc/PID/stat is the process group.
        let (pid, out) = run("cut", &["-d ", "-f5", "/proc/self/stat"]);
        assert_eq!(out, format!("{}\n", pid.as_raw_nonzero()));
    }

    #[test]
    fn a_child_starts_with_no_signal_blocked_and_sigpipe_default() {
        // The mask and the ignored set survive exec, so grep reads the ones it was given.
        let (_, out) = run("grep", &["-E", "^Sig(Blk|Ign)", "/proc/self/status"]);
        let mask = |name: &str| {
            let line = out.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{out}");
        // The Rust runtime ignores SIGPIPE in this process; its children must not inherit that.
        assert_eq!(mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{out}");
    }

    #[test]
    fn failures_name_the_step_and_the_errno() {
        let mut stack = ChildStack::new().unwrap();
        let e = spawn(&plan("/no/such/program", &[]), &mut stack).unwrap_err();
        assert_eq!(
            (e.step, e.error.kind()),
            (Step::Exec, io::ErrorKind::NotFound)
        );
        let e = spawn(&plan("no-such-program-in-path", &[]), &mut stack).unwrap_err();
        assert_eq!(
            (e.step, e.error.kind()),
            (Step::Exec, io::ErrorKind::NotFound)
        );
        let e = spawn(&plan("/", &[]), &mut stack).unwrap_err();
        assert_eq!(
            (e.step, e.error.kind()),
            (Step::Exec, io::ErrorKind::PermissionDenied)
        );
        let bad_dir = SpawnPlan::new(
            "true",
            &[],
            &BTreeMap::new(),
            false,
            Some("/no/such/dir"),
            false,
        )
        .unwrap();
        let e = spawn(&bad_dir, &mut stack).unwrap_err();
        assert_eq!(
            (e.step, e.error.kind()),
            (Step::Chdir, io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn path_comes_from_the_childs_environment() {
        let mut stack = ChildStack::new().unwrap();
        let env = BTreeMap::from([("PATH".to_string(), "/nowhere".to_string())]);
        let e = spawn(
            &SpawnPlan::new("sh", &[], &env, false, None, false).unwrap(),
            &mut stack,
        )
        .unwrap_err();
        assert_eq!(e.error.kind(), io::ErrorKind::NotFound);
        // No PATH at all: execvp's default, which has sh.
        let child = spawn(
            &SpawnPlan::new(
                "sh",
                &["-c".into(), "exit 3".into()],
                &BTreeMap::new(),
                true,
                None,
                false,
            )
            .unwrap(),
            &mut stack,
        )
        .unwrap();
        assert_eq!(reap(child.pid), 3);
    }

    #[test]
    fn a_nul_byte_is_refused_before_anything_starts() {
        let e = SpawnPlan::new("a\0b", &[], &BTreeMap::new(), false, None, false)
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
