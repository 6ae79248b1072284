//! Silences: label matchers that mute notifications between two times. A
//! silenced alert is still evaluated and listed, marked silenced.

use chrono::{DateTime, TimeZone, Utc};
use querypulse_domain::alerting::SilenceStatus;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::FieldError;
use super::durations;
use super::rules::{Labels, valid_label_name};

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    /// Equal.
    #[serde(rename = "=")]
    Equal,
    /// Not equal.
    #[serde(rename = "!=")]
    NotEqual,
    /// The whole value matches the regular expression.
    #[serde(rename = "=~")]
    Regex,
    /// The whole value does not match the regular expression.
    #[serde(rename = "!~")]
    NotRegex,
}

/// One label matcher; a missing label has the empty value (as in
/// Alertmanager).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator, `=` by default.
    #[serde(default = "equal")]
    pub op: MatchOp,
    /// Value or regular expression.
    pub value: String,
    #[serde(skip)]
    regex: Option<Regex>,
}

fn equal() -> MatchOp {
    MatchOp::Equal
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Matcher {
    /// A matcher, compiling its regular expression (anchored at both ends).
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
        if !valid_label_name(name) {
            return Err(format!("{name:?} is not a label name"));
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("{value:?} is not a regular expression: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// Whether `labels` satisfy the matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        let actual = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => actual == self.value,
            (MatchOp::NotEqual, _) => actual != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(actual),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(actual),
            (_, None) => false,
        }
    }
}

/// A validated silence.
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// Start, Unix epoch milliseconds.
    pub starts_at_ms: i64,
    /// End (exclusive), Unix epoch milliseconds.
    pub ends_at_ms: i64,
    /// Who set it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

impl Silence {
    /// Whether the silence mutes `labels` at `now_ms`.
    pub fn mutes(&self, labels: &Labels, now_ms: i64) -> bool {
        self.is_active(now_ms) && self.matchers.iter().all(|m| m.matches(labels))
    }

    /// Whether `now_ms` is inside the silence.
    pub fn is_active(&self, now_ms: i64) -> bool {
        (self.starts_at_ms..self.ends_at_ms).contains(&now_ms)
    }

    /// `pending`, `active` or `expired` at `now_ms`.
    pub fn status(&self, now_ms: i64) -> SilenceStatus {
        if now_ms < self.starts_at_ms {
            SilenceStatus::Pending
        } else if now_ms < self.ends_at_ms {
            SilenceStatus::Active
        } else {
            SilenceStatus::Expired
        }
    }
}

/// A silence as the API receives it.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "matchers": [{"name": "service", "value": "checkout"}, {"name": "alertname", "op": "=~", "value": "Pool.*"}],
    "duration": "2h",
    "created_by": "ana",
    "comment": "database migration"
})))]
#[serde(deny_unknown_fields)]
pub struct SilenceInput {
    /// `[{"name": "service", "op": "=", "value": "checkout"}, …]`.
    pub matchers: Option<Vec<Value>>,
    /// RFC 3339 or epoch milliseconds; now by default.
    pub starts_at: Option<Value>,
    /// RFC 3339 or epoch milliseconds; or give `duration`.
    pub ends_at: Option<Value>,
    /// Length from `starts_at` (`"2h"`), instead of `ends_at`.
    pub duration: Option<Value>,
    /// Who set it.
    pub created_by: Option<String>,
    /// Why.
    pub comment: Option<String>,
    /// Read-only fields of a silence as returned by the API; ignored.
    pub id: Option<Value>,
    /// See `id`.
    pub status: Option<Value>,
}

