//! The alert engine as the dashboard sees it: [`Alerts`] implements the
//! domain's [`Alerting`] trait. The alerts pages read and change rules,
//! channels and silences through the same [`Alerts`] methods the JSON API
//! calls, so a form is validated exactly like a request; the overview, query
//! pages and report get the alerts active in a range.

use std::collections::{BTreeMap, HashMap};

use querypulse_domain::Fingerprint;
use querypulse_domain::alerting::{
    ActiveAlert, Alerting, AlertingError, AlertingResult, ChannelDraft, ChannelInfo, Evaluation, HistoryEntry,
    MatcherInfo, RuleDraft, RuleInfo, RuleKindInfo, RuleScope, SettingValue, SilenceDraft, SilenceInfo,
};
use querypulse_domain::source::TimeRange;
use querypulse_domain::source::{AlertSeverity, AlertState, AlertSummary};
use serde_json::{Value, json};

use super::channels::{Channel, ChannelInput};
use super::db::{HistoryFilter, StoredRule};
use super::durations;
use super::rules::{Labels, RuleInput, RuleKind, Scope};
use super::silences::{Silence, SilenceInput};
use super::{Alerts, AlertsError, FieldError};
use querypulse_domain::now_ms;

/// How far before a range the history is read to find when an alert that
/// resolved in the range started firing.
const LOOKBACK_MS: i64 = 24 * 3_600_000;
/// Most history entries read to list the alerts of a range.
const RANGE_HISTORY_LIMIT: i64 = 10_000;

impl From<AlertsError> for AlertingError {
    fn from(error: AlertsError) -> Self {
        match error {
            AlertsError::Invalid(e) => AlertingError::Invalid {
                field: e.field,
                message: e.message,
            },
            AlertsError::NotFound(m) => AlertingError::NotFound(m),
            AlertsError::Conflict(m) => AlertingError::Conflict(m),
            AlertsError::Delivery(e) => AlertingError::Delivery(e.0),
            other => AlertingError::Internal(other.to_string()),
        }
    }
}

/// Labels naming the series, for a one-line description.
fn describe(labels: &Labels) -> String {
    labels
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(
    rule: &str,
    severity: AlertSeverity,
    state: AlertState,
    labels: &Labels,
    text: String,
    started_ms: i64,
    resolved_ms: Option<i64>,
) -> AlertSummary {
    AlertSummary {
        rule: rule.to_owned(),
        severity,
        state,
        summary: text,
        service: labels.get("service").cloned(),
        fingerprint: labels.get("fingerprint").and_then(|f| f.parse::<Fingerprint>().ok()),
        pool: labels.get("pool").map(|pool| match labels.get("instance") {
            Some(instance) => format!("{instance}/{pool}"),
            None => pool.clone(),
        }),
        started_ms,
        resolved_ms,
        labels: labels.clone(),
    }
}

fn active_summary(view: &ActiveAlert) -> AlertSummary {
    let state = match (view.state, view.silenced) {
        (AlertState::Firing, true) => AlertState::Silenced,
        (AlertState::Firing, false) => AlertState::Firing,
        _ => AlertState::Pending,
    };
    let text = view
        .annotations
        .get("summary")
        .cloned()
        .unwrap_or_else(|| describe(&view.labels));
    let started = match view.state {
        AlertState::Firing => view.firing_since_ms.unwrap_or(view.active_since_ms),
        _ => view.active_since_ms,
    };
    summary(&view.rule, view.severity, state, &view.labels, text, started, None)
}

impl Alerts {
    /// Alerts active at any time in `range`: pending, firing or silenced now
    /// (when they started before its end), or resolved within it; newest
    /// first.
    pub async fn in_range(&self, range: TimeRange, now_ms: i64) -> Result<Vec<AlertSummary>, AlertsError> {
        let mut out: Vec<AlertSummary> = self
            .alerts()
            .await?
            .iter()
            .map(active_summary)
            .filter(|a| a.started_ms < range.to_ms)
            .collect();
        let earliest = range.from_ms.saturating_sub(LOOKBACK_MS);
        let events = self
            .store
            .history(HistoryFilter {
                rule_id: None,
                from_ms: earliest,
                to_ms: now_ms.max(range.to_ms).saturating_add(1),
                limit: RANGE_HISTORY_LIMIT,
            })
            .await?;
        let mut fired: HashMap<&str, i64> = HashMap::new();
        for e in events.iter().rev().map(|e| &e.entry) {
            match e.event.as_str() {
                "firing" => {
                    fired.insert(&e.alert, e.at_ms);
                }
                "resolved" => {
                    let started = fired.remove(e.alert.as_str()).unwrap_or(earliest);
                    if e.at_ms >= range.from_ms && started < range.to_ms {
                        let severity = e
                            .labels
                            .get("severity")
                            .and_then(|s| AlertSeverity::parse(s))
                            .unwrap_or(AlertSeverity::Warning);
                        out.push(summary(
                            &e.rule,
                            severity,
                            AlertState::Resolved,
                            &e.labels,
                            describe(&e.labels),
                            started,
                            Some(e.at_ms),
                        ));
                    }
                }
                _ => {}
            }
        }
        out.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then_with(|| a.rule.cmp(&b.rule)));
        Ok(out)
    }
}

