//! Prometheus Alertmanager: `POST /api/v2/alerts`. Firing alerts are re-sent
//! every repeat interval (the channel's default is 1 m) with `endsAt` four
//! intervals ahead, as Prometheus does, so Alertmanager resolves them by
//! itself if the collector goes away; resolved alerts carry their `endsAt`.

use std::time::Duration;

use serde_json::{Value, json};

use super::{HttpClient, Notification, Notifier, NotifyError, NotifyFuture, Status, rfc3339};
use crate::channels::AlertmanagerSettings;

#[derive(Debug)]
pub(super) struct Alertmanager {
    settings: AlertmanagerSettings,
    resend: Duration,
    http: HttpClient,
}

impl Alertmanager {
    pub(super) fn new(settings: AlertmanagerSettings, resend: Duration, http: HttpClient) -> Alertmanager {
        Alertmanager { settings, resend, http }
    }
}

/// The `postableAlerts` body for `notification` sent at `now_ms`.
pub fn postable_alerts(notification: &Notification, resend: Duration, now_ms: i64) -> Value {
    let ahead = i64::try_from(resend.as_millis().saturating_mul(4)).unwrap_or(i64::MAX / 2);
    let alerts: Vec<Value> = notification
        .alerts
        .iter()
        .map(|a| {
            let ends_at = match a.status {
                Status::Firing => now_ms.saturating_add(ahead),
                Status::Resolved => a.ends_at_ms.unwrap_or(now_ms),
            };
            json!({
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at_ms),
                "endsAt": rfc3339(ends_at),
                "generatorURL": "",
            })
        })
        .collect();
    Value::Array(alerts)
}

impl Notifier for Alertmanager {
    fn notify<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            let body = postable_alerts(notification, self.resend, querypulse_domain::now_ms());
            let body = serde_json::to_vec(&body).map_err(|e| NotifyError(format!("cannot encode the alerts: {e}")))?;
            let url = format!("{}/api/v2/alerts", self.settings.url);
            self.http
                .post_json(&url, &[], body, self.settings.timeout, self.settings.max_attempts)
                .await
        })
    }
}
