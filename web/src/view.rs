//! What a page shows, as carried in its URL: time range, service filter and
//! auto-refresh, so every view can be linked and bookmarked.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use crate::source::TimeRange;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The range picker's presets: URL value, label, length.
pub(crate) const PRESETS: [(&str, &str, i64); 6] = [
    ("15m", "15 min", 15 * MINUTE_MS),
    ("1h", "1 hour", HOUR_MS),
    ("6h", "6 hours", 6 * HOUR_MS),
    ("24h", "24 hours", DAY_MS),
    ("7d", "7 days", 7 * DAY_MS),
    ("30d", "30 days", 30 * DAY_MS),
];

/// Auto-refresh choices, seconds.
pub(crate) const REFRESH: [u32; 4] = [10, 30, 60, 300];

/// Longest custom range.
const MAX_RANGE_MS: i64 = 400 * DAY_MS;

/// The URL state every page shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    /// A preset (`1h`) or `custom`.
    pub range_key: String,
    /// The range it resolves to.
    pub range: TimeRange,
    /// Only this service.
    pub service: Option<String>,
    /// Reload every this many seconds.
    pub refresh: Option<u32>,
}

/// A parameter that does not parse; the message says which and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadParameter(pub String);

impl View {
    /// Reads `range`, `from`, `to`, `service` and `refresh`; `default` is the
    /// preset used when no range is given.
    pub fn parse(params: &HashMap<String, String>, default: &str, now_ms: i64) -> Result<View, BadParameter> {
        let get = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let custom = get("from").is_some() || get("to").is_some();
        let key = get("range").unwrap_or(if custom { "custom" } else { default });
        let range = match PRESETS.iter().find(|(k, ..)| *k == key) {
            Some((_, _, length)) => TimeRange::last(now_ms, *length),
            None if key == "custom" => {
                let to = get("to").map(|v| parse_time("to", v)).transpose()?.unwrap_or(now_ms);
                let from = get("from")
                    .map(|v| parse_time("from", v))
                    .transpose()?
                    .unwrap_or(to - HOUR_MS);
                if from >= to {
                    return Err(BadParameter("the range must start before it ends (from < to)".into()));
                }
                if to - from > MAX_RANGE_MS {
                    return Err(BadParameter("a range may cover at most 400 days".into()));
                }
                TimeRange {
                    from_ms: from,
                    to_ms: to,
                }
            }
            None => {
                return Err(BadParameter(format!(
                    "range={key:?} is not one of 15m, 1h, 6h, 24h, 7d, 30d, custom"
                )));
            }
        };
        let refresh = match get("refresh") {
            None | Some("off") => None,
            Some(v) => Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|s| (5..=3_600).contains(s))
                    .ok_or_else(|| BadParameter(format!("refresh={v:?} must be seconds from 5 to 3600")))?,
            ),
        };
        Ok(View {
            range_key: key.to_owned(),
            range,
            service: get("service").map(str::to_owned),
            refresh,
        })
    }

    /// The view's URL parameters.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs: Vec<(&'static str, String)> = vec![("range", self.range_key.clone())];
        if self.range_key == "custom" {
            pairs.push(("from", rfc3339(self.range.from_ms)));
            pairs.push(("to", rfc3339(self.range.to_ms)));
        }
        if let Some(service) = &self.service {
            pairs.push(("service", service.clone()));
        }
        if let Some(refresh) = self.refresh {
            pairs.push(("refresh", refresh.to_string()));
        }
        pairs
    }

    /// The view's URL parameters, `extra` appended (empty values left out).
    pub fn query(&self, extra: &[(&str, &str)]) -> String {
        let pairs = self.pairs();
        pairs
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(extra.iter().copied())
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// A link to `path` keeping this view, `extra` appended.
    pub fn href(&self, path: &str, extra: &[(&str, &str)]) -> String {
        format!("{path}?{}", self.query(extra))
    }

    /// The same view over another preset range.
    pub fn with_range(&self, key: &str, now_ms: i64) -> View {
        let length = PRESETS.iter().find(|(k, ..)| *k == key).map_or(HOUR_MS, |(_, _, l)| *l);
        View {
            range_key: key.to_owned(),
            range: TimeRange::last(now_ms, length),
            ..self.clone()
        }
    }

    /// What names this view's data in the dashboard's cache: the preset
    /// (so "the last 24 h" stays one key as time moves) or the exact range,
    /// and the service.
    pub fn cache_key(&self) -> String {
        let range = if self.range_key == "custom" {
            format!("{}-{}", self.range.from_ms, self.range.to_ms)
        } else {
            self.range_key.clone()
        };
        format!("{range}|{}", self.service.as_deref().unwrap_or(""))
    }

    /// "last 1 hour" or the custom range's ends.
    pub fn label(&self) -> String {
        match PRESETS.iter().find(|(k, ..)| *k == self.range_key) {
            Some((_, label, _)) => format!("last {label}"),
            None => format!(
                "{} – {} UTC",
                crate::format::timestamp(self.range.from_ms),
                crate::format::timestamp(self.range.to_ms)
            ),
        }
    }
}

