//! Support for tests against a real systemd: a Debian image made here with `debootstrap` (CI
//! has no registry), and a container that runs its systemd as PID 1.
//!
//! The Debian root takes about a minute to make, so it is kept as a build artifact: a tarball
//! under the target directory, named for the hash of its recipe, made by the first test that
//! needs it (under a file lock, so concurrent test processes make it once) and reused by every
//! later one. Docker keeps nothing: each test imports the tarball as an image of its own (about
//! a second), starts its own container labelled with an id of its own, and removes both.
//!
//! Uses `docker_support` (tests/support/docker.rs), which the test declares beside it.

use std::path::PathBuf;
use std::process::{Command as StdCommand, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use harness::exec::{
    Command, ContainerHandle, DockerContainer, DockerExecLauncher, Launcher, LocalLauncher,
    ProcessHandle, Pull, Target,
};
use sha2::Digest as _;

use crate::docker_support::{TEST_LABEL, WAIT, assert_gone, require_docker};

/// The label each test's image carries, and its value.
pub const IMAGE_LABEL: (&str, &str) = ("harness.test-image", "systemd");

/// What the root is made of. Its hash names the tarball, so changing any of it makes a new
/// one; bump `RECIPE_VERSION` when `build_root` changes. busybox-static gives portable images
/// a static shell to copy in.
const SUITE: &str = "bookworm";
const PACKAGES: &str = "systemd,dbus,systemd-container,busybox-static";
const RECIPE_VERSION: u32 = 2;

/// Where packages come from; `HARNESS_DEBIAN_MIRROR` overrides it.
const MIRROR: &str = "http://deb.debian.org/debian";

/// How long systemd may take to finish booting in the container.
const BOOT: Duration = Duration::from_secs(60);

/// The hash of the recipe: six bytes in hex.
fn recipe_hash() -> String {
    let recipe = format!("{RECIPE_VERSION} {SUITE} minbase {PACKAGES}");
    let hash = sha2::Sha256::digest(recipe.as_bytes());
    hash.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Where the root's tarball is kept.
fn root_tarball() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "harness-test-systemd-{SUITE}-{}.tar",
        recipe_hash()
    ))
}

/// Why this machine cannot make the root, if it cannot.
fn cannot_build() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("debootstrap needs root".into());
    }
    let found = StdCommand::new("debootstrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (!found).then(|| "`debootstrap` is not installed (apt-get install debootstrap)".into())
}

/// A test's own image of the root, removed when dropped (after the test's container: declare
/// it first).
pub struct TestImage {
    tag: String,
}

impl std::ops::Deref for TestImage {
    type Target = str;

