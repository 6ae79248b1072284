//! Alert rules: what each kind measures, its parameters and scope, timing,
//! labels and annotations; validation of what the API receives; and the
//! zero-config defaults.
//!
//! Every rule compares one measured value per series (a service, a
//! fingerprint, a pool, an instance) with its `threshold`: the condition is
//! `value >= threshold`.

use querypulse_domain::source::AlertSeverity;
use std::collections::BTreeMap;
use std::time::Duration;

use querypulse_domain::Fingerprint;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::FieldError;
use super::durations;
use super::template;

/// Labels of an alert: names to values.
pub type Labels = BTreeMap<String, String>;

/// What a rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A latency percentile (ms) of one fingerprint, or of all of a service's
    /// statements, from the histograms merged over the window.
    QueryLatency,
    /// Failed executions over executions (0..1).
    QueryErrorRate,
    /// Executions slower than `slow_ms` in the window (counted from the
    /// merged histogram, so agents' sample limits do not hide any).
    SlowQueryCount,
    /// Peak connections in use over the pool's maximum (0..1): exhaustion.
    PoolUtilization,
    /// A percentile (ms) of the time tasks waited to acquire a connection.
    PoolAcquireWait,
    /// Acquisitions that timed out in the window.
    PoolTimeouts,
    /// Failed health checks in the window.
    HealthCheckFailures,
    /// Intervals since an instance last reported.
    AgentSilent,
}

impl RuleKind {
    /// Every kind, for error messages.
    pub const ALL: [RuleKind; 8] = [
        RuleKind::QueryLatency,
        RuleKind::QueryErrorRate,
        RuleKind::SlowQueryCount,
        RuleKind::PoolUtilization,
        RuleKind::PoolAcquireWait,
        RuleKind::PoolTimeouts,
        RuleKind::HealthCheckFailures,
        RuleKind::AgentSilent,
    ];

    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::QueryLatency => "query_latency",
            RuleKind::QueryErrorRate => "query_error_rate",
            RuleKind::SlowQueryCount => "slow_query_count",
            RuleKind::PoolUtilization => "pool_utilization",
            RuleKind::PoolAcquireWait => "pool_acquire_wait",
            RuleKind::PoolTimeouts => "pool_timeouts",
            RuleKind::HealthCheckFailures => "health_check_failures",
            RuleKind::AgentSilent => "agent_silent",
        }
    }

    fn parse(name: &str) -> Option<RuleKind> {
        RuleKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether the kind takes a `percentile`.
    pub fn has_percentile(self) -> bool {
        matches!(self, RuleKind::QueryLatency | RuleKind::PoolAcquireWait)
    }

    /// The scope fields the kind understands.
    pub fn scope_fields(self) -> &'static [&'static str] {
        match self {
            RuleKind::QueryLatency | RuleKind::QueryErrorRate | RuleKind::SlowQueryCount => &["service", "fingerprint"],
            RuleKind::PoolUtilization
            | RuleKind::PoolAcquireWait
            | RuleKind::PoolTimeouts
            | RuleKind::HealthCheckFailures => &["service", "instance", "pool"],
            RuleKind::AgentSilent => &["service", "instance"],
        }
    }

    /// Window read when the rule gives none.
    pub fn default_window(self) -> Duration {
        match self {
            RuleKind::QueryLatency | RuleKind::QueryErrorRate | RuleKind::SlowQueryCount => Duration::from_secs(300),
            _ => Duration::from_secs(60),
        }
    }

    /// What the threshold (and the measured value) is, for messages.
    pub fn threshold_meaning(self) -> &'static str {
        match self {
            RuleKind::QueryLatency | RuleKind::PoolAcquireWait => "a latency in milliseconds, above 0",
            RuleKind::QueryErrorRate | RuleKind::PoolUtilization => "a ratio above 0 and at most 1 (0.9 = 90 %)",
            RuleKind::SlowQueryCount | RuleKind::PoolTimeouts | RuleKind::HealthCheckFailures => "a count, at least 1",
            RuleKind::AgentSilent => "a number of the agent's intervals, at least 1",
        }
    }

    fn threshold_ok(self, t: f64) -> bool {
        match self {
            RuleKind::QueryLatency | RuleKind::PoolAcquireWait => t > 0.0,
            RuleKind::QueryErrorRate | RuleKind::PoolUtilization => t > 0.0 && t <= 1.0,
            _ => t >= 1.0,
        }
    }

    /// A measured value as people read it: `"93 %"`, `"1250 ms"`, `"4"`.
    pub fn format_value(self, value: f64) -> String {
        match self {
            RuleKind::QueryLatency | RuleKind::PoolAcquireWait => format!("{} ms", trim(value)),
            RuleKind::QueryErrorRate | RuleKind::PoolUtilization => format!("{} %", trim(value * 100.0)),
            RuleKind::AgentSilent => format!("{} intervals", trim(value)),
            _ => trim(value),
        }
    }
}

