//! The WebSocket API over real sockets on 127.0.0.1, on smol: a full connection cycle, events
//! to many clients, concurrent requests, slow and vanishing clients, bad input, access checks,
//! limits and shutdown.

mod api_support;
#[path = "support/fixtures.rs"]
mod fixtures;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api_support::{Client, eventually, try_connect};
use async_tungstenite::tungstenite::Message as WsMessage;
use harness::api::{
    ActionFailure, BindError, BoxFuture, DeployRequest, Deployer, Deployment, Progress,
    ServerHandle, ServiceCommand, ServiceController, WsServer, WsServerBuilder,
};
use harness::registry::{
    DeploymentProgress, Endpoint, ExecutionInfo, ExecutionKind, HealthResult, Location, Registry,
    ServiceEntry, ServiceState,
};
use serde_json::{Value, json};

fn start(builder: WsServerBuilder) -> ServerHandle {
    smol::block_on(builder.bind("127.0.0.1:0"))
        .expect("bind on loopback")
        .start()
        .expect("start the server thread")
}

/// Checks that a server closed every connection and that the registry has no subscriber left.
fn assert_clean(server: &ServerHandle, registry: &Registry) {
    smol::block_on(eventually("every connection is gone", || {
        server.connections() == 0
    }));
    assert_eq!(
        registry.subscriber_count(),
        0,
        "a subscription outlived its connection"
    );
}

async fn populate(registry: &Registry) {
    registry
        .register(
            ServiceEntry::local_process("db")
                .with_endpoint(Endpoint::new("main", "127.0.0.1:5432".parse().unwrap())),
        )
        .await
        .unwrap();
    registry
        .register(
            ServiceEntry::new(
                "api",
                Location::Lan {
                    host: "192.168.1.10".into(),
                },
                ExecutionInfo::new(ExecutionKind::RemoteLan).with_command(["api", "--port", "80"]),
            )
            .with_dependency("db")
            .with_endpoint(
                Endpoint::new("http", "127.0.0.1:8080".parse().unwrap())
                    .with_lan_addr("192.168.1.10:80".parse().unwrap()),
            ),
        )
        .await
        .unwrap();
}

