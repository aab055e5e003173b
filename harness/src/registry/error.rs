//! `RegistryError`: why a registry operation was refused.

use crate::registry::model::{Location, Network, ServiceState};

/// Why a registry operation was refused. Messages read well after "failed to ..." and name the
/// service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A service with an empty name.
    #[error("register a service with an empty name")]
    EmptyName,
    /// A service of that name is already registered.
    #[error("register service `{service}`: a service of that name is already registered")]
    AlreadyRegistered {
        /// The name.
        service: String,
    },
    /// No service of that name is registered.
    #[error("find service `{service}`: not registered")]
    NotFound {
        /// The name asked for.
        service: String,
    },
    /// A service names a dependency that is not registered.
    #[error("register service `{service}`: it depends on `{dependency}`, which is not registered")]
    UnknownDependency {
        /// The service.
        service: String,
        /// The missing dependency.
        dependency: String,
    },
    /// A change to a service's dependencies would make it depend on itself.
    #[error("update service `{service}`: its dependencies would form a cycle ({})", cycle.join(" -> "))]
    DependencyCycle {
        /// The service.
        service: String,
        /// The cycle, starting and ending at `service`.
        cycle: Vec<String>,
    },
    /// Other services depend on the one to be removed.
    #[error(
        "remove service `{service}`: {} still depend on it",
        quoted(dependents)
    )]
    HasDependents {
        /// The service.
        service: String,
        /// The services that depend on it.
        dependents: Vec<String>,
    },
    /// The state change is not in [`ServiceState`]'s transition table.
    #[error("move service `{service}` from {from} to {to}: not an allowed transition")]
    InvalidTransition {
        /// The service.
        service: String,
        /// Its current state.
        from: ServiceState,
        /// The state asked for.
        to: ServiceState,
    },
    /// An update tried to change a service's name.
    #[error("update service `{service}`: its name cannot change (to `{new_name}`)")]
    Renamed {
        /// The service.
        service: String,
        /// The name the update gave it.
        new_name: String,
    },
    /// The service has no endpoint of that name.
    #[error("resolve endpoint `{endpoint}` of service `{service}`: no such endpoint")]
    UnknownEndpoint {
        /// The service.
        service: String,
        /// The endpoint asked for.
        endpoint: String,
    },
    /// The endpoint has no address on the network a caller would reach it by.
    #[error(
        "resolve endpoint `{endpoint}` of service `{service}` from {from}: it has no {network} address"
    )]
    NoAddress {
        /// The service.
        service: String,
        /// The endpoint.
        endpoint: String,
        /// Where the caller is.
        from: Location,
        /// The network the caller would need.
        network: Network,
    },
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
