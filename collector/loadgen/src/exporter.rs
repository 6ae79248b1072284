//! A simulated instance exporting the same windows to Prometheus by remote
//! write, as cumulative classic histograms with the default buckets: one
//! request per window carrying every fingerprint's 14 series. Like
//! Prometheus' own remote-write client, it retries 5xx and connection errors
//! and drops a request answered with 4xx.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::remote_write::{CumulativeHistogram, SeriesEncoder, compress};
use super::schedule::Phase;
use super::{Event, Lane, Plan, ReconnectBackoff};
use querypulse_proto::now_ms;

/// How long one remote-write request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What every simulated exporter shares.
#[derive(Debug)]
pub(crate) struct ExporterShared {
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
        for (index, histogram) in cumulative.iter_mut().enumerate() {
            let v = plan.workload.variant(instance.index, window_start_ms, index);
            for (bucket, add) in histogram.buckets.iter_mut().zip(v.prometheus_buckets) {
                *bucket += add;
            }
            histogram.count += v.calls;
            histogram.sum_seconds += v.sum_seconds;
        }
        let start = first.then_some(window_start_ms);
        let body = compress(&encoder.encode(&cumulative, start, window_start_ms + interval_ms));
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
