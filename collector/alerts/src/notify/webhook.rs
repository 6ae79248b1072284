//! Webhook: the Alertmanager webhook JSON, optionally signed with
//! HMAC-SHA256 (`X-Querypulse-Signature: sha256=<hex of the body's MAC>`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{HttpClient, Notification, Notifier, NotifyError, NotifyFuture};
use crate::channels::WebhookSettings;

/// Header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Querypulse-Signature";

#[derive(Debug)]
pub(super) struct Webhook {
    settings: WebhookSettings,
    http: HttpClient,
}

impl Webhook {
    pub(super) fn new(settings: WebhookSettings, http: HttpClient) -> Webhook {
        Webhook { settings, http }
    }
}

/// `sha256=<hex>` of HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Notifier for Webhook {
    fn notify<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            let body = serde_json::to_vec(&notification.webhook_body())
                .map_err(|e| NotifyError(format!("cannot encode the notification: {e}")))?;
            let mut headers: Vec<(String, String)> = self
                .settings
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(secret) = &self.settings.secret {
                headers.push((SIGNATURE_HEADER.to_owned(), signature(secret, &body)));
            }
            self.http
                .post_json(
                    &self.settings.url,
                    &headers,
                    body,
                    self.settings.timeout,
                    self.settings.max_attempts,
                )
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
