//! The registry under concurrent use: many tasks on a multi-threaded executor registering,
//! changing and removing services at once, with subscribers reading events as they go.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_lite::future;
use harness::registry::{
    Endpoint, EventFilter, EventKind, HealthResult, RecvError, Registry, RegistryError,
    RegistryEvent, ServiceEntry, ServiceState, TryRecvError,
};

const WORKERS: usize = 4;

/// Runs `tasks` to completion on an executor driven by `WORKERS` threads, and returns their
/// outputs in order.
fn run_parallel<T, F>(tasks: Vec<F>) -> Vec<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let ex = Arc::new(smol::Executor::new());
    let (stop, shutdown) = async_channel::bounded::<()>(1);
    let threads: Vec<_> = (0..WORKERS)
        .map(|_| {
            let ex = Arc::clone(&ex);
            let shutdown = shutdown.clone();
            std::thread::spawn(move || {
                smol::block_on(ex.run(async move {
                    let _ = shutdown.recv().await;
                }))
            })
        })
        .collect();
    let handles: Vec<_> = tasks.into_iter().map(|t| ex.spawn(t)).collect();
    let results = smol::block_on(async {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await);
        }
        out
    });
    drop(stop);
    for t in threads {
        t.join().unwrap();
    }
    results
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What one worker does to its own service, in order. Returns nothing: the registry and the
/// event stream are checked afterwards.
async fn lifecycle(reg: Registry, name: String, cycles: u16, port_base: u16) {
    reg.register(ServiceEntry::local_process(&name).with_dependency("base"))
        .await
        .unwrap();
    for cycle in 0..cycles {
        reg.set_state(&name, ServiceState::Starting).await.unwrap();
        reg.set_endpoint(&name, Endpoint::new("main", addr(port_base + cycle)))
            .await
            .unwrap();
        reg.set_state(&name, ServiceState::Running).await.unwrap();
        reg.record_health(&name, HealthResult::new(true, "ok", Default::default()))
            .await
            .unwrap();
        reg.update(&name, |e| {
            e.metadata.insert("cycle".into(), cycle.to_string());
        })
        .await
        .unwrap();
        // Readers interleave with writers.
        assert_eq!(
            reg.resolve(&name, "main").await.unwrap(),
            addr(port_base + cycle)
        );
        reg.set_state(&name, ServiceState::Stopping).await.unwrap();
        reg.set_state(&name, ServiceState::Stopped).await.unwrap();
    }
}

/// The events one worker's service must produce, in order, as (kind, state entered).
fn expected_script(cycles: u16) -> Vec<(EventKind, Option<ServiceState>)> {
    let mut script = vec![(EventKind::ServiceRegistered, None)];
    for _ in 0..cycles {
        script.extend([
            (EventKind::ServiceStateChanged, Some(ServiceState::Starting)),
            (EventKind::EndpointUpdated, None),
            (EventKind::ServiceStateChanged, Some(ServiceState::Running)),
            (EventKind::HealthCheckResult, None),
            (EventKind::ServiceUpdated, None),
            (EventKind::ServiceStateChanged, Some(ServiceState::Stopping)),
            (EventKind::ServiceStateChanged, Some(ServiceState::Stopped)),
        ]);
    }
    script
}

#[test]
fn concurrent_lifecycles_leave_a_consistent_registry_and_ordered_events() {
    const SERVICES: u16 = 48;
    const CYCLES: u16 = 12;
    let reg = Registry::new();
    // Subscribed before anything happens, with room for every event: nothing may be missed.
    let mut all = reg.subscribe_with(EventFilter::all(), 1_000_000);
    smol::block_on(reg.register(ServiceEntry::local_process("base"))).unwrap();

    let tasks: Vec<_> = (0..SERVICES)
        .map(|i| lifecycle(reg.clone(), format!("svc-{i:02}"), CYCLES, 20_000 + i * 100))
        .collect();
    run_parallel(tasks);

    // The final state, compared whole per service.
    let entries = smol::block_on(reg.list());
    assert_eq!(entries.len(), usize::from(SERVICES) + 1);
    for i in 0..SERVICES {
        let e = &entries[usize::from(i) + 1];
        assert_eq!(e.name, format!("svc-{i:02}"));
        assert_eq!(e.state, ServiceState::Stopped);
        assert_eq!(e.restarts, u32::from(CYCLES) - 1);
        assert_eq!(
            e.endpoints,
            [Endpoint::new("main", addr(20_000 + i * 100 + CYCLES - 1))]
        );
        assert_eq!(e.metadata["cycle"], (CYCLES - 1).to_string());
        assert_eq!(e.dependencies, ["base"]);
        assert!(e.health.as_ref().is_some_and(|h| h.healthy));
    }
    let dependents = smol::block_on(reg.dependents("base")).unwrap();
    assert_eq!(
        dependents,
        (0..SERVICES)
            .map(|i| format!("svc-{i:02}"))
            .collect::<Vec<_>>()
    );

    // Every event, numbered 1, 2, 3... without a gap, and per service in the order of its
    // changes.
    let mut per_service: BTreeMap<String, Vec<(EventKind, Option<ServiceState>)>> = BTreeMap::new();
    let mut expected_sequence = 1;
    loop {
        match all.try_recv() {
            Ok(event) => {
                assert_eq!(event.sequence, expected_sequence);
                expected_sequence += 1;
                let to = match &event.event {
                    RegistryEvent::ServiceStateChanged { to, .. } => Some(to.clone()),
                    _ => None,
                };
                per_service
                    .entry(event.event.service().to_owned())
                    .or_default()
                    .push((event.event.kind(), to));
            }
            Err(TryRecvError::Empty) => break,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(expected_sequence - 1, reg.last_sequence());
    assert_eq!(
        per_service.remove("base").unwrap(),
        [(EventKind::ServiceRegistered, None)]
    );
    assert_eq!(per_service.len(), usize::from(SERVICES));
    for (name, events) in per_service {
        assert_eq!(events, expected_script(CYCLES), "events of {name}");
    }
}

#[test]
fn racing_transitions_have_exactly_one_winner() {
    let reg = Registry::new();
    smol::block_on(reg.register(ServiceEntry::local_process("s"))).unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let reg = reg.clone();
            async move { reg.set_state("s", ServiceState::Starting).await }
        })
        .collect();
    let results = run_parallel(tasks);
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    for r in results.into_iter().filter_map(Result::err) {
        assert_eq!(
            r,
            RegistryError::InvalidTransition {
                service: "s".into(),
                from: ServiceState::Starting,
                to: ServiceState::Starting
            }
        );
    }
}

