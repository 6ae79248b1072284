//! Notifications: what is sent, the [`Notifier`] trait every channel kind
//! implements (and a program embedding the collector can implement for its
//! own handler), and the built-in kinds: webhook, email, Alertmanager, log.

mod alertmanager;
mod email;
mod http;
mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

pub use http::HttpClient;
pub use webhook::{SIGNATURE_HEADER, signature};

use super::channels::{Channel, ChannelSettings};
use super::rules::Labels;

/// Whether an alert is firing or resolved in a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The condition holds.
    Firing,
    /// It held and cleared.
    Resolved,
}

impl Status {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert in a notification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertNotice {
    /// Firing or resolved.
    pub status: Status,
    /// The rule.
    pub rule_id: i64,
    /// Every label (`alertname`, `severity`, the series', the rule's).
    pub labels: Labels,
    /// Rendered annotations (`summary`, `description`, …).
    pub annotations: BTreeMap<String, String>,
    /// When it started firing, Unix epoch milliseconds.
    pub starts_at_ms: i64,
    /// When it resolved.
    pub ends_at_ms: Option<i64>,
    /// The measured value.
    pub value: f64,
    /// The value in the rule's unit (`93 %`).
    pub value_text: String,
    /// Stable alert id (16 hex digits).
    pub fingerprint: String,
}

/// Everything one channel is told after one evaluation: its alerts grouped.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Channel id.
    pub channel_id: i64,
    /// Channel name (the webhook's `receiver`).
    pub channel: String,
    /// The alerts, firing ones first.
    pub alerts: Vec<AlertNotice>,
}

pub use querypulse_domain::rfc3339;

/// Alertmanager's "not set" time.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl Notification {
    /// `firing` when any alert fires, else `resolved`.
    pub fn status(&self) -> Status {
        if self.alerts.iter().any(|a| a.status == Status::Firing) {
            Status::Firing
        } else {
            Status::Resolved
        }
    }

    /// Labels (or annotations) every alert shares.
    fn common(&self, pick: impl Fn(&AlertNotice) -> &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut alerts = self.alerts.iter();
        let Some(first) = alerts.next() else {
            return BTreeMap::new();
        };
        let mut common = pick(first).clone();
        for alert in alerts {
            let other = pick(alert);
            common.retain(|k, v| other.get(k) == Some(v));
        }
        common
    }

    /// The JSON body of Alertmanager's webhook (version 4), so receivers
    /// written for Alertmanager accept it.
    pub fn webhook_body(&self) -> Value {
        let alerts: Vec<Value> = self
            .alerts
            .iter()
            .map(|a| {
                json!({
                    "status": a.status.as_str(),
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at_ms),
                    "endsAt": a.ends_at_ms.map_or_else(|| ZERO_TIME.to_owned(), rfc3339),
                    "generatorURL": "",
                    "fingerprint": a.fingerprint,
                })
            })
            .collect();
        json!({
            "version": "4",
            "groupKey": format!("{{}}:{{receiver=\"{}\"}}", self.channel),
            "truncatedAlerts": 0,
            "status": self.status().as_str(),
            "receiver": self.channel,
            "groupLabels": {},
            "commonLabels": self.common(|a| &a.labels),
            "commonAnnotations": self.common(|a| &a.annotations),
            "externalURL": "",
            "alerts": alerts,
        })
    }

    /// A one-line title: `[FIRING:2] Pool exhaustion`.
    pub fn title(&self) -> String {
        let firing = self.alerts.iter().filter(|a| a.status == Status::Firing).count();
        let resolved = self.alerts.len() - firing;
        let counts = match (firing, resolved) {
            (f, 0) => format!("FIRING:{f}"),
            (0, r) => format!("RESOLVED:{r}"),
            (f, r) => format!("FIRING:{f}, RESOLVED:{r}"),
        };
        let names: std::collections::BTreeSet<&str> = self
            .alerts
            .iter()
            .filter_map(|a| a.labels.get("alertname").map(String::as_str))
            .collect();
        format!("[{counts}] {}", names.into_iter().collect::<Vec<_>>().join(", "))
    }

    /// A test notification for `channel`: one made-up firing alert.
    pub fn test(channel_id: i64, channel: &str, now_ms: i64) -> Notification {
        let labels = Labels::from([
            ("alertname".to_owned(), "querypulse test notification".to_owned()),
            ("severity".to_owned(), "info".to_owned()),
        ]);
        Notification {
            channel_id,
            channel: channel.to_owned(),
            alerts: vec![AlertNotice {
                status: Status::Firing,
                rule_id: 0,
                labels,
                annotations: BTreeMap::from([(
                    "summary".to_owned(),
                    format!("Test notification of channel {channel:?}: delivery works."),
                )]),
                starts_at_ms: now_ms,
                ends_at_ms: None,
                value: 0.0,
                value_text: String::new(),
                fingerprint: "0000000000000000".into(),
            }],
        }
    }
}

/// A failed delivery; the message is recorded in the alert history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotifyError(pub String);

