//! harness's own tracing, shown on request: `HARNESS_LOG` (else `RUST_LOG`) turns on a
//! subscriber that writes to stderr.

use std::io::IsTerminal as _;

/// The variable holding the tracing filter for harness's own events, as `RUST_LOG` holds one
/// (an [`EnvFilter`](tracing_subscriber::EnvFilter) directive string such as
/// `harness=debug` or `harness::orchestrator=trace,warn`). When it is unset or empty,
/// `RUST_LOG` is read instead.
pub const TRACING_ENV: &str = "HARNESS_LOG";

/// The filter directives the user asked for: `HARNESS_LOG` when it is set and not empty, else
/// `RUST_LOG` when that is; `None` when neither is.
///
/// The test runner and the `harness` command read the same variables through this, so one
/// setting shows the same events in both.
pub fn tracing_directives() -> Option<String> {
    directives_from(|name| std::env::var(name).ok())
}

/// [`tracing_directives`] with the variables read by `var`.
fn directives_from(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    [TRACING_ENV, "RUST_LOG"]
        .into_iter()
        .filter_map(var)
        .find(|value| !value.trim().is_empty())
}

/// Installs a subscriber that writes harness's tracing events to stderr, filtered by
/// [`tracing_directives`], and returns whether it did.
///
/// Nothing is installed when neither variable is set, so a test binary is as quiet as it was.
/// The events go to stderr because stdout carries the runner's own lines, which must stay
/// valid under `--format json`; colours only when stderr is a terminal and `NO_COLOR` is
/// unset. A subscriber installed before (the user's own) wins: this one is then not installed.
/// Invalid directives are reported on stderr and ignored, as tracing-subscriber does.
///
/// The test runner calls it first thing in [`run_with_args`](super::run_with_args).
pub fn init_tracing() -> bool {
    let Some(directives) = tracing_directives() else {
        return false;
    };
    let filter = tracing_subscriber::EnvFilter::builder().parse_lossy(directives);
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_log_wins_over_rust_log_and_empty_counts_as_unset() {
        let read = |harness: Option<&str>, rust: Option<&str>| {
            directives_from(|name| match name {
                TRACING_ENV => harness.map(String::from),
                "RUST_LOG" => rust.map(String::from),
                _ => None,
            })
        };
        let results = [
            read(Some("harness=debug"), Some("warn")),
            read(None, Some("warn")),
            read(Some(" "), Some("warn")),
            read(Some("harness=trace"), None),
            read(Some(""), Some("")),
            read(None, None),
        ];
        let expected = [
            Some("harness=debug"),
            Some("warn"),
            Some("warn"),
            Some("harness=trace"),
            None,
            None,
        ];
        assert_eq!(results, expected.map(|e| e.map(String::from)));
    }
}
