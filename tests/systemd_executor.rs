//! The systemd targets, `SystemdService` and `SystemdPortable`, against a real systemd.
//!
//! Each test starts a container whose PID 1 is systemd (tests/support/systemd.rs makes its
//! Debian root once with debootstrap and keeps it under the target directory; each test imports
//! it as an image of its own), runs the systemd command lines in it through `DockerExecLauncher`,
//! checks the states systemd reports, and removes the container and the image.

#[path = "support/docker.rs"]
mod docker_support;
#[path = "support/systemd.rs"]
mod systemd_support;

use std::time::{Duration, Instant};

use docker_support::{WAIT, rest, run, until_line};
use harness::exec::{
    Command, DockerExecLauncher, EventStream, Executor, ExitStatus, Launcher, LocalLauncher,
    ProcessEvent, ProcessHandle, Signal, SystemdPortable, SystemdService, UnitStatus,
};
use systemd_support::{SystemdBox, systemd_image};

type InBox = DockerExecLauncher<LocalLauncher>;

/// An installed unit: says its pid, answers SIGUSR1, and runs until stopped. `$$` is a `$` to
/// systemd. The shell waits on a background sleep so that a trapped signal is handled at once.
const GREETER: &str = r#"[Unit]
Description=harness greeter

[Service]
ExecStart=/bin/sh -c 'trap "echo got-usr1" USR1; echo "greeter-up $$$$"; while :; do sleep 1 & wait $$!; done'

[Install]
WantedBy=multi-user.target
"#;

/// Reads the unit's state, failing the test if systemctl does not answer.
async fn status(svc: &SystemdService, launcher: &InBox) -> UnitStatus {
    svc.status(launcher).await.expect("read the unit's state")
}

/// Runs `cmd` in the container and fails the test unless it succeeds.
async fn checked(launcher: &InBox, cmd: &Command) {
    launcher
        .run_checked(cmd, "run a command in the systemd container")
        .await
        .unwrap();
}

/// One property of a unit, as `systemctl show --value` prints it.
async fn property(launcher: &InBox, unit: &str, name: &str) -> String {
    let cmd =
        Command::new("systemctl").args(["show", "--value", &format!("--property={name}"), unit]);
    let out = launcher.output(&cmd).await.unwrap();
    assert!(out.success(), "{out:?}");
    out.stdout_text().trim().to_string()
}

/// What `systemctl is-enabled` says (it exits non-zero for `disabled`, so no check).
async fn is_enabled(launcher: &InBox, unit: &str) -> String {
    let cmd = Command::new("systemctl").args(["is-enabled", unit]);
    launcher
        .output(&cmd)
        .await
        .unwrap()
        .stdout_text()
        .trim()
        .to_string()
}

/// Polls until the unit's active state is `want`, failing the test after [`WAIT`].
async fn wait_for_state(svc: &SystemdService, launcher: &InBox, want: &str) -> UnitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = status(svc, launcher).await;
        if st.active_state == want {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{} never became {want}: {st:?}",
            svc.unit()
        );
        smol::Timer::after(Duration::from_millis(100)).await;
    }
}

/// The first event, which must be `Started` with the unit's main pid; returns that pid.
async fn started(events: &mut EventStream, id: Option<u32>) -> u32 {
    let pid = id.expect("a started unit has a main pid");
    let first = docker_support::within(WAIT, "the Started event", events.recv()).await;
    assert_eq!(first, Some(ProcessEvent::Started { pid }));
    pid
}

