//! Topology files: the ADR's examples, every refusal with its exact message, the dependency
//! graph, placeholders, env files through a real shell, overlays and `HARNESS_OVERLAY`.
//!
//! Expected results live beside the inputs in `tests/topology_files/` and are compared whole.
//! After an intended change of output, `HARNESS_BLESS=1 cargo test --test topology` rewrites
//! them; review the diff.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::topology::{
    DependencyGraph, EnvFileError, HealthCheck, PlaceholderError, PortSpec, Probe, ServiceTarget,
    TopologyConfig, TopologyError, addr_var, env_prefix, format_duration, parse_duration,
    render_env_file, substitute, write_env_file,
};

const FILES: &str = "tests/topology_files";

/// Compares `actual` with the file `expected`, or writes it there under `HARNESS_BLESS=1`.
fn compare(actual: &str, expected: &Path) {
    if std::env::var_os("HARNESS_BLESS").is_some() {
        fs::write(expected, actual).unwrap();
        return;
    }
    let wanted = fs::read_to_string(expected).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (bless with HARNESS_BLESS=1)",
            expected.display()
        )
    });
    if actual != wanted {
        let line = actual
            .lines()
            .zip(wanted.lines())
            .position(|(a, w)| a != w)
            .unwrap_or_else(|| actual.lines().count().min(wanted.lines().count()));
        panic!(
            "output differs from {} at line {}:\n  got:      {:?}\n  expected: {:?}\nwhole output:\n{actual}",
            expected.display(),
            line + 1,
            actual.lines().nth(line),
            wanted.lines().nth(line),
        );
    }
}

/// The files in `dir` ending in `.yaml`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn model_json(topology: &TopologyConfig) -> String {
    serde_json::to_string_pretty(topology).unwrap() + "\n"
}

fn load_error(path: &Path, overlays: &[PathBuf]) -> TopologyError {
    match TopologyConfig::load_with_overlays(path, overlays) {
        Ok(topology) => panic!("{} loaded but should not: {topology:#?}", path.display()),
        Err(e) => e,
    }
}

#[test]
fn good_files_parse_into_the_expected_model() {
    let files = yaml_files(&Path::new(FILES).join("good"));
    assert!(files.len() >= 3, "the good cases are missing: {files:?}");
    for file in files {
        let topology = TopologyConfig::load(&file)
            .unwrap_or_else(|e| panic!("{} does not load:\n{e}", file.display()));
        compare(&model_json(&topology), &file.with_extension("json"));
    }
}

#[test]
fn the_adr_hybrid_example_keeps_every_field_and_its_place() {
    let path = Path::new(FILES).join("good/adr_hybrid.yaml");
    let topology = TopologyConfig::load(&path).unwrap();
    let names: Vec<&str> = topology.services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["api-server", "postgres", "cache-server", "load-generator"]
    );

    let api = &topology.services["api-server"];
    let ServiceTarget::Process(process) = &api.target else {
        panic!("api-server is not a process: {:?}", api.target);
    };
    assert_eq!(process.binary, "./target/debug/api-server");
    assert_eq!(process.args, ["--port", "8080"]);
    assert_eq!(api.port, PortSpec::Unset);
    assert!(api.dependencies.is_empty() && api.health_check.is_none());

    let at = |service: &str, field: &str| {
        let l = topology.services[service].location_of(field);
        (l.file.to_path_buf(), l.line, l.column)
    };
    assert_eq!(at("api-server", ""), (path.clone(), 3, 3));
    assert_eq!(
        at("api-server", "target.process.binary"),
        (path.clone(), 6, 17)
    );
    assert_eq!(
        at("api-server", "target.process.args[1]"),
        (path.clone(), 7, 26)
    );
    assert_eq!(
        at("postgres", "target.docker.env.POSTGRES_PASSWORD"),
        (path.clone(), 15, 30)
    );
    // A field that was not written falls back to its nearest written ancestor.
    assert_eq!(at("postgres", "target.docker.ports"), (path.clone(), 12, 7));
    assert_eq!(
        at("load-generator", "health_check.interval"),
        (path.clone(), 26, 3)
    );
    assert_eq!(
        topology.services["cache-server"].location().to_string(),
        format!("{}:18:3", path.display())
    );
    assert_eq!(topology.project_dir(), Path::new(FILES).join("good"));
}

