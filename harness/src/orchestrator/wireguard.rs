//! `WireguardExecutor`: a service as a package deployed to a host that joins the run's
//! WireGuard mesh.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::exec::{
    ExitStatus, LaunchError, Launcher as _, LocalLauncher, OutputStream, SshLauncher,
};
use crate::lab::Lab;
use crate::network::{Mesh, MeshError, MeshNode};
use crate::package::{DEFAULT_ROOT, Deploy, Installed};
use crate::registry::{DeploymentProgress, Registry};
use crate::topology::ServiceTarget;

use super::error::StartFailure;
use super::executor::{BoxFuture, RunningService, ServiceExecutor, StartSpec, StopRequest};
use super::logs::LogBuffer;
use super::remote_lan::KNOWN_HOSTS_FILE;

type Ssh = SshLauncher<LocalLauncher>;

/// Where packages go on a lab host: under its own `/root`, which no other host sees (lab hosts
/// share the machine's `/opt`).
const LAB_ROOT: &str = "/root/harness";

/// One host of the mesh: its address there, and how harness reaches it.
#[derive(Clone)]
pub(crate) struct MeshHost {
    /// Its address on the mesh.
    pub(crate) addr: Ipv4Addr,
    /// This machine's address on the mesh: what the host's services reach it at.
    pub(crate) this_machine: Ipv4Addr,
    ssh: Ssh,
    /// Where packages are installed.
    root: String,
}

/// The run's mesh, shared by the manager (which places services on it) and the executor
/// (which deploys to its hosts). Started with the first `wireguard` service, shut down by
/// [`ServiceExecutor::clean_up`].
pub(crate) struct MeshRun {
    subnet: String,
    state: async_lock::Mutex<Option<MeshState>>,
}

struct MeshState {
    mesh: Mesh,
    hosts: HashMap<String, MeshHost>,
}

impl MeshRun {
    /// A mesh on `subnet` (the topology's `wireguard_subnet`), not started yet.
    pub(crate) fn new(subnet: String) -> Self {
        MeshRun {
            subnet,
            state: async_lock::Mutex::new(None),
        }
    }

    /// The host `host` on the mesh: started and joined at the first call. A host of `lab` is
    /// entered as root with the lab's key; any other host over SSH as `user`, its host key
    /// trusted on first use into the run's known-hosts file in `state_dir`. The test machine
    /// joins the mesh when it starts, at its lab gateways if there is a lab.
    pub(crate) async fn join(
        &self,
        host: &str,
        user: &str,
        lab: Option<&Lab>,
        state_dir: &Path,
    ) -> Result<MeshHost, MeshError> {
        let mut state = self.state.lock().await;
        if let Some(joined) = state.as_ref().and_then(|s| s.hosts.get(host)) {
            return Ok(joined.clone());
        }
        if state.is_none() {
            let mut builder = Mesh::builder().subnet(self.subnet.clone());
            if let Some(lab) = lab {
                builder = builder.lab(lab);
            }
            *state = Some(MeshState {
                mesh: builder.start().await?,
                hosts: HashMap::new(),
            });
        }
        let state = state.as_mut().expect("started above");
        let (ssh, node, root) = match lab.and_then(|lab| lab.get_host(host).map(|h| (lab, h))) {
            Some((lab, lab_host)) => {
                let ssh = lab_host
                    .launcher()
                    .await
                    .map_err(|e| connect_failed(host, "lab", e))?;
                let mut node = MeshNode::new(host, ssh.clone());
                for net in &lab.networks {
                    if let Some(addr) = lab_host.get_addr(&net.name) {
                        node = node.at(net.name.clone(), addr);
                    }
                }
                (ssh, node, LAB_ROOT.to_string())
            }
            None => {
                let ssh = SshLauncher::builder(host, user)
                    .known_hosts(state_dir.join(KNOWN_HOSTS_FILE))
                    .connect(LocalLauncher)
                    .await
                    .map_err(|e| connect_failed(host, &format!("{user}@{host}"), e))?;
                // The test machine reaches a node at its first underlay address.
                let ip = super::address::LanSite::locate(host)
                    .map_err(|e| MeshError::Unsupported(format!("find host {host}: {e}")))?
                    .ip;
                let node = MeshNode::new(host, ssh.clone()).at("underlay", ip);
                (ssh, node, DEFAULT_ROOT.to_string())
            }
        };
        let addr = state.mesh.add(node).await?;
        let joined = MeshHost {
            addr,
            this_machine: state.mesh.local_addr(),
            ssh,
            root,
        };
        state.hosts.insert(host.to_string(), joined.clone());
        Ok(joined)
    }

    /// The host `host`, once it joined.
    async fn host(&self, host: &str) -> Option<MeshHost> {
        let state = self.state.lock().await;
        state.as_ref().and_then(|s| s.hosts.get(host).cloned())
    }

    /// Takes every host out and removes the mesh, if it runs.
    async fn shut_down(&self) -> Result<(), MeshError> {
        let state = self.state.lock().await.take();
        match state {
            Some(state) => {
                drop(state.hosts);
                state.mesh.shutdown().await
            }
            None => Ok(()),
        }
    }
}

