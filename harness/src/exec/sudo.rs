//! `SudoLauncher`: runs commands as root through `sudo -n`.

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::ExitStatus;
use crate::exec::launcher::Launcher;
use crate::exec::remote::{self, RemoteProcess, Transport};

/// Runs commands as root with `sudo -n` (never prompting: no password means an error, not a
/// hang), through its inner launcher.
///
/// sudo resets the environment and a root process cannot be signalled by the user who started
/// it, so the command does not go to sudo as is. sudo runs the same small `sh` wrapper that
/// remote launchers use: it sets the command's environment with `env`, changes to its working
/// directory, reports a missing program or directory by name, runs the program in a process
/// group of its own, and kills that group when the harness goes away. Signals travel as
/// `sudo -n kill -s SIG -- -PGID`.
///
/// ```no_run
/// # smol::block_on(async {
/// use harness::exec::{Command, Launcher, LocalLauncher, SudoLauncher};
/// let root = SudoLauncher::new(LocalLauncher);
/// let out = root.output(&Command::new("id").arg("-u")).await?;
/// assert_eq!(out.stdout, ["0"]);
/// # Ok::<(), harness::exec::LaunchError>(()) });
/// ```
///
/// Nested under [`SshLauncher`](crate::exec::SshLauncher) it runs as root on a remote host;
/// wrapping an `SshLauncher` instead runs `ssh` itself as root.
#[derive(Debug, Clone)]
pub struct SudoLauncher<L> {
    inner: L,
    program: String,
}

impl<L: Launcher> SudoLauncher<L> {
    /// Runs commands through `sudo -n` on `inner`.
    pub fn new(inner: L) -> Self {
        Self::with_program(inner, "sudo")
    }

    /// Runs commands through another sudo-compatible program that takes `-n --` before the
    /// command: a sudo at another path, or `doas`.
    pub fn with_program(inner: L, program: impl Into<String>) -> Self {
        SudoLauncher {
            inner,
            program: program.into(),
        }
    }
}

impl<L: Launcher> Transport for SudoLauncher<L> {
    type Inner = L;

    fn inner(&self) -> &L {
        &self.inner
    }

    fn shell_command(&self, script: &str, base: &Command) -> Command {
        base.rewrap(
            self.program.clone(),
            vec![
                "-n".into(),
                "--".into(),
                "sh".into(),
                "-c".into(),
                script.into(),
            ],
        )
    }

    fn location(&self) -> String {
        format!("{} as root", self.inner.location())
    }

    fn classify_failure(&self, status: ExitStatus, stderr: &str) -> LaunchError {
        LaunchError::CommandFailed {
            doing: format!("run as root on {}", self.inner.location()),
            command: format!("{} -n", self.program),
            status,
            stderr: stderr.to_string(),
        }
    }
}

impl<L: Launcher> Launcher for SudoLauncher<L> {
    type Process = RemoteProcess<SudoLauncher<L>>;

    async fn spawn(&self, cmd: &Command) -> Result<Self::Process, LaunchError> {
        remote::spawn(self, cmd).await
    }

    fn location(&self) -> String {
        Transport::location(self)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::exec::event::ProcessEvent;
    use crate::exec::launcher::ProcessHandle;
    use crate::exec::local::LocalLauncher;

    #[test]
    fn command_line_is_sudo_n_sh_c_with_the_wrapper() {
        let sudo = SudoLauncher::new(LocalLauncher);
        let cmd = Command::new("printenv")
            .arg("A B")
            .env("A B", "it's $x")
            .current_dir("/srv/a dir");
        let script = remote::wrapper_script(&cmd, true);
        let wrapped = sudo.shell_command(&script, &cmd);
        assert_eq!(wrapped.get_program(), "sudo");
        // The wrapper travels as one argument, untouched: sudo execs `sh` directly, so there is
        // no second shell to quote for.
        assert_eq!(
            wrapped.get_args(),
            ["-n", "--", "sh", "-c", script.as_str()]
        );
        assert!(script.contains("cd '/srv/a dir'"), "{script}");
        // sudo resets the environment, so the variables travel inside the script, not beside it.
        assert!(script.contains("exec env "), "{script}");
        assert!(wrapped.get_envs().is_empty());
        assert_eq!(wrapped.get_current_dir(), None);
    }

    /// A stand-in for sudo that checks the flags it is given and runs the rest, so the whole
    /// path (wrapper, env, cwd, signals, errors) runs here even on machines without sudo.
    fn stand_in() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sudo");
        std::fs::write(
            &path,
            "#!/bin/sh\n[ \"$1\" = -n ] || exit 90\nshift\n[ \"$1\" = -- ] || exit 91\nshift\nexec \"$@\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A process forked by another test while the file was open for writing holds it open
        // until it execs, and until then running the file fails with "text file busy".
        let runs = (0..100).any(|_| {
            let ok = std::process::Command::new(&path)
                .args(["-n", "--", "true"])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            ok
        });
        assert!(runs, "the stand-in sudo at {} does not run", path.display());
        let path = path.to_string_lossy().into_owned();
        (dir, path)
    }

    #[test]
    fn env_cwd_errors_and_signals_pass_through_the_wrapper() {
        let (_dir, program) = stand_in();
        let sudo = SudoLauncher::with_program(LocalLauncher, program);
        smol::block_on(async {
            let out = sudo
                .output(
                    &Command::new("sh")
                        .args(["-c", "pwd; printf '%s\\n' \"$V\""])
                        .env("V", "a 'b' \"c\" $d")
                        .current_dir("/tmp"),
                )
                .await
                .unwrap();
            assert_eq!(out.stdout, ["/tmp", "a 'b' \"c\" $d"]);
            assert!(out.success());

            let err = sudo
                .spawn(&Command::new("no-such-program-sudo"))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("no-such-program-sudo"), "{err}");
            let err = sudo
                .spawn(&Command::new("true").current_dir("/no/such/sudo/dir"))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("/no/such/sudo/dir"), "{err}");

            let mut p = sudo.spawn(&Command::new("sleep").arg("30")).await.unwrap();
            let mut events = p.take_events().unwrap();
            assert_eq!(
                events.recv().await,
                Some(ProcessEvent::Started {
                    pid: p.remote_pid()
                })
            );
            p.terminate().await.unwrap();
            assert_eq!(p.wait().await.unwrap().code(), Some(128 + 15));
        });
    }

    #[test]
    fn real_sudo_runs_as_root() {
        // Only where `sudo -n` works without a password; otherwise the stand-in above covers
        // the same path.
        match std::process::Command::new("sudo")
            .args(["-n", "true"])
            .output()
        {
            Err(e) => {
                eprintln!("skipped: no usable `sudo` on this machine ({e})");
                return;
            }
            Ok(o) if !o.status.success() => {
                eprintln!(
                    "skipped: `sudo -n` needs a password here: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                return;
            }
            Ok(_) => {}
        }
        let sudo = SudoLauncher::new(LocalLauncher);
        smol::block_on(async {
            let out = sudo
                .output(
                    &Command::new("sh")
                        .args(["-c", "id -u; echo \"$X\""])
                        .env("X", "a b"),
                )
                .await
                .unwrap();
            assert_eq!(out.stdout, ["0", "a b"]);
        });
    }
}
