//! The one latency histogram configuration every agent and the collector use.
//!
//! Because every histogram has the same shape, merging histograms from many
//! instances and many windows is a plain addition of bucket counts, and a
//! percentile of the merge is a true fleet-wide percentile (never an average of
//! percentiles).

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// Smallest distinguishable latency, microseconds.
pub const LOWEST_US: u64 = 1;
/// Largest recordable latency, microseconds (60 s). Larger values are recorded
/// at this value and counted as outliers.
pub const HIGHEST_US: u64 = 60_000_000;
/// Significant decimal digits kept: at most 1 % relative error.
pub const SIGNIFICANT_DIGITS: u8 = 2;

/// Cookie of an HdrHistogram V2 (uncompressed) serialization.
const V2_COOKIE: u32 = 0x1c84_9313;
/// Length of the V2 header.
const V2_HEADER_LEN: usize = 40;
/// Upper bound of a valid serialized payload: the dense counts array of our
/// configuration (2,560 buckets) at the longest varint (9 bytes) each.
const MAX_PAYLOAD_LEN: usize = 2_560 * 9;

/// Why a serialized histogram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// Too short, wrong cookie or truncated payload.
    #[error("not an HdrHistogram V2 serialization: {0}")]
    Malformed(&'static str),
    /// A histogram with bounds or precision other than the shared configuration.
    #[error(
        "histogram configuration must be 1..60000000 us with 2 significant digits, got {lowest}..{highest} with {digits}"
    )]
    Configuration {
        /// Lowest discernible value in the header.
        lowest: u64,
        /// Highest trackable value in the header.
        highest: u64,
        /// Significant digits in the header.
        digits: u32,
    },
}

/// Distinct buckets a histogram keeps as a sorted list before it switches to
/// the dense array. 64 entries of 8 bytes (512 B) against ~20 KB for the array:
/// a statement seen a few dozen times in a window never pays for the array, and
/// one that fills more buckets than this is hot enough to earn it.
const SPARSE_MAX_BUCKETS: usize = 64;

/// An empty histogram of the shared configuration, used only for its bucket
/// arithmetic (which value falls in which bucket), so the sparse form and the
/// dense array can never disagree about bucket edges.
static SHAPE: LazyLock<Histogram<u64>> = LazyLock::new(dense);

fn dense() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        .expect("the shared histogram configuration is valid")
}

/// One non-empty bucket of the sparse form.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SparseBucket {
    /// The lowest value of the bucket (at most [`HIGHEST_US`], so it fits).
    value: u32,
    count: u32,
}

#[derive(Clone)]
enum Repr {
    /// Few distinct buckets, sorted by value, none empty. Holds exactly what
    /// the dense array would: values are kept per bucket, as the array does.
    Sparse(Vec<SparseBucket>),
    /// The full HdrHistogram counts array.
    Dense(Box<Histogram<u64>>),
}

/// A latency histogram in microseconds with the shared configuration.
///
/// It starts as a short sorted list of buckets and switches to the dense
/// HdrHistogram array once it holds more than a few dozen distinct buckets.
/// Both forms count per bucket of the same configuration, so the form is
/// invisible: equality, quantiles, buckets and the V2 bytes are the same as if
/// every value had gone into the dense array.
#[derive(Clone)]
pub struct LatencyHistogram(Repr);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for LatencyHistogram {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            // Sparse lists are canonical (sorted, one entry per bucket, no
            // empty entries), so comparing them is comparing the histograms.
            (Repr::Sparse(a), Repr::Sparse(b)) => a == b,
            _ => *self.as_dense() == *other.as_dense(),
        }
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dense = self.as_dense();
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .field("min_us", &dense.min())
            .field("max_us", &dense.max())
            .finish()
    }
}

impl LatencyHistogram {
    /// An empty histogram. Allocates nothing until the first value.
    pub fn new() -> Self {
        LatencyHistogram(Repr::Sparse(Vec::new()))
    }

    /// Records one latency. Returns `true` when the value was above
    /// [`HIGHEST_US`] and was clamped to it (an outlier).
    pub fn record(&mut self, micros: u64) -> bool {
        self.record_n(micros, 1)
    }

