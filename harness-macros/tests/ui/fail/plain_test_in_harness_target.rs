// A plain #[test] in a harness::main!() target would never run: it is refused.
#[test]
fn never_runs() {}

harness::main!();
