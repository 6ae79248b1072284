//! Every page of the dashboard in a real headless Chromium, against the demo
//! workload (simulated services on real SQLite pools) plus a pool reported
//! over a raw stream: no console error, no failed request, no broken link.
//! Screenshots go to `target/screenshots/` (or `QUERYPULSE_SCREENSHOTS`).
//!
//! Runs when `QUERYPULSE_TEST_CHROMIUM` names Chromium (`.ci/run` installs
//! Debian's and sets it); skips, saying so, when it is unset.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use querypulse_collector::Config;
use querypulse_collector::Demo;
use querypulse_e2e::browser::{Browser, Visit};
use querypulse_e2e::{RawAgent, eventually, hello};
use querypulse_proto::{Batch, DbSystem, Gauge, HealthCheckStats, PoolStats, Window};
use serde_json::Value;

const MINUTE: i64 = 60_000;
/// Links checked at most (the crawl is bounded).
const MAX_LINKS: usize = 300;

fn screenshots() -> PathBuf {
    std::env::var_os("QUERYPULSE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/screenshots")))
}

/// A pool that fills up over the last half hour (one window a minute), with
/// health checks.
async fn report_a_pool(endpoint: &str, now: i64) {
    let mut agent = RawAgent::open(endpoint, &hello("payments", "payments-1")).await;
    for seq in 1..=30u64 {
        let at = now - (31 - seq as i64) * MINUTE;
        let wave = [0, 2, 3, 1, 0, 2][seq as usize % 6];
        let busy = (4 + seq as u32 / 2 + wave).min(20);
        let mut batch = Batch::new(seq, Window::containing(at, 10_000));
        let mut pool = PoolStats {
            pool: "primary".into(),
            db_system: DbSystem::Postgresql,
            max_size: 20,
            min_idle: 2,
            size: Gauge { last: 20, peak: 20 },
            idle: Gauge {
                last: 20 - busy,
                peak: 18,
            },
            in_use: Gauge { last: busy, peak: busy },
            waiting: Gauge {
                last: busy.saturating_sub(18),
                peak: busy.saturating_sub(17),
            },
            acquires: 200 + seq * 10 + u64::from(wave) * 15,
            releases: 200 + seq * 10 + u64::from(wave) * 15,
            timeouts: u64::from(seq > 26 && wave > 1),
            ..Default::default()
        };
        for i in 0..50u64 {
            pool.acquire_wait.record(100 + i * i * (seq + u64::from(wave) * 4));
            pool.hold_time.record(2_000 + i * 300);
        }
        batch.pools.push(pool);
        let mut health = HealthCheckStats {
            pool: "primary".into(),
            checks: 6,
            failures: u64::from(seq == 12),
            last_ok: true,
            last_check_ms: at + 9_000,
            ..Default::default()
        };
        for i in 0..6 {
            health.latency.record(600 + i * 150 + seq * 20 + u64::from(wave) * 90);
        }
        batch.health_checks.push(health);
        agent.send_acked(&batch).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_loads_in_chromium_without_errors_or_broken_links() {
    let Some(chromium) = std::env::var_os("QUERYPULSE_TEST_CHROMIUM").map(PathBuf::from) else {
        eprintln!("skipped: set QUERYPULSE_TEST_CHROMIUM=/usr/bin/chromium to run the browser test");
        return;
    };
    assert!(
        chromium.exists(),
        "QUERYPULSE_TEST_CHROMIUM={} does not exist",
        chromium.display()
    );
    let data = tempfile::tempdir().unwrap();
    let demo = Demo::start(Config::ephemeral(data.path()))
        .await
        .expect("the demo starts");
    let base = format!("http://{}", demo.collector().http_addr());
    let http = querypulse_collector::http_client();
    report_a_pool(
        &format!("http://{}", demo.collector().grpc_addr()),
        chrono::Utc::now().timestamp_millis(),
    )
    .await;

    // The demo's agents report every 5 s: wait for their first windows.
    let api = |path: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = http.get(format!("{base}{path}")).send().await.ok()?.text().await.ok()?;
            serde_json::from_str::<Value>(&body).ok()
        }
    };
    let queries = eventually(Duration::from_secs(60), || async {
        let q = api("/api/v1/queries").await?;
        (q["queries"].as_array()?.len() >= 5).then_some(q)
    })
    .await
    .expect("the demo's agents report within a minute");
    let fingerprint = queries["queries"][0]["fingerprint"].as_str().unwrap().to_owned();

    let pages: Vec<String> = [
        "/".to_owned(),
        "/?range=24h&refresh=30".to_owned(),
        "/queries".to_owned(),
        "/queries?sort=p99&dir=asc&q=select".to_owned(),
        format!("/queries/{fingerprint}"),
        "/slow".to_owned(),
        "/pools".to_owned(),
        "/pools/payments/payments-1/primary".to_owned(),
        "/agents".to_owned(),
        "/report".to_owned(),
        "/settings".to_owned(),
        "/alerts".to_owned(),
        "/alerts/rules".to_owned(),
        "/alerts/rules?evaluate=1".to_owned(),
        "/alerts/channels".to_owned(),
        "/login".to_owned(),
    ]
    .into_iter()
    .map(|p| format!("{base}{p}"))
    .collect();
    let shots = screenshots();
    let visited: Vec<(String, Visit)> = {
        let (pages, shots, base) = (pages.clone(), shots.clone(), base.clone());
        tokio::task::spawn_blocking(move || {
            let mut browser = Browser::launch(&chromium, 1400, 900).expect("Chromium starts");
            let mut visited = Vec::new();
            for (i, url) in pages.iter().enumerate() {
                let visit = browser.visit(url).unwrap_or_else(|e| panic!("{url}: {e}"));
                let name = match url.trim_start_matches(&base) {
                    "/" => "overview".to_owned(),
                    p if p.starts_with("/pools/") => "pool".to_owned(),
                    p if p.starts_with("/queries/") => "query".to_owned(),
                    p => format!(
                        "{i:02}-{}",
                        p.trim_start_matches('/').replace(['/', '?', '&', '='], "_")
                    ),
                };
                browser
                    .screenshot(&shots.join(format!("{name}.png")), 4_000)
                    .expect("a screenshot");
                visited.push((url.clone(), visit));
            }
            visited
        })
        .await
        .expect("the browser session")
    };

    let mut links = BTreeSet::new();
    for (url, visit) in &visited {
        assert_eq!(visit.status, 200, "{url}");
        assert!(visit.errors.is_empty(), "{url}: {:#?}", visit.errors);
        assert!(visit.title.ends_with("querypulse"), "{url}: title {:?}", visit.title);
        links.extend(visit.links.iter().filter(|l| l.starts_with(&base)).cloned());
    }
    assert!(links.len() > 20, "pages link to each other: {links:?}");
    for link in links.iter().take(MAX_LINKS) {
        let status = http.get(link).send().await.unwrap().status();
        assert_eq!(status, 200, "broken link {link}");
    }
    for name in ["overview", "pool"] {
        assert!(shots.join(format!("{name}.png")).exists());
    }
    eprintln!("screenshots in {}", shots.display());
    demo.shutdown().await.expect("the demo stops");
}
