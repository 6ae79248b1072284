//! The dashboard's alert pages against a real collector whose rules fire on
//! data sent over real gRPC streams: the pages show what the alerting API
//! says, escape what users typed, and change rules, channels and silences
//! only for a signed-in admin with the session's CSRF token — through the
//! same validation as the API, writing nothing when a field is wrong.

use std::time::Duration;

use querypulse_collector::Config;
use querypulse_e2e::receivers::WebhookReceiver;
use querypulse_e2e::{RawAgent, TestCollector, csrf, eventually, hello};
use querypulse_proto::{Batch, Fingerprint, FingerprintText, QueryStats, Window};
use reqwest::Method;
use serde_json::{Value, json};

const TOKEN: &str = "admin-token";
const WAIT: Duration = Duration::from_secs(30);
const ORDERS: &str = "select * from orders where id = ?";
const HOSTILE: &str = "<script>alert('rule')</script> slow checkout";

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn collector(data: &std::path::Path) -> TestCollector {
    let mut config = Config::ephemeral(data);
    config.admin_token = Some(TOKEN.into());
    config.alerts.evaluation_interval = Duration::from_millis(200);
    TestCollector::start_with(config).await
}

/// An API request with the admin token; returns status and JSON body.
async fn call(collector: &TestCollector, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = querypulse_collector::http_client()
        .request(method, collector.url(path))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn create(collector: &TestCollector, path: &str, body: Value) -> i64 {
    let (status, answer) = call(collector, Method::POST, path, Some(body.clone())).await;
    assert_eq!(status, 201, "POST {path} {body} answered {answer}");
    answer["id"].as_i64().unwrap()
}

async fn rules(collector: &TestCollector) -> Vec<Value> {
    collector.get_json("/api/v1/rules").await["rules"]
        .as_array()
        .unwrap()
        .clone()
}

/// Reports `calls` executions of `ORDERS` at 50 ms for `service`, in the
/// current window.
async fn report_slow_orders(collector: &TestCollector, service: &str) {
    let mut agent = RawAgent::open(&collector.endpoint(), &hello(service, &format!("{service}-1"))).await;
    let mut batch = Batch::new(1, Window::containing(now(), 10_000));
    let mut stats = QueryStats::new(Fingerprint::of_normalized(ORDERS));
    for _ in 0..20 {
        stats.record(50_000, 1, None);
    }
    batch.queries.push(stats);
    batch.texts.push(FingerprintText {
        fingerprint: Fingerprint::of_normalized(ORDERS),
        text: ORDERS.into(),
    });
    agent.send_acked(&batch).await;
}

/// The part of `page` from the heading with `id` to the next heading.
#[track_caller]
fn section<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("<h2 id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section {id}"));
    let rest = &page[start + 4..];
    &rest[..rest.find("<h2").unwrap_or(rest.len())]
}

