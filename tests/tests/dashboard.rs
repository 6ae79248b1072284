//! The dashboard against a real collector filled over real gRPC streams: every
//! page renders, shows the API's numbers, links only to pages that exist,
//! escapes what agents sent, and refuses changes without a sign-in and its
//! CSRF token.

use std::collections::{BTreeSet, HashMap};

use querypulse_collector::Config;
use querypulse_collector::{ReportArgs, ReportFormat as Format};
use querypulse_e2e::{RawAgent, TestCollector, hello, no_redirects};
use querypulse_proto::{
    AgentCounters, Batch, Fingerprint, FingerprintText, Gauge, HealthCheckStats, PoolStats, QueryStats,
    SlowQuerySample, Window,
};
use querypulse_web::{count, duration_ms};
use serde_json::Value;

const MINUTE: i64 = 60_000;
const ORDERS: &str = "select * from orders where id = ?";
const PAY: &str = "update orders set status = ? where id = ?";
const HOSTILE: &str = "select * from \"<script>alert('pwned')</script>\" where id = ?";
const BALANCE: &str = "select sum(amount) from ledger_entries where account = ?";
/// Largest page the dashboard may send (without images).
const MAX_PAGE_BYTES: usize = 200 * 1024;

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn fp(text: &str) -> Fingerprint {
    Fingerprint::of_normalized(text)
}

/// A statement's load in one window: text, calls, base latency (µs), and
/// every how many calls one fails with which class.
type Load<'a> = (&'a str, u64, u64, Option<(u64, &'a str)>);

/// One window of statements, latencies spread above each base.
fn window(seq: u64, at: i64, queries: &[Load]) -> Batch {
    let mut batch = Batch::new(seq, Window::containing(at, 10_000));
    for (text, calls, base_us, failing) in queries {
        let mut stats = QueryStats::new(fp(text));
        for i in 0..*calls {
            let error = failing.and_then(|(every, class)| (i % every == 0).then_some(class));
            stats.record(base_us + i * 37 % 5_000, 1, error);
        }
        batch.queries.push(stats);
        batch.texts.push(FingerprintText {
            fingerprint: fp(text),
            text: (*text).to_owned(),
        });
    }
    batch
}

fn pool(name: &str, max: u32, in_use: Gauge, waiting: Gauge, timeouts: u64) -> PoolStats {
    let mut p = PoolStats {
        pool: name.into(),
        max_size: max,
        min_idle: 1,
        acquires: 500,
        releases: 498,
        timeouts,
        size: Gauge { last: max, peak: max },
        idle: Gauge {
            last: max - in_use.last,
            peak: max,
        },
        in_use,
        waiting,
        ..Default::default()
    };
    for us in [200, 400, 900, 30_000, 120_000] {
        p.acquire_wait.record(us);
    }
    p
}

fn health(pool: &str, checks: u64, failures: u64, at: i64) -> HealthCheckStats {
    let mut h = HealthCheckStats {
        pool: pool.into(),
        checks,
        failures,
        last_ok: true,
        last_check_ms: at,
        ..Default::default()
    };
    for i in 0..checks {
        h.latency.record(700 + i * 100);
    }
    h
}

/// Two services, three instances, four statements (one with a `<script>` in
/// its text), two pools (one running dry), slow samples and agent drops.
async fn fill(collector: &TestCollector, t: i64) {
    let mut co1 = RawAgent::open(&collector.endpoint(), &hello("checkout", "co-1")).await;
    let mut co2 = RawAgent::open(&collector.endpoint(), &hello("checkout", "co-2")).await;
    let mut le1 = RawAgent::open(&collector.endpoint(), &hello("ledger", "le-1")).await;

    // The previous hour: the balance query was fast then.
    co1.send_acked(&window(1, t - 90 * MINUTE, &[(ORDERS, 300, 500, None)]))
        .await;
    le1.send_acked(&window(1, t - 90 * MINUTE, &[(BALANCE, 40, 2_000, None)]))
        .await;

    for (n, minutes_ago) in [20, 10, 2].into_iter().enumerate() {
        let at = t - minutes_ago * MINUTE;
        let seq = n as u64 + 2;
        let mut batch = window(
            seq,
            at,
            &[(ORDERS, 400, 400, None), (PAY, 120, 900, Some((10, "40001")))],
        );
        batch.pools.push(pool(
            "primary",
            10,
            Gauge { last: 10, peak: 10 },
            Gauge { last: 3, peak: 5 },
            2,
        ));
        batch.health_checks.push(health("primary", 6, 0, at));
        co1.send_acked(&batch).await;
        co2.send_acked(&window(seq, at, &[(ORDERS, 100, 600, None)])).await;
        let mut ledger = window(
            seq,
            at,
            &[(BALANCE, 30, 40_000, None), (HOSTILE, 25, 300, Some((5, "42P01")))],
        );
        ledger
            .pools
            .push(pool("main", 5, Gauge { last: 1, peak: 2 }, Gauge::default(), 0));
        ledger.health_checks.push(health("main", 10, 1, at));
        ledger.slow_queries.push(SlowQuerySample {
            fingerprint: fp(BALANCE),
            at_ms: at + 5_000,
            duration_us: 2_500_000 + seq * 1_000,
            rows: 1,
            error_class: None,
            pool: Some("main".into()),
            raw_text: None,
        });
        ledger.slow_queries.push(SlowQuerySample {
            fingerprint: fp(HOSTILE),
            at_ms: at + 6_000,
            duration_us: 1_200_000,
            rows: 0,
            error_class: Some("42P01".into()),
            pool: Some("main".into()),
            raw_text: Some("select * from \"<script>alert('raw')</script>\" where id = 7".into()),
        });
        ledger.counters = AgentCounters {
            dropped_batches: 3,
            ..Default::default()
        };
        le1.send_acked(&ledger).await;
    }
}

/// The `<tr>` holding `marker`.
#[track_caller]
fn row<'a>(page: &'a str, marker: &str) -> &'a str {
    let at = page.find(marker).unwrap_or_else(|| panic!("no {marker} on the page"));
    let start = page[..at].rfind("<tr").unwrap_or(0);
    let end = at + page[at..].find("</tr>").expect("the row ends");
    &page[start..end]
}