impl StoredRule {
    /// The rule as the API returns it and the dashboard shows it.
    pub fn info(&self) -> RuleInfo {
        rule_info(self.clone())
    }
}

fn rule_info(stored: StoredRule) -> RuleInfo {
    let rule = stored.rule;
    RuleInfo {
        id: stored.id,
        threshold_text: rule.kind.format_value(rule.threshold),
        kind: rule.kind.as_str().to_owned(),
        threshold: rule.threshold,
        percentile: rule.percentile,
        min_calls: rule.min_calls,
        slow_ms: rule.slow_ms,
        forget_after: rule.forget_after.map(durations::format),
        window: durations::format(rule.window),
        for_: durations::format(rule.for_),
        keep_firing_for: durations::format(rule.keep_firing_for),
        scope: RuleScope {
            service: rule.scope.service,
            fingerprint: rule.scope.fingerprint.map(|f| f.to_string()),
            pool: rule.scope.pool,
            instance: rule.scope.instance,
        },
        name: rule.name,
        severity: rule.severity,
        labels: rule.labels,
        annotations: rule.annotations,
        channels: rule.channels,
        enabled: rule.enabled,
        default_key: stored.default_key,
    }
}

/// A rule form as the API's input, so it is validated the same way.
fn rule_input(draft: RuleDraft) -> Result<RuleInput, AlertsError> {
    let fingerprint = draft
        .scope
        .fingerprint
        .map(|f| {
            f.parse::<Fingerprint>()
                .map_err(|e| AlertsError::Invalid(FieldError::new("scope.fingerprint", e.to_string())))
        })
        .transpose()?;
    let scope = Scope {
        service: draft.scope.service,
        fingerprint,
        pool: draft.scope.pool,
        instance: draft.scope.instance,
    };
    Ok(RuleInput {
        name: draft.name,
        kind: draft.kind,
        threshold: draft.threshold,
        percentile: draft.percentile,
        min_calls: draft.min_calls,
        slow_ms: draft.slow_ms,
        forget_after: draft.forget_after.map(Value::String),
        window: draft.window.map(Value::String),
        for_: draft.for_.map(Value::String),
        keep_firing_for: draft.keep_firing_for.map(Value::String),
        scope: Some(scope),
        severity: draft.severity,
        labels: Some(draft.labels),
        annotations: draft.annotations,
        channels: Some(draft.channels),
        enabled: Some(draft.enabled),
        id: None,
        default: None,
        threshold_text: None,
    })
}

impl Channel {
    /// The channel with id `id` as the API returns it and the dashboard
    /// shows it, secrets redacted.
    pub fn info(&self, id: i64) -> ChannelInfo {
        let setting = |value: &Value| match value {
            Value::String(s) => SettingValue::Text(s.clone()),
            Value::Number(n) => n
                .as_u64()
                .map_or_else(|| SettingValue::Text(n.to_string()), SettingValue::Number),
            Value::Array(items) => SettingValue::List(
                items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect(),
            ),
            Value::Object(map) => SettingValue::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                    .collect(),
            ),
            Value::Null | Value::Bool(_) => SettingValue::Unset,
        };
        let json = self.to_json(true);
        let settings = json
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !matches!(k.as_str(), "name" | "kind" | "send_resolved" | "repeat_interval"))
            .map(|(k, v)| (k.clone(), setting(v)))
            .collect();
        ChannelInfo {
            id,
            name: self.name.clone(),
            kind: self.settings.kind().to_owned(),
            settings,
            send_resolved: self.send_resolved,
            repeat_interval: durations::format(self.repeat_interval),
        }
    }
}

