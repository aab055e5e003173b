//! The rules every entry of a package follows, checked the same way on a directory being
//! built and on an archive being verified.

use serde::Serialize;

use super::error::Refusal;

/// The start script, required.
pub const START_SCRIPT: &str = "scripts/start.sh";
/// The stop script, required.
pub const STOP_SCRIPT: &str = "scripts/stop.sh";
/// The health script, optional.
pub const HEALTH_SCRIPT: &str = "scripts/health.sh";

/// The default limit on a package's size: 1 GiB of file content (and of compressed archive).
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;

/// One entry of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageFile {
    /// The path from the package root, `/`-separated, without a trailing `/`.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
    /// Permission bits, as stored (see [`stored_mode`]).
    pub mode: u32,
    /// Content size in bytes (0 for directories and links).
    pub size: u64,
}

/// What a [`PackageFile`] is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link to `target`, which stays inside the package.
    Symlink {
        /// The target as written, relative.
        target: String,
    },
}

impl PackageFile {
    /// `ls -l`'s mode column: `-rwxr-xr-x`, `drwxr-xr-x`, `lrwxrwxrwx`.
    pub fn mode_string(&self) -> String {
        let kind = match self.kind {
            FileKind::File => '-',
            FileKind::Directory => 'd',
            FileKind::Symlink { .. } => 'l',
        };
        let mut text = String::from(kind);
        // setuid, setgid and sticky show in the execute column, as `ls -l` shows them.
        for (shift, special, letter) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
            let bits = (self.mode >> shift) & 7;
            text.push(if bits & 4 != 0 { 'r' } else { '-' });
            text.push(if bits & 2 != 0 { 'w' } else { '-' });
            text.push(match (bits & 1 != 0, self.mode & special != 0) {
                (true, true) => letter,
                (false, true) => letter.to_ascii_uppercase(),
                (true, false) => 'x',
                (false, false) => '-',
            });
        }
        text
    }
}

/// The mode a built package stores, whatever the umask and owner were: `0755` for
/// directories and for files with any execute bit, `0644` for other files, `0777` for links.
/// Only the execute bit carries meaning, as in git.
pub fn stored_mode(kind: &FileKind, mode: u32) -> u32 {
    match kind {
        FileKind::Directory => 0o755,
        FileKind::Symlink { .. } => 0o777,
        FileKind::File if mode & 0o111 != 0 => 0o755,
        FileKind::File => 0o644,
    }
}

