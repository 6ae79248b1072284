//! A slow-query threshold set once through the API reaches every agent, those
//! already connected and those that connect later, without a restart.

use std::time::Duration;

use querypulse_agent::{Agent, Outcome};
use querypulse_collector::Config;
use querypulse_e2e::{TestCollector, eventually};
use serde_json::{Value, json};

const SQL: &str = "SELECT * FROM invoices WHERE total > 100";

fn agent(collector: &TestCollector) -> Agent {
    Agent::builder("billing")
        .endpoint(collector.endpoint())
        .interval(Duration::from_secs(60))
        .start()
        .unwrap()
}

async fn slow_samples(collector: &TestCollector) -> Vec<Value> {
    collector.get_json("/api/v1/slow-queries?service=billing").await["slow_queries"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_set_in_the_api_reach_connected_and_new_agents() {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(data.path());
    config.admin_token = Some("admin".into());
    let collector = TestCollector::start_with(config).await;
    let client = querypulse_collector::http_client();

    let early = agent(&collector);
    early.record_query(SQL, Duration::from_millis(40), Outcome::OK);
    early.flush().await.unwrap();
    assert!(
        slow_samples(&collector).await.is_empty(),
        "40 ms is below the default 1 s threshold"
    );

    let response = client
        .put(collector.url("/api/v1/agent-settings"))
        .bearer_auth("admin")
        .json(&json!({"slow_threshold_ms": 25, "max_samples_per_fingerprint": null, "max_samples_per_window": null, "interval_ms": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let applied = eventually(Duration::from_secs(10), || async {
        early.record_query(SQL, Duration::from_millis(40), Outcome::OK);
        early.flush().await.unwrap();
        (!slow_samples(&collector).await.is_empty()).then_some(())
    })
    .await;
    assert!(applied.is_some(), "the connected agent applied the new threshold");

    let late = agent(&collector);
    let applied = eventually(Duration::from_secs(10), || async {
        late.record_query(SQL, Duration::from_millis(30), Outcome::OK);
        late.flush().await.unwrap();
        slow_samples(&collector)
            .await
            .iter()
            .any(|s| s["instance_id"] == late.instance_id())
            .then_some(())
    })
    .await;
    assert!(
        applied.is_some(),
        "an agent connecting later gets the threshold at once"
    );

    let settings = collector.get_json("/api/v1/agent-settings").await;
    assert_eq!(settings["slow_threshold_ms"], 25);
    let refused = client
        .put(collector.url("/api/v1/agent-settings"))
        .bearer_auth("admin")
        .json(&json!({"interval_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("interval_ms"));
    assert_eq!(
        collector.get_json("/api/v1/agent-settings").await,
        settings,
        "a refused change changes nothing"
    );

    early.shutdown().await.unwrap();
    late.shutdown().await.unwrap();
    collector.stop().await;
}
