//! Support for querypulse's end-to-end tests: a real collector started
//! in-process on free ports, helpers to read its HTTP API, and real receivers
//! of alert notifications ([`receivers`]).

pub mod receivers;

pub mod browser;

use std::path::Path;
use std::time::Duration;

use querypulse_collector::{Collector, Config};
use querypulse_proto::wire::v1::{self as wire, ingest_client::IngestClient};
use querypulse_proto::{Batch, Hello};
use serde_json::Value;

/// A collector on free ports of 127.0.0.1.
#[derive(Debug)]
pub struct TestCollector {
    /// The running collector.
    pub collector: Collector,
    http: reqwest::Client,
}

impl TestCollector {
    /// Starts a collector on `data_dir`.
    pub async fn start(data_dir: &Path) -> TestCollector {
        Self::start_with(Config::ephemeral(data_dir)).await
    }

    /// Starts a collector with `config`.
    pub async fn start_with(config: Config) -> TestCollector {
        let collector = Collector::start(config).await.expect("the collector starts");
        TestCollector {
            collector,
            http: querypulse_collector::http_client(),
        }
    }

    /// The gRPC endpoint agents connect to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.collector.grpc_addr())
    }

    /// An absolute URL on the HTTP side.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.collector.http_addr())
    }

    /// GET `path`; returns the status and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.http.get(self.url(path)).send().await.expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("HTTP body"))
    }

    /// GET `path` and parse JSON; panics unless the status is 200.
    #[track_caller]
    pub fn get_json(&self, path: &str) -> impl std::future::Future<Output = Value> + '_ {
        let path = path.to_owned();
        async move {
            let (status, body) = self.get(&path).await;
            assert_eq!(status, 200, "GET {path} answered {status}: {body}");
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
        }
    }

    /// POSTs a form (`application/x-www-form-urlencoded`, names may repeat)
    /// with an optional session cookie; redirects are returned, not followed.
    pub async fn post_form(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> reqwest::Response {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut request = no_redirects()
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.expect("HTTP request")
    }

    /// GET `path` with a session cookie; returns the status and the body.
    pub async fn get_with(&self, path: &str, cookie: &str) -> (u16, String) {
        let response = no_redirects()
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .expect("HTTP request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("HTTP body"))
    }

    /// Signs in to the dashboard with the admin token; returns the session
    /// cookie (`name=value`).
    pub async fn sign_in(&self, token: &str) -> String {
        let login = self.post_form("/login", None, &[("token", token)]).await;
        assert_eq!(login.status(), 303, "signing in with the admin token");
        let set_cookie = login.headers()["set-cookie"].to_str().expect("a cookie");
        set_cookie.split(';').next().expect("name=value").to_owned()
    }

    /// Stops the collector, releasing its data directory.
    pub async fn stop(self) {
        self.collector.shutdown().await.expect("the collector stops cleanly");
    }
}

/// A client that shows redirects instead of following them.
pub fn no_redirects() -> reqwest::Client {
    querypulse_collector::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

/// Encodes a form value as browsers do.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The CSRF token of the first form on a dashboard page.
#[track_caller]
pub fn csrf(page: &str) -> String {
    const FIELD: &str = "name=\"csrf\" value=\"";
    let at = page.find(FIELD).expect("a CSRF field") + FIELD.len();
    page[at..].split('"').next().expect("a token").to_owned()
}

/// The exact `q` quantile of `values` by the nearest-rank definition.
pub fn exact_quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Asserts `actual` is within `tolerance` (relative) of `expected`.
#[track_caller]
pub fn assert_close(what: &str, actual: f64, expected: f64, tolerance: f64) {
    let error = (actual - expected).abs() / expected.abs().max(f64::MIN_POSITIVE);
    assert!(
        error <= tolerance,
        "{what}: got {actual}, expected {expected} (error {:.3} % > {:.3} %)",
        error * 100.0,
        tolerance * 100.0
    );
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A raw protocol client: one stream, batches acknowledged one by one. For
/// tests that need exact windows, pools, health checks or slow samples.
#[derive(Debug)]
pub struct RawAgent {
    tx: tokio::sync::mpsc::Sender<wire::AgentMessage>,
    inbound: tonic::Streaming<wire::CollectorMessage>,
}

/// A `Hello` for `service` / `instance` on host `host-1`.
pub fn hello(service: &str, instance: &str) -> Hello {
    Hello {
        service: service.into(),
        instance_id: instance.into(),
        host: "host-1".into(),
        agent_version: "9.9.9".into(),
        interval_ms: 10_000,
        ..Hello::default()
    }
}

impl RawAgent {
    /// Opens a stream to the collector at `endpoint` and says `hello`.
    pub async fn open(endpoint: &str, hello: &Hello) -> RawAgent {
        let mut client = IngestClient::connect(endpoint.to_owned()).await.expect("gRPC connect");
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(wire::AgentMessage {
            kind: Some(wire::agent_message::Kind::Hello(hello.into())),
        })
        .await
        .expect("hello sent");
        let inbound = client
            .report(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream opened")
            .into_inner();
        RawAgent { tx, inbound }
    }

    /// Sends `batch`; returns the collector's answer.
    pub async fn send(&mut self, batch: &Batch) -> wire::collector_message::Kind {
        self.tx
            .send(wire::AgentMessage {
                kind: Some(wire::agent_message::Kind::Batch(batch.into())),
            })
            .await
            .expect("batch sent");
        self.inbound
            .message()
            .await
            .expect("an answer")
            .expect("the stream is open")
            .kind
            .expect("a message")
    }

    /// Sends `batch` and asserts it was acknowledged (not as a duplicate).
    pub async fn send_acked(&mut self, batch: &Batch) {
        let seq = batch.seq;
        assert_eq!(
            self.send(batch).await,
            wire::collector_message::Kind::Ack(wire::Ack { seq, duplicate: false }),
            "batch {seq} acknowledged"
        );
    }
}
