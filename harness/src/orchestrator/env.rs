//! What harness tells each service: `PORT`, `<DEP>_ADDR`, and the placeholder values.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::topology::{EnvFileError, addr_var, render_env_file};

use super::manager::local_addr;
use super::ports::LOCAL_HOST;

/// The values of `${port}`, `${host}`, `${addr}` and `${<DEP>_ADDR}` for a service on `port`
/// whose dependencies listen on `dependencies`. A service without a port has no `${port}` or
/// `${addr}`, and a dependency without one no `${<DEP>_ADDR}`, so using them fails the start
/// with the placeholder named.
pub(crate) fn placeholder_values(
    port: Option<u16>,
    dependencies: &[(String, Option<u16>)],
) -> HashMap<String, String> {
    let mut values = HashMap::from([("host".to_string(), LOCAL_HOST.to_string())]);
    if let Some(port) = port {
        values.insert("port".into(), port.to_string());
        values.insert("addr".into(), local_addr(port));
    }
    for (name, port) in dependencies {
        if let Some(port) = port {
            values.insert(addr_var(name), local_addr(*port));
        }
    }
    values
}

/// The variables harness adds to a service's environment: `PORT` when it has a port, then
/// `<DEP>_ADDR=127.0.0.1:PORT` for each dependency with a port, in the file's order.
pub(crate) fn injected_env(
    port: Option<u16>,
    dependencies: &[(String, Option<u16>)],
) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some(port) = port {
        env.push(("PORT".to_string(), port.to_string()));
    }
    for (name, port) in dependencies {
        if let Some(port) = port {
            env.push((addr_var(name), local_addr(*port)));
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
            ("kv-store".to_string(), Some(4000)),
            ("quiet".to_string(), None),
        ];
        assert_eq!(
            injected_env(Some(8080), &deps),
            [
                ("PORT".to_string(), "8080".to_string()),
                ("KV_STORE_ADDR".to_string(), "127.0.0.1:4000".to_string()),
            ]
        );
        let values = placeholder_values(None, &deps);
        assert_eq!(values["host"], "127.0.0.1");
        assert_eq!(values["KV_STORE_ADDR"], "127.0.0.1:4000");
        assert!(!values.contains_key("port") && !values.contains_key("QUIET_ADDR"));
    }
}
