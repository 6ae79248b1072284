//! `querypulse loadgen` against an in-process collector: every window it
//! reports as acknowledged is stored, once, and what it says it sent is what
//! the API serves.

use std::collections::HashMap;
use std::time::Duration;

use querypulse_collector::{Collector, Config};
use querypulse_domain::clock::Clock;
use querypulse_loadgen::{LoadgenConfig, Target};
use querypulse_store::Retention;
use querypulse_store::{Limits, Store};

/// A collector on free ports of 127.0.0.1, and the loadgen target for it.
async fn collector(dir: &tempfile::TempDir) -> (Collector, Target) {
    let collector = Collector::start(Config::ephemeral(dir.path())).await.unwrap();
    let target = Target::Collector {
        endpoint: format!("http://{}", collector.grpc_addr()),
        token: None,
    };
    (collector, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_window_is_stored_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, target) = collector(&dir).await;
    let mut config = LoadgenConfig::new(3, 20, Duration::from_secs(1), Duration::from_secs(4), target);
    config.services = 2;
    config.seed = 42;
    let report = querypulse_loadgen::run(config).await.unwrap();

    let totals = &report.totals;
    assert!(totals.batches_acked >= 3, "{}", report.summary());
    assert_eq!(
        (totals.rejected, totals.dropped, totals.unacked_at_end),
        (0, 0, 0),
        "{}",
        report.summary()
    );
    assert_eq!(totals.fingerprint_windows_acked, totals.batches_acked * 20);
    let sent = report.series();
    assert_eq!(sent.len(), 2 * 20, "both services report all their statements");
    assert_eq!(sent.iter().map(|s| s.calls).sum::<u64>(), totals.calls_acked);

    let (from, to) = report.delivered_range_ms.unwrap();
    let url = format!(
        "http://{}/api/v1/queries?from={}&to={}",
        collector.http_addr(),
        from - 60_000,
        to + 60_000
    );
    let body: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let stored: HashMap<(String, String), u64> = body["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let key = (
                q["service"].as_str().unwrap().to_owned(),
                q["fingerprint"].as_str().unwrap().to_owned(),
            );
            (key, q["calls"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(stored.len(), sent.len(), "no series missing, none extra");
    for series in &sent {
        let key = (series.service.clone(), series.fingerprint.to_string());
        assert_eq!(stored.get(&key), Some(&series.calls), "calls of {key:?}");
    }
    collector.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_delivers_every_past_window_and_stops_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, target) = collector(&dir).await;
    let mut config = LoadgenConfig::new(2, 5, Duration::from_secs(10), Duration::from_secs(60), target);
    config.backfill = Some(Duration::from_secs(600));
    let report = querypulse_loadgen::run(config).await.unwrap();

    assert_eq!(report.backfill_windows, 60);
    assert_eq!(report.totals.batches_acked, 2 * 60, "{}", report.summary());
    assert_eq!(report.totals.unacked_at_end, 0);
    let (from, to) = report.delivered_range_ms.unwrap();
    assert_eq!(to - from, 600_000);
    for series in report.series() {
        assert_eq!(series.windows, 2 * 60);
        assert!(series.exact_ms[0] <= series.exact_ms[1] && series.exact_ms[1] <= series.exact_ms[2]);
    }
    collector.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_survive_a_collector_restart_and_are_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let (first, target) = collector(&dir).await;
    let (grpc, http) = (first.grpc_addr(), first.http_addr());
    let mut config = LoadgenConfig::new(3, 10, Duration::from_secs(1), Duration::from_secs(8), target);
    config.seed = 7;
    let run = tokio::spawn(querypulse_loadgen::run(config));

    // Restart once the first windows are stored: the simulated agents must
    // reconnect and resend what was not acknowledged.
    let url = format!("http://{http}/api/v1/queries");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        if body["queries"].as_array().is_some_and(|q| !q.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no window stored within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.shutdown().await.unwrap();
    let mut config = Config::ephemeral(dir.path());
    config.grpc_listen = grpc;
    config.http_listen = http;
    let second = Collector::start(config).await.unwrap();

    let report = run.await.unwrap().unwrap();
    assert!(report.totals.reconnects >= 1, "{}", report.summary());
    assert_eq!(
        (report.totals.unacked_at_end, report.totals.rejected),
        (0, 0),
        "{}",
        report.summary()
    );
    let (from, to) = report.delivered_range_ms.unwrap();
    let body: serde_json::Value = reqwest::get(format!("{url}?from={}&to={}", from - 60_000, to + 60_000))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: u64 = body["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["calls"].as_u64().unwrap())
        .sum();
    assert_eq!(stored, report.totals.calls_acked, "every acknowledged call stored once");
    second.shutdown().await.unwrap();

    // Rollups, services and instances agree after the restart.
    let (store, _writer) = Store::open(
        &dir.path().join("store"),
        Retention::default(),
        Limits::default(),
        Clock::system(),
    )
    .unwrap();
    let check = querypulse_store::verify(&store);
    assert!(check.is_clean() && check.windows > 0, "{check}");
}

/// Prometheus (named by `QUERYPULSE_TEST_PROMETHEUS`, with native histograms
/// on) takes the load generator's windows as classic and as native
/// histograms, and both count exactly the calls the load generator reports
/// acknowledged: the compare phase's peers are fed the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_takes_the_same_calls_as_classic_and_native_histograms() {
    let Ok(prometheus) = std::env::var("QUERYPULSE_TEST_PROMETHEUS") else {
        eprintln!("skipped: set QUERYPULSE_TEST_PROMETHEUS to run this test against Prometheus");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.path().join("p.yml"), "global:\n  scrape_interval: 1m\n").unwrap();
    let mut server = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", dir.path().join("p.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .arg("--enable-feature=native-histograms")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = querypulse_collector::http_client();
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    for _ in 0..300 {
        if client.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let query = |promql: String| {
        let client = client.clone();
        async move {
            let url =
                reqwest::Url::parse_with_params(&format!("http://127.0.0.1:{port}/api/v1/query"), [("query", promql)])
                    .unwrap();
            let body: serde_json::Value = client.get(url).send().await.unwrap().json().await.unwrap();
            body["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
        }
    };
    for (native, seed) in [(false, 1), (true, 2)] {
        let target = Target::PrometheusRemoteWrite {
            url: format!("http://127.0.0.1:{port}/api/v1/write"),
            native,
        };
        let mut config = LoadgenConfig::new(2, 5, Duration::from_secs(10), Duration::from_secs(60), target);
        config.backfill = Some(Duration::from_secs(300));
        config.backfill_ending = Duration::from_secs(60);
        config.seed = seed;
        let report = querypulse_loadgen::run(config).await.unwrap();
        assert_eq!(report.totals.unacked_at_end, 0, "{}", report.summary());
        assert_eq!(report.totals.rejected, 0, "{}", report.summary());
        let calls = report.totals.calls_acked as f64;
        let promql = if native {
            "sum(histogram_count(db_client_operation_duration_seconds))".to_owned()
        } else {
            "sum(db_client_operation_duration_seconds_count)".to_owned()
        };
        assert_eq!(query(promql).await, Some(calls), "native: {native}");
    }
    let _ = server.kill();
    let _ = server.wait();
}
