//! The one duration syntax of the config file and the CLI: `<n>ms`, `<n>s`, `<n>m`, `<n>h`,
//! `<n>d` (rate-limit periods, timeouts, intervals, `authz token --ttl`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses durations like `500ms`, `30s`, `15m`, `1h`, `2d` (surrounding blanks ignored).
///
/// # Errors
/// A message saying what form is expected, or that the value overflows.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let expected =
        || format!("'{s}' is not a duration like \"500ms\", \"30s\", \"15m\", \"1h\" or \"1d\"");
    let n: u64 = num.parse().map_err(|_| expected())?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(expected()),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Serde `deserialize_with` for a [`parse_duration`] string.
///
/// # Errors
/// The parser's message as a serde error.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_strictly() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in [
            "",
            "s",
            "h",
            "1",
            "1.5s",
            "-1s",
            "1 s",
            "1 hour",
            "1sec",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
