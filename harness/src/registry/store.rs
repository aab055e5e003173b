//! `Registry`: the in-memory store of service entries, its rules (dependencies, state
//! transitions) and the events every change publishes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_lock::RwLock;
use event_listener::Event as Notify;

use crate::registry::error::RegistryError;
use crate::registry::events::{
    Bus, DEFAULT_CAPACITY, DeploymentProgress, EventFilter, RegistryEvent, Subscription,
};
use crate::registry::model::{
    Endpoint, HealthResult, Location, ServiceEntry, ServiceState, StateKind, Timestamp,
};
use crate::registry::persist::SaveFailure;

type Services = BTreeMap<String, ServiceEntry>;

/// The service registry: what runs where, in which state, at which addresses.
///
/// A `Registry` is a handle: clones share one store. Every operation is safe to call from many
/// tasks and threads at once, under any async runtime (the store is behind an `async-lock`
/// read-write lock; nothing here spawns or needs a runtime). Every change publishes an
/// [`Event`](crate::registry::Event) to the registry's subscribers ([`Registry::subscribe`]),
/// while the change is being made, so events about one service come in the order of its changes.
///
/// Rules the store enforces:
/// - names are unique and not empty;
/// - a service's dependencies must be registered before it, may not form a cycle, and a service
///   that others depend on cannot be removed;
/// - state changes follow [`ServiceState::can_transition_to`].
#[derive(Clone)]
pub struct Registry {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    services: RwLock<Services>,
    bus: Bus,
    /// Counts changes to `services`; bumped under its write lock. Autosave compares it with
    /// the generation it last wrote.
    generation: AtomicU64,
    /// Notified after every change.
    pub(crate) changed: Notify,
    /// How the last save failed, until one succeeds again.
    pub(crate) save_failure: Mutex<Option<SaveFailure>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Registry");
        if let Some(services) = self.inner.services.try_read() {
            d.field("services", &services.keys().collect::<Vec<_>>());
        }
        d.field("last_sequence", &self.inner.bus.last_sequence())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::with_state(Services::new(), 0)
    }

    /// A registry holding `services`, whose next event is numbered `last_sequence + 1`.
    /// The caller has checked the services with [`check_all`].
    pub(crate) fn with_state(services: Services, last_sequence: u64) -> Self {
        Registry {
            inner: Arc::new(Inner {
                services: RwLock::new(services),
                bus: Bus::new(last_sequence),
                generation: AtomicU64::new(0),
                changed: Notify::new(),
                save_failure: Mutex::new(None),
            }),
        }
    }

    /// Adds a service. Refused if the name is empty or taken, or if a dependency is not
    /// registered. Publishes [`RegistryEvent::ServiceRegistered`].
    pub async fn register(&self, entry: ServiceEntry) -> Result<(), RegistryError> {
        let mut services = self.inner.services.write().await;
        if entry.name.is_empty() {
            return Err(RegistryError::EmptyName);
        }
        if services.contains_key(&entry.name) {
            return Err(RegistryError::AlreadyRegistered {
                service: entry.name,
            });
        }
        check_dependencies(&services, &entry)?;
        services.insert(entry.name.clone(), entry.clone());
        self.publish_change([RegistryEvent::ServiceRegistered {
            entry: Box::new(entry),
        }]);
        Ok(())
    }

    /// The service's entry.
    pub async fn get(&self, name: &str) -> Result<ServiceEntry, RegistryError> {
        let services = self.inner.services.read().await;
        services.get(name).cloned().ok_or_else(|| not_found(name))
    }

    /// Whether a service of that name is registered.
    pub async fn contains(&self, name: &str) -> bool {
        self.inner.services.read().await.contains_key(name)
    }

    /// Every service, sorted by name.
    pub async fn list(&self) -> Vec<ServiceEntry> {
        self.inner.services.read().await.values().cloned().collect()
    }

    /// How many services are registered.
    pub async fn len(&self) -> usize {
        self.inner.services.read().await.len()
    }

    /// Whether no service is registered.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Changes a service's entry with `change`, then checks the result as a whole: the name
    /// must stay, a new state must be an allowed transition, dependencies must be registered
    /// and acyclic. If any check fails nothing changes. Returns the entry as it now is.
    ///
    /// Publishes [`RegistryEvent::ServiceStateChanged`] if the state changed,
    /// [`RegistryEvent::EndpointUpdated`] / [`RegistryEvent::EndpointRemoved`] for each endpoint
    /// that changed, and [`RegistryEvent::ServiceUpdated`] if anything else did; nothing if
    /// nothing changed.
    pub async fn update<F>(&self, name: &str, change: F) -> Result<ServiceEntry, RegistryError>
    where
        F: FnOnce(&mut ServiceEntry),
    {
        let mut services = self.inner.services.write().await;
        let current = services.get(name).ok_or_else(|| not_found(name))?;
        let mut next = current.clone();
        change(&mut next);
        if next == *current {
            return Ok(next);
        }
        if next.name != name {
            return Err(RegistryError::Renamed {
                service: name.to_owned(),
                new_name: next.name,
            });
        }
        if next.state != current.state {
            check_transition(name, &current.state, &next.state)?;
            note_transition(&mut next, current.state.kind());
        }
        if next.dependencies != current.dependencies {
            check_dependencies(&services, &next)?;
            if let Some(cycle) = find_cycle(&services, &next) {
                return Err(RegistryError::DependencyCycle {
                    service: name.to_owned(),
                    cycle,
                });
            }
        }
        next.timestamps.updated_at = Timestamp::now();
        let events = diff_events(current, &next);
        services.insert(name.to_owned(), next.clone());
        self.publish_change(events);
        Ok(next)
    }

    /// Removes a service. Refused while other services depend on it. Publishes
    /// [`RegistryEvent::ServiceRemoved`] and returns the entry as it was.
    pub async fn remove(&self, name: &str) -> Result<ServiceEntry, RegistryError> {
        let mut services = self.inner.services.write().await;
        if !services.contains_key(name) {
            return Err(not_found(name));
        }
        let dependents = dependents_of(&services, name);
        if !dependents.is_empty() {
            return Err(RegistryError::HasDependents {
                service: name.to_owned(),
                dependents,
            });
        }
        let entry = services.remove(name).ok_or_else(|| not_found(name))?;
        self.publish_change([RegistryEvent::ServiceRemoved {
            service: name.to_owned(),
        }]);
        Ok(entry)
    }

    /// Moves a service to `state`, if [`ServiceState::can_transition_to`] allows it; returns the
    /// state it left. Entering `Running` records the start time; entering `Starting` again
    /// after a first start counts a restart. Publishes [`RegistryEvent::ServiceStateChanged`].
    pub async fn set_state(
        &self,
        name: &str,
        state: ServiceState,
    ) -> Result<ServiceState, RegistryError> {
        let mut services = self.inner.services.write().await;
        let entry = services.get_mut(name).ok_or_else(|| not_found(name))?;
        check_transition(name, &entry.state, &state)?;
        let from = std::mem::replace(&mut entry.state, state.clone());
        note_transition(entry, from.kind());
        entry.timestamps.updated_at = Timestamp::now();
        self.publish_change([RegistryEvent::ServiceStateChanged {
            service: name.to_owned(),
            from: from.clone(),
            to: state,
        }]);
        Ok(from)
    }

    /// Adds an endpoint to a service, or replaces the one of the same name. Publishes
    /// [`RegistryEvent::EndpointUpdated`] unless the endpoint was already exactly this.
    pub async fn set_endpoint(&self, name: &str, endpoint: Endpoint) -> Result<(), RegistryError> {
        let mut services = self.inner.services.write().await;
        let entry = services.get_mut(name).ok_or_else(|| not_found(name))?;
        if entry.endpoint(&endpoint.name) == Some(&endpoint) {
            return Ok(());
        }
        entry.put_endpoint(endpoint.clone());
        entry.timestamps.updated_at = Timestamp::now();
        self.publish_change([RegistryEvent::EndpointUpdated {
            service: name.to_owned(),
            endpoint,
        }]);
        Ok(())
    }

    /// Removes a service's endpoint and returns it. Publishes [`RegistryEvent::EndpointRemoved`].
    pub async fn remove_endpoint(
        &self,
        name: &str,
        endpoint: &str,
    ) -> Result<Endpoint, RegistryError> {
        let mut services = self.inner.services.write().await;
        let entry = services.get_mut(name).ok_or_else(|| not_found(name))?;
        let index = entry
            .endpoints
            .iter()
            .position(|e| e.name == endpoint)
            .ok_or_else(|| unknown_endpoint(name, endpoint))?;
        let removed = entry.endpoints.remove(index);
        entry.timestamps.updated_at = Timestamp::now();
        self.publish_change([RegistryEvent::EndpointRemoved {
            service: name.to_owned(),
            endpoint: endpoint.to_owned(),
        }]);
        Ok(removed)
    }

    /// The address at which this machine (the harness and its tests) reaches a service's
    /// endpoint: the endpoint's main `address`.
    pub async fn resolve(&self, name: &str, endpoint: &str) -> Result<SocketAddr, RegistryError> {
        let services = self.inner.services.read().await;
        let entry = services.get(name).ok_or_else(|| not_found(name))?;
        let e = entry
            .endpoint(endpoint)
            .ok_or_else(|| unknown_endpoint(name, endpoint))?;
        Ok(e.address)
    }

    /// The address at which a service at `from` reaches a service's endpoint, by ADR-007's
    /// rule ([`Location::network_to`]): WireGuard addresses if either side is on the mesh, LAN
    /// addresses if either is on the LAN, host addresses otherwise. An endpoint without an
    /// address on that network is an error rather than a guess.
    pub async fn resolve_from(
        &self,
        name: &str,
        endpoint: &str,
        from: &Location,
    ) -> Result<SocketAddr, RegistryError> {
        let services = self.inner.services.read().await;
        let entry = services.get(name).ok_or_else(|| not_found(name))?;
        let e = entry
            .endpoint(endpoint)
            .ok_or_else(|| unknown_endpoint(name, endpoint))?;
        let network = from.network_to(&entry.location);
        e.address_on(network)
            .ok_or_else(|| RegistryError::NoAddress {
                service: name.to_owned(),
                endpoint: endpoint.to_owned(),
                from: from.clone(),
                network,
            })
    }

    /// The services that depend directly on `name`, sorted.
    pub async fn dependents(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        let services = self.inner.services.read().await;
        if !services.contains_key(name) {
            return Err(not_found(name));
        }
        Ok(dependents_of(&services, name))
    }

    /// Records a health check's outcome as the service's last health result. Publishes
    /// [`RegistryEvent::HealthCheckResult`].
    pub async fn record_health(
        &self,
        name: &str,
        result: HealthResult,
    ) -> Result<(), RegistryError> {
        let mut services = self.inner.services.write().await;
        let entry = services.get_mut(name).ok_or_else(|| not_found(name))?;
        entry.health = Some(result.clone());
        entry.timestamps.updated_at = Timestamp::now();
        self.publish_change([RegistryEvent::HealthCheckResult {
            service: name.to_owned(),
            healthy: result.healthy,
            detail: result.detail,
            latency_ms: result.latency_ms,
        }]);
        Ok(())
    }

    /// Publishes a deployment's progress ([`RegistryEvent::DeploymentProgress`]); returns its
    /// sequence number. The service need not be registered yet: a deployment comes first.
    /// A percentage above 100 is published as 100.
    pub fn publish_progress(&self, mut progress: DeploymentProgress) -> u64 {
        progress.percent = progress.percent.min(100);
        self.inner
            .bus
            .publish(RegistryEvent::DeploymentProgress(progress))
    }

    /// A subscription to every event from now on, with a queue of
    /// [`DEFAULT_CAPACITY`](crate::registry::DEFAULT_CAPACITY) events.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with(EventFilter::all(), DEFAULT_CAPACITY)
    }

    /// A subscription to the events from now on that pass `filter`, whose queue holds
    /// `capacity` events (at least one) before the oldest are dropped and reported as missed.
    pub fn subscribe_with(&self, filter: EventFilter, capacity: usize) -> Subscription {
        self.inner.bus.subscribe(filter, capacity)
    }

    /// Every service and a subscription taken at the same moment: the subscription receives
    /// exactly the changes made after the list was read. A client that shows the registry
    /// live starts from this.
    pub async fn watch(
        &self,
        filter: EventFilter,
        capacity: usize,
    ) -> (Vec<ServiceEntry>, Subscription) {
        // Changes publish their events while holding the write lock, so none can slip in
        // between reading the list and subscribing.
        let services = self.inner.services.read().await;
        let subscription = self.inner.bus.subscribe(filter, capacity);
        (services.values().cloned().collect(), subscription)
    }

    /// How many subscriptions are alive.
    pub fn subscriber_count(&self) -> usize {
        self.inner.bus.subscriber_count()
    }

    /// The sequence number of the last event published (0 if none ever was).
    pub fn last_sequence(&self) -> u64 {
        self.inner.bus.last_sequence()
    }

    /// Every service, the sequence number of the last event and the change count, read at
    /// one moment.
    pub(crate) async fn read_state(&self) -> (Services, u64, u64) {
        let services = self.inner.services.read().await;
        (
            services.clone(),
            self.inner.bus.last_sequence(),
            self.generation(),
        )
    }

    /// How many changes the registry has seen.
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Records a change and publishes its events. Called while holding the write lock.
    fn publish_change(&self, events: impl IntoIterator<Item = RegistryEvent>) {
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        for event in events {
            self.inner.bus.publish(event);
        }
        self.inner.changed.notify(usize::MAX);
    }
}

