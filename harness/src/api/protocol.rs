//! The JSON messages of the WebSocket API: the envelope every message shares, the requests a
//! client may send with their parameters, and the errors the server answers with.
//!
//! Every message, in both directions, is one JSON object in one text frame:
//!
//! ```json
//! {"id": "123", "type": "request", "action": "list_services", "params": {}}
//! ```
//!
//! The server answers a request with a `response` (or an `error`) carrying the same `id`, and
//! pushes `event`s, which have no `id`, to subscribed clients. `docs/protocol.md` is the full
//! specification.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::registry::{EventFilter, EventKind};

/// The protocol's major version. A client may name the version it speaks (a `version` field in
/// a request, or the `/v1` path); a higher major version is refused with
/// [`ErrorCode::UnsupportedVersion`], so that a future, incompatible protocol fails clearly
/// instead of being misread.
pub const PROTOCOL_VERSION: u64 = 1;

/// The `type` of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    /// From a client: do something and answer.
    Request,
    /// From the server: the answer to a request, with the request's `id`.
    Response,
    /// From the server: something happened (to a client that subscribed).
    Event,
    /// From the server: a request, or a message that was meant as one, was refused.
    Error,
}

impl MessageType {
    /// The JSON name: `"request"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Request => "request",
            MessageType::Response => "response",
            MessageType::Event => "event",
            MessageType::Error => "error",
        }
    }
}

/// A request's `id`, echoed in its answer: a string or a number, as the client chose.
///
/// A number is kept as the client wrote it ([`RawNumber`]), so that it comes back byte for
/// byte: `12345678901234567890123`, `9007199254740993` (above 2^53, where a double loses
/// integers) and `1.50` are answered with the very same characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum RequestId {
    /// `"id": "123"`.
    Text(String),
    /// `"id": 123`.
    Number(RawNumber),
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        RequestId::from_raw(raw).map_err(|other| {
            serde::de::Error::custom(format!("an id must be a string or a number, not {other}"))
        })
    }
}

impl RequestId {
    /// The id whose JSON text is `raw`; gives `raw` back if it is neither a string nor a
    /// number.
    fn from_raw(raw: Box<RawValue>) -> Result<RequestId, Box<RawValue>> {
        match raw.get().as_bytes().first() {
            Some(b'"') => match serde_json::from_str(raw.get()) {
                Ok(text) => Ok(RequestId::Text(text)),
                Err(_) => Err(raw),
            },
            Some(b'-' | b'0'..=b'9') => Ok(RequestId::Number(RawNumber(raw))),
            _ => Err(raw),
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Text(s) => write!(f, "{s:?}"),
            RequestId::Number(n) => write!(f, "{n}"),
        }
    }
}

impl From<&str> for RequestId {
    fn from(s: &str) -> Self {
        RequestId::Text(s.to_owned())
    }
}

impl From<String> for RequestId {
    fn from(s: String) -> Self {
        RequestId::Text(s)
    }
}

impl From<u64> for RequestId {
    fn from(n: u64) -> Self {
        RequestId::Number(RawNumber::from(n))
    }
}

/// A JSON number exactly as it was written: its text, never converted to an integer or a
/// double, so that it serializes to the same characters whatever its size or precision.
#[derive(Debug, Clone)]
pub struct RawNumber(Box<RawValue>);

impl RawNumber {
    /// The number's JSON text, `12345678901234567890123`.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl From<u64> for RawNumber {
    fn from(n: u64) -> Self {
        RawNumber(RawValue::from_string(n.to_string()).expect("an integer is valid JSON"))
    }
}

impl PartialEq for RawNumber {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RawNumber {}

impl std::hash::Hash for RawNumber {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for RawNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RawNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// One message, in either direction: the envelope of the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The request's id; on responses and errors, the id of the request answered. Events
    /// have none, and neither has an error about a message whose id could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
    /// What kind of message this is.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// The action requested or answered, or the event's type.
    pub action: String,
    /// The request's parameters, the response's result, the event's data or the error's
    /// `code` and `message`: always an object.
    #[serde(default)]
    pub params: Value,
    /// The protocol version; the server puts it on every message it sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl Message {
    /// A request from a client.
    pub fn request(id: impl Into<RequestId>, action: impl Into<String>, params: Value) -> Self {
        Message {
            id: Some(id.into()),
            kind: MessageType::Request,
            action: action.into(),
            params,
            version: None,
        }
    }

