//! [`SshDeployer`]: the WebSocket API's [`Deployer`], over [`Deploy`] and a table of hosts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::api::{ActionFailure, BoxFuture, DeployRequest, Deployer, Deployment, Progress};

use super::deploy::{DEFAULT_ROOT, Deploy, DeployHost};
use super::deploy_installed::Installed;

/// Deploys packages for `deploy_package` requests to the hosts it was given, reporting every
/// step as a `deployment_progress` event (stage, percent, message).
///
/// A request names a package (an archive or a directory the server can read), a host (a name
/// from the table; may be left out when the table has one host) and optionally a service.
/// Its `options` may hold `env` (an object of strings for the env file), `port`, and
/// `rollback: true` (switch the service back to its previous release instead; `package` is
/// then not read, and the answer's `version` is the release now live, `name-version`).
///
/// ```no_run
/// use std::sync::Arc;
/// use harness::api::WsServer;
/// use harness::package::{DeployHost, SshDeployer};
/// use harness::registry::Registry;
/// # smol::block_on(async {
/// let deployer = SshDeployer::new([("web-1", DeployHost::parse("root@10.0.0.2")?)]);
/// let server = WsServer::builder(Registry::new())
///     .with_deployer(Arc::new(deployer))
///     .bind("127.0.0.1:0")
///     .await?;
/// # drop(server);
/// # Ok::<(), Box<dyn std::error::Error>>(()) });
/// ```
#[derive(Debug, Clone)]
pub struct SshDeployer {
    hosts: BTreeMap<String, DeployHost>,
    root: String,
    health_timeout: Option<Duration>,
}

impl SshDeployer {
    /// A deployer for the hosts of `hosts`, by name.
    pub fn new<N: Into<String>>(hosts: impl IntoIterator<Item = (N, DeployHost)>) -> Self {
        SshDeployer {
            hosts: hosts.into_iter().map(|(n, h)| (n.into(), h)).collect(),
            root: DEFAULT_ROOT.to_string(),
            health_timeout: None,
        }
    }

    /// Installs under `root` instead of [`DEFAULT_ROOT`].
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// How long a new release may take to become healthy.
    pub fn with_health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = Some(timeout);
        self
    }

    fn host(&self, name: Option<&str>) -> Result<&DeployHost, ActionFailure> {
        match name {
            Some(name) => self.hosts.get(name).ok_or_else(|| {
                let known: Vec<&str> = self.hosts.keys().map(String::as_str).collect();
                format!(
                    "unknown host `{name}`; this server deploys to: {}",
                    known.join(", ")
                )
                .into()
            }),
            None if self.hosts.len() == 1 => Ok(self.hosts.values().next().expect("one host")),
            None => Err("no host given, and this server deploys to several: name one".into()),
        }
    }

    async fn deploy_request(
        &self,
        request: DeployRequest,
        progress: Progress,
    ) -> Result<Deployment, ActionFailure> {
        let host = self.host(request.host.as_deref())?;
        let options = &request.options;
        if options.get("rollback").and_then(Value::as_bool) == Some(true) {
            let service = request
                .service
                .clone()
                .unwrap_or_else(|| request.package.clone());
            progress.report("rolling_back", 10, format!("rolling {service} back"));
            let ssh = host.ssh.clone().connect(crate::exec::LocalLauncher).await?;
            let mut installed = Installed::new(&self.root, &service);
            if let Some(t) = self.health_timeout {
                installed = installed.with_health_timeout(t);
            }
            let live = installed
                .rollback(&ssh, &host.name)
                .await
                .inspect_err(|e| {
                    progress.report("failed", 100, e.to_string());
                })?;
            progress.report("rolled_back", 100, format!("{live} is live"));
            return Ok(Deployment {
                service: service.clone(),
                host: host.name.clone(),
                version: Some(live.clone()),
                install_path: Some(format!(
                    "{}/{service}/releases/{live}",
                    self.root.trim_end_matches('/')
                )),
            });
        }
        let mut deploy = Deploy::new(&request.package).with_root(&self.root);
        if let Some(service) = &request.service {
            deploy = deploy.with_service(service);
        }
        if let Some(t) = self.health_timeout {
            deploy = deploy.with_health_timeout(t);
        }
        if let Some(port) = options.get("port").and_then(Value::as_u64) {
            let port = u16::try_from(port).map_err(|_| format!("port {port} is out of range"))?;
            deploy = deploy.with_port(port);
        }
        if let Some(env) = options.get("env") {
            let Some(env) = env.as_object() else {
                return Err("`env` must be an object of strings".into());
            };
            for (k, v) in env {
                let Some(v) = v.as_str() else {
                    return Err(format!("env `{k}` must be a string").into());
                };
                deploy = deploy.with_env(k, v);
            }
        }
        let deploy = deploy.with_progress(move |p| {
            progress.report(p.stage.name(), p.stage.percent(), p.message.clone());
        });
        let report = deploy.to_host(host).await?;
        Ok(Deployment {
            service: report.service,
            host: report.host,
            version: Some(report.version),
            install_path: Some(report.path),
        })
    }
}

impl Deployer for SshDeployer {
    fn deploy(
        &self,
        request: DeployRequest,
        progress: Progress,
    ) -> BoxFuture<'_, Result<Deployment, ActionFailure>> {
        Box::pin(self.deploy_request(request, progress))
    }
}
