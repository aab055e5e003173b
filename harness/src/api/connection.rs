//! One client connection: the handshake (path, token, origin), then a loop that reads
//! requests, answers them, forwards the client's events, pings it and closes it.
//!
//! Everything a connection does runs inside its [`ConnectionHandler::handle`] future. Slow
//! requests (`service_action`, `deploy_package`) run as tasks on a small executor owned by that
//! future, so the connection keeps answering and forwarding events meanwhile; the future needs
//! no runtime's `spawn`.
//!
//! Backpressure: events wait in the connection's own bounded queue in the registry, which
//! never blocks the registry or other clients; when it overflows the oldest events are dropped
//! and the client is sent an `events_missed` event. A client that misses too many, or that
//! lets one message sit unwritten for the send timeout, is closed with code 1008 and a reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_io::Timer;
use async_net::TcpStream;
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use async_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use async_tungstenite::tungstenite::http::StatusCode;
use async_tungstenite::tungstenite::protocol::frame::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{Message as WsMessage, WebSocketConfig};
use futures_lite::{StreamExt as _, future};
use futures_util::SinkExt;
use serde_json::json;

use crate::api::auth::{AccessPolicy, Refusal};
use crate::api::protocol::{
    ApiError, ErrorCode, MessageType, PROTOCOL_VERSION, Request as ApiRequest, RequestId, encode,
    encode_error, parse_incoming,
};
use crate::api::server::{LiveGuard, Shared};
use crate::registry::{Event, RecvError, Subscription, TryRecvError};

/// The close code for a client that cannot keep up (RFC 6455 "policy violation").
const TOO_SLOW: u16 = 1008;

/// How many waiting events one write may carry.
const MAX_BATCH: usize = 256;

/// Why a connection ended other than by an orderly close.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The WebSocket handshake failed or was refused (bad path, token or origin).
    #[error("accept a WebSocket connection from {peer}: {source}")]
    Handshake {
        /// The client.
        peer: SocketAddr,
        /// What went wrong.
        #[source]
        source: WsError,
    },
    /// The client did not finish its handshake in time.
    #[error("accept a WebSocket connection from {peer}: no handshake within {timeout:?}")]
    HandshakeTimeout {
        /// The client.
        peer: SocketAddr,
        /// The time it had.
        timeout: Duration,
    },
    /// Reading or writing failed (the client vanished, or broke the protocol).
    #[error("talk to WebSocket client {peer}: {source}")]
    Io {
        /// The client.
        peer: SocketAddr,
        /// What went wrong.
        #[source]
        source: WsError,
    },
    /// The client could not keep up and was disconnected.
    #[error("serve WebSocket client {peer}: disconnected it as too slow ({reason})")]
    TooSlow {
        /// The client.
        peer: SocketAddr,
        /// What it failed to keep up with.
        reason: String,
    },
    /// The client sent a message larger than the limit and was disconnected.
    #[error(
        "serve WebSocket client {peer}: it sent a message of {size} bytes, over the limit of {limit}"
    )]
    MessageTooLarge {
        /// The client.
        peer: SocketAddr,
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// An accepted TCP connection, not yet a WebSocket: [`handle`](Self::handle) does the
/// handshake and then serves the client until it leaves or the server shuts down.
#[must_use = "a connection is served only when its `handle` future runs"]
pub struct ConnectionHandler {
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _live: LiveGuard,
}

impl std::fmt::Debug for ConnectionHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionHandler")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl ConnectionHandler {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) -> Self {
        let live = shared.track();
        ConnectionHandler {
            stream,
            peer,
            shared,
            _live: live,
        }
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Performs the handshake and serves the client. Ends with `Ok` when the client or the
    /// server closed the connection in order, and with the reason otherwise. Runs on any
    /// executor: spawn it with `smol::spawn`, `tokio::spawn`, or await it.
    pub async fn handle(self) -> Result<(), ConnectionError> {
        let ConnectionHandler {
            stream,
            peer,
            shared,
            _live,
        } = self;
        // Small request/response pairs should not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let limits = &shared.limits;
        let config = WebSocketConfig::default()
            .max_message_size(Some(limits.max_message_size))
            .max_frame_size(Some(limits.max_message_size));
        let gate = Gate {
            policy: &shared.policy,
            peer,
        };
        let handshake = async_tungstenite::accept_hdr_async_with_config(stream, gate, Some(config));
        let timeout = limits.handshake_timeout;
        let ws = future::or(async { Some(handshake.await) }, async {
            Timer::after(timeout).await;
            None
        })
        .await
        .ok_or(ConnectionError::HandshakeTimeout { peer, timeout })?
        .map_err(|source| ConnectionError::Handshake { peer, source })?;
        tracing::debug!(%peer, "WebSocket client connected");
        let ex = Executor::new();
        let session = Session::new(ws, peer, Arc::clone(&shared), &ex);
        let result = ex.run(session.run()).await;
        tracing::debug!(%peer, "WebSocket client gone");
        result
    }
}

