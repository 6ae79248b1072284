//! Support for the agent's integration tests: a real gRPC ingest server that
//! decodes and acknowledges every batch the agent ships, and the database
//! connections the tests run against.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use querypulse_agent::Agent;
use querypulse_proto::wire::v1::{self as wire, ingest_server::Ingest, ingest_server::IngestServer};
use querypulse_proto::{
    AgentMessage, Batch, CollectorMessage, Fingerprint, Gauge, HealthCheckStats, LatencyHistogram, PoolStats,
    QueryStats,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Everything the agents sent, decoded into domain types.
#[derive(Debug, Default)]
struct Received {
    batches: Vec<Batch>,
    texts: Vec<(Fingerprint, String)>,
}

#[derive(Clone, Default)]
struct Service {
    received: Arc<Mutex<Received>>,
}

#[tonic::async_trait]
impl Ingest for Service {
    type ReportStream = ReceiverStream<Result<wire::CollectorMessage, Status>>;

    async fn report(
        &self,
        request: Request<Streaming<wire::AgentMessage>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let mut inbound = request.into_inner();
        let (out, rx) = mpsc::channel(64);
        let received = self.received.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                let message = match AgentMessage::try_from(message) {
                    Ok(message) => message,
                    Err(error) => {
                        let _ = out.send(Err(Status::invalid_argument(error.to_string()))).await;
                        return;
                    }
                };
                let AgentMessage::Batch(batch) = message else {
                    continue;
                };
                let seq = batch.seq;
                {
                    let mut received = received.lock().unwrap();
                    received
                        .texts
                        .extend(batch.texts.iter().map(|t| (t.fingerprint, t.text.clone())));
                    received.batches.push(batch);
                }
                let ack = CollectorMessage::Ack { seq, duplicate: false };
                if out.send(Ok((&ack).into())).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A gRPC ingest server on a free port of 127.0.0.1 that keeps every batch.
pub struct TestCollector {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestCollector {
    pub async fn start() -> TestCollector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let addr = listener.local_addr().unwrap();
        let service = Service::default();
        let received = service.received.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(IngestServer::new(service))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        TestCollector {
            addr,
            received,
            stop: Some(stop),
        }
    }

    /// An agent reporting here. Its windows are long: tests close them with
    /// `flush()`.
    pub fn agent(&self, service: &str) -> Agent {
        Agent::builder(service)
            .endpoint(format!("http://{}", self.addr))
            .interval(Duration::from_secs(60))
            .start()
            .expect("the agent starts")
    }

    pub fn batches(&self) -> Vec<Batch> {
        self.received.lock().unwrap().batches.clone()
    }

    /// The normalized text the agent sent for `fingerprint`.
    pub fn text(&self, fingerprint: Fingerprint) -> Option<String> {
        let received = self.received.lock().unwrap();
        received
            .texts
            .iter()
            .find(|(f, _)| *f == fingerprint)
            .map(|(_, t)| t.clone())
    }

    /// Every window of pool `name` received so far, merged into one.
    pub fn pool(&self, name: &str) -> Option<PoolStats> {
        merge_pools(self.batches().iter().flat_map(|b| &b.pools).filter(|p| p.pool == name))
    }

    /// Every health-check window of pool `name` received so far, merged.
    pub fn health(&self, name: &str) -> Option<HealthCheckStats> {
        let batches = self.batches();
        let mut windows = batches.iter().flat_map(|b| &b.health_checks).filter(|h| h.pool == name);
        let mut merged = windows.next()?.clone();
        for h in windows {
            merged.checks += h.checks;
            merged.failures += h.failures;
            merged.latency.add(&h.latency);
            merged.last_check_ms = h.last_check_ms;
            merged.last_ok = h.last_ok;
            if !h.last_error.is_empty() {
                merged.last_error = h.last_error.clone();
            }
        }
        Some(merged)
    }

    /// The statistics of the statement whose normalized text contains
    /// `marker`, merged over every window received.
    pub fn query(&self, marker: &str) -> Option<(String, QueryStats)> {
        let marker = marker.to_lowercase();
        let received = self.received.lock().unwrap();
        let (fingerprint, text) = received
            .texts
            .iter()
            .find(|(_, text)| text.to_lowercase().contains(&marker))?
            .clone();
        let mut merged = QueryStats::new(fingerprint);
        for q in received.batches.iter().flat_map(|b| &b.queries) {
            if q.fingerprint == fingerprint {
                merged.merge(q);
            }
        }
        Some((text, merged))
    }

    /// Polls `check` against what was received until it answers, for at
    /// most `limit`; panics with `what` otherwise.
    #[track_caller]
    pub fn eventually<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&TestCollector) -> Option<T>,
    ) -> impl Future<Output = T> {
        let caller = std::panic::Location::caller();
        let what = what.to_owned();
        async move {
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                if let Some(value) = check(self) {
                    return value;
                }
                if tokio::time::Instant::now() >= deadline {
                    panic!("{caller}: {what} did not happen within {limit:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn merge_gauge(a: Gauge, b: Gauge) -> Gauge {
    Gauge {
        last: b.last,
        peak: a.peak.max(b.peak),
    }
}

/// Windows of one pool added together: counters add, histograms merge,
/// gauges keep the highest peak and the latest value.
pub fn merge_pools<'a>(windows: impl IntoIterator<Item = &'a PoolStats>) -> Option<PoolStats> {
    let mut windows = windows.into_iter();
    let mut merged = windows.next()?.clone();
    for p in windows {
        merged.max_size = p.max_size;
        merged.min_idle = p.min_idle;
        merged.size = merge_gauge(merged.size, p.size);
        merged.idle = merge_gauge(merged.idle, p.idle);
        merged.in_use = merge_gauge(merged.in_use, p.in_use);
        merged.waiting = merge_gauge(merged.waiting, p.waiting);
        merged.acquires += p.acquires;
        merged.releases += p.releases;
        merged.timeouts += p.timeouts;
        merged.errors += p.errors;
        merged.connections_created += p.connections_created;
        merged.connections_closed += p.connections_closed;
        merged.acquire_wait.add(&p.acquire_wait);
        merged.hold_time.add(&p.hold_time);
        merged.leaks += p.leaks;
        merged.leak_threshold_ms = p.leak_threshold_ms;
        merged.leak_samples.extend(p.leak_samples.iter().cloned());
    }
    Some(merged)
}

/// The highest value recorded in `histogram`, milliseconds.
pub fn max_ms(histogram: &LatencyHistogram) -> f64 {
    histogram.quantile_us(1.0).unwrap_or(0.0) / 1_000.0
}

/// The URL in `variable`, or `None` (after saying so) when it is unset: the
/// test then skips. When it is set, an unreachable database fails the test.
pub fn database_url(variable: &str) -> Option<String> {
    match std::env::var(variable) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: {variable} is not set (see DEVELOPERS.md)");
            None
        }
    }
}

pub const POSTGRES_URL: &str = "QUERYPULSE_TEST_POSTGRES_URL";
pub const MYSQL_URL: &str = "QUERYPULSE_TEST_MYSQL_URL";

/// A name no other test (in this or another process) uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}_{:08x}", std::process::id(), rand::random::<u32>())
}

/// A port on 127.0.0.1 where nothing listens.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}
