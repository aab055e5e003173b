//! The topology file the attribute names, read and checked at compile time by the loader the
//! runner uses (`harness::topology`, the `topo-harness-topology` crate): a mistake in it is one
//! compile error with its file, line and column, not the same failure of every test.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use harness_topology::cargo::{CargoWorkspace, cargo_program};
use harness_topology::{TopologyConfig, TopologyError, read_topology_file};
use syn::LitStr;

use crate::errors::shown;

/// A topology file (or overlay) the attribute names.
#[derive(Debug)]
pub(crate) struct TopologyFile {
    /// Its absolute path, for `include_str!` and for the runner.
    pub(crate) path: PathBuf,
    /// Its text.
    text: String,
    /// The literal that names it, where its errors are reported.
    lit: LitStr,
}

/// Reads the file `lit` names, relative to `manifest_dir`, as the runner would (a regular
/// UTF-8 file of bounded size); an error spans the literal.
pub(crate) fn read(lit: &LitStr, manifest_dir: &Path) -> syn::Result<TopologyFile> {
    let relative = lit.value();
    let path = manifest_dir.join(&relative);
    // Messages name the path as written; the full path would be the manifest directory's.
    let text = read_topology_file(&path).map_err(|e| {
        syn::Error::new(
            lit.span(),
            format!(
                "cannot read topology file {relative:?}: {}; the path is relative to the \
                 crate's manifest directory (CARGO_MANIFEST_DIR)",
                why_unreadable(&e)
            ),
        )
    })?;
    Ok(TopologyFile {
        path,
        text,
        lit: lit.clone(),
    })
}

/// Why a file could not be read, without the path the message already names.
fn why_unreadable(error: &TopologyError) -> String {
    match error {
        TopologyError::Read { source, .. } => source.to_string(),
        TopologyError::NotAFile { kind, .. } => format!("it is {kind}, not a regular file"),
        TopologyError::TooLarge { size, limit, .. } => {
            format!("it holds {size} bytes, more than the {limit} a topology file may")
        }
        other => other.to_string(),
    }
}

/// What a checked topology gives the attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    /// The services, in the file's order.
    pub(crate) services: Vec<String>,
    /// The `${cargo_bin:NAME}`s that are binaries of another package of the workspace, not of
    /// this one: (binary, package), built by the runner.
    pub(crate) workspace_bins: Vec<(String, String)>,
}

/// Checks the file and its overlays, merged in order, with every check the runner makes when
/// it loads them; gives the services, in the file's order. The error, at the first file's
/// literal, lists every mistake with its file, line and column, as the runner would. A
/// `${cargo_bin:NAME}` must name a binary of this package, or of another package of the cargo
/// workspace of `manifest_dir`.
pub(crate) fn check(files: &[TopologyFile], manifest_dir: &Path) -> syn::Result<Checked> {
    let named: Vec<(PathBuf, String)> = files
        .iter()
        .map(|file| (shown(&file.path), file.text.clone()))
        .collect();
    let span = files
        .first()
        .map_or_else(proc_macro2::Span::call_site, |f| f.lit.span());
    let config = TopologyConfig::from_yaml_files(&named)
        .map_err(|e| syn::Error::new(span, e.to_string()))?;
    let available = cargo_bins();
    let mut elsewhere: Vec<(String, String)> = Vec::new();
    for service in config.services.values() {
        for binary in service.cargo_bins() {
            if !available.iter().any(|(name, _)| *name == binary)
                && !elsewhere.iter().any(|(name, _)| *name == binary)
            {
                elsewhere.push((binary, service.name.clone()));
            }
        }
    }
    let mut checked = Checked {
        services: config.services.keys().cloned().collect(),
        workspace_bins: Vec::new(),
    };
    if elsewhere.is_empty() {
        return Ok(checked);
    }
    let workspace = CargoWorkspace::read(&cargo_program(), Some(&manifest_dir.join("Cargo.toml")));
    let mut missing = Vec::new();
    for (binary, service) in &elsewhere {
        match workspace
            .as_ref()
            .ok()
            .and_then(|w| w.package_with_bin(binary))
        {
            Some(package) => checked
                .workspace_bins
                .push((binary.clone(), package.to_string())),
            None => missing.push(format!("`${{cargo_bin:{binary}}}` of service `{service}`")),
        }
    }
    if missing.is_empty() {
        return Ok(checked);
    }
    let offered = |bins: Vec<&str>| match bins.is_empty() {
        true => "none".to_string(),
        false => bins.join(", "),
    };
    let own = offered(available.iter().map(|(name, _)| name.as_str()).collect());
    let others = match &workspace {
        Ok(workspace) => format!("the workspace's: {}", offered(workspace.bin_names())),
        Err(why) => format!("the workspace's are unknown: {why}"),
    };
    Err(syn::Error::new(
        span,
        format!(
            "{} names no binary of this package or of its cargo workspace: the package's own \
             ([[bin]] targets, src/main.rs, src/bin/) are {own}; {others}. A binary from \
             outside the workspace is named by its path",
            missing.join(", ")
        ),
    ))
}

