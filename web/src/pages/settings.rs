//! `/settings`: retention and the settings pushed to agents, with forms to
//! change them for a signed-in admin (session cookie plus CSRF token).

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{Layout, PageError, Request, html};
use crate::auth::see_other;
use crate::format::{bytes, span};
use crate::settings::{AgentDefaults, RetentionSettings};
use crate::{Dashboard, SettingsError};

const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
const MIB: u64 = 1 << 20;

/// The form's fields, as typed (kept when a change is refused).
#[derive(Debug, Clone, Default)]
struct Fields {
    raw_hours: String,
    minute_days: String,
    hour_days: String,
    max_mib: String,
    slow_threshold_ms: String,
    max_samples_per_fingerprint: String,
    max_samples_per_window: String,
    interval_ms: String,
}

fn optional<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

impl Fields {
    fn of(retention: &RetentionSettings, agents: &AgentDefaults) -> Fields {
        let whole = |seconds: u64, unit: u64| {
            if seconds.is_multiple_of(unit) {
                (seconds / unit).to_string()
            } else {
                format!("{:.3}", seconds as f64 / unit as f64)
            }
        };
        Fields {
            raw_hours: whole(retention.raw_seconds, HOUR),
            minute_days: whole(retention.minute_seconds, DAY),
            hour_days: whole(retention.hour_seconds, DAY),
            max_mib: optional(retention.max_bytes.map(|b| b / MIB)),
            slow_threshold_ms: optional(agents.slow_threshold_ms),
            max_samples_per_fingerprint: optional(agents.max_samples_per_fingerprint),
            max_samples_per_window: optional(agents.max_samples_per_window),
            interval_ms: optional(agents.interval_ms),
        }
    }
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    layout: Layout,
    available: bool,
    retention: Vec<(&'static str, String)>,
    agents: Vec<(&'static str, String)>,
    fields: Fields,
    saved: String,
    error: Option<String>,
}

fn render(
    dashboard: &Dashboard,
    request: &Request,
    fields: Option<Fields>,
    saved: &str,
    error: Option<String>,
) -> Result<Response, PageError> {
    let layout = request.layout("Settings", "settings", "/settings", &[]);
    let Some(settings) = &dashboard.settings else {
        return html(SettingsPage {
            layout,
            available: false,
            retention: Vec::new(),
            agents: Vec::new(),
            fields: Fields::default(),
            saved: String::new(),
            error,
        });
    };
    let retention = settings.retention();
    let agents = settings.agent_defaults();
    let keep = |v: Option<String>| v.unwrap_or_else(|| "each agent's own".to_owned());
    html(SettingsPage {
        layout,
        available: true,
        retention: vec![
            ("raw 10-second windows", span(retention.raw_seconds)),
            ("1-minute rollups", span(retention.minute_seconds)),
            ("1-hour rollups", span(retention.hour_seconds)),
            (
                "size cap",
                retention.max_bytes.map(bytes).unwrap_or_else(|| "none".to_owned()),
            ),
        ],
        agents: vec![
            (
                "slow-query threshold",
                keep(agents.slow_threshold_ms.map(|v| format!("{v} ms"))),
            ),
            (
                "slow samples per fingerprint and window",
                keep(agents.max_samples_per_fingerprint.map(|v| v.to_string())),
            ),
            (
                "slow samples per window",
                keep(agents.max_samples_per_window.map(|v| v.to_string())),
            ),
            (
                "aggregation interval",
                keep(agents.interval_ms.map(|v| format!("{v} ms"))),
            ),
        ],
        fields: fields.unwrap_or_else(|| Fields::of(&retention, &agents)),
        saved: saved.to_owned(),
        error,
    })
}

pub(crate) async fn page(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, PageError> {
    let saved = match request.param("saved").as_str() {
        "retention" => "Retention saved; it applies at the next maintenance pass.",
        "agents" => "Agent settings saved and pushed to every connected agent.",
        _ => "",
    };
    render(&dashboard, &request, None, saved, None)
}

/// Parses a whole or decimal number of `unit`s into an integer of base units.
fn scaled(name: &str, value: &str, unit: u64) -> Result<u64, String> {
    let n: f64 = value
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0 && *n * (unit as f64) < u64::MAX as f64)
        .ok_or_else(|| format!("{name} must be a positive number, got {value:?}"))?;
    Ok((n * unit as f64).round() as u64)
}

fn optional_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<Option<T>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{name} must be a whole number or empty, got {value:?}"))
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct RetentionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    raw_hours: String,
    #[serde(default)]
    minute_days: String,
    #[serde(default)]
    hour_days: String,
    #[serde(default)]
    max_mib: String,
}

impl RetentionForm {
    fn parse(&self) -> Result<RetentionSettings, String> {
        Ok(RetentionSettings {
            raw_seconds: scaled("raw retention", &self.raw_hours, HOUR)?,
            minute_seconds: scaled("1-minute retention", &self.minute_days, DAY)?,
            hour_seconds: scaled("1-hour retention", &self.hour_days, DAY)?,
            max_bytes: optional_number::<u64>("size cap", &self.max_mib)?.map(|m| m.saturating_mul(MIB)),
        })
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct AgentsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    slow_threshold_ms: String,
    #[serde(default)]
    max_samples_per_fingerprint: String,
    #[serde(default)]
    max_samples_per_window: String,
    #[serde(default)]
    interval_ms: String,
}

impl AgentsForm {
    fn parse(&self) -> Result<AgentDefaults, String> {
        Ok(AgentDefaults {
            slow_threshold_ms: optional_number("slow-query threshold", &self.slow_threshold_ms)?,
            max_samples_per_fingerprint: optional_number("samples per fingerprint", &self.max_samples_per_fingerprint)?,
            max_samples_per_window: optional_number("samples per window", &self.max_samples_per_window)?,
            interval_ms: optional_number("interval", &self.interval_ms)?,
        })
    }
}

/// Renders the form again with what was typed and why it was refused.
fn refused(dashboard: &Dashboard, request: &Request, fields: Fields, message: String) -> Result<Response, PageError> {
    let mut response = render(dashboard, request, Some(fields), "", Some(message))?;
    *response.status_mut() = StatusCode::BAD_REQUEST;
    Ok(response)
}

fn settings_of(dashboard: &Dashboard) -> Result<&dyn crate::Settings, PageError> {
    dashboard
        .settings
        .as_deref()
        .ok_or_else(|| PageError::Forbidden("This dashboard has no settings to change.".into()))
}

pub(crate) async fn retention(
    State(dashboard): State<Dashboard>,
    request: Request,
    Form(form): Form<RetentionForm>,
) -> Result<Response, PageError> {
    dashboard.sessions.check_form(&request.headers, &form.csrf)?;
    let settings = settings_of(&dashboard)?;
    let mut fields = Fields::of(&settings.retention(), &settings.agent_defaults());
    fields.raw_hours.clone_from(&form.raw_hours);
    fields.minute_days.clone_from(&form.minute_days);
    fields.hour_days.clone_from(&form.hour_days);
    fields.max_mib.clone_from(&form.max_mib);
    let retention = match form.parse() {
        Ok(r) => r,
        Err(message) => return refused(&dashboard, &request, fields, message),
    };
    match settings.set_retention(retention).await {
        Ok(()) => Ok(see_other("/settings?saved=retention")),
        Err(SettingsError::Invalid(message)) => refused(&dashboard, &request, fields, message),
        Err(SettingsError::Internal(detail)) => Err(PageError::Internal(detail)),
    }
}

pub(crate) async fn agents(
    State(dashboard): State<Dashboard>,
    request: Request,
    Form(form): Form<AgentsForm>,
) -> Result<Response, PageError> {
    dashboard.sessions.check_form(&request.headers, &form.csrf)?;
    let settings = settings_of(&dashboard)?;
    let mut fields = Fields::of(&settings.retention(), &settings.agent_defaults());
    fields.slow_threshold_ms.clone_from(&form.slow_threshold_ms);
    fields
        .max_samples_per_fingerprint
        .clone_from(&form.max_samples_per_fingerprint);
    fields.max_samples_per_window.clone_from(&form.max_samples_per_window);
    fields.interval_ms.clone_from(&form.interval_ms);
    let defaults = match form.parse() {
        Ok(d) => d,
        Err(message) => return refused(&dashboard, &request, fields, message),
    };
    match settings.set_agent_defaults(defaults).await {
        Ok(()) => Ok(see_other("/settings?saved=agents")),
        Err(SettingsError::Invalid(message)) => refused(&dashboard, &request, fields, message),
        Err(SettingsError::Internal(detail)) => Err(PageError::Internal(detail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_convert_to_base_units() {
        let form = RetentionForm {
            csrf: String::new(),
            raw_hours: "36".into(),
            minute_days: "7.5".into(),
            hour_days: "400".into(),
            max_mib: "".into(),
        };
        let r = form.parse().unwrap();
        assert_eq!(
            (r.raw_seconds, r.minute_seconds, r.max_bytes),
            (36 * HOUR, 648_000, None)
        );
        let bad = RetentionForm {
            raw_hours: "-1".into(),
            ..form
        };
        assert!(bad.parse().unwrap_err().contains("raw retention"));
        let agents = AgentsForm {
            csrf: String::new(),
            slow_threshold_ms: "250".into(),
            max_samples_per_fingerprint: "".into(),
            max_samples_per_window: "x".into(),
            interval_ms: "".into(),
        };
        assert!(agents.parse().unwrap_err().contains("samples per window"));
    }
}
