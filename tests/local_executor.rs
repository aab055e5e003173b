//! The local executor against real processes: execution, events, signals, environment, working
//! directory, errors, filters, managed processes, and the promise that nothing is left running.

#[path = "support/local.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use futures_lite::AsyncWriteExt;
use harness::exec::{
    Command, Executor, ExitStatus, LaunchError, Launcher, LocalLauncher, ManagedProcess,
    OutputStream, ProcessEvent, ProcessHandle, RestartPolicy, Signal,
};
use support::{
    KillOnDrop, assert_gone, expect_event, gone, is_alive, next, processes_with_arg, rest, run,
    unique, until_line,
};

fn sh(script: &str) -> Command {
    Command::new("sh").arg("-c").arg(script)
}

fn out(line: &str) -> ProcessEvent {
    ProcessEvent::Stdout(line.to_string())
}

fn code(c: i32) -> ProcessEvent {
    ProcessEvent::Exited(ExitStatus::from_code(c))
}

/// The events without stderr lines: a shell reports children killed by a signal there
/// ("Terminated"), which the tests below do not care about.
fn no_stderr(events: Vec<ProcessEvent>) -> Vec<ProcessEvent> {
    events
        .into_iter()
        .filter(|e| !matches!(e, ProcessEvent::Stderr(_)))
        .collect()
}

fn killed_by(signal: Signal) -> ExitStatus {
    ExitStatus::from_signal(signal.number())
}

// ---------------------------------------------------------------------------------------------
// Basic execution

#[test]
fn echo_yields_started_line_and_exit() {
    run(async {
        let executor = Executor::local("echo");
        let mut result = executor
            .execute(Command::new("echo").arg("hello"))
            .await
            .unwrap();
        let pid = result.handle.id().unwrap();
        assert_eq!(
            rest(&mut result.events).await,
            [ProcessEvent::Started { pid }, out("hello"), code(0)]
        );
        assert_eq!(
            result.handle.wait().await.unwrap(),
            ExitStatus::from_code(0)
        );
        drop(result);
        gone(pid, "echo").await;
    });
}

/// Success criterion 4 of the Phase 1 definition of done, as the seed writes it.
async fn seed_criterion_4() -> Result<Vec<ProcessEvent>, Box<dyn std::error::Error>> {
    // Local
    let executor = Executor::local("my-service");

    // All use same API
    let mut result = executor.execute(Command::new("echo").arg("hello")).await?;

    let mut seen = Vec::new();
    while let Some(event) = result.events.recv().await {
        println!("{:?}", event);
        seen.push(event);
    }
    Ok(seen)
}

#[test]
fn seed_criterion_4_works_as_written() {
    let seen = run(seed_criterion_4()).unwrap();
    assert!(
        matches!(seen.first(), Some(ProcessEvent::Started { pid }) if *pid > 0),
        "{seen:?}"
    );
    assert_eq!(seen[1..], [out("hello"), code(0)]);
}

#[test]
fn cat_echoes_piped_stdin() {
    run(async {
        let mut p = LocalLauncher
            .spawn(&Command::new("cat").piped_stdin())
            .await
            .unwrap();
        let events = p.take_events().unwrap();
        let mut stdin = p.take_stdin().expect("stdin was piped");
        assert!(p.take_stdin().is_none(), "stdin can be taken only once");
        stdin.write_all(b"one\ntwo\nthree").await.unwrap();
        stdin.close().await.unwrap();
        let output = events.collect().await;
        assert_eq!(output.stdout, ["one", "two", "three"]);
        assert!(output.stderr.is_empty(), "{:?}", output.stderr);
        assert!(output.success());
        // Reaped when its handle goes (until then it is our zombie).
        let pid = p.pid();
        drop(p);
        gone(pid, "cat").await;
    });
}

#[test]
fn output_collects_both_streams_and_the_status() {
    run(async {
        let output = LocalLauncher
            .output(&sh("echo to-out; echo to-err >&2; exit 4"))
            .await
            .unwrap();
        assert_eq!(output.stdout, ["to-out"]);
        assert_eq!(output.stderr, ["to-err"]);
        assert_eq!(output.status, Some(ExitStatus::from_code(4)));

        let err = LocalLauncher
            .run_checked(&sh("echo why >&2; exit 2"), "run a failing check")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("run a failing check") && msg.contains("why"),
            "{msg}"
        );
    });
}

