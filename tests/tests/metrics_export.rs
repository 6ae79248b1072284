//! `GET /metrics`: two real agents of one service report statements and a
//! pool to a real collector, and the Prometheus exposition carries their
//! fleet-wide numbers. When `QUERYPULSE_TEST_PROMTOOL` names Prometheus'
//! `promtool`, the exposition must also pass `promtool check metrics`, and
//! the example setup in `deploy/prometheus` must pass `promtool check config`
//! and its rule tests.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use querypulse_agent::{Agent, DbSystem, Outcome, PoolSample};
use querypulse_e2e::{TestCollector, assert_close, exact_quantile};
use querypulse_proto::Fingerprint;

/// A statement whose normalized text keeps a quoted identifier with a
/// doubled quote, so the text label needs escaping.
const ORDERS: &str = r#"SELECT * FROM "Order""s" WHERE id = 7"#;
const ORDERS_TEXT: &str = r#"select * from "Order""s" where id = ?"#;
const PING: &str = "SELECT 1";

fn agent(collector: &TestCollector) -> Agent {
    Agent::builder("shop")
        .endpoint(collector.endpoint())
        .interval(Duration::from_secs(60))
        .start()
        .expect("the agent starts")
}

/// The samples of an exposition, keyed by name and labels as written.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
            (series.to_owned(), value.parse::<f64>().expect("a number"))
        })
        .collect()
}