#[test]
fn a_full_connection_cycle_with_the_seed_accept_loop() {
    smol::block_on(async {
        let registry = Registry::new();
        populate(&registry).await;
        // The library usage of the Phase 2 plan: the caller's runtime runs each connection.
        let server = WsServer::bind("127.0.0.1:0", registry.clone())
            .await
            .unwrap();
        let addr = server.local_addr();
        let shutdown = server.shutdown_handle();
        let acceptor = smol::spawn(async move {
            loop {
                let Ok(handler) = server.accept().await else {
                    break;
                };
                smol::spawn(handler.handle()).detach();
            }
        });

        let mut client = Client::connect(addr).await;
        // The seed's request, exactly: no handshake message first.
        client
            .send_text(
                r#"{"id": "123", "type": "request", "action": "list_services", "params": {}}"#,
            )
            .await;
        let answer = client.recv().await;
        assert_eq!(answer["id"], "123");
        assert_eq!(answer["type"], "response");
        assert_eq!(answer["action"], "list_services");
        assert_eq!(answer["version"], 1);
        let names: Vec<&str> = answer["params"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["api", "db"]);

        let hello = client.ok("hello", json!({})).await;
        assert_eq!(hello["protocol_version"], 1);
        assert_eq!(hello["controller"], false);

        let db = client.ok("get_service", json!({"name": "db"})).await;
        assert_eq!(db["service"]["state"], json!({"status": "pending"}));
        assert_eq!(db["dependents"], json!(["api"]));
        let api = client.ok("get_service", json!({"name": "api"})).await;
        assert_eq!(
            api["service"]["location"],
            json!({"kind": "lan", "host": "192.168.1.10"})
        );
        assert_eq!(
            api["service"]["execution"]["command"],
            json!(["api", "--port", "80"])
        );

        let endpoints = client.ok("list_endpoints", json!({})).await;
        assert_eq!(
            endpoints["endpoints"],
            json!([
                {"service": "api", "name": "http", "address": "127.0.0.1:8080", "lan_addr": "192.168.1.10:80"},
                {"service": "db", "name": "main", "address": "127.0.0.1:5432"},
            ])
        );
        let one = client.ok("list_endpoints", json!({"service": "db"})).await;
        assert_eq!(one["endpoints"].as_array().unwrap().len(), 1);
        let running = client
            .ok("list_services", json!({"states": ["running"]}))
            .await;
        assert_eq!(running["services"], json!([]));

        // Subscribe to db's state changes and health only.
        let sub = client
            .ok(
                "subscribe",
                json!({"services": ["db"], "events": ["service_state_changed", "health_check_result", "endpoint_updated"]}),
            )
            .await;
        assert_eq!(sub["services"], json!(["db"]));
        registry
            .set_state("api", ServiceState::Starting)
            .await
            .unwrap(); // filtered out
        registry
            .set_state("db", ServiceState::Starting)
            .await
            .unwrap();
        registry
            .set_endpoint(
                "db",
                Endpoint::new("main", "127.0.0.1:5433".parse().unwrap()),
            )
            .await
            .unwrap();
        registry
            .record_health(
                "db",
                HealthResult::new(true, "connected", Duration::from_millis(3)),
            )
            .await
            .unwrap();
        registry
            .set_state("db", ServiceState::Running)
            .await
            .unwrap();

        let e = client.event().await;
        assert_eq!(e["action"], "service_state_changed");
        assert_eq!(e["params"]["service"], "db");
        assert_eq!(e["params"]["from"], json!({"status": "pending"}));
        assert_eq!(e["params"]["to"], json!({"status": "starting"}));
        assert!(e.get("id").is_none(), "events have no id: {e}");
        let first_sequence = e["params"]["sequence"].as_u64().unwrap();
        let e = client.event().await;
        assert_eq!(e["action"], "endpoint_updated");
        assert_eq!(e["params"]["endpoint"]["address"], "127.0.0.1:5433");
        let e = client.event().await;
        assert_eq!(e["action"], "health_check_result");
        assert_eq!(e["params"]["healthy"], true);
        assert_eq!(e["params"]["detail"], "connected");
        let e = client.event().await;
        assert_eq!(e["params"]["to"], json!({"status": "running"}));
        assert!(e["params"]["sequence"].as_u64().unwrap() > first_sequence);

        // After unsubscribing, a change sends nothing: the next message is the next answer.
        let unsub = client.ok("unsubscribe", json!({})).await;
        assert_eq!(unsub["was_subscribed"], true);
        registry
            .set_state("db", ServiceState::Stopping)
            .await
            .unwrap();
        let after = client.request("hello", json!({})).await;
        assert_eq!(
            after["type"], "response",
            "no event after unsubscribe: {after}"
        );

        client.close().await;
        eventually("the connection is gone", || shutdown.connections() == 0).await;
        assert_eq!(registry.subscriber_count(), 0);
        shutdown.shutdown();
        acceptor.await;
    });
}

#[test]
fn many_clients_receive_the_same_events_in_order() {
    let registry = Registry::new();
    let server = start(WsServer::builder(registry.clone()));
    let addr = server.local_addr();
    smol::block_on(async {
        let mut clients = Vec::new();
        for _ in 0..20 {
            let mut c = Client::connect(addr).await;
            c.ok("subscribe", json!({"events": ["deployment_progress"]}))
                .await;
            clients.push(c);
        }
        for percent in 0..=100u8 {
            registry.publish_progress(DeploymentProgress {
                service: "kv".into(),
                host: "h1".into(),
                stage: "upload".into(),
                percent,
                message: format!("{percent}%"),
            });
        }
        let expected: Vec<u64> = (0..=100).collect();
        for c in &mut clients {
            let mut got = Vec::new();
            for _ in 0..=100 {
                let e = c.event().await;
                assert_eq!(e["action"], "deployment_progress");
                got.push(e["params"]["percent"].as_u64().unwrap());
            }
            assert_eq!(got, expected);
        }
        for c in clients {
            c.close().await;
        }
    });
    assert_clean(&server, &registry);
}

