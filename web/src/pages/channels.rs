//! `/alerts/channels`: where alerts are sent, with forms to create, edit,
//! test and delete channels for a signed-in admin. Secrets are never shown:
//! they read as `********`, and sending that back keeps the stored secret.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::Response;

use super::alerts::{Fields, Posted, alerting_of, changed, failed, id, posted_alerting, show_refusal};
use super::{Layout, PageError, Request, html};
use crate::Dashboard;
use crate::alerting::{AlertingError, ChannelDraft, ChannelInfo};

/// Channel kinds, and the settings of the form: (name, label, used by,
/// input type).
const KINDS: [&str; 5] = ["webhook", "email", "alertmanager", "log", "custom"];
const SETTINGS: [(&str, &str, &str, &str); 13] = [
    ("url", "URL", "webhook, alertmanager", "text"),
    ("secret", "Signing secret", "webhook", "password"),
    ("headers", "Headers, Name: value per line", "webhook", "textarea"),
    ("timeout", "Timeout", "webhook, email, alertmanager", "text"),
    ("max_attempts", "Attempts", "webhook, alertmanager", "text"),
    ("smtp_host", "SMTP host", "email", "text"),
    ("smtp_port", "SMTP port", "email", "text"),
    ("tls", "TLS: none, opportunistic, starttls or tls", "email", "text"),
    ("username", "SMTP user", "email", "text"),
    ("password", "SMTP password", "email", "password"),
    ("from", "From", "email", "text"),
    ("to", "To, comma-separated", "email", "text"),
    ("handler", "Handler", "custom", "text"),
];

/// The channel form's fields, as typed.
#[derive(Debug, Clone, Default)]
struct ChannelFields {
    id: Option<i64>,
    name: String,
    kind: String,
    settings: BTreeMap<String, String>,
    send_resolved: bool,
    repeat_interval: String,
}

impl ChannelFields {
    fn new_channel() -> ChannelFields {
        ChannelFields {
            kind: "webhook".into(),
            send_resolved: true,
            ..ChannelFields::default()
        }
    }

    fn of(channel: &ChannelInfo) -> ChannelFields {
        ChannelFields {
            id: Some(channel.id),
            name: channel.name.clone(),
            kind: channel.kind.clone(),
            settings: channel
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.text()))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            send_resolved: channel.send_resolved,
            repeat_interval: channel.repeat_interval.clone(),
        }
    }

    fn posted(id: Option<i64>, form: &[(String, String)]) -> ChannelFields {
        ChannelFields {
            id,
            name: form.text("name"),
            kind: form.text("kind"),
            settings: SETTINGS
                .iter()
                .filter_map(|(name, ..)| form.optional(name).map(|v| ((*name).to_owned(), v)))
                .collect(),
            send_resolved: !form.all("send_resolved").is_empty(),
            repeat_interval: form.text("repeat_interval"),
        }
    }

    fn draft(&self) -> ChannelDraft {
        ChannelDraft {
            name: Some(self.name.clone()).filter(|n| !n.is_empty()),
            kind: Some(self.kind.clone()).filter(|k| !k.is_empty()),
            settings: self.settings.clone(),
            send_resolved: self.send_resolved,
            repeat_interval: Some(self.repeat_interval.clone()).filter(|r| !r.is_empty()),
        }
    }

    /// A setting's value for the form.
    fn value(&self, name: &str) -> &str {
        self.settings.get(name).map_or("", String::as_str)
    }
}

struct ChannelRow {
    id: i64,
    name: String,
    kind: String,
    settings: Vec<(String, String)>,
    send_resolved: bool,
    repeat_interval: String,
    used_by: String,
}

