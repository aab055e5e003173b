//! The attribute as the compiler sees it: cases that must compile (and run), and cases that
//! must fail with the diagnostics checked in beside them (`tests/ui/fail/*.stderr`; regenerate
//! with `TRYBUILD=overwrite`).

use std::path::{Path, PathBuf};

/// trybuild builds the cases as a crate of its own in `TARGET/tests/trybuild/PACKAGE/`,
/// which is their `CARGO_MANIFEST_DIR`: the topology files they name must be there.
fn place_topologies() {
    let exe = std::env::current_exe().expect("the test binary's path");
    // TARGET/PROFILE/deps/ui-HASH
    let target: PathBuf = exe
        .ancestors()
        .nth(3)
        .expect("TARGET/PROFILE/deps/TEST")
        .to_path_buf();
    let project = target
        .join("tests/trybuild")
        .join(env!("CARGO_PKG_NAME"))
        .join("topologies");
    std::fs::create_dir_all(&project).expect("create the cases' topologies directory");
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/topologies");
    for entry in std::fs::read_dir(&ours).expect("tests/ui/topologies") {
        let entry = entry.expect("a directory entry");
        std::fs::copy(entry.path(), project.join(entry.file_name())).expect("copy a topology");
    }
}

#[test]
fn ui() {
    place_topologies();
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
