//! The seeded case loop the property tests share, as in the package verifier's mutation test
//! (`harness/src/package/tests.rs`).

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// The first case's seed unless `HARNESS_PROPTEST_SEED` gives another.
const DEFAULT_SEED: u64 = 0x5eed;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Runs `check` on `default_cases` cases (or `HARNESS_PROPTEST_CASES`), case `n` with a random
/// generator seeded with `HARNESS_PROPTEST_SEED + n`. A failing case prints how to run it
/// alone, then fails the test with its panic.
pub fn run_cases(name: &str, default_cases: u64, mut check: impl FnMut(&mut fastrand::Rng)) {
    let seed = env_u64("HARNESS_PROPTEST_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("HARNESS_PROPTEST_CASES").unwrap_or(default_cases);
    for case in 0..cases {
        let case_seed = seed.wrapping_add(case);
        let mut rng = fastrand::Rng::with_seed(case_seed);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&mut rng))) {
            eprintln!(
                "{name}: case {case} failed; run it alone with \
                 HARNESS_PROPTEST_SEED={case_seed} HARNESS_PROPTEST_CASES=1"
            );
            resume_unwind(panic);
        }
    }
    println!("{name}: {cases} cases from seed {seed}");
}

/// A string of characters drawn from `alphabet`, as many as a number drawn from `lengths`.
pub fn string_of(rng: &mut fastrand::Rng, alphabet: &str, lengths: Range<usize>) -> String {
    let chars: Vec<char> = alphabet.chars().collect();
    let len = rng.usize(lengths);
    (0..len).map(|_| chars[rng.usize(..chars.len())]).collect()
}

/// Mutates `text` a few times: deletes, inserts YAML- and JSON-significant characters,
/// duplicates or drops a line, or cuts it short, always at character boundaries.
pub fn mutate(rng: &mut fastrand::Rng, text: &str) -> String {
    const NOISE: &[&str] = &[
        ":", " ", "\n", "-", "{", "}", "[", "]", "#", "&a", "*a", "!", "|", ">", "'", "\"", "\t",
        ",", "~", "null", "${", "}", "<<: *a", "0x", "1e9", "é", "\\", "?", "%", "@", "`",
    ];
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..rng.usize(1..4) {
        let at = rng.usize(..=chars.len());
        match rng.u8(..5) {
            0 if !chars.is_empty() => {
                let end = (at + rng.usize(1..8)).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            1 => {
                let noise = NOISE[rng.usize(..NOISE.len())];
                chars.splice(at..at, noise.chars());
            }
            2 => {
                let lines: Vec<String> = chars
                    .iter()
                    .collect::<String>()
                    .lines()
                    .map(String::from)
                    .collect();
                if !lines.is_empty() {
                    let i = rng.usize(..lines.len());
                    let mut lines = lines;
                    if rng.bool() {
                        let line = lines[i].clone();
                        lines.insert(rng.usize(..=lines.len()), line);
                    } else {
                        lines.remove(i);
                    }
                    chars = lines.join("\n").chars().collect();
                }
            }
            3 => chars.truncate(at),
            _ => {
                // Re-indent a line: YAML's structure is its indentation.
                let start = chars[..at]
                    .iter()
                    .rposition(|c| *c == '\n')
                    .map_or(0, |i| i + 1);
                if rng.bool() {
                    chars.splice(start..start, "  ".chars());
                } else if chars.get(start) == Some(&' ') {
                    chars.remove(start);
                }
            }
        }
    }
    chars.into_iter().collect()
}