    fn deref(&self) -> &str {
        &self.tag
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let out = StdCommand::new("docker")
            .args(["image", "rm", "--force", &self.tag])
            .output();
        if let Ok(out) = out
            && !out.status.success()
        {
            eprintln!(
                "remove the test image {}: {}",
                self.tag,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The test's own image of the systemd root, the root made first if it is not kept yet;
/// `None` (after saying why) if the test cannot run here. Panics where it cannot run but must
/// (`HARNESS_REQUIRE_DOCKER=1`).
pub fn systemd_image(test: &str) -> Option<TestImage> {
    if !require_docker(test) {
        return None;
    }
    let tarball = root_tarball();
    if !tarball.is_file() {
        // One builder at a time: tests run in processes of their own under nextest.
        let lock_path =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("harness-test-systemd-root.lock");
        let lock = std::fs::File::create(&lock_path).expect("create the root's build lock");
        lock.lock().expect("take the root's build lock");
        if !tarball.is_file() {
            if let Some(why) = cannot_build() {
                if std::env::var("HARNESS_REQUIRE_DOCKER").as_deref() == Ok("1") {
                    panic!(
                        "{test}: HARNESS_REQUIRE_DOCKER=1 but cannot make the systemd root: {why}"
                    );
                }
                eprintln!("{test}: not run: cannot make the systemd root: {why}");
                return None;
            }
            let started = Instant::now();
            build_root(&tarball);
            eprintln!(
                "{test}: made the systemd root {} in {:.1?}",
                tarball.display(),
                started.elapsed()
            );
        }
    }
    static N: AtomicU32 = AtomicU32::new(0);
    let tag = format!(
        "harness-test-systemd:{}-{}-{}",
        recipe_hash(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let label = format!("LABEL {}={}", IMAGE_LABEL.0, IMAGE_LABEL.1);
    let out = StdCommand::new("docker")
        .args(["import", "--change", &label])
        .args(["--change", "ENV container=docker"])
        .args(["--change", r#"CMD ["/lib/systemd/systemd"]"#])
        .arg(&tarball)
        .arg(&tag)
        .output()
        .expect("run docker import");
    assert!(
        out.status.success(),
        "docker import {}: {}",
        tarball.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(TestImage { tag })
}

/// Makes the root with debootstrap, trims it, and writes it to `tarball` (whole or not at
/// all: through a temporary file renamed into place).
fn build_root(tarball: &std::path::Path) {
    let root = tempfile::Builder::new()
        .prefix("harness-systemd-rootfs-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("make a directory for the root filesystem");
    let mirror = std::env::var("HARNESS_DEBIAN_MIRROR").unwrap_or_else(|_| MIRROR.into());
    let out = StdCommand::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
        .arg(root.path())
        .arg(&mirror)
        .output()
        .expect("run debootstrap");
    assert!(
        out.status.success(),
        "debootstrap {SUITE} from {mirror} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Downloaded packages, package lists and documentation: half the root, used by nothing.
    for dir in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
    ] {
        let path = root.path().join(dir);
        if path.exists() {
            std::fs::remove_dir_all(&path).expect("trim the root filesystem");
        }
    }
    // Every container gets a machine id of its own from systemd, not the one debootstrap made.
    std::fs::write(root.path().join("etc/machine-id"), "").expect("empty /etc/machine-id");

    let partial = tarball.with_extension("tar.partial");
    let status = StdCommand::new("tar")
        .arg("-C")
        .arg(root.path())
        .arg("-cf")
        .arg(&partial)
        .arg(".")
        .stdout(Stdio::null())
        .status()
        .expect("run tar");
    assert!(status.success(), "tar of the root failed: {status}");
    std::fs::rename(&partial, tarball).expect("put the root's tarball in place");
}

/// A running container with systemd as PID 1.
///
/// Dropping it before [`finish`](Self::finish) (a failed test) removes the container
/// synchronously, so a panic leaves nothing behind.
pub struct SystemdBox {
    /// The value of [`TEST_LABEL`] on the container.
    pub id: String,
    handle: Option<ContainerHandle<LocalLauncher>>,
}

impl SystemdBox {
    /// Starts a container from `image` with `files` (path in the container, contents) in place,
    /// and waits until systemd has finished booting.
    pub async fn start(test: &str, image: &str, files: &[(&str, &str)]) -> SystemdBox {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}-{}",
            test.replace('_', "-"),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let local = tempfile::tempdir().unwrap();
        // What systemd needs to run as PID 1 in a container. Not `--privileged`: docker here
        // cannot grant every capability ("unable to apply caps"), and systemd needs only
        // CAP_SYS_ADMIN for its mounts, the host's cgroup tree writable, and a /run of its own.
        let mut container = DockerContainer::new(image)
            .with_label(TEST_LABEL, &id)
            .with_pull(Pull::Never)
            .with_env("container", "docker")
            .with_docker_arg("--cap-add=SYS_ADMIN")
            .with_docker_arg("--cgroupns=host")
            .with_volume("/sys/fs/cgroup:/sys/fs/cgroup:rw")
            .with_docker_arg("--tmpfs=/run")
            .with_docker_arg("--tmpfs=/run/lock")
            // What systemd takes as "shut down".
            .with_docker_arg("--stop-signal=SIGRTMIN+3");
        for (i, (path, contents)) in files.iter().enumerate() {
            let file = local.path().join(i.to_string());
            std::fs::write(&file, contents).unwrap();
            container = container.with_file(*path, file, 0o644);
        }
        let mut handle = container
            .launch(&LocalLauncher)
            .await
            .expect("start the systemd container");
        // systemd writes its boot to the console; nothing reads it.
        drop(handle.take_events());
        let b = SystemdBox {
            id,
            handle: Some(handle),
        };
        b.wait_for_boot().await;
        b
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        self.handle.as_ref().expect("not finished").name()
    }

    /// A launcher into the container.
    pub fn launcher(&self) -> DockerExecLauncher<LocalLauncher> {
        self.handle.as_ref().expect("not finished").exec_launcher()
    }

    /// Runs `sh -c script` in the container, failing the test unless it succeeds; its stdout.
    pub async fn sh(&self, script: &str) -> String {
        let out = self
            .launcher()
            .output(&Command::new("sh").args(["-c", script]))
            .await
            .expect("run a command in the container");
        assert!(out.success(), "`{script}` failed: {out:?}");
        out.stdout_text()
    }

    /// Waits until `systemctl is-system-running` says `running`. Before systemd listens,
    /// systemctl cannot connect; `degraded` fails the test with the failed units.
    async fn wait_for_boot(&self) {
        let deadline = Instant::now() + BOOT;
        let launcher = self.launcher();
        let ask = Command::new("systemctl").args(["is-system-running", "--wait"]);
        loop {
            let out = launcher.output(&ask).await.expect("ask systemd its state");
            let state = out.stdout_text().trim().to_string();
            match state.as_str() {
                "running" => return,
                "degraded" => {
                    let failed = self.sh("systemctl --failed --no-pager --full").await;
                    panic!("systemd booted degraded in the container:\n{failed}");
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "systemd did not boot within {BOOT:?}: is-system-running says {state:?}, {}",
                out.stderr_text()
            );
            smol::Timer::after(Duration::from_millis(100)).await;
        }
    }

    /// Removes the container and checks that nothing with this test's label is left.
    pub async fn finish(mut self) {
        let handle = self.handle.take().expect("finish runs once");
        handle.remove().await.expect("remove the systemd container");
        assert_gone(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={TEST_LABEL}={}", self.id),
        ])
        .await;
    }
}

impl Drop for SystemdBox {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        // Its own drop removes the container on a background thread the process may not wait
        // for; remove it here, and wait.
        let name = handle.name().to_string();
        let _ = StdCommand::new("docker")
            .args(["rm", "--force", "--volumes", &name])
            .output();
        drop(handle);
        let deadline = Instant::now() + WAIT;
        let filter = format!("label={TEST_LABEL}={}", self.id);
        while Instant::now() < deadline {
            let listed = StdCommand::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output();
            match listed {
                Ok(o) if !o.stdout.trim_ascii().is_empty() => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => break,
            }
        }
        eprintln!("swept up the systemd container of test `{}`", self.id);
    }
}
