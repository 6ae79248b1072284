//! `querypulse demo`, run as a user runs it: the real binary, real ports, real
//! HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FIELDS: [&str; 13] = [
    "fingerprint",
    "text",
    "service",
    "calls",
    "errors",
    "total_ms",
    "mean_ms",
    "min_ms",
    "max_ms",
    "stddev_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
];

/// The demo process, killed when the test ends before stopping it, so a
/// failing assertion leaves no demo running behind it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_a_week_of_history_and_live_queries_within_fifteen_seconds_and_stops_on_sigterm() {
    let started = Instant::now();
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let child = Command::new(env!("CARGO_BIN_EXE_querypulse"))
        .args(["demo", "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let mut child = Running(child);
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut dashboard = None;
    for line in stdout.by_ref() {
        let line = line.expect("readable stdout");
        if let Some(url) = line.trim().strip_prefix("dashboard") {
            dashboard = Some(url.trim().trim_end_matches('/').to_owned());
            break;
        }
    }
    // Keep reading what the demo prints, as a terminal would.
    std::thread::spawn(move || stdout.for_each(drop));
    let base = dashboard.expect("the demo prints its dashboard URL");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the dashboard URL (history written) within 15 s, not {:?}",
        started.elapsed()
    );

    let client = querypulse_collector::http_client();
    // Seven days of history are there before the URL is printed: the
    // oldest day of the week holds both services' statements.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day = 86_400_000;
    let week_ago: serde_json::Value = client
        .get(format!(
            "{base}/api/v1/queries?from={}&to={}",
            now - 7 * day,
            now - 6 * day
        ))
        .send()
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("JSON");
    let history = week_ago["queries"].as_array().cloned().unwrap_or_default();
    for service in ["checkout", "inventory"] {
        assert!(
            history
                .iter()
                .any(|q| q["service"] == service && q["calls"].as_u64().unwrap_or(0) > 1_000),
            "{service} has history a week back: {week_ago}"
        );
    }
    let mut complete = None;
    while started.elapsed() < Duration::from_secs(15) && complete.is_none() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        // Live windows only: every history window starts before the demo.
        let Ok(response) = client
            .get(format!("{base}/api/v1/queries?from={started_ms}"))
            .send()
            .await
        else {
            continue;
        };
        let body: serde_json::Value = response.json().await.expect("JSON");
        complete = body["queries"]
            .as_array()
            .into_iter()
            .flatten()
            // Some demo statements (a GROUP BY over a whole table) carry no
            // literal at all; every one with a WHERE clause does.
            .find(|q| {
                q["calls"].as_u64().unwrap_or(0) > 0
                    && FIELDS.iter().all(|f| !q[f].is_null())
                    && q["text"].as_str().is_some_and(|t| t.contains(" where "))
            })
            .cloned();
    }
    let query = complete.unwrap_or_else(|| panic!("no complete query within 15 s of start"));
    assert!(
        query["text"].as_str().unwrap().contains('?'),
        "literals are normalized: {query}"
    );
    assert!(
        history.iter().any(|q| q["fingerprint"] == query["fingerprint"]),
        "live statements continue their history (one fingerprint): {query}"
    );

    let page = client
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Top queries"), "the dashboard renders");

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            assert!(exit.success(), "the demo exits cleanly on SIGTERM: {exit}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop within 15 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
