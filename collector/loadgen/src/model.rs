//! The simulated workload: fingerprints of four classes with realistic latency
//! distributions, and for each fingerprint a fixed pool of pre-generated
//! windows ("variants") that the simulated instances rotate through.
//!
//! Sampling every call of 2,000 instances × 1,000 fingerprints would cost more
//! CPU than the collector under test, so each fingerprint gets
//! [`VARIANTS`] windows generated once from a seed: raw latencies, the encoded
//! HdrHistogram, the counters and the Prometheus classic-histogram buckets. A
//! window of an instance picks one variant by a hash of (instance, window,
//! fingerprint). Because the raw latencies of every variant are kept, the exact
//! quantiles of whatever was delivered are known ([`ExactTally`]), which is
//! what the accuracy comparison measures against.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use querypulse_proto::LatencyHistogram;
use querypulse_proto::histogram::HIGHEST_US;

/// Pre-generated windows per fingerprint.
pub const VARIANTS: usize = 16;

/// Upper bounds of Prometheus' default histogram buckets, seconds (`+Inf` is
/// implied after the last).
pub const PROMETHEUS_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// What kind of statement a fingerprint is; it decides the latency shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryClass {
    /// Primary-key lookups: sub-millisecond, many calls.
    PointLookup,
    /// Joins over a few tables: milliseconds.
    Join,
    /// Inserts and updates: fast, with lock-wait tails and unique violations.
    Write,
    /// Aggregating reports: hundreds of milliseconds, few calls.
    Report,
}

impl QueryClass {
    /// Every class, in a fixed order.
    pub const ALL: [QueryClass; 4] = [
        QueryClass::PointLookup,
        QueryClass::Join,
        QueryClass::Write,
        QueryClass::Report,
    ];

    /// Short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            QueryClass::PointLookup => "point_lookup",
            QueryClass::Join => "join",
            QueryClass::Write => "write",
            QueryClass::Report => "report",
        }
    }

    fn shape(self) -> Shape {
        match self {
            QueryClass::PointLookup => Shape {
                share: 0.55,
                median_us: 400.0,
                sigma: 0.35,
                tail_share: 0.02,
                tail_factor: 12.0,
                tail_sigma: 0.6,
                calls: (10, 200),
                rows: (1, 1),
                error_rate: 0.0005,
                error_class: "57014",
            },
            QueryClass::Join => Shape {
                share: 0.25,
                median_us: 6_000.0,
                sigma: 0.5,
                tail_share: 0.03,
                tail_factor: 8.0,
                tail_sigma: 0.7,
                calls: (5, 60),
                rows: (5, 200),
                error_rate: 0.001,
                error_class: "57014",
            },
            QueryClass::Write => Shape {
                share: 0.15,
                median_us: 1_500.0,
                sigma: 0.45,
                tail_share: 0.01,
                tail_factor: 20.0,
                tail_sigma: 0.8,
                calls: (10, 120),
                rows: (1, 1),
                error_rate: 0.005,
                error_class: "23505",
            },
            QueryClass::Report => Shape {
                share: 0.05,
                median_us: 250_000.0,
                sigma: 0.7,
                tail_share: 0.05,
                tail_factor: 6.0,
                tail_sigma: 0.5,
                calls: (1, 6),
                rows: (100, 5_000),
                error_rate: 0.01,
                error_class: "57014",
            },
        }
    }
}

/// A log-normal body with a log-normal tail mixed in.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Fraction of fingerprints of this class.
    share: f64,
    median_us: f64,
    sigma: f64,
    /// Fraction of calls drawn from the tail.
    tail_share: f64,
    /// Tail median as a multiple of the body median.
    tail_factor: f64,
    tail_sigma: f64,
    /// Calls per window, inclusive range.
    calls: (u64, u64),
    /// Rows per call, inclusive range.
    rows: (u64, u64),
    error_rate: f64,
    error_class: &'static str,
}

