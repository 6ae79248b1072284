//! A collector killed with SIGKILL while agents stream to it loses nothing it
//! acknowledged and counts nothing twice once agents resend after the restart;
//! `querypulse verify` then finds its numbers consistent, running and stopped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use querypulse_agent::{Agent, Outcome};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const ADMIN_TOKEN: &str = "chaos-admin";

/// Runs `querypulse verify` with `args`: (success, stdout, stderr).
fn verify(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_querypulse"))
        .arg("verify")
        .args(args)
        .env_remove("QUERYPULSE_ADMIN_TOKEN")
        .output()
        .expect("querypulse verify runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

struct Server {
    child: Child,
    http: u16,
}

fn start(data_dir: &std::path::Path, grpc: u16, http: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_querypulse"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args([
            "--grpc-listen",
            &format!("127.0.0.1:{grpc}"),
            "--http-listen",
            &format!("127.0.0.1:{http}"),
            "--admin-token",
            ADMIN_TOKEN,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the collector starts");
    Server { child, http }
}

async fn wait_healthy(client: &reqwest::Client, http: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("http://127.0.0.1:{http}/healthz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the collector did not become healthy within 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_windows_survive_sigkill_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let (grpc, http) = (free_port(), free_port());
    let client = querypulse_collector::http_client();
    let mut server = start(data.path(), grpc, http);
    wait_healthy(&client, server.http).await;

    let agents: Vec<Agent> = (0..3)
        .map(|_| {
            Agent::builder("payments")
                .endpoint(format!("http://127.0.0.1:{grpc}"))
                .interval(Duration::from_secs(1))
                .backoff(Duration::from_millis(50), Duration::from_millis(250))
                .shutdown_timeout(Duration::from_secs(20))
                .start()
                .unwrap()
        })
        .collect();
    let recorded = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = agents
        .iter()
        .cloned()
        .map(|agent| {
            let (recorded, stop) = (recorded.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    agent.record_query(
                        &format!("UPDATE ledger SET balance = balance - {i} WHERE account = {}", i % 97),
                        Duration::from_micros(200 + i % 5_000),
                        Outcome::rows(1),
                    );
                    recorded.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
            })
        })
        .collect();

    // Let a few windows be acknowledged, then kill the collector mid-stream.
    let deadline = Instant::now() + Duration::from_secs(20);
    while agents.iter().map(|a| a.stats().acked_batches).sum::<u64>() < 6 {
        assert!(Instant::now() < deadline, "no acknowledgements before the crash");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    // Down for several intervals while the agents keep recording.
    tokio::time::sleep(Duration::from_millis(3_500)).await;

    // Agents keep recording through the outage; then the collector returns.
    let mut server = start(data.path(), grpc, http);
    wait_healthy(&client, server.http).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    for agent in &agents {
        agent
            .shutdown()
            .await
            .expect("every window is acknowledged after the restart");
        assert!(agent.stats().counters.reconnects >= 1, "the agent reconnected");
        assert_eq!(agent.stats().counters.dropped_batches, 0);
    }

    let body: serde_json::Value = client
        .get(format!("http://127.0.0.1:{http}/api/v1/queries?service=payments"))
        .send()
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
    assert_eq!(
        stored,
        recorded.load(Ordering::Relaxed),
        "every execution stored exactly once"
    );

    // The collector checks its own store while it runs ...
    let url = format!("http://127.0.0.1:{http}");
    let (ok, out, err) = verify(&["--url", &url, "--admin-token", ADMIN_TOKEN]);
    assert!(ok && out.contains("everything agrees"), "verify --url: {out}{err}");
    let (ok, _, err) = verify(&["--url", &url, "--admin-token", "wrong"]);
    assert!(!ok && err.contains("401"), "a wrong token is refused: {err}");
    // ... its data directory cannot be opened beside it ...
    let data_dir = data.path().to_str().unwrap();
    let (ok, _, err) = verify(&["--data-dir", data_dir]);
    assert!(!ok && err.contains("in use by a running collector"), "{err}");

    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(server.child.wait().unwrap().success(), "clean exit on SIGTERM");

    // ... and once stopped, its data directory is checked directly.
    let (ok, out, err) = verify(&["--data-dir", data_dir, "--json"]);
    assert!(ok, "verify --data-dir: {out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(report["problems"], serde_json::json!([]));
    assert!(report["windows"].as_u64().unwrap() > 0, "{report}");
}
