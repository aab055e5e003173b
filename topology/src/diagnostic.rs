//! Located messages about a topology file, rendered like rustc: `file:line:col: message`, the
//! source line and a caret under the culprit.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::model::SourceLocation;

/// One problem in a topology file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    location: SourceLocation,
    message: String,
    snippet: Option<Snippet>,
    notes: Vec<Note>,
}

/// More about a [`Diagnostic`]: another place involved, or a hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    location: Option<SourceLocation>,
    message: String,
    snippet: Option<Snippet>,
}

/// The source line under a location, with the span to underline (in characters, on that line).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snippet {
    text: String,
    start: usize,
    len: usize,
}

impl Diagnostic {
    /// Where the problem is.
    pub fn location(&self) -> &SourceLocation {
        &self.location
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The notes' messages, in order.
    pub fn notes(&self) -> impl Iterator<Item = &str> {
        self.notes.iter().map(|n| n.message.as_str())
    }

    pub fn sort_key(&self, files: &[Arc<Path>]) -> (usize, u32, u32) {
        let file = files
            .iter()
            .position(|f| *f == self.location.file)
            .unwrap_or(usize::MAX);
        (file, self.location.line, self.location.column)
    }
}

/// The texts of the files being loaded, to quote their lines in diagnostics.
#[derive(Debug, Default)]
pub struct Sources {
    files: Vec<(Arc<Path>, Arc<str>)>,
}

/// A span in one of the [`Sources`]: file index, line and column (from 1, in characters), and
/// how many characters to underline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub file: usize,
    pub line: u32,
    pub column: u32,
    pub len: u32,
}

/// The lines of a text as YAML counts them, for the parser's line numbers: a line break is
/// `\r\n`, `\r` or `\n` (YAML 1.2, section 5.4), so a file with old Mac line ends is not one
/// long line.
fn yaml_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = (!text.is_empty()).then_some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(text)
            }
            Some(end) => {
                let next = if text[end..].starts_with("\r\n") {
                    end + 2
                } else {
                    end + 1
                };
                rest = (next < text.len()).then(|| &text[next..]);
                Some(&text[..end])
            }
        }
    })
}

impl Sources {
    pub fn add(&mut self, path: &Path, text: &str) -> usize {
        self.files.push((Arc::from(path), Arc::from(text)));
        self.files.len() - 1
    }

    pub fn text(&self, file: usize) -> &str {
        &self.files[file].1
    }

    pub fn paths(&self) -> Vec<Arc<Path>> {
        self.files.iter().map(|(p, _)| p.clone()).collect()
    }

    pub fn location(&self, span: Span) -> SourceLocation {
        SourceLocation {
            file: self.files[span.file].0.clone(),
            line: span.line,
            column: span.column,
        }
    }

    fn snippet(&self, span: Span) -> Option<Snippet> {
        let text =
            yaml_lines(&self.files.get(span.file)?.1).nth((span.line as usize).checked_sub(1)?)?;
        let text = text.replace('\t', " ");
        let start = (span.column as usize).saturating_sub(1);
        let width = text.chars().count();
        let len = (span.len as usize).clamp(1, width.saturating_sub(start).max(1));
        Some(Snippet::window(&text, start, len))
    }

    /// A diagnostic at `span`.
    pub fn error(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            location: self.location(span),
            message: message.into(),
            snippet: self.snippet(span),
            notes: Vec::new(),
        }
    }

    /// A note pointing at another place.
    pub fn note_at(&self, span: Span, message: impl Into<String>) -> Note {
        Note {
            location: Some(self.location(span)),
            message: message.into(),
            snippet: self.snippet(span),
        }
    }
}

/// The most characters of a source line a diagnostic quotes; a longer line (minified YAML,
/// a file that is not YAML at all) is cut around the culprit, with `…` where it was cut.
pub const MAX_QUOTED_CHARS: usize = 200;

/// How many characters before the culprit a cut line keeps, for context.
const CONTEXT_BEFORE: usize = 40;

impl Snippet {
    /// The part of `line` worth quoting for a span of `len` characters at `start`: all of it
    /// when it is short, else at most [`MAX_QUOTED_CHARS`] characters from a little before
    /// the span.
    fn window(line: &str, start: usize, len: usize) -> Snippet {
        let width = line.chars().count();
        if width <= MAX_QUOTED_CHARS {
            return Snippet {
                text: line.to_string(),
                start,
                len,
            };
        }
        let from = start.saturating_sub(CONTEXT_BEFORE).min(width);
        let to = (from + MAX_QUOTED_CHARS).min(width);
        let mut text: String = line.chars().skip(from).take(to - from).collect();
        let mut start = start - from;
        if from > 0 {
            text.insert(0, '…');
            start += 1;
        }
        if to < width {
            text.push('…');
        }
        let shown = text.chars().count();
        let start = start.min(shown.saturating_sub(1));
        let len = len.clamp(1, shown.saturating_sub(start).max(1));
        Snippet { text, start, len }
    }
}

impl Diagnostic {
    /// Adds a note that points at another place.
    pub fn with_note(mut self, note: Note) -> Self {
        self.notes.push(note);
        self
    }

    /// Adds a hint with no place of its own.
    pub fn with_help(mut self, message: impl Into<String>) -> Self {
        self.notes.push(Note {
            location: None,
            message: message.into(),
            snippet: None,
        });
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gutter = std::iter::once(&self.location)
            .chain(self.notes.iter().filter_map(|n| n.location.as_ref()))
            .map(|l| l.line.to_string().len())
            .max()
            .unwrap_or(1);
        write!(f, "{}: {}", self.location, self.message)?;
        if let Some(snippet) = &self.snippet {
            write_snippet(f, gutter, self.location.line, snippet)?;
        }
        // Other places first, then the hints, as rustc does.
        for note in &self.notes {
            if let Some(location) = &note.location {
                write!(f, "\n{location}: note: {}", note.message)?;
                if let Some(snippet) = &note.snippet {
                    write_snippet(f, gutter, location.line, snippet)?;
                }
            }
        }
        for note in self.notes.iter().filter(|n| n.location.is_none()) {
            write!(f, "\n{:gutter$} = help: {}", "", note.message)?;
        }
        Ok(())
    }
}

fn write_snippet(f: &mut fmt::Formatter<'_>, gutter: usize, line: u32, s: &Snippet) -> fmt::Result {
    write!(f, "\n{:gutter$} |", "")?;
    write!(f, "\n{line:>gutter$} | {}", s.text)?;
    write!(
        f,
        "\n{:gutter$} | {:start$}{}",
        "",
        "",
        "^".repeat(s.len),
        start = s.start
    )
}

#[cfg(test)]
mod tests {
    use crate::TopologyConfig;

    /// Found by the `topology`, `overlay` and `manifest` fuzz targets: the parser counts a lone
    /// `\r` as a line break, as YAML does, but the snippet was taken from `\n`-separated
    /// lines, so it quoted another line or none.
    #[test]
    fn lone_carriage_returns_end_lines_for_the_snippet_too() {
        let error = TopologyConfig::from_yaml("cr.yaml", "services:\r  a:\r    targte: {}\r")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cr.yaml:3:5: unknown field `targte`, did you mean `target`?"),
            "{error}"
        );
        assert!(
            error.contains("3 |     targte: {}\n  |     ^^^^^^"),
            "{error}"
        );
        let lines: Vec<&str> = super::yaml_lines("a\r\nb\rc\n\nd\n").collect();
        assert_eq!(lines, ["a", "b", "c", "", "d"]);
        assert_eq!(super::yaml_lines("").count(), 0);
    }
}
