//! [`test_prefix`]: a name of the running test's own, for the data it makes in a shared copy.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many names this process has handed out.
static COUNT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The name of the test whose body runs on this thread.
    static CURRENT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The most a name may have: PostgreSQL's limit for an identifier.
const MAX_LEN: usize = 63;

/// A name of the running test's own, for what it makes in a copy it shares with other tests:
/// a database schema, a key or topic prefix, a bucket, a user. The same within one run of a
/// test body (on the thread the body runs on), different for every other test and every
/// other run, also in other processes that share the copy (under nextest, or the workers of
/// `cargo test`): the test's name, then this process's id and a count.
///
/// It is lowercase ASCII letters, digits and `_`, starts with a letter and has at most 63
/// characters, so it is a valid unquoted SQL name, Redis key part and Kafka topic part.
/// Outside a test body it is a fresh name each call (`harness_<pid>_<n>`).
///
/// ```
/// let prefix = harness::testing::test_prefix();
/// assert!(prefix.starts_with("harness_"));
/// assert!(prefix.len() <= 63);
/// assert!(prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
/// ```
pub fn test_prefix() -> String {
    CURRENT
        .with(|current| current.borrow().clone())
        .unwrap_or_else(|| make("harness"))
}

/// Gives the body of `test` that runs on this thread its name until the guard drops.
pub(crate) fn enter(test: &str) -> Guard {
    let name = make(test);
    CURRENT.with(|current| *current.borrow_mut() = Some(name));
    Guard
}

/// Clears the running test's name.
pub(crate) struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        CURRENT.with(|current| *current.borrow_mut() = None);
    }
}

/// `test` made a name: lowercased, other characters as `_`, shortened so that the process id
/// and the count fit.
fn make(test: &str) -> String {
    let suffix = format!(
        "_{}_{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    );
    let mut stem: String = test
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '_',
        })
        .collect();
    while stem.contains("__") {
        stem = stem.replace("__", "_");
    }
    let mut stem = stem.trim_matches('_').to_string();
    if !stem.starts_with(|c: char| c.is_ascii_lowercase()) {
        stem.insert(0, 't');
    }
    stem.truncate(MAX_LEN.saturating_sub(suffix.len()));
    format!("{}{suffix}", stem.trim_end_matches('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_s_name_is_its_own_stable_and_fits_every_store() {
        let first = {
            let _in = enter("cache::Survives-Restart");
            let name = test_prefix();
            assert_eq!(test_prefix(), name, "stable within the test");
            name
        };
        assert!(first.starts_with("cache_survives_restart_"), "{first}");
        let again = {
            let _in = enter("cache::Survives-Restart");
            test_prefix()
        };
        assert_ne!(first, again, "another run of the test");
        let long = {
            let _in = enter(&format!("9{}", "x".repeat(200)));
            test_prefix()
        };
        assert!(long.len() <= MAX_LEN && long.starts_with("t9x"), "{long}");
        assert!(test_prefix().starts_with("harness_"), "outside a test");
        assert_ne!(test_prefix(), test_prefix(), "fresh outside a test");
    }
}
