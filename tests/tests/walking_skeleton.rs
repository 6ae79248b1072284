//! One query, recorded in two service instances, reaches a number in the API
//! and on the dashboard — through real agents, a real gRPC stream, the sled
//! store and real HTTP.

use std::time::Duration;

use querypulse_agent::{Agent, Outcome};
use querypulse_e2e::{TestCollector, assert_close, exact_quantile};
use querypulse_proto::wire::v1::{self as wire, ingest_client::IngestClient};
use querypulse_proto::{
    Batch, Fingerprint, FingerprintText, Gauge, Hello, PoolStats, QueryStats, SlowQuerySample, Window,
};
use serde_json::Value;

const SQL: &str = "SELECT * FROM invoices WHERE customer_id = 17 AND status = 'open'";
const NORMALIZED: &str = "select * from invoices where customer_id = ? and status = ?";
const HOSTILE_SQL: &str = "SELECT * FROM \"<script>alert(1)</script>\" WHERE id = 1";

fn agent(endpoint: &str) -> Agent {
    Agent::builder("billing")
        .endpoint(endpoint)
        .interval(Duration::from_secs(60))
        .start()
        .expect("the agent starts")
}

fn find<'a>(queries: &'a Value, text: &str) -> &'a Value {
    queries["queries"]
        .as_array()
        .expect("a queries array")
        .iter()
        .find(|q| q["text"] == text)
        .unwrap_or_else(|| panic!("no query {text:?} in {queries}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_merge_into_true_fleet_percentiles_that_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    let (a, b) = (agent(&collector.endpoint()), agent(&collector.endpoint()));

    // Instance A: 1,000 fast executions (0.1 ms .. 100 ms); instance B: 100 slow
    // ones (100 ms .. 1,000 ms). Averaging the two instances' p99 would say
    // ~545 ms; the merged truth is ~990 ms.
    let mut all_ms = Vec::new();
    for i in 1..=1_000u64 {
        let ms = i as f64 / 10.0;
        let outcome = if i % 100 == 0 {
            Outcome::sqlstate("40001")
        } else {
            Outcome::rows(1)
        };
        a.record_query(SQL, Duration::from_micros(i * 100), outcome);
        all_ms.push(ms);
    }
    for i in 1..=100u64 {
        let ms = 100.0 + i as f64 * 9.0;
        let outcome = if i % 10 == 0 {
            Outcome::sqlstate("57014")
        } else {
            Outcome::OK
        };
        b.record_query(
            &SQL.replace("17", &i.to_string()),
            Duration::from_micros((ms * 1_000.0) as u64),
            outcome,
        );
        all_ms.push(ms);
    }
    b.record_query(HOSTILE_SQL, Duration::from_millis(2), Outcome::OK);
    a.flush().await.expect("instance A's window is acknowledged");
    b.flush().await.expect("instance B's window is acknowledged");

    let queries = collector.get_json("/api/v1/queries?service=billing").await;
    let q = find(&queries, NORMALIZED);
    assert_eq!(q["service"], "billing");
    assert_eq!(q["calls"], 1_100);
    assert_eq!(q["errors"], 10 + 10);
    let fingerprint = q["fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 16);
    assert!(fingerprint.parse::<Fingerprint>().is_ok());
    let total: f64 = all_ms.iter().sum();
    assert_close("total_ms", q["total_ms"].as_f64().unwrap(), total, 1e-9);
    assert_close(
        "mean_ms",
        q["mean_ms"].as_f64().unwrap(),
        total / all_ms.len() as f64,
        1e-9,
    );
    assert_close("min_ms", q["min_ms"].as_f64().unwrap(), 0.1, 1e-9);
    assert_close("max_ms", q["max_ms"].as_f64().unwrap(), 1_000.0, 1e-9);
    let mean = total / all_ms.len() as f64;
    let stddev = (all_ms.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all_ms.len() as f64).sqrt();
    assert_close("stddev_ms", q["stddev_ms"].as_f64().unwrap(), stddev, 1e-6);
    for (field, quantile) in [("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)] {
        assert_close(
            field,
            q[field].as_f64().unwrap(),
            exact_quantile(&all_ms, quantile),
            0.01,
        );
    }

    let services = collector.get_json("/api/v1/services").await;
    assert_eq!(services["services"][0]["name"], "billing");
    assert_eq!(services["services"][0]["instances"], 2);

    // The dashboard lists the query and escapes what the SQL text carries.
    let (status, page) = collector.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains(NORMALIZED), "the top query is on the page");
    let escaped = [
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "&#60;script&#62;alert(1)&#60;/script&#62;",
    ];
    assert!(
        escaped.iter().any(|e| page.contains(e)),
        "the hostile identifier is shown escaped: {page}"
    );
    assert!(!page.contains("<script>alert(1)"), "no raw script tag reaches the page");

    // A restart on the same data directory changes nothing.
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let before = collector.get_json("/api/v1/queries?service=billing").await["queries"].clone();
    collector.stop().await;
    let collector = TestCollector::start(data.path()).await;
    let after = collector.get_json("/api/v1/queries?service=billing").await["queries"].clone();
    assert_eq!(before, after);
    collector.stop().await;
}

async fn open_stream(
    endpoint: String,
    hello: &Hello,
) -> (
    tokio::sync::mpsc::Sender<wire::AgentMessage>,
    tonic::Streaming<wire::CollectorMessage>,
) {
    let mut client = IngestClient::connect(endpoint).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Hello(hello.into())),
    })
    .await
    .unwrap();
    let response = client
        .report(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream opens");
    (tx, response.into_inner())
}

