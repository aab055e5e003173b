//! What harness tells each service: `PORT`, `<DEP>_ADDR`, and the placeholder values.

use std::collections::HashMap;

use crate::topology::addr_var;

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
