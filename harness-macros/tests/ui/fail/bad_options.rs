use harness::harness_test;

#[harness_test(timeout = "soon", retries = 3)]
async fn t() {}

harness::main!();
