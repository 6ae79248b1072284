//! A write-ahead log damaged in the middle (a flipped byte in an entry that
//! good entries follow) costs only that entry: the collector starts, replays
//! the entries after it, and says what was lost in its log, on `/healthz`
//! (`degraded`, with the damage) and in `/metrics`.

use std::time::Duration;

use querypulse_collector::{Collector, Config};
use querypulse_domain::{Batch, Clock, Fingerprint, QueryStats, Window};
use querypulse_store::{Limits, Retention, Store};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_entry_is_reported_and_the_rest_replayed() {
    let data = tempfile::tempdir().unwrap();
    let store_dir = data.path().join("store");
    let now = querypulse_domain::now_ms();
    let fingerprint = Fingerprint::of_normalized("select * from orders where id = ?");
    {
        // Three batches logged and fsynced, never applied: what a crash
        // leaves behind.
        let (_, mut writer) =
            Store::open(&store_dir, Retention::default(), Limits::default(), Clock::system()).unwrap();
        for (seq, calls) in [(1u64, 2u64), (2, 3), (3, 4)] {
            let mut batch = Batch::new(seq, Window::containing(now - 60_000 + 10_000 * seq as i64, 10_000));
            let mut stats = QueryStats::new(fingerprint);
            for i in 0..calls {
                stats.record(1_000 + i, 1, None);
            }
            batch.queries.push(stats);
            querypulse_store::testing::log_without_applying(&mut writer, "orders", "o-1", batch, now).unwrap();
        }
    }
    // Damage the middle one on disk.
    let segment = std::fs::read_dir(store_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let first = 8 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    bytes[first + 16] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let collector = Collector::start(Config::ephemeral(data.path())).await.unwrap();
    let client = querypulse_collector::http_client();
    let url = |path: &str| format!("http://{}{path}", collector.http_addr());
    let health: Value = client.get(url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    let problem = health["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("write-ahead log") && problem.contains("entry 2 lost"),
        "{problem}"
    );
    let metrics = client.get(url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\nquerypulse_store_problems 1\n"), "{metrics}");

    // The entries before and after the damaged one were replayed.
    let queries: Value = client
        .get(url(&format!(
            "/api/v1/queries?from={}&to={}",
            now - 3_600_000,
            now + 60_000
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(queries["queries"][0]["calls"], 2 + 4, "{queries}");
    tokio::time::timeout(Duration::from_secs(30), collector.shutdown())
        .await
        .unwrap()
        .unwrap();
}
