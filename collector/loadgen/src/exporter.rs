//! A simulated instance exporting the same windows to Prometheus by remote
//! write, as cumulative classic histograms with the default buckets (one
//! request per window carrying every fingerprint's 14 series) or as
//! cumulative native histograms of schema 3, converted by value the way the
//! collector's remote write converts them (one series per fingerprint). Like
//! Prometheus' own remote-write client, it retries 5xx and connection errors
//! and drops a request answered with 4xx.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use prost::Message;
use querypulse_proto::native::{BucketMap, Cumulative, DEFAULT_SCHEMA};
use querypulse_proto::{LatencyHistogram, prompb};

use super::model::Workload;
use super::remote_write::{CumulativeHistogram, METRIC, SeriesEncoder, compress};
use super::schedule::Phase;
use super::{Event, Lane, Plan, ReconnectBackoff};
use querypulse_proto::now_ms;

/// How long one remote-write request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Every fingerprint's variants decoded once, for native histograms.
#[derive(Debug)]
pub(crate) struct NativeVariants {
    map: BucketMap,
    /// By fingerprint, then variant.
    histograms: Vec<Vec<LatencyHistogram>>,
}

impl NativeVariants {
    pub(crate) fn new(workload: &Workload) -> NativeVariants {
        NativeVariants {
            map: BucketMap::new(DEFAULT_SCHEMA),
            histograms: workload
                .fingerprints
                .iter()
                .map(|f| {
                    f.variants
                        .iter()
                        .map(|v| LatencyHistogram::decode(&v.histogram).expect("the model encodes valid histograms"))
                        .collect()
                })
                .collect(),
        }
    }
}

/// The remote-write request of one window as native histograms: one series
/// per fingerprint, preceded by a zero sample at `start_ms` when given.
fn encode_native(
    service: &str,
    instance: &str,
    fingerprints: &[String],
    cumulative: &[Cumulative],
    start_ms: Option<i64>,
    timestamp_ms: i64,
) -> Vec<u8> {
    let label = |name: &str, value: &str| prompb::Label {
        name: name.to_owned(),
        value: value.to_owned(),
    };
    let timeseries = fingerprints
        .iter()
        .zip(cumulative)
        .map(|(fingerprint, histogram)| prompb::TimeSeries {
            labels: vec![
                label("__name__", METRIC),
                label("fingerprint", fingerprint),
                label("instance", instance),
                label("service", service),
            ],
            samples: Vec::new(),
            histograms: start_ms
                .map(|start| Cumulative::new(histogram.schema).to_prompb(start))
                .into_iter()
                .chain([histogram.to_prompb(timestamp_ms)])
                .collect(),
        })
        .collect();
    prompb::WriteRequest {
        timeseries,
        metadata: Vec::new(),
    }
    .encode_to_vec()
}

/// What every simulated exporter shares.
#[derive(Debug)]
pub(crate) struct ExporterShared {
    /// Set when sending native histograms.
    pub native: Option<NativeVariants>,
    pub plan: Arc<Plan>,
    pub url: String,
    pub client: reqwest::Client,
}

