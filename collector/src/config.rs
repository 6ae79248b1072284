//! Collector settings: defaults, the TOML config file, and the merge with
//! command-line flags (flags and their environment variables win).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ingest::IngestLimits;
use crate::remote_write::{Auth, Destination};
use querypulse_alerts::AlertsConfig;
use querypulse_domain::clock::Clock;
use querypulse_store::Limits;
use querypulse_store::Retention;

/// Data directory used when none is given.
pub const DEFAULT_DATA_DIR: &str = "./querypulse-data";
/// gRPC (agent ingest) address used when none is given.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:7171";
/// HTTP (API, dashboard) address used when none is given.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7070";
/// Largest gRPC message accepted from an agent.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Agent connections served at once by default: five times the fleet one
/// collector takes on two cores, well inside the systemd unit's 65,536
/// descriptors.
pub const DEFAULT_MAX_AGENT_CONNECTIONS: usize = 10_000;

/// Bounds of `memtable_mb`: below 16 MiB every batch would wait for a
/// flush; above 64 GiB is a typo.
const MIN_MEMTABLE_MB: u64 = 16;
const MAX_MEMTABLE_MB: u64 = 64 << 10;

/// Everything the collector needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the store and the settings database live.
    pub data_dir: PathBuf,
    /// Address of the gRPC ingest endpoint; port 0 picks a free port.
    pub grpc_listen: SocketAddr,
    /// Address of the HTTP API and dashboard; port 0 picks a free port.
    pub http_listen: SocketAddr,
    /// When set, agents must present this bearer token (or one of
    /// `ingest_tokens`); it may report for any service.
    pub ingest_token: Option<String>,
    /// Tokens that may report only for some services (`[[ingest_tokens]]`).
    /// When any token is set, agents must present one.
    pub ingest_tokens: Vec<ScopedToken>,
    /// Token for changes through the API; without it the API is read-only.
    pub admin_token: Option<String>,
    /// Token for reading (the API, the dashboard, `/metrics`; the admin
    /// token reads too). Without it, reads are open to loopback peers only
    /// (others need the admin token) unless `open_reads` is set.
    /// `/healthz` stays open.
    pub read_token: Option<String>,
    /// Without a read token, lets every peer read, not only loopback ones.
    pub open_reads: bool,
    /// TLS on both listeners; `None` serves plain HTTP and h2c.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Largest gRPC message accepted.
    pub max_message_bytes: usize,
    /// Agent (gRPC) connections served at once; further ones wait, so a
    /// flood of them cannot take the descriptors the HTTP listener needs.
    pub max_agent_connections: usize,
    /// Time bounds on accepted windows.
    pub limits: IngestLimits,
    /// Retention at first start (later changes live in the settings database).
    pub retention: Retention,
    /// Per-service limits of the store.
    pub store_limits: Limits,
    /// Alert evaluation and the notification handlers of an embedding
    /// program.
    pub alerts: AlertsConfig,
    /// The clock the store and ingest decide by (the system's by default;
    /// tests may set a manual one).
    pub clock: Clock,
    /// Prometheus-compatible stores the fleet's series are written to.
    pub remote_write: Vec<Destination>,
}

impl Config {
    /// Defaults with the given data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            grpc_listen: DEFAULT_GRPC_LISTEN.parse().expect("valid default address"),
            http_listen: DEFAULT_HTTP_LISTEN.parse().expect("valid default address"),
            ingest_token: None,
            ingest_tokens: Vec::new(),
            read_token: None,
            open_reads: false,
            tls: None,
            admin_token: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_agent_connections: DEFAULT_MAX_AGENT_CONNECTIONS,
            limits: IngestLimits::default(),
            retention: Retention::default(),
            store_limits: Limits::default(),
            alerts: AlertsConfig::default(),
            clock: Clock::system(),
            remote_write: Vec::new(),
        }
    }

    /// Defaults on free ports of 127.0.0.1, for tests and embedding.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Config {
        let mut config = Config::new(data_dir);
        config.grpc_listen = "127.0.0.1:0".parse().expect("valid address");
        config.http_listen = "127.0.0.1:0".parse().expect("valid address");
        config
    }
}

