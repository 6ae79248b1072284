//! Notification channels: where the alerts of a rule are sent, with the
//! policy of that receiver (repeat interval, resolved notifications).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::FieldError;
use super::durations;

/// How often a still-firing alert is notified again, unless the channel says
/// otherwise.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3_600);
/// Alertmanager expects firing alerts to be re-sent regularly (it resolves an
/// alert whose `endsAt` passes); its channels re-send this often by default.
pub const DEFAULT_ALERTMANAGER_RESEND: Duration = Duration::from_secs(60);
/// Time allowed for one delivery attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per delivery (webhook, Alertmanager) before it counts as failed.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// What the API shows instead of a secret; sending it back keeps the secret.
pub const REDACTED: &str = "********";

/// Security of the SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP (a relay on localhost).
    None,
    /// STARTTLS when the server offers it, plain otherwise.
    Opportunistic,
    /// STARTTLS, refusing to send without it.
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

impl SmtpTls {
    const NAMES: [(&'static str, SmtpTls); 4] = [
        ("none", SmtpTls::None),
        ("opportunistic", SmtpTls::Opportunistic),
        ("starttls", SmtpTls::Starttls),
        ("tls", SmtpTls::Tls),
    ];

    fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("none")
    }

    fn default_port(self) -> u16 {
        match self {
            SmtpTls::None | SmtpTls::Opportunistic => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// A webhook receiving the Alertmanager webhook JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// `http://` or `https://` URL.
    pub url: String,
    /// When set, the body is signed with HMAC-SHA256 in the
    /// `X-Querypulse-Signature: sha256=<hex>` header.
    pub secret: Option<String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Time allowed per attempt.
    pub timeout: Duration,
    /// Attempts before the delivery counts as failed.
    pub max_attempts: u32,
}

/// Email over SMTP.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailSettings {
    /// SMTP server.
    pub smtp_host: String,
    /// SMTP port.
    pub smtp_port: u16,
    /// Connection security.
    pub tls: SmtpTls,
    /// Login, when the server wants one.
    pub username: Option<String>,
    /// Password of `username`.
    pub password: Option<String>,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Time allowed for the whole SMTP conversation.
    pub timeout: Duration,
}

/// A Prometheus Alertmanager.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerSettings {
    /// Base URL (`http://alertmanager:9093`); alerts go to `/api/v2/alerts`.
    pub url: String,
    /// Time allowed per attempt.
    pub timeout: Duration,
    /// Attempts before the delivery counts as failed.
    pub max_attempts: u32,
}

/// What a channel is.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelSettings {
    /// HTTP POST of JSON.
    Webhook(WebhookSettings),
    /// Email.
    Email(EmailSettings),
    /// Prometheus Alertmanager.
    Alertmanager(AlertmanagerSettings),
    /// The collector's log.
    Log,
    /// A handler registered by the program embedding the collector.
    Custom {
        /// Name it was registered under.
        handler: String,
    },
}

impl ChannelSettings {
    /// How long one delivery attempt may take, for the kinds that say.
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            ChannelSettings::Webhook(w) => Some(w.timeout),
            ChannelSettings::Email(e) => Some(e.timeout),
            ChannelSettings::Alertmanager(a) => Some(a.timeout),
            ChannelSettings::Log | ChannelSettings::Custom { .. } => None,
        }
    }

    /// The kind's name in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelSettings::Webhook(_) => "webhook",
            ChannelSettings::Email(_) => "email",
            ChannelSettings::Alertmanager(_) => "alertmanager",
            ChannelSettings::Log => "log",
            ChannelSettings::Custom { .. } => "custom",
        }
    }
}

/// A validated channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// Unique name; the `receiver` of webhook payloads.
    pub name: String,
    /// Kind and settings.
    pub settings: ChannelSettings,
    /// Whether resolved alerts are notified.
    pub send_resolved: bool,
    /// How often a still-firing alert is notified again.
    pub repeat_interval: Duration,
}

