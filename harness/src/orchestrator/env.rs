//! What harness tells each service: `PORT`, `<DEP>_ADDR`, and the placeholder values.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::topology::{EnvFileError, addr_var, render_env_file};

use super::address::{Placement, ServiceAddr};

/// A dependency of the service being started, with its address once it has a port.
pub(crate) type Dependency = (String, Option<ServiceAddr>);

/// The values of `${port}`, `${host}`, `${addr}` and `${<DEP>_ADDR}` for a service placed at
/// `placement` on `port` whose dependencies are `dependencies`. `${host}` is `127.0.0.1` for a
/// process and `0.0.0.0` for a container or a LAN service (what it binds to; see
/// [`Placement::own_host`]), and `${addr}` is `${host}:${port}`. A dependency's address is
/// the one reachable from `placement` ([`ServiceAddr::seen_from`]). A service without a port
/// has no `${port}` or `${addr}`, and a dependency without one no `${<DEP>_ADDR}`, so using
/// them fails the start with the placeholder named.
pub(crate) fn placeholder_values(
    placement: &Placement,
    port: Option<u16>,
    dependencies: &[Dependency],
) -> HashMap<String, String> {
    let host = placement.own_host();
    let mut values = HashMap::new();
    if let Some(port) = port {
        values.insert("port".into(), port.to_string());
        values.insert("addr".into(), format!("{host}:{port}"));
    }
    values.insert("host".to_string(), host);
    for (name, addr) in dependencies {
        if let Some(addr) = addr {
            values.insert(addr_var(name), addr.seen_from(placement));
        }
    }
    values
}

/// The variables harness adds to a service's environment: `PORT` when it has a port, then
/// `<DEP>_ADDR` for each dependency with a port (reachable from `placement`), in the file's
/// order.
pub(crate) fn injected_env(
    placement: &Placement,
    port: Option<u16>,
    dependencies: &[Dependency],
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(port) = port {
        env.push(("PORT".to_string(), port.to_string()));
    }
    for (name, addr) in dependencies {
        if let Some(addr) = addr {
            env.push((addr_var(name), addr.seen_from(placement)));
        }
    }
    env
}

/// Writes a service's env file into the run's state directory, mode 0600, replacing the old
/// one atomically (rename). Unlike [`write_env_file`](crate::topology::write_env_file) it does
/// not sync to disk: the directory lives only as long as the run, and a sync per service would
/// cost more than starting it.
pub(crate) fn write_run_env_file(
    path: &Path,
    env: &[(String, String)],
) -> Result<(), EnvFileError> {
    let text = render_env_file(env.iter().map(|(k, v)| (k, v)))?;
    let failed = |source| EnvFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let partial = path.with_extension("env.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    std::fs::rename(&partial, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injects_port_and_dependency_addresses() {
        let deps = [
            (
                "kv-store".to_string(),
                Some(ServiceAddr {
                    name: "kv-store".into(),
                    placement: Placement::Host,
                    port: 4000,
                    host_port: 4000,
                }),
            ),
            ("quiet".to_string(), None),
        ];
        assert_eq!(
            injected_env(&Placement::Host, Some(8080), &deps),
            [
                ("PORT".to_string(), "8080".to_string()),
                ("KV_STORE_ADDR".to_string(), "127.0.0.1:4000".to_string()),
            ]
        );
        let values = placeholder_values(&Placement::Host, None, &deps);
        assert_eq!(values["host"], "127.0.0.1");
        assert_eq!(values["KV_STORE_ADDR"], "127.0.0.1:4000");
        assert!(!values.contains_key("port") && !values.contains_key("QUIET_ADDR"));
    }

    #[test]
    fn a_container_binds_everywhere_and_reaches_processes_through_the_gateway() {
        let deps = [(
            "kv-store".to_string(),
            Some(ServiceAddr {
                name: "kv-store".into(),
                placement: Placement::Host,
                port: 4000,
                host_port: 4000,
            }),
        )];
        let values = placeholder_values(&Placement::Container, Some(8080), &deps);
        assert_eq!(values["host"], "0.0.0.0");
        assert_eq!(values["addr"], "0.0.0.0:8080");
        assert_eq!(values["KV_STORE_ADDR"], "host.docker.internal:4000");
    }

    #[test]
    fn a_lan_service_binds_everywhere_and_reaches_processes_at_this_machines_lan_address() {
        use super::super::address::LanSite;
        let lan = Placement::Lan(LanSite {
            host: "10.1.0.1".into(),
            ip: [10, 1, 0, 1].into(),
            this_machine: [10, 1, 0, 254].into(),
        });
        let deps = [(
            "origin".to_string(),
            Some(ServiceAddr {
                name: "origin".into(),
                placement: Placement::Host,
                port: 4000,
                host_port: 4000,
            }),
        )];
        let values = placeholder_values(&lan, Some(7001), &deps);
        assert_eq!(values["host"], "0.0.0.0");
        assert_eq!(values["addr"], "0.0.0.0:7001");
        assert_eq!(values["ORIGIN_ADDR"], "10.1.0.254:4000");
        assert_eq!(
            injected_env(&lan, Some(7001), &deps),
            [
                ("PORT".to_string(), "7001".to_string()),
                ("ORIGIN_ADDR".to_string(), "10.1.0.254:4000".to_string()),
            ]
        );
    }
}