/// An ingest token that may report only for some services: a stream whose
/// `Hello` names another service is refused with `PERMISSION_DENIED`, so a
/// leaked token cannot pollute or impersonate the rest of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedToken {
    /// The bearer token.
    pub token: String,
    /// Service names it may report for; `*` matches any run of characters
    /// (`billing-*`).
    pub services: Vec<String>,
}

impl ScopedToken {
    /// Whether the token may report for `service`.
    pub fn allows(&self, service: &str) -> bool {
        self.services.iter().any(|pattern| glob_matches(pattern, service))
    }

    fn validate(&self) -> Result<(), String> {
        if self.token.trim().is_empty() {
            return Err("token must not be empty".into());
        }
        if self.services.is_empty() || self.services.iter().any(|s| s.is_empty()) {
            return Err("services must list at least one service name or pattern, none empty".into());
        }
        Ok(())
    }
}

/// `*` matches any run of characters (none included); everything else
/// matches itself.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The config file (`querypulse.toml`); every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Config::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`Config::grpc_listen`].
    pub grpc_listen: Option<SocketAddr>,
    /// See [`Config::http_listen`].
    pub http_listen: Option<SocketAddr>,
    /// See [`Config::ingest_token`].
    pub ingest_token: Option<String>,
    /// See [`Config::ingest_tokens`].
    pub ingest_tokens: Option<Vec<ScopedToken>>,
    /// See [`Config::admin_token`].
    pub admin_token: Option<String>,
    /// See [`Config::read_token`].
    pub read_token: Option<String>,
    /// See [`Config::open_reads`].
    pub open_reads: Option<bool>,
    /// PEM certificate chain for both listeners (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA that agents' client certificates must be signed by.
    pub client_ca: Option<PathBuf>,
    /// See [`Config::max_message_bytes`].
    pub max_message_bytes: Option<usize>,
    /// See [`Config::max_agent_connections`].
    pub max_agent_connections: Option<usize>,
    /// A window may start at most this many seconds in the future.
    pub max_future_secs: Option<u64>,
    /// Retention at first start, as a `[retention]` table with `raw_seconds`,
    /// `minute_seconds`, `hour_seconds` and `max_bytes`; once changed through
    /// the API the stored value wins.
    pub retention: Option<Retention>,
    /// Seconds between alert rule evaluations.
    pub alert_evaluation_secs: Option<u64>,
    /// Memory for open windows (the memtable), MiB; see
    /// [`Limits::memtable_bytes`].
    pub memtable_mb: Option<u64>,
    /// Free disk space kept, MiB; see [`Limits::min_free_disk_bytes`].
    pub min_free_disk_mb: Option<u64>,
    /// `[[remote_write]]` destinations.
    pub remote_write: Option<Vec<RemoteWriteFile>>,
    /// The destinations of `remote_write`, validated by [`FileConfig::load`].
    #[serde(skip)]
    pub destinations: Vec<Destination>,
}

/// One `[[remote_write]]` table; see [`Destination`] for each key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteFile {
    /// Required.
    pub url: String,
    pub name: Option<String>,
    pub bearer_token: Option<String>,
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub external_labels: std::collections::BTreeMap<String, String>,
    pub schema: Option<i32>,
    /// `10s`, `1m`, …
    pub interval: Option<String>,
    /// `30s`, `2m`, …
    pub delay: Option<String>,
    pub max_statements: Option<usize>,
    pub max_buckets: Option<usize>,
    pub max_series_per_request: Option<usize>,
}

