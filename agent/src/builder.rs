//! Agent configuration with named defaults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use querypulse_proto::{DbSystem, Hello, MAX_INTERVAL_MS, MIN_INTERVAL_MS};
use rand::Rng;
use tokio::sync::mpsc;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Endpoint;

use crate::Identity;
use crate::fingerprint::Dialect;
use crate::recorder::{Recorder, RecorderConfig};
use crate::sender::{self, SenderConfig};
use crate::{Agent, AgentError, aggregator, now_ms};

/// Collector address used when none is given.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7171";
/// Length of one aggregation window.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest aggregation window accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(MIN_INTERVAL_MS as u64);
/// Distinct fingerprints tracked before statements count into `other`.
pub const DEFAULT_MAX_FINGERPRINTS: usize = 5_000;
/// Bytes of unacknowledged batches kept while the collector is unreachable
/// (about an hour of a typical service).
pub const DEFAULT_OUTBOX_BYTES: usize = 16 * 1024 * 1024;
/// Executions at least this slow are sampled as slow queries.
pub const DEFAULT_SLOW_THRESHOLD: Duration = Duration::from_millis(1_000);
/// Slow samples kept per fingerprint per window.
pub const DEFAULT_SAMPLES_PER_FINGERPRINT: u32 = 5;
/// Slow samples kept per window in total.
pub const DEFAULT_SAMPLES_PER_WINDOW: u32 = 100;
/// How long `shutdown()` waits for the last batches to be acknowledged.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First reconnect delay; it doubles up to [`DEFAULT_BACKOFF_MAX`].
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(250);
/// Longest reconnect delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Configures and starts an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    service: String,
    endpoint: String,
    token: Option<String>,
    /// PEM CA for an `https://` endpoint (else the system's roots).
    tls_ca_cert: Option<Vec<u8>>,
    /// PEM certificate chain and key presented to a collector that asks
    /// for client certificates.
    tls_identity: Option<(Vec<u8>, Vec<u8>)>,
    interval: Duration,
    db_system: DbSystem,
    labels: BTreeMap<String, String>,
    max_fingerprints: usize,
    outbox_bytes: usize,
    slow_threshold: Duration,
    samples_per_fingerprint: u32,
    samples_per_window: u32,
    capture_raw_text: bool,
    shutdown_timeout: Duration,
    connect_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl AgentBuilder {
    pub(crate) fn new(service: String) -> AgentBuilder {
        AgentBuilder {
            service,
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            token: None,
            tls_ca_cert: None,
            tls_identity: None,
            interval: DEFAULT_INTERVAL,
            db_system: DbSystem::Unspecified,
            labels: BTreeMap::new(),
            max_fingerprints: DEFAULT_MAX_FINGERPRINTS,
            outbox_bytes: DEFAULT_OUTBOX_BYTES,
            slow_threshold: DEFAULT_SLOW_THRESHOLD,
            samples_per_fingerprint: DEFAULT_SAMPLES_PER_FINGERPRINT,
            samples_per_window: DEFAULT_SAMPLES_PER_WINDOW,
            capture_raw_text: false,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
        }
    }

    /// A builder for `service` that reads its settings from the environment:
    ///
    /// | variable | setting |
    /// |---|---|
    /// | `QUERYPULSE_SERVICE` | service name (overrides `service`) |
    /// | `QUERYPULSE_ENDPOINT` | [`endpoint`](Self::endpoint) |
    /// | `QUERYPULSE_TOKEN` | [`token`](Self::token) |
    /// | `QUERYPULSE_CA_CERT` | [`tls_ca_cert`](Self::tls_ca_cert), read from this PEM file |
    /// | `QUERYPULSE_CLIENT_CERT`, `QUERYPULSE_CLIENT_KEY` | [`tls_client_identity`](Self::tls_client_identity), read from these PEM files |
    /// | `QUERYPULSE_INTERVAL_MS` | [`interval`](Self::interval) |
    /// | `QUERYPULSE_SLOW_THRESHOLD_MS` | [`slow_threshold`](Self::slow_threshold) |
    /// | `QUERYPULSE_MAX_FINGERPRINTS` | [`max_fingerprints`](Self::max_fingerprints) |
    /// | `QUERYPULSE_OUTBOX_BYTES` | [`outbox_bytes`](Self::outbox_bytes) |
    /// | `QUERYPULSE_CAPTURE_RAW_SQL` | [`capture_raw_text`](Self::capture_raw_text) (`true`/`1`) |
    /// | `QUERYPULSE_LABELS` | [`label`](Self::label)s as `key=value,key=value` |
    ///
    /// A variable that is set but does not parse is an error, not a silent default.
    pub fn from_env(service: impl Into<String>) -> Result<AgentBuilder, AgentError> {
        Self::from_lookup(service.into(), |name| std::env::var(name).ok())
    }

    fn from_lookup(service: String, get: impl Fn(&str) -> Option<String>) -> Result<AgentBuilder, AgentError> {
        fn parse<T: std::str::FromStr>(name: &str, value: String) -> Result<T, AgentError> {
            value
                .trim()
                .parse()
                .map_err(|_| AgentError::InvalidConfig(format!("{name}={value:?} does not parse")))
        }
        let mut builder = AgentBuilder::new(get("QUERYPULSE_SERVICE").unwrap_or(service));
        if let Some(v) = get("QUERYPULSE_ENDPOINT") {
            builder.endpoint = v;
        }
        builder.token = get("QUERYPULSE_TOKEN").filter(|t| !t.is_empty());
        let read = |variable: &str, path: &str| {
            std::fs::read(path).map_err(|e| AgentError::InvalidConfig(format!("{variable} {path}: {e}")))
        };
        match (
            get("QUERYPULSE_CLIENT_CERT").filter(|p| !p.is_empty()),
            get("QUERYPULSE_CLIENT_KEY").filter(|p| !p.is_empty()),
        ) {
            (Some(cert), Some(key)) => {
                builder.tls_identity = Some((
                    read("QUERYPULSE_CLIENT_CERT", &cert)?,
                    read("QUERYPULSE_CLIENT_KEY", &key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(AgentError::InvalidConfig(
                    "QUERYPULSE_CLIENT_CERT and QUERYPULSE_CLIENT_KEY go together".into(),
                ));
            }
        }
        if let Some(path) = get("QUERYPULSE_CA_CERT").filter(|p| !p.is_empty()) {
            builder.tls_ca_cert = Some(
                std::fs::read(&path)
                    .map_err(|e| AgentError::InvalidConfig(format!("QUERYPULSE_CA_CERT {path}: {e}")))?,
            );
        }
        if let Some(v) = get("QUERYPULSE_INTERVAL_MS") {
            builder.interval = Duration::from_millis(parse("QUERYPULSE_INTERVAL_MS", v)?);
        }
        if let Some(v) = get("QUERYPULSE_SLOW_THRESHOLD_MS") {
            builder.slow_threshold = Duration::from_millis(parse("QUERYPULSE_SLOW_THRESHOLD_MS", v)?);
        }
        if let Some(v) = get("QUERYPULSE_MAX_FINGERPRINTS") {
            builder.max_fingerprints = parse("QUERYPULSE_MAX_FINGERPRINTS", v)?;
        }
        if let Some(v) = get("QUERYPULSE_OUTBOX_BYTES") {
            builder.outbox_bytes = parse("QUERYPULSE_OUTBOX_BYTES", v)?;
        }
        if let Some(v) = get("QUERYPULSE_CAPTURE_RAW_SQL") {
            builder.capture_raw_text = matches!(v.trim(), "1" | "true" | "yes" | "on");
        }
        if let Some(v) = get("QUERYPULSE_LABELS") {
            for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
                let (key, value) = pair.split_once('=').ok_or_else(|| {
                    AgentError::InvalidConfig(format!("QUERYPULSE_LABELS: {pair:?} is not key=value"))
                })?;
                builder.labels.insert(key.trim().to_owned(), value.trim().to_owned());
            }
        }
        Ok(builder)
    }

    /// The collector's gRPC address, e.g. `http://collector:7171`.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = url.into();
        self
    }

    /// Bearer token the collector requires (its `--ingest-token`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// PEM certificate of the CA the collector's certificate chains to, for
    /// an `https://` endpoint; without it the system's roots are used.
    pub fn tls_ca_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_cert = Some(pem.into());
        self
    }

    /// PEM certificate chain and private key presented to a collector that
    /// asks agents for client certificates (its `--client-ca`).
    pub fn tls_client_identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.tls_identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Aggregation window (default 10 s, at least 1 s, at most 1 h).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The database engine, which also picks the SQL dialect for normalizing.
    pub fn db_system(mut self, system: DbSystem) -> Self {
        self.db_system = system;
        self
    }

    /// Adds a label reported with this instance.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Distinct fingerprints tracked before statements count into `other`.
    pub fn max_fingerprints(mut self, max: usize) -> Self {
        self.max_fingerprints = max;
        self
    }

    /// Bytes of unacknowledged batches kept while the collector is away. The
    /// outbox holds batches encoded for the wire, so this is the memory they
    /// take; when a new batch would exceed it, the oldest are dropped (and
    /// counted).
    pub fn outbox_bytes(mut self, bytes: usize) -> Self {
        self.outbox_bytes = bytes;
        self
    }

    /// Executions at least this slow are sampled as slow queries.
    pub fn slow_threshold(mut self, threshold: Duration) -> Self {
        self.slow_threshold = threshold;
        self
    }

    /// Slow samples kept per fingerprint and per window.
    pub fn slow_sample_limits(mut self, per_fingerprint: u32, per_window: u32) -> Self {
        self.samples_per_fingerprint = per_fingerprint;
        self.samples_per_window = per_window;
        self
    }

    /// Sends the raw statement (with its literal values) in slow-query samples.
    /// Off by default: literals may hold personal data.
    pub fn capture_raw_text(mut self, capture: bool) -> Self {
        self.capture_raw_text = capture;
        self
    }

    /// How long [`Agent::shutdown`] waits for the last acknowledgements.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Reconnect backoff: first delay and cap.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Starts the agent's background tasks on the current Tokio runtime and
    /// returns the handle used to record.
    pub fn start(self) -> Result<Agent, AgentError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| AgentError::NoRuntime)?;
        if self.service.is_empty() || self.service.len() > 128 || self.service.chars().any(char::is_control) {
            return Err(AgentError::InvalidConfig(
                "service name must be 1 to 128 printable characters".into(),
            ));
        }
        if self.interval < MIN_INTERVAL || self.interval > Duration::from_millis(u64::from(MAX_INTERVAL_MS)) {
            return Err(AgentError::InvalidConfig(format!(
                "interval must be between {MIN_INTERVAL:?} and 1h, got {:?}",
                self.interval
            )));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(AgentError::InvalidConfig("backoff needs 0 < initial <= max".into()));
        }
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| AgentError::InvalidEndpoint(format!("{}: {e}", self.endpoint)))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if endpoint.uri().scheme_str() == Some("https") {
            let mut tls = match &self.tls_ca_cert {
                Some(pem) => tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                None => tonic::transport::ClientTlsConfig::new().with_native_roots(),
            };
            if let Some((cert, key)) = &self.tls_identity {
                tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| AgentError::InvalidEndpoint(format!("{}: TLS: {e}", self.endpoint)))?;
        }
        let token = self
            .token
            .as_ref()
            .map(|t| AsciiMetadataValue::try_from(format!("Bearer {t}")))
            .transpose()
            .map_err(|_| AgentError::InvalidConfig("token must be printable ASCII".into()))?;

        let instance_id = format!("{:016x}", rand::rng().random::<u64>());
        let host = host_name();
        let hello = Hello {
            service: self.service.clone(),
            instance_id: instance_id.clone(),
            host: host.clone(),
            pid: std::process::id(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            db_system: self.db_system,
            labels: self.labels.clone(),
            started_at_ms: now_ms(),
            interval_ms: self.interval.as_millis() as u32,
        };
        let recorder = Arc::new(Recorder::new(RecorderConfig {
            dialect: Dialect::from(self.db_system),
            max_fingerprints: self.max_fingerprints,
            capture_raw_text: self.capture_raw_text,
            slow_threshold: self.slow_threshold,
            max_samples_per_fingerprint: self.samples_per_fingerprint,
            max_samples_per_window: self.samples_per_window,
            interval: self.interval,
        }));
        let (to_sender, sender_inbox) = mpsc::unbounded_channel();
        let (commands, command_inbox) = mpsc::unbounded_channel();
        let sender_config = SenderConfig {
            endpoint,
            token,
            hello,
            outbox_bytes: self.outbox_bytes,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
        };
        runtime.spawn(sender::run(sender_config, recorder.clone(), sender_inbox));
        runtime.spawn(aggregator::run(
            recorder.clone(),
            command_inbox,
            to_sender,
            self.shutdown_timeout,
        ));
        Ok(Agent::new(
            recorder,
            commands,
            Identity {
                instance_id,
                service: self.service,
                host,
                shutdown_timeout: self.shutdown_timeout,
            },
        ))
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().chars().take(128).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults_and_rejects_garbage() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let b = AgentBuilder::from_lookup(
            "svc".into(),
            env(&[
                ("QUERYPULSE_ENDPOINT", "http://collector:7171"),
                ("QUERYPULSE_INTERVAL_MS", "2000"),
                ("QUERYPULSE_LABELS", "env=prod, region=eu"),
                ("QUERYPULSE_CAPTURE_RAW_SQL", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(b.service, "svc");
        assert_eq!(b.endpoint, "http://collector:7171");
        assert_eq!(b.interval, Duration::from_secs(2));
        assert_eq!(b.labels.get("region").map(String::as_str), Some("eu"));
        assert!(b.capture_raw_text);
        assert_eq!(b.max_fingerprints, DEFAULT_MAX_FINGERPRINTS);

        let err = AgentBuilder::from_lookup("svc".into(), env(&[("QUERYPULSE_INTERVAL_MS", "soon")])).unwrap_err();
        assert!(err.to_string().contains("QUERYPULSE_INTERVAL_MS"));
        assert!(AgentBuilder::from_lookup("svc".into(), env(&[("QUERYPULSE_LABELS", "novalue")])).is_err());
    }

    #[tokio::test]
    async fn start_validates_its_settings() {
        assert!(matches!(
            AgentBuilder::new("svc".into())
                .interval(Duration::from_millis(10))
                .start(),
            Err(AgentError::InvalidConfig(_))
        ));
        assert!(matches!(
            AgentBuilder::new(String::new()).start(),
            Err(AgentError::InvalidConfig(_))
        ));
        assert!(matches!(
            AgentBuilder::new("svc".into()).endpoint("not a url").start(),
            Err(AgentError::InvalidEndpoint(_))
        ));
    }

    #[test]
    fn start_outside_a_runtime_is_an_error_not_a_panic() {
        assert!(matches!(
            AgentBuilder::new("svc".into()).start(),
            Err(AgentError::NoRuntime)
        ));
    }
}
