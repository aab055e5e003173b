//! Sizes as topology files, environment variables and flags write them: `64M`, `512K`, `1G`.

/// Parses a size in bytes: a number, optionally followed by `K`, `M` or `G` (powers of 1024;
/// `KB`, `KiB` and a trailing `B` are accepted too, in any case).
///
/// ```
/// use harness::topology::parse_size;
/// assert_eq!(parse_size("64M"), Ok(64 << 20));
/// assert_eq!(parse_size("512KiB"), Ok(512 << 10));
/// assert_eq!(parse_size("100"), Ok(100));
/// assert!(parse_size("1T").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("expected a size such as `64M`, `512K` or bytes, found `{text}`"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => {
            return Err(format!(
                "unknown size unit `{unit}` in `{text}`: use K, M or G"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_the_rest() {
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size(" 64MiB "), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("7b"), Ok(7));
        for bad in ["", "M", "lots", "-1M", "1.5M", "1T", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_size("17179869184G")
                .unwrap_err()
                .contains("too large")
        );
    }
}