/// `basic_auth = { username = "…", password = "…" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl RemoteWriteFile {
    /// The destination this table describes, validated.
    pub fn destination(self) -> Result<Destination, String> {
        let mut d = Destination::new(self.url);
        if let Some(name) = self.name {
            d.name = name;
        }
        d.auth = match (self.bearer_token, self.basic_auth) {
            (Some(_), Some(_)) => return Err("remote_write: bearer_token and basic_auth are exclusive".into()),
            (Some(token), None) => Auth::Bearer(token),
            (None, Some(b)) => Auth::Basic {
                username: b.username,
                password: b.password,
            },
            (None, None) => Auth::None,
        };
        d.headers = self.headers.into_iter().collect();
        d.external_labels = self.external_labels;
        let duration = |text: &str, key: &str| {
            querypulse_domain::duration::parse(text).map_err(|e| format!("remote_write {key} {text:?}: {e}"))
        };
        if let Some(v) = self.schema {
            d.schema = v;
        }
        if let Some(v) = &self.interval {
            d.interval = duration(v, "interval")?;
            d.interval_from_agents = false;
        }
        if let Some(v) = &self.delay {
            d.delay = duration(v, "delay")?;
        }
        if let Some(v) = self.max_statements {
            d.max_statements = v;
        }
        if let Some(v) = self.max_buckets {
            d.max_buckets = v;
        }
        if let Some(v) = self.max_series_per_request {
            d.max_series_per_request = v;
        }
        d.validate()?;
        Ok(d)
    }
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// It is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let mut file = file;
        if let Some(tables) = file.remote_write.take() {
            let mut names = std::collections::HashSet::new();
            let mut destinations = Vec::new();
            for table in tables {
                let destination = table.destination().map_err(|message| ConfigError::Parse {
                    path: path.into(),
                    message,
                })?;
                if !names.insert(destination.name.clone()) {
                    return Err(ConfigError::Parse {
                        path: path.into(),
                        message: format!("two [[remote_write]] tables are named {:?}", destination.name),
                    });
                }
                destinations.push(destination);
            }
            file.destinations = destinations;
        }
        for (i, scoped) in file.ingest_tokens.iter().flatten().enumerate() {
            scoped.validate().map_err(|message| ConfigError::Parse {
                path: path.into(),
                message: format!("[[ingest_tokens]] {}: {message}", i + 1),
            })?;
        }
        if file.max_agent_connections == Some(0) {
            return Err(ConfigError::Parse {
                path: path.into(),
                message: "max_agent_connections must be at least 1".into(),
            });
        }
        if file.tls_cert.is_some() != file.tls_key.is_some() {
            return Err(ConfigError::Parse {
                path: path.into(),
                message: "tls_cert and tls_key go together".into(),
            });
        }
        if file.client_ca.is_some() && file.tls_cert.is_none() {
            return Err(ConfigError::Parse {
                path: path.into(),
                message: "client_ca needs tls_cert and tls_key".into(),
            });
        }
        if let Some(retention) = &file.retention {
            retention.validate().map_err(|e| ConfigError::Parse {
                path: path.into(),
                message: format!("[retention]: {e}"),
            })?;
        }
        Ok(file)
    }

    /// Applies the file on top of `config`.
    pub fn apply(self, config: &mut Config) {
        if let Some(v) = self.data_dir {
            config.data_dir = v;
        }
        if let Some(v) = self.grpc_listen {
            config.grpc_listen = v;
        }
        if let Some(v) = self.http_listen {
            config.http_listen = v;
        }
        if let Some(v) = self.ingest_token {
            config.ingest_token = Some(v);
        }
        if let Some(v) = self.ingest_tokens {
            config.ingest_tokens = v;
        }
        if let Some(v) = self.admin_token {
            config.admin_token = Some(v);
        }
        if let Some(v) = self.read_token.filter(|t| !t.is_empty()) {
            config.read_token = Some(v);
        }
        if let Some(v) = self.open_reads {
            config.open_reads = v;
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            config.tls = Some(crate::tls::TlsFiles {
                cert,
                key,
                client_ca: self.client_ca,
            });
        }
        if let Some(v) = self.max_message_bytes {
            config.max_message_bytes = v;
        }
        if let Some(v) = self.max_agent_connections {
            config.max_agent_connections = v;
        }
        if let Some(v) = self.max_future_secs {
            config.limits.max_future = Duration::from_secs(v);
        }
        if let Some(v) = self.retention {
            config.retention = v;
        }
        if let Some(v) = self.alert_evaluation_secs {
            config.alerts.evaluation_interval = Duration::from_secs(v.max(1));
        }
        config.remote_write.extend(self.destinations);
        if let Some(v) = self.memtable_mb {
            let bytes = v.clamp(MIN_MEMTABLE_MB, MAX_MEMTABLE_MB) << 20;
            config.store_limits.memtable_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        if let Some(v) = self.min_free_disk_mb {
            config.store_limits.min_free_disk_bytes = v.saturating_mul(1 << 20);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_tokens_match_names_and_patterns() {
        let token = ScopedToken {
            token: "t".into(),
            services: vec!["checkout".into(), "billing-*".into(), "*-eu".into(), "a*b*c".into()],
        };
        for allowed in [
            "checkout",
            "billing-",
            "billing-us",
            "orders-eu",
            "abc",
            "aXbYc",
            "abbc",
        ] {
            assert!(token.allows(allowed), "{allowed}");
        }
        for refused in ["checkout2", "xcheckout", "billing", "ledger", "eu", "ab", "acb", "abcd"] {
            assert!(!token.allows(refused), "{refused}");
        }
        assert!(
            ScopedToken {
                token: "".into(),
                services: vec!["a".into()]
            }
            .validate()
            .is_err()
        );
        assert!(
            ScopedToken {
                token: "t".into(),
                services: vec![]
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn the_example_config_file_parses() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/querypulse.toml");
        let file = FileConfig::load(&example).unwrap();
        let mut config = Config::new(DEFAULT_DATA_DIR);
        file.apply(&mut config);
        assert_eq!(config.grpc_listen.port(), 7171);
        assert_eq!(config.store_limits.memtable_bytes, 1 << 30);
    }

    #[test]
    fn ingest_tokens_tables_are_scoped_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.toml");
        std::fs::write(
            &path,
            "ingest_token = \"fleet\"\n[[ingest_tokens]]\ntoken = \"t1\"\nservices = [\"checkout\", \"billing-*\"]\n",
        )
        .unwrap();
        let mut config = Config::new(DEFAULT_DATA_DIR);
        FileConfig::load(&path).unwrap().apply(&mut config);
        assert_eq!(config.ingest_token.as_deref(), Some("fleet"));
        assert_eq!(config.ingest_tokens.len(), 1);
        assert!(config.ingest_tokens[0].allows("billing-eu"));
        for bad in [
            "[[ingest_tokens]]\ntoken = \"\"\nservices = [\"a\"]\n",
            "[[ingest_tokens]]\ntoken = \"t\"\nservices = []\n",
            "[[ingest_tokens]]\ntoken = \"t\"\n",
            "[[ingest_tokens]]\ntoken = \"t\"\nservices = [\"a\"]\nscope = 1\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(FileConfig::load(&path).is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_write_tables_become_validated_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.toml");
        std::fs::write(
            &path,
            r#"
[[remote_write]]
url = "http://127.0.0.1:9090/api/v1/write"
external_labels = { cluster = "eu-1" }
headers = { "X-Scope-OrgID" = "team-a" }
basic_auth = { username = "u", password = "p" }
interval = "15s"
schema = 2

[[remote_write]]
url = "https://mimir.example/api/v1/push"
name = "mimir"
bearer_token = "t"
"#,
        )
        .unwrap();
        let mut config = Config::new(DEFAULT_DATA_DIR);
        FileConfig::load(&path).unwrap().apply(&mut config);
        let [first, second] = config.remote_write.as_slice() else {
            panic!("two destinations: {:?}", config.remote_write);
        };
        assert_eq!(first.interval, Duration::from_secs(15));
        assert!(!first.interval_from_agents);
        assert!(second.interval_from_agents);
        assert_eq!(first.schema, 2);
        assert_eq!(first.external_labels["cluster"], "eu-1");
        assert_eq!(first.headers, [("X-Scope-OrgID".to_owned(), "team-a".to_owned())]);
        assert!(matches!(&first.auth, Auth::Basic { username, .. } if username == "u"));
        assert_eq!(second.name, "mimir");
        assert_eq!(second.auth, Auth::Bearer("t".into()));

        for (bad, why) in [
            ("[[remote_write]]\nurl = \"ftp://x\"\n", "only http"),
            ("[[remote_write]]\nurl = \"http://x/w\"\nschema = 12\n", "schema"),
            (
                "[[remote_write]]\nurl = \"http://x/w\"\ninterval = \"soon\"\n",
                "interval",
            ),
            (
                "[[remote_write]]\nurl = \"http://x/w\"\nbearer_token = \"a\"\nbasic_auth = { username = \"u\", password = \"p\" }\n",
                "exclusive",
            ),
            (
                "[[remote_write]]\nurl = \"http://x/w\"\n[[remote_write]]\nurl = \"http://x/w\"\n",
                "named",
            ),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = FileConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_an_error_with_a_location() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.toml");
        std::fs::write(&path, "data_dir = \"/x\"\nhttp_listn = \"127.0.0.1:1\"\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("http_listn") && err.contains("line 2"), "{err}");
    }
}
