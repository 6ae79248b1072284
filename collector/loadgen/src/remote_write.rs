//! Prometheus remote write (protocol 1.0: `prompb.WriteRequest`, protobuf,
//! snappy block compression), used to feed Prometheus the same windows the
//! simulated agents send to the collector, as classic histograms with the
//! default buckets.
//!
//! No message is built: labels of every series are encoded once, and a
//! request is assembled from those bytes plus the samples, so the load
//! generator stays far cheaper than the Prometheus it feeds. The tests define
//! the messages with prost derive (only the fields we send) and decode what
//! [`SeriesEncoder`] writes with them.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::model::PROMETHEUS_BUCKETS;

/// Metric name prefix: the OpenTelemetry name of statement duration.
pub const METRIC: &str = "db_client_operation_duration_seconds";
/// Series per histogram: each bucket, `+Inf`, `_sum` and `_count`.
pub const SERIES_PER_HISTOGRAM: usize = PROMETHEUS_BUCKETS.len() + 3;

/// One cumulative classic histogram, as a scrape of the instance would see it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CumulativeHistogram {
    /// Calls at or below each default bucket bound.
    pub buckets: [u64; PROMETHEUS_BUCKETS.len()],
    /// All calls (`+Inf` and `_count`).
    pub count: u64,
    /// Sum of latencies, seconds.
    pub sum_seconds: f64,
}

impl CumulativeHistogram {
    /// The value of each of the [`SERIES_PER_HISTOGRAM`] series, in the order
    /// of [`SeriesEncoder`]: buckets, `+Inf`, `_sum`, `_count`.
    fn values(&self) -> [f64; SERIES_PER_HISTOGRAM] {
        let mut values = [0.0; SERIES_PER_HISTOGRAM];
        for (value, count) in values.iter_mut().zip(self.buckets) {
            *value = count as f64;
        }
        values[PROMETHEUS_BUCKETS.len()] = self.count as f64;
        values[PROMETHEUS_BUCKETS.len() + 1] = self.sum_seconds;
        values[PROMETHEUS_BUCKETS.len() + 2] = self.count as f64;
        values
    }
}

/// Label `name=value` encoded as a `TimeSeries.labels` entry.
fn label_entry(name: &str, value: &str) -> Vec<u8> {
    let mut label = Vec::with_capacity(name.len() + value.len() + 4);
    prost::encoding::string::encode(1, &name.to_owned(), &mut label);
    prost::encoding::string::encode(2, &value.to_owned(), &mut label);
    let mut entry = Vec::with_capacity(label.len() + 4);
    encode_key(1, WireType::LengthDelimited, &mut entry);
    encode_varint(label.len() as u64, &mut entry);
    entry.extend_from_slice(&label);
    entry
}

/// The label entries of one series, split around `instance` (labels must be
/// sorted: `__name__`, `fingerprint`, `instance`, `le`, `service`).
#[derive(Debug, Clone)]
struct SeriesLabels {
    before_instance: Vec<u8>,
    after_instance: Vec<u8>,
}

/// Encodes the classic histograms of one simulated instance into
/// remote-write requests.
#[derive(Debug, Clone)]
pub struct SeriesEncoder {
    instance: Vec<u8>,
    /// Per fingerprint, [`SERIES_PER_HISTOGRAM`] series.
    series: Vec<Vec<SeriesLabels>>,
}

impl SeriesEncoder {
    /// An encoder for `instance` of `service`, whose fingerprints are given
    /// as 16 hex digits.
    pub fn new(service: &str, instance: &str, fingerprints: &[String]) -> SeriesEncoder {
        let service_entry = label_entry("service", service);
        let names: Vec<(String, Option<String>)> = PROMETHEUS_BUCKETS
            .iter()
            .map(|le| (format!("{METRIC}_bucket"), Some(le.to_string())))
            .chain([
                (format!("{METRIC}_bucket"), Some("+Inf".to_owned())),
                (format!("{METRIC}_sum"), None),
                (format!("{METRIC}_count"), None),
            ])
            .collect();
        let series = fingerprints
            .iter()
            .map(|fingerprint| {
                let fingerprint_entry = label_entry("fingerprint", fingerprint);
                names
                    .iter()
                    .map(|(name, le)| {
                        let mut before_instance = label_entry("__name__", name);
                        before_instance.extend_from_slice(&fingerprint_entry);
                        let mut after_instance = le.as_deref().map(|le| label_entry("le", le)).unwrap_or_default();
                        after_instance.extend_from_slice(&service_entry);
                        SeriesLabels {
                            before_instance,
                            after_instance,
                        }
                    })
                    .collect()
            })
            .collect();
        SeriesEncoder {
            instance: label_entry("instance", instance),
            series,
        }
    }

