//! A `#[harness_test]` suite, runnable as an example: the same check (the echo server answers
//! what it is sent) written on each runtime a body can use: none (the smol family), tokio, and
//! plain threads.
//!
//! ```text
//! cargo run --example suite_runtimes
//! cargo run --example suite_runtimes -- --list        # or any libtest argument
//! ```
//!
//! In a crate of yours the same file is `tests/NAME.rs`, declared in Cargo.toml as
//! `[[test]] name = "NAME"` with `harness = false`, and `cargo test` runs it. Here `setup` builds
//! the echo server first, so the one command is enough.

use std::io::{Read, Write};

use harness::{Service, harness_test};

const SENT: &[u8] = b"hello\n";

/// No runtime: the body is polled on the test thread, and the smol family's I/O works.
#[harness_test(topology = "examples/suite_runtimes.yaml", runtime = "none")]
async fn on_smol(echo: Service) -> std::io::Result<()> {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let mut stream = async_net::TcpStream::connect(echo.addr()).await?;
    stream.write_all(SENT).await?;
    let mut echoed = vec![0; SENT.len()];
    stream.read_exact(&mut echoed).await?;
    assert_eq!(echoed, SENT);
    Ok(())
}

/// A tokio runtime (the `tokio` feature of harness): tokio-based clients with a plain `.await`.
#[harness_test(topology = "examples/suite_runtimes.yaml", runtime = "tokio")]
async fn on_tokio(echo: Service) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(echo.addr()).await?;
    stream.write_all(SENT).await?;
    let mut echoed = vec![0; SENT.len()];
    stream.read_exact(&mut echoed).await?;
    assert_eq!(echoed, SENT);
    Ok(())
}

/// Blocking code on a thread of its own, awaited without blocking the test's thread.
#[harness_test(topology = "examples/suite_runtimes.yaml")]
async fn on_plain_threads(echo: Service) {
    let addr = echo.addr();
    let echoed = blocking::unblock(move || -> std::io::Result<Vec<u8>> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.write_all(SENT)?;
        let mut echoed = vec![0; SENT.len()];
        stream.read_exact(&mut echoed)?;
        Ok(echoed)
    })
    .await
    .unwrap();
    assert_eq!(echoed, SENT);
}

/// Builds the echo server the topology starts (`./target/debug/echo-server`).
fn build_echo_server() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "harness-fixtures",
            "--bin",
            "echo-server",
        ])
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build -p harness-fixtures failed");
}

harness::main!(setup = build_echo_server);
