//! `SshLauncher` against a real sshd that each test starts on 127.0.0.1 with its own host key,
//! client keys and config (tests/support/sshd.rs).
//!
//! Every test ends by closing the connection and sshd and checking, by pid and by path, that no
//! ssh master, sshd, remote process or temporary directory of its own is left.

#[path = "support/sshd.rs"]
mod sshd;

use std::future::Future;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::exec::{
    Command, ExitStatus, HostKeys, LaunchError, Launcher, LocalLauncher, ProcessEvent,
    ProcessHandle, SshBuilder, SshLauncher, SudoLauncher,
};
use sha2::{Digest, Sha256};
use sshd::Sshd;

/// How long any one test may take before it fails instead of hanging.
const TEST_DEADLINE: Duration = Duration::from_secs(120);
/// How long a process may take to disappear after it was told to.
const GONE_WITHIN: Duration = Duration::from_secs(10);

type Ssh = SshLauncher<LocalLauncher>;

fn run<F: Future>(fut: F) -> F::Output {
    smol::block_on(futures_lite::future::or(fut, async {
        smol::Timer::after(TEST_DEADLINE).await;
        panic!("the test did not finish within {TEST_DEADLINE:?}");
    }))
}

fn start_sshd() -> Sshd {
    Sshd::start().unwrap_or_else(|e| panic!("failed to start a test sshd: {e}"))
}

/// The options every test connection uses: the test's key, and state inside the test's dir.
fn builder(sshd: &Sshd) -> SshBuilder {
    SshLauncher::builder(sshd.host(), sshd.user())
        .key(sshd.key())
        .temp_dir(sshd.ssh_state_dir().to_string_lossy())
}

async fn connect(sshd: &Sshd) -> Ssh {
    builder(sshd)
        .connect(LocalLauncher)
        .await
        .unwrap_or_else(|e| panic!("failed to connect: {e}\nsshd log:\n{}", sshd.log()))
}