#[test]
fn installed_unit_starts_signals_restarts_enables_and_stops() {
    let test = "installed_unit_starts_signals_restarts_enables_and_stops";
    let Some(image) = systemd_image(test) else {
        return;
    };
    run(async {
        let b = SystemdBox::start(
            test,
            &image,
            &[("/etc/systemd/system/harness-greeter.service", GREETER)],
        )
        .await;
        let launcher = b.launcher();
        let svc = SystemdService::new("harness-greeter");
        assert_eq!(svc.unit(), "harness-greeter.service");
        assert_eq!(status(&svc, &launcher).await.active_state, "inactive");

        // Start: the unit runs, and its first line arrives through the journal.
        let executor = Executor::docker("greeter", b.name()).await.unwrap();
        let mut run = executor.execute(svc.clone()).await.unwrap();
        assert_eq!(run.handle.unit(), "harness-greeter.service");
        let pid = started(&mut run.events, run.handle.id()).await;
        until_line(&mut run.events, &format!("greeter-up {pid}")).await;
        let st = status(&svc, &launcher).await;
        assert_eq!(
            (st.active_state.as_str(), st.sub_state.as_str(), st.main_pid),
            ("active", "running", Some(pid)),
            "{st:?}"
        );
        assert_eq!(run.handle.try_status(), None);

        // A signal reaches the unit's processes.
        run.handle.signal(Signal::User1).await.unwrap();
        until_line(&mut run.events, "got-usr1").await;
        assert_eq!(status(&svc, &launcher).await.main_pid, Some(pid));

        // Enable and disable.
        assert_eq!(is_enabled(&launcher, svc.unit()).await, "disabled");
        checked(&launcher, &svc.enable_command()).await;
        assert_eq!(is_enabled(&launcher, svc.unit()).await, "enabled");
        let wants = b
            .sh("readlink /etc/systemd/system/multi-user.target.wants/harness-greeter.service")
            .await;
        assert_eq!(wants.trim(), "/etc/systemd/system/harness-greeter.service");
        checked(&launcher, &svc.disable_command()).await;
        assert_eq!(is_enabled(&launcher, svc.unit()).await, "disabled");

        // Restart: a new main process, whose line arrives on the same stream.
        checked(&launcher, &svc.restart_command()).await;
        let st = status(&svc, &launcher).await;
        assert_eq!(st.active_state, "active", "{st:?}");
        let new_pid = st.main_pid.expect("running again");
        assert_ne!(new_pid, pid);
        until_line(&mut run.events, &format!("greeter-up {new_pid}")).await;

        // Stop: a clean stop is exit code 0, and ends the stream.
        assert_eq!(run.handle.stop().await.unwrap(), ExitStatus::from_code(0));
        let st = status(&svc, &launcher).await;
        assert_eq!(
            (st.active_state.as_str(), st.sub_state.as_str(), st.main_pid),
            ("inactive", "dead", None),
            "{st:?}"
        );
        let tail = rest(run.events).await;
        assert_eq!(
            tail.last(),
            Some(&ProcessEvent::Exited(ExitStatus::from_code(0))),
            "{tail:?}"
        );

        // The command lines on their own: start, then stop.
        checked(&launcher, &svc.start_command()).await;
        assert_eq!(status(&svc, &launcher).await.active_state, "active");
        checked(&launcher, &svc.stop_command()).await;
        assert_eq!(status(&svc, &launcher).await.active_state, "inactive");

        // SIGKILL fails the unit; its exit status is the signal.
        let mut run = executor.execute(svc.clone()).await.unwrap();
        let pid = started(&mut run.events, run.handle.id()).await;
        until_line(&mut run.events, &format!("greeter-up {pid}")).await;
        run.handle.kill().await.unwrap();
        assert_eq!(run.handle.wait().await.unwrap(), ExitStatus::from_signal(9));
        let st = status(&svc, &launcher).await;
        assert_eq!(
            (st.active_state.as_str(), st.result.as_str()),
            ("failed", "signal"),
            "{st:?}"
        );
        drop(run);
        checked(
            &launcher,
            &Command::new("systemctl").args(["reset-failed", svc.unit()]),
        )
        .await;

        // Dropping a handle whose unit runs stops the unit.
        let mut run = executor.execute(svc.clone()).await.unwrap();
        started(&mut run.events, run.handle.id()).await;
        drop(run);
        wait_for_state(&svc, &launcher, "inactive").await;

        b.finish().await;
    });
}

#[test]
fn transient_unit_runs_a_command_and_reports_how_it_ended() {
    let test = "transient_unit_runs_a_command_and_reports_how_it_ended";
    let Some(image) = systemd_image(test) else {
        return;
    };
    run(async {
        let b = SystemdBox::start(test, &image, &[]).await;
        let launcher = b.launcher();
        let executor = Executor::docker("once", b.name()).await.unwrap();

        // Its environment and working directory reach the command.
        let cmd = Command::new("/bin/sh")
            .args(["-c", "echo \"in $PWD as $GREETING\"; exec sleep 300"])
            .env("GREETING", "hello there")
            .current_dir("/tmp");
        let svc = SystemdService::transient("harness-once", cmd);
        let mut run = executor.execute(svc.clone()).await.unwrap();
        let pid = started(&mut run.events, run.handle.id()).await;
        until_line(&mut run.events, "in /tmp as hello there").await;
        let st = status(&svc, &launcher).await;
        assert_eq!(
            (st.active_state.as_str(), st.main_pid),
            ("active", Some(pid)),
            "{st:?}"
        );
        assert_eq!(property(&launcher, svc.unit(), "Transient").await, "yes");

        // Stopped, it is gone.
        assert_eq!(run.handle.stop().await.unwrap(), ExitStatus::from_code(0));
        assert_eq!(
            property(&launcher, svc.unit(), "LoadState").await,
            "not-found"
        );
        drop(run);

        // A command that fails on its own: its exit code, and nothing left under its name, so
        // the same name can be used again.
        let failing = Command::new("/bin/sh").args(["-c", "sleep 0.5; echo giving-up; exit 3"]);
        let svc = SystemdService::transient("harness-once", failing);
        let mut run = executor.execute(svc.clone()).await.unwrap();
        until_line(&mut run.events, "giving-up").await;
        assert_eq!(run.handle.wait().await.unwrap(), ExitStatus::from_code(3));
        assert_eq!(
            property(&launcher, svc.unit(), "LoadState").await,
            "not-found"
        );
        drop(run);

        // Killed: the signal.
        let sleeper = Command::new("/bin/sh").args(["-c", "echo sleeping; exec sleep 300"]);
        let svc = SystemdService::transient("harness-once", sleeper);
        let mut run = executor.execute(svc.clone()).await.unwrap();
        until_line(&mut run.events, "sleeping").await;
        run.handle.kill().await.unwrap();
        assert_eq!(run.handle.wait().await.unwrap(), ExitStatus::from_signal(9));
        assert_eq!(
            property(&launcher, svc.unit(), "LoadState").await,
            "not-found"
        );
        drop(run);

        b.finish().await;
    });
}

