//! Human durations as topology files write them: `500ms`, `2s`, `1m30s`.

use std::time::Duration;

/// Parses a duration made of one or more `<number><unit>` parts, units `ns`, `us`, `ms`, `s`, `m`, `h`:
/// `500ms`, `2s`, `1.5s`, `1m30s`. A bare number is refused, since seconds and milliseconds are
/// both common readings of it.
///
/// ```
/// use std::time::Duration;
/// use harness::topology::parse_duration;
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(parse_duration("5").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = || format!("expected a duration such as `500ms` or `2s`, found `{text}`");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(expected());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(expected)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let number: f64 = number.parse().map_err(|_| expected())?;
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" => 1e-6,
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(expected()),
        };
        total += Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| expected())?;
        rest = tail;
    }
    Ok(total)
}

/// Writes a duration the way [`parse_duration`] reads it, in its largest exact unit: `500ms`,
/// `2s`, `90s`, `1500ms`.
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ns", d.as_nanos())
    } else if !millis.is_multiple_of(1000) || millis == 0 {
        format!("{millis}ms")
    } else {
        format!("{}s", d.as_secs())
    }
}
