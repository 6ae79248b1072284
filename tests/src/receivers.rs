//! Real receivers for alert notifications: a webhook server on 127.0.0.1,
//! and external programs (an SMTP server, Alertmanager) started and stopped
//! by a test.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One request the webhook received.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// When it arrived.
    pub at: Instant,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// Its body as JSON.
    pub json: Value,
}

#[derive(Clone)]
struct Hook {
    deliveries: mpsc::UnboundedSender<Delivery>,
    fail: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

async fn receive(State(hook): State<Hook>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let failing = hook
        .fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        hook.failed.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = hook.deliveries.send(Delivery {
        at: Instant::now(),
        headers,
        body,
        json,
    });
    StatusCode::OK
}

/// A webhook receiver on a free port of 127.0.0.1 keeping every accepted
/// request.
#[derive(Debug)]
pub struct WebhookReceiver {
    /// Where to send.
    pub url: String,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    fail: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl WebhookReceiver {
    /// Starts the receiver.
    pub async fn start() -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let addr = listener.local_addr().unwrap();
        let (tx, deliveries) = mpsc::unbounded_channel();
        let hook = Hook {
            deliveries: tx,
            fail: Arc::default(),
            failed: Arc::default(),
        };
        let (fail, failed) = (hook.fail.clone(), hook.failed.clone());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(hook);
        tokio::spawn(async move { axum::serve(listener, app).await });
        WebhookReceiver {
            url: format!("http://{addr}/hook"),
            deliveries,
            fail,
            failed,
        }
    }

    /// Answers the next `n` requests with 503 (and does not keep them).
    pub fn fail_next(&self, n: usize) {
        self.fail.store(n, Ordering::SeqCst);
    }

    /// Requests answered with 503 so far.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// The next accepted request, waiting at most `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Delivery> {
        tokio::time::timeout(limit, self.deliveries.recv()).await.ok().flatten()
    }

    /// An accepted request not yet taken, without waiting.
    pub fn try_next(&mut self) -> Option<Delivery> {
        self.deliveries.try_recv().ok()
    }
}

/// A free port on 127.0.0.1 (for programs that cannot report the port they
/// bound).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Program {
    child: Child,
    name: String,
}

impl Program {
    /// Starts `command`, its output discarded.
    pub fn start(name: &str, command: &mut Command) -> Program {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Program {
            child,
            name: name.to_owned(),
        }
    }

    /// Waits until it accepts connections on `port` of 127.0.0.1.
    pub async fn wait_for_port(&mut self, port: u16, limit: Duration) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + limit;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited before listening on {port}: {status}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {port} within {limit:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `variable`, or `None` after printing that the test is
/// skipped.
pub fn required_tool(variable: &str, what: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            eprintln!("skipped: set {variable} to run this test against {what}");
            None
        }
    }
}
