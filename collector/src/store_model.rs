//! The store against an exact model.
//!
//! Random sequences of operations — groups of batches from several
//! instances with windows spread over several partitions of every tier,
//! resends, windows logged but not applied before a crash, restarts, clock
//! moves, memtable flushes and sealing passes (waited for, or left running
//! while more is written), a memtable of a few kilobytes — are applied to the real store. At random points
//! and at the end, every read path is compared with what an in-memory list
//! of the accepted batches says, bucket for bucket:
//!
//! - the summary of one statement, and of every statement of a service,
//!   over random ranges (aligned and not);
//! - series at raw, 1-minute and 1-hour steps, and steps that are multiples
//!   of them;
//! - the per-instance breakdown against the per-service series;
//! - pools and their health checks, as a summary and as series;
//! - what `/metrics` exports.
//!
//! The suite runs a bounded number of cases. A longer run:
//!
//! ```sh
//! QUERYPULSE_MODEL_CASES=2000 cargo test --release -p querypulse-collector --lib store_model
//! ```

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use querypulse_domain::source::{QueryFilter, Source, TimeRange};
use querypulse_domain::{
    Batch, Fingerprint, FingerprintText, Gauge, HealthCheckStats, Hello, PoolStats, QueryStats, Window,
};

use crate::adapters::source::StoreSource;
use querypulse_domain::clock::Clock;
use querypulse_store::Retention;
use querypulse_store::{ApplyOutcome, BatchRequest, Limits, Store, StoreWriter, Tier, floor, testing, tier_for_step};

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const WINDOW_MS: i64 = 10 * SECOND;
/// Hours of windows: the span crosses a boundary of raw (6 h), 1-minute
/// (1 day) and 1-hour (30 days) partitions, 8 hours in.
const HOURS: u8 = 16;
/// Window slots within an hour (10 s each): chunk and minute edges and
/// neighbours, so windows meet in rollups and ranges cut between them.
const SLOTS: [i64; 8] = [0, 1, 5, 6, 59, 60, 300, 359];
const INSTANCES: usize = 3;
const FINGERPRINTS: usize = 3;
const LATENCIES_US: [u64; 6] = [1, 7, 150, 1_000, 25_000, 2_000_000];

/// Start of the windows: 8 hours before a 30-day boundary, which is also a
/// day and a 6-hour boundary.
fn base() -> i64 {
    floor(1_790_000_000_000, 30 * DAY) + 30 * DAY - 8 * HOUR
}

fn service_of(instance: usize) -> &'static str {
    if instance < 2 { "svc-a" } else { "svc-b" }
}

fn text(fingerprint: usize) -> String {
    format!("select * from t{fingerprint} where id = ?")
}

fn fingerprint(index: usize) -> Fingerprint {
    Fingerprint::of_normalized(&text(index))
}

/// One batch as generated: which instance, which window, what it holds.
#[derive(Debug, Clone)]
struct Spec {
    instance: usize,
    hour: u8,
    slot: usize,
    /// (fingerprint, latency indexes, failed calls among them)
    queries: Vec<(usize, Vec<usize>, usize)>,
    /// (acquires, timeouts, in-use peak, wait µs index, health failures)
    pool: Option<(u64, u64, u32, usize, u64)>,
}

impl Spec {
    fn start_ms(&self) -> i64 {
        base() + i64::from(self.hour) * HOUR + SLOTS[self.slot] * WINDOW_MS
    }

