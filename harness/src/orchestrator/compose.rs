//! `compose:` targets: one service of an existing docker compose file, started by the run's
//! [`DockerExecutor`] so that it shares the run's labels, network and janitor with `docker:`
//! targets.
//!
//! Each such service gets a compose project of its own, named for the run, its owner and the
//! service (`harness-<run>-p<pid>-<service>-<n>`): parallel runs never share containers,
//! networks or volumes, and the janitor can tell from the name whose project it was. Compose
//! services the file makes it depend on (`depends_on`) start with it in that project. A second
//! compose file, merged over the user's, gives the service harness's labels, the injected
//! environment (`PORT`, `<DEP>_ADDR`), its port published on `127.0.0.1`, the host gateway as
//! `host.docker.internal`, and the service's `stop_signal` and `stop_grace`. When the run's
//! containers meet on a network of its own, the service's container joins it under the
//! service's name. Stopping the service takes its project down (`down --volumes`).

use std::net::IpAddr;
use std::path::{Component, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::exec::{
    Command, ComposeHandle, ComposeService, DockerExecLauncher, ExitStatus, LaunchError, Launcher,
    LocalLauncher, ProcessHandle, Target,
};
use crate::topology::ComposeTarget;

use super::address::HOST_GATEWAY;
use super::docker::{DockerExecutor, Owner, RUN_LABEL, SERVICE_LABEL};
use super::error::StartFailure;
use super::executor::{BoxFuture, RunningService, StartSpec, StopRequest};
use super::logs::LogBuffer;
use super::process::{ExitWatch, pump_events};

/// The label compose puts on everything of a project, with the project's name.
const PROJECT_LABEL: &str = "com.docker.compose.project";

impl DockerExecutor {
    /// Starts the compose service `target` names, as the service of `spec`.
    pub(super) async fn start_compose(
        &self,
        spec: &StartSpec,
        target: &ComposeTarget,
        log: LogBuffer,
    ) -> Result<Box<dyn RunningService>, StartFailure> {
        let network = {
            let mut state = self.state.lock().await;
            self.prepare_run(&mut state, spec).await?;
            state.network.as_ref().map(|n| n.name().to_string())
        };
        let file: PathBuf = spec
            .base_dir
            .join(&target.file)
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        if !file.is_file() {
            return Err(StartFailure::Launch(LaunchError::Unsupported(format!(
                "compose file {} does not exist (`file` of the `compose` target, relative to {})",
                file.display(),
                spec.base_dir.display()
            ))));
        }
        let name = &spec.service.name;
        let engine = super::engine::engine();
        let service = target.service.clone().unwrap_or_else(|| name.clone());
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let this = Owner {
            pid: Some(std::process::id()),
            pidns: crate::exec::pid_namespace(),
        };
        let project = project_name(&self.run, this, name, n);
        let mut compose = ComposeService::new(file.display().to_string(), &service)
            .with_project(&project)
            .with_scratch_dir(spec.state_dir.display().to_string())
            .with_label(RUN_LABEL, &self.run)
            .with_label(SERVICE_LABEL, name)
            .with_extra_host(HOST_GATEWAY, &engine.this_machine);
        for (key, value) in spec.env() {
            compose = compose.with_env(key, value);
        }
        if let (Some(port), Some(host_port)) = (spec.port, spec.host_port) {
            compose = compose.with_port_mapping(&engine.publish.to_string(), host_port, port);
        }
        if let Some(signal) = spec.service.stop_signal {
            compose = compose.with_stop_signal(signal.into());
        }
        if let Some(grace) = spec.service.stop_grace {
            compose = compose.with_stop_grace(grace);
        }
        let mut handle = compose
            .launch(&self.launcher)
            .await
            .map_err(StartFailure::Launch)?;
        self.live.fetch_add(1, Ordering::SeqCst);
        self.sweep_after_start().await;
        let mut ip = handle.ip_address();
        if let Some(network) = network {
            // On the run's network under its harness name, as a `docker` target would be.
            ip = join_network(&self.launcher, handle.container_id(), &network, name)
                .await
                .map_err(StartFailure::Launch)?;
        }
        let events = handle.take_events().expect("a fresh handle has its events");
        let exit = pump_events(events, log, format!("harness-log-{project}"))?;
        Ok(Box::new(ComposeRunning {
            id: handle.container_id().to_string(),
            pid: handle.id(),
            ip,
            live: self.live.clone(),
            handle: Some(handle),
            exit,
        }))
    }
}

/// The project of the `n`th compose service the run `run` of `owner` starts, for the service
/// `name`: lower case letters, digits and `-`, as compose keeps them.
fn project_name(run: &str, owner: Owner, name: &str, n: u64) -> String {
    let name: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let pid = owner.pid.unwrap_or_default();
    match owner.pidns {
        Some(ns) => format!("{run}-p{pid}n{ns}-{name}-{n}"),
        None => format!("{run}-p{pid}-{name}-{n}"),
    }
}

/// The process that owns compose project `project`, if harness named it.
fn project_owner(project: &str) -> Option<Owner> {
    let rest = project.strip_prefix("harness-")?;
    let (run, rest) = rest.split_at_checked(12)?;
    if !run.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let owner = rest.strip_prefix("-p")?.split('-').next()?;
    let (pid, pidns) = match owner.split_once('n') {
        Some((pid, ns)) => (pid, Some(ns.parse().ok()?)),
        None => (owner, None),
    };
    Some(Owner {
        pid: Some(pid.parse().ok()?),
        pidns,
    })
}

/// The networks or volumes (`kind`) of compose projects harness named, each with the process
/// that owns it: for the janitor and the removal of this process's runs.
pub(super) async fn list_projects(launcher: &LocalLauncher, kind: &str) -> Vec<(String, Owner)> {
    let format = match kind {
        "network" => format!("{{{{.ID}}}} {{{{.Label \"{PROJECT_LABEL}\"}}}}"),
        _ => format!("{{{{.Name}}}} {{{{.Label \"{PROJECT_LABEL}\"}}}}"),
    };
    let filter = format!("label={PROJECT_LABEL}");
    let list = Command::new("docker").args([kind, "ls", "--filter", &filter, "--format", &format]);
    match launcher.output(&list).await {
        Ok(out) if out.success() => out
            .stdout
            .iter()
            .filter_map(|line| {
                let (id, project) = line.trim().split_once(' ')?;
                let owner = project_owner(project.trim())?;
                Some((id.to_string(), owner))
            })
            .collect(),
        Ok(out) => {
            tracing::debug!("list compose {kind}s: {}", out.stderr_text());
            Vec::new()
        }
        Err(e) => {
            tracing::debug!("list compose {kind}s: {e}");
            Vec::new()
        }
    }
}

/// Connects container `id` to `network` as `alias`; returns its address there.
async fn join_network(
    launcher: &LocalLauncher,
    id: &str,
    network: &str,
    alias: &str,
) -> Result<Option<IpAddr>, LaunchError> {
    let connect =
        Command::new("docker").args(["network", "connect", "--alias", alias, network, id]);
    launcher
        .run_checked(
            &connect,
            &format!("connect service `{alias}` to network `{network}`"),
        )
        .await?;
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let inspect = Command::new("docker").args(["inspect", "--format", &format, id]);
    let out = launcher
        .run_checked(&inspect, &format!("find the address of service `{alias}`"))
        .await?;
    Ok(out.stdout_text().trim().parse().ok())
}

/// A running compose service, and its project.
struct ComposeRunning {
    handle: Option<ComposeHandle<LocalLauncher>>,
    id: String,
    pid: Option<u32>,
    ip: Option<IpAddr>,
    /// The executor's count of containers that may still exist.
    live: Arc<std::sync::atomic::AtomicU64>,
    exit: Arc<Mutex<ExitWatch>>,
}

impl RunningService for ComposeRunning {
    fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn container_id(&self) -> Option<String> {
        Some(self.id.clone())
    }

    fn exec(
        &self,
        argv: &[String],
    ) -> BoxFuture<'static, Result<crate::exec::Output, LaunchError>> {
        let command = super::executor::exec_command(argv);
        let launcher = DockerExecLauncher::unchecked(LocalLauncher, self.id.clone());
        Box::pin(async move { launcher.output(&command?).await })
    }

    fn direct_ip(&self) -> Option<IpAddr> {
        self.ip
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        self.handle
            .as_ref()
            .and_then(|h| h.try_status())
            .or_else(|| ExitWatch::status(&self.exit))
    }

    fn on_exit(&self, notify: Box<dyn FnOnce(ExitStatus) + Send>) {
        ExitWatch::on_exit(&self.exit, notify);
    }

    fn stop(&mut self, how: StopRequest) -> BoxFuture<'_, Result<ExitStatus, LaunchError>> {
        Box::pin(async move {
            let Some(mut handle) = self.handle.take() else {
                return Ok(ExitWatch::status(&self.exit).unwrap_or(ExitStatus::from_code(0)));
            };
            // The project's volumes go with it, so at teardown a graceful stop buys nothing
            // unless the service asked for one.
            let grace = if how.teardown {
                std::time::Duration::ZERO
            } else {
                how.grace
            };
            let stopped = handle.stop(grace).await;
            let removed = self.down(handle).await;
            let status = stopped?;
            removed.map(|()| status)
        })
    }
}