    /// The message as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a message of JSON values always serializes")
    }

    /// If this is an error message, its code and text.
    pub fn error(&self) -> Option<ApiError> {
        (self.kind == MessageType::Error)
            .then(|| serde_json::from_value(self.params.clone()).ok())
            .flatten()
    }
}

/// Serializes a server message without building a [`Value`] first: the hot path for events
/// and responses.
pub(crate) fn encode<P: Serialize + ?Sized>(
    id: Option<&RequestId>,
    kind: MessageType,
    action: &str,
    params: &P,
) -> String {
    #[derive(Serialize)]
    struct Out<'a, P: ?Sized> {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        #[serde(rename = "type")]
        kind: MessageType,
        action: &'a str,
        params: &'a P,
        version: u64,
    }
    let out = Out {
        id,
        kind,
        action,
        params,
        version: PROTOCOL_VERSION,
    };
    // Every params type here is made of strings, numbers, maps with string keys and sequences,
    // which serde_json always serializes.
    serde_json::to_string(&out).expect("a protocol message always serializes")
}

/// An error message for `request` (which may be `None` when the text could not be read).
pub(crate) fn encode_error(id: Option<&RequestId>, action: &str, error: &ApiError) -> String {
    encode(id, MessageType::Error, action, error)
}

/// Why a request was refused: the `params` of an `error` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people: a fragment that reads after "failed to ...".
    pub message: String,
}

impl ApiError {
    /// An error with that code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// The `code` of an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The text frame is not JSON.
    ParseError,
    /// The JSON is not a request: not an object, no `action`, a bad `id` or `type`, or a
    /// binary frame.
    InvalidRequest,
    /// No such action.
    UnknownAction,
    /// The action's parameters are missing or wrong.
    InvalidParams,
    /// The request names a protocol version this server does not speak.
    UnsupportedVersion,
    /// The service (or endpoint) named does not exist.
    NotFound,
    /// The registry refused the change (an invalid state transition, a dependency rule).
    Conflict,
    /// `service_action` on a server that has no [`ServiceController`](crate::api::ServiceController).
    NoController,
    /// `deploy_package` on a server that has no [`Deployer`](crate::api::Deployer).
    NoDeployer,
    /// The controller or deployer tried and failed.
    ActionFailed,
    /// Too many requests are being worked on for this connection; try again after an answer.
    Busy,
    /// The message is larger than the server's limit; the connection is then closed.
    MessageTooLarge,
}

/// A request the server understood: its action and typed parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `hello`: the protocol version, the server's version, its actions and event types.
    Hello,
    /// `list_services`: every service, optionally only some states.
    ListServices(ListServicesParams),
    /// `get_service`: one service's entry and its dependents.
    GetService(ServiceParams),
    /// `service_action`: start, stop or restart a service through the controller.
    ServiceAction(ServiceActionParams),
    /// `list_endpoints`: the endpoints of one service, or of all.
    ListEndpoints(ListEndpointsParams),
    /// `deploy_package`: deploy a package through the deployer.
    DeployPackage(DeployRequest),
    /// `subscribe`: receive events that pass a filter (replacing any earlier filter).
    Subscribe(SubscribeParams),
    /// `unsubscribe`: receive no more events.
    Unsubscribe,
}

/// The actions a client may request, by name.
pub const ACTIONS: [&str; 8] = [
    "hello",
    "list_services",
    "get_service",
    "service_action",
    "list_endpoints",
    "deploy_package",
    "subscribe",
    "unsubscribe",
];

impl Request {
    /// Reads an action and its `params` object into a typed request.
    pub fn parse(action: &str, params: Value) -> Result<Request, ApiError> {
        Ok(match action {
            "hello" => Request::Hello,
            "list_services" => Request::ListServices(params_of(action, params)?),
            "get_service" => Request::GetService(params_of(action, params)?),
            "service_action" => Request::ServiceAction(params_of(action, params)?),
            "list_endpoints" => Request::ListEndpoints(params_of(action, params)?),
            "deploy_package" => Request::DeployPackage(params_of(action, params)?),
            "subscribe" => Request::Subscribe(params_of(action, params)?),
            "unsubscribe" => Request::Unsubscribe,
            other => {
                return Err(ApiError::new(
                    ErrorCode::UnknownAction,
                    format!(
                        "run action `{other}`: no such action (known: {})",
                        ACTIONS.join(", ")
                    ),
                ));
            }
        })
    }

