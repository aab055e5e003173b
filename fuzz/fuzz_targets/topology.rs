//! The topology loader over any text: it never panics, and what it decides it decides the
//! same way twice. An accepted topology has an acyclic dependency graph that orders every
//! service; a refused one names the file, with a line, in every diagnostic.

#![no_main]

use std::path::Path;

use harness::topology::{TopologyConfig, TopologyError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let name = Path::new("fuzz/services.yaml");
    let first = TopologyConfig::from_yaml(name, text);
    let second = TopologyConfig::from_yaml(name, text);
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "the same text decoded twice differs");
            let graph = a
                .graph()
                .expect("an accepted topology has an acyclic graph");
            let ordered: usize = graph.start_order().iter().map(Vec::len).sum();
            assert_eq!(ordered, a.services.len(), "start order leaves out services");
        }
        (Err(a), Err(b)) => {
            assert_eq!(
                a.to_string(),
                b.to_string(),
                "the same text refused differently"
            );
            check_located(a, name);
        }
        _ => panic!("the same text was accepted once and refused once"),
    }
});

fn check_located(error: &TopologyError, name: &Path) {
    let diagnostics = error.diagnostics();
    assert!(
        !diagnostics.is_empty(),
        "a refusal without a diagnostic: {error}"
    );
    for diagnostic in diagnostics {
        let location = diagnostic.location();
        assert_eq!(&*location.file, name, "{diagnostic}");
        assert!(location.line >= 1, "no line: {diagnostic}");
    }
}
