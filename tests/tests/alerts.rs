//! Alerting end to end: real agents and pools feeding a real collector whose
//! rules fire and notify real receivers — a webhook on 127.0.0.1, an SMTP
//! server (Python's aiosmtpd) and Prometheus Alertmanager — and the API that
//! manages rules, channels and silences.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use querypulse_agent::sqlx::InstrumentedPool;
use querypulse_agent::{Agent, DbSystem, Outcome};
use querypulse_alerts::{Notification, Notifier, NotifyError, NotifyFuture, SIGNATURE_HEADER, signature};
use querypulse_collector::Config;
use querypulse_e2e::receivers::{Program, WebhookReceiver, free_port, required_tool};
use querypulse_e2e::{TestCollector, eventually};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

const TOKEN: &str = "admin";
const WAIT: Duration = Duration::from_secs(30);

/// A collector with an admin token evaluating rules every `evaluation`.
async fn collector(data: &Path, evaluation: Duration) -> TestCollector {
    collector_with(data, evaluation, |_| {}).await
}

async fn collector_with(data: &Path, evaluation: Duration, configure: impl FnOnce(&mut Config)) -> TestCollector {
    let mut config = Config::ephemeral(data);
    config.admin_token = Some(TOKEN.into());
    config.alerts.evaluation_interval = evaluation;
    configure(&mut config);
    TestCollector::start_with(config).await
}

/// Sends an API request with the admin token; returns status and JSON body.
async fn call(collector: &TestCollector, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = querypulse_collector::http_client()
        .request(method.clone(), collector.url(path))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, json)
}

/// POSTs `body` to `path` with the admin token; returns the created id.
async fn create(collector: &TestCollector, path: &str, body: Value) -> i64 {
    let (status, answer) = call(collector, Method::POST, path, Some(body.clone())).await;
    assert_eq!(status, 201, "POST {path} {body} answered {answer}");
    answer["id"].as_i64().unwrap()
}

async fn rule_named(collector: &TestCollector, name: &str) -> Value {
    let rules = collector.get_json("/api/v1/rules").await;
    rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| {
            panic!("no rule {name:?} in {rules}");
        })
}

/// The alerts of rule `name` in `GET /api/v1/alerts`.
async fn alerts_of(collector: &TestCollector, name: &str) -> Vec<Value> {
    let alerts = collector.get_json("/api/v1/alerts").await;
    alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == name)
        .cloned()
        .collect()
}

async fn history_of(collector: &TestCollector, rule_id: i64) -> Vec<Value> {
    let history = collector
        .get_json(&format!("/api/v1/alerts/history?rule={rule_id}&limit=1000"))
        .await;
    let mut events = history["history"].as_array().unwrap().clone();
    events.reverse();
    events
}

fn agent(collector: &TestCollector, service: &str) -> Agent {
    Agent::builder(service)
        .endpoint(collector.endpoint())
        .interval(Duration::from_secs(1))
        .start()
        .expect("the agent starts")
}

/// A latency rule on `service` that any 50 ms query trips.
fn latency_rule(name: &str, service: &str, for_: &str, channels: Vec<i64>) -> Value {
    json!({
        "name": name, "kind": "query_latency", "percentile": 99, "threshold": 10,
        "window": "30s", "for": for_, "scope": {"service": service}, "channels": channels,
        "labels": {"team": "checkout"},
        "annotations": {"summary": "p99 of {{ labels.service }} is {{ value }}"}
    })
}

async fn slow_queries(agent: &Agent) {
    for _ in 0..5 {
        agent.record_query(
            "SELECT * FROM orders WHERE id = $1",
            Duration::from_millis(50),
            Outcome::OK,
        );
    }
    agent.flush().await.expect("the window is acknowledged");
}

