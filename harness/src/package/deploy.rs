//! Deploying a package to hosts: versioned releases, an atomic switch of the live one, and
//! rollback when the new release does not start or become healthy.
//!
//! On the host, a service lives in `<root>/<service>/` (root `/opt/harness` by default):
//!
//! ```text
//! releases/<name>-<version>/   one directory per release: the package, extracted
//! current -> releases/...      the live release (a relative link, switched by rename)
//! previous -> releases/...     the release before it, kept for rollback
//! env                          the env file start.sh gets (PORT, <DEP>_ADDR, the service's env)
//! .env.previous                the env file of the previous release, for rollback
//! ```
//!
//! A release directory is also the release's `WORK_DIR`: the package format calls `start.sh
//! WORK_DIR ENV_FILE` and the scripts run `./bin/...` and write `service.pid` there, so each
//! release keeps its own pid file, and the previous release's `stop.sh` stops exactly what its
//! `start.sh` started, even after `current` moved on.
//!
//! See `docs/packages.md` for the steps, what a failure leaves, and the limits.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::exec::{Command, LaunchError, Launcher, LocalLauncher, ProcessHandle, SshBuilder};
use crate::topology::render_env_file;

use super::build::PackageBuilder;
use super::deploy_error::DeployError;
use super::deploy_remote::{EnvMove, Probe, Remote};
use super::deploy_switch::{Activation, Limits, activate};
use super::error::PackageError;
use super::name::{install_dir_name, validate_name};
use super::rules::START_SCRIPT;
use super::verify::{PackageInfo, Verifier};

/// Where services are installed unless [`Deploy::with_root`] says otherwise.
pub const DEFAULT_ROOT: &str = "/opt/harness";

/// How long a new release may take to become healthy, by default.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `start.sh` and `stop.sh` may run, by default.
pub const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Upload progress is reported when this much time has passed since the last report, or
/// [`UPLOAD_REPORT_BYTES`] more bytes were sent.
const UPLOAD_REPORT_EVERY: Duration = Duration::from_millis(100);
const UPLOAD_REPORT_BYTES: u64 = 4 << 20;

/// The size of each read of the package while it streams.
const CHUNK: usize = 256 << 10;

/// The programs the deployment itself runs on a host, checked with the package's
/// `system_requires` before anything is changed.
const HOST_TOOLS: &[&str] = &[
    "tar",
    "gzip",
    "sha256sum",
    "tee",
    "mkfifo",
    "mktemp",
    "readlink",
    "ln",
    "mv",
    "find",
    "sort",
    "cut",
    "head",
    "wc",
];

/// What [`Deploy::with_progress`] calls.
pub type ProgressFn = Arc<dyn Fn(&DeployProgress) + Send + Sync>;

/// A host to deploy to: a name for messages and the SSH options to reach it.
#[derive(Debug, Clone)]
pub struct DeployHost {
    /// The host as messages name it (`root@10.0.0.2:22`, `web-1`).
    pub name: String,
    /// How to connect.
    pub ssh: SshBuilder,
}

impl DeployHost {
    /// A host named `name`, reached with `ssh`.
    pub fn new(name: impl Into<String>, ssh: SshBuilder) -> Self {
        DeployHost {
            name: name.into(),
            ssh,
        }
    }

    /// A host from `[USER@]HOST[:PORT]`; the user defaults to `$USER` (root if unset).
    ///
    /// ```
    /// let host = harness::package::DeployHost::parse("deploy@10.0.0.2:2222").unwrap();
    /// assert_eq!(host.name, "deploy@10.0.0.2:2222");
    /// assert!(harness::package::DeployHost::parse("@h").is_err());
    /// ```
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (user, host) = match spec.split_once('@') {
            Some((user, host)) => (user.to_string(), host),
            None => (
                std::env::var("USER").unwrap_or_else(|_| "root".into()),
                spec,
            ),
        };
        if user.is_empty() || host.is_empty() || host.contains('@') {
            return Err(format!("`{spec}` is not a host: write [USER@]HOST[:PORT]"));
        }
        Ok(DeployHost {
            name: spec.to_string(),
            ssh: crate::exec::SshLauncher::builder(host, user),
        })
    }
}