#[test]
fn lines_arrive_while_the_process_runs() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("go");
    run(async {
        // The process cannot finish before the test creates the flag file, so seeing its first
        // line while it still runs shows lines stream as they are written.
        let mut p = LocalLauncher
            .spawn(
                &sh(r#"echo first; while [ ! -e "$1" ]; do sleep 0.02; done; echo second"#)
                    .arg("sh")
                    .arg(flag.to_str().unwrap()),
            )
            .await
            .unwrap();
        let mut events = p.take_events().unwrap();
        assert_eq!(
            expect_event(&mut events).await,
            ProcessEvent::Started { pid: p.pid() }
        );
        assert_eq!(expect_event(&mut events).await, out("first"));
        assert!(p.try_status().is_none(), "the process is still waiting");
        assert!(is_alive(p.pid()));
        std::fs::write(&flag, b"").unwrap();
        assert_eq!(rest(&mut events).await, [out("second"), code(0)]);
        // Reaped when its handle goes (until then it is our zombie).
        let pid = p.pid();
        drop(p);
        gone(pid, "the streaming process").await;
    });
}

// ---------------------------------------------------------------------------------------------
// Signals

/// A shell that reports the signals it traps; TERM and INT end it with 128 + the signal.
///
/// It waits with the `wait` builtin on a background `sleep`, which a trapped signal interrupts
/// at once. With a foreground `sleep` instead, a SIGINT now and then never ran the shell's trap
/// (about one run in three under load): the signal reaches the whole group, and can land in
/// the child between fork and exec.
const TRAPPER: &str = r#"
trap 'echo got TERM; exit 143' TERM
trap 'echo got INT; exit 130' INT
trap 'echo got HUP' HUP
trap 'echo got USR1' USR1
echo ready
while :; do sleep 0.2 & wait $!; done
"#;

async fn trapper() -> (harness::exec::LocalProcess, harness::exec::EventStream) {
    let mut p = LocalLauncher.spawn(&sh(TRAPPER)).await.unwrap();
    let mut events = p.take_events().unwrap();
    until_line(&mut events, "ready").await;
    (p, events)
}

#[test]
fn terminate_is_trapped_and_reported() {
    run(async {
        let (mut p, mut events) = trapper().await;
        p.terminate().await.unwrap();
        until_line(&mut events, "got TERM").await;
        assert_eq!(no_stderr(rest(&mut events).await), [code(143)]);
        assert_eq!(p.wait().await.unwrap(), ExitStatus::from_code(143));
        // Reaped when its handle goes (until then it is our zombie).
        let pid = p.pid();
        drop(p);
        gone(pid, "the trapping shell").await;
    });
}

#[test]
fn interrupt_is_trapped_and_reported() {
    run(async {
        let (mut p, mut events) = trapper().await;
        p.interrupt().await.unwrap();
        until_line(&mut events, "got INT").await;
        assert_eq!(no_stderr(rest(&mut events).await), [code(130)]);
        assert_eq!(p.wait().await.unwrap(), ExitStatus::from_code(130));
    });
}

#[test]
fn reload_and_user_signals_leave_the_process_running() {
    run(async {
        let (mut p, mut events) = trapper().await;
        p.reload().await.unwrap();
        until_line(&mut events, "got HUP").await;
        p.signal(Signal::User1).await.unwrap();
        until_line(&mut events, "got USR1").await;
        assert!(p.try_status().is_none(), "HUP and USR1 are trapped");
        p.kill().await.unwrap();
        assert_eq!(
            no_stderr(rest(&mut events).await),
            [ProcessEvent::Exited(killed_by(Signal::Kill))]
        );
        assert_eq!(p.wait().await.unwrap(), killed_by(Signal::Kill));
        // Reaped when its handle goes (until then it is our zombie).
        let pid = p.pid();
        drop(p);
        gone(pid, "the trapping shell").await;
    });
}

