//! The one latency histogram configuration every agent and the collector use.
//!
//! Because every histogram has the same shape, merging histograms from many
//! instances and many windows is a plain addition of bucket counts, and a
//! percentile of the merge is a true fleet-wide percentile (never an average of
//! percentiles).
//!
//! The buckets are exactly HdrHistogram's for 1 µs to 60 s with 2 significant
//! digits (2,560 buckets, at most 0.78 % wide), and the wire form is
//! HdrHistogram's V2 serialization, so any HdrHistogram implementation can
//! read what an agent sends. In memory only the non-empty buckets are kept:
//! a window of one statement typically fills a few dozen, and the collector
//! decodes, merges and re-encodes hundreds of thousands of them per second.

use std::fmt;

/// Smallest distinguishable latency, microseconds.
pub const LOWEST_US: u64 = 1;
/// Largest recordable latency, microseconds (60 s). Larger values are recorded
/// at this value and counted as outliers.
pub const HIGHEST_US: u64 = 60_000_000;
/// Significant decimal digits kept: at most 1 % relative error.
pub const SIGNIFICANT_DIGITS: u8 = 2;
/// Number of buckets of the configuration.
pub const BUCKETS: usize = 2_560;

/// log2 of half the sub-bucket count (256 sub-buckets for 2 digits).
const SUB_BUCKET_HALF_MAGNITUDE: u32 = 7;
const SUB_BUCKET_HALF: u64 = 1 << SUB_BUCKET_HALF_MAGNITUDE;
const SUB_BUCKET_MASK: u64 = (SUB_BUCKET_HALF << 1) - 1;

/// Cookie of an HdrHistogram V2 (uncompressed) serialization.
const V2_COOKIE: u32 = 0x1c84_9313;
/// Length of the V2 header.
const V2_HEADER_LEN: usize = 40;
/// Upper bound of a valid serialized payload: every bucket at the longest
/// varint (9 bytes).
const MAX_PAYLOAD_LEN: usize = BUCKETS * 9;

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

/// The bucket a latency (µs) falls in, after clamping to [`HIGHEST_US`].
pub fn bucket_index(micros: u64) -> u16 {
    let value = micros.min(HIGHEST_US);
    // HdrHistogram's bucket arithmetic for unit magnitude 0.
    let pow2_ceiling = 64 - (value | SUB_BUCKET_MASK).leading_zeros();
    let bucket = pow2_ceiling - (SUB_BUCKET_HALF_MAGNITUDE + 1);
    let sub_bucket = value >> bucket;
    (((u64::from(bucket) + 1) << SUB_BUCKET_HALF_MAGNITUDE) + sub_bucket - SUB_BUCKET_HALF) as u16
}

/// The smallest and largest latency (µs, inclusive) of bucket `index`.
pub fn bucket_bounds(index: u16) -> (u64, u64) {
    let index = u64::from(index);
    let mut bucket = (index >> SUB_BUCKET_HALF_MAGNITUDE) as i64 - 1;
    let mut sub_bucket = (index & (SUB_BUCKET_HALF - 1)) + SUB_BUCKET_HALF;
    if bucket < 0 {
        sub_bucket -= SUB_BUCKET_HALF;
        bucket = 0;
    }
    let low = sub_bucket << bucket;
    (low, low + (1u64 << bucket) - 1)
}

/// The first position at or after `from` whose bucket index is not below
/// `index` (`buckets` sorted by index): a galloping search, so a nearby
/// bucket costs a few comparisons.
fn seek(buckets: &[(u16, u64)], from: usize, index: u16) -> usize {
    let (mut lo, mut hi, mut step) = (from, from, 1);
    while hi < buckets.len() && buckets[hi].0 < index {
        lo = hi + 1;
        hi = from + step;
        step *= 2;
    }
    let hi = hi.min(buckets.len()).max(lo);
    lo + buckets[lo..hi].partition_point(|(i, _)| *i < index)
}

