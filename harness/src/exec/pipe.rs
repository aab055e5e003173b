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
    /// The longest line sent as one, if lines are cut ([`MAX_LINE`] for a command with
    /// bounded output); without it a line is sent whole however long it is.
    pub(crate) max_line: Option<usize>,
}

/// The longest line a command with bounded output sends as one: 64 KiB. A longer one is sent
/// in pieces of this size.
pub(crate) const MAX_LINE: usize = 64 << 10;

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

    /// Sends the complete lines in `bytes` (after what earlier reads left unfinished). With a
    /// `max_line`, a longer line is sent in pieces of that size, so a process that never writes
    /// a newline cannot make harness hold its output in memory.
    pub(crate) fn feed(&mut self, bytes: &[u8], route: &LineRoute) {
        if !self.listening {
            return;
        }
        let mut batch = Lines::with_capacity(bytes.len());
        let mut chunk = bytes;
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|&b| b == b'\n');
            let room = route.max_line.unwrap_or(usize::MAX) - self.partial.len();
            let (take, ends) = match newline {
                Some(pos) if pos <= room => (pos, true),
                _ if chunk.len() >= room => (room, true),
                _ => (chunk.len(), false),
            };
            if !ends {
                self.partial.extend_from_slice(chunk);
                break;
            }
            let line = if self.partial.is_empty() {
                &chunk[..take]
            } else {
                self.partial.extend_from_slice(&chunk[..take]);
                &self.partial[..]
            };
            push_line(&mut batch, line, self.stream, route);
            self.partial.clear();
            // The newline itself is consumed; a piece cut at MAX_LINE consumes only its bytes.
            let newline_here = newline == Some(take);
            chunk = &chunk[take + usize::from(newline_here)..];
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::ProcessEvent;
    use crate::exec::event::EventStream;

    fn lines(feeds: &[&[u8]]) -> Vec<String> {
        lines_with(feeds, Some(MAX_LINE))
    }

    fn lines_with(feeds: &[&[u8]], max_line: Option<usize>) -> Vec<String> {
        let (sink, mut events) = EventStream::channel();
        let route = LineRoute {
            sink,
            filter: None,
            tap: None,
            max_line,
        };
        let mut splitter = LineSplitter::new(OutputStream::Stdout);
        for bytes in feeds {
            splitter.feed(bytes, &route);
        }
        splitter.finish(&route);
        drop(route);
        let mut out = Vec::new();
        while let Some(ProcessEvent::Stdout(line)) = events.try_recv() {
            out.push(line);
        }
        out
    }

    #[test]
    fn lines_are_cut_at_newlines_across_reads() {
        assert_eq!(lines(&[b"a\nb", b"c\n", b"\nd"]), ["a", "bc", "", "d"]);
    }

    #[test]
    fn a_line_without_end_is_sent_in_pieces_of_the_longest_line() {
        let long = vec![b'x'; 3 * MAX_LINE + 10];
        let got = lines(&[&long[..1000], &long[1000..], b"\nend\n"]);
        let lens: Vec<usize> = got.iter().map(String::len).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, MAX_LINE, 10, 3]);
        assert_eq!(got[4], "end");
        // A line of exactly the longest length keeps its newline: no empty piece follows.
        let exact = [vec![b'y'; MAX_LINE], b"\nz\n".to_vec()].concat();
        let got = lines(&[&exact]);
        assert_eq!(
            got.iter().map(String::len).collect::<Vec<_>>(),
            [MAX_LINE, 1]
        );
    }
}
