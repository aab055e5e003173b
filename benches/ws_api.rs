//! WebSocket API figures, each next to a baseline measured in the same run:
//!
//! 1. Round trips per second for `get_service` with 1 and 16 clients on loopback, next to a
//!    bare async-tungstenite echo server (same executor setup, same message). Goal: at least
//!    half the echo rate.
//! 2. Event fan-out latency to 100 subscribers over 10,000 events, from the registry change to
//!    the client having parsed the event: p50, p99, max. Goal: p99 under 10 ms.
//!
//! Run: `cargo bench --bench ws_api` (release). `WS_BENCH_SECONDS` sets how long each
//! round-trip measurement runs (default 3).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_net::{TcpListener, TcpStream};
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt as _;
use harness::api::WsServer;
use harness::registry::{DeploymentProgress, Registry, ServiceEntry};
use serde_json::{Value, json};

const REQUEST: &str =
    r#"{"id":"1","type":"request","action":"get_service","params":{"name":"svc-3"}}"#;

fn main() {
    let seconds: u64 = std::env::var("WS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let duration = Duration::from_secs(seconds);

    let registry = Registry::new();
    smol::block_on(async {
        for i in 0..10 {
            registry
                .register(ServiceEntry::local_process(format!("svc-{i}")))
                .await
                .unwrap();
        }
    });
    let api = smol::block_on(WsServer::bind("127.0.0.1:0", registry.clone()))
        .unwrap()
        .start()
        .unwrap();
    let echo = EchoServer::start();

    println!("round trips per second, {seconds} s each, loopback:");
    for clients in [1, 16] {
        let echo_rate = round_trips(echo.addr, clients, duration, false);
        let api_rate = round_trips(api.local_addr(), clients, duration, true);
        println!(
            "  {clients:>2} client(s): get_service {api_rate:>9.0}/s   echo {echo_rate:>9.0}/s   \
             ratio {:.2} (goal >= 0.50)",
            api_rate / echo_rate
        );
    }

    let (p50, p99, max, received, missed) = fan_out(&registry, api.local_addr(), 100, 10_000);
    println!("event fan-out to 100 subscribers, 10000 events:");
    println!(
        "  latency p50 {:.3} ms   p99 {:.3} ms (goal < 10 ms)   max {:.3} ms   \
         delivered {received}   missed {missed}",
        ms(p50),
        ms(p99),
        ms(max)
    );
    api.shutdown().unwrap();
    echo.stop();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn connect(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    async_tungstenite::client_async(format!("ws://{addr}/"), stream)
        .await
        .unwrap()
        .0
}

async fn next_text(ws: &mut WebSocketStream<TcpStream>) -> String {
    loop {
        match ws.next().await.expect("the server is there").unwrap() {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Requests per second over `clients` connections, each doing one request at a time.
fn round_trips(addr: SocketAddr, clients: usize, duration: Duration, check: bool) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    smol::block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let count = Arc::clone(&count);
                smol::spawn(async move {
                    let mut ws = connect(addr).await;
                    while !stop.load(Ordering::Relaxed) {
                        ws.send(Message::text(REQUEST)).await.unwrap();
                        let answer = next_text(&mut ws).await;
                        if check {
                            let v: Value = serde_json::from_str(&answer).unwrap();
                            assert_eq!(v["params"]["service"]["name"], "svc-3");
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    ws.close(None).await.ok();
                })
            })
            .collect();
        async_io::Timer::after(duration).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await;
        }
    });
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Latency from publishing an event to each subscriber having parsed it.
fn fan_out(
    registry: &Registry,
    addr: SocketAddr,
    subscribers: usize,
    events: u64,
) -> (Duration, Duration, Duration, usize, u64) {
    let base = Instant::now();
    smol::block_on(async {
        let mut clients = Vec::new();
        for _ in 0..subscribers {
            let mut ws = connect(addr).await;
            let sub = json!({"id": "s", "type": "request", "action": "subscribe",
                             "params": {"events": ["deployment_progress"]}});
            ws.send(Message::text(sub.to_string())).await.unwrap();
            next_text(&mut ws).await;
            clients.push(ws);
        }
        let readers: Vec<_> = clients
            .into_iter()
            .map(|mut ws| {
                smol::spawn(async move {
                    let mut latencies = Vec::with_capacity(events as usize);
                    let mut missed = 0u64;
                    while (latencies.len() as u64) + missed < events {
                        let text = next_text(&mut ws).await;
                        let v: Value = serde_json::from_str(&text).unwrap();
                        if v["action"] == "events_missed" {
                            missed += v["params"]["missed"].as_u64().unwrap();
                            continue;
                        }
                        let sent: u64 = v["params"]["message"].as_str().unwrap().parse().unwrap();
                        let now = base.elapsed().as_nanos() as u64;
                        latencies.push(Duration::from_nanos(now.saturating_sub(sent)));
                    }
                    ws.close(None).await.ok();
                    (latencies, missed)
                })
            })
            .collect();
        // Paced at 1,000 events per second (100,000 messages per second in all), in bursts of
        // ten, as a busy topology's health checks and state changes might come.
        let registry = registry.clone();
        let publisher = std::thread::spawn(move || {
            for i in 0..events {
                registry.publish_progress(DeploymentProgress {
                    service: "bench".into(),
                    host: "localhost".into(),
                    stage: "fan-out".into(),
                    percent: 0,
                    message: (base.elapsed().as_nanos() as u64).to_string(),
                });
                if i % 10 == 9 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        let mut all = Vec::new();
        let mut missed = 0;
        for r in readers {
            let (latencies, m) = r.await;
            all.extend(latencies);
            missed += m;
        }
        publisher.join().unwrap();
        all.sort();
        let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
        (at(0.50), at(0.99), *all.last().unwrap(), all.len(), missed)
    })
}

/// A bare async-tungstenite echo server on a thread of its own with an async-executor, as
/// `WsServer::start` runs: the baseline.
struct EchoServer {
    addr: SocketAddr,
    stop: async_channel::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl EchoServer {
    fn start() -> EchoServer {
        let listener = smol::block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            let ex = async_executor::Executor::new();
            async_io::block_on(ex.run(futures_lite::future::or(
                async {
                    loop {
                        let (stream, _) = listener.accept().await.unwrap();
                        stream.set_nodelay(true).unwrap();
                        ex.spawn(async move {
                            let Ok(mut ws) = async_tungstenite::accept_async(stream).await else {
                                return;
                            };
                            while let Some(Ok(m)) = ws.next().await {
                                if m.is_text() && ws.send(m).await.is_err() {
                                    break;
                                }
                            }
                        })
                        .detach();
                    }
                },
                async {
                    let _ = stopped.recv().await;
                },
            )));
        });
        EchoServer { addr, stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send_blocking(());
        self.thread.join().unwrap();
    }
}
