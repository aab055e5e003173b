//! The package manifest over generated files: a rendered manifest decodes back to itself, and
//! a manifest with one mistake is refused with a diagnostic at the mistake's line.

use std::fmt::Write as _;

use harness::package::{Manifest, ManifestNetwork, WireguardSettings};

use crate::seeded::{mutate, run_cases, string_of};

const FILE: &str = "demo.tar.gz!/manifest.yaml";

fn manifest(rng: &mut fastrand::Rng) -> Manifest {
    let name = format!(
        "{}{}",
        string_of(rng, "abcdefghijklmnopqrstuvwxyz", 1..8),
        match rng.u8(..3) {
            0 => String::new(),
            1 => format!("-{}", rng.u16(..1000)),
            _ => format!("-{}2", string_of(rng, "ab-c9", 1..5)),
        }
    );
    let parts: Vec<String> = (0..rng.usize(1..4))
        .map(|_| rng.u32(..200).to_string())
        .collect();
    let version = format!(
        "{}{}",
        parts.join("."),
        ["", "-rc1", "+build.5", "_2", "-beta.2+x"][rng.usize(..5)]
    );
    let keys = |rng: &mut fastrand::Rng| rng.bool().then(|| string_of(rng, "abcXYZ019+/=", 1..44));
    let network = rng.bool().then(|| ManifestNetwork {
        wireguard: rng.bool().then(|| WireguardSettings {
            private_key: keys(rng),
            endpoint: rng.bool().then(|| {
                rng.choice(["${HARNESS_ENDPOINT}", "10.0.0.1:51820"])
                    .unwrap()
                    .to_string()
            }),
            allowed_ips: rng.bool().then(|| "10.42.0.0/16".to_string()),
            persistent_keepalive: rng.bool().then(|| rng.u16(..)),
        }),
    });
    Manifest {
        name,
        version,
        port: rng.bool().then(|| rng.u16(1..)),
        system_requires: (0..rng.usize(..3))
            .map(|_| format!("/usr/{}", string_of(rng, "abc/._- 9", 1..12)))
            .collect(),
        network,
    }
}

/// A YAML scalar for `s`: plain, single- or double-quoted.
fn scalar(rng: &mut fastrand::Rng, s: &str) -> String {
    match rng.u8(..3) {
        0 => format!("'{}'", s.replace('\'', "''")),
        1 => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        // Plain only where YAML reads it back as the same text.
        _ if !s.contains([' ', '#', ':']) && !s.ends_with(['.', '-', '/']) => s.to_string(),
        _ => format!("'{s}'"),
    }
}

fn render(rng: &mut fastrand::Rng, m: &Manifest) -> String {
    let mut out = String::new();
    if rng.bool() {
        out.push_str("# a package\n");
    }
    // A plain version such as `1.10` is a number to YAML; the manifest keeps its spelling.
    let version = if rng.bool() {
        m.version.clone()
    } else {
        scalar(rng, &m.version)
    };
    writeln!(out, "name: {}\nversion: {version}", scalar(rng, &m.name)).unwrap();
    if let Some(port) = m.port {
        writeln!(out, "port: {port}").unwrap();
    }
    if !m.system_requires.is_empty() || rng.bool() {
        out.push_str("system_requires:\n");
        for path in &m.system_requires {
            writeln!(out, "  - {}", scalar(rng, path)).unwrap();
        }
    }
    if let Some(network) = &m.network {
        out.push_str("network:\n");
        if let Some(wg) = &network.wireguard {
            out.push_str("  wireguard:\n");
            for (key, value) in [
                ("private_key", &wg.private_key),
                ("endpoint", &wg.endpoint),
                ("allowed_ips", &wg.allowed_ips),
            ] {
                if let Some(value) = value {
                    writeln!(out, "    {key}: {}", scalar(rng, value)).unwrap();
                }
            }
            if let Some(n) = wg.persistent_keepalive {
                writeln!(out, "    persistent_keepalive: {n}").unwrap();
            }
        }
    }
    out
}

