//! How `LocalLauncher` starts processes (without fork: `harness/src/exec/spawn.rs`): many spawns
//! at once from many threads leak no descriptor and leave no zombie, exec failures come back
//! with their kind, the child starts with a clean signal state, and every child of a harness
//! process that is SIGKILLed dies with it.

#[path = "support/local.rs"]
#[expect(dead_code, reason = "helpers shared with other test files")]
mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::exec::{Command, LaunchError, Launcher, LocalLauncher, ProcessHandle};
use support::{assert_gone, is_alive, run, unique};

/// The tests here count this process's descriptors and children: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's open descriptors, by number and target.
fn open_fds() -> Vec<(String, String)> {
    let mut fds: Vec<(String, String)> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect();
    fds.sort();
    fds
}

/// This process's children, live or zombie.
fn children() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| support::stat(pid).is_some_and(|(_, ppid)| ppid == me))
        .collect()
}

/// Waits (up to `support::WAIT`) until `check` holds; the watching threads close their pipes
/// and reap a moment after the handles go.
fn eventually<T: std::fmt::Debug + PartialEq>(
    what: &str,
    expected: &T,
    mut check: impl FnMut() -> T,
) {
    let start = Instant::now();
    loop {
        let got = check();
        if got == *expected {
            return;
        }
        if start.elapsed() > support::WAIT {
            panic!("{what}: expected {expected:?}, got {got:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn many_spawns_from_many_threads_leak_nothing() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    let _serial = serial();
    // Warm up: the first spawn starts the spawner thread and smol's reactor, which keep
    // descriptors of their own for the life of the process.
    run(async {
        let out = LocalLauncher.output(&Command::new("true")).await.unwrap();
        assert!(out.success());
    });
    let fds_before = open_fds();
    let children_before = children();

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                run(async move {
                    let mut handles = Vec::new();
                    for i in 0..PER_THREAD {
                        let cmd = Command::new("sh")
                            .args(["-c", "echo \"$$ $TAG\"; echo err >&2"])
                            .env("TAG", format!("{t}-{i}"));
                        handles.push(LocalLauncher.spawn(&cmd).await.unwrap());
                    }
                    for (i, mut p) in handles.into_iter().enumerate() {
                        let out = p.take_events().unwrap().collect().await;
                        assert!(out.success(), "{out:?}");
                        assert_eq!(out.stdout, [format!("{} {t}-{i}", p.pid())]);
                        assert_eq!(out.stderr, ["err"]);
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    eventually("this process's children", &children_before, children);
    eventually("this process's open descriptors", &fds_before, open_fds);
}

#[test]
fn piped_stdin_and_raw_stdout_carry_every_byte() {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let _serial = serial();
    // Every byte value, several times over, and more than a pipe holds at once.
    let data: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    run(async {
        let mut p = LocalLauncher
            .spawn(&Command::new("cat").piped_stdin().raw_stdout())
            .await
            .unwrap();
        let mut stdin = p.take_stdin().unwrap();
        let mut stdout = p.take_stdout().unwrap();
        let writer = {
            let data = data.clone();
            async move {
                stdin.write_all(&data).await.unwrap();
                stdin.close().await.unwrap();
            }
        };
        let reader = async {
            let mut got = Vec::new();
            stdout.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = futures_lite::future::zip(writer, reader).await;
        assert!(
            got == data,
            "cat gave back {} of {} bytes, or others",
            got.len(),
            data.len()
        );
        assert!(p.wait().await.unwrap().success());
    });
}

/// This process's threads.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn each_running_child_costs_one_thread() {
    const CHILDREN: usize = 10;
    let _serial = serial();
    run(async {
        LocalLauncher.output(&Command::new("true")).await.unwrap();
        let before = threads();
        let mut running = Vec::new();
        for _ in 0..CHILDREN {
            running.push(
                LocalLauncher
                    .spawn(&Command::new("sleep").arg("300"))
                    .await
                    .unwrap(),
            );
        }
        let during = threads();
        drop(running);
        // Other tests in this binary run one at a time (`serial`), so no thread of theirs
        // starts meanwhile; one may end (the warm-up's watcher), hence at most.
        assert!(
            during <= before + CHILDREN,
            "{CHILDREN} children took {} threads",
            during - before
        );
        eventually("no more threads than before the children", &true, || {
            threads() <= before
        });
    });
}

#[test]
fn exec_failures_come_back_with_their_kind_and_leave_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let not_executable = not_executable.to_str().unwrap().to_string();
    // Executable, but neither a binary nor a script with a `#!` line.
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, [0x7f, b'E', b'L', b'F', 0, 0, 0]).unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
    let garbage = garbage.to_str().unwrap().to_string();
    let a_file = not_executable.clone();
    let missing = unique("missing-program");

    run(async {
        LocalLauncher.output(&Command::new("true")).await.unwrap();
        let fds_before = open_fds();
        let children_before = children();

        let err = LocalLauncher
            .spawn(&Command::new(&missing))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LaunchError::NotFound { program, host: None } if *program == missing),
            "{err}"
        );
        let err = LocalLauncher
            .spawn(&Command::new(format!("/no/such/dir/{missing}")))
            .await
            .unwrap_err();
        assert!(matches!(err, LaunchError::NotFound { .. }), "{err}");
        // The command's own PATH is searched, not ours.
        let err = LocalLauncher
            .spawn(&Command::new("sh").env("PATH", dir.path().to_str().unwrap()))
            .await
            .unwrap_err();
        assert!(matches!(err, LaunchError::NotFound { .. }), "{err}");

        let err = LocalLauncher
            .spawn(&Command::new(&not_executable))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LaunchError::PermissionDenied { program } if *program == not_executable),
            "{err}"
        );
        let err = LocalLauncher.spawn(&Command::new("/")).await.unwrap_err();
        assert!(matches!(err, LaunchError::PermissionDenied { .. }), "{err}");

        let err = LocalLauncher
            .spawn(&Command::new(&garbage))
            .await
            .unwrap_err();
        assert!(matches!(err, LaunchError::Io { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&garbage) && text.contains("format"), "{text}");

        for bad_dir in ["/no/such/dir".to_string(), a_file.clone()] {
            let err = LocalLauncher
                .spawn(&Command::new("true").current_dir(&bad_dir))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, LaunchError::MissingWorkDir { dir, .. } if *dir == bad_dir),
                "{err}"
            );
        }

        let err = LocalLauncher
            .spawn(&Command::new("a\0b"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LaunchError::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput),
            "{err}"
        );

        eventually("this process's children", &children_before, children);
        eventually("this process's open descriptors", &fds_before, open_fds);
    });
}

