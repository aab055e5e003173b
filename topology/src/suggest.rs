//! "did you mean ...?": the closest of a set of valid names.

/// The candidate closest to `wrong`, when one is close enough to be a likely typo.
pub fn closest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wrong_lower = wrong.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != wrong)
        .map(|c| {
            let distance = strsim::damerau_levenshtein(&wrong_lower, &c.to_ascii_lowercase());
            let similarity = strsim::jaro_winkler(&wrong_lower, &c.to_ascii_lowercase());
            (c, distance, similarity)
        })
        .filter(|(c, distance, similarity)| {
            *distance <= (c.chars().count() / 3).max(1) || *similarity >= 0.9
        })
        .min_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .map(|(c, _, _)| c)
}

/// Writes `a`, `a` or `b`, `a`, `b` or `c` with each name in backquotes.
pub fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_and_ignores_strangers() {
        let fields = ["target", "dependencies", "health_check", "port", "config"];
        assert_eq!(closest("dependecies", fields), Some("dependencies"));
        assert_eq!(closest("prot", fields), Some("port"));
        assert_eq!(closest("healthcheck", fields), Some("health_check"));
        assert_eq!(closest("Target", fields), Some("target"));
        assert_eq!(closest("zzz", fields), None);
        assert_eq!(one_of(&["a", "b", "c"]), "`a`, `b` or `c`");
    }
}