/// A step of a deployment, as progress reports name it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// The package was checked here (reported once it passed, with its name, version and
    /// sha256).
    Verify,
    /// Connecting to the host.
    Connect,
    /// Reading the service's state on the host and checking `system_requires`.
    Check,
    /// Streaming the package: bytes sent of the total.
    Upload {
        /// Bytes sent so far.
        sent: u64,
        /// The package's size.
        total: u64,
    },
    /// Every byte sent; the host finishes extracting and checks the sha256.
    Extract,
    /// Running the live release's `stop.sh`.
    Stop,
    /// Switching `current` to the new release.
    Switch,
    /// Running the new release's `start.sh`.
    Start,
    /// Waiting for `health.sh`.
    Health,
    /// Deployed: the new release is live and healthy.
    Done,
    /// The same package (same sha256) is already live and healthy: nothing was done.
    Skipped,
    /// The new release failed; restoring the previous one.
    RollingBack,
    /// The new release failed and the previous one is live again.
    RolledBack,
    /// The deployment failed.
    Failed,
}

impl Stage {
    /// The stage's name, as `deployment_progress` events carry it.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Verify => "verify",
            Stage::Connect => "connect",
            Stage::Check => "check",
            Stage::Upload { .. } => "upload",
            Stage::Extract => "extract",
            Stage::Stop => "stop",
            Stage::Switch => "switch",
            Stage::Start => "start",
            Stage::Health => "health",
            Stage::Done => "done",
            Stage::Skipped => "skipped",
            Stage::RollingBack => "rolling_back",
            Stage::RolledBack => "rolled_back",
            Stage::Failed => "failed",
        }
    }

    /// How far along the whole deployment this stage is, from 0 to 100. The upload takes the
    /// span from 10 to 80, in proportion to the bytes sent.
    pub fn percent(&self) -> u8 {
        match self {
            Stage::Verify => 0,
            Stage::Connect => 5,
            Stage::Check => 8,
            Stage::Upload { sent, total } => {
                let part = if *total == 0 {
                    70
                } else {
                    (u128::from(*sent) * 70 / u128::from(*total)).min(70) as u8
                };
                10 + part
            }
            Stage::Extract => 82,
            Stage::Stop => 85,
            Stage::Switch => 88,
            Stage::Start => 90,
            Stage::Health => 95,
            Stage::RollingBack => 95,
            Stage::Done | Stage::Skipped | Stage::RolledBack | Stage::Failed => 100,
        }
    }

    /// Whether this stage ends the deployment.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Stage::Done | Stage::Skipped | Stage::RolledBack | Stage::Failed
        )
    }
}

/// One progress report of a deployment to one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployProgress {
    /// The host.
    pub host: String,
    /// The service.
    pub service: String,
    /// The step.
    pub stage: Stage,
    /// A line for people.
    pub message: String,
}

/// What a deployment to one host did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeployOutcome {
    /// The new release is live; `replaced` is the release it replaced (now `previous`).
    Deployed {
        /// The release that was live before, if any.
        replaced: Option<String>,
    },
    /// The same package was already live and healthy.
    AlreadyDeployed,
    /// The same package was live but not healthy; it was started again.
    Restarted,
}

/// The result of deploying to one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployReport {
    /// The host.
    pub host: String,
    /// The service.
    pub service: String,
    /// The package's name.
    pub name: String,
    /// The package's version.
    pub version: String,
    /// The live release's directory name (`name-version`).
    pub release: String,
    /// The live release's directory on the host (its `WORK_DIR`).
    pub path: String,
    /// The package's sha256.
    pub sha256: String,
    /// What was done.
    pub outcome: DeployOutcome,
    /// Bytes of package sent (0 when nothing had to be sent).
    pub bytes_sent: u64,
    /// How long the deployment to this host took.
    pub elapsed: Duration,
}

impl fmt::Display for DeployOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeployOutcome::Deployed { replaced: Some(r) } => write!(f, "deployed (replaced {r})"),
            DeployOutcome::Deployed { replaced: None } => f.write_str("deployed"),
            DeployOutcome::AlreadyDeployed => f.write_str("already deployed"),
            DeployOutcome::Restarted => f.write_str("already deployed, started again"),
        }
    }
}

