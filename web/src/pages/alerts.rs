//! `/alerts`: firing, pending and silenced alerts, the silences with forms to
//! add and expire them, and the history of transitions and deliveries in the
//! range. Also the form handling the rules and channels pages share.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{Layout, PageError, Request, html, read};
use crate::Dashboard;
use crate::alerting::{
    ActiveAlert, AlertSeverity, AlertState, Alerting, AlertingError, HistoryEntry, Labels, MatcherInfo, SilenceDraft,
    SilenceStatus,
};
use crate::auth::see_other;
use crate::format::{ago, timestamp};
use crate::view::encode;

/// Most history entries shown.
const HISTORY_LIMIT: usize = 500;
/// Length of a new silence unless the form says otherwise.
const DEFAULT_SILENCE: &str = "2h";

/// A posted form as name–value pairs, in order (checkbox groups repeat a
/// name).
pub(crate) type Posted = Form<Vec<(String, String)>>;

/// Reading a posted form's fields.
pub(crate) trait Fields {
    /// The first value of `name`, trimmed; empty when absent.
    fn text(&self, name: &str) -> String;
    /// The value of `name` unless empty.
    fn optional(&self, name: &str) -> Option<String>;
    /// Every non-empty value of `name`.
    fn all(&self, name: &str) -> Vec<String>;
    /// `name` as a number, `None` when empty; the error names the field.
    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, AlertingError>;
}

impl Fields for [(String, String)] {
    fn text(&self, name: &str) -> String {
        self.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    }

    fn optional(&self, name: &str) -> Option<String> {
        Some(self.text(name)).filter(|v| !v.is_empty())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, AlertingError> {
        match self.optional(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| invalid(name, format!("{v:?} is not a number"))),
        }
    }
}

/// A refused field.
pub(crate) fn invalid(field: &str, message: impl Into<String>) -> AlertingError {
    AlertingError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// `name=value` lines (labels, annotations) as a map; the error names the
/// field and the line.
pub(crate) fn pairs(field: &str, text: &str) -> Result<BTreeMap<String, String>, AlertingError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| invalid(field, format!("line {}: use name=value", i + 1)))?;
        out.insert(name.trim().to_owned(), value.trim().to_owned());
    }
    Ok(out)
}

/// A map as `name=value` lines, for a textarea.
pub(crate) fn lines(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The alert engine, or a page saying there is none.
pub(crate) fn alerting_of(dashboard: &Dashboard) -> Result<Arc<dyn Alerting>, PageError> {
    dashboard
        .alerting
        .clone()
        .ok_or_else(|| PageError::NotFound("This dashboard is mounted without the collector's alert engine.".into()))
}

/// The alert engine behind a posted change, once the form's session and
/// CSRF token are checked.
pub(crate) fn posted_alerting(
    dashboard: &Dashboard,
    request: &Request,
    form: &[(String, String)],
) -> Result<Arc<dyn Alerting>, PageError> {
    dashboard.sessions.check_form(&request.headers, &form.text("csrf"))?;
    alerting_of(dashboard)
}

/// A change made: logged, and the browser sent on to `to`.
pub(crate) fn changed(id: i64, what: &str, to: &str) -> Result<Response, PageError> {
    tracing::info!(id, "{what} from the dashboard");
    Ok(see_other(to))
}

/// A refused change shown on its page by `render` (given the reason), with
/// the status saying why; or a page error when there is nothing to show.
pub(crate) async fn show_refusal<F, Fut>(error: AlertingError, render: F) -> Result<Response, PageError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Response, PageError>>,
{
    let (status, message) = match error {
        AlertingError::Invalid { .. } => (StatusCode::BAD_REQUEST, error.to_string()),
        AlertingError::Conflict(m) => (StatusCode::CONFLICT, m),
        AlertingError::Delivery(m) => (StatusCode::BAD_GATEWAY, m),
        AlertingError::NotFound(m) => return Err(PageError::NotFound(m)),
        AlertingError::Internal(detail) => return Err(PageError::Internal(detail)),
    };
    let mut response = render(message).await?;
    *response.status_mut() = status;
    Ok(response)
}

/// A read of the alert engine that failed.
pub(crate) fn failed(error: AlertingError) -> PageError {
    match error {
        AlertingError::NotFound(m) => PageError::NotFound(m),
        other => PageError::Internal(other.to_string()),
    }
}

/// An id in a URL.
pub(crate) fn id(what: &str, raw: &str) -> Result<i64, PageError> {
    raw.parse()
        .map_err(|_| PageError::NotFound(format!("There is no {what} {raw:?}.")))
}

/// The status-light class of a severity.
pub(crate) fn severity_class(severity: AlertSeverity) -> &'static str {
    match severity {
        AlertSeverity::Critical => "critical",
        AlertSeverity::Warning => "degraded",
        AlertSeverity::Info => "healthy",
    }
}