#[test]
fn fifty_clients_doing_a_hundred_requests_each_get_their_own_answers() {
    let registry = Registry::new();
    smol::block_on(async {
        for i in 0..10 {
            registry
                .register(ServiceEntry::local_process(format!("svc-{i}")))
                .await
                .unwrap();
        }
    });
    let server = start(WsServer::builder(registry.clone()));
    let addr = server.local_addr();
    let clients: Vec<_> = (0..50)
        .map(|client| {
            smol::spawn(async move {
                let mut c = Client::connect(addr).await;
                // Send all hundred before reading any answer, so they are under way together.
                let mut asked = Vec::new();
                for n in 0..100 {
                    let service = format!("svc-{}", (client + n) % 10);
                    let id = format!("c{client}-n{n}");
                    let message = json!({"id": id, "type": "request", "action": "get_service", "params": {"name": service}});
                    c.send_text(message.to_string()).await;
                    asked.push((id, service));
                }
                let mut answered = std::collections::HashMap::new();
                for _ in 0..100 {
                    let answer = c.recv().await;
                    assert_eq!(answer["type"], "response", "{answer}");
                    let id = answer["id"].as_str().unwrap().to_owned();
                    let name = answer["params"]["service"]["name"].as_str().unwrap().to_owned();
                    assert!(answered.insert(id, name).is_none(), "an id was answered twice");
                }
                for (id, service) in asked {
                    assert_eq!(answered.get(&id), Some(&service), "answer to {id}");
                }
                c.close().await;
            })
        })
        .collect();
    smol::block_on(async {
        for c in clients {
            c.await;
        }
    });
    assert_clean(&server, &registry);
}

#[test]
fn a_subscriber_that_does_not_read_is_cut_off_without_slowing_the_others() {
    let registry = Registry::new();
    let server = start(
        WsServer::builder(registry.clone())
            .with_event_queue(32)
            .with_max_missed_events(50)
            .with_send_timeout(Duration::from_millis(500))
            .with_close_timeout(Duration::from_secs(20)),
    );
    let addr = server.local_addr();
    smol::block_on(async {
        let mut slow = Client::connect(addr).await;
        slow.ok("subscribe", json!({})).await;
        let mut fast: Vec<Client> = Vec::new();
        for _ in 0..3 {
            let mut c = Client::connect(addr).await;
            c.ok("subscribe", json!({})).await;
            fast.push(c);
        }
        // Big events fill the slow client's socket buffers quickly (32 MB in all, more than
        // loopback buffers hold). Publish in rounds, each read whole by the fast clients, so
        // they never fall behind themselves.
        let message = "x".repeat(16 * 1024);
        let rounds = 100;
        let per_round = 20;
        for round in 0..rounds {
            for i in 0..per_round {
                registry.publish_progress(DeploymentProgress {
                    service: "big".into(),
                    host: "h".into(),
                    stage: format!("{round}-{i}"),
                    percent: 0,
                    message: message.clone(),
                });
            }
            for c in &mut fast {
                for i in 0..per_round {
                    let e = c.event().await;
                    assert_eq!(e["params"]["stage"], format!("{round}-{i}"));
                }
            }
        }
        // Every fast client got every event, and is still served.
        for c in &mut fast {
            c.ok("hello", json!({})).await;
        }
        // Longer than the send timeout: a write still stuck now disconnects the slow client,
        // if missing too many events has not already.
        async_io::Timer::after(Duration::from_secs(1)).await;
        // The slow one now reads what reached it: some events, then a close frame saying it
        // was too slow (perhaps after a report of missed events).
        let (before, close) = slow.until_close().await;
        let (code, reason) = close.expect("a close frame");
        assert_eq!(code, 1008);
        assert!(reason.starts_with("too slow"), "{reason}");
        let events = before
            .iter()
            .filter(|m| m["action"] == "deployment_progress")
            .count();
        assert!(
            events < rounds * per_round,
            "the slow client cannot have had them all"
        );
        for c in fast {
            c.close().await;
        }
    });
    assert_clean(&server, &registry);
}

#[test]
fn a_lagging_subscriber_is_told_how_many_events_it_missed() {
    let registry = Registry::new();
    let server = start(WsServer::builder(registry.clone()).with_event_queue(4));
    let addr = server.local_addr();
    smol::block_on(async {
        let mut c = Client::connect(addr).await;
        c.ok("subscribe", json!({"events": ["deployment_progress"]}))
            .await;
        // Published in one burst, faster than any socket: the queue of 4 overflows unless the
        // connection happens to keep up, so count what arrives rather than assume.
        let total = 2000u64;
        for i in 0..total {
            registry.publish_progress(DeploymentProgress {
                service: "s".into(),
                host: "h".into(),
                stage: i.to_string(),
                percent: 0,
                message: "y".repeat(2048),
            });
        }
        let mut seen = 0u64;
        let mut missed = 0u64;
        let mut last_stage = -1i64;
        while seen + missed < total {
            let e = c.event().await;
            match e["action"].as_str().unwrap() {
                "deployment_progress" => {
                    let stage: i64 = e["params"]["stage"].as_str().unwrap().parse().unwrap();
                    assert!(stage > last_stage, "events stay in order");
                    last_stage = stage;
                    seen += 1;
                }
                "events_missed" => missed += e["params"]["missed"].as_u64().unwrap(),
                other => panic!("unexpected event {other}"),
            }
        }
        assert_eq!(
            seen + missed,
            total,
            "every event is delivered or counted as missed"
        );
        assert_eq!(last_stage, total as i64 - 1, "the newest events are kept");
        c.close().await;
    });
    assert_clean(&server, &registry);
}

