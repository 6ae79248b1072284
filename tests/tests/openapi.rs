//! The API's OpenAPI document (`GET /api/v1/openapi.json`): it lists every
//! endpoint the README documents, with the same methods, and schemathesis
//! (its path in `QUERYPULSE_TEST_SCHEMATHESIS`; without it that test says it
//! skipped) finds no server error and no response that disagrees with the
//! document, against a collector holding data for every view.

use std::collections::BTreeSet;
use std::time::Duration;

use querypulse_e2e::{RawAgent, TestCollector, hello};
use querypulse_proto::{
    Batch, Fingerprint, FingerprintText, Gauge, HealthCheckStats, LeakSample, PoolStats, QueryStats, SlowQuerySample,
    Window,
};
use serde_json::{Value, json};

const ADMIN: &str = "openapi-admin";
const ORDERS: &str = "select * from orders where id = ?";

/// `(method, path)` of every endpoint the README's API tables name.
fn readme_endpoints() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut endpoints = BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        // Cells name endpoints as `GET /path?…` or `GET/PUT/DELETE /path`.
        for span in line.split('`').skip(1).step_by(2) {
            let Some((methods, path)) = span.split_once(' ') else {
                continue;
            };
            if !methods.chars().all(|c| c.is_ascii_uppercase() || c == '/') || !path.starts_with('/') {
                continue;
            }
            let path = path.split('?').next().unwrap();
            for method in methods.split('/') {
                endpoints.insert((method.to_lowercase(), path.to_owned()));
            }
        }
    }
    endpoints
}

fn document_endpoints(document: &Value) -> BTreeSet<(String, String)> {
    let mut endpoints = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            endpoints.insert((method.clone(), path.clone()));
        }
    }
    endpoints
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_endpoint_the_readme_documents() {
    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    let document = collector.get_json("/api/v1/openapi.json").await;
    assert_eq!(document["openapi"], "3.1.0");
    let listed = document_endpoints(&document);
    let documented = readme_endpoints();
    assert!(documented.len() >= 30, "{documented:?}");
    assert_eq!(
        listed, documented,
        "the OpenAPI document and the README's API tables name different endpoints"
    );
    // Every operation says what it answers, and what an error looks like.
    let error = json!({ "$ref": "#/components/schemas/ErrorBody" });
    for (method, path) in &listed {
        let operation = &document["paths"][path][method];
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{method} {path}: no success response"
        );
        for (status, response) in responses {
            assert!(
                response["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{method} {path} {status}: no description"
            );
            if status.starts_with('4') {
                assert_eq!(
                    response["content"]["application/json"]["schema"], error,
                    "{method} {path} {status}"
                );
            }
        }
        if path.starts_with("/api/v1/") {
            assert!(
                operation["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{method} {path}"
            );
        }
    }
    // Descriptions speak to API users: no rustdoc links into the code.
    let text = document.to_string();
    if let Some(at) = text.find("[`") {
        panic!(
            "a rustdoc link in the document: …{}…",
            &text[at.saturating_sub(80)..(at + 80).min(text.len())]
        );
    }
    // A parameter the document does not list is refused, as documented.
    let (status, body) = collector.get("/api/v1/queries?servce=checkout").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown parameter \\\"servce\\\""), "{body}");
    let parameters: Vec<&str> = document["paths"]["/api/v1/queries"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(parameters, ["service", "from", "to"]);
    collector.stop().await;
}

/// One window of `checkout-1`: a statement with failures and slow samples,
/// a pool under pressure with a leak and health checks.
fn busy_window(at_ms: i64) -> Batch {
    let fingerprint = Fingerprint::of_normalized(ORDERS);
    let mut batch = Batch::new(1, Window::containing(at_ms, 10_000));
    let mut stats = QueryStats::new(fingerprint);
    for i in 0..200u64 {
        stats.record(800 + i * 97 % 40_000, 1, (i % 20 == 0).then_some("40001"));
    }
    batch.queries.push(stats);
    batch.texts.push(FingerprintText {
        fingerprint,
        text: ORDERS.into(),
    });
    batch.slow_queries.push(SlowQuerySample {
        fingerprint,
        at_ms,
        duration_us: 1_250_000,
        rows: 3,
        error_class: Some("40001".into()),
        pool: Some("main".into()),
        raw_text: None,
    });
    let mut pool = PoolStats {
        pool: "main".into(),
        max_size: 10,
        min_idle: 2,
        acquires: 400,
        releases: 398,
        timeouts: 3,
        size: Gauge { last: 10, peak: 10 },
        idle: Gauge { last: 0, peak: 4 },
        in_use: Gauge { last: 10, peak: 10 },
        waiting: Gauge { last: 4, peak: 9 },
        leaks: 1,
        ..Default::default()
    };
    for us in [300, 900, 40_000, 250_000] {
        pool.acquire_wait.record(us);
        pool.hold_time.record(us * 3);
    }
    pool.leak_samples.push(LeakSample {
        acquired_at_ms: at_ms - 120_000,
        held_ms: 120_000,
        last_fingerprint: Some(fingerprint),
    });
    batch.pools.push(pool);
    let mut health = HealthCheckStats {
        pool: "main".into(),
        checks: 6,
        failures: 1,
        last_ok: false,
        last_error: "connection refused".into(),
        last_check_ms: at_ms,
        ..Default::default()
    };
    for us in [900, 1_100, 1_400, 2_000, 2_500, 30_000] {
        health.latency.record(us);
    }
    batch.health_checks.push(health);
    batch
}