/// A number with at most one decimal, without a trailing `.0`.
fn trim(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
}

/// Which series a rule looks at; unset fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Only this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Only this statement (16 hex digits); query kinds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// Only pools of this name; pool and health kinds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Only this instance id; pool, health and silence kinds only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Unique name; the `alertname` label.
    pub name: String,
    /// What it measures.
    pub kind: RuleKind,
    /// The condition is `value >= threshold` (unit per kind).
    pub threshold: f64,
    /// Percentile, 0..100 exclusive (latency and acquire-wait kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// Series with fewer executions in the window are not judged (error rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u64>,
    /// Latency above which an execution counts as slow (slow-query count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_ms: Option<f64>,
    /// Instances silent longer than this are forgotten (agent silence).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "optional_duration")]
    pub forget_after: Option<Duration>,
    /// How far back each evaluation reads.
    #[serde(with = "durations::text")]
    pub window: Duration,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for", with = "durations::text")]
    pub for_: Duration,
    /// How long a firing alert keeps firing after the condition cleared.
    #[serde(with = "durations::text")]
    pub keep_firing_for: Duration,
    /// Which series.
    pub scope: Scope,
    /// `critical`, `warning` or `info`; the `severity` label.
    pub severity: AlertSeverity,
    /// Extra labels on every alert of the rule.
    pub labels: Labels,
    /// `summary`, `description` and any other annotation, templated.
    pub annotations: BTreeMap<String, String>,
    /// Channel ids notified.
    pub channels: Vec<i64>,
    /// Disabled rules are not evaluated.
    pub enabled: bool,
}

fn optional_duration<S: serde::Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => durations::text::serialize(d, serializer),
        None => serializer.serialize_none(),
    }
}

/// Instances silent longer than this are forgotten by silence rules that do
/// not say otherwise.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(3_600);

/// A rule as the API receives it: every field optional so that what is
/// missing or wrong can be named.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "name": "checkout p95",
    "kind": "query_latency",
    "percentile": 95,
    "threshold": 250,
    "window": "5m",
    "for": "2m",
    "scope": {"service": "checkout"},
    "severity": "critical",
    "labels": {"team": "payments"},
    "channels": []
})))]
#[serde(deny_unknown_fields)]
pub struct RuleInput {
    /// Unique name; the `alertname` label. Required.
    pub name: Option<String>,
    /// What it measures: `query_latency`, `query_error_rate`,
    /// `slow_query_count`, `pool_utilization`, `pool_acquire_wait`,
    /// `pool_timeouts`, `health_check_failures` or `agent_silent`. Required.
    pub kind: Option<String>,
    /// The condition is `value >= threshold`, in the kind's unit
    /// (milliseconds, a 0..1 rate, a count, intervals). Required.
    pub threshold: Option<f64>,
    /// Percentile, 0..100 exclusive: required by the latency and
    /// acquire-wait kinds, refused by the others.
    pub percentile: Option<f64>,
    /// Series with fewer executions in the window are not judged (error
    /// rate).
    pub min_calls: Option<u64>,
    /// Latency above which an execution counts as slow (slow-query count).
    pub slow_ms: Option<f64>,
    /// Instances silent longer than this are forgotten (agent silence), as
    /// `1h` or seconds.
    pub forget_after: Option<Value>,
    /// How far back each evaluation reads, as `5m` or seconds.
    pub window: Option<Value>,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for")]
    pub for_: Option<Value>,
    /// How long a firing alert keeps firing after the condition cleared.
    pub keep_firing_for: Option<Value>,
    /// Which series: `service`, `fingerprint`, `pool`, `instance`; unset
    /// fields match everything.
    pub scope: Option<Scope>,
    /// `critical`, `warning` (default) or `info`; the `severity` label.
    pub severity: Option<String>,
    /// Extra labels on every alert of the rule.
    pub labels: Option<BTreeMap<String, String>>,
    /// `summary`, `description` and any other annotation, templated
    /// (`{{ value }}`, `{{ labels.service }}`, …).
    pub annotations: Option<BTreeMap<String, String>>,
    /// Ids of the channels notified.
    pub channels: Option<Vec<i64>>,
    /// Disabled rules are not evaluated (default: enabled).
    pub enabled: Option<bool>,
    /// Read-only fields of a rule as the API returns it; ignored, so a rule
    /// read with GET can be sent back with PUT.
    pub id: Option<Value>,
    /// See `id`.
    pub default: Option<Value>,
    /// See `id`.
    pub threshold_text: Option<Value>,
}