/// Whether `pid` is a live process (a zombie counts as gone: it has finished).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn assert_gone(pid: u32, what: &str) {
    let start = Instant::now();
    while alive(pid) {
        assert!(
            start.elapsed() < GONE_WITHIN,
            "{what} (pid {pid}) is still running after {GONE_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of `ssh` processes whose command line names `port`.
fn ssh_clients_for(port: u16) -> Vec<u32> {
    let port = port.to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"ssh"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-p" && w[1] == port.as_bytes())
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// Closes `ssh` and `sshd` and checks that nothing the test made is left: the remote processes
/// it names, the ssh master, any ssh client for this sshd, sshd and its per-connection
/// processes, and the temporary directories.
fn close(ssh: Option<Ssh>, sshd: Sshd, remote_pids: &[u32]) {
    // Remote processes must be gone through our own means, before sshd is stopped.
    for &pid in remote_pids {
        assert_gone(pid, "remote process");
    }
    if let Some(ssh) = ssh {
        let master = ssh.master_pid();
        let state = PathBuf::from(ssh.state_dir());
        drop(ssh);
        if let Some(pid) = master {
            assert_gone(pid, "ssh master");
        }
        assert!(!state.exists(), "{} was not removed", state.display());
    }
    let leftover: Vec<_> = std::fs::read_dir(sshd.ssh_state_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(leftover.is_empty(), "ssh state left behind: {leftover:?}");
    let port = sshd.port();
    let start = Instant::now();
    while !ssh_clients_for(port).is_empty() {
        assert!(
            start.elapsed() < GONE_WITHIN,
            "ssh clients for port {port} left: {:?}",
            ssh_clients_for(port)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = sshd.pid();
    let connections = sshd::children_of(pid);
    let dir = sshd.dir().to_path_buf();
    drop(sshd);
    assert_gone(pid, "sshd");
    for child in connections {
        assert_gone(child, "sshd connection process");
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

/// Whether `pid` runs at the far end, asked over `ssh`.
async fn remote_alive(ssh: &Ssh, pid: u32) -> bool {
    let script = format!(
        "s=$(cat /proc/{pid}/stat 2>/dev/null) || {{ echo gone; exit 0; }}; \
         case \"${{s##*) }}\" in Z*) echo gone;; *) echo alive;; esac"
    );
    let out = ssh
        .output(&Command::new("sh").args(["-c", &script]))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    out.stdout == ["alive"]
}

async fn assert_remote_gone(ssh: &Ssh, pid: u32) {
    let start = Instant::now();
    while remote_alive(ssh, pid).await {
        assert!(
            start.elapsed() < GONE_WITHIN,
            "remote process {pid} is still running after {GONE_WITHIN:?}"
        );
        smol::Timer::after(Duration::from_millis(50)).await;
    }
}

async fn collect(events: &mut harness::exec::EventStream) -> Vec<ProcessEvent> {
    let mut all = Vec::new();
    while let Some(e) = events.recv().await {
        all.push(e);
    }
    all
}

fn sha256_file(path: &Path) -> String {
    let mut hasher = Sha256::new();
    hasher.update(std::fs::read(path).unwrap());
    format!("{:x}", hasher.finalize())
}

fn known_hosts_of_user() -> Option<Vec<u8>> {
    let home = std::env::var("HOME").ok()?;
    std::fs::read(Path::new(&home).join(".ssh/known_hosts")).ok()
}

#[test]
fn execute_echo_hello() -> Result<(), Box<dyn std::error::Error>> {
    let sshd = start_sshd();
    let known_before = known_hosts_of_user();
    let launcher = run(async {
        // Criterion 4 of the seed, as written.
        let executor =
            harness::exec::Executor::ssh("greeter", sshd.host(), sshd.user(), sshd.key()).await?;
        let mut result = executor.execute(Command::new("echo").arg("hello")).await?;
        let events = collect(&mut result.events).await;
        assert_eq!(
            events,
            [
                ProcessEvent::Started {
                    pid: result.handle.remote_pid()
                },
                ProcessEvent::Stdout("hello".into()),
                ProcessEvent::Exited(ExitStatus::from_code(0)),
            ]
        );
        assert_eq!(executor.service_name(), "greeter");
        Ok::<_, Box<dyn std::error::Error>>(executor.launcher().clone())
    })?;
    // The new host key was remembered for this connection only, not in the user's files.
    assert_eq!(known_hosts_of_user(), known_before);
    close(Some(launcher), sshd, &[]);
    Ok(())
}

#[test]
fn env_and_args_survive_quoting() {
    let sshd = start_sshd();
    let ssh = run(async {
        let ssh = connect(&sshd).await;
        let nasty = [
            "it's \"quoted\"",
            "two  spaces\tand a tab",
            "$HOME `id` $(id) \\ ; | & * ~",
            "",
            "-n",
        ];
        let out = ssh
            .output(
                &Command::new("sh")
                    .args([
                        "-c",
                        r#"printf '<%s>\n' "$A" "$B" "$C" "$D" "$E"; printf '[%s]\n' "$@""#,
                        "sh",
                    ])
                    .args(nasty)
                    .env("A", nasty[0])
                    .env("B", nasty[1])
                    .env("C", nasty[2])
                    .env("D", nasty[3])
                    .env("E", nasty[4]),
            )
            .await
            .unwrap();
        let mut want: Vec<String> = nasty.iter().map(|s| format!("<{s}>")).collect();
        want.extend(nasty.iter().map(|s| format!("[{s}]")));
        assert_eq!(out.stdout, want);
        assert!(out.success());

        // A cleared environment holds only what the command sets.
        let out = ssh
            .output(&Command::new("env").env_clear().env("ONLY", "this one"))
            .await
            .unwrap();
        assert_eq!(out.stdout, ["ONLY=this one"]);
        ssh
    });
    close(Some(ssh), sshd, &[]);
}

#[test]
fn cwd_and_missing_program_or_dir_are_named() {
    let sshd = start_sshd();
    let dir = sshd.dir().join("a dir with 'quotes'");
    std::fs::create_dir(&dir).unwrap();
    let ssh = run(async {
        let ssh = connect(&sshd).await;
        let dir = dir.to_string_lossy().into_owned();
        let out = ssh
            .output(&Command::new("pwd").current_dir(&dir))
            .await
            .unwrap();
        assert_eq!(out.stdout, [dir.as_str()]);

        let err = ssh
            .spawn(&Command::new("no-such-program-4711"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LaunchError::NotFound { program, host: Some(h) }
                if program == "no-such-program-4711" && h == ssh.host()),
            "{err:?}"
        );
        assert!(err.to_string().contains("no-such-program-4711"), "{err}");
        assert!(err.to_string().contains(&sshd.host()), "{err}");

        let err = ssh
            .spawn(&Command::new("true").current_dir("/no/such/remote/dir"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, LaunchError::MissingWorkDir { dir, .. } if dir == "/no/such/remote/dir"),
            "{err:?}"
        );
        assert!(err.to_string().contains(&sshd.host()), "{err}");
        ssh
    });
    close(Some(ssh), sshd, &[]);
}

#[test]
fn long_running_command_streams_lines_as_they_come() {
    let sshd = start_sshd();
    let (ssh, pid) = run(async {
        let ssh = connect(&sshd).await;
        let mut p = ssh
            .spawn(&Command::new("sh").args([
                "-c",
                "for i in 1 2 3 4; do echo line$i; echo err$i >&2; sleep 0.3; done",
            ]))
            .await
            .unwrap();
        let mut events = p.take_events().unwrap();
        assert_eq!(
            events.recv().await,
            Some(ProcessEvent::Started {
                pid: p.remote_pid()
            })
        );
        // The first line arrives while the command still has a second of sleeping ahead.
        loop {
            match events.recv().await.unwrap() {
                ProcessEvent::Stdout(line) => {
                    assert_eq!(line, "line1");
                    break;
                }
                ProcessEvent::Stderr(line) => assert_eq!(line, "err1"),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(p.try_status(), None, "line1 came only after the end");
        let rest = collect(&mut events).await;
        let stdout: Vec<_> = rest
            .iter()
            .filter_map(|e| match e {
                ProcessEvent::Stdout(l) => Some(l.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(stdout, ["line2", "line3", "line4"]);
        let stderr = rest
            .iter()
            .filter(|e| matches!(e, ProcessEvent::Stderr(_)))
            .count();
        assert!(stderr >= 3, "{rest:?}");
        assert_eq!(
            rest.last(),
            Some(&ProcessEvent::Exited(ExitStatus::from_code(0)))
        );
        let pid = p.remote_pid();
        (ssh, pid)
    });
    close(Some(ssh), sshd, &[pid]);
}

#[test]
fn remote_signal_reaches_the_whole_group() {
    let sshd = start_sshd();
    let (ssh, pids) = run(async {
        let ssh = connect(&sshd).await;
        let mut p = ssh
            .spawn(&Command::new("sh").args(["-c", "sleep 300 & echo $!; wait"]))
            .await
            .unwrap();
        let mut events = p.take_events().unwrap();
        let child: u32 = loop {
            if let Some(ProcessEvent::Stdout(line)) = events.recv().await {
                break line.parse().unwrap();
            }
        };
        assert!(remote_alive(&ssh, child).await);
        p.terminate().await.unwrap();
        let status = p.wait().await.unwrap();
        assert_eq!(status.code(), Some(128 + 15), "{status}");
        assert_remote_gone(&ssh, p.remote_pid()).await;
        assert_remote_gone(&ssh, child).await;
        // Signalling a process that has ended is an error, not a stray kill.
        assert!(matches!(
            p.kill().await,
            Err(LaunchError::AlreadyExited { .. })
        ));
        (ssh, [p.remote_pid(), child])
    });
    close(Some(ssh), sshd, &pids);
}

#[test]
fn killing_the_local_client_kills_the_remote_group() {
    let sshd = start_sshd();
    let (ssh, pids) = run(async {
        let ssh = connect(&sshd).await;
        let mut p = ssh
            .spawn(&Command::new("sh").args(["-c", "sleep 300 & echo $!; wait"]))
            .await
            .unwrap();
        let mut events = p.take_events().unwrap();
        let child: u32 = loop {
            if let Some(ProcessEvent::Stdout(line)) = events.recv().await {
                break line.parse().unwrap();
            }
        };
        let remote = p.remote_pid();
        // The ssh client dies as it would if the harness were killed.
        let client = p.client().pid();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(client as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let status = p.wait().await.unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
        // Asked over a connection of its own, not the one that carried the process.
        let fresh = connect(&sshd).await;
        assert_remote_gone(&fresh, remote).await;
        assert_remote_gone(&fresh, child).await;
        drop(p);
        close_launcher(fresh);
        (ssh, [remote, child])
    });
    close(Some(ssh), sshd, &pids);
}

/// Closes a second launcher of a test and checks its master and directory are gone.
fn close_launcher(ssh: Ssh) {
    let master = ssh.master_pid().unwrap();
    let state = PathBuf::from(ssh.state_dir());
    drop(ssh);
    assert_gone(master, "ssh master");
    assert!(!state.exists(), "{} was not removed", state.display());
}

#[test]
fn dropping_the_handle_kills_the_remote_process() {
    let sshd = start_sshd();
    let (ssh, pid) = run(async {
        let ssh = connect(&sshd).await;
        let p = ssh.spawn(&Command::new("sleep").arg("300")).await.unwrap();
        let pid = p.remote_pid();
        assert!(remote_alive(&ssh, pid).await);
        drop(p);
        assert_remote_gone(&ssh, pid).await;
        (ssh, pid)
    });
    close(Some(ssh), sshd, &[pid]);
}

#[test]
fn upload_and_download_keep_every_byte() {
    let sshd = start_sshd();
    let local = sshd.dir().join("local");
    let remote = sshd.dir().join("remote");
    std::fs::create_dir(&local).unwrap();
    std::fs::create_dir(&remote).unwrap();
    let source = local.join("random.bin");
    let mut bytes = Vec::new();
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(3 * 1024 * 1024 + 7)
        .read_to_end(&mut bytes)
        .unwrap();
    std::fs::write(&source, &bytes).unwrap();
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o751)).unwrap();
    let want = sha256_file(&source);

    let ssh = run(async {
        let ssh = connect(&sshd).await;
        let target = remote
            .join("copy of random.bin")
            .to_string_lossy()
            .into_owned();
        ssh.upload(&source, &target).await.unwrap();
        // The far end's own view: checksum and mode.
        let out = ssh
            .output(&Command::new("sh").args([
                "-c",
                "sha256sum < \"$1\" | cut -d' ' -f1; stat -c %a \"$1\"; ls -a \"$(dirname \"$1\")\"",
                "sh",
                &target,
            ]))
            .await
            .unwrap();
        assert_eq!(out.stdout[..2], [want.clone(), "751".to_string()]);
        assert_eq!(
            out.stdout[2..],
            [".", "..", "copy of random.bin"],
            "no temporary left"
        );

        let back = local.join("back.bin");
        ssh.download(&target, &back).await.unwrap();
        assert_eq!(sha256_file(&back), want);

        // A directory as a tar stream.
        let tree = local.join("tree");
        std::fs::create_dir_all(tree.join("sub dir")).unwrap();
        std::fs::write(tree.join("a.txt"), "alpha\n").unwrap();
        std::fs::copy(&source, tree.join("sub dir/random.bin")).unwrap();
        let dest = remote.join("unpacked").to_string_lossy().into_owned();
        ssh.upload_dir(&tree, &dest).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(remote.join("unpacked/a.txt")).unwrap(),
            "alpha\n"
        );
        assert_eq!(
            sha256_file(&remote.join("unpacked/sub dir/random.bin")),
            want
        );

        // Errors name the host and the path, and leave nothing half-written.
        let err = ssh
            .upload(&source, "/no/such/remote/dir/file")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&sshd.host()) && msg.contains("/no/such/remote/dir/file"),
            "{msg}"
        );
        let missing_local = local.join("never.bin");
        let err = ssh
            .download("/no/such/remote/file", &missing_local)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&sshd.host()) && msg.contains("/no/such/remote/file"),
            "{msg}"
        );
        assert!(!missing_local.exists());
        let names: Vec<_> = std::fs::read_dir(&local)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with(".harness-download")),
            "temporary download left: {names:?}"
        );
        let err = ssh.upload(local.join("nope"), &target).await.unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        ssh
    });
    close(Some(ssh), sshd, &[]);
}

#[test]
fn without_multiplexing_every_command_connects_afresh() {
    let sshd = start_sshd();
    let ssh = run(async {
        let ssh = builder(&sshd)
            .multiplex(false)
            .connect(LocalLauncher)
            .await
            .unwrap();
        assert_eq!(ssh.master_pid(), None);
        let out = ssh
            .output(&Command::new("echo").arg("fresh"))
            .await
            .unwrap();
        assert_eq!(out.stdout, ["fresh"]);
        ssh
    });
    close(Some(ssh), sshd, &[]);
}

#[test]
fn host_keys_are_checked_when_asked() {
    let sshd = start_sshd();
    let known = sshd.dir().join("known_hosts");
    let empty = sshd.dir().join("empty_known_hosts");
    std::fs::write(&known, sshd.known_hosts_line()).unwrap();
    std::fs::write(&empty, "").unwrap();
    let ssh = run(async {
        let ssh = builder(&sshd)
            .host_keys(HostKeys::Strict(known.clone()))
            .connect(LocalLauncher)
            .await
            .unwrap();
        let err = builder(&sshd)
            .host_keys(HostKeys::Strict(empty.clone()))
            .connect(LocalLauncher)
            .await
            .unwrap_err();
        assert!(matches!(err, LaunchError::AuthFailed { .. }), "{err:?}");
        assert!(err.to_string().to_lowercase().contains("host key"), "{err}");

        // accept-new records the host in the file it was given.
        let fresh = sshd.dir().join("new_known_hosts");
        let tofu = builder(&sshd)
            .known_hosts(&fresh)
            .connect(LocalLauncher)
            .await
            .unwrap();
        close_launcher(tofu);
        assert!(!std::fs::read_to_string(&fresh).unwrap().trim().is_empty());
        ssh
    });
    close(Some(ssh), sshd, &[]);
}

#[test]
fn refused_connection_is_unreachable_and_names_the_host() {
    let sshd = start_sshd();
    let port = sshd::free_port().unwrap();
    let err = run(builder(&sshd)
        .port(port)
        .connect_timeout(Duration::from_secs(5))
        .connect(LocalLauncher))
    .unwrap_err();
    assert!(matches!(err, LaunchError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    assert!(ssh_clients_for(port).is_empty());
    close(None, sshd, &[]);
}

#[test]
fn a_key_the_host_does_not_know_is_refused() {
    let sshd = start_sshd();
    let err = run(builder(&sshd)
        .key(sshd.stranger_key())
        .connect(LocalLauncher))
    .unwrap_err();
    assert!(matches!(err, LaunchError::AuthFailed { .. }), "{err:?}");
    assert!(err.to_string().contains(&sshd.host()), "{err}");
    close(None, sshd, &[]);
}

#[test]
fn bad_key_files_are_named() {
    let sshd = start_sshd();
    let garbage = sshd.dir().join("garbage key");
    std::fs::write(&garbage, "this is not a key\n").unwrap();
    let public = sshd.dir().join("client_key.pub");
    let open = sshd.dir().join("too_open_key");
    std::fs::copy(sshd.key(), &open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let missing = sshd.dir().join("no_such_key");
    for (path, says) in [
        (&missing, "no such file"),
        (&garbage, "not a private key"),
        (&public, "public key"),
        (&open, "permissions"),
    ] {
        let err = run(builder(&sshd).key(path).connect(LocalLauncher)).unwrap_err();
        match &err {
            LaunchError::BadKey { path: p, reason } => {
                assert_eq!(p, path);
                assert!(reason.to_lowercase().contains(says), "{err}");
            }
            other => panic!("{}: expected BadKey, got {other:?}", path.display()),
        }
        assert!(
            err.to_string()
                .contains(&path.to_string_lossy().into_owned()),
            "{err}"
        );
    }
    close(None, sshd, &[]);
}

#[test]
fn a_silent_server_times_out() {
    let sshd = start_sshd();
    // Accepts connections and never says a word: no SSH banner ever comes.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let silent = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((conn, _)) = listener.accept() {
                held.push(conn);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = run(builder(&sshd)
        .port(port)
        .connect_timeout(timeout)
        .connect(LocalLauncher))
    .unwrap_err();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    silent.join().unwrap();
    assert!(
        matches!(err, LaunchError::Timeout { after, .. } if after == timeout),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    // The configured limit applied, not the 10 s default.
    assert!(
        took < Duration::from_secs(10),
        "gave up only after {took:?}"
    );
    eprintln!("timed out after {took:?} with a limit of {timeout:?}");
    assert!(ssh_clients_for(port).is_empty());
    close(None, sshd, &[]);
}

#[test]
fn launchers_nest_ssh_through_ssh() {
    let sshd = start_sshd();
    let (outer_master, state) = run(async {
        let first_hop = connect(&sshd).await;
        // The second connection's ssh client runs at the far end of the first one: its key
        // check, its private directory and its master all live there.
        let second = builder(&sshd).connect(first_hop.clone()).await.unwrap();
        let out = second
            .output(
                &Command::new("sh")
                    .args(["-c", "echo \"$X\""])
                    .env("X", "two hops"),
            )
            .await
            .unwrap();
        assert_eq!(out.stdout, ["two hops"], "{out:?}");
        let master = second.master_pid().unwrap();
        let state = second.state_dir().to_string();
        assert!(remote_alive(&first_hop, master).await);
        drop(second);
        assert_remote_gone(&first_hop, master).await;
        (first_hop, state)
    });
    assert!(!Path::new(&state).exists(), "{state} was not removed");
    close(Some(outer_master), sshd, &[]);
}

#[test]
fn launchers_nest_ssh_run_through_a_sudo_stand_in() {
    let sshd = start_sshd();
    // This machine may have no sudo; a stand-in that checks `-n --` and runs the rest takes
    // its place, so the composition itself is what is tested.
    let sudo = sshd.dir().join("sudo");
    std::fs::write(
        &sudo,
        "#!/bin/sh\n[ \"$1\" = -n ] || exit 90\nshift\n[ \"$1\" = -- ] || exit 91\nshift\nexec \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&sudo, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_executable(&sudo);
    run(async {
        let inner = SudoLauncher::with_program(LocalLauncher, sudo.to_string_lossy());
        let ssh = builder(&sshd).connect(inner).await.unwrap();
        let out = ssh
            .output(&Command::new("echo").arg("as root, over ssh"))
            .await
            .unwrap();
        assert_eq!(out.stdout, ["as root, over ssh"]);
        let master = ssh.master_pid().unwrap();
        let state = PathBuf::from(ssh.state_dir());
        drop(ssh);
        assert_gone(master, "ssh master started through sudo");
        assert!(!state.exists(), "{} was not removed", state.display());
    });
    close(None, sshd, &[]);
}

/// Waits until a freshly written script can be run: a process forked by another test while the
/// file was open for writing keeps it "text file busy" until that process execs.
fn wait_executable(path: &Path) {
    let start = Instant::now();
    while std::process::Command::new(path)
        .args(["-n", "--", "true"])
        .status()
        .map_or(true, |s| !s.success())
    {
        assert!(
            start.elapsed() < GONE_WITHIN,
            "{} never ran",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn piped_stdin_reaches_the_remote_program_and_its_status_comes_back() {
    let sshd = start_sshd();
    let (ssh, pid) = run(async {
        let ssh = connect(&sshd).await;
        let mut p = ssh
            .spawn(
                &Command::new("sh")
                    .args(["-c", "read -r line; echo \"got $line\"; exit 3"])
                    .piped_stdin(),
            )
            .await
            .unwrap();
        let mut events = p.take_events().unwrap();
        let mut stdin = p.take_stdin().unwrap();
        futures_lite::AsyncWriteExt::write_all(&mut stdin, b"over the wire\n")
            .await
            .unwrap();
        stdin.close().await.unwrap();
        let all = collect(&mut events).await;
        assert_eq!(
            all[1..],
            [
                ProcessEvent::Stdout("got over the wire".into()),
                ProcessEvent::Exited(ExitStatus::from_code(3)),
            ]
        );
        (ssh, p.remote_pid())
    });
    close(Some(ssh), sshd, &[pid]);
}
