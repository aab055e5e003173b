//! Where services sit on the network: the WireGuard mesh that joins the test machine and
//! remote hosts, with addresses from the topology's `wireguard_subnet`.
//!
//! A [`Mesh`] starts with the test machine as its first node and takes [`MeshNode`]s (any
//! launcher: `SshLauncher` for a host, [`MeshNode::lab_host`] for a lab host). Each node gets a
//! /32 address from the subnet, a key made in-process ([`PrivateKey`]), and its own interface,
//! named by the mesh's prefix: a kernel WireGuard interface where the module is present,
//! `wireguard-go` otherwise. Every node has every node it reaches as a peer; see `docs/mesh.md`
//! for addressing, relays, revocation, teardown and limits.
//!
//! ```no_run
//! # smol::block_on(async {
//! use harness::lab::Lab;
//! use harness::network::{Mesh, MeshNode};
//! let lab = Lab::builder().network("wan", "10.77.2.0/24").host("edge", &["wan"]).build().await?;
//! let mut mesh = Mesh::builder().subnet("10.88.0.0/16").lab(&lab).start().await?;
//! let addr = mesh.add(MeshNode::lab_host(&lab, "edge").await?).await?;
//! // The test machine reaches `addr` through the tunnel.
//! # let _ = addr;
//! mesh.shutdown().await?;
//! lab.shutdown().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(()) });
//! ```

mod error;
mod iface;
mod janitor;
mod key;
mod mesh;
mod node;
mod plan;
mod shell;
mod subnet;

pub use error::MeshError;
pub use janitor::{MESH_REGISTRY_DIR, mesh_leftovers, sweep_meshes};
pub use key::{KeyError, PrivateKey, PublicKey};
pub use mesh::{DEFAULT_KEEPALIVE, LOCAL_NODE, Mesh, MeshBuilder};
pub use node::MeshNode;
pub use plan::Route;
pub use subnet::{DEFAULT_SUBNET, MeshSubnet};

/// The examples of `docs/mesh.md`, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/mesh.md")]
pub struct MeshDocDoctests;