async fn send_batch(
    tx: &tokio::sync::mpsc::Sender<wire::AgentMessage>,
    inbound: &mut tonic::Streaming<wire::CollectorMessage>,
    batch: &Batch,
) -> wire::collector_message::Kind {
    tx.send(wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Batch(batch.into())),
    })
    .await
    .unwrap();
    inbound
        .message()
        .await
        .expect("a reply")
        .expect("the stream stays open")
        .kind
        .expect("a reply kind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_is_counted_once() {
    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    let hello = Hello {
        service: "ledger".into(),
        instance_id: "resender-1".into(),
        ..Hello::default()
    };
    let text = "select balance from accounts where id = ?";
    let fingerprint = Fingerprint::of_normalized(text);
    let mut stats = QueryStats::new(fingerprint);
    for us in [1_000, 2_000, 3_000] {
        stats.record(us, 1, None);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut batch = Batch::new(1, Window::containing(now, 10_000));
    batch.queries.push(stats);
    batch.texts.push(FingerprintText {
        fingerprint,
        text: text.into(),
    });

    let (tx, mut inbound) = open_stream(collector.endpoint(), &hello).await;
    let first = send_batch(&tx, &mut inbound, &batch).await;
    assert_eq!(
        first,
        wire::collector_message::Kind::Ack(wire::Ack {
            seq: 1,
            duplicate: false
        })
    );
    let again = send_batch(&tx, &mut inbound, &batch).await;
    assert_eq!(
        again,
        wire::collector_message::Kind::Ack(wire::Ack {
            seq: 1,
            duplicate: true
        })
    );
    drop(tx);

    // After a reconnect, as an agent would after losing an acknowledgement.
    let (tx, mut inbound) = open_stream(collector.endpoint(), &hello).await;
    let resent = send_batch(&tx, &mut inbound, &batch).await;
    assert_eq!(
        resent,
        wire::collector_message::Kind::Ack(wire::Ack {
            seq: 1,
            duplicate: true
        })
    );

    // A batch that refers to a fingerprint whose text was never sent is
    // rejected by sequence number, and the stream stays usable.
    let mut unknown = Batch::new(2, batch.window);
    let mut stray = QueryStats::new(Fingerprint::new(0xdead_beef));
    stray.record(5, 0, None);
    unknown.queries.push(stray);
    match send_batch(&tx, &mut inbound, &unknown).await {
        wire::collector_message::Kind::Reject(reject) => {
            assert_eq!(reject.seq, 2);
            assert!(reject.reason.contains("unknown"), "{}", reject.reason);
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let mut next = batch.clone();
    next.seq = 3;
    next.texts.clear(); // already known to the collector
    assert_eq!(
        send_batch(&tx, &mut inbound, &next).await,
        wire::collector_message::Kind::Ack(wire::Ack {
            seq: 3,
            duplicate: false
        })
    );
    drop(tx);

    let queries = collector.get_json("/api/v1/queries?service=ledger").await;
    assert_eq!(
        find(&queries, text)["calls"],
        6,
        "batch 1 once, batch 3 once, the rejected batch never"
    );
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_json_error_not_a_500() {
    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    for (path, status, needle) in [
        ("/api/v1/queries?from=yesterday", 400, "from="),
        ("/api/v1/queries?to=2026-13-45T00:00:00Z", 400, "to="),
        ("/api/v1/queries?from=2000&to=1000", 400, "earlier"),
        ("/api/v1/queries?servce=x", 400, "unknown parameter"),
        ("/api/v1/queries?service=nobody", 404, "nobody"),
        ("/api/v1/nothing-here", 404, "no such API endpoint"),
    ] {
        let (got, body) = collector.get(path).await;
        assert_eq!(got, status, "GET {path}: {body}");
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("GET {path}: not JSON: {body}"));
        let message = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("GET {path}: no error field: {body}"));
        assert!(message.contains(needle), "GET {path}: {message}");
    }
    let (status, body) = collector.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_the_right_one_accepted() {
    let data = tempfile::tempdir().unwrap();
    let mut config = querypulse_collector::Config::ephemeral(data.path());
    config.ingest_token = Some("s3cret".into());
    let collector = TestCollector::start_with(config).await;

    let intruder = Agent::builder("billing")
        .endpoint(collector.endpoint())
        .token("wrong")
        .shutdown_timeout(Duration::from_millis(500))
        .start()
        .unwrap();
    intruder.record_query("select 1", Duration::from_millis(1), Outcome::OK);
    assert!(
        intruder.flush().await.is_err(),
        "nothing is acknowledged without the token"
    );
    assert!(intruder.stats().counters.send_errors > 0);

    let member = Agent::builder("billing")
        .endpoint(collector.endpoint())
        .token("s3cret")
        .start()
        .unwrap();
    member.record_query("select 1", Duration::from_millis(1), Outcome::OK);
    member.flush().await.expect("acknowledged with the right token");
    let queries = collector.get_json("/api/v1/queries").await;
    assert_eq!(find(&queries, "select ?")["calls"], 1);
    member.shutdown().await.unwrap();
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_facing_a_saturated_collector_wait_and_lose_nothing() {
    // With the ingest budget at one byte, the collector decodes and writes
    // one batch at a time across all streams; with a memtable of a few
    // kilobytes, nearly every batch makes the writer wait for a flush. The
    // agents' batches wait (acknowledgements slow down), then pass.
    let data = tempfile::tempdir().unwrap();
    let mut config = querypulse_collector::Config::ephemeral(data.path());
    config.limits.pending_bytes = 1;
    config.store_limits.memtable_bytes = 8 << 10;
    let collector = TestCollector::start_with(config).await;
    let agents: Vec<Agent> = (0..8)
        .map(|_| {
            Agent::builder("billing")
                .endpoint(collector.endpoint())
                .interval(Duration::from_secs(1))
                .start()
                .expect("the agent starts")
        })
        .collect();
    for round in 0..3u64 {
        for (i, agent) in agents.iter().enumerate() {
            for n in 0..100u64 {
                agent.record_query(SQL, Duration::from_micros(100 + n * 10 + i as u64 + round), Outcome::OK);
            }
        }
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    for agent in agents {
        agent.shutdown().await.expect("the last window is flushed");
    }
    let queries = collector.get_json("/api/v1/queries?service=billing").await;
    assert_eq!(find(&queries, NORMALIZED)["calls"], 8 * 3 * 100, "{queries}");
    let agents = collector.get_json("/api/v1/agents").await;
    assert_eq!(agents["agents"].as_array().map(Vec::len), Some(8), "{agents}");
    collector.stop().await;
}

/// Sends `body` as one raw `Report` request over a real HTTP/2 connection and
/// returns the replies it decodes and the final gRPC status.
async fn raw_report(
    endpoint: &str,
    path: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (Vec<wire::CollectorMessage>, tonic::Status) {
    use http_body_util::BodyExt as _;
    use prost::Message as _;
    use tonic::codegen::Service as _;

    let mut channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let mut request = http::Request::post(format!("{endpoint}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let request = request
        .body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(
            body,
        ))))
        .unwrap();
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.unwrap();
    let response = channel.call(request).await.expect("an HTTP/2 response");
    assert_eq!(response.status(), 200, "gRPC answers in trailers, not HTTP status");
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return (Vec::new(), status);
    }
    let collected = response.into_body().collect().await.expect("the body arrives");
    let trailers = collected.trailers().cloned().expect("trailers end the stream");
    let mut data = collected.to_bytes();
    let mut replies = Vec::new();
    while data.len() >= 5 {
        let len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
        replies.push(wire::CollectorMessage::decode(&data[5..5 + len]).expect("a reply decodes"));
        data = data.slice(5 + len..);
    }
    (
        replies,
        tonic::Status::from_header_map(&trailers).expect("a grpc-status"),
    )
}

fn prefixed(message: &wire::AgentMessage) -> Vec<u8> {
    use prost::Message as _;
    let mut out = vec![0];
    out.extend_from_slice(&(message.encoded_len() as u32).to_be_bytes());
    out.extend_from_slice(&message.encode_to_vec());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_streams_get_a_status_and_harm_no_other_stream() {
    let data = tempfile::tempdir().unwrap();
    let mut config = querypulse_collector::Config::ephemeral(data.path());
    config.max_message_bytes = 64 << 10;
    let collector = TestCollector::start_with(config).await;
    let endpoint = collector.endpoint();
    let hello = wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Hello(
            (&Hello {
                service: "billing".into(),
                instance_id: "raw-1".into(),
                ..Hello::default()
            })
                .into(),
        )),
    };
    let text = "select 1";
    let fingerprint = Fingerprint::of_normalized(text);
    let mut stats = QueryStats::new(fingerprint);
    stats.record(1_000, 1, None);
    let mut batch = Batch::new(1, Window::containing(chrono::Utc::now().timestamp_millis(), 10_000));
    batch.queries.push(stats);
    batch.texts.push(FingerprintText {
        fingerprint,
        text: text.into(),
    });
    let batch = wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Batch((&batch).into())),
    };
    let report = "/querypulse.v1.Ingest/Report";

    // A well-formed stream, sent as raw frames: acknowledged, status OK.
    let good: Vec<u8> = [prefixed(&hello), prefixed(&batch)].concat();
    let (replies, status) = raw_report(&endpoint, report, None, good.clone()).await;
    assert_eq!(status.code(), tonic::Code::Ok, "{status:?}");
    assert!(
        replies.iter().any(|r| matches!(
            r.kind,
            Some(wire::collector_message::Kind::Ack(wire::Ack { seq: 1, .. }))
        )),
        "{replies:?}"
    );

    let oversized = [prefixed(&hello), vec![0], (1u32 << 20).to_be_bytes().to_vec()].concat();
    let garbage = [prefixed(&hello), vec![0, 0, 0, 0, 3, 0xff, 0xff, 0xff]].concat();
    let cut = good[..good.len() - 2].to_vec();
    // A hello whose service name is not UTF-8.
    let mut not_utf8 = prefixed(&hello);
    let at = not_utf8.windows(7).position(|w| w == b"billing").unwrap();
    not_utf8[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
    for (name, path, encoding, body, code, needle) in [
        (
            "oversized",
            report,
            None,
            oversized,
            tonic::Code::ResourceExhausted,
            "exceeds the limit",
        ),
        (
            "garbage",
            report,
            None,
            garbage,
            tonic::Code::InvalidArgument,
            "does not decode",
        ),
        (
            "not UTF-8",
            report,
            None,
            not_utf8,
            tonic::Code::InvalidArgument,
            "does not decode",
        ),
        (
            "cut short",
            report,
            None,
            cut,
            tonic::Code::InvalidArgument,
            "ended inside a message",
        ),
        (
            "compressed",
            report,
            Some("gzip"),
            good.clone(),
            tonic::Code::Unimplemented,
            "gzip",
        ),
        (
            "unknown method",
            "/querypulse.v1.Ingest/Other",
            None,
            good.clone(),
            tonic::Code::Unimplemented,
            "Other",
        ),
    ] {
        let (_, status) = raw_report(&endpoint, path, encoding, body).await;
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(status.message().contains(needle), "{name}: {}", status.message());
    }

    // The collector still serves real agents, and counted the good batch
    // once: the stream cut inside its batch applied nothing.
    let member = agent(&endpoint);
    member.record_query(SQL, Duration::from_millis(1), Outcome::OK);
    member.flush().await.expect("acknowledged after the malformed streams");
    member.shutdown().await.unwrap();
    let queries = collector.get_json("/api/v1/queries?service=billing").await;
    assert_eq!(find(&queries, text)["calls"], 1, "{queries}");
    assert_eq!(find(&queries, NORMALIZED)["calls"], 1, "{queries}");
    collector.stop().await;
}

/// Batches whose numbers would show as nonsense are rejected by sequence
/// number with the reason, the stream stays usable, and nothing of them is
/// stored: a pool more than full, a slow sample stamped at the end of time,
/// a window from an hour ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_numbers_are_rejected_and_a_second_hello_comes_after_the_acks_owed() {
    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    let hello = Hello {
        service: "ledger".into(),
        instance_id: "absurd-1".into(),
        ..Hello::default()
    };
    let text = "select balance from accounts where id = ?";
    let fingerprint = Fingerprint::of_normalized(text);
    let now = chrono::Utc::now().timestamp_millis();
    let batch = |seq: u64, window: Window| {
        let mut batch = Batch::new(seq, window);
        let mut stats = QueryStats::new(fingerprint);
        stats.record(1_500, 1, None);
        batch.queries.push(stats);
        batch.texts.push(FingerprintText {
            fingerprint,
            text: text.into(),
        });
        batch
    };
    let (tx, mut inbound) = open_stream(collector.endpoint(), &hello).await;
    let rejected = |kind: wire::collector_message::Kind, seq: u64, needle: &str| match kind {
        wire::collector_message::Kind::Reject(reject) => {
            assert_eq!(reject.seq, seq);
            assert!(reject.reason.contains(needle), "{needle}: {}", reject.reason);
        }
        other => panic!("batch {seq} ({needle}) should be rejected, got {other:?}"),
    };

    // A window that starts 299 s ahead (inside the clock-skew allowance)
    // but lasts an hour would put data an hour ahead.
    let ahead = Window {
        start_ms: now + 299_000,
        length_ms: 3_600_000,
    };
    rejected(
        send_batch(&tx, &mut inbound, &batch(1, ahead)).await,
        1,
        "in the future",
    );
    // A pool with 4,294,967,295 connections in use out of 1.
    let mut full = batch(2, Window::containing(now, 10_000));
    full.pools.push(PoolStats {
        pool: "main".into(),
        max_size: 1,
        in_use: Gauge {
            last: u32::MAX,
            peak: u32::MAX,
        },
        ..Default::default()
    });
    rejected(send_batch(&tx, &mut inbound, &full).await, 2, "in_use");
    // A slow sample stamped at the end of time.
    let mut stamped = batch(3, Window::containing(now, 10_000));
    stamped.slow_queries.push(SlowQuerySample {
        fingerprint,
        at_ms: i64::MAX,
        duration_us: 2_000_000,
        rows: 0,
        error_class: None,
        pool: None,
        raw_text: None,
    });
    rejected(send_batch(&tx, &mut inbound, &stamped).await, 3, "at_unix_ms");
    // A window that has begun, sent before it ends (an agent flushing as it
    // stops), is taken.
    let begun = Window {
        start_ms: now - 1_000,
        length_ms: 3_600_000,
    };
    assert_eq!(
        send_batch(&tx, &mut inbound, &batch(4, begun)).await,
        wire::collector_message::Kind::Ack(wire::Ack {
            seq: 4,
            duplicate: false
        })
    );

    // A second hello right behind a batch: the batch's acknowledgement
    // comes first, then the error.
    for message in [
        wire::agent_message::Kind::Batch((&batch(5, Window::containing(now, 10_000))).into()),
        wire::agent_message::Kind::Hello((&hello).into()),
    ] {
        tx.send(wire::AgentMessage { kind: Some(message) }).await.unwrap();
    }
    let first = inbound.message().await.expect("the acknowledgement owed").unwrap();
    assert_eq!(
        first.kind,
        Some(wire::collector_message::Kind::Ack(wire::Ack {
            seq: 5,
            duplicate: false
        }))
    );
    let status = inbound.message().await.expect_err("then the error");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("hello sent twice"), "{status}");

    let queries = collector.get_json("/api/v1/queries?service=ledger").await;
    assert_eq!(
        find(&queries, text)["calls"],
        2,
        "batches 4 and 5, nothing of the rejected ones"
    );
    let pools = collector.get_json("/api/v1/pools").await;
    assert_eq!(pools["pools"].as_array().unwrap().len(), 0, "{pools}");
    let slow = collector.get_json("/api/v1/slow-queries").await;
    assert!(
        !slow.to_string().contains(&i64::MAX.to_string()),
        "the absurd sample was not stored: {slow}"
    );
    collector.stop().await;
}