/// Labels every alert gets from its rule; a rule may not set them itself.
pub const RESERVED_LABELS: [&str; 2] = ["alertname", "severity"];

/// Whether `name` is a Prometheus-compatible label name.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl RuleInput {
    /// Validates the input; `channel_exists` answers whether a channel id is
    /// known.
    pub fn validate(self, channel_exists: impl Fn(i64) -> bool) -> Result<Rule, FieldError> {
        let name = self
            .name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| FieldError::new("name", "required"))?;
        if name.len() > 200 {
            return Err(FieldError::new("name", "at most 200 characters"));
        }
        let kind_name = self
            .kind
            .ok_or_else(|| FieldError::new("kind", format!("required: one of {}", kind_names())))?;
        let kind = RuleKind::parse(&kind_name).ok_or_else(|| {
            FieldError::new(
                "kind",
                format!("unknown kind {kind_name:?}: use one of {}", kind_names()),
            )
        })?;
        let threshold = self.threshold.ok_or_else(|| {
            FieldError::new(
                "threshold",
                format!("required for {} rules: {}", kind.as_str(), kind.threshold_meaning()),
            )
        })?;
        if !threshold.is_finite() || !kind.threshold_ok(threshold) {
            return Err(FieldError::new(
                "threshold",
                format!(
                    "{threshold} is out of range for {} rules: {}",
                    kind.as_str(),
                    kind.threshold_meaning()
                ),
            ));
        }
        let percentile = match (kind.has_percentile(), self.percentile) {
            (true, Some(p)) if p.is_finite() && p > 0.0 && p < 100.0 => Some(p),
            (true, Some(p)) => {
                return Err(FieldError::new(
                    "percentile",
                    format!("{p} is not a percentile: use a number between 0 and 100, such as 95 or 99.9"),
                ));
            }
            (true, None) => {
                return Err(FieldError::new(
                    "percentile",
                    format!("required for {} rules (95, 99, 99.9, …)", kind.as_str()),
                ));
            }
            (false, Some(_)) => return Err(not_used("percentile", kind)),
            (false, None) => None,
        };
        let min_calls = match (kind, self.min_calls) {
            (RuleKind::QueryErrorRate, calls) => Some(calls.unwrap_or(1).max(1)),
            (_, Some(_)) => return Err(not_used("min_calls", kind)),
            (_, None) => None,
        };
        let slow_ms = match (kind, self.slow_ms) {
            (RuleKind::SlowQueryCount, Some(ms)) if ms.is_finite() && ms > 0.0 => Some(ms),
            (RuleKind::SlowQueryCount, Some(ms)) => {
                return Err(FieldError::new("slow_ms", format!("{ms} must be a latency above 0 ms")));
            }
            (RuleKind::SlowQueryCount, None) => Some(1_000.0),
            (_, Some(_)) => return Err(not_used("slow_ms", kind)),
            (_, None) => None,
        };
        let forget_after = match (kind, &self.forget_after) {
            (RuleKind::AgentSilent, Some(v)) => Some(durations::parse("forget_after", v)?),
            (RuleKind::AgentSilent, None) => Some(DEFAULT_FORGET_AFTER),
            (_, Some(_)) => return Err(not_used("forget_after", kind)),
            (_, None) => None,
        };
        let duration = |field: &str, value: &Option<Value>, default: Duration| match value {
            Some(v) => durations::parse(field, v),
            None => Ok(default),
        };
        let window = duration("window", &self.window, kind.default_window())?;
        if window < Duration::from_secs(1) {
            return Err(FieldError::new("window", "must be at least 1s"));
        }
        let for_ = duration("for", &self.for_, Duration::ZERO)?;
        let keep_firing_for = duration("keep_firing_for", &self.keep_firing_for, Duration::ZERO)?;
        let scope = self.scope.unwrap_or_default();
        let allowed = kind.scope_fields();
        for (field, set) in [
            ("service", scope.service.is_some()),
            ("fingerprint", scope.fingerprint.is_some()),
            ("pool", scope.pool.is_some()),
            ("instance", scope.instance.is_some()),
        ] {
            if set && !allowed.contains(&field) {
                return Err(not_used(&format!("scope.{field}"), kind));
            }
        }
        let severity = match self.severity {
            None => AlertSeverity::Warning,
            Some(name) => AlertSeverity::parse(&name).ok_or_else(|| {
                let names: Vec<&str> = AlertSeverity::ALL.iter().map(|s| s.as_str()).collect();
                FieldError::new(
                    "severity",
                    format!("{name:?} is not a severity: use {}", names.join(", ")),
                )
            })?,
        };
        let labels = self.labels.unwrap_or_default();
        for name in labels.keys() {
            if !valid_label_name(name) {
                return Err(FieldError::new(
                    &format!("labels.{name}"),
                    "label names are letters, digits and _, not starting with a digit",
                ));
            }
            if RESERVED_LABELS.contains(&name.as_str()) || kind_labels(kind).contains(&name.as_str()) {
                return Err(FieldError::new(
                    &format!("labels.{name}"),
                    "is set by the rule itself and cannot be overridden",
                ));
            }
        }
        let annotations = self.annotations.unwrap_or_else(|| default_annotations(kind));
        for (name, text) in &annotations {
            template::check(text).map_err(|message| FieldError::new(&format!("annotations.{name}"), message))?;
        }
        let channels = self.channels.unwrap_or_default();
        for (i, id) in channels.iter().enumerate() {
            if !channel_exists(*id) {
                return Err(FieldError::new(
                    &format!("channels[{i}]"),
                    format!("unknown channel {id}"),
                ));
            }
            if channels[..i].contains(id) {
                return Err(FieldError::new(
                    &format!("channels[{i}]"),
                    format!("channel {id} is listed twice"),
                ));
            }
        }
        Ok(Rule {
            name,
            kind,
            threshold,
            percentile,
            min_calls,
            slow_ms,
            forget_after,
            window,
            for_,
            keep_firing_for,
            scope,
            severity,
            labels,
            annotations,
            channels,
            enabled: self.enabled.unwrap_or(true),
        })
    }
}

