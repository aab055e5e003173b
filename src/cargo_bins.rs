//! `${cargo_bin:NAME}` under `harness up`: the binary NAME of a package of the cargo workspace
//! that `harness up` runs in, brought up to date by `cargo build` before the services start
//! (cargo does nothing when it is fresh), at the path cargo builds it to, wherever the target
//! directory is.

use std::collections::BTreeSet;

use harness::topology::TopologyConfig;
use harness::topology::cargo::{BuildDir, CargoWorkspace, build_bin, cargo_program};

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
    let cargo = cargo_program();
    let workspace = CargoWorkspace::read(&cargo, None).map_err(|why| {
        format!(
            "find the binaries `${{cargo_bin:...}}` names: they are the cargo workspace's \
             that harness up runs in, and {why}"
        )
    })?;
    let build = BuildDir::debug(&workspace.target_dir);
    let mut out = Vec::new();
    for name in names {
        let Some(package) = workspace.package_with_bin(&name) else {
            return Err(format!(
                "find `${{cargo_bin:{name}}}`: no package of the cargo workspace here has a \
                 binary `{name}` (its binaries: {})",
                workspace.bin_names().join(", ")
            ));
        };
        let path = build_bin(&cargo, None, package, &name, &build)
            .map_err(|why| format!("build `${{cargo_bin:{name}}}`: {why}"))?;
        out.push((name, path.display().to_string()));
    }
    Ok(out)
}