impl Channel {
    /// The channel as JSON; secrets replaced by [`REDACTED`] when `redact`.
    pub fn to_json(&self, redact: bool) -> Value {
        let secret = |s: &Option<String>| match s {
            Some(_) if redact => Value::from(REDACTED),
            Some(s) => Value::from(s.as_str()),
            None => Value::Null,
        };
        let mut out = Map::new();
        out.insert("name".into(), self.name.clone().into());
        out.insert("kind".into(), self.settings.kind().into());
        match &self.settings {
            ChannelSettings::Webhook(w) => {
                out.insert("url".into(), w.url.clone().into());
                out.insert("secret".into(), secret(&w.secret));
                let headers: Map<String, Value> = w
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), if redact { REDACTED.into() } else { v.clone().into() }))
                    .collect();
                out.insert("headers".into(), headers.into());
                out.insert("timeout".into(), durations::format(w.timeout).into());
                out.insert("max_attempts".into(), w.max_attempts.into());
            }
            ChannelSettings::Email(e) => {
                out.insert("smtp_host".into(), e.smtp_host.clone().into());
                out.insert("smtp_port".into(), e.smtp_port.into());
                out.insert("tls".into(), e.tls.as_str().into());
                out.insert("username".into(), e.username.clone().into());
                out.insert("password".into(), secret(&e.password));
                out.insert("from".into(), e.from.clone().into());
                out.insert("to".into(), e.to.clone().into());
                out.insert("timeout".into(), durations::format(e.timeout).into());
            }
            ChannelSettings::Alertmanager(a) => {
                out.insert("url".into(), a.url.clone().into());
                out.insert("timeout".into(), durations::format(a.timeout).into());
                out.insert("max_attempts".into(), a.max_attempts.into());
            }
            ChannelSettings::Log => {}
            ChannelSettings::Custom { handler } => {
                out.insert("handler".into(), handler.clone().into());
            }
        }
        out.insert("send_resolved".into(), self.send_resolved.into());
        out.insert("repeat_interval".into(), durations::format(self.repeat_interval).into());
        out.into()
    }
}

/// A channel as the API receives it.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "name": "ops",
    "kind": "webhook",
    "url": "http://127.0.0.1:9/querypulse",
    "timeout": "2s",
    "max_attempts": 1,
    "repeat_interval": "1h"
})))]
#[serde(deny_unknown_fields)]
pub struct ChannelInput {
    /// Unique name; the `receiver` of webhook payloads. Required.
    pub name: Option<String>,
    /// `webhook`, `email`, `alertmanager`, `log` or `custom`.
    pub kind: Option<String>,
    /// Webhook and Alertmanager.
    pub url: Option<String>,
    /// Webhook.
    pub secret: Option<String>,
    /// Webhook.
    pub headers: Option<BTreeMap<String, String>>,
    /// Webhook, Alertmanager, email.
    pub timeout: Option<Value>,
    /// Webhook, Alertmanager.
    pub max_attempts: Option<u32>,
    /// Email.
    pub smtp_host: Option<String>,
    /// Email.
    pub smtp_port: Option<u16>,
    /// Email: `none`, `opportunistic`, `starttls` (default) or `tls`.
    pub tls: Option<String>,
    /// Email.
    pub username: Option<String>,
    /// Email.
    pub password: Option<String>,
    /// Email.
    pub from: Option<String>,
    /// Email.
    pub to: Option<Vec<String>>,
    /// Custom.
    pub handler: Option<String>,
    /// Whether resolved alerts are notified (default: yes).
    pub send_resolved: Option<bool>,
    /// How often a still-firing alert is notified again, as `4h` or
    /// seconds.
    pub repeat_interval: Option<Value>,
    /// Read-only, ignored (a channel read with GET can be sent back).
    pub id: Option<Value>,
}

const KINDS: &str = "webhook, email, alertmanager, log, custom";