#[test]
fn kill_cannot_be_trapped() {
    run(async {
        let mut p = LocalLauncher
            .spawn(&sh(
                "trap '' TERM INT HUP; echo ready; while :; do sleep 0.05; done",
            ))
            .await
            .unwrap();
        let mut events = p.take_events().unwrap();
        until_line(&mut events, "ready").await;
        p.kill().await.unwrap();
        assert_eq!(p.wait().await.unwrap(), killed_by(Signal::Kill));
        assert_eq!(
            no_stderr(rest(&mut events).await),
            [ProcessEvent::Exited(killed_by(Signal::Kill))]
        );
    });
}

#[test]
fn an_untrapped_terminate_ends_the_process_and_later_signals_fail() {
    run(async {
        let mut p = LocalLauncher
            .spawn(&Command::new("sleep").arg("300"))
            .await
            .unwrap();
        p.terminate().await.unwrap();
        assert_eq!(p.wait().await.unwrap(), killed_by(Signal::Terminate));
        // `wait` can be called again.
        assert_eq!(p.wait().await.unwrap(), killed_by(Signal::Terminate));
        let err = p.kill().await.unwrap_err();
        assert!(
            matches!(err, LaunchError::AlreadyExited { pid } if pid == p.pid()),
            "{err}"
        );
        // Reaped when its handle goes (until then it is our zombie).
        let pid = p.pid();
        drop(p);
        gone(pid, "sleep").await;
    });
}

// ---------------------------------------------------------------------------------------------
// Environment and working directory

#[test]
fn env_vars_are_set_and_inherited() {
    run(async {
        let output = LocalLauncher
            .output(
                &sh(r#"echo "$GREETING"; echo "$SECOND"; echo "$PATH""#)
                    .env("GREETING", "hello world")
                    .envs([("SECOND", "two")]),
            )
            .await
            .unwrap();
        let path = std::env::var("PATH").unwrap();
        assert_eq!(output.stdout, ["hello world", "two", path.as_str()]);
    });
}

#[test]
fn env_clear_leaves_only_what_is_set() {
    run(async {
        let output = LocalLauncher
            .output(&Command::new("/usr/bin/env").env_clear().env("ONLY", "this"))
            .await
            .unwrap();
        assert_eq!(output.stdout, ["ONLY=this"]);
        assert!(output.success());
    });
}

#[test]
fn working_directory_is_used() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("marker.txt"), "here\n").unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    run(async {
        let output = LocalLauncher
            .output(&sh("pwd; cat marker.txt").current_dir(dir.path().to_str().unwrap()))
            .await
            .unwrap();
        assert_eq!(output.stdout, [canonical.to_str().unwrap(), "here"]);
    });
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn errors_name_what_was_wrong_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    run(async {
        let err = LocalLauncher.spawn(&Command::new("")).await.unwrap_err();
        assert!(matches!(err, LaunchError::EmptyProgram), "{err}");
        assert!(err.to_string().contains("empty program"), "{err}");

        let missing = format!("/no/such/dir/{}", unique("binary"));
        let err = LocalLauncher
            .spawn(&Command::new(&missing))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LaunchError::NotFound { program, host: None } if *program == missing),
            "{err}"
        );
        assert!(err.to_string().contains(&missing), "{err}");

        let name = unique("not-in-path");
        let err = LocalLauncher.spawn(&Command::new(&name)).await.unwrap_err();
        assert!(matches!(err, LaunchError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains(&name), "{err}");

        let marker = unique("workdir");
        let nodir = format!("/no/such/dir/{marker}");
        let err = LocalLauncher
            .spawn(
                &Command::new("sleep")
                    .arg("300")
                    .arg(&marker)
                    .current_dir(&nodir),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LaunchError::MissingWorkDir { dir, program, .. } if *dir == nodir && program == "sleep"),
            "{err}"
        );
        assert!(err.to_string().contains(&nodir), "{err}");
        assert_eq!(processes_with_arg(&marker), Vec::<u32>::new());

        // A script without the execute bit: if it ever ran, it would leave its marker file.
        let script = dir.path().join(unique("no-exec"));
        let ran = dir.path().join("it-ran");
        std::fs::write(
            &script,
            format!("#!/bin/sh\ntouch '{}'\nsleep 300\n", ran.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let script = script.to_str().unwrap().to_string();
        let err = LocalLauncher
            .spawn(&Command::new(&script))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LaunchError::PermissionDenied { program } if *program == script),
            "{err}"
        );
        assert!(err.to_string().contains(&script), "{err}");
        assert!(!ran.exists(), "the script must not have run");
        assert_eq!(processes_with_arg(&script), Vec::<u32>::new());
    });
}

