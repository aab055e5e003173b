//! Printing that survives a reader who went away.
//!
//! `harness up -d | head -3` closes the pipe while harness still has lines to print. Rust
//! ignores SIGPIPE, so the write fails with `EPIPE`, and `println!` would panic on it, halfway
//! through the work, with another exit code. A command's outcome must not depend on whether
//! its output is read: these macros write a line, and the first time a stream cannot be
//! written (a closed pipe, a full disk) they stop writing to it and carry on without a word,
//! as `println!` into a closed pipe does in C programs that ignore SIGPIPE.

use std::fmt;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout could not be written: nobody reads it any more.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// Set once stderr could not be written.
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// Writes `args` and a newline to stdout, unless an earlier write to it failed.
pub fn stdout_line(args: fmt::Arguments<'_>) {
    write_line(&mut io::stdout().lock(), &STDOUT_GONE, args);
}

/// Writes `args` and a newline to stderr, unless an earlier write to it failed.
pub fn stderr_line(args: fmt::Arguments<'_>) {
    // An error that ran out of open files says which limit and how to raise it, whichever
    // path it came by.
    let line = args.to_string();
    let line = harness::limits::explain_message(&line);
    write_line(
        &mut io::stderr().lock(),
        &STDERR_GONE,
        format_args!("{line}"),
    );
}

/// Writes `args` to stderr without a newline (and flushes), unless an earlier write failed.
pub fn stderr_text(args: fmt::Arguments<'_>) {
    if STDERR_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut err = io::stderr().lock();
    if err.write_fmt(args).and_then(|()| err.flush()).is_err() {
        STDERR_GONE.store(true, Ordering::Relaxed);
    }
}

fn write_line(out: &mut impl io::Write, gone: &AtomicBool, args: fmt::Arguments<'_>) {
    if gone.load(Ordering::Relaxed) {
        return;
    }
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if written.is_err() {
        gone.store(true, Ordering::Relaxed);
    }
}

/// `println!` that never panics: see the [module](self).
macro_rules! outln {
    () => {
        $crate::output::stdout_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::stdout_line(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics: see the [module](self).
macro_rules! errln {
    () => {
        $crate::output::stderr_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::stderr_line(format_args!($($arg)*))
    };
}

/// `eprint!` that never panics (and flushes): see the [module](self).
macro_rules! errtext {
    ($($arg:tt)*) => {
        $crate::output::stderr_text(format_args!($($arg)*))
    };
}

pub(crate) use {errln, errtext, outln};
