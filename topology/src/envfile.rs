//! The env file the harness writes for each service (ADR section 3): a file a POSIX shell can
//! `source`, as the package scripts' `start.sh` does.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::error::EnvFileError;

/// Whether `name` can be a shell variable (and so an environment variable we pass on): ASCII
/// letters, digits and `_`, not starting with a digit.
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Renders variables as `export NAME='value'` lines, in the order given.
///
/// Every value is single-quoted, with `'` written as `'\''`, so nothing in it (`$`, backquotes,
/// backslashes, newlines) is interpreted when the file is sourced; `export` passes the variables
/// on to what the sourcing script starts.
///
/// ```
/// use harness::topology::render_env_file;
/// let text = render_env_file([("POSTGRES_ADDR", "127.0.0.1:5432"), ("MOTTO", "it's $5")])?;
/// assert_eq!(text, "export POSTGRES_ADDR='127.0.0.1:5432'\nexport MOTTO='it'\\''s $5'\n");
/// # Ok::<(), harness::topology::EnvFileError>(())
/// ```
pub fn render_env_file<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<String, EnvFileError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = String::new();
    for (name, value) in vars {
        let (name, value) = (name.as_ref(), value.as_ref());
        if !is_valid_name(name) {
            return Err(EnvFileError::InvalidName(name.to_string()));
        }
        if value.contains('\0') {
            return Err(EnvFileError::NulInValue(name.to_string()));
        }
        out.push_str("export ");
        out.push_str(name);
        out.push_str("='");
        out.push_str(&value.replace('\'', r"'\''"));
        out.push_str("'\n");
    }
    Ok(out)
}

/// Writes an env file atomically with mode 0600: readers see the old file or the whole new one,
/// never a part, and only the owner can read the values (they may hold passwords).
///
/// The text goes to a temporary file in the same directory, which is flushed to disk and then
/// renamed over `path`; the directory is synced so that the rename survives a crash.
pub fn write_env_file<K, V>(
    path: impl AsRef<Path>,
    vars: impl IntoIterator<Item = (K, V)>,
) -> Result<(), EnvFileError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let path = path.as_ref();
    let text = render_env_file(vars)?;
    let failed = |source| EnvFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".env-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.as_file().sync_all().map_err(failed)?;
    file.persist(path).map_err(|e| failed(e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(())
}
