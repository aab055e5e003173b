//! `harness serve`: the WebSocket API over a registry kept in a file, until Ctrl-C or SIGTERM.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use harness::api::{DEFAULT_MAX_MESSAGE_SIZE, WsServer};
use harness::registry::Registry;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::output::{errln, outln};
use crate::run::EXIT_HARNESS_FAILED;

/// How long the registry file may lag behind a change.
const AUTOSAVE_DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Args)]
pub struct ServeArgs {
    /// Listen on this address. Loopback by default; any other address needs a token, which
    /// is generated into a file (see --token-file) when not given.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    bind: String,
    /// The registry's file: loaded at start (an empty registry if it does not exist; the
    /// backup if it is corrupted), saved after every change and at shutdown.
    #[arg(long, value_name = "FILE")]
    state: PathBuf,
    /// The token every client must present (Authorization: Bearer TOKEN, or ?token=TOKEN).
    /// Note that other local users can read command lines; --token-file is safer.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the token from this file; if it does not exist, generate a token into it (mode
    /// 0600). Defaults to FILE.token beside --state when a token is needed and none is given.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Also allow browser pages from this origin (repeatable). Allowed anyway: clients that
    /// send no Origin, and http(s)://localhost, 127.0.0.1 or [::1] on the server's own port.
    /// `*` allows every origin.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// The largest message a client may send, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size: usize,
}

pub fn serve(args: ServeArgs) -> ExitCode {
    match serve_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("harness serve: failed to {e}");
            ExitCode::from(EXIT_HARNESS_FAILED)
        }
    }
}

fn serve_inner(args: &ServeArgs) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = args
        .bind
        .to_socket_addrs()
        .map_err(|e| format!("resolve --bind {}: {e}", args.bind))?
        .collect();
    let token = token(args, needs_token(&addrs))?;

    // From here on SIGINT and SIGTERM no longer kill the process: they are queued for the
    // signal thread, so one that arrives during startup shuts the server down once it runs.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
        .map_err(|e| format!("install handlers for SIGINT, SIGTERM, SIGHUP and SIGQUIT: {e}"))?;

    let (registry, warning) =
        smol::block_on(Registry::load_or_new(&args.state)).map_err(|e| e.to_string())?;
    if let Some(warning) = warning {
        errln!("harness serve: warning: {warning}");
    }
    let autosave = registry
        .autosave(&args.state, AUTOSAVE_DEBOUNCE)
        .map_err(|e| e.to_string())?;

    let mut builder = WsServer::builder(registry).with_max_message_size(args.max_message_size);
    if let Some(token) = token {
        builder = builder.with_token(token);
    }
    for origin in &args.allow_origin {
        builder = builder.with_allowed_origin(origin);
    }
    let server = smol::block_on(builder.bind(&addrs[..])).map_err(|e| e.to_string())?;
    let shutdown = server.shutdown_handle();
    // Tests and scripts read this line to learn the port when --bind asked for port 0.
    outln!("harness serve: listening on ws://{}", server.local_addr());

    let signal_handle = signals.handle();
    let watcher = std::thread::Builder::new()
        .name("harness-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let name = match signal {
                    SIGINT => "SIGINT",
                    SIGHUP => "SIGHUP",
                    SIGQUIT => "SIGQUIT",
                    _ => "SIGTERM",
                };
                tracing::info!("received {name}; shutting down");
                shutdown.shutdown();
            }
        })
        .map_err(|e| format!("start the signal thread: {e}"))?;

    let waiter = server.shutdown_handle();
    let served = smol::block_on(server.serve_until(async move { waiter.wait().await }));
    signal_handle.close();
    let _ = watcher.join();
    // Writes any change not yet saved; a failure here means the file holds an older state.
    let saved = autosave.stop().map_err(|e| e.to_string());
    served.map_err(|e| format!("serve the WebSocket API: {e}"))?;
    saved?;
    outln!(
        "harness serve: stopped; state saved to {}",
        args.state.display()
    );
    Ok(())
}

/// Whether any of the addresses is reachable from other machines.
fn needs_token(addrs: &[SocketAddr]) -> bool {
    addrs.iter().any(|a| !a.ip().is_loopback())
}

/// The token to require: --token, else the one in --token-file (generated if the file does
/// not exist), else, when one is needed, one generated into FILE.token beside --state.
fn token(args: &ServeArgs, needed: bool) -> Result<Option<String>, String> {
    if let Some(token) = &args.token {
        if token.is_empty() {
            return Err("use --token: it is empty".into());
        }
        return Ok(Some(token.clone()));
    }
    let path = match &args.token_file {
        Some(path) => path.clone(),
        None if needed => default_token_file(&args.state),
        None => return Ok(None),
    };
    if path.exists() {
        return harness::api::read_token_file(&path)
            .map(Some)
            .map_err(|e| e.to_string());
    }
    let token = harness::api::generate_token().map_err(|e| e.to_string())?;
    harness::api::write_token_file(&path, &token).map_err(|e| e.to_string())?;
    outln!(
        "harness serve: token written to {} (mode 0600)",
        path.display()
    );
    Ok(Some(token))
}

fn default_token_file(state: &Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_owned();
    name.push(".token");
    state.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_non_loopback_addresses_need_a_token() {
        let parse = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(!needs_token(&[parse("127.0.0.1:1"), parse("[::1]:1")]));
        assert!(!needs_token(&[parse("127.0.0.2:1")]));
        assert!(needs_token(&[parse("0.0.0.0:1")]));
        assert!(needs_token(&[parse("127.0.0.1:1"), parse("[::]:1")]));
    }

    #[test]
    fn the_default_token_file_sits_beside_the_state() {
        assert_eq!(
            default_token_file(Path::new("/var/lib/h/registry.json")),
            Path::new("/var/lib/h/registry.json.token")
        );
    }
}
