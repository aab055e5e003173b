//! The fixture programs (`fixtures/src/bin/`), each started for real on a free port: echo,
//! HTTP health, the key-value service in memory, through another kv-server, and against a real
//! PostgreSQL and a real Redis, the failure modes, SIGTERM and bad settings.
//!
//! The programs belong to another package of the workspace, so cargo gives this test no
//! `CARGO_BIN_EXE_*` for them: they are looked up beside this test's own target directory
//! (`target/debug/echo-server`), where `cargo build --workspace` and `cargo nextest run
//! --workspace` put them. If one is missing or older than the fixtures' sources, the test runs
//! `cargo build -p harness-fixtures --bins` once, into the same target directory.
//!
//! PostgreSQL and Redis come from the Debian packages `postgresql` and `redis-server` (`.ci/run`
//! installs them). Every process a test starts runs in a process group of its own, and the test
//! checks that the group is empty and every temporary directory gone when it ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// How long we wait for a line, a response or an exit before failing: generous, since the
/// machine may be a loaded 2-core CI runner. Never a measurement.
const WAIT: Duration = Duration::from_secs(60);

/// A program's environment: the only variables it gets, besides PATH.
type Env<'a> = Vec<(&'a str, &'a str)>;

// Finding (and if need be building) the fixture programs: shared with the orchestrator's tests.
#[path = "support/fixtures.rs"]
mod fixture_programs;
use fixture_programs::bin;

// ---------------------------------------------------------------------------------------------
// Running a program and reading its output.