// ---------------------------------------------------------------------------------------------
// Filters and event ownership

#[test]
fn log_filter_drops_lines_but_not_lifecycle_events() {
    run(async {
        let cmd = sh("echo keep 1; echo drop 2; echo keep 3 >&2; echo drop 4 >&2; exit 5").filter(
            |stream: OutputStream, line: &str| {
                line.starts_with("keep")
                    && matches!(stream, OutputStream::Stdout | OutputStream::Stderr)
            },
        );
        let mut p = LocalLauncher.spawn(&cmd).await.unwrap();
        let mut events = p.take_events().unwrap();
        let all = rest(&mut events).await;
        assert_eq!(all.first(), Some(&ProcessEvent::Started { pid: p.pid() }));
        assert_eq!(all.last(), Some(&code(5)));
        let mut lines: Vec<_> = all[1..all.len() - 1].to_vec();
        // The two streams are read concurrently: compare without their interleaving.
        lines.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            lines,
            [
                ProcessEvent::Stderr("keep 3".into()),
                ProcessEvent::Stdout("keep 1".into())
            ]
        );

        // A filter that looks at the stream.
        let only_stderr = sh("echo a; echo b >&2")
            .filter(|stream: OutputStream, _: &str| stream == OutputStream::Stderr);
        let output = LocalLauncher.output(&only_stderr).await.unwrap();
        assert!(output.stdout.is_empty(), "{:?}", output.stdout);
        assert_eq!(output.stderr, ["b"]);
    });
}

#[test]
fn events_can_be_taken_only_once() {
    run(async {
        let mut p = LocalLauncher.spawn(&Command::new("true")).await.unwrap();
        let events = p.take_events();
        assert!(events.is_some());
        assert!(p.take_events().is_none());
        assert!(events.unwrap().collect().await.success());

        let mut executed = Executor::local("once")
            .execute(Command::new("true"))
            .await
            .unwrap();
        assert!(
            executed.handle.take_events().is_none(),
            "execute already took the events"
        );
        assert_eq!(
            executed.events.collect().await.status,
            Some(ExitStatus::from_code(0))
        );

        let mut managed = Executor::local("once")
            .spawn(ManagedProcess::new(Command::new("true")))
            .await
            .unwrap();
        let events = managed.take_events();
        assert!(events.is_some());
        assert!(managed.take_events().is_none());
        assert!(events.unwrap().collect().await.success());
        assert_eq!(managed.wait().await.unwrap(), ExitStatus::from_code(0));
    });
}

// ---------------------------------------------------------------------------------------------
// Managed processes

