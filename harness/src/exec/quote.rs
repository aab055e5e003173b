//! POSIX shell quoting, for commands that travel as one string (ssh, `sh -c`).

/// Quotes `s` so that a POSIX shell reads it back as exactly one word.
///
/// Words made only of safe characters are left alone, for readable command lines; everything
/// else is put in single quotes, with each `'` written as `'\''`.
///
/// ```
/// use harness::exec::quote;
/// assert_eq!(quote("plain-word_1.txt"), "plain-word_1.txt");
/// assert_eq!(quote("it's $HOME"), r#"'it'\''s $HOME'"#);
/// assert_eq!(quote(""), "''");
/// ```
pub fn quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes each word and joins them with spaces.
pub fn quote_words<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(quote).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_sh() {
        let nasty = [
            "a b",
            "'",
            "\"",
            "$(id)",
            "`id`",
            "\\",
            "new\nline",
            "*",
            "",
            "-n",
            "é",
        ];
        let script = format!("printf '%s\\0' {}", quote_words(nasty.iter().copied()));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let got: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .split_terminator('\0')
            .collect();
        assert_eq!(got, nasty);
    }
}
