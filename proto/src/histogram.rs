//! The one latency histogram configuration every agent and the collector use.
//!
//! Because every histogram has the same shape, merging histograms from many
//! instances and many windows is a plain addition of bucket counts, and a
//! percentile of the merge is a true fleet-wide percentile (never an average of
//! percentiles).

use std::fmt;

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

/// A latency histogram in microseconds with the shared configuration.
#[derive(Clone, PartialEq)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .field("min_us", &self.0.min())
            .field("max_us", &self.0.max())
            .finish()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
            .expect("the shared histogram configuration is valid");
        LatencyHistogram(histogram)
    }

    /// Records one latency. Returns `true` when the value was above
    /// [`HIGHEST_US`] and was clamped to it (an outlier).
    pub fn record(&mut self, micros: u64) -> bool {
        self.record_n(micros, 1)
    }

    /// Records `count` occurrences of one latency; see [`LatencyHistogram::record`].
    pub fn record_n(&mut self, micros: u64, count: u64) -> bool {
        let clamped = micros > HIGHEST_US;
        self.0.saturating_record_n(micros.min(HIGHEST_US), count);
        clamped
    }

    /// Adds every count of `other` (same configuration, so this cannot fail).
    pub fn add(&mut self, other: &LatencyHistogram) {
        self.0
            .add(&other.0)
            .expect("histograms of the shared configuration always add");
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets every value, keeping the allocation.
    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// The value at `quantile` (0.0..=1.0) in microseconds, reported as the
    /// middle of its bucket so the error is at most half a bucket (±0.4 %).
    /// `None` when empty.
    pub fn quantile_us(&self, quantile: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let quantile = if quantile.is_nan() {
            0.5
        } else {
            quantile.clamp(0.0, 1.0)
        };
        let value = self.0.value_at_quantile(quantile);
        let low = self.0.lowest_equivalent(value);
        let high = self.0.highest_equivalent(value);
        // The bucket [low, high] holds integers; its midpoint is the best
        // estimate of any value in it.
        Some((low as f64 + high as f64) / 2.0)
    }

    /// Iterates over non-empty buckets as (highest value of the bucket in
    /// microseconds, count).
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
    }

    /// HdrHistogram V2 bytes, the form used on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(64);
        V2Serializer::new()
            .serialize(&self.0, &mut bytes)
            .expect("a u64 histogram of the shared configuration always serializes");
        bytes
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
        Ok(LatencyHistogram(histogram))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
