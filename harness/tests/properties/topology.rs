//! The topology and overlay loader over generated files: valid topologies with random names,
//! ports and dependencies are read back exactly; a dependency cycle is always refused; mutated
//! files never panic the loader, and every refusal names the file and a line; overlays apply
//! the same way every time.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use harness::topology::{PortSpec, TopologyConfig, TopologyError};

use crate::seeded::{mutate, run_cases, string_of};

const FILE: &str = "props/services.yaml";
const OVERLAY: &str = "props/overlay.yaml";

/// A generated service: what the file says about it.
#[derive(Clone, Debug)]
struct Service {
    name: String,
    dependencies: Vec<usize>,
    port: PortSpec,
    env: Vec<(String, String)>,
}

/// A topology of 1 to 8 services, each depending on some of those generated before it (so the
/// graph is acyclic), with distinct fixed ports where they have one.
fn services(rng: &mut fastrand::Rng) -> Vec<Service> {
    let count = rng.usize(1..=8);
    let mut ports: Vec<u16> = (1024..1024 + 4 * count as u16).collect();
    rng.shuffle(&mut ports);
    (0..count)
        .map(|i| {
            let word = string_of(rng, "abcdefghijklmnopqrstuvwxyz", 1..6);
            let name = match rng.u8(..3) {
                0 => format!("{word}{i}"),
                1 => format!("{word}-{i}"),
                _ => format!("{word}-x{i}-{}", string_of(rng, "abc019", 2..3)),
            };
            let mut dependencies: Vec<usize> = (0..i).filter(|_| rng.u8(..3) == 0).collect();
            rng.shuffle(&mut dependencies);
            let port = match rng.u8(..3) {
                0 => PortSpec::Unset,
                1 => PortSpec::Auto,
                _ => PortSpec::Fixed(ports[i]),
            };
            let env = (0..rng.usize(..3))
                .map(|k| {
                    let value = string_of(rng, "abc xyz09:/=.é", 0..12);
                    (format!("VAR_{k}"), value)
                })
                .collect();
            Service {
                name,
                dependencies,
                port,
                env,
            }
        })
        .collect()
}

/// The services as a topology file, in a random order and in block or flow style.
fn render(rng: &mut fastrand::Rng, services: &[Service]) -> String {
    let mut order: Vec<usize> = (0..services.len()).collect();
    rng.shuffle(&mut order);
    let mut out = String::new();
    if rng.bool() {
        out.push_str("# generated\nnetwork:\n  dns_port: 5353\n");
    }
    out.push_str("services:\n");
    for &i in &order {
        let service = &services[i];
        let deps: Vec<&str> = service
            .dependencies
            .iter()
            .map(|&d| services[d].name.as_str())
            .collect();
        let port = match service.port {
            PortSpec::Unset => None,
            PortSpec::Auto => Some("auto".to_string()),
            PortSpec::Fixed(p) => Some(p.to_string()),
        };
        // `${port}` only where there is a port to fill it.
        let args = if port.is_some() {
            r#"["--port", "${port}"]"#
        } else {
            r#"["--quiet"]"#
        };
        let env: Vec<String> = service
            .env
            .iter()
            .map(|(k, v)| format!("{k}: {}", quoted(v)))
            .collect();
        let name = &service.name;
        if rng.bool() {
            writeln!(out, "  {name}:").unwrap();
            writeln!(out, "    target:").unwrap();
            writeln!(out, "      process:").unwrap();
            writeln!(out, "        binary: ./bin/{name}").unwrap();
            writeln!(out, "        args: {args}").unwrap();
            if !env.is_empty() {
                writeln!(out, "        env:").unwrap();
                for line in &env {
                    writeln!(out, "          {line}").unwrap();
                }
            }
            if !deps.is_empty() {
                writeln!(out, "    dependencies:").unwrap();
                for dep in &deps {
                    writeln!(out, "      - {dep}").unwrap();
                }
            }
            if let Some(port) = &port {
                writeln!(out, "    port: {port}").unwrap();
            }
            if rng.bool() {
                writeln!(out, "    x-note: {{ ignored: true }}").unwrap();
            }
        } else {
            let mut fields = vec![format!(
                "target: {{ process: {{ binary: ./bin/{name}, args: {args}, env: {{ {} }} }} }}",
                env.join(", ")
            )];
            if !deps.is_empty() || rng.bool() {
                fields.push(format!("dependencies: [{}]", deps.join(", ")));
            }
            if let Some(port) = &port {
                fields.push(format!("port: {port}"));
            }
            writeln!(out, "  {name}: {{ {} }}", fields.join(", ")).unwrap();
        }
    }
    out
}

