//! Remote write: the fleet's merged distributions, sent to
//! Prometheus-compatible storage (Prometheus, Mimir, Thanos Receive, Cortex)
//! with the remote write 1.0 protocol.
//!
//! Each destination has its own task, which reads the store, not memory:
//! interval after interval, once an interval is `delay` old, it reads every
//! statement and pool of that interval, adds them to cumulative series and
//! sends one sample of every series, stamped with the interval's end. The
//! cursor (the next interval) and the cumulative values are saved in the
//! data directory after each interval is sent, so a destination outage or a
//! collector restart resumes where it stopped: nothing is skipped, and what
//! a crash makes it send again has the same timestamp and value, which
//! Prometheus takes once. What waits during an outage is the store's, so
//! the backlog is bounded by retention and memory stays flat. Windows that
//! reach the store after their interval was sent are found and added to
//! later samples, so the exported counts end exact.
//!
//! Series (every one also carries the destination's `external_labels`):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `querypulse_query_duration_seconds` | native histogram | `service`, `fingerprint` |
//! | `querypulse_query_errors_total` | counter | `service`, `fingerprint`, `error_class` |
//! | `querypulse_query_rows_total` | counter | `service`, `fingerprint` |
//! | `querypulse_query_info` | gauge (1) | `service`, `fingerprint`, `text` |
//! | `querypulse_pool_acquire_wait_seconds`, `querypulse_pool_hold_seconds` | native histogram | `service`, `instance`, `pool` |
//! | `querypulse_pool_acquires_total`, `_timeouts_total`, `_leaks_total` | counter | `service`, `instance`, `pool` |
//! | `querypulse_pool_connections`, `_idle`, `_in_use`, `_waiting`, `_max_connections`, `_in_use_peak`, `_waiting_peak` | gauge | `service`, `instance`, `pool` |
//! | `querypulse_agent_up` | gauge (1 or 0) | `service`, `instance` |
//!
//! Statements beyond `max_statements` (by total time, first come first
//! kept) are folded into `fingerprint="other"` of their service, so sums
//! over a service stay exact.

mod state;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use querypulse_domain::{Fingerprint, QueryStats, now_ms};
use querypulse_proto::prompb;
use querypulse_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use querypulse_proto::native::{BucketMap, Cumulative, DEFAULT_SCHEMA, SCHEMAS};
use state::ExportState;

/// Series in one request unless a destination says otherwise: Prometheus'
/// own `max_samples_per_send`.
pub const DEFAULT_MAX_SERIES_PER_REQUEST: usize = 2_000;
/// Statements with their own series unless a destination says otherwise:
/// the `/metrics` default.
pub const DEFAULT_MAX_STATEMENTS: usize = 500;
/// Buckets per histogram unless a destination says otherwise: Mimir's
/// default `max_native_histogram_buckets`.
pub const DEFAULT_MAX_BUCKETS: usize = 160;
/// Intervals are sent once they are this old unless a destination says
/// otherwise: agents send a window when it closes, spread over their
/// interval, and retry for a while.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(30);
/// The agents' default interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Every this many intervals, windows that arrived after their interval
/// was sent are looked for and added (see [`fold_late`]).
const RECHECK_INTERVALS: i64 = 6;
/// Samples built per round while catching up, at most (one interval is
/// built whatever its size).
const CATCH_UP_SAMPLES: usize = 50_000;
/// Intervals read and sent per round while catching up.
const CATCH_UP_INTERVALS: usize = 6;
/// Retry delays after a failed request (5xx, 429, no connection).
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// An agent counts as up at a time when its last batch is at most this many
/// of its intervals older.
const UP_WITHIN_INTERVALS: i64 = 3;

/// How a destination authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Auth {
    /// No `Authorization` header.
    #[default]
    None,
    /// `Authorization: Bearer …`.
    Bearer(String),
    /// `Authorization: Basic …`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