/// Deploys one package to hosts: verify here, connect, check the host, stream the package,
/// write the env file, stop the live release, switch, start, wait until healthy; roll back when
/// the new release fails.
///
/// ```no_run
/// # smol::block_on(async {
/// use harness::package::{Deploy, DeployHost};
/// let deploy = Deploy::new("load-generator-0.1.0.tar.gz")
///     .with_env("TARGET_ADDR", "10.0.0.1:7000")
///     .with_progress(|p| eprintln!("{}: {} {}", p.host, p.stage.name(), p.message));
/// let hosts = [DeployHost::parse("root@10.0.0.2")?, DeployHost::parse("root@10.0.0.3")?];
/// for result in deploy.to_hosts(&hosts).await? {
///     match result {
///         Ok(report) => println!("{}: {}", report.host, report.outcome),
///         Err(e) => eprintln!("failed to {e}"),
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(()) });
/// ```
#[derive(Clone)]
#[must_use = "a Deploy does nothing until it is sent somewhere"]
pub struct Deploy {
    package: PathBuf,
    service: Option<String>,
    root: String,
    port: Option<u16>,
    env: Vec<(String, String)>,
    health_timeout: Duration,
    script_timeout: Duration,
    max_size: Option<u64>,
    progress: Option<ProgressFn>,
}

impl fmt::Debug for Deploy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deploy")
            .field("package", &self.package)
            .field("service", &self.service)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// A package verified (and, from a directory, built) once for every host.
pub(crate) struct Prepared {
    info: PackageInfo,
    service: String,
    env_text: String,
    /// The temporary directory holding a package built from a directory.
    _built: Option<tempfile::TempDir>,
}

impl Deploy {
    /// Deploys the package archive, or the package directory (built first), at `package`.
    pub fn new(package: impl AsRef<Path>) -> Self {
        Deploy {
            package: package.as_ref().to_path_buf(),
            service: None,
            root: DEFAULT_ROOT.to_string(),
            port: None,
            env: Vec::new(),
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            script_timeout: DEFAULT_SCRIPT_TIMEOUT,
            max_size: None,
            progress: None,
        }
    }

    /// The service's name on the host (its directory under the root); the package's name by
    /// default.
    pub fn with_service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// Installs under `root` instead of [`DEFAULT_ROOT`].
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// Sets `PORT` in the env file (the manifest's `port` by default).
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets `<NAME>_ADDR=addr` in the env file for the dependency `name` (upper case, `-`
    /// becomes `_`), as topologies do.
    pub fn with_dependency(self, name: &str, addr: impl fmt::Display) -> Self {
        let var = format!("{}_ADDR", name.to_ascii_uppercase().replace('-', "_"));
        self.with_env(var, addr.to_string())
    }

    /// Sets a variable in the env file.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets every variable of `vars` in the env file.
    pub fn with_envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// How long the new release may take to become healthy ([`DEFAULT_HEALTH_TIMEOUT`]).
    pub fn with_health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// How long `start.sh` and `stop.sh` may each run ([`DEFAULT_SCRIPT_TIMEOUT`]).
    pub fn with_script_timeout(mut self, timeout: Duration) -> Self {
        self.script_timeout = timeout;
        self
    }

    /// Refuses packages with more content than `bytes` (see [`Verifier::with_max_size`]).
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// Calls `report` at every step of every host's deployment.
    pub fn with_progress(
        mut self,
        report: impl Fn(&DeployProgress) + Send + Sync + 'static,
    ) -> Self {
        self.progress = Some(Arc::new(report));
        self
    }

    /// Deploys to every host at once (one connection and one stream each) and returns each
    /// host's result in the order given. The package is verified once: a package that is
    /// refused (or an invalid option) is the outer error, and no host was touched.
    pub async fn to_hosts(
        &self,
        hosts: &[DeployHost],
    ) -> Result<Vec<Result<DeployReport, DeployError>>, DeployError> {
        let prepared = self.prepare()?;
        // One service on one host is deployed by one deployment at a time: two at once would
        // sweep each other's temporary directories and fight over the links.
        let mut names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(DeployError::Invalid {
                what: format!("{} to several hosts", prepared.service),
                reason: format!("host `{}` is named twice", twice[0]),
            });
        }
        // One task per host on an executor of our own, driven by this future: the hosts
        // proceed at once without needing the caller's runtime.
        let executor = async_executor::Executor::new();
        let tasks: Vec<_> = hosts
            .iter()
            .map(|host| executor.spawn(self.connect_and_run(&prepared, host)))
            .collect();
        Ok(executor
            .run(async {
                let mut results = Vec::with_capacity(tasks.len());
                for task in tasks {
                    results.push(task.await);
                }
                results
            })
            .await)
    }

