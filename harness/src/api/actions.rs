//! What each action does: reads of the registry, and the two traits through which the server
//! changes the world, [`ServiceController`] (start, stop, restart) and [`Deployer`] (deploy a
//! package), which the orchestrator and the package layer implement.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::protocol::{
    ACTIONS, ApiError, DeployRequest, ErrorCode, ListEndpointsParams, ListServicesParams,
    PROTOCOL_VERSION, Request, ServiceActionParams, ServiceCommand, ServiceParams,
};
use crate::registry::{DeploymentProgress, Endpoint, EventKind, Registry, RegistryError};

/// A boxed future that can move between threads, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a controller or a deployer failed: any error, shown to the client as its message.
pub type ActionFailure = Box<dyn Error + Send + Sync>;

/// Starts, stops and restarts services on behalf of `service_action` requests.
///
/// The orchestrator implements it; it is expected to move the service through its states in
/// the registry (which publishes `service_state_changed` events to subscribers) and to return
/// once the command is done. A server without a controller answers `service_action` with the
/// error code `no_controller`.
///
/// ```
/// use harness::api::{ActionFailure, BoxFuture, ServiceCommand, ServiceController};
/// use harness::registry::{Registry, ServiceState};
///
/// /// Moves services through their states without running anything.
/// struct Pretend(Registry);
///
/// impl ServiceController for Pretend {
///     fn control<'a>(
///         &'a self,
///         service: &'a str,
///         command: ServiceCommand,
///     ) -> BoxFuture<'a, Result<(), ActionFailure>> {
///         Box::pin(async move {
///             let steps: &[ServiceState] = match command {
///                 ServiceCommand::Start => &[ServiceState::Starting, ServiceState::Running],
///                 ServiceCommand::Stop => &[ServiceState::Stopping, ServiceState::Stopped],
///                 ServiceCommand::Restart => &[
///                     ServiceState::Stopping,
///                     ServiceState::Stopped,
///                     ServiceState::Starting,
///                     ServiceState::Running,
///                 ],
///             };
///             for state in steps {
///                 self.0.set_state(service, state.clone()).await?;
///             }
///             Ok(())
///         })
///     }
/// }
/// ```
pub trait ServiceController: Send + Sync + 'static {
    /// Carries out `command` on `service` (which is registered) and returns when it is done.
    fn control<'a>(
        &'a self,
        service: &'a str,
        command: ServiceCommand,
    ) -> BoxFuture<'a, Result<(), ActionFailure>>;
}

/// Deploys packages on behalf of `deploy_package` requests.
///
/// The package layer implements it. It reports how far it has come through `progress`, which
/// publishes `deployment_progress` events. A server without a deployer answers
/// `deploy_package` with the error code `no_deployer`.
pub trait Deployer: Send + Sync + 'static {
    /// Deploys `request.package` to `request.host` and returns what was deployed.
    fn deploy(
        &self,
        request: DeployRequest,
        progress: Progress,
    ) -> BoxFuture<'_, Result<Deployment, ActionFailure>>;
}

/// Publishes the progress of one deployment as `deployment_progress` events.
#[derive(Debug, Clone)]
pub struct Progress {
    registry: Registry,
    service: String,
    host: String,
}

impl Progress {
    /// Progress reports for deploying `service` to `host`.
    pub fn new(registry: Registry, service: impl Into<String>, host: impl Into<String>) -> Self {
        Progress {
            registry,
            service: service.into(),
            host: host.into(),
        }
    }

    /// Publishes that the deployment is at `stage` ("upload", "extract", "start") and
    /// `percent` done; returns the event's sequence number.
    pub fn report(&self, stage: &str, percent: u8, message: impl Into<String>) -> u64 {
        self.registry.publish_progress(DeploymentProgress {
            service: self.service.clone(),
            host: self.host.clone(),
            stage: stage.to_owned(),
            percent,
            message: message.into(),
        })
    }
}

/// What a deployment put where: the result of `deploy_package`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The service deployed.
    pub service: String,
    /// The host it was deployed to.
    pub host: String,
    /// The package version deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where it was installed (`<root>/<service>/releases/<name>-<version>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_path: Option<String>,
}

/// An endpoint with the service it belongs to: one item of `list_endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    /// The service.
    pub service: String,
    /// The endpoint, its fields beside `service`.
    #[serde(flatten)]
    pub endpoint: Endpoint,
}

/// What every connection of a server works with.
#[derive(Clone)]
pub(crate) struct Backend {
    pub(crate) registry: Registry,
    pub(crate) controller: Option<Arc<dyn ServiceController>>,
    pub(crate) deployer: Option<Arc<dyn Deployer>>,
}

