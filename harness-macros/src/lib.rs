//! The `#[harness_test]` attribute of the `harness` crate. Use it through `harness`, which
//! re-exports it; its documentation is on the re-export, `harness::harness_test`.
//!
//! The expansion refers only to `::harness::testing::__private`, so a crate that uses the
//! attribute needs only the `harness` dependency.

mod args;
mod errors;
mod expand;
mod render;
mod signature;
mod topology;

use proc_macro::TokenStream;

/// Declares an integration test over a topology: see `harness::harness_test`.
#[proc_macro_attribute]
pub fn harness_test(args: TokenStream, item: TokenStream) -> TokenStream {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    expand::expand(args.into(), item.into(), manifest_dir).into()
}
