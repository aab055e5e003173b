//! Where a `${cargo_bin:NAME}` binary of the cargo workspace is, and how it is built: what
//! `cargo metadata` says of the workspace (its packages' binaries, its real target directory),
//! and `cargo build -p PACKAGE --bin NAME`. The test attribute, the test runner and
//! `harness up` all find binaries this way.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The cargo workspace of a manifest, as `cargo metadata --no-deps` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CargoWorkspace {
    /// The workspace's target directory, wherever `CARGO_TARGET_DIR` or `build.target-dir`
    /// put it.
    pub target_dir: PathBuf,
    /// Every binary target of its packages: (package, binary).
    pub bins: Vec<(String, String)>,
}

/// The cargo to run: `CARGO` (set by cargo for what it builds and runs), else `cargo`.
pub fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

impl CargoWorkspace {
    /// Runs `cargo metadata --no-deps` for `manifest` (a `Cargo.toml`), or for the workspace
    /// of the current directory without one.
    pub fn read(cargo: &OsStr, manifest: Option<&Path>) -> Result<Self, String> {
        let mut command = Command::new(cargo);
        command.args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ]);
        if let Some(manifest) = manifest {
            command.arg("--manifest-path").arg(manifest);
        }
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("`cargo metadata` could not run: {e}"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!("`cargo metadata` failed: {}", stderr.trim()));
        }
        Self::parse(&output.stdout)
    }

    /// What `cargo metadata --format-version 1` printed.
    fn parse(json: &[u8]) -> Result<Self, String> {
        let metadata: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| format!("`cargo metadata` printed what is not JSON: {e}"))?;
        let target_dir = metadata["target_directory"]
            .as_str()
            .ok_or("`cargo metadata` named no target directory")?
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
        Ok(CargoWorkspace { target_dir, bins })
    }

    /// The package that has the binary `name`.
    pub fn package_with_bin(&self, name: &str) -> Option<&str> {
        self.bins
            .iter()
            .find(|(_, bin)| bin == name)
            .map(|(package, _)| package.as_str())
    }

    /// The names of every binary, in the workspace's order.
    pub fn bin_names(&self) -> Vec<&str> {
        self.bins.iter().map(|(_, bin)| bin.as_str()).collect()
    }
}

/// Where cargo puts a build's binaries, and the options that select that build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDir {
    /// `<target>/[<triple>/]<profile>`.
    pub dir: PathBuf,
    /// The `cargo build` options that build into it: `--profile NAME`, `--target TRIPLE`.
    pub options: Vec<String>,
}

impl BuildDir {
    /// The debug build of `target_dir`: what `cargo build` makes.
    pub fn debug(target_dir: &Path) -> Self {
        BuildDir {
            dir: target_dir.join("debug"),
            options: Vec::new(),
        }
    }

    /// The build a test binary at `exe` (`<target>/[<triple>/]<profile>/deps/NAME-HASH`)
    /// belongs to, so that a binary it needs is built with the same profile and target;
    /// `None` when `exe` lies outside `target_dir`.
    pub fn of_test_binary(exe: &Path, target_dir: &Path) -> Option<Self> {
        let profile_dir = exe.parent()?.parent()?;
        let profile = profile_dir.file_name()?.to_str()?;
        let above = profile_dir.parent()?;
        let mut options = match profile {
            "debug" => Vec::new(),
            "release" => vec!["--release".to_string()],
            other => vec!["--profile".to_string(), other.to_string()],
        };
        if above != target_dir {
            if above.parent()? != target_dir {
                return None;
            }
            options.push("--target".into());
            options.push(above.file_name()?.to_str()?.to_string());
        }
        Some(BuildDir {
            dir: profile_dir.to_path_buf(),
            options,
        })
    }
}

/// Brings the binary `name` of `package` up to date (cargo does nothing when it is fresh) and
/// returns its path. `manifest` selects the workspace, as for [`CargoWorkspace::read`].
pub fn build_bin(
    cargo: &OsStr,
    manifest: Option<&Path>,
    package: &str,
    name: &str,
    build: &BuildDir,
) -> Result<PathBuf, String> {
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", package, "--bin", name]);
    command.args(&build.options);
    if let Some(manifest) = manifest {
        command.arg("--manifest-path").arg(manifest);
    }
    let shown = format!(
        "cargo build -p {package} --bin {name}{}",
        build
            .options
            .iter()
            .map(|o| format!(" {o}"))
            .collect::<String>()
    );
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("{shown} could not run: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("{shown} {}:\n{}", output.status, tail.join("\n")));
    }
    Ok(build.dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_gives_the_target_dir_and_every_packages_binaries() {
        let json = br#"{"target_directory": "/t", "packages": [
            {"name": "app", "targets": [{"kind": ["bin"], "name": "app"}, {"kind": ["lib"], "name": "app"}]},
            {"name": "tools", "targets": [{"kind": ["bin"], "name": "seed"}, {"kind": ["test"], "name": "it"}]}
        ]}"#;
        let workspace = CargoWorkspace::parse(json).unwrap();
        assert_eq!(workspace.target_dir, Path::new("/t"));
        assert_eq!(workspace.bin_names(), ["app", "seed"]);
        assert_eq!(workspace.package_with_bin("seed"), Some("tools"));
        assert_eq!(workspace.package_with_bin("it"), None);
        assert!(CargoWorkspace::parse(b"{}").is_err());
    }

    #[test]
    fn a_test_binary_tells_its_profile_and_target() {
        let target = Path::new("/w/target");
        let build = |exe: &str| BuildDir::of_test_binary(Path::new(exe), target);
        assert_eq!(
            build("/w/target/debug/deps/store-1a2b"),
            Some(BuildDir::debug(target))
        );
        assert_eq!(
            build("/w/target/release/deps/store-1a2b").unwrap().options,
            ["--release"]
        );
        let cross = build("/w/target/x86_64-unknown-linux-musl/ci/deps/store-1a2b").unwrap();
        assert_eq!(
            cross.dir,
            Path::new("/w/target/x86_64-unknown-linux-musl/ci")
        );
        assert_eq!(
            cross.options,
            ["--profile", "ci", "--target", "x86_64-unknown-linux-musl"]
        );
        assert_eq!(build("/elsewhere/debug/deps/store-1a2b"), None);
    }
}
