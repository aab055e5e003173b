//! What happens in a registry, and how subscribers hear about it: every event is numbered and
//! stamped, and each subscriber has its own bounded queue so that a slow one never holds up the
//! registry or anyone else.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use event_listener::{Event as Notify, EventListener};
use futures_lite::Stream;
use serde::{Deserialize, Serialize};

use crate::registry::model::{Endpoint, ServiceEntry, ServiceState, Timestamp};

/// How many events a subscriber's queue holds by default before the oldest are dropped.
pub const DEFAULT_CAPACITY: usize = 1024;

/// What happened. In JSON the variant is the `type` field, in snake case
/// (`"service_state_changed"`), beside the variant's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RegistryEvent {
    /// A service was added.
    ServiceRegistered {
        /// The service as registered.
        entry: Box<ServiceEntry>,
    },
    /// A service's entry changed in a way not covered by a more specific event (its execution
    /// info, location, dependencies, metadata or restart count).
    ServiceUpdated {
        /// The service as it is now.
        entry: Box<ServiceEntry>,
    },
    /// A service was removed.
    ServiceRemoved {
        /// Its name.
        service: String,
    },
    /// A service moved from one state to another.
    ServiceStateChanged {
        /// Its name.
        service: String,
        /// The state it left.
        from: ServiceState,
        /// The state it entered.
        to: ServiceState,
    },
    /// An endpoint of a service was added or changed.
    EndpointUpdated {
        /// Its name.
        service: String,
        /// The endpoint as it is now.
        endpoint: Endpoint,
    },
    /// An endpoint of a service was removed.
    EndpointRemoved {
        /// Its name.
        service: String,
        /// The endpoint's name.
        endpoint: String,
    },
    /// A deployment made progress.
    DeploymentProgress(DeploymentProgress),
    /// A health check finished.
    HealthCheckResult {
        /// The service checked.
        service: String,
        /// Whether it answered as expected.
        healthy: bool,
        /// What the check saw.
        detail: String,
        /// How long the check took, in milliseconds.
        latency_ms: u64,
    },
}

/// How far a deployment of a service to a host has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentProgress {
    /// The service being deployed.
    pub service: String,
    /// The host it is deployed to.
    pub host: String,
    /// The step under way, named by the deployer ("upload", "extract", "start").
    pub stage: String,
    /// How much of the whole deployment is done, from 0 to 100.
    pub percent: u8,
    /// A line for people.
    pub message: String,
}

