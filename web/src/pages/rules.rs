//! `/alerts/rules`: every alert rule, a dry run of one ("evaluate now"), and
//! forms to create, edit and delete rules for a signed-in admin.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;

use super::alerts::{
    Fields, Posted, alerting_of, changed, failed, id, invalid, lines, pairs, posted_alerting, severity_class,
    show_refusal,
};
use super::{Layout, PageError, Request, html};
use crate::Dashboard;
use crate::alerting::{AlertSeverity, AlertingError, Evaluation, RuleDraft, RuleInfo, RuleKindInfo, RuleScope};

/// Severities a rule may carry.
const SEVERITIES: [&str; 3] = [
    AlertSeverity::ALL[0].as_str(),
    AlertSeverity::ALL[1].as_str(),
    AlertSeverity::ALL[2].as_str(),
];

/// The rule form's fields, as typed (kept when a change is refused).
#[derive(Debug, Clone, Default)]
struct RuleFields {
    /// The rule edited; `None` for a new one.
    id: Option<i64>,
    name: String,
    kind: String,
    threshold: String,
    percentile: String,
    min_calls: String,
    slow_ms: String,
    forget_after: String,
    window: String,
    for_: String,
    keep_firing_for: String,
    service: String,
    fingerprint: String,
    pool: String,
    instance: String,
    severity: String,
    labels: String,
    annotations: String,
    channels: Vec<i64>,
    enabled: bool,
}

fn text<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}

impl RuleFields {
    fn new_rule() -> RuleFields {
        RuleFields {
            severity: "warning".into(),
            enabled: true,
            ..RuleFields::default()
        }
    }

    fn of(rule: &RuleInfo) -> RuleFields {
        RuleFields {
            id: Some(rule.id),
            name: rule.name.clone(),
            kind: rule.kind.clone(),
            threshold: rule.threshold.to_string(),
            percentile: text(&rule.percentile),
            min_calls: text(&rule.min_calls),
            slow_ms: text(&rule.slow_ms),
            forget_after: text(&rule.forget_after),
            window: rule.window.clone(),
            for_: rule.for_.clone(),
            keep_firing_for: rule.keep_firing_for.clone(),
            service: text(&rule.scope.service),
            fingerprint: text(&rule.scope.fingerprint),
            pool: text(&rule.scope.pool),
            instance: text(&rule.scope.instance),
            severity: rule.severity.to_string(),
            labels: lines(&rule.labels),
            annotations: lines(&rule.annotations),
            channels: rule.channels.clone(),
            enabled: rule.enabled,
        }
    }

    fn posted(id: Option<i64>, form: &[(String, String)]) -> RuleFields {
        RuleFields {
            id,
            name: form.text("name"),
            kind: form.text("kind"),
            threshold: form.text("threshold"),
            percentile: form.text("percentile"),
            min_calls: form.text("min_calls"),
            slow_ms: form.text("slow_ms"),
            forget_after: form.text("forget_after"),
            window: form.text("window"),
            for_: form.text("for"),
            keep_firing_for: form.text("keep_firing_for"),
            service: form.text("scope_service"),
            fingerprint: form.text("scope_fingerprint"),
            pool: form.text("scope_pool"),
            instance: form.text("scope_instance"),
            severity: form.text("severity"),
            labels: form.text("labels"),
            annotations: form.text("annotations"),
            channels: form.all("channels").iter().filter_map(|c| c.parse().ok()).collect(),
            enabled: !form.all("enabled").is_empty(),
        }
    }
}

/// A posted rule form as the alert engine takes it; the error names the
/// field.
fn draft(form: &[(String, String)]) -> Result<RuleDraft, AlertingError> {
    let annotations = pairs("annotations", &form.text("annotations"))?;
    let channels = form
        .all("channels")
        .iter()
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| invalid("channels", format!("{c:?} is not a channel id")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RuleDraft {
        name: form.optional("name"),
        kind: form.optional("kind"),
        threshold: form.number("threshold")?,
        percentile: form.number("percentile")?,
        min_calls: form.number("min_calls")?,
        slow_ms: form.number("slow_ms")?,
        forget_after: form.optional("forget_after"),
        window: form.optional("window"),
        for_: form.optional("for"),
        keep_firing_for: form.optional("keep_firing_for"),
        scope: RuleScope {
            service: form.optional("scope_service"),
            fingerprint: form.optional("scope_fingerprint"),
            pool: form.optional("scope_pool"),
            instance: form.optional("scope_instance"),
        },
        severity: form.optional("severity"),
        labels: pairs("labels", &form.text("labels"))?,
        annotations: (!annotations.is_empty()).then_some(annotations),
        channels,
        enabled: !form.all("enabled").is_empty(),
    })
}