/// One remote-write destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// Name in metrics and the cursor's file name (default: from the URL).
    pub name: String,
    /// The remote-write endpoint (`…/api/v1/write`, `…/api/v1/push`).
    pub url: String,
    /// Credentials.
    pub auth: Auth,
    /// Extra request headers (`X-Scope-OrgID`, …).
    pub headers: Vec<(String, String)>,
    /// Labels added to every series, so several collectors writing to one
    /// store keep their series apart.
    pub external_labels: BTreeMap<String, String>,
    /// Native histogram schema, -4 to 8.
    pub schema: i32,
    /// Length of the exported intervals.
    pub interval: Duration,
    /// Whether `interval` is still the default: then the collector replaces
    /// it at start with the interval pushed to agents, when one is set.
    pub interval_from_agents: bool,
    /// How old an interval must be before it is sent.
    pub delay: Duration,
    /// Statements with series of their own; the rest fold into `other`.
    pub max_statements: usize,
    /// Buckets per histogram; a histogram with more halves its resolution.
    pub max_buckets: usize,
    /// Series per request.
    pub max_series_per_request: usize,
}

impl Destination {
    /// A destination at `url` with every default.
    pub fn new(url: impl Into<String>) -> Destination {
        let url = url.into();
        Destination {
            name: default_name(&url),
            url,
            auth: Auth::None,
            headers: Vec::new(),
            external_labels: BTreeMap::new(),
            schema: DEFAULT_SCHEMA,
            interval: DEFAULT_INTERVAL,
            interval_from_agents: true,
            delay: DEFAULT_DELAY,
            max_statements: DEFAULT_MAX_STATEMENTS,
            max_buckets: DEFAULT_MAX_BUCKETS,
            max_series_per_request: DEFAULT_MAX_SERIES_PER_REQUEST,
        }
    }

    /// Takes the agents' interval (pushed to every agent from the settings)
    /// unless the destination sets its own; whole seconds, at least 1 s.
    pub fn use_agents_interval(&mut self, agents_interval_ms: Option<u32>) {
        if let Some(ms) = agents_interval_ms.filter(|_| self.interval_from_agents) {
            self.interval = Duration::from_secs(u64::from(ms.div_ceil(1_000)).max(1));
        }
    }

    /// Why this destination cannot be used, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("remote_write url {:?}: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("remote_write url {:?}: only http and https", self.url));
        }
        if !SCHEMAS.contains(&self.schema) {
            return Err(format!("remote_write schema {} is not in -4..=8", self.schema));
        }
        if !(1_000..=3_600_000).contains(&self.interval.as_millis()) || self.interval.subsec_millis() != 0 {
            return Err("remote_write interval must be whole seconds from 1s to 1h".into());
        }
        if self.delay > Duration::from_secs(6 * 3_600) {
            return Err("remote_write delay must be at most 6h (raw windows are kept 6 hours)".into());
        }
        if self.max_statements == 0 || self.max_buckets < 8 || self.max_series_per_request == 0 {
            return Err(
                "remote_write max_statements and max_series_per_request must be positive, max_buckets at least 8"
                    .into(),
            );
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "remote_write name {:?}: letters, digits, '-', '_' and '.' only",
                self.name
            ));
        }
        for name in self.external_labels.keys() {
            if !is_label_name(name) || name.starts_with("__") {
                return Err(format!("external label {name:?} is not a valid Prometheus label name"));
            }
        }
        Ok(())
    }
}

/// `host_port_path` of a URL, for file names and metrics.
fn default_name(url: &str) -> String {
    let trimmed = url.split("://").nth(1).unwrap_or(url);
    let name: String = trimmed
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.trim_matches('_').to_owned()
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub use querypulse_domain::source::RemoteWriteStatus as DestinationStatus;

/// The status of every destination, shared with the HTTP API.
#[derive(Debug, Clone, Default)]
pub struct Status(Arc<Mutex<Vec<DestinationStatus>>>);

impl Status {
    /// A copy of every destination's status.
    pub fn snapshot(&self) -> Vec<DestinationStatus> {
        self.0.lock().expect("status lock").clone()
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut DestinationStatus)) {
        let mut all = self.0.lock().expect("status lock");
        if let Some(status) = all.get_mut(index) {
            f(status);
        }
    }
}

