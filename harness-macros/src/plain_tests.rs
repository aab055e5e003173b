//! Finds the plain test functions (`#[test]`, `#[tokio::test]`, `#[rstest]`, ...) of a
//! `harness::main!()` target, which libtest-mimic's runner never sees: the file `main!()` is
//! written in, its inline modules and the files its `mod name;` items load, walked as rustc
//! finds them.
//!
//! The files are parsed again here, as text, so each finding carries its file and line. Code
//! under `#[cfg(...)]` is not judged here: a finding keeps the `cfg` predicates around it, and
//! the error is emitted under the same predicates, so the compiler reports it exactly when the
//! test would be compiled.

use std::path::{Path, PathBuf};

use syn::punctuated::Punctuated;
use syn::{Attribute, Item, Meta, Token};

/// Attribute names (the last segment of the path) that make a function a plain test:
/// `test` also covers `tokio::test`, `async_std::test`, `test_log::test` and the like.
const TEST_ATTRIBUTES: &[&str] = &["test", "rstest", "test_case", "test_matrix", "quickcheck"];

/// Files are loaded at most this deep, against `#[path]` loops.
const MAX_DEPTH: usize = 32;

/// One plain test function.
#[derive(Debug, PartialEq)]
pub(crate) struct PlainTest {
    /// The file, as given to [`find`] or joined to it.
    pub(crate) file: PathBuf,
    /// The attribute's line, from 1.
    pub(crate) line: usize,
    /// The attribute as written, without its arguments: `test`, `tokio::test`.
    pub(crate) attribute: String,
    /// The function's path in the crate: `tests::adds`.
    pub(crate) function: String,
    /// The `cfg` predicates the function is under, as source text; empty when unconditional.
    pub(crate) cfgs: Vec<String>,
}

/// The plain tests of the crate whose root is `root`. A file that cannot be read or parsed
/// is passed over: if it is part of the crate, the compiler reports it.
pub(crate) fn find(root: &Path) -> Vec<PlainTest> {
    // Fallback spans know their line and column; the compiler's, for a string parsed inside a
    // macro, are all the call site's.
    let _fallback = Fallback::force();
    let mut found = Vec::new();
    let dirs = Dirs {
        file: parent(root),
        children: parent(root),
    };
    walk_file(root, &dirs, "", &[], 0, &mut found);
    found
}

/// Where `mod name;` looks for its file.
#[derive(Clone)]
struct Dirs {
    /// The directory of the file being read: `#[path]` outside inline modules is relative to it.
    file: PathBuf,
    /// The directory of the current module's children.
    children: PathBuf,
}

/// Uses proc-macro2's own tokens while alive; the compiler's again when dropped, also on panic.
/// The choice is global to the process, which is safe because rustc expands one macro at a
/// time, and nothing made while it holds reaches the compiler: findings are plain strings.
struct Fallback;

impl Fallback {
    fn force() -> Self {
        proc_macro2::fallback::force();
        Fallback
    }
}

