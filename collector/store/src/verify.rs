//! Checks that the store agrees with itself (`querypulse verify`).
//!
//! Every number is kept at several resolutions and breakdowns, written
//! together; after an incident an operator wants to know they still agree:
//!
//! - **rollups**: per series, the raw windows of each held span add up to
//!   its 1-minute windows, and those to its 1-hour windows (counts, sums,
//!   extremes and histograms exactly, bucket for bucket; sums of squares,
//!   which are floating point and add up in another order at each
//!   resolution, to within one part in 10⁹);
//! - **services and instances**: in every raw and 1-minute window, a
//!   service's statement counters equal the sum of its instances', and its
//!   total series equals the sum of its statements;
//! - **sealed blocks**: every block of every sealed partition reads, its
//!   checksum matches and every value in it decodes.
//!
//! A span is checked where both resolutions still hold it (retention drops
//! the finest first). A collector that is running writes while the check
//! reads, so [`verify_settled`] looks again at what disagrees before
//! reporting it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use querypulse_domain::{HealthCheckStats, LatencyHistogram, PoolStats, QueryStats};
use serde::{Deserialize, Serialize};

use super::codec::{InstanceQueries, TimedPool, WindowValue, decode_chunk, decode_slow, key};
use super::partition::{Partition, Tier, floor};
use super::registry::SeriesKey;
use super::{Store, StoreError};

/// One disagreement: which check, on what, where, and the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// `rollup raw→1m`, `rollup 1m→1h`, `service vs instances (raw)`,
    /// `service total vs statements (raw)`,
    /// `sealed block`, `damaged files` (found as the store opened), …
    pub check: String,
    /// The series (service and fingerprint, instance and pool) or partition.
    pub subject: String,
    /// Start of the span, Unix epoch milliseconds.
    pub from_ms: i64,
    /// End of the span (exclusive).
    pub to_ms: i64,
    /// What disagrees.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} in [{}, {}): {}",
            self.check,
            self.subject,
            time_text(self.from_ms),
            time_text(self.to_ms),
            self.detail
        )
    }
}

fn time_text(ms: i64) -> String {
    match querypulse_domain::rfc3339(ms) {
        text if text.is_empty() => ms.to_string(),
        text => text,
    }
}

/// What was checked, and what disagreed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyReport {
    /// Series whose rollups were compared.
    pub series: usize,
    /// Windows read.
    pub windows: u64,
    /// Sealed partitions read block by block.
    pub sealed_partitions: usize,
    /// Entries of those partitions decoded.
    pub sealed_entries: u64,
    /// Every disagreement found.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether nothing disagreed.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        write!(
            f,
            "{} series, {} windows, {} sealed partitions ({} entries) checked: {}",
            self.series,
            self.windows,
            self.sealed_partitions,
            self.sealed_entries,
            match self.problems.len() {
                0 => "everything agrees".to_owned(),
                n => format!("{n} disagreements"),
            }
        )
    }
}

/// One piece of the check, small enough to look at again.
#[derive(Debug, Clone)]
enum Unit {
    /// One series: windows of `fine` in one partition span against the
    /// next coarser resolution.
    Rollup {
        series: u32,
        key: SeriesKey,
        fine: Tier,
        from: i64,
        to: i64,
    },
    /// One service in one partition span of `tier`.
    Service {
        service: u32,
        tier: Tier,
        from: i64,
        to: i64,
    },
    /// One sealed partition.
    Sealed { tier: Tier, start: i64 },
}

/// Checks `store` once, as it is: for a store nobody writes to. A part that
/// cannot be read is reported as a problem.
pub fn verify(store: &Store) -> VerifyReport {
    verify_settled(store, 0, Duration::ZERO)
}

/// Checks `store` while a collector may be writing to it: a piece that
/// disagrees is looked at again up to `retries` times, `pause` apart, and
/// reported only if it still disagrees (a group of batches reaches the
/// resolutions one after the other, so a read between them sees them
/// differ for a moment).
pub fn verify_settled(store: &Store, retries: u32, pause: Duration) -> VerifyReport {
    let mut report = VerifyReport::default();
    // What the store found damaged as it opened (and left out or lost).
    for damage in store.problems() {
        report.problems.push(Problem {
            check: "damaged files".into(),
            subject: "store".into(),
            from_ms: 0,
            to_ms: 0,
            detail: damage,
        });
    }
    let units = units(store);
    report.series = store
        .registry()
        .all_series()
        .iter()
        .filter(|(_, k)| !matches!(k, SeriesKey::InstanceQueries { .. }))
        .count();
    for unit in units {
        let mut problems = check_or_report(store, &unit, &mut report);
        let mut attempt = 0;
        while !problems.is_empty() && attempt < retries {
            attempt += 1;
            std::thread::sleep(pause);
            let mut scratch = VerifyReport::default();
            problems = check_or_report(store, &unit, &mut scratch);
        }
        report.problems.extend(problems);
    }
    report
}