/// A latency histogram in microseconds with the shared configuration: the
/// non-empty buckets in index order.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct LatencyHistogram {
    /// (bucket index, count), strictly increasing by index, no zero counts.
    buckets: Vec<(u16, u64)>,
    count: u64,
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count)
            .field("buckets", &self.buckets.len())
            .finish()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency. Returns `true` when the value was above
    /// [`HIGHEST_US`] and was clamped to it (an outlier).
    pub fn record(&mut self, micros: u64) -> bool {
        self.record_n(micros, 1)
    }

    /// Records `count` occurrences of one latency; see [`LatencyHistogram::record`].
    pub fn record_n(&mut self, micros: u64, count: u64) -> bool {
        self.add_to_bucket(bucket_index(micros), count);
        micros > HIGHEST_US
    }

    /// Adds `count` to bucket `index` (`index` < [`BUCKETS`]).
    pub fn add_to_bucket(&mut self, index: u16, count: u64) {
        debug_assert!(usize::from(index) < BUCKETS);
        if count == 0 {
            return;
        }
        self.count = self.count.saturating_add(count);
        match self.buckets.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(at) => self.buckets[at].1 = self.buckets[at].1.saturating_add(count),
            Err(at) => self.buckets.insert(at, (index, count)),
        }
    }

    /// Builds a histogram from (bucket index, count) pairs in strictly
    /// increasing index order; `None` when they are not, or an index is out of
    /// range.
    pub fn from_buckets(buckets: Vec<(u16, u64)>) -> Option<Self> {
        let ordered = buckets.windows(2).all(|w| w[0].0 < w[1].0);
        let in_range = buckets.last().is_none_or(|(i, _)| usize::from(*i) < BUCKETS);
        if !ordered || !in_range {
            return None;
        }
        let buckets: Vec<(u16, u64)> = buckets.into_iter().filter(|(_, c)| *c > 0).collect();
        let count = buckets.iter().fold(0u64, |sum, (_, c)| sum.saturating_add(*c));
        Some(LatencyHistogram { buckets, count })
    }

    /// The non-empty buckets as (bucket index, count), by index.
    pub fn indexed_buckets(&self) -> &[(u16, u64)] {
        &self.buckets
    }

    /// Adds every count of `other` (same configuration, so this cannot fail).
    pub fn add(&mut self, other: &LatencyHistogram) {
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.clone_from(other);
            return;
        }
        // Add in place to the buckets both have, seeking each of `other`'s
        // from the last position (windows of one statement mostly fill the
        // same buckets, so this is usually all); the few buckets only
        // `other` has are then merged in from the back, growing once.
        let mine = &mut self.buckets;
        let mut missing = Vec::new();
        let mut at = 0;
        for &(index, count) in &other.buckets {
            at = seek(mine, at, index);
            match mine.get_mut(at) {
                Some(bucket) if bucket.0 == index => {
                    bucket.1 = bucket.1.saturating_add(count);
                    at += 1;
                }
                _ => missing.push((index, count)),
            }
        }
        if !missing.is_empty() {
            let old_len = mine.len();
            mine.resize(old_len + missing.len(), (0, 0));
            let (mut i, mut j, mut w) = (old_len, missing.len(), mine.len());
            while j > 0 {
                w -= 1;
                if i > 0 && mine[i - 1].0 > missing[j - 1].0 {
                    mine[w] = mine[i - 1];
                    i -= 1;
                } else {
                    mine[w] = missing[j - 1];
                    j -= 1;
                }
            }
        }
        self.count = self.count.saturating_add(other.count);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Forgets every value, keeping the allocation.
    pub fn reset(&mut self) {
        self.buckets.clear();
        self.count = 0;
    }

    /// The value at `quantile` (0.0..=1.0) in microseconds: the bucket holding
    /// the value of rank ⌈quantile × count⌉ (HdrHistogram's definition),
    /// reported as the middle of that bucket so the error is at most half a
    /// bucket (±0.4 %). `None` when empty.
    pub fn quantile_us(&self, quantile: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let quantile = if quantile.is_nan() {
            0.5
        } else {
            quantile.clamp(0.0, 1.0)
        };
        let rank = ((quantile * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        let index = self
            .buckets
            .iter()
            .find(|(_, count)| {
                seen = seen.saturating_add(*count);
                seen >= rank
            })
            .or(self.buckets.last())
            .map(|(index, _)| *index)?;
        let (low, high) = bucket_bounds(index);
        Some((low as f64 + high as f64) / 2.0)
    }

    /// Iterates over non-empty buckets as (highest value of the bucket in
    /// microseconds, count).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets
            .iter()
            .map(|(index, count)| (bucket_bounds(*index).1, *count))
    }

    /// HdrHistogram V2 bytes, the form used on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.buckets.len() * 3 + 4);
        let mut next_index = 0u16;
        for (index, count) in &self.buckets {
            let zeros = index - next_index;
            if zeros == 1 {
                write_varint(&mut payload, zig_zag(0));
            } else if zeros > 1 {
                write_varint(&mut payload, zig_zag(-i64::from(zeros)));
            }
            write_varint(&mut payload, zig_zag((*count).min(i64::MAX as u64) as i64));
            next_index = index + 1;
        }
        let mut bytes = Vec::with_capacity(V2_HEADER_LEN + payload.len());
        bytes.extend_from_slice(&V2_COOKIE.to_be_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes()); // normalizing index offset
        bytes.extend_from_slice(&u32::from(SIGNIFICANT_DIGITS).to_be_bytes());
        bytes.extend_from_slice(&LOWEST_US.to_be_bytes());
        bytes.extend_from_slice(&HIGHEST_US.to_be_bytes());
        bytes.extend_from_slice(&1.0f64.to_be_bytes()); // integer to double ratio
        bytes.extend_from_slice(&payload);
        bytes
    }

    /// Decodes V2 bytes, refusing any other configuration. Empty input is an
    /// empty histogram. Every length and index is checked; hostile input gets
    /// an error, never a panic or a large allocation.
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
        if u32_at(8) != 0 {
            return Err(HistogramError::Malformed("normalizing index offsets are not supported"));
        }
        let (digits, lowest, highest) = (u32_at(12), u64_at(16), u64_at(24));
        if lowest != LOWEST_US || highest != HIGHEST_US || digits != u32::from(SIGNIFICANT_DIGITS) {
            return Err(HistogramError::Configuration {
                lowest,
                highest,
                digits,
            });
        }
        if f64::from_bits(u64_at(32)) != 1.0 {
            return Err(HistogramError::Malformed("integer to double ratio must be 1"));
        }
        let mut payload = &bytes[V2_HEADER_LEN..];
        let mut histogram = LatencyHistogram::new();
        let mut index = 0usize;
        while !payload.is_empty() {
            let value = read_varint(&mut payload)?;
            let count_or_zeros = un_zig_zag(value);
            if count_or_zeros < 0 {
                index = index.saturating_add(count_or_zeros.unsigned_abs() as usize);
                continue;
            }
            if count_or_zeros > 0 {
                if index >= BUCKETS {
                    return Err(HistogramError::Malformed("a count lies beyond the last bucket"));
                }
                let count = count_or_zeros as u64;
                histogram.count = histogram
                    .count
                    .checked_add(count)
                    .ok_or(HistogramError::Malformed("counts overflow"))?;
                histogram.buckets.push((index as u16, count));
            }
            index += 1;
        }
        Ok(histogram)
    }
}