impl Drop for Fallback {
    fn drop(&mut self) {
        proc_macro2::fallback::unforce();
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn walk_file(
    file: &Path,
    dirs: &Dirs,
    module: &str,
    cfgs: &[String],
    depth: usize,
    found: &mut Vec<PlainTest>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    let Ok(parsed) = syn::parse_file(&text) else {
        return;
    };
    let mut walker = Walker { file, depth, found };
    walker.items(&parsed.items, dirs, true, module, cfgs);
}

struct Walker<'a> {
    file: &'a Path,
    depth: usize,
    found: &'a mut Vec<PlainTest>,
}

impl Walker<'_> {
    /// `top`: the items are the file's own, not an inline module's.
    fn items(&mut self, items: &[Item], dirs: &Dirs, top: bool, module: &str, cfgs: &[String]) {
        for item in items {
            match item {
                Item::Fn(func) => {
                    let mut cfgs = cfgs.to_vec();
                    cfgs.extend(cfg_predicates(&func.attrs));
                    let function = join(module, &func.sig.ident.to_string());
                    for attr in &func.attrs {
                        self.test_attribute(attr, &function, &cfgs);
                    }
                }
                Item::Mod(m) => {
                    let mut cfgs = cfgs.to_vec();
                    cfgs.extend(cfg_predicates(&m.attrs));
                    let name = m.ident.to_string();
                    let inner = join(module, &name);
                    let path = path_attribute(&m.attrs);
                    match &m.content {
                        Some((_, items)) => {
                            let children = match &path {
                                Some(path) => dirs.children.join(path),
                                None => dirs.children.join(&name),
                            };
                            let dirs = Dirs {
                                file: dirs.file.clone(),
                                children,
                            };
                            self.items(items, &dirs, false, &inner, &cfgs);
                        }
                        None => {
                            let Some((file, children)) = module_file(dirs, top, &name, path) else {
                                continue;
                            };
                            let dirs = Dirs {
                                file: parent(&file),
                                children,
                            };
                            walk_file(&file, &dirs, &inner, &cfgs, self.depth + 1, self.found);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Records `attr` if it makes the function a plain test, directly or through `cfg_attr`.
    fn test_attribute(&mut self, attr: &Attribute, function: &str, cfgs: &[String]) {
        let line = attr.pound_token.span.start().line;
        self.meta(&attr.meta, line, function, cfgs);
    }

    fn meta(&mut self, meta: &Meta, line: usize, function: &str, cfgs: &[String]) {
        let path = meta.path();
        if path.is_ident("cfg_attr") {
            let Ok(list) = meta.require_list() else {
                return;
            };
            let Ok(parts) = list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
            else {
                return;
            };
            let mut parts = parts.into_iter();
            let Some(predicate) = parts.next() else {
                return;
            };
            let mut cfgs = cfgs.to_vec();
            cfgs.push(tokens(&predicate));
            for inner in parts {
                self.meta(&inner, line, function, &cfgs);
            }
            return;
        }
        let Some(last) = path.segments.last() else {
            return;
        };
        if !TEST_ATTRIBUTES.contains(&last.ident.to_string().as_str()) {
            return;
        }
        let attribute = path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect::<Vec<_>>()
            .join("::");
        let attribute = match path.leading_colon {
            Some(_) => format!("::{attribute}"),
            None => attribute,
        };
        self.found.push(PlainTest {
            file: self.file.to_path_buf(),
            line,
            attribute,
            function: function.to_string(),
            cfgs: cfgs.to_vec(),
        });
    }
}

/// The file `mod name;` loads, and the directory of that module's children; `None` when
/// neither `name.rs` nor `name/mod.rs` exists.
fn module_file(
    dirs: &Dirs,
    top: bool,
    name: &str,
    path: Option<String>,
) -> Option<(PathBuf, PathBuf)> {
    if let Some(path) = path {
        // A `#[path]` file owns its directory, as a `mod.rs` does.
        let base = if top { &dirs.file } else { &dirs.children };
        let file = base.join(path);
        let children = parent(&file);
        return file.is_file().then_some((file, children));
    }
    let flat = dirs.children.join(format!("{name}.rs"));
    if flat.is_file() {
        return Some((flat, dirs.children.join(name)));
    }
    let nested = dirs.children.join(name).join("mod.rs");
    nested.is_file().then(|| (nested, dirs.children.join(name)))
}

/// The predicates of the `#[cfg(...)]` attributes among `attrs`, as source text.
fn cfg_predicates(attrs: &[Attribute]) -> Vec<String> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .filter_map(|a| a.meta.require_list().ok())
        .map(|list| list.tokens.to_string())
        .collect()
}

/// The value of `#[path = "..."]`, if given.
fn path_attribute(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

fn tokens(meta: &Meta) -> String {
    quote::ToTokens::to_token_stream(meta).to_string()
}

fn join(module: &str, name: &str) -> String {
    match module {
        "" => name.to_string(),
        _ => format!("{module}::{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate in a temporary directory: `(relative path, text)` for each file.
    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn summary(found: &[PlainTest], root: &Path) -> Vec<String> {
        found
            .iter()
            .map(|t| {
                let file = t.file.strip_prefix(root).unwrap().display();
                let cfgs = t.cfgs.join(" & ");
                format!(
                    "{file}:{} #[{}] {} [{cfgs}]",
                    t.line, t.attribute, t.function
                )
            })
            .collect()
    }

    #[test]
    fn finds_plain_tests_in_inline_modules_and_module_files() {
        let dir = project(&[
            (
                "tests/kv.rs",
                r##"//! A suite.
use harness::harness_test;

#[harness_test(topology = "t.yaml")]
async fn harness_test_is_fine() {}

#[test]
fn top_level() {}

mod nested {
    mod deeper {
        #[tokio::test]
        async fn in_deeper() {}
    }
    mod from_file;
}

#[cfg(feature = "slow")]
mod gated {
    #[cfg_attr(unix, rstest)]
    fn conditional() {}
    /// "#[test]" in a string or a comment is text.
    fn not_a_test() { let _ = "#[test]"; }
}

#[path = "shared/helpers.rs"]
mod helpers;

mod sub;

mod missing;

harness::main!();
"##,
            ),
            // The crate root owns its directory: `nested` is a directory beside it.
            (
                "tests/nested/from_file.rs",
                "\n#[::core::prelude::v1::test]\nfn in_file() {}\n",
            ),
            // A non-mod.rs file's children are in a directory named after it.
            ("tests/sub.rs", "mod leaf;\n"),
            (
                "tests/sub/leaf.rs",
                "#[cfg_attr(test, test)]\nfn leaf() {}\n",
            ),
            (
                "tests/shared/helpers.rs",
                "mod inner;\n#[test_case(1)]\nfn case(_: u8) {}\n",
            ),
            ("tests/shared/inner.rs", "#[test]\nfn inner() {}\n"),
        ]);
        let root = dir.path().to_path_buf();
        let found = find(&root.join("tests/kv.rs"));
        assert_eq!(
            summary(&found, &root),
            [
                "tests/kv.rs:7 #[test] top_level []",
                "tests/kv.rs:12 #[tokio::test] nested::deeper::in_deeper []",
                "tests/nested/from_file.rs:2 #[::core::prelude::v1::test] nested::from_file::in_file []",
                "tests/kv.rs:20 #[rstest] gated::conditional [feature = \"slow\" & unix]",
                "tests/shared/inner.rs:1 #[test] helpers::inner::inner []",
                "tests/shared/helpers.rs:2 #[test_case] helpers::case []",
                "tests/sub/leaf.rs:1 #[test] sub::leaf::leaf [test]",
            ]
        );
    }

    #[test]
    fn a_file_that_does_not_parse_is_passed_over() {
        let dir = project(&[("main.rs", "#[test]\nfn broken( {}\n")]);
        assert!(find(&dir.path().join("main.rs")).is_empty());
        assert!(find(&dir.path().join("none.rs")).is_empty());
    }
}