/// The handshake's checks: the path (protocol version), then the origin and the token.
struct Gate<'a> {
    policy: &'a AccessPolicy,
    peer: SocketAddr,
}

impl Callback for Gate<'_> {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        match check_path(request).and_then(|()| self.policy.check(request)) {
            Ok(()) => Ok(response),
            Err(refusal) => {
                tracing::info!(
                    peer = %self.peer,
                    status = refusal.status.as_u16(),
                    "refused a WebSocket connection: {}",
                    refusal.message
                );
                Err(refusal.into_response())
            }
        }
    }
}

/// Accepts `/` and `/v1` (with or without a trailing slash); refuses a later version clearly
/// and anything else as not found.
fn check_path(request: &Request) -> Result<(), Refusal> {
    let path = request.uri().path().trim_end_matches('/');
    if path.is_empty() || path == format!("/v{PROTOCOL_VERSION}") {
        return Ok(());
    }
    if let Some(v) = path.strip_prefix("/v").and_then(|v| v.parse::<u64>().ok()) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("speak protocol version {v}: this server speaks version {PROTOCOL_VERSION}"),
        ));
    }
    Err(Refusal::new(
        StatusCode::NOT_FOUND,
        format!("open `{path}`: the WebSocket API is at `/` or `/v{PROTOCOL_VERSION}`"),
    ))
}

/// What woke the connection's loop.
enum Step {
    Frame(Option<Result<WsMessage, WsError>>),
    Answer(String),
    Event(Result<Arc<Event>, RecvError>),
    Shutdown,
    Tick,
}

/// How a serving loop ended.
enum End {
    /// The client closed, or vanished after its close.
    Closed,
    /// The server closes, with this code and reason.
    Close(u16, String, Option<ConnectionError>),
    /// Nothing more can be sent.
    Failed(ConnectionError),
}

struct Session<'ex> {
    ws: WebSocketStream<TcpStream>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    ex: &'ex Executor<'static>,
    subscription: Option<Subscription>,
    /// Events missed since the subscription's queue last ran empty.
    missed: u64,
    answers_tx: async_channel::Sender<String>,
    answers_rx: async_channel::Receiver<String>,
    in_flight: Arc<AtomicUsize>,
    last_heard: Instant,
}

impl<'ex> Session<'ex> {
    fn new(
        ws: WebSocketStream<TcpStream>,
        peer: SocketAddr,
        shared: Arc<Shared>,
        ex: &'ex Executor<'static>,
    ) -> Self {
        let (answers_tx, answers_rx) = async_channel::bounded(64);
        Session {
            ws,
            peer,
            shared,
            ex,
            subscription: None,
            missed: 0,
            answers_tx,
            answers_rx,
            in_flight: Arc::new(AtomicUsize::new(0)),
            last_heard: Instant::now(),
        }
    }

    async fn run(mut self) -> Result<(), ConnectionError> {
        let end = self.serve().await;
        match end {
            End::Closed => Ok(()),
            End::Failed(e) => Err(e),
            End::Close(code, reason, error) => {
                self.close(code, &reason).await;
                error.map_or(Ok(()), Err)
            }
        }
    }