/// What [`Notifier::notify`] returns.
pub type NotifyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), NotifyError>> + Send + 'a>>;

/// Delivers notifications to one kind of receiver. Implement it to add your
/// own handler to a collector you embed, register it with
/// [`Notifiers::register`] in the collector's `Config` (its `alerts.notifiers`), and create a channel
/// `{"kind": "custom", "handler": "<name>"}`.
///
/// ```
/// use querypulse_alerts::{Notification, Notifier, NotifyError, NotifyFuture};
///
/// #[derive(Debug)]
/// struct Pager;
///
/// impl Notifier for Pager {
///     fn notify<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a> {
///         Box::pin(async move {
///             for alert in &notification.alerts {
///                 println!("page: {} {:?}", alert.status.as_str(), alert.annotations.get("summary"));
///             }
///             Ok::<(), NotifyError>(())
///         })
///     }
/// }
/// ```
///
/// A delivery that returns an error is recorded in the history with the
/// error and retried at the next evaluation.
pub trait Notifier: Send + Sync + fmt::Debug + 'static {
    /// Delivers one notification.
    fn notify<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a>;
}

/// Handlers registered by the program embedding the collector, by name.
#[derive(Clone, Default)]
pub struct Notifiers(BTreeMap<String, Arc<dyn Notifier>>);

impl fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Notifiers {
    /// Registers `notifier` under `name` (replacing any of that name).
    pub fn register(&mut self, name: impl Into<String>, notifier: Arc<dyn Notifier>) -> &mut Self {
        self.0.insert(name.into(), notifier);
        self
    }

    /// The handler registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Notifier>> {
        self.0.get(name).cloned()
    }

    /// Whether a handler of that name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Writes notifications to the collector's log.
#[derive(Debug)]
struct LogNotifier;

impl Notifier for LogNotifier {
    fn notify<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            for alert in &notification.alerts {
                let name = alert.labels.get("alertname").map(String::as_str).unwrap_or("");
                let summary = alert.annotations.get("summary").map(String::as_str).unwrap_or("");
                let labels = format!("{:?}", alert.labels);
                match alert.status {
                    Status::Firing => tracing::warn!(
                        channel = %notification.channel, alert = name, value = %alert.value_text, %labels,
                        "alert firing: {summary}"
                    ),
                    Status::Resolved => tracing::info!(
                        channel = %notification.channel, alert = name, %labels, "alert resolved: {summary}"
                    ),
                }
            }
            Ok(())
        })
    }
}

/// A channel whose custom handler is not registered (any more).
#[derive(Debug)]
struct Missing(String);

impl Notifier for Missing {
    fn notify<'a>(&'a self, _: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            Err(NotifyError(format!(
                "no handler {:?} is registered by the program running the collector",
                self.0
            )))
        })
    }
}

/// The notifier delivering to `channel`.
pub fn notifier(channel: &Channel, custom: &Notifiers, http: &HttpClient) -> Arc<dyn Notifier> {
    match &channel.settings {
        ChannelSettings::Webhook(settings) => Arc::new(webhook::Webhook::new(settings.clone(), http.clone())),
        ChannelSettings::Email(settings) => Arc::new(email::Email::new(settings.clone())),
        ChannelSettings::Alertmanager(settings) => Arc::new(alertmanager::Alertmanager::new(
            settings.clone(),
            channel.repeat_interval,
            http.clone(),
        )),
        ChannelSettings::Log => Arc::new(LogNotifier),
        ChannelSettings::Custom { handler } => custom
            .get(handler)
            .unwrap_or_else(|| Arc::new(Missing(handler.clone()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(status: Status, pool: &str) -> AlertNotice {
        AlertNotice {
            status,
            rule_id: 1,
            labels: Labels::from([
                ("alertname".to_owned(), "Pool exhaustion".to_owned()),
                ("pool".to_owned(), pool.to_owned()),
            ]),
            annotations: BTreeMap::from([("summary".to_owned(), format!("{pool} is full"))]),
            starts_at_ms: 1_700_000_000_000,
            ends_at_ms: (status == Status::Resolved).then_some(1_700_000_060_000),
            value: 1.0,
            value_text: "100 %".into(),
            fingerprint: "00000000000000aa".into(),
        }
    }

    #[test]
    fn the_webhook_body_has_the_alertmanager_shape() {
        let n = Notification {
            channel_id: 3,
            channel: "ops".into(),
            alerts: vec![notice(Status::Firing, "main"), notice(Status::Resolved, "replica")],
        };
        let body = n.webhook_body();
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["receiver"], "ops");
        assert_eq!(body["commonLabels"], json!({"alertname": "Pool exhaustion"}));
        assert_eq!(body["alerts"][0]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(body["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(body["alerts"][1]["status"], "resolved");
        assert_eq!(body["alerts"][1]["endsAt"], "2023-11-14T22:14:20.000Z");
        assert_eq!(n.title(), "[FIRING:1, RESOLVED:1] Pool exhaustion");
    }
}
