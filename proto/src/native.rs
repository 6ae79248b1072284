//! Our latency histograms as Prometheus native histograms.
//!
//! A native histogram of schema `s` has buckets whose bounds grow by the
//! factor `2^(2^-s)`: bucket `i` holds the values in `(2^((i-1)/2^s),
//! 2^(i/2^s)]` (seconds here). Ours are HdrHistogram's buckets of 1 µs to
//! 60 s with two significant digits. A bucket of ours is moved, whole, into
//! the native bucket that holds its middle value, so a value's native bucket
//! is off by at most our half-bucket (0.4 %) at a native bound: the added
//! error of a quantile is the native bucket's width (see
//! [`DEFAULT_SCHEMA`]) plus our 1 %.
//!
//! Counts stay integers, so merges are exact: the count of a cumulative
//! native histogram is exactly the calls of every window folded into it.

use std::collections::BTreeMap;

use crate::prompb;
use querypulse_domain::LatencyHistogram;
use querypulse_domain::histogram::{BUCKETS, bucket_bounds};

/// The schema used unless a destination sets one: 3, buckets 9.05 % wide
/// (eight per doubling). Measured by `schema_error_and_buckets` below on
/// 200,000 calls of each of four latency shapes (point lookups to reports,
/// long tails, rare 20× outliers), with quantiles read as Prometheus reads
/// them:
///
/// | schema | width | most buckets | worst p50/p95/p99 error |
/// |---|---|---|---|
/// | 2 | 18.9 % | 72 | 1.53 % |
/// | 3 | 9.05 % | 139 | 0.56 % |
/// | 4 | 4.43 % | 264 | 0.25 % |
/// | 5 | 2.19 % | 497 | 0.26 % |
///
/// Schema 3 is the finest whose widest statement stays inside Mimir's
/// default limit of 160 buckets; the error bound is the bucket width, and
/// with many calls per bucket the interpolation does far better.
pub const DEFAULT_SCHEMA: i32 = 3;
/// Smallest and largest schema Prometheus, Mimir, Thanos and Cortex accept.
pub const SCHEMAS: std::ops::RangeInclusive<i32> = -4..=8;
/// Zero bucket width: Prometheus' default. Only a latency of 0 µs lands in it.
pub const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;

/// The native bucket (at `schema`) of each of our buckets; `None` for the
/// zero bucket.
#[derive(Debug, Clone)]
pub struct BucketMap {
    schema: i32,
    index: Vec<Option<i32>>,
}

impl BucketMap {
    /// The map for `schema` (one of [`SCHEMAS`]).
    pub fn new(schema: i32) -> BucketMap {
        let index = (0..BUCKETS as u16)
            .map(|bucket| {
                let (low, high) = bucket_bounds(bucket);
                let middle_s = (low as f64 + high as f64) / 2.0 / 1e6;
                (middle_s > 0.0).then(|| native_index(middle_s, schema))
            })
            .collect();
        BucketMap { schema, index }
    }

    /// The schema this map converts to.
    pub fn schema(&self) -> i32 {
        self.schema
    }
}

/// The native bucket of `value` (> 0) at `schema`: the `i` with
/// `2^((i-1)/2^s) < value <= 2^(i/2^s)`.
pub fn native_index(value: f64, schema: i32) -> i32 {
    let scaled = value.log2() * 2f64.powi(schema);
    let mut index = scaled.ceil() as i32;
    // Correct the rounding of log2 at a bucket's bound.
    if upper_bound(index - 1, schema) >= value {
        index -= 1;
    } else if upper_bound(index, schema) < value {
        index += 1;
    }
    index
}

/// The upper bound of native bucket `index` at `schema`.
pub fn upper_bound(index: i32, schema: i32) -> f64 {
    2f64.powf(f64::from(index) / 2f64.powi(schema))
}

/// A cumulative native histogram: every window added so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cumulative {
    /// Schema of `buckets`; lowered (halving the resolution) when a
    /// histogram outgrows the destination's bucket limit.
    pub schema: i32,
    /// Observations.
    pub count: u64,
    /// Sum of the observations, microseconds (exact; seconds on the wire).
    pub sum_us: u64,
    /// Observations of 0 µs.
    pub zero_count: u64,
    /// Non-empty buckets, by index.
    pub buckets: BTreeMap<i32, u64>,
}

