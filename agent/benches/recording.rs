//! What recording one statement costs the service, next to what the metrics
//! libraries it would otherwise use cost for one histogram observation. Every
//! figure comes from the same run, so the ratios in BENCHMARKS.md compare like
//! with like on a machine whose speed drifts.
//!
//! `cargo bench -p querypulse-agent --bench recording`
//!
//! - `known/*`: a statement the agent has seen before (the steady state of a
//!   service), 60 B and 1 KB, on one thread and on two threads recording the
//!   same statement at once (time per record per thread), by the wall clock
//!   and by each thread's CPU time.
//! - `first_sight/*`: a statement whose raw text was never seen (its literals
//!   differ each time), so it is hashed, normalized and cached, by the wall
//!   clock and by the thread's CPU time; and, for attribution, the normalizer
//!   alone on a statement of the same size.
//! - `peers/*`: metrics-rs `histogram!` with one label under
//!   metrics-exporter-prometheus (macro and cached handle), a `prometheus`
//!   `HistogramVec` observation and an OpenTelemetry SDK histogram record with
//!   one attribute.
//!
//! Latencies cycle through 1,024 values spread from 100 µs to 50 ms (see
//! `support`), the same for every contender.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use querypulse_agent::fingerprint::{Dialect, normalize};
use querypulse_agent::{Agent, Outcome};

mod support;
use support::latency;

/// A 60-byte statement.
const SQL_60: &str = "SELECT id, total FROM orders WHERE customer_id = $1 LIMIT 10";
/// The label value the peers record under: what a fingerprint looks like.
const LABEL: &str = "3f2a9c0d1e4b5a67";
/// The metric name the peers record under.
const METRIC: &str = "db_client_operation_duration_seconds";

/// A statement of exactly `len` bytes whose literals depend on `variant`:
/// a select with an `IN` list, padded with spaces that normalizing folds.
fn statement(len: usize, variant: u64) -> String {
    let mut sql = format!("SELECT o.id, o.total FROM orders o WHERE o.customer_id = {variant} AND o.id IN (");
    let mut n = 1_000;
    while sql.len() + 8 < len {
        sql.push_str(&format!("{n}, "));
        n += 1;
    }
    sql.push_str("0)");
    while sql.len() < len {
        sql.insert(sql.len() - 1, ' ');
    }
    assert_eq!(sql.len(), len, "statement sizes are exact");
    sql
}

/// What a multi-thread measurement reads: wall time is what the service
/// waits; a thread's CPU time leaves out the time it was not running, which
/// on a machine shared with other work keeps the number about contention
/// rather than about the scheduler.
#[derive(Clone, Copy)]
enum Clock {
    Wall,
    ThreadCpu,
}

/// Runs `record` `iters` times on each of `threads` threads released
/// together and returns the slowest thread's time: per iteration, the cost of
/// one record while the other threads record too.
fn on_threads(threads: u64, clock: Clock, iters: u64, record: impl Fn(u64) + Sync) -> Duration {
    let start = Barrier::new(threads as usize);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..threads)
            .map(|t| {
                let (start, record) = (&start, &record);
                scope.spawn(move || {
                    start.wait();
                    let (wall, cpu) = (Instant::now(), ThreadTime::now());
                    for i in 0..iters {
                        record(i + t * 512);
                    }
                    match clock {
                        Clock::Wall => wall.elapsed(),
                        Clock::ThreadCpu => cpu.elapsed(),
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("bench thread"))
            .max()
            .expect("at least one thread")
    })
}

/// An agent as a service runs it: started on a Tokio runtime, with its
/// aggregator closing windows in the background. No collector listens on the
/// endpoint; the sender only retries now and then and is never on this path.
fn agent(runtime: &tokio::runtime::Runtime) -> Agent {
    let _entered = runtime.enter();
    Agent::builder("bench")
        .endpoint("http://127.0.0.1:9")
        .backoff(Duration::from_secs(30), Duration::from_secs(60))
        .start()
        .expect("agent starts")
}

fn known(c: &mut Criterion, agent: &Agent) {
    let sql_1k = statement(1024, 7);
    for (name, sql) in [("60B", SQL_60), ("1KB", sql_1k.as_str())] {
        agent.record_query(sql, latency(0), Outcome::OK);
        let mut i = 0u64;
        c.bench_function(&format!("known/{name}/1 thread"), |b| {
            b.iter(|| {
                i += 1;
                agent.record_query(black_box(sql), latency(i), Outcome::OK);
            })
        });
        c.bench_function(&format!("known/{name}/2 threads"), |b| {
            b.iter_custom(|iters| {
                on_threads(2, Clock::Wall, iters, |i| {
                    agent.record_query(black_box(sql), latency(i), Outcome::OK)
                })
            })
        });
        for (threads, label) in [(1, "1 thread"), (2, "2 threads")] {
            c.bench_function(&format!("known/{name}/{label}/thread CPU time"), |b| {
                b.iter_custom(|iters| {
                    on_threads(threads, Clock::ThreadCpu, iters, |i| {
                        agent.record_query(black_box(sql), latency(i), Outcome::OK)
                    })
                })
            });
        }
    }
}

fn first_sight(c: &mut Criterion, agent: &Agent) {
    let mut variant = 1_000_000u64;
    for (name, len) in [("100B", 100), ("1KB", 1024), ("10KB", 10 * 1024)] {
        // The normalizer's share of a first sight, for attribution.
        let sql = statement(len, 1);
        c.bench_function(&format!("first_sight/{name}/normalize only"), |b| {
            b.iter(|| normalize(black_box(&sql), Dialect::Generic))
        });
        c.bench_function(&format!("first_sight/{name}"), |b| {
            b.iter_batched(
                || {
                    variant += 1;
                    (statement(len, variant), latency(variant))
                },
                |(sql, elapsed)| {
                    agent.record_query(&sql, elapsed, Outcome::OK);
                    // Returned so that freeing it is not timed.
                    sql
                },
                BatchSize::SmallInput,
            )
        });
        // The same by this thread's CPU time: statements are made in chunks
        // outside the clock, then recorded under it.
        c.bench_function(&format!("first_sight/{name}/thread CPU time"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let chunk: Vec<String> = (0..(iters - done).min(256))
                        .map(|_| {
                            variant += 1;
                            statement(len, variant)
                        })
                        .collect();
                    let clock = ThreadTime::now();
                    for sql in &chunk {
                        agent.record_query(sql, latency(done), Outcome::OK);
                    }
                    spent += clock.elapsed();
                    done += chunk.len() as u64;
                }
                spent
            })
        });
    }
}

