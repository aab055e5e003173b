//! The WebSocket server under tokio: the library needs no runtime of its own, so the seed's
//! accept loop works with `tokio::spawn` as it does with `smol::spawn`.

mod api_support;

use api_support::Client;
use harness::api::WsServer;
use harness::registry::{Registry, ServiceEntry, ServiceState};
use serde_json::json;

#[test]
fn the_server_runs_under_tokio() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let registry = Registry::new();
        registry
            .register(ServiceEntry::local_process("db"))
            .await
            .unwrap();
        let server = WsServer::bind("127.0.0.1:0", registry.clone())
            .await
            .unwrap();
        let addr = server.local_addr();
        let shutdown = server.shutdown_handle();
        let acceptor = tokio::spawn(async move {
            while let Ok(handler) = server.accept().await {
                tokio::spawn(handler.handle());
            }
        });

        // Clients on tokio tasks too, concurrently.
        let clients: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(async move {
                    let mut c = Client::connect(addr).await;
                    let services = c.ok("list_services", json!({})).await;
                    assert_eq!(services["services"][0]["name"], "db");
                    c.ok("subscribe", json!({"services": ["db"]})).await;
                    c
                })
            })
            .collect();
        let mut connected = Vec::new();
        for c in clients {
            connected.push(c.await.unwrap());
        }
        registry
            .set_state("db", ServiceState::Starting)
            .await
            .unwrap();
        for c in &mut connected {
            let e = c.event().await;
            assert_eq!(e["params"]["to"], json!({"status": "starting"}));
        }
        shutdown.shutdown();
        for mut c in connected {
            let (_, close) = c.until_close().await;
            assert_eq!(close.map(|(code, _)| code), Some(1001));
        }
        acceptor.await.unwrap();
        shutdown.closed().await;
        assert_eq!(registry.subscriber_count(), 0);
    });
}
