//! The suite that `cargo bench --bench shared_topology` times: 50 tests on one topology that
//! takes at least 250 ms to start (`benches/topologies/slow-start.yaml`), shared, and the same
//! 50 tests with `isolated`, each on a copy of its own.
//!
//! It runs its tests only when `HARNESS_BENCH_SUITE=1`; otherwise it selects none, so the normal
//! test commands pass over it.

#[path = "support/gated.rs"]
mod gated;

use std::process::ExitCode;

use harness::{Service, harness_test};

#[path = "support/http.rs"]
mod http;
use http::http;

/// The variable that turns the suite on.
const ENABLE: &str = "HARNESS_BENCH_SUITE";

/// A test body: one request to each service, checked.
fn body(web: &Service, store: &Service) {
    assert_eq!(http(web.addr(), "GET", "/health", "").status, 200);
    assert_eq!(http(store.addr(), "GET", "/health", "").status, 200);
}

macro_rules! tests {
    ($($name:ident)*) => {
        mod shared {
            use super::*;
            $(
                #[harness_test(topology = "benches/topologies/slow-start.yaml")]
                async fn $name(web: Service, store: Service) {
                    body(&web, &store);
                }
            )*
        }

        mod isolated {
            use super::*;
            $(
                #[harness_test(topology = "benches/topologies/slow-start.yaml", isolated)]
                async fn $name(web: Service, store: Service) {
                    body(&web, &store);
                }
            )*
        }
    };
}

tests!(
    t01 t02 t03 t04 t05 t06 t07 t08 t09 t10 t11 t12 t13 t14 t15 t16 t17 t18 t19 t20 t21 t22 t23
    t24 t25 t26 t27 t28 t29 t30 t31 t32 t33 t34 t35 t36 t37 t38 t39 t40 t41 t42 t43 t44 t45 t46
    t47 t48 t49 t50
);

fn main() -> ExitCode {
    gated::run_when_enabled(ENABLE)
}
