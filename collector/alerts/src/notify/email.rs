//! Email over SMTP (lettre): plain, STARTTLS (opportunistic or required) or
//! implicit TLS, with an optional login; a text and an HTML body.

use std::fmt::Write;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Notification, Notifier, NotifyError, NotifyFuture, rfc3339};
use crate::channels::{EmailSettings, SmtpTls};

#[derive(Debug)]
pub(super) struct Email {
    settings: EmailSettings,
}

impl Email {
    pub(super) fn new(settings: EmailSettings) -> Email {
        Email { settings }
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, NotifyError> {
        let s = &self.settings;
        let tls_parameters = || {
            TlsParameters::new(s.smtp_host.clone())
                .map_err(|e| NotifyError(format!("TLS setup for {}: {e}", s.smtp_host)))
        };
        let tls = match s.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Opportunistic => Tls::Opportunistic(tls_parameters()?),
            SmtpTls::Starttls => Tls::Required(tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.smtp_host.as_str())
            .port(s.smtp_port)
            .tls(tls)
            .timeout(Some(s.timeout));
        if let (Some(user), Some(password)) = (&s.username, &s.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(builder.build())
    }

    fn message(&self, notification: &Notification) -> Result<Message, NotifyError> {
        let parse = |address: &str| {
            address
                .parse::<Mailbox>()
                .map_err(|e| NotifyError(format!("{address:?} is not an email address: {e}")))
        };
        let mut builder = Message::builder()
            .from(parse(&self.settings.from)?)
            .subject(notification.title());
        for to in &self.settings.to {
            builder = builder.to(parse(to)?);
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                text(notification),
                html(notification),
            ))
            .map_err(|e| NotifyError(format!("cannot build the email: {e}")))
    }
}

/// The plain-text body.
pub fn text(notification: &Notification) -> String {
    let mut out = format!("{}\n", notification.title());
    for alert in &notification.alerts {
        let _ = write!(
            out,
            "\n{}: {}\n",
            alert.status.as_str().to_uppercase(),
            alert.annotations.get("summary").map(String::as_str).unwrap_or("")
        );
        if let Some(description) = alert.annotations.get("description") {
            let _ = writeln!(out, "{description}");
        }
        if !alert.value_text.is_empty() {
            let _ = writeln!(out, "Value: {}", alert.value_text);
        }
        let _ = writeln!(out, "Since: {}", rfc3339(alert.starts_at_ms));
        if let Some(end) = alert.ends_at_ms {
            let _ = writeln!(out, "Resolved: {}", rfc3339(end));
        }
        let labels: Vec<String> = alert.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "Labels: {}", labels.join(", "));
    }
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML body.
pub fn html(notification: &Notification) -> String {
    let mut out = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><h2>{}</h2>",
        escape(&notification.title())
    );
    for alert in &notification.alerts {
        let color = if alert.status == super::Status::Firing {
            "#b00020"
        } else {
            "#2e7d32"
        };
        let _ = write!(
            out,
            "<div style=\"border-left:4px solid {color};padding:4px 12px;margin:12px 0\"><p><strong>{}</strong>: {}</p>",
            alert.status.as_str().to_uppercase(),
            escape(alert.annotations.get("summary").map(String::as_str).unwrap_or(""))
        );
        if let Some(description) = alert.annotations.get("description") {
            let _ = write!(out, "<p>{}</p>", escape(description));
        }
        out.push_str("<table>");
        if !alert.value_text.is_empty() {
            let _ = write!(
                out,
                "<tr><th align=left>value</th><td>{}</td></tr>",
                escape(&alert.value_text)
            );
        }
        let _ = write!(
            out,
            "<tr><th align=left>since</th><td>{}</td></tr>",
            rfc3339(alert.starts_at_ms)
        );
        for (k, v) in &alert.labels {
            let _ = write!(out, "<tr><th align=left>{}</th><td>{}</td></tr>", escape(k), escape(v));
        }
        out.push_str("</table></div>");
    }
    out.push_str("</body></html>");
    out
}

impl Notifier for Email {
    fn notify<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            let message = self.message(notification)?;
            let transport = self.transport()?;
            let host = format!("{}:{}", self.settings.smtp_host, self.settings.smtp_port);
            // lettre's timeout covers each command; this bounds the whole
            // conversation.
            let sent = tokio::time::timeout(self.settings.timeout * 2, transport.send(message))
                .await
                .map_err(|_| NotifyError(format!("SMTP server {host} did not finish in time")))?;
            sent.map(|_| ())
                .map_err(|e| NotifyError(format!("SMTP server {host}: {e}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_bodies_escape_what_alerts_carry() {
        let mut n = Notification::test(1, "mail", 0);
        n.alerts[0]
            .annotations
            .insert("description".into(), "<script>alert('x')</script> & more".into());
        let body = html(&n);
        assert!(
            body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"),
            "{body}"
        );
        assert!(text(&n).contains("<script>"), "plain text stays as written");
    }
}