impl Cumulative {
    /// An empty histogram at `schema`.
    pub fn new(schema: i32) -> Cumulative {
        Cumulative {
            schema,
            ..Cumulative::default()
        }
    }

    /// Adds a window's histogram and the sum of its latencies. `map` must be
    /// at the schema this histogram started with; a histogram whose schema
    /// was lowered since folds the mapped indexes down.
    pub fn add(&mut self, histogram: &LatencyHistogram, sum_us: u64, map: &BucketMap, max_buckets: usize) {
        let shift = map.schema - self.schema;
        for &(bucket, count) in histogram.indexed_buckets() {
            match map.index[usize::from(bucket)] {
                Some(index) => *self.buckets.entry(coarser(index, shift)).or_default() += count,
                None => self.zero_count += count,
            }
        }
        self.count += histogram.count();
        self.sum_us = self.sum_us.saturating_add(sum_us);
        while self.buckets.len() > max_buckets && self.schema > *SCHEMAS.start() {
            self.lower_schema();
        }
    }

    /// Catches up with `total`, the store's histogram over the whole span
    /// this one covers (read again later): adds, bucket by bucket, what
    /// `total` holds beyond this histogram, that is, windows that reached
    /// the store after their interval was added. Returns the calls added.
    /// A bucket where `total` holds less (retention dropped old windows)
    /// adds nothing.
    pub fn catch_up(
        &mut self,
        total: &LatencyHistogram,
        total_sum_us: u64,
        map: &BucketMap,
        max_buckets: usize,
    ) -> u64 {
        let shift = map.schema - self.schema;
        let mut wanted: BTreeMap<i32, u64> = BTreeMap::new();
        let mut zero = 0u64;
        for &(bucket, count) in total.indexed_buckets() {
            match map.index[usize::from(bucket)] {
                Some(index) => *wanted.entry(coarser(index, shift)).or_default() += count,
                None => zero += count,
            }
        }
        let mut added = zero.saturating_sub(self.zero_count);
        self.zero_count += added;
        for (index, count) in wanted {
            let have = self.buckets.entry(index).or_default();
            let missing = count.saturating_sub(*have);
            *have += missing;
            added += missing;
        }
        self.buckets.retain(|_, count| *count > 0);
        self.count += added;
        if added > 0 {
            self.sum_us = self.sum_us.max(total_sum_us);
        }
        while self.buckets.len() > max_buckets && self.schema > *SCHEMAS.start() {
            self.lower_schema();
        }
        added
    }

    /// Halves the resolution: bucket `i` of schema `s` lies in bucket
    /// `ceil(i / 2)` of schema `s - 1`.
    fn lower_schema(&mut self) {
        let mut merged = BTreeMap::new();
        for (&index, &count) in &self.buckets {
            *merged.entry(coarser(index, 1)).or_default() += count;
        }
        self.buckets = merged;
        self.schema -= 1;
    }

    /// The remote-write form at `timestamp_ms`.
    pub fn to_prompb(&self, timestamp_ms: i64) -> prompb::Histogram {
        let mut spans = Vec::new();
        let mut deltas = Vec::with_capacity(self.buckets.len());
        let (mut previous_index, mut previous_count) = (None::<i32>, 0i64);
        for (&index, &count) in &self.buckets {
            match previous_index {
                Some(p) if index == p + 1 => {
                    let span: &mut prompb::BucketSpan = spans.last_mut().expect("a span is open");
                    span.length += 1;
                }
                Some(p) => spans.push(prompb::BucketSpan {
                    offset: index - p - 1,
                    length: 1,
                }),
                None => spans.push(prompb::BucketSpan {
                    offset: index,
                    length: 1,
                }),
            }
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            deltas.push(count - previous_count);
            previous_count = count;
            previous_index = Some(index);
        }
        prompb::Histogram {
            count: Some(prompb::histogram::Count::CountInt(self.count)),
            sum: self.sum_us as f64 / 1e6,
            schema: self.schema,
            zero_threshold: ZERO_THRESHOLD,
            zero_count: Some(prompb::histogram::ZeroCount::ZeroCountInt(self.zero_count)),
            positive_spans: spans,
            positive_deltas: deltas,
            timestamp: timestamp_ms,
            ..prompb::Histogram::default()
        }
    }
}

