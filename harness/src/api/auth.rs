//! Who may connect: the bearer token and the allowed browser origins, checked on every
//! WebSocket handshake, and the generation of tokens for servers that listen beyond loopback.
//!
//! This API starts and stops processes, so two attacks matter:
//! - Anyone who can reach a non-loopback port could drive it: such a server requires a token,
//!   sent as `Authorization: Bearer TOKEN` or, from browsers (which cannot set headers on a
//!   WebSocket), as `?token=TOKEN` in the URL.
//! - Any web page the user visits can open a WebSocket to `ws://localhost:PORT` (browsers do not
//!   apply the same-origin policy to WebSockets; they only send an `Origin` header). So a
//!   handshake whose `Origin` is not an allowed one is refused: by default only non-browser
//!   clients (no `Origin`) and pages served from loopback on the server's own port.

use std::fs::OpenOptions;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request};
use async_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};

/// Which origins may open a connection, and the token a client must present.
#[derive(Debug, Clone, Default)]
pub(crate) struct AccessPolicy {
    /// The token every connection must present, if any.
    pub(crate) token: Option<String>,
    /// Origins allowed beyond the defaults, normalized; `*` allows every origin.
    pub(crate) extra_origins: Vec<String>,
    /// The server's own port, whose loopback origins are allowed.
    pub(crate) port: u16,
}

impl AccessPolicy {
    /// Checks a handshake request: its `Origin` first (a page that is not allowed learns
    /// nothing about tokens), then its token.
    pub(crate) fn check(&self, request: &Request) -> Result<(), Refusal> {
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !self.origin_allowed(origin) {
                return Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "connect from origin `{origin}`: not allowed (allow it with --allow-origin)"
                    ),
                ));
            }
        }
        if let Some(expected) = &self.token {
            let presented = bearer_token(request).or_else(|| query_token(request));
            match presented {
                Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => {}
                Some(_) => {
                    return Err(unauthorized("authenticate: the token is wrong"));
                }
                None => {
                    return Err(unauthorized(
                        "authenticate: this server needs a token (Authorization: Bearer TOKEN, \
                         or ?token=TOKEN in the URL)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether a browser page from `origin` may connect.
    pub(crate) fn origin_allowed(&self, origin: &str) -> bool {
        let origin = normalize_origin(origin);
        if self.extra_origins.iter().any(|o| o == "*" || *o == origin) {
            return true;
        }
        ["http", "https"].iter().any(|scheme| {
            ["localhost", "127.0.0.1", "[::1]"]
                .iter()
                .any(|host| origin == format!("{scheme}://{host}:{}", self.port))
        })
    }
}

/// An origin as browsers send it: lower case, no trailing slash.
pub(crate) fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

fn bearer_token(request: &Request) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn query_token(request: &Request) -> Option<String> {
    request
        .uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "token")
        .map(|(_, value)| percent_decode(value))
}

/// Decodes `%XX` escapes and `+` (as a space), as URL query strings encode them. Malformed
/// escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares without stopping at the first difference, so that the time taken does not tell an
/// attacker how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized(message: &str) -> Refusal {
    Refusal {
        bearer: true,
        ..Refusal::new(StatusCode::UNAUTHORIZED, message.to_owned())
    }
}

/// Why a handshake is refused: an HTTP status with the reason as its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// Whether to ask for a bearer token (`WWW-Authenticate: Bearer`).
    bearer: bool,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: String) -> Self {
        Refusal {
            status,
            message,
            bearer: false,
        }
    }

    /// The HTTP response that refuses the handshake.
    pub(crate) fn into_response(self) -> ErrorResponse {
        let mut response = ErrorResponse::new(Some(self.message));
        *response.status_mut() = self.status;
        if self.bearer {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A new random token: 32 bytes from the kernel's random source, as 64 hex digits.
pub fn generate_token() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| io::Error::new(e.kind(), format!("read /dev/urandom for a token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `token` to a new file at `path` that only its owner can read (mode 0600), replacing
/// any file there.
pub fn write_token_file(path: &Path, token: &str) -> io::Result<()> {
    let context = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("write token file {}: {e}", path.display()),
        )
    };
    // Remove first, so that an existing file's looser mode is not kept.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(context)?;
    writeln!(file, "{token}").map_err(context)?;
    file.sync_all().map_err(context)
}

/// Reads a token from a file: its first line, trimmed.
pub fn read_token_file(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        io::Error::new(e.kind(), format!("read token file {}: {e}", path.display()))
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("read token file {}: it is empty", path.display()),
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap()
    }

    fn policy(token: Option<&str>, extra: &[&str]) -> AccessPolicy {
        AccessPolicy {
            token: token.map(str::to_owned),
            extra_origins: extra.iter().map(|o| normalize_origin(o)).collect(),
            port: 8080,
        }
    }

    fn status(result: Result<(), Refusal>) -> Option<u16> {
        result.err().map(|r| r.status.as_u16())
    }

    #[test]
    fn origins_allowed_by_default_are_none_and_own_loopback_ones() {
        let p = policy(None, &[]);
        assert_eq!(status(p.check(&request("/", &[]))), None);
        for ok in [
            "http://localhost:8080",
            "http://127.0.0.1:8080",
            "https://[::1]:8080",
            "HTTP://LocalHost:8080/",
        ] {
            assert_eq!(
                status(p.check(&request("/", &[("Origin", ok)]))),
                None,
                "{ok}"
            );
        }
        for refused in [
            "https://evil.example",
            "http://localhost:8081",
            "http://localhost",
            "null",
            "http://127.0.0.1.evil.example:8080",
        ] {
            assert_eq!(
                status(p.check(&request("/", &[("Origin", refused)]))),
                Some(403),
                "{refused}"
            );
        }
    }

    #[test]
    fn extra_origins_and_the_wildcard() {
        let p = policy(None, &["https://dash.example.com/"]);
        assert!(p.origin_allowed("https://dash.example.com"));
        assert!(!p.origin_allowed("https://other.example.com"));
        assert!(policy(None, &["*"]).origin_allowed("https://anything.example"));
    }

    #[test]
    fn tokens_are_read_from_the_header_or_the_query() {
        let p = policy(Some("s3cr:t"), &[]);
        assert_eq!(status(p.check(&request("/", &[]))), Some(401));
        assert_eq!(
            status(p.check(&request("/", &[("Authorization", "Bearer s3cr:t")]))),
            None
        );
        assert_eq!(
            status(p.check(&request("/", &[("Authorization", "bearer  s3cr:t ")]))),
            None
        );
        assert_eq!(
            status(p.check(&request("/", &[("Authorization", "Bearer nope")]))),
            Some(401)
        );
        assert_eq!(
            status(p.check(&request("/v1?a=1&token=s3cr%3At", &[]))),
            None
        );
        assert_eq!(status(p.check(&request("/?token=s3cr", &[]))), Some(401));
        let refused = p.check(&request("/", &[])).unwrap_err().into_response();
        assert_eq!(refused.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert!(refused.body().as_deref().unwrap().contains("needs a token"));
    }

    #[test]
    fn a_bad_origin_is_refused_even_with_the_right_token() {
        let p = policy(Some("t"), &[]);
        let r = request("/?token=t", &[("Origin", "https://evil.example")]);
        assert_eq!(status(p.check(&r)), Some(403));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn generated_tokens_are_random_hex_and_token_files_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_token_file(&path, &a).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_token_file(&path).unwrap(), a);
        std::fs::write(&path, "\n").unwrap();
        assert!(
            read_token_file(&path)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}