    /// Records `count` occurrences of one latency; see [`LatencyHistogram::record`].
    /// Recording zero occurrences changes nothing.
    pub fn record_n(&mut self, micros: u64, count: u64) -> bool {
        let clamped = micros > HIGHEST_US;
        let micros = micros.min(HIGHEST_US);
        if count == 0 {
            return clamped;
        }
        if let Repr::Sparse(buckets) = &mut self.0 {
            let value = SHAPE.lowest_equivalent(micros) as u32;
            let fits = u32::try_from(count).ok();
            match buckets.binary_search_by_key(&value, |b| b.value) {
                Ok(at) => {
                    if let Some(sum) = fits.and_then(|count| buckets[at].count.checked_add(count)) {
                        buckets[at].count = sum;
                        return clamped;
                    }
                }
                Err(at) => {
                    if let Some(count) = fits
                        && buckets.len() < SPARSE_MAX_BUCKETS
                    {
                        buckets.insert(at, SparseBucket { value, count });
                        return clamped;
                    }
                }
            }
        }
        // Dense already, or the list is full (or a count outgrew 32 bits).
        self.make_dense().saturating_record_n(micros, count);
        clamped
    }

    /// Adds every count of `other` (same configuration, so this cannot fail).
    pub fn add(&mut self, other: &LatencyHistogram) {
        match &other.0 {
            Repr::Sparse(buckets) => {
                for bucket in buckets {
                    self.record_n(u64::from(bucket.value), u64::from(bucket.count));
                }
            }
            Repr::Dense(theirs) => {
                if let Repr::Sparse(mine) = &self.0 {
                    let mut merged = theirs.clone();
                    for bucket in mine {
                        merged.saturating_record_n(u64::from(bucket.value), u64::from(bucket.count));
                    }
                    self.0 = Repr::Dense(merged);
                } else {
                    self.make_dense()
                        .add(&**theirs)
                        .expect("histograms of the shared configuration always add");
                }
            }
        }
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        match &self.0 {
            Repr::Sparse(buckets) => buckets.iter().map(|b| u64::from(b.count)).sum(),
            Repr::Dense(histogram) => histogram.len(),
        }
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            Repr::Sparse(buckets) => buckets.is_empty(),
            Repr::Dense(histogram) => histogram.is_empty(),
        }
    }

    /// True while the histogram is in its compact form (no ~20 KB array).
    pub fn is_compact(&self) -> bool {
        matches!(self.0, Repr::Sparse(_))
    }

    /// Forgets every value, keeping the allocation (so a histogram reused
    /// window after window allocates nothing once it has its form).
    pub fn reset(&mut self) {
        match &mut self.0 {
            Repr::Sparse(buckets) => buckets.clear(),
            Repr::Dense(histogram) => histogram.reset(),
        }
    }

    /// The value at `quantile` (0.0..=1.0) in microseconds, reported as the
    /// middle of its bucket so the error is at most half a bucket (±0.4 %).
    /// `None` when empty.
    pub fn quantile_us(&self, quantile: f64) -> Option<f64> {
        if self.is_empty() {
            return None;
        }
        let quantile = if quantile.is_nan() {
            0.5
        } else {
            quantile.clamp(0.0, 1.0)
        };
        let value = match &self.0 {
            Repr::Dense(histogram) => histogram.value_at_quantile(quantile),
            Repr::Sparse(buckets) => {
                // The same rank HdrHistogram looks for: the first bucket whose
                // cumulative count reaches ceil(quantile * total), at least 1.
                let target = ((quantile * self.count() as f64).ceil() as u64).max(1);
                let mut seen = 0;
                let at = buckets.iter().find(|b| {
                    seen += u64::from(b.count);
                    seen >= target
                });
                u64::from(at.or(buckets.last()).expect("not empty").value)
            }
        };
        let low = SHAPE.lowest_equivalent(value);
        let high = SHAPE.highest_equivalent(value);
        // The bucket [low, high] holds integers; its midpoint is the best
        // estimate of any value in it.
        Some((low as f64 + high as f64) / 2.0)
    }

    /// Iterates over non-empty buckets as (highest value of the bucket in
    /// microseconds, count).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let (sparse, dense) = match &self.0 {
            Repr::Sparse(buckets) => (Some(buckets), None),
            Repr::Dense(histogram) => (None, Some(histogram)),
        };
        let sparse = sparse
            .into_iter()
            .flatten()
            .map(|b| (SHAPE.highest_equivalent(u64::from(b.value)), u64::from(b.count)));
        let dense = dense
            .into_iter()
            .flat_map(|h| h.iter_recorded())
            .map(|v| (v.value_iterated_to(), v.count_at_value()));
        sparse.chain(dense)
    }

    /// HdrHistogram V2 bytes, the form used on the wire. The compact form is
    /// written exactly as its dense equivalent would be.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64);
        V2Serializer::new()
            .serialize(&*self.as_dense(), &mut bytes)
            .expect("a u64 histogram of the shared configuration always serializes");
        bytes
    }

    /// The dense array, built on the fly for the compact form.
    fn as_dense(&self) -> Cow<'_, Histogram<u64>> {
        match &self.0 {
            Repr::Dense(histogram) => Cow::Borrowed(&**histogram),
            Repr::Sparse(buckets) => {
                let mut histogram = dense();
                for bucket in buckets {
                    histogram.saturating_record_n(u64::from(bucket.value), u64::from(bucket.count));
                }
                Cow::Owned(histogram)
            }
        }
    }

    /// Switches to the dense array (once) and returns it.
    fn make_dense(&mut self) -> &mut Histogram<u64> {
        if let Repr::Sparse(_) = self.0 {
            let histogram = self.as_dense().into_owned();
            self.0 = Repr::Dense(Box::new(histogram));
        }
        match &mut self.0 {
            Repr::Dense(histogram) => histogram,
            Repr::Sparse(_) => unreachable!("just made dense"),
        }
    }

    /// Decodes V2 bytes, refusing any other configuration. Empty input is an
    /// empty histogram. The header is checked before anything is allocated, so
    /// hostile input cannot make the decoder allocate more than one histogram.
    pub fn decode(bytes: &[u8]) -> Result<Self, HistogramError> {
        if bytes.is_empty() {
            return Ok(Self::new());
        }
        if bytes.len() < V2_HEADER_LEN {
            return Err(HistogramError::Malformed("shorter than the header"));
        }
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if u32_at(0) != V2_COOKIE {
            return Err(HistogramError::Malformed("unknown cookie"));
        }
        let payload_len = u32_at(4) as usize;
        if payload_len > MAX_PAYLOAD_LEN || bytes.len() != V2_HEADER_LEN + payload_len {
            return Err(HistogramError::Malformed("payload length does not match"));
        }
        let (digits, lowest, highest) = (u32_at(12), u64_at(16), u64_at(24));
        if lowest != LOWEST_US || highest != HIGHEST_US || digits != u32::from(SIGNIFICANT_DIGITS) {
            return Err(HistogramError::Configuration {
                lowest,
                highest,
                digits,
            });
        }
        let histogram: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|_| HistogramError::Malformed("payload does not decode"))?;
        Ok(LatencyHistogram(Repr::Dense(Box::new(histogram))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain HdrHistogram the compact form must be indistinguishable from.
    fn reference(values: &[u64]) -> Histogram<u64> {
        let mut h = dense();
        for v in values {
            h.saturating_record(*v.min(&HIGHEST_US));
        }
        h
    }

    /// Deterministic spread of latencies from 0 µs to beyond the range.
    fn spread(n: u64, seed: u64) -> Vec<u64> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Log-uniform-ish: pick a magnitude, then a value below it.
                let magnitude = 1u64 << (x % 27);
                (x >> 32) % magnitude
            })
            .collect()
    }

    #[track_caller]
    fn assert_same_as_reference(h: &LatencyHistogram, values: &[u64]) {
        let r = reference(values);
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&r, &mut bytes).unwrap();
        assert_eq!(h.encode(), bytes, "V2 bytes");
        assert_eq!(h.count(), r.len());
        let expected: Vec<(u64, u64)> = r
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        assert_eq!(h.buckets().collect::<Vec<_>>(), expected, "buckets");
        let dense = LatencyHistogram(Repr::Dense(Box::new(r)));
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(h.quantile_us(q), dense.quantile_us(q), "q={q}");
        }
        assert_eq!(*h, dense);
    }

    #[test]
    fn the_compact_form_is_indistinguishable_from_the_dense_array() {
        for n in [0, 1, 2, 10, 63, 64, 65, 200, 5_000] {
            let values = spread(n, n + 7);
            let mut h = LatencyHistogram::new();
            for v in &values {
                h.record(*v);
            }
            assert_same_as_reference(&h, &values);
        }
    }

    #[test]
    fn few_buckets_stay_compact_and_many_switch_to_the_array() {
        let mut h = LatencyHistogram::new();
        for i in 0..10_000u64 {
            // 40 distinct buckets, however many values.
            h.record(1_000 + (i % 40) * 20);
        }
        assert!(h.is_compact());
        for v in 0..SPARSE_MAX_BUCKETS as u64 {
            h.record(v);
        }
        assert!(!h.is_compact(), "more than {SPARSE_MAX_BUCKETS} buckets need the array");
        h.reset();
        assert!(h.is_empty() && !h.is_compact(), "reset keeps the array");
    }

    #[test]
    fn adding_mixes_forms_exactly() {
        let (few, many) = (spread(20, 3), spread(3_000, 4));
        let build = |values: &[u64]| {
            let mut h = LatencyHistogram::new();
            values.iter().for_each(|v| {
                h.record(*v);
            });
            h
        };
        let all: Vec<u64> = few.iter().chain(&many).copied().collect();
        for (a, b) in [(&few, &many), (&many, &few), (&few, &few), (&many, &many)] {
            let mut sum = build(a);
            sum.add(&build(b));
            let values: Vec<u64> = a.iter().chain(b.iter()).copied().collect();
            assert_same_as_reference(&sum, &values);
        }
        assert_same_as_reference(&build(&all), &all);
    }

    #[test]
    fn counts_beyond_32_bits_are_kept() {
        let mut h = LatencyHistogram::new();
        h.record_n(500, u64::from(u32::MAX));
        h.record_n(500, 2);
        h.record_n(700, 0);
        assert_eq!(h.count(), u64::from(u32::MAX) + 2);
        assert_eq!(h.buckets().count(), 1);
    }

    #[test]
    fn round_trips_through_v2_bytes() {
        let mut h = LatencyHistogram::new();
        for us in [1, 17, 250, 1_000, 12_345, 999_999, 59_000_000] {
            h.record(us);
        }
        let decoded = LatencyHistogram::decode(&h.encode()).unwrap();
        assert_eq!(decoded, h);
        assert_eq!(decoded.count(), 7);
    }

    #[test]
    fn clamps_values_beyond_sixty_seconds_and_reports_them() {
        let mut h = LatencyHistogram::new();
        assert!(!h.record(HIGHEST_US));
        assert!(h.record(HIGHEST_US + 1));
        assert!(h.record(u64::MAX));
        assert_eq!(h.count(), 3);
        let p100 = h.quantile_us(1.0).unwrap();
        assert!((p100 - HIGHEST_US as f64).abs() / (HIGHEST_US as f64) < 0.01);
    }

    #[test]
    fn quantiles_stay_within_half_a_percent() {
        let mut h = LatencyHistogram::new();
        let values: Vec<u64> = (1..=10_000).map(|i| i * 97).collect();
        for v in &values {
            h.record(*v);
        }
        for q in [0.5, 0.95, 0.99] {
            let exact = values[((q * values.len() as f64).ceil() as usize) - 1] as f64;
            let got = h.quantile_us(q).unwrap();
            assert!((got - exact).abs() / exact <= 0.005, "q={q} exact={exact} got={got}");
        }
    }

    #[test]
    fn merging_is_addition() {
        let (mut a, mut b, mut all) = (
            LatencyHistogram::new(),
            LatencyHistogram::new(),
            LatencyHistogram::new(),
        );
        for v in 1..500u64 {
            a.record(v * 3);
            all.record(v * 3);
        }
        for v in 1..300u64 {
            b.record(v * 1_000);
            all.record(v * 1_000);
        }
        a.add(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn refuses_other_configurations_and_garbage() {
        let other = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&other, &mut bytes).unwrap();
        assert!(matches!(
            LatencyHistogram::decode(&bytes),
            Err(HistogramError::Configuration { .. })
        ));

        let good = LatencyHistogram::new().encode();
        assert!(LatencyHistogram::decode(&good[..10]).is_err());
        assert!(LatencyHistogram::decode(&[0xff; 64]).is_err());
        let mut truncated = {
            let mut h = LatencyHistogram::new();
            h.record(5);
            h.record(5_000);
            h.encode()
        };
        truncated.pop();
        assert!(LatencyHistogram::decode(&truncated).is_err());
        assert_eq!(LatencyHistogram::decode(&[]).unwrap().count(), 0);
    }
}
