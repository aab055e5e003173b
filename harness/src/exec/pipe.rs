//! A child's pipes: output cut into line events, and raw byte pipes.

use std::io;
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

/// Cuts one output stream into lines and sends them, a batch per read.
///
/// Fed by the thread that watches the child (`watch.rs`), which reads 64 KiB at a time: one
/// channel operation per read keeps up with a process writing millions of lines a second.
pub(crate) struct LineSplitter {
    stream: OutputStream,
    /// Bytes of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// False once nobody reads the events: the pipe is still drained, so the child never blocks.
    listening: bool,
}

impl LineSplitter {
    pub(crate) fn new(stream: OutputStream) -> Self {
        LineSplitter {
            stream,
            partial: Vec::new(),
            listening: true,
        }
    }

    /// Sends the complete lines in `bytes` (after what earlier reads left unfinished).
    pub(crate) fn feed(&mut self, bytes: &[u8], route: &LineRoute) {
        if !self.listening {
            return;
        }
        let mut batch = Lines::with_capacity(bytes.len());
        let mut chunk = bytes;
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
            let line = if self.partial.is_empty() {
                &chunk[..pos]
            } else {
                self.partial.extend_from_slice(&chunk[..pos]);
                &self.partial[..]
            };
            push_line(&mut batch, line, self.stream, route);
            self.partial.clear();
            chunk = &chunk[pos + 1..];
        }
        self.partial.extend_from_slice(chunk);
        self.listening = route.sink.send_lines(self.stream, batch);
    }

    /// The stream ended: sends its last line if it had no line ending.
    pub(crate) fn finish(&mut self, route: &LineRoute) {
        if self.listening && !self.partial.is_empty() {
            let mut batch = Lines::default();
            push_line(&mut batch, &self.partial, self.stream, route);
            route.sink.send_lines(self.stream, batch);
        }
        self.partial = Vec::new();
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