    async fn serve(&mut self) -> End {
        let mut ticker = self.shared.limits.ping_interval.map(Timer::interval);
        loop {
            let step = {
                let Session {
                    ws,
                    answers_rx,
                    subscription,
                    shared,
                    ..
                } = &mut *self;
                let frame = async { Step::Frame(ws.next().await) };
                let answer = async {
                    // The session holds a sender, so the channel never closes under it.
                    match answers_rx.recv().await {
                        Ok(text) => Step::Answer(text),
                        Err(_) => future::pending().await,
                    }
                };
                let event = async {
                    match subscription {
                        Some(sub) => Step::Event(sub.recv().await),
                        None => future::pending().await,
                    }
                };
                let shutdown = async {
                    shared.shutdown.wait().await;
                    Step::Shutdown
                };
                let tick = async {
                    match &mut ticker {
                        Some(t) => {
                            t.next().await;
                            Step::Tick
                        }
                        None => future::pending().await,
                    }
                };
                // Reading and writing take turns at random, so neither a flood of requests nor
                // a flood of events starves the other.
                future::race(
                    frame,
                    future::or(answer, future::or(event, future::or(shutdown, tick))),
                )
                .await
            };
            let outcome = match step {
                Step::Frame(frame) => self.on_frame(frame).await,
                Step::Answer(text) => self.send(text).await,
                Step::Event(event) => self.on_event(event).await,
                Step::Shutdown => Err(End::Close(1001, "server shutting down".into(), None)),
                Step::Tick => self.on_tick().await,
            };
            if let Err(end) = outcome {
                return end;
            }
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<WsMessage, WsError>>) -> Result<(), End> {
        self.last_heard = Instant::now();
        let message = match frame {
            None => return Err(End::Closed),
            Some(Ok(message)) => message,
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                let error = ApiError::new(
                    ErrorCode::MessageTooLarge,
                    format!("read message: {size} bytes is over the limit of {max_size} bytes"),
                );
                // Best effort: the client may not be reading.
                let _ = self.send(encode_error(None, "", &error)).await;
                return Err(End::Close(
                    1009,
                    format!("message over the limit of {max_size} bytes"),
                    Some(ConnectionError::MessageTooLarge {
                        peer: self.peer,
                        size,
                        limit: max_size,
                    }),
                ));
            }
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                return Err(End::Closed);
            }
            Some(Err(source)) => {
                return Err(End::Failed(ConnectionError::Io {
                    peer: self.peer,
                    source,
                }));
            }
        };
        match message {
            WsMessage::Text(text) => self.on_text(&text).await,
            WsMessage::Binary(_) => {
                let error = ApiError::new(
                    ErrorCode::InvalidRequest,
                    "read message: it is binary; requests are JSON in text messages",
                );
                self.send(encode_error(None, "", &error)).await
            }
            // tungstenite answers pings itself and replies to a close; the next read then
            // ends the stream.
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Close(_) | WsMessage::Frame(_) => {
                Ok(())
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let incoming = parse_incoming(text);
        let id = incoming.id;
        let action = incoming.action;
        let request = match incoming.request {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(peer = %self.peer, %action, "refused a request: {error}");
                return self.send(encode_error(id.as_ref(), &action, &error)).await;
            }
        };
        match request {
            ApiRequest::Subscribe(params) => {
                let filter = params.to_filter();
                let registry = &self.shared.backend.registry;
                // A new subscription replaces the old one and its queue: from the answer on,
                // the client gets exactly the events that pass the new filter.
                self.subscription =
                    Some(registry.subscribe_with(filter, self.shared.limits.event_queue));
                self.missed = 0;
                let answer = json!({
                    "services": params.services,
                    "events": params.events,
                    "last_sequence": registry.last_sequence(),
                });
                self.send(encode(id.as_ref(), MessageType::Response, &action, &answer))
                    .await
            }
            ApiRequest::Unsubscribe => {
                let was = self.subscription.take().is_some();
                let answer = json!({ "subscribed": false, "was_subscribed": was });
                self.send(encode(id.as_ref(), MessageType::Response, &action, &answer))
                    .await
            }
            request if request.is_slow() => {
                let limit = self.shared.limits.max_in_flight;
                if self.in_flight.load(Ordering::Acquire) >= limit {
                    let error = ApiError::new(
                        ErrorCode::Busy,
                        format!(
                            "run action `{action}`: {limit} requests are already under way on \
                             this connection"
                        ),
                    );
                    return self.send(encode_error(id.as_ref(), &action, &error)).await;
                }
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                let backend = self.shared.backend.clone();
                let answers = self.answers_tx.clone();
                let in_flight = Arc::clone(&self.in_flight);
                self.ex
                    .spawn(async move {
                        let text = answer(id.as_ref(), &action, backend.execute(request).await);
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                        // Fails only when the connection is gone, and the answer with it.
                        let _ = answers.send(text).await;
                    })
                    .detach();
                Ok(())
            }
            request => {
                let result = self.shared.backend.execute(request).await;
                self.send(answer(id.as_ref(), &action, result)).await
            }
        }
    }

    /// Sends an event and whatever else is already waiting in the queue (up to a bound), in
    /// one write: under a burst, one system call carries many events.
    async fn on_event(&mut self, event: Result<Arc<Event>, RecvError>) -> Result<(), End> {
        self.queue_event(event).await?;
        for _ in 0..MAX_BATCH {
            let Some(sub) = &mut self.subscription else {
                break;
            };
            let next = match sub.try_recv() {
                Ok(event) => Ok(event),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                Err(TryRecvError::Empty) => break,
            };
            self.queue_event(next).await?;
        }
        self.write(None).await
    }

