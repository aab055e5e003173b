//! Package names and versions: what is allowed, and the fixed spelling of a near miss.
//!
//! A package installs to `/opt/<name>-<version>/`, so both must be safe as one path component
//! and readable in a process list; the name also becomes a service name and an env prefix.

/// The longest package name: a DNS label's limit, as for service names.
pub const MAX_NAME_LEN: usize = 63;

/// The longest version.
pub const MAX_VERSION_LEN: usize = 64;

/// What a package name may be, as error messages say it.
pub const NAME_RULE: &str = "lowercase ASCII letters, digits and `-`, starting with a letter, \
                             not ending with `-`, at most 63 characters";

/// What a version may be, as error messages say it.
pub const VERSION_RULE: &str = "ASCII letters, digits, `.`, `-`, `_` and `+`, starting with a \
                                letter or digit, at most 64 characters (such as `1.2.0` or \
                                `2024.05-rc1`)";

/// Checks a package name against [`NAME_RULE`]; the error says what is wrong and what is
/// allowed.
///
/// ```
/// use harness::package::validate_name;
/// assert!(validate_name("load-generator").is_ok());
/// assert!(validate_name("Load_Generator").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_LEN {
        "it is longer than 63 characters"
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        "it does not start with a lowercase letter"
    } else if name.ends_with('-') {
        "it ends with `-`"
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "invalid package name `{name}`: `{}` is not allowed; use {NAME_RULE}",
            c.escape_default()
        ));
    } else {
        return Ok(());
    };
    Err(format!(
        "invalid package name `{name}`: {problem}; use {NAME_RULE}"
    ))
}

/// Checks a version against [`VERSION_RULE`]; the error says what is wrong and what is
/// allowed.
///
/// ```
/// use harness::package::validate_version;
/// assert!(validate_version("1.0.0+build.5").is_ok());
/// assert!(validate_version("../1.0").is_err());
/// ```
pub fn validate_version(version: &str) -> Result<(), String> {
    let problem = if version.is_empty() {
        "it is empty".to_string()
    } else if version.len() > MAX_VERSION_LEN {
        "it is longer than 64 characters".to_string()
    } else if !version.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        "it does not start with a letter or digit".to_string()
    } else if let Some(c) = version
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+')))
    {
        format!("`{}` is not allowed", c.escape_default())
    } else {
        return Ok(());
    };
    Err(format!(
        "invalid version `{version}`: {problem}; use {VERSION_RULE}"
    ))
}

/// The valid package name closest to `raw`: lowercased, with every run of other characters
/// turned into one `-`, trimmed and cut to [`MAX_NAME_LEN`]. `None` when nothing valid is left
/// (no letter to start with).
///
/// ```
/// use harness::package::sanitize_name;
/// assert_eq!(sanitize_name("Load_Generator v2").as_deref(), Some("load-generator-v2"));
/// assert_eq!(sanitize_name("42"), None);
/// ```
pub fn sanitize_name(raw: &str) -> Option<String> {
    let mut name = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    let start = name.find(|c: char| c.is_ascii_lowercase())?;
    let mut name = name[start..].to_string();
    name.truncate(MAX_NAME_LEN);
    let name = name.trim_end_matches('-').to_string();
    validate_name(&name).is_ok().then_some(name)
}

/// The directory a package installs to, under `/opt`: `<name>-<version>`. Both parts must
/// have been validated.
pub fn install_dir_name(name: &str, version: &str) -> String {
    format!("{name}-{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule_and_say_why_not() {
        for good in ["a", "load-generator", "api2", &"a".repeat(63)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        let cases = [
            ("", "it is empty"),
            ("Api", "it does not start with a lowercase letter"),
            ("2api", "it does not start with a lowercase letter"),
            ("api-", "it ends with `-`"),
            ("api_server", "`_` is not allowed"),
            ("api/../x", "`/` is not allowed"),
            ("api.server", "`.` is not allowed"),
        ];
        for (bad, why) in cases {
            let error = validate_name(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
            assert!(
                error.contains("lowercase ASCII letters, digits and `-`"),
                "{error}"
            );
        }
        assert!(validate_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn versions_follow_the_rule_and_say_why_not() {
        for good in ["1", "1.0.0", "1.0.0-rc.1+build.5", "2024_05", "v3"] {
            assert_eq!(validate_version(good), Ok(()), "{good}");
        }
        let cases = [
            ("", "it is empty"),
            ("..", "it does not start with a letter or digit"),
            ("-1", "it does not start with a letter or digit"),
            ("1.0/../../etc", "`/` is not allowed"),
            ("1.0 beta", "` ` is not allowed"),
            ("1.0\n", "`\\n` is not allowed"),
        ];
        for (bad, why) in cases {
            let error = validate_version(bad).unwrap_err();
            assert!(error.contains(why), "{bad:?}: {error}");
        }
        assert!(validate_version(&"1".repeat(65)).is_err());
    }

    #[test]
    fn sanitizing_gives_a_valid_name_or_none() {
        let cases = [
            ("Load_Generator", Some("load-generator")),
            ("  api..server!! ", Some("api-server")),
            ("9lives", Some("lives")),
            ("---", None),
            ("123", None),
            ("ok", Some("ok")),
        ];
        for (raw, expected) in cases {
            assert_eq!(sanitize_name(raw).as_deref(), expected, "{raw}");
        }
        let long = sanitize_name(&format!("{}-{}", "a".repeat(62), "b")).unwrap();
        assert_eq!(long, "a".repeat(62));
    }
}