impl ChannelInput {
    /// Validates the input. `previous` is the stored channel a PUT replaces
    /// (its secrets are kept where the input sends [`REDACTED`]);
    /// `handler_exists` answers whether a custom handler is registered.
    pub fn validate(
        self,
        previous: Option<&Channel>,
        handler_exists: impl Fn(&str) -> bool,
    ) -> Result<Channel, FieldError> {
        let name = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| FieldError::new("name", "required"))?
            .to_owned();
        let kind = self
            .kind
            .clone()
            .ok_or_else(|| FieldError::new("kind", format!("required: one of {KINDS}")))?;
        let used: &[&str] = match kind.as_str() {
            "webhook" => &["url", "secret", "headers", "timeout", "max_attempts"],
            "email" => &[
                "smtp_host",
                "smtp_port",
                "tls",
                "username",
                "password",
                "from",
                "to",
                "timeout",
            ],
            "alertmanager" => &["url", "timeout", "max_attempts"],
            "log" => &[],
            "custom" => &["handler"],
            other => {
                return Err(FieldError::new(
                    "kind",
                    format!("unknown kind {other:?}: use one of {KINDS}"),
                ));
            }
        };
        for (field, set) in self.fields_set() {
            if set && !used.contains(&field) {
                return Err(FieldError::new(field, format!("is not used by {kind} channels")));
            }
        }
        let timeout = match &self.timeout {
            Some(v) => durations::parse("timeout", v)?,
            None => DEFAULT_TIMEOUT,
        };
        if timeout.is_zero() || timeout > Duration::from_secs(300) {
            return Err(FieldError::new("timeout", "must be more than 0s and at most 5m"));
        }
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=10).contains(&max_attempts) {
            return Err(FieldError::new("max_attempts", "must be from 1 to 10"));
        }
        let kept = |field: &str, given: Option<String>, old: Option<&Option<String>>| match given {
            Some(s) if s == REDACTED => match old {
                Some(old) => Ok(old.clone()),
                None => Err(FieldError::new(
                    field,
                    "send the secret itself, not the redacted placeholder",
                )),
            },
            other => Ok(other.filter(|s| !s.is_empty())),
        };
        let settings = match kind.as_str() {
            "webhook" => {
                let old = match previous.map(|p| &p.settings) {
                    Some(ChannelSettings::Webhook(w)) => Some(w),
                    _ => None,
                };
                let headers = self.headers.unwrap_or_default();
                let mut checked = BTreeMap::new();
                for (header, value) in headers {
                    let lower = header.to_ascii_lowercase();
                    if reqwest::header::HeaderName::from_bytes(lower.as_bytes()).is_err()
                        || ["content-type", "content-length", "host", "x-querypulse-signature"]
                            .contains(&lower.as_str())
                    {
                        return Err(FieldError::new(
                            &format!("headers.{header}"),
                            "not a header that can be set",
                        ));
                    }
                    let value = if value == REDACTED {
                        old.and_then(|w| w.headers.get(&header).cloned()).ok_or_else(|| {
                            FieldError::new(
                                &format!("headers.{header}"),
                                "send the value itself, not the placeholder",
                            )
                        })?
                    } else {
                        value
                    };
                    if reqwest::header::HeaderValue::from_str(&value).is_err() {
                        return Err(FieldError::new(
                            &format!("headers.{header}"),
                            "not a valid header value",
                        ));
                    }
                    checked.insert(header, value);
                }
                ChannelSettings::Webhook(WebhookSettings {
                    url: http_url("url", self.url)?,
                    secret: kept("secret", self.secret, old.map(|w| &w.secret))?,
                    headers: checked,
                    timeout,
                    max_attempts,
                })
            }
            "email" => {
                let old = match previous.map(|p| &p.settings) {
                    Some(ChannelSettings::Email(e)) => Some(e),
                    _ => None,
                };
                let tls = match self.tls.as_deref() {
                    None => SmtpTls::Starttls,
                    Some(name) => SmtpTls::NAMES
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, t)| *t)
                        .ok_or_else(|| {
                            FieldError::new("tls", format!("{name:?}: use none, opportunistic, starttls or tls"))
                        })?,
                };
                let smtp_host = self
                    .smtp_host
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| FieldError::new("smtp_host", "required"))?;
                if smtp_host.contains(['/', ' ', ':']) && smtp_host.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(FieldError::new(
                        "smtp_host",
                        format!("{smtp_host:?} is not a host name"),
                    ));
                }
                let from = self.from.ok_or_else(|| FieldError::new("from", "required"))?;
                mailbox("from", &from)?;
                let to = self.to.unwrap_or_default();
                if to.is_empty() {
                    return Err(FieldError::new("to", "at least one recipient"));
                }
                for (i, address) in to.iter().enumerate() {
                    mailbox(&format!("to[{i}]"), address)?;
                }
                let username = self.username.filter(|u| !u.is_empty());
                let password = kept("password", self.password, old.map(|e| &e.password))?;
                if password.is_some() != username.is_some() {
                    return Err(FieldError::new(
                        if username.is_some() { "password" } else { "username" },
                        "username and password go together",
                    ));
                }
                ChannelSettings::Email(EmailSettings {
                    smtp_port: self.smtp_port.unwrap_or(tls.default_port()),
                    smtp_host,
                    tls,
                    username,
                    password,
                    from,
                    to,
                    timeout,
                })
            }
            "alertmanager" => ChannelSettings::Alertmanager(AlertmanagerSettings {
                url: http_url("url", self.url)?.trim_end_matches('/').to_owned(),
                timeout,
                max_attempts,
            }),
            "log" => ChannelSettings::Log,
            _ => {
                let handler = self.handler.ok_or_else(|| FieldError::new("handler", "required"))?;
                if !handler_exists(&handler) {
                    return Err(FieldError::new(
                        "handler",
                        format!("no handler {handler:?} is registered by the program running the collector"),
                    ));
                }
                ChannelSettings::Custom { handler }
            }
        };
        let default_repeat = match settings {
            ChannelSettings::Alertmanager(_) => DEFAULT_ALERTMANAGER_RESEND,
            _ => DEFAULT_REPEAT_INTERVAL,
        };
        let repeat_interval = match &self.repeat_interval {
            Some(v) => durations::parse("repeat_interval", v)?,
            None => default_repeat,
        };
        if repeat_interval < Duration::from_secs(1) {
            return Err(FieldError::new("repeat_interval", "must be at least 1s"));
        }
        Ok(Channel {
            name,
            settings,
            send_resolved: self.send_resolved.unwrap_or(true),
            repeat_interval,
        })
    }

    fn fields_set(&self) -> [(&'static str, bool); 14] {
        [
            ("url", self.url.is_some()),
            ("secret", self.secret.is_some()),
            ("headers", self.headers.is_some()),
            ("timeout", self.timeout.is_some()),
            ("max_attempts", self.max_attempts.is_some()),
            ("smtp_host", self.smtp_host.is_some()),
            ("smtp_port", self.smtp_port.is_some()),
            ("tls", self.tls.is_some()),
            ("username", self.username.is_some()),
            ("password", self.password.is_some()),
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("handler", self.handler.is_some()),
            ("name", false),
        ]
    }
}