    /// Whether the request may take long (it runs a controller or a deployer), so that the
    /// connection answers other requests meanwhile.
    pub(crate) fn is_slow(&self) -> bool {
        matches!(self, Request::ServiceAction(_) | Request::DeployPackage(_))
    }
}

fn params_of<T: DeserializeOwned>(action: &str, params: Value) -> Result<T, ApiError> {
    serde_json::from_value(params).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidParams,
            format!("run action `{action}`: invalid params: {e}"),
        )
    })
}

/// `list_services` params.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListServicesParams {
    /// Only services in these states (`"running"`, `"failed"`), if given.
    #[serde(default)]
    pub states: Option<BTreeSet<crate::registry::StateKind>>,
}

/// Params naming one service: `{"name": "api"}` (or `{"service": "api"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceParams {
    /// The service's name.
    #[serde(alias = "service")]
    pub name: String,
}

/// What `service_action` asks the controller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceCommand {
    /// Start a stopped, pending or failed service.
    Start,
    /// Stop a service.
    Stop,
    /// Stop it, then start it again.
    Restart,
}

impl ServiceCommand {
    /// The JSON name: `"restart"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceCommand::Start => "start",
            ServiceCommand::Stop => "stop",
            ServiceCommand::Restart => "restart",
        }
    }
}