    /// Deploys to one host, connecting to it first.
    pub async fn to_host(&self, host: &DeployHost) -> Result<DeployReport, DeployError> {
        let prepared = self.prepare()?;
        self.connect_and_run(&prepared, host).await
    }

    /// Deploys through a launcher that is already connected (an `SshLauncher`, or a
    /// `LocalLauncher` to deploy on this machine); `host` names it in reports.
    pub async fn on<L: Launcher>(
        &self,
        launcher: &L,
        host: &str,
    ) -> Result<DeployReport, DeployError> {
        let prepared = self.prepare()?;
        self.report_verified(&prepared, host);
        self.run(&prepared, launcher, host).await
    }

    fn report_verified(&self, p: &Prepared, host: &str) {
        let m = &p.info.manifest;
        let message = format!(
            "verified {} {} ({} bytes, sha256 {})",
            m.name, m.version, p.info.size, p.info.sha256
        );
        self.report(host, &p.service, Stage::Verify, &message);
    }

    async fn connect_and_run(
        &self,
        prepared: &Prepared,
        host: &DeployHost,
    ) -> Result<DeployReport, DeployError> {
        let service = &prepared.service;
        self.report_verified(prepared, &host.name);
        self.report(&host.name, service, Stage::Connect, "connecting");
        let ssh = match host.ssh.clone().connect(LocalLauncher).await {
            Ok(ssh) => ssh,
            Err(source) => {
                let e = DeployError::Connect {
                    host: host.name.clone(),
                    service: service.clone(),
                    source: Box::new(source),
                };
                self.report(&host.name, service, Stage::Failed, &e.to_string());
                return Err(e);
            }
        };
        self.run(prepared, &ssh, &host.name).await
    }

    /// Verifies the package (building it first from a directory) and checks the options.
    pub(crate) fn prepare(&self) -> Result<Prepared, DeployError> {
        let mut verifier = Verifier::new();
        if let Some(max) = self.max_size {
            verifier = verifier.with_max_size(max);
        }
        let (archive, built) = if self.package.is_dir() {
            let tmp = tempfile::Builder::new()
                .prefix("harness-deploy")
                .tempdir()
                .map_err(PackageError::io(
                    "create a directory for the package",
                    std::env::temp_dir(),
                ))?;
            let out = tmp.path().join("package.tar.gz");
            let mut builder = PackageBuilder::new(&self.package);
            if let Some(max) = self.max_size {
                builder = builder.with_max_size(max);
            }
            builder.build(&out)?;
            (out, Some(tmp))
        } else {
            (self.package.clone(), None)
        };
        let info = verifier.verify(&archive)?;
        let service = self
            .service
            .clone()
            .unwrap_or_else(|| info.manifest.name.clone());
        let what = format!("{} {}", info.manifest.name, info.manifest.version);
        validate_name(&service).map_err(|reason| DeployError::Invalid {
            what: what.clone(),
            reason: format!("invalid service name `{service}`: {reason}"),
        })?;
        if !self.root.starts_with('/') {
            return Err(DeployError::Invalid {
                what,
                reason: format!("the root `{}` is not an absolute path", self.root),
            });
        }
        let mut vars: Vec<(String, String)> = Vec::new();
        if let Some(port) = self.port.or(info.manifest.port) {
            vars.push(("PORT".into(), port.to_string()));
        }
        for (k, v) in &self.env {
            vars.retain(|(name, _)| name != k);
            vars.push((k.clone(), v.clone()));
        }
        let env_text = render_env_file(vars).map_err(|e| DeployError::Invalid {
            what,
            reason: format!("write the env file: {e}"),
        })?;
        Ok(Prepared {
            info,
            service,
            env_text,
            _built: built,
        })
    }