fn time(field: &str, value: &Value) -> Result<i64, FieldError> {
    let invalid = || FieldError::new(field, "use RFC 3339 (2026-11-27T10:00:00Z) or Unix epoch milliseconds");
    match value {
        Value::Number(n) => n
            .as_i64()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .map(|t| t.timestamp_millis())
            .ok_or_else(invalid),
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.timestamp_millis())
            .map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

impl SilenceInput {
    /// Validates the input at `now_ms`.
    pub fn validate(self, now_ms: i64) -> Result<Silence, FieldError> {
        let raw = self.matchers.unwrap_or_default();
        if raw.is_empty() {
            return Err(FieldError::new("matchers", "at least one matcher"));
        }
        let mut matchers = Vec::with_capacity(raw.len());
        for (i, value) in raw.into_iter().enumerate() {
            let field = format!("matchers[{i}]");
            let parsed: Matcher = serde_json::from_value(value)
                .map_err(|e| FieldError::new(&field, format!("{e}: use {{\"name\", \"op\", \"value\"}}")))?;
            matchers
                .push(Matcher::new(&parsed.name, parsed.op, &parsed.value).map_err(|e| FieldError::new(&field, e))?);
        }
        if matchers.iter().all(|m| m.matches(&Labels::new())) {
            return Err(FieldError::new(
                "matchers",
                "would silence every alert: at least one matcher must need a label value",
            ));
        }
        let starts_at_ms = match &self.starts_at {
            Some(v) => time("starts_at", v)?,
            None => now_ms,
        };
        let ends_at_ms = match (&self.ends_at, &self.duration) {
            (Some(v), None) => time("ends_at", v)?,
            (None, Some(d)) => {
                starts_at_ms.saturating_add(durations::parse("duration", d)?.as_millis().min(i64::MAX as u128) as i64)
            }
            (Some(_), Some(_)) => return Err(FieldError::new("duration", "give ends_at or duration, not both")),
            (None, None) => return Err(FieldError::new("ends_at", "required (or give duration)")),
        };
        if ends_at_ms <= starts_at_ms {
            return Err(FieldError::new("ends_at", "must be later than starts_at"));
        }
        if ends_at_ms <= now_ms {
            return Err(FieldError::new("ends_at", "is in the past"));
        }
        Ok(Silence {
            matchers,
            starts_at_ms,
            ends_at_ms,
            created_by: self.created_by.unwrap_or_default(),
            comment: self.comment.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn matchers_compare_whole_values_and_missing_labels_are_empty() {
        let l = labels(&[("service", "checkout"), ("pool", "main")]);
        assert!(Matcher::new("service", MatchOp::Equal, "checkout").unwrap().matches(&l));
        assert!(!Matcher::new("service", MatchOp::Equal, "check").unwrap().matches(&l));
        assert!(Matcher::new("service", MatchOp::Regex, "check.*").unwrap().matches(&l));
        assert!(!Matcher::new("service", MatchOp::Regex, "check").unwrap().matches(&l));
        assert!(Matcher::new("pool", MatchOp::NotRegex, "repl.*").unwrap().matches(&l));
        assert!(Matcher::new("team", MatchOp::NotEqual, "db").unwrap().matches(&l));
        assert!(Matcher::new("service", MatchOp::Regex, "(").is_err());
    }

    #[test]
    fn silences_mute_only_inside_their_time_and_only_matching_alerts() {
        let input: SilenceInput = serde_json::from_value(json!({
            "matchers": [{"name": "service", "value": "checkout"}, {"name": "pool", "op": "=~", "value": "ma.*"}],
            "starts_at": 1_000, "duration": "10s", "comment": "deploy"
        }))
        .unwrap();
        let silence = input.validate(500).unwrap();
        assert_eq!(silence.ends_at_ms, 11_000);
        let hit = labels(&[("service", "checkout"), ("pool", "main")]);
        assert!(!silence.mutes(&hit, 999));
        assert!(silence.mutes(&hit, 1_000));
        assert!(!silence.mutes(&labels(&[("service", "checkout"), ("pool", "replica")]), 5_000));
        assert!(!silence.mutes(&hit, 11_000));
        assert_eq!(silence.status(11_000), SilenceStatus::Expired);
    }

    #[test]
    fn invalid_silences_name_the_field() {
        let field = |v: Value| {
            serde_json::from_value::<SilenceInput>(v)
                .unwrap()
                .validate(10_000)
                .unwrap_err()
                .field
        };
        assert_eq!(field(json!({"ends_at": 20_000})), "matchers");
        assert_eq!(
            field(json!({"matchers": [{"name": "a b", "value": "x"}], "ends_at": 20_000})),
            "matchers[0]"
        );
        assert_eq!(field(json!({"matchers": [{"name": "a", "value": "x"}]})), "ends_at");
        assert_eq!(
            field(json!({"matchers": [{"name": "a", "value": "x"}], "ends_at": 5_000})),
            "ends_at"
        );
        assert_eq!(
            field(json!({"matchers": [{"name": "a", "op": "=~", "value": ".*"}], "ends_at": 20_000})),
            "matchers"
        );
        assert_eq!(
            field(json!({"matchers": [{"name": "a", "value": "x"}], "ends_at": "tomorrow"})),
            "ends_at"
        );
    }
}
