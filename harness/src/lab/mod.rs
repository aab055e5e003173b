//! Emulated hosts on one machine, for tests: a [`Lab`] of hosts that each have a network
//! namespace, PID, mount and UTS namespaces of their own and an sshd as PID 1, on named
//! networks (say a LAN, and a WAN that LAN hosts cannot route to).
//!
//! ```no_run
//! # smol::block_on(async {
//! use harness::lab::Lab;
//! let lab = Lab::builder()
//!     .network("lan", "10.77.1.0/24")
//!     .host("a", &["lan"])
//!     .host("b", &["lan"])
//!     .build()
//!     .await?;
//! let ssh = lab.host("a").launcher().await?; // an SshLauncher, as root
//! # drop(ssh);
//! lab.shutdown().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(()) });
//! ```
//!
//! See `docs/lab.md` for the layout, what a lab needs (root, iproute2, util-linux's
//! `unshare`, openssh-server) and its limits.

mod builder;
mod error;
mod host;
mod ip;
mod janitor;
mod running;
mod subnet;

pub use builder::{AUTO_SUBNET, LabBuilder};
pub use error::LabError;
pub use janitor::{REGISTRY_DIR, leftovers, sweep};
/// Owner records and random prefixes, shared with the mesh's janitor.
pub(crate) use janitor::{owner_alive, owner_token, random_u16};
pub use running::{Lab, LabHost, LabNetwork};

/// The examples of `docs/lab.md`, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/lab.md")]
pub struct LabDocDoctests;