/// HTML-escaped as askama escapes text.
fn escaped(text: &str) -> String {
    text.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_pages_show_what_the_alerting_api_says() {
    let data = tempfile::tempdir().unwrap();
    let collector = collector(data.path()).await;
    let hook = WebhookReceiver::start().await;
    hook.fail_next(1_000);
    let failing = create(
        &collector,
        "/api/v1/channels",
        json!({"name": "failing-hook", "kind": "webhook", "url": hook.url, "max_attempts": 1}),
    )
    .await;
    let rule = |name: &str, for_: &str, channels: Vec<i64>| {
        json!({
            "name": name, "kind": "query_latency", "percentile": 99, "threshold": 10, "window": "5m",
            "for": for_, "severity": "critical", "scope": {"service": "checkout"}, "channels": channels,
            "labels": {"team": "<b>payments</b>"},
            "annotations": {"summary": "p99 of {{ labels.service }} is {{ value }}"}
        })
    };
    let firing = create(&collector, "/api/v1/rules", rule(HOSTILE, "0s", vec![failing])).await;
    create(&collector, "/api/v1/rules", rule("checkout p99 pending", "1h", vec![])).await;
    create(&collector, "/api/v1/rules", rule("checkout p99 muted", "0s", vec![])).await;
    for (name, text) in [("orders errors", ORDERS), ("other statement errors", "select 1")] {
        create(
            &collector,
            "/api/v1/rules",
            json!({"name": name, "kind": "query_error_rate", "threshold": 0.5,
                   "scope": {"fingerprint": Fingerprint::of_normalized(text).to_string()}}),
        )
        .await;
    }
    create(
        &collector,
        "/api/v1/silences",
        json!({"matchers": [{"name": "alertname", "value": "checkout p99 muted"}], "duration": "1h",
               "created_by": "tests", "comment": "<i>deploy</i>"}),
    )
    .await;
    report_slow_orders(&collector, "checkout").await;

    // The engine fires, holds one pending, mutes one, and fails to deliver.
    let alerts = eventually(WAIT, || async {
        let alerts = collector.get_json("/api/v1/alerts").await["alerts"].as_array()?.clone();
        let state = |name: &str| alerts.iter().find(|a| a["rule"] == name).map(|a| a["state"].clone());
        (state(HOSTILE)? == "firing"
            && state("checkout p99 pending")? == "pending"
            && state("checkout p99 muted")? == "firing")
            .then_some(alerts)
    })
    .await
    .expect("the rules fire within 30 s");
    eventually(WAIT, || async {
        let history = collector
            .get_json(&format!("/api/v1/alerts/history?rule={firing}"))
            .await;
        history["history"]
            .as_array()?
            .iter()
            .any(|e| e["event"] == "notify_failed")
            .then_some(())
    })
    .await
    .expect("the failed delivery is recorded");

    let (status, page) = collector.get("/alerts?range=1h").await;
    assert_eq!(status, 200, "{page}");
    assert!(!page.contains("<script>") && !page.contains("<b>payments") && !page.contains("<i>deploy"));
    for alert in &alerts {
        let name = alert["rule"].as_str().unwrap();
        let id = match (alert["state"].as_str().unwrap(), alert["silenced"].as_bool().unwrap()) {
            ("firing", false) => "firing",
            ("firing", true) => "silenced",
            _ => "pending",
        };
        let part = section(&page, id);
        assert!(part.contains(&escaped(name)), "{name} is listed under {id}: {part}");
        assert!(
            part.contains(alert["value_text"].as_str().unwrap()),
            "{name}'s value: {part}"
        );
        assert!(
            part.contains(&format!("team={}", escaped("<b>payments</b>"))),
            "labels, escaped: {part}"
        );
        assert!(part.contains("service=checkout"));
        for other in ["firing", "pending", "silenced"].iter().filter(|o| **o != id) {
            assert!(
                !section(&page, other).contains(&escaped(name)),
                "{name} only under {id}"
            );
        }
    }
    assert!(
        section(&page, "firing").contains("p99 of checkout is"),
        "the rendered summary"
    );
    let silences = section(&page, "silences");
    assert!(
        silences.contains(&escaped("alertname=\"checkout p99 muted\"")) && silences.contains(&escaped("<i>deploy</i>"))
    );
    let history = section(&page, "history");
    assert!(history.contains("notify failed") && history.contains("not delivered to failing-hook"));
    assert!(history.contains(&escaped(HOSTILE)) && history.contains("firing"));
    assert!(!page.contains("name=\"matchers\""), "read-only without a sign-in");

    // Rules and channels: every one the API lists, escaped.
    let (status, rules_page) = collector.get("/alerts/rules").await;
    assert_eq!(status, 200);
    assert!(!rules_page.contains("<script>") && rules_page.contains("Sign in"));
    for rule in rules(&collector).await {
        let row_start = rules_page
            .find(&format!("data-rule=\"{}\"", rule["id"]))
            .unwrap_or_else(|| panic!("rule {} is listed", rule["name"]));
        let row = &rules_page[row_start..row_start + rules_page[row_start..].find("</tr>").unwrap()];
        assert!(row.contains(&escaped(rule["name"].as_str().unwrap())), "{row}");
        assert!(row.contains(rule["severity"].as_str().unwrap()));
    }
    let (_, channels_page) = collector.get("/alerts/channels").await;
    let channels = collector.get_json("/api/v1/channels").await;
    for channel in channels["channels"].as_array().unwrap() {
        assert!(channels_page.contains(&format!("data-channel=\"{}\"", channel["id"])));
        assert!(channels_page.contains(channel["name"].as_str().unwrap()));
    }
    assert!(
        channels_page.contains(&hook.url) && channels_page.contains(&escaped(HOSTILE)),
        "used by"
    );

    // A dry run shows the value the API measures and the state it would give.
    let (_, run) = call(
        &collector,
        Method::POST,
        &format!("/api/v1/rules/{firing}/evaluate"),
        None,
    )
    .await;
    let (status, evaluated) = collector.get(&format!("/alerts/rules?evaluate={firing}")).await;
    assert_eq!(status, 200);
    let evaluation = section(&evaluated, "evaluation");
    assert!(
        evaluation.contains(run["series"][0]["value_text"].as_str().unwrap()),
        "{evaluation}"
    );
    assert!(evaluation.contains("met") && evaluation.contains("firing"));
    assert_eq!(collector.get("/alerts/rules?evaluate=999").await.0, 404);

    // The overview's status light and firing list, the query's alerts, the report.
    let (_, overview) = collector.get("/").await;
    let checkout = &overview[overview.find("data-service=\"checkout\"").unwrap()..];
    let checkout = &checkout[..checkout.find("</tr>").unwrap()];
    assert!(checkout.contains("status critical"), "{checkout}");
    assert!(
        checkout.contains(&format!("alert {} firing", escaped(HOSTILE))),
        "{checkout}"
    );
    let firing_list = &overview[overview.find("Firing alerts").unwrap()..];
    let firing_list = &firing_list[..firing_list.find("<h2").unwrap()];
    assert!(firing_list.contains(&escaped(HOSTILE)) && !firing_list.contains("checkout p99 pending"));
    let (_, query) = collector
        .get(&format!("/queries/{}", Fingerprint::of_normalized(ORDERS)))
        .await;
    let about = &query[query.find("id=\"alerts\"").unwrap()..];
    assert!(
        about.contains(&escaped(HOSTILE)) && about.contains("checkout p99 pending"),
        "{about}"
    );
    let watching = &about[about.find("Rules watching it").expect("the rules watching it")..];
    assert!(
        watching.contains("orders errors</a></td><td class=\"l\">query error rate</td><td class=\"l\">this statement")
    );
    assert!(watching.contains("every statement of checkout") && watching.contains(&escaped(HOSTILE)));
    assert!(!watching.contains("other statement errors") && !watching.contains("Pool exhaustion"));
    let report: Value = serde_json::from_str(&collector.get("/report?range=1h&format=json").await.1).unwrap();
    let in_report: Vec<&str> = report["alerts"]
        .as_array()
        .expect("the report lists alerts")
        .iter()
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    for alert in &alerts {
        assert!(in_report.contains(&alert["rule"].as_str().unwrap()), "{in_report:?}");
    }
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_forms_need_a_sign_in_and_csrf_and_write_only_valid_rules() {
    let data = tempfile::tempdir().unwrap();
    let collector = collector(data.path()).await;
    let before = rules(&collector).await;
    let form = |name: &'static str, for_: &'static str| {
        vec![
            ("name", name),
            ("kind", "query_latency"),
            ("threshold", "250"),
            ("percentile", "99"),
            ("window", "5m"),
            ("for", for_),
            ("scope_service", "checkout"),
            ("severity", "critical"),
            ("labels", "team=payments"),
            ("annotations", ""),
            ("enabled", "on"),
        ]
    };

    // Not signed in: no form, and posting is refused.
    let (_, page) = collector.get("/alerts/rules").await;
    assert!(page.contains("Sign in") && !page.contains("name=\"threshold\""));
    let refused = collector.post_form("/alerts/rules", None, &form(HOSTILE, "5m")).await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("Sign in with the admin token"));

    // Signed in, but without or with a wrong CSRF token: refused.
    let cookie = collector.sign_in(TOKEN).await;
    let (_, page) = collector.get_with("/alerts/rules", &cookie).await;
    let token = csrf(&page);
    assert!(page.contains("name=\"threshold\""));
    for bad in ["", "forged"] {
        let mut posted = form(HOSTILE, "5m");
        posted.push(("csrf", bad));
        assert_eq!(
            collector
                .post_form("/alerts/rules", Some(&cookie), &posted)
                .await
                .status(),
            403
        );
    }
    assert_eq!(rules(&collector).await, before, "nothing was written");

    // A negative `for`: refused naming the field, what was typed kept,
    // nothing written.
    let mut posted = form(HOSTILE, "-5m");
    posted.push(("csrf", &token));
    let invalid = collector.post_form("/alerts/rules", Some(&cookie), &posted).await;
    assert_eq!(invalid.status(), 400);
    let body = invalid.text().await.unwrap();
    assert!(body.contains("Not saved: for: must not be negative"), "{body}");
    assert!(body.contains("value=\"-5m\"") && body.contains(&escaped(HOSTILE)));
    assert!(!body.contains("<script>"));
    assert_eq!(rules(&collector).await, before, "nothing was written");

    // Created: redirected with a message; the API has exactly what was typed.
    let mut posted = form(HOSTILE, "5m");
    posted.push(("csrf", &token));
    let created = collector.post_form("/alerts/rules", Some(&cookie), &posted).await;
    assert_eq!(created.status(), 303);
    assert_eq!(created.headers()["location"], "/alerts/rules?saved=created");
    let after = rules(&collector).await;
    assert_eq!(after.len(), before.len() + 1);
    let rule = after
        .iter()
        .find(|r| r["name"] == HOSTILE)
        .expect("the new rule")
        .clone();
    assert_eq!(
        (
            &rule["kind"],
            &rule["threshold"],
            &rule["percentile"],
            &rule["for"],
            &rule["window"]
        ),
        (
            &json!("query_latency"),
            &json!(250.0),
            &json!(99.0),
            &json!("5m"),
            &json!("5m")
        )
    );
    assert_eq!(
        (&rule["scope"], &rule["labels"], &rule["severity"], &rule["enabled"]),
        (
            &json!({"service": "checkout"}),
            &json!({"team": "payments"}),
            &json!("critical"),
            &json!(true)
        )
    );
    let id = rule["id"].as_i64().unwrap();
    let (_, page) = collector.get_with("/alerts/rules?saved=created", &cookie).await;
    assert!(page.contains("Rule created") && page.contains(&escaped(HOSTILE)) && !page.contains("<script>"));

    // Edited through the prefilled form.
    let (_, edit) = collector.get_with(&format!("/alerts/rules?edit={id}"), &cookie).await;
    assert!(edit.contains(&format!("action=\"/alerts/rules/{id}\"")) && edit.contains("value=\"250\""));
    let mut posted = form("checkout p99", "1m");
    posted.push(("csrf", &token));
    posted.retain(|(k, _)| *k != "enabled");
    let saved = collector
        .post_form(&format!("/alerts/rules/{id}"), Some(&cookie), &posted)
        .await;
    assert_eq!(saved.status(), 303);
    let (_, rule) = call(&collector, Method::GET, &format!("/api/v1/rules/{id}"), None).await;
    assert_eq!(
        (&rule["name"], &rule["for"], &rule["enabled"]),
        (&json!("checkout p99"), &json!("1m"), &json!(false))
    );

    // Deleted: without the token refused, with it gone.
    let path = format!("/alerts/rules/{id}/delete");
    assert_eq!(collector.post_form(&path, Some(&cookie), &[]).await.status(), 403);
    let deleted = collector.post_form(&path, Some(&cookie), &[("csrf", &token)]).await;
    assert_eq!(deleted.status(), 303);
    assert_eq!(rules(&collector).await, before);
    assert_eq!(
        collector
            .post_form(&path, Some(&cookie), &[("csrf", &token)])
            .await
            .status(),
        404
    );
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_and_silence_forms_create_test_edit_expire_and_delete() {
    let data = tempfile::tempdir().unwrap();
    let collector = collector(data.path()).await;
    let mut hook = WebhookReceiver::start().await;
    let cookie = collector.sign_in(TOKEN).await;
    let (_, page) = collector.get_with("/alerts/channels", &cookie).await;
    let token = csrf(&page);
    let channels = || async { collector.get_json("/api/v1/channels").await["channels"].clone() };
    let before = channels().await;

    // A webhook without its URL: refused naming the field, nothing written.
    let missing = collector
        .post_form(
            "/alerts/channels",
            Some(&cookie),
            &[
                ("csrf", &token),
                ("name", "hook"),
                ("kind", "webhook"),
                ("send_resolved", "on"),
            ],
        )
        .await;
    assert_eq!(missing.status(), 400);
    assert!(missing.text().await.unwrap().contains("Not saved: url:"));
    assert_eq!(channels().await, before);

    let created = collector
        .post_form(
            "/alerts/channels",
            Some(&cookie),
            &[
                ("csrf", &token),
                ("name", "hook"),
                ("kind", "webhook"),
                ("url", &hook.url),
                ("secret", "hmac-key"),
                ("headers", "X-Team: db"),
                ("max_attempts", "2"),
                ("send_resolved", "on"),
                ("repeat_interval", "1h"),
            ],
        )
        .await;
    assert_eq!(created.status(), 303);
    let all = channels().await;
    let channel = all
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "hook")
        .unwrap()
        .clone();
    assert_eq!(
        (
            &channel["url"],
            &channel["secret"],
            &channel["max_attempts"],
            &channel["repeat_interval"]
        ),
        (&json!(hook.url), &json!("********"), &json!(2), &json!("1h"))
    );
    let id = channel["id"].as_i64().unwrap();

    // The secret is never shown, and sending the redacted form back keeps it.
    let (_, edit) = collector
        .get_with(&format!("/alerts/channels?edit={id}"), &cookie)
        .await;
    assert!(!edit.contains("hmac-key") && edit.contains("value=\"********\""));
    let saved = collector
        .post_form(
            &format!("/alerts/channels/{id}"),
            Some(&cookie),
            &[
                ("csrf", &token),
                ("name", "team hook"),
                ("kind", "webhook"),
                ("url", &hook.url),
                ("secret", "********"),
                ("headers", "X-Team: ********"),
                ("send_resolved", "on"),
            ],
        )
        .await;
    assert_eq!(saved.status(), 303);

    // "Send test" delivers through the stored channel, signed with the kept secret.
    let tested = collector
        .post_form(
            &format!("/alerts/channels/{id}/test"),
            Some(&cookie),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(tested.status(), 200);
    assert!(
        tested
            .text()
            .await
            .unwrap()
            .contains("Test notification delivered through team hook")
    );
    let delivery = hook.next(WAIT).await.expect("the test notification arrives");
    assert_eq!(delivery.headers["x-team"], "db");
    assert_eq!(
        delivery.headers[querypulse_alerts::SIGNATURE_HEADER],
        querypulse_alerts::signature("hmac-key", &delivery.body).as_str()
    );
    hook.fail_next(3);
    let failed = collector
        .post_form(
            &format!("/alerts/channels/{id}/test"),
            Some(&cookie),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(failed.status(), 502);
    assert!(
        failed
            .text()
            .await
            .unwrap()
            .contains("The test notification through team hook failed")
    );

    // Silences: created from the alerts page, then expired.
    let (_, alerts) = collector.get_with("/alerts", &cookie).await;
    assert!(alerts.contains("name=\"matchers\""));
    let (_, prefilled) = collector
        .get_with("/alerts?matchers=service%3D%22%3Cb%3Echeckout%22", &cookie)
        .await;
    assert!(
        prefilled.contains(">service=&#34;&#60;b&#62;checkout&#34;</textarea>"),
        "the silence form, filled in"
    );
    let bad = collector
        .post_form(
            "/alerts/silences",
            Some(&cookie),
            &[("csrf", &token), ("matchers", "service checkout"), ("duration", "1h")],
        )
        .await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("Not saved: matchers: line 1"));
    let silenced = collector
        .post_form(
            "/alerts/silences",
            Some(&cookie),
            &[
                ("csrf", &token),
                ("matchers", "service=\"checkout\"\npool=~\"prim.*\""),
                ("duration", "1h"),
                ("comment", "deploy"),
            ],
        )
        .await;
    assert_eq!(silenced.status(), 303);
    let silences = collector.get_json("/api/v1/silences").await;
    let silence = &silences["silences"][0];
    assert_eq!(silence["status"], "active");
    assert_eq!(
        silence["matchers"],
        json!([{"name": "service", "op": "=", "value": "checkout"}, {"name": "pool", "op": "=~", "value": "prim.*"}])
    );
    let expire = format!("/alerts/silences/{}/expire", silence["id"]);
    assert_eq!(
        collector.post_form(&expire, None, &[("csrf", &token)]).await.status(),
        403
    );
    assert_eq!(
        collector
            .post_form(&expire, Some(&cookie), &[("csrf", &token)])
            .await
            .status(),
        303
    );
    assert_eq!(
        collector.get_json("/api/v1/silences").await["silences"][0]["status"],
        "expired"
    );

    // Deleting the channel.
    let deleted = collector
        .post_form(
            &format!("/alerts/channels/{id}/delete"),
            Some(&cookie),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(deleted.status(), 303);
    assert_eq!(channels().await, before);
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_alert_setup_says_what_to_do() {
    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    for rule in rules(&collector).await {
        let (status, _) = call(
            &collector,
            Method::DELETE,
            &format!("/api/v1/rules/{}", rule["id"]),
            None,
        )
        .await;
        assert_eq!(status, 403, "no admin token: the API is read-only too");
    }
    let (_, alerts) = collector.get("/alerts").await;
    assert!(alerts.contains("No alert is firing") && alerts.contains("Changes are disabled"));
    assert!(alerts.contains("Nothing happened in this range"));
    let (_, rules_page) = collector.get("/alerts/rules").await;
    assert!(rules_page.contains("Pool exhaustion"), "the default rules are listed");
    assert!(rules_page.contains("Changes are disabled") && !rules_page.contains("name=\"threshold\""));
    collector.stop().await;

    let data = tempfile::tempdir().unwrap();
    let collector = collector_with_token_and_no_rules(data.path()).await;
    let (_, rules_page) = collector.get("/alerts/rules").await;
    assert!(rules_page.contains("No alert rule is defined, so nothing is ever notified"));
    let (_, channels_page) = collector.get("/alerts/channels").await;
    assert!(channels_page.contains("No channel is defined"));
    let (_, alerts) = collector.get("/alerts").await;
    assert!(alerts.contains("No rule is defined either"));
    collector.stop().await;
}

/// A collector with the default rules and channel removed.
async fn collector_with_token_and_no_rules(data: &std::path::Path) -> TestCollector {
    let collector = collector(data).await;
    for rule in rules(&collector).await {
        let (status, _) = call(
            &collector,
            Method::DELETE,
            &format!("/api/v1/rules/{}", rule["id"]),
            None,
        )
        .await;
        assert_eq!(status, 204);
    }
    let channels = collector.get_json("/api/v1/channels").await;
    for channel in channels["channels"].as_array().unwrap() {
        let (status, _) = call(
            &collector,
            Method::DELETE,
            &format!("/api/v1/channels/{}", channel["id"]),
            None,
        )
        .await;
        assert_eq!(status, 204);
    }
    collector
}
