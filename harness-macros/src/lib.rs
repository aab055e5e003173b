//! The `#[harness_test]` attribute of the `harness` crate. Use it through `harness`, which
//! re-exports it.
