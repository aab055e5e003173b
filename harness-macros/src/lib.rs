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

/// Stands in for the built-in `#[test]` in a `harness::main!()` target, where libtest does not
/// run and a `#[test]` function would be dropped without a word: it makes that a compile error.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn test_in_harness_target(_args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let error = syn::Error::new(
        proc_macro2::Span::call_site(),
        "#[test] functions do not run in a `harness = false` target, where harness::main!() \
         is the runner: write #[harness_test(topology = \"...\")] async fn, or move this test \
         to a test target that libtest runs",
    )
    .to_compile_error();
    quote::quote!(#error #item).into()
}