/// A program started by a test, in a process group of its own, with its output collected line
/// by line (stdout and stderr interleaved as they arrive). Dropping it kills the group.
struct Proc {
    name: String,
    child: Child,
    output: Arc<(Mutex<Output>, Condvar)>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program` with only `env` (and PATH) in its environment, so nothing from the
    /// caller's environment (a stray PORT) changes what is tested.
    fn start(program: impl AsRef<Path>, args: &[&str], env: &[(&str, &str)]) -> Self {
        let program = program.as_ref();
        let name = program.file_name().unwrap().to_string_lossy().into_owned();
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let output = Arc::new((
            Mutex::new(Output {
                lines: Vec::new(),
                open: 2,
            }),
            Condvar::new(),
        ));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        collect(stdout, output.clone());
        collect(stderr, output.clone());
        Self {
            name,
            child,
            output,
            status: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far.
    fn output(&self) -> Vec<String> {
        self.output.0.lock().unwrap().lines.clone()
    }

    /// Waits for a line containing `text` and returns it; fails if the program's output ends
    /// without one.
    fn wait_line(&self, text: &str) -> String {
        let (output, changed) = &*self.output;
        let deadline = Instant::now() + WAIT;
        let mut output = output.lock().unwrap();
        loop {
            if let Some(line) = output.lines.iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let lines = &output.lines;
            assert!(
                output.open > 0,
                "{} ended without printing a line with {text:?}; output: {lines:#?}",
                self.name
            );
            assert!(
                !left.is_zero(),
                "{} printed no line with {text:?} within {WAIT:?}; output: {lines:#?}",
                self.name
            );
            output = changed.wait_timeout(output, left).unwrap().0;
        }
    }

    /// The address from the program's `listening on ADDR` line, as reachable from here.
    fn listening_addr(&self) -> String {
        let line = self.wait_line("listening on ");
        let addr = line.rsplit("listening on ").next().unwrap();
        addr.replace("0.0.0.0:", "127.0.0.1:")
    }

    fn signal(&self, signal: Signal) {
        rustix::process::kill_process(Pid::from_child(&self.child), signal)
            .unwrap_or_else(|e| panic!("signal {}: {e}", self.name));
    }

    /// Waits for the program to exit and for its output to be read to the end.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {WAIT:?}; output: {:#?}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        self.status = Some(status);
        assert_group_empty(self.pid());
        status
    }

    /// Sends SIGTERM and returns the exit status.
    fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::TERM);
        self.wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = rustix::process::kill_process_group(Pid::from_child(&self.child), Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

/// What a program printed, and how many of its two output streams are still open.
struct Output {
    lines: Vec<String>,
    open: usize,
}

fn collect(stream: impl Read + Send + 'static, output: Arc<(Mutex<Output>, Condvar)>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            output.0.lock().unwrap().lines.push(line);
            output.1.notify_all();
        }
        output.0.lock().unwrap().open -= 1;
        output.1.notify_all();
    });
}

/// Members of process group `pgid` that still run (zombies of other parents count as gone).
fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name, which is in parentheses and may contain spaces.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 3 && fields[3] == pgid.to_string() && fields[0] != "Z" {
            members.push(pid);
        }
    }
    members
}

/// Fails unless every process of group `pgid` is gone (waiting a little: a process that was
/// signalled may take a moment to exit).
fn assert_group_empty(pgid: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = group_members(pgid);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes {left:?} of group {pgid} are still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exit_code(status: ExitStatus) -> Option<i32> {
    status.code()
}

/// A port that was free a moment ago, for servers that cannot be told to pick one (PostgreSQL
/// and Redis); our own programs get `PORT=0` and report the port they bound.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// A client for the programs' HTTP, written apart from the fixtures' own so that a bug shared by
// both sides cannot hide.

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(WAIT))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8(raw[..split].to_vec()).expect("a UTF-8 head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .expect("a header")
        })
        .collect::<Vec<_>>();
    let body = raw[split + 4..].to_vec();
    let response = HttpResponse {
        status,
        headers,
        body,
    };
    let length: usize = response
        .header("content-length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(
        response.body.len(),
        length,
        "the body is as long as Content-Length says"
    );
    Ok(response)
}

fn get(addr: &str, path: &str) -> HttpResponse {
    http(addr, "GET", path, b"").unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// echo-server and http-health.

#[test]
fn echo_server_echoes_each_line_and_stops_on_sigterm() {
    let mut echo = Proc::start(bin("echo-server"), &[], &[("PORT", "0")]);
    let line = echo.wait_line("listening on");
    // Without HOST it listens on every interface, as a program in a container must.
    assert!(
        line.starts_with("echo-server: listening on 0.0.0.0:"),
        "{line}"
    );
    let addr = echo.listening_addr();

    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for sent in ["hello\n", "a second, longer line\n"] {
        stream.write_all(sent.as_bytes()).unwrap();
        let mut back = String::new();
        reader.read_line(&mut back).unwrap();
        assert_eq!(back, sent);
    }
    drop((stream, reader));
    echo.wait_line("closed");
    let log: Vec<String> = echo
        .output()
        .into_iter()
        .filter(|l| l.contains("echoed"))
        .collect();
    assert_eq!(log.len(), 2, "one log line per echoed line: {log:?}");
    assert!(log[0].ends_with("echoed 6 bytes"), "{log:?}");

    assert_eq!(exit_code(echo.terminate()), Some(0));
    echo.wait_line("received SIGTERM, shutting down");
}

#[test]
fn http_health_answers_503_until_ready_then_200() {
    // Not ready for ten minutes: /health is 503 for the whole test, / answers at once.
    let not_yet = Proc::start(
        bin("http-health"),
        &[],
        &[
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
            ("READY_AFTER_MS", "600000"),
        ],
    );
    let addr = not_yet.listening_addr();
    let health = get(&addr, "/health");
    assert_eq!(
        (health.status, health.text()),
        (503, "not ready: ready 600000 ms after start\n".to_owned())
    );
    assert_eq!(get(&addr, "/").text(), "http-health\n");
    assert_eq!(get(&addr, "/elsewhere").status, 404);
    assert_eq!(http(&addr, "POST", "/health", b"").unwrap().status, 405);
    not_yet.wait_line("GET /health -> 503");

    // Ready soon: /health turns 200, after the program says so.
    let ready = Proc::start(
        bin("http-health"),
        &[],
        &[
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
            ("READY_AFTER_MS", "200"),
            ("SERVICE_NAME", "web"),
        ],
    );
    let addr = ready.listening_addr();
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while seen.last() != Some(&200) {
        assert!(
            Instant::now() < deadline,
            "never healthy; statuses {seen:?}; output {:#?}",
            ready.output()
        );
        seen.push(get(&addr, "/health").status);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen.iter().all(|s| *s == 503 || *s == 200), "{seen:?}");
    ready.wait_line("http-health: ready after 200 ms");
    assert_eq!(get(&addr, "/").text(), "web\n");
}

#[test]
fn programs_take_the_port_from_the_flag_over_the_variable() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    // PORT names a port in use; --port 0 wins, so the program starts anyway.
    let echo = Proc::start(
        bin("echo-server"),
        &["--port", "0"],
        &[("PORT", &taken_port), ("HOST", "127.0.0.1")],
    );
    assert_ne!(echo.listening_addr(), format!("127.0.0.1:{taken_port}"));
    // And with only PORT, the port in use makes it fail, naming the address.
    let mut clash = Proc::start(
        bin("echo-server"),
        &[],
        &[("PORT", &taken_port), ("HOST", "127.0.0.1")],
    );
    assert_eq!(exit_code(clash.wait()), Some(1));
    clash.wait_line(&format!(
        "echo-server: cannot listen on 127.0.0.1:{taken_port}"
    ));
}

// ---------------------------------------------------------------------------------------------
// failing-service.

#[test]
fn failing_service_fails_in_each_mode() {
    // exit: never listens, exits 3 with a message.
    let mut exit = Proc::start(
        bin("failing-service"),
        &[],
        &[("FAIL_MODE", "exit"), ("FAIL_AFTER_MS", "100")],
    );
    assert_eq!(exit_code(exit.wait()), Some(3));
    assert_eq!(
        exit.output(),
        ["failing-service: failing on purpose after 100 ms (FAIL_MODE=exit)"]
    );

    // unhealthy: listens, /health is 500 every time.
    let unhealthy = Proc::start(
        bin("failing-service"),
        &[],
        &[
            ("FAIL_MODE", "unhealthy"),
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
        ],
    );
    let addr = unhealthy.listening_addr();
    for _ in 0..3 {
        assert_eq!(get(&addr, "/health").status, 500);
    }
    assert_eq!(get(&addr, "/").status, 200);

    // crash-later: healthy, then exits 3.
    let mut crash = Proc::start(
        bin("failing-service"),
        &[],
        &[
            ("FAIL_MODE", "crash-later"),
            ("FAIL_AFTER_MS", "3000"),
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
        ],
    );
    let addr = crash.listening_addr();
    assert_eq!(get(&addr, "/health").status, 200);
    assert_eq!(exit_code(crash.wait()), Some(3));
    crash.wait_line("crashing on purpose after 3000 ms (FAIL_MODE=crash-later)");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "nothing listens on {addr} once it crashed"
    );

    // hang: says so, never listens, and a SIGTERM still ends it cleanly.
    let mut hang = Proc::start(
        bin("failing-service"),
        &[],
        &[("FAIL_MODE", "hang"), ("PORT", "0")],
    );
    hang.wait_line("hanging on purpose without listening (FAIL_MODE=hang)");
    assert!(
        hang.child.try_wait().unwrap().is_none(),
        "a hanging service keeps running"
    );
    assert_eq!(exit_code(hang.terminate()), Some(0));
    assert!(
        !hang.output().iter().any(|l| l.contains("listening on")),
        "{:?}",
        hang.output()
    );
}

// ---------------------------------------------------------------------------------------------
// Signals and settings, for every program.

#[test]
fn every_program_exits_0_on_sigterm_and_sigint() {
    // (program, environment, the line that shows it is up, signal)
    let unreachable = format!("127.0.0.1:{}", free_port());
    let cases: Vec<(&str, Env, &str, Signal)> = vec![
        (
            "echo-server",
            vec![("PORT", "0")],
            "listening on",
            Signal::TERM,
        ),
        (
            "http-health",
            vec![("PORT", "0")],
            "listening on",
            Signal::TERM,
        ),
        (
            "http-health",
            vec![("PORT", "0")],
            "listening on",
            Signal::INT,
        ),
        (
            "kv-server",
            vec![("PORT", "0"), ("KV_BACKEND", "memory")],
            "listening on",
            Signal::TERM,
        ),
        // Still waiting for its database: a stop then is a clean stop too.
        (
            "kv-server",
            vec![("PORT", "0"), ("POSTGRES_ADDR", &unreachable)],
            "waiting for postgres",
            Signal::TERM,
        ),
        (
            "failing-service",
            vec![("PORT", "0"), ("FAIL_MODE", "unhealthy")],
            "listening on",
            Signal::TERM,
        ),
        (
            "failing-service",
            vec![("FAIL_MODE", "hang")],
            "hanging on purpose",
            Signal::TERM,
        ),
    ];
    let mut results = Vec::new();
    for (program, mut env, up, signal) in cases {
        env.push(("HOST", "127.0.0.1"));
        let mut proc = Proc::start(bin(program), &[], &env);
        proc.wait_line(up);
        proc.signal(signal);
        let status = proc.wait();
        let name = if signal == Signal::TERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        proc.wait_line(&format!("{program}: received {name}, shutting down"));
        results.push((program, name, exit_code(status)));
    }
    let expected = vec![
        ("echo-server", "SIGTERM", Some(0)),
        ("http-health", "SIGTERM", Some(0)),
        ("http-health", "SIGINT", Some(0)),
        ("kv-server", "SIGTERM", Some(0)),
        ("kv-server", "SIGTERM", Some(0)),
        ("failing-service", "SIGTERM", Some(0)),
        ("failing-service", "SIGTERM", Some(0)),
    ];
    assert_eq!(results, expected);
}

#[test]
fn bad_settings_exit_2_naming_the_variable() {
    // (program, args, environment) and the one line each must print.
    let cases: Vec<(&str, Vec<&str>, Env, &str)> = vec![
        (
            "echo-server",
            vec![],
            vec![],
            "echo-server: bad configuration: PORT: not set",
        ),
        (
            "echo-server",
            vec![],
            vec![("PORT", "http")],
            r#"echo-server: bad configuration: PORT: "http" is not a port number (0 to 65535)"#,
        ),
        (
            "echo-server",
            vec!["--port", "99999"],
            vec![],
            r#"echo-server: bad configuration: --port: "99999" is not a port number (0 to 65535)"#,
        ),
        (
            "echo-server",
            vec!["--verbose"],
            vec![("PORT", "0")],
            "echo-server: bad configuration: --verbose: unknown argument (the only flag is --port N)",
        ),
        (
            "echo-server",
            vec![],
            vec![("PORT", "0"), ("HOST", "no-such-host.invalid")],
            "echo-server: bad configuration: HOST: cannot resolve",
        ),
        (
            "http-health",
            vec![],
            vec![("PORT", "0"), ("READY_AFTER_MS", "soon")],
            r#"http-health: bad configuration: READY_AFTER_MS: "soon" is not a whole number of milliseconds"#,
        ),
        (
            "kv-server",
            vec![],
            vec![("PORT", "0")],
            "kv-server: bad configuration: KV_BACKEND: not set and neither POSTGRES_ADDR nor KV_STORE_ADDR is given (set KV_BACKEND=memory to keep values in memory)",
        ),
        (
            "kv-server",
            vec![],
            vec![("PORT", "0"), ("KV_BACKEND", "sqlite")],
            r#"kv-server: bad configuration: KV_BACKEND: "sqlite" is not a backend (expected memory, postgres or upstream)"#,
        ),
        (
            "kv-server",
            vec![],
            vec![("PORT", "0"), ("KV_BACKEND", "postgres")],
            "kv-server: bad configuration: POSTGRES_ADDR: not set (KV_BACKEND=postgres needs it)",
        ),
        (
            "kv-server",
            vec![],
            vec![("PORT", "0"), ("POSTGRES_ADDR", "localhost")],
            r#"kv-server: bad configuration: POSTGRES_ADDR: "localhost" is not a host:port address"#,
        ),
        (
            "kv-server",
            vec![],
            vec![
                ("PORT", "0"),
                ("POSTGRES_ADDR", "db:5432"),
                ("REDIS_ADDR", "cache"),
            ],
            r#"kv-server: bad configuration: REDIS_ADDR: "cache" is not a host:port address"#,
        ),
        (
            "kv-server",
            vec![],
            vec![("PORT", "0"), ("KV_BACKEND", "upstream")],
            "kv-server: bad configuration: KV_STORE_ADDR: not set (KV_BACKEND=upstream needs it)",
        ),
        (
            "kv-server",
            vec![],
            vec![
                ("PORT", "0"),
                ("KV_BACKEND", "memory"),
                ("KV_DEPENDENCY_TIMEOUT_MS", "-1"),
            ],
            r#"kv-server: bad configuration: KV_DEPENDENCY_TIMEOUT_MS: "-1" is not a whole number of milliseconds"#,
        ),
        (
            "failing-service",
            vec![],
            vec![],
            "failing-service: bad configuration: FAIL_MODE: not set (expected exit, unhealthy, hang or crash-later)",
        ),
        (
            "failing-service",
            vec![],
            vec![("FAIL_MODE", "explode")],
            r#"failing-service: bad configuration: FAIL_MODE: "explode" is not a mode (expected exit, unhealthy, hang or crash-later)"#,
        ),
        (
            "failing-service",
            vec![],
            vec![("FAIL_MODE", "exit"), ("FAIL_AFTER_MS", "1.5")],
            r#"failing-service: bad configuration: FAIL_AFTER_MS: "1.5" is not a whole number of milliseconds"#,
        ),
        (
            "failing-service",
            vec![],
            vec![("FAIL_MODE", "unhealthy")],
            "failing-service: bad configuration: PORT: not set",
        ),
    ];
    let mut got = Vec::new();
    let mut expected = Vec::new();
    for (program, args, env, line) in cases {
        let mut proc = Proc::start(bin(program), &args, &env);
        let code = exit_code(proc.wait());
        // The output is read to its end once the pipes close; wait for the one line.
        proc.wait_line("bad configuration");
        let output = proc.output();
        // A resolver error's wording varies by libc, so the HOST case compares a prefix.
        let printed = match output.as_slice() {
            [one] if one.starts_with(line) => line.to_owned(),
            _ => format!("{output:?}"),
        };
        got.push((program, args.join(" "), code, printed));
        expected.push((program, args.join(" "), Some(2), line.to_owned()));
    }
    assert_eq!(got, expected);
}

// ---------------------------------------------------------------------------------------------
// kv-server.

/// PUT, GET (with where the value came from), DELETE against a kv-server at `addr`.
fn kv_round_trip(addr: &str, key: &str, value: &[u8], source: &str) {
    let put = http(addr, "PUT", &format!("/kv/{key}"), value).unwrap();
    assert_eq!(put.status, 204, "PUT: {}", put.text());
    let got = get(addr, &format!("/kv/{key}"));
    assert_eq!(
        (got.status, got.body.as_slice(), got.header("x-kv-source")),
        (200, value, Some(source))
    );
    assert_eq!(
        http(addr, "DELETE", &format!("/kv/{key}"), b"")
            .unwrap()
            .status,
        204
    );
    assert_eq!(get(addr, &format!("/kv/{key}")).status, 404);
    assert_eq!(
        http(addr, "DELETE", &format!("/kv/{key}"), b"")
            .unwrap()
            .status,
        404
    );
}

#[test]
fn kv_server_in_memory_and_through_another_kv_server() {
    let store = Proc::start(
        bin("kv-server"),
        &[],
        &[
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
            ("KV_BACKEND", "memory"),
        ],
    );
    let store_addr = store.listening_addr();
    store.wait_line("kv-server: storing in memory");
    kv_round_trip(&store_addr, "greeting", b"hello", "memory");
    // Any bytes, and keys that need escaping.
    kv_round_trip(
        &store_addr,
        "two%20words",
        &[0, 159, 146, 150, 255],
        "memory",
    );
    assert_eq!(get(&store_addr, "/health").status, 200);

    // A second kv-server in front of the first; the injected address names the dependency.
    let api = Proc::start(
        bin("kv-server"),
        &[],
        &[
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
            ("KV_STORE_ADDR", &store_addr),
        ],
    );
    let api_addr = api.listening_addr();
    api.wait_line(&format!("kv-server: storing in kv-server at {store_addr}"));
    kv_round_trip(&api_addr, "chained", b"through two servers", "upstream");
    let put = http(&api_addr, "PUT", "/kv/kept", b"in the store").unwrap();
    assert_eq!(put.status, 204);
    let direct = get(&store_addr, "/kv/kept");
    assert_eq!(
        (direct.text(), direct.header("x-kv-source")),
        ("in the store".to_owned(), Some("memory"))
    );
    store.wait_line("PUT /kv/kept -> 204");
    assert_eq!(
        get(&api_addr, "/").text(),
        format!("kv-server (kv-server at {store_addr})\n")
    );
}

#[test]
fn kv_server_gives_up_on_an_unreachable_dependency_naming_it() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut kv = Proc::start(
        bin("kv-server"),
        &[],
        &[
            ("PORT", "0"),
            ("POSTGRES_ADDR", &addr),
            ("KV_DEPENDENCY_TIMEOUT_MS", "1000"),
        ],
    );
    assert_eq!(exit_code(kv.wait()), Some(1));
    kv.wait_line(&format!(
        "kv-server: waiting for postgres at {addr}: Connection refused"
    ));
    kv.wait_line(&format!(
        "kv-server: giving up: postgres at {addr} still unreachable after"
    ));
    assert!(
        !kv.output().iter().any(|l| l.contains("listening on")),
        "it never listens without its database"
    );
}

// ---------------------------------------------------------------------------------------------
// A real PostgreSQL and a real Redis.

/// A PostgreSQL server run by `fixtures/scripts/postgres.sh`: a fresh cluster in a temporary
/// directory, as the postgres user when we are root.
struct Postgres {
    proc: Proc,
    port: u16,
    root: PathBuf,
}

impl Postgres {
    fn start(host_auth: &str) -> Self {
        Self::start_on(free_port(), host_auth)
    }

    /// Starts it on `port`, with `host_auth` as the pg_hba method for TCP connections.
    fn start_on(port: u16, host_auth: &str) -> Self {
        assert!(
            std::fs::read_dir("/usr/lib/postgresql").is_ok(),
            "PostgreSQL is not installed: apt-get install postgresql (as .ci/run does)"
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scripts/postgres.sh");
        let proc = Proc::start(
            &script,
            &[],
            &[
                ("PORT", &port.to_string()),
                ("POSTGRES_HOST_AUTH", host_auth),
            ],
        );
        let line = proc.wait_line("postgres.sh: data directory ");
        let root = PathBuf::from(line.rsplit("data directory ").next().unwrap());
        Self { proc, port, root }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        self.proc
            .wait_line("database system is ready to accept connections");
    }

    /// Runs SQL as the superuser over the Unix socket and returns psql's unaligned output.
    fn psql(&self, sql: &str) -> String {
        let output = Command::new("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-h",
            ])
            .arg(&self.root)
            .args(["-p", &self.port.to_string(), "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .trim_end()
            .to_owned()
    }

    /// Stops the server with SIGTERM to its group, as an orchestrator does, and checks that
    /// the script exits 0, every process is gone and the directory removed.
    fn stop(mut self) {
        rustix::process::kill_process_group(Pid::from_child(&self.proc.child), Signal::TERM)
            .unwrap();
        assert_eq!(
            exit_code(self.proc.wait()),
            Some(0),
            "{:#?}",
            self.proc.output()
        );
        assert!(
            !self.root.exists(),
            "{} is left behind",
            self.root.display()
        );
    }
}

impl Drop for Postgres {
    /// On a failed test, still stop the server the orderly way, so that the script removes
    /// its directory; the process group is killed after that in any case.
    fn drop(&mut self) {
        if self.proc.status.is_none() {
            let _ = rustix::process::kill_process_group(
                Pid::from_child(&self.proc.child),
                Signal::TERM,
            );
            let deadline = Instant::now() + WAIT;
            while self.proc.child.try_wait().is_ok_and(|s| s.is_none()) && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A Redis server with no persistence.
fn start_redis(port: u16) -> Proc {
    assert!(
        Path::new("/usr/bin/redis-server").exists(),
        "Redis is not installed: apt-get install redis-server"
    );
    let port = port.to_string();
    Proc::start(
        "/usr/bin/redis-server",
        &[
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &[],
    )
}

/// `GET key` on the Redis at `port`, with a hand-made RESP request, independent of the
/// fixtures' client.
fn redis_get(port: u16, key: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    let length: i64 = head
        .trim_end()
        .strip_prefix('$')
        .unwrap_or_else(|| panic!("reply {head:?}"))
        .parse()
        .unwrap();
    let Ok(length) = usize::try_from(length) else {
        return None;
    };
    let mut value = vec![0; length + 2];
    reader.read_exact(&mut value).unwrap();
    value.truncate(length);
    Some(String::from_utf8(value).unwrap())
}

#[test]
fn kv_server_stores_in_postgres_and_caches_in_redis() {
    let redis_port = free_port();
    let postgres_port = free_port();

    // kv-server first, as a topology started in the wrong order would: it waits, saying why.
    let mut kv = Proc::start(
        bin("kv-server"),
        &[],
        &[
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
            ("POSTGRES_ADDR", &format!("127.0.0.1:{postgres_port}")),
            ("REDIS_ADDR", &format!("127.0.0.1:{redis_port}")),
            ("POSTGRES_USER", "postgres"),
            ("POSTGRES_DB", "postgres"),
        ],
    );
    kv.wait_line(&format!(
        "kv-server: waiting for postgres at 127.0.0.1:{postgres_port}"
    ));

    let postgres = Postgres::start_on(postgres_port, "trust");
    postgres.wait_ready();
    kv.wait_line(&format!(
        "kv-server: waiting for redis at 127.0.0.1:{redis_port}"
    ));
    let mut redis = start_redis(redis_port);
    redis.wait_line("Ready to accept connections");
    let addr = kv.listening_addr();
    kv.wait_line(&format!(
        "storing in postgres at 127.0.0.1:{postgres_port}, cache redis at 127.0.0.1:{redis_port}"
    ));

    // PUT then GET: the value comes back, from the cache it was written through to.
    let put = http(&addr, "PUT", "/kv/greeting", b"hello from postgres").unwrap();
    assert_eq!(put.status, 204, "{}", put.text());
    let got = get(&addr, "/kv/greeting");
    assert_eq!(
        (got.text(), got.header("x-kv-source")),
        ("hello from postgres".to_owned(), Some("cache"))
    );

    // The row is in PostgreSQL, the value in Redis.
    assert_eq!(
        postgres.psql("SELECT key || '=' || convert_from(value, 'UTF8') FROM kv"),
        "greeting=hello from postgres"
    );
    assert_eq!(
        redis_get(redis_port, "kv:greeting").as_deref(),
        Some("hello from postgres")
    );

    // A value in the database but not the cache is read from the database, then cached.
    postgres.psql(
        "INSERT INTO kv (key, value) VALUES ('direct', convert_to('written by psql', 'UTF8'))",
    );
    let got = get(&addr, "/kv/direct");
    assert_eq!(
        (got.text(), got.header("x-kv-source")),
        ("written by psql".to_owned(), Some("database"))
    );
    assert_eq!(
        redis_get(redis_port, "kv:direct").as_deref(),
        Some("written by psql")
    );

    // Redis dies: reads still work, from PostgreSQL, and the log says why.
    redis.signal(Signal::KILL);
    redis.wait();
    let got = get(&addr, "/kv/greeting");
    assert_eq!(
        (got.status, got.text(), got.header("x-kv-source")),
        (200, "hello from postgres".to_owned(), Some("database"))
    );
    kv.wait_line(&format!(
        "kv-server: redis at 127.0.0.1:{redis_port} unavailable"
    ));
    let health = get(&addr, "/health");
    assert_eq!(
        (health.status, health.text()),
        (
            200,
            format!(
                "postgres at 127.0.0.1:{postgres_port} up, redis at 127.0.0.1:{redis_port} down\n"
            )
        )
    );
    // Writes and deletes too.
    assert_eq!(
        http(&addr, "PUT", "/kv/later", b"while redis is down")
            .unwrap()
            .status,
        204
    );
    assert_eq!(postgres.psql("SELECT count(*) FROM kv"), "3");
    assert_eq!(http(&addr, "DELETE", "/kv/later", b"").unwrap().status, 204);
    assert_eq!(
        postgres.psql("SELECT count(*) FROM kv WHERE key = 'later'"),
        "0"
    );

    // Redis comes back (empty): kv-server notices on a later request and caches again.
    let mut redis = start_redis(redis_port);
    redis.wait_line("Ready to accept connections");
    let deadline = Instant::now() + WAIT;
    while get(&addr, "/kv/greeting").header("x-kv-source") != Some("cache") {
        assert!(
            Instant::now() < deadline,
            "never cached again: {:#?}",
            kv.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    kv.wait_line(&format!(
        "kv-server: redis at 127.0.0.1:{redis_port} is back; caching again"
    ));
    assert_eq!(
        redis_get(redis_port, "kv:greeting").as_deref(),
        Some("hello from postgres")
    );
    assert_eq!(exit_code(redis.terminate()), Some(0));

    // Stop in reverse order; everything goes.
    assert_eq!(exit_code(kv.terminate()), Some(0));
    postgres.stop();
}

#[test]
fn kv_server_authenticates_with_md5_and_scram_passwords() {
    // Password authentication for TCP; the superuser still comes in over the socket.
    let postgres = Postgres::start("md5");
    postgres.wait_ready();
    // A role per password hash: with `md5` in pg_hba, PostgreSQL asks for MD5 when the stored
    // password is an MD5 hash and for SCRAM-SHA-256 when it is a SCRAM verifier.
    postgres
        .psql("SET password_encryption = 'md5'; CREATE ROLE kv_md5 LOGIN PASSWORD 'md5 secret'");
    postgres.psql("SET password_encryption = 'scram-sha-256'; CREATE ROLE kv_scram LOGIN PASSWORD 'scram secret'");
    postgres.psql("CREATE DATABASE kv_md5 OWNER kv_md5");
    postgres.psql("CREATE DATABASE kv_scram OWNER kv_scram");
    let hashes = postgres.psql(
        "SELECT rolname || ' ' || CASE WHEN rolpassword LIKE 'md5%' THEN 'md5' \
         WHEN rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram' END \
         FROM pg_authid WHERE rolname IN ('kv_md5', 'kv_scram') ORDER BY 1",
    );
    assert_eq!(hashes, "kv_md5 md5\nkv_scram scram");

    let pg_addr = postgres.addr();
    for (user, password) in [("kv_md5", "md5 secret"), ("kv_scram", "scram secret")] {
        let env = [
            ("PORT", "0"),
            ("HOST", "127.0.0.1"),
            ("POSTGRES_ADDR", pg_addr.as_str()),
            ("POSTGRES_USER", user),
            ("POSTGRES_PASSWORD", password),
        ];
        let mut kv = Proc::start(bin("kv-server"), &[], &env);
        let addr = kv.listening_addr();
        kv.wait_line(&format!(
            "connected to postgres at {pg_addr} as {user}, database {user}"
        ));
        kv_round_trip(&addr, "k", user.as_bytes(), "database");
        assert_eq!(exit_code(kv.terminate()), Some(0));

        // A wrong password fails at once (no retrying), and says so.
        let mut env = env;
        env[4] = ("POSTGRES_PASSWORD", "wrong");
        let mut wrong = Proc::start(bin("kv-server"), &[], &env);
        assert_eq!(exit_code(wrong.wait()), Some(1));
        wrong.wait_line(&format!("kv-server: giving up: postgres at {pg_addr}: password authentication failed for user \"{user}\""));
        assert!(
            !wrong.output().iter().any(|l| l.contains("waiting for")),
            "{:#?}",
            wrong.output()
        );
    }

    // No password at all: the message says which variable to set.
    let mut none = Proc::start(
        bin("kv-server"),
        &[],
        &[
            ("PORT", "0"),
            ("POSTGRES_ADDR", &pg_addr),
            ("POSTGRES_USER", "kv_md5"),
        ],
    );
    assert_eq!(exit_code(none.wait()), Some(1));
    none.wait_line("the server wants a password for kv_md5; set POSTGRES_PASSWORD");
    postgres.stop();
}

// ---------------------------------------------------------------------------------------------
// The topology files.

/// For each service of `topology`: its name, its dependencies, and the environment variable
/// each dependency reaches it through.
fn dependencies(topology: &harness::topology::TopologyConfig) -> Vec<(String, Vec<String>)> {
    topology
        .services
        .values()
        .map(|s| {
            (
                s.name.clone(),
                s.dependencies
                    .iter()
                    .map(|d| harness::topology::addr_var(d))
                    .collect(),
            )
        })
        .collect()
}

/// Whether a fixture topology is an overlay (for demo.yaml or hybrid.yaml) rather than a
/// topology of its own.
fn names_overlay(file: &Path) -> bool {
    file.file_name().is_some_and(|n| {
        let name = n.to_string_lossy();
        name.starts_with("demo-docker") || name == "hybrid-lab.yaml"
    })
}

#[test]
fn topologies_load_and_name_programs_that_exist() {
    use harness::topology::{ServiceTarget, TopologyConfig};

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("fixtures/topologies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "demo-docker-store.yaml",
            "demo-docker.yaml",
            "demo.yaml",
            "escaping.yaml",
            "failing.yaml",
            "hybrid-lab.yaml",
            "hybrid.yaml",
            "in-container.yaml",
            "kv-postgres-redis.yaml",
            "teardown-docker.yaml",
            "teardown.yaml",
        ]
    );
    // The overlays for demo.yaml: what they build into images is one of our programs.
    let demo = root.join("fixtures/topologies/demo.yaml");
    let docker = root.join("fixtures/topologies/demo-docker.yaml");
    let store = root.join("fixtures/topologies/demo-docker-store.yaml");
    for overlays in [vec![&docker], vec![&docker, &store]] {
        let topology =
            TopologyConfig::load_with_overlays(&demo, &overlays).unwrap_or_else(|e| panic!("{e}"));
        let built: Vec<_> = topology
            .services
            .values()
            .filter_map(|service| match &service.target {
                ServiceTarget::Docker(docker) => docker.build.as_ref(),
                _ => None,
            })
            .collect();
        assert_eq!(built.len(), overlays.len(), "{overlays:?}");
        for build in built {
            let name = build.binary.strip_prefix("./target/debug/").unwrap();
            assert!(bin(name).is_file(), "{} is missing", build.binary);
        }
    }

    let mut loaded = Vec::new();
    for file in files.iter().filter(|f| !names_overlay(f)) {
        let topology = TopologyConfig::load(file).unwrap_or_else(|e| panic!("{e}"));
        for service in topology.services.values() {
            // What each target runs: a program here, a binary built into an image, a program
            // on a LAN host (which shares this machine's programs in a lab), a package, or a
            // compose file.
            let path = match &service.target {
                ServiceTarget::Process(process) => process.binary.clone(),
                ServiceTarget::Docker(docker) => {
                    let build = docker.build.as_ref().unwrap_or_else(|| {
                        panic!("{}: {} pulls an image", file.display(), service.name)
                    });
                    build.binary.clone()
                }
                ServiceTarget::RemoteLan(remote) => remote.binary.clone(),
                ServiceTarget::Wireguard(wireguard) => wireguard.package.clone(),
                ServiceTarget::Compose(compose) => compose.file.clone(),
            };
            // Our programs by their cargo path, a bare name on PATH, anything else relative to
            // the workspace root.
            let on_path = |name: &str| {
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
                    .unwrap_or_else(|| PathBuf::from(name))
            };
            let program = match path.strip_prefix("./target/debug/") {
                Some(name) => bin(name),
                None if !path.contains('/') => on_path(&path),
                None => root.join(&path),
            };
            assert!(
                program.is_file() || program.join("manifest.yaml").is_file(),
                "{}: {} runs {}, which is missing",
                file.display(),
                service.name,
                program.display()
            );
        }
        loaded.push(dependencies(&topology));
    }

    // The dependency variables are the ones the programs read (kv-server: KV_STORE_ADDR,
    // POSTGRES_ADDR, REDIS_ADDR; the in-container topology's shells: ORIGIN_ADDR, WEB_ADDR); the
    // rest only order the start.
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let expected = vec![
        vec![
            ("kv-store".to_owned(), vec![]),
            ("kv-api".to_owned(), strings(&["KV_STORE_ADDR"])),
            ("echo".to_owned(), vec![]),
            ("web".to_owned(), strings(&["KV_API_ADDR", "ECHO_ADDR"])),
        ],
        vec![("escaper".to_owned(), vec![])],
        vec![
            ("healthy".to_owned(), vec![]),
            ("broken".to_owned(), strings(&["HEALTHY_ADDR"])),
            ("never".to_owned(), strings(&["BROKEN_ADDR"])),
        ],
        vec![
            ("postgres".to_owned(), vec![]),
            ("cache-server".to_owned(), vec![]),
            (
                "api-server".to_owned(),
                strings(&["POSTGRES_ADDR", "CACHE_SERVER_ADDR"]),
            ),
            ("load-generator".to_owned(), strings(&["API_SERVER_ADDR"])),
        ],
        vec![
            ("origin".to_owned(), vec![]),
            ("web".to_owned(), strings(&["ORIGIN_ADDR"])),
            ("client".to_owned(), strings(&["WEB_ADDR"])),
        ],
        vec![
            ("postgres".to_owned(), vec![]),
            ("redis".to_owned(), vec![]),
            ("kv".to_owned(), strings(&["POSTGRES_ADDR", "REDIS_ADDR"])),
        ],
        vec![
            ("echo".to_owned(), vec![]),
            ("web".to_owned(), strings(&["ECHO_ADDR"])),
        ],
        vec![
            ("echo".to_owned(), vec![]),
            ("web".to_owned(), strings(&["ECHO_ADDR"])),
        ],
    ];
    assert_eq!(loaded, expected);
}
