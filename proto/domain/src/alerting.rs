//! Alerting as people see it — alerts, their history, rules, channels and
//! silences — and the trait the collector implements to serve it. The JSON
//! API returns these same types (their serialized form is the API's JSON)
//! and the dashboard renders them, so the two always agree. Changes go
//! through the same validation whichever way they come, so a rule saved from
//! a form and one sent to `/api/v1/rules` are checked and stored alike; a
//! refused change names the field and writes nothing.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

pub use crate::settings::BoxFuture;
use crate::source::TimeRange;
pub use crate::source::{AlertSeverity, AlertState};

/// Serializes Unix epoch milliseconds as RFC 3339, as the API writes times.
fn rfc3339_ms<S: Serializer>(ms: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::rfc3339(*ms))
}

/// Serializes optional Unix epoch milliseconds as RFC 3339 or `null`.
fn optional_rfc3339_ms<S: Serializer>(ms: &Option<i64>, serializer: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => rfc3339_ms(ms, serializer),
        None => serializer.serialize_none(),
    }
}

/// Labels of an alert or a rule: names to values.
pub type Labels = BTreeMap<String, String>;

/// A pending or firing alert, as the engine holds it now. Serialized, it is
/// an element of `GET /api/v1/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActiveAlert {
    /// Rule id.
    pub rule_id: i64,
    /// Rule name.
    pub rule: String,
    /// Alert id (16 hex digits), `fingerprint` in JSON as in Alertmanager.
    #[serde(rename = "fingerprint")]
    pub alert: String,
    /// `pending` or `firing` (a silenced alert is firing, with `silenced`
    /// set).
    pub state: AlertState,
    /// How urgent it is.
    pub severity: AlertSeverity,
    /// Every label.
    pub labels: BTreeMap<String, String>,
    /// Rendered annotations (`summary`, `description`, …).
    pub annotations: BTreeMap<String, String>,
    /// Last measured value, in the rule's unit.
    pub value: f64,
    /// The value as text in the rule's unit (`312 ms`, `4.2 %`).
    pub value_text: String,
    /// The rule's threshold.
    pub threshold: f64,
    /// The threshold as text in the rule's unit.
    pub threshold_text: String,
    /// When the condition became true (Unix epoch milliseconds; RFC 3339
    /// `active_since` in JSON).
    #[serde(rename = "active_since", serialize_with = "rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub active_since_ms: i64,
    /// When it started firing (`firing_since` in JSON).
    #[serde(rename = "firing_since", serialize_with = "optional_rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub firing_since_ms: Option<i64>,
    /// Whether a silence mutes its notifications.
    pub silenced: bool,
    /// The silences muting it (empty when none).
    pub silenced_by: Vec<i64>,
}

/// One entry of the alert history: a transition or a delivery.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    /// When, Unix epoch milliseconds.
    pub at_ms: i64,
    /// Rule id.
    pub rule_id: i64,
    /// Rule name at the time.
    pub rule: String,
    /// Alert id.
    pub alert: String,
    /// Every label of the alert.
    pub labels: BTreeMap<String, String>,
    /// `pending`, `firing`, `resolved`, `inactive` (transitions), `notified`
    /// or `notify_failed` (deliveries).
    pub event: String,
    /// The value that caused a transition.
    pub value: Option<f64>,
    /// The channel of a delivery.
    pub channel_id: Option<i64>,
    /// The previous state of a transition, or the error of a failed delivery.
    pub detail: String,
}

/// What a rule kind measures, for the rule form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleKindInfo {
    /// Name (`query_latency`, …).
    pub name: String,
    /// What the threshold is.
    pub threshold: String,
    /// Whether the kind takes a percentile.
    pub percentile: bool,
    /// Scope fields the kind understands.
    pub scope: Vec<String>,
}

/// Which series a rule looks at; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleScope {
    /// Only this service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Only this statement (16 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Only pools of this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Only this instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// A stored rule. Serialized, it is what `/api/v1/rules` returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleInfo {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Kind (`query_latency`, …).
    pub kind: String,
    /// The condition is `value >= threshold`.
    pub threshold: f64,
    /// The threshold in the kind's unit (`90 %`, `250 ms`).
    pub threshold_text: String,
    /// Percentile (latency and acquire-wait kinds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// Fewest executions judged (error rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u64>,
    /// Slow-query latency (slow-query count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_ms: Option<f64>,
    /// Silent instances forgotten after (agent silence), as `1h`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forget_after: Option<String>,
    /// How far back each evaluation reads, as `5m`.
    pub window: String,
    /// How long the condition must hold before firing (`for` in JSON).
    #[serde(rename = "for")]
    pub for_: String,
    /// How long it keeps firing after the condition cleared.
    pub keep_firing_for: String,
    /// Which series.
    pub scope: RuleScope,
    /// How urgent its alerts are.
    pub severity: AlertSeverity,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Annotation templates.
    pub annotations: BTreeMap<String, String>,
    /// Channel ids notified.
    pub channels: Vec<i64>,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// The built-in default it was installed from (`default` in JSON).
    #[serde(rename = "default")]
    pub default_key: Option<String>,
}