#[test]
fn malformed_input_gets_errors_and_the_connection_stays_open() {
    let registry = Registry::new();
    let server = start(WsServer::builder(registry.clone()));
    smol::block_on(async {
        let mut c = Client::connect(server.local_addr()).await;
        let cases: &[(&str, Value, &str)] = &[
            ("{not json", Value::Null, "parse_error"),
            ("[1,2,3]", Value::Null, "invalid_request"),
            (r#"{"id": "a"}"#, json!("a"), "invalid_request"),
            (
                r#"{"id": "b", "action": "teleport"}"#,
                json!("b"),
                "unknown_action",
            ),
            (
                r#"{"id": 7, "action": "get_service"}"#,
                json!(7),
                "invalid_params",
            ),
            (
                r#"{"id": "c", "action": "get_service", "params": {"name": "ghost"}}"#,
                json!("c"),
                "not_found",
            ),
            (
                r#"{"id": "d", "action": "subscribe", "params": {"events": ["sneezed"]}}"#,
                json!("d"),
                "invalid_params",
            ),
            (
                r#"{"id": "e", "action": "hello", "version": 2}"#,
                json!("e"),
                "unsupported_version",
            ),
            (
                r#"{"id": "f", "type": "event", "action": "hello"}"#,
                json!("f"),
                "invalid_request",
            ),
            (
                r#"{"id": "g", "action": "service_action", "params": {"service": "x", "action": "start"}}"#,
                json!("g"),
                "no_controller",
            ),
            (
                r#"{"id": "h", "action": "deploy_package", "params": {"package": "kv"}}"#,
                json!("h"),
                "no_deployer",
            ),
        ];
        for (text, id, code) in cases {
            c.send_text(*text).await;
            let answer = c.recv().await;
            assert_eq!(answer["type"], "error", "{text}: {answer}");
            assert_eq!(
                answer.get("id").cloned().unwrap_or(Value::Null),
                *id,
                "{text}"
            );
            assert_eq!(answer["params"]["code"], *code, "{text}: {answer}");
            assert!(!answer["params"]["message"].as_str().unwrap().is_empty());
        }
        let no_controller = c
            .err(
                "service_action",
                json!({"service": "x", "action": "restart"}),
            )
            .await;
        assert!(
            no_controller["message"]
                .as_str()
                .unwrap()
                .contains("no controller in this server")
        );
        // A binary frame is refused too, and the connection goes on.
        let mut ws = c.into_inner();
        ws.send(WsMessage::binary(b"{}".to_vec())).await.unwrap();
        let mut c = {
            use futures_lite::StreamExt as _;
            let reply = ws.next().await.unwrap().unwrap();
            let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
            assert_eq!(reply["params"]["code"], "invalid_request");
            ws.send(WsMessage::text(r#"{"id":"z","action":"hello"}"#))
                .await
                .unwrap();
            let reply = ws.next().await.unwrap().unwrap();
            let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
            assert_eq!(reply["id"], "z");
            assert_eq!(reply["type"], "response");
            ws
        };
        c.close(None).await.unwrap();
        use futures_lite::StreamExt as _;
        while let Some(Ok(_)) = c.next().await {}
    });
    assert_clean(&server, &registry);
}

#[test]
fn a_client_that_vanishes_is_cleaned_up_and_can_reconnect() {
    let registry = Registry::new();
    let server = start(WsServer::builder(registry.clone()));
    let addr = server.local_addr();
    smol::block_on(async {
        populate(&registry).await;
        let mut c = Client::connect(addr).await;
        c.ok("subscribe", json!({"services": ["db"]})).await;
        assert_eq!(registry.subscriber_count(), 1);
        // Drop the TCP connection without a close frame, as a crashed client would.
        drop(c.into_inner());
        eventually("the dropped connection is gone", || {
            server.connections() == 0
        })
        .await;
        assert_eq!(registry.subscriber_count(), 0);
        // Changes while no one listens do not trouble the server.
        registry
            .set_state("db", ServiceState::Starting)
            .await
            .unwrap();

        let mut c = Client::connect(addr).await;
        let db = c.ok("get_service", json!({"name": "db"})).await;
        assert_eq!(db["service"]["state"], json!({"status": "starting"}));
        let sub = c.ok("subscribe", json!({"services": ["db"]})).await;
        let resumed_at = sub["last_sequence"].as_u64().unwrap();
        registry
            .set_state("db", ServiceState::Running)
            .await
            .unwrap();
        let e = c.event().await;
        assert_eq!(e["params"]["to"], json!({"status": "running"}));
        assert_eq!(e["params"]["sequence"].as_u64().unwrap(), resumed_at + 1);
        c.close().await;
    });
    assert_clean(&server, &registry);
}

#[test]
fn tokens_and_origins_are_checked_at_the_handshake() {
    let registry = Registry::new();
    let server = start(
        WsServer::builder(registry.clone())
            .with_token("let-me-in")
            .with_allowed_origin("https://dash.example.com"),
    );
    let addr = server.local_addr();
    let port = addr.port();
    smol::block_on(async {
        let refused = |r: Result<Client, (u16, String)>| r.err().expect("refused");
        let (status, body) = refused(try_connect(addr, "/", &[]).await);
        assert_eq!(status, 401);
        assert!(body.contains("needs a token"), "{body}");
        let (status, _) =
            refused(try_connect(addr, "/", &[("Authorization", "Bearer wrong")]).await);
        assert_eq!(status, 401);
        let (status, _) = refused(try_connect(addr, "/?token=wrong", &[]).await);
        assert_eq!(status, 401);
        // A page from elsewhere is refused even with the token (cross-site WebSocket
        // hijacking).
        let (status, body) = refused(
            try_connect(
                addr,
                "/?token=let-me-in",
                &[("Origin", "https://evil.example")],
            )
            .await,
        );
        assert_eq!(status, 403);
        assert!(body.contains("evil.example"), "{body}");
        let (status, _) = refused(
            try_connect(
                addr,
                "/?token=let-me-in",
                &[("Origin", "http://localhost:1")],
            )
            .await,
        );
        assert_eq!(status, 403);

        for (path, headers) in [
            ("/", vec![("Authorization", "Bearer let-me-in")]),
            ("/v1?token=let-me-in", vec![]),
            (
                "/?token=let-me-in",
                vec![("Origin", "https://dash.example.com")],
            ),
        ] {
            let mut c = try_connect(addr, path, &headers).await.unwrap();
            c.ok("hello", json!({})).await;
            c.close().await;
        }
        let own = format!("http://127.0.0.1:{port}");
        let mut c = try_connect(addr, "/?token=let-me-in", &[("Origin", &own)])
            .await
            .unwrap();
        c.ok("hello", json!({})).await;
        c.close().await;
    });
    assert_clean(&server, &registry);
}

#[test]
fn paths_name_the_protocol_version() {
    let registry = Registry::new();
    let server = start(WsServer::builder(registry.clone()));
    let addr = server.local_addr();
    smol::block_on(async {
        let (status, body) = try_connect(addr, "/v2", &[]).await.err().unwrap();
        assert_eq!(status, 400);
        assert_eq!(
            body,
            "speak protocol version 2: this server speaks version 1"
        );
        let (status, _) = try_connect(addr, "/admin", &[]).await.err().unwrap();
        assert_eq!(status, 404);
        let mut c = try_connect(addr, "/v1", &[]).await.unwrap();
        let answer = c.request("hello", json!({})).await;
        assert_eq!(answer["version"], 1);
        c.close().await;
    });
    assert_clean(&server, &registry);
}

#[test]
fn binding_beyond_loopback_needs_a_token() {
    smol::block_on(async {
        let err = WsServer::bind("0.0.0.0:0", Registry::new())
            .await
            .unwrap_err();
        assert!(matches!(err, BindError::TokenRequired { .. }), "{err}");
        assert!(err.to_string().contains("needs a token"), "{err}");
        // Loopback needs none, whichever 127/8 address.
        let server = WsServer::bind("127.0.0.2:0", Registry::new())
            .await
            .unwrap();
        assert!(server.local_addr().ip().is_loopback());
    });
}

#[test]
fn an_oversize_message_is_refused_and_the_connection_closed_with_1009() {
    let registry = Registry::new();
    let server = start(WsServer::builder(registry.clone()).with_max_message_size(1024));
    smol::block_on(async {
        let mut c = Client::connect(server.local_addr()).await;
        // Just under the limit is fine.
        let padding = "p".repeat(900);
        c.send_text(json!({"id": "ok", "action": "hello", "params": {"pad": padding}}).to_string())
            .await;
        assert_eq!(c.recv().await["type"], "response");
        let padding = "p".repeat(4000);
        c.send_text(
            json!({"id": "big", "action": "hello", "params": {"pad": padding}}).to_string(),
        )
        .await;
        let (before, close) = c.until_close().await;
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0]["params"]["code"], "message_too_large");
        let (code, reason) = close.expect("a close frame");
        assert_eq!(code, 1009);
        assert!(reason.contains("1024"), "{reason}");
    });
    assert_clean(&server, &registry);
}

#[test]
fn shutdown_sends_every_client_a_close_frame() {
    let registry = Registry::new();
    let server = start(WsServer::builder(registry.clone()));
    let addr = server.local_addr();
    smol::block_on(async {
        let mut clients = Vec::new();
        for _ in 0..5 {
            let mut c = Client::connect(addr).await;
            c.ok("subscribe", json!({})).await;
            clients.push(c);
        }
        let stopper = blocking::unblock(move || server.shutdown());
        for mut c in clients {
            let (_, close) = c.until_close().await;
            assert_eq!(close, Some((1001, "server shutting down".to_owned())));
        }
        stopper.await.expect("the server stops cleanly");
        // Nothing listens any more.
        assert!(async_net::TcpStream::connect(addr).await.is_err());
    });
    assert_eq!(registry.subscriber_count(), 0);
}

#[test]
fn idle_clients_are_pinged_and_silent_ones_closed() {
    let registry = Registry::new();
    let server = start(
        WsServer::builder(registry.clone()).with_ping_interval(Some(Duration::from_millis(100))),
    );
    smol::block_on(async {
        // A client that reads answers pings (tungstenite does it while reading) and stays.
        let mut alive = Client::connect(server.local_addr()).await;
        let mut pings = 0;
        while pings < 3 {
            if let Some(WsMessage::Ping(_)) = alive.next_frame().await {
                pings += 1;
            }
        }
        alive.ok("hello", json!({})).await;
        // A client that never reads never answers, and is closed.
        let mut silent = Client::connect(server.local_addr()).await;
        async_io::Timer::after(Duration::from_millis(600)).await;
        let (_, close) = silent.until_close().await;
        let (code, reason) = close.expect("a close frame");
        assert_eq!(code, 1001);
        assert!(reason.contains("no answer to pings"), "{reason}");
        alive.close().await;
    });
    assert_clean(&server, &registry);
}

/// Moves services through their states without running anything, as an orchestrator would.
struct PretendController(Registry);

impl ServiceController for PretendController {
    fn control<'a>(
        &'a self,
        service: &'a str,
        command: ServiceCommand,
    ) -> BoxFuture<'a, Result<(), ActionFailure>> {
        Box::pin(async move {
            if service == "broken" {
                return Err("the unit file is missing".into());
            }
            let steps = match command {
                ServiceCommand::Start => vec![ServiceState::Starting, ServiceState::Running],
                ServiceCommand::Stop => vec![ServiceState::Stopping, ServiceState::Stopped],
                ServiceCommand::Restart => vec![
                    ServiceState::Stopping,
                    ServiceState::Stopped,
                    ServiceState::Starting,
                    ServiceState::Running,
                ],
            };
            for state in steps {
                // Take a little time, as real starts do, so other requests overlap.
                async_io::Timer::after(Duration::from_millis(20)).await;
                self.0.set_state(service, state).await?;
            }
            Ok(())
        })
    }
}