    fn batch(&self, seq: u64) -> Batch {
        let mut batch = Batch::new(
            seq,
            Window {
                start_ms: self.start_ms(),
                length_ms: WINDOW_MS as u32,
            },
        );
        for (fp, latencies, failed) in &self.queries {
            let mut stats = QueryStats::new(fingerprint(*fp));
            for (i, l) in latencies.iter().enumerate() {
                let class = (i < *failed).then_some(if i % 2 == 0 { "40001" } else { "timeout" });
                stats.record(LATENCIES_US[*l], (i % 3) as u64, class);
            }
            batch.queries.push(stats);
        }
        if let Some((acquires, timeouts, peak, wait, failures)) = self.pool {
            let mut pool = PoolStats {
                pool: "main".into(),
                max_size: 10,
                in_use: Gauge { last: peak / 2, peak },
                idle: Gauge {
                    last: 10 - peak,
                    peak: 10 - peak / 2,
                },
                acquires,
                releases: acquires,
                timeouts,
                ..PoolStats::default()
            };
            pool.acquire_wait.record(LATENCIES_US[wait]);
            pool.hold_time.record_n(LATENCIES_US[wait] + 1, acquires);
            batch.pools.push(pool);
            let mut health = HealthCheckStats {
                pool: "main".into(),
                checks: 2,
                failures,
                last_check_ms: self.start_ms() + 5_000,
                last_ok: failures == 0,
                last_error: if failures == 0 {
                    String::new()
                } else {
                    format!("refused at {}", self.start_ms())
                },
                ..HealthCheckStats::default()
            };
            health.latency.record(LATENCIES_US[wait]);
            batch.health_checks.push(health);
        }
        batch
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Batches written in one group (one `write` call).
    Write(Vec<Spec>),
    /// An instance sends one of its accepted batches again.
    Resend { instance: usize, back: usize },
    /// A batch reaches the log, then the process dies before applying it.
    LoggedThenCrash(Spec),
    /// The clock moves forward.
    Advance { minutes: i64 },
    /// A maintenance pass; `wait` finishes the sealing it starts.
    Maintain { wait: bool },
    /// The memtable is flushed to the partitions: waited for, or left
    /// running in the background while the next operations go on.
    Flush { wait: bool },
    /// The collector stops and starts again.
    Restart,
    /// Every read path is compared with the model now.
    Check,
}

fn spec() -> impl Strategy<Value = Spec> {
    let query = (
        0..FINGERPRINTS,
        prop::collection::vec(0..LATENCIES_US.len(), 1..4),
        0..2usize,
    );
    (
        0..INSTANCES,
        0..HOURS,
        0..SLOTS.len(),
        prop::collection::vec(query, 0..3),
        prop::option::of((0..20u64, 0..3u64, 0..11u32, 0..LATENCIES_US.len(), 0..2u64)),
    )
        .prop_map(|(instance, hour, slot, queries, pool)| {
            // One entry per fingerprint, as an agent sends.
            let mut seen = HashSet::new();
            let queries = queries.into_iter().filter(|(fp, _, _)| seen.insert(*fp)).collect();
            Spec {
                instance,
                hour,
                slot,
                queries,
                pool,
            }
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(spec(), 1..6).prop_map(Op::Write),
        1 => (0..INSTANCES, 0..4usize).prop_map(|(instance, back)| Op::Resend { instance, back }),
        1 => spec().prop_map(Op::LoggedThenCrash),
        2 => prop_oneof![1..30i64, 60..400i64].prop_map(|minutes| Op::Advance { minutes }),
        3 => any::<bool>().prop_map(|wait| Op::Maintain { wait }),
        2 => any::<bool>().prop_map(|wait| Op::Flush { wait }),
        1 => Just(Op::Restart),
        1 => Just(Op::Check),
    ]
}

/// The accepted batches, by instance, in the order they were accepted, as
/// the store keeps them: a statement beyond the service's fingerprint cap
/// folded into `other`.
#[derive(Default)]
struct Model {
    accepted: Vec<(usize, Batch)>,
    sent: Vec<Vec<Batch>>,
    /// Fingerprints per service.
    cap: usize,
    /// Fingerprints with a series of their own, per service, in order seen.
    known: BTreeMap<&'static str, Vec<Fingerprint>>,
    /// Statements folded into `other`, per service.
    overflow: BTreeMap<&'static str, u64>,
}

impl Model {
    /// Records an accepted batch, folding what is beyond the cap.
    fn accept(&mut self, instance: usize, mut batch: Batch) {
        let service = service_of(instance);
        let known = self.known.entry(service).or_default();
        let mut kept: Vec<QueryStats> = Vec::new();
        let mut other: Option<QueryStats> = None;
        for stats in std::mem::take(&mut batch.queries) {
            if known.contains(&stats.fingerprint) || known.len() < self.cap {
                if !known.contains(&stats.fingerprint) {
                    known.push(stats.fingerprint);
                }
                kept.push(stats);
            } else {
                *self.overflow.entry(service).or_default() += 1;
                let folded = QueryStats {
                    fingerprint: Fingerprint::OTHER,
                    ..stats
                };
                match &mut other {
                    Some(o) => o.merge(&folded),
                    None => other = Some(folded),
                }
            }
        }
        kept.extend(other);
        batch.queries = kept;
        self.accepted.push((instance, batch));
    }

    fn batches(&self, service: &str) -> impl Iterator<Item = &Batch> {
        self.accepted
            .iter()
            .filter(move |(i, _)| service_of(*i) == service)
            .map(|(_, b)| b)
    }

    /// One statement of one service over the windows starting in `range`.
    fn query(&self, service: &str, fp: Fingerprint, keep: impl Fn(i64) -> bool) -> Option<QueryStats> {
        let mut out: Option<QueryStats> = None;
        for batch in self.batches(service).filter(|b| keep(b.window.start_ms)) {
            for stats in batch.queries.iter().filter(|s| s.fingerprint == fp) {
                match &mut out {
                    Some(o) => o.merge(stats),
                    None => out = Some(stats.clone()),
                }
            }
        }
        out.filter(|s| s.calls > 0)
    }
}

/// The store under test, and how to restart it.
struct Subject {
    dir: tempfile::TempDir,
    clock: Clock,
    limits: Limits,
    open: Option<(Store, StoreWriter)>,
}

fn retention() -> Retention {
    Retention {
        raw_seconds: 60 * 86_400,
        minute_seconds: 120 * 86_400,
        hour_seconds: 400 * 86_400,
        max_bytes: None,
    }
}

impl Subject {
    fn new(fingerprint_cap: usize, memtable_bytes: usize) -> Subject {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual(base() + i64::from(HOURS) * HOUR + 5 * MINUTE);
        let limits = Limits {
            max_fingerprints_per_service: fingerprint_cap,
            memtable_bytes,
            ..Limits::default()
        };
        let open = Store::open(dir.path(), retention(), limits, clock.clone()).unwrap();
        Subject {
            dir,
            clock,
            limits,
            open: Some(open),
        }
    }

    fn store(&self) -> &Store {
        &self.open.as_ref().expect("the store is open").0
    }

    fn writer(&mut self) -> &mut StoreWriter {
        &mut self.open.as_mut().expect("the store is open").1
    }

    /// Closes every database (as a stop does), then opens the store again.
    fn restart(&mut self) {
        drop(self.open.take());
        self.open = Some(Store::open(self.dir.path(), retention(), self.limits, self.clock.clone()).unwrap());
    }
}

fn request(instance: usize, batch: Batch) -> BatchRequest {
    let texts = batch
        .queries
        .iter()
        .map(|q| {
            let index = (0..FINGERPRINTS).find(|i| fingerprint(*i) == q.fingerprint).unwrap();
            FingerprintText {
                fingerprint: q.fingerprint,
                text: text(index),
            }
        })
        .collect();
    BatchRequest {
        hello: Arc::new(Hello {
            service: service_of(instance).into(),
            instance_id: format!("instance-{instance}"),
            ..Hello::default()
        }),
        batch,
        texts,
    }
}

fn run(
    ops: Vec<Op>,
    seed_ranges: Vec<(i64, i64)>,
    fingerprint_cap: usize,
    memtable_bytes: usize,
) -> Result<(), TestCaseError> {
    let mut subject = Subject::new(fingerprint_cap, memtable_bytes);
    let mut model = Model {
        sent: vec![Vec::new(); INSTANCES],
        cap: fingerprint_cap,
        ..Model::default()
    };
    let mut seqs = [0u64; INSTANCES];
    for op in ops {
        match op {
            Op::Write(specs) => {
                let mut requests = Vec::new();
                let mut batches = Vec::new();
                for spec in specs {
                    seqs[spec.instance] += 1;
                    let batch = spec.batch(seqs[spec.instance]);
                    batches.push((spec.instance, batch.clone()));
                    requests.push(request(spec.instance, batch));
                }
                let outcomes = subject.writer().write(requests).unwrap();
                for ((instance, batch), outcome) in batches.into_iter().zip(outcomes) {
                    prop_assert_eq!(outcome, ApplyOutcome::Applied);
                    model.sent[instance].push(batch.clone());
                    model.accept(instance, batch);
                }
            }
            Op::Resend { instance, back } => {
                let sent = &model.sent[instance];
                if let Some(batch) = sent.len().checked_sub(back + 1).map(|i| sent[i].clone()) {
                    let outcomes = subject.writer().write(vec![request(instance, batch)]).unwrap();
                    prop_assert_eq!(&outcomes, &vec![ApplyOutcome::Duplicate]);
                }
            }
            Op::LoggedThenCrash(spec) => {
                seqs[spec.instance] += 1;
                let batch = spec.batch(seqs[spec.instance]);
                let mut texts = request(spec.instance, batch.clone()).texts;
                let mut logged = batch.clone();
                // A text the store already holds is not logged again.
                texts.retain(|t| subject.store().text(t.fingerprint).unwrap().is_none());
                logged.texts = texts;
                let received_ms = subject.clock.now_ms();
                testing::log_without_applying(
                    subject.writer(),
                    service_of(spec.instance),
                    &format!("instance-{}", spec.instance),
                    logged,
                    received_ms,
                )
                .unwrap();
                // Dropped without applying: what a crash after the fsync
                // leaves. The restart replays it.
                subject.restart();
                model.sent[spec.instance].push(batch.clone());
                model.accept(spec.instance, batch);
            }
            Op::Advance { minutes } => subject.clock.advance(minutes * MINUTE),
            Op::Maintain { wait } => {
                subject.writer().maintain().unwrap();
                if wait {
                    testing::wait_for_sealing(subject.writer()).unwrap();
                }
            }
            Op::Flush { wait: true } => subject.writer().checkpoint().unwrap(),
            Op::Flush { wait: false } => testing::start_flush(subject.writer()).unwrap(),
            Op::Restart => subject.restart(),
            Op::Check => check(subject.store(), &model, &seed_ranges)?,
        }
    }
    check(subject.store(), &model, &seed_ranges)?;
    // Flushing and sealing of everything, then again.
    subject.clock.advance(2 * DAY);
    subject.writer().checkpoint().unwrap();
    for _ in 0..4 {
        subject.writer().maintain().unwrap();
        testing::wait_for_sealing(subject.writer()).unwrap();
    }
    check(subject.store(), &model, &seed_ranges)?;
    subject.restart();
    check(subject.store(), &model, &seed_ranges)?;
    let report = querypulse_store::verify(subject.store());
    prop_assert!(report.is_clean(), "verify found: {}", report);
    Ok(())
}

fn ranges(seed_ranges: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let whole = (base() - HOUR, base() + i64::from(HOURS) * HOUR + HOUR);
    let mut out = vec![whole, (base() + 8 * HOUR, base() + 9 * HOUR)];
    for (a, b) in seed_ranges {
        let (a, b) = (base() + a.min(b), base() + a.max(b) + 1);
        out.push((a, b));
    }
    out
}

fn check(store: &Store, model: &Model, seed_ranges: &[(i64, i64)]) -> Result<(), TestCaseError> {
    let source = StoreSource::new(store.clone());
    // Statements folded into `other` by the cap, counted once each.
    for (name, _, _, overflow) in store.services() {
        let expected = model.overflow.get(name.as_str()).copied().unwrap_or(0);
        prop_assert_eq!(overflow, expected, "statements of {} folded into other", name);
    }
    for (from, to) in ranges(seed_ranges) {
        let within = |t: i64| (from..to).contains(&t);
        let mut exported = Vec::new();
        for service in ["svc-a", "svc-b"] {
            let Some(id) = store.service_id(service) else {
                prop_assert!(model.batches(service).next().is_none(), "{service} is missing");
                continue;
            };
            // Summaries: one statement, and every statement of the service.
            let mut all = store.query_stats(id, from, to).unwrap();
            all.sort_by_key(|s| s.fingerprint);
            let mut expected_all = Vec::new();
            // A fingerprint beyond the cap has no series: its calls are in
            // `other`.
            for fp in (0..FINGERPRINTS).map(fingerprint).chain([Fingerprint::OTHER]) {
                let expected = model.query(service, fp, within);
                let got = store.query(id, fp, from, to).unwrap();
                prop_assert_eq!(&got, &expected, "summary of {} {} over [{}, {})", service, fp, from, to);
                expected_all.extend(expected);
                // Series at every resolution.
                for step in [10 * SECOND, 30 * SECOND, MINUTE, 5 * MINUTE, HOUR, 2 * HOUR] {
                    // Steps are of the asked statement: they do not repeat its
                    // fingerprint.
                    let got = store.query_steps(id, fp, from, to, step).unwrap();
                    let mut expected = model_steps(model, service, fp, from, to, step);
                    for (_, s) in &mut expected {
                        s.fingerprint = Fingerprint::OTHER;
                    }
                    prop_assert_eq!(
                        &got,
                        &expected,
                        "series of {} {} at {} ms over [{}, {})",
                        service,
                        fp,
                        step,
                        from,
                        to
                    );
                }
                // Per instance against the model, so also against the service.
                let mut got: Vec<(String, u64, u64, u64, u64)> = store
                    .instance_breakdown(service, fp, from, to)
                    .unwrap()
                    .into_iter()
                    .map(|(i, q)| (i.instance_id, q.calls, q.errors, q.rows, q.sum_us))
                    .collect();
                got.sort();
                let mut expected = Vec::new();
                for instance in (0..INSTANCES).filter(|i| service_of(*i) == service) {
                    let mut one: Option<QueryStats> = None;
                    for (_, b) in model
                        .accepted
                        .iter()
                        .filter(|(i, b)| *i == instance && within(b.window.start_ms))
                    {
                        for s in b.queries.iter().filter(|s| s.fingerprint == fp) {
                            match &mut one {
                                Some(o) => o.merge(s),
                                None => one = Some(s.clone()),
                            }
                        }
                    }
                    if let Some(s) = one.filter(|s| s.calls > 0) {
                        expected.push((format!("instance-{instance}"), s.calls, s.errors, s.rows, s.sum_us));
                    }
                }
                prop_assert_eq!(
                    &got,
                    &expected,
                    "instances of {} {} over [{}, {})",
                    service,
                    fp,
                    from,
                    to
                );
            }
            expected_all.sort_by_key(|s| s.fingerprint);
            prop_assert_eq!(
                &all,
                &expected_all,
                "every statement of {} over [{}, {})",
                service,
                from,
                to
            );
            // The service's total series: every statement merged.
            let mut expected_total: Option<QueryStats> = None;
            for stats in &expected_all {
                match &mut expected_total {
                    Some(total) => total.merge(stats),
                    None => expected_total = Some(stats.clone()),
                }
            }
            if let Some(total) = &mut expected_total {
                total.fingerprint = Fingerprint::OTHER;
            }
            let got_total = store.service_stats(id, from, to).unwrap();
            prop_assert_eq!(
                &got_total,
                &expected_total,
                "every statement of {} merged over [{}, {})",
                service,
                from,
                to
            );
            exported.extend(expected_all.into_iter().map(|s| (service, s)));
        }
        check_metrics(&source, &exported, from, to)?;
        check_pools(store, model, from, to)?;
    }
    Ok(())
}

/// What the model says a series at `step_ms` holds: windows of the
/// resolution the step uses, from `from` aligned down to it.
fn model_steps(
    model: &Model,
    service: &str,
    fp: Fingerprint,
    from: i64,
    to: i64,
    step_ms: i64,
) -> Vec<(i64, QueryStats)> {
    let tier = tier_for_step(step_ms);
    let from = tier.window_ms().map_or(from, |len| floor(from, len));
    let mut steps: BTreeMap<i64, QueryStats> = BTreeMap::new();
    for batch in model.batches(service) {
        let at = tier.align(batch.window.start_ms);
        if !(from..to).contains(&at) {
            continue;
        }
        let bucket = from + floor(at - from, step_ms);
        for stats in batch.queries.iter().filter(|s| s.fingerprint == fp) {
            match steps.get_mut(&bucket) {
                Some(existing) => existing.merge(stats),
                None => {
                    steps.insert(bucket, stats.clone());
                }
            }
        }
    }
    steps.into_iter().collect()
}

/// The numbers `/metrics` exports come from the same summaries; render them
/// and read the calls back.
fn check_metrics(
    source: &StoreSource,
    expected: &[(&str, QueryStats)],
    from: i64,
    to: i64,
) -> Result<(), TestCaseError> {
    let range = TimeRange {
        from_ms: from,
        to_ms: to,
    };
    let queries = source.queries(&QueryFilter { service: None, range }).unwrap();
    let body = crate::http::metrics::render(crate::http::metrics::Scrape {
        window_s: (to - from) / 1_000,
        limit: usize::MAX,
        now_ms: to,
        queries,
        pools: source.pools(range).unwrap(),
        agents: Vec::new(),
        store: None,
        remote_write: Vec::new(),
    });
    let mut got: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("querypulse_query_calls{") || l.starts_with("querypulse_query_errors{"))
        .map(str::to_owned)
        .collect();
    got.sort();
    let mut want: Vec<String> = expected
        .iter()
        .flat_map(|(service, s)| {
            [("calls", s.calls), ("errors", s.errors)].map(|(name, value)| {
                format!(
                    "querypulse_query_{name}{{service=\"{service}\",fingerprint=\"{}\"}} {value}",
                    s.fingerprint
                )
            })
        })
        .collect();
    want.sort();
    prop_assert_eq!(got, want, "/metrics over [{}, {})", from, to);
    Ok(())
}

/// A pool's statistics whole — counters, peaks, histograms and the last
/// values of the newest window — without its name (kept in the series).
fn pool_counters(p: &PoolStats) -> PoolStats {
    PoolStats {
        pool: String::new(),
        ..p.clone()
    }
}

fn health_counters(h: &HealthCheckStats) -> HealthCheckStats {
    HealthCheckStats {
        pool: String::new(),
        ..h.clone()
    }
}

fn check_pools(store: &Store, model: &Model, from: i64, to: i64) -> Result<(), TestCaseError> {
    let within = |t: i64| (from..to).contains(&t);
    let mut got: Vec<_> = store
        .pools(from, to)
        .unwrap()
        .into_iter()
        .map(|p| {
            (
                p.instance_id,
                pool_counters(&p.stats),
                p.health.as_ref().map(health_counters),
                p.last_window_ms,
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = Vec::new();
    for instance in 0..INSTANCES {
        let mut pool: Option<(PoolStats, i64)> = None;
        let mut health: Option<HealthCheckStats> = None;
        let mut windows: Vec<&Batch> = model
            .accepted
            .iter()
            .filter(|(i, b)| *i == instance && within(b.window.start_ms) && !b.pools.is_empty())
            .map(|(_, b)| b)
            .collect();
        windows.sort_by_key(|b| b.window.start_ms);
        for b in windows {
            match &mut pool {
                Some((p, last)) => {
                    p.merge_later(&b.pools[0]);
                    *last = b.window.start_ms;
                }
                None => pool = Some((b.pools[0].clone(), b.window.start_ms)),
            }
            match &mut health {
                Some(h) => h.merge_later(&b.health_checks[0]),
                None => health = Some(b.health_checks[0].clone()),
            }
        }
        if let Some((p, last)) = pool {
            // A window's start, at the resolution that covered it.
            expected.push((
                format!("instance-{instance}"),
                pool_counters(&p),
                health.as_ref().map(health_counters),
                last,
            ));
        }
    }
    // The last window is reported at the resolution the range used there:
    // compare it rounded to that resolution.
    let align = |t: i64| {
        let tier = testing::cover(from, to)
            .into_iter()
            .find(|(_, a, b)| (*a..*b).contains(&t))
            .map_or(Tier::Raw, |(tier, _, _)| tier);
        tier.align(t)
    };
    for e in &mut expected {
        e.3 = align(e.3);
    }
    prop_assert_eq!(got, expected, "pools over [{}, {})", from, to);

    for instance in 0..INSTANCES {
        let id = format!("instance-{instance}");
        for step in [10 * SECOND, MINUTE, HOUR] {
            let got = store.pool_steps(&id, "main", from, to, step).unwrap();
            let tier = tier_for_step(step);
            let start = tier.window_ms().map_or(from, |len| floor(from, len));
            let mut pools: BTreeMap<i64, PoolStats> = BTreeMap::new();
            let mut healths: BTreeMap<i64, HealthCheckStats> = BTreeMap::new();
            let mut windows: Vec<&Batch> = model
                .accepted
                .iter()
                .filter(|(i, b)| *i == instance && !b.pools.is_empty())
                .map(|(_, b)| b)
                .filter(|b| (start..to).contains(&tier.align(b.window.start_ms)))
                .collect();
            windows.sort_by_key(|b| b.window.start_ms);
            for b in windows {
                let bucket = start + floor(tier.align(b.window.start_ms) - start, step);
                match pools.get_mut(&bucket) {
                    Some(p) => p.merge_later(&b.pools[0]),
                    None => {
                        pools.insert(bucket, b.pools[0].clone());
                    }
                }
                match healths.get_mut(&bucket) {
                    Some(h) => h.merge_later(&b.health_checks[0]),
                    None => {
                        healths.insert(bucket, b.health_checks[0].clone());
                    }
                }
            }
            let got = got.map(|(p, h)| {
                (
                    p.iter().map(|(t, p)| (*t, pool_counters(p))).collect::<Vec<_>>(),
                    h.iter().map(|(t, h)| (*t, health_counters(h))).collect::<Vec<_>>(),
                )
            });
            let expected = (
                pools.iter().map(|(t, p)| (*t, pool_counters(p))).collect::<Vec<_>>(),
                healths
                    .iter()
                    .map(|(t, h)| (*t, health_counters(h)))
                    .collect::<Vec<_>>(),
            );
            match got {
                Some(got) => prop_assert_eq!(got, expected, "pool series of {} at {} ms", id, step),
                None => prop_assert!(pools.is_empty(), "pool series of {} missing", id),
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("QUERYPULSE_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_read_path_equals_the_exact_model(
        ops in prop::collection::vec(op(), 1..40),
        seed_ranges in prop::collection::vec((0..i64::from(HOURS) * HOUR, 0..i64::from(HOURS) * HOUR), 2),
        fingerprint_cap in prop_oneof![Just(2usize), Just(Limits::default().max_fingerprints_per_service)],
        // A memtable of a few kilobytes flushes early and makes writers
        // wait for flushes all the time.
        memtable_bytes in prop_oneof![Just(4usize << 10), Just(Limits::default().memtable_bytes)],
    ) {
        run(ops, seed_ranges, fingerprint_cap, memtable_bytes)?;
    }
}