/// The problems of one unit; a read that fails (a damaged block, a value
/// that does not decode) is itself a problem, and the check goes on.
fn check_or_report(store: &Store, unit: &Unit, report: &mut VerifyReport) -> Vec<Problem> {
    match check(store, unit, report) {
        Ok(problems) => problems,
        Err(error) => {
            let (check, subject, from_ms, to_ms) = match unit {
                Unit::Rollup {
                    key, fine, from, to, ..
                } => (format!("rollup {}", fine.name()), describe(store, key), *from, *to),
                Unit::Service {
                    service,
                    tier,
                    from,
                    to,
                } => (
                    format!("service vs instances ({})", tier.name()),
                    store.registry().service_name(*service).unwrap_or_default(),
                    *from,
                    *to,
                ),
                Unit::Sealed { tier, start } => (
                    "sealed block".to_owned(),
                    format!("{} partition {}", tier.name(), time_text(*start)),
                    *start,
                    *start + tier.partition_ms(),
                ),
            };
            vec![Problem {
                check,
                subject,
                from_ms,
                to_ms,
                detail: format!("cannot be read: {error}"),
            }]
        }
    }
}

fn next(tier: Tier) -> Option<Tier> {
    match tier {
        Tier::Raw => Some(Tier::Minute),
        Tier::Minute => Some(Tier::Hour),
        Tier::Hour => None,
    }
}

fn units(store: &Store) -> Vec<Unit> {
    let partitions = store.partitions().all();
    let series = store.registry().all_series();
    let services = store.registry().services();
    // Partitions on disk, and those the memtable holds windows of so far.
    let mut spans: BTreeSet<(Tier, i64)> = partitions.iter().map(|p| (p.tier, p.start_ms)).collect();
    for raw in store.tables().all_raw_parts() {
        for tier in Tier::ALL {
            spans.insert((tier, floor(raw, tier.partition_ms())));
        }
    }
    let mut units = Vec::new();
    for partition in partitions.iter().filter(|p| p.is_sealed()) {
        units.push(Unit::Sealed {
            tier: partition.tier,
            start: partition.start_ms,
        });
    }
    for &(tier, from) in &spans {
        let to = from + tier.partition_ms();
        // Fine partitions nest in coarse ones: compare where both are held.
        if let Some(coarse) = next(tier)
            && spans.contains(&(coarse, floor(from, coarse.partition_ms())))
        {
            for (id, key) in &series {
                let per_instance = matches!(key, SeriesKey::InstanceQueries { .. });
                // Per-instance counters are kept at raw and 1-minute only.
                if per_instance && coarse == Tier::Hour {
                    continue;
                }
                units.push(Unit::Rollup {
                    series: *id,
                    key: key.clone(),
                    fine: tier,
                    from,
                    to,
                });
            }
        }
        if tier != Tier::Hour {
            for (_, service) in &services {
                units.push(Unit::Service {
                    service: *service,
                    tier,
                    from,
                    to,
                });
            }
        }
    }
    units
}

