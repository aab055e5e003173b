//! `${cargo_bin:NAME}` under `harness up`: the binary NAME of a package of the cargo workspace
//! that `harness up` runs in, brought up to date by `cargo build` before the services start
//! (cargo does nothing when it is fresh), at the path cargo builds it to, wherever the target
//! directory is.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use harness::topology::TopologyConfig;

/// The binaries the topology names with `${cargo_bin:NAME}`, each with its path, built.
pub(crate) fn resolve(topology: &TopologyConfig) -> Result<Vec<(String, String)>, String> {
    let names: BTreeSet<String> = topology
        .services
        .values()
        .flat_map(|service| service.cargo_bins())
        .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Workspace::read(&cargo)?;
    let mut out = Vec::new();
    for name in names {
        let Some(package) = workspace.package_with_bin(&name) else {
            return Err(format!(
                "find `${{cargo_bin:{name}}}`: no package of the cargo workspace here has a \
                 binary `{name}` (its binaries: {})",
                workspace.bins().join(", ")
            ));
        };
        let status = Command::new(&cargo)
            .args(["build", "--quiet", "-p", package, "--bin", &name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("run cargo build for `${{cargo_bin:{name}}}`: {e}"))?;
        if !status.success() {
            return Err(format!(
                "build `${{cargo_bin:{name}}}`: cargo build -p {package} --bin {name} {status}"
            ));
        }
        let path = workspace.target_dir.join("debug").join(&name);
        out.push((name, path.display().to_string()));
    }
    Ok(out)
}

/// What `cargo metadata --no-deps` says of the workspace.
struct Workspace {
    target_dir: PathBuf,
    /// (package, binary) pairs.
    bins: Vec<(String, String)>,
}

impl Workspace {
    fn read(cargo: &std::ffi::OsStr) -> Result<Self, String> {
        let failed = |why: String| {
            format!(
                "find the binaries `${{cargo_bin:...}}` names: they are the cargo workspace's \
                 that harness up runs in, and `cargo metadata` {why}"
            )
        };
        let output = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(format!("could not run: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(failed(format!("failed: {}", stderr.trim())));
        }
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| failed(format!("printed what is not JSON: {e}")))?;
        let target_dir = metadata["target_directory"]
            .as_str()
            .ok_or_else(|| failed("named no target directory".into()))?
            .into();
        let mut bins = Vec::new();
        for package in metadata["packages"].as_array().into_iter().flatten() {
            let Some(package_name) = package["name"].as_str() else {
                continue;
            };
            for target in package["targets"].as_array().into_iter().flatten() {
                let is_bin = target["kind"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
                if is_bin && let Some(name) = target["name"].as_str() {
                    bins.push((package_name.to_string(), name.to_string()));
                }
            }
        }
        Ok(Workspace { target_dir, bins })
    }

    fn package_with_bin(&self, name: &str) -> Option<&str> {
        self.bins
            .iter()
            .find(|(_, bin)| bin == name)
            .map(|(package, _)| package.as_str())
    }

    fn bins(&self) -> Vec<&str> {
        self.bins.iter().map(|(_, bin)| bin.as_str()).collect()
    }
}