fn kind_names() -> String {
    RuleKind::ALL.map(RuleKind::as_str).join(", ")
}

fn not_used(field: &str, kind: RuleKind) -> FieldError {
    FieldError::new(field, format!("is not used by {} rules", kind.as_str()))
}

/// The labels the measured series of a kind carry.
pub fn kind_labels(kind: RuleKind) -> &'static [&'static str] {
    match kind {
        RuleKind::QueryLatency | RuleKind::QueryErrorRate | RuleKind::SlowQueryCount => &["service", "fingerprint"],
        RuleKind::AgentSilent => &["service", "instance", "host"],
        _ => &["service", "instance", "pool"],
    }
}

/// Annotations used when a rule gives none.
pub fn default_annotations(kind: RuleKind) -> BTreeMap<String, String> {
    let (summary, description) = match kind {
        RuleKind::QueryLatency => (
            "p{{ percentile }} latency of {{ labels.service }} is {{ value }}",
            "The p{{ percentile }} latency over the last {{ window }} is {{ value }} (threshold {{ threshold }}); \
             fingerprint {{ labels.fingerprint }}.",
        ),
        RuleKind::QueryErrorRate => (
            "{{ value }} of {{ labels.service }}'s queries fail",
            "Over the last {{ window }}, {{ value }} of executions failed (threshold {{ threshold }}); \
             fingerprint {{ labels.fingerprint }}.",
        ),
        RuleKind::SlowQueryCount => (
            "{{ value }} slow queries in {{ labels.service }}",
            "{{ value }} executions were slower than the slow-query threshold over the last {{ window }} \
             (threshold {{ threshold }}); fingerprint {{ labels.fingerprint }}.",
        ),
        RuleKind::PoolUtilization => (
            "Pool {{ labels.pool }} of {{ labels.service }} is {{ value }} in use",
            "Instance {{ labels.instance }} had {{ value }} of pool {{ labels.pool }}'s connections in use over the \
             last {{ window }} (threshold {{ threshold }}): tasks wait for connections.",
        ),
        RuleKind::PoolAcquireWait => (
            "Waiting {{ value }} for a connection of {{ labels.pool }} ({{ labels.service }})",
            "The p{{ percentile }} wait to acquire a connection of pool {{ labels.pool }} on instance \
             {{ labels.instance }} is {{ value }} over the last {{ window }} (threshold {{ threshold }}).",
        ),
        RuleKind::PoolTimeouts => (
            "{{ value }} connection timeouts in pool {{ labels.pool }} ({{ labels.service }})",
            "{{ value }} acquisitions of pool {{ labels.pool }} on instance {{ labels.instance }} timed out over \
             the last {{ window }} (threshold {{ threshold }}).",
        ),
        RuleKind::HealthCheckFailures => (
            "Health checks of pool {{ labels.pool }} ({{ labels.service }}) fail",
            "{{ value }} health checks of pool {{ labels.pool }} on instance {{ labels.instance }} failed over the \
             last {{ window }} (threshold {{ threshold }}).",
        ),
        RuleKind::AgentSilent => (
            "Instance {{ labels.instance }} of {{ labels.service }} stopped reporting",
            "Nothing arrived from instance {{ labels.instance }} on host {{ labels.host }} for {{ value }} \
             (threshold {{ threshold }}).",
        ),
    };
    BTreeMap::from([
        ("summary".to_owned(), summary.to_owned()),
        ("description".to_owned(), description.to_owned()),
    ])
}

