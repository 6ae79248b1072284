//! Remote write against a real Prometheus (Debian's 2.42, started by the test
//! with the remote-write receiver and native histograms on), named by
//! `QUERYPULSE_TEST_PROMETHEUS`: two collectors, each fed by the load
//! generator and each with its own `external_labels`, write to it, and one
//! PromQL query over both gives the fleet's calls exactly. Prometheus goes
//! away mid-run and comes back; a collector restarts: no interval is missing
//! afterwards and the counts are still exact, late windows included. Every
//! panel of `deploy/grafana/querypulse.json` returns data from it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use querypulse_collector::Config;
use querypulse_collector::remote_write::Destination;
use querypulse_e2e::receivers::{Program, free_port, required_tool};
use querypulse_e2e::{RawAgent, TestCollector, hello};
use querypulse_loadgen::{LoadgenConfig, LoadgenReport, Target};
use querypulse_proto::{Batch, Fingerprint, FingerprintText, Gauge, PoolStats, QueryStats, Window};
use serde_json::Value;

/// Export interval of the test's destinations: short, so a run of seconds
/// crosses many intervals.
const INTERVAL: Duration = Duration::from_secs(1);

fn start_prometheus(binary: &str, dir: &Path, port: u16) -> Program {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    Program::start(
        "prometheus",
        Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--enable-feature=native-histograms"),
    )
}

fn destination(port: u16, collector: &str) -> Destination {
    let mut d = Destination::new(format!("http://127.0.0.1:{port}/api/v1/write"));
    d.interval = INTERVAL;
    d.delay = Duration::from_secs(3);
    d.external_labels.insert("collector".into(), collector.into());
    d
}

async fn collector(dir: &Path, destination: Destination) -> TestCollector {
    let mut config = Config::ephemeral(dir);
    config.remote_write = vec![destination];
    TestCollector::start_with(config).await
}

async fn load(collector: &TestCollector, seed: u64, duration: Duration) -> LoadgenReport {
    let mut config = LoadgenConfig::new(
        4,
        12,
        INTERVAL,
        duration,
        Target::Collector {
            endpoint: collector.endpoint(),
            token: None,
        },
    );
    config.services = 2;
    config.seed = seed;
    let report = querypulse_loadgen::run(config).await.expect("the load generator runs");
    assert_eq!(report.totals.unacked_at_end, 0, "{:?}", report.totals);
    assert!(report.totals.calls_acked > 0);
    report
}

