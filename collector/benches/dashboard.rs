//! Dashboard server time and page weight with 1,000 fingerprints, over the
//! last 24 hours and the last 7 days.
//!
//! `cargo bench -p querypulse-collector --bench dashboard`
//!
//! Fills a store directly (two instances, 1,000 fingerprints, one window
//! every 10 minutes for 7 days, two pools per instance with health checks;
//! raw retention raised to 8 days so nothing is refused as too old), flushes
//! and seals it as the collector would, serves the dashboard on 127.0.0.1 and requests
//! each page `QUERYPULSE_BENCH_REQUESTS` times (default 200), one at a time,
//! twice: "cold", every page computed from the store (the dashboard's cache
//! off; a tenth as many requests), and "served", as the collector runs it
//! (answers up to 10 s old served while the next is computed in the
//! background), with requests paced `QUERYPULSE_BENCH_PACE_MS` apart
//! (default 100) so answers expire and are refreshed during the run. Prints
//! p50/p95/p99/max of the time from sending the request to having the whole body, and
//! the page's size. Not criterion: the goal is a p99, which criterion does
//! not report. The filled store is kept in `target/bench-dashboard-store`
//! and reused for 30 minutes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use querypulse_collector::StoreSource;
use querypulse_domain::clock::Clock;
use querypulse_domain::{Batch, DbSystem, FingerprintText, Gauge, HealthCheckStats, Hello, PoolStats, Window};
use querypulse_store::Retention;
use querypulse_store::{BatchRequest, Limits, Store};

#[path = "../store/benches/workload/mod.rs"]
mod workload;

const FINGERPRINTS: usize = 1_000;
const INSTANCES: usize = 2;
const DAYS: i64 = 7;
const EVERY_MS: i64 = 10 * 60_000;
const WINDOW_MS: u32 = 10_000;
/// The goals (BENCHMARKS.md, "Dashboard").
const GOAL_P99: Duration = Duration::from_millis(50);
const GOAL_BYTES: usize = 200 * 1024;

fn texts() -> Vec<FingerprintText> {
    workload::texts(FINGERPRINTS, |i| {
        format!(
            "select o.id, o.status, o.total_cents, c.email from orders_{i} o join customers c on c.id = o.customer_id where o.region = ? and o.created_at > ? order by o.created_at desc limit ?"
        )
    })
}

/// A window of one instance: the benches' statements (some failing), two
/// pools and their health checks.
fn batch(seq: u64, start_ms: i64, instance: usize, texts: &[FingerprintText]) -> Batch {
    let mut batch = Batch::new(
        seq,
        Window {
            start_ms,
            length_ms: WINDOW_MS,
        },
    );
    batch.queries = workload::queries(seq, instance, texts, true);
    for (p, max) in [("primary", 20u32), ("replica", 10)] {
        let busy = (seq as u32 * 7 + instance as u32) % (max + 1);
        let mut pool = PoolStats {
            pool: p.into(),
            db_system: DbSystem::Postgresql,
            max_size: max,
            size: Gauge { last: max, peak: max },
            idle: Gauge {
                last: max - busy,
                peak: max,
            },
            in_use: Gauge { last: busy, peak: busy },
            acquires: 600,
            releases: 600,
            ..Default::default()
        };
        for i in 0..40u64 {
            pool.acquire_wait.record(50 + i * i * 3);
            pool.hold_time.record(1_000 + i * 200);
        }
        batch.pools.push(pool);
        let mut health = HealthCheckStats {
            pool: p.into(),
            checks: 2,
            last_ok: true,
            last_check_ms: start_ms,
            ..Default::default()
        };
        health.latency.record(800);
        health.latency.record(900);
        batch.health_checks.push(health);
    }
    batch
}

/// Reuse a filled store this young.
const REUSE_MS: i64 = 30 * 60_000;