/// A rule as a form sends it: what is missing takes the API's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleDraft {
    /// Name.
    pub name: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// Threshold.
    pub threshold: Option<f64>,
    /// Percentile.
    pub percentile: Option<f64>,
    /// Fewest executions judged.
    pub min_calls: Option<u64>,
    /// Slow-query latency, ms.
    pub slow_ms: Option<f64>,
    /// Duration text.
    pub forget_after: Option<String>,
    /// Duration text.
    pub window: Option<String>,
    /// Duration text.
    pub for_: Option<String>,
    /// Duration text.
    pub keep_firing_for: Option<String>,
    /// Scope.
    pub scope: RuleScope,
    /// Severity.
    pub severity: Option<String>,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations; `None` for the kind's defaults.
    pub annotations: Option<BTreeMap<String, String>>,
    /// Channel ids.
    pub channels: Vec<i64>,
    /// Whether it is evaluated.
    pub enabled: bool,
}

/// What a dry run found for one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreviewRow {
    /// Series labels.
    pub labels: BTreeMap<String, String>,
    /// Measured value (`None` when the series vanished).
    pub value: Option<f64>,
    /// Measured value in the rule's unit (`None` when the series vanished).
    pub value_text: Option<String>,
    /// Whether `value >= threshold`.
    pub condition: bool,
    /// State now: `inactive`, `pending`, `firing` or `resolved`.
    pub state: String,
    /// State this evaluation would give it.
    pub next_state: String,
}

/// A rule evaluated now without changing anything. Serialized, it is what
/// `POST /api/v1/rules/{id}/evaluate` returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Evaluation {
    /// Rule id.
    pub rule_id: i64,
    /// Rule name.
    pub rule: String,
    /// Whether the rule is enabled.
    pub enabled: bool,
    /// When it was evaluated (RFC 3339).
    pub evaluated_at: String,
    /// Start of the window read (RFC 3339).
    pub window_from: String,
    /// One row per measured series.
    pub series: Vec<PreviewRow>,
}

/// A setting of a channel, as JSON carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum SettingValue {
    /// Not set (`null`).
    Unset,
    /// Text: a URL, a host, an address, a duration (`10s`).
    Text(String),
    /// A whole number: a port, attempts.
    Number(u64),
    /// A list: email recipients.
    List(Vec<String>),
    /// Names to values: webhook headers.
    Map(BTreeMap<String, String>),
}

impl SettingValue {
    /// The value as a form field holds it: a list comma-separated, a map as
    /// `Name: value` lines, unset as empty.
    pub fn text(&self) -> String {
        match self {
            SettingValue::Unset => String::new(),
            SettingValue::Text(text) => text.clone(),
            SettingValue::Number(n) => n.to_string(),
            SettingValue::List(items) => items.join(", "),
            SettingValue::Map(map) => map
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// A stored notification channel, secrets redacted. Serialized, it is what
/// `/api/v1/channels` returns: the kind's settings sit beside the name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelInfo {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// `webhook`, `email`, `alertmanager`, `log` or `custom`.
    pub kind: String,
    /// The kind's settings (`url`, `to`, …), secrets redacted; sending a
    /// redacted value back keeps the secret.
    #[serde(flatten)]
    pub settings: BTreeMap<String, SettingValue>,
    /// Whether resolved alerts are notified.
    pub send_resolved: bool,
    /// How often a still-firing alert is notified again, as `4h`.
    pub repeat_interval: String,
}

/// A channel as a form sends it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelDraft {
    /// Name.
    pub name: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// The kind's settings as typed; empty ones are left out. Lists (`to`)
    /// are comma-separated, `headers` one `Name: value` per line.
    pub settings: BTreeMap<String, String>,
    /// Whether resolved alerts are notified.
    pub send_resolved: bool,
    /// Duration text.
    pub repeat_interval: Option<String>,
}

/// One label matcher of a silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MatcherInfo {
    /// Label name.
    pub name: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: String,
    /// Value or regular expression.
    pub value: String,
}