#[test]
fn bad_files_are_refused_with_every_mistake_located() {
    let files = yaml_files(&Path::new(FILES).join("bad"));
    assert!(files.len() >= 10, "the bad cases are missing: {files:?}");
    for file in files {
        let error = load_error(&file, &[]);
        assert!(
            !error.diagnostics().is_empty(),
            "{}: no diagnostics",
            file.display()
        );
        compare(&format!("{error}\n"), &file.with_extension("stderr"));
    }
}

#[test]
fn a_missing_file_is_named() {
    let error = TopologyConfig::load("tests/topology_files/no-such-file.yaml").unwrap_err();
    assert_eq!(
        error.to_string(),
        "read topology file tests/topology_files/no-such-file.yaml: No such file or directory (os error 2)"
    );
}

/// The topologies shipped in `fixtures/` must always load, each overlay over its topology.
#[test]
fn fixture_topologies_load() {
    for file in yaml_files(Path::new("fixtures/topologies")) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let base = match name.as_str() {
            "hybrid-lab.yaml" => Some("hybrid.yaml"),
            _ if name.starts_with("demo-docker") => Some("demo.yaml"),
            _ => None,
        };
        let loaded = match base {
            Some(base) => TopologyConfig::load_with_overlays(file.with_file_name(base), &[&file]),
            None => TopologyConfig::load(&file),
        };
        if let Err(e) = loaded {
            panic!("{} does not load:\n{e}", file.display());
        }
    }
}

fn chain_and_fan_out() -> TopologyConfig {
    // A chain db <- cache <- api <- gateway, and a fan-out: three workers on api, a report
    // job on two of them, and two services that need nothing.
    let yaml = "
services:
  gateway: { target: { process: { binary: ./gateway } }, dependencies: [api] }
  worker-1: { target: { process: { binary: ./worker } }, dependencies: [api] }
  api: { target: { process: { binary: ./api } }, dependencies: [cache, db] }
  report: { target: { process: { binary: ./report } }, dependencies: [worker-1, worker-3] }
  cache: { target: { docker: { image: 'redis:7' } }, dependencies: [db] }
  worker-2: { target: { process: { binary: ./worker } }, dependencies: [api] }
  db: { target: { docker: { image: 'postgres:14' } } }
  worker-3: { target: { process: { binary: ./worker } }, dependencies: [api] }
  metrics: { target: { process: { binary: ./metrics } } }
  logs: { target: { process: { binary: ./logs } } }
";
    TopologyConfig::from_yaml("chain.yaml", yaml).unwrap()
}

#[test]
fn start_order_is_layers_of_independent_services() {
    let topology = chain_and_fan_out();
    let graph = topology.graph().unwrap();
    assert_eq!(
        graph.start_order(),
        [
            vec!["db", "metrics", "logs"],
            vec!["cache"],
            vec!["api"],
            vec!["gateway", "worker-1", "worker-2", "worker-3"],
            vec!["report"],
        ]
    );
    assert_eq!(
        graph.stop_order(),
        [
            vec!["report"],
            vec!["gateway", "worker-1", "worker-2", "worker-3"],
            vec!["api"],
            vec!["cache"],
            vec!["db", "metrics", "logs"],
        ]
    );
    assert_eq!(
        graph.dependents("api"),
        ["gateway", "worker-1", "worker-2", "worker-3"]
    );
    assert_eq!(graph.dependents("db"), ["api", "cache"]);
    assert!(graph.dependents("report").is_empty());
    assert_eq!(graph.dependencies("api"), ["cache", "db"]);
    assert_eq!(
        graph.dependencies_transitive("report"),
        ["db", "cache", "api", "worker-1", "worker-3"]
    );
    assert_eq!(graph.dependencies_transitive("db"), Vec::<&str>::new());
    assert_eq!(
        graph.dependents_transitive("cache"),
        [
            "api", "gateway", "worker-1", "worker-2", "worker-3", "report"
        ]
    );
    assert!(graph.dependents("nope").is_empty());
}