/// One pre-generated window of one fingerprint.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Executions.
    pub calls: u64,
    /// Failed executions (all of [`Variant::error_class`]).
    pub errors: u64,
    /// SQLSTATE of the failures.
    pub error_class: &'static str,
    /// Rows returned or affected.
    pub rows: u64,
    /// Sum of latencies, microseconds.
    pub sum_us: u64,
    /// Sum of squared latencies.
    pub sum_squares_us: f64,
    /// Smallest latency, microseconds.
    pub min_us: u64,
    /// Largest latency, microseconds.
    pub max_us: u64,
    /// HdrHistogram V2 bytes of the latencies.
    pub histogram: Vec<u8>,
    /// The raw latencies, microseconds, sorted.
    pub samples: Vec<u32>,
    /// Calls at or below each of [`PROMETHEUS_BUCKETS`] (cumulative, as `le`).
    pub prometheus_buckets: [u64; PROMETHEUS_BUCKETS.len()],
    /// Sum of latencies in seconds, for `_sum`.
    pub sum_seconds: f64,
}

impl Variant {
    fn generate(shape: &Shape, median_us: f64, rng: &mut StdRng) -> Variant {
        let calls = rng.random_range(shape.calls.0..=shape.calls.1);
        let mut samples: Vec<u32> = (0..calls)
            .map(|_| {
                let (median, sigma) = if rng.random_bool(shape.tail_share) {
                    (median_us * shape.tail_factor, shape.tail_sigma)
                } else {
                    (median_us, shape.sigma)
                };
                let us = (median.ln() + sigma * standard_normal(rng)).exp();
                us.round().clamp(1.0, HIGHEST_US as f64) as u32
            })
            .collect();
        samples.sort_unstable();
        let errors = (0..calls).filter(|_| rng.random_bool(shape.error_rate)).count() as u64;
        let rows = (0..calls).map(|_| rng.random_range(shape.rows.0..=shape.rows.1)).sum();
        let mut histogram = LatencyHistogram::new();
        let mut prometheus_buckets = [0u64; PROMETHEUS_BUCKETS.len()];
        for &us in &samples {
            histogram.record(u64::from(us));
            for (bucket, le) in prometheus_buckets.iter_mut().zip(PROMETHEUS_BUCKETS) {
                if f64::from(us) <= le * 1e6 {
                    *bucket += 1;
                }
            }
        }
        let sum_us: u64 = samples.iter().map(|&us| u64::from(us)).sum();
        Variant {
            calls,
            errors,
            error_class: shape.error_class,
            rows,
            sum_us,
            sum_squares_us: samples.iter().map(|&us| f64::from(us) * f64::from(us)).sum(),
            min_us: samples.first().map_or(0, |&us| u64::from(us)),
            max_us: samples.last().map_or(0, |&us| u64::from(us)),
            histogram: histogram.encode(),
            samples,
            prometheus_buckets,
            sum_seconds: sum_us as f64 / 1e6,
        }
    }
}

/// Box–Muller: one draw of N(0, 1).
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One simulated statement and its pre-generated windows.
#[derive(Debug, Clone)]
pub struct FingerprintModel {
    /// Its class.
    pub class: QueryClass,
    /// [`VARIANTS`] windows.
    pub variants: Vec<Variant>,
}

/// Every simulated fingerprint, generated from a seed.
#[derive(Debug, Clone)]
pub struct Workload {
    seed: u64,
    /// Indexed by fingerprint number.
    pub fingerprints: Vec<FingerprintModel>,
}

impl Workload {
    /// Generates `fingerprints` fingerprints. The same seed always yields the
    /// same workload.
    pub fn generate(seed: u64, fingerprints: usize) -> Workload {
        let mut rng = StdRng::seed_from_u64(seed);
        let models = (0..fingerprints)
            .map(|_| {
                let class = pick_class(rng.random());
                let shape = class.shape();
                // Statements of one class still differ: spread medians ×/÷ ~1.6.
                let median_us = shape.median_us * (0.5 * standard_normal(&mut rng)).exp();
                let variants = (0..VARIANTS)
                    .map(|_| Variant::generate(&shape, median_us, &mut rng))
                    .collect();
                FingerprintModel { class, variants }
            })
            .collect();
        Workload {
            seed,
            fingerprints: models,
        }
    }

