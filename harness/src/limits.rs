//! The process limits that a topology of many services reaches first: open files.
//!
//! Every service costs harness a few descriptors (its pipes, its pidfd, the socket that found
//! its free port, health-check connections), so the usual soft limit of 1024 open files is
//! reached at about 330 process services. The hard limit is usually far higher (524288 on
//! current systemd distributions): [`raise_open_files_limit`] raises the soft limit to it, as
//! the `harness` command, its detached supervisor and the test runner do when they start.
//! When even the hard limit is reached, [`explain_io_error`] says so, with the limit's value
//! and how to raise it.
//!
//! Services inherit the raised limit, as they do under nextest and systemd's `LimitNOFILE=`.
//!
//! ```
//! let limit = harness::limits::raise_open_files_limit().unwrap();
//! assert!(limit.hard.is_none_or(|hard| limit.soft == hard));
//! ```

use std::io;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The open-files limits (`RLIMIT_NOFILE`) of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// The soft limit: the most descriptors the process may have open.
    pub soft: u64,
    /// The hard limit, to which the process may raise its soft limit; `None` when unlimited.
    pub hard: Option<u64>,
}

/// The limit the kernel puts on a soft limit when the hard one is unlimited
/// (`/proc/sys/fs/nr_open`, 1048576 by default).
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

/// This process's open-files limits now.
pub fn open_files_limit() -> OpenFilesLimit {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    OpenFilesLimit {
        soft: current.unwrap_or(u64::MAX),
        hard: maximum,
    }
}

/// Raises this process's soft open-files limit to its hard limit (to the kernel's
/// `fs.nr_open` when the hard limit is unlimited), and returns the limits that result. A soft
/// limit that is already as high is left alone.
pub fn raise_open_files_limit() -> io::Result<OpenFilesLimit> {
    let limit = open_files_limit();
    let target = limit.hard.unwrap_or_else(nr_open);
    if limit.soft >= target {
        return Ok(limit);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: limit.hard,
        },
    )?;
    Ok(open_files_limit())
}

/// `error` as a fragment for a message, with what to do about it when it is "too many open
/// files": for this process (`EMFILE`), its limit and how to raise it; for the whole system
/// (`ENFILE`), the kernel setting. Other errors are shown as they are.
pub fn explain_io_error(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EMFILE) => format!("{error}: {}", emfile_hint(open_files_limit())),
        Some(libc::ENFILE) => format!(
            "{error}: the system's limit of open files is reached (`sysctl fs.file-max`); close \
             programs or raise it, and run harness again"
        ),
        _ => error.to_string(),
    }
}

/// `message`, with what [`explain_io_error`] adds to "Too many open files" when it says that
/// but not yet what to do: for a message made from an `io::Error` on a path that did not
/// explain it.
pub fn explain_message(message: &str) -> std::borrow::Cow<'_, str> {
    let emfile = io::Error::from_raw_os_error(libc::EMFILE).to_string();
    if message.contains(&emfile) && !message.contains("RLIMIT_NOFILE") {
        return format!("{message}: {}", emfile_hint(open_files_limit())).into();
    }
    message.into()
}

fn emfile_hint(limit: OpenFilesLimit) -> String {
    match limit.hard {
        Some(hard) if limit.soft < hard => format!(
            "harness reached its limit of {} open files (RLIMIT_NOFILE, whose hard limit is \
             {hard}): raise it with `ulimit -n {hard}` and run harness again",
            limit.soft
        ),
        Some(hard) => format!(
            "harness reached its limit of {} open files (RLIMIT_NOFILE, whose hard limit is \
             {hard}): raise the hard limit (`ulimit -Hn`, LimitNOFILE= under systemd, or \
             /etc/security/limits.conf) and run harness again",
            limit.soft
        ),
        None => format!(
            "harness reached its limit of {} open files (RLIMIT_NOFILE, whose hard limit is \
             unlimited): raise it with `ulimit -n` and run harness again",
            limit.soft
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_says_which_limit_and_how_to_raise_it() {
        let error = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(explain_io_error(&error).starts_with("Too many open files (os error 24): "));
        assert_eq!(
            emfile_hint(OpenFilesLimit {
                soft: 1024,
                hard: Some(4096)
            }),
            "harness reached its limit of 1024 open files (RLIMIT_NOFILE, whose hard limit is \
             4096): raise it with `ulimit -n 4096` and run harness again"
        );
        let other = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(explain_io_error(&other), other.to_string());
        // A message made without it gets the hint once.
        let bare = format!("write /x/y.env: {error}");
        let explained = explain_message(&bare).into_owned();
        assert!(explained.contains("RLIMIT_NOFILE"), "{explained}");
        assert_eq!(explain_message(&explained), explained);
        assert_eq!(explain_message("all is well"), "all is well");
    }

    #[test]
    fn the_hint_names_the_hard_limit_or_the_system_limit_when_raising_the_soft_one_is_not_enough() {
        let at_hard = emfile_hint(OpenFilesLimit {
            soft: 4096,
            hard: Some(4096),
        });
        assert!(
            at_hard.contains("whose hard limit is 4096): raise the hard limit (`ulimit -Hn`"),
            "{at_hard}"
        );
        let unlimited = emfile_hint(OpenFilesLimit {
            soft: 1 << 20,
            hard: None,
        });
        assert!(
            unlimited.contains("1048576 open files (RLIMIT_NOFILE, whose hard limit is unlimited)"),
            "{unlimited}"
        );
        let system = explain_io_error(&io::Error::from_raw_os_error(libc::ENFILE));
        assert!(
            system.contains("the system's limit of open files is reached (`sysctl fs.file-max`)"),
            "{system}"
        );
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one_and_the_hard_one_unchanged() {
        let before = open_files_limit();
        let after = raise_open_files_limit().unwrap();
        assert_eq!(after.hard, before.hard);
        assert_eq!(
            after.soft,
            before.hard.unwrap_or_else(nr_open).max(before.soft)
        );
        assert_eq!(
            raise_open_files_limit().unwrap(),
            after,
            "raising twice changes nothing"
        );
    }
}