#[test]
fn a_cycle_made_in_code_is_refused_by_the_graph() {
    let mut topology = chain_and_fan_out();
    topology.services["db"].dependencies.push("report".into());
    let error = DependencyGraph::new(&topology).unwrap_err();
    assert_eq!(
        error.to_string(),
        "build the dependency graph: dependency cycle worker-1 -> api -> db -> report -> worker-1"
    );
    topology.services["db"].dependencies = vec!["nosuch".into()];
    assert_eq!(
        topology.graph().unwrap_err().to_string(),
        "build the dependency graph: service db depends on unknown service nosuch"
    );
}

#[test]
fn placeholders_are_substituted_in_args_env_and_commands() {
    let yaml = r#"
services:
  postgres:
    target: { docker: { image: "postgres:14", env: { PGPORT: "${port}" }, command: [postgres, -p, "${port}"] } }
    port: 5432
  api-server:
    target:
      process:
        binary: ./api
        args: ["--listen", "${addr}", "--db=${POSTGRES_ADDR}", "--price", "$$5", "$HOME", "${host}:${port}"]
        env: { DATABASE_URL: "postgres://${POSTGRES_ADDR}/app", PLAIN: "$$${port}$$" }
        working_dir: /srv/${port}
    dependencies: [postgres]
    port: auto
    health_check: { command: [./probe, "${addr}"] }
"#;
    let topology = TopologyConfig::from_yaml("subst.yaml", yaml).unwrap();
    let api = &topology.services["api-server"];
    assert_eq!(
        api.placeholder_names(),
        ["port", "host", "addr", "dir", "POSTGRES_ADDR"]
    );
    let values = HashMap::from([
        ("port".to_string(), "40001".to_string()),
        ("host".to_string(), "127.0.0.1".to_string()),
        ("addr".to_string(), "127.0.0.1:40001".to_string()),
        (addr_var("postgres"), "172.17.0.2:5432".to_string()),
    ]);
    let done = api.substituted(&values).unwrap();
    let ServiceTarget::Process(process) = &done.target else {
        panic!("not a process");
    };
    assert_eq!(
        process.args,
        [
            "--listen",
            "127.0.0.1:40001",
            "--db=172.17.0.2:5432",
            "--price",
            "$5",
            "$HOME",
            "127.0.0.1:40001"
        ]
    );
    let env: Vec<(&str, &str)> = process
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("DATABASE_URL", "postgres://172.17.0.2:5432/app"),
            ("PLAIN", "$40001$")
        ]
    );
    assert_eq!(process.working_dir.as_deref(), Some("/srv/40001"));
    let Some(Probe::Command(probe)) = done.health_check.map(|c| c.probe) else {
        panic!("no command probe");
    };
    assert_eq!(probe, ["./probe", "127.0.0.1:40001"]);
    // Nothing else changed.
    assert_eq!(done.name, api.name);
    assert_eq!(done.dependencies, api.dependencies);

    let postgres = topology.services["postgres"]
        .substituted(&HashMap::from([("port".to_string(), "5432".to_string())]))
        .unwrap();
    let ServiceTarget::Docker(docker) = &postgres.target else {
        panic!("not docker");
    };
    assert_eq!(
        docker.command.as_deref(),
        Some(&["postgres".to_string(), "-p".into(), "5432".into()][..])
    );
    assert_eq!(docker.env["PGPORT"], "5432");

    // A value missing at run time names the service, the field and the placeholder, and
    // points at the file.
    let error = api.substituted(&HashMap::new()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "substitute placeholders in target.process.args[1] of service api-server: unknown placeholder `${addr}`"
    );
    assert_eq!(error.location.unwrap().to_string(), "subst.yaml:10:28");

    assert_eq!(substitute("a$$b$c", &values).unwrap(), "a$b$c");
    assert_eq!(
        substitute("x${port", &values),
        Err(PlaceholderError::Unterminated(1))
    );
    assert_eq!(substitute("${}", &values), Err(PlaceholderError::Empty(0)));
    assert_eq!(env_prefix("api-server-2"), "API_SERVER_2");
    assert_eq!(addr_var("load-generator"), "LOAD_GENERATOR_ADDR");
}