#[test]
fn managed_process_tracks_pids_across_restart() {
    run(async {
        let sleeper = ManagedProcess::new(Command::new("sleep").arg("300"));
        let mut run = Executor::local("sleeper").execute(sleeper).await.unwrap();
        let pid1 = run.handle.pid().expect("a local process has a pid");
        assert_eq!(run.handle.id(), Some(pid1));
        assert_eq!(
            expect_event(&mut run.events).await,
            ProcessEvent::Started { pid: pid1 }
        );
        assert!(is_alive(pid1));
        assert!(run.handle.is_running());
        assert_eq!(run.handle.restarts(), 0);

        run.handle.restart().await.unwrap();
        let pid2 = run.handle.pid().unwrap();
        assert_ne!(pid1, pid2, "a restart runs a new process");
        assert!(is_alive(pid2));
        gone(pid1, "the first incarnation").await;
        assert_eq!(run.handle.restarts(), 1);
        // One stream: the first incarnation's end, then the second's start.
        assert_eq!(
            expect_event(&mut run.events).await,
            ProcessEvent::Exited(killed_by(Signal::Terminate))
        );
        assert_eq!(
            expect_event(&mut run.events).await,
            ProcessEvent::Started { pid: pid2 }
        );

        let status = run.handle.stop().await.unwrap();
        assert_eq!(status, killed_by(Signal::Terminate));
        assert_eq!(
            rest(&mut run.events).await,
            [ProcessEvent::Exited(status)],
            "the stream ends once the process is down for good"
        );
        assert_eq!(run.handle.wait().await.unwrap(), status);
        assert_eq!(run.handle.try_status(), Some(status));
        assert!(!run.handle.is_running());
        gone(pid2, "the second incarnation").await;
    });
}

#[test]
fn managed_process_restarts_on_failure_up_to_the_limit() {
    run(async {
        let flaky = ManagedProcess::new(sh("echo run $$; exit 3"))
            .with_restart(RestartPolicy::OnFailure { max_restarts: 2 })
            .with_backoff(Duration::from_millis(10));
        let mut run = Executor::local("flaky").execute(flaky).await.unwrap();
        let all = rest(&mut run.events).await;
        let pids: Vec<u32> = all
            .iter()
            .filter_map(|e| match e {
                ProcessEvent::Started { pid } => Some(*pid),
                _ => None,
            })
            .collect();
        assert_eq!(pids.len(), 3, "the first run and two restarts: {all:?}");
        let mut distinct = pids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            3,
            "each incarnation is a new process: {pids:?}"
        );
        // Each incarnation's events in order, one incarnation after the other.
        let expected: Vec<ProcessEvent> = pids
            .iter()
            .flat_map(|&pid| {
                [
                    ProcessEvent::Started { pid },
                    out(&format!("run {pid}")),
                    code(3),
                ]
            })
            .collect();
        assert_eq!(all, expected);
        assert_eq!(run.handle.wait().await.unwrap(), ExitStatus::from_code(3));
        assert_eq!(run.handle.restarts(), 2);
        assert_eq!(run.handle.pid(), Some(pids[2]));
        for pid in pids {
            gone(pid, "an incarnation").await;
        }
        // Down for good: no signal, no restart.
        assert!(run.handle.terminate().await.is_err());
        assert!(run.handle.restart().await.is_err());
        assert_eq!(run.handle.stop().await.unwrap(), ExitStatus::from_code(3));
    });
}

#[test]
fn managed_process_policies_decide_on_success() {
    run(async {
        // OnFailure does not bring back a process that succeeded.
        let mut once = Executor::local("once")
            .execute(
                ManagedProcess::new(Command::new("true"))
                    .with_restart(RestartPolicy::OnFailure { max_restarts: 5 }),
            )
            .await
            .unwrap();
        let all = rest(&mut once.events).await;
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(once.handle.wait().await.unwrap(), ExitStatus::from_code(0));
        assert_eq!(once.handle.restarts(), 0);

        // Always does, up to its limit.
        let mut twice = Executor::local("twice")
            .execute(
                ManagedProcess::new(Command::new("echo").arg("hi"))
                    .with_restart(RestartPolicy::Always { max_restarts: 1 })
                    .with_backoff(Duration::from_millis(1)),
            )
            .await
            .unwrap();
        let all = rest(&mut twice.events).await;
        let lines: Vec<_> = all.iter().filter_map(|e| e.line()).collect();
        assert_eq!(lines, ["hi", "hi"], "{all:?}");
        assert_eq!(twice.handle.restarts(), 1);
        assert_eq!(twice.handle.wait().await.unwrap(), ExitStatus::from_code(0));
    });
}