fn connect_failed(node: &str, location: &str, source: LaunchError) -> MeshError {
    MeshError::Node {
        node: node.to_string(),
        location: location.to_string(),
        doing: "connect over SSH".to_string(),
        source: Box::new(source),
    }
}

/// Runs `wireguard:` targets: the target's `package` (a package archive or directory, relative
/// to the base directory) is deployed to its `host` ([`Deploy`]) once the host has joined the
/// run's mesh; the service's env file holds `PORT` and every `<DEP>_ADDR`, as seen from the
/// mesh. Stopping runs the package's `stop.sh`; the release stays installed, so the next run
/// of the same package skips the upload.
pub(crate) struct WireguardExecutor {
    mesh: Arc<MeshRun>,
    /// Where deployments report progress (`deployment_progress` events).
    registry: Registry,
}

impl WireguardExecutor {
    pub(crate) fn new(mesh: Arc<MeshRun>, registry: Registry) -> Self {
        WireguardExecutor { mesh, registry }
    }
}

fn failure(doing: String, error: impl std::fmt::Display) -> StartFailure {
    StartFailure::Launch(LaunchError::Io {
        doing,
        source: std::io::Error::other(error.to_string()),
    })
}

impl ServiceExecutor for WireguardExecutor {
    fn start<'a>(
        &'a self,
        spec: &'a StartSpec,
        log: LogBuffer,
    ) -> BoxFuture<'a, Result<Box<dyn RunningService>, StartFailure>> {
        Box::pin(async move {
            let ServiceTarget::Wireguard(target) = &spec.service.target else {
                return Err(StartFailure::Unsupported(spec.service.target.kind()));
            };
            let name = spec.service.name.clone();
            let Some(host) = self.mesh.host(&target.host).await else {
                return Err(failure(
                    format!("deploy {name} to {}", target.host),
                    "the host has not joined the mesh",
                ));
            };
            let service_dir = format!("{}/{name}", host.root.trim_end_matches('/'));
            let files =
                super::files::put_over_ssh(&host.ssh, &spec.files, Some(&service_dir)).await?;
            let progress_log = log.clone();
            let registry = self.registry.clone();
            let mut deploy = Deploy::new(spec.base_dir.join(&target.package))
                .with_service(name.clone())
                .with_root(host.root.clone())
                .with_envs(spec.env())
                .with_progress(move |p| {
                    registry.publish_progress(DeploymentProgress {
                        service: p.service.clone(),
                        host: p.host.clone(),
                        stage: p.stage.name().to_string(),
                        percent: p.stage.percent(),
                        message: p.message.clone(),
                    });
                    progress_log.push(
                        OutputStream::Stderr,
                        format!("harness deploy: {}: {}", p.stage.name(), p.message),
                    );
                });
            if let Some(port) = spec.port {
                deploy = deploy.with_port(port);
            }
            if let Err(e) = deploy.on(&host.ssh, &target.host).await {
                super::files::remove_over_ssh(&host.ssh, &files).await;
                return Err(failure(format!("deploy {name} to {}", target.host), e));
            }
            Ok(Box::new(PackageService {
                host,
                target_host: target.host.clone(),
                service: name,
                exit: Arc::new(Mutex::new(None)),
                files,
                env: spec.env(),
                dir: service_dir,
            }) as Box<dyn RunningService>)
        })
    }

    fn clean_up(&self) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move {
            self.mesh.shut_down().await.map_err(|e| LaunchError::Io {
                doing: "remove the run's WireGuard mesh".to_string(),
                source: std::io::Error::other(e.to_string()),
            })
        })
    }
}

/// A package started on a mesh host. Its processes belong to its `start.sh`, not to harness,
/// so its end is not watched; `stop.sh` stops it.
struct PackageService {
    host: MeshHost,
    target_host: String,
    service: String,
    exit: Arc<Mutex<Option<ExitStatus>>>,
    /// The paths of its `files:` on the host, removed when it stops.
    files: Vec<String>,
    /// Its environment and its directory on the host (`<root>/<service>`, where `current`
    /// is the live release), which [`RunningService::exec`] runs with.
    env: Vec<(String, String)>,
    dir: String,
}

impl RunningService for PackageService {
    fn pid(&self) -> Option<u32> {
        None
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_exit(&self, _notify: Box<dyn FnOnce(ExitStatus) + Send>) {}

    fn exec(
        &self,
        argv: &[String],
    ) -> BoxFuture<'static, Result<crate::exec::Output, LaunchError>> {
        let command = super::executor::exec_command(argv)
            .map(|command| command.envs(self.env.clone()).current_dir(self.dir.clone()));
        let ssh = self.host.ssh.clone();
        Box::pin(async move { ssh.output(&command?).await })
    }

    fn stop(&mut self, _how: StopRequest) -> BoxFuture<'_, Result<ExitStatus, LaunchError>> {
        Box::pin(async move {
            Installed::new(self.host.root.clone(), self.service.clone())
                .stop(&self.host.ssh, &self.target_host, false)
                .await
                .map_err(|e| LaunchError::Io {
                    doing: format!("stop {} on {}", self.service, self.target_host),
                    source: std::io::Error::other(e.to_string()),
                })?;
            super::files::remove_over_ssh(&self.host.ssh, &std::mem::take(&mut self.files)).await;
            let status = ExitStatus::from_code(0);
            *self.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
            Ok(status)
        })
    }
}