/// Values a shell would mangle if they were not quoted right.
const NASTY: &[(&str, &str)] = &[
    ("PLAIN", "127.0.0.1:5432"),
    ("EMPTY", ""),
    ("SPACES", "  two  spaces  "),
    ("QUOTES", r#"it's "quoted" ''"#),
    ("DOLLARS", "$HOME ${PATH} $(id) `id` $$"),
    ("BACKSLASH", r"C:\path\n\\"),
    ("NEWLINES", "line one\nline two\n\n"),
    ("GLOB", "* ? [a-z]"),
    ("SEMICOLON", "a; exit 3; b"),
    ("UNICODE", "grüße — 日本"),
    ("DASH", "-n -e"),
    ("_UNDER_1", "#not a comment"),
];

#[test]
fn env_files_round_trip_through_a_posix_shell() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("service.env");
    write_env_file(&path, NASTY.iter().copied()).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Source the file in a shell that starts from an empty environment, then print each
    // variable NUL-terminated, from the shell and from a child process (proving `export`).
    let names: Vec<&str> = NASTY.iter().map(|(n, _)| *n).collect();
    let script = format!(
        ". \"$1\" || exit 9; for n in {names}; do eval \"printf '%s\\0' \\\"\\${{$n}}\\\"\"; done; env -0",
        names = names.join(" ")
    );
    let out = Command::new("sh")
        .env_clear()
        .args(["-c", &script, "sh"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut fields = stdout.split('\0');
    for (name, value) in NASTY {
        assert_eq!(fields.next(), Some(*value), "{name} as the shell reads it");
    }
    let exported: HashMap<&str, &str> = fields.filter_map(|kv| kv.split_once('=')).collect();
    for (name, value) in NASTY {
        assert_eq!(
            exported.get(name),
            Some(value),
            "{name} as a child process sees it"
        );
    }

    // Writing again replaces the file whole, keeps its mode and leaves no temporary file.
    write_env_file(&path, [("ONLY", "one")]).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "export ONLY='one'\n");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["service.env"]);

    assert!(matches!(
        render_env_file([("2BAD", "x")]),
        Err(EnvFileError::InvalidName(name)) if name == "2BAD"
    ));
    assert!(matches!(
        render_env_file([("A", "x\0y")]),
        Err(EnvFileError::NulInValue(_))
    ));
    let error = write_env_file(dir.path().join("missing/dir/x.env"), [("A", "b")]).unwrap_err();
    assert!(
        error.to_string().starts_with(&format!(
            "write env file {}/missing/dir/x.env: ",
            dir.path().display()
        )),
        "{error}"
    );
    dir.close().unwrap();
}

