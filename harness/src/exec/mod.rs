//! The command executor: run a command, a managed process, a container, a compose service or a
//! systemd unit, on this machine, on a host over SSH or inside a container, with one API.
//!
//! Three ideas:
//!
//! - A [`Target`] is *what* runs: a one-off [`Command`], a [`ManagedProcess`] whose lifecycle
//!   we own, a [`DockerContainer`], a [`ComposeService`], a [`SystemdService`], a
//!   [`SystemdPortable`].
//! - A [`Launcher`] is *where* it runs: [`LocalLauncher`] spawns on this machine;
//!   [`SshLauncher`] runs on another host through its inner launcher; [`SudoLauncher`] runs as
//!   root; [`DockerExecLauncher`] runs inside a container. Launchers nest:
//!   `SshLauncher<SudoLauncher<LocalLauncher>>` is ssh run as root on this machine.
//!   An [`Attacher`] connects to something already running instead of spawning it.
//! - Every started process yields a [`ProcessHandle`]: line-buffered [`ProcessEvent`]s (taken
//!   once), signals, `wait`.
//!
//! [`Executor`] ties a launcher to a service name.
//!
//! # Known limits
//!
//! - Unix only (Linux for `PR_SET_PDEATHSIG`).
//! - A local service's descendants that leave its process group are killed with it only when it
//!   has a cgroup of its own (cgroup v2, writable here; see [`run_cgroup`]); otherwise only a
//!   process that called [`become_subreaper`] finds them, in [`remove_descendants`]. Neither
//!   helps after SIGKILL of the owner, except that its cgroup is removed later
//!   ([`remove_stale_cgroup`], and by the next harness process started in the same cgroup).
//!   A program that drives the orchestrator itself should call [`become_subreaper`] at start
//!   and [`remove_descendants`] after its last stop, as `harness up` and the test runner do.
//! - Remote launchers need a POSIX `sh`, `setsid` and `kill` at the far end. A remote process
//!   killed by a signal is reported as exit code 128 + the signal number, as the shell sees it.
//! - Systemd targets run `systemctl`/`portablectl`/`journalctl` command lines where their
//!   launcher runs. CI runs them against a real systemd as PID 1 of a container (without
//!   `--privileged`, which the CI host refuses: `SYS_ADMIN`, the host's cgroups, tmpfs on
//!   `/run`); units that need more than a container gives them are not covered there.

mod attach;
mod cgroup;
mod command;
mod compose;
pub(crate) mod docker;
mod error;
mod event;
mod executor;
mod image;
mod launcher;
mod local;
mod managed;
mod pipe;
pub mod quote;
pub(crate) mod reaper;
mod remote;
mod signal;
mod spawn;
mod spawner;
mod ssh;
mod sudo;
mod systemd;
mod target;
mod watch;

pub use attach::{AttachedService, Attacher, LocalAttacher, ManagedService, ServiceAttacher};
pub use cgroup::{CGROUP_ENV, remove_stale_cgroup, run_cgroup};
pub use command::Command;
pub use compose::{ComposeCli, ComposeHandle, ComposeService};
pub use docker::{
    ContainerHandle, DockerContainer, DockerExecLauncher, DockerNetwork, MANAGED_LABEL,
    OWNER_PID_LABEL, OWNER_PIDNS_LABEL, Pull, pid_namespace,
};
pub use error::LaunchError;
pub use event::{EventStream, ExitStatus, LogFilter, Output, OutputStream, ProcessEvent};
pub use executor::{Execution, Executor};
pub use image::{BuiltImage, DockerImage};
pub use launcher::{Launcher, ProcessHandle};
pub use local::{LocalLauncher, LocalProcess};
pub use managed::{ManagedHandle, ManagedProcess, RestartPolicy};
pub use pipe::{ChildInput, ChildOutput};
pub use quote::quote;
pub use reaper::{become_subreaper, remove_descendants};
pub use remote::{RemoteProcess, Transport};
pub use signal::Signal;
pub use ssh::{HostKeys, SshBuilder, SshLauncher};
pub use sudo::SudoLauncher;

pub use systemd::{SystemdPortable, SystemdScope, SystemdService, UnitHandle, UnitStatus};
pub use target::Target;