/// Starts one task per destination; they stop when `shutdown` turns true.
pub fn start(
    store: Store,
    data_dir: PathBuf,
    destinations: Vec<Destination>,
    shutdown: watch::Receiver<bool>,
) -> (Status, Vec<JoinHandle<()>>) {
    let status = Status::default();
    *status.0.lock().expect("status lock") = destinations
        .iter()
        .map(|d| DestinationStatus {
            name: d.name.clone(),
            ..DestinationStatus::default()
        })
        .collect();
    let tasks = destinations
        .into_iter()
        .enumerate()
        .map(|(index, destination)| {
            let exporter = Exporter {
                store: store.clone(),
                state_path: data_dir
                    .join("remote_write")
                    .join(format!("{}.state", destination.name)),
                map: BucketMap::new(destination.schema),
                destination,
                status: status.clone(),
                index,
                texts: HashMap::new(),
                client: crate::http_client(),
            };
            tokio::spawn(exporter.run(shutdown.clone()))
        })
        .collect();
    (status, tasks)
}

struct Exporter {
    store: Store,
    destination: Destination,
    state_path: PathBuf,
    map: BucketMap,
    status: Status,
    index: usize,
    /// Statement texts already read (cut for the label), by fingerprint.
    texts: HashMap<Fingerprint, String>,
    client: reqwest::Client,
}

/// One interval's series, ready to send.
type Series = Vec<prompb::TimeSeries>;

