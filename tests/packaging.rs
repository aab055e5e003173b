//! What `cargo publish` would upload: every publishable package of the workspace, packaged with
//! `cargo package --no-verify` (seconds; `cargo publish --workspace --dry-run` also builds each
//! crate from scratch, which takes minutes), unpacked and checked as crates.io and a user would
//! see it. The packages carry both licence files and their readme, their manifests the metadata
//! crates.io shows, every dependency a version instead of a path, and every file the sources
//! include lies inside the package.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The packages `cargo publish --workspace` publishes, compared whole with what the workspace
/// declares publishable: a package added or made publishable is checked here too.
const PUBLISHED: [&str; 4] = [
    "topo-harness",
    "topo-harness-cli",
    "topo-harness-macros",
    "topo-harness-topology",
];

fn workspace_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `cargo metadata --no-deps` of a manifest: its packages, without resolving a dependency.
fn metadata(manifest: &Path) -> Value {
    let out = cargo()
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata of {} failed: {}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// The workspace's packages that may be published (`publish` unset), by name.
fn publishable() -> BTreeSet<String> {
    let meta = metadata(&workspace_dir().join("Cargo.toml"));
    meta["packages"]
        .as_array()
        .expect("a list of packages")
        .iter()
        .filter(|package| package["publish"].is_null())
        .map(|package| package["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// Packages `names` into `target/package/NAME-VERSION.crate` under a target directory of its own.
fn package(names: &BTreeSet<String>, target: &Path) -> BTreeMap<String, PathBuf> {
    let mut command = cargo();
    // --allow-dirty: the check is of the tree as it is, committed or not.
    command
        .args([
            "package",
            "--no-verify",
            "--locked",
            "--allow-dirty",
            "--quiet",
        ])
        .arg("--target-dir")
        .arg(target)
        .current_dir(workspace_dir());
    for name in names {
        command.args(["--package", name]);
    }
    let out = command.output().expect("run cargo package");
    assert!(
        out.status.success(),
        "cargo package failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = env!("CARGO_PKG_VERSION");
    names
        .iter()
        .map(|name| {
            let file = target.join(format!("package/{name}-{version}.crate"));
            assert!(file.is_file(), "cargo package wrote no {}", file.display());
            (name.clone(), file)
        })
        .collect()
}

/// The files of a `.crate` (a gzipped tarball of `NAME-VERSION/...`), by path inside the
/// package; each is also written under `into`, for cargo to read the manifest.
fn unpack(file: &Path, into: &Path) -> BTreeMap<String, Vec<u8>> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(file).expect("open the .crate"));
    let mut archive = tar::Archive::new(gz);
    let mut files = BTreeMap::new();
    for entry in archive.entries().expect("read the .crate") {
        let mut entry = entry.expect("an entry of the .crate");
        let path = entry.path().expect("an entry's path").into_owned();
        let inside: PathBuf = path.components().skip(1).collect();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read an entry");
        let on_disk = into.join(&path);
        std::fs::create_dir_all(on_disk.parent().expect("a parent")).expect("create a directory");
        std::fs::write(&on_disk, &bytes).expect("write an entry");
        files.insert(inside.to_str().expect("a UTF-8 path").to_owned(), bytes);
    }
    files
}

/// The paths that `include_str!("...")` and `include_bytes!("...")` name in a source file,
/// resolved against the file's directory; includes of a computed path are left out.
fn included_paths(source_path: &str, text: &str) -> Vec<String> {
    let dir = Path::new(source_path)
        .parent()
        .expect("a source's directory");
    let mut paths = Vec::new();
    for start in ["include_str!(\"", "include_bytes!(\""] {
        for (at, _) in text.match_indices(start) {
            let rest = &text[at + start.len()..];
            let literal = &rest[..rest.find('"').expect("a closed string literal")];
            let mut resolved = PathBuf::new();
            for component in dir.join(literal).components() {
                match component {
                    Component::ParentDir if !resolved.pop() => {
                        resolved.push("OUTSIDE THE PACKAGE");
                    }
                    Component::ParentDir | Component::CurDir => {}
                    other => resolved.push(other),
                }
            }
            paths.push(resolved.to_str().expect("a UTF-8 path").to_owned());
        }
    }
    paths
}

/// The problems of one unpacked package, empty when it is fit to publish.
fn problems(name: &str, files: &BTreeMap<String, Vec<u8>>, manifest: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        let ours = std::fs::read(workspace_dir().join(licence)).expect("the root's licence file");
        match files.get(licence) {
            None => problems.push(format!("{name}: no {licence}")),
            Some(bytes) if *bytes != ours => {
                problems.push(format!("{name}: {licence} differs from the root's"));
            }
            Some(_) => {}
        }
    }
    match manifest["readme"].as_str() {
        None => problems.push(format!("{name}: no readme in the manifest")),
        Some(readme) if !files.contains_key(readme) => {
            problems.push(format!("{name}: the readme {readme} is not in the package"));
        }
        Some(_) => {}
    }
    // The lock file is what `cargo install --locked` builds the command with.
    for file in ["CHANGELOG.md", "Cargo.lock"] {
        if !files.contains_key(file) {
            problems.push(format!("{name}: no {file}"));
        }
    }
    for field in [
        "description",
        "license",
        "documentation",
        "homepage",
        "repository",
    ] {
        if manifest[field].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{name}: no {field}"));
        }
    }
    // crates.io's limits: at most 5 of each.
    for field in ["keywords", "categories"] {
        let count = manifest[field].as_array().map_or(0, Vec::len);
        if !(1..=5).contains(&count) {
            problems.push(format!("{name}: {count} {field}, not 1 to 5"));
        }
    }
    for dependency in manifest["dependencies"].as_array().expect("dependencies") {
        let dep = dependency["name"].as_str().expect("a dependency's name");
        if !dependency["path"].is_null() {
            problems.push(format!("{name}: the dependency {dep} is a path"));
        }
        if dependency["req"] == "*" {
            problems.push(format!("{name}: the dependency {dep} has no version"));
        }
    }
    for (path, bytes) in files.iter().filter(|(path, _)| path.ends_with(".rs")) {
        let text = String::from_utf8_lossy(bytes);
        for included in included_paths(path, &text) {
            if !files.contains_key(&included) {
                problems.push(format!(
                    "{name}: {path} includes {included}, which is not in the package"
                ));
            }
        }
    }
    problems
}

#[test]
fn every_publishable_package_is_fit_for_crates_io() {
    let publishable = publishable();
    let expected: BTreeSet<String> = PUBLISHED.iter().map(|name| name.to_string()).collect();
    assert_eq!(publishable, expected, "the publishable packages");

    let scratch = tempfile::tempdir().expect("a temporary directory");
    let crates = package(&publishable, &scratch.path().join("target"));
    let mut found = Vec::new();
    for (name, file) in &crates {
        let unpacked = scratch.path().join("unpacked");
        let files = unpack(file, &unpacked);
        let root = unpacked.join(format!("{name}-{}", env!("CARGO_PKG_VERSION")));
        let meta = metadata(&root.join("Cargo.toml"));
        let manifest = &meta["packages"][0];
        assert_eq!(
            manifest["name"],
            name.as_str(),
            "the packaged manifest's name"
        );
        found.extend(problems(name, &files, manifest));
    }
    assert_eq!(
        found,
        Vec::<String>::new(),
        "what would fail or mislead on crates.io"
    );
}

#[test]
fn an_include_outside_the_package_is_found() {
    let text = r#"#[doc = include_str!("../../../docs/a.md")] const B: &[u8] = include_bytes!("b.bin");
        include_str!(#path)"#;
    assert_eq!(
        included_paths("src/net/mod.rs", text),
        ["OUTSIDE THE PACKAGE/docs/a.md", "src/net/b.bin"]
    );
}