/// [`check`], once per compilation for the same files (where the compiler keeps macro state):
/// a file that many tests name is checked once, and its mistakes are one error, reported at the
/// first of them (`Err(Some(..))`); the later ones get the same result, or `Err(None)`.
pub(crate) fn check_once(
    files: &[TopologyFile],
    manifest_dir: &Path,
) -> Result<Checked, Option<syn::Error>> {
    thread_local! {
        /// What each set of files gave, `None` for files with mistakes.
        static CHECKED: RefCell<HashMap<Vec<PathBuf>, Option<Checked>>> =
            RefCell::new(HashMap::new());
    }
    let key: Vec<PathBuf> = files.iter().map(|file| file.path.clone()).collect();
    if let Some(known) = CHECKED.with(|checked| checked.borrow().get(&key).cloned()) {
        return known.ok_or(None);
    }
    let result = check(files, manifest_dir);
    CHECKED.with(|checked| {
        checked
            .borrow_mut()
            .insert(key, result.as_ref().ok().cloned())
    });
    result.map_err(Some)
}

/// The binaries cargo built for the package whose test this is, by name, with their paths:
/// cargo gives an integration test `CARGO_BIN_EXE_NAME` for each.
pub(crate) fn cargo_bins() -> Vec<(String, String)> {
    let mut bins: Vec<(String, String)> = std::env::vars()
        .filter_map(|(key, value)| Some((key.strip_prefix("CARGO_BIN_EXE_")?.to_string(), value)))
        .collect();
    bins.sort();
    bins
}

/// The service a parameter named `param` means: `api_server` is `api-server`.
pub(crate) fn service_for<'a>(param: &str, services: &'a [String]) -> Option<&'a str> {
    services
        .iter()
        .find(|s| s.as_str() == param || s.replace('-', "_") == param)
        .map(String::as_str)
}

/// The service name closest to `param`, if one is close enough to suggest.
pub(crate) fn closest<'a>(param: &str, services: &'a [String]) -> Option<&'a str> {
    services
        .iter()
        .map(|s| (strsim::jaro_winkler(&s.replace('-', "_"), param), s))
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, s)| s.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn maps_parameter_names_to_services() {
        let services = names(&["api-server", "db", "kv_store"]);
        assert_eq!(service_for("api_server", &services), Some("api-server"));
        assert_eq!(service_for("db", &services), Some("db"));
        assert_eq!(service_for("kv_store", &services), Some("kv_store"));
        assert_eq!(service_for("cache", &services), None);
        assert_eq!(closest("api_sever", &services), Some("api-server"));
        assert_eq!(closest("zzz", &services), None);
    }

    #[test]
    fn reads_service_names_in_order_and_reports_missing_files() {
        let dir = std::env::temp_dir().join(format!("harness-macros-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("t.yaml"),
            "network: { lan_interface: eth0 }\nservices:\n  web: { target: { process: { binary: x } } }\n  db:\n    target: { process: { binary: y } }\n    port: 5\n",
        )
        .unwrap();
        let file = read(&syn::parse_quote!("t.yaml"), &dir).unwrap();
        assert_eq!(file.path, dir.join("t.yaml"));
        assert_eq!(check(&[file], &dir).unwrap().services, ["web", "db"]);
        let missing = read(&syn::parse_quote!("none.yaml"), &dir).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read topology file"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_mistake_of_the_file_and_its_overlays_is_one_error_with_their_places() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.yaml"),
            "services:\n  web:\n    target: { process: { binary: x } }\n    dependencies: [db]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("over.yaml"),
            "services:\n  web:\n    port: lots\n",
        )
        .unwrap();
        let files = ["base.yaml", "over.yaml"]
            .map(|name| read(&syn::parse_str(&format!("{name:?}")).unwrap(), dir.path()).unwrap());
        let message = check(&files, dir.path()).unwrap_err().to_string();
        let base = dir.path().join("base.yaml").display().to_string();
        let over = dir.path().join("over.yaml").display().to_string();
        assert!(message.contains("2 errors"), "{message}");
        assert!(message.contains(&format!("{base}:4:20")), "{message}");
        assert!(
            message.contains("unknown service `db`") || message.contains("`db`"),
            "{message}"
        );
        assert!(message.contains(&format!("{over}:3:11")), "{message}");
    }

    #[test]
    fn refuses_directories_fifos_large_files_and_non_utf8_before_reading_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::create_dir(path.join("a-dir.yaml")).unwrap();
        let fifo = path.join("fifo.yaml");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let big = std::fs::File::create(path.join("big.yaml")).unwrap();
        big.set_len(harness_topology::MAX_TOPOLOGY_FILE_SIZE + 1)
            .unwrap();
        std::fs::write(path.join("latin1.yaml"), b"services: {}\n# caf\xe9\n").unwrap();
        for (name, says) in [
            ("a-dir.yaml", "it is a directory, not a regular file"),
            ("fifo.yaml", "it is a FIFO, not a regular file"),
            ("big.yaml", "more than the 4194304 a topology file may"),
            ("latin1.yaml", "UTF-8"),
            ("/dev/zero", "it is a character device, not a regular file"),
        ] {
            let lit: LitStr = syn::parse_str(&format!("{name:?}")).unwrap();
            let message = read(&lit, path).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("cannot read topology file {name:?}: "))
                    && message.contains(says),
                "{name}: {message}"
            );
        }
    }
}
