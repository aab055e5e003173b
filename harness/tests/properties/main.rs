//! Seeded property tests over the parsers of outside input: topology and overlay files, package
//! manifests and the WebSocket API's request frames. Each test runs a bounded number of
//! generated cases (`HARNESS_PROPTEST_CASES`), each from its own seed
//! (`HARNESS_PROPTEST_SEED` plus the case number); a failure prints the seed that reproduces
//! it alone. `docs/fuzzing.md` describes them beside the fuzz targets.

mod manifest;
mod seeded;
mod topology;
mod ws_message;