/// Fingerprint texts a stream sends without ever referring to them are held
/// for it only up to a budget per stream and one for all streams: past
/// either, the stream ends with RESOURCE_EXHAUSTED after the
/// acknowledgements it is owed, what it held is freed, and other agents go
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_texts_a_stream_holds_are_bounded() {
    let data = tempfile::tempdir().unwrap();
    let mut config = querypulse_collector::Config::ephemeral(data.path());
    config.limits.stream_text_bytes = 256 << 10;
    config.limits.text_bytes = 1 << 20;
    let collector = TestCollector::start_with(config).await;
    let now = chrono::Utc::now().timestamp_millis();
    // Ten texts of 16 KiB, referred to by nothing.
    let texts_only = |seq: u64, salt: &str| {
        let mut batch = Batch::new(seq, Window::containing(now, 10_000));
        for i in 0..10 {
            let text = format!("select '{salt}-{seq}-{i}' from t where x = ? {}", "-".repeat(16 << 10));
            batch.texts.push(FingerprintText {
                fingerprint: Fingerprint::of_normalized(&text),
                text,
            });
        }
        batch
    };
    let hello = |instance: &str| Hello {
        service: "texts".into(),
        instance_id: instance.into(),
        ..Hello::default()
    };
    let acked = |kind: wire::collector_message::Kind, seq: u64| {
        assert_eq!(
            kind,
            wire::collector_message::Kind::Ack(wire::Ack { seq, duplicate: false })
        )
    };

    // One stream: the first 160 KiB are held, the next 160 KiB cross its
    // 256 KiB.
    let (tx, mut inbound) = open_stream(collector.endpoint(), &hello("hoarder-0")).await;
    acked(send_batch(&tx, &mut inbound, &texts_only(1, "a")).await, 1);
    tx.send(wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Batch((&texts_only(2, "a")).into())),
    })
    .await
    .unwrap();
    let status = inbound.message().await.expect_err("the stream ends");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains("this stream holds more than 262144 bytes"),
        "{status}"
    );
    drop(tx);
    // Its task gives back what it held as it ends, just after the status.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Six streams of 160 KiB each cross the 1 MiB of all streams.
    let mut open = Vec::new();
    let mut refused = None;
    for i in 1..=7 {
        let (tx, mut inbound) = open_stream(collector.endpoint(), &hello(&format!("hoarder-{i}"))).await;
        tx.send(wire::AgentMessage {
            kind: Some(wire::agent_message::Kind::Batch(
                (&texts_only(1, &format!("s{i}"))).into(),
            )),
        })
        .await
        .unwrap();
        match inbound.message().await {
            Ok(Some(reply)) => {
                acked(reply.kind.unwrap(), 1);
                open.push((tx, inbound));
            }
            Err(status) => {
                refused = Some((i, status));
                break;
            }
            Ok(None) => panic!("the stream ended without a status"),
        }
    }
    let (at, status) = refused.expect("the shared budget refuses a stream");
    assert_eq!(at, 7, "six streams of 160 KiB fit in 1 MiB, the seventh does not");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(
        status.message().contains("the collector holds more than 1048576 bytes"),
        "{status}"
    );

    // Once those streams end, what they held is freed for others.
    drop(open);
    let member = agent(&collector.endpoint());
    member.record_query(SQL, Duration::from_millis(1), Outcome::OK);
    member.flush().await.expect("a real agent is still served");
    member.shutdown().await.unwrap();
    let released = querypulse_e2e::eventually(Duration::from_secs(10), || async {
        let (tx, mut inbound) = open_stream(collector.endpoint(), &hello("hoarder-8")).await;
        let kind = send_batch_or_status(&tx, &mut inbound, &texts_only(1, "late")).await?;
        Some(kind)
    })
    .await
    .expect("texts are accepted again once the other streams ended");
    acked(released, 1);
    collector.stop().await;
}

