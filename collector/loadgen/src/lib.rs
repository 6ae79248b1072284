#![doc = include_str!("../README.md")]
//!
//! # How a run works
//!
//! A run simulates `instances` service instances, spread over `services`
//! services, each reporting `fingerprints` statements every `interval`. It
//! talks to a collector over the real `querypulse.v1` protocol (the `agent`
//! module), or, for the side-by-side comparison, to Prometheus by remote
//! write with the same windows as classic histograms (the `exporter`
//! module). It stops by itself after `duration`, and reports what was
//! acknowledged, how fast, and the exact quantiles of everything delivered
//! (the `model` module's exact tally).
//!
//! With `backfill`, each instance instead sends every window of that span in
//! the past as fast as acknowledgements allow, and the run ends when all are
//! delivered (or at `duration`).

mod agent;
mod exporter;
mod model;
mod remote_write;
mod schedule;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use querypulse_proto::histogram::HIGHEST_US;
use querypulse_proto::{Fingerprint, LatencyHistogram, MAX_INTERVAL_MS, MIN_INTERVAL_MS};
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use model::{ExactTally, Workload, statement_text};
use querypulse_proto::now_ms;
use remote_write::SERIES_PER_HISTOGRAM;
use schedule::{Phase, WindowSource};

/// Default seed of the generated workload.
pub const DEFAULT_SEED: u64 = 1;
/// Default unacknowledged batches per simulated instance.
pub const DEFAULT_IN_FLIGHT: usize = 16;
/// Default period of the progress lines.
pub const DEFAULT_REPORT_EVERY: Duration = Duration::from_secs(5);
/// Instances per service when the number of services is not given.
pub const INSTANCES_PER_SERVICE: u32 = 20;
/// How long instances have to stop once told to before they are aborted.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Quantiles compared against the exact values.
pub const QUANTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// Where the simulated instances send their windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A querypulse collector's gRPC ingest, e.g. `http://127.0.0.1:7171`.
    Collector {
        /// The gRPC endpoint.
        endpoint: String,
        /// Bearer token, when the collector requires one.
        token: Option<String>,
    },
    /// Prometheus' remote-write receiver, e.g.
    /// `http://127.0.0.1:9090/api/v1/write`.
    PrometheusRemoteWrite {
        /// The receiver URL.
        url: String,
        /// Send native histograms (schema 3, as the collector's remote write
        /// does) instead of classic ones with the default buckets; the
        /// receiver needs `--enable-feature=native-histograms`.
        native: bool,
    },
}

/// A load-generator run.
#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    /// Simulated instances (one stream each).
    pub instances: u32,
    /// Statements per instance, all reported every window.
    pub fingerprints: usize,
    /// Services the instances are spread over; each has its own statements.
    pub services: usize,
    /// Window length.
    pub interval: Duration,
    /// Wall-clock bound of the run.
    pub duration: Duration,
    /// Where to send.
    pub target: Target,
    /// Seed of the generated latency distributions.
    pub seed: u64,
    /// Send this span of past windows as fast as acks allow, then stop.
    pub backfill: Option<Duration>,
    /// With `backfill`: the span ends this long before now (so it lies in
    /// closed time partitions).
    pub backfill_ending: Duration,
    /// Unacknowledged batches per instance.
    pub in_flight: usize,
    /// Print a progress line this often; `None` prints nothing.
    pub report_every: Option<Duration>,
    /// PEM CA the collector's certificate must chain to, for an `https://`
    /// endpoint; without it the system's roots are used.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// PEM certificate chain and key presented to a collector that asks
    /// for client certificates.
    pub client_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl LoadgenConfig {
    /// A run of `instances` × `fingerprints` against `target` with the
    /// default seed, in-flight limit and one service per 20 instances.
    pub fn new(instances: u32, fingerprints: usize, interval: Duration, duration: Duration, target: Target) -> Self {
        LoadgenConfig {
            instances,
            fingerprints,
            services: default_services(instances),
            interval,
            duration,
            target,
            seed: DEFAULT_SEED,
            backfill: None,
            backfill_ending: Duration::ZERO,
            in_flight: DEFAULT_IN_FLIGHT,
            report_every: None,
            ca_cert_pem: None,
            client_identity_pem: None,
        }
    }

    fn validate(&self) -> Result<(), LoadgenError> {
        let invalid = |m: &str| Err(LoadgenError::Invalid(m.to_owned()));
        if self.instances == 0 || self.fingerprints == 0 || self.services == 0 {
            return invalid("instances, fingerprints and services must be at least 1");
        }
        if self.services > self.instances as usize {
            return invalid("there cannot be more services than instances");
        }
        let interval_ms = self.interval.as_millis();
        if interval_ms < u128::from(MIN_INTERVAL_MS)
            || interval_ms > u128::from(MAX_INTERVAL_MS)
            || !interval_ms.is_multiple_of(1_000)
        {
            return invalid("the interval must be whole seconds between 1 s and 1 h");
        }
        if self.in_flight == 0 {
            return invalid("in-flight must be at least 1");
        }
        if self.backfill_ending > Duration::from_secs(400 * 86_400) {
            return invalid("the backfill can end at most 400 days ago");
        }
        Ok(())
    }
}

