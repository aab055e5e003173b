//! Checks across services: names, dependencies, cycles, ports, placeholders.

use std::collections::HashMap;

use super::decode::Decoded;
use super::diagnostic::{Diagnostic, Sources, Span};
use super::error::PlaceholderError;
use super::graph::cycles;
use super::substitute::{
    DIR, Segment, addr_var, cargo_bin_name, env_prefix, is_cargo_bin_name, segments,
};
use super::suggest::closest;

/// The longest service name: a DNS label's limit.
pub const MAX_SERVICE_NAME_LEN: usize = 63;

/// Checks a service name against the rule: lowercase ASCII letters, digits and `-`, starting
/// with a letter, not ending with `-`, at most 63 characters.
///
/// The name becomes an env var prefix (`api-server` gives `API_SERVER_ADDR`), a DNS-like label
/// and part of container names, and must be valid as all three; the rule also means that no
/// two names share an env prefix. The error says what is wrong.
///
/// ```
/// use harness::topology::validate_service_name;
/// assert!(validate_service_name("api-server").is_ok());
/// assert!(validate_service_name("api_server").is_err());
/// ```
pub fn validate_service_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_SERVICE_NAME_LEN {
        Some("it is longer than 63 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("it must start with a lowercase ASCII letter")
    } else if name.ends_with('-') {
        Some("it must not end with `-`")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("only lowercase ASCII letters, digits and `-` are allowed")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(format!("invalid service name `{name}`: {problem}")),
    }
}