/// Where the portable image is, and its unit (named for the image's prefix).
const PORTABLE: &str = "/var/lib/portables/harness-echo_1.0";
const PORTABLE_OS_RELEASE: &str = "ID=harness-echo\nVERSION_ID=1.0\n";
const PORTABLE_UNIT: &str = r#"[Unit]
Description=harness portable echo

[Service]
ExecStart=/bin/busybox sh -c 'echo "echo-up $$$$"; exec /bin/busybox sleep 300'
"#;

/// `portablectl list`: each image's name and state.
async fn portables(launcher: &InBox) -> Vec<(String, String)> {
    let out = launcher
        .output(&SystemdPortable::list_command())
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    out.stdout
        .iter()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            Some((words.first()?.to_string(), words.last()?.to_string()))
        })
        .collect()
}

#[test]
fn portable_image_attaches_starts_stops_lists_and_detaches() {
    let test = "portable_image_attaches_starts_stops_lists_and_detaches";
    let Some(image) = systemd_image(test) else {
        return;
    };
    run(async {
        let unit_path = format!("{PORTABLE}/usr/lib/systemd/system/harness-echo.service");
        let os_release = format!("{PORTABLE}/usr/lib/os-release");
        let b = SystemdBox::start(
            test,
            &image,
            &[
                (&unit_path, PORTABLE_UNIT),
                (&os_release, PORTABLE_OS_RELEASE),
            ],
        )
        .await;
        // The image's one program: a static busybox, so it needs nothing of the host's root.
        b.sh(&format!(
            "mkdir -p {PORTABLE}/bin && cp /bin/busybox {PORTABLE}/bin/"
        ))
        .await;
        let launcher = b.launcher();
        let image_name = || "harness-echo_1.0".to_string();
        assert_eq!(
            portables(&launcher).await,
            [(image_name(), "detached".into())]
        );

        // Attach: its unit is copied in and started.
        let portable = SystemdPortable::new(PORTABLE);
        assert_eq!(portable.unit(), "harness-echo.service");
        let svc = SystemdService::new(portable.unit());
        let executor = Executor::docker("echo", b.name()).await.unwrap();
        let mut run = executor.execute(portable.clone()).await.unwrap();
        let pid = started(&mut run.events, run.handle.id()).await;
        until_line(&mut run.events, &format!("echo-up {pid}")).await;
        assert_eq!(
            portables(&launcher).await,
            [(image_name(), "running".into())]
        );
        let st = status(&svc, &launcher).await;
        assert_eq!(
            (st.active_state.as_str(), st.main_pid),
            ("active", Some(pid)),
            "{st:?}"
        );
        // It runs inside the image, under the portable profile's sandbox.
        assert_eq!(
            property(&launcher, svc.unit(), "RootDirectory").await,
            PORTABLE
        );

        // Stop and start the attached unit.
        checked(&launcher, &svc.stop_command()).await;
        assert_eq!(status(&svc, &launcher).await.active_state, "inactive");
        assert_eq!(
            portables(&launcher).await,
            [(image_name(), "attached".into())]
        );
        checked(&launcher, &svc.start_command()).await;
        let st = status(&svc, &launcher).await;
        assert_eq!(st.active_state, "active", "{st:?}");
        let new_pid = st.main_pid.expect("running again");
        until_line(&mut run.events, &format!("echo-up {new_pid}")).await;
        assert_eq!(
            portables(&launcher).await,
            [(image_name(), "running".into())]
        );

        // Detach: stopped, and its unit is gone.
        assert_eq!(run.handle.stop().await.unwrap(), ExitStatus::from_code(0));
        assert_eq!(
            portables(&launcher).await,
            [(image_name(), "detached".into())]
        );
        assert_eq!(
            property(&launcher, svc.unit(), "LoadState").await,
            "not-found"
        );
        assert_eq!(b.sh("ls -A /etc/portables").await.trim(), "");

        b.finish().await;
    });
}