/// RFC 3339 with seconds, UTC.
pub(crate) fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The value of a `datetime-local` input for `ms` (UTC).
pub(crate) fn datetime_local(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M").to_string())
        .unwrap_or_default()
}

/// A time: RFC 3339, Unix epoch milliseconds, or what a `datetime-local`
/// input sends (`2026-11-27T10:00`, read as UTC).
pub(crate) fn parse_time(name: &str, value: &str) -> Result<i64, BadParameter> {
    let invalid = || {
        BadParameter(format!(
            "{name}={value:?} is not a time: use 2026-11-27T10:00:00Z, 2026-11-27T10:00 (UTC) or Unix epoch milliseconds"
        ))
    };
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse::<i64>()
            .ok()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .map(|t| t.timestamp_millis())
            .ok_or_else(invalid);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.timestamp_millis());
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(invalid)
}

/// Percent-encodes a URL parameter or path segment: everything but
/// unreserved characters.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn presets_resolve_against_now_and_round_trip() {
        let now = 1_700_000_000_000;
        let view = View::parse(&params(&[("range", "24h"), ("service", "a b&c")]), "1h", now).unwrap();
        assert_eq!(view.range, TimeRange::last(now, DAY_MS));
        assert_eq!(
            view.query(&[("sort", "calls")]),
            "range=24h&service=a%20b%26c&sort=calls"
        );
        let default = View::parse(&params(&[]), "1h", now).unwrap();
        assert_eq!((default.range_key.as_str(), default.range.length_ms()), ("1h", HOUR_MS));
        assert!(View::parse(&params(&[("range", "2y")]), "1h", now).is_err());
    }

    #[test]
    fn custom_ranges_take_every_time_form_and_are_checked() {
        let now = 1_700_000_000_000;
        let view = View::parse(
            &params(&[("from", "2023-11-14T20:00"), ("to", "2023-11-14T22:13:20Z")]),
            "1h",
            now,
        )
        .unwrap();
        assert_eq!(view.range_key, "custom");
        assert_eq!(view.range.to_ms, 1_700_000_000_000);
        assert_eq!(view.range.from_ms, 1_699_992_000_000);
        let again = View::parse(
            &params(&[("range", "custom"), ("from", "1699992000000"), ("to", "1700000000000")]),
            "1h",
            now,
        )
        .unwrap();
        assert_eq!(again.range, view.range);
        for bad in [
            &[("from", "10"), ("to", "5")][..],
            &[("from", "yesterday")],
            &[("refresh", "1")],
        ] {
            assert!(View::parse(&params(bad), "1h", now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encoding_keeps_only_unreserved_characters() {
        assert_eq!(encode("a/b c?<x>"), "a%2Fb%20c%3F%3Cx%3E");
        assert_eq!(encode("ok-._~9"), "ok-._~9");
    }
}