/// Checks an `http://` or `https://` URL with a host.
fn http_url(field: &str, url: Option<String>) -> Result<String, FieldError> {
    let url = url
        .map(|u| u.trim().to_owned())
        .ok_or_else(|| FieldError::new(field, "required"))?;
    let malformed = |why: &str| FieldError::new(field, format!("{url:?} is not a valid URL: {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| malformed("use http:// or https://"))?;
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(malformed("use http:// or https://"));
    }
    if rest.is_empty() || rest.starts_with(['/', '?', '#']) {
        return Err(malformed("it has no host"));
    }
    let parsed = reqwest::Url::parse(&url).map_err(|_| malformed("it does not parse"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(malformed("it has no host"));
    }
    Ok(url)
}

fn mailbox(field: &str, address: &str) -> Result<(), FieldError> {
    address
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| FieldError::new(field, format!("{address:?} is not an email address: {e}")))
}

/// The log channel installed with the default rules.
pub fn default_log_channel() -> ChannelInput {
    ChannelInput {
        name: Some(super::rules::DEFAULT_CHANNEL.into()),
        kind: Some("log".into()),
        ..ChannelInput::default()
    }
}

/// Parses stored channel JSON (written by [`Channel::to_json`] unredacted).
pub fn from_stored(value: Value) -> Result<Channel, String> {
    let input: ChannelInput = serde_json::from_value(value).map_err(|e| e.to_string())?;
    input.validate(None, |_| true).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example_webhook(url: &str) -> Value {
        json!({"name": "ops", "kind": "webhook", "url": url})
    }

    fn validate(value: Value) -> Result<Channel, FieldError> {
        serde_json::from_value::<ChannelInput>(value)
            .unwrap()
            .validate(None, |h| h == "pager")
    }

    #[test]
    fn channels_of_every_kind_validate_with_their_defaults() {
        let webhook = validate(example_webhook("https://hooks.example.com/x")).unwrap();
        assert_eq!(webhook.repeat_interval, DEFAULT_REPEAT_INTERVAL);
        assert!(webhook.send_resolved);
        let am = validate(json!({"name": "am", "kind": "alertmanager", "url": "http://127.0.0.1:9093/"})).unwrap();
        assert_eq!(am.repeat_interval, DEFAULT_ALERTMANAGER_RESEND);
        assert!(matches!(am.settings, ChannelSettings::Alertmanager(ref a) if a.url == "http://127.0.0.1:9093"));
        let mail = validate(
            json!({"name": "m", "kind": "email", "smtp_host": "127.0.0.1", "tls": "none",
            "from": "querypulse <qp@example.com>", "to": ["ops@example.com"]}),
        )
        .unwrap();
        assert!(matches!(mail.settings, ChannelSettings::Email(ref e) if e.smtp_port == 25));
        validate(json!({"name": "p", "kind": "custom", "handler": "pager"})).unwrap();
        validate(json!({"name": "l", "kind": "log"})).unwrap();
    }

    #[test]
    fn invalid_channels_name_the_field() {
        let field = |v: Value| validate(v).unwrap_err().field;
        assert_eq!(
            field(json!({"name": "x", "kind": "webhook", "url": "not a url"})),
            "url"
        );
        assert_eq!(
            field(json!({"name": "x", "kind": "webhook", "url": "ftp://x/y"})),
            "url"
        );
        assert_eq!(field(json!({"name": "x", "kind": "webhook"})), "url");
        assert_eq!(field(json!({"name": "x", "kind": "pager"})), "kind");
        assert_eq!(field(json!({"name": "x", "kind": "log", "url": "http://x"})), "url");
        assert_eq!(
            field(json!({"name": "x", "kind": "custom", "handler": "nope"})),
            "handler"
        );
        assert_eq!(
            field(json!({"name": "x", "kind": "email", "smtp_host": "h", "from": "a@b.c", "to": ["oops"]})),
            "to[0]"
        );
        assert_eq!(
            field(json!({"name": "x", "kind": "webhook", "url": "http://x", "repeat_interval": "-4h"})),
            "repeat_interval"
        );
    }

    #[test]
    fn secrets_are_redacted_on_read_and_kept_when_sent_back() {
        let stored = validate(
            json!({"name": "x", "kind": "webhook", "url": "http://x", "secret": "s3cret",
            "headers": {"Authorization": "Bearer t"}}),
        )
        .unwrap();
        let shown = stored.to_json(true);
        assert_eq!(shown["secret"], REDACTED);
        assert_eq!(shown["headers"]["Authorization"], REDACTED);
        let input: ChannelInput = serde_json::from_value(shown).unwrap();
        let again = input.validate(Some(&stored), |_| true).unwrap();
        assert_eq!(again, stored);
        assert_eq!(from_stored(stored.to_json(false)).unwrap(), stored);
        let fresh: ChannelInput = serde_json::from_value(stored.to_json(true)).unwrap();
        assert_eq!(
            fresh.validate(None, |_| true).unwrap_err().field,
            "headers.Authorization"
        );
        let fresh = validate(json!({"name": "x", "kind": "webhook", "url": "http://x", "secret": REDACTED}));
        assert_eq!(fresh.unwrap_err().field, "secret", "a placeholder is no secret");
    }
}
