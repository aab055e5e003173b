//! The package manifest decoder over any text: it never panics, an accepted manifest decodes
//! the same twice, and a refused one has at least one diagnostic, each naming the file with a
//! line.

#![no_main]

use std::path::Path;

use harness::package::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let name = Path::new("pkg.tar.gz!/manifest.yaml");
    match (
        Manifest::from_yaml(name, text),
        Manifest::from_yaml(name, text),
    ) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            // What the manifest says fits the install directory's naming rules.
            harness::package::validate_name(&a.name).expect("an accepted name is valid");
            harness::package::validate_version(&a.version).expect("an accepted version is valid");
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            let _ = a.to_string();
            assert!(
                !a.diagnostics.is_empty(),
                "a refusal without a diagnostic: {a}"
            );
            for diagnostic in &a.diagnostics {
                assert_eq!(&*diagnostic.location().file, name, "{diagnostic}");
                assert!(diagnostic.location().line >= 1, "no line: {diagnostic}");
            }
        }
        _ => panic!("the same manifest was accepted once and refused once"),
    }
});
