//! docs/topology.md against the loader: every `yaml` block loads (or, marked `invalid`, is
//! refused with the message the page shows), and every field the decoder knows has a row in
//! the table of its section.
//!
//! The page's conventions: a block fenced ` ```yaml ` is a whole file and must load; one fenced
//! ` ```yaml overlay ` is merged over the last whole file before it; one fenced
//! ` ```yaml invalid ` must be refused, and the ` ```text ` block right after it holds the
//! message; one fenced ` ```yaml fragment ` is not loaded.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::TopologyConfig;
use super::decode::FIELD_TABLES;

const PAGE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/topology.md"));

/// A fenced block of the page: its info string, its text and the line its fence is on.
struct Block {
    info: String,
    text: String,
    line: usize,
}

/// The page's fenced blocks, in order.
fn blocks(page: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in page.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    text: String::new(),
                    line: i + 1,
                });
            }
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(
        open.is_none(),
        "docs/topology.md: a fenced block is not closed"
    );
    blocks
}

/// The page's lines outside fenced blocks, with their numbers: where headings and tables are.
fn prose(page: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in page.lines().enumerate() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The title of a heading line, without its `#`s and backquotes.
fn heading(line: &str) -> Option<String> {
    let title = line.strip_prefix('#')?.trim_start_matches('#').trim();
    Some(title.replace('`', ""))
}

/// The names in the first column of the tables between the heading titled `title` and the next
/// heading, when they are written `` | `name` | ``; `None` if no heading has that title.
fn rows(page: &str, title: &str) -> Option<BTreeSet<String>> {
    let lines = prose(page);
    let start = lines
        .iter()
        .position(|(_, line)| heading(line).as_deref() == Some(title))?;
    let names = lines[start + 1..]
        .iter()
        .take_while(|(_, line)| heading(line).is_none())
        .filter_map(|(_, line)| line.strip_prefix("| `"))
        .filter_map(|cell| cell.split_once('`'))
        .filter(|(_, rest)| rest.trim_start().starts_with('|'))
        .map(|(name, _)| name.to_string())
        .collect();
    Some(names)
}

fn load_all(page: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let blocks = blocks(page);
    let mut base: Option<&Block> = None;
    let main = PathBuf::from("services.yaml");
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("docs/topology.md:{}", block.line);
        let mut words = block.info.split_whitespace();
        if words.next() != Some("yaml") {
            continue;
        }
        match words.next() {
            None => match TopologyConfig::from_yaml(&main, &block.text) {
                Ok(_) => base = Some(block),
                Err(e) => failures.push(format!("{at}: the block does not load:\n{e}")),
            },
            Some("overlay") => {
                let Some(base) = base else {
                    failures.push(format!("{at}: an overlay with no whole file before it"));
                    continue;
                };
                let files = [
                    (main.clone(), base.text.clone()),
                    (PathBuf::from("overlay.yaml"), block.text.clone()),
                ];
                if let Err(e) = TopologyConfig::from_yaml_files(&files) {
                    failures.push(format!(
                        "{at}: the overlay does not load over the block of line {}:\n{e}",
                        base.line
                    ));
                }
            }
            Some("invalid") => {
                let shown = blocks
                    .get(i + 1)
                    .filter(|next| next.info == "text")
                    .map(|next| next.text.trim_end());
                match (TopologyConfig::from_yaml(&main, &block.text), shown) {
                    (Ok(_), _) => failures.push(format!("{at}: an `invalid` block loads")),
                    (Err(_), None) => failures.push(format!(
                        "{at}: an `invalid` block without the `text` block of its message"
                    )),
                    (Err(e), Some(shown)) if e.to_string() != shown => failures.push(format!(
                        "{at}: the message differs from the page's; the loader says:\n{e}"
                    )),
                    (Err(_), Some(_)) => {}
                }
            }
            Some("fragment") => {}
            Some(other) => failures.push(format!(
                "{at}: unknown block kind `yaml {other}`: expected `yaml`, `yaml overlay`, \
                 `yaml invalid` or `yaml fragment`"
            )),
        }
    }
    failures
}

fn missing_fields(page: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for (title, fields) in FIELD_TABLES {
        let Some(rows) = rows(page, title) else {
            failures.push(format!("no section headed `{title}`"));
            continue;
        };
        let fields: BTreeSet<String> = fields.iter().map(|f| f.to_string()).collect();
        let missing: Vec<&String> = fields.difference(&rows).collect();
        let unknown: Vec<&String> = rows.difference(&fields).collect();
        if !missing.is_empty() {
            failures.push(format!("section `{title}` has no row for {missing:?}"));
        }
        if !unknown.is_empty() {
            failures.push(format!(
                "section `{title}` has rows for {unknown:?}, which the loader does not accept"
            ));
        }
    }
    failures
}

#[test]
fn every_yaml_block_of_the_reference_loads_as_marked() {
    let failures = load_all(PAGE);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The page shows one block of each kind at least, so the conventions stay exercised.
    let blocks = blocks(PAGE);
    let kinds: BTreeSet<&str> = blocks
        .iter()
        .filter(|b| b.info.starts_with("yaml"))
        .map(|b| b.info.as_str())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["yaml", "yaml fragment", "yaml invalid", "yaml overlay"])
    );
}

#[test]
fn the_reference_has_a_row_for_every_field_the_loader_accepts() {
    let failures = missing_fields(PAGE);
    assert!(
        failures.is_empty(),
        "docs/topology.md:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_checks_notice_a_missing_row_and_a_block_that_does_not_load() {
    let without_row = PAGE.replacen("| `working_dir` | string | the base directory |", "|", 1);
    assert_eq!(
        missing_fields(&without_row),
        ["section `target.process` has no row for [\"working_dir\"]"]
    );
    let broken = PAGE.replacen("\n    port: auto\n", "\n    port: otto\n", 1);
    let failures = load_all(&broken);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("the block does not load"),
        "{failures:?}"
    );
}
