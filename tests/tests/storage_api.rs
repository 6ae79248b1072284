//! The read API over stored history (query detail and series, pools, slow
//! queries, agents) and the retention settings, against a real collector fed
//! over real gRPC streams.

use querypulse_collector::Config;
use querypulse_e2e::TestCollector;
use querypulse_proto::wire::v1::{self as wire, ingest_client::IngestClient};
use querypulse_proto::{
    AgentCounters, Batch, Fingerprint, FingerprintText, Gauge, HealthCheckStats, Hello, PoolStats, QueryStats,
    SlowQuerySample, Window,
};
use serde_json::{Value, json};

const TEXT: &str = "select * from accounts where id = ?";
const MINUTE: i64 = 60_000;

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A raw protocol client: one stream, batches acknowledged one by one.
struct Stream {
    tx: tokio::sync::mpsc::Sender<wire::AgentMessage>,
    inbound: tonic::Streaming<wire::CollectorMessage>,
}

impl Stream {
    async fn open(collector: &TestCollector, instance: &str) -> Stream {
        let hello = Hello {
            service: "ledger".into(),
            instance_id: instance.into(),
            host: "host-1".into(),
            agent_version: "9.9.9".into(),
            interval_ms: 10_000,
            ..Hello::default()
        };
        let mut client = IngestClient::connect(collector.endpoint()).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(wire::AgentMessage {
            kind: Some(wire::agent_message::Kind::Hello((&hello).into())),
        })
        .await
        .unwrap();
        let inbound = client
            .report(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Stream { tx, inbound }
    }

    async fn send(&mut self, batch: &Batch) -> wire::collector_message::Kind {
        self.tx
            .send(wire::AgentMessage {
                kind: Some(wire::agent_message::Kind::Batch(batch.into())),
            })
            .await
            .unwrap();
        self.inbound.message().await.unwrap().unwrap().kind.unwrap()
    }
}

fn query_batch(seq: u64, start_ms: i64, latencies_us: &[u64]) -> Batch {
    let fp = Fingerprint::of_normalized(TEXT);
    let mut stats = QueryStats::new(fp);
    for us in latencies_us {
        stats.record(*us, 1, None);
    }
    let mut batch = Batch::new(seq, Window::containing(start_ms, 10_000));
    batch.queries.push(stats);
    batch.texts.push(FingerprintText {
        fingerprint: fp,
        text: TEXT.into(),
    });
    batch
}

#[track_caller]
fn acked(kind: wire::collector_message::Kind, seq: u64) {
    assert_eq!(
        kind,
        wire::collector_message::Kind::Ack(wire::Ack { seq, duplicate: false })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_detail_series_and_late_windows() {
    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    let fp = Fingerprint::of_normalized(TEXT).to_string();
    let t = now();
    let mut a = Stream::open(&collector, "instance-a").await;
    let mut b = Stream::open(&collector, "instance-b").await;
    acked(a.send(&query_batch(1, t - 2 * MINUTE, &[1_000, 2_000])).await, 1);
    acked(b.send(&query_batch(1, t - 2 * MINUTE, &[3_000])).await, 1);
    // A late window: an agent that buffered through an outage sends 50 minutes later.
    acked(
        b.send(&query_batch(2, t - 50 * MINUTE, &[40_000, 50_000, 60_000]))
            .await,
        2,
    );

    let detail = collector.get_json(&format!("/api/v1/queries/{fp}")).await;
    assert_eq!(detail["text"], TEXT);
    assert_eq!(detail["services"][0]["service"], "ledger");
    assert_eq!(detail["services"][0]["calls"], 6);
    let instances = detail["instances"].as_array().unwrap();
    let calls: Vec<(String, u64)> = instances
        .iter()
        .map(|i| {
            (
                i["instance_id"].as_str().unwrap().to_owned(),
                i["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        calls.contains(&("instance-a".into(), 2)) && calls.contains(&("instance-b".into(), 4)),
        "{calls:?}"
    );

    let from = t - 60 * MINUTE;
    for (step, resolution) in [("10s", "raw"), ("1m", "1m")] {
        let series = collector
            .get_json(&format!("/api/v1/queries/{fp}/series?from={from}&to={t}&step={step}"))
            .await;
        assert_eq!(series["resolution"], resolution);
        let points = series["points"].as_array().unwrap();
        let total: u64 = points.iter().map(|p| p["calls"].as_u64().unwrap()).sum();
        assert_eq!(total, 6, "step {step}: {series}");
        let late = points
            .iter()
            .find(|p| p["calls"] == 3)
            .expect("the late window has its own point");
        let late_start = late["start_ms"].as_i64().unwrap();
        assert!(
            (t - 51 * MINUTE..=t - 49 * MINUTE).contains(&late_start),
            "{late_start} vs {t}"
        );
        assert!(late["p99_ms"].as_f64().unwrap() > 55.0);
    }
    // Automatic step: about 120 points over the range.
    let auto = collector
        .get_json(&format!("/api/v1/queries/{fp}/series?from={from}&to={t}"))
        .await;
    assert_eq!(auto["step_ms"], 30_000);

    for (path, status) in [
        ("/api/v1/queries/0123456789abcdef".to_owned(), 404),
        ("/api/v1/queries/not-a-fingerprint".to_owned(), 400),
        (format!("/api/v1/queries/{fp}/series?step=0"), 400),
        (format!("/api/v1/queries/{fp}/series?step=1s&from=0&to={t}"), 400),
    ] {
        let (got, body) = collector.get(&path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    }
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_health_checks_slow_queries_and_agents() {
    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    let t = now();
    let mut stream = Stream::open(&collector, "instance-p").await;
    let mut batch = query_batch(1, t - MINUTE, &[2_500_000]);
    let mut pool = PoolStats {
        pool: "primary".into(),
        max_size: 2,
        min_idle: 1,
        acquires: 40,
        timeouts: 3,
        ..Default::default()
    };
    pool.in_use = Gauge { last: 2, peak: 2 };
    pool.waiting = Gauge { last: 6, peak: 8 };
    for us in [5_000, 150_000, 190_000, 200_000] {
        pool.acquire_wait.record(us);
    }
    batch.pools.push(pool);
    let mut health = HealthCheckStats {
        pool: "primary".into(),
        checks: 4,
        failures: 1,
        last_ok: false,
        ..Default::default()
    };
    health.last_error = "connection refused".into();
    for us in [800, 900, 1_000, 1_100] {
        health.latency.record(us);
    }
    batch.health_checks.push(health);
    batch.slow_queries.push(SlowQuerySample {
        fingerprint: Fingerprint::of_normalized(TEXT),
        at_ms: t - 30_000,
        duration_us: 2_500_000,
        rows: 7,
        error_class: Some("57014".into()),
        pool: Some("primary".into()),
        raw_text: None,
    });
    batch.counters = AgentCounters {
        dropped_batches: 2,
        reconnects: 1,
        ..Default::default()
    };
    acked(stream.send(&batch).await, 1);

    let pools = collector.get_json("/api/v1/pools?service=ledger").await;
    let p = &pools["pools"][0];
    assert_eq!(
        (p["service"].as_str(), p["instance_id"].as_str(), p["pool"].as_str()),
        (Some("ledger"), Some("instance-p"), Some("primary"))
    );
    assert_eq!(p["peak_utilization"], 1.0);
    assert_eq!(p["waiting"], json!({"last": 6, "peak": 8}));
    assert_eq!(p["timeouts"], 3);
    assert!((p["acquire_wait_p99_ms"].as_f64().unwrap() - 200.0).abs() < 2.0);
    assert_eq!(p["health"]["failures"], 1);
    assert_eq!(p["health"]["success_rate"], 0.75);
    assert_eq!(p["health"]["last_error"], "connection refused");

    let series = collector
        .get_json("/api/v1/pools/ledger/instance-p/primary/series?step=1m")
        .await;
    assert_eq!(series["points"][0]["waiting"]["peak"], 8);
    assert_eq!(series["points"][0]["health_failures"], 1);
    let (status, _) = collector.get("/api/v1/pools/ledger/instance-p/replica/series").await;
    assert_eq!(status, 404);

    let slow = collector.get_json("/api/v1/slow-queries?service=ledger&limit=5").await;
    let s = &slow["slow_queries"][0];
    assert_eq!(
        (s["text"].as_str(), s["duration_ms"].as_f64(), s["error_class"].as_str()),
        (Some(TEXT), Some(2_500.0), Some("57014"))
    );
    assert_eq!(s["instance_id"], "instance-p");
    let (status, body) = collector.get("/api/v1/slow-queries?limit=0").await;
    assert_eq!(status, 400, "{body}");

    let agents = collector.get_json("/api/v1/agents").await;
    let agent = &agents["agents"][0];
    assert_eq!(
        (
            agent["instance_id"].as_str(),
            agent["host"].as_str(),
            agent["agent_version"].as_str()
        ),
        (Some("instance-p"), Some("host-1"), Some("9.9.9"))
    );
    assert_eq!(agent["counters"]["dropped_batches"], 2);
    assert_eq!(agent["batches"], 1);
    assert_eq!(agent["silent"], false);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_changes_need_the_admin_token_are_validated_and_persist() {
    let data = tempfile::tempdir().unwrap();
    let client = querypulse_collector::http_client();
    let put = |collector: &TestCollector, token: Option<&str>, body: String| {
        let mut request = client
            .put(collector.url("/api/v1/retention"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // Without an admin token the API is read-only.
    let collector = TestCollector::start(data.path()).await;
    let defaults = collector.get_json("/api/v1/retention").await;
    assert_eq!(
        defaults,
        json!({"raw_seconds": 172800, "minute_seconds": 1209600, "hour_seconds": 34560000, "max_bytes": null})
    );
    let response = put(&collector, Some("anything"), defaults.to_string()).await.unwrap();
    assert_eq!(response.status(), 403);
    collector.stop().await;

    let mut config = Config::ephemeral(data.path());
    config.admin_token = Some("admin-secret".into());
    let collector = TestCollector::start_with(config.clone()).await;
    let good =
        json!({"raw_seconds": 86400, "minute_seconds": 604800, "hour_seconds": 31536000, "max_bytes": 1073741824});
    assert_eq!(put(&collector, None, good.to_string()).await.unwrap().status(), 401);
    assert_eq!(
        put(&collector, Some("wrong"), good.to_string()).await.unwrap().status(),
        401
    );
    for (body, needle) in [
        ("{not json".to_owned(), "invalid JSON"),
        (json!({"raw_seconds": 30, "minute_seconds": 604800, "hour_seconds": 31536000, "max_bytes": null}).to_string(), "raw_seconds"),
        (json!({"raw_seconds": -5, "minute_seconds": 604800, "hour_seconds": 31536000, "max_bytes": null}).to_string(), "raw_seconds"),
        (json!({"raw_seconds": 86400, "minute_seconds": 3600, "hour_seconds": 31536000, "max_bytes": null}).to_string(), "minute_seconds"),
        (json!({"raw_seconds": 86400, "minute_seconds": 604800, "hour_seconds": 1e30, "max_bytes": null}).to_string(), "hour_seconds"),
        (json!({"raw_seconds": 86400, "minute_seconds": 604800, "hour_seconds": 31536000, "max_bytes": 10}).to_string(), "max_bytes"),
        (json!({"raw_seconds": 86400, "minute_seconds": 604800, "hour_seconds": 31536000, "max_bytes": null, "extra": 1}).to_string(), "extra"),
    ] {
        let response = put(&collector, Some("admin-secret"), body.clone()).await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].as_str().unwrap().contains(needle), "{body}: {error}");
        assert_eq!(collector.get_json("/api/v1/retention").await, defaults, "a refused change changes nothing");
    }
    // A body over the limit is 413, not a malformed request. (Sent by hand,
    // one byte past the 2 MiB limit and no more: the collector answers as
    // soon as the limit is crossed and closes the connection, and a client
    // still writing would see a broken pipe instead of the answer.)
    let answer = {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let address = collector
            .url("")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "PUT /api/v1/retention HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer admin-secret\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
            4 << 20
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(&vec![b' '; 2 << 20]).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_lowercase().contains("x-content-type-options: nosniff"),
        "{answer}"
    );
    assert!(answer.contains("too large"), "{answer}");
    assert_eq!(collector.get_json("/api/v1/retention").await, defaults);
    let response = put(&collector, Some("admin-secret"), good.to_string()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(collector.get_json("/api/v1/retention").await, good);
    collector.stop().await;

    let collector = TestCollector::start_with(config).await;
    assert_eq!(
        collector.get_json("/api/v1/retention").await,
        good,
        "the change survives a restart"
    );
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_on_the_store_and_needs_the_admin_token() {
    let data = tempfile::tempdir().unwrap();
    let client = querypulse_collector::http_client();
    let verify = |collector: &TestCollector, token: Option<&str>| {
        let mut request = client.get(collector.url("/api/v1/verify"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // It reads the whole store: without an admin token it is refused.
    let collector = TestCollector::start(data.path()).await;
    let response = verify(&collector, Some("anything")).await.unwrap();
    assert_eq!(response.status(), 403);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("--admin-token"), "{error}");
    collector.stop().await;

    let mut config = Config::ephemeral(data.path());
    config.admin_token = Some("admin-secret".into());
    let collector = TestCollector::start_with(config).await;
    let mut stream = Stream::open(&collector, "ledger-1").await;
    let start = (now() - 3 * MINUTE) / 10_000 * 10_000;
    for (seq, at) in [(1, start), (2, start + 10_000), (3, start - 20 * MINUTE)] {
        acked(stream.send(&query_batch(seq, at, &[1_000, 2_500, 90_000])).await, seq);
    }
    assert_eq!(verify(&collector, None).await.unwrap().status(), 401);
    assert_eq!(verify(&collector, Some("wrong")).await.unwrap().status(), 401);
    let response = verify(&collector, Some("admin-secret")).await.unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["problems"], json!([]), "{report}");
    assert!(report["series"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        report["windows"].as_u64().unwrap() >= 6,
        "raw and 1-minute windows read: {report}"
    );
    collector.stop().await;
}
