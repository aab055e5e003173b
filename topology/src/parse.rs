//! YAML text to a tree of located nodes.
//!
//! The model is not deserialized straight from YAML: a tree keeps every node's file, line and
//! column, lets overlays merge before anything is interpreted, and lets the decoder report every
//! mistake in a file instead of stopping at the first, as serde's derived code would.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::diagnostic::{Diagnostic, Sources, Span};

/// A YAML node and where it was written.
#[derive(Clone, Debug)]
pub struct Node {
    pub span: Span,
    pub value: Value,
}

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in file order; keys are scalars, as text.
    Map(Vec<(Key, Node)>),
}

/// A mapping key: its text and where it was written.
#[derive(Clone, Debug)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

/// A scalar: its YAML type and its text. For strings the text is the value; for numbers and
/// booleans it is the spelling in the file, so that `version: 1.10` stays `1.10` when used as a
/// string.
#[derive(Clone, Debug)]
pub struct Scalar {
    pub kind: ScalarKind,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScalarKind {
    Str,
    Bool(bool),
    Int(i128),
    Float(f64),
}

impl Value {
    /// What this is, for "expected X, found Y".
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Null => "nothing (null)",
            Value::Scalar(s) => match s.kind {
                ScalarKind::Str => "a string",
                ScalarKind::Bool(_) => "a boolean",
                ScalarKind::Int(_) => "an integer",
                ScalarKind::Float(_) => "a number",
            },
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Parses one YAML document of file `file` in `sources`.
pub fn parse(sources: &Sources, file: usize) -> Result<Node, Diagnostic> {
    let text = sources.text(file);
    let options = serde_saphyr::options! {
        // YAML 1.2 booleans only: `no`, `on` and `y` stay strings (the "Norway problem").
        strict_booleans: true,
        budget: Some(budget()),
    };
    match serde_saphyr::from_str_with_options::<Spanned<Raw>>(text, options) {
        Ok(raw) => Ok(convert(raw, text, file)),
        Err(error) => Err(syntax_error(sources, file, &error)),
    }
}

/// How deep lists and mappings may nest. The deepest topology nests about eight levels; the
/// parser's own default (64) lets a hostile file overflow the stack of a test thread, whose
/// conversion into [`Node`]s recurses once per level.
pub const MAX_NESTING: usize = 32;

/// The parser's limits: its defaults (250 000 nodes, 50 000 aliases, ...), nesting
/// [`MAX_NESTING`] deep.
fn budget() -> serde_saphyr::Budget {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_NESTING;
    budget
}

/// What a breached parser limit means, as a sentence: which limit, and its value.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let limits = budget();
    let most = "the most a topology file may hold";
    match breach {
        B::Nodes { .. } => format!(
            "the file holds more than {} YAML nodes (values, lists and mappings), {most}",
            limits.max_nodes
        ),
        B::Events { .. } => format!(
            "the file holds more than {} YAML parser events, {most}",
            limits.max_events
        ),
        B::Depth { .. } => format!(
            "lists and mappings nest more than {} deep, the most a topology file may nest",
            limits.max_depth
        ),
        B::Aliases { .. } => format!(
            "the file holds more than {} aliases (`*name`), {most}",
            limits.max_aliases
        ),
        B::Anchors { .. } => format!(
            "the file holds more than {} anchors (`&name`), {most}",
            limits.max_anchors
        ),
        B::AliasAnchorRatio { aliases, anchors } => format!(
            "the file uses {aliases} aliases of {anchors} anchors: aliases that expand this \
             much are refused (an alias bomb)"
        ),
        B::RecordedAnchorEvents { .. } | B::RecordedAnchorBytes { .. } => {
            "the anchors' aliases expand to more than a topology file may hold (an alias bomb)"
                .to_string()
        }
        B::ScalarBytes { .. } => format!(
            "the file's values add up to more than {} MiB of text, {most}",
            limits.max_total_scalar_bytes / (1024 * 1024)
        ),
        B::MergeKeys { .. } => format!(
            "the file holds more than {} merge keys (`<<`), {most}",
            limits.max_merge_keys
        ),
        B::Documents { .. } => format!(
            "the file holds more than {} YAML documents, {most}",
            limits.max_documents
        ),
        other => format!("the file exceeds a limit of the YAML parser ({other:?})"),
    }
}

/// The error under the wrappers that add a snippet or an alias's location.
fn original(mut error: &serde_saphyr::Error) -> &serde_saphyr::Error {
    loop {
        match error {
            serde_saphyr::Error::WithSnippet { error: inner, .. }
            | serde_saphyr::Error::AliasError { error: inner, .. } => error = inner,
            _ => return error,
        }
    }
}

fn syntax_error(sources: &Sources, file: usize, error: &serde_saphyr::Error) -> Diagnostic {
    let location = error.location();
    if let serde_saphyr::Error::Budget { breach, .. } = original(error) {
        let (line, column) = location
            .map(|l| (l.line() as u32, l.column() as u32))
            .filter(|(l, _)| *l > 0)
            .unwrap_or((1, 1));
        let span = Span {
            file,
            line,
            column,
            len: 1,
        };
        return sources.error(span, budget_message(breach));
    }
    let (line, column) = location
        .map(|l| (l.line() as u32, l.column() as u32))
        .filter(|(l, _)| *l > 0)
        .unwrap_or((1, 1));
    let plain = error.render_with_options(serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    });
    let mut message = plain
        .strip_suffix(&format!(" at line {line}, column {column}"))
        .unwrap_or(&plain)
        .to_string();
    if message.starts_with("multiple YAML documents") {
        message = "a topology file holds one YAML document, and a second one starts here".into();
    }
    if let Some(key) = message.strip_prefix("duplicate mapping key: ") {
        let key = key.split(", set DuplicateKeyPolicy").next().unwrap_or(key);
        message = format!("duplicate key `{key}`");
    }
    let len = location.map_or(1, |l| l.span().len().max(1) as u32);
    sources.error(
        Span {
            file,
            line,
            column,
            len,
        },
        format!("invalid YAML: {message}"),
    )
}