/// One service per [`INSTANCES_PER_SERVICE`] instances, rounded up.
pub fn default_services(instances: u32) -> usize {
    instances.div_ceil(INSTANCES_PER_SERVICE).max(1) as usize
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A setting is out of range.
    #[error("invalid load-generator settings: {0}")]
    Invalid(String),
    /// The endpoint or URL does not parse.
    #[error("invalid endpoint {0}")]
    Endpoint(String),
}

/// What the simulated instances generate, shared by all of them.
#[derive(Debug)]
pub(crate) struct Plan {
    pub workload: Workload,
    pub services: Vec<String>,
    /// Per service, its fingerprints (index = fingerprint number).
    pub fingerprints: Vec<Vec<Fingerprint>>,
    pub interval: Duration,
    pub in_flight: usize,
}

/// One simulated instance.
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub index: u32,
    pub service: usize,
    pub id: String,
}

/// What one simulated instance runs with.
#[derive(Debug)]
pub(crate) struct Lane {
    pub instance: Instance,
    pub source: WindowSource,
    pub phase: watch::Receiver<Phase>,
    pub events: mpsc::Sender<Event>,
}

/// What the instances tell the bookkeeping task.
#[derive(Debug)]
pub(crate) enum Event {
    /// A window is durable (collector) or accepted (Prometheus).
    Acked {
        service: usize,
        instance: u32,
        window_start_ms: i64,
        latency: Duration,
        duplicate: bool,
    },
    /// A window was refused for good.
    Rejected { reason: String },
    /// The outbox was full and dropped its oldest window.
    Dropped,
    /// A stream opened after the first one.
    Reconnected,
    /// A connection attempt, a stream or a request failed (it is retried).
    StreamFailed,
    /// The instance ended with this many windows undelivered.
    Finished { unacked: u64 },
}

/// Capped exponential backoff with jitter, 100 ms to 2 s.
#[derive(Debug)]
pub(crate) struct ReconnectBackoff {
    step: Duration,
}

impl ReconnectBackoff {
    const INITIAL: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    pub(crate) fn new() -> Self {
        ReconnectBackoff { step: Self::INITIAL }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(Self::MAX);
        step / 2 + rand::rng().random_range(Duration::ZERO..=step / 2)
    }

    pub(crate) fn reset(&mut self) {
        self.step = Self::INITIAL;
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Batches (collector) or requests (Prometheus) acknowledged.
    pub batches_acked: u64,
    /// Fingerprint-windows acknowledged (Prometheus: histograms).
    pub fingerprint_windows_acked: u64,
    /// Calls inside those windows.
    pub calls_acked: u64,
    /// Acks that said the batch had been applied before (resends).
    pub duplicates: u64,
    /// Windows refused for good.
    pub rejected: u64,
    /// Windows dropped from a full outbox.
    pub dropped: u64,
    /// Streams re-opened.
    pub reconnects: u64,
    /// Failed connects, broken streams, failed requests.
    pub failures: u64,
    /// Windows still undelivered when the run ended (instances that had to
    /// be aborted not included).
    pub unacked_at_end: u64,
    /// Instances that did not stop within [`STOP_GRACE`] of being told to.
    pub instances_aborted: u64,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct LoadgenReport {
    /// Wall-clock time from the start to the last ack.
    pub elapsed: Duration,
    /// From the first ack to the last: the span rates are computed over (a
    /// live run sends its first windows only after one interval).
    pub active: Duration,
    /// Counters.
    pub totals: Totals,
    /// End-to-end ack latency (send to ack), microseconds.
    pub ack_latency: LatencyHistogram,
    /// Windows a backfill had to send in total (0 for live runs).
    pub backfill_windows: u64,
    /// Earliest window start and latest window end delivered, Unix ms.
    pub delivered_range_ms: Option<(i64, i64)>,
    /// First rejection reasons (at most a few).
    pub reject_reasons: Vec<String>,
    /// Remote-write samples per histogram, for Prometheus runs; 0 otherwise.
    pub samples_per_window: u64,
    plan: Arc<Plan>,
    tally: ExactTally,
}

/// One (service, fingerprint) series as delivered.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesReport {
    /// Service name.
    pub service: String,
    /// 16 hex digits.
    pub fingerprint: Fingerprint,
    /// Statement class.
    pub class: &'static str,
    /// Windows delivered.
    pub windows: u64,
    /// Calls delivered.
    pub calls: u64,
    /// Exact p50, p95, p99 of everything delivered, milliseconds.
    pub exact_ms: [f64; 3],
}

impl LoadgenReport {
    /// Acknowledged fingerprint-windows per second.
    pub fn windows_per_sec(&self) -> f64 {
        self.totals.fingerprint_windows_acked as f64 / self.active.as_secs_f64().max(1e-9)
    }

