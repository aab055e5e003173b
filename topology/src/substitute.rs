//! `${...}` placeholders in args, env values and commands, and the names of the variables that
//! carry addresses.

use std::collections::HashMap;

use super::Probe;
use super::error::{PlaceholderError, SubstitutionError};
use super::model::{ServiceConfig, ServiceTarget};

/// The env var prefix of a service: its name upper-cased, with `-` as `_`
/// (`api-server` gives `API_SERVER`). Every variable about a service starts with it.
///
/// ```
/// assert_eq!(harness::topology::env_prefix("api-server"), "API_SERVER");
/// ```
pub fn env_prefix(service: &str) -> String {
    service
        .chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// The variable that carries a service's address to its dependents, `<PREFIX>_ADDR`
/// (`api-server` gives `API_SERVER_ADDR`), in the environment and as `${API_SERVER_ADDR}`.
///
/// ```
/// assert_eq!(harness::topology::addr_var("api-server"), "API_SERVER_ADDR");
/// ```
pub fn addr_var(service: &str) -> String {
    format!("{}_ADDR", env_prefix(service))
}

/// The placeholders every service may use: its own port, host and `host:port`.
pub const OWN_PLACEHOLDERS: [&str; 3] = ["port", "host", "addr"];

/// A piece of a string with placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    /// Literal text (with `$$` already read as `$`, so a segment may be a lone `$`).
    Text(&'a str),
    /// `${name}`, starting at byte `start` of the string.
    Placeholder { name: &'a str, start: usize },
}

/// Splits `text` into literal text and placeholders. `$$` is a literal `$`; a `$` not followed
/// by `{` or `$` is literal too, so `$HOME` passes through untouched.
pub(crate) fn segments(text: &str) -> Result<Vec<Segment<'_>>, PlaceholderError> {
    let mut out = Vec::new();
    let mut rest_start = 0;
    let mut i = 0;
    let bytes = text.as_bytes();
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push(Segment::Text(&text[rest_start..=i]));
                i += 2;
                rest_start = i;
            }
            Some(b'{') => {
                let close = text[i + 2..]
                    .find('}')
                    .ok_or(PlaceholderError::Unterminated(i))?;
                let name = &text[i + 2..i + 2 + close];
                if name.is_empty() {
                    return Err(PlaceholderError::Empty(i));
                }
                if rest_start < i {
                    out.push(Segment::Text(&text[rest_start..i]));
                }
                out.push(Segment::Placeholder { name, start: i });
                i += 3 + close;
                rest_start = i;
            }
            _ => i += 1,
        }
    }
    if rest_start < text.len() {
        out.push(Segment::Text(&text[rest_start..]));
    }
    Ok(out)
}

/// Replaces each `${name}` in `text` by `values[name]`; `$$` gives `$`.
///
/// ```
/// use std::collections::HashMap;
/// use harness::topology::substitute;
/// let values = HashMap::from([
///     ("port".to_string(), "8080".to_string()),
///     ("POSTGRES_ADDR".to_string(), "127.0.0.1:5432".to_string()),
/// ]);
/// assert_eq!(
///     substitute("--db=${POSTGRES_ADDR} --port ${port} --cost $$5", &values)?,
///     "--db=127.0.0.1:5432 --port 8080 --cost $5",
/// );
/// assert!(substitute("${prot}", &values).is_err());
/// # Ok::<(), harness::topology::PlaceholderError>(())
/// ```
pub fn substitute(
    text: &str,
    values: &HashMap<String, String>,
) -> Result<String, PlaceholderError> {
    let mut out = String::with_capacity(text.len());
    for segment in segments(text)? {
        match segment {
            Segment::Text(t) => out.push_str(t),
            Segment::Placeholder { name, .. } => match values.get(name) {
                Some(value) => out.push_str(value),
                None => return Err(PlaceholderError::Unknown(name.to_string())),
            },
        }
    }
    Ok(out)
}

