//! Durations as alert rules and channels write them: the product's one
//! grammar (`querypulse_domain::duration`) as a JSON string, or a JSON number
//! of seconds; at most 365 days.

use std::time::Duration;

use serde_json::Value;

use super::FieldError;

/// Parses a duration field; `field` names it in the error.
pub fn parse(field: &str, value: &Value) -> Result<Duration, FieldError> {
    match value {
        Value::Number(n) => {
            let secs = n
                .as_f64()
                .filter(|s| s.is_finite())
                .ok_or_else(|| FieldError::new(field, format!("{n} is not a duration")))?;
            if secs < 0.0 {
                return Err(FieldError::new(field, format!("must not be negative (got {n})")));
            }
            if secs > MAX_SECS {
                return Err(FieldError::new(field, "must be at most 365 days"));
            }
            Ok(Duration::from_secs_f64(secs))
        }
        Value::String(text) => parse_text(field, text),
        _ => Err(FieldError::new(
            field,
            "must be a duration such as \"30s\", \"5m\", \"4h\" or a number of seconds",
        )),
    }
}

const MAX_SECS: f64 = 365.0 * 86_400.0;

fn parse_text(field: &str, text: &str) -> Result<Duration, FieldError> {
    let duration = querypulse_domain::duration::parse(text).map_err(|e| FieldError::new(field, e.to_string()))?;
    if duration.as_secs_f64() > MAX_SECS {
        return Err(FieldError::new(field, "must be at most 365 days"));
    }
    Ok(duration)
}

/// The shortest exact text for a duration: `"90s"`, `"5m"`, `"250ms"`.
pub use querypulse_domain::duration::format;

/// Serde helpers for `Duration` fields written as text.
pub mod text {
    use std::time::Duration;

    use serde::Serializer;

    /// Serializes as [`super::format`].
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(*duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_parse_with_units_or_as_seconds_and_format_back() {
        let cases = [
            (json!("500ms"), 500),
            (json!("30s"), 30_000),
            (json!("5m"), 300_000),
            (json!("4h"), 14_400_000),
            (json!("1d"), 86_400_000),
            (json!("1.5s"), 1_500),
            (json!(90), 90_000),
            (json!(0), 0),
            (json!("0s"), 0),
        ];
        for (value, ms) in cases {
            assert_eq!(parse("for", &value).unwrap(), Duration::from_millis(ms), "{value}");
        }
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(300)), "5m");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::ZERO), "0s");
    }

    #[test]
    fn negative_or_malformed_durations_name_the_field() {
        for bad in [
            json!("-1m"),
            json!(-5),
            json!("soon"),
            json!("5 parsecs"),
            json!(true),
            json!("1e400s"),
        ] {
            let err = parse("keep_firing_for", &bad).unwrap_err();
            assert_eq!(err.field, "keep_firing_for", "{bad}");
        }
        assert!(parse("for", &json!("-1m")).unwrap_err().message.contains("negative"));
    }
}