/// The kind of a [`RegistryEvent`], for filters. Its string form is the event's JSON `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// [`RegistryEvent::ServiceRegistered`].
    ServiceRegistered,
    /// [`RegistryEvent::ServiceUpdated`].
    ServiceUpdated,
    /// [`RegistryEvent::ServiceRemoved`].
    ServiceRemoved,
    /// [`RegistryEvent::ServiceStateChanged`].
    ServiceStateChanged,
    /// [`RegistryEvent::EndpointUpdated`].
    EndpointUpdated,
    /// [`RegistryEvent::EndpointRemoved`].
    EndpointRemoved,
    /// [`RegistryEvent::DeploymentProgress`].
    DeploymentProgress,
    /// [`RegistryEvent::HealthCheckResult`].
    HealthCheckResult,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 8] = [
        EventKind::ServiceRegistered,
        EventKind::ServiceUpdated,
        EventKind::ServiceRemoved,
        EventKind::ServiceStateChanged,
        EventKind::EndpointUpdated,
        EventKind::EndpointRemoved,
        EventKind::DeploymentProgress,
        EventKind::HealthCheckResult,
    ];

    /// The JSON name: `"service_state_changed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ServiceRegistered => "service_registered",
            EventKind::ServiceUpdated => "service_updated",
            EventKind::ServiceRemoved => "service_removed",
            EventKind::ServiceStateChanged => "service_state_changed",
            EventKind::EndpointUpdated => "endpoint_updated",
            EventKind::EndpointRemoved => "endpoint_removed",
            EventKind::DeploymentProgress => "deployment_progress",
            EventKind::HealthCheckResult => "health_check_result",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`EventKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse event type `{0}`: not one of {list}", list = kind_list())]
pub struct UnknownEventKind(pub String);

fn kind_list() -> String {
    EventKind::ALL.map(EventKind::as_str).join(", ")
}

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

impl RegistryEvent {
    /// Its kind.
    pub fn kind(&self) -> EventKind {
        match self {
            RegistryEvent::ServiceRegistered { .. } => EventKind::ServiceRegistered,
            RegistryEvent::ServiceUpdated { .. } => EventKind::ServiceUpdated,
            RegistryEvent::ServiceRemoved { .. } => EventKind::ServiceRemoved,
            RegistryEvent::ServiceStateChanged { .. } => EventKind::ServiceStateChanged,
            RegistryEvent::EndpointUpdated { .. } => EventKind::EndpointUpdated,
            RegistryEvent::EndpointRemoved { .. } => EventKind::EndpointRemoved,
            RegistryEvent::DeploymentProgress(_) => EventKind::DeploymentProgress,
            RegistryEvent::HealthCheckResult { .. } => EventKind::HealthCheckResult,
        }
    }

    /// The service it is about.
    pub fn service(&self) -> &str {
        match self {
            RegistryEvent::ServiceRegistered { entry }
            | RegistryEvent::ServiceUpdated { entry } => &entry.name,
            RegistryEvent::ServiceRemoved { service }
            | RegistryEvent::ServiceStateChanged { service, .. }
            | RegistryEvent::EndpointUpdated { service, .. }
            | RegistryEvent::EndpointRemoved { service, .. }
            | RegistryEvent::HealthCheckResult { service, .. } => service,
            RegistryEvent::DeploymentProgress(p) => &p.service,
        }
    }
}

/// A [`RegistryEvent`] as published: numbered and stamped.
///
/// Sequence numbers increase by one with every event the registry publishes, in the order the
/// changes were made, so events about one service arrive in the order they happened. A gap
/// seen by a subscriber means events it filtered out or missed (see [`RecvError::Lagged`]).
/// In JSON the event's own fields sit beside `sequence` and `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its place in the registry's history, starting at 1.
    pub sequence: u64,
    /// When it was published.
    pub timestamp: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub event: RegistryEvent,
}

/// Which events a subscriber wants. The default wants everything; each set that is given
/// narrows it, and an event must pass both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only events about these services, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<BTreeSet<String>>,
    /// Only events of these kinds, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<BTreeSet<EventKind>>,
}

impl EventFilter {
    /// A filter that lets everything through.
    pub fn all() -> Self {
        EventFilter::default()
    }

    /// Narrows the filter to events about these services.
    pub fn services<I, S>(mut self, services: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.services = Some(services.into_iter().map(Into::into).collect());
        self
    }

    /// Narrows the filter to events of these kinds.
    pub fn kinds(mut self, kinds: impl IntoIterator<Item = EventKind>) -> Self {
        self.kinds = Some(kinds.into_iter().collect());
        self
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &RegistryEvent) -> bool {
        self.services
            .as_ref()
            .is_none_or(|s| s.contains(event.service()))
            && self
                .kinds
                .as_ref()
                .is_none_or(|k| k.contains(&event.kind()))
    }
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The subscriber fell behind: its queue overflowed and this many of its oldest events were
    /// dropped. It may keep receiving; the next events are the ones that were kept.
    #[error("receive registry events: fell behind and missed {0} events")]
    Lagged(u64),
    /// The registry is gone and every event it sent has been received.
    #[error("receive registry events: the registry is gone")]
    Closed,
}

/// Why [`Subscription::try_recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No event is waiting.
    #[error("receive registry events: none waiting")]
    Empty,
    /// As [`RecvError::Lagged`].
    #[error("receive registry events: fell behind and missed {0} events")]
    Lagged(u64),
    /// As [`RecvError::Closed`].
    #[error("receive registry events: the registry is gone")]
    Closed,
}

/// One subscriber's queue, shared by the bus (which pushes) and the [`Subscription`] (which
/// pops).
#[derive(Debug)]
struct Queue {
    inner: Mutex<QueueInner>,
    /// Wakes the subscriber when an event arrives or the bus closes.
    ready: Notify,
}