/// A YAML double-quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Every diagnostic of `error` names one of `files`, with a line within that file.
fn assert_located(error: &TopologyError, files: &[(PathBuf, String)]) {
    let diagnostics = error.diagnostics();
    assert!(
        !diagnostics.is_empty(),
        "a refusal without a diagnostic: {error}"
    );
    let shown = error.to_string();
    for diagnostic in diagnostics {
        let location = diagnostic.location();
        let Some((_, text)) = files.iter().find(|(p, _)| **p == *location.file) else {
            panic!("names a file that was not loaded: {diagnostic}");
        };
        let lines = text.lines().count() as u32;
        assert!(
            location.line >= 1 && location.line <= lines + 1,
            "line {} of a {lines}-line file: {diagnostic}",
            location.line
        );
        let place = format!("{}:{}:", location.file.display(), location.line);
        assert!(shown.contains(&place), "{place} not in {shown}");
    }
}

fn one_file(text: &str) -> Vec<(PathBuf, String)> {
    vec![(PathBuf::from(FILE), text.to_string())]
}

#[test]
fn generated_topologies_are_read_back_exactly() {
    run_cases("generated_topologies_are_read_back_exactly", 200, |rng| {
        let services = services(rng);
        let text = render(rng, &services);
        let topology = TopologyConfig::from_yaml(FILE, &text)
            .unwrap_or_else(|e| panic!("{e}\n--- the file:\n{text}"));
        assert_eq!(topology, TopologyConfig::from_yaml(FILE, &text).unwrap());
        let names: BTreeSet<&str> = topology.services.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, expected);
        let graph = topology.graph().unwrap();
        let layers = graph.start_order();
        let layer = |name: &str| layers.iter().position(|l| l.contains(&name)).unwrap();
        for service in &services {
            let read = &topology.services[&service.name];
            let deps: Vec<&str> = service
                .dependencies
                .iter()
                .map(|&d| services[d].name.as_str())
                .collect();
            assert_eq!(read.dependencies, deps, "{text}");
            assert_eq!(read.port, service.port, "{text}");
            let env: Vec<(&str, &str)> = read
                .target
                .env()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let written: Vec<(&str, &str)> = service
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(env, written, "{text}");
            for dep in deps {
                assert!(
                    layer(dep) < layer(&service.name),
                    "{dep} after {}",
                    service.name
                );
            }
        }
    });
}

#[test]
fn a_dependency_cycle_is_always_refused() {
    run_cases("a_dependency_cycle_is_always_refused", 200, |rng| {
        let mut services = services(rng);
        // Walk down from a service with dependencies, then close the loop back to it.
        let Some(start) = (0..services.len())
            .rev()
            .find(|&i| !services[i].dependencies.is_empty())
        else {
            // Without any dependency, make the shortest cycle: a service on itself.
            services[0].dependencies.push(0);
            let text = render(rng, &services);
            refused_as_cycle(&text);
            return;
        };
        let mut at = start;
        loop {
            let deps = &services[at].dependencies;
            if deps.is_empty() || rng.u8(..3) == 0 && at != start {
                break;
            }
            at = deps[rng.usize(..deps.len())];
        }
        services[at].dependencies.push(start);
        let text = render(rng, &services);
        refused_as_cycle(&text);
    });
}

fn refused_as_cycle(text: &str) {
    let error =
        TopologyConfig::from_yaml(FILE, text).expect_err(&format!("a cycle was accepted:\n{text}"));
    assert_located(&error, &one_file(text));
    assert!(
        error
            .diagnostics()
            .iter()
            .any(|d| d.message().starts_with("dependency cycle: ")),
        "{error}"
    );
}

#[test]
fn mutated_topologies_are_read_or_refused_with_a_location() {
    let (mut accepted, mut refused) = (0, 0);
    run_cases(
        "mutated_topologies_are_read_or_refused_with_a_location",
        600,
        |rng| {
            let services = services(rng);
            let rendered = render(rng, &services);
            let text = mutate(rng, &rendered);
            match TopologyConfig::from_yaml(FILE, &text) {
                Ok(topology) => {
                    accepted += 1;
                    topology.graph().expect("an accepted topology is acyclic");
                    assert_eq!(topology, TopologyConfig::from_yaml(FILE, &text).unwrap());
                }
                Err(error) => {
                    refused += 1;
                    assert_located(&error, &one_file(&text));
                }
            }
        },
    );
    println!("{accepted} mutated topologies accepted, {refused} refused");
}