#[test]
fn path_search_and_environment_follow_the_command() {
    let _serial = serial();
    run(async {
        // No environment at all: `sh` is found on execvp's default path, and sees nothing of ours.
        let out = LocalLauncher
            .output(&Command::new("sh").args(["-c", "env"]).env_clear())
            .await
            .unwrap();
        assert!(out.success(), "{out:?}");
        let ours: Vec<&String> = out
            .stdout
            .iter()
            .filter(|l| {
                !["PWD=", "SHLVL=", "_=", "OLDPWD="]
                    .iter()
                    .any(|v| l.starts_with(v))
            })
            .collect();
        assert_eq!(ours, Vec::<&String>::new());
        // A relative program runs from the command's working directory.
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("hello");
        std::fs::write(&script, "#!/bin/sh\necho \"hello from $(pwd)\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let here = dir.path().canonicalize().unwrap();
        let out = LocalLauncher
            .output(&Command::new("./hello").current_dir(here.to_str().unwrap()))
            .await
            .unwrap();
        assert_eq!(out.stdout, [format!("hello from {}", here.display())]);
    });
}

#[test]
fn a_child_starts_with_no_signal_blocked_or_caught_and_sigpipe_default() {
    let _serial = serial();
    run(async {
        // The mask and the ignored set survive exec: grep reads the ones it was started with.
        let out = LocalLauncher
            .output(&Command::new("grep").args(["-E", "^Sig(Blk|Ign)", "/proc/self/status"]))
            .await
            .unwrap();
        let mask = |name: &str| {
            let line = out.stdout.iter().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{out:?}");
        // SIGPIPE (13) is ignored by the Rust runtime in this process, not in its children.
        assert_eq!(mask("SigIgn:") & (1 << 12), 0, "{out:?}");
    });
}

const ROLE_VAR: &str = "HARNESS_SPAWN_TEST_ROLE";

/// Not a test of its own: `every_child_dies_with_a_killed_harness` runs this binary again with
/// only this test selected, as a stand-in harness process that it then kills.
#[test]
#[ignore = "run by every_child_dies_with_a_killed_harness as its harness process"]
fn harness_with_many_children_role() {
    if std::env::var(ROLE_VAR).as_deref() != Ok("harness") {
        return;
    }
    // Spawned from short-lived threads: the death signal must not follow those threads.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                (0..5)
                    .map(|_| {
                        smol::block_on(LocalLauncher.spawn(&Command::new("sleep").arg("300")))
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut handles = Vec::new();
    for t in threads {
        handles.extend(t.join().unwrap());
    }
    for p in &handles {
        println!("CHILD_PID {}", p.pid());
    }
    println!("ALL_STARTED");
    std::thread::sleep(Duration::from_secs(300));
    drop(handles);
}

#[test]
fn every_child_dies_with_a_killed_harness() {
    let _serial = serial();
    let mut harness = support::spawn_stand_in("harness_with_many_children_role", ROLE_VAR);
    let stdout = harness.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut pids = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print the test's name on the same line first.
            if let Some((_, pid)) = line.split_once("CHILD_PID ") {
                pids.push(pid.trim().parse::<u32>().unwrap());
            }
            if line.contains("ALL_STARTED") {
                let _ = tx.send(std::mem::take(&mut pids));
            }
        }
    });
    let pids = match rx.recv_timeout(support::WAIT) {
        Ok(pids) => pids,
        Err(e) => {
            let _ = harness.kill();
            let _ = harness.wait();
            panic!("the stand-in harness never reported its children: {e}");
        }
    };
    // Whatever happens below, nothing this test started outlives it.
    let _cleanup: Vec<_> = pids.iter().map(|&p| support::KillOnDrop(p)).collect();
    assert_eq!(pids.len(), 20, "{pids:?}");
    for &pid in &pids {
        assert!(
            is_alive(pid),
            "process {pid} runs before the harness is killed"
        );
    }
    // SIGKILL: no destructor, no handler runs in the harness. Only the kernel can clean up.
    harness.kill().unwrap();
    harness.wait().unwrap();
    for &pid in &pids {
        assert_gone(pid, "a child of the killed harness");
    }
}