/// A channel form as the API's input, so it is validated the same way.
fn channel_input(draft: ChannelDraft) -> Result<ChannelInput, AlertsError> {
    let invalid = |field: &str, message: String| AlertsError::Invalid(FieldError::new(field, message));
    let mut input = ChannelInput {
        name: draft.name,
        kind: draft.kind,
        send_resolved: Some(draft.send_resolved),
        repeat_interval: draft.repeat_interval.map(Value::String),
        ..ChannelInput::default()
    };
    for (field, value) in draft.settings {
        match field.as_str() {
            "url" => input.url = Some(value),
            "secret" => input.secret = Some(value),
            "headers" => {
                let mut headers = BTreeMap::new();
                for (i, line) in value.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    let (name, v) = line
                        .split_once(':')
                        .ok_or_else(|| invalid("headers", format!("line {}: use Name: value", i + 1)))?;
                    headers.insert(name.trim().to_owned(), v.trim().to_owned());
                }
                input.headers = Some(headers);
            }
            "timeout" => input.timeout = Some(Value::String(value)),
            "max_attempts" => {
                input.max_attempts = Some(
                    value
                        .parse()
                        .map_err(|_| invalid("max_attempts", format!("{value:?} is not a whole number")))?,
                )
            }
            "smtp_host" => input.smtp_host = Some(value),
            "smtp_port" => {
                input.smtp_port = Some(
                    value
                        .parse()
                        .map_err(|_| invalid("smtp_port", format!("{value:?} is not a port number")))?,
                )
            }
            "tls" => input.tls = Some(value),
            "username" => input.username = Some(value),
            "password" => input.password = Some(value),
            "from" => input.from = Some(value),
            "to" => {
                input.to = Some(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "handler" => input.handler = Some(value),
            other => return Err(invalid(other, "is not a channel setting".to_owned())),
        }
    }
    Ok(input)
}

impl Silence {
    /// The silence with id `id` as the API returns it and the dashboard
    /// shows it, its status as of `now_ms`.
    pub fn info(&self, id: i64, now_ms: i64) -> SilenceInfo {
        SilenceInfo {
            id,
            matchers: self
                .matchers
                .iter()
                .map(|m| MatcherInfo {
                    name: m.name.clone(),
                    op: op_text(m.op),
                    value: m.value.clone(),
                })
                .collect(),
            starts_at_ms: self.starts_at_ms,
            ends_at_ms: self.ends_at_ms,
            status: self.status(now_ms),
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
        }
    }
}

fn op_text(op: super::silences::MatchOp) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Alerting for Alerts {
    fn kinds(&self) -> Vec<RuleKindInfo> {
        RuleKind::ALL
            .iter()
            .map(|k| RuleKindInfo {
                name: k.as_str().to_owned(),
                threshold: k.threshold_meaning().to_owned(),
                percentile: k.has_percentile(),
                scope: k.scope_fields().iter().map(|s| (*s).to_owned()).collect(),
            })
            .collect()
    }

    fn active(&self) -> AlertingResult<'_, Vec<ActiveAlert>> {
        Box::pin(async move { Ok(self.alerts().await?) })
    }

    fn history(&self, range: TimeRange, limit: usize) -> AlertingResult<'_, Vec<HistoryEntry>> {
        Box::pin(async move {
            let events = self
                .store()
                .history(HistoryFilter {
                    rule_id: None,
                    from_ms: range.from_ms,
                    to_ms: range.to_ms,
                    limit: i64::try_from(limit).unwrap_or(i64::MAX),
                })
                .await?;
            Ok(events.into_iter().map(|e| e.entry).collect())
        })
    }

    fn rules(&self) -> AlertingResult<'_, Vec<RuleInfo>> {
        Box::pin(async move { Ok(self.store().rules().await?.into_iter().map(rule_info).collect()) })
    }

    fn create_rule(&self, draft: RuleDraft) -> AlertingResult<'_, i64> {
        Box::pin(async move { Ok(self.create_rule(rule_input(draft)?).await?.id) })
    }

    fn update_rule(&self, id: i64, draft: RuleDraft) -> AlertingResult<'_, ()> {
        Box::pin(async move {
            self.update_rule(id, rule_input(draft)?).await?;
            Ok(())
        })
    }

    fn delete_rule(&self, id: i64) -> AlertingResult<'_, ()> {
        Box::pin(async move { Ok(self.delete_rule(id).await?) })
    }

    fn evaluate(&self, id: i64) -> AlertingResult<'_, Evaluation> {
        Box::pin(async move { Ok(self.dry_run(id).await?) })
    }

    fn channels(&self) -> AlertingResult<'_, Vec<ChannelInfo>> {
        Box::pin(async move {
            Ok(self
                .store()
                .channels()
                .await?
                .iter()
                .map(|(id, c)| c.info(*id))
                .collect())
        })
    }

    fn create_channel(&self, draft: ChannelDraft) -> AlertingResult<'_, i64> {
        Box::pin(async move { Ok(self.create_channel(channel_input(draft)?).await?.0) })
    }

    fn update_channel(&self, id: i64, draft: ChannelDraft) -> AlertingResult<'_, ()> {
        Box::pin(async move {
            self.update_channel(id, channel_input(draft)?).await?;
            Ok(())
        })
    }

    fn delete_channel(&self, id: i64) -> AlertingResult<'_, ()> {
        Box::pin(async move { Ok(self.delete_channel(id).await?) })
    }

    fn test_channel(&self, id: i64) -> AlertingResult<'_, ()> {
        Box::pin(async move { Ok(self.test_channel(id).await?) })
    }

    fn silences(&self) -> AlertingResult<'_, Vec<SilenceInfo>> {
        Box::pin(async move {
            let now = now_ms();
            Ok(self
                .store()
                .silences()
                .await?
                .iter()
                .map(|(id, s)| s.info(*id, now))
                .collect())
        })
    }

    fn create_silence(&self, draft: SilenceDraft) -> AlertingResult<'_, i64> {
        Box::pin(async move {
            let input = SilenceInput {
                matchers: Some(
                    draft
                        .matchers
                        .into_iter()
                        .map(|m| json!({"name": m.name, "op": m.op, "value": m.value}))
                        .collect(),
                ),
                duration: draft.duration.map(Value::String),
                created_by: draft.created_by,
                comment: draft.comment,
                ..SilenceInput::default()
            };
            Ok(self.create_silence(input).await?.0)
        })
    }

    fn expire_silence(&self, id: i64) -> AlertingResult<'_, ()> {
        Box::pin(async move { Ok(self.expire_silence(id).await?) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_settings_become_the_apis_channel_input_and_bad_ones_are_named() {
        let mut settings = BTreeMap::new();
        settings.insert("url".to_owned(), "https://hooks.example/q".to_owned());
        settings.insert("headers".to_owned(), "X-Team: db\n\nAuthorization: Bearer t".to_owned());
        settings.insert("max_attempts".to_owned(), "5".to_owned());
        let input = channel_input(ChannelDraft {
            name: Some("hook".into()),
            kind: Some("webhook".into()),
            settings: settings.clone(),
            send_resolved: true,
            repeat_interval: Some("1h".into()),
        })
        .unwrap();
        let channel = input.validate(None, |_| false).unwrap();
        let info = channel.info(1);
        assert_eq!(info.settings["url"].text(), "https://hooks.example/q");
        assert_eq!(
            info.settings["headers"].text(),
            "Authorization: ********\nX-Team: ********"
        );
        assert_eq!((info.send_resolved, info.repeat_interval.as_str()), (true, "1h"));

        settings.insert("max_attempts".to_owned(), "many".to_owned());
        let error = channel_input(ChannelDraft {
            settings,
            ..ChannelDraft::default()
        })
        .unwrap_err();
        assert!(matches!(error, AlertsError::Invalid(f) if f.field == "max_attempts"));
    }

    #[test]
    fn a_rule_form_is_validated_like_the_api() {
        let draft = RuleDraft {
            name: Some("slow".into()),
            kind: Some("query_latency".into()),
            threshold: Some(100.0),
            percentile: Some(99.0),
            for_: Some("-5m".into()),
            enabled: true,
            ..RuleDraft::default()
        };
        let error = rule_input(draft.clone()).unwrap().validate(|_| true).unwrap_err();
        assert_eq!(error.field, "for");
        let bad_fingerprint = RuleDraft {
            scope: RuleScope {
                fingerprint: Some("nope".into()),
                ..RuleScope::default()
            },
            ..draft.clone()
        };
        assert!(matches!(rule_input(bad_fingerprint), Err(AlertsError::Invalid(f)) if f.field == "scope.fingerprint"));
        let rule = rule_input(RuleDraft {
            for_: Some("5m".into()),
            ..draft
        })
        .unwrap()
        .validate(|_| true)
        .unwrap();
        let info = rule_info(StoredRule {
            id: 3,
            default_key: None,
            rule,
        });
        assert_eq!((info.for_.as_str(), info.threshold_text.as_str()), ("5m", "100 ms"));
    }
}