/// Sends `batch`; the reply, or `None` if the stream ended with an error.
async fn send_batch_or_status(
    tx: &tokio::sync::mpsc::Sender<wire::AgentMessage>,
    inbound: &mut tonic::Streaming<wire::CollectorMessage>,
    batch: &Batch,
) -> Option<wire::collector_message::Kind> {
    tx.send(wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Batch(batch.into())),
    })
    .await
    .ok()?;
    inbound.message().await.ok()??.kind
}

/// Connections that start a request and never finish its headers cannot
/// hold the collector: with 600 of them open, `/healthz` and agent ingest
/// still answer, and the collector closes them once the header-read
/// timeout passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_starve_nothing_and_are_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    let address = collector
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut idle = Vec::new();
    for _ in 0..600 {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        idle.push(socket);
    }
    let opened = std::time::Instant::now();

    let started = std::time::Instant::now();
    let (status, body) = collector.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "/healthz took {:?}",
        started.elapsed()
    );
    let member = agent(&collector.endpoint());
    member.record_query(SQL, Duration::from_millis(1), Outcome::OK);
    tokio::time::timeout(Duration::from_secs(5), member.flush())
        .await
        .expect("ingest answers while the idle connections are open")
        .expect("acknowledged");
    member.shutdown().await.unwrap();

    // Each idle connection is closed by the collector (EOF) once the
    // header-read timeout has passed, and not before.
    let limit = querypulse_collector::HEADER_READ_TIMEOUT;
    for socket in &mut idle {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(limit + Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("the collector closes an idle connection");
        // A 408 may precede the close; then the close itself.
        if let Ok(n) = read
            && n > 0
        {
            let _ = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
        }
    }
    assert!(
        opened.elapsed() >= limit - Duration::from_secs(1),
        "closed after {:?}, before the {limit:?} timeout",
        opened.elapsed()
    );
    collector.stop().await;
}