/// Where a silence is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SilenceStatus {
    /// It starts later.
    Pending,
    /// It mutes matching alerts now.
    Active,
    /// It ended.
    Expired,
}

impl SilenceStatus {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceStatus::Pending => "pending",
            SilenceStatus::Active => "active",
            SilenceStatus::Expired => "expired",
        }
    }
}

impl std::fmt::Display for SilenceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A silence. Serialized, it is what `/api/v1/silences` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SilenceInfo {
    /// Id.
    pub id: i64,
    /// Every matcher must match an alert's labels.
    pub matchers: Vec<MatcherInfo>,
    /// Start (Unix epoch milliseconds; RFC 3339 `starts_at` in JSON).
    #[serde(rename = "starts_at", serialize_with = "rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub starts_at_ms: i64,
    /// End (`ends_at` in JSON).
    #[serde(rename = "ends_at", serialize_with = "rfc3339_ms")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub ends_at_ms: i64,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// Pending, active or expired, now.
    pub status: SilenceStatus,
}

/// A silence as a form sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SilenceDraft {
    /// Matchers.
    pub matchers: Vec<MatcherInfo>,
    /// How long from now, as `2h`.
    pub duration: Option<String>,
    /// Who set it.
    pub created_by: Option<String>,
    /// Why.
    pub comment: Option<String>,
}

/// Why an alerting request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertingError {
    /// A field is missing or wrong; nothing was written.
    #[error("{field}: {message}")]
    Invalid {
        /// The field (`for`, `scope.pool`, `channels[1]`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// No such rule, channel or silence.
    #[error("{0}")]
    NotFound(String),
    /// A name is taken, or a channel is still in use.
    #[error("{0}")]
    Conflict(String),
    /// A test notification was not delivered.
    #[error("{0}")]
    Delivery(String),
    /// Something failed inside; details go to the log.
    #[error("{0}")]
    Internal(String),
}

/// Result of an alerting request.
pub type AlertingResult<'a, T> = BoxFuture<'a, Result<T, AlertingError>>;

/// The collector's alert engine, as the dashboard sees it.
pub trait Alerting: Send + Sync + 'static {
    /// The rule kinds, for the rule form.
    fn kinds(&self) -> Vec<RuleKindInfo>;

    /// Pending and firing alerts.
    fn active(&self) -> AlertingResult<'_, Vec<ActiveAlert>>;

    /// History in `range`, newest first, at most `limit` entries.
    fn history(&self, range: TimeRange, limit: usize) -> AlertingResult<'_, Vec<HistoryEntry>>;

    /// Every rule.
    fn rules(&self) -> AlertingResult<'_, Vec<RuleInfo>>;

    /// Validates and stores a new rule; returns its id.
    fn create_rule(&self, draft: RuleDraft) -> AlertingResult<'_, i64>;

    /// Validates and replaces rule `id`.
    fn update_rule(&self, id: i64, draft: RuleDraft) -> AlertingResult<'_, ()>;

    /// Deletes rule `id`.
    fn delete_rule(&self, id: i64) -> AlertingResult<'_, ()>;

    /// Evaluates rule `id` now without changing any state.
    fn evaluate(&self, id: i64) -> AlertingResult<'_, Evaluation>;

    /// Every channel.
    fn channels(&self) -> AlertingResult<'_, Vec<ChannelInfo>>;

    /// Validates and stores a new channel; returns its id.
    fn create_channel(&self, draft: ChannelDraft) -> AlertingResult<'_, i64>;

    /// Validates and replaces channel `id`.
    fn update_channel(&self, id: i64, draft: ChannelDraft) -> AlertingResult<'_, ()>;

    /// Deletes channel `id` (refused while a rule uses it).
    fn delete_channel(&self, id: i64) -> AlertingResult<'_, ()>;

    /// Sends a test notification through channel `id`.
    fn test_channel(&self, id: i64) -> AlertingResult<'_, ()>;

    /// Every silence.
    fn silences(&self) -> AlertingResult<'_, Vec<SilenceInfo>>;

    /// Validates and stores a new silence; returns its id.
    fn create_silence(&self, draft: SilenceDraft) -> AlertingResult<'_, i64>;

    /// Ends silence `id` now.
    fn expire_silence(&self, id: i64) -> AlertingResult<'_, ()>;
}
