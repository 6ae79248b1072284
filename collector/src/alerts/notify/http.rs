//! Outbound HTTP for webhooks and Alertmanager: `http://` and `https://`
//! (rustls with ring, the system's CA certificates or, without any, Mozilla's),
//! a timeout per attempt, and retries with exponential backoff on errors a
//! retry can fix (connection failures, timeouts, 429 and 5xx).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
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

impl HttpClient {
    /// A client trusting the system's CA certificates (Mozilla's when the
    /// system has none).
    pub fn new() -> HttpClient {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, "no system CA certificates; https notifications trust Mozilla's roots");
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_provider_and_webpki_roots(provider)
                    .expect("ring supports the default protocol versions")
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    async fn attempt(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &Bytes,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let fail = |retry: bool, message: String| Failure { retry, message };
        let mut request = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("querypulse/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(Full::new(body.clone()))
            .map_err(|e| fail(false, format!("invalid request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| fail(true, format!("cannot reach {url}: {}", error_chain(&e))))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                return Ok(());
            }
            let quoted = String::from_utf8_lossy(&bytes[..bytes.len().min(QUOTED_BYTES)]).into_owned();
            let retry = status.is_server_error() || status == hyper::StatusCode::TOO_MANY_REQUESTS;
            Err(fail(retry, format!("{url} answered {status}: {}", quoted.trim())))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| fail(true, format!("{url} did not answer within {timeout:?}")))?
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
        let body = Bytes::from(body);
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

/// An error with its causes, which hyper keeps apart.
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