    /// Number of fingerprints.
    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    /// Which variant `instance` reports for `fingerprint` in the window
    /// starting at `window_start_ms`: a pure function, so a resent window is
    /// identical and the exact tally can be rebuilt from (instance, window).
    pub fn variant_index(&self, instance: u32, window_start_ms: i64, fingerprint: usize) -> usize {
        let mixed =
            splitmix64(self.seed ^ splitmix64(u64::from(instance) << 32 ^ fingerprint as u64) ^ window_start_ms as u64);
        (mixed % VARIANTS as u64) as usize
    }

    /// The variant `instance` reports for `fingerprint` in that window.
    pub fn variant(&self, instance: u32, window_start_ms: i64, fingerprint: usize) -> &Variant {
        &self.fingerprints[fingerprint].variants[self.variant_index(instance, window_start_ms, fingerprint)]
    }
}

fn pick_class(draw: f64) -> QueryClass {
    let mut cumulative = 0.0;
    for class in QueryClass::ALL {
        cumulative += class.shape().share;
        if draw < cumulative {
            return class;
        }
    }
    QueryClass::PointLookup
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The normalized statement text of fingerprint `index` of `service`; every
/// service has its own statements.
pub fn statement_text(service: &str, index: usize, class: QueryClass) -> String {
    let table = format!("{}_t{index}", service.replace('-', "_"));
    match class {
        QueryClass::PointLookup => format!("select id, status, updated_at from {table} where id = ?"),
        QueryClass::Join => format!(
            "select a.id, b.total from {table} a join {table}_lines b on b.parent_id = a.id where a.created_at > ?"
        ),
        QueryClass::Write => format!("update {table} set status = ?, updated_at = ? where id = ?"),
        QueryClass::Report => format!(
            "select date_trunc(?, created_at), count(*), sum(total) from {table} where created_at > ? group by 1 order by 1"
        ),
    }
}

/// How often each variant of each (service, fingerprint) was delivered, from
/// which the exact quantiles of everything delivered follow.
#[derive(Debug, Clone)]
pub struct ExactTally {
    fingerprints: usize,
    counts: Vec<u64>,
}

impl ExactTally {
    /// An empty tally for `services` × `fingerprints`.
    pub fn new(services: usize, fingerprints: usize) -> ExactTally {
        ExactTally {
            fingerprints,
            counts: vec![0; services * fingerprints * VARIANTS],
        }
    }

    fn slot(&self, service: usize, fingerprint: usize) -> usize {
        (service * self.fingerprints + fingerprint) * VARIANTS
    }

    /// Counts one delivered window of `instance` (of `service`); returns the
    /// calls it carried.
    pub fn add_window(&mut self, workload: &Workload, service: usize, instance: u32, window_start_ms: i64) -> u64 {
        let mut calls = 0;
        for fingerprint in 0..self.fingerprints {
            let variant = workload.variant_index(instance, window_start_ms, fingerprint);
            let at = self.slot(service, fingerprint) + variant;
            self.counts[at] += 1;
            calls += workload.fingerprints[fingerprint].variants[variant].calls;
        }
        calls
    }

    /// Windows delivered for one series.
    pub fn windows(&self, service: usize, fingerprint: usize) -> u64 {
        let at = self.slot(service, fingerprint);
        self.counts[at..at + VARIANTS].iter().sum()
    }

    /// Calls delivered for one series.
    pub fn calls(&self, workload: &Workload, service: usize, fingerprint: usize) -> u64 {
        let at = self.slot(service, fingerprint);
        workload.fingerprints[fingerprint]
            .variants
            .iter()
            .zip(&self.counts[at..at + VARIANTS])
            .map(|(variant, n)| variant.calls * n)
            .sum()
    }

    /// Exact quantiles (nearest rank: the smallest latency with at least
    /// `ceil(q × calls)` calls at or below it) of everything delivered for one
    /// series, microseconds. `None` when nothing was delivered.
    pub fn quantiles_us(
        &self,
        workload: &Workload,
        service: usize,
        fingerprint: usize,
        quantiles: &[f64],
    ) -> Option<Vec<f64>> {
        let at = self.slot(service, fingerprint);
        let mut weighted: Vec<(u32, u64)> = Vec::new();
        for (variant, &n) in workload.fingerprints[fingerprint]
            .variants
            .iter()
            .zip(&self.counts[at..at + VARIANTS])
        {
            if n > 0 {
                weighted.extend(variant.samples.iter().map(|&us| (us, n)));
            }
        }
        let total: u64 = weighted.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        weighted.sort_unstable_by_key(|(us, _)| *us);
        Some(
            quantiles
                .iter()
                .map(|q| {
                    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
                    let mut seen = 0;
                    let mut value = weighted[weighted.len() - 1].0;
                    for &(us, n) in &weighted {
                        seen += n;
                        if seen >= rank {
                            value = us;
                            break;
                        }
                    }
                    f64::from(value)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_workload_and_another_seed_does_not() {
        let (a, b, c) = (
            Workload::generate(7, 50),
            Workload::generate(7, 50),
            Workload::generate(8, 50),
        );
        let histograms = |w: &Workload| -> Vec<Vec<u8>> {
            w.fingerprints
                .iter()
                .flat_map(|f| f.variants.iter().map(|v| v.histogram.clone()))
                .collect()
        };
        assert_eq!(histograms(&a), histograms(&b));
        assert_ne!(histograms(&a), histograms(&c));
        assert_eq!(a.variant_index(3, 10_000, 9), b.variant_index(3, 10_000, 9));
    }

    #[test]
    fn variants_are_consistent_with_their_samples() {
        let workload = Workload::generate(1, 40);
        for model in &workload.fingerprints {
            for v in &model.variants {
                assert_eq!(v.samples.len() as u64, v.calls);
                let histogram = LatencyHistogram::decode(&v.histogram).unwrap();
                assert_eq!(histogram.count(), v.calls);
                assert_eq!(v.sum_us, v.samples.iter().map(|&s| u64::from(s)).sum::<u64>());
                assert!(v.errors <= v.calls && v.min_us <= v.max_us);
                let at_most = |le: f64| v.samples.iter().filter(|&&s| f64::from(s) <= le * 1e6).count() as u64;
                for (count, le) in v.prometheus_buckets.iter().zip(PROMETHEUS_BUCKETS) {
                    assert_eq!(*count, at_most(le));
                }
            }
        }
    }

    #[test]
    fn the_mix_has_every_class_and_rotates_variants() {
        let workload = Workload::generate(3, 400);
        for class in QueryClass::ALL {
            assert!(workload.fingerprints.iter().any(|f| f.class == class), "{class:?}");
        }
        let picked: std::collections::HashSet<usize> =
            (0..200).map(|w| workload.variant_index(1, w * 10_000, 0)).collect();
        assert_eq!(picked.len(), VARIANTS, "every variant is used over time");
    }

    #[test]
    fn exact_quantiles_are_nearest_rank_over_everything_delivered() {
        let workload = Workload::generate(11, 5);
        let mut tally = ExactTally::new(2, 5);
        let windows = [0i64, 10_000, 20_000, 30_000];
        for (instance, window) in [(1u32, 0usize), (1, 1), (2, 1), (2, 3), (2, 3)] {
            tally.add_window(&workload, 1, instance, windows[window]);
        }
        for fingerprint in 0..5 {
            let mut all: Vec<u32> = Vec::new();
            for (instance, window) in [(1u32, 0usize), (1, 1), (2, 1), (2, 3), (2, 3)] {
                all.extend(&workload.variant(instance, windows[window], fingerprint).samples);
            }
            all.sort_unstable();
            let expected: Vec<f64> = [0.5, 0.95, 0.99, 1.0]
                .iter()
                .map(|q| f64::from(all[((q * all.len() as f64).ceil() as usize).max(1) - 1]))
                .collect();
            let got = tally
                .quantiles_us(&workload, 1, fingerprint, &[0.5, 0.95, 0.99, 1.0])
                .unwrap();
            assert_eq!(got, expected);
            assert_eq!(tally.calls(&workload, 1, fingerprint), all.len() as u64);
            assert_eq!(tally.windows(1, fingerprint), 5);
            assert_eq!(tally.quantiles_us(&workload, 0, fingerprint, &[0.5]), None);
        }
    }
}