#[derive(Debug)]
struct QueueInner {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Events dropped since the subscriber last heard it was lagging.
    missed: u64,
    filter: EventFilter,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueInner> {
        // A panic while holding this lock leaves the queue consistent (every step is a single
        // push or pop), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The publishing side: numbers events and hands them to every live subscriber.
#[derive(Debug)]
pub(crate) struct Bus {
    inner: Mutex<BusInner>,
}

#[derive(Debug)]
struct BusInner {
    /// The sequence number of the last event published.
    last_sequence: u64,
    subscribers: Vec<Weak<Queue>>,
}

impl Bus {
    /// A bus whose next event is numbered `last_sequence + 1`.
    pub(crate) fn new(last_sequence: u64) -> Self {
        Bus {
            inner: Mutex::new(BusInner {
                last_sequence,
                subscribers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BusInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sequence number of the last event published.
    pub(crate) fn last_sequence(&self) -> u64 {
        self.lock().last_sequence
    }

    /// Numbers `event` and queues it for every subscriber whose filter it passes. Never waits
    /// for a subscriber: a full queue drops its oldest event and counts it as missed.
    pub(crate) fn publish(&self, event: RegistryEvent) -> u64 {
        let mut bus = self.lock();
        bus.last_sequence += 1;
        let sequence = bus.last_sequence;
        let event = Arc::new(Event {
            sequence,
            timestamp: Timestamp::now(),
            event,
        });
        bus.subscribers.retain(|weak| {
            let Some(queue) = weak.upgrade() else {
                return false;
            };
            let mut q = queue.lock();
            if q.filter.matches(&event.event) {
                if q.events.len() >= q.capacity {
                    q.events.pop_front();
                    q.missed += 1;
                }
                q.events.push_back(Arc::clone(&event));
                drop(q);
                queue.ready.notify(1);
            }
            true
        });
        sequence
    }

    /// A new subscriber that will see every event published from now on that passes `filter`.
    pub(crate) fn subscribe(&self, filter: EventFilter, capacity: usize) -> Subscription {
        let queue = Arc::new(Queue {
            inner: Mutex::new(QueueInner {
                events: VecDeque::new(),
                capacity: capacity.max(1),
                missed: 0,
                filter,
                closed: false,
            }),
            ready: Notify::new(),
        });
        self.lock().subscribers.push(Arc::downgrade(&queue));
        Subscription {
            queue,
            listener: None,
        }
    }

    /// How many subscribers are alive.
    pub(crate) fn subscriber_count(&self) -> usize {
        let mut bus = self.lock();
        bus.subscribers.retain(|w| w.strong_count() > 0);
        bus.subscribers.len()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        for queue in self.lock().subscribers.iter().filter_map(Weak::upgrade) {
            queue.lock().closed = true;
            queue.ready.notify(usize::MAX);
        }
    }
}

/// A subscriber's end: events published after it was made, that pass its filter, in order.
///
/// Its queue is bounded (see [`Registry::subscribe_with`](crate::registry::Registry::subscribe_with)).
/// When the subscriber falls behind, the oldest events are dropped and the next call to
/// [`recv`](Subscription::recv) says how many with [`RecvError::Lagged`]; after that it goes on
/// with the events that were kept. As a [`Stream`] it yields `Ok(event)` or `Err(missed)` and
/// ends when the registry is gone. Dropping it unsubscribes.
#[derive(Debug)]
#[must_use = "a subscription receives nothing unless it is read"]
pub struct Subscription {
    queue: Arc<Queue>,
    listener: Option<EventListener>,
}

impl Subscription {
    /// The next event; waits until there is one.
    pub async fn recv(&mut self) -> Result<Arc<Event>, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<Arc<Event>, TryRecvError> {
        match self.take() {
            Some(Ok(event)) => Ok(event),
            Some(Err(RecvError::Lagged(n))) => Err(TryRecvError::Lagged(n)),
            Some(Err(RecvError::Closed)) => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Replaces the filter. Events already queued stay queued.
    pub fn set_filter(&self, filter: EventFilter) {
        self.queue.lock().filter = filter;
    }

    /// The current filter.
    pub fn current_filter(&self) -> EventFilter {
        self.queue.lock().filter.clone()
    }

    /// How many events are waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().events.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An event, a lag report, the end, or `None` when there is nothing yet.
    fn take(&mut self) -> Option<Result<Arc<Event>, RecvError>> {
        let mut q = self.queue.lock();
        if q.missed > 0 {
            let missed = std::mem::take(&mut q.missed);
            return Some(Err(RecvError::Lagged(missed)));
        }
        if let Some(event) = q.events.pop_front() {
            return Some(Ok(event));
        }
        q.closed.then_some(Err(RecvError::Closed))
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<Event>, RecvError>> {
        loop {
            if let Some(result) = self.take() {
                self.listener = None;
                return Poll::Ready(result);
            }
            match &mut self.listener {
                // Listen first, then look again, so an event pushed in between is not missed.
                None => self.listener = Some(self.queue.ready.listen()),
                Some(listener) => {
                    std::task::ready!(Pin::new(listener).poll(cx));
                    self.listener = None;
                }
            }
        }
    }
}

impl Stream for Subscription {
    type Item = Result<Arc<Event>, u64>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match std::task::ready!(self.poll_recv(cx)) {
            Ok(event) => Poll::Ready(Some(Ok(event))),
            Err(RecvError::Lagged(n)) => Poll::Ready(Some(Err(n))),
            Err(RecvError::Closed) => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::StreamExt;

    fn removed(service: &str) -> RegistryEvent {
        RegistryEvent::ServiceRemoved {
            service: service.into(),
        }
    }

    fn progress(service: &str, percent: u8) -> RegistryEvent {
        RegistryEvent::DeploymentProgress(DeploymentProgress {
            service: service.into(),
            host: "h".into(),
            stage: "upload".into(),
            percent,
            message: String::new(),
        })
    }

    #[test]
    fn events_arrive_in_order_with_increasing_sequence_numbers() {
        let bus = Bus::new(0);
        let mut sub = bus.subscribe(EventFilter::all(), 16);
        for i in 0..10 {
            bus.publish(progress("a", i));
        }
        let got: Vec<(u64, u8)> = (0..10)
            .map(|_| {
                let e = sub.try_recv().unwrap();
                match &e.event {
                    RegistryEvent::DeploymentProgress(p) => (e.sequence, p.percent),
                    other => panic!("unexpected {other:?}"),
                }
            })
            .collect();
        assert_eq!(
            got,
            (0..10).map(|i| (u64::from(i) + 1, i)).collect::<Vec<_>>()
        );
        assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_subscriber_sees_only_events_published_after_it_subscribed() {
        let bus = Bus::new(41);
        bus.publish(removed("before"));
        let mut sub = bus.subscribe(EventFilter::all(), 4);
        bus.publish(removed("after"));
        let e = sub.try_recv().unwrap();
        assert_eq!((e.sequence, e.event.service()), (43, "after"));
        assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn filters_by_service_and_kind() {
        let bus = Bus::new(0);
        let mut by_service = bus.subscribe(EventFilter::all().services(["a"]), 16);
        let mut by_kind = bus.subscribe(EventFilter::all().kinds([EventKind::ServiceRemoved]), 16);
        let mut both = bus.subscribe(
            EventFilter::all()
                .services(["b"])
                .kinds([EventKind::DeploymentProgress]),
            16,
        );
        bus.publish(removed("a"));
        bus.publish(progress("a", 1));
        bus.publish(removed("b"));
        bus.publish(progress("b", 2));
        let drain = |sub: &mut Subscription| {
            std::iter::from_fn(|| sub.try_recv().ok())
                .map(|e| e.sequence)
                .collect::<Vec<_>>()
        };
        assert_eq!(drain(&mut by_service), [1, 2]);
        assert_eq!(drain(&mut by_kind), [1, 3]);
        assert_eq!(drain(&mut both), [4]);
    }

    #[test]
    fn changing_the_filter_applies_to_later_events() {
        let bus = Bus::new(0);
        let mut sub = bus.subscribe(EventFilter::all().services(["a"]), 16);
        bus.publish(removed("b"));
        sub.set_filter(EventFilter::all().services(["b"]));
        assert_eq!(sub.current_filter(), EventFilter::all().services(["b"]));
        bus.publish(removed("b"));
        assert_eq!(sub.try_recv().unwrap().sequence, 2);
        assert!(sub.is_empty());
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_reports_how_many_were_missed() {
        let bus = Bus::new(0);
        let mut slow = bus.subscribe(EventFilter::all(), 3);
        let mut fast = bus.subscribe(EventFilter::all(), 100);
        for i in 0..10 {
            bus.publish(progress("a", i));
        }
        assert_eq!(slow.len(), 3);
        assert_eq!(slow.try_recv(), Err(TryRecvError::Lagged(7)));
        let kept: Vec<u64> = std::iter::from_fn(|| slow.try_recv().ok())
            .map(|e| e.sequence)
            .collect();
        assert_eq!(kept, [8, 9, 10]);
        // The slow subscriber cost the fast one nothing.
        assert_eq!(fast.len(), 10);
        assert_eq!(fast.try_recv().unwrap().sequence, 1);
        // After the report, a lagging subscriber goes on normally.
        bus.publish(removed("a"));
        assert_eq!(slow.try_recv().unwrap().sequence, 11);
    }

    #[test]
    fn filtered_out_events_do_not_fill_a_queue() {
        let bus = Bus::new(0);
        let mut sub = bus.subscribe(EventFilter::all().services(["quiet"]), 2);
        for i in 0..100 {
            bus.publish(progress("noisy", i));
        }
        bus.publish(removed("quiet"));
        assert_eq!(sub.try_recv().unwrap().sequence, 101);
    }

    #[test]
    fn recv_waits_for_an_event_and_ends_when_the_bus_is_gone() {
        let bus = Bus::new(0);
        let mut sub = bus.subscribe(EventFilter::all(), 4);
        let publisher = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            bus.publish(removed("a"));
            drop(bus);
        });
        smol::block_on(async {
            assert_eq!(sub.recv().await.unwrap().event.service(), "a");
            assert_eq!(sub.recv().await, Err(RecvError::Closed));
        });
        publisher.join().unwrap();
    }

    #[test]
    fn the_stream_yields_lag_reports_and_ends() {
        let bus = Bus::new(0);
        let sub = bus.subscribe(EventFilter::all(), 2);
        for i in 0..5 {
            bus.publish(progress("a", i));
        }
        drop(bus);
        let items: Vec<Result<u64, u64>> =
            smol::block_on(sub.map(|r| r.map(|e| e.sequence)).collect());
        assert_eq!(items, [Err(3), Ok(4), Ok(5)]);
    }

    #[test]
    fn dropped_subscribers_are_forgotten() {
        let bus = Bus::new(0);
        let a = bus.subscribe(EventFilter::all(), 1);
        let _b = bus.subscribe(EventFilter::all(), 1);
        assert_eq!(bus.subscriber_count(), 2);
        drop(a);
        bus.publish(removed("x"));
        assert_eq!(bus.subscriber_count(), 1);
    }

    #[test]
    fn event_json_puts_the_type_beside_sequence_and_timestamp() {
        let event = Event {
            sequence: 7,
            timestamp: Timestamp(1_700_000_000_000),
            event: RegistryEvent::ServiceStateChanged {
                service: "db".into(),
                from: ServiceState::Starting,
                to: ServiceState::Running,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "sequence": 7,
                "timestamp": 1_700_000_000_000u64,
                "type": "service_state_changed",
                "service": "db",
                "from": {"status": "starting"},
                "to": {"status": "running"},
            })
        );
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        let p = serde_json::to_value(progress("db", 50)).unwrap();
        assert_eq!(p["type"], "deployment_progress");
        assert_eq!(p["percent"], 50);
    }

    #[test]
    fn event_kinds_parse_from_their_json_names() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let err = "state".parse::<EventKind>().unwrap_err();
        assert!(err.to_string().contains("service_state_changed"), "{err}");
    }
}