/// Opens a stream with `token` and says `hello`; the status the collector
/// ends it with, if it refuses it, or `None` when it stays open.
async fn hello_with_token(endpoint: &str, token: &str, service: &str) -> Option<tonic::Status> {
    let mut client = IngestClient::connect(endpoint.to_owned()).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let hello = Hello {
        service: service.into(),
        instance_id: format!("{service}-1"),
        ..Hello::default()
    };
    tx.send(wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Hello((&hello).into())),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut inbound = match client.report(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Some(status),
    };
    // A refused hello ends the stream at once; an accepted one keeps it
    // open (nothing to read until a batch).
    match tokio::time::timeout(Duration::from_millis(500), inbound.message()).await {
        Ok(Err(status)) => Some(status),
        Ok(Ok(_)) | Err(_) => {
            drop(tx);
            None
        }
    }
}

/// This machine's address on its primary interface (not loopback), found
/// without sending anything: a UDP socket "connected" to a documentation
/// address only picks a route.
fn own_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// Without a read token, reads are open to loopback peers only: a request
/// from another address needs the admin token (pages send it to sign in),
/// and `open_reads` opens reads to every peer. `/healthz` is always open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_other_hosts_need_a_token_unless_opened() {
    let Some(own) = own_address() else {
        eprintln!("skipped: this machine has no address but loopback");
        return;
    };
    for open_reads in [false, true] {
        let data = tempfile::tempdir().unwrap();
        let mut config = querypulse_collector::Config::ephemeral(data.path());
        config.http_listen = "0.0.0.0:0".parse().unwrap();
        config.admin_token = Some("admin".into());
        config.open_reads = open_reads;
        let collector = TestCollector::start_with(config).await;
        let port = collector.collector.http_addr().port();
        // Requests from this machine's own interface address: not loopback.
        let other_host = querypulse_collector::http_client_builder()
            .local_address(own)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let get = |path: &str, token: Option<&str>| {
            let mut request = other_host.get(format!("http://{own}:{port}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            }
        };
        let (status, body) = get("/api/v1/services", None).await;
        if open_reads {
            assert_eq!(status, 200, "{body}");
            assert_eq!(get("/", None).await.0, 200);
        } else {
            assert_eq!(status, 401, "{body}");
            assert!(body.contains("--read-token") && body.contains("--open-reads"), "{body}");
            assert_eq!(get("/metrics", None).await.0, 401);
            assert_eq!(get("/", None).await.0, 303, "pages send the browser to sign in");
            assert_eq!(get("/api/v1/services", Some("wrong")).await.0, 401);
        }
        assert_eq!(get("/api/v1/services", Some("admin")).await.0, 200);
        assert_eq!(get("/healthz", None).await.0, 200);
        // Loopback peers read without a token either way.
        assert_eq!(collector.get("/api/v1/services").await.0, 200);
        collector.stop().await;
    }
}

/// A token scoped to some services reports for them only: a leaked one
/// cannot pollute or impersonate the rest of the fleet. The fleet-wide
/// token reports for any service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_ingest_tokens_report_only_for_their_services() {
    let data = tempfile::tempdir().unwrap();
    let mut config = querypulse_collector::Config::ephemeral(data.path());
    config.ingest_token = Some("fleet".into());
    config.ingest_tokens = vec![querypulse_collector::ScopedToken {
        token: "checkout-team".into(),
        services: vec!["checkout".into(), "billing-*".into()],
    }];
    let collector = TestCollector::start_with(config).await;
    let endpoint = collector.endpoint();

    assert!(hello_with_token(&endpoint, "checkout-team", "checkout").await.is_none());
    assert!(
        hello_with_token(&endpoint, "checkout-team", "billing-eu")
            .await
            .is_none()
    );
    let denied = hello_with_token(&endpoint, "checkout-team", "ledger")
        .await
        .expect("another service is refused");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied}");
    assert!(denied.message().contains("ledger"), "{denied}");
    assert!(hello_with_token(&endpoint, "fleet", "ledger").await.is_none());
    let unknown = hello_with_token(&endpoint, "guess", "checkout").await.expect("refused");
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated, "{unknown}");

    // A real agent with the scoped token reports for its own service.
    let member = Agent::builder("checkout")
        .endpoint(endpoint.clone())
        .token("checkout-team")
        .start()
        .unwrap();
    member.record_query("select 1", Duration::from_millis(1), Outcome::OK);
    member.flush().await.expect("acknowledged for its own service");
    member.shutdown().await.unwrap();
    collector.stop().await;
}