impl Exporter {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let interval_ms = self.destination.interval.as_millis() as i64;
        let delay_ms = self.destination.delay.as_millis() as i64;
        let mut state = match state::load(&self.state_path) {
            Ok(Some(state)) => state,
            Ok(None) => ExportState::starting_at(floor(self.store.now_ms() - delay_ms, interval_ms)),
            Err(e) => {
                tracing::error!(destination = %self.destination.name, "cannot read the remote-write cursor, not exporting: {e}");
                return;
            }
        };
        self.status.update(self.index, |s| s.sent_until_ms = state.cursor_ms);
        loop {
            let due = floor(self.store.now_ms() - delay_ms, interval_ms);
            if state.cursor_ms < due {
                // Catching up reads several intervals per round, as long as
                // the samples built stay few (memory is bounded by this, not
                // by how far behind the destination is).
                let per_interval = 4 * state.statements.len() + 12 * state.pools.len() + 1;
                let intervals = ((due - state.cursor_ms) / interval_ms)
                    .min(CATCH_UP_INTERVALS as i64)
                    .min((CATCH_UP_SAMPLES / per_interval).max(1) as i64);
                let mut next = state.clone();
                let built = {
                    let store = self.store.clone();
                    let destination = self.destination.clone();
                    let map = self.map.clone();
                    let mut texts = std::mem::take(&mut self.texts);
                    let stop = shutdown.clone();
                    let result = tokio::task::spawn_blocking(move || {
                        let mut series = Vec::new();
                        for _ in 0..intervals {
                            let from = next.cursor_ms;
                            let reader = Reader {
                                store: &store,
                                destination: &destination,
                                map: &map,
                                stop: &stop,
                            };
                            reader.build_interval(&mut next, &mut texts, from, &mut series)?;
                            next.cursor_ms = from + interval_ms;
                        }
                        Ok::<_, String>((next, series, texts))
                    })
                    .await;
                    match result {
                        Ok(Ok((next, series, texts))) => {
                            self.texts = texts;
                            Some((next, series))
                        }
                        Ok(Err(_)) if *shutdown.borrow() => return,
                        Ok(Err(e)) => {
                            tracing::warn!(destination = %self.destination.name, "cannot read the store for remote write: {e}");
                            None
                        }
                        Err(e) => {
                            tracing::error!(destination = %self.destination.name, "remote-write read failed: {e}");
                            None
                        }
                    }
                };
                if let Some((next, series)) = built {
                    if !self.send_all(series, &mut shutdown).await {
                        return;
                    }
                    if let Err(e) = state::save(&self.state_path, &next) {
                        tracing::warn!(destination = %self.destination.name, "cannot save the remote-write cursor: {e}");
                    }
                    state = next;
                    let lag = (now_ms() - state.cursor_ms) as f64 / 1_000.0;
                    self.status.update(self.index, |s| {
                        s.sent_until_ms = state.cursor_ms;
                        s.lag_seconds = lag;
                        s.late_calls = state.late_calls;
                    });
                    continue;
                }
            }
            let wait = Duration::from_millis(
                (state.cursor_ms + interval_ms + delay_ms - self.store.now_ms()).clamp(200, 5_000) as u64,
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = crate::stopped(shutdown.clone()) => return,
            }
        }
    }

    /// Sends `series` in requests of at most `max_series_per_request`;
    /// `false` when shutdown interrupted it.
    async fn send_all(&self, series: Series, shutdown: &mut watch::Receiver<bool>) -> bool {
        let mut series = series.into_iter().peekable();
        while series.peek().is_some() {
            let chunk: Vec<prompb::TimeSeries> =
                series.by_ref().take(self.destination.max_series_per_request).collect();
            let histograms = chunk.iter().map(|s| s.histograms.len() as u64).sum::<u64>();
            let samples = chunk.iter().map(|s| s.samples.len() as u64).sum::<u64>();
            let body = snap::raw::Encoder::new()
                .compress_vec(
                    &prompb::WriteRequest {
                        timeseries: chunk,
                        metadata: Vec::new(),
                    }
                    .encode_to_vec(),
                )
                .expect("snappy compresses any request that fits in memory");
            let mut backoff = MIN_BACKOFF;
            loop {
                if *shutdown.borrow() {
                    return false;
                }
                match self.post(body.clone()).await {
                    Outcome::Accepted => {
                        self.status.update(self.index, |s| {
                            s.requests += 1;
                            s.bytes_sent += body.len() as u64;
                            s.histograms_sent += histograms;
                            s.samples_sent += samples;
                            s.last_error = None;
                        });
                        break;
                    }
                    Outcome::Dropped(error) => {
                        tracing::warn!(destination = %self.destination.name, "remote write refused a request, dropped: {error}");
                        self.status.update(self.index, |s| {
                            s.dropped_requests += 1;
                            s.last_error = Some(error);
                        });
                        break;
                    }
                    Outcome::Retry(error) => {
                        let first = self.status.0.lock().expect("status lock")[self.index]
                            .last_error
                            .is_none();
                        if first {
                            tracing::warn!(destination = %self.destination.name, "remote write failed, retrying: {error}");
                        }
                        self.status.update(self.index, |s| {
                            s.retries += 1;
                            s.last_error = Some(error);
                        });
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = crate::stopped(shutdown.clone()) => return false,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
        true
    }

    async fn post(&self, body: Vec<u8>) -> Outcome {
        let mut request = self
            .client
            .post(&self.destination.url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("User-Agent", concat!("querypulse/", env!("CARGO_PKG_VERSION")))
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .timeout(Duration::from_secs(30))
            .body(body);
        for (name, value) in &self.destination.headers {
            request = request.header(name, value);
        }
        request = match &self.destination.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
        };
        match request.send().await {
            Ok(response) if response.status().is_success() => Outcome::Accepted,
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let error = format!("{status}: {}", text.trim().chars().take(300).collect::<String>());
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    Outcome::Retry(error)
                } else {
                    Outcome::Dropped(error)
                }
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}

enum Outcome {
    Accepted,
    Retry(String),
    Dropped(String),
}

fn floor(time: i64, step: i64) -> i64 {
    time.div_euclid(step) * step
}

/// A label set: `__name__` and the pairs, sorted by name as remote write
/// requires.
fn labels(name: &str, pairs: &[(&str, &str)], external: &BTreeMap<String, String>) -> Vec<prompb::Label> {
    let mut labels: Vec<prompb::Label> = std::iter::once(("__name__", name))
        .chain(pairs.iter().copied())
        .map(|(name, value)| prompb::Label {
            name: name.to_owned(),
            value: value.to_owned(),
        })
        .collect();
    for (name, value) in external {
        if !labels.iter().any(|l| &l.name == name) {
            labels.push(prompb::Label {
                name: name.clone(),
                value: value.clone(),
            });
        }
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

fn float_series(labels: Vec<prompb::Label>, value: f64, timestamp_ms: i64) -> prompb::TimeSeries {
    prompb::TimeSeries {
        labels,
        samples: vec![prompb::Sample {
            value,
            timestamp: timestamp_ms,
        }],
        histograms: Vec::new(),
    }
}

fn histogram_series(labels: Vec<prompb::Label>, histogram: prompb::Histogram) -> prompb::TimeSeries {
    prompb::TimeSeries {
        labels,
        samples: Vec::new(),
        histograms: vec![histogram],
    }
}

/// Failures of a statement by class; those without one are `unknown`.
fn error_counts(stats: &QueryStats) -> impl Iterator<Item = (String, u64)> + '_ {
    let classified: u64 = stats.error_classes.iter().map(|c| c.count).sum();
    let unclassified = stats.errors.saturating_sub(classified);
    stats
        .error_classes
        .iter()
        .map(|c| (c.class.clone(), c.count))
        .chain((unclassified > 0).then(|| ("unknown".to_owned(), unclassified)))
}

/// What reading the store for one destination needs. Reads stop between
/// services once `stop` turns true, so a long catch-up never holds up
/// shutdown.
struct Reader<'a> {
    store: &'a Store,
    destination: &'a Destination,
    map: &'a BucketMap,
    stop: &'a watch::Receiver<bool>,
}

impl Reader<'_> {
    /// The services, or an error once shutdown began.
    fn services(&self) -> Result<Vec<(String, u32)>, String> {
        if *self.stop.borrow() {
            return Err("shutting down".into());
        }
        Ok(self
            .store
            .services()
            .into_iter()
            .map(|(name, id, _, _)| (name, id))
            .collect())
    }

    fn stopped(&self) -> Result<(), String> {
        if *self.stop.borrow() {
            Err("shutting down".into())
        } else {
            Ok(())
        }
    }

    /// Reads the interval `[from, from + interval)`, adds it to `state` and
    /// appends one sample of every series, stamped with the interval's end.
    fn build_interval(
        &self,
        state: &mut ExportState,
        texts: &mut HashMap<Fingerprint, String>,
        from: i64,
        out: &mut Series,
    ) -> Result<(), String> {
        let Reader {
            store,
            destination,
            map,
            ..
        } = *self;
        let to = from + destination.interval.as_millis() as i64;
        let external = &destination.external_labels;
        let schema = map.schema();
        if (from - state.origin_ms) % (RECHECK_INTERVALS * (to - from)) == 0 {
            self.fold_late(state, from)?;
        }
        // Statements: admit new ones by total time while there is room.
        for (service, service_id) in self.services()? {
            self.stopped()?;
            let mut stats = store.query_stats(service_id, from, to).map_err(|e| e.to_string())?;
            stats.sort_by(|a, b| b.sum_us.cmp(&a.sum_us).then(a.fingerprint.cmp(&b.fingerprint)));
            for s in &stats {
                let key = state.key(&service, s.fingerprint, destination.max_statements);
                let entry = state
                    .statements
                    .entry(key)
                    .or_insert_with(|| state::Statement::new(schema, from));
                entry.duration.add(&s.latency, s.sum_us, map, destination.max_buckets);
                entry.rows += s.rows;
                for (class, count) in error_counts(s) {
                    *entry.errors.entry(class).or_default() += count;
                }
            }
        }
        for (key, statement) in &state.statements {
            let fingerprint = key.fingerprint.map_or_else(|| "other".to_owned(), |f| f.to_string());
            let pairs = [("fingerprint", fingerprint.as_str()), ("service", key.service.as_str())];
            if statement.first_ms == from {
                // A zero sample where the series starts, so `rate` and
                // `increase` count its first interval.
                out.push(histogram_series(
                    labels("querypulse_query_duration_seconds", &pairs, external),
                    Cumulative::new(statement.duration.schema).to_prompb(from),
                ));
            }
            out.push(histogram_series(
                labels("querypulse_query_duration_seconds", &pairs, external),
                statement.duration.to_prompb(to),
            ));
            out.push(float_series(
                labels("querypulse_query_rows_total", &pairs, external),
                statement.rows as f64,
                to,
            ));
            for (class, count) in &statement.errors {
                out.push(float_series(
                    labels(
                        "querypulse_query_errors_total",
                        &[pairs[0], ("error_class", class), pairs[1]],
                        external,
                    ),
                    *count as f64,
                    to,
                ));
            }
            if let Some(fingerprint) = key.fingerprint {
                if let std::collections::hash_map::Entry::Vacant(entry) = texts.entry(fingerprint) {
                    let text = store.text(fingerprint).map_err(|e| e.to_string())?.unwrap_or_default();
                    entry.insert(crate::http::metrics::cut(&text));
                }
                out.push(float_series(
                    labels(
                        "querypulse_query_info",
                        &[pairs[0], pairs[1], ("text", &texts[&fingerprint])],
                        external,
                    ),
                    1.0,
                    to,
                ));
            }
        }
        // Pools: gauges of the interval, cumulative counters and histograms.
        for window in store.pools(from, to).map_err(|e| e.to_string())? {
            let key = state::PoolKey {
                service: window.service.clone(),
                instance: window.instance_id.clone(),
                pool: window.pool.clone(),
            };
            let pool = state.pools.entry(key).or_insert_with(|| state::Pool::new(schema, from));
            let stats = &window.stats;
            pool.acquire_wait
                .add(&stats.acquire_wait, 0, map, destination.max_buckets);
            pool.hold.add(&stats.hold_time, 0, map, destination.max_buckets);
            pool.acquires += stats.acquires;
            pool.timeouts += stats.timeouts;
            pool.leaks += stats.leaks;
            let pairs = [
                ("instance", window.instance_id.as_str()),
                ("pool", window.pool.as_str()),
                ("service", window.service.as_str()),
            ];
            let gauges: [(&str, u32); 7] = [
                ("querypulse_pool_connections", stats.size.last),
                ("querypulse_pool_idle", stats.idle.last),
                ("querypulse_pool_in_use", stats.in_use.last),
                ("querypulse_pool_waiting", stats.waiting.last),
                ("querypulse_pool_max_connections", stats.max_size),
                ("querypulse_pool_in_use_peak", stats.in_use.peak),
                ("querypulse_pool_waiting_peak", stats.waiting.peak),
            ];
            for (name, value) in gauges {
                out.push(float_series(labels(name, &pairs, external), f64::from(value), to));
            }
        }
        for (key, pool) in &state.pools {
            let pairs = [
                ("instance", key.instance.as_str()),
                ("pool", key.pool.as_str()),
                ("service", key.service.as_str()),
            ];
            // Windows keep no sum of acquire waits or hold times: the
            // histograms' counts and buckets are exact, their sums 0.
            for (name, histogram) in [
                ("querypulse_pool_acquire_wait_seconds", &pool.acquire_wait),
                ("querypulse_pool_hold_seconds", &pool.hold),
            ] {
                if pool.first_ms == from {
                    out.push(histogram_series(
                        labels(name, &pairs, external),
                        Cumulative::new(histogram.schema).to_prompb(from),
                    ));
                }
                out.push(histogram_series(
                    labels(name, &pairs, external),
                    histogram.to_prompb(to),
                ));
            }
            for (name, value) in [
                ("querypulse_pool_acquires_total", pool.acquires),
                ("querypulse_pool_timeouts_total", pool.timeouts),
                ("querypulse_pool_leaks_total", pool.leaks),
            ] {
                out.push(float_series(labels(name, &pairs, external), value as f64, to));
            }
        }
        for instance in store.instances() {
            if instance.first_seen_ms >= to {
                continue;
            }
            let interval = i64::from(instance.interval_ms.max(1_000));
            let up = instance.last_seen_ms >= to - UP_WITHIN_INTERVALS * interval;
            out.push(float_series(
                labels(
                    "querypulse_agent_up",
                    &[
                        ("instance", instance.instance_id.as_str()),
                        ("service", instance.service.as_str()),
                    ],
                    external,
                ),
                if up { 1.0 } else { 0.0 },
                to,
            ));
        }
        Ok(())
    }

    /// Adds what reached the store after its interval was sent: every
    /// [`RECHECK_INTERVALS`] intervals, each service's total over everything
    /// sent so far (one series read) is compared with the calls exported;
    /// where the store holds more, the service's statements over that span are
    /// read again and each series catches up, bucket by bucket. Every pool's
    /// counters and histograms over that span are read and caught up the
    /// same way. The late calls appear in the next samples, so the exported
    /// totals end exact.
    fn fold_late(&self, state: &mut ExportState, until: i64) -> Result<(), String> {
        let Reader {
            store,
            destination,
            map,
            ..
        } = *self;
        let from = state.origin_ms;
        if from >= until {
            return Ok(());
        }
        for (service, service_id) in self.services()? {
            self.stopped()?;
            let Some(total) = store
                .service_stats(service_id, from, until)
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            let exported: u64 = state.service_statements(&service).map(|(_, s)| s.duration.count).sum();
            if total.calls <= exported {
                continue;
            }
            // The service's statements over the whole span, grouped as exported.
            let mut groups: BTreeMap<state::StatementKey, QueryStats> = BTreeMap::new();
            for s in store.query_stats(service_id, from, until).map_err(|e| e.to_string())? {
                let key = state.key(&service, s.fingerprint, destination.max_statements);
                match groups.get_mut(&key) {
                    Some(group) => group.merge(&s),
                    None => {
                        groups.insert(key, s);
                    }
                }
            }
            for (key, total) in groups {
                let entry = state
                    .statements
                    .entry(key)
                    .or_insert_with(|| state::Statement::new(map.schema(), until));
                let added = entry
                    .duration
                    .catch_up(&total.latency, total.sum_us, map, destination.max_buckets);
                entry.rows = entry.rows.max(total.rows);
                for (class, count) in error_counts(&total) {
                    let have = entry.errors.entry(class).or_default();
                    *have = (*have).max(count);
                }
                state.late_calls += added;
            }
        }
        // Pools: their counters and histograms since the destination
        // started, against what was exported. The gauges of a late window
        // are not sent: a sample older than a series' latest is refused.
        self.stopped()?;
        for window in store.pools(from, until).map_err(|e| e.to_string())? {
            let key = state::PoolKey {
                service: window.service,
                instance: window.instance_id,
                pool: window.pool,
            };
            let pool = state
                .pools
                .entry(key)
                .or_insert_with(|| state::Pool::new(map.schema(), until));
            let stats = &window.stats;
            pool.acquire_wait
                .catch_up(&stats.acquire_wait, 0, map, destination.max_buckets);
            pool.hold.catch_up(&stats.hold_time, 0, map, destination.max_buckets);
            pool.acquires = pool.acquires.max(stats.acquires);
            pool.timeouts = pool.timeouts.max(stats.timeouts);
            pool.leaks = pool.leaks.max(stats.leaks);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sorted_and_external_labels_never_override() {
        let external = BTreeMap::from([
            ("cluster".to_owned(), "eu".to_owned()),
            ("service".to_owned(), "x".to_owned()),
        ]);
        let got = labels("m", &[("service", "checkout"), ("fingerprint", "ab")], &external);
        let names: Vec<_> = got.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(
            names,
            [
                ("__name__", "m"),
                ("cluster", "eu"),
                ("fingerprint", "ab"),
                ("service", "checkout")
            ]
        );
    }

    #[test]
    fn the_interval_follows_the_agents_unless_set() {
        let mut d = Destination::new("http://127.0.0.1:9090/api/v1/write");
        d.use_agents_interval(None);
        assert_eq!(d.interval, DEFAULT_INTERVAL);
        d.use_agents_interval(Some(15_000));
        assert_eq!(d.interval, Duration::from_secs(15));
        d.use_agents_interval(Some(2_500));
        assert_eq!(d.interval, Duration::from_secs(3), "whole seconds");
        d.interval = Duration::from_secs(60);
        d.interval_from_agents = false;
        d.use_agents_interval(Some(15_000));
        assert_eq!(d.interval, Duration::from_secs(60));
    }

    #[test]
    fn destinations_are_validated() {
        let mut d = Destination::new("http://127.0.0.1:9090/api/v1/write");
        assert_eq!(d.name, "127.0.0.1_9090_api_v1_write");
        assert!(d.validate().is_ok());
        d.schema = 9;
        assert!(d.validate().unwrap_err().contains("schema"));
        d.schema = 3;
        d.external_labels.insert("__x".into(), "y".into());
        assert!(d.validate().is_err());
        d.external_labels.clear();
        d.url = "ftp://x".into();
        assert!(d.validate().is_err());
        d.url = "http://x/api/v1/write".into();
        d.interval = Duration::from_millis(1_500);
        assert!(d.validate().is_err());
    }
}