fn not_found(name: &str) -> RegistryError {
    RegistryError::NotFound {
        service: name.to_owned(),
    }
}

fn unknown_endpoint(name: &str, endpoint: &str) -> RegistryError {
    RegistryError::UnknownEndpoint {
        service: name.to_owned(),
        endpoint: endpoint.to_owned(),
    }
}

fn check_transition(
    name: &str,
    from: &ServiceState,
    to: &ServiceState,
) -> Result<(), RegistryError> {
    if from.can_transition_to(to) {
        Ok(())
    } else {
        Err(RegistryError::InvalidTransition {
            service: name.to_owned(),
            from: from.clone(),
            to: to.clone(),
        })
    }
}

/// Bookkeeping for a state change already made on `entry`: the start time on entering
/// `Running`, a restart on entering `Starting` from a stop or a failure.
fn note_transition(entry: &mut ServiceEntry, from: StateKind) {
    match entry.state {
        ServiceState::Running => entry.timestamps.started_at = Some(Timestamp::now()),
        ServiceState::Starting if matches!(from, StateKind::Stopped | StateKind::Failed) => {
            entry.restarts = entry.restarts.saturating_add(1);
        }
        _ => {}
    }
}

/// Every dependency of `entry` is registered (and is not `entry` itself).
fn check_dependencies(services: &Services, entry: &ServiceEntry) -> Result<(), RegistryError> {
    match entry
        .dependencies
        .iter()
        .find(|d| **d == entry.name || !services.contains_key(*d))
    {
        Some(dependency) if *dependency == entry.name => Err(RegistryError::DependencyCycle {
            service: entry.name.clone(),
            cycle: vec![entry.name.clone(), entry.name.clone()],
        }),
        Some(dependency) => Err(RegistryError::UnknownDependency {
            service: entry.name.clone(),
            dependency: dependency.clone(),
        }),
        None => Ok(()),
    }
}

