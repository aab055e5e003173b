//! Whether the test target a `#[harness_test]` is in has a runner. Without `harness::main!()`
//! a `harness = false` target fails with rustc's "`main` function not found", which says
//! nothing of harness; a target that libtest runs would run none of the attribute's tests.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use proc_macro2::TokenStream;
use quote::quote;
use syn::Item;

use crate::errors::shown;

/// The message when the target's root file has no runner.
pub(crate) fn no_runner_message(root: &Path) -> String {
    format!(
        "{} has no harness::main!(): the #[harness_test]s of a test target run only under it. \
         End that file with `harness::main!();` and declare the target in Cargo.toml as \
         [[test]] name = \"...\" with harness = false",
        shown(root).display()
    )
}

/// The message of the test the attribute leaves for libtest, which fails to compile: only
/// libtest's build (rustc --test) keeps `#[test]` items.
pub(crate) const LIBTEST_TARGET: &str = "#[harness_test] functions do not run in a test target that libtest runs: declare this \
     target in Cargo.toml as [[test]] name = \"...\" with harness = false, and end its root \
     file with harness::main!();";

/// What the attribute adds so that its test cannot be dropped without a word: a `#[test]` that
/// fails to compile in a target that libtest runs, and an error when the target's root file
/// has no runner. Each comes once per compilation where the compiler keeps macro state.
pub(crate) fn runner_checks(file: Option<&Path>, manifest_dir: &Path) -> TokenStream {
    thread_local! {
        static DONE: RefCell<HashSet<PathBuf>> = RefCell::new(HashSet::new());
    }
    let first = |key: PathBuf| DONE.with(|done| done.borrow_mut().insert(key));
    let mut out = TokenStream::new();
    if first(PathBuf::new()) {
        out.extend(quote! {
            const _: () = {
                #[::core::prelude::v1::test]
                fn harness_test_needs_harness_false() {
                    ::core::compile_error!(#LIBTEST_TARGET);
                }
            };
        });
    }
    if let Some(root) = file.and_then(|file| root_without_runner(file, manifest_dir))
        && first(root.clone())
    {
        out.extend(
            syn::Error::new(proc_macro2::Span::call_site(), no_runner_message(&root))
                .to_compile_error(),
        );
    }
    out
}

/// The root file of the test target the attribute written in `file` belongs to, when it can be
/// told and has no runner: neither a `fn main` nor a macro call named `main` at its top level.
/// `None` when it has one, or when the root cannot be found or parsed (then nothing is said).
pub(crate) fn root_without_runner(file: &Path, manifest_dir: &Path) -> Option<PathBuf> {
    let root = root_file(file, manifest_dir)?;
    thread_local! {
        /// Files already judged in this compilation: a suite has many attributes.
        static JUDGED: RefCell<HashMap<PathBuf, bool>> = RefCell::new(HashMap::new());
    }
    let has_runner = JUDGED.with(|judged| {
        if let Some(&known) = judged.borrow().get(&root) {
            return Some(known);
        }
        let text = std::fs::read_to_string(&root).ok()?;
        let known = has_runner(&syn::parse_file(&text).ok()?);
        judged.borrow_mut().insert(root.clone(), known);
        Some(known)
    })?;
    (!has_runner).then_some(root)
}

/// The root file of the test target whose file `file` is: `file` itself when it is
/// `tests/NAME.rs` or `tests/NAME/main.rs` for the crate being compiled, else that file when it
/// exists and `file` is under `tests/`. A target with a `path =` of its own is not found.
fn root_file(file: &Path, manifest_dir: &Path) -> Option<PathBuf> {
    let crate_name = std::env::var("CARGO_CRATE_NAME").ok()?;
    let tests = manifest_dir.join("tests");
    let file = file.canonicalize().ok()?;
    let tests = tests.canonicalize().ok()?;
    if !file.starts_with(&tests) {
        return None;
    }
    // The target's name may have `-` where the crate's has `_`.
    let names = [crate_name.clone(), crate_name.replace('_', "-")];
    names
        .iter()
        .flat_map(|name| {
            [
                tests.join(format!("{name}.rs")),
                tests.join(name).join("main.rs"),
            ]
        })
        .find(|candidate| candidate.is_file())
}

/// Whether the file's top level has a `fn main` or a macro call whose name is `main`.
fn has_runner(file: &syn::File) -> bool {
    file.items.iter().any(|item| match item {
        Item::Fn(function) => function.sig.ident == "main",
        Item::Macro(call) => call
            .mac
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "main"),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runner_is_a_main_function_or_a_main_macro_at_the_top_level() {
        for (text, expected) in [
            ("harness::main!();", true),
            ("harness::main!(runtime = \"tokio\");", true),
            (
                "fn main() -> std::process::ExitCode { harness::testing::run() }",
                true,
            ),
            ("// harness::main!();\nfn helper() {}", false),
            ("mod inner { harness::main!(); }", false),
            ("fn not_main() {}", false),
        ] {
            let file = syn::parse_file(text).unwrap();
            assert_eq!(has_runner(&file), expected, "{text}");
        }
    }
}