/// What a rule watches and when it fires, in one line.
fn condition(rule: &RuleInfo) -> String {
    let mut out = String::new();
    if let Some(p) = rule.percentile {
        out.push_str(&format!("p{p} "));
    }
    out.push_str(&format!("≥ {} over {}", rule.threshold_text, rule.window));
    if let Some(ms) = rule.slow_ms {
        out.push_str(&format!(" (slower than {ms} ms)"));
    }
    if let Some(calls) = rule.min_calls {
        out.push_str(&format!(" (at least {calls} calls)"));
    }
    if rule.for_ != "0s" {
        out.push_str(&format!(", for {}", rule.for_));
    }
    if rule.keep_firing_for != "0s" {
        out.push_str(&format!(", keeps firing {}", rule.keep_firing_for));
    }
    out
}

fn scope(scope: &RuleScope) -> Vec<(&'static str, String)> {
    [
        ("service", &scope.service),
        ("fingerprint", &scope.fingerprint),
        ("pool", &scope.pool),
        ("instance", &scope.instance),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
    .collect()
}

struct RuleRow {
    id: i64,
    name: String,
    kind: String,
    condition: String,
    scope: Vec<(&'static str, String)>,
    fingerprint_href: Option<String>,
    severity: String,
    severity_class: &'static str,
    labels: Vec<(String, String)>,
    channels: String,
    enabled: bool,
    default: bool,
}

struct ChannelOption {
    id: i64,
    name: String,
    checked: bool,
}

#[derive(Template)]
#[template(path = "rules.html")]
struct RulesPage {
    layout: Layout,
    rules: Vec<RuleRow>,
    kinds: Vec<RuleKindInfo>,
    severities: [&'static str; 3],
    channels: Vec<ChannelOption>,
    fields: RuleFields,
    evaluation: Option<Evaluation>,
    saved: &'static str,
    error: Option<String>,
}

async fn render(
    dashboard: &Dashboard,
    request: &Request,
    fields: Option<RuleFields>,
    saved: &'static str,
    error: Option<String>,
) -> Result<Response, PageError> {
    let alerting = alerting_of(dashboard)?;
    let rules = alerting.rules().await.map_err(failed)?;
    let channel_names: BTreeMap<i64, String> = alerting
        .channels()
        .await
        .map_err(failed)?
        .into_iter()
        .map(|c| (c.id, c.name))
        .collect();
    let evaluation = match request.param("evaluate") {
        e if e.is_empty() => None,
        e => Some(alerting.evaluate(id("rule", &e)?).await.map_err(failed)?),
    };
    let fields = match (fields, request.param("edit")) {
        (Some(fields), _) => fields,
        (None, edit) if !edit.is_empty() => {
            let id = id("rule", &edit)?;
            let rule = rules
                .iter()
                .find(|r| r.id == id)
                .ok_or_else(|| PageError::NotFound(format!("There is no rule {id}.")))?;
            RuleFields::of(rule)
        }
        (None, _) => RuleFields::new_rule(),
    };
    let rows = rules
        .iter()
        .map(|r| RuleRow {
            id: r.id,
            name: r.name.clone(),
            kind: r.kind.replace('_', " "),
            condition: condition(r),
            scope: scope(&r.scope),
            fingerprint_href: r.scope.fingerprint.as_ref().map(|f| format!("/queries/{f}")),
            severity: r.severity.to_string(),
            severity_class: severity_class(r.severity),
            labels: r.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            channels: r
                .channels
                .iter()
                .map(|c| channel_names.get(c).cloned().unwrap_or_else(|| format!("#{c}")))
                .collect::<Vec<_>>()
                .join(", "),
            enabled: r.enabled,
            default: r.default_key.is_some(),
        })
        .collect();
    let channels = channel_names
        .into_iter()
        .map(|(id, name)| ChannelOption {
            id,
            name,
            checked: fields.channels.contains(&id),
        })
        .collect();
    let layout = request.layout("Alert rules", "rules", "/alerts/rules", &[]);
    html(RulesPage {
        layout,
        rules: rows,
        kinds: alerting.kinds(),
        severities: SEVERITIES,
        channels,
        fields,
        evaluation,
        saved,
        error,
    })
}

pub(crate) async fn page(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, PageError> {
    let saved = match request.param("saved").as_str() {
        "created" => "Rule created; it is evaluated from now on.",
        "updated" => "Rule saved; the change applies from the next evaluation.",
        "deleted" => "Rule deleted; its alerts are resolved.",
        _ => "",
    };
    render(&dashboard, &request, None, saved, None).await
}

/// Renders the form again with what was typed and why it was refused.
async fn refused(
    dashboard: &Dashboard,
    request: &Request,
    fields: RuleFields,
    error: AlertingError,
) -> Result<Response, PageError> {
    show_refusal(error, |message| {
        render(dashboard, request, Some(fields), "", Some(message))
    })
    .await
}

pub(crate) async fn create(
    State(dashboard): State<Dashboard>,
    request: Request,
    Form(form): Posted,
) -> Result<Response, PageError> {
    let alerting = posted_alerting(&dashboard, &request, &form)?;
    let fields = RuleFields::posted(None, &form);
    let created = match draft(&form) {
        Ok(draft) => alerting.create_rule(draft).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(id) => changed(id, "alert rule created", "/alerts/rules?saved=created"),
        Err(error) => refused(&dashboard, &request, fields, error).await,
    }
}

pub(crate) async fn update(
    State(dashboard): State<Dashboard>,
    request: Request,
    Path(raw): Path<String>,
    Form(form): Posted,
) -> Result<Response, PageError> {
    let alerting = posted_alerting(&dashboard, &request, &form)?;
    let id = id("rule", &raw)?;
    let fields = RuleFields::posted(Some(id), &form);
    let updated = match draft(&form) {
        Ok(draft) => alerting.update_rule(id, draft).await,
        Err(e) => Err(e),
    };
    match updated {
        Ok(()) => changed(id, "alert rule changed", "/alerts/rules?saved=updated"),
        Err(error) => refused(&dashboard, &request, fields, error).await,
    }
}

pub(crate) async fn delete(
    State(dashboard): State<Dashboard>,
    request: Request,
    Path(raw): Path<String>,
    Form(form): Posted,
) -> Result<Response, PageError> {
    let alerting = posted_alerting(&dashboard, &request, &form)?;
    let id = id("rule", &raw)?;
    match alerting.delete_rule(id).await {
        Ok(()) => changed(id, "alert rule deleted", "/alerts/rules?saved=deleted"),
        Err(error) => refused(&dashboard, &request, RuleFields::new_rule(), error).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_form_becomes_a_draft_and_empty_fields_take_the_defaults() {
        let posted = form(&[
            ("name", " Slow checkout "),
            ("kind", "query_latency"),
            ("threshold", "250"),
            ("percentile", "99"),
            ("for", "5m"),
            ("window", ""),
            ("scope_service", "checkout"),
            ("labels", "team=payments"),
            ("annotations", ""),
            ("channels", "1"),
            ("channels", "3"),
            ("enabled", "on"),
        ]);
        let d = draft(&posted).unwrap();
        assert_eq!(d.name.as_deref(), Some("Slow checkout"));
        assert_eq!(
            (d.threshold, d.percentile, d.min_calls),
            (Some(250.0), Some(99.0), None)
        );
        assert_eq!((d.for_.as_deref(), d.window.as_deref()), (Some("5m"), None));
        assert_eq!(d.scope.service.as_deref(), Some("checkout"));
        assert_eq!(d.labels["team"], "payments");
        assert_eq!(d.annotations, None, "empty annotations take the kind's defaults");
        assert_eq!(d.channels, [1, 3]);
        assert!(d.enabled);
        let fields = RuleFields::posted(Some(7), &posted);
        assert_eq!(
            (fields.id, fields.channels.as_slice(), fields.for_.as_str()),
            (Some(7), &[1, 3][..], "5m")
        );

        let off = form(&[("name", "x"), ("threshold", "lots")]);
        assert!(draft(&off).unwrap_err().to_string().starts_with("threshold: "));
        assert!(!draft(&form(&[("name", "x")])).unwrap().enabled);
    }
}
