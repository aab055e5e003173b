//! The code `#[harness_test]` expands to: the user's function as written, and beside it an entry
//! in the harness's test list with a runner that injects the parameters.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ItemFn;
use syn::spanned::Spanned;

use crate::signature::Injection;

/// What the expansion needs besides the function.
pub(crate) struct Entry<'a> {
    /// The topology file's absolute path.
    pub(crate) topology: String,
    /// The overlays' absolute paths, in order.
    pub(crate) overlays: Vec<String>,
    pub(crate) timeout_ms: Option<u64>,
    /// `None` unless the test is ignored; then the reason, if `ignore = "reason"` gave one.
    pub(crate) ignore: Option<Option<String>>,
    pub(crate) isolated: bool,
    /// `runtime = "..."`, when the test names one.
    pub(crate) runtime: Option<crate::args::Runtime>,
    /// The package's binaries and their paths, for `${cargo_bin:NAME}`.
    pub(crate) cargo_bins: Vec<(String, String)>,
    /// The binaries of other packages of the workspace, with their packages.
    pub(crate) workspace_bins: Vec<(String, String)>,
    /// The package's `Cargo.toml`, which selects its workspace.
    pub(crate) manifest: String,
    pub(crate) injections: &'a [Injection],
}

/// The function followed by its test entry.
pub(crate) fn render(func: &ItemFn, entry: &Entry) -> TokenStream {
    let private = quote!(::harness::testing::__private);
    let name = &func.sig.ident;
    let name_text = name.to_string();
    let source = |path: &str| {
        quote! {
            #private::Source { path: #path, text: ::core::include_str!(#path) }
        }
    };
    let topology = source(&entry.topology);
    let overlays = entry.overlays.iter().map(|p| source(p));
    let timeout = match entry.timeout_ms {
        Some(ms) => quote!(::core::option::Option::Some(#ms)),
        None => quote!(::core::option::Option::None),
    };
    let (ignored, isolated) = (entry.ignore.is_some(), entry.isolated);
    let ignore_reason = match entry.ignore.as_ref().and_then(Option::as_deref) {
        Some(reason) => quote!(::core::option::Option::Some(#reason)),
        None => quote!(::core::option::Option::None),
    };
    let (runtime, runtime_check) = match entry.runtime {
        Some(runtime) => {
            let (variant, check) = runtime.tokens();
            (quote!(::core::option::Option::Some(#variant)), check)
        }
        None => (quote!(::core::option::Option::None), TokenStream::new()),
    };
    let cargo_bins = entry
        .cargo_bins
        .iter()
        .map(|(name, path)| quote!((#name, #path)));
    let workspace_bins = entry
        .workspace_bins
        .iter()
        .map(|(name, package)| quote!((#name, #package)));
    let manifest = &entry.manifest;
    let args: Vec<_> = (0..entry.injections.len())
        .map(|i| format_ident!("__harness_arg{i}"))
        .collect();
    let lets = entry
        .injections
        .iter()
        .zip(&args)
        .map(|(injection, arg)| match injection {
            Injection::Service { service } => {
                quote!(let #arg = #private::service(__harness_topology, #service)?;)
            }
            Injection::Addr { service } => {
                quote!(let #arg = #private::addr(__harness_topology, #service)?;)
            }
            Injection::Topology => quote!(let #arg = __harness_topology;),
        });
    // A return type the runner cannot judge is reported at the return type.
    let check = match &func.sig.output {
        syn::ReturnType::Type(_, ty) => quote_spanned! {ty.span()=>
            #private::IntoTestResult::into_test_result(__harness_output)
        },
        syn::ReturnType::Default => {
            quote!(#private::IntoTestResult::into_test_result(__harness_output))
        }
    };
    quote! {
        #func

        const _: () = {
            #[#private::linkme::distributed_slice(#private::TESTS)]
            #[linkme(crate = #private::linkme)]
            static __HARNESS_TEST: #private::TestCase = #private::TestCase {
                module_path: ::core::module_path!(),
                name: #name_text,
                topology: #topology,
                overlays: &[#(#overlays),*],
                timeout_ms: #timeout,
                ignored: #ignored,
                ignore_reason: #ignore_reason,
                isolated: #isolated,
                runtime: #runtime,
                cargo_bins: &[#(#cargo_bins),*],
                workspace_bins: &[#(#workspace_bins),*],
                manifest: #manifest,
                run: __harness_run,
            };
            #runtime_check

            fn __harness_run(
                __harness_topology: &::harness::Topology,
            ) -> #private::TestFuture<'_> {
                ::std::boxed::Box::pin(async move {
                    #(#lets)*
                    let __harness_output = #name(#(#args),*).await;
                    #check
                })
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn renders_an_entry_that_injects_each_parameter() {
        let func: ItemFn = parse_quote!(
            async fn t(api_server: Service, topo: &Topology) {}
        );
        let injections = [
            Injection::Service {
                service: "api-server".into(),
            },
            Injection::Topology,
        ];
        let entry = Entry {
            topology: "/p/t.yaml".into(),
            overlays: vec!["/p/o.yaml".into()],
            timeout_ms: Some(500),
            ignore: Some(Some("needs a GPU".into())),
            isolated: true,
            runtime: Some(crate::args::Runtime::Tokio),
            cargo_bins: vec![("kv-server".into(), "/p/target/debug/kv-server".into())],
            workspace_bins: vec![("seed".into(), "tools".into())],
            manifest: "/p/Cargo.toml".into(),
            injections: &injections,
        };
        let out = render(&func, &entry).to_string();
        for expected in [
            "async fn t (api_server : Service , topo : & Topology) { }",
            "name : \"t\"",
            "text : :: core :: include_str ! (\"/p/t.yaml\")",
            "overlays : & [:: harness :: testing :: __private :: Source { path : \"/p/o.yaml\"",
            "timeout_ms : :: core :: option :: Option :: Some (500u64)",
            "isolated : true , runtime : :: core :: option :: Option :: Some (:: harness :: testing :: __private :: Runtime :: Tokio)",
            "const _ : () = :: harness :: testing :: __private :: require_tokio_feature :: < () > () ;",
            "cargo_bins : & [(\"kv-server\" , \"/p/target/debug/kv-server\")]",
            "workspace_bins : & [(\"seed\" , \"tools\")] , manifest : \"/p/Cargo.toml\"",
            "ignored : true , ignore_reason : :: core :: option :: Option :: Some (\"needs a GPU\")",
            "let __harness_arg0 = :: harness :: testing :: __private :: service (__harness_topology , \"api-server\") ? ;",
            "let __harness_arg1 = __harness_topology ;",
            "let __harness_output = t (__harness_arg0 , __harness_arg1) . await ;",
        ] {
            assert!(out.contains(expected), "{expected:?} not in {out}");
        }
    }
}