#[derive(Template)]
#[template(path = "channels.html")]
struct ChannelsPage {
    layout: Layout,
    channels: Vec<ChannelRow>,
    kinds: [&'static str; 5],
    settings: [(&'static str, &'static str, &'static str, &'static str); 13],
    fields: ChannelFields,
    saved: String,
    error: Option<String>,
}

async fn render(
    dashboard: &Dashboard,
    request: &Request,
    fields: Option<ChannelFields>,
    saved: String,
    error: Option<String>,
) -> Result<Response, PageError> {
    let alerting = alerting_of(dashboard)?;
    let channels = alerting.channels().await.map_err(failed)?;
    let rules = alerting.rules().await.map_err(failed)?;
    let fields = match (fields, request.param("edit")) {
        (Some(fields), _) => fields,
        (None, edit) if !edit.is_empty() => {
            let id = id("channel", &edit)?;
            let channel = channels
                .iter()
                .find(|c| c.id == id)
                .ok_or_else(|| PageError::NotFound(format!("There is no channel {id}.")))?;
            ChannelFields::of(channel)
        }
        (None, _) => ChannelFields::new_channel(),
    };
    let rows = channels
        .iter()
        .map(|c| ChannelRow {
            id: c.id,
            name: c.name.clone(),
            kind: c.kind.clone(),
            settings: c
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.text()))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            send_resolved: c.send_resolved,
            repeat_interval: c.repeat_interval.clone(),
            used_by: rules
                .iter()
                .filter(|r| r.channels.contains(&c.id))
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect();
    let layout = request.layout("Notification channels", "channels", "/alerts/channels", &[]);
    html(ChannelsPage {
        layout,
        channels: rows,
        kinds: KINDS,
        settings: SETTINGS,
        fields,
        saved,
        error,
    })
}

pub(crate) async fn page(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, PageError> {
    let saved = match request.param("saved").as_str() {
        "created" => "Channel created; add it to a rule to use it.",
        "updated" => "Channel saved.",
        "deleted" => "Channel deleted.",
        _ => "",
    };
    render(&dashboard, &request, None, saved.to_owned(), None).await
}

async fn refused(
    dashboard: &Dashboard,
    request: &Request,
    fields: ChannelFields,
    error: AlertingError,
) -> Result<Response, PageError> {
    show_refusal(error, |message| {
        render(
            dashboard,
            request,
            Some(fields),
            String::new(),
            Some(format!("Not saved: {message}")),
        )
    })
    .await
}

pub(crate) async fn create(
    State(dashboard): State<Dashboard>,
    request: Request,
    Form(form): Posted,
) -> Result<Response, PageError> {
    let alerting = posted_alerting(&dashboard, &request, &form)?;
    let fields = ChannelFields::posted(None, &form);
    match alerting.create_channel(fields.draft()).await {
        Ok(id) => changed(id, "notification channel created", "/alerts/channels?saved=created"),
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
    let id = id("channel", &raw)?;
    let fields = ChannelFields::posted(Some(id), &form);
    match alerting.update_channel(id, fields.draft()).await {
        Ok(()) => changed(id, "notification channel changed", "/alerts/channels?saved=updated"),
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
    let id = id("channel", &raw)?;
    match alerting.delete_channel(id).await {
        Ok(()) => changed(id, "notification channel deleted", "/alerts/channels?saved=deleted"),
        Err(error) => refused(&dashboard, &request, ChannelFields::new_channel(), error).await,
    }
}

/// Sends a test notification and shows how it went (nothing is stored, so
/// the page is rendered directly rather than redirected to).
pub(crate) async fn test(
    State(dashboard): State<Dashboard>,
    request: Request,
    Path(raw): Path<String>,
    Form(form): Posted,
) -> Result<Response, PageError> {
    let alerting = posted_alerting(&dashboard, &request, &form)?;
    let id = id("channel", &raw)?;
    let name = alerting
        .channels()
        .await
        .map_err(failed)?
        .into_iter()
        .find(|c| c.id == id)
        .map(|c| c.name)
        .ok_or_else(|| PageError::NotFound(format!("There is no channel {id}.")))?;
    match alerting.test_channel(id).await {
        Ok(()) => {
            let saved = format!("Test notification delivered through {name}.");
            render(&dashboard, &request, None, saved, None).await
        }
        Err(error) => {
            show_refusal(error, |message| {
                let message = format!("The test notification through {name} failed: {message}");
                render(&dashboard, &request, None, String::new(), Some(message))
            })
            .await
        }
    }
}