    /// Queues one event (or a report of missed ones) for the next flush.
    async fn queue_event(&mut self, event: Result<Arc<Event>, RecvError>) -> Result<(), End> {
        match event {
            Ok(event) => {
                if self
                    .subscription
                    .as_ref()
                    .is_some_and(Subscription::is_empty)
                {
                    self.missed = 0;
                }
                let text = encode(
                    None,
                    MessageType::Event,
                    event.event.kind().as_str(),
                    &*event,
                );
                self.write(Some(WsMessage::text(text))).await
            }
            Err(RecvError::Lagged(n)) => {
                self.missed += n;
                tracing::debug!(peer = %self.peer, missed = n, "WebSocket client fell behind");
                let limit = self.shared.limits.max_missed_events;
                if self.missed > limit {
                    let reason = format!("too slow: missed {} events", self.missed);
                    return Err(End::Close(
                        TOO_SLOW,
                        reason.clone(),
                        Some(ConnectionError::TooSlow {
                            peer: self.peer,
                            reason,
                        }),
                    ));
                }
                let params = json!({ "missed": n });
                let text = encode(None, MessageType::Event, "events_missed", &params);
                self.write(Some(WsMessage::text(text))).await
            }
            Err(RecvError::Closed) => {
                // The registry is gone: no more events will come.
                self.subscription = None;
                Ok(())
            }
        }
    }

    async fn on_tick(&mut self) -> Result<(), End> {
        let Some(interval) = self.shared.limits.ping_interval else {
            return Ok(());
        };
        if self.last_heard.elapsed() > 2 * interval {
            return Err(End::Close(
                1001,
                format!("no answer to pings for {:?}", 2 * interval),
                None,
            ));
        }
        self.send_message(WsMessage::Ping(Default::default())).await
    }

    async fn send(&mut self, text: String) -> Result<(), End> {
        self.send_message(WsMessage::text(text)).await
    }

    async fn send_message(&mut self, message: WsMessage) -> Result<(), End> {
        self.write(Some(message)).await?;
        self.write(None).await
    }

    /// Queues `message` for sending, or with `None` flushes what is queued, giving up when it
    /// makes no progress for the send timeout: the client is then stuck, and is closed.
    async fn write(&mut self, message: Option<WsMessage>) -> Result<(), End> {
        let timeout = self.shared.limits.send_timeout;
        let ws = &mut self.ws;
        let sent = future::or(
            async {
                Some(match message {
                    Some(message) => SinkExt::feed(ws, message).await,
                    None => SinkExt::flush(ws).await,
                })
            },
            async {
                Timer::after(timeout).await;
                None
            },
        )
        .await;
        match sent {
            Some(Ok(())) => Ok(()),
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => Err(End::Closed),
            Some(Err(source)) => Err(End::Failed(ConnectionError::Io {
                peer: self.peer,
                source,
            })),
            None => {
                let reason = format!("too slow: a message waited {timeout:?} to be sent");
                Err(End::Close(
                    TOO_SLOW,
                    reason.clone(),
                    Some(ConnectionError::TooSlow {
                        peer: self.peer,
                        reason,
                    }),
                ))
            }
        }
    }

    /// Sends a close frame and waits for the client's answer, all within the close timeout;
    /// then the connection is dropped either way.
    async fn close(&mut self, code: u16, reason: &str) {
        tracing::debug!(peer = %self.peer, code, reason, "closing a WebSocket connection");
        let frame = CloseFrame {
            code: CloseCode::from(code),
            // A close frame's reason has room for 123 bytes.
            reason: truncate(reason, 123).into(),
        };
        let ws = &mut self.ws;
        let handshake = async {
            if ws.close(Some(frame)).await.is_err() {
                return;
            }
            // Read until the client's close arrives and the stream ends.
            while let Some(Ok(_)) = ws.next().await {}
        };
        let timeout = self.shared.limits.close_timeout;
        future::or(handshake, async {
            Timer::after(timeout).await;
        })
        .await;
    }
}

/// The answer to a request: a response, or an error.
fn answer(
    id: Option<&RequestId>,
    action: &str,
    result: Result<serde_json::Value, ApiError>,
) -> String {
    match result {
        Ok(params) => encode(id, MessageType::Response, action, &params),
        Err(error) => encode_error(id, action, &error),
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(uri: &str) -> Option<u16> {
        let request = Request::builder().uri(uri).body(()).unwrap();
        check_path(&request).err().map(|r| r.status.as_u16())
    }

    #[test]
    fn paths_and_versions() {
        assert_eq!(status("/"), None);
        assert_eq!(status("/v1"), None);
        assert_eq!(status("/v1/?token=x"), None);
        assert_eq!(status("/v2"), Some(400));
        assert_eq!(status("/api"), Some(404));
        let request = Request::builder().uri("/v7").body(()).unwrap();
        let refusal = check_path(&request).unwrap_err();
        assert_eq!(
            refusal.message,
            "speak protocol version 7: this server speaks version 1"
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
    }
}