    fn report(&self, host: &str, service: &str, stage: Stage, message: &str) {
        if let Some(report) = &self.progress {
            report(&DeployProgress {
                host: host.to_string(),
                service: service.to_string(),
                stage,
                message: message.to_string(),
            });
        }
    }

    /// The deployment proper, on a connected launcher.
    pub(crate) async fn run<L: Launcher>(
        &self,
        p: &Prepared,
        launcher: &L,
        host: &str,
    ) -> Result<DeployReport, DeployError> {
        let result = self.run_inner(p, launcher, host).await;
        match &result {
            Ok(r) => {
                let stage = if r.outcome == DeployOutcome::AlreadyDeployed {
                    Stage::Skipped
                } else {
                    Stage::Done
                };
                self.report(
                    host,
                    &p.service,
                    stage,
                    &format!("{}: {}", r.release, r.outcome),
                );
            }
            Err(e @ DeployError::RolledBack { .. }) => {
                self.report(host, &p.service, Stage::RolledBack, &e.to_string())
            }
            Err(e) => self.report(host, &p.service, Stage::Failed, &e.to_string()),
        }
        result
    }

    async fn run_inner<L: Launcher>(
        &self,
        p: &Prepared,
        launcher: &L,
        host: &str,
    ) -> Result<DeployReport, DeployError> {
        let started = Instant::now();
        let service = p.service.as_str();
        let manifest = &p.info.manifest;
        let sha = p.info.sha256.as_str();
        let remote = Remote {
            launcher,
            dir: format!("{}/{service}", self.root.trim_end_matches('/')),
        };
        let step = |step: &str| {
            let step = step.to_string();
            move |reason: String| DeployError::Step {
                host: host.to_string(),
                service: service.to_string(),
                step,
                reason,
            }
        };
        let lost = |doing: &str| {
            let doing = doing.to_string();
            move |e: LaunchError| DeployError::Step {
                host: host.to_string(),
                service: service.to_string(),
                step: doing,
                reason: e.to_string(),
            }
        };
        let report = |stage: Stage, message: String| self.report(host, service, stage, &message);
        let done = |release: &str, outcome: DeployOutcome, bytes_sent: u64| DeployReport {
            host: host.to_string(),
            service: service.to_string(),
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            release: release.to_string(),
            path: format!("{}/releases/{release}", remote.dir),
            sha256: sha.to_string(),
            outcome,
            bytes_sent,
            elapsed: started.elapsed(),
        };

        report(
            Stage::Check,
            format!("checking {} and the system requirements", remote.dir),
        );
        let mut requires: Vec<String> = HOST_TOOLS.iter().map(|t| t.to_string()).collect();
        requires.extend(manifest.system_requires.iter().cloned());
        let probe = remote
            .probe(&requires)
            .await
            .map_err(lost("inspect the service directory"))?;
        if !probe.missing.is_empty() {
            return Err(DeployError::MissingRequirements {
                host: host.to_string(),
                service: service.to_string(),
                missing: probe.missing,
            });
        }

        // The same package already live: healthy means nothing to do.
        if let Some(current) = &probe.current
            && probe.sha_of(current) == Some(sha)
        {
            let check = remote
                .wait_healthy(current, Duration::from_secs(1))
                .await
                .map_err(lost("check the live release's health"))?;
            if check.ok {
                return Ok(done(current, DeployOutcome::AlreadyDeployed, 0));
            }
            report(
                Stage::Start,
                format!("{current} is live but not healthy: starting it again"),
            );
            let start = remote
                .script(current, START_SCRIPT, self.script_timeout)
                .await
                .map_err(lost("start the live release again"))?;
            if !start.ok {
                return Err(step("start the live release again")(format!(
                    "start.sh failed:\n{}",
                    start.tail
                )));
            }
            report(
                Stage::Health,
                format!("waiting for {current} to become healthy"),
            );
            let health = remote
                .wait_healthy(current, self.health_timeout)
                .await
                .map_err(lost("wait for the live release to become healthy"))?;
            if !health.ok {
                return Err(step("start the live release again")(health.tail));
            }
            return Ok(done(current, DeployOutcome::Restarted, 0));
        }

        // The release's directory: `name-version`, unless that is the live release (the same
        // version built again), which must stay untouched until the switch.
        let base = install_dir_name(&manifest.name, &manifest.version);
        let release = if probe.current.as_deref() == Some(base.as_str()) {
            format!("{base}.{}", &sha[..12])
        } else {
            base
        };
        let reused = probe.sha_of(&release) == Some(sha);
        let mut bytes_sent = 0;
        if reused {
            report(
                Stage::Extract,
                format!("{release} is already on the host with the same sha256: not sent again"),
            );
        } else {
            bytes_sent = self.upload(&remote, p, host, &release).await?;
        }

        let env = remote
            .write_env(&p.env_text)
            .await
            .map_err(lost("write the env file"))?;
        if !env.ok {
            if !reused {
                let _ = remote.prune(&keep_of(&probe), false).await;
            }
            return Err(step("write the env file")(env.tail));
        }

        let activation = Activation {
            new: &release,
            old: probe.current.as_deref(),
            previous_before: probe.previous.as_deref(),
            remove_new_on_failure: !reused,
            existed: probe.exists,
            env: EnvMove::Next,
        };
        self.activate(&remote, &activation, host, service).await?;

        let mut keep = vec![release.as_str()];
        keep.extend(probe.current.as_deref());
        let _ = remote.prune(&keep, false).await;
        Ok(done(
            &release,
            DeployOutcome::Deployed {
                replaced: probe.current.clone(),
            },
            bytes_sent,
        ))
    }