// ---------------------------------------------------------------------------
// The headline scenario: a PostgreSQL pool of 2 connections held by 10 tasks.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_postgres_pool_fires_the_default_rule_once_and_resolves_once() {
    let Some(url) = required_tool("QUERYPULSE_TEST_POSTGRES_URL", "PostgreSQL") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let collector = collector(data.path(), Duration::from_millis(500)).await;
    let mut hook = WebhookReceiver::start().await;
    let channel = create(
        &collector,
        "/api/v1/channels",
        json!({
            "name": "ops-webhook", "kind": "webhook", "url": hook.url, "secret": "hmac-key", "max_attempts": 3
        }),
    )
    .await;
    // The default exhaustion rule, made quick for a test: same threshold
    // (90 %), shorter `for` and window, and the webhook added to its channels.
    let mut rule = rule_named(&collector, "Pool exhaustion").await;
    assert_eq!(
        (rule["kind"].as_str(), rule["threshold"].as_f64()),
        (Some("pool_utilization"), Some(0.9))
    );
    assert_eq!(
        (rule["for"].as_str(), rule["default"].as_str()),
        (Some("1m"), Some("pool_exhaustion"))
    );
    let rule_id = rule["id"].as_i64().unwrap();
    rule["for"] = json!("3s");
    rule["window"] = json!("2s");
    rule["channels"].as_array_mut().unwrap().push(json!(channel));
    let (status, body) = call(&collector, Method::PUT, &format!("/api/v1/rules/{rule_id}"), Some(rule)).await;
    assert_eq!(status, 200, "{body}");

    let agent = agent(&collector, "orders");
    let pool = InstrumentedPool::builder(&agent, "pg-main")
        .db_system(DbSystem::Postgresql)
        .without_health_check()
        .connect(
            PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(30)),
            &url,
        )
        .await
        .expect("PostgreSQL is reachable at QUERYPULSE_TEST_POSTGRES_URL");

    // Ten tasks keep both connections busy until told to stop.
    let running = Arc::new(AtomicBool::new(true));
    let holders: Vec<_> = (0..10)
        .map(|_| {
            let (pool, running) = (pool.clone(), running.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                while running.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let mut conn = pool.acquire().await.expect("a connection within the acquire timeout");
                    sqlx::Executor::execute(&mut *conn, "SELECT pg_sleep(0.05)")
                        .await
                        .expect("the query runs");
                }
            })
        })
        .collect();

    let pending = eventually(WAIT, || async {
        alerts_of(&collector, "Pool exhaustion")
            .await
            .into_iter()
            .find(|a| a["state"] == "pending")
    })
    .await
    .expect("the exhaustion alert goes pending");
    assert_eq!(pending["labels"]["pool"], "pg-main");
    assert_eq!(pending["labels"]["service"], "orders");
    assert_eq!(pending["value"], 1.0, "2 of 2 connections in use");
    assert!(hook.try_next().is_none(), "nothing is sent while pending");

    let firing = hook.next(WAIT).await.expect("the webhook is told the alert fires");
    let firing_at = firing.at;
    assert_eq!(firing.json["status"], "firing");
    assert_eq!(firing.json["receiver"], "ops-webhook");
    let alerts = firing.json["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{}", firing.json);
    assert_eq!(alerts[0]["labels"]["alertname"], "Pool exhaustion");
    assert_eq!(alerts[0]["labels"]["pool"], "pg-main");
    assert_eq!(alerts[0]["labels"]["severity"], "warning");
    let summary = alerts[0]["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains("pg-main") && summary.contains("100 %"), "{summary}");
    let signed = firing
        .headers
        .get(SIGNATURE_HEADER)
        .expect("the body is signed")
        .to_str()
        .unwrap();
    assert_eq!(signed, signature("hmac-key", &firing.body));
    let listed = alerts_of(&collector, "Pool exhaustion").await;
    assert!(listed.iter().any(|a| a["state"] == "firing"), "{listed:?}");

    running.store(false, Ordering::Relaxed);
    for holder in holders {
        holder.await.unwrap();
    }
    let resolved = hook.next(WAIT).await.expect("the webhook is told the alert resolved");
    assert_eq!(resolved.json["status"], "resolved", "{}", resolved.json);
    assert_eq!(resolved.json["alerts"][0]["labels"]["pool"], "pg-main");
    assert_ne!(resolved.json["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert!(resolved.at > firing_at);

    // Exactly one of each: once the resolved delivery is in the history and
    // the alert is gone, nothing else is on its way.
    let events = eventually(WAIT, || async {
        let events = history_of(&collector, rule_id).await;
        let done = events
            .iter()
            .filter(|e| e["event"] == "notified" && e["channel_id"] == channel)
            .count()
            == 2;
        (done && alerts_of(&collector, "Pool exhaustion").await.is_empty()).then_some(events)
    })
    .await
    .expect("the history shows both deliveries");
    assert!(hook.try_next().is_none(), "no repeated or duplicate notification");
    let transitions: Vec<&str> = events
        .iter()
        .filter(|e| e["alert"] == alerts[0]["fingerprint"] && e["channel_id"].is_null())
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(transitions, ["pending", "firing", "resolved"]);
    let fired = events.iter().find(|e| e["event"] == "firing").unwrap();
    assert_eq!(
        fired["value"], 1.0,
        "the history keeps the value that caused the transition"
    );

    pool.close().await;
    agent.shutdown().await.unwrap();
    collector.stop().await;
}

// ---------------------------------------------------------------------------
// Timing, retries and custom handlers, without external services.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_arrives_within_for_plus_one_evaluation_interval() {
    let evaluation = Duration::from_secs(1);
    let for_ = Duration::from_secs(2);
    let data = tempfile::tempdir().unwrap();
    let collector = collector(data.path(), evaluation).await;
    let mut hook = WebhookReceiver::start().await;
    let channel = create(
        &collector,
        "/api/v1/channels",
        json!({"name": "hook", "kind": "webhook", "url": hook.url}),
    )
    .await;
    create(
        &collector,
        "/api/v1/rules",
        latency_rule("slow checkout", "checkout", "2s", vec![channel]),
    )
    .await;

    let agent = agent(&collector, "checkout");
    slow_queries(&agent).await;
    // The condition holds from the moment the window is acknowledged (stored).
    let true_at = Instant::now();
    let delivery = hook.next(WAIT).await.expect("the alert is notified");
    let latency = delivery.at - true_at;
    assert_eq!(delivery.json["status"], "firing");
    assert!(
        latency <= for_ + evaluation + Duration::from_secs(1),
        "condition true to notification took {latency:?}, more than for ({for_:?}) + evaluation ({evaluation:?}) + 1 s"
    );
    assert!(latency >= for_, "it waited for `for` ({latency:?})");
    agent.shutdown().await.unwrap();
    collector.stop().await;
}

/// A handler of the embedding program: fails its first `failures` calls.
#[derive(Debug, Default)]
struct Flaky {
    failures: usize,
    calls: AtomicUsize,
    delivered: std::sync::Mutex<Vec<Notification>>,
}

impl Notifier for Flaky {
    fn notify<'a>(&'a self, notification: &'a Notification) -> NotifyFuture<'a> {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(NotifyError("pager service unavailable".into()));
            }
            self.delivered.lock().unwrap().push(notification.clone());
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_recorded_and_retried_until_the_channel_recovers() {
    let flaky = Arc::new(Flaky {
        failures: 2,
        ..Flaky::default()
    });
    let data = tempfile::tempdir().unwrap();
    let handler = flaky.clone();
    let collector = collector_with(data.path(), Duration::from_millis(300), |config| {
        config.alerts.notifiers.register("pager", handler);
    })
    .await;
    let mut hook = WebhookReceiver::start().await;
    hook.fail_next(1);
    let webhook = create(
        &collector,
        "/api/v1/channels",
        json!({
            "name": "hook", "kind": "webhook", "url": hook.url, "max_attempts": 2
        }),
    )
    .await;
    let pager = create(
        &collector,
        "/api/v1/channels",
        json!({"name": "pager", "kind": "custom", "handler": "pager"}),
    )
    .await;
    let (status, body) = call(
        &collector,
        Method::POST,
        "/api/v1/channels",
        Some(json!({"name": "x", "kind": "custom", "handler": "nope"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let rule = create(
        &collector,
        "/api/v1/rules",
        latency_rule("slow payments", "payments", "0s", vec![webhook, pager]),
    )
    .await;

    let agent = agent(&collector, "payments");
    slow_queries(&agent).await;
    let delivery = hook
        .next(WAIT)
        .await
        .expect("the webhook gets the alert on its second attempt");
    assert_eq!(hook.failed(), 1, "the first attempt was answered 503 and retried");
    assert_eq!(delivery.json["alerts"][0]["labels"]["team"], "checkout");

    let events = eventually(WAIT, || async {
        let events = history_of(&collector, rule).await;
        events
            .iter()
            .any(|e| e["event"] == "notified" && e["channel_id"] == pager)
            .then_some(events)
    })
    .await
    .expect("the custom handler recovers and gets the alert");
    let failures: Vec<&Value> = events.iter().filter(|e| e["event"] == "notify_failed").collect();
    assert_eq!(failures.len(), 2, "each failed delivery is in the history: {events:?}");
    assert!(failures.iter().all(|e| e["channel_id"] == pager));
    assert!(
        failures[0]["detail"]
            .as_str()
            .unwrap()
            .contains("pager service unavailable")
    );
    let delivered = flaky.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].alerts[0].labels["alertname"], "slow payments");
    assert!(
        hook.try_next().is_none(),
        "the webhook that recovered within its retries is not told twice"
    );
    agent.shutdown().await.unwrap();
    collector.stop().await;
}

// ---------------------------------------------------------------------------
// Real SMTP and Alertmanager.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_a_real_smtp_server_as_text_and_html() {
    let Some(python) = required_tool("QUERYPULSE_TEST_SMTPD_PYTHON", "a Python with aiosmtpd") else {
        return;
    };
    let mailbox = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut smtpd = Program::start(
        "aiosmtpd",
        std::process::Command::new(python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(mailbox.path().join("maildir")),
    );
    smtpd.wait_for_port(port, WAIT).await;

    let data = tempfile::tempdir().unwrap();
    let collector = collector(data.path(), Duration::from_millis(500)).await;
    let channel = create(
        &collector,
        "/api/v1/channels",
        json!({
            "name": "oncall-mail", "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": port, "tls": "none",
            "from": "querypulse <alerts@querypulse.test>", "to": ["oncall@querypulse.test"]
        }),
    )
    .await;
    let (status, body) = call(
        &collector,
        Method::POST,
        &format!("/api/v1/channels/{channel}/test"),
        None,
    )
    .await;
    assert_eq!((status, &body["delivered"]), (200, &json!(true)), "{body}");
    create(
        &collector,
        "/api/v1/rules",
        latency_rule("slow search", "search", "0s", vec![channel]),
    )
    .await;
    let agent = agent(&collector, "search");
    slow_queries(&agent).await;

    let new_mail = mailbox.path().join("maildir").join("new");
    let mails = eventually(WAIT, || async {
        let mails: Vec<String> = std::fs::read_dir(&new_mail)
            .ok()?
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect();
        (mails.len() >= 2).then_some(mails)
    })
    .await
    .expect("both emails reach the SMTP server");
    let test_mail = mails
        .iter()
        .find(|m| m.contains("test notification"))
        .expect("the test email");
    assert!(test_mail.contains("To: oncall@querypulse.test"), "{test_mail}");
    let alert = mails
        .iter()
        .find(|m| m.contains("Subject: [FIRING:1] slow search"))
        .expect("the alert email");
    assert!(alert.contains("Content-Type: text/plain"), "{alert}");
    assert!(alert.contains("Content-Type: text/html"), "{alert}");
    assert!(alert.contains("p99 of search is"), "{alert}");
    agent.shutdown().await.unwrap();
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_lists_a_firing_alert_and_forgets_it_once_resolved() {
    let Some(binary) = required_tool("QUERYPULSE_TEST_ALERTMANAGER", "Prometheus Alertmanager") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(&config, "route:\n  receiver: devnull\nreceivers:\n  - name: devnull\n").unwrap();
    let port = free_port();
    let mut alertmanager = Program::start(
        "alertmanager",
        std::process::Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address="),
    );
    alertmanager.wait_for_port(port, WAIT).await;
    let base = format!("http://127.0.0.1:{port}");

    let data = tempfile::tempdir().unwrap();
    let collector = collector(data.path(), Duration::from_millis(500)).await;
    let channel = create(
        &collector,
        "/api/v1/channels",
        json!({"name": "am", "kind": "alertmanager", "url": base}),
    )
    .await;
    let rule = create(
        &collector,
        "/api/v1/rules",
        latency_rule("slow inventory", "inventory", "0s", vec![channel]),
    )
    .await;
    let agent = agent(&collector, "inventory");
    slow_queries(&agent).await;

    let http = querypulse_collector::http_client();
    let listed = |http: reqwest::Client, base: String| async move {
        let alerts: Value = http
            .get(format!("{base}/api/v2/alerts"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        alerts
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "slow inventory")
            .cloned()
    };
    let alert = eventually(WAIT, || listed(http.clone(), base.clone()))
        .await
        .expect("Alertmanager lists the alert");
    assert_eq!(alert["labels"]["service"], "inventory");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["team"], "checkout");
    assert_eq!(alert["status"]["state"], "active");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("p99 of inventory is")
    );

    // Raising the threshold clears the condition: the alert resolves and
    // Alertmanager is sent its end.
    let mut edited = latency_rule("slow inventory", "inventory", "0s", vec![channel]);
    edited["threshold"] = json!(60_000);
    let (status, body) = call(&collector, Method::PUT, &format!("/api/v1/rules/{rule}"), Some(edited)).await;
    assert_eq!(status, 200, "{body}");
    let gone = eventually(WAIT, || async {
        listed(http.clone(), base.clone()).await.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "Alertmanager no longer lists the resolved alert");
    agent.shutdown().await.unwrap();
    collector.stop().await;
}

// ---------------------------------------------------------------------------
// The API: defaults, validation, silences, dry runs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_are_installed_once_editable_and_removable() {
    let data = tempfile::tempdir().unwrap();
    let collector = collector(data.path(), Duration::from_secs(10)).await;
    let rules = collector.get_json("/api/v1/rules").await;
    let names: Vec<&str> = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Pool exhaustion",
            "Slow service (p99)",
            "Health check failing",
            "Agent silent"
        ]
    );
    let p99 = rule_named(&collector, "Slow service (p99)").await;
    assert_eq!(
        (
            p99["percentile"].as_f64(),
            p99["threshold"].as_f64(),
            p99["for"].as_str()
        ),
        (Some(99.0), Some(1000.0), Some("5m"))
    );
    let silent = rule_named(&collector, "Agent silent").await;
    assert_eq!(silent["threshold"], 3.0);
    let channels = collector.get_json("/api/v1/channels").await;
    assert_eq!(channels["channels"][0]["kind"], "log");

    let (status, _) = call(
        &collector,
        Method::DELETE,
        &format!("/api/v1/rules/{}", silent["id"]),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let mut p99 = p99;
    p99["threshold"] = json!(2000);
    let (status, body) = call(
        &collector,
        Method::PUT,
        &format!("/api/v1/rules/{}", p99["id"]),
        Some(p99),
    )
    .await;
    assert_eq!((status, body["threshold"].as_f64()), (200, Some(2000.0)), "{body}");
    collector.stop().await;

    let collector = collector_again(data.path()).await;
    let rules = collector.get_json("/api/v1/rules").await;
    let names: Vec<&str> = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Pool exhaustion", "Slow service (p99)", "Health check failing"],
        "removed stays removed"
    );
    assert_eq!(
        rule_named(&collector, "Slow service (p99)").await["threshold"],
        2000.0,
        "edits survive a restart"
    );
    collector.stop().await;
}

async fn collector_again(data: &Path) -> TestCollector {
    collector(data, Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rules_channels_and_silences_are_refused_naming_the_field_and_nothing_is_written() {
    let data = tempfile::tempdir().unwrap();
    let collector = collector(data.path(), Duration::from_secs(10)).await;
    let before = (
        collector.get_json("/api/v1/rules").await,
        collector.get_json("/api/v1/channels").await,
    );

    let rule = |patch: Value| {
        let mut r = json!({"name": "r", "kind": "pool_utilization", "threshold": 0.8, "channels": [1]});
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                r.as_object_mut().unwrap().remove(k);
            } else {
                r[k] = v.clone();
            }
        }
        r
    };
    let cases = [
        ("/api/v1/rules", rule(json!({"kind": "pool_dry"})), "kind"),
        ("/api/v1/rules", rule(json!({"threshold": null})), "threshold"),
        ("/api/v1/rules", rule(json!({"for": "-5m"})), "for"),
        (
            "/api/v1/rules",
            rule(json!({"kind": "pool_acquire_wait", "threshold": 100, "percentile": 101})),
            "percentile",
        ),
        ("/api/v1/rules", rule(json!({"channels": [1, 42]})), "channels[1]"),
        ("/api/v1/rules", rule(json!({"thresold": 1})), "thresold"),
        (
            "/api/v1/channels",
            json!({"name": "c", "kind": "webhook", "url": "htp:/broken"}),
            "url",
        ),
        (
            "/api/v1/channels",
            json!({"name": "c", "kind": "alertmanager", "url": "not a url"}),
            "url",
        ),
        (
            "/api/v1/channels",
            json!({"name": "c", "kind": "email", "smtp_host": "h", "from": "a@b.c", "to": []}),
            "to",
        ),
        (
            "/api/v1/silences",
            json!({"matchers": [], "duration": "1h"}),
            "matchers",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer) = call(&collector, Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, 400, "{body} → {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(field), "{body}: the error {error:?} names {field:?}");
    }
    let conflict = call(
        &collector,
        Method::POST,
        "/api/v1/rules",
        Some(rule(json!({"name": "Pool exhaustion"}))),
    )
    .await;
    assert_eq!(conflict.0, 409, "{}", conflict.1);
    let in_use = call(&collector, Method::DELETE, "/api/v1/channels/1", None).await;
    assert_eq!(in_use.0, 409, "{}", in_use.1);
    let after = (
        collector.get_json("/api/v1/rules").await,
        collector.get_json("/api/v1/channels").await,
    );
    assert_eq!(before, after, "nothing was half written");

    let anonymous = querypulse_collector::http_client()
        .post(collector.url("/api/v1/rules"))
        .json(&rule(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let (status, _) = call(&collector, Method::GET, "/api/v1/rules/999", None).await;
    assert_eq!(status, 404);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silenced_alerts_are_listed_as_silenced_and_dry_runs_change_nothing() {
    let data = tempfile::tempdir().unwrap();
    let collector = collector(data.path(), Duration::from_millis(300)).await;
    let mut hook = WebhookReceiver::start().await;
    let channel = create(
        &collector,
        "/api/v1/channels",
        json!({"name": "hook", "kind": "webhook", "url": hook.url}),
    )
    .await;
    let silence = create(
        &collector,
        "/api/v1/silences",
        json!({
            "matchers": [{"name": "service", "value": "ledger"}, {"name": "alertname", "op": "=~", "value": "slow.*"}],
            "duration": "1h", "created_by": "test", "comment": "maintenance"
        }),
    )
    .await;
    let rule = create(
        &collector,
        "/api/v1/rules",
        latency_rule("slow ledger", "ledger", "0s", vec![channel]),
    )
    .await;
    let agent = agent(&collector, "ledger");
    slow_queries(&agent).await;

    let alert = eventually(WAIT, || async {
        alerts_of(&collector, "slow ledger")
            .await
            .into_iter()
            .find(|a| a["state"] == "firing")
    })
    .await
    .expect("the alert fires");
    assert_eq!(alert["silenced"], true);
    assert_eq!(alert["silenced_by"], json!([silence]));
    assert!(alert["value"].as_f64().unwrap() >= 49.0, "{alert}");

    let (status, dry) = call(
        &collector,
        Method::POST,
        &format!("/api/v1/rules/{rule}/evaluate"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["series"][0]["labels"]["service"], "ledger");
    assert_eq!(dry["series"][0]["condition"], true);
    assert_eq!(
        (
            dry["series"][0]["state"].as_str(),
            dry["series"][0]["next_state"].as_str()
        ),
        (Some("firing"), Some("firing"))
    );

    // Lifting the silence lets the notification out.
    assert!(hook.try_next().is_none(), "silenced: nothing sent");
    let (status, _) = call(&collector, Method::DELETE, &format!("/api/v1/silences/{silence}"), None).await;
    assert_eq!(status, 204);
    let delivery = hook.next(WAIT).await.expect("notified once the silence is gone");
    assert_eq!(delivery.json["alerts"][0]["labels"]["service"], "ledger");
    let silences = collector.get_json("/api/v1/silences").await;
    assert_eq!(silences["silences"], json!([]));
    agent.shutdown().await.unwrap();
    collector.stop().await;
}

/// Testing a channel whose receiver accepts the connection and never
/// answers takes one attempt's time, not every retry's, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testing_a_silent_webhook_answers_within_its_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    // Connections are accepted and held, never answered.
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            connections.push(socket);
        }
    });
    let data = tempfile::tempdir().unwrap();
    let collector = collector(data.path(), Duration::from_secs(60)).await;
    let channel = create(
        &collector,
        "/api/v1/channels",
        json!({"name": "silent", "kind": "webhook", "url": format!("http://127.0.0.1:{port}/hook"), "timeout": "2s"}),
    )
    .await;
    let started = std::time::Instant::now();
    let (status, body) = call(
        &collector,
        Method::POST,
        &format!("/api/v1/channels/{channel}/test"),
        None,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["delivered"], json!(false));
    assert!(body["error"].as_str().unwrap().contains("timed out after 2s"), "{body}");
    assert!(
        took < Duration::from_secs(4),
        "answered after {took:?}; three attempts would take over 6 s"
    );
    held.abort();
    collector.stop().await;
}