/// The macro is given literals (not the constants above) so that it builds
/// its key statically, its cheapest form.
fn metrics_rs(c: &mut Criterion) {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("first and only global recorder");
    // The exporter buffers raw samples until upkeep; run it as an installed
    // exporter would, so the buffers stay bounded.
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(5));
            handle.run_upkeep();
        }
    });
    let mut i = 0u64;
    c.bench_function("peers/metrics histogram! (macro)/1 thread", |b| {
        b.iter(|| {
            i += 1;
            metrics::histogram!("db_client_operation_duration_seconds", "fingerprint" => "3f2a9c0d1e4b5a67")
                .record(latency(i).as_secs_f64());
        })
    });
    c.bench_function("peers/metrics histogram! (macro)/2 threads", |b| {
        b.iter_custom(|iters| {
            on_threads(2, Clock::Wall, iters, |i| {
                metrics::histogram!("db_client_operation_duration_seconds", "fingerprint" => "3f2a9c0d1e4b5a67")
                    .record(latency(i).as_secs_f64())
            })
        })
    });
    let histogram = metrics::histogram!(METRIC, "fingerprint" => LABEL);
    c.bench_function("peers/metrics histogram! (cached handle)/1 thread", |b| {
        b.iter(|| {
            i += 1;
            histogram.record(latency(i).as_secs_f64());
        })
    });
}

fn prometheus_crate(c: &mut Criterion) {
    let histograms = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(METRIC, "Duration of database client operations."),
        &["fingerprint"],
    )
    .expect("valid histogram");
    let mut i = 0u64;
    c.bench_function("peers/prometheus HistogramVec observe/1 thread", |b| {
        b.iter(|| {
            i += 1;
            histograms.with_label_values(&[LABEL]).observe(latency(i).as_secs_f64());
        })
    });
    c.bench_function("peers/prometheus HistogramVec observe/2 threads", |b| {
        b.iter_custom(|iters| {
            on_threads(2, Clock::Wall, iters, |i| {
                histograms.with_label_values(&[LABEL]).observe(latency(i).as_secs_f64())
            })
        })
    });
}

fn opentelemetry_sdk(c: &mut Criterion) {
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::MeterProvider;

    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(opentelemetry_sdk::metrics::ManualReader::builder().build())
        .build();
    let histogram = provider
        .meter("bench")
        .f64_histogram("db.client.operation.duration")
        .build();
    let mut i = 0u64;
    c.bench_function("peers/opentelemetry histogram record/1 thread", |b| {
        b.iter(|| {
            i += 1;
            histogram.record(
                latency(i).as_secs_f64(),
                &[KeyValue::new("db.query.fingerprint", LABEL)],
            );
        })
    });
    c.bench_function("peers/opentelemetry histogram record/2 threads", |b| {
        b.iter_custom(|iters| {
            on_threads(2, Clock::Wall, iters, |i| {
                histogram.record(
                    latency(i).as_secs_f64(),
                    &[KeyValue::new("db.query.fingerprint", LABEL)],
                )
            })
        })
    });
}

fn recording(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let agent = agent(&runtime);
    known(c, &agent);
    first_sight(c, &agent);
    metrics_rs(c);
    prometheus_crate(c);
    opentelemetry_sdk(c);
}

criterion_group!(benches, recording);
criterion_main!(benches);
