//! Hostile topology files: what is not a regular file (a FIFO, a directory, a device), a file
//! too large to be a topology, a line too long to quote, and YAML that breaches the parser's
//! budgets. Each is refused promptly, with a message naming the file and what limit it hit.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use harness::topology::{MAX_TOPOLOGY_FILE_SIZE, TopologyConfig, TopologyError};

/// How long a refusal may take before the test gives up on it: generous, never a measurement.
const WAIT: Duration = Duration::from_secs(60);

/// Loads `path` with `overlays` on a thread of its own, so that a load that blocks (a FIFO
/// with no writer) fails the test instead of hanging it; `unblock` is then called to let the
/// thread end.
fn load_or_give_up(path: &Path, overlays: &[PathBuf], unblock: impl FnOnce()) -> TopologyError {
    let (tx, rx) = mpsc::channel();
    let (path, overlays) = (path.to_path_buf(), overlays.to_vec());
    let loader = std::thread::spawn(move || {
        let _ = tx.send(TopologyConfig::load_with_overlays(&path, &overlays));
    });
    let result = rx.recv_timeout(WAIT);
    if result.is_err() {
        unblock();
    }
    let _ = loader.join();
    match result {
        Ok(Ok(_)) => panic!("the file was accepted"),
        Ok(Err(e)) => e,
        Err(_) => panic!("loading did not return within {WAIT:?}"),
    }
}

fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .expect("mkfifo");
}

/// Opens the FIFO for writing and closes it at once: a reader blocked on it sees the end.
fn release_fifo(path: &Path) {
    let _ = std::fs::OpenOptions::new().write(true).open(path);
}

const GOOD: &str = "services:\n  a:\n    target:\n      process: { binary: /bin/true }\n";

#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("services.yaml");
    mkfifo(&fifo);
    let error = load_or_give_up(&fifo, &[], || release_fifo(&fifo));
    assert_eq!(
        error.to_string(),
        format!(
            "read topology file {}: it is a FIFO, not a regular file",
            fifo.display()
        )
    );
}

#[test]
fn a_fifo_as_an_overlay_is_refused_naming_the_overlay() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("services.yaml");
    std::fs::write(&main, GOOD).unwrap();
    let fifo = dir.path().join("overlay.yaml");
    mkfifo(&fifo);
    let error = load_or_give_up(&main, std::slice::from_ref(&fifo), || release_fifo(&fifo));
    assert_eq!(
        error.to_string(),
        format!(
            "read topology file {}: it is a FIFO, not a regular file",
            fifo.display()
        )
    );
}

#[test]
fn a_directory_and_a_device_are_refused_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let error = load_or_give_up(dir.path(), &[], || {});
    assert_eq!(
        error.to_string(),
        format!(
            "read topology file {}: it is a directory, not a regular file",
            dir.path().display()
        )
    );
    // /dev/null would read as an empty file; a character device is no topology either.
    let error = load_or_give_up(Path::new("/dev/null"), &[], || {});
    assert_eq!(
        error.to_string(),
        "read topology file /dev/null: it is a character device, not a regular file"
    );
}

#[test]
fn a_file_larger_than_the_limit_is_refused_saying_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    // Valid YAML all the way (a comment), so only its size can be the reason.
    let mut text = String::from(GOOD);
    text.push('#');
    text.push_str(&" ".repeat(MAX_TOPOLOGY_FILE_SIZE as usize - text.len()));
    std::fs::write(&big, &text).unwrap();
    // Exactly at the limit: accepted.
    TopologyConfig::load(&big).expect("a file of exactly the limit loads");
    text.push('\n');
    std::fs::write(&big, &text).unwrap();
    let error = load_or_give_up(&big, &[], || {});
    assert_eq!(
        error.to_string(),
        format!(
            "read topology file {}: it is larger than 4 MiB ({} bytes), the most a topology \
             file may hold",
            big.display(),
            MAX_TOPOLOGY_FILE_SIZE + 1
        )
    );
}

#[test]
fn a_diagnostic_quotes_at_most_a_few_hundred_characters_of_a_long_line() {
    let long_value = "x".repeat(100_000);
    let text = format!(
        "services:\n  a:\n    target:\n      process: {{ binary: /bin/true }}\n    \
         colour: {long_value}\n"
    );
    let error = TopologyConfig::from_yaml("long.yaml", &text).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("long.yaml:5:5: "), "{message}");
    assert!(message.contains("colour"), "{message}");
    for line in message.lines() {
        assert!(
            line.chars().count() <= 260,
            "a line of {} characters: {}...",
            line.chars().count(),
            &line[..300]
        );
    }
    // Cut with a visible ellipsis, not silently.
    assert!(message.contains('…'), "{message}");
}

#[test]
fn an_error_far_along_a_long_line_is_still_shown_under_its_caret() {
    // The mistake is at column 5000 of a line of 10000: the quoted window holds it.
    let padding = "y".repeat(4990);
    let text = format!(
        "services:\n  a:\n    target:\n      process: {{ binary: /bin/true, args: [{padding}], \
         bogus: 1, more: [{padding}] }}\n"
    );
    let error = TopologyConfig::from_yaml("wide.yaml", &text).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("unknown field `bogus`"), "{message}");
    let lines: Vec<&str> = message.lines().collect();
    let quoted = lines
        .iter()
        .position(|l| l.contains("bogus: 1"))
        .unwrap_or_else(|| panic!("the culprit is not quoted: {message}"));
    let caret = lines[quoted + 1];
    let column = caret.find('^').expect("a caret");
    let under: String = lines[quoted].chars().skip(column).take(5).collect();
    assert_eq!(under, "bogus", "{message}");
    assert!(lines.iter().all(|l| l.chars().count() <= 260), "{message}");
}

#[test]
fn too_many_yaml_nodes_is_a_located_sentence_naming_the_limit() {
    let mut text = String::from(GOOD);
    text.push_str("x-padding: [");
    text.push_str(&"0,".repeat(260_000));
    text.push_str("0]\n");
    let error = TopologyConfig::from_yaml("nodes.yaml", &text).unwrap_err();
    let message = error.to_string();
    assert!(!message.contains("budget breached"), "{message}");
    assert!(!message.contains("Nodes {"), "{message}");
    let first = message.lines().nth(2).unwrap_or_default();
    assert!(
        first.starts_with("nodes.yaml:5:")
            && first.ends_with(
                ": the file holds more than 250000 YAML nodes (values, lists and mappings), \
                 the most a topology file may hold"
            ),
        "{message}"
    );
}

#[test]
fn nesting_too_deep_is_a_located_sentence_naming_the_limit() {
    let mut text = String::from(GOOD);
    text.push_str("x-deep: ");
    text.push_str(&"[".repeat(100));
    text.push_str(&"]".repeat(100));
    text.push('\n');
    let error = TopologyConfig::from_yaml("deep.yaml", &text).unwrap_err();
    let message = error.to_string();
    assert!(!message.contains("budget breached"), "{message}");
    assert!(
        message.contains("deep.yaml:5:")
            && message.contains("lists and mappings nest more than 32 deep"),
        "{message}"
    );
}