async fn send_json(collector: &TestCollector, method: reqwest::Method, path: &str, body: Value) -> Value {
    let response = querypulse_collector::http_client()
        .request(method.clone(), collector.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_off_the_document() {
    let Some(schemathesis) = std::env::var("QUERYPULSE_TEST_SCHEMATHESIS")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        eprintln!("skipped: set QUERYPULSE_TEST_SCHEMATHESIS to schemathesis' path to run this test");
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let mut config = querypulse_collector::Config::ephemeral(data.path());
    config.admin_token = Some(ADMIN.into());
    config.alerts.evaluation_interval = Duration::from_millis(500);
    let collector = TestCollector::start_with(config).await;

    // Data behind every view: statements, slow samples, a pool, an agent,
    // and a rule that fires, a channel and a silence.
    let mut agent = RawAgent::open(&collector.endpoint(), &hello("checkout", "checkout-1")).await;
    agent
        .send_acked(&busy_window(chrono::Utc::now().timestamp_millis()))
        .await;
    let channel = send_json(
        &collector,
        reqwest::Method::POST,
        "/api/v1/channels",
        json!({"name": "audit log", "kind": "log"}),
    )
    .await;
    let rule = send_json(
        &collector,
        reqwest::Method::POST,
        "/api/v1/rules",
        json!({"name": "orders slow", "kind": "query_latency", "percentile": 95, "threshold": 1,
               "window": "5m", "for": "0s", "scope": {"service": "checkout"},
               "channels": [channel["id"]]}),
    )
    .await;
    let silence = send_json(
        &collector,
        reqwest::Method::POST,
        "/api/v1/silences",
        json!({"matchers": [{"name": "service", "value": "billing"}], "duration": "1h", "comment": "test"}),
    )
    .await;
    let firing = querypulse_e2e::eventually(Duration::from_secs(20), || async {
        let alerts = collector.get_json("/api/v1/alerts").await;
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["state"] == "firing")
            .then_some(())
    })
    .await;
    assert!(firing.is_some(), "the rule fires");

    let workdir = tempfile::tempdir().unwrap();
    let config_file = workdir.path().join("schemathesis.toml");
    let fingerprint = Fingerprint::of_normalized(ORDERS).to_string();
    std::fs::write(
        &config_file,
        format!(
            r#"
[parameters]
"path.fingerprint" = "{fingerprint}"
"path.service" = "checkout"
"path.instance" = "checkout-1"
"path.pool" = "main"

[[operations]]
include-path-regex = "^/api/v1/rules/"
parameters = {{ "path.id" = {rule} }}

[[operations]]
include-path-regex = "^/api/v1/channels/\\{{id\\}}$"
parameters = {{ "path.id" = {channel} }}

# The one 5xx the API answers by design: a test notification the receiver
# refused is a 502 (the channel points at a closed port).
[[operations]]
include-path-regex = "^/api/v1/channels/\\{{id\\}}/test$"
parameters = {{ "path.id" = {channel} }}
checks.not_a_server_error.expected-statuses = ["2xx", "4xx", 502]

[[operations]]
include-path-regex = "^/api/v1/silences/"
parameters = {{ "path.id" = {silence} }}
"#,
            rule = rule["id"],
            channel = channel["id"],
            silence = silence["id"],
        ),
    )
    .unwrap();
    // A fixed seed keeps CI reproducible; set QUERYPULSE_SCHEMATHESIS_SEED to
    // explore others.
    let seed = std::env::var("QUERYPULSE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261207".into());
    let mut command = tokio::process::Command::new(&schemathesis);
    command
        .current_dir(workdir.path())
        .arg("--no-color")
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(collector.url("/api/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", "25", "--max-time", "120"])
        .args(["--seed", &seed, "--workers", "1", "--request-timeout", "15"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(420), command.output())
        .await
        .expect("schemathesis finishes within its time budget")
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schemathesis found problems:\n{report}");
    // It reached the API: every operation ran, none was skipped for lack of
    // a usable schema.
    assert!(report.contains("Tested: 34"), "{report}");

    // The collector still answers, and nothing it had accepted was lost.
    let (status, _) = collector.get("/healthz").await;
    assert_eq!(status, 200);
    let queries = collector.get_json("/api/v1/queries?service=checkout").await;
    assert_eq!(queries["queries"][0]["calls"], 200, "{queries}");
    drop(agent);
    collector.stop().await;
}
