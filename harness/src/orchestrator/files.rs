//! `files:`: the files a topology puts where a service runs before it starts.
//!
//! The manager stages every file on this machine first, in the run's state directory: a
//! source is copied, a `content` (its placeholders filled) is written. A process's files are
//! staged straight into its own directory (`${dir}`) at their targets; an executor that runs
//! elsewhere sends the staged bytes to the container or host.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use crate::exec::{Command, LaunchError, Launcher as _, LocalLauncher, SshLauncher};
use crate::topology::{FileSource, ServiceConfig, ServiceTarget, SourceLocation};

use super::error::StartFailure;

/// The permission bits of a file given by `content` and no `mode`.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// A file of a service's `files:`, made ready on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// Its `target`, as the topology writes it.
    pub target: String,
    /// Its bytes on this machine, with its permission bits.
    pub local: PathBuf,
    /// Its permission bits.
    pub mode: u32,
    /// Where the topology lists it.
    pub location: SourceLocation,
}

/// The directory of `service` in the run's state directory `state_dir`: a process's `${dir}`,
/// and where the files of any other service are staged.
pub(crate) fn service_dir(state_dir: &Path, service: &str) -> PathBuf {
    state_dir.join("files").join(service)
}

/// Stages the files of `service` (placeholders filled) in `dir`: a process's at their targets
/// below it, any other's by their index. Relative sources resolve against `base_dir`. A file
/// staged before (a restart) is replaced.
pub(crate) fn stage(
    service: &ServiceConfig,
    base_dir: &Path,
    dir: &Path,
) -> Result<Vec<StagedFile>, StartFailure> {
    let mut out = Vec::with_capacity(service.files.len());
    let in_place = matches!(service.target, ServiceTarget::Process(_));
    for (i, file) in service.files.iter().enumerate() {
        let fail = |reason: String| StartFailure::File {
            location: service.location_of(&format!("files[{i}]")).clone(),
            target: file.target.clone(),
            reason,
        };
        let local = if in_place {
            dir.join(&file.target)
        } else {
            dir.join(i.to_string())
        };
        if in_place {
            refuse_links(dir, Path::new(&file.target)).map_err(fail)?;
        }
        let mode = match &file.from {
            FileSource::Content(text) => {
                let mode = file.mode.unwrap_or(DEFAULT_FILE_MODE);
                write_atomically(&local, mode, |out| out.write_all(text.as_bytes()))
                    .map_err(|e| fail(format!("write it: {e}")))?;
                mode
            }
            FileSource::Source(source) => {
                let path = base_dir.join(source);
                let (mut input, source_mode) = open_source(&path).map_err(fail)?;
                let mode = file.mode.unwrap_or(source_mode);
                write_atomically(&local, mode, |out| io::copy(&mut input, out).map(drop))
                    .map_err(|e| fail(format!("copy {}: {e}", path.display())))?;
                mode
            }
        };
        out.push(StagedFile {
            target: file.target.clone(),
            local,
            mode,
            location: service.location_of(&format!("files[{i}]")).clone(),
        });
    }
    Ok(out)
}

/// Opens a `source`: a regular file (or a link to one), with its permission bits.
fn open_source(path: &Path) -> Result<(fs::File, u32), String> {
    use std::os::unix::fs::FileTypeExt as _;
    let metadata = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("source {} does not exist", path.display()),
        _ => format!("source {}: {e}", path.display()),
    })?;
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory: list each file of it")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else {
        Some("not a regular file")
    };
    if let Some(what) = what {
        return Err(format!("source {} is {what}", path.display()));
    }
    let file = fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    Ok((file, metadata.permissions().mode() & 0o7777))
}

/// Fails if a directory on the way from `dir` to `target` is a symbolic link: a service may
/// make links in its own directory, and a file put again on restart must not be written
/// through one to somewhere else.
fn refuse_links(dir: &Path, target: &Path) -> Result<(), String> {
    let mut at = dir.to_path_buf();
    let parts: Vec<Component<'_>> = target.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        if let Ok(meta) = fs::symlink_metadata(&at)
            && meta.file_type().is_symlink()
        {
            return Err(format!(
                "{} is a symbolic link; harness writes a service's files only below its own directory",
                at.display()
            ));
        }
    }
    Ok(())
}

/// Writes `path` through a temporary file beside it, renamed into place once whole, with
/// `mode`; its directories are made first.
fn write_atomically(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".harness-file")
        .tempfile_in(parent)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The path on a remote host of a file whose `target` is `target`, for a service whose working
/// directory there is `working_dir`: an absolute target as it is, a relative one below the
/// working directory, or, without one, as written (the login's home, where commands start).
pub(crate) fn remote_path(target: &str, working_dir: Option<&str>) -> String {
    match working_dir {
        Some(dir) if !target.starts_with('/') => {
            format!("{}/{target}", dir.trim_end_matches('/'))
        }
        _ => target.to_string(),
    }
}

