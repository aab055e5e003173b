//! A base topology and an overlay, split at the first NUL byte: merging never panics and is
//! deterministic, and every diagnostic names one of the two files with a line.

#![no_main]

use std::path::PathBuf;

use harness::topology::TopologyConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (base, overlay) = text.split_once('\0').unwrap_or((text, ""));
    let files = [
        (PathBuf::from("services.yaml"), base.to_string()),
        (PathBuf::from("ci/overlay.yaml"), overlay.to_string()),
    ];
    let first = TopologyConfig::from_yaml_files(&files);
    let second = TopologyConfig::from_yaml_files(&files);
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "the same overlay applied twice differs");
            assert_eq!(a.files, files.map(|(p, _)| p), "files not recorded");
            a.graph()
                .expect("an accepted topology has an acyclic graph");
        }
        (Err(a), Err(b)) => {
            assert_eq!(
                a.to_string(),
                b.to_string(),
                "the same files refused differently"
            );
            assert!(
                !a.diagnostics().is_empty(),
                "a refusal without a diagnostic: {a}"
            );
            for diagnostic in a.diagnostics() {
                let location = diagnostic.location();
                assert!(
                    files.iter().any(|(p, _)| **p == *location.file),
                    "names another file: {diagnostic}"
                );
                assert!(location.line >= 1, "no line: {diagnostic}");
            }
        }
        _ => panic!("the same files were accepted once and refused once"),
    }
});