    /// Streams the package into `releases/<release>`; returns the bytes sent.
    async fn upload<L: Launcher>(
        &self,
        remote: &Remote<'_, L>,
        p: &Prepared,
        host: &str,
        release: &str,
    ) -> Result<u64, DeployError> {
        let service = p.service.as_str();
        let total = p.info.size;
        let fail = |reason: String| DeployError::Step {
            host: host.to_string(),
            service: service.to_string(),
            step: format!("upload {} ({total} bytes)", p.info.path.display()),
            reason,
        };
        self.report(
            host,
            service,
            Stage::Upload { sent: 0, total },
            &format!("sending {release}"),
        );
        let expected = super::listing::expected(&p.info);
        let script =
            remote.upload_script(release, &p.info.sha256, &super::listing::digest(&expected));
        let cmd = Command::new("sh").arg("-c").arg(script).piped_stdin();
        let mut process = remote
            .launcher
            .spawn(&cmd)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let events = process
            .take_events()
            .expect("a fresh handle has its events");
        let mut stdin = process.take_stdin().expect("stdin was asked for");
        let file = std::fs::File::open(&p.info.path).map_err(|e| fail(e.to_string()))?;
        let mut source = blocking::Unblock::with_capacity(CHUNK, file);
        let mut sent = 0u64;
        let copied: io::Result<()> = async {
            let stdin = &mut stdin;
            let mut buf = vec![0u8; CHUNK];
            let (mut last, mut last_sent) = (Instant::now(), 0);
            loop {
                let n = source.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                stdin.write_all(&buf[..n]).await?;
                sent += n as u64;
                if last.elapsed() >= UPLOAD_REPORT_EVERY || sent - last_sent >= UPLOAD_REPORT_BYTES
                {
                    (last, last_sent) = (Instant::now(), sent);
                    self.report(host, service, Stage::Upload { sent, total }, "sending");
                }
            }
            stdin.close().await
        }
        .await;
        drop(stdin);
        self.report(
            host,
            service,
            Stage::Upload { sent, total },
            &format!("sent {sent} of {total} bytes"),
        );
        self.report(
            host,
            service,
            Stage::Extract,
            "extracting on the host and checking the sha256",
        );
        let mut out = events.collect().await;
        if out.status.is_none() {
            out.status = Some(process.wait().await.map_err(|e| fail(e.to_string()))?);
        }
        if !out.success() {
            if let Some(reason) = super::listing::differences(&expected, &out.stdout) {
                return Err(fail(reason));
            }
            let said = out.stderr_text();
            let status = out.status.map(|s| s.to_string()).unwrap_or_default();
            return Err(fail(format!(
                "the host's side {status} after {sent} of {total} bytes{}{}",
                if said.trim().is_empty() { "" } else { ": " },
                said.trim()
            )));
        }
        copied.map_err(|e| fail(format!("after {sent} of {total} bytes: {e}")))?;
        Ok(sent)
    }