/// What serde-saphyr hands us: any YAML value, each child wrapped in its location.
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        i128::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Raw::Map(entries))
    }
}

fn span_of(raw: &Spanned<Raw>, file: usize) -> Span {
    let location = raw.referenced;
    Span {
        file,
        line: location.line() as u32,
        column: location.column() as u32,
        len: location.span().len().max(1) as u32,
    }
}

/// The text of a plain scalar as written, from where it was defined (for an alias, the anchored
/// node).
fn written_text(raw: &Spanned<Raw>, text: &str) -> Option<String> {
    let span = raw.defined.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    text.get(start..start + len).map(str::to_string)
}

fn convert(raw: Spanned<Raw>, text: &str, file: usize) -> Node {
    let span = span_of(&raw, file);
    let written = written_text(&raw, text);
    let scalar = |kind, fallback: String| {
        Value::Scalar(Scalar {
            kind,
            text: written.clone().unwrap_or(fallback),
        })
    };
    let value = match raw.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => scalar(ScalarKind::Bool(b), b.to_string()),
        Raw::Int(i) => scalar(ScalarKind::Int(i), i.to_string()),
        Raw::Float(x) => scalar(ScalarKind::Float(x), x.to_string()),
        Raw::Str(s) => Value::Scalar(Scalar {
            kind: ScalarKind::Str,
            text: s,
        }),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(|i| convert(i, text, file)).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (convert_key(k, text, file), convert(v, text, file)))
                .collect(),
        ),
    };
    Node { span, value }
}

fn convert_key(raw: Spanned<Raw>, text: &str, file: usize) -> Key {
    let key = convert(raw, text, file);
    let name = match key.value {
        Value::Scalar(s) => s.text,
        Value::Null => "~".to_string(),
        // A collection as a key cannot name anything in a topology; this text makes the
        // "unknown field" error that follows point at it.
        Value::Seq(_) | Value::Map(_) => "<collection>".to_string(),
    };
    Key {
        name,
        span: key.span,
    }
}