fn check(store: &Store, unit: &Unit, report: &mut VerifyReport) -> Result<Vec<Problem>, StoreError> {
    match unit {
        Unit::Rollup {
            series,
            key,
            fine,
            from,
            to,
        } => {
            let coarse = next(*fine).expect("rollup units have a coarser tier");
            let check = format!("rollup {}→{}", fine.name(), coarse.name());
            let subject = describe(store, key);
            let span = Span {
                check: &check,
                subject: &subject,
            };
            match key {
                SeriesKey::Query { .. } | SeriesKey::Service { .. } => {
                    rollup::<QueryStats>(store, *series, *fine, coarse, *from, *to, &span, report, query_digest)
                }
                SeriesKey::InstanceQueries { .. } => {
                    rollup::<InstanceQueries>(store, *series, *fine, coarse, *from, *to, &span, report, |v| {
                        Digest::exact(format!("{:?}", v.0))
                    })
                }
                SeriesKey::Pool { .. } => {
                    rollup::<TimedPool>(store, *series, *fine, coarse, *from, *to, &span, report, |p| {
                        pool_digest(&p.stats)
                    })
                }
                SeriesKey::Health { .. } => {
                    rollup::<HealthCheckStats>(store, *series, *fine, coarse, *from, *to, &span, report, |h| {
                        Digest::with_histograms(format!("checks {} failures {}", h.checks, h.failures), &[&h.latency])
                    })
                }
            }
        }
        Unit::Service {
            service,
            tier,
            from,
            to,
        } => service_against_instances(store, *service, *tier, *from, *to, report),
        Unit::Sealed { tier, start } => match store.partitions().get(*tier, *start) {
            Some(partition) => sealed(store, &partition, report),
            None => Ok(Vec::new()),
        },
    }
}

/// What must agree between resolutions: exact text, and a floating-point
/// sum compared to within one part in 10⁹.
#[derive(Debug, Clone, PartialEq)]
struct Digest {
    /// What is shown: counters, and a histogram's total.
    shown: String,
    /// Histogram buckets, compared but not shown.
    buckets: Vec<Vec<(u16, u64)>>,
    approximate: f64,
}

impl Digest {
    fn exact(shown: String) -> Digest {
        Digest {
            shown,
            buckets: Vec::new(),
            approximate: 0.0,
        }
    }

    fn with_histograms(shown: String, histograms: &[&LatencyHistogram]) -> Digest {
        let counts: Vec<String> = histograms.iter().map(|h| h.count().to_string()).collect();
        Digest {
            shown: format!("{shown} histogram counts {}", counts.join("/")),
            buckets: histograms.iter().map(|h| h.indexed_buckets().to_vec()).collect(),
            approximate: 0.0,
        }
    }

    fn agrees(&self, other: &Digest) -> bool {
        let scale = self.approximate.abs().max(other.approximate.abs()).max(1.0);
        self.shown == other.shown
            && self.buckets == other.buckets
            && (self.approximate - other.approximate).abs() <= scale * 1e-9
    }

    /// How the two differ, where the shown parts are the same.
    fn difference(&self, other: &Digest) -> &'static str {
        if self.shown != other.shown {
            ""
        } else if self.buckets != other.buckets {
            " (histogram buckets differ)"
        } else {
            " (sums of squares differ)"
        }
    }
}

fn query_digest(q: &QueryStats) -> Digest {
    let classes: Vec<String> = q
        .error_classes
        .iter()
        .map(|c| format!("{} {}", c.class, c.count))
        .collect();
    let mut digest = Digest::with_histograms(
        format!(
            "calls {} errors {} [{}] rows {} sum_us {} min_us {} max_us {} outliers {}",
            q.calls,
            q.errors,
            classes.join(", "),
            q.rows,
            q.sum_us,
            q.min_us,
            q.max_us,
            q.outliers
        ),
        &[&q.latency],
    );
    digest.approximate = q.sum_squares_us;
    digest
}

fn pool_digest(p: &PoolStats) -> Digest {
    Digest::with_histograms(
        format!(
            "acquires {} releases {} timeouts {} errors {} created {} closed {} leaks {} peaks size {} idle {} in use {} waiting {}",
            p.acquires,
            p.releases,
            p.timeouts,
            p.errors,
            p.connections_created,
            p.connections_closed,
            p.leaks,
            p.size.peak,
            p.idle.peak,
            p.in_use.peak,
            p.waiting.peak
        ),
        &[&p.acquire_wait, &p.hold_time],
    )
}

struct Span<'a> {
    check: &'a str,
    subject: &'a str,
}

