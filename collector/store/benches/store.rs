//! Store throughput and read latency, without the network: how many
//! fingerprint-windows per second the writer makes durable, and how long a
//! summary of 1,000 fingerprints over 24 hours takes to read.
//!
//! `cargo bench -p querypulse-store --bench store`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use querypulse_domain::Clock;
use querypulse_domain::{Batch, FingerprintText, Hello, Window};
use querypulse_store::Retention;
use querypulse_store::{BatchRequest, Limits, Store};

mod workload;

const FINGERPRINTS: usize = 1_000;
const INSTANCES: usize = 50;
const WINDOW_MS: i64 = 10_000;

fn texts() -> Vec<FingerprintText> {
    workload::texts(FINGERPRINTS, |i| format!("select * from table_{i} where id = ?"))
}

/// A window of one instance (see `workload`).
fn batch(seq: u64, start_ms: i64, instance: usize, texts: &[FingerprintText]) -> Batch {
    let mut batch = Batch::new(
        seq,
        Window {
            start_ms,
            length_ms: WINDOW_MS as u32,
        },
    );
    batch.queries = workload::queries(seq, instance, texts, false);
    batch
}

fn ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements((INSTANCES * FINGERPRINTS) as u64));
    group.sample_size(20).measurement_time(Duration::from_secs(20));
    // The same windows as one batch per instance, and as eight (agents that
    // send small messages): the difference is what a batch costs.
    for parts in [1usize, 8] {
        let dir = tempfile::tempdir().unwrap();
        let now = querypulse_domain::now_ms();
        let clock = Clock::manual(now);
        let (_store, mut writer) =
            Store::open(dir.path(), Retention::default(), Limits::default(), clock.clone()).unwrap();
        let texts = texts();
        let hellos: Vec<Arc<Hello>> = (0..INSTANCES)
            .map(|i| {
                Arc::new(Hello {
                    service: "bench".into(),
                    instance_id: format!("instance-{i}"),
                    ..Hello::default()
                })
            })
            .collect();
        let mut window = now - 36 * 3_600_000;
        let mut seq = 0u64;
        let name = format!(
            "write 50 instances x 1000 fingerprints in {parts} batch{} each (one window, one fsync)",
            if parts == 1 { "" } else { "es" }
        );
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    seq += 1;
                    window += WINDOW_MS;
                    let mut requests = Vec::with_capacity(INSTANCES * parts);
                    for (i, hello) in hellos.iter().enumerate() {
                        let whole = batch(seq, window, i, &texts);
                        let per_part = whole.queries.len().div_ceil(parts);
                        for (k, queries) in whole.queries.chunks(per_part).enumerate() {
                            let mut part = Batch::new(seq * parts as u64 + k as u64, whole.window);
                            part.queries = queries.to_vec();
                            requests.push(BatchRequest {
                                hello: hello.clone(),
                                batch: part,
                                texts: if seq == 1 { texts.clone() } else { Vec::new() },
                            });
                        }
                    }
                    // Live ingest: the collector's clock is just past the window.
                    clock.set(window + WINDOW_MS);
                    let started = Instant::now();
                    writer.write(requests).unwrap();
                    writer.maintain().unwrap();
                    total += started.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let now = querypulse_domain::now_ms();
    let (store, mut writer) =
        Store::open(dir.path(), Retention::default(), Limits::default(), Clock::manual(now)).unwrap();
    let texts = texts();
    let hello = Arc::new(Hello {
        service: "bench".into(),
        instance_id: "instance-0".into(),
        ..Hello::default()
    });
    let day_ago = now - 24 * 3_600_000;
    // One instance, every fingerprint, one window per minute over 24 hours.
    for (n, start) in (day_ago..now).step_by(60_000).enumerate() {
        let request = BatchRequest {
            hello: hello.clone(),
            batch: batch(n as u64 + 1, start, 0, &texts),
            texts: if n == 0 { texts.clone() } else { Vec::new() },
        };
        writer.write(vec![request]).unwrap();
    }
    writer.settle().unwrap();
    let service = store.service_id("bench").unwrap();
    let mut group = c.benchmark_group("store");
    group.sample_size(20);
    let hour = 3_600_000;
    group.bench_function("summaries of 1000 fingerprints over 24 h", |b| {
        b.iter(|| {
            store
                .query_stats(service, day_ago / hour * hour, (now / hour + 1) * hour)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, ingest, read);
criterion_main!(benches);
