//! Every mistake found while expanding one attribute, reported together.

use std::path::{Path, PathBuf};

use proc_macro2::TokenStream;

/// The errors found so far; emitted all at once as `compile_error!`s.
#[derive(Default)]
pub(crate) struct Errors(Vec<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        self.0.push(error);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors as `compile_error!` invocations, each at its own span.
    pub(crate) fn to_compile_errors(&self) -> TokenStream {
        self.0.iter().map(syn::Error::to_compile_error).collect()
    }

    #[cfg(test)]
    pub(crate) fn messages(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// A path as the compiler's own messages show files: relative to the current directory (the
/// workspace's root under cargo, as written or canonical), so that a terminal can open
/// `file:line:column`.
pub(crate) fn shown(path: &Path) -> PathBuf {
    let Ok(dir) = std::env::current_dir() else {
        return path.to_path_buf();
    };
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    path.strip_prefix(&dir)
        .or_else(|_| path.strip_prefix(&canonical))
        .map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}
