//! Reading a child's pipes: line splitting on dedicated threads, and raw byte pipes.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

use crate::exec::event::{EventSink, Lines, LogFilter, OutputStream};

/// How lines are routed: the tap sees every line first (and may swallow it), then the filter.
#[derive(Clone)]
pub(crate) struct LineRoute {
    pub(crate) sink: EventSink,
    pub(crate) filter: Option<Arc<dyn LogFilter>>,
    pub(crate) tap: Option<crate::exec::command::LineTap>,
}

/// Reads `pipe` to its end on a thread of its own, turning it into line events.
///
/// A blocking thread per pipe rather than an async task: the library must not need the
/// caller's runtime, and a thread that reads 64 KiB at a time and sends one batch per read
/// keeps up with a process writing millions of lines a second. Returns a receiver that
/// closes when the pipe has been read to its end.
pub(crate) fn spawn_line_reader(
    pipe: impl Read + Send + 'static,
    stream: OutputStream,
    route: LineRoute,
    name: String,
) -> io::Result<std::sync::mpsc::Receiver<()>> {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new().name(name).spawn(move || {
        read_lines(pipe, stream, &route);
        drop(done_tx);
    })?;
    Ok(done_rx)
}

fn read_lines(mut pipe: impl Read, stream: OutputStream, route: &LineRoute) {
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes of a line whose end has not arrived yet.
    let mut partial: Vec<u8> = Vec::new();
    let mut listening = true;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if !listening {
            // Nobody reads the events any more; keep draining so the child never blocks.
            continue;
        }
        let mut batch = Lines::with_capacity(n);
        let mut chunk = &buf[..n];
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
            let line = if partial.is_empty() {
                &chunk[..pos]
            } else {
                partial.extend_from_slice(&chunk[..pos]);
                &partial[..]
            };
            push_line(&mut batch, line, stream, route);
            partial.clear();
            chunk = &chunk[pos + 1..];
        }
        partial.extend_from_slice(chunk);
        listening = route.sink.send_lines(stream, batch);
    }
    if listening && !partial.is_empty() {
        let mut batch = Lines::default();
        push_line(&mut batch, &partial, stream, route);
        route.sink.send_lines(stream, batch);
    }
}

fn push_line(batch: &mut Lines, line: &[u8], stream: OutputStream, route: &LineRoute) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Borrowed when the line is valid UTF-8, as nearly every line is: no allocation here.
    let text = String::from_utf8_lossy(line);
    if let Some(tap) = &route.tap
        && !tap(stream, &text)
    {
        return;
    }
    if let Some(filter) = &route.filter
        && !filter.keep(stream, &text)
    {
        return;
    }
    batch.push(&text);
}

/// A child's stdin, as an async writer. Dropping it closes the pipe (the child sees EOF).
pub struct ChildInput(Pin<Box<dyn AsyncWrite + Send>>);

impl ChildInput {
    pub(crate) fn new(w: impl AsyncWrite + Send + 'static) -> Self {
        ChildInput(Box::pin(w))
    }

    /// Flushes and closes the pipe, so the child sees end of input.
    pub async fn close(mut self) -> io::Result<()> {
        futures_lite::AsyncWriteExt::close(&mut self).await
    }
}

impl AsyncWrite for ChildInput {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_close(cx)
    }
}

/// A child's stdout as raw bytes, as an async reader.
pub struct ChildOutput(Pin<Box<dyn AsyncRead + Send>>);

impl ChildOutput {
    pub(crate) fn new(r: impl AsyncRead + Send + 'static) -> Self {
        ChildOutput(Box::pin(r))
    }
}

impl AsyncRead for ChildOutput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

// SAFETY: the boxed writer and reader are reachable only through `Pin<&mut Self>` (and `self`),
// never through `&self`, so sharing a `&ChildInput` between threads shares nothing.
unsafe impl Sync for ChildInput {}
// SAFETY: as for `ChildInput`.
unsafe impl Sync for ChildOutput {}

impl std::fmt::Debug for ChildInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildInput")
    }
}

impl std::fmt::Debug for ChildOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildOutput")
    }
}