fn fill(store_dir: &std::path::Path, now: i64) -> (Store, i64) {
    let retention = Retention {
        raw_seconds: 8 * 86_400,
        ..Retention::default()
    };
    let marker = store_dir.join("filled-at");
    if let Some(filled) = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
        && now - filled < REUSE_MS
    {
        let (store, _writer) =
            Store::open(store_dir, retention, Limits::default(), Clock::manual(now)).expect("the store opens");
        eprintln!("reusing the store filled {} s ago", (now - filled) / 1_000);
        return (store, filled);
    }
    let _ = std::fs::remove_dir_all(store_dir);
    let clock = Clock::manual(now);
    let (store, mut writer) =
        Store::open(store_dir, retention, Limits::default(), clock.clone()).expect("the store opens");
    let texts = texts();
    let hellos: Vec<Arc<Hello>> = (0..INSTANCES)
        .map(|i| {
            Arc::new(Hello {
                service: "bench".into(),
                instance_id: format!("instance-{i}"),
                host: format!("host-{i}"),
                interval_ms: WINDOW_MS,
                ..Hello::default()
            })
        })
        .collect();
    let started = Instant::now();
    let from = now - DAYS * 86_400_000;
    for (n, start) in (from..now).step_by(EVERY_MS as usize).enumerate() {
        let seq = n as u64 + 1;
        let requests = hellos
            .iter()
            .enumerate()
            .map(|(i, hello)| BatchRequest {
                hello: hello.clone(),
                batch: batch(seq, start, i, &texts),
                texts: if seq == 1 { texts.clone() } else { Vec::new() },
            })
            .collect();
        clock.set(start + 30_000);
        writer.write(requests).expect("the write");
    }
    clock.set(now);
    writer.settle().expect("settling the store");
    eprintln!(
        "filled {} windows x {INSTANCES} instances x {FINGERPRINTS} fingerprints in {:.1} s",
        (now - from) / EVERY_MS,
        started.elapsed().as_secs_f64()
    );
    drop(writer);
    std::fs::write(&marker, now.to_string()).expect("the marker");
    (store, now)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    let requests: usize = std::env::var("QUERYPULSE_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let pace_ms: u64 = std::env::var("QUERYPULSE_BENCH_PACE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-dashboard-store");
    let (store, _) = fill(&dir, chrono::Utc::now().timestamp_millis());
    let fingerprint = texts()[7].fingerprint;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let source: Arc<dyn querypulse_domain::source::Source> = Arc::new(StoreSource::new(store));
        let mut addresses = Vec::new();
        for ttl in [Duration::ZERO, querypulse_web::DEFAULT_CACHE_TTL] {
            let app = querypulse_web::Dashboard::new(source.clone())
                .with_cache_ttl(ttl)
                .router();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
            addresses.push(listener.local_addr().expect("the address"));
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let http = querypulse_collector::http_client();
        let pace = Duration::from_millis(pace_ms);
        println!("| page | range | mode | p50 | p95 | p99 | max | bytes | goal |");
        println!("|---|---|---|--:|--:|--:|--:|--:|---|");
        for range in ["24h", "7d"] {
            for (page, path) in [
                ("overview", "/".to_owned()),
                ("queries", "/queries".to_owned()),
                ("query detail", format!("/queries/{fingerprint}")),
                ("pools", "/pools".to_owned()),
                ("report", "/report".to_owned()),
            ] {
                for (mode, addr) in ["cold", "served"].iter().zip(&addresses) {
                    let url = format!("http://{addr}{path}?range={range}");
                    // Cold pages take seconds each: fewer of them.
                    let requests = if *mode == "cold" {
                        (requests / 10).max(10)
                    } else {
                        requests
                    };
                    let mut times = Vec::with_capacity(requests);
                    let mut bytes = 0;
                    for i in 0..requests + 3 {
                        if *mode == "served" {
                            // Paced, so answers expire and are refreshed in
                            // the background while requests keep coming.
                            tokio::time::sleep(pace).await;
                        }
                        let started = Instant::now();
                        let response = http.get(&url).send().await.expect("a response");
                        assert_eq!(response.status(), 200, "{url}");
                        let body = response.bytes().await.expect("a body");
                        if i >= 3 {
                            times.push(started.elapsed());
                        }
                        bytes = body.len();
                    }
                    times.sort();
                    let p99 = percentile(&times, 0.99);
                    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1_000.0);
                    let goal = if page == "pools" || page == "report" {
                        "–"
                    } else if p99 <= GOAL_P99 && bytes <= GOAL_BYTES {
                        "met"
                    } else {
                        "MISSED"
                    };
                    println!(
                        "| {page} | {range} | {mode} | {} | {} | {} | {} | {} | {goal} |",
                        ms(percentile(&times, 0.50)),
                        ms(percentile(&times, 0.95)),
                        ms(p99),
                        ms(times[times.len() - 1]),
                        bytes
                    );
                }
            }
        }
    });
}
