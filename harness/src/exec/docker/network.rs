//! `DockerNetwork`: a user-defined bridge network that containers share and find each other
//! on by name.

use crate::exec::docker::cli::{self, Removal, docker, unique_name};
use crate::exec::error::LaunchError;
use crate::exec::launcher::Launcher;

/// A user-defined Docker network, removed when dropped.
///
/// Containers on it reach each other by container name and by network alias
/// ([`DockerContainer::with_network_alias`](crate::exec::DockerContainer::with_network_alias)),
/// which the default bridge does not offer. It carries the ownership labels, like containers.
///
/// ```no_run
/// # smol::block_on(async {
/// use harness::exec::{DockerContainer, DockerNetwork, LocalLauncher};
/// let net = DockerNetwork::create(&LocalLauncher).await?;
/// let db = DockerContainer::new("my-db:dev")
///     .with_network(net.name())
///     .with_network_alias("db");
/// # let _ = db;
/// net.remove().await?;
/// # Ok::<(), harness::exec::LaunchError>(()) });
/// ```
#[must_use = "dropping a DockerNetwork removes it"]
pub struct DockerNetwork<L: Launcher> {
    name: String,
    removal: Removal<L>,
}

impl<L: Launcher> DockerNetwork<L> {
    /// Creates a network with a unique name `harness-<random>`.
    pub async fn create(launcher: &L) -> Result<Self, LaunchError> {
        Self::create_named(launcher, unique_name("harness")).await
    }

    /// Creates a network called `name`.
    pub async fn create_named(launcher: &L, name: impl Into<String>) -> Result<Self, LaunchError> {
        Self::create_labelled(launcher, name, []).await
    }

    /// Creates a network called `name` that carries `labels` beside the ownership labels.
    pub async fn create_labelled<'a>(
        launcher: &L,
        name: impl Into<String>,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, LaunchError> {
        let name = name.into();
        let mut args = vec!["network".to_string(), "create".into()];
        args.extend(cli::label_args(labels));
        args.push(name.clone());
        cli::run(launcher, args, &format!("create network `{name}`")).await?;
        let removal = Removal::new(
            launcher.clone(),
            docker(["network", "rm", name.as_str()]),
            format!("remove network `{name}`"),
        );
        Ok(DockerNetwork { name, removal })
    }

    /// The network's name, for `--network`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Removes the network and waits until it is gone. Containers still attached to it make
    /// this fail; remove them first.
    pub async fn remove(mut self) -> Result<(), LaunchError> {
        self.removal.run().await.map(|_| ())
    }
}

impl<L: Launcher> std::fmt::Debug for DockerNetwork<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerNetwork")
            .field("name", &self.name)
            .finish()
    }
}