impl ServiceConfig {
    /// The placeholders this service may use: `port`, `host`, `addr`, and
    /// [`addr_var`] of each dependency.
    pub fn placeholder_names(&self) -> Vec<String> {
        OWN_PLACEHOLDERS
            .iter()
            .map(|s| s.to_string())
            .chain(self.dependencies.iter().map(|d| addr_var(d)))
            .collect()
    }

    /// Every string of this service that takes placeholders, with its path from the service:
    /// args, env values, working directories, Docker commands and entrypoints, and the
    /// health check's command.
    pub fn templates(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        let list = push_list;
        match &self.target {
            ServiceTarget::Process(t) => {
                list("target.process.args", &t.args, &mut out);
                push_env(&mut out, "target.process.env", &t.env);
                if let Some(dir) = &t.working_dir {
                    out.push(("target.process.working_dir".into(), dir));
                }
            }
            ServiceTarget::Docker(t) => {
                push_env(&mut out, "target.docker.env", &t.env);
                if let Some(command) = &t.command {
                    list("target.docker.command", command, &mut out);
                }
                if let Some(entrypoint) = &t.entrypoint {
                    list("target.docker.entrypoint", entrypoint, &mut out);
                }
            }
            ServiceTarget::RemoteLan(t) => {
                list("target.remote_lan.args", &t.args, &mut out);
                push_env(&mut out, "target.remote_lan.env", &t.env);
                if let Some(dir) = &t.working_dir {
                    out.push(("target.remote_lan.working_dir".into(), dir));
                }
            }
            ServiceTarget::Wireguard(_) => {}
        }
        if let Some(check) = &self.health_check
            && let Probe::Command(command) = &check.probe
        {
            list("health_check.command", command, &mut out);
        }
        out
    }

    /// This service with every placeholder replaced by `values` (keys as in
    /// [`ServiceConfig::placeholder_names`]). The error names the service, the field and the
    /// placeholder.
    pub fn substituted(
        &self,
        values: &HashMap<String, String>,
    ) -> Result<ServiceConfig, SubstitutionError> {
        let mut replaced = Vec::new();
        for (path, text) in self.templates() {
            match substitute(text, values) {
                Ok(value) => replaced.push(value),
                Err(problem) => {
                    return Err(SubstitutionError {
                        service: self.name.clone(),
                        location: Some(self.location_of(&path).clone()),
                        field: path,
                        problem,
                    });
                }
            }
        }
        let mut out = self.clone();
        // `templates_mut` visits the same fields in the same order as `templates`.
        for (slot, value) in out.templates_mut().into_iter().zip(replaced) {
            *slot = value;
        }
        Ok(out)
    }

    fn templates_mut(&mut self) -> Vec<&mut String> {
        let mut out: Vec<&mut String> = Vec::new();
        match &mut self.target {
            ServiceTarget::Process(t) => {
                out.extend(t.args.iter_mut());
                out.extend(t.env.values_mut());
                out.extend(t.working_dir.as_mut());
            }
            ServiceTarget::Docker(t) => {
                out.extend(t.env.values_mut());
                out.extend(t.command.iter_mut().flatten());
                out.extend(t.entrypoint.iter_mut().flatten());
            }
            ServiceTarget::RemoteLan(t) => {
                out.extend(t.args.iter_mut());
                out.extend(t.env.values_mut());
                out.extend(t.working_dir.as_mut());
            }
            ServiceTarget::Wireguard(_) => {}
        }
        if let Some(check) = &mut self.health_check
            && let Probe::Command(command) = &mut check.probe
        {
            out.extend(command.iter_mut());
        }
        out
    }
}

fn push_env<'a>(out: &mut Vec<(String, &'a str)>, path: &str, env: &'a super::EnvMap) {
    for (name, value) in env {
        out.push((format!("{path}.{name}"), value.as_str()));
    }
}

fn push_list<'a>(path: &str, items: &'a [String], out: &mut Vec<(String, &'a str)>) {
    for (i, item) in items.iter().enumerate() {
        out.push((format!("{path}[{i}]"), item.as_str()));
    }
}
