//! `${...}` placeholders in args, env values and commands, and the names of the variables that
//! carry addresses.

use std::collections::HashMap;

use super::Probe;
use super::error::{PlaceholderError, SubstitutionError};
use super::model::{FileSource, ServiceConfig, ServiceTarget};

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

/// `${dir}`: a process's own directory for the run, where its `files:` go.
pub const DIR: &str = "dir";

/// The namespace of `${cargo_bin:NAME}`: the path of the binary NAME that cargo built for the
/// package whose tests run (`CARGO_BIN_EXE_NAME`).
pub const CARGO_BIN: &str = "cargo_bin:";

/// The binary a `${cargo_bin:NAME}` placeholder names (`NAME`), if `placeholder` is one.
///
/// ```
/// assert_eq!(harness::topology::cargo_bin_name("cargo_bin:kv-server"), Some("kv-server"));
/// assert_eq!(harness::topology::cargo_bin_name("port"), None);
/// ```
pub fn cargo_bin_name(placeholder: &str) -> Option<&str> {
    placeholder.strip_prefix(CARGO_BIN)
}

/// Whether `name` can be a cargo binary's name: letters, digits, `-` and `_`.
pub(crate) fn is_cargo_bin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

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
                None => match cargo_bin_name(name) {
                    Some(binary) => return Err(PlaceholderError::UnknownCargoBin(binary.into())),
                    None => return Err(PlaceholderError::Unknown(name.to_string())),
                },
            },
        }
    }
    Ok(out)
}

impl ServiceConfig {
    /// The placeholders this service may use: `port`, `host`, `addr`, `dir` for a process,
    /// and [`addr_var`] of each dependency.
    pub fn placeholder_names(&self) -> Vec<String> {
        let dir = matches!(self.target, ServiceTarget::Process(_)).then(|| DIR.to_string());
        OWN_PLACEHOLDERS
            .iter()
            .map(|s| s.to_string())
            .chain(dir)
            .chain(self.dependencies.iter().map(|d| addr_var(d)))
            .collect()
    }

    /// The cargo binaries this service names with `${cargo_bin:NAME}`, in order, once each.
    pub fn cargo_bins(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, text) in self.templates() {
            for segment in segments(text).unwrap_or_default() {
                if let Segment::Placeholder { name, .. } = segment
                    && let Some(binary) = cargo_bin_name(name)
                    && !out.iter().any(|b| b == binary)
                {
                    out.push(binary.to_string());
                }
            }
        }
        out
    }

    /// Every string of this service that takes placeholders, with its path from the service:
    /// a process's binary, args, env values, working directories, the binary a Docker image is
    /// built from, Docker commands and entrypoints, the health check's command, and the text
    /// of each `files:` entry given by `content`.
    pub fn templates(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        let list = push_list;
        match &self.target {
            ServiceTarget::Process(t) => {
                out.push(("target.process.binary".into(), t.binary.as_str()));
                list("target.process.args", &t.args, &mut out);
                push_env(&mut out, "target.process.env", &t.env);
                if let Some(dir) = &t.working_dir {
                    out.push(("target.process.working_dir".into(), dir));
                }
            }
            ServiceTarget::Docker(t) => {
                if let Some(build) = &t.build {
                    out.push(("target.docker.build.binary".into(), build.binary.as_str()));
                }
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
            ServiceTarget::Wireguard(_) | ServiceTarget::Compose(_) => {}
        }
        if let Some(check) = &self.health_check
            && let Probe::Command(command) = &check.probe
        {
            list("health_check.command", command, &mut out);
        }
        for (i, file) in self.files.iter().enumerate() {
            if let FileSource::Content(text) = &file.from {
                out.push((format!("files[{i}].content"), text.as_str()));
            }
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
                out.push(&mut t.binary);
                out.extend(t.args.iter_mut());
                out.extend(t.env.values_mut());
                out.extend(t.working_dir.as_mut());
            }
            ServiceTarget::Docker(t) => {
                if let Some(build) = &mut t.build {
                    out.push(&mut build.binary);
                }
                out.extend(t.env.values_mut());
                out.extend(t.command.iter_mut().flatten());
                out.extend(t.entrypoint.iter_mut().flatten());
            }
            ServiceTarget::RemoteLan(t) => {
                out.extend(t.args.iter_mut());
                out.extend(t.env.values_mut());
                out.extend(t.working_dir.as_mut());
            }
            ServiceTarget::Wireguard(_) | ServiceTarget::Compose(_) => {}
        }
        if let Some(check) = &mut self.health_check
            && let Probe::Command(command) = &mut check.probe
        {
            out.extend(command.iter_mut());
        }
        for file in &mut self.files {
            if let FileSource::Content(text) = &mut file.from {
                out.push(text);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TopologyConfig;

    const APP: &str = "services:\n  app:\n    target:\n      process:\n        binary: ${cargo_bin:kvapp}\n        args: [\"--peer\", \"${cargo_bin:kv-peer}\"]\n";

    #[test]
    fn cargo_bins_are_placeholders_of_a_process_binary_and_its_args() {
        let topology = TopologyConfig::from_yaml("app.yaml", APP).unwrap();
        let app = &topology.services["app"];
        assert_eq!(app.cargo_bins(), ["kvapp", "kv-peer"]);
        let values = HashMap::from([
            ("cargo_bin:kvapp".to_string(), "/t/debug/kvapp".to_string()),
            (
                "cargo_bin:kv-peer".to_string(),
                "/t/debug/kv-peer".to_string(),
            ),
        ]);
        let ServiceTarget::Process(process) = app.substituted(&values).unwrap().target else {
            unreachable!("app is a process");
        };
        assert_eq!(process.binary, "/t/debug/kvapp");
        assert_eq!(process.args, ["--peer", "/t/debug/kv-peer"]);
        // Where no binary is known (harness up), the start says what the placeholder needs.
        let error = app.substituted(&HashMap::new()).unwrap_err().to_string();
        assert!(
            error.contains("`${cargo_bin:kvapp}` names no binary known here")
                && error.contains("CARGO_BIN_EXE_kvapp"),
            "{error}"
        );
    }

    #[test]
    fn a_cargo_bin_without_a_valid_name_is_refused_when_loaded() {
        for written in ["${cargo_bin:}", "${cargo_bin:a b}", "${cargo_bin:../x}"] {
            let yaml = APP.replace("${cargo_bin:kvapp}", written);
            let error = TopologyConfig::from_yaml("app.yaml", &yaml)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("unknown placeholder `{written}`")),
                "{written}: {error}"
            );
        }
    }
}