#[allow(clippy::too_many_arguments)]
fn rollup<V: super::memtable::Buffer>(
    store: &Store,
    series: u32,
    fine: Tier,
    coarse: Tier,
    from: i64,
    to: i64,
    span: &Span<'_>,
    report: &mut VerifyReport,
    digest: impl Fn(&V) -> Digest,
) -> Result<Vec<Problem>, StoreError> {
    let mut summed: BTreeMap<i64, V> = BTreeMap::new();
    for (at, value) in store.windows::<V>(fine, series, from, to)? {
        report.windows += 1;
        match summed.get_mut(&coarse.align(at)) {
            Some(existing) => existing.merge(&value),
            None => {
                summed.insert(coarse.align(at), value);
            }
        }
    }
    let held: BTreeMap<i64, V> = store.windows::<V>(coarse, series, from, to)?.into_iter().collect();
    report.windows += held.len() as u64;
    let mut problems = Vec::new();
    let times: std::collections::BTreeSet<i64> = summed.keys().chain(held.keys()).copied().collect();
    let window_ms = coarse.window_ms().unwrap_or(0);
    for at in times {
        let (a, b) = (summed.get(&at).map(&digest), held.get(&at).map(&digest));
        let agree = match (&a, &b) {
            (Some(a), Some(b)) => a.agrees(b),
            _ => false,
        };
        if !agree {
            problems.push(Problem {
                check: span.check.to_owned(),
                subject: span.subject.to_owned(),
                from_ms: at,
                to_ms: at + window_ms,
                detail: format!(
                    "{} windows add up to {}; the {} window holds {}{}",
                    fine.name(),
                    a.as_ref().map_or("nothing", |d| d.shown.as_str()),
                    coarse.name(),
                    b.as_ref().map_or("nothing", |d| d.shown.as_str()),
                    match (&a, &b) {
                        (Some(a), Some(b)) => a.difference(b),
                        _ => "",
                    }
                ),
            });
        }
    }
    Ok(problems)
}

type Counters = (u64, u64, u64, u64);

fn service_against_instances(
    store: &Store,
    service: u32,
    tier: Tier,
    from: i64,
    to: i64,
    report: &mut VerifyReport,
) -> Result<Vec<Problem>, StoreError> {
    let registry = store.registry();
    let Some(name) = registry.service_name(service) else {
        return Ok(Vec::new());
    };
    let mut instances: BTreeMap<(i64, u32), Counters> = BTreeMap::new();
    for instance in registry.instances().into_iter().filter(|i| i.service == name) {
        let Some(id) = registry.series_id(&SeriesKey::InstanceQueries {
            instance: instance.instance_id.clone(),
        }) else {
            continue;
        };
        for (at, record) in store.windows::<InstanceQueries>(tier, id, from, to)? {
            report.windows += 1;
            for q in record.0 {
                let sum = instances.entry((at, q.series)).or_default();
                *sum = (sum.0 + q.calls, sum.1 + q.errors, sum.2 + q.rows, sum.3 + q.sum_us);
            }
        }
    }
    let mut services: BTreeMap<(i64, u32), Counters> = BTreeMap::new();
    let mut fingerprints = BTreeMap::new();
    for (fingerprint, id) in registry.query_series(service) {
        fingerprints.insert(id, fingerprint);
        for (at, q) in store.windows::<QueryStats>(tier, id, from, to)? {
            report.windows += 1;
            services.insert((at, id), (q.calls, q.errors, q.rows, q.sum_us));
        }
    }
    let mut problems = Vec::new();
    // The service's total series: its statements added up, window by window
    // (kept since `service_totals_since`).
    if let Some(total) = registry.series_id(&SeriesKey::Service { service }) {
        let since = store.shared.service_totals_since;
        let mut statements: BTreeMap<i64, Counters> = BTreeMap::new();
        for (&(at, _), c) in services.range((since, 0)..) {
            let sum = statements.entry(at).or_default();
            *sum = (sum.0 + c.0, sum.1 + c.1, sum.2 + c.2, sum.3 + c.3);
        }
        let mut totals: BTreeMap<i64, Counters> = BTreeMap::new();
        for (at, q) in store.windows::<QueryStats>(tier, total, from.max(since), to)? {
            report.windows += 1;
            totals.insert(at, (q.calls, q.errors, q.rows, q.sum_us));
        }
        let times: BTreeSet<i64> = statements.keys().chain(totals.keys()).copied().collect();
        for at in times {
            let zero = (0, 0, 0, 0);
            let (t, s) = (
                totals.get(&at).copied().unwrap_or(zero),
                statements.get(&at).copied().unwrap_or(zero),
            );
            if t != s {
                problems.push(Problem {
                    check: format!("service total vs statements ({})", tier.name()),
                    subject: name.clone(),
                    from_ms: at,
                    to_ms: at + tier.window_ms().unwrap_or(0),
                    detail: format!(
                        "the total has calls {} errors {} rows {} sum_us {}; the statements add up to calls {} errors {} rows {} sum_us {}",
                        t.0, t.1, t.2, t.3, s.0, s.1, s.2, s.3
                    ),
                });
            }
        }
    }
    let keys: std::collections::BTreeSet<(i64, u32)> = instances.keys().chain(services.keys()).copied().collect();
    for (at, id) in keys {
        let zero = (0, 0, 0, 0);
        let (s, i) = (
            services.get(&(at, id)).copied().unwrap_or(zero),
            instances.get(&(at, id)).copied().unwrap_or(zero),
        );
        if s != i {
            let fingerprint = fingerprints
                .get(&id)
                .map_or_else(|| format!("series {id}"), |f| f.to_string());
            problems.push(Problem {
                check: format!("service vs instances ({})", tier.name()),
                subject: format!("{name} {fingerprint}"),
                from_ms: at,
                to_ms: at + tier.window_ms().unwrap_or(0),
                detail: format!(
                    "the service has calls {} errors {} rows {} sum_us {}; its instances add up to calls {} errors {} rows {} sum_us {}",
                    s.0, s.1, s.2, s.3, i.0, i.1, i.2, i.3
                ),
            });
        }
    }
    Ok(problems)
}