#[test]
fn overlays_switch_targets_add_services_and_merge_maps() {
    let dir = Path::new(FILES).join("overlay");
    let base = dir.join("base.yaml");
    let overlays = [dir.join("docker.yaml"), dir.join("extra.yaml")];
    let topology = TopologyConfig::load_with_overlays(&base, &overlays).unwrap();
    compare(&model_json(&topology), &dir.join("merged.json"));
    assert_eq!(
        topology.files,
        [base.clone(), overlays[0].clone(), overlays[1].clone()]
    );

    // The switched target's fields point at the overlay, the untouched ones at the base.
    let kv = &topology.services["kv"];
    assert_eq!(kv.target.kind(), "docker");
    assert_eq!(
        kv.location_of("target.docker.image").to_string(),
        format!("{}:6:16", overlays[0].display())
    );
    assert_eq!(
        kv.location().to_string(),
        format!("{}:10:3", base.display())
    );
    assert_eq!(
        kv.location_of("port").to_string(),
        format!("{}:17:11", base.display())
    );
    let added = &topology.services["load"];
    assert_eq!(
        added.location().to_string(),
        format!("{}:10:3", overlays[1].display())
    );

    // `key: null` removed the interval (back to the default) and a whole service.
    let check = kv.health_check.as_ref().unwrap();
    assert_eq!(check.interval, HealthCheck::DEFAULT_INTERVAL);
    assert_eq!(check.timeout, Duration::from_secs(2));
    assert!(!topology.services.contains_key("debug-shell"));

    // The overlays change nothing when not applied.
    let plain = TopologyConfig::load(&base).unwrap();
    assert_eq!(plain.services["kv"].target.kind(), "process");
    assert_eq!(
        plain.services["kv"].health_check.as_ref().unwrap().interval,
        Duration::from_millis(50)
    );
    assert!(!plain.services.contains_key("load"));
    assert!(plain.services.contains_key("debug-shell"));
}

#[test]
fn errors_in_overlays_name_the_overlay_file() {
    let dir = Path::new(FILES).join("overlay");
    for (overlay, expected) in [
        ("bad_fields.yaml", "bad_fields.stderr"),
        ("no_target.yaml", "no_target.stderr"),
        ("syntax.yaml", "syntax.stderr"),
    ] {
        let error = load_error(&dir.join("base.yaml"), &[dir.join(overlay)]);
        compare(&format!("{error}\n"), &dir.join(expected));
    }
}

/// `HARNESS_OVERLAY` is read by [`TopologyConfig::load_with_env`]. Setting a variable in this
/// multi-threaded test process is unsound, so the test runs itself again as a child with the
/// variable set, and the child checks what it loads.
#[test]
fn harness_overlay_names_overlays_relative_to_the_current_directory() {
    let overlay_dir = Path::new(FILES).join("overlay");
    let value = format!(
        "{}::{}",
        overlay_dir.join("docker.yaml").display(),
        std::env::current_dir()
            .unwrap()
            .join(&overlay_dir)
            .join("extra.yaml")
            .display()
    );
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "harness_overlay_child",
            "--include-ignored",
            "--nocapture",
        ])
        .env("HARNESS_OVERLAY", value)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child test did not run:\n{stdout}"
    );
}

#[test]
#[ignore = "run by harness_overlay_names_overlays_relative_to_the_current_directory"]
fn harness_overlay_child() {
    assert!(
        std::env::var_os("HARNESS_OVERLAY").is_some(),
        "run through its parent test"
    );
    let dir = Path::new(FILES).join("overlay");
    let topology = TopologyConfig::load_with_env(dir.join("base.yaml"), &[] as &[&Path]).unwrap();
    compare(&model_json(&topology), &dir.join("merged.json"));
    // Overlays given by the caller come after the variable's.
    let last = dir.join("process_again.yaml");
    let topology = TopologyConfig::load_with_env(dir.join("base.yaml"), &[&last]).unwrap();
    assert_eq!(topology.services["kv"].target.kind(), "process");
    assert_eq!(topology.files.last(), Some(&last));
}

#[test]
fn durations_read_and_write_in_human_units() {
    for (text, millis) in [
        ("500ms", 500),
        ("2s", 2000),
        ("1.5s", 1500),
        ("1m30s", 90_000),
        ("1h", 3_600_000),
        (" 250ms ", 250),
    ] {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_millis(millis)),
            "{text}"
        );
    }
    assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
    for bad in ["", "5", "ms", "5 s", "5sec", "-1s", "1..5s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
    }
    for (millis, text) in [
        (0, "0ms"),
        (500, "500ms"),
        (2000, "2s"),
        (90_000, "90s"),
        (1500, "1500ms"),
    ] {
        let d = Duration::from_millis(millis);
        assert_eq!(format_duration(d), text);
        assert_eq!(parse_duration(text), Ok(d));
    }
    assert_eq!(format_duration(Duration::from_nanos(1500)), "1500ns");
}
