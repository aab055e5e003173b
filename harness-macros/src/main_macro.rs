//! `harness::main!()`: the `fn main` of a `harness = false` test target, and the checks that
//! keep a suite from silently running less than it says.

use std::path::{Path, PathBuf};

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};

use crate::args::Runtime;
use crate::errors::shown;
use crate::plain_tests::PlainTest;

/// What `main!(...)` says: nothing, or `setup = f` and `runtime = "tokio"` in any order.
pub(crate) struct MainArgs {
    setup: Option<syn::Expr>,
    runtime: Option<Runtime>,
}

const OPTIONS: &str = "harness::main!() takes nothing, or `setup = function` and \
                       `runtime = \"tokio\"`, separated by a comma";

impl Parse for MainArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = MainArgs {
            setup: None,
            runtime: None,
        };
        while !input.is_empty() {
            let key: syn::Ident = input
                .parse()
                .map_err(|e| syn::Error::new(e.span(), OPTIONS))?;
            input
                .parse::<syn::Token![=]>()
                .map_err(|e| syn::Error::new(e.span(), OPTIONS))?;
            let twice = || syn::Error::new(key.span(), format!("`{key}` is given twice"));
            if key == "setup" {
                if args.setup.is_some() {
                    return Err(twice());
                }
                args.setup = Some(input.parse()?);
            } else if key == "runtime" {
                if args.runtime.is_some() {
                    return Err(twice());
                }
                args.runtime = Some(Runtime::parse(&input.parse()?)?);
            } else {
                return Err(syn::Error::new(
                    key.span(),
                    format!("`{key}` is not an option of harness::main!(): {OPTIONS}"),
                ));
            }
            if !input.is_empty() {
                input.parse::<syn::Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// Expands `main!(input)`; `root` is the file it is written in, when the compiler says (see
/// [`call_site_file`]).
pub(crate) fn expand(input: TokenStream, root: Option<PathBuf>) -> TokenStream {
    let args: MainArgs = match syn::parse2(input) {
        Ok(args) => args,
        Err(e) => return e.to_compile_error(),
    };
    let (runtime, runtime_check) = args.runtime.unwrap_or(Runtime::None).tokens();
    let setup = match &args.setup {
        None => quote!(|| {}),
        Some(setup) => quote!(#setup),
    };
    let run = quote!(::harness::testing::__private::main(#runtime, #setup));
    let plain = root
        .map(|root| crate::plain_tests::find(&root))
        .unwrap_or_default();
    let errors = plain.iter().map(plain_test_error);
    // The built-in `#[test]` shadowed by an attribute that refuses to compile: the backstop
    // for what the file scan cannot see (tests that macros generate at the top level, a build
    // where the compiler does not give the file). Left out when the scan already reports a
    // test, whose message would otherwise follow an "ambiguous" one.
    let shadow = (!plain.iter().any(|t| t.cfgs.is_empty())).then(|| {
        quote! {
            #[allow(unused_imports)]
            use ::harness::testing::__private::test;
        }
    });
    quote! {
        // Only libtest's build (rustc --test) keeps `#[test]` items, so only there does this
        // error fire; cargo sets cfg(test) for `harness = false` targets as well.
        #[::core::prelude::v1::test]
        fn harness_main_needs_harness_false() {
            ::core::compile_error!(
                "harness::main!() is the test runner of a `harness = false` target: declare \
                 this test in Cargo.toml as [[test]] name = \"...\" with harness = false"
            );
        }

        #shadow
        #(#errors)*

        #runtime_check

        fn main() -> ::std::process::ExitCode {
            #run
        }
    }
}

/// Whether `file` may be this target's: `main!()` written by a macro of a crate from a
/// registry or a git repository names that crate's file, which is not. (A path dependency's
/// cannot be told apart; its plain tests would be reported as well.)
pub(crate) fn not_a_dependency(file: &Path) -> bool {
    let cargo_home = std::env::var_os("CARGO_HOME").map(PathBuf::from);
    let file = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
    if let Some(home) = cargo_home.and_then(|h| h.canonicalize().ok())
        && file.starts_with(home)
    {
        return false;
    }
    // Cargo's default home, when the variable is not passed on.
    let parts: Vec<_> = file.components().map(|c| c.as_os_str()).collect();
    !parts
        .windows(2)
        .any(|w| w[0] == ".cargo" && (w[1] == "registry" || w[1] == "git"))
}

/// The error for one plain test, under the `cfg`s the test is under, at the `main!()` call.
fn plain_test_error(test: &PlainTest) -> TokenStream {
    let message = format!(
        "{}:{}: #[{}] fn {} would never run: in this `harness = false` target harness::main!() \
         runs only #[harness_test] functions. Write it as \
         #[harness_test(topology = \"...\")] async fn, or move it to a test target that libtest \
         runs (one without `harness = false`)",
        shown(&test.file).display(),
        test.line,
        test.attribute,
        test.function,
    );
    let error = quote!(::core::compile_error! { #message });
    if test.cfgs.is_empty() {
        return error;
    }
    // The predicates were read as text; unreadable ones (never valid Rust) make no error.
    let predicates: Result<Vec<TokenStream>, _> =
        test.cfgs.iter().map(|p| p.parse::<TokenStream>()).collect();
    match predicates {
        // A cfg the crate does not declare is already warned about at the test itself.
        Ok(predicates) => quote! {
            #[allow(unexpected_cfgs)]
            const _: () = {
                #[cfg(all(#(#predicates),*))]
                #error
            };
        },
        Err(_) => TokenStream::new(),
    }
}

/// The file `main!()` is written in, if the compiler says (rust-analyzer does not) and it is
/// not a dependency's.
pub(crate) fn call_site_file() -> Option<PathBuf> {
    proc_macro::Span::call_site()
        .local_file()
        .filter(|file| not_a_dependency(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_the_runner_and_an_error_for_each_plain_test() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("suite.rs");
        std::fs::write(
            &root,
            "mod a {\n    #[test]\n    fn t() {}\n}\n#[cfg(unix)]\n#[tokio::test]\nasync fn u() {}\n",
        )
        .unwrap();
        let out = expand(quote!(setup = build), Some(root.clone())).to_string();
        let file = root.display();
        for expected in [
            "fn main () -> :: std :: process :: ExitCode { :: harness :: testing :: __private :: main (:: harness :: testing :: __private :: Runtime :: None , build) }"
                .to_string(),
            format!(":: core :: compile_error ! {{ \"{file}:2: #[test] fn a::t would never run"),
            format!(
                "# [cfg (all (unix))] :: core :: compile_error ! {{ \"{file}:6: #[tokio::test] fn u would never run"
            ),
        ] {
            assert!(out.contains(&expected), "{expected:?} not in {out}");
        }
        // An unconditional finding replaces the shadowing import.
        assert!(!out.contains("__private :: test"), "{out}");

        let none = expand(TokenStream::new(), None).to_string();
        assert!(
            none.contains(
                "__private :: main (:: harness :: testing :: __private :: Runtime :: None , || { })"
            ),
            "{none}"
        );
        let tokio = expand(quote!(runtime = "tokio", setup = build), None).to_string();
        assert!(
            tokio.contains(
                "__private :: main (:: harness :: testing :: __private :: Runtime :: Tokio , build)"
            ),
            "{tokio}"
        );
        assert!(tokio.contains("require_tokio_feature"), "{tokio}");
        assert!(
            none.contains("use :: harness :: testing :: __private :: test ;"),
            "{none}"
        );
        assert!(!none.contains("would never run"), "{none}");
    }

    #[test]
    fn refuses_unknown_options() {
        for (input, says) in [
            (
                quote!(setpu = build),
                "`setpu` is not an option of harness::main!()",
            ),
            (
                quote!(runtime = "smol"),
                "is not a runtime; the runtimes are",
            ),
            (quote!(setup = a, setup = b), "`setup` is given twice"),
            (
                quote!(build),
                "harness::main!() takes nothing, or `setup = function`",
            ),
        ] {
            let out = expand(input, None).to_string();
            assert!(out.contains(says), "{says:?} not in {out}");
        }
    }
}
