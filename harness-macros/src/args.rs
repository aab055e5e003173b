//! The attribute's arguments: `topology = "..."`, `timeout = "30s"`, `ignore`, `isolated`,
//! `overlays = [...]`.

use proc_macro2::{Span, TokenStream};
use syn::LitStr;
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;

use crate::errors::Errors;

/// What `#[harness_test(...)]` says.
#[derive(Debug, Default)]
pub(crate) struct Args {
    /// The topology file, relative to the crate's manifest directory.
    pub(crate) topology: Option<LitStr>,
    /// Overlay files merged over it, in order, relative to the manifest directory.
    pub(crate) overlays: Vec<LitStr>,
    /// The test's time limit in milliseconds.
    pub(crate) timeout_ms: Option<u64>,
    /// `ignore` (no reason) or `ignore = "reason"`.
    pub(crate) ignore: Option<Option<LitStr>>,
    /// The test gets a private copy of the topology.
    pub(crate) isolated: bool,
    /// `runtime = "tokio"`: the runtime the body runs on, when not the suite's.
    pub(crate) runtime: Option<Runtime>,
}

/// A runtime `runtime = "..."` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runtime {
    None,
    Tokio,
    TokioMultiThread,
}

/// The runtimes, as written.
pub(crate) const RUNTIMES: &str = "\"none\", \"tokio\" and \"tokio-multi-thread\"";

impl Runtime {
    /// Reads `runtime = "..."`'s value.
    pub(crate) fn parse(lit: &LitStr) -> syn::Result<Runtime> {
        match lit.value().as_str() {
            "none" => Ok(Runtime::None),
            "tokio" => Ok(Runtime::Tokio),
            "tokio-multi-thread" | "tokio_multi_thread" => Ok(Runtime::TokioMultiThread),
            other => Err(syn::Error::new(
                lit.span(),
                format!("{other:?} is not a runtime; the runtimes are {RUNTIMES}"),
            )),
        }
    }

    /// The `harness::testing::__private::Runtime` it is, and for tokio the check that the
    /// `tokio` feature is on.
    pub(crate) fn tokens(self) -> (proc_macro2::TokenStream, proc_macro2::TokenStream) {
        let private = quote::quote!(::harness::testing::__private);
        let variant = match self {
            Runtime::None => quote::quote!(None),
            Runtime::Tokio => quote::quote!(Tokio),
            Runtime::TokioMultiThread => quote::quote!(TokioMultiThread),
        };
        let check = match self {
            Runtime::None => proc_macro2::TokenStream::new(),
            Runtime::Tokio | Runtime::TokioMultiThread => quote::quote! {
                const _: () = #private::require_tokio_feature::<()>();
            },
        };
        (quote::quote!(#private::Runtime::#variant), check)
    }
}

const KNOWN: &str = "`topology = \"file.yaml\"`, `overlays = [\"overlay.yaml\", ...]`, \
                     `timeout = \"30s\"`, `ignore`, `ignore = \"reason\"`, `isolated` and \
                     `runtime = \"tokio\"`";

/// Parses the attribute's arguments, recording every mistake in `errors`.
pub(crate) fn parse_args(tokens: TokenStream, errors: &mut Errors) -> Args {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| {
        if let Err(e) = one_arg(&mut args, &meta) {
            errors.push(e);
        }
        Ok(())
    });
    if let Err(e) = parser.parse2(tokens) {
        errors.push(e);
    }
    if args.topology.is_none() {
        errors.push(syn::Error::new(
            Span::call_site(),
            "#[harness_test] needs a topology file: \
             #[harness_test(topology = \"topologies/services.yaml\")], \
             relative to the crate's manifest directory",
        ));
    }
    args
}

fn one_arg(args: &mut Args, meta: &ParseNestedMeta) -> syn::Result<()> {
    let path = &meta.path;
    if path.is_ident("topology") {
        let lit: LitStr = meta.value()?.parse()?;
        if args.topology.is_some() {
            return Err(syn::Error::new(lit.span(), "`topology` is given twice"));
        }
        args.topology = Some(lit);
    } else if path.is_ident("overlays") {
        let value = meta.value()?;
        let content;
        syn::bracketed!(content in value);
        let list =
            content.parse_terminated(<LitStr as syn::parse::Parse>::parse, syn::Token![,])?;
        args.overlays.extend(list);
    } else if path.is_ident("timeout") {
        let lit: LitStr = meta.value()?.parse()?;
        let ms = parse_duration_ms(&lit.value()).map_err(|why| syn::Error::new(lit.span(), why))?;
        args.timeout_ms = Some(ms);
    } else if path.is_ident("ignore") {
        let reason = if meta.input.peek(syn::Token![=]) {
            Some(meta.value()?.parse::<LitStr>()?)
        } else {
            None
        };
        args.ignore = Some(reason);
    } else if path.is_ident("isolated") {
        args.isolated = true;
    } else if path.is_ident("runtime") {
        let lit: LitStr = meta.value()?.parse()?;
        args.runtime = Some(Runtime::parse(&lit)?);
    } else {
        // Skip its value, so that the options after it are still read.
        if meta.input.peek(syn::Token![=]) {
            meta.value()?.parse::<syn::Expr>()?;
        }
        let name = path
            .get_ident()
            .map_or_else(|| "this".to_string(), |i| format!("`{i}`"));
        return Err(meta.error(format!(
            "{name} is not an option of #[harness_test]; the options are {KNOWN}"
        )));
    }
    Ok(())
}

/// Reads `500ms`, `30s`, `2m` or `1h` (an integer and a unit) as milliseconds.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        format!(
            "cannot read {text:?} as a duration: write a whole number and a unit, such as \"500ms\", \"30s\", \"2m\" or \"1h\""
        )
    };
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let ms = number.checked_mul(factor).ok_or_else(bad)?;
    if ms == 0 {
        return Err(format!(
            "a timeout of {text:?} would fail every test: give a positive duration"
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn reads_every_option() {
        let mut errors = Errors::default();
        let args = parse_args(
            quote!(
                topology = "t.yaml",
                overlays = ["a.yaml", "b.yaml"],
                timeout = "2m",
                ignore = "slow",
                isolated,
                runtime = "tokio"
            ),
            &mut errors,
        );
        assert!(errors.is_empty());
        assert_eq!(args.topology.unwrap().value(), "t.yaml");
        let overlays: Vec<String> = args.overlays.iter().map(LitStr::value).collect();
        assert_eq!(overlays, ["a.yaml", "b.yaml"]);
        assert_eq!(args.timeout_ms, Some(120_000));
        assert_eq!(args.ignore.unwrap().unwrap().value(), "slow");
        assert!(args.isolated);
        assert_eq!(args.runtime, Some(Runtime::Tokio));
    }

    #[test]
    fn collects_every_mistake() {
        let mut errors = Errors::default();
        parse_args(
            quote!(timeout = "soon", retries = 3, runtime = "async-std"),
            &mut errors,
        );
        let messages = errors.messages();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[0].contains("cannot read \"soon\" as a duration"));
        assert!(messages[1].contains("`retries` is not an option"));
        assert!(messages[2].contains("\"async-std\" is not a runtime; the runtimes are"));
        assert!(messages[3].contains("needs a topology file"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert!(parse_duration_ms("0s").is_err());
        assert!(parse_duration_ms("1.5s").is_err());
        assert!(parse_duration_ms("s").is_err());
    }
}
