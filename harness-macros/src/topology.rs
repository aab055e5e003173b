//! Reading a topology file at compile time, only as far as its service names: the full checks
//! run when the test starts, with file, line and column.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::de::IgnoredAny;
use syn::LitStr;

/// A topology file (or overlay) the attribute names.
#[derive(Debug)]
pub(crate) struct TopologyFile {
    /// Its absolute path, for `include_str!` and for the runner.
    pub(crate) path: PathBuf,
    /// Its services, in the file's order.
    pub(crate) services: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Names {
    #[serde(default)]
    services: Option<IndexMap<String, IgnoredAny>>,
}

/// Reads the file `lit` names, relative to `manifest_dir`; an error spans the literal.
pub(crate) fn read(lit: &LitStr, manifest_dir: &Path) -> syn::Result<TopologyFile> {
    let relative = lit.value();
    let path = manifest_dir.join(&relative);
    // Messages name the path as written; the full path would be the manifest directory's.
    let text = read_bounded(&path).map_err(|e| {
        syn::Error::new(
            lit.span(),
            format!(
                "cannot read topology file {relative:?}: {e}; the path is relative to the \
                 crate's manifest directory (CARGO_MANIFEST_DIR)"
            ),
        )
    })?;
    let names: Names = serde_saphyr::from_str(&text).map_err(|e| {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or_default().to_string();
        syn::Error::new(
            lit.span(),
            format!("cannot read the services of topology file {relative:?}: {first}"),
        )
    })?;
    let services = names
        .services
        .map(|s| s.into_keys().collect())
        .unwrap_or_default();
    Ok(TopologyFile { path, services })
}

/// The largest topology file read at compile time: the runtime's limit
/// (`harness::topology::MAX_TOPOLOGY_FILE_SIZE`), which this crate cannot name.
const MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// Reads a regular file of at most [`MAX_FILE_SIZE`] bytes as UTF-8. A directory, a FIFO or a
/// device is refused before it is opened, so a wrong path cannot hang or exhaust the compiler.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read as _};
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        let kind = if metadata.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(Error::new(ErrorKind::InvalidInput, format!("it is {kind}")));
    }
    let too_large = |size: u64| {
        Error::new(
            ErrorKind::InvalidData,
            format!("it holds {size} bytes, more than the {MAX_FILE_SIZE} a topology file may"),
        )
    };
    if metadata.len() > MAX_FILE_SIZE {
        return Err(too_large(metadata.len()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::new(
            ErrorKind::InvalidData,
            format!(
                "it is not UTF-8 text (byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
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
            "network: { lan_interface: eth0 }\nservices:\n  web: { target: { process: { binary: x } } }\n  db:\n    port: 5\n",
        )
        .unwrap();
        let file = read(&syn::parse_quote!("t.yaml"), &dir).unwrap();
        assert_eq!(file.services, ["web", "db"]);
        assert_eq!(file.path, dir.join("t.yaml"));
        let missing = read(&syn::parse_quote!("none.yaml"), &dir).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read topology file"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
        big.set_len(MAX_FILE_SIZE + 1).unwrap();
        std::fs::write(path.join("latin1.yaml"), b"services: {}\n# caf\xe9\n").unwrap();
        for (name, says) in [
            ("a-dir.yaml", "it is a directory"),
            ("fifo.yaml", "it is not a regular file"),
            ("big.yaml", "more than the 4194304 a topology file may"),
            ("latin1.yaml", "not UTF-8 text (byte 18)"),
            ("/dev/zero", "it is not a regular file"),
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
