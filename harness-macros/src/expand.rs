//! `#[harness_test]` from start to end: parse, check against the topology file, render; on
//! mistakes, every error at once beside the user's function as written.

use std::path::PathBuf;

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

use crate::args::parse_args;
use crate::errors::Errors;
use crate::render::{Entry, render};
use crate::signature::inspect;
use crate::topology::read;

/// Expands `#[harness_test(args)] item`, with paths relative to `manifest_dir`.
pub(crate) fn expand(args: TokenStream, item: TokenStream, manifest_dir: PathBuf) -> TokenStream {
    let mut errors = Errors::default();
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(e) => {
            let error = syn::Error::new(e.span(), "#[harness_test] goes on an `async fn`")
                .to_compile_error();
            return quote!(#item #error);
        }
    };
    let args = parse_args(args, &mut errors);
    let mut services: Option<Vec<String>> = None;
    let mut topology = String::new();
    if let Some(lit) = &args.topology {
        match read(lit, &manifest_dir) {
            Ok(file) => {
                topology = file.path.display().to_string();
                services = Some(file.services);
            }
            Err(e) => errors.push(e),
        }
    }
    let mut overlays = Vec::new();
    for lit in &args.overlays {
        match read(lit, &manifest_dir) {
            // Overlays may add services.
            Ok(file) => {
                if let Some(services) = &mut services {
                    for name in file.services {
                        if !services.contains(&name) {
                            services.push(name);
                        }
                    }
                }
                overlays.push(file.path.display().to_string());
            }
            Err(e) => errors.push(e),
        }
    }
    let label = args
        .topology
        .as_ref()
        .map(|l| l.value())
        .unwrap_or_default();
    let injections = inspect(
        &mut func,
        services.as_deref().map(|s| (s, label.as_str())),
        &mut errors,
    );
    if !errors.is_empty() {
        // The function stays, so the rest of the user's code keeps its own diagnostics.
        let compile_errors = errors.to_compile_errors();
        return quote!(#func #compile_errors);
    }
    render(
        &func,
        &Entry {
            topology,
            overlays,
            timeout_ms: args.timeout_ms,
            ignore: args.ignore.map(|reason| reason.map(|lit| lit.value())),
            isolated: args.isolated,
            injections: &injections,
        },
    )
}