impl ComposeRunning {
    /// Takes the project down and waits until it is gone.
    async fn down(&self, handle: ComposeHandle<LocalLauncher>) -> Result<(), LaunchError> {
        handle.down().await?;
        super::docker::count_gone(&self.live);
        Ok(())
    }
}

impl Drop for ComposeRunning {
    /// Takes the project down and waits, so that the run's network can go right after.
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take()
            && let Err(e) = futures_lite::future::block_on(self.down(handle))
        {
            tracing::warn!("take a compose service's project down: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_name_their_owner() {
        let owner = Owner {
            pid: Some(4242),
            pidns: Some(4026531836),
        };
        let project = project_name("harness-0123456789ab", owner, "Web_DB.1", 3);
        assert_eq!(project, "harness-0123456789ab-p4242n4026531836-webdb1-3");
        assert_eq!(project_owner(&project), Some(owner));
        let bare = Owner {
            pid: Some(77),
            pidns: None,
        };
        assert_eq!(project_owner("harness-0123456789ab-p77-x-0"), Some(bare));
        for other in [
            "myapp",
            "harness-xyz-p1-a-0",
            "harness-0123456789ab-x1-a-0",
            "harness-0123456789ab-p1nx-a-0",
            "",
        ] {
            assert_eq!(project_owner(other), None, "{other}");
        }
    }
}
