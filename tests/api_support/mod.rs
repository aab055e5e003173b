//! A small WebSocket client for the API tests, over async-tungstenite, with requests correlated
//! by id and events kept aside until asked for.

#![allow(
    dead_code,
    reason = "each test file uses a different part of this module"
)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use async_net::TcpStream;
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message as WsMessage;
use async_tungstenite::tungstenite::client::IntoClientRequest as _;
use async_tungstenite::tungstenite::error::Error as WsError;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use futures_lite::{StreamExt as _, future};
use serde_json::{Value, json};

/// How long a test waits for any one message before failing.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct Client {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Events that arrived while waiting for a response.
    events: VecDeque<Value>,
}

/// The outcome of a handshake the server may refuse: the client, or the HTTP status and body.
pub async fn try_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Client, (u16, String)> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        let name = async_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
            .expect("a valid header name");
        request
            .headers_mut()
            .insert(name, v.parse().expect("a valid header value"));
    }
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the server");
    match async_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => Ok(Client {
            ws,
            next_id: 0,
            events: VecDeque::new(),
        }),
        Err(WsError::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(e) => panic!("handshake with {addr} failed: {e}"),
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        try_connect(addr, "/", &[])
            .await
            .unwrap_or_else(|(status, body)| panic!("refused with {status}: {body}"))
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(WsMessage::text(text.into()))
            .await
            .expect("send a message");
    }

    /// Sends a request without waiting; returns its id.
    pub async fn send_request(&mut self, action: &str, params: Value) -> String {
        self.next_id += 1;
        let id = format!("r{}", self.next_id);
        let message = json!({"id": id, "type": "request", "action": action, "params": params});
        self.send_text(message.to_string()).await;
        id
    }

    /// The next message of any kind, as JSON; panics on a close, an error or a timeout.
    pub async fn recv(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).expect("the server sends JSON")
    }

    /// The next message of any kind, as the text the server sent; panics on a close, an error
    /// or a timeout.
    pub async fn recv_text(&mut self) -> String {
        loop {
            match self.next_frame().await {
                Some(WsMessage::Text(t)) => return t.to_string(),
                Some(WsMessage::Ping(_) | WsMessage::Pong(_)) => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The next frame, or `None` when the stream ended; panics on a timeout.
    pub async fn next_frame(&mut self) -> Option<WsMessage> {
        let next = future::or(async { Some(self.ws.next().await) }, async {
            async_io::Timer::after(TIMEOUT).await;
            None
        })
        .await
        .expect("no message within the timeout");
        match next {
            None => None,
            Some(Ok(m)) => Some(m),
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => None,
            Some(Err(e)) => panic!("read from the server: {e}"),
        }
    }

    /// Sends a request and returns its answer (a response or an error), keeping any events
    /// that arrive meanwhile for [`Client::event`].
    pub async fn request(&mut self, action: &str, params: Value) -> Value {
        let id = self.send_request(action, params).await;
        self.answer_to(&id).await
    }

    /// Waits for the answer to request `id`.
    pub async fn answer_to(&mut self, id: &str) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] == "event" {
                self.events.push_back(message);
                continue;
            }
            assert_eq!(message["id"], id, "answers come in order here: {message}");
            return message;
        }
    }

    /// A request that must succeed; returns its `params`.
    pub async fn ok(&mut self, action: &str, params: Value) -> Value {
        let answer = self.request(action, params).await;
        assert_eq!(answer["type"], "response", "{action} failed: {answer}");
        answer["params"].clone()
    }

    /// A request that must fail; returns its error `params` (`code`, `message`).
    pub async fn err(&mut self, action: &str, params: Value) -> Value {
        let answer = self.request(action, params).await;
        assert_eq!(answer["type"], "error", "{action} should fail: {answer}");
        answer["params"].clone()
    }

    /// The next event.
    pub async fn event(&mut self) -> Value {
        if let Some(e) = self.events.pop_front() {
            return e;
        }
        let message = self.recv().await;
        assert_eq!(message["type"], "event", "expected an event: {message}");
        message
    }

    /// Reads until the server's close frame; returns it (code, reason). Events and other
    /// messages before it are returned too.
    pub async fn until_close(&mut self) -> (Vec<Value>, Option<(u16, String)>) {
        let mut before = Vec::new();
        loop {
            match self.next_frame().await {
                Some(WsMessage::Text(t)) => before.push(serde_json::from_str(&t).unwrap()),
                Some(WsMessage::Close(frame)) => {
                    let frame =
                        frame.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string()));
                    // Let tungstenite answer the close and see the end of the stream.
                    while self.next_frame().await.is_some() {}
                    return (before, frame);
                }
                Some(_) => {}
                None => return (before, None),
            }
        }
    }

    /// Closes in order: sends a close frame and waits for the server's.
    pub async fn close(mut self) {
        self.ws.close(None).await.expect("send a close frame");
        while self.next_frame().await.is_some() {}
    }

    /// The raw stream, for tests that misbehave on purpose.
    pub fn into_inner(self) -> WebSocketStream<TcpStream> {
        self.ws
    }
}

/// Waits until `f` is true, polling; panics after [`TIMEOUT`].
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting until {what}");
        async_io::Timer::after(Duration::from_millis(10)).await;
    }
}