/// One of the zero-config rules installed on first start.
#[derive(Debug, Clone)]
pub struct DefaultRule {
    /// Stable key recorded with the installed rule.
    pub key: &'static str,
    /// The rule (its `channels` are filled in with the default log channel).
    pub input: RuleInput,
}

/// Name of the channel installed with the defaults.
pub const DEFAULT_CHANNEL: &str = "log";

/// The zero-config rules: pool utilization ≥ 90 % for 1 m, service p99 ≥ 1 s
/// for 5 m, any health-check failure, an agent silent for 3 intervals.
pub fn defaults() -> Vec<DefaultRule> {
    let rule = |name: &str, kind: RuleKind, threshold: f64, window: &str, for_: &str, severity: &str| RuleInput {
        name: Some(name.into()),
        kind: Some(kind.as_str().into()),
        threshold: Some(threshold),
        window: Some(Value::from(window)),
        for_: Some(Value::from(for_)),
        severity: Some(severity.into()),
        ..RuleInput::default()
    };
    vec![
        DefaultRule {
            key: "pool_exhaustion",
            input: rule("Pool exhaustion", RuleKind::PoolUtilization, 0.9, "1m", "1m", "warning"),
        },
        DefaultRule {
            key: "service_p99",
            input: RuleInput {
                percentile: Some(99.0),
                ..rule(
                    "Slow service (p99)",
                    RuleKind::QueryLatency,
                    1_000.0,
                    "5m",
                    "5m",
                    "warning",
                )
            },
        },
        DefaultRule {
            key: "health_check_failures",
            input: rule(
                "Health check failing",
                RuleKind::HealthCheckFailures,
                1.0,
                "1m",
                "0s",
                "critical",
            ),
        },
        DefaultRule {
            key: "agent_silent",
            input: rule("Agent silent", RuleKind::AgentSilent, 3.0, "1m", "0s", "warning"),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: Value) -> RuleInput {
        serde_json::from_value(value).expect("rule input parses")
    }

    #[track_caller]
    fn refused(value: Value, field: &str) -> String {
        let err = input(value).validate(|id| id == 1).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        err.message
    }

    #[test]
    fn every_default_rule_validates() {
        for default in defaults() {
            let rule = default.input.validate(|_| true).unwrap();
            assert!(rule.enabled);
        }
        let pool = defaults().remove(0).input.validate(|_| true).unwrap();
        assert_eq!(
            (pool.kind, pool.threshold, pool.for_),
            (RuleKind::PoolUtilization, 0.9, Duration::from_secs(60))
        );
    }

    #[test]
    fn a_complete_rule_round_trips_through_json() {
        let rule = input(json!({
            "name": "checkout p95", "kind": "query_latency", "threshold": 250, "percentile": 95,
            "window": "5m", "for": "2m", "keep_firing_for": "1m",
            "scope": {"service": "checkout", "fingerprint": "00000000000000ff"},
            "severity": "critical", "labels": {"team": "payments"},
            "annotations": {"summary": "p95 is {{ value }}"}, "channels": [1]
        }))
        .validate(|id| id == 1)
        .unwrap();
        assert_eq!(rule.scope.fingerprint, Some(Fingerprint::new(255)));
        let json = serde_json::to_value(&rule).unwrap();
        assert_eq!(json["for"], "2m");
        assert_eq!(json["keep_firing_for"], "1m");
        let again = serde_json::from_value::<RuleInput>(json)
            .unwrap()
            .validate(|id| id == 1)
            .unwrap();
        assert_eq!(again, rule);
    }

    #[test]
    fn invalid_rules_name_the_field() {
        let base = json!({"name": "x", "kind": "pool_utilization", "threshold": 0.9});
        let with = |patch: Value| {
            let mut v = base.clone();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            v
        };
        assert!(refused(with(json!({"kind": "pool_exhaustion"})), "kind").contains("unknown kind"));
        let mut missing = base.clone();
        missing.as_object_mut().unwrap().remove("threshold");
        assert!(refused(missing, "threshold").contains("required"));
        assert!(refused(with(json!({"threshold": 90})), "threshold").contains("ratio"));
        assert!(refused(with(json!({"for": "-1m"})), "for").contains("negative"));
        assert!(refused(with(json!({"channels": [1, 7]})), "channels[1]").contains("unknown channel 7"));
        refused(with(json!({"severity": "page"})), "severity");
        refused(with(json!({"percentile": 99})), "percentile");
        refused(
            with(json!({"scope": {"fingerprint": "00000000000000ff"}})),
            "scope.fingerprint",
        );
        refused(with(json!({"labels": {"alertname": "x"}})), "labels.alertname");
        refused(
            with(json!({"annotations": {"summary": "{{ nope }}"}})),
            "annotations.summary",
        );
        refused(with(json!({"name": " "})), "name");
        let latency = json!({"name": "x", "kind": "query_latency", "threshold": 1000});
        refused(latency.clone(), "percentile");
        let mut bad = latency;
        bad["percentile"] = json!(150);
        assert!(refused(bad, "percentile").contains("between 0 and 100"));
    }

    #[test]
    fn values_are_formatted_in_the_unit_of_their_kind() {
        assert_eq!(RuleKind::PoolUtilization.format_value(1.0), "100 %");
        assert_eq!(RuleKind::QueryLatency.format_value(1234.56), "1234.6 ms");
        assert_eq!(RuleKind::PoolTimeouts.format_value(3.0), "3");
        assert_eq!(RuleKind::AgentSilent.format_value(4.5), "4.5 intervals");
    }
}
