//! Outbound HTTP for webhooks and Alertmanager: `http://` and `https://`
//! (rustls with ring, the system's CA certificates or, without any, Mozilla's),
//! a timeout per attempt, and retries with exponential backoff on errors a
//! retry can fix (connection failures, timeouts, 429 and 5xx). It is
//! reqwest, the one HTTP client of the product.

use std::sync::Arc;
use std::time::Duration;

use super::NotifyError;

/// Wait before the second attempt; doubled for each further one.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Response bytes quoted in an error.
const QUOTED_BYTES: usize = 200;

/// A shared HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

/// One failed attempt.
struct Failure {
    retry: bool,
    message: String,
}

/// The CA certificates https notifications trust: the system's, or Mozilla's
/// when the system has none.
fn root_certificates() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "skipping a system CA certificate");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!("no system CA certificates; https notifications trust Mozilla's roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

impl HttpClient {
    /// A client trusting the system's CA certificates (Mozilla's when the
    /// system has none).
    pub fn new() -> HttpClient {
        // reqwest also builds TLS for clients without this configuration:
        // ring serves those too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(root_certificates())
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .user_agent(concat!("querypulse/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a rustls client with fixed settings builds");
        HttpClient { client }
    }

    async fn attempt(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<(), Failure> {
        let fail = |retry: bool, message: String| Failure { retry, message };
        let mut request = self
            .client
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(body.to_vec())
            .build()
            .map_err(|e| fail(false, format!("invalid request: {}", error_chain(&e))))?;
        let response = self.client.execute(request).await.map_err(|e| {
            if e.is_timeout() {
                fail(true, format!("{url} did not answer within {timeout:?}"))
            } else {
                fail(true, format!("cannot reach {url}: {}", error_chain(&e)))
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = response.bytes().await.unwrap_or_default();
        let quoted = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_BYTES)]).into_owned();
        let retry = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        Err(fail(retry, format!("{url} answered {status}: {}", quoted.trim())))
    }

    /// POSTs JSON `body` to `url`, up to `attempts` times.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
        attempts: u32,
    ) -> Result<(), NotifyError> {
        let mut backoff = RETRY_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.attempt(url, headers, &body, timeout).await {
                Ok(()) => return Ok(()),
                Err(failure) if !failure.retry || attempt >= attempts => {
                    return Err(NotifyError(format!(
                        "{} (attempt {attempt} of {attempts})",
                        failure.message
                    )));
                }
                Err(failure) => {
                    tracing::debug!(url, attempt, error = %failure.message, "delivery failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
            }
        }
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

/// An error with its causes, which reqwest keeps apart.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