/// Labels shown with an alert: all but the rule's name and severity (shown
/// on their own).
fn shown(labels: &Labels) -> Vec<(String, String)> {
    labels
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Matchers as a silence form takes them, one per line.
fn matcher_lines(matchers: &[MatcherInfo]) -> String {
    matchers
        .iter()
        .map(|m| format!("{}{}\"{}\"", m.name, m.op, m.value))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses matcher lines: `name=value`, `name!=value`, `name=~regex`,
/// `name!~regex`, the value optionally in double quotes.
fn parse_matchers(text: &str) -> Result<Vec<MatcherInfo>, AlertingError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let wrong = || {
            invalid(
                "matchers",
                format!(
                    "line {}: use name=value, name!=value, name=~regex or name!~regex",
                    i + 1
                ),
            )
        };
        let at = line.find(['=', '!']).ok_or_else(wrong)?;
        let (name, rest) = line.split_at(at);
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or_else(wrong)?;
        let value = rest[op.len()..].trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        out.push(MatcherInfo {
            name: name.trim().to_owned(),
            op: op.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(out)
}

struct AlertRow {
    rule: String,
    rule_href: String,
    severity: String,
    severity_class: &'static str,
    value: String,
    threshold: String,
    since: String,
    since_at: String,
    labels: Vec<(String, String)>,
    summary: String,
    silenced_by: String,
    silence_href: String,
}

impl AlertRow {
    fn new(a: &ActiveAlert, now: i64) -> AlertRow {
        let since = a.firing_since_ms.unwrap_or(a.active_since_ms);
        AlertRow {
            rule: a.rule.clone(),
            rule_href: format!("/alerts/rules?evaluate={}#evaluation", a.rule_id),
            severity: a.severity.to_string(),
            severity_class: severity_class(a.severity),
            value: a.value_text.clone(),
            threshold: a.threshold_text.clone(),
            since: ago(now, since),
            since_at: timestamp(since),
            labels: shown(&a.labels),
            summary: a.annotations.get("summary").cloned().unwrap_or_default(),
            silenced_by: a
                .silenced_by
                .iter()
                .map(|id| format!("#{id}"))
                .collect::<Vec<_>>()
                .join(", "),
            silence_href: silence_href(&a.labels),
        }
    }
}

struct SilenceRow {
    id: i64,
    matchers: String,
    starts: String,
    ends: String,
    status: String,
    created_by: String,
    comment: String,
    active: bool,
}

struct HistoryRow {
    at: String,
    rule: String,
    event: String,
    class: &'static str,
    labels: Vec<(String, String)>,
    value: String,
    detail: String,
}

impl HistoryRow {
    fn new(e: &HistoryEntry, channels: &BTreeMap<i64, String>) -> HistoryRow {
        let channel = |id: Option<i64>| match id {
            Some(id) => channels.get(&id).cloned().unwrap_or_else(|| format!("channel {id}")),
            None => String::new(),
        };
        let detail = match e.event.as_str() {
            "notified" => format!("sent to {}", channel(e.channel_id)),
            "notify_failed" => format!("not delivered to {}: {}", channel(e.channel_id), e.detail),
            _ => e.detail.clone(),
        };
        HistoryRow {
            at: timestamp(e.at_ms),
            rule: e.rule.clone(),
            class: match e.event.as_str() {
                "firing" | "notify_failed" => "bad",
                "pending" => "warn",
                "resolved" => "better",
                _ => "muted",
            },
            event: e.event.replace('_', " "),
            labels: shown(&e.labels),
            value: e
                .value
                .map(|v| format!("{}", (v * 1_000.0).round() / 1_000.0))
                .unwrap_or_default(),
            detail,
        }
    }
}

/// The silence form's fields, as typed.
#[derive(Debug, Clone)]
struct SilenceFields {
    matchers: String,
    duration: String,
    comment: String,
    created_by: String,
}

impl Default for SilenceFields {
    fn default() -> Self {
        SilenceFields {
            matchers: String::new(),
            duration: DEFAULT_SILENCE.to_owned(),
            comment: String::new(),
            created_by: String::new(),
        }
    }
}

/// Firing, pending or silenced alerts.
struct Section {
    id: &'static str,
    title: &'static str,
    rows: Vec<AlertRow>,
    empty: &'static str,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    layout: Layout,
    sections: Vec<Section>,
    rules: usize,
    silences: Vec<SilenceRow>,
    history: Vec<HistoryRow>,
    history_full: bool,
    failed_deliveries: usize,
    fields: SilenceFields,
    saved: &'static str,
    error: Option<String>,
}

async fn render(
    dashboard: &Dashboard,
    request: &Request,
    fields: SilenceFields,
    saved: &'static str,
    error: Option<String>,
) -> Result<Response, PageError> {
    let alerting = alerting_of(dashboard)?;
    let source = dashboard.source.clone();
    let services = read(move || source.services()).await?;
    let range = request.view.range;
    let active = alerting.active().await.map_err(failed)?;
    let rules = alerting.rules().await.map_err(failed)?.len();
    let channels: BTreeMap<i64, String> = alerting
        .channels()
        .await
        .map_err(failed)?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect();
    let silences = alerting.silences().await.map_err(failed)?;
    let history = alerting.history(range, HISTORY_LIMIT).await.map_err(failed)?;
    let now = request.now;

    let rows = |keep: &dyn Fn(&ActiveAlert) -> bool| -> Vec<AlertRow> {
        active
            .iter()
            .filter(|a| keep(a))
            .filter(|a| request.view.service.is_none() || a.labels.get("service") == request.view.service.as_ref())
            .map(|a| AlertRow::new(a, now))
            .collect()
    };
    let firing = rows(&|a| a.state == AlertState::Firing && !a.silenced);
    let pending = rows(&|a| a.state == AlertState::Pending);
    let silenced = rows(&|a| a.state == AlertState::Firing && a.silenced);
    let mut silences: Vec<SilenceRow> = silences
        .iter()
        .map(|s| SilenceRow {
            id: s.id,
            matchers: s
                .matchers
                .iter()
                .map(|m| format!("{}{}\"{}\"", m.name, m.op, m.value))
                .collect::<Vec<_>>()
                .join(", "),
            starts: timestamp(s.starts_at_ms),
            ends: timestamp(s.ends_at_ms),
            status: s.status.to_string(),
            created_by: s.created_by.clone(),
            comment: s.comment.clone(),
            active: s.status != SilenceStatus::Expired,
        })
        .collect();
    silences.sort_by_key(|s| (!s.active, -s.id));
    let history_full = history.len() >= HISTORY_LIMIT;
    let history: Vec<HistoryRow> = history
        .iter()
        .filter(|e| request.view.service.is_none() || e.labels.get("service") == request.view.service.as_ref())
        .map(|e| HistoryRow::new(e, &channels))
        .collect();
    let failed_deliveries = history.iter().filter(|h| h.event == "notify failed").count();
    let layout = request.layout("Alerts", "alerts", "/alerts", &services);
    html(AlertsPage {
        layout,
        sections: vec![
            Section {
                id: "firing",
                title: "Firing",
                rows: firing,
                empty: "No alert is firing.",
            },
            Section {
                id: "pending",
                title: "Pending",
                rows: pending,
                empty: "No alert is pending. An alert is pending while its rule's condition holds for less than \
                        the rule's \"for\".",
            },
            Section {
                id: "silenced",
                title: "Silenced",
                rows: silenced,
                empty: "No firing alert is silenced.",
            },
        ],
        rules,
        silences,
        history,
        history_full,
        failed_deliveries,
        fields,
        saved,
        error,
    })
}

pub(crate) async fn page(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, PageError> {
    let saved = match request.param("saved").as_str() {
        "silence-created" => "Silence added: matching alerts stay listed but are not notified until it ends.",
        "silence-expired" => "Silence expired: matching alerts are notified again.",
        _ => "",
    };
    let fields = SilenceFields {
        matchers: request.params.get("matchers").cloned().unwrap_or_default(),
        ..SilenceFields::default()
    };
    render(&dashboard, &request, fields, saved, None).await
}

pub(crate) async fn create_silence(
    State(dashboard): State<Dashboard>,
    request: Request,
    Form(form): Posted,
) -> Result<Response, PageError> {
    let alerting = posted_alerting(&dashboard, &request, &form)?;
    let fields = SilenceFields {
        matchers: form.text("matchers"),
        duration: form.text("duration"),
        comment: form.text("comment"),
        created_by: form.text("created_by"),
    };
    let outcome = match parse_matchers(&fields.matchers) {
        Ok(matchers) => {
            alerting
                .create_silence(SilenceDraft {
                    matchers,
                    duration: form.optional("duration"),
                    created_by: form.optional("created_by"),
                    comment: form.optional("comment"),
                })
                .await
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok(id) => changed(id, "silence added", "/alerts?saved=silence-created"),
        Err(error) => show_refusal(error, |message| render(&dashboard, &request, fields, "", Some(message))).await,
    }
}

pub(crate) async fn expire_silence(
    State(dashboard): State<Dashboard>,
    request: Request,
    Path(raw): Path<String>,
    Form(form): Posted,
) -> Result<Response, PageError> {
    let alerting = posted_alerting(&dashboard, &request, &form)?;
    let id = id("silence", &raw)?;
    match alerting.expire_silence(id).await {
        Ok(()) => changed(id, "silence expired", "/alerts?saved=silence-expired"),
        Err(error) => {
            show_refusal(error, |message| {
                render(&dashboard, &request, SilenceFields::default(), "", Some(message))
            })
            .await
        }
    }
}

/// A link to the silence form, filled in to match an alert's labels.
fn silence_href(labels: &Labels) -> String {
    let matchers: Vec<MatcherInfo> = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "severity")
        .map(|(k, v)| MatcherInfo {
            name: k.clone(),
            op: "=".into(),
            value: v.clone(),
        })
        .collect();
    format!("/alerts?matchers={}#silence", encode(&matcher_lines(&matchers)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_lines_take_every_operator_and_quotes() {
        let parsed =
            parse_matchers("service=\"checkout\"\n\nalertname=~Pool.*\n pool != replica \nteam!~\"db|ops\"").unwrap();
        let ops: Vec<(&str, &str, &str)> = parsed
            .iter()
            .map(|m| (m.name.as_str(), m.op.as_str(), m.value.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                ("service", "=", "checkout"),
                ("alertname", "=~", "Pool.*"),
                ("pool", "!=", "replica"),
                ("team", "!~", "db|ops"),
            ]
        );
        assert_eq!(parse_matchers(&matcher_lines(&parsed)).unwrap(), parsed);
        let error = parse_matchers("service checkout").unwrap_err().to_string();
        assert!(error.starts_with("matchers: line 1"), "{error}");
    }

    #[test]
    fn pairs_name_the_field_and_line() {
        let map = pairs("labels", "team = db\n\nowner=ops=2").unwrap();
        assert_eq!(lines(&map), "owner=ops=2\nteam=db");
        let error = pairs("labels", "team=db\nno value").unwrap_err().to_string();
        assert_eq!(error, "labels: line 2: use name=value");
        let form: Vec<(String, String)> = vec![("threshold".into(), "ten".into()), ("channels".into(), "2".into())];
        assert!(
            form.number::<f64>("threshold")
                .unwrap_err()
                .to_string()
                .starts_with("threshold:")
        );
        assert_eq!(form.number::<f64>("percentile").unwrap(), None);
        assert_eq!(form.all("channels"), ["2"]);
    }
}
