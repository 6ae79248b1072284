//! The one duration grammar, wherever a person writes a duration: the
//! command line (`--duration 5m`), API parameters (`step=10s`,
//! `window=5m`), alert rules and channels (`"for": "5m"`), silences.
//!
//! A non-negative decimal number and a unit: `250ms`, `10s`, `1.5m`, `4h`,
//! `7d`; a bare number is seconds. [`format()`] writes the shortest exact text
//! back, so what is read and shown agree.

use std::fmt;
use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DurationError {}

/// Parses `250ms`, `10s`, `1.5m`, `4h`, `7d`, or a bare number of seconds.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let invalid = || {
        DurationError(format!(
            "{text:?} is not a duration: use 500ms, 30s, 5m, 4h, 1d or a number of seconds"
        ))
    };
    if text.starts_with('-') {
        return Err(DurationError(format!("must not be negative (got {text:?})")));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(invalid());
    }
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let unit_secs = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        _ => return Err(invalid()),
    };
    Duration::try_from_secs_f64(number * unit_secs).map_err(|_| DurationError(format!("{text:?} is out of range")))
}

/// The shortest exact text for a duration: `"90s"`, `"5m"`, `"250ms"`.
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, len) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_bare_seconds_parse() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse(" 4h "), Ok(Duration::from_secs(4 * 3_600)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn nonsense_negative_and_huge_durations_are_refused_with_the_text() {
        for bad in [
            "",
            "s",
            "5x",
            "-1m",
            "1..5s",
            "ten",
            "1e400d",
            "99999999999999999999999d",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(
                error.to_string().contains(&format!("{:?}", bad.trim())),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn format_writes_the_shortest_exact_text_and_parses_back() {
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(86_400), "1d"),
        ] {
            assert_eq!(format(duration), text);
            assert_eq!(parse(text), Ok(duration));
        }
    }
}