/// Runs one simulated exporter until its windows are delivered or the phase
/// says stop.
pub(crate) async fn run(lane: Lane, shared: Arc<ExporterShared>) {
    let Lane {
        instance,
        mut source,
        mut phase,
        events,
    } = lane;
    let plan = &shared.plan;
    let service = &plan.services[instance.service];
    let fingerprints: Vec<String> = plan.fingerprints[instance.service]
        .iter()
        .map(|f| f.to_string())
        .collect();
    let encoder = SeriesEncoder::new(service, &instance.id, &fingerprints);
    let mut cumulative = vec![CumulativeHistogram::default(); fingerprints.len()];
    let mut native = vec![Cumulative::new(DEFAULT_SCHEMA); fingerprints.len()];
    let mut first = true;
    let mut backoff = ReconnectBackoff::new();
    let interval_ms = plan.interval.as_millis() as i64;

    'windows: loop {
        if *phase.borrow() != Phase::Running {
            break;
        }
        let Some(wait) = source.wait_ms(now_ms()) else { break };
        if wait > 0 {
            tokio::select! {
                _ = sleep_until(Instant::now() + Duration::from_millis(wait)) => {}
                _ = phase.changed() => {}
            }
            continue;
        }
        let Some(window_start_ms) = source.take_due(now_ms()) else {
            continue;
        };
        let start = first.then_some(window_start_ms);
        let end = window_start_ms + interval_ms;
        let body = match &shared.native {
            Some(variants) => {
                for (index, histogram) in native.iter_mut().enumerate() {
                    let v = plan.workload.variant_index(instance.index, window_start_ms, index);
                    let sum_us = plan.workload.fingerprints[index].variants[v].sum_us;
                    histogram.add(&variants.histograms[index][v], sum_us, &variants.map, usize::MAX);
                }
                compress(&encode_native(
                    service,
                    &instance.id,
                    &fingerprints,
                    &native,
                    start,
                    end,
                ))
            }
            None => {
                for (index, histogram) in cumulative.iter_mut().enumerate() {
                    let v = plan.workload.variant(instance.index, window_start_ms, index);
                    for (bucket, add) in histogram.buckets.iter_mut().zip(v.prometheus_buckets) {
                        *bucket += add;
                    }
                    histogram.count += v.calls;
                    histogram.sum_seconds += v.sum_seconds;
                }
                compress(&encoder.encode(&cumulative, start, end))
            }
        };
        loop {
            let sent_at = Instant::now();
            let response = shared
                .client
                .post(&shared.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header("User-Agent", concat!("querypulse-loadgen/", env!("CARGO_PKG_VERSION")))
                .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                .timeout(REQUEST_TIMEOUT)
                .body(body.clone())
                .send()
                .await;
            let retry = match response {
                Ok(response) if response.status().is_success() => {
                    first = false;
                    backoff.reset();
                    let _ = events
                        .send(Event::Acked {
                            service: instance.service,
                            instance: instance.index,
                            window_start_ms,
                            latency: sent_at.elapsed(),
                            duplicate: false,
                        })
                        .await;
                    false
                }
                Ok(response) if response.status().is_client_error() => {
                    let status = response.status();
                    let reason = response.text().await.unwrap_or_default();
                    let _ = events
                        .send(Event::Rejected {
                            reason: format!("{status}: {}", reason.trim()),
                        })
                        .await;
                    false
                }
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "remote write failed; retrying");
                    true
                }
                Err(error) => {
                    tracing::debug!(%error, "remote write failed; retrying");
                    true
                }
            };
            if !retry {
                break;
            }
            let _ = events.send(Event::StreamFailed).await;
            let retry_at = Instant::now() + backoff.next_delay();
            loop {
                tokio::select! {
                    _ = sleep_until(retry_at) => break,
                    _ = phase.changed() => if *phase.borrow() == Phase::Stop { break 'windows },
                }
            }
        }
    }
    let _ = events.send(Event::Finished { unacked: 0 }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remote-write bytes per histogram, snappy-compressed as sent, of the
    /// same windows as classic histograms (14 series each) and as native
    /// ones: one instance, 100 statements, the request of its 30th window
    /// (`cargo test -p querypulse-loadgen native_histograms_take -- --nocapture`
    /// prints them; BENCHMARKS.md quotes them).
    #[test]
    fn native_histograms_take_fewer_bytes_than_classic_ones() {
        let workload = Workload::generate(7, 100);
        let variants = NativeVariants::new(&workload);
        let fingerprints: Vec<String> = (0..100)
            .map(|i| format!("{:016x}", 0x1234_5678_u64 * (i + 1)))
            .collect();
        let encoder = SeriesEncoder::new("svc-000", "instance-0001", &fingerprints);
        let mut classic = vec![CumulativeHistogram::default(); fingerprints.len()];
        let mut native = vec![Cumulative::new(DEFAULT_SCHEMA); fingerprints.len()];
        let (mut classic_bytes, mut native_bytes) = (0, 0);
        for window in 0..30i64 {
            let start = 1_800_000_000_000 + window * 10_000;
            for index in 0..fingerprints.len() {
                let v = workload.variant_index(0, start, index);
                let variant = &workload.fingerprints[index].variants[v];
                for (bucket, add) in classic[index].buckets.iter_mut().zip(variant.prometheus_buckets) {
                    *bucket += add;
                }
                classic[index].count += variant.calls;
                classic[index].sum_seconds += variant.sum_seconds;
                native[index].add(
                    &variants.histograms[index][v],
                    variant.sum_us,
                    &variants.map,
                    usize::MAX,
                );
            }
            classic_bytes = compress(&encoder.encode(&classic, None, start + 10_000)).len();
            native_bytes = compress(&encode_native(
                "svc-000",
                "instance-0001",
                &fingerprints,
                &native,
                None,
                start + 10_000,
            ))
            .len();
        }
        let per = |bytes: usize| bytes as f64 / fingerprints.len() as f64;
        println!(
            "bytes per histogram: classic {:.1}, native {:.1} ({:.2}x)",
            per(classic_bytes),
            per(native_bytes),
            per(native_bytes) / per(classic_bytes)
        );
        assert!(
            native_bytes < classic_bytes,
            "native {native_bytes} B, classic {classic_bytes} B"
        );
    }
}