/// A dense accumulator for merging many histograms at once (a read over a
/// long range): adding a bucket is one array increment, and nothing is
/// allocated per histogram merged. 20 KB; reuse it across reads.
#[derive(Clone)]
pub struct DenseHistogram {
    counts: Vec<u64>,
    count: u64,
    low: usize,
    high: usize,
}

impl fmt::Debug for DenseHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DenseHistogram").field("count", &self.count).finish()
    }
}

impl Default for DenseHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl DenseHistogram {
    /// An empty accumulator.
    pub fn new() -> Self {
        DenseHistogram {
            counts: vec![0; BUCKETS],
            count: 0,
            low: BUCKETS,
            high: 0,
        }
    }

    /// Adds `count` to bucket `index`; indexes beyond the configuration are
    /// ignored (the caller validated them).
    pub fn add_bucket(&mut self, index: u16, count: u64) {
        let at = usize::from(index);
        if let Some(slot) = self.counts.get_mut(at) {
            *slot = slot.saturating_add(count);
            self.count = self.count.saturating_add(count);
            self.low = self.low.min(at);
            self.high = self.high.max(at + 1);
        }
    }

    /// Adds every bucket of `histogram`.
    pub fn add(&mut self, histogram: &LatencyHistogram) {
        for (index, count) in histogram.indexed_buckets() {
            self.add_bucket(*index, *count);
        }
    }