    /// Every (service, fingerprint) with what was delivered and its exact
    /// quantiles.
    pub fn series(&self) -> Vec<SeriesReport> {
        let mut out = Vec::new();
        for (service, name) in self.plan.services.iter().enumerate() {
            for (index, fingerprint) in self.plan.fingerprints[service].iter().enumerate() {
                let windows = self.tally.windows(service, index);
                if windows == 0 {
                    continue;
                }
                let exact = self
                    .tally
                    .quantiles_us(&self.plan.workload, service, index, &QUANTILES)
                    .unwrap_or_default();
                out.push(SeriesReport {
                    service: name.clone(),
                    fingerprint: *fingerprint,
                    class: self.plan.workload.fingerprints[index].class.name(),
                    windows,
                    calls: self.tally.calls(&self.plan.workload, service, index),
                    exact_ms: [exact[0] / 1e3, exact[1] / 1e3, exact[2] / 1e3],
                });
            }
        }
        out
    }

    /// The closing summary, as printed by the command.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let secs = self.active.as_secs_f64().max(1e-9);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "loadgen finished after {:.1} s ({secs:.1} s from the first ack to the last)",
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "  acked      {} fingerprint-windows ({:.0}/s), {} batches ({:.1}/s), {} calls",
            t.fingerprint_windows_acked,
            self.windows_per_sec(),
            t.batches_acked,
            t.batches_acked as f64 / secs,
            t.calls_acked
        );
        if self.samples_per_window > 0 {
            let samples = t.fingerprint_windows_acked * self.samples_per_window;
            let _ = writeln!(out, "  samples    {samples} ({:.0}/s)", samples as f64 / secs);
        }
        let _ = writeln!(out, "  ack        {}", latency_line(&self.ack_latency));
        let _ = writeln!(
            out,
            "  problems   {} rejected, {} dropped, {} duplicates, {} reconnects, {} failures, {} unacked at end, {} instances aborted",
            t.rejected, t.dropped, t.duplicates, t.reconnects, t.failures, t.unacked_at_end, t.instances_aborted
        );
        if self.backfill_windows > 0 {
            let _ = writeln!(out, "  backfill   {} windows per instance", self.backfill_windows);
        }
        for reason in &self.reject_reasons {
            let _ = writeln!(out, "  rejected:  {reason}");
        }
        out
    }

    /// The report as JSON: totals, rates and every series with its exact
    /// quantiles (what the benchmark harness compares against).
    pub fn to_json(&self) -> serde_json::Value {
        let q = |q: f64| self.ack_latency.quantile_us(q).unwrap_or(0.0) / 1e3;
        serde_json::json!({
            "elapsed_s": self.elapsed.as_secs_f64(),
            "active_s": self.active.as_secs_f64(),
            "totals": self.totals,
            "fingerprint_windows_per_s": self.windows_per_sec(),
            "samples_per_window": self.samples_per_window,
            "ack_latency_ms": { "p50": q(0.5), "p99": q(0.99), "max": q(1.0) },
            "backfill_windows": self.backfill_windows,
            "delivered_from_ms": self.delivered_range_ms.map(|r| r.0),
            "delivered_to_ms": self.delivered_range_ms.map(|r| r.1),
            "interval_ms": self.plan.interval.as_millis() as u64,
            "reject_reasons": self.reject_reasons,
            "series": self.series(),
        })
    }
}

fn latency_line(h: &LatencyHistogram) -> String {
    let ms = |q: f64| h.quantile_us(q).unwrap_or(0.0) / 1e3;
    format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", ms(0.5), ms(0.99), ms(1.0))
}

