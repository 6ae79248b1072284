//! A collector remote-writing to a real Prometheus (named by
//! `QUERYPULSE_TEST_PROMETHEUS`) is killed with SIGKILL after taking load,
//! some intervals sent and some not, and restarted on its data directory:
//! Prometheus ends with exactly the calls the load generator had
//! acknowledged, and no interval missing.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use querypulse_loadgen::{LoadgenConfig, Target};
use serde_json::Value;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

async fn wait_ok(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(url).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer within 30 s");
}

async fn query(client: &reqwest::Client, port: u16, promql: &str) -> Vec<Value> {
    let url =
        reqwest::Url::parse_with_params(&format!("http://127.0.0.1:{port}/api/v1/query"), [("query", promql)]).unwrap();
    let response: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(response["status"], "success", "{promql}: {response}");
    response["data"]["result"].as_array().cloned().unwrap_or_default()
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
    std::fs::write(dir.path().join("prometheus.yml"), "global:\n  scrape_interval: 1m\n").unwrap();
    let _prometheus = Process(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--enable-feature=native-histograms")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    wait_ok(&client, &format!("http://127.0.0.1:{port}/-/ready")).await;

    let config = dir.path().join("querypulse.toml");
    std::fs::write(
        &config,
        format!(
            "[[remote_write]]\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\ninterval = \"1s\"\ndelay = \"3s\"\nexternal_labels = {{ collector = \"k\" }}\n"
        ),
    )
    .unwrap();
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
    let before: f64 = query(&client, port, count)
        .await
        .first()
        .and_then(|r| r["value"][1].as_str()?.parse().ok())
        .unwrap_or(0.0);
    assert!(
        before < calls,
        "everything was sent before the kill: {before} of {calls}"
    );
    collector.0.kill().unwrap();
    collector.0.wait().unwrap();
    let _collector = serve(&config, &data, grpc, http);
    wait_ok(&client, &format!("http://127.0.0.1:{http}/healthz")).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        last = query(&client, port, count)
            .await
            .first()
            .and_then(|r| r["value"][1].as_str()?.parse::<f64>().ok());
        if last == Some(calls) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        last,
        Some(calls),
        "Prometheus holds {last:?} calls, the load generator had {calls} acknowledged"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = query(&client, port, count).await;
    assert_eq!(
        again[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap(),
        calls,
        "counted twice"
    );

    // No interval missing across the kill.
    for series in query(&client, port, "querypulse_query_rows_total[1h]").await {
        let stamps: Vec<f64> = series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[0].as_f64().unwrap())
            .collect();
        assert!(stamps.len() > 5, "{stamps:?}");
        for pair in stamps.windows(2) {
            assert!(
                (pair[1] - pair[0] - 1.0).abs() < 1e-6,
                "{} has a gap: {stamps:?}",
                series["metric"]
            );
        }
    }
}