    /// The merged histogram; the accumulator is empty afterwards.
    pub fn take(&mut self) -> LatencyHistogram {
        let mut buckets = Vec::new();
        if self.low < self.high {
            for (offset, slot) in self.counts[self.low..self.high].iter_mut().enumerate() {
                if *slot > 0 {
                    buckets.push(((self.low + offset) as u16, *slot));
                    *slot = 0;
                }
            }
        }
        let histogram = LatencyHistogram {
            buckets,
            count: self.count,
        };
        self.count = 0;
        self.low = BUCKETS;
        self.high = 0;
        histogram
    }
}

fn zig_zag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn un_zig_zag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// HdrHistogram's LEB128 variant: up to 9 bytes, the 9th contributing all 8 bits.
fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    for _ in 0..8 {
        if value < 0x80 {
            out.push(value as u8);
            return;
        }
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(input: &mut &[u8]) -> Result<u64, HistogramError> {
    let mut value = 0u64;
    for i in 0..9 {
        let (&byte, rest) = input
            .split_first()
            .ok_or(HistogramError::Malformed("truncated varint"))?;
        *input = rest;
        if i == 8 {
            return Ok(value | (u64::from(byte) << 56));
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    unreachable!("the ninth byte always returns")
}

#[cfg(test)]
mod tests {
    use hdrhistogram::Histogram;
    use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

    use super::*;

    fn reference() -> Histogram<u64> {
        Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS).unwrap()
    }

    /// Values spread over the whole range, including every bucket boundary
    /// region.
    fn probe_values() -> Vec<u64> {
        let mut values: Vec<u64> = (0..2_000).collect();
        let mut v = 2_000u64;
        while v < HIGHEST_US {
            values.extend([v - 1, v, v + 1]);
            v = v * 17 / 16;
        }
        values.extend([HIGHEST_US - 1, HIGHEST_US]);
        values
    }

    #[test]
    fn buckets_match_hdrhistogram_exactly() {
        let h = reference();
        for v in probe_values() {
            let (low, high) = bucket_bounds(bucket_index(v));
            assert_eq!(low, h.lowest_equivalent(v), "lowest of {v}");
            assert_eq!(high, h.highest_equivalent(v), "highest of {v}");
        }
        assert_eq!(h.distinct_values(), BUCKETS);
        assert!(usize::from(bucket_index(HIGHEST_US)) < BUCKETS);
    }

    #[test]
    fn v2_bytes_interoperate_with_hdrhistogram_both_ways() {
        let mut ours = LatencyHistogram::new();
        let mut theirs = reference();
        for (i, v) in probe_values().into_iter().enumerate().step_by(7) {
            let n = (i % 5 + 1) as u64;
            ours.record_n(v, n);
            theirs.record_n(v, n).unwrap();
        }
        let mut their_bytes = Vec::new();
        V2Serializer::new().serialize(&theirs, &mut their_bytes).unwrap();
        assert_eq!(LatencyHistogram::decode(&their_bytes).unwrap(), ours);
        let decoded: Histogram<u64> = Deserializer::new().deserialize(&mut &ours.encode()[..]).unwrap();
        assert_eq!(decoded, theirs);
        for q in [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let their_value = theirs.value_at_quantile(q);
            let (low, high) = (
                theirs.lowest_equivalent(their_value),
                theirs.highest_equivalent(their_value),
            );
            assert_eq!(ours.quantile_us(q), Some((low as f64 + high as f64) / 2.0), "q={q}");
        }
    }

    #[test]
    fn round_trips_through_v2_bytes() {
        let mut h = LatencyHistogram::new();
        for us in [0, 1, 17, 250, 1_000, 12_345, 999_999, 59_000_000] {
            h.record(us);
        }
        let decoded = LatencyHistogram::decode(&h.encode()).unwrap();
        assert_eq!(decoded, h);
        assert_eq!(decoded.count(), 8);
        assert_eq!(
            LatencyHistogram::decode(&LatencyHistogram::new().encode())
                .unwrap()
                .count(),
            0
        );
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
        // A subset adds in place.
        let mut subset = LatencyHistogram::new();
        subset.record_n(6, 2);
        subset.record_n(299_000, 5);
        a.add(&subset);
        all.add(&subset);
        assert_eq!(a, all);
        assert_eq!(a.count(), 499 + 299 + 7);
        let mut empty = LatencyHistogram::new();
        empty.add(&all);
        assert_eq!(empty, all);
    }

    #[test]
    fn merging_random_histograms_matches_a_reference_count() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3_000 {
            let mut merged = LatencyHistogram::new();
            let mut reference = std::collections::BTreeMap::new();
            for _ in 0..(next() % 6) {
                let mut h = LatencyHistogram::new();
                // Narrow ranges overlap (added in place), wide ones rarely.
                let range = [500, 50_000, 5_000_000][(next() % 3) as usize];
                for _ in 0..(next() % 40) {
                    let value = next() % range;
                    let n = next() % 4 + 1;
                    h.record_n(value, n);
                    *reference.entry(bucket_index(value)).or_insert(0u64) += n;
                }
                merged.add(&h);
            }
            let expected: Vec<(u16, u64)> = reference.into_iter().collect();
            assert_eq!(merged.indexed_buckets(), &expected[..]);
            assert_eq!(merged.count(), expected.iter().map(|(_, c)| c).sum::<u64>());
        }
    }

    #[test]
    fn dense_accumulation_equals_sparse_merging() {
        let mut dense = DenseHistogram::new();
        let mut sparse = LatencyHistogram::new();
        for round in 0..3u64 {
            let mut h = LatencyHistogram::new();
            for v in (1..2_000).step_by(7) {
                h.record_n(v * (round + 1) * 31, round + 1);
            }
            dense.add(&h);
            sparse.add(&h);
        }
        assert_eq!(dense.take(), sparse);
        assert_eq!(dense.take(), LatencyHistogram::new(), "taking empties it");
    }

    #[test]
    fn from_buckets_checks_order_and_range() {
        let h = LatencyHistogram::from_buckets(vec![(1, 2), (5, 0), (9, 3)]).unwrap();
        assert_eq!((h.count(), h.indexed_buckets()), (5, &[(1, 2), (9, 3)][..]));
        assert!(LatencyHistogram::from_buckets(vec![(5, 1), (5, 1)]).is_none());
        assert!(LatencyHistogram::from_buckets(vec![(9, 1), (5, 1)]).is_none());
        assert!(LatencyHistogram::from_buckets(vec![(BUCKETS as u16, 1)]).is_none());
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
        let mut h = LatencyHistogram::new();
        h.record(5);
        h.record(5_000);
        let mut truncated = h.encode();
        truncated.pop();
        assert!(LatencyHistogram::decode(&truncated).is_err());

        // A payload whose counts run past the last bucket.
        let mut beyond = LatencyHistogram::new().encode();
        let mut payload = Vec::new();
        write_varint(&mut payload, zig_zag(-(BUCKETS as i64)));
        write_varint(&mut payload, zig_zag(7));
        beyond[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        beyond.extend_from_slice(&payload);
        assert_eq!(
            LatencyHistogram::decode(&beyond),
            Err(HistogramError::Malformed("a count lies beyond the last bucket"))
        );
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let header = LatencyHistogram::new().encode();
        for len in 0..400 {
            let mut bytes = header.clone();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(seed as u8);
            }
            bytes[4..8].copy_from_slice(&(len as u32).to_be_bytes());
            let _ = LatencyHistogram::decode(&bytes);
        }
    }
}