#[test]
fn managed_process_killed_through_its_handle_comes_back() {
    run(async {
        let mut run = Executor::local("killed")
            .execute(
                ManagedProcess::new(Command::new("sleep").arg("300"))
                    .with_restart(RestartPolicy::OnFailure { max_restarts: 1 })
                    .with_backoff(Duration::from_millis(10)),
            )
            .await
            .unwrap();
        let ProcessEvent::Started { pid: pid1 } = expect_event(&mut run.events).await else {
            panic!("the first event is Started");
        };
        run.handle.kill().await.unwrap();
        assert_eq!(
            expect_event(&mut run.events).await,
            ProcessEvent::Exited(killed_by(Signal::Kill))
        );
        let ProcessEvent::Started { pid: pid2 } = expect_event(&mut run.events).await else {
            panic!("an automatic restart follows");
        };
        assert_ne!(pid1, pid2);
        assert_eq!(run.handle.pid(), Some(pid2));
        assert_eq!(run.handle.restarts(), 1);
        gone(pid1, "the killed incarnation").await;

        // The limit is reached: the next kill is final.
        run.handle.kill().await.unwrap();
        assert_eq!(
            rest(&mut run.events).await,
            [ProcessEvent::Exited(killed_by(Signal::Kill))]
        );
        assert_eq!(run.handle.wait().await.unwrap(), killed_by(Signal::Kill));
        gone(pid2, "the second incarnation").await;
    });
}