/// Runs the load generator to completion.
pub async fn run(config: LoadgenConfig) -> Result<LoadgenReport, LoadgenError> {
    config.validate()?;
    let workload = Workload::generate(config.seed, config.fingerprints);
    let services: Vec<String> = (0..config.services).map(|s| format!("svc-{s:03}")).collect();
    let texts: Vec<Vec<(Fingerprint, String)>> = services
        .iter()
        .map(|service| {
            workload
                .fingerprints
                .iter()
                .enumerate()
                .map(|(index, model)| {
                    let text = statement_text(service, index, model.class);
                    (Fingerprint::of_normalized(&text), text)
                })
                .collect()
        })
        .collect();
    let plan = Arc::new(Plan {
        workload,
        services,
        fingerprints: texts.iter().map(|t| t.iter().map(|(f, _)| *f).collect()).collect(),
        interval: config.interval,
        in_flight: config.in_flight,
    });
    // Fresh instance ids per run, so a second run against the same collector
    // is new data rather than resends.
    let run_id: u32 = rand::rng().random();
    let instances: Vec<Instance> = (0..config.instances)
        .map(|index| Instance {
            index,
            service: index as usize % config.services,
            id: format!("loadgen-{run_id:08x}-{index:05}"),
        })
        .collect();

    let (phase_tx, phase) = watch::channel(Phase::Running);
    let (events_tx, mut events) = mpsc::channel(4_096);
    let started = Instant::now();
    let start_ms = now_ms();
    let source_for = |instance: &Instance| match config.backfill {
        Some(span) => WindowSource::backfill(
            config.interval,
            span,
            start_ms - config.backfill_ending.as_millis() as i64,
        ),
        None => {
            // Spread flushes over the interval, as independent agents do.
            let offset = config
                .interval
                .mul_f64(f64::from(instance.index) / f64::from(config.instances));
            WindowSource::live(config.interval, offset, start_ms)
        }
    };
    let backfill_windows = instances.first().map(|i| source_for(i).backfill_windows()).unwrap_or(0);
    let lane = |instance: &Instance| Lane {
        instance: instance.clone(),
        source: source_for(instance),
        phase: phase.clone(),
        events: events_tx.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    let samples_per_window = match &config.target {
        Target::Collector { endpoint, token } => {
            let mut endpoint = Endpoint::from_shared(endpoint.clone())
                .map_err(|e| LoadgenError::Endpoint(format!("{endpoint}: {e}")))?
                .tcp_nodelay(true);
            if endpoint.uri().scheme_str() == Some("https") {
                let mut tls = match &config.ca_cert_pem {
                    Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                    None => ClientTlsConfig::new().with_native_roots(),
                };
                if let Some((cert, key)) = &config.client_identity_pem {
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| LoadgenError::Endpoint(format!("TLS: {e}")))?;
            }
            let token = token
                .as_ref()
                .map(|t| AsciiMetadataValue::try_from(format!("Bearer {t}")))
                .transpose()
                .map_err(|_| LoadgenError::Invalid("the token must be printable ASCII".into()))?;
            let shared = Arc::new(agent::AgentShared {
                plan: plan.clone(),
                endpoint,
                token,
                texts: texts
                    .iter()
                    .map(|t| {
                        t.iter()
                            .map(|(f, text)| querypulse_proto::wire::v1::FingerprintText {
                                fingerprint: f.get(),
                                text: text.clone(),
                            })
                            .collect()
                    })
                    .collect(),
            });
            for instance in &instances {
                tasks.spawn(agent::run(lane(instance), shared.clone()));
            }
            0
        }
        Target::PrometheusRemoteWrite { url, native } => {
            reqwest::Url::parse(url).map_err(|e| LoadgenError::Endpoint(format!("{url}: {e}")))?;
            // reqwest's TLS is rustls with ring, installed here when nobody has.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(config.instances as usize)
                .build()
                .map_err(|e| LoadgenError::Endpoint(format!("{url}: {e}")))?;
            let shared = Arc::new(exporter::ExporterShared {
                native: native.then(|| exporter::NativeVariants::new(&plan.workload)),
                plan: plan.clone(),
                url: url.clone(),
                client,
            });
            for instance in &instances {
                tasks.spawn(exporter::run(lane(instance), shared.clone()));
            }
            if *native { 1 } else { SERIES_PER_HISTOGRAM as u64 }
        }
    };
    drop(events_tx);

    let mut books = Books::new(&plan);
    let drain_grace = (config.interval * 2).max(Duration::from_secs(10));
    let stop_producing = started + config.duration;
    let give_up = stop_producing
        + if config.backfill.is_some() {
            Duration::ZERO
        } else {
            drain_grace
        };
    let mut ticker = config
        .report_every
        .map(|every| tokio::time::interval_at(started + every, every));
    let mut last_tick = (started, 0u64, 0u64);
    loop {
        let next_tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => books.take(event),
                None => break,
            },
            _ = tokio::time::sleep_until(stop_producing), if *phase_tx.borrow() == Phase::Running => {
                let _ = phase_tx.send(Phase::Draining);
            }
            _ = tokio::time::sleep_until(give_up), if *phase_tx.borrow() != Phase::Stop => {
                let _ = phase_tx.send(Phase::Stop);
            }
            // A run is bounded in time whatever the target does.
            _ = tokio::time::sleep_until(give_up + STOP_GRACE) => {
                tasks.abort_all();
                break;
            }
            _ = next_tick => {
                let now = Instant::now();
                let period = now.duration_since(last_tick.0).as_secs_f64().max(1e-9);
                let windows = books.totals.fingerprint_windows_acked - last_tick.1;
                let batches = books.totals.batches_acked - last_tick.2;
                println!(
                    "[{:>6.1}s] {:>9.0} fingerprint-windows/s, {:>7.1} batches/s acked | ack {} | {} rejected, {} dropped, {} reconnects, {} failures",
                    now.duration_since(started).as_secs_f64(),
                    windows as f64 / period,
                    batches as f64 / period,
                    latency_line(&books.period_latency),
                    books.totals.rejected,
                    books.totals.dropped,
                    books.totals.reconnects,
                    books.totals.failures,
                );
                books.period_latency.reset();
                last_tick = (now, books.totals.fingerprint_windows_acked, books.totals.batches_acked);
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    while let Ok(event) = events.try_recv() {
        books.take(event);
    }
    books.totals.instances_aborted = u64::from(config.instances) - books.finished;
    let last_ack = books.last_ack.unwrap_or_else(Instant::now);
    Ok(LoadgenReport {
        elapsed: last_ack.duration_since(started),
        active: last_ack.duration_since(books.first_ack.unwrap_or(started)),
        totals: books.totals,
        ack_latency: books.latency,
        backfill_windows,
        delivered_range_ms: books.range_ms,
        reject_reasons: books.reject_reasons,
        samples_per_window,
        plan,
        tally: books.tally,
    })
}

/// The bookkeeping task's state: one owner, fed by events.
struct Books {
    plan: Arc<Plan>,
    totals: Totals,
    latency: LatencyHistogram,
    period_latency: LatencyHistogram,
    tally: ExactTally,
    range_ms: Option<(i64, i64)>,
    reject_reasons: Vec<String>,
    first_ack: Option<Instant>,
    last_ack: Option<Instant>,
    finished: u64,
}

impl Books {
    fn new(plan: &Arc<Plan>) -> Books {
        Books {
            plan: plan.clone(),
            totals: Totals::default(),
            latency: LatencyHistogram::new(),
            period_latency: LatencyHistogram::new(),
            tally: ExactTally::new(plan.services.len(), plan.workload.len()),
            range_ms: None,
            reject_reasons: Vec::new(),
            first_ack: None,
            last_ack: None,
            finished: 0,
        }
    }

    fn take(&mut self, event: Event) {
        match event {
            Event::Acked {
                service,
                instance,
                window_start_ms,
                latency,
                duplicate,
            } => {
                let t = &mut self.totals;
                t.batches_acked += 1;
                t.fingerprint_windows_acked += self.plan.workload.len() as u64;
                t.calls_acked += self
                    .tally
                    .add_window(&self.plan.workload, service, instance, window_start_ms);
                t.duplicates += u64::from(duplicate);
                let us = (latency.as_micros() as u64).clamp(1, HIGHEST_US);
                self.latency.record(us);
                self.period_latency.record(us);
                let end_ms = window_start_ms + self.plan.interval.as_millis() as i64;
                self.range_ms = Some(match self.range_ms {
                    Some((from, to)) => (from.min(window_start_ms), to.max(end_ms)),
                    None => (window_start_ms, end_ms),
                });
                let now = Instant::now();
                self.first_ack.get_or_insert(now);
                self.last_ack = Some(now);
            }
            Event::Rejected { reason } => {
                self.totals.rejected += 1;
                if self.reject_reasons.len() < 5 {
                    self.reject_reasons.push(reason);
                }
            }
            Event::Dropped => self.totals.dropped += 1,
            Event::Reconnected => self.totals.reconnects += 1,
            Event::StreamFailed => self.totals.failures += 1,
            Event::Finished { unacked } => {
                self.totals.unacked_at_end += unacked;
                self.finished += 1;
            }
        }
    }
}
