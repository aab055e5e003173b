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

/// Declares an integration test over a topology, run by `harness::main!()` in a
/// `harness = false` test target.
///
/// ```ignore
/// #[harness_test(topology = "topologies/kv.yaml", timeout = "60s")]
/// async fn put_then_get(api_server: Service, cache: SocketAddr, topo: &Topology) { /* ... */ }
/// ```
///
/// - `topology = "path.yaml"` (required): relative to the crate's manifest directory. The file
///   must exist and is embedded in the test, so editing it rebuilds the test.
/// - Parameters are injected by name and type: `Service` or `SocketAddr` for the service the
///   parameter is named after (`api_server` for `api-server`) or that `#[service("name")]`
///   names, `&Topology` (any name) for the whole topology. A name that is not a service of the
///   file, or another type, is a compile error.
/// - The function is an `async fn` returning `()` or `Result<(), E>` with `E: Debug`.
/// - Options: `timeout = "30s"`, `ignore` or `ignore = "why"`, `isolated` (a private copy of
///   the topology, for tests that stop or restart services), `overlays = ["a.yaml", ...]`.
///
/// Tests that name the same file and overlays share one running copy within a process. The
/// walkthrough is `docs/testing.md` in the harness repository.
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
