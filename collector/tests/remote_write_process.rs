//! A collector remote-writing to a real Prometheus (named by
//! `QUERYPULSE_TEST_PROMETHEUS`), run as its own process:
//!
//! - killed with SIGKILL after taking load, some intervals sent and some
//!   not, and restarted on its data directory: Prometheus ends with exactly
//!   the calls the load generator had acknowledged, and no interval missing;
//! - with Prometheus stopped for a minute mid-run and started again: the
//!   collector's memory stays flat while it waits, its lag shows in
//!   `/metrics`, and afterwards no interval is missing and the counts are
//!   exact.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Process, free_port, text, wait_ok};
use querypulse_loadgen::{LoadgenConfig, Target};
use serde_json::Value;

fn serve(config: &Path, data: &Path, grpc: u16, http: u16) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_querypulse"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args([
                "--grpc-listen",
                &format!("127.0.0.1:{grpc}"),
                "--http-listen",
                &format!("127.0.0.1:{http}"),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the collector starts"),
    )
}

async fn query(client: &reqwest::Client, port: u16, promql: &str) -> Vec<Value> {
    let url =
        reqwest::Url::parse_with_params(&format!("http://127.0.0.1:{port}/api/v1/query"), [("query", promql)]).unwrap();
    let response: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(response["status"], "success", "{promql}: {response}");
    response["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Prometheus with the remote-write receiver and native histograms, its
/// data in `dir` (so a restart keeps what it had).
fn start_prometheus(binary: &str, dir: &Path, port: u16) -> Process {
    std::fs::write(dir.join("prometheus.yml"), "global:\n  scrape_interval: 1m\n").unwrap();
    Process(
        Command::new(binary)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--enable-feature=native-histograms")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    )
}

/// A config remote-writing to Prometheus on `port` every second.
fn remote_write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let config = dir.join("querypulse.toml");
    std::fs::write(
        &config,
        format!(
            "[[remote_write]]\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\ninterval = \"1s\"\ndelay = \"3s\"\nexternal_labels = {{ collector = \"k\" }}\n"
        ),
    )
    .unwrap();
    config
}

/// The single value of an instant query, if any.
async fn number(client: &reqwest::Client, port: u16, promql: &str) -> Option<f64> {
    query(client, port, promql)
        .await
        .first()
        .and_then(|r| r["value"][1].as_str()?.parse().ok())
}

/// Waits (up to a minute) until `promql` is `expected`, then checks that it
/// stays there: nothing is counted twice.
async fn settles_at(client: &reqwest::Client, port: u16, promql: &str, expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        last = number(client, port, promql).await;
        if last == Some(expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(last, Some(expected), "{promql}: Prometheus holds {last:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        number(client, port, promql).await,
        Some(expected),
        "{promql}: counted twice"
    );
}

/// Every series of `selector` has a sample for every second from its first
/// to its last, and more than `at_least` of them.
async fn assert_no_gaps(client: &reqwest::Client, port: u16, selector: &str, at_least: usize) {
    let series = query(client, port, &format!("{selector}[1h]")).await;
    assert!(!series.is_empty(), "no {selector}");
    for series in series {
        let stamps: Vec<f64> = series["values"]
            .as_array()
            .or_else(|| series["histograms"].as_array())
            .unwrap()
            .iter()
            .map(|v| v[0].as_f64().unwrap())
            .collect();
        assert!(stamps.len() > at_least, "{stamps:?}");
        for pair in stamps.windows(2) {
            assert!(
                (pair[1] - pair[0] - 1.0).abs() < 1e-6,
                "{} has a gap: {stamps:?}",
                series["metric"]
            );
        }
    }
}

/// A process's resident memory, in MiB.
fn resident_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_collector_resumes_its_remote_write_exactly() {
    let Ok(prometheus) = std::env::var("QUERYPULSE_TEST_PROMETHEUS") else {
        eprintln!("skipped: set QUERYPULSE_TEST_PROMETHEUS to run this test against Prometheus");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let client = querypulse_collector::http_client();
    let port = free_port();
    let _prometheus = start_prometheus(&prometheus, dir.path(), port);
    wait_ok(&client, &format!("http://127.0.0.1:{port}/-/ready")).await;

    let config = remote_write_config(dir.path(), port);
    let data = dir.path().join("data");
    let (grpc, http) = (free_port(), free_port());
    let mut collector = serve(&config, &data, grpc, http);
    wait_ok(&client, &format!("http://127.0.0.1:{http}/healthz")).await;

    let mut load = LoadgenConfig::new(
        4,
        12,
        Duration::from_secs(1),
        Duration::from_secs(6),
        Target::Collector {
            endpoint: format!("http://127.0.0.1:{grpc}"),
            token: None,
        },
    );
    load.services = 2;
    let report = querypulse_loadgen::run(load).await.expect("the load generator runs");
    assert_eq!(report.totals.unacked_at_end, 0);
    let calls = report.totals.calls_acked as f64;

    // Some intervals are sent, the last few (3 s delay) are not.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let count = "sum(histogram_count(querypulse_query_duration_seconds))";
    let before = number(&client, port, count).await.unwrap_or(0.0);
    assert!(
        before < calls,
        "everything was sent before the kill: {before} of {calls}"
    );
    collector.0.kill().unwrap();
    collector.0.wait().unwrap();
    let _collector = serve(&config, &data, grpc, http);
    wait_ok(&client, &format!("http://127.0.0.1:{http}/healthz")).await;

    settles_at(&client, port, count, calls).await;
    // No interval missing across the kill.
    assert_no_gaps(&client, port, "querypulse_query_rows_total", 5).await;
}

/// How long Prometheus is away in the outage test.
const OUTAGE: Duration = Duration::from_secs(60);
/// Growth of the collector's resident memory allowed while Prometheus is
/// away (medians of the first and last ten seconds, so flushes that come
/// and go do not count). The fleet below makes about 2,000 series an
/// interval: an exporter that queued the outage's intervals in memory
/// would grow by about 100 MiB over the minute.
const FLAT_WITHIN_MIB: f64 = 16.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_long_outage_keeps_memory_flat_and_leaves_no_gap() {
    let Ok(prometheus) = std::env::var("QUERYPULSE_TEST_PROMETHEUS") else {
        eprintln!("skipped: set QUERYPULSE_TEST_PROMETHEUS to run this test against Prometheus");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let client = querypulse_collector::http_client();
    let port = free_port();
    let prometheus_up = start_prometheus(&prometheus, dir.path(), port);
    wait_ok(&client, &format!("http://127.0.0.1:{port}/-/ready")).await;
    let config = remote_write_config(dir.path(), port);
    let (grpc, http) = (free_port(), free_port());
    let collector = serve(&config, &dir.path().join("data"), grpc, http);
    wait_ok(&client, &format!("http://127.0.0.1:{http}/healthz")).await;

    // 2 instances of 2 services, 300 statements each, every second, for
    // the whole outage and some time on either side of it: few windows for
    // the store, many series for the exporter.
    let mut load = LoadgenConfig::new(
        2,
        300,
        Duration::from_secs(1),
        OUTAGE + Duration::from_secs(20),
        Target::Collector {
            endpoint: format!("http://127.0.0.1:{grpc}"),
            token: None,
        },
    );
    load.services = 2;
    let load = tokio::spawn(querypulse_loadgen::run(load));

    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        number(&client, port, "count(querypulse_query_rows_total)").await > Some(0.0),
        "exported before the outage"
    );
    drop(prometheus_up);
    // Once the exporter has begun retrying, the collector's memory, every
    // second for the rest of the outage.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let pid = collector.0.id();
    let mut rss = Vec::new();
    while rss.len() + 8 < OUTAGE.as_secs() as usize {
        rss.push(resident_mib(pid));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let metrics = text(&client, &format!("http://127.0.0.1:{http}/metrics")).await;
    let lag: f64 = metrics
        .lines()
        .find(|l| l.starts_with("querypulse_remote_write_lag_seconds{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("the lag in /metrics");
    assert!(
        lag >= 40.0,
        "the destination is {lag} s behind after most of a minute away"
    );
    let _prometheus = start_prometheus(&prometheus, dir.path(), port);
    wait_ok(&client, &format!("http://127.0.0.1:{port}/-/ready")).await;

    // Flushes come and go every ten seconds; the floor must not rise.
    let median = |part: &[f64]| {
        let mut part = part.to_vec();
        part.sort_by(f64::total_cmp);
        part[part.len() / 2]
    };
    let (first, last) = (median(&rss[..10]), median(&rss[rss.len() - 10..]));
    eprintln!("collector resident MiB while Prometheus was away: {rss:.1?}");
    assert!(
        last - first <= FLAT_WITHIN_MIB,
        "the collector grew from {first:.1} to {last:.1} MiB (medians of the first and last ten seconds) while Prometheus was away: {rss:.1?}"
    );

    let report = load.await.unwrap().expect("the load generator runs");
    assert_eq!(report.totals.unacked_at_end, 0);
    settles_at(
        &client,
        port,
        "sum(histogram_count(querypulse_query_duration_seconds))",
        report.totals.calls_acked as f64,
    )
    .await;
    assert_no_gaps(&client, port, "querypulse_query_rows_total", 60).await;
    assert_no_gaps(&client, port, "querypulse_query_duration_seconds", 60).await;
    assert_eq!(
        number(&client, port, "count(querypulse_query_rows_total)").await,
        Some(500.0 + 1.0),
        "of the 600 statements, 500 (the default `max_statements`) have series of their own and the rest are folded into the second service's `other`"
    );
}