/// An overlay over `services`: some get another port, more env, a Docker target, or are
/// removed; a new service may be added.
fn overlay(rng: &mut fastrand::Rng, services: &[Service]) -> String {
    let mut out = String::from("services:\n");
    for service in services {
        let name = &service.name;
        match rng.u8(..6) {
            0 => writeln!(out, "  {name}: {{ port: auto }}").unwrap(),
            1 => writeln!(
                out,
                "  {name}:\n    target:\n      process:\n        env: {{ EXTRA: \"1\" }}"
            )
            .unwrap(),
            2 => writeln!(
                out,
                "  {name}:\n    target:\n      docker: {{ image: \"local/{name}:1\" }}"
            )
            .unwrap(),
            3 => writeln!(out, "  {name}: ~").unwrap(),
            4 => writeln!(out, "  {name}: {{ dependencies: [] }}").unwrap(),
            _ => {}
        }
    }
    if rng.bool() {
        writeln!(
            out,
            "  added:\n    target: {{ process: {{ binary: ./added }} }}"
        )
        .unwrap();
    }
    out
}

/// The topology as JSON, without the file names and locations that tell overlays apart.
fn model(topology: &TopologyConfig) -> serde_json::Value {
    serde_json::to_value(topology).unwrap()
}

#[test]
fn overlays_apply_the_same_way_every_time() {
    run_cases("overlays_apply_the_same_way_every_time", 80, |rng| {
        let services = services(rng);
        let base = render(rng, &services);
        let files = vec![
            (PathBuf::from(FILE), base.clone()),
            (PathBuf::from(OVERLAY), overlay(rng, &services)),
        ];
        let first = TopologyConfig::from_yaml_files(&files);
        let second = TopologyConfig::from_yaml_files(&files);
        match (&first, &second) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b);
                assert_eq!(a.files, [PathBuf::from(FILE), PathBuf::from(OVERLAY)]);
                a.graph().unwrap();
            }
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string());
                assert_located(a, &files);
            }
            _ => panic!("the same overlay was accepted once and refused once: {first:?}"),
        }

        // An empty overlay, or the base over itself, changes nothing.
        let alone = model(&TopologyConfig::from_yaml(FILE, &base).unwrap());
        for again in ["", "# nothing\n", &base] {
            let files = vec![
                (PathBuf::from(FILE), base.clone()),
                (PathBuf::from(OVERLAY), again.to_string()),
            ];
            let merged = TopologyConfig::from_yaml_files(&files)
                .unwrap_or_else(|e| panic!("{e}\n--- base:\n{base}"));
            assert_eq!(model(&merged), alone, "overlay:\n{again}");
        }
    });
}

/// What an overlay switch does, whatever the rest of the file: a different target kind
/// replaces the target whole, and `key: ~` removes the key.
#[test]
fn overlay_switches_and_removals_take_effect() {
    run_cases("overlay_switches_and_removals_take_effect", 150, |rng| {
        let services = services(rng);
        let base = render(rng, &services);
        // Only leaves (no dependents) are removed, so the result stays valid.
        let depended: BTreeSet<usize> = services
            .iter()
            .flat_map(|s| s.dependencies.clone())
            .collect();
        let mut text = String::from("services:\n");
        let mut expected = Vec::new();
        for (i, service) in services.iter().enumerate() {
            let name = &service.name;
            let change = match rng.u8(..3) {
                0 => 0,
                1 if !depended.contains(&i) => 1,
                _ => 2,
            };
            match change {
                0 => writeln!(text, "  {name}:\n    target: {{ docker: {{ image: i }} }}").unwrap(),
                1 => writeln!(text, "  {name}: null").unwrap(),
                _ => writeln!(text, "  {name}: {{ port: auto }}").unwrap(),
            }
            expected.push((name.clone(), change));
        }
        let files = vec![
            (PathBuf::from(FILE), base.clone()),
            (PathBuf::from(OVERLAY), text.clone()),
        ];
        let merged = TopologyConfig::from_yaml_files(&files)
            .unwrap_or_else(|e| panic!("{e}\n--- base:\n{base}\n--- overlay:\n{text}"));
        for (name, change) in expected {
            let service = merged.services.get(&name);
            match change {
                0 => {
                    let service = service.unwrap();
                    assert_eq!(service.target.kind(), "docker");
                    assert!(service.target.env().is_none_or(|e| e.is_empty()));
                }
                1 => assert!(service.is_none(), "{name} was not removed"),
                _ => assert_eq!(service.unwrap().port, PortSpec::Auto),
            }
        }
    });
}