/// The index of the bucket `shift` schemas coarser that holds bucket `index`.
fn coarser(index: i32, shift: i32) -> i32 {
    if shift <= 0 {
        return index;
    }
    let width = 1i32 << shift;
    index.div_euclid(width) + i32::from(index.rem_euclid(width) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes spans and deltas back into (index, count).
    fn buckets_of(h: &prompb::Histogram) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        let (mut index, mut count, mut deltas) = (0i32, 0i64, h.positive_deltas.iter());
        for (n, span) in h.positive_spans.iter().enumerate() {
            index += span.offset + i32::from(n > 0);
            for k in 0..span.length {
                if k > 0 {
                    index += 1;
                }
                count += deltas.next().expect("a delta per bucket");
                out.push((index, count as u64));
            }
        }
        out
    }

    #[test]
    fn native_index_follows_the_bounds() {
        for schema in SCHEMAS {
            for value in [1e-6, 3.3e-5, 0.001, 0.5, 1.0, 1.5, 2.0, 7.0, 59.9] {
                let index = native_index(value, schema);
                assert!(upper_bound(index - 1, schema) < value, "{value} at {schema}");
                assert!(value <= upper_bound(index, schema), "{value} at {schema}");
            }
            // Bounds are inclusive above.
            assert_eq!(native_index(1.0, schema), 0);
            assert_eq!(native_index(2.0, schema), if schema >= 0 { 1 << schema } else { 1 });
        }
    }

    #[test]
    fn every_call_lands_in_the_bucket_of_its_value_and_counts_stay_exact() {
        let map = BucketMap::new(3);
        let mut histogram = LatencyHistogram::new();
        let values_us = [0u64, 1, 7, 120, 999, 1_000, 1_001, 45_000, 60_000_000];
        for v in values_us {
            histogram.record(v);
        }
        let mut cumulative = Cumulative::new(3);
        cumulative.add(&histogram, values_us.iter().sum(), &map, 160);
        cumulative.add(&histogram, values_us.iter().sum(), &map, 160);
        assert_eq!(cumulative.count, 2 * values_us.len() as u64);
        assert_eq!(cumulative.zero_count, 2);
        let wire = cumulative.to_prompb(5);
        let decoded = buckets_of(&wire);
        assert_eq!(decoded.iter().map(|(_, c)| c).sum::<u64>() + 2, cumulative.count);
        for v in values_us.iter().filter(|v| **v > 0) {
            let seconds = *v as f64 / 1e6;
            let index = native_index(seconds, 3);
            // The value or, at a bound, its neighbour (our bucket's middle
            // may cross the bound by less than 0.4 %).
            assert!(
                decoded.iter().any(|(i, _)| (*i - index).abs() <= 1),
                "{v} µs has no bucket near {index}: {decoded:?}"
            );
        }
        assert_eq!(wire.sum, 2.0 * values_us.iter().sum::<u64>() as f64 / 1e6);
        assert_eq!(wire.schema, 3);
    }

    #[test]
    fn a_histogram_over_the_bucket_limit_lowers_its_schema_and_keeps_its_count() {
        let map = BucketMap::new(8);
        let mut histogram = LatencyHistogram::new();
        for v in (1..2_000u64).map(|i| i * 997) {
            histogram.record(v);
        }
        let mut cumulative = Cumulative::new(8);
        cumulative.add(&histogram, 0, &map, 50);
        assert!(cumulative.buckets.len() <= 50);
        assert!(cumulative.schema < 8);
        assert_eq!(cumulative.buckets.values().sum::<u64>(), histogram.count());
        // Later windows fold into the lowered schema.
        let before = cumulative.schema;
        cumulative.add(&histogram, 0, &map, 50);
        assert_eq!(cumulative.schema, before);
        assert_eq!(cumulative.buckets.values().sum::<u64>(), 2 * histogram.count());
    }

    #[test]
    fn coarser_buckets_hold_the_finer_ones() {
        for schema in 1..=8 {
            for index in -300..300 {
                let c = coarser(index, 1);
                let (lo, hi) = (upper_bound(index - 1, schema), upper_bound(index, schema));
                assert!(upper_bound(c - 1, schema - 1) <= lo * (1.0 + 1e-12));
                assert!(hi <= upper_bound(c, schema - 1) * (1.0 + 1e-12));
            }
        }
    }

    /// The quantile Prometheus reads from a native histogram: the bucket
    /// holding rank `q × count`, interpolated linearly inside it.
    fn prometheus_quantile(h: &Cumulative, q: f64) -> f64 {
        let rank = q * h.count as f64;
        let mut seen = h.zero_count as f64;
        for (&index, &count) in &h.buckets {
            if seen + count as f64 >= rank {
                let (low, high) = (upper_bound(index - 1, h.schema), upper_bound(index, h.schema));
                return low + (high - low) * (rank - seen) / count as f64;
            }
            seen += count as f64;
        }
        upper_bound(*h.buckets.keys().last().unwrap(), h.schema)
    }

    /// Measures, per schema, the buckets a statement's cumulative histogram
    /// fills and the error of p50/p95/p99 read the way Prometheus reads
    /// them, over latency shapes like the load generator's classes (point
    /// lookups to reports: medians 0.2 ms to 150 ms, long tails, rare
    /// outliers). Prints the table behind [`DEFAULT_SCHEMA`] and checks the
    /// default keeps within Mimir's bucket limit and its stated error.
    #[test]
    fn schema_error_and_buckets() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // (median µs, spread of the log-normal, share of 20× outliers)
        let shapes = [
            (200.0, 0.6, 0.002),
            (1_500.0, 0.9, 0.005),
            (12_000.0, 1.2, 0.01),
            (150_000.0, 1.0, 0.01),
        ];
        let mut worst = BTreeMap::new();
        for &(median, sigma, outliers) in &shapes {
            let mut values: Vec<u64> = (0..200_000)
                .map(|_| {
                    // Box-Muller normal, then log-normal around the median.
                    let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
                    let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                    let tail = if rng.random_bool(outliers) { 20.0 } else { 1.0 };
                    ((median * (sigma * z).exp() * tail) as u64).clamp(1, 60_000_000)
                })
                .collect();
            let mut histogram = LatencyHistogram::new();
            for &v in &values {
                histogram.record(v);
            }
            values.sort_unstable();
            for schema in 1..=6 {
                let map = BucketMap::new(schema);
                let mut cumulative = Cumulative::new(schema);
                cumulative.add(&histogram, 0, &map, usize::MAX);
                let mut error: f64 = 0.0;
                for q in [0.5, 0.95, 0.99] {
                    let exact = values[((q * values.len() as f64).ceil() as usize).min(values.len()) - 1] as f64 / 1e6;
                    error = error.max((prometheus_quantile(&cumulative, q) - exact).abs() / exact);
                }
                let entry = worst.entry(schema).or_insert((0usize, 0f64));
                entry.0 = entry.0.max(cumulative.buckets.len());
                entry.1 = entry.1.max(error);
            }
        }
        println!("schema  width   most buckets  worst p50/p95/p99 error");
        for (schema, (buckets, error)) in &worst {
            let width = 2f64.powf(2f64.powi(-schema)) - 1.0;
            println!(
                "{schema:>6}  {:>5.2} %  {buckets:>12}  {:>6.2} %",
                width * 100.0,
                error * 100.0
            );
        }
        let (buckets, error) = worst[&DEFAULT_SCHEMA];
        let width = 2f64.powf(2f64.powi(-DEFAULT_SCHEMA)) - 1.0;
        assert!(buckets <= 160, "{buckets} buckets: Mimir's default limit");
        assert!(error <= width + 0.01, "{error}");
    }

    #[test]
    fn catching_up_adds_exactly_what_arrived_late() {
        let map = BucketMap::new(3);
        let (mut on_time, mut late) = (LatencyHistogram::new(), LatencyHistogram::new());
        for v in [100u64, 900, 5_000, 5_100] {
            on_time.record(v);
        }
        for v in [0u64, 900, 70_000] {
            late.record(v);
        }
        let mut exported = Cumulative::new(3);
        exported.add(&on_time, 11_100, &map, 160);
        let mut total = on_time.clone();
        total.add(&late);
        let mut expected = exported.clone();
        expected.add(&late, 70_900, &map, 160);

        assert_eq!(exported.catch_up(&total, 82_000, &map, 160), 3);
        assert_eq!(exported, expected);
        // Nothing more arrived: nothing is added twice.
        assert_eq!(exported.catch_up(&total, 82_000, &map, 160), 0);
        assert_eq!(exported, expected);
        // Retention dropped the on-time windows: nothing is taken back.
        assert_eq!(exported.catch_up(&late, 70_900, &map, 160), 0);
        assert_eq!(exported, expected);
    }
}