    /// Stops the old release, switches to the new one, starts it and waits until it is
    /// healthy; on failure puts the old one back.
    async fn activate<L: Launcher>(
        &self,
        remote: &Remote<'_, L>,
        a: &Activation<'_>,
        host: &str,
        service: &str,
    ) -> Result<(), DeployError> {
        activate(
            remote,
            a,
            &Limits {
                script: self.script_timeout,
                health: self.health_timeout,
            },
            &|stage, message| self.report(host, service, stage, &message),
            host,
        )
        .await
    }
}

/// The releases a failed upload must not remove.
fn keep_of(probe: &Probe) -> Vec<&str> {
    probe
        .current
        .iter()
        .chain(probe.previous.iter())
        .map(String::as_str)
        .collect()
}

/// Deploys `deploy` to every host in parallel: see [`Deploy::to_hosts`].
pub async fn deploy_all(
    deploy: &Deploy,
    hosts: &[DeployHost],
) -> Result<Vec<Result<DeployReport, DeployError>>, DeployError> {
    deploy.to_hosts(hosts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_move_forward_and_the_upload_spans_its_share() {
        let order = [
            Stage::Verify,
            Stage::Connect,
            Stage::Check,
            Stage::Upload {
                sent: 0,
                total: 100,
            },
            Stage::Upload {
                sent: 50,
                total: 100,
            },
            Stage::Upload {
                sent: 100,
                total: 100,
            },
            Stage::Extract,
            Stage::Stop,
            Stage::Switch,
            Stage::Start,
            Stage::Health,
            Stage::Done,
        ];
        let percents: Vec<u8> = order.iter().map(Stage::percent).collect();
        assert!(percents.windows(2).all(|w| w[0] < w[1]), "{percents:?}");
        assert_eq!(
            (percents[3], percents[4], percents[5]),
            (10, 45, 80),
            "{percents:?}"
        );
        assert_eq!(Stage::Upload { sent: 5, total: 0 }.percent(), 80);
        assert!(Stage::RolledBack.is_final() && !Stage::RollingBack.is_final());
    }

    #[test]
    fn the_env_file_has_the_port_then_the_variables_and_refuses_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("pkg");
        std::fs::create_dir_all(pkg.join("scripts")).unwrap();
        std::fs::write(
            pkg.join("manifest.yaml"),
            "name: web\nversion: 1.0\nport: 8080\n",
        )
        .unwrap();
        for script in ["start.sh", "stop.sh"] {
            let path = pkg.join("scripts").join(script);
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let prepared = Deploy::new(&pkg)
            .with_dependency("kv-store", "10.0.0.2:7000")
            .with_env("MOTTO", "it's $5")
            .prepare()
            .unwrap();
        assert_eq!(prepared.service, "web");
        assert_eq!(
            prepared.env_text,
            "export PORT='8080'\nexport KV_STORE_ADDR='10.0.0.2:7000'\nexport MOTTO='it'\\''s $5'\n"
        );
        let overridden = Deploy::new(&pkg).with_env("PORT", "9").prepare().unwrap();
        assert_eq!(overridden.env_text, "export PORT='9'\n");

        let bad_env = Deploy::new(&pkg).with_env("NOT-A-NAME", "x").prepare();
        assert!(matches!(bad_env, Err(DeployError::Invalid { .. })));
        let bad_service = Deploy::new(&pkg).with_service("Web_1").prepare();
        let Err(e) = bad_service else {
            panic!("an invalid service name was accepted")
        };
        assert!(e.is_bad_input() && e.to_string().contains("Web_1"), "{e}");
        let relative = Deploy::new(&pkg).with_root("opt/harness").prepare();
        assert!(matches!(relative, Err(DeployError::Invalid { .. })));
        let missing = Deploy::new(dir.path().join("nothing.tar.gz")).prepare();
        assert!(matches!(missing, Err(DeployError::Package(_))));

        // The same host twice is refused before any connection is tried.
        let host = DeployHost::parse("root@192.0.2.1").unwrap();
        let twice = smol::block_on(Deploy::new(&pkg).to_hosts(&[host.clone(), host]));
        let Err(e) = twice else {
            panic!("a host named twice was accepted")
        };
        assert!(e.to_string().contains("named twice"), "{e}");
    }
}
