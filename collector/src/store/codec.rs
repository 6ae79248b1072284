//! How records are laid out inside the store. Values are protobuf messages
//! (prost), so fields can be added later without rewriting stored data; keys
//! are big-endian so that lexicographic order is numeric order.

use std::collections::BTreeMap;

use prost::Message;
use querypulse_proto::{AgentCounters, ErrorClassCount, Fingerprint, Hello, LatencyHistogram, QueryStats};

use super::StoreError;

/// Key spaces, one leading byte each.
pub(crate) mod prefix {
    /// `W` service id, fingerprint, window start → [`super::StoredQueryStats`].
    pub const QUERY_WINDOW: u8 = b'W';
    /// `F` service id, fingerprint → empty: the fingerprints of a service.
    pub const SERVICE_FINGERPRINT: u8 = b'F';
    /// `T` fingerprint → normalized text (UTF-8).
    pub const TEXT: u8 = b'T';
    /// `S` service name → service id (u32 BE).
    pub const SERVICE: u8 = b'S';
    /// `I` instance id → [`super::StoredInstance`].
    pub const INSTANCE: u8 = b'I';
    /// `A` instance id, 0, seq → empty: batches already applied.
    pub const APPLIED: u8 = b'A';
    /// `M` name → metadata (next service id, schema version).
    pub const META: u8 = b'M';
}

/// Window starts are signed; flipping the sign bit makes their big-endian
/// bytes sort in numeric order, negative times included.
pub(crate) fn time_key(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

#[cfg(test)]
pub(crate) fn time_from_key(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

pub(crate) fn query_series_prefix(service_id: u32, fingerprint: Fingerprint) -> Vec<u8> {
    let mut key = Vec::with_capacity(21);
    key.push(prefix::QUERY_WINDOW);
    key.extend_from_slice(&service_id.to_be_bytes());
    key.extend_from_slice(&fingerprint.get().to_be_bytes());
    key
}

pub(crate) fn query_window_key(service_id: u32, fingerprint: Fingerprint, start_ms: i64) -> Vec<u8> {
    let mut key = query_series_prefix(service_id, fingerprint);
    key.extend_from_slice(&time_key(start_ms));
    key
}

pub(crate) fn service_fingerprint_key(service_id: u32, fingerprint: Fingerprint) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(prefix::SERVICE_FINGERPRINT);
    key.extend_from_slice(&service_id.to_be_bytes());
    key.extend_from_slice(&fingerprint.get().to_be_bytes());
    key
}

pub(crate) fn text_key(fingerprint: Fingerprint) -> [u8; 9] {
    let mut key = [prefix::TEXT; 9];
    key[1..].copy_from_slice(&fingerprint.get().to_be_bytes());
    key
}

pub(crate) fn named_key(prefix: u8, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.push(prefix);
    key.extend_from_slice(name.as_bytes());
    key
}

/// `A` instance id, 0: the prefix of one instance's applied markers. The 0
/// byte ends the id (ids are printable), so one instance's keys never mix with
/// those of an instance whose id extends it.
pub(crate) fn applied_prefix(instance_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(instance_id.len() + 10);
    key.push(prefix::APPLIED);
    key.extend_from_slice(instance_id.as_bytes());
    key.push(0);
    key
}

pub(crate) fn applied_key(instance_id: &str, seq: u64) -> Vec<u8> {
    let mut key = applied_prefix(instance_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// A failure class and its count.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct StoredErrorClass {
    #[prost(string, tag = "1")]
    pub class: String,
    #[prost(uint64, tag = "2")]
    pub count: u64,
}

/// Statement statistics of one series and window.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct StoredQueryStats {
    #[prost(uint64, tag = "1")]
    pub calls: u64,
    #[prost(uint64, tag = "2")]
    pub errors: u64,
    #[prost(message, repeated, tag = "3")]
    pub error_classes: Vec<StoredErrorClass>,
    #[prost(uint64, tag = "4")]
    pub rows: u64,
    #[prost(uint64, tag = "5")]
    pub sum_us: u64,
    #[prost(double, tag = "6")]
    pub sum_squares_us: f64,
    #[prost(uint64, tag = "7")]
    pub min_us: u64,
    #[prost(uint64, tag = "8")]
    pub max_us: u64,
    /// HdrHistogram V2 bytes of the shared configuration.
    #[prost(bytes = "vec", tag = "9")]
    pub histogram: Vec<u8>,
    #[prost(uint64, tag = "10")]
    pub outliers: u64,
}

impl StoredQueryStats {
    pub(crate) fn encode_stats(stats: &QueryStats) -> Vec<u8> {
        StoredQueryStats {
            calls: stats.calls,
            errors: stats.errors,
            error_classes: stats
                .error_classes
                .iter()
                .map(|c| StoredErrorClass {
                    class: c.class.clone(),
                    count: c.count,
                })
                .collect(),
            rows: stats.rows,
            sum_us: stats.sum_us,
            sum_squares_us: stats.sum_squares_us,
            min_us: stats.min_us,
            max_us: stats.max_us,
            histogram: stats.latency.encode(),
            outliers: stats.outliers,
        }
        .encode_to_vec()
    }

    pub(crate) fn decode_stats(fingerprint: Fingerprint, bytes: &[u8]) -> Result<QueryStats, StoreError> {
        let stored = StoredQueryStats::decode(bytes).map_err(|e| StoreError::Corrupt(format!("query window: {e}")))?;
        let latency = LatencyHistogram::decode(&stored.histogram)
            .map_err(|e| StoreError::Corrupt(format!("query window histogram: {e}")))?;
        Ok(QueryStats {
            fingerprint,
            calls: stored.calls,
            errors: stored.errors,
            error_classes: stored
                .error_classes
                .into_iter()
                .map(|c| ErrorClassCount {
                    class: c.class,
                    count: c.count,
                })
                .collect(),
            rows: stored.rows,
            sum_us: stored.sum_us,
            sum_squares_us: stored.sum_squares_us,
            min_us: stored.min_us,
            max_us: stored.max_us,
            latency,
            outliers: stored.outliers,
        })
    }
}

/// What the collector knows about one agent instance.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct StoredInstance {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub instance_id: String,
    #[prost(string, tag = "3")]
    pub host: String,
    #[prost(uint32, tag = "4")]
    pub pid: u32,
    #[prost(string, tag = "5")]
    pub agent_version: String,
    #[prost(string, tag = "6")]
    pub db_system: String,
    #[prost(btree_map = "string, string", tag = "7")]
    pub labels: BTreeMap<String, String>,
    #[prost(int64, tag = "8")]
    pub started_at_ms: i64,
    #[prost(int64, tag = "9")]
    pub first_seen_ms: i64,
    #[prost(int64, tag = "10")]
    pub last_seen_ms: i64,
    #[prost(uint32, tag = "11")]
    pub interval_ms: u32,
    #[prost(uint64, tag = "12")]
    pub batches: u64,
    #[prost(uint64, tag = "13")]
    pub last_seq: u64,
    #[prost(uint64, tag = "20")]
    pub dropped_batches: u64,
    #[prost(uint64, tag = "21")]
    pub rejected_batches: u64,
    #[prost(uint64, tag = "22")]
    pub overflow_fingerprints: u64,
    #[prost(uint64, tag = "23")]
    pub overflow_calls: u64,
    #[prost(uint64, tag = "24")]
    pub dropped_samples: u64,
    #[prost(uint64, tag = "25")]
    pub dropped_records: u64,
    #[prost(uint64, tag = "26")]
    pub send_errors: u64,
    #[prost(uint64, tag = "27")]
    pub reconnects: u64,
    #[prost(uint64, tag = "28")]
    pub outbox_bytes: u64,
    #[prost(uint64, tag = "29")]
    pub outbox_batches: u64,
}

