//! The runner of a suite that runs only when another test asks for it, by setting `enable=1`:
//! a suite that fails, hangs or leaks on purpose, which `cargo nextest run` must not run by
//! itself.

use std::process::ExitCode;

/// Runs the suite's tests when `enable` is `1`; otherwise lists and runs none.
pub fn run_when_enabled(enable: &str) -> ExitCode {
    let mut args = harness::testing::Arguments::from_args();
    if std::env::var_os(enable).is_none_or(|v| v != "1") {
        // A filter no test matches: lists and runs nothing, but still speaks libtest's
        // protocol to cargo and nextest.
        args.filter = Some(format!("(set {enable}=1 to run this suite)"));
        args.exact = true;
    }
    harness::testing::run_with_args(args)
}