    /// A `WriteRequest` (uncompressed) with one sample per series of every
    /// fingerprint at `timestamp_ms`, preceded by a zero sample at
    /// `start_ms` when given (a counter's first scrape after a restart).
    pub fn encode(&self, histograms: &[CumulativeHistogram], start_ms: Option<i64>, timestamp_ms: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.series.len() * SERIES_PER_HISTOGRAM * 200);
        let mut samples = Vec::with_capacity(64);
        for (series, histogram) in self.series.iter().zip(histograms) {
            for (labels, value) in series.iter().zip(histogram.values()) {
                samples.clear();
                if let Some(start_ms) = start_ms {
                    encode_sample(0.0, start_ms, &mut samples);
                }
                encode_sample(value, timestamp_ms, &mut samples);
                let len =
                    labels.before_instance.len() + self.instance.len() + labels.after_instance.len() + samples.len();
                encode_key(1, WireType::LengthDelimited, &mut out);
                encode_varint(len as u64, &mut out);
                out.extend_from_slice(&labels.before_instance);
                out.extend_from_slice(&self.instance);
                out.extend_from_slice(&labels.after_instance);
                out.extend_from_slice(&samples);
            }
        }
        out
    }
}

/// Appends a `TimeSeries.samples` entry.
fn encode_sample(value: f64, timestamp_ms: i64, out: &mut Vec<u8>) {
    let len = 9 + 1 + encoded_len_varint(timestamp_ms as u64);
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    encode_key(1, WireType::SixtyFourBit, out);
    out.extend_from_slice(&value.to_le_bytes());
    encode_key(2, WireType::Varint, out);
    encode_varint(timestamp_ms as u64, out);
}

/// Snappy block compression, as remote write requires.
pub fn compress(request: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(request)
        .expect("snappy compresses any input that fits in memory")
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// `prometheus.WriteRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// Series with their samples.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// `prometheus.TimeSeries`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Labels, sorted by name.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Samples, in time order.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// `prometheus.Label`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// Label name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Label value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `prometheus.Sample`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Unix epoch milliseconds.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    fn labels(series: &TimeSeries) -> Vec<(String, String)> {
        series
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect()
    }

    #[test]
    fn requests_round_trip_through_snappy_and_the_prompb_messages() {
        let fingerprints = ["00000000000000aa".to_owned(), "00000000000000bb".to_owned()];
        let encoder = SeriesEncoder::new("checkout", "checkout-7", &fingerprints);
        let mut first = CumulativeHistogram {
            count: 9,
            sum_seconds: 0.75,
            ..CumulativeHistogram::default()
        };
        first.buckets = [1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9];
        let second = CumulativeHistogram {
            buckets: [0; 11],
            count: 2,
            sum_seconds: 40.0,
        };
        let body = compress(&encoder.encode(&[first, second], Some(1_000), 11_000));
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let request = WriteRequest::decode(&raw[..]).unwrap();

        assert_eq!(request.timeseries.len(), 2 * SERIES_PER_HISTOGRAM);
        let le_005 = &request.timeseries[0];
        assert_eq!(
            labels(le_005),
            [
                ("__name__", "db_client_operation_duration_seconds_bucket"),
                ("fingerprint", "00000000000000aa"),
                ("instance", "checkout-7"),
                ("le", "0.005"),
                ("service", "checkout"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert_eq!(
            le_005.samples,
            vec![
                Sample {
                    value: 0.0,
                    timestamp: 1_000
                },
                Sample {
                    value: 1.0,
                    timestamp: 11_000
                }
            ]
        );
        let le_values: Vec<String> = request.timeseries[..12]
            .iter()
            .map(|s| s.labels[3].value.clone())
            .collect();
        assert_eq!(
            le_values,
            [
                "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"
            ]
        );
        let second_sum = &request.timeseries[SERIES_PER_HISTOGRAM + 12];
        assert_eq!(second_sum.labels[0].value, "db_client_operation_duration_seconds_sum");
        assert_eq!(second_sum.labels[1].value, "00000000000000bb");
        assert_eq!(second_sum.labels.len(), 4, "no le on _sum");
        assert_eq!(second_sum.samples[1].value, 40.0);
        let second_count = &request.timeseries[SERIES_PER_HISTOGRAM + 13];
        assert_eq!(
            second_count.labels[0].value,
            "db_client_operation_duration_seconds_count"
        );
        assert_eq!(second_count.samples[1].value, 2.0);
        for series in &request.timeseries {
            let names: Vec<&str> = series.labels.iter().map(|l| l.name.as_str()).collect();
            assert!(names.is_sorted(), "{names:?}");
        }
    }

    #[test]
    fn without_a_start_each_series_carries_one_sample() {
        let encoder = SeriesEncoder::new("s", "i", &["0000000000000001".to_owned()]);
        let raw = encoder.encode(&[CumulativeHistogram::default()], None, 5);
        let request = WriteRequest::decode(&raw[..]).unwrap();
        assert!(request.timeseries.iter().all(|s| s.samples.len() == 1));
        let expected = TimeSeries {
            labels: request.timeseries[0].labels.clone(),
            samples: vec![Sample {
                value: 0.0,
                timestamp: 5,
            }],
        };
        assert_eq!(request.timeseries[0], expected);
    }
}