#[test]
fn rendered_manifests_decode_back_to_themselves() {
    run_cases("rendered_manifests_decode_back_to_themselves", 500, |rng| {
        let written = manifest(rng);
        let text = render(rng, &written);
        let read = Manifest::from_yaml(FILE, &text)
            .unwrap_or_else(|e| panic!("{e}\n--- the manifest:\n{text}"));
        // No `network:` section and an empty one both mean no WireGuard settings.
        let mut expected = written;
        // A `wireguard:` without settings is null, which is no WireGuard section at all.
        if let Some(network) = &mut expected.network
            && network.wireguard == Some(WireguardSettings::default())
        {
            network.wireguard = None;
        }
        if expected
            .network
            .as_ref()
            .is_some_and(|n| n.wireguard.is_none())
        {
            expected.network = read.network.clone().filter(|n| n.wireguard.is_none());
        }
        assert_eq!(read, expected, "{text}");
    });
}

#[test]
fn a_mistake_is_refused_at_its_line() {
    const MISTAKES: &[(&str, &str)] = &[
        ("name: Demo_Pkg", "invalid package name"),
        ("name: [a]", "expected a string for `name`"),
        ("version: ../1", "version"),
        ("port: 0", "port number"),
        ("port: 70000", "port number"),
        ("port: http", "port number"),
        ("versoin: 1", "did you mean `version`?"),
        ("system_requires: [usr/bin/curl]", "not an absolute path"),
        ("system_requires: /bin/sh", "expected a list"),
        (
            "network: { wireguard: { persistent_keepalive: -1 } }",
            "persistent_keepalive",
        ),
        ("network: { wiregaurd: {} }", "did you mean `wireguard`?"),
    ];
    run_cases("a_mistake_is_refused_at_its_line", 300, |rng| {
        let mut m = manifest(rng);
        m.port = None;
        m.system_requires.clear();
        m.network = None;
        let (mistake, needle) = MISTAKES[rng.usize(..MISTAKES.len())];
        let key = mistake.split(':').next().unwrap();
        let mut lines: Vec<String> = render(rng, &m)
            .lines()
            .filter(|l| !l.starts_with(&format!("{key}:")) && !l.starts_with("system_requires:"))
            .map(String::from)
            .collect();
        let at = rng.usize(..=lines.len());
        lines.insert(at, mistake.to_string());
        let text = lines.join("\n");
        let error = Manifest::from_yaml(FILE, &text)
            .expect_err(&format!("a mistake was accepted:\n{text}"));
        let found = error
            .diagnostics
            .iter()
            .find(|d| d.message().contains(needle));
        let Some(diagnostic) = found else {
            panic!("no diagnostic saying {needle:?}: {error}\n--- the manifest:\n{text}");
        };
        assert_eq!(diagnostic.location().line, at as u32 + 1, "{error}");
        assert_eq!(&*diagnostic.location().file, std::path::Path::new(FILE));
    });
}

#[test]
fn mutated_manifests_are_read_or_refused_with_a_location() {
    run_cases(
        "mutated_manifests_are_read_or_refused_with_a_location",
        1000,
        |rng| {
            let m = manifest(rng);
            let rendered = render(rng, &m);
            let text = mutate(rng, &rendered);
            match Manifest::from_yaml(FILE, &text) {
                Ok(read) => assert_eq!(Manifest::from_yaml(FILE, &text), Ok(read)),
                Err(error) => {
                    assert!(!error.diagnostics.is_empty(), "no diagnostic:\n{text}");
                    let lines = text.lines().count() as u32;
                    for d in &error.diagnostics {
                        assert_eq!(&*d.location().file, std::path::Path::new(FILE));
                        let line = d.location().line;
                        assert!(line >= 1 && line <= lines + 1, "line {line}: {d}\n{text}");
                    }
                }
            }
        },
    );
}