/// Reads every block of a sealed partition and decodes every value in it.
fn sealed(store: &Store, partition: &Partition, report: &mut VerifyReport) -> Result<Vec<Problem>, StoreError> {
    report.sealed_partitions += 1;
    let registry = store.registry();
    let problem = |detail: String| Problem {
        check: "sealed block".into(),
        subject: format!("{} partition {}", partition.tier.name(), time_text(partition.start_ms)),
        from_ms: partition.start_ms,
        to_ms: partition.end_ms(),
        detail,
    };
    let mut problems = Vec::new();
    for entry in partition.sealed_entries() {
        let (k, v) = match entry {
            Ok(entry) => entry,
            Err(error) => {
                problems.push(problem(format!("a block does not read: {error}")));
                continue;
            }
        };
        report.sealed_entries += 1;
        let decoded = match k.first() {
            Some(b'w') => match key::parse_window(&k) {
                Some((series, at, kind)) => decode_window(registry.series(series), kind, &v)
                    .map_err(|e| format!("window of series {series} at {}: {e}", time_text(at))),
                None => Err("a window key has the wrong length".into()),
            },
            Some(b'q') => decode_slow(&v).map(|_| ()).map_err(|e| format!("slow sample: {e}")),
            _ => Ok(()),
        };
        if let Err(detail) = decoded {
            problems.push(problem(detail));
        }
    }
    Ok(problems)
}

fn decode_window(series: Option<SeriesKey>, kind: u8, bytes: &[u8]) -> Result<(), StoreError> {
    fn one<V: WindowValue>(kind: u8, bytes: &[u8]) -> Result<(), StoreError> {
        if kind == key::CHUNK {
            decode_chunk::<V>(bytes).map(|_| ())
        } else {
            V::decode(bytes).map(|_| ())
        }
    }
    match series {
        Some(SeriesKey::Query { .. } | SeriesKey::Service { .. }) => one::<QueryStats>(kind, bytes),
        Some(SeriesKey::InstanceQueries { .. }) => one::<InstanceQueries>(kind, bytes),
        Some(SeriesKey::Pool { .. }) => one::<TimedPool>(kind, bytes),
        Some(SeriesKey::Health { .. }) => one::<HealthCheckStats>(kind, bytes),
        None => Err(StoreError::Corrupt("the series is not in the registry".into())),
    }
}

fn describe(store: &Store, key: &SeriesKey) -> String {
    match key {
        SeriesKey::Query { service, fingerprint } => format!(
            "{} {fingerprint}",
            store
                .registry()
                .service_name(*service)
                .unwrap_or_else(|| format!("service {service}"))
        ),
        SeriesKey::Service { service } => format!(
            "{} (every statement)",
            store
                .registry()
                .service_name(*service)
                .unwrap_or_else(|| format!("service {service}"))
        ),
        SeriesKey::InstanceQueries { instance } => format!("instance {instance}"),
        SeriesKey::Pool { instance, pool } => format!("pool {pool} of {instance}"),
        SeriesKey::Health { instance, pool } => format!("health checks of pool {pool} of {instance}"),
    }
}