struct PretendDeployer;

impl Deployer for PretendDeployer {
    fn deploy(
        &self,
        request: DeployRequest,
        progress: Progress,
    ) -> BoxFuture<'_, Result<Deployment, ActionFailure>> {
        Box::pin(async move {
            for (stage, percent) in [("upload", 30), ("extract", 70), ("start", 100)] {
                progress.report(stage, percent, format!("{stage} {}", request.package));
            }
            Ok(Deployment {
                service: request.service.unwrap_or(request.package),
                host: request.host.unwrap_or_else(|| "localhost".into()),
                version: Some("1.0.0".into()),
                install_path: Some("/opt/kv-1.0.0".into()),
            })
        })
    }
}

#[test]
fn service_actions_and_deployments_go_through_the_controller_and_deployer() {
    let registry = Registry::new();
    let server = start(
        WsServer::builder(registry.clone())
            .with_controller(Arc::new(PretendController(registry.clone())))
            .with_deployer(Arc::new(PretendDeployer)),
    );
    let addr: SocketAddr = server.local_addr();
    smol::block_on(async {
        populate(&registry).await;
        registry
            .register(ServiceEntry::local_process("broken"))
            .await
            .unwrap();
        let mut c = Client::connect(addr).await;
        c.ok(
            "subscribe",
            json!({"events": ["service_state_changed", "deployment_progress"]}),
        )
        .await;
        // A slow action does not hold up the connection: a quick request sent after it is
        // answered first.
        let start = c
            .send_request(
                "service_action",
                json!({"service": "db", "action": "start"}),
            )
            .await;
        let quick = c.send_request("hello", json!({})).await;
        let mut order = Vec::new();
        let mut events = Vec::new();
        while order.len() < 2 {
            let m = c.recv().await;
            if m["type"] == "event" {
                events.push(m);
            } else {
                order.push(m);
            }
        }
        assert_eq!(order[0]["id"], quick.as_str());
        assert_eq!(order[1]["id"], start.as_str());
        assert_eq!(
            order[1]["params"]["service"]["state"],
            json!({"status": "running"})
        );
        while events.len() < 2 {
            events.push(c.event().await);
        }
        let states: Vec<&Value> = events
            .iter()
            .map(|e| &e["params"]["to"]["status"])
            .collect();
        assert_eq!(states, ["starting", "running"]);

        let restarted = c
            .ok(
                "service_action",
                json!({"service": "db", "action": "restart"}),
            )
            .await;
        assert_eq!(restarted["service"]["restarts"], 1);
        for expected in ["stopping", "stopped", "starting", "running"] {
            assert_eq!(c.event().await["params"]["to"]["status"], expected);
        }
        let failed = c
            .err(
                "service_action",
                json!({"service": "broken", "action": "start"}),
            )
            .await;
        assert_eq!(failed["code"], "action_failed");
        assert_eq!(
            failed["message"],
            "start service `broken`: the unit file is missing"
        );
        let missing = c
            .err(
                "service_action",
                json!({"service": "ghost", "action": "stop"}),
            )
            .await;
        assert_eq!(missing["code"], "not_found");
        // Stopping a pending service is not an allowed transition: the registry says so.
        let conflict = c
            .err(
                "service_action",
                json!({"service": "api", "action": "stop"}),
            )
            .await;
        assert_eq!(conflict["code"], "action_failed");
        assert!(
            conflict["message"]
                .as_str()
                .unwrap()
                .contains("not an allowed transition")
        );

        let deployed = c
            .ok("deploy_package", json!({"package": "kv", "host": "h1"}))
            .await;
        assert_eq!(
            deployed["deployment"],
            json!({"service": "kv", "host": "h1", "version": "1.0.0", "install_path": "/opt/kv-1.0.0"})
        );
        let mut stages = Vec::new();
        for _ in 0..3 {
            let e = c.event().await;
            assert_eq!(e["action"], "deployment_progress");
            assert_eq!(e["params"]["host"], "h1");
            stages.push((e["params"]["stage"].clone(), e["params"]["percent"].clone()));
        }
        assert_eq!(
            stages,
            [
                (json!("upload"), json!(30)),
                (json!("extract"), json!(70)),
                (json!("start"), json!(100))
            ]
        );
        c.close().await;
    });
    assert_clean(&server, &registry);
}

