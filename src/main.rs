//! The `harness` command line.
fn main() {}
