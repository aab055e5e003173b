//! The ground floor: what harness asks of the operating system that std does not offer.
//!
//! - [`ProcessIdentity`] tells a process apart from a later one that got the same pid: a pid
//!   and the process's start time, read from `/proc`. [`alive`] says whether a pid runs (a
//!   zombie does not).
//! - [`reserve_space`] sets disk space aside for a file, so that what must still be written
//!   when the disk is full (a warning, an error record) can be.
//!
//! ```
//! use harness::sys::ProcessIdentity;
//!
//! let me = ProcessIdentity::current().expect("this process has a /proc entry");
//! assert!(me.is_alive());
//! ```
//!
//! # Known limits
//!
//! Linux only: identities come from `/proc/PID/stat`, which other systems lack; there every
//! lookup answers `None` (and [`alive`] `false`).

mod process;
mod space;

pub use process::{ProcessIdentity, alive, start_time};
pub use space::reserve_space;