/// A path from `entry` through its (new) dependencies back to itself, if there is one.
fn find_cycle(services: &Services, entry: &ServiceEntry) -> Option<Vec<String>> {
    // Depth-first; `seen` holds services already explored without reaching `target`, which
    // keeps the walk linear in the size of the graph.
    fn walk(
        services: &Services,
        target: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let Some(deps) = services.get(at).map(|e| &e.dependencies) else {
            return false;
        };
        for dep in deps {
            if dep == target {
                path.push(dep.clone());
                return true;
            }
            if !seen.insert(dep.clone()) {
                continue;
            }
            path.push(dep.clone());
            if walk(services, target, dep, path, seen) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut seen = BTreeSet::new();
    for dep in &entry.dependencies {
        let mut path = vec![entry.name.clone(), dep.clone()];
        if *dep == entry.name
            || (seen.insert(dep.clone()) && walk(services, &entry.name, dep, &mut path, &mut seen))
        {
            return Some(path);
        }
    }
    None
}

/// The services whose dependencies name `name`, sorted.
fn dependents_of(services: &Services, name: &str) -> Vec<String> {
    services
        .values()
        .filter(|e| e.dependencies.iter().any(|d| d == name))
        .map(|e| e.name.clone())
        .collect()
}

/// Checks a whole set of entries, as loaded from a file: names match their keys and are not
/// empty, dependencies are present and acyclic.
pub(crate) fn check_all(services: &Services) -> Result<(), RegistryError> {
    for (name, entry) in services {
        if name.is_empty() {
            return Err(RegistryError::EmptyName);
        }
        check_dependencies(services, entry)?;
        if let Some(cycle) = find_cycle(services, entry) {
            return Err(RegistryError::DependencyCycle {
                service: name.clone(),
                cycle,
            });
        }
    }
    Ok(())
}

/// The events that describe the change from `old` to `new`.
fn diff_events(old: &ServiceEntry, new: &ServiceEntry) -> Vec<RegistryEvent> {
    let mut events = Vec::new();
    if old.state != new.state {
        events.push(RegistryEvent::ServiceStateChanged {
            service: new.name.clone(),
            from: old.state.clone(),
            to: new.state.clone(),
        });
    }
    for endpoint in &new.endpoints {
        if old.endpoint(&endpoint.name) != Some(endpoint) {
            events.push(RegistryEvent::EndpointUpdated {
                service: new.name.clone(),
                endpoint: endpoint.clone(),
            });
        }
    }
    for endpoint in &old.endpoints {
        if new.endpoint(&endpoint.name).is_none() {
            events.push(RegistryEvent::EndpointRemoved {
                service: new.name.clone(),
                endpoint: endpoint.name.clone(),
            });
        }
    }
    // Anything beyond the state (with its bookkeeping), the endpoints and the update time.
    fn rest(e: &ServiceEntry) -> impl PartialEq + '_ {
        (
            &e.location,
            &e.execution,
            &e.dependencies,
            &e.health,
            e.timestamps.created_at,
            &e.metadata,
        )
    }
    if rest(old) != rest(new) || (old.restarts != new.restarts && old.state == new.state) {
        events.push(RegistryEvent::ServiceUpdated {
            entry: Box::new(new.clone()),
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::events::{EventKind, RecvError, TryRecvError};
    use crate::registry::model::{ExecutionInfo, ExecutionKind};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn drain(sub: &mut Subscription) -> Vec<RegistryEvent> {
        std::iter::from_fn(|| sub.try_recv().ok())
            .map(|e| e.event.clone())
            .collect()
    }

    #[test]
    fn crud_round_trip() {
        smol::block_on(async {
            let reg = Registry::new();
            assert!(reg.is_empty().await);
            reg.register(ServiceEntry::local_process("b"))
                .await
                .unwrap();
            reg.register(ServiceEntry::local_process("a"))
                .await
                .unwrap();
            assert_eq!(reg.len().await, 2);
            let names: Vec<String> = reg.list().await.into_iter().map(|e| e.name).collect();
            assert_eq!(names, ["a", "b"]);
            assert_eq!(reg.get("a").await.unwrap().state, ServiceState::Pending);

            let updated = reg
                .update("a", |e| {
                    e.metadata.insert("k".into(), "v".into());
                })
                .await
                .unwrap();
            assert_eq!(updated.metadata["k"], "v");
            assert_eq!(reg.get("a").await.unwrap(), updated);

            let removed = reg.remove("a").await.unwrap();
            assert_eq!(removed, updated);
            assert!(!reg.contains("a").await);
            assert_eq!(
                reg.get("a").await,
                Err(RegistryError::NotFound {
                    service: "a".into()
                })
            );
            assert_eq!(
                reg.remove("a").await,
                Err(RegistryError::NotFound {
                    service: "a".into()
                })
            );
        });
    }

    #[test]
    fn duplicate_and_empty_names_are_refused() {
        smol::block_on(async {
            let reg = Registry::new();
            reg.register(ServiceEntry::local_process("a"))
                .await
                .unwrap();
            let err = reg
                .register(ServiceEntry::local_process("a"))
                .await
                .unwrap_err();
            assert_eq!(
                err,
                RegistryError::AlreadyRegistered {
                    service: "a".into()
                }
            );
            assert_eq!(
                err.to_string(),
                "register service `a`: a service of that name is already registered"
            );
            assert_eq!(
                reg.register(ServiceEntry::local_process("")).await,
                Err(RegistryError::EmptyName)
            );
        });
    }

    #[test]
    fn dependencies_must_exist_and_dependents_block_removal() {
        smol::block_on(async {
            let reg = Registry::new();
            let api = ServiceEntry::local_process("api").with_dependency("db");
            assert_eq!(
                reg.register(api.clone()).await,
                Err(RegistryError::UnknownDependency {
                    service: "api".into(),
                    dependency: "db".into()
                })
            );
            assert!(
                reg.is_empty().await,
                "a refused registration leaves nothing behind"
            );
            reg.register(ServiceEntry::local_process("db"))
                .await
                .unwrap();
            reg.register(api).await.unwrap();
            reg.register(ServiceEntry::local_process("web").with_dependency("api"))
                .await
                .unwrap();
            assert_eq!(reg.dependents("db").await.unwrap(), ["api"]);
            assert_eq!(reg.dependents("api").await.unwrap(), ["web"]);
            assert!(reg.dependents("web").await.unwrap().is_empty());

            let err = reg.remove("db").await.unwrap_err();
            assert_eq!(
                err,
                RegistryError::HasDependents {
                    service: "db".into(),
                    dependents: vec!["api".into()]
                }
            );
            assert_eq!(
                err.to_string(),
                "remove service `db`: `api` still depend on it"
            );
            reg.remove("web").await.unwrap();
            reg.remove("api").await.unwrap();
            reg.remove("db").await.unwrap();
        });
    }

    #[test]
    fn updates_cannot_make_cycles_unknown_dependencies_or_renames() {
        smol::block_on(async {
            let reg = Registry::new();
            reg.register(ServiceEntry::local_process("a"))
                .await
                .unwrap();
            reg.register(ServiceEntry::local_process("b").with_dependency("a"))
                .await
                .unwrap();
            reg.register(ServiceEntry::local_process("c").with_dependency("b"))
                .await
                .unwrap();
            let err = reg
                .update("a", |e| e.dependencies.push("c".into()))
                .await
                .unwrap_err();
            assert_eq!(
                err,
                RegistryError::DependencyCycle {
                    service: "a".into(),
                    cycle: vec!["a".into(), "c".into(), "b".into(), "a".into()]
                }
            );
            let err = reg
                .update("a", |e| e.dependencies.push("a".into()))
                .await
                .unwrap_err();
            assert!(
                matches!(err, RegistryError::DependencyCycle { .. }),
                "{err}"
            );
            let err = reg
                .update("a", |e| e.dependencies.push("zz".into()))
                .await
                .unwrap_err();
            assert!(
                matches!(err, RegistryError::UnknownDependency { .. }),
                "{err}"
            );
            let err = reg.update("a", |e| e.name = "z".into()).await.unwrap_err();
            assert!(matches!(err, RegistryError::Renamed { .. }), "{err}");
            assert!(reg.get("a").await.unwrap().dependencies.is_empty());
        });
    }

    #[test]
    fn set_state_enforces_the_transition_table() {
        smol::block_on(async {
            let reg = Registry::new();
            reg.register(ServiceEntry::local_process("s"))
                .await
                .unwrap();
            let err = reg.set_state("s", ServiceState::Running).await.unwrap_err();
            assert_eq!(
                err,
                RegistryError::InvalidTransition {
                    service: "s".into(),
                    from: ServiceState::Pending,
                    to: ServiceState::Running
                }
            );
            assert_eq!(
                err.to_string(),
                "move service `s` from pending to running: not an allowed transition"
            );
            for (to, from) in [
                (ServiceState::Starting, ServiceState::Pending),
                (ServiceState::Running, ServiceState::Starting),
                (ServiceState::failed("crashed"), ServiceState::Running),
                (ServiceState::Starting, ServiceState::failed("crashed")),
                (ServiceState::Running, ServiceState::Starting),
                (ServiceState::Stopping, ServiceState::Running),
                (ServiceState::Stopped, ServiceState::Stopping),
            ] {
                assert_eq!(reg.set_state("s", to).await.unwrap(), from);
            }
            let entry = reg.get("s").await.unwrap();
            assert_eq!(entry.state, ServiceState::Stopped);
            assert_eq!(entry.restarts, 1);
            assert!(entry.timestamps.started_at.is_some());
            // The same rule holds through `update`.
            let err = reg
                .update("s", |e| e.state = ServiceState::Running)
                .await
                .unwrap_err();
            assert!(
                matches!(err, RegistryError::InvalidTransition { .. }),
                "{err}"
            );
        });
    }

    #[test]
    fn every_change_publishes_the_matching_events() {
        smol::block_on(async {
            let reg = Registry::new();
            let mut sub = reg.subscribe();
            let main = Endpoint::new("main", addr("127.0.0.1:1"));
            reg.register(ServiceEntry::local_process("s"))
                .await
                .unwrap();
            reg.set_state("s", ServiceState::Starting).await.unwrap();
            reg.set_endpoint("s", main.clone()).await.unwrap();
            // Setting the same endpoint again is no change, and publishes nothing.
            reg.set_endpoint("s", main.clone()).await.unwrap();
            reg.record_health(
                "s",
                HealthResult::new(true, "connected", Default::default()),
            )
            .await
            .unwrap();
            reg.update("s", |e| {
                e.state = ServiceState::Running;
                e.execution.pid = Some(42);
                e.endpoints.clear();
            })
            .await
            .unwrap();
            // An update that changes nothing publishes nothing.
            reg.update("s", |_| {}).await.unwrap();
            reg.publish_progress(DeploymentProgress {
                service: "s".into(),
                host: "h".into(),
                stage: "upload".into(),
                percent: 250,
                message: "sending".into(),
            });
            reg.remove("s").await.unwrap();

            let kinds: Vec<EventKind> = drain(&mut sub).iter().map(RegistryEvent::kind).collect();
            assert_eq!(
                kinds,
                [
                    EventKind::ServiceRegistered,
                    EventKind::ServiceStateChanged,
                    EventKind::EndpointUpdated,
                    EventKind::HealthCheckResult,
                    EventKind::ServiceStateChanged,
                    EventKind::EndpointRemoved,
                    EventKind::ServiceUpdated,
                    EventKind::DeploymentProgress,
                    EventKind::ServiceRemoved,
                ]
            );
            assert_eq!(reg.last_sequence(), 9);
        });
    }

    #[test]
    fn event_payloads_carry_the_change() {
        smol::block_on(async {
            let reg = Registry::new();
            reg.register(ServiceEntry::local_process("s"))
                .await
                .unwrap();
            let mut sub = reg.subscribe();
            reg.set_state("s", ServiceState::Starting).await.unwrap();
            reg.publish_progress(DeploymentProgress {
                service: "s".into(),
                host: "h".into(),
                stage: "upload".into(),
                percent: 250,
                message: "sending".into(),
            });
            let events = drain(&mut sub);
            assert_eq!(
                events[0],
                RegistryEvent::ServiceStateChanged {
                    service: "s".into(),
                    from: ServiceState::Pending,
                    to: ServiceState::Starting
                }
            );
            let RegistryEvent::DeploymentProgress(p) = &events[1] else {
                panic!("{:?}", events[1]);
            };
            assert_eq!(p.percent, 100);
        });
    }

    #[test]
    fn refused_changes_publish_nothing() {
        smol::block_on(async {
            let reg = Registry::new();
            reg.register(ServiceEntry::local_process("s"))
                .await
                .unwrap();
            let mut sub = reg.subscribe();
            reg.set_state("s", ServiceState::Stopping)
                .await
                .unwrap_err();
            reg.register(ServiceEntry::local_process("s"))
                .await
                .unwrap_err();
            reg.update("s", |e| e.dependencies.push("nope".into()))
                .await
                .unwrap_err();
            assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
        });
    }

    #[test]
    fn resolve_picks_the_address_for_where_the_caller_is() {
        smol::block_on(async {
            let reg = Registry::new();
            let pg = ServiceEntry::new(
                "postgres",
                Location::Lan {
                    host: "192.168.1.50".into(),
                },
                ExecutionInfo::new(ExecutionKind::RemoteLan),
            )
            .with_endpoint(
                Endpoint::new("main", addr("127.0.0.1:15432"))
                    .with_lan_addr(addr("192.168.1.50:5432"))
                    .with_wireguard_addr(addr("10.42.0.50:5432")),
            );
            reg.register(pg).await.unwrap();
            let on_lan = Location::Lan {
                host: "192.168.1.51".into(),
            };
            let on_mesh = Location::WireGuard {
                host: "aws".into(),
                mesh_ip: "10.42.0.10".parse().unwrap(),
            };
            assert_eq!(
                reg.resolve("postgres", "main").await,
                Ok(addr("127.0.0.1:15432"))
            );
            assert_eq!(
                reg.resolve_from("postgres", "main", &on_lan).await,
                Ok(addr("192.168.1.50:5432"))
            );
            assert_eq!(
                reg.resolve_from("postgres", "main", &on_mesh).await,
                Ok(addr("10.42.0.50:5432"))
            );
            assert_eq!(
                reg.resolve_from("postgres", "main", &Location::Local).await,
                Ok(addr("192.168.1.50:5432"))
            );
            assert_eq!(
                reg.resolve("postgres", "admin").await,
                Err(RegistryError::UnknownEndpoint {
                    service: "postgres".into(),
                    endpoint: "admin".into()
                })
            );

            reg.register(
                ServiceEntry::local_process("cache")
                    .with_endpoint(Endpoint::new("main", addr("127.0.0.1:6379"))),
            )
            .await
            .unwrap();
            assert_eq!(
                reg.resolve_from("cache", "main", &Location::Local).await,
                Ok(addr("127.0.0.1:6379"))
            );
            let err = reg
                .resolve_from("cache", "main", &on_mesh)
                .await
                .unwrap_err();
            assert!(matches!(
                err,
                RegistryError::NoAddress {
                    network: crate::registry::Network::WireGuard,
                    ..
                }
            ));
            assert!(err.to_string().contains("no WireGuard address"), "{err}");
        });
    }

    #[test]
    fn watch_returns_the_list_and_only_later_changes() {
        smol::block_on(async {
            let reg = Registry::new();
            reg.register(ServiceEntry::local_process("a"))
                .await
                .unwrap();
            let (list, mut sub) = reg.watch(EventFilter::all(), 8).await;
            assert_eq!(list.len(), 1);
            reg.register(ServiceEntry::local_process("b"))
                .await
                .unwrap();
            let e = sub.try_recv().unwrap();
            assert_eq!(e.event.service(), "b");
            assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
        });
    }

    #[test]
    fn subscriptions_close_when_the_last_handle_is_dropped() {
        smol::block_on(async {
            let reg = Registry::new();
            let mut sub = reg.subscribe();
            let clone = reg.clone();
            drop(reg);
            clone
                .register(ServiceEntry::local_process("a"))
                .await
                .unwrap();
            assert_eq!(reg_count(&clone), 1);
            drop(clone);
            assert!(sub.recv().await.is_ok());
            assert_eq!(sub.recv().await, Err(RecvError::Closed));
        });

        fn reg_count(reg: &Registry) -> usize {
            reg.subscriber_count()
        }
    }
}
