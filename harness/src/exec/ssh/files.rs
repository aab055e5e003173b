//! File transfer over the SSH connection: bytes streamed through a remote `cat` or `tar`.
//!
//! The bytes travel as a session over the master connection, so a transfer costs no new
//! handshake. Whole files land under a temporary name and are renamed into place, so a reader
//! at either end never sees half a file.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use futures_lite::{AsyncReadExt, AsyncWriteExt, io as aio};

use crate::exec::command::Command;
use crate::exec::error::LaunchError;
use crate::exec::event::{ExitStatus, Output};
use crate::exec::launcher::{Launcher, ProcessHandle};
use crate::exec::local::LocalLauncher;
use crate::exec::quote::quote;
use crate::exec::remote::Transport;

use super::SshLauncher;

impl<L: Launcher> SshLauncher<L> {
    /// Copies the local file `local` to `remote` on the host, keeping its permission bits.
    /// The file is written under a temporary name next to `remote` and renamed into place once
    /// every byte has arrived; an existing file is replaced.
    pub async fn upload(&self, local: impl AsRef<Path>, remote: &str) -> Result<(), LaunchError> {
        let local = local.as_ref();
        let doing = format!(
            "upload {} to {}:{remote}",
            local.display(),
            self.conn.location
        );
        let io_err = |e: io::Error| LaunchError::io(&doing, e);
        let file = std::fs::File::open(local).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(io_err(io::Error::other("not a regular file")));
        }
        let size = meta.len();
        let mode = meta.permissions().mode() & 0o7777;
        // The size travels in the script: if the stream is cut short, `cat` still ends
        // cleanly, and only the count tells a truncated file from a whole one.
        let script = format!(
            "set -e\n\
             t={dest}.harness-upload.$$\n\
             trap 'rm -f \"$t\"' EXIT\n\
             cat > \"$t\"\n\
             n=$(wc -c < \"$t\")\n\
             [ $n -eq {size} ] || {{ echo \"received $n of {size} bytes\" >&2; exit 1; }}\n\
             chmod {mode:o} \"$t\"\n\
             mv -f \"$t\" {dest}\n",
            dest = quote(remote)
        );
        let cmd = self.shell_command(&script, &Command::new("sh").piped_stdin());
        let mut ssh = self.inner.spawn(&cmd).await?;
        let events = ssh.take_events().expect("a fresh handle has its events");
        let mut stdin = ssh.take_stdin().expect("stdin was asked for");
        let source = blocking::Unblock::new(file).take(size);
        let copied = aio::copy(source, &mut stdin).await;
        let closed = stdin.close().await;
        let out = finish(&mut ssh, events).await?;
        check(&doing, &out)?;
        // The remote side is the better witness; a local error matters only if it said yes.
        copied.map_err(io_err)?;
        closed.map_err(io_err)?;
        Ok(())
    }

    /// Copies `remote` on the host to the local file `local`. The bytes go to a temporary file
    /// next to `local`, renamed into place when the transfer succeeded.
    pub async fn download(&self, remote: &str, local: impl AsRef<Path>) -> Result<(), LaunchError> {
        let local = local.as_ref();
        let doing = format!(
            "download {}:{remote} to {}",
            self.conn.location,
            local.display()
        );
        let io_err = |e: io::Error| LaunchError::io(&doing, e);
        let dir = match local.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // 0666 before the umask, as for any new file, rather than tempfile's 0600.
        let tmp = tempfile::Builder::new()
            .prefix(".harness-download")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(io_err)?;
        let script = format!("exec cat -- {}", quote(remote));
        let cmd = self.shell_command(&script, &Command::new("sh").raw_stdout());
        let mut ssh = self.inner.spawn(&cmd).await?;
        let events = ssh.take_events().expect("a fresh handle has its events");
        let stdout = ssh.take_stdout().expect("raw stdout was asked for");
        let mut sink = blocking::Unblock::new(tmp.as_file().try_clone().map_err(io_err)?);
        let copied = aio::copy(stdout, &mut sink).await;
        let flushed = sink.flush().await;
        let out = finish(&mut ssh, events).await?;
        check(&doing, &out)?;
        copied.map_err(io_err)?;
        flushed.map_err(io_err)?;
        tmp.persist(local).map_err(|e| io_err(e.error))?;
        Ok(())
    }

    /// Copies the local directory `local` into `remote` on the host (created if missing), as a
    /// tar stream: the system `tar` packs it here and unpacks it there. Files keep their modes;
    /// when the remote user is root they keep their numeric owners too, as `tar` does.
    pub async fn upload_dir(
        &self,
        local: impl AsRef<Path>,
        remote: &str,
    ) -> Result<(), LaunchError> {
        let local = local.as_ref();
        let doing = format!(
            "upload directory {} to {}:{remote}",
            local.display(),
            self.conn.location
        );
        let io_err = |e: io::Error| LaunchError::io(&doing, e);
        if !local.is_dir() {
            return Err(io_err(io::Error::other("not a directory")));
        }
        let pack = Command::new("tar")
            .args(["-C", &local.to_string_lossy(), "-cf", "-", "."])
            .raw_stdout();
        let mut tar = LocalLauncher.spawn(&pack).await?;
        let tar_events = tar.take_events().expect("a fresh handle has its events");
        let tar_out = tar.take_stdout().expect("raw stdout was asked for");

        let script = format!(
            "mkdir -p -- {dest} && exec tar -C {dest} -xf -",
            dest = quote(remote)
        );
        let cmd = self.shell_command(&script, &Command::new("sh").piped_stdin());
        let mut ssh = self.inner.spawn(&cmd).await?;
        let events = ssh.take_events().expect("a fresh handle has its events");
        let mut stdin = ssh.take_stdin().expect("stdin was asked for");
        let copied = aio::copy(tar_out, &mut stdin).await;
        let closed = stdin.close().await;
        let packed = finish(&mut tar, tar_events).await?;
        let out = finish(&mut ssh, events).await?;
        check(&format!("{doing}: pack with local tar"), &packed)?;
        check(&doing, &out)?;
        copied.map_err(io_err)?;
        closed.map_err(io_err)?;
        Ok(())
    }
}

/// Reads a transfer process's events to the end (its stderr, its status).
async fn finish<P: ProcessHandle>(
    process: &mut P,
    events: crate::exec::event::EventStream,
) -> Result<Output, LaunchError> {
    let mut out = events.collect().await;
    if out.status.is_none() {
        out.status = Some(process.wait().await?);
    }
    Ok(out)
}

fn check(doing: &str, out: &Output) -> Result<(), LaunchError> {
    if out.success() {
        return Ok(());
    }
    let status = out.status.unwrap_or(ExitStatus::from_code(-1));
    let said = out.stderr_text();
    let reason = if said.trim().is_empty() {
        format!("the transfer {status}")
    } else {
        format!("the transfer {status}: {}", said.trim())
    };
    Err(LaunchError::io(doing, io::Error::other(reason)))
}