/// An instant query's result vector.
async fn query(port: u16, promql: &str) -> Vec<Value> {
    let url =
        reqwest::Url::parse_with_params(&format!("http://127.0.0.1:{port}/api/v1/query"), [("query", promql)]).unwrap();
    let response: Value = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(response["status"], "success", "{promql}: {response}");
    response["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The single value of a scalar-like instant query, if any.
async fn number(port: u16, promql: &str) -> Option<f64> {
    query(port, promql)
        .await
        .first()
        .and_then(|r| r["value"][1].as_str().and_then(|v| v.parse().ok()))
}

/// Waits until `promql` returns `expected`, then checks it stays there.
async fn settles_at(port: u16, promql: &str, expected: f64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = number(port, promql).await;
        if last == Some(expected) {
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(
                number(port, promql).await,
                Some(expected),
                "{promql} moved past the exact value"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{promql} = {last:?}, expected {expected}");
}

/// Every series of `selector`: its samples' timestamps are one interval
/// apart, from its first to its last (no interval missing).
async fn assert_no_gaps(port: u16, selector: &str) -> usize {
    let series = query(port, &format!("{selector}[1h]")).await;
    assert!(!series.is_empty(), "no series for {selector}");
    for s in &series {
        let stamps: Vec<f64> = s["values"]
            .as_array()
            .or_else(|| s["histograms"].as_array())
            .expect("samples")
            .iter()
            .map(|v| v[0].as_f64().unwrap())
            .collect();
        for pair in stamps.windows(2) {
            let step = pair[1] - pair[0];
            assert!(
                (step - INTERVAL.as_secs_f64()).abs() < 1e-6,
                "{} has a gap of {step} s: {stamps:?}",
                s["metric"]
            );
        }
    }
    series.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_write_exact_fleet_counts_through_an_outage_and_a_restart() {
    let Some(prometheus) = required_tool("QUERYPULSE_TEST_PROMETHEUS", "Prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = start_prometheus(&prometheus, dir.path(), port);
    server.wait_for_port(port, Duration::from_secs(30)).await;

    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = collector(&dir_a, destination(port, "a")).await;
    let b = collector(&dir_b, destination(port, "b")).await;

    // Both collectors take load; Prometheus goes away for a while in the
    // middle of a's run (`collector/tests/remote_write_process.rs` keeps it
    // away for a minute and watches the collector's memory).
    let run_a = load(&a, 1, Duration::from_secs(12));
    let outage = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        drop(server);
        tokio::time::sleep(Duration::from_secs(8)).await;
        let mut server = start_prometheus(&prometheus, dir.path(), port);
        server.wait_for_port(port, Duration::from_secs(30)).await;
        server
    };
    let (report_a, server) = tokio::join!(run_a, outage);
    let report_b = load(&b, 2, Duration::from_secs(4)).await;

    // Collector b restarts on its data directory and takes more load.
    b.stop().await;
    let b = collector(&dir_b, destination(port, "b")).await;
    let report_b2 = load(&b, 2, Duration::from_secs(4)).await;

    // Windows that arrive long after their interval was sent (an agent
    // replaying after an outage): one of a service already exported, one
    // of a new service. Collector a started about 20 s ago, so 12 s ago is
    // after its first interval and well before the 3 s delay.
    let late_at = chrono::Utc::now().timestamp_millis() - 12_000;
    let mut late = 0;
    for (service, instance) in [("svc-000", "replaying-1"), ("replayed", "replaying-2")] {
        let text = format!("select * from {} where id = ?", instance.replace('-', "_"));
        let fingerprint = Fingerprint::of_normalized(&text);
        let mut batch = Batch::new(1, Window::containing(late_at, 1_000));
        let mut stats = QueryStats::new(fingerprint);
        for i in 0..250u64 {
            stats.record(800 + i * 40, 1, (i % 50 == 0).then_some("40001"));
        }
        batch.queries.push(stats);
        batch.texts.push(FingerprintText { fingerprint, text });
        RawAgent::open(&a.endpoint(), &hello(service, instance))
            .await
            .send_acked(&batch)
            .await;
        late += 250;
    }

    // A pool, on time.
    let mut batch = Batch::new(1, Window::containing(chrono::Utc::now().timestamp_millis(), 1_000));
    let mut pool = PoolStats {
        pool: "main".into(),
        max_size: 10,
        min_idle: 1,
        acquires: 40,
        releases: 40,
        timeouts: 1,
        size: Gauge { last: 10, peak: 10 },
        idle: Gauge { last: 4, peak: 9 },
        in_use: Gauge { last: 6, peak: 8 },
        waiting: Gauge { last: 0, peak: 2 },
        ..Default::default()
    };
    for us in [200, 400, 900, 30_000] {
        pool.acquire_wait.record(us);
        pool.hold_time.record(us * 3);
    }
    batch.pools.push(pool.clone());
    let mut pooled = RawAgent::open(&a.endpoint(), &hello("svc-000", "pooled")).await;
    pooled.send_acked(&batch).await;
    // And a window of the same pool for an interval already sent: its
    // counters and histograms are caught up.
    let mut batch = Batch::new(2, Window::containing(late_at, 1_000));
    pool.acquires = 7;
    pool.releases = 7;
    pool.timeouts = 2;
    pool.acquire_wait = Default::default();
    pool.hold_time = Default::default();
    for us in [300, 5_000, 70_000] {
        pool.acquire_wait.record(us);
        pool.hold_time.record(us * 2);
    }
    batch.pools.push(pool);
    pooled.send_acked(&batch).await;

    let calls = report_a.totals.calls_acked + report_b.totals.calls_acked + report_b2.totals.calls_acked + late;
    settles_at(
        port,
        "sum(histogram_count(querypulse_query_duration_seconds))",
        calls as f64,
        Duration::from_secs(60),
    )
    .await;
    settles_at(
        port,
        r#"sum(histogram_count(querypulse_query_duration_seconds{collector="a"}))"#,
        (report_a.totals.calls_acked + late) as f64,
        Duration::from_secs(10),
    )
    .await;

    settles_at(
        port,
        r#"sum(querypulse_pool_acquires_total{collector="a"})"#,
        47.0,
        Duration::from_secs(10),
    )
    .await;
    settles_at(
        port,
        r#"sum(querypulse_pool_timeouts_total{collector="a"})"#,
        3.0,
        Duration::from_secs(5),
    )
    .await;
    settles_at(
        port,
        r#"sum(histogram_count(querypulse_pool_acquire_wait_seconds{collector="a"}))"#,
        7.0,
        Duration::from_secs(5),
    )
    .await;

    // No interval is missing, across the outage and the restart.
    let statements = assert_no_gaps(port, "querypulse_query_rows_total").await;
    assert_eq!(
        statements,
        2 * 2 * 12 + 2,
        "every statement of both collectors' services, and the late ones"
    );
    assert_no_gaps(port, "querypulse_query_duration_seconds").await;
    assert_no_gaps(port, "querypulse_agent_up").await;

    // The fleet-wide p99 Prometheus computes from the native histogram is
    // the collector's own, within the schema's bucket width and our 1 %.
    let now = chrono::Utc::now().timestamp_millis();
    let queries = a
        .get_json(&format!("/api/v1/queries?from={}&to={}", now - 3_600_000, now + 60_000))
        .await;
    let top = &queries["queries"][0];
    let (service, fingerprint) = (top["service"].as_str().unwrap(), top["fingerprint"].as_str().unwrap());
    let own_p99 = top["p99_ms"].as_f64().unwrap() / 1_000.0;
    let prometheus_p99 = number(
        port,
        &format!(
            r#"histogram_quantile(0.99, querypulse_query_duration_seconds{{collector="a",service="{service}",fingerprint="{fingerprint}"}})"#
        ),
    )
    .await
    .expect("a quantile");
    let width = 2f64.powf(2f64.powi(-querypulse_collector::remote_write::DEFAULT_SCHEMA)) - 1.0;
    let error = (prometheus_p99 - own_p99).abs() / own_p99;
    assert!(
        error <= width + 0.01,
        "p99 {prometheus_p99} s against {own_p99} s: {error:.4} > {width:.4} + 1 %"
    );

    // The statements' texts and the exporter's own progress.
    let info = query(port, r#"querypulse_query_info{collector="a"}"#).await;
    assert!(
        info.iter()
            .all(|s| s["metric"]["text"].as_str().is_some_and(|t| !t.is_empty()))
    );
    let (status, metrics) = a.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("querypulse_remote_write_retries_total{destination="),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "querypulse_remote_write_retries_total") > 0.0,
        "the outage made collector a retry"
    );
    let late_calls = metric(&metrics, "querypulse_remote_write_late_calls_total");
    assert!(
        late_calls >= late as f64,
        "{late_calls} late calls counted, {late} sent late"
    );
    settles_at(
        port,
        r#"sum(querypulse_query_errors_total{collector="a",service="replayed"})"#,
        5.0,
        Duration::from_secs(5),
    )
    .await;

    // The agents page shows how far the destination has got.
    let (status, page) = a.get("/agents").await;
    assert_eq!(status, 200);
    assert!(page.contains("Remote write"), "{page}");
    assert!(page.contains(&format!("127.0.0.1_{port}_api_v1_write")), "{page}");
    assert!(page.contains(" s ago"), "the last interval sent, seconds ago: {page}");

    // Every panel of the Grafana dashboard returns data from this Prometheus.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/querypulse.json"))
            .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$service", ".*")
                .replace("$fingerprint", ".*");
            let mut answered = false;
            for _ in 0..30 {
                let result = query(port, &expr).await;
                answered = result.iter().any(|r| {
                    r["value"][1]
                        .as_str()
                        .is_some_and(|v| v.parse::<f64>().is_ok_and(f64::is_finite))
                        || r["histogram"].is_object()
                });
                if answered {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            assert!(answered, "panel {:?}: {expr} returns no data", panel["title"]);
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} panel queries");
    a.stop().await;
    b.stop().await;
    drop(server);
}

/// The value of the first sample of `name` in an exposition.
fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}