#[track_caller]
fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no sample {series}; have {:#?}", samples.keys().collect::<Vec<_>>()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_fleet_percentiles_pools_and_agents_in_the_text_format() {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(dir.path()).await;
    let (a, b) = (agent(&collector), agent(&collector));

    // Instance a is fast, instance b slow: the fleet's p99 is b's tail, which
    // no average of the two instances' percentiles would give.
    let fast: Vec<u64> = (1..=900).map(|i| 1_000 + i * 10).collect();
    let slow: Vec<u64> = (1..=100).map(|i| 200_000 + i * 1_000).collect();
    for us in &fast {
        a.record_query(ORDERS, Duration::from_micros(*us), Outcome::rows(1));
    }
    for us in &slow {
        b.record_query(ORDERS, Duration::from_micros(*us), Outcome::rows(2));
    }
    b.record_query(ORDERS, Duration::from_micros(500), Outcome::sqlstate("23505"));
    a.record_query(PING, Duration::from_micros(100), Outcome::OK);

    let pool = a.pool_monitor("main", DbSystem::Postgresql);
    pool.observe(PoolSample {
        size: 4,
        idle: 0,
        waiting: Some(3),
        max_size: 4,
        min_idle: 0,
        totals: Default::default(),
    });
    pool.begin_acquire().timed_out();
    pool.record_health_check(Duration::from_millis(2), Ok(()));

    a.flush().await.expect("a's window acknowledged");
    b.flush().await.expect("b's window acknowledged");

    let response = reqwest::get(collector.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = response.text().await.unwrap();
    let s = samples(&body);

    let fp = Fingerprint::of_normalized(ORDERS_TEXT).to_string();
    let orders = format!(r#"service="shop",fingerprint="{fp}""#);
    assert_eq!(value(&s, "querypulse_window_seconds"), 300.0);
    // The store's own health: the acknowledged windows are in memory or
    // already flushed, within the default bound.
    assert_eq!(value(&s, "querypulse_store_memtable_limit_bytes"), (1u64 << 30) as f64);
    assert!(value(&s, "querypulse_store_memtable_windows") > 0.0 || value(&s, "querypulse_store_flushes_total") > 0.0);
    assert!(value(&s, "querypulse_store_memtable_bytes") <= value(&s, "querypulse_store_memtable_limit_bytes"));
    assert_eq!(value(&s, "querypulse_store_stalls_total"), 0.0);
    assert!(value(&s, "querypulse_store_disk_bytes") > 0.0);
    assert_eq!(
        value(
            &s,
            &format!(r#"querypulse_query_info{{{orders},text="select * from \"Order\"\"s\" where id = ?"}}"#)
        ),
        1.0,
        "the text label is escaped"
    );
    assert_eq!(value(&s, &format!("querypulse_query_calls{{{orders}}}")), 1_001.0);
    assert_eq!(value(&s, &format!("querypulse_query_errors{{{orders}}}")), 1.0);
    assert_eq!(value(&s, &format!("querypulse_query_rows{{{orders}}}")), 1_100.0);
    let all: Vec<f64> = fast
        .iter()
        .chain(&slow)
        .chain(&[500])
        .map(|us| *us as f64 / 1e6)
        .collect();
    assert_close(
        "total time",
        value(&s, &format!("querypulse_query_time_seconds{{{orders}}}")),
        all.iter().sum(),
        1e-9,
    );
    for (p, q) in [("50", 0.5), ("95", 0.95), ("99", 0.99)] {
        assert_close(
            &format!("fleet p{p}"),
            value(&s, &format!("querypulse_query_latency_p{p}_seconds{{{orders}}}")),
            exact_quantile(&all, q),
            0.01,
        );
    }

    let instance = a.instance_id();
    let main = format!(r#"service="shop",instance="{instance}",pool="main""#);
    assert_eq!(value(&s, &format!("querypulse_pool_max_connections{{{main}}}")), 4.0);
    assert_eq!(value(&s, &format!("querypulse_pool_in_use_peak{{{main}}}")), 4.0);
    assert_eq!(value(&s, &format!("querypulse_pool_waiting_peak{{{main}}}")), 3.0);
    assert_eq!(value(&s, &format!("querypulse_pool_utilization_peak{{{main}}}")), 1.0);
    assert_eq!(value(&s, &format!("querypulse_pool_timeouts{{{main}}}")), 1.0);
    assert_eq!(value(&s, &format!("querypulse_pool_health_up{{{main}}}")), 1.0);

    for agent in [&a, &b] {
        let id = agent.instance_id();
        assert_eq!(
            value(
                &s,
                &format!(
                    r#"querypulse_agent_up{{service="shop",instance="{id}",host="{}"}}"#,
                    host(&body, id)
                )
            ),
            1.0
        );
        assert_eq!(
            value(
                &s,
                &format!(r#"querypulse_agent_dropped_batches_total{{service="shop",instance="{id}"}}"#)
            ),
            0.0
        );
    }

    // The limit keeps the statements with the most time and says how many it
    // left out.
    let limited = samples(&collector.get("/metrics?limit=1&window=10m").await.1);
    assert_eq!(value(&limited, "querypulse_window_seconds"), 600.0);
    assert_eq!(value(&limited, "querypulse_queries_left_out"), 1.0);
    assert!(limited.contains_key(&format!("querypulse_query_calls{{{orders}}}")));
    assert_eq!(
        limited
            .keys()
            .filter(|k| k.starts_with("querypulse_query_calls{"))
            .count(),
        1
    );

    for bad in [
        "/metrics?window=soon",
        "/metrics?window=10s",
        "/metrics?limit=0",
        "/metrics?top=5",
    ] {
        let (status, body) = collector.get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"error\""), "{bad}: {body}");
    }

    // Every metric the example alerting rules use is one the export has.
    let rules = std::fs::read_to_string(example("querypulse-rules.yml")).unwrap();
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("querypulse_"))
        .collect();
    assert!(used.len() >= 6, "the rules use the export: {used:?}");
    for name in used {
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "deploy/prometheus/querypulse-rules.yml uses {name}, which /metrics does not export"
        );
    }

    if let Some(promtool) = promtool() {
        let mut check = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {promtool:?}: {e}"));
        check.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    collector.stop().await;
}

/// `promtool`, when the environment names it.
fn promtool() -> Option<std::ffi::OsString> {
    let found = std::env::var_os("QUERYPULSE_TEST_PROMTOOL");
    if found.is_none() {
        eprintln!("skipped: promtool checks (QUERYPULSE_TEST_PROMTOOL is not set)");
    }
    found
}

/// A file of the example Prometheus setup in `deploy/prometheus`.
fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus")
        .join(name)
}

/// The example scrape configuration and alerting rules are valid, and each
/// rule fires on the series it is meant for and on no other
/// (`deploy/prometheus/querypulse-rules.test.yml`).
#[test]
fn the_example_prometheus_setup_is_valid_and_its_rules_fire_as_documented() {
    let Some(promtool) = promtool() else { return };
    for args in [
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "querypulse-rules.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(example(""))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {promtool:?}: {e}"));
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The host label the exposition gives instance `id` (the agent's own host
/// name).
fn host(body: &str, id: &str) -> String {
    let prefix = format!(r#"querypulse_agent_up{{service="shop",instance="{id}",host=""#);
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no querypulse_agent_up for {id}"))
        .to_owned()
}