/// Every local link of a page, entity-decoded.
fn links(page: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(href, _)| href.replace("&amp;", "&")))
        .filter(|href| href.starts_with('/') && !href.starts_with("//"))
        .collect()
}

fn escaped(text: &str) -> bool {
    !text.contains("<script") && (text.contains("&lt;script&gt;") || text.contains("&#60;script&#62;"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_the_apis_numbers_escapes_and_links_only_to_pages_that_exist() {
    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    let t = now();
    fill(&collector, t).await;
    let (from, to) = (t - 60 * MINUTE, t + MINUTE);
    let range = format!("range=custom&from={from}&to={to}");
    let api = collector
        .get_json(&format!("/api/v1/queries?from={from}&to={to}"))
        .await;
    let queries = api["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 4, "{api}");

    // Overview: every service, the top queries with the API's numbers, the pool
    // that runs dry, the agent that drops data.
    let (status, overview) = collector.get(&format!("/?{range}")).await;
    assert_eq!(status, 200, "{overview}");
    for q in queries {
        let r = row(&overview, &format!("/queries/{}?", q["fingerprint"].as_str().unwrap()));
        assert!(r.contains(&count(q["calls"].as_u64().unwrap())), "{r}");
        assert!(r.contains(&duration_ms(q["total_ms"].as_f64().unwrap())), "{r}");
        assert!(r.contains(&duration_ms(q["p99_ms"].as_f64().unwrap())), "{r}");
    }
    let checkout = row(&overview, "data-service=\"checkout\"");
    assert!(
        checkout.contains("critical") && checkout.contains("acquire timeouts"),
        "{checkout}"
    );
    assert!(
        row(&overview, "data-service=\"ledger\"").contains("degraded"),
        "health checks failed once"
    );
    assert!(row(&overview, ">le-1<").contains("3 batches or records dropped"));
    assert!(escaped(&overview), "the hostile SQL text is escaped");

    // Queries: sorted by calls as asked, numbers as in the API, filters.
    let (status, page) = collector.get(&format!("/queries?{range}&sort=calls")).await;
    assert_eq!(status, 200);
    let mut by_calls: Vec<&Value> = queries.iter().collect();
    by_calls.sort_by_key(|q| std::cmp::Reverse(q["calls"].as_u64().unwrap()));
    let order: Vec<usize> = by_calls
        .iter()
        .map(|q| {
            page.find(&format!("data-fingerprint=\"{}\"", q["fingerprint"].as_str().unwrap()))
                .unwrap()
        })
        .collect();
    assert!(order.is_sorted(), "rows follow the calls order: {order:?}");
    for q in queries {
        let r = row(
            &page,
            &format!("data-fingerprint=\"{}\"", q["fingerprint"].as_str().unwrap()),
        );
        for key in ["mean_ms", "p95_ms", "p99_ms"] {
            assert!(r.contains(&duration_ms(q[key].as_f64().unwrap())), "{key}: {r}");
        }
        assert!(r.contains(&count(q["errors"].as_u64().unwrap())), "{r}");
        assert!(r.contains("<svg class=\"spark\""), "a sparkline per row");
    }
    let (_, filtered) = collector.get(&format!("/queries?{range}&q=ORDERS+set")).await;
    assert!(filtered.contains(&fp(PAY).to_string()) && !filtered.contains(&fp(BALANCE).to_string()));
    let (_, ledger) = collector.get(&format!("/queries?{range}&service=ledger")).await;
    assert!(ledger.contains(&fp(BALANCE).to_string()) && !ledger.contains(&fp(ORDERS).to_string()));
    assert!(escaped(&ledger));
    let (status, _) = collector.get("/queries?sort=bogus").await;
    assert_eq!(status, 400);

    // Query detail: per-service and per-instance numbers from the API, error
    // classes, slow samples, the trend against the previous hour.
    let balance = fp(BALANCE);
    let detail = collector
        .get_json(&format!("/api/v1/queries/{balance}?from={from}&to={to}"))
        .await;
    let (status, page) = collector.get(&format!("/queries/{balance}?{range}")).await;
    assert_eq!(status, 200);
    let summary = &detail["services"][0];
    let r = row(&page, "data-service=\"ledger\"");
    for key in ["p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms"] {
        assert!(r.contains(&duration_ms(summary[key].as_f64().unwrap())), "{key}: {r}");
    }
    assert!(page.contains("2.50 s"), "the slow sample is listed");
    assert!(page.contains("↗ +"), "p95 rose against the previous period: {page}");
    assert_eq!(
        page.matches("<svg class=\"chart\"").count(),
        2,
        "latency and calls charts"
    );
    let (_, hostile) = collector.get(&format!("/queries/{}?{range}", fp(HOSTILE))).await;
    assert!(
        escaped(&hostile) && hostile.contains("42P01"),
        "error class listed, text escaped"
    );
    assert_eq!(collector.get("/queries/0123456789abcdef").await.0, 404);
    assert_eq!(collector.get("/queries/not-hex").await.0, 400);

    // Pools: the dry pool first, with its numbers.
    let pools = collector.get_json(&format!("/api/v1/pools?from={from}&to={to}")).await;
    let (status, page) = collector.get(&format!("/pools?{range}")).await;
    assert_eq!(status, 200);
    assert!(page.find("data-pool=\"primary\"") < page.find("data-pool=\"main\""));
    let primary = row(&page, "data-pool=\"primary\"");
    assert!(
        primary.contains("critical") && primary.contains("exhausted: 10 of 10 in use, 3 waiting"),
        "{primary}"
    );
    let p = pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pool"] == "primary")
        .unwrap();
    assert!(primary.contains(&count(p["timeouts"].as_u64().unwrap())));
    assert!(primary.contains(&duration_ms(p["acquire_wait_p99_ms"].as_f64().unwrap())));
    let (status, detail) = collector.get(&format!("/pools/ledger/le-1/main?{range}")).await;
    assert_eq!(status, 200);
    assert!(detail.contains("90.0 % ok"), "health-check success: 27 of 30");
    assert_eq!(detail.matches("<svg class=\"chart\"").count(), 4);
    assert_eq!(collector.get("/pools/ledger/le-1/nope").await.0, 404);

    // Slow log, agents, report.
    let (_, slow) = collector.get(&format!("/slow?{range}")).await;
    assert!(slow.contains(&format!("/queries/{balance}?")) && escaped(&slow));
    let (_, slow_filtered) = collector.get(&format!("/slow?{range}&min_ms=2000")).await;
    assert!(!slow_filtered.contains("1.20 s") && slow_filtered.contains("2.50 s"));
    let (_, agents) = collector.get("/agents").await;
    assert!(row(&agents, ">le-1").contains("class=\"bad\">3<"), "dropped batches");
    let report: Value = serde_json::from_str(&collector.get(&format!("/report?{range}&format=json")).await.1).unwrap();
    let api_calls: u64 = queries.iter().map(|q| q["calls"].as_u64().unwrap()).sum();
    assert_eq!(report["totals"]["calls"], api_calls);
    assert_eq!(report["regressions"][0]["query"]["fingerprint"], balance.to_string());
    assert!(
        report["alerts"].is_array(),
        "the alert engine's alerts: {}",
        report["alerts"]
    );
    let markdown = querypulse_collector::fetch_report(&ReportArgs {
        url: collector.url(""),
        token: None,
        from: Some(from.to_string()),
        to: Some(to.to_string()),
        service: None,
        format: Format::Md,
        output: None,
    })
    .await
    .unwrap();
    assert!(
        markdown.contains("## Regressions versus the previous period (p95)"),
        "{markdown}"
    );
    assert!(
        markdown.contains(&format!("| {balance} | ` {BALANCE} ` | ledger |")),
        "{markdown}"
    );
    assert!(markdown.contains("## Alerts") && !markdown.contains(querypulse_web::ALERTS_NOT_YET));
    let html = collector.get(&format!("/report?{range}&format=html")).await.1;
    assert!(html.starts_with("<!doctype html>") && escaped(&html));

    // Every link on every page leads to a page that exists; every page is light.
    let mut pages: Vec<String> = [
        "/",
        "/queries",
        "/slow",
        "/pools",
        "/agents",
        "/report",
        "/settings",
        "/alerts",
        "/alerts/rules",
        "/alerts/channels",
        "/login",
    ]
    .iter()
    .map(|p| format!("{p}?{range}"))
    .collect();
    let mut seen = BTreeSet::new();
    while let Some(path) = pages.pop() {
        if !seen.insert(path.clone()) || seen.len() > 400 {
            continue;
        }
        let (status, body) = collector.get(&path).await;
        assert_eq!(status, 200, "{path} is linked but answers {status}");
        assert!(body.len() <= MAX_PAGE_BYTES, "{path}: {} bytes", body.len());
        if !path.starts_with("/api/") && !path.contains("format=") {
            pages.extend(links(&body).into_iter().filter(|l| !l.starts_with("/login")));
        }
    }
    assert!(seen.len() > 30, "the crawl reached the detail pages: {}", seen.len());
    collector.stop().await;
}

async fn post(collector: &TestCollector, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> reqwest::Response {
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('%', "%25").replace('&', "%26").replace('+', "%2B")))
        .collect::<Vec<_>>()
        .join("&");
    let mut request = no_redirects()
        .post(collector.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

async fn page_with(collector: &TestCollector, path: &str, cookie: &str) -> String {
    let response = no_redirects()
        .get(collector.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    page[at..at + 64].to_owned()
}

const RETENTION: [(&str, &str); 4] = [
    ("raw_hours", "36"),
    ("minute_days", "10"),
    ("hour_days", "365"),
    ("max_mib", ""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_forms_need_a_sign_in_and_its_csrf_token() {
    let data = tempfile::tempdir().unwrap();

    // Without an admin token nobody can sign in, and forms are refused.
    let collector = TestCollector::start(data.path()).await;
    let (_, settings) = collector.get("/settings").await;
    assert!(settings.contains("Changes are disabled") && !settings.contains("<form class=\"settings\""));
    assert_eq!(
        post(&collector, "/settings/retention", None, &RETENTION).await.status(),
        403
    );
    assert_eq!(post(&collector, "/login", None, &[("token", "")]).await.status(), 403);
    collector.stop().await;

    let mut config = Config::ephemeral(data.path());
    config.admin_token = Some("s3cret&token".into());
    let collector = TestCollector::start_with(config).await;
    let before = collector.get_json("/api/v1/retention").await;

    // Not signed in: read-only page, form posts refused.
    let (_, settings) = collector.get("/settings").await;
    assert!(settings.contains("Sign in") && !settings.contains("name=\"raw_hours\""));
    let refused = post(
        &collector,
        "/settings/retention",
        None,
        &[("csrf", "x"), ("raw_hours", "36")],
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("Sign in with the admin token"));
    assert_eq!(
        post(&collector, "/login", None, &[("token", "wrong")]).await.status(),
        401
    );

    // After signing in, only a path on this host: what a browser would
    // normalize into another host (a tab, a backslash) goes to /settings.
    for (next, location) in [
        ("/\t/evil.example/x", "/settings"),
        ("/\\evil.example/x", "/settings"),
        ("/queries?range=24h", "/queries?range=24h"),
    ] {
        let login = post(&collector, "/login", None, &[("token", "s3cret&token"), ("next", next)]).await;
        assert_eq!(login.status(), 303);
        assert_eq!(login.headers()["location"], location, "next={next:?}");
    }

    // Signing in sets a strict, script-proof cookie.
    let login = post(
        &collector,
        "/login",
        None,
        &[("token", "s3cret&token"), ("next", "/settings")],
    )
    .await;
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()["location"], "/settings");
    let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let settings = page_with(&collector, "/settings", &cookie).await;
    let token = csrf(&settings);

    // Signed in but without (or with a wrong) CSRF token: refused, nothing changes.
    for bad in ["", "0000"] {
        let mut form = RETENTION.to_vec();
        form.push(("csrf", bad));
        assert_eq!(
            post(&collector, "/settings/retention", Some(&cookie), &form)
                .await
                .status(),
            403
        );
    }
    assert_eq!(collector.get_json("/api/v1/retention").await, before);

    // Out of range: refused with the reason, the typed values kept.
    let response = post(
        &collector,
        "/settings/retention",
        Some(&cookie),
        &[
            ("csrf", &token),
            ("raw_hours", "0.001"),
            ("minute_days", "10"),
            ("hour_days", "365"),
        ],
    )
    .await;
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("Not saved: raw_seconds") && body.contains("value=\"0.001\""),
        "{body}"
    );

    // With both: saved, applied, visible through the API.
    let mut form = RETENTION.to_vec();
    form.push(("csrf", &token));
    let saved = post(&collector, "/settings/retention", Some(&cookie), &form).await;
    assert_eq!(saved.status(), 303);
    let retention = collector.get_json("/api/v1/retention").await;
    assert_eq!(
        (retention["raw_seconds"].as_u64(), retention["minute_seconds"].as_u64()),
        (Some(36 * 3_600), Some(10 * 86_400))
    );
    let agents = post(
        &collector,
        "/settings/agents",
        Some(&cookie),
        &[("csrf", &token), ("slow_threshold_ms", "250"), ("interval_ms", "")],
    )
    .await;
    assert_eq!(agents.status(), 303);
    let pushed = collector.get_json("/api/v1/agent-settings").await;
    assert_eq!(
        (pushed["slow_threshold_ms"].as_u64(), &pushed["interval_ms"]),
        (Some(250), &Value::Null)
    );

    // Signing out ends the session: its cookie no longer opens the forms.
    assert_eq!(
        post(&collector, "/logout", Some(&cookie), &[("csrf", &token)])
            .await
            .status(),
        303
    );
    assert_eq!(
        post(&collector, "/settings/agents", Some(&cookie), &[("csrf", &token)])
            .await
            .status(),
        403
    );
    let headers: HashMap<String, String> = no_redirects()
        .get(collector.url("/"))
        .send()
        .await
        .unwrap()
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    assert!(headers["content-security-policy"].contains("default-src 'none'"));
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_collector_says_what_to_do() {
    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    for path in ["/", "/queries", "/agents"] {
        let (status, page) = collector.get(path).await;
        assert_eq!(status, 200);
        assert!(
            page.contains("No agents have reported yet") && page.contains("Agent::builder"),
            "{path}"
        );
    }
    let (_, pools) = collector.get("/pools").await;
    assert!(pools.contains("No pool statistics in this range"));
    let (_, slow) = collector.get("/slow").await;
    assert!(slow.contains("No execution crossed the slow-query threshold"));
    let (status, missing) = collector.get("/nothing-here").await;
    assert_eq!(status, 404);
    assert!(missing.contains("There is no page here"));
    collector.stop().await;
}

/// Names agents choose (service, instance, pool) reach the Markdown report
/// as plain text: a reader's Markdown viewer shows them, never follows or
/// renders them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_markdown_report_shows_agent_names_as_text() {
    let data = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(data.path()).await;
    let service = "[pay](http://evil.example/)";
    let pool = "<img src=x onerror=alert(1)>";
    let mut agent = RawAgent::open(&collector.endpoint(), &hello(service, "**x**")).await;
    let mut batch = window(1, now(), &[(ORDERS, 50, 800, Some((10, "<b>23505</b>")))]);
    batch.pools.push(PoolStats {
        pool: pool.into(),
        max_size: 4,
        acquires: 10,
        releases: 10,
        size: Gauge { last: 4, peak: 4 },
        in_use: Gauge { last: 4, peak: 4 },
        waiting: Gauge { last: 2, peak: 3 },
        ..Default::default()
    });
    agent.send_acked(&batch).await;
    let (status, markdown) = collector
        .get(&format!(
            "/report?service={}&range=1h&format=md",
            "%5Bpay%5D(http%3A%2F%2Fevil.example%2F)"
        ))
        .await;
    assert_eq!(status, 200, "{markdown}");
    assert!(markdown.contains("## Pools"), "{markdown}");
    for raw in ["](http", "**x**"] {
        assert!(!markdown.contains(raw), "{raw} reached the Markdown as is:\n{markdown}");
    }
    assert!(
        markdown
            .match_indices('<')
            .all(|(at, _)| markdown[..at].ends_with('\\')),
        "an unescaped < (HTML) in the Markdown:\n{markdown}"
    );
    assert!(
        markdown.contains("\\[pay\\]\\(http\\:\\/\\/evil\\.example\\/\\)"),
        "the service, escaped:\n{markdown}"
    );
    assert!(
        markdown.contains("\\<img src\\=x onerror\\=alert\\(1\\)\\>"),
        "the pool, escaped:\n{markdown}"
    );
    collector.stop().await;
}

/// With a read token, reading needs it (or the admin token): the API and
/// `/metrics` answer 401 without it, dashboard pages send the browser to
/// sign in, and signing in with the read token opens a session that reads
/// but cannot change anything. `/healthz` stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_closes_reads_to_everyone_without_it() {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(data.path());
    config.read_token = Some("reader".into());
    config.admin_token = Some("admin".into());
    let collector = querypulse_e2e::TestCollector::start_with(config).await;
    let client = no_redirects();
    let get = |path: &str, token: Option<&str>, cookie: Option<&str>| {
        let mut request = client.get(collector.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };

    assert_eq!(get("/healthz", None, None).await.unwrap().status(), 200);
    for path in ["/api/v1/queries", "/api/v1/services", "/metrics"] {
        let refused = get(path, None, None).await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
        assert_eq!(get(path, Some("guess"), None).await.unwrap().status(), 401, "{path}");
        assert_eq!(get(path, Some("reader"), None).await.unwrap().status(), 200, "{path}");
        assert_eq!(get(path, Some("admin"), None).await.unwrap().status(), 200, "{path}");
    }
    let page = get("/queries?range=1h", None, None).await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login?next=%2Fqueries%3Frange%3D1h");
    let login = get("/login", None, None).await.unwrap();
    assert_eq!(login.status(), 200);
    assert!(login.text().await.unwrap().contains("Read or admin token"));

    // Signing in with the read token: pages read, changes are refused.
    let signed_in = post(
        &collector,
        "/login",
        None,
        &[("token", "reader"), ("next", "/queries?range=1h")],
    )
    .await;
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()["location"], "/queries?range=1h");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        get("/queries?range=1h", None, Some(&cookie)).await.unwrap().status(),
        200
    );
    assert_eq!(get("/api/v1/queries", None, Some(&cookie)).await.unwrap().status(), 200);
    let settings = get("/settings", None, Some(&cookie))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !settings.contains("name=\"csrf\""),
        "a read session gets no form to change things"
    );
    let change = post(
        &collector,
        "/settings/retention",
        Some(&cookie),
        &[("csrf", "x"), ("raw_hours", "36")],
    )
    .await;
    assert_eq!(change.status(), 403);
    let wrong = post(&collector, "/login", None, &[("token", "guess")]).await;
    assert_eq!(wrong.status(), 401);
    collector.stop().await;
}