/// An archive entry's name as a clean relative path: UTF-8, not absolute, no `..`, with `.`
/// components and trailing `/` dropped. `None` for the root itself (`./`).
pub(crate) fn entry_path(raw: &[u8]) -> Result<Option<String>, Refusal> {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Err(Refusal::NotUtf8(String::from_utf8_lossy(raw).into_owned()));
    };
    if text.starts_with('/') {
        return Err(Refusal::AbsolutePath(text.to_string()));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(Refusal::ParentDir(text.to_string())),
            part => parts.push(part),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// The prefix of the names harness writes into a release directory (its logs), refused at the
/// package root so that no entry of an archive can stand where harness writes.
pub(crate) const RESERVED_PREFIX: &str = ".harness-";

/// Checks an entry's cleaned path: no control characters (the host's listing of what it
/// extracted is one line per entry, tab-separated), and not a name harness keeps for itself.
pub(crate) fn check_name(path: &str) -> Result<(), Refusal> {
    if path.chars().any(char::is_control) {
        return Err(Refusal::ControlCharacter(path.to_string()));
    }
    if path
        .split('/')
        .next()
        .is_some_and(|top| top.starts_with(RESERVED_PREFIX))
    {
        return Err(Refusal::Reserved(path.to_string()));
    }
    Ok(())
}

/// Checks an archive entry's mode: no setuid, setgid or sticky bit.
pub(crate) fn check_mode(path: &str, mode: u32) -> Result<(), Refusal> {
    if mode & 0o7000 != 0 {
        return Err(Refusal::SpecialBits {
            path: path.to_string(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Checks that a symbolic link at `path` (relative to the root) pointing at `target` stays
/// inside the package.
///
/// The rule: a relative target that may climb with `..` only at its start, and no higher than
/// the link's own directory is deep. Since every directory a link sits in is a real directory
/// of the package, climbing from it stays inside; what follows only descends, through entries
/// that are themselves inside. A `..` after a descent could climb out of a directory that a
/// link reached, so it is refused even where it would stay inside.
pub(crate) fn check_link(path: &str, target: &str) -> Result<(), Refusal> {
    let outside = |why| {
        Err(Refusal::LinkOutside {
            path: path.to_string(),
            target: target.to_string(),
            why,
        })
    };
    if target.chars().any(char::is_control) {
        return Err(Refusal::ControlCharacter(format!("{path} -> {target}")));
    }
    if target.is_empty() {
        return outside("its target is empty");
    }
    if target.starts_with('/') {
        return outside("its target is an absolute path; use a relative one");
    }
    let depth = path.matches('/').count();
    let mut climbs = 0;
    let mut descended = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if descended => {
                return outside("`..` may appear only at the start of a link's target");
            }
            ".." => climbs += 1,
            _ => descended = true,
        }
    }
    if climbs > depth {
        return outside("its target climbs above the package root");
    }
    Ok(())
}

/// Checks that no entry lies below a file or a link, and that no path appears twice. `files`
/// are in archive order.
pub(crate) fn check_tree(files: &[PackageFile]) -> Result<(), Refusal> {
    let mut kinds = std::collections::HashMap::with_capacity(files.len());
    for file in files {
        let mut end = 0;
        while let Some(slash) = file.path[end..].find('/') {
            let parent = &file.path[..end + slash];
            if matches!(kinds.get(parent), Some(kind) if !matches!(kind, FileKind::Directory)) {
                return Err(Refusal::BelowNonDirectory {
                    path: file.path.clone(),
                    parent: parent.to_string(),
                });
            }
            end += slash + 1;
        }
        if kinds
            .insert(file.path.as_str(), file.kind.clone())
            .is_some()
        {
            return Err(Refusal::Duplicate(file.path.clone()));
        }
    }
    Ok(())
}

/// Checks the scripts: `scripts/start.sh` and `scripts/stop.sh` present, and every script
/// present a regular file with an execute bit. `mode` is the mode before [`stored_mode`].
pub(crate) fn check_scripts(files: &[PackageFile]) -> Result<(), Refusal> {
    for script in [START_SCRIPT, STOP_SCRIPT, HEALTH_SCRIPT] {
        let Some(file) = files.iter().find(|f| f.path == script) else {
            if script == HEALTH_SCRIPT {
                continue;
            }
            return Err(Refusal::MissingScript(script));
        };
        if file.kind != FileKind::File {
            return Err(Refusal::ScriptNotFile(script.to_string()));
        }
        if file.mode & 0o111 == 0 {
            return Err(Refusal::NotExecutable {
                path: script.to_string(),
                mode: file.mode & 0o7777,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_cleaned_or_refused() {
        assert_eq!(entry_path(b"./bin/x").unwrap().as_deref(), Some("bin/x"));
        assert_eq!(entry_path(b"bin/").unwrap().as_deref(), Some("bin"));
        assert_eq!(entry_path(b"./").unwrap(), None);
        assert_eq!(
            entry_path(b"/etc/passwd"),
            Err(Refusal::AbsolutePath("/etc/passwd".into()))
        );
        assert_eq!(
            entry_path(b"bin/../../x"),
            Err(Refusal::ParentDir("bin/../../x".into()))
        );
        assert!(matches!(entry_path(b"bin/\xff"), Err(Refusal::NotUtf8(_))));
    }

    #[test]
    fn links_stay_inside() {
        for (path, target) in [
            ("bin/tool", "../lib/tool"),
            ("bin/tool", "tool-1.2"),
            ("a/b/c", "../../x/./y"),
            ("top", "."),
            ("bin/up", ".."),
        ] {
            assert_eq!(check_link(path, target), Ok(()), "{path} -> {target}");
        }
        for (path, target, why) in [
            ("bin/sh", "/bin/sh", "absolute"),
            ("bin/x", "../../etc", "climbs above"),
            ("x", "..", "climbs above"),
            ("x", "a/../..", "only at the start"),
            ("a/x", "b/../c", "only at the start"),
            ("x", "", "empty"),
        ] {
            let error = check_link(path, target).unwrap_err().to_string();
            assert!(error.contains(why), "{path} -> {target}: {error}");
            assert!(
                error.contains(&format!("link {path} -> {target}")),
                "{error}"
            );
        }
    }

    fn file(path: &str, kind: FileKind, mode: u32) -> PackageFile {
        PackageFile {
            path: path.into(),
            kind,
            mode,
            size: 0,
        }
    }

    #[test]
    fn entries_below_links_and_duplicates_are_refused() {
        let link = FileKind::Symlink {
            target: "bin".into(),
        };
        let files = [
            file("bin", FileKind::Directory, 0o755),
            file("l", link, 0o777),
            file("l/passwd", FileKind::File, 0o644),
        ];
        assert_eq!(
            check_tree(&files),
            Err(Refusal::BelowNonDirectory {
                path: "l/passwd".into(),
                parent: "l".into()
            })
        );
        let files = [
            file("a", FileKind::File, 0o644),
            file("a", FileKind::File, 0o644),
        ];
        assert_eq!(check_tree(&files), Err(Refusal::Duplicate("a".into())));
    }

    #[test]
    fn scripts_must_exist_and_be_executable() {
        let start = file(START_SCRIPT, FileKind::File, 0o755);
        let stop = file(STOP_SCRIPT, FileKind::File, 0o700);
        assert_eq!(check_scripts(&[start.clone(), stop.clone()]), Ok(()));
        assert_eq!(
            check_scripts(std::slice::from_ref(&start)),
            Err(Refusal::MissingScript(STOP_SCRIPT))
        );
        let health = file(HEALTH_SCRIPT, FileKind::File, 0o644);
        let error = check_scripts(&[start, stop, health]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "scripts/health.sh is not executable (mode 0644): run `chmod +x scripts/health.sh`"
        );
    }

    #[test]
    fn stored_modes_keep_only_the_execute_bit() {
        assert_eq!(stored_mode(&FileKind::File, 0o100700), 0o755);
        assert_eq!(stored_mode(&FileKind::File, 0o600), 0o644);
        assert_eq!(stored_mode(&FileKind::File, 0o664), 0o644);
        assert_eq!(stored_mode(&FileKind::Directory, 0o700), 0o755);
        let file = file("bin/x", FileKind::File, 0o755);
        assert_eq!(file.mode_string(), "-rwxr-xr-x");
    }

    #[test]
    fn mode_strings_show_setuid_setgid_and_sticky() {
        for (mode, shown) in [
            (0o4755, "-rwsr-xr-x"),
            (0o2644, "-rw-r-Sr--"),
            (0o1777, "-rwxrwxrwt"),
            (0o7000, "---S--S--T"),
        ] {
            assert_eq!(file("x", FileKind::File, mode).mode_string(), shown);
        }
    }

    #[test]
    fn names_with_control_characters_and_reserved_names_are_refused() {
        assert_eq!(check_name("bin/tool"), Ok(()));
        assert_eq!(check_name("bin/.harness-x"), Ok(()));
        assert_eq!(
            check_name("a\nb"),
            Err(Refusal::ControlCharacter("a\nb".into()))
        );
        assert_eq!(
            check_name(".harness-start.sh.log"),
            Err(Refusal::Reserved(".harness-start.sh.log".into()))
        );
        assert_eq!(
            check_link("x", "a\tb"),
            Err(Refusal::ControlCharacter("x -> a\tb".into()))
        );
        assert_eq!(check_mode("x", 0o755), Ok(()));
        assert_eq!(
            check_mode("x", 0o104755),
            Err(Refusal::SpecialBits {
                path: "x".into(),
                mode: 0o4755
            })
        );
    }
}