/// Whether a service's process group still has a member (every service leads its group).
fn group_alive(pid: u32) -> bool {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a positive pid");
    rustix::process::test_kill_process_group(pid).is_ok()
}

#[test]
fn concurrent_actions_on_one_service_run_one_after_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.yaml");
    std::fs::write(
        &path,
        format!(
            r#"
services:
  echo:
    target:
      process: {{ binary: {echo}, env: {{ HOST: 127.0.0.1 }} }}
    port: auto
    health_check: {{ log: "listening on", interval: 20ms }}
"#,
            echo = fixtures::bin("echo-server").display()
        ),
    )
    .unwrap();
    let topology = harness::topology::TopologyConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let registry = Registry::new();
    let manager = harness::orchestrator::ServiceManager::new(topology, registry.clone())
        .with_base_dir(dir.path())
        .with_stop_grace(Duration::from_secs(5));
    let server =
        start(WsServer::builder(registry.clone()).with_controller(Arc::new(manager.clone())));
    let addr = server.local_addr();
    let mut pids = Vec::new();
    smol::block_on(async {
        manager.start_all().await.unwrap_or_else(|e| panic!("{e}"));
        pids.extend(manager.status("echo").await.unwrap().pid);
        // Every client sends its action at once, over a connection of its own; a later start
        // brings the service back whatever order the actions ran in.
        let actions = ["restart", "restart", "restart", "stop", "start", "restart"];
        let mut clients = Vec::new();
        for _ in actions {
            clients.push(Client::connect(addr).await);
        }
        let mut sent = Vec::new();
        for (client, action) in clients.iter_mut().zip(actions) {
            let id = client
                .send_request(
                    "service_action",
                    json!({"service": "echo", "action": action}),
                )
                .await;
            sent.push(id);
        }
        let waiting: Vec<_> = clients
            .into_iter()
            .zip(sent)
            .map(|(mut client, id)| {
                smol::spawn(async move {
                    let answer = client.answer_to(&id).await;
                    (client, answer)
                })
            })
            .collect();
        let mut answers = Vec::new();
        let mut clients = Vec::new();
        for task in waiting {
            let (client, answer) = task.await;
            clients.push(client);
            answers.push(answer);
        }
        for (action, answer) in actions.iter().zip(&answers) {
            let busy = answer["type"] == "error" && answer["params"]["code"] == "busy";
            assert!(
                answer["type"] == "response" || busy,
                "{action} failed: {answer}"
            );
        }
        for client in clients {
            client.close().await;
        }
        let mut c = Client::connect(addr).await;
        c.ok(
            "service_action",
            json!({"service": "echo", "action": "start"}),
        )
        .await;
        let status = manager.status("echo").await.unwrap();
        assert_eq!(status.state, ServiceState::Running);
        assert_eq!(
            registry.get("echo").await.unwrap().state,
            ServiceState::Running
        );
        let pid = status.pid.expect("a running service has a pid");
        assert!(group_alive(pid), "echo's process {pid} is gone");
        pids.push(pid);
        let mut echo = std::net::TcpStream::connect(status.addr.unwrap()).unwrap();
        std::io::Write::write_all(&mut echo, b"still here\n").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&echo), &mut line).unwrap();
        assert_eq!(line, "still here\n");
        c.close().await;
        manager.stop_all().await.unwrap();
    });
    for pid in pids {
        smol::block_on(eventually("every echo process is gone", || {
            !group_alive(pid)
        }));
    }
    server.shutdown().unwrap();
    assert_eq!(registry.subscriber_count(), 0);
}

#[test]
fn numeric_request_ids_come_back_exactly_as_sent() {
    let registry = Registry::new();
    let server = start(WsServer::builder(registry.clone()));
    smol::block_on(async {
        let mut c = Client::connect(server.local_addr()).await;
        // Above 2^53 (where a double loses integers), above u64, negative, and not integers at
        // all: each must come back as the same characters, in responses and in errors alike.
        let ids = [
            "9007199254740993",
            "18446744073709551617",
            "12345678901234567890123",
            "-9223372036854775809",
            "1.50",
            "1e400",
            "0",
        ];
        for id in ids {
            for (action, kind) in [("hello", "response"), ("teleport", "error")] {
                c.send_text(format!(r#"{{"id": {id}, "action": "{action}"}}"#))
                    .await;
                let text = c.recv_text().await;
                assert!(
                    text.starts_with(&format!(r#"{{"id":{id},"type":"{kind}","#)),
                    "id {id}, {action}: {text}"
                );
            }
        }
        c.close().await;
    });
    assert_clean(&server, &registry);
}
