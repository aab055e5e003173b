//! `#[harness_test]` from start to end: parse, check against the topology file, render; on
//! mistakes, every error at once beside the user's function as written.

use std::path::{Path, PathBuf};

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;

use crate::args::parse_args;
use crate::errors::Errors;
use crate::render::{Entry, render};
use crate::signature::inspect;
use crate::topology::{check_once, read};

/// Expands `#[harness_test(args)] item` written in `file` (when the compiler says), with paths
/// relative to `manifest_dir`.
pub(crate) fn expand(
    args: TokenStream,
    item: TokenStream,
    manifest_dir: PathBuf,
    file: Option<PathBuf>,
) -> TokenStream {
    let checks = crate::suite_root::runner_checks(file.as_deref(), &manifest_dir);
    let expanded = expand_item(args, item, &manifest_dir);
    quote!(#expanded #checks)
}

fn expand_item(args: TokenStream, item: TokenStream, manifest_dir: &Path) -> TokenStream {
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
    // The file and its overlays, read; then checked together, as the runner loads them.
    let mut files = Vec::new();
    let mut unreadable = false;
    for lit in args.topology.iter().chain(&args.overlays) {
        match read(lit, manifest_dir) {
            Ok(file) => files.push(file),
            Err(e) => {
                errors.push(e);
                unreadable = true;
            }
        }
    }
    // With a file missing, the others still name services, but their mistakes may be the
    // missing file's to fix: only the readable files' service names are used then.
    let checked = (!files.is_empty()).then(|| check_once(&files, manifest_dir));
    let mut workspace_bins = Vec::new();
    let services = match checked {
        None => None,
        Some(Ok(checked)) => {
            workspace_bins = checked.workspace_bins;
            Some(checked.services)
        }
        Some(Err(Some(e))) if !unreadable => {
            errors.push(e);
            None
        }
        Some(Err(_)) => None,
    };
    let mut paths = files.iter().map(|f| f.path.display().to_string());
    let topology = paths.next().unwrap_or_default();
    let overlays: Vec<String> = paths.collect();
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
            runtime: args.runtime,
            cargo_bins: crate::topology::cargo_bins(),
            workspace_bins,
            manifest: manifest_dir.join("Cargo.toml").display().to_string(),
            injections: &injections,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest directory holding `base.yaml` (service `db`) and `extra.yaml` (service
    /// `cache`).
    fn manifest_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let service = "{ target: { process: { binary: /bin/true } } }";
        std::fs::write(
            dir.path().join("base.yaml"),
            format!("services:\n  db: {service}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("extra.yaml"),
            format!("services:\n  cache: {service}\n"),
        )
        .unwrap();
        dir
    }

    fn expand_str(args: &str, item: &str, dir: &tempfile::TempDir) -> String {
        expand_item(args.parse().unwrap(), item.parse().unwrap(), dir.path()).to_string()
    }

    #[test]
    fn an_item_that_is_not_a_function_is_kept_beside_one_error() {
        let dir = manifest_dir();
        let out = expand_str(r#"topology = "base.yaml""#, "struct S;", &dir);
        assert!(out.starts_with("struct S ;"), "{out}");
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(out.contains("goes on an `async fn`"), "{out}");
    }

    #[test]
    fn services_an_overlay_adds_can_be_injected() {
        let dir = manifest_dir();
        let item = "async fn t(db: Service, cache: Service) {}";
        let without = expand_str(r#"topology = "base.yaml""#, item, &dir);
        assert!(without.contains("compile_error"), "{without}");
        assert!(without.contains("cache"), "{without}");
        let with = expand_str(
            r#"topology = "base.yaml", overlays = ["extra.yaml"]"#,
            item,
            &dir,
        );
        assert!(!with.contains("compile_error"), "{with}");
        let base = dir.path().join("base.yaml").display().to_string();
        let extra = dir.path().join("extra.yaml").display().to_string();
        assert!(with.contains(&format!("{base:?}")), "{with}");
        assert!(with.contains(&format!("{extra:?}")), "{with}");
    }

    #[test]
    fn every_mistake_is_reported_at_once_and_the_function_is_kept() {
        let dir = manifest_dir();
        let out = expand_str(
            r#"topology = "base.yaml", overlays = ["missing.yaml"]"#,
            "async fn t(nope: Service) {}",
            &dir,
        );
        assert!(out.starts_with("async fn t"), "{out}");
        assert!(
            out.contains(r#"cannot read topology file \"missing.yaml\""#),
            "{out}"
        );
        assert!(out.contains("nope"), "{out}");
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
    }
}
