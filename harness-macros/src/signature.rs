//! The test function's signature: it must be an `async fn` without generics, and each parameter
//! says what to inject by its type and name.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitStr, Pat, Type};

use crate::errors::Errors;
use crate::topology::{closest, service_for};

/// What one parameter receives.
#[derive(Debug, PartialEq)]
pub(crate) enum Injection {
    /// `name: Service`: the service called `service`.
    Service { service: String },
    /// `name: SocketAddr`: that service's address.
    Addr { service: String },
    /// `topo: &Topology`: the whole running topology.
    Topology,
}

const SUPPORTED: &str = "a parameter is `Service` or `SocketAddr` (the service its name or \
                         #[service(\"name\")] names) or `&Topology` (the whole topology)";

/// Checks the function and works out each parameter's injection. `services` is `None` when the
/// topology file could not be read (that error is already recorded): names are then not checked.
/// Removes the `#[service(...)]` attributes, which are the macro's, not the compiler's.
pub(crate) fn inspect(
    func: &mut ItemFn,
    services: Option<(&[String], &str)>,
    errors: &mut Errors,
) -> Vec<Injection> {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span(),
            "#[harness_test] goes on an `async fn`: write `async fn` (the body runs on the \
             harness's own executor)",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new(
            sig.generics.span(),
            "a #[harness_test] function cannot be generic",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new(
            variadic.span(),
            "a #[harness_test] function cannot be variadic",
        ));
    }
    let mut injections = Vec::new();
    for input in func.sig.inputs.iter_mut() {
        let typed = match input {
            FnArg::Receiver(receiver) => {
                errors.push(syn::Error::new(
                    receiver.span(),
                    "a #[harness_test] is a free function, without `self`",
                ));
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        let mut named: Option<LitStr> = None;
        let mut kept = Vec::new();
        for attr in typed.attrs.drain(..) {
            if attr.path().is_ident("service") {
                match attr.parse_args::<LitStr>() {
                    Ok(lit) => named = Some(lit),
                    Err(_) => errors.push(syn::Error::new(
                        attr.span(),
                        "write #[service(\"name\")] with the service's name as in the topology file",
                    )),
                }
            } else {
                kept.push(attr);
            }
        }
        typed.attrs = kept;
        match kind_of(&typed.ty) {
            Err(e) => errors.push(e),
            Ok(Kind::Topology) => injections.push(Injection::Topology),
            Ok(kind) => {
                let Some(service) = service_name(&typed.pat, named.as_ref(), services, errors)
                else {
                    continue;
                };
                injections.push(match kind {
                    Kind::Service => Injection::Service { service },
                    _ => Injection::Addr { service },
                });
            }
        }
    }
    injections
}

enum Kind {
    Service,
    Addr,
    Topology,
}

fn last_segment(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) if path.qself.is_none() => {
            path.path.segments.last().map(|s| s.ident.to_string())
        }
        Type::Group(group) => last_segment(&group.elem),
        Type::Paren(paren) => last_segment(&paren.elem),
        _ => None,
    }
}

fn kind_of(ty: &Type) -> syn::Result<Kind> {
    if let Type::Reference(reference) = ty {
        if last_segment(&reference.elem).as_deref() == Some("Topology") {
            if reference.mutability.is_some() {
                return Err(syn::Error::new_spanned(
                    ty,
                    "the topology is shared: take it as `&Topology`, not `&mut Topology`",
                ));
            }
            return Ok(Kind::Topology);
        }
    } else {
        match last_segment(ty).as_deref() {
            Some("Service") => return Ok(Kind::Service),
            Some("SocketAddr") => return Ok(Kind::Addr),
            Some("Topology") => {
                return Err(syn::Error::new_spanned(
                    ty,
                    "take the topology by reference: `&Topology`",
                ));
            }
            _ => {}
        }
    }
    let shown = quote::ToTokens::to_token_stream(ty).to_string();
    Err(syn::Error::new_spanned(
        ty,
        format!("#[harness_test] cannot inject a parameter of type `{shown}`: {SUPPORTED}"),
    ))
}

/// The service a `Service` or `SocketAddr` parameter receives.
fn service_name(
    pat: &Pat,
    named: Option<&LitStr>,
    services: Option<(&[String], &str)>,
    errors: &mut Errors,
) -> Option<String> {
    let (wanted, span, from_attr): (String, Span, bool) = match (named, pat) {
        (Some(lit), _) => (lit.value(), lit.span(), true),
        (None, Pat::Ident(ident)) => (ident.ident.to_string(), ident.ident.span(), false),
        (None, other) => {
            errors.push(syn::Error::new(
                other.span(),
                "name this parameter after a service, or say which with #[service(\"name\")]",
            ));
            return None;
        }
    };
    let Some((services, file)) = services else {
        return Some(wanted);
    };
    let found = if from_attr {
        services.iter().find(|s| **s == wanted).map(String::as_str)
    } else {
        service_for(&wanted, services)
    };
    if let Some(service) = found {
        return Some(service.to_string());
    }
    let list = if services.is_empty() {
        "it has no services".to_string()
    } else {
        format!("its services are {}", services.join(", "))
    };
    let hint = closest(&wanted.replace('-', "_"), services)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    let what = if from_attr {
        format!("no service `{wanted}` in {file}")
    } else {
        format!("parameter `{wanted}` names no service in {file}")
    };
    errors.push(syn::Error::new(span, format!("{what}: {list}{hint}")));
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn services() -> Vec<String> {
        vec!["api-server".into(), "cache".into()]
    }

    #[test]
    fn injects_by_type_and_name() {
        let mut func: ItemFn = parse_quote! {
            async fn t(api_server: Service, #[service("cache")] c: std::net::SocketAddr, topo: &harness::Topology) {}
        };
        let mut errors = Errors::default();
        let names = services();
        let got = inspect(&mut func, Some((&names, "t.yaml")), &mut errors);
        assert!(errors.is_empty(), "{:?}", errors.messages());
        assert_eq!(
            got,
            [
                Injection::Service {
                    service: "api-server".into()
                },
                Injection::Addr {
                    service: "cache".into()
                },
                Injection::Topology,
            ]
        );
        // The attribute is the macro's and must not reach the compiler.
        let FnArg::Typed(second) = &func.sig.inputs[1] else {
            panic!()
        };
        assert!(second.attrs.is_empty());
    }

    #[test]
    fn reports_every_bad_parameter() {
        let mut func: ItemFn = parse_quote! {
            fn t(api_sever: Service, n: u32, t: &mut Topology, #[service("nope")] x: Service) {}
        };
        let mut errors = Errors::default();
        let names = services();
        inspect(&mut func, Some((&names, "t.yaml")), &mut errors);
        let messages = errors.messages();
        assert_eq!(messages.len(), 5, "{messages:?}");
        assert!(messages[0].contains("goes on an `async fn`"));
        assert_eq!(
            messages[1],
            "parameter `api_sever` names no service in t.yaml: its services are api-server, \
             cache; did you mean `api-server`?"
        );
        assert!(messages[2].contains("cannot inject a parameter of type `u32`"));
        assert!(messages[3].contains("`&Topology`, not `&mut Topology`"));
        assert!(messages[4].starts_with("no service `nope` in t.yaml"));
    }
}
