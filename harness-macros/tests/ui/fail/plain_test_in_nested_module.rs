// Plain tests in nested inline modules would never run under harness::main!(): each one is
// refused with its file and line, also one under a cfg that holds (trybuild builds the case as
// a binary, without cfg(test), so the cases use unix). A #[harness_test], a test under a cfg
// that does not hold and "#[test]" in a string are not.
use harness::{Topology, harness_test};

#[harness_test(topology = "topologies/kv.yaml", ignore = "only needs to compile")]
async fn a_harness_test(_topo: &Topology) {}

#[cfg(unix)]
mod tests {
    #[test]
    fn adds() {
        assert_eq!(1 + 1, 2);
    }

    mod deeper {
        #[cfg_attr(unix, test)]
        fn gated_on() {}

        #[cfg(any())]
        #[test]
        fn compiled_out() {
            let _ = "#[test]";
        }
    }
}

harness::main!();