#[test]
fn managed_stop_sends_terminate_first_and_is_final() {
    run(async {
        let mut run = Executor::local("graceful")
            .execute(
                ManagedProcess::new(sh(
                    "trap 'echo stopping; exit 7' TERM; echo ready; while :; do sleep 0.05; done",
                ))
                .with_restart(RestartPolicy::Always { max_restarts: 5 })
                .with_stop_grace(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        let pid = run.handle.pid().unwrap();
        until_line(&mut run.events, "ready").await;
        // The process exits with its own code: it got SIGTERM, and had time to say so.
        assert_eq!(run.handle.stop().await.unwrap(), ExitStatus::from_code(7));
        assert_eq!(
            no_stderr(rest(&mut run.events).await),
            [out("stopping"), code(7)]
        );
        assert_eq!(run.handle.restarts(), 0, "no restart after a stop");
        assert_eq!(run.handle.wait().await.unwrap(), ExitStatus::from_code(7));
        gone(pid, "the stopped process").await;
    });
}

#[test]
fn managed_stop_kills_what_ignores_terminate() {
    run(async {
        let mut run = Executor::local("stubborn")
            .execute(
                ManagedProcess::new(sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"))
                    .with_stop_grace(Duration::from_millis(300)),
            )
            .await
            .unwrap();
        let pid = run.handle.pid().unwrap();
        until_line(&mut run.events, "ready").await;
        assert_eq!(run.handle.stop().await.unwrap(), killed_by(Signal::Kill));
        assert_eq!(
            no_stderr(rest(&mut run.events).await),
            [ProcessEvent::Exited(killed_by(Signal::Kill))]
        );
        gone(pid, "the stubborn process").await;
    });
}

#[test]
fn managed_signals_reach_the_current_incarnation() {
    run(async {
        let mut run = Executor::local("trapper")
            .execute(ManagedProcess::new(sh(TRAPPER)))
            .await
            .unwrap();
        until_line(&mut run.events, "ready").await;
        run.handle.reload().await.unwrap();
        until_line(&mut run.events, "got HUP").await;
        run.handle.interrupt().await.unwrap();
        until_line(&mut run.events, "got INT").await;
        assert_eq!(no_stderr(rest(&mut run.events).await), [code(130)]);
        assert_eq!(run.handle.wait().await.unwrap(), ExitStatus::from_code(130));
    });
}

#[test]
fn managed_process_refuses_piped_stdin() {
    run(async {
        let err = Executor::local("stdin")
            .execute(ManagedProcess::new(Command::new("cat").piped_stdin()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("`cat`"), "{err}");
        let err = Executor::local("missing")
            .execute(ManagedProcess::new(Command::new(unique("no-such-program"))))
            .await
            .unwrap_err();
        assert!(matches!(err, LaunchError::NotFound { .. }), "{err}");
    });
}

// ---------------------------------------------------------------------------------------------
// Nothing is left behind

/// A shell with two background children in its process group; it prints their pids.
const FAMILY: &str = "sleep 300 & echo $!; sleep 300 & echo $!; wait";

async fn family_pids(events: &mut harness::exec::EventStream) -> Vec<u32> {
    let mut pids = Vec::new();
    while pids.len() < 3 {
        match expect_event(events).await {
            ProcessEvent::Started { pid } => pids.push(pid),
            ProcessEvent::Stdout(line) => pids.push(line.parse().unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    pids
}

#[test]
fn dropping_a_handle_kills_the_whole_group() {
    run(async {
        let mut p = LocalLauncher.spawn(&sh(FAMILY)).await.unwrap();
        let mut events = p.take_events().unwrap();
        let pids = family_pids(&mut events).await;
        for &pid in &pids {
            assert!(is_alive(pid), "{pid} runs before the drop");
        }
        drop(p);
        for pid in pids {
            gone(pid, "a member of the dropped process's group").await;
        }
        // The stream still ends properly, with the exit.
        assert_eq!(
            rest(&mut events).await,
            [ProcessEvent::Exited(killed_by(Signal::Kill))]
        );
    });
}

#[test]
fn dropping_a_managed_handle_kills_the_whole_group() {
    run(async {
        let mut run = Executor::local("family")
            .execute(
                ManagedProcess::new(sh(FAMILY))
                    .with_restart(RestartPolicy::Always { max_restarts: 10 }),
            )
            .await
            .unwrap();
        let pids = family_pids(&mut run.events).await;
        for &pid in &pids {
            assert!(is_alive(pid), "{pid} runs before the drop");
        }
        drop(run.handle);
        for pid in pids {
            gone(pid, "a member of the dropped managed process's group").await;
        }
        // No restart happens after the drop: the stream ends.
        let after = rest(&mut run.events).await;
        assert!(
            !after
                .iter()
                .any(|e| matches!(e, ProcessEvent::Started { .. })),
            "{after:?}"
        );
    });
}

#[test]
fn a_child_outlives_the_thread_that_spawned_it() {
    // PR_SET_PDEATHSIG fires when the forking *thread* exits: children must be forked from the
    // long-lived spawner thread, not from the short-lived thread that asked.
    let p = std::thread::spawn(|| {
        smol::block_on(LocalLauncher.spawn(&Command::new("sleep").arg("300"))).unwrap()
    })
    .join()
    .unwrap();
    let pid = p.pid();
    // A death signal aimed at the wrong thread would land right after that thread exits.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        is_alive(pid),
        "the child died with the thread that spawned it"
    );
    assert!(p.try_status().is_none());
    drop(p);
    assert_gone(pid, "sleep after its handle was dropped");
}

const ROLE_VAR: &str = "HARNESS_TEST_ROLE";

/// Not a test of its own: `children_die_with_the_harness` runs this binary again with only this
/// test selected, as a stand-in harness process that it then kills.
#[test]
#[ignore = "run by children_die_with_the_harness as its harness process"]
fn harness_process_role() {
    if std::env::var(ROLE_VAR).as_deref() != Ok("harness") {
        return;
    }
    let p = smol::block_on(LocalLauncher.spawn(&Command::new("sleep").arg("300"))).unwrap();
    println!("SLEEP_PID {}", p.pid());
    std::thread::sleep(Duration::from_secs(300));
    drop(p);
}

#[test]
fn children_die_with_the_harness() {
    let mut harness = support::spawn_stand_in("harness_process_role", ROLE_VAR);
    let stdout = harness.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print the test's name on the same line first.
            if let Some((_, pid)) = line.split_once("SLEEP_PID ") {
                let _ = tx.send(pid.trim().parse::<u32>().unwrap());
            }
        }
    });
    let sleep_pid = match rx.recv_timeout(support::WAIT) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = harness.kill();
            let _ = harness.wait();
            panic!("the stand-in harness never reported its child: {e}");
        }
    };
    assert!(is_alive(sleep_pid), "the harness's child runs");
    // SIGKILL: no destructor, no handler runs in the harness. Only the kernel can clean up.
    harness.kill().unwrap();
    harness.wait().unwrap();
    assert_gone(sleep_pid, "the child of the killed harness");
}

// ---------------------------------------------------------------------------------------------
// Lines: nothing lost, split or merged

/// Finds the first difference between two line lists, for a readable failure.
fn assert_lines(stream: &str, got: &[String], expected: &[String]) {
    if let Some(i) = (0..got.len().min(expected.len())).find(|&i| got[i] != expected[i]) {
        panic!(
            "{stream} line {i} differs: got {:?}, expected {:?}",
            got[i], expected[i]
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{stream}: got {} lines, expected {}",
        got.len(),
        expected.len()
    );
}

#[test]
fn heavy_interleaved_output_loses_splits_and_merges_nothing() {
    const N: usize = 50_000;
    // Lines of varying length, written alternately to both streams and flushed at odd points,
    // so writes straddle pipe and read-buffer boundaries in every possible place.
    let program = format!(
        r#"BEGIN {{
            pad = "abcdefghij"; for (k = 0; k < 5; k++) pad = pad pad;
            for (i = 0; i < {N}; i++) {{
                print "out " i " " substr(pad, 1, i % 97);
                print "err " i " " substr(pad, 1, i % 89) > "/dev/stderr";
                if (i % 13 == 0) fflush();
            }}
        }}"#
    );
    let pad = "abcdefghij".repeat(32);
    let expected_out: Vec<String> = (0..N)
        .map(|i| format!("out {i} {}", &pad[..i % 97]))
        .collect();
    let expected_err: Vec<String> = (0..N)
        .map(|i| format!("err {i} {}", &pad[..i % 89]))
        .collect();
    run(async {
        let mut p = LocalLauncher
            .spawn(&Command::new("awk").arg(program))
            .await
            .unwrap();
        let events = p.take_events().unwrap();
        let output =
            support::within(support::WAIT * 2, "reading 100k lines", events.collect()).await;
        assert_eq!(output.status, Some(ExitStatus::from_code(0)));
        assert_lines("stdout", &output.stdout, &expected_out);
        assert_lines("stderr", &output.stderr, &expected_err);
    });
}

