//! Helpers the collector's process-level tests share: free ports, child
//! processes killed when dropped, waiting for an HTTP endpoint, and the
//! calls a collector's API holds.

#![allow(dead_code)] // each test binary uses its own part

use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to 30 s) for `url` to answer with a success status.
pub async fn wait_ok(client: &reqwest::Client, url: &str) {
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

/// The calls of every statement in the last hour, as the collector whose
/// HTTP listener is on `http` reports them (retrying for up to 20 s while
/// it does not answer).
pub async fn total_calls(client: &reqwest::Client, http: u16) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = querypulse_domain::now_ms();
        let answer = client
            .get(format!(
                "http://127.0.0.1:{http}/api/v1/queries?from={}&to={}",
                now - 3_600_000,
                now + 60_000
            ))
            .send()
            .await;
        if let Ok(response) = answer
            && let Ok(queries) = response.json::<Value>().await
            && let Some(queries) = queries["queries"].as_array()
        {
            return queries.iter().map(|q| q["calls"].as_u64().unwrap_or(0)).sum();
        }
        assert!(Instant::now() < deadline, "the collector on {http} does not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The body of `GET url`, as text.
pub async fn text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}