impl fmt::Display for ServiceCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `service_action` params: `{"service": "api", "action": "restart"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceActionParams {
    /// The service's name.
    #[serde(alias = "name")]
    pub service: String,
    /// What to do.
    #[serde(alias = "command")]
    pub action: ServiceCommand,
}

/// `list_endpoints` params: `{}` for every service's endpoints, `{"service": "api"}` for one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEndpointsParams {
    /// Only this service's endpoints, if given.
    #[serde(default, alias = "name")]
    pub service: Option<String>,
}

/// `deploy_package` params: what to deploy, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The package: a path to a package file or directory the server can read, or a name the
    /// deployer knows.
    pub package: String,
    /// The host to deploy to; this machine if not given.
    #[serde(default)]
    pub host: Option<String>,
    /// The service the deployment is for; the package's name if not given.
    #[serde(default)]
    pub service: Option<String>,
    /// Anything else the deployer understands (a user, a version to roll back to).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub options: Map<String, Value>,
}

/// `subscribe` params: which events to receive. Both fields are optional; an absent field lets
/// everything through, and an event must pass both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeParams {
    /// Only events about these services.
    #[serde(default)]
    pub services: Option<BTreeSet<String>>,
    /// Only events of these types (`"service_state_changed"`, `"endpoint_updated"`, ...).
    #[serde(default, alias = "types")]
    pub events: Option<BTreeSet<EventKind>>,
}

impl SubscribeParams {
    /// The registry filter these params describe.
    pub fn to_filter(&self) -> EventFilter {
        EventFilter {
            services: self.services.clone(),
            kinds: self.events.clone(),
        }
    }
}

/// A JSON object's members as raw values, in order, duplicates included.
struct RawObject<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    fields.push(member);
                }
                Ok(RawObject(fields))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// An incoming text frame, read as far as it could be: what the answer needs even when the
/// request is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The request's id, if one could be read.
    pub id: Option<RequestId>,
    /// The action named, or `""` if none could be read.
    pub action: String,
    /// The request, or why it is refused.
    pub request: Result<Request, ApiError>,
}

/// Reads one text frame from a client. Never fails: a bad frame becomes an [`Incoming`] whose
/// `request` is the error to answer with, carrying the id when it could be read.
pub fn parse_incoming(text: &str) -> Incoming {
    let bad = |id, action: String, code, message: String| Incoming {
        id,
        action,
        request: Err(ApiError::new(code, message)),
    };
    // The top level is read as raw values first, so that the id keeps the client's exact
    // characters (a number read as a `Value` would be rounded); the rest is then read as
    // values. A duplicated key counts once, the last time, as it would in a `Value`.
    let fields: Vec<(String, &RawValue)> = match serde_json::from_str::<RawObject<'_>>(text) {
        Ok(RawObject(fields)) => fields,
        Err(_) => {
            return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => bad(
                    None,
                    String::new(),
                    ErrorCode::InvalidRequest,
                    "read message: it is not a JSON object".into(),
                ),
                Err(e) => bad(
                    None,
                    String::new(),
                    ErrorCode::ParseError,
                    format!("parse message: {e}"),
                ),
            };
        }
    };
    // The id is read first, so that an error about any other field still carries it.
    let raw_id = fields.iter().rev().find(|(key, _)| key == "id");
    let id = match raw_id.map(|(_, raw)| (*raw).to_owned()) {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => match RequestId::from_raw(raw) {
            Ok(id) => Some(id),
            Err(_) => {
                return bad(
                    None,
                    String::new(),
                    ErrorCode::InvalidRequest,
                    "read message: `id` must be a string or a number".into(),
                );
            }
        },
    };
    let mut object = Map::new();
    for (key, raw) in fields {
        if key == "id" {
            continue;
        }
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(value) => {
                object.insert(key, value);
            }
            // A number beyond what a double holds (`1e400`) outside the id.
            Err(e) => {
                return bad(
                    id,
                    String::new(),
                    ErrorCode::ParseError,
                    format!("parse message: field `{key}`: {e}"),
                );
            }
        }
    }
    let action = match object.remove("action") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => {
            return bad(
                id,
                String::new(),
                ErrorCode::InvalidRequest,
                "read message: it has no `action`".into(),
            );
        }
        Some(_) => {
            return bad(
                id,
                String::new(),
                ErrorCode::InvalidRequest,
                "read message: `action` must be a string".into(),
            );
        }
    };
    // A client that leaves out `type` means a request; anything else is not for a server.
    match object.remove("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == "request" => {}
        Some(other) => {
            return bad(
                id,
                action,
                ErrorCode::InvalidRequest,
                format!("read message: `type` must be \"request\", not {other}"),
            );
        }
    }
    match object.remove("version") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v >= 1) => {
            let v = n.as_u64().unwrap_or_default();
            if v > PROTOCOL_VERSION {
                return bad(
                    id,
                    action,
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "speak protocol version {v}: this server speaks version {PROTOCOL_VERSION}"
                    ),
                );
            }
        }
        Some(other) => {
            return bad(
                id,
                action,
                ErrorCode::InvalidRequest,
                format!("read message: `version` must be a positive integer, not {other}"),
            );
        }
    }
    let params = match object.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p,
        Some(other) => {
            return bad(
                id,
                action.clone(),
                ErrorCode::InvalidParams,
                format!("run action `{action}`: `params` must be an object, not {other}"),
            );
        }
    };
    let request = Request::parse(&action, params);
    Incoming {
        id,
        action,
        request,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Incoming {
        parse_incoming(&v.to_string())
    }

    fn code(i: &Incoming) -> ErrorCode {
        i.request.as_ref().unwrap_err().code
    }

    #[test]
    fn the_seed_request_parses() {
        let i =
            parse(json!({"id": "123", "type": "request", "action": "list_services", "params": {}}));
        assert_eq!(i.id, Some(RequestId::from("123")));
        assert_eq!(i.action, "list_services");
        assert_eq!(
            i.request,
            Ok(Request::ListServices(ListServicesParams::default()))
        );
    }

    #[test]
    fn every_action_parses_with_its_params() {
        let cases = [
            (json!({"action": "hello"}), Request::Hello),
            (
                json!({"action": "list_services", "params": {"states": ["running", "failed"]}}),
                Request::ListServices(ListServicesParams {
                    states: Some(
                        [
                            crate::registry::StateKind::Running,
                            crate::registry::StateKind::Failed,
                        ]
                        .into(),
                    ),
                }),
            ),
            (
                json!({"action": "get_service", "params": {"name": "api"}}),
                Request::GetService(ServiceParams { name: "api".into() }),
            ),
            (
                json!({"action": "get_service", "params": {"service": "api"}}),
                Request::GetService(ServiceParams { name: "api".into() }),
            ),
            (
                json!({"action": "service_action", "params": {"service": "db", "action": "restart"}}),
                Request::ServiceAction(ServiceActionParams {
                    service: "db".into(),
                    action: ServiceCommand::Restart,
                }),
            ),
            (
                json!({"action": "list_endpoints"}),
                Request::ListEndpoints(ListEndpointsParams::default()),
            ),
            (
                json!({"action": "list_endpoints", "params": {"service": "db"}}),
                Request::ListEndpoints(ListEndpointsParams {
                    service: Some("db".into()),
                }),
            ),
            (
                json!({"action": "deploy_package", "params": {"package": "kv-1.0.tar.gz", "host": "h1"}}),
                Request::DeployPackage(DeployRequest {
                    package: "kv-1.0.tar.gz".into(),
                    host: Some("h1".into()),
                    service: None,
                    options: Map::new(),
                }),
            ),
            (
                json!({"action": "subscribe", "params": {"services": ["db"], "events": ["endpoint_updated"]}}),
                Request::Subscribe(SubscribeParams {
                    services: Some(["db".to_owned()].into()),
                    events: Some([EventKind::EndpointUpdated].into()),
                }),
            ),
            (
                json!({"action": "subscribe"}),
                Request::Subscribe(SubscribeParams::default()),
            ),
            (
                json!({"action": "unsubscribe", "params": null}),
                Request::Unsubscribe,
            ),
        ];
        for (message, expected) in cases {
            let got = parse(message.clone());
            assert_eq!(got.request, Ok(expected), "{message}");
        }
        // Every action named in ACTIONS is known to the parser.
        for action in ACTIONS {
            let got = parse(json!({"action": action}));
            assert_ne!(
                got.request.err().map(|e| e.code),
                Some(ErrorCode::UnknownAction),
                "{action}"
            );
        }
    }

    #[test]
    fn bad_messages_get_the_right_code_and_keep_the_id_when_readable() {
        let cases = [
            ("not json", None, ErrorCode::ParseError),
            ("[1, 2]", None, ErrorCode::InvalidRequest),
            (
                r#"{"id": {"a": 1}, "action": "hello"}"#,
                None,
                ErrorCode::InvalidRequest,
            ),
            (r#"{"id": "7"}"#, Some("7"), ErrorCode::InvalidRequest),
            (
                r#"{"id": "7", "action": 5}"#,
                Some("7"),
                ErrorCode::InvalidRequest,
            ),
            (
                r#"{"id": "7", "action": "fly"}"#,
                Some("7"),
                ErrorCode::UnknownAction,
            ),
            (
                r#"{"id": "7", "type": "response", "action": "hello"}"#,
                Some("7"),
                ErrorCode::InvalidRequest,
            ),
            (
                r#"{"id": "7", "action": "get_service"}"#,
                Some("7"),
                ErrorCode::InvalidParams,
            ),
            (
                r#"{"id": "7", "action": "get_service", "params": {"name": 3}}"#,
                Some("7"),
                ErrorCode::InvalidParams,
            ),
            (
                r#"{"id": "7", "action": "get_service", "params": [1]}"#,
                Some("7"),
                ErrorCode::InvalidParams,
            ),
            (
                r#"{"id": "7", "action": "service_action", "params": {"service": "a", "action": "explode"}}"#,
                Some("7"),
                ErrorCode::InvalidParams,
            ),
            (
                r#"{"id": "7", "action": "subscribe", "params": {"events": ["nope"]}}"#,
                Some("7"),
                ErrorCode::InvalidParams,
            ),
            (
                r#"{"id": "7", "version": 2, "action": "hello"}"#,
                Some("7"),
                ErrorCode::UnsupportedVersion,
            ),
            (
                r#"{"id": "7", "version": "one", "action": "hello"}"#,
                Some("7"),
                ErrorCode::InvalidRequest,
            ),
        ];
        for (text, id, expected) in cases {
            let got = parse_incoming(text);
            assert_eq!(got.id, id.map(RequestId::from), "{text}");
            assert_eq!(code(&got), expected, "{text}");
        }
    }

    #[test]
    fn a_numeric_id_keeps_its_characters_both_ways() {
        let text = r#"{"id": 18446744073709551617, "action": "hello"}"#;
        let id = parse_incoming(text).id.unwrap();
        assert_eq!(id.to_string(), "18446744073709551617");
        let answer = encode(Some(&id), MessageType::Response, "hello", &json!({}));
        assert!(
            answer.starts_with(r#"{"id":18446744073709551617,"#),
            "{answer}"
        );
        // A client reading the answer gets the same id back.
        let message: Message = serde_json::from_str(&answer).unwrap();
        assert_eq!(message.id, Some(id));
        assert_eq!(
            Message::request(7, "hello", json!({})).to_json(),
            r#"{"id":7,"type":"request","action":"hello","params":{}}"#
        );
        let bad: Result<Message, _> =
            serde_json::from_str(r#"{"id": [1], "type": "request", "action": "x"}"#);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("must be a string or a number")
        );
    }

    #[test]
    fn error_messages_say_what_was_wrong() {
        let unknown = parse(json!({"action": "fly"})).request.unwrap_err();
        assert!(unknown.message.contains("`fly`") && unknown.message.contains("list_services"));
        let missing = parse(json!({"action": "get_service"})).request.unwrap_err();
        assert!(
            missing.message.contains("missing field `name`"),
            "{}",
            missing.message
        );
        let kind = parse(json!({"action": "subscribe", "params": {"events": ["nope"]}}));
        let kind = kind.request.unwrap_err().message;
        assert!(kind.contains("service_state_changed"), "{kind}");
        let version = parse(json!({"action": "hello", "version": 9}))
            .request
            .unwrap_err();
        assert_eq!(
            version.message,
            "speak protocol version 9: this server speaks version 1"
        );
    }

    #[test]
    fn numeric_ids_are_echoed_as_numbers() {
        let got = parse(json!({"id": 42, "action": "hello"}));
        assert_eq!(got.id, Some(RequestId::from(42)));
        let out = encode(got.id.as_ref(), MessageType::Response, "hello", &json!({}));
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            json!({"id": 42, "type": "response", "action": "hello", "params": {}, "version": 1})
        );
    }

    #[test]
    fn server_messages_round_trip_through_the_envelope() {
        let id = RequestId::from("a-1");
        let err = ApiError::new(ErrorCode::NotFound, "find service `x`: not registered");
        let text = encode_error(Some(&id), "get_service", &err);
        let message: Message = serde_json::from_str(&text).unwrap();
        assert_eq!(message.kind, MessageType::Error);
        assert_eq!(message.id, Some(id));
        assert_eq!(message.version, Some(PROTOCOL_VERSION));
        assert_eq!(message.error(), Some(err));
        let request = Message::request("1", "hello", json!({}));
        assert_eq!(
            serde_json::from_str::<Value>(&request.to_json()).unwrap(),
            json!({"id": "1", "type": "request", "action": "hello", "params": {}})
        );
    }

    /// Found by the property tests: a number beyond a double's range in another field, before
    /// or after the id, lost the id of the answer.
    #[test]
    fn the_id_is_kept_when_another_field_is_out_of_range() {
        for (text, id) in [
            (
                r#"{"id": 5, "action": "hello", "params": {"x": 1e400}}"#,
                "5",
            ),
            (
                r#"{"9": [1e400], "id": "a\/\u00e9", "action": "hello"}"#,
                r#""a/é""#,
            ),
            (r#"{"id": 1e400, "extra": -1e400}"#, "1e400"),
        ] {
            let incoming = parse_incoming(text);
            let sent = serde_json::to_string(&incoming.id).unwrap();
            assert_eq!(sent, id, "{text}");
            let error = incoming.request.unwrap_err();
            assert_eq!(error.code, ErrorCode::ParseError, "{text}");
            assert!(error.message.contains("number out of range"), "{error}");
        }
    }

    #[test]
    fn subscribe_params_become_a_registry_filter() {
        let p: SubscribeParams =
            serde_json::from_value(json!({"services": ["a"], "types": ["health_check_result"]}))
                .unwrap();
        assert_eq!(
            p.to_filter(),
            EventFilter::all()
                .services(["a"])
                .kinds([EventKind::HealthCheckResult])
        );
        assert_eq!(SubscribeParams::default().to_filter(), EventFilter::all());
    }
}