#[test]
fn awkward_lines_arrive_intact() {
    const MB: usize = 1 << 20;
    let script = format!(
        r"printf 'crlf\r\nplain\n'
printf 'bad \377\376 utf8\n'
head -c {MB} /dev/zero | tr '\0' x; echo
head -c {MB} /dev/zero | tr '\0' y >&2
printf 'no newline at the end'"
    );
    run(async {
        let output = LocalLauncher.output(&sh(&script)).await.unwrap();
        assert!(output.success());
        let long_x = "x".repeat(MB);
        assert_eq!(
            output.stdout,
            [
                "crlf",
                "plain",
                "bad \u{FFFD}\u{FFFD} utf8",
                long_x.as_str(),
                "no newline at the end"
            ]
        );
        assert_eq!(output.stderr, ["y".repeat(MB)]);
    });
}

#[test]
fn a_process_holding_its_pipes_open_still_reports_its_exit() {
    run(async {
        // The shell exits, but its background child keeps stdout open: `Exited` must not wait
        // for that child.
        let mut p = LocalLauncher
            .spawn(&sh("sleep 300 & echo $!; exit 0"))
            .await
            .unwrap();
        let mut events = p.take_events().unwrap();
        assert!(matches!(
            expect_event(&mut events).await,
            ProcessEvent::Started { .. }
        ));
        let Some(ProcessEvent::Stdout(line)) = next(&mut events).await else {
            panic!("the shell prints its child's pid");
        };
        let sleep_pid: u32 = line.parse().unwrap();
        let _cleanup = KillOnDrop(sleep_pid);
        assert_eq!(p.wait().await.unwrap(), ExitStatus::from_code(0));
        assert_eq!(next(&mut events).await, Some(code(0)));
        // The leader has exited, but what it left in its group lives on until the handle goes.
        assert!(is_alive(sleep_pid));
        drop(p);
        gone(
            sleep_pid,
            "the background sleep the exited leader left in its group",
        )
        .await;
    });
}