/// What the name would have to be to follow the rule, if that is clear.
fn fixed_name(name: &str) -> Option<String> {
    let fixed: String = name
        .chars()
        .map(|c| match c {
            '_' | '.' | ' ' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let fixed = fixed.trim_matches('-').to_string();
    (fixed != name && validate_service_name(&fixed).is_ok()).then_some(fixed)
}

pub(crate) fn validate(decoded: &Decoded, sources: &Sources) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    check_names(decoded, sources, &mut errors);
    check_dependencies(decoded, sources, &mut errors);
    check_ports(decoded, sources, &mut errors);
    check_placeholders(decoded, sources, &mut errors);
    errors
}

fn check_names(decoded: &Decoded, sources: &Sources, errors: &mut Vec<Diagnostic>) {
    for (name, span) in &decoded.names {
        let Err(message) = validate_service_name(name) else {
            continue;
        };
        let mut diagnostic = sources.error(*span, message);
        if let Some(fixed) = fixed_name(name).filter(|f| !decoded.names.iter().any(|(n, _)| n == f))
        {
            diagnostic = diagnostic.with_help(format!("did you mean `{fixed}`?"));
        }
        let prefix = env_prefix(name);
        if let Some((other, other_span)) = decoded
            .names
            .iter()
            .find(|(other, _)| other != name && env_prefix(other) == prefix)
        {
            diagnostic = diagnostic.with_note(sources.note_at(
                *other_span,
                format!("`{name}` and `{other}` would share the env prefix {prefix}"),
            ));
        }
        errors.push(diagnostic.with_help(
            "service names are lowercase ASCII letters, digits and `-`, start with a letter and have at most 63 characters, since they become env var prefixes, DNS labels and container names",
        ));
    }
}

fn span(decoded: &Decoded, service: &str, path: &str) -> Span {
    let spans = &decoded.spans[service];
    let mut path = path;
    loop {
        if let Some(span) = spans.get(path) {
            return *span;
        }
        match path.rfind(['.', '[']) {
            Some(cut) => path = &path[..cut],
            None => {
                return decoded
                    .names
                    .iter()
                    .find(|(n, _)| n == service)
                    .map(|(_, s)| *s)
                    .expect("every decoded service has a name");
            }
        }
    }
}

fn check_dependencies(decoded: &Decoded, sources: &Sources, errors: &mut Vec<Diagnostic>) {
    let services = &decoded.config.services;
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    let mut deps = vec![Vec::new(); names.len()];
    // The entry of `dependencies` behind each edge, to point at.
    let mut edge_span = HashMap::new();
    for (i, service) in services.values().enumerate() {
        for (k, dependency) in service.dependencies.iter().enumerate() {
            let at = span(decoded, &service.name, &format!("dependencies[{k}]"));
            if service.dependencies[..k].contains(dependency) {
                errors.push(sources.error(
                    at,
                    format!(
                        "`{dependency}` is listed twice in the dependencies of service `{}`",
                        service.name
                    ),
                ));
                continue;
            }
            match services.get_index_of(dependency.as_str()) {
                Some(j) => {
                    deps[i].push(j);
                    edge_span.insert((i, j), at);
                }
                None => {
                    let message = match closest(dependency, names.iter().copied()) {
                        Some(near) => format!(
                            "service `{}` depends on unknown service `{dependency}`, did you mean `{near}`?",
                            service.name
                        ),
                        None => format!(
                            "service `{}` depends on unknown service `{dependency}`",
                            service.name
                        ),
                    };
                    errors.push(sources.error(at, message));
                }
            }
        }
    }
    for cycle in cycles(&deps) {
        let path: Vec<&str> = cycle
            .iter()
            .chain(cycle.first())
            .map(|&i| names[i])
            .collect();
        let first_edge = (cycle[0], *cycle.get(1).unwrap_or(&cycle[0]));
        errors.push(sources.error(
            edge_span[&first_edge],
            format!("dependency cycle: {}", path.join(" -> ")),
        ));
    }
}

fn check_ports(decoded: &Decoded, sources: &Sources, errors: &mut Vec<Diagnostic>) {
    let mut taken: HashMap<u16, &str> = HashMap::new();
    for service in decoded.config.services.values() {
        let Some(port) = service.port.fixed() else {
            continue;
        };
        match taken.get(&port) {
            None => {
                taken.insert(port, &service.name);
            }
            Some(first) => {
                let diagnostic = sources
                    .error(
                        span(decoded, &service.name, "port"),
                        format!(
                            "port {port} of service `{}` is already the port of service `{first}`",
                            service.name
                        ),
                    )
                    .with_note(sources.note_at(
                        span(decoded, first, "port"),
                        format!("`{first}` takes port {port} here"),
                    ))
                    .with_help("give each service its own port, or `port: auto` for a free one");
                errors.push(diagnostic);
            }
        }
    }
}

fn check_placeholders(decoded: &Decoded, sources: &Sources, errors: &mut Vec<Diagnostic>) {
    let services = &decoded.config.services;
    for service in services.values() {
        if decoded.broken.contains(&service.name) {
            continue;
        }
        let valid = service.placeholder_names();
        for (path, text) in service.templates() {
            let at = span(decoded, &service.name, &path);
            let segments = match segments(text) {
                Ok(segments) => segments,
                Err(problem) => {
                    let (start, what) = match problem {
                        PlaceholderError::Unterminated(start) => {
                            (start, "unterminated placeholder")
                        }
                        PlaceholderError::Empty(start) => (start, "empty placeholder"),
                        PlaceholderError::Unknown(_) | PlaceholderError::UnknownCargoBin(_) => {
                            (0, "bad placeholder")
                        }
                    };
                    let written = &text[start..];
                    let written = &written[..written.find('}').map_or(written.len(), |i| i + 1)];
                    errors.push(
                        sources
                            .error(
                                placeholder_span(sources, at, text, start, written),
                                format!(
                                    "{what} `{written}` in `{path}` of service `{}`",
                                    service.name
                                ),
                            )
                            .with_help("a placeholder is `${name}`; write `$$` for a literal `$`"),
                    );
                    continue;
                }
            };
            for segment in segments {
                let Segment::Placeholder { name, start } = segment else {
                    continue;
                };
                if valid.iter().any(|v| v == name)
                    || cargo_bin_name(name).is_some_and(is_cargo_bin_name)
                {
                    continue;
                }
                let at = placeholder_span(sources, at, text, start, &format!("${{{name}}}"));
                let mut message = format!(
                    "unknown placeholder `${{{name}}}` in `{path}` of service `{}`",
                    service.name
                );
                let other = services.keys().find(|s| addr_var(s) == name);
                let help = match other {
                    Some(other) => Some(format!(
                        "`{other}` is not a dependency of `{}`: add it to `dependencies` to get its address",
                        service.name
                    )),
                    None if name == DIR => Some(format!(
                        "`${{dir}}` is a process's own directory; a `{}` service has none here",
                        service.target.kind()
                    )),
                    None => {
                        if let Some(near) = closest(name, valid.iter().map(String::as_str)) {
                            message.push_str(&format!(", did you mean `${{{near}}}`?"));
                            None
                        } else {
                            Some(format!(
                                "known here: {}; write `$$` for a literal `$`",
                                valid
                                    .iter()
                                    .map(|v| format!("`${{{v}}}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        }
                    }
                };
                let diagnostic = sources.error(at, message);
                errors.push(match help {
                    Some(help) => diagnostic.with_help(help),
                    None => diagnostic,
                });
            }
        }
    }
}

/// The span of `written` (a placeholder at byte `start` of `text`) inside a scalar written at
/// `at`, when the scalar is on one line and written plainly or in quotes without escapes; else
/// the scalar's own span.
fn placeholder_span(sources: &Sources, at: Span, text: &str, start: usize, written: &str) -> Span {
    let line = sources
        .text(at.file)
        .lines()
        .nth(at.line as usize - 1)
        .map(|line| {
            line.chars()
                .skip(at.column as usize - 1)
                .collect::<String>()
        })
        .unwrap_or_default();
    let shift = if line.starts_with(text) {
        Some(0)
    } else if (line.starts_with('"') || line.starts_with('\'')) && line[1..].starts_with(text) {
        Some(1)
    } else {
        None
    };
    match shift {
        Some(shift) => Span {
            column: at.column + shift + text[..start].chars().count() as u32,
            len: written.chars().count() as u32,
            ..at
        },
        None => at,
    }
}