#[test]
fn racing_removals_and_registrations_never_leave_a_dangling_dependency() {
    for round in 0..20 {
        let reg = Registry::new();
        smol::block_on(reg.register(ServiceEntry::local_process("base"))).unwrap();
        let mut tasks: Vec<future::Boxed<bool>> = Vec::new();
        for i in 0..16 {
            let registering = reg.clone();
            tasks.push(Box::pin(async move {
                registering
                    .register(ServiceEntry::local_process(format!("d{i}")).with_dependency("base"))
                    .await
                    .is_ok()
            }));
            if i == round % 16 {
                let removing = reg.clone();
                tasks.push(Box::pin(
                    async move { removing.remove("base").await.is_ok() },
                ));
            }
        }
        run_parallel(tasks);
        let entries = smol::block_on(reg.list());
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        for e in &entries {
            for d in &e.dependencies {
                assert!(
                    names.contains(&d.as_str()),
                    "round {round}: {} needs missing {d}",
                    e.name
                );
            }
        }
        // Either `base` went before any dependent came, or it stayed.
        let has_dependents = entries.iter().any(|e| e.name != "base");
        assert!(names.contains(&"base") || !has_dependents);
    }
}

#[test]
fn a_slow_subscriber_neither_blocks_the_registry_nor_other_subscribers() {
    const CHANGES: u64 = 5_000;
    let reg = Registry::new();
    smol::block_on(reg.register(ServiceEntry::local_process("s"))).unwrap();
    // Never read while the changes are made.
    let mut slow = reg.subscribe_with(EventFilter::all(), 16);
    let mut fast = reg.subscribe_with(EventFilter::all(), 64);
    let first = reg.last_sequence() + 1;

    let reader = std::thread::spawn(move || {
        smol::block_on(async {
            let mut seen = 0u64;
            let mut missed = 0u64;
            let mut last = 0;
            while seen + missed < CHANGES {
                match fast.recv().await {
                    Ok(e) => {
                        assert!(e.sequence > last);
                        last = e.sequence;
                        seen += 1;
                    }
                    Err(RecvError::Lagged(n)) => missed += n,
                    Err(RecvError::Closed) => panic!("closed early"),
                }
            }
            (seen, missed)
        })
    });
    smol::block_on(async {
        for i in 0..CHANGES {
            reg.update("s", |e| {
                e.metadata.insert("i".into(), i.to_string());
            })
            .await
            .unwrap();
        }
    });
    let (seen, missed) = reader.join().unwrap();
    assert_eq!(
        seen + missed,
        CHANGES,
        "the fast subscriber accounts for every event"
    );

    // The slow one kept the last 16 and is told exactly how many it missed.
    assert_eq!(slow.try_recv(), Err(TryRecvError::Lagged(CHANGES - 16)));
    let kept: Vec<u64> = std::iter::from_fn(|| slow.try_recv().ok())
        .map(|e| e.sequence)
        .collect();
    assert_eq!(
        kept,
        (first + CHANGES - 16..first + CHANGES).collect::<Vec<_>>()
    );
}

#[test]
fn subscribers_on_other_threads_wake_for_each_event() {
    let reg = Registry::new();
    let subs: Vec<_> = (0..8)
        .map(|i| {
            let sub = reg.subscribe_with(EventFilter::all().services([format!("s{}", i % 2)]), 64);
            std::thread::spawn(move || {
                let mut sub = sub;
                smol::block_on(async {
                    let mut names = Vec::new();
                    while let Ok(e) = sub.recv().await {
                        names.push((e.event.kind(), e.event.service().to_owned()));
                    }
                    names
                })
            })
        })
        .collect();
    smol::block_on(async {
        for name in ["s0", "s1"] {
            reg.register(ServiceEntry::local_process(name))
                .await
                .unwrap();
            reg.set_state(name, ServiceState::Starting).await.unwrap();
        }
    });
    drop(reg);
    for (i, t) in subs.into_iter().enumerate() {
        let name = format!("s{}", i % 2);
        assert_eq!(
            t.join().unwrap(),
            [
                (EventKind::ServiceRegistered, name.clone()),
                (EventKind::ServiceStateChanged, name),
            ]
        );
    }
}

#[test]
fn works_under_tokio_too() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let reg = Registry::new();
    let mut sub = reg.subscribe();
    let names = rt.block_on(async {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let reg = reg.clone();
                tokio::spawn(async move {
                    reg.register(ServiceEntry::local_process(format!("t{i:02}")))
                        .await
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap().unwrap();
        }
        let mut names = Vec::new();
        for _ in 0..16 {
            names.push(sub.recv().await.unwrap().event.service().to_owned());
        }
        names.sort();
        names
    });
    assert_eq!(
        names,
        (0..16).map(|i| format!("t{i:02}")).collect::<Vec<_>>()
    );
}