impl Backend {
    /// Carries out every request except `subscribe` and `unsubscribe`, which belong to the
    /// connection; returns the response's `params`.
    pub(crate) async fn execute(&self, request: Request) -> Result<Value, ApiError> {
        match request {
            Request::Hello => Ok(self.hello()),
            Request::ListServices(p) => Ok(self.list_services(p).await),
            Request::GetService(p) => self.get_service(p).await,
            Request::ServiceAction(p) => self.service_action(p).await,
            Request::ListEndpoints(p) => self.list_endpoints(p).await,
            Request::DeployPackage(p) => self.deploy_package(p).await,
            Request::Subscribe(_) | Request::Unsubscribe => {
                unreachable!("the connection answers subscribe and unsubscribe itself")
            }
        }
    }

    fn hello(&self) -> Value {
        json!({
            "protocol_version": PROTOCOL_VERSION,
            "server": "harness",
            "server_version": env!("CARGO_PKG_VERSION"),
            "actions": ACTIONS,
            "events": EventKind::ALL.map(EventKind::as_str),
            "controller": self.controller.is_some(),
            "deployer": self.deployer.is_some(),
            "last_sequence": self.registry.last_sequence(),
        })
    }

    async fn list_services(&self, p: ListServicesParams) -> Value {
        let mut services = self.registry.list().await;
        if let Some(states) = &p.states {
            services.retain(|s| states.contains(&s.state.kind()));
        }
        json!({ "services": services })
    }

    async fn get_service(&self, p: ServiceParams) -> Result<Value, ApiError> {
        let service = self.registry.get(&p.name).await.map_err(registry_error)?;
        let dependents = self
            .registry
            .dependents(&p.name)
            .await
            .map_err(registry_error)?;
        Ok(json!({ "service": service, "dependents": dependents }))
    }

    async fn service_action(&self, p: ServiceActionParams) -> Result<Value, ApiError> {
        let Some(controller) = &self.controller else {
            return Err(ApiError::new(
                ErrorCode::NoController,
                format!(
                    "{} service `{}`: no controller in this server (it serves the registry only)",
                    p.action, p.service
                ),
            ));
        };
        // Refuse an unknown service here, so that every controller need not.
        self.registry
            .get(&p.service)
            .await
            .map_err(registry_error)?;
        controller
            .control(&p.service, p.action)
            .await
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::ActionFailed,
                    format!("{} service `{}`: {e}", p.action, p.service),
                )
            })?;
        let service = self
            .registry
            .get(&p.service)
            .await
            .map_err(registry_error)?;
        Ok(json!({ "service": service }))
    }

    async fn list_endpoints(&self, p: ListEndpointsParams) -> Result<Value, ApiError> {
        let services = match &p.service {
            Some(name) => vec![self.registry.get(name).await.map_err(registry_error)?],
            None => self.registry.list().await,
        };
        let endpoints: Vec<ServiceEndpoint> = services
            .into_iter()
            .flat_map(|s| {
                let service = s.name;
                s.endpoints
                    .into_iter()
                    .map(move |endpoint| ServiceEndpoint {
                        service: service.clone(),
                        endpoint,
                    })
            })
            .collect();
        Ok(json!({ "endpoints": endpoints }))
    }

    async fn deploy_package(&self, p: DeployRequest) -> Result<Value, ApiError> {
        let Some(deployer) = &self.deployer else {
            return Err(ApiError::new(
                ErrorCode::NoDeployer,
                format!("deploy package `{}`: no deployer in this server", p.package),
            ));
        };
        let service = p.service.clone().unwrap_or_else(|| p.package.clone());
        let host = p.host.clone().unwrap_or_else(|| "localhost".to_owned());
        let package = p.package.clone();
        let progress = Progress::new(self.registry.clone(), service, host);
        let deployment = deployer.deploy(p, progress).await.map_err(|e| {
            ApiError::new(
                ErrorCode::ActionFailed,
                format!("deploy package `{package}`: {e}"),
            )
        })?;
        Ok(json!({ "deployment": deployment }))
    }
}

/// The protocol's view of a registry refusal.
pub(crate) fn registry_error(e: RegistryError) -> ApiError {
    let code = match e {
        RegistryError::NotFound { .. } | RegistryError::UnknownEndpoint { .. } => {
            ErrorCode::NotFound
        }
        _ => ErrorCode::Conflict,
    };
    ApiError::new(code, e.to_string())
}