impl StoredInstance {
    pub(crate) fn from_hello(hello: &Hello, now_ms: i64) -> StoredInstance {
        StoredInstance {
            service: hello.service.clone(),
            instance_id: hello.instance_id.clone(),
            host: hello.host.clone(),
            pid: hello.pid,
            agent_version: hello.agent_version.clone(),
            db_system: hello.db_system.as_str().to_owned(),
            labels: hello.labels.clone(),
            started_at_ms: hello.started_at_ms,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            interval_ms: hello.interval_ms,
            ..Default::default()
        }
    }

    pub(crate) fn set_counters(&mut self, c: &AgentCounters) {
        self.dropped_batches = c.dropped_batches;
        self.rejected_batches = c.rejected_batches;
        self.overflow_fingerprints = c.overflow_fingerprints;
        self.overflow_calls = c.overflow_calls;
        self.dropped_samples = c.dropped_samples;
        self.dropped_records = c.dropped_records;
        self.send_errors = c.send_errors;
        self.reconnects = c.reconnects;
        self.outbox_bytes = c.outbox_bytes;
        self.outbox_batches = c.outbox_batches;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_numerically_across_zero() {
        let times = [i64::MIN, -10_000, -1, 0, 1, 10_000, 1_700_000_000_000, i64::MAX];
        let keys: Vec<[u8; 8]> = times.iter().map(|t| time_key(*t)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for t in times {
            assert_eq!(time_from_key(time_key(t)), t);
        }
    }

    #[test]
    fn stored_stats_round_trip() {
        let fp = Fingerprint::new(42);
        let mut stats = QueryStats::new(fp);
        stats.record(120, 3, None);
        stats.record(4_500, 0, Some("23505"));
        let decoded = StoredQueryStats::decode_stats(fp, &StoredQueryStats::encode_stats(&stats)).unwrap();
        assert_eq!(decoded, stats);
    }

    #[test]
    fn applied_keys_of_different_instances_never_interleave() {
        assert!(applied_key("abc", 0).starts_with(&applied_prefix("abc")));
        assert!(!applied_key("abc", 0).starts_with(&applied_prefix("ab")));
        assert!(!applied_key("ab", 7).starts_with(&applied_prefix("abc")));
    }
}
