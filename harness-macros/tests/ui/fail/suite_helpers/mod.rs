//! Loaded by `mod suite_helpers;`; in a directory, so trybuild does not take it for
//! a case of its own.

#[test]
fn in_a_module_file() {}
