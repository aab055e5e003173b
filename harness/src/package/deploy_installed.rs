//! [`Installed`]: a service as it is installed on a host, and the verbs that need no package:
//! status, rollback, stop and remove.

use std::time::Duration;

use crate::exec::{LaunchError, Launcher};

use super::deploy::{DEFAULT_HEALTH_TIMEOUT, DEFAULT_SCRIPT_TIMEOUT};
use super::deploy_error::DeployError;
use super::deploy_remote::{EnvMove, Remote};
use super::deploy_switch::{Activation, Limits, activate};
use super::rules::STOP_SCRIPT;

/// A service installed on a host: its releases, and the verbs that act on them without a
/// package (rollback, stop, remove).
#[derive(Debug, Clone)]
#[must_use = "an Installed does nothing until a verb is called"]
pub struct Installed {
    root: String,
    service: String,
    limits_health: Duration,
    limits_script: Duration,
}

/// The releases of an installed service, as [`Installed::status`] reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledStatus {
    /// Whether the service directory exists.
    pub exists: bool,
    /// The live release.
    pub current: Option<String>,
    /// The release kept for rollback.
    pub previous: Option<String>,
    /// Every release directory, with its sha256.
    pub releases: Vec<(String, String)>,
}

impl Installed {
    /// The service `service` under `root` ([`DEFAULT_ROOT`] if you have no other).
    pub fn new(root: impl Into<String>, service: impl Into<String>) -> Self {
        Installed {
            root: root.into(),
            service: service.into(),
            limits_health: DEFAULT_HEALTH_TIMEOUT,
            limits_script: DEFAULT_SCRIPT_TIMEOUT,
        }
    }

    /// How long a release may take to become healthy after a rollback.
    pub fn with_health_timeout(mut self, timeout: Duration) -> Self {
        self.limits_health = timeout;
        self
    }

    fn remote<'a, L>(&self, launcher: &'a L) -> Remote<'a, L> {
        Remote {
            launcher,
            dir: format!("{}/{}", self.root.trim_end_matches('/'), self.service),
        }
    }

    fn lost(&self, host: &str, step: &str) -> impl FnOnce(LaunchError) -> DeployError {
        let (host, service, step) = (host.to_string(), self.service.clone(), step.to_string());
        move |e| DeployError::Step {
            host,
            service,
            step,
            reason: e.to_string(),
        }
    }

    /// The service's releases on the host behind `launcher` (named `host` in errors).
    pub async fn status<L: Launcher>(
        &self,
        launcher: &L,
        host: &str,
    ) -> Result<InstalledStatus, DeployError> {
        let probe = self
            .remote(launcher)
            .probe(&[])
            .await
            .map_err(self.lost(host, "inspect the service directory"))?;
        Ok(InstalledStatus {
            exists: probe.exists,
            current: probe.current,
            previous: probe.previous,
            releases: probe.releases,
        })
    }

    /// Switches back to the previous release: stops the live one, makes `previous` live (with
    /// its env file), starts it and waits until it is healthy. The release rolled back from
    /// becomes `previous`, so a second rollback undoes the first. If the previous release
    /// fails to start, the live one is restored. Returns the release now live.
    pub async fn rollback<L: Launcher>(
        &self,
        launcher: &L,
        host: &str,
    ) -> Result<String, DeployError> {
        let remote = self.remote(launcher);
        let probe = remote
            .probe(&[])
            .await
            .map_err(self.lost(host, "inspect the service directory"))?;
        let nothing = |reason: &str| DeployError::NothingThere {
            action: "roll back",
            host: host.to_string(),
            service: self.service.clone(),
            reason: reason.to_string(),
        };
        let Some(current) = probe.current.as_deref() else {
            return Err(nothing("it is not deployed there (no current release)"));
        };
        let Some(previous) = probe.previous.as_deref() else {
            return Err(nothing("there is no previous release to roll back to"));
        };
        let env = remote
            .run(&format!(
                "S={}\nrm -f \"$S/.env.next\"\n[ ! -f \"$S/.env.previous\" ] || cp -p \"$S/.env.previous\" \"$S/.env.next\"",
                crate::exec::quote(&remote.dir)
            ))
            .await
            .map_err(self.lost(host, "prepare the previous env file"))?;
        if !env.ok {
            return Err(DeployError::Step {
                host: host.to_string(),
                service: self.service.clone(),
                step: "prepare the previous env file".into(),
                reason: env.tail,
            });
        }
        let activation = Activation {
            new: previous,
            old: Some(current),
            previous_before: Some(previous),
            remove_new_on_failure: false,
            existed: true,
            env: EnvMove::Next,
        };
        activate(
            &remote,
            &activation,
            &Limits {
                script: self.limits_script,
                health: self.limits_health,
            },
            &|_, _| {},
            host,
        )
        .await?;
        Ok(previous.to_string())
    }

    /// Runs the live release's `stop.sh`. With `remove`, then removes the whole service
    /// directory (every release, the links and the env file). Returns the release stopped.
    pub async fn stop<L: Launcher>(
        &self,
        launcher: &L,
        host: &str,
        remove: bool,
    ) -> Result<Option<String>, DeployError> {
        let remote = self.remote(launcher);
        let probe = remote
            .probe(&[])
            .await
            .map_err(self.lost(host, "inspect the service directory"))?;
        if !probe.exists {
            return Err(DeployError::NothingThere {
                action: "stop",
                host: host.to_string(),
                service: self.service.clone(),
                reason: format!("{} does not exist", remote.dir),
            });
        }
        if let Some(current) = &probe.current {
            let stop = remote
                .script(current, STOP_SCRIPT, self.limits_script)
                .await
                .map_err(self.lost(host, "run stop.sh"))?;
            if !stop.ok {
                return Err(DeployError::Step {
                    host: host.to_string(),
                    service: self.service.clone(),
                    step: format!("run stop.sh of {current}"),
                    reason: stop.tail,
                });
            }
        }
        if remove {
            let rm = remote
                .prune(&[], true)
                .await
                .map_err(self.lost(host, "remove the service directory"))?;
            if !rm.ok {
                return Err(DeployError::Step {
                    host: host.to_string(),
                    service: self.service.clone(),
                    step: format!("remove {}", remote.dir),
                    reason: rm.tail,
                });
            }
        }
        Ok(probe.current)
    }
}