/// Puts `files` on the host `ssh` reaches, relative targets below `working_dir` (see
/// [`remote_path`]), each through a temporary file renamed into place; returns their paths
/// there, for [`remove_over_ssh`]. A file already there is replaced.
pub(crate) async fn put_over_ssh(
    ssh: &SshLauncher<LocalLauncher>,
    files: &[StagedFile],
    working_dir: Option<&str>,
) -> Result<Vec<String>, StartFailure> {
    let paths: Vec<String> = files
        .iter()
        .map(|f| remote_path(&f.target, working_dir))
        .collect();
    let parents: Vec<&str> = paths
        .iter()
        .filter_map(|p| p.rsplit_once('/').map(|(dir, _)| dir))
        .filter(|dir| !dir.is_empty())
        .collect();
    let fail = |file: &StagedFile, e: LaunchError| StartFailure::File {
        location: file.location.clone(),
        target: file.target.clone(),
        reason: e.to_string(),
    };
    if !parents.is_empty() {
        let mkdir = Command::new("mkdir").arg("-p").arg("--").args(parents);
        ssh.run_checked(&mkdir, "make the directories of the service's files")
            .await
            .map_err(|e| fail(&files[0], e))?;
    }
    for (file, path) in files.iter().zip(&paths) {
        ssh.upload(&file.local, path)
            .await
            .map_err(|e| fail(file, e))?;
    }
    Ok(paths)
}

/// Removes what [`put_over_ssh`] put, when the service stops; a failure is logged, as the
/// service itself has stopped.
pub(crate) async fn remove_over_ssh(ssh: &SshLauncher<LocalLauncher>, paths: &[String]) {
    if paths.is_empty() {
        return;
    }
    let rm = Command::new("rm").arg("-f").arg("--").args(paths);
    if let Err(e) = ssh.run_checked(&rm, "remove the service's files").await {
        tracing::warn!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::TopologyConfig;

    fn service(yaml: &str) -> ServiceConfig {
        let topology = TopologyConfig::from_yaml("files.yaml", yaml).unwrap();
        topology.services["app"].clone()
    }

    #[test]
    fn a_process_gets_its_files_at_their_targets_with_their_modes() {
        let base = tempfile::tempdir().unwrap();
        fs::write(base.path().join("seed.txt"), "seed\n").unwrap();
        fs::set_permissions(
            base.path().join("seed.txt"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let app = service(
            "services:\n  app:\n    target: { process: { binary: /bin/true } }\n    files:\n      \
             - { source: seed.txt, target: data/seed.txt }\n      \
             - { content: \"a = 1\\n\", target: conf/app.toml, mode: \"0600\" }\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let staged = stage(&app, base.path(), dir.path()).unwrap();
        let seed = dir.path().join("data/seed.txt");
        let conf = dir.path().join("conf/app.toml");
        assert_eq!(fs::read_to_string(&seed).unwrap(), "seed\n");
        assert_eq!(fs::read_to_string(&conf).unwrap(), "a = 1\n");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode(&seed), mode(&conf)), (0o640, 0o600));
        assert_eq!(staged[1].local, conf);
        assert_eq!(staged[1].mode, 0o600);
        // Staged again on a restart: the file is replaced, not appended to.
        stage(&app, base.path(), dir.path()).unwrap();
        assert_eq!(fs::read_to_string(&conf).unwrap(), "a = 1\n");
        let names: Vec<_> = fs::read_dir(dir.path().join("conf")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left beside it");
    }

    #[test]
    fn a_missing_or_special_source_is_named_with_its_line() {
        let base = tempfile::tempdir().unwrap();
        fs::create_dir(base.path().join("conf")).unwrap();
        for (source, says) in [
            ("nope.toml", "does not exist"),
            ("conf", "is a directory"),
            ("/dev/zero", "is a device"),
        ] {
            let app = service(&format!(
                "services:\n  app:\n    target: {{ process: {{ binary: /bin/true }} }}\n    \
                 files:\n      - {{ source: {source}, target: x }}\n"
            ));
            let dir = tempfile::tempdir().unwrap();
            let error = stage(&app, base.path(), dir.path())
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{source}: {error}");
            assert!(error.contains("files.yaml:5:9"), "{error}");
            assert!(!dir.path().join("x").exists());
        }
    }

    #[test]
    fn a_link_the_service_made_in_its_directory_is_not_written_through() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("conf")).unwrap();
        let app = service(
            "services:\n  app:\n    target: { process: { binary: /bin/true } }\n    files:\n      \
             - { content: x, target: conf/app.toml }\n",
        );
        let error = stage(&app, dir.path(), dir.path()).unwrap_err().to_string();
        assert!(error.contains("symbolic link"), "{error}");
        assert!(!outside.path().join("app.toml").exists());
    }

    #[test]
    fn a_container_or_host_gets_its_files_staged_by_index() {
        let app = service(
            "services:\n  app:\n    target: { docker: { image: app:1 } }\n    files:\n      \
             - { content: x, target: /etc/app.toml }\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let staged = stage(&app, dir.path(), dir.path()).unwrap();
        assert_eq!(staged[0].local, dir.path().join("0"));
        assert_eq!(staged[0].mode, DEFAULT_FILE_MODE);
        assert_eq!(remote_path("a/b", Some("/srv/")), "/srv/a/b");
        assert_eq!(remote_path("/etc/x", Some("/srv")), "/etc/x");
        assert_eq!(remote_path("a", None), "a");
    }
}
