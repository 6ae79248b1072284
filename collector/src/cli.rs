//! The `querypulse` command line.

use std::future::Future;
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use querypulse_agent::fingerprint::Dialect;

use crate::config::{Config, DEFAULT_DATA_DIR, FileConfig};
use crate::demo::Demo;
use crate::fingerprint_cmd::{self, FingerprintError, Format};
use querypulse_loadgen::{LoadgenConfig, Target};

/// querypulse: which database queries are slow, getting slower or failing,
/// and whether a connection pool is running dry, across every instance.
#[derive(Debug, Parser)]
#[command(name = "querypulse", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector: agent ingest (gRPC), JSON API and dashboard (HTTP).
    Serve(ServeArgs),
    /// Run a collector plus simulated services on real SQLite pools, with seven days of history.
    Demo(DemoArgs),
    /// Print the fingerprint and normalized text of each SQL statement read
    /// from stdin, one statement per line, as `<16 hex digits><TAB><text>`.
    Fingerprint(FingerprintArgs),
    /// Simulate many agents against a collector (or Prometheus) for benchmarks.
    Loadgen(LoadgenArgs),
    /// Print a running collector's performance report (top, slowest and failing queries, regressions, pools).
    Report(crate::report::ReportArgs),
    /// Check that a collector's stored numbers agree: rollups with their
    /// windows, services with their instances and their totals, every sealed
    /// block; exits 1 on any disagreement.
    Verify(crate::verify_cmd::VerifyArgs),
}

#[derive(Debug, Args)]
struct ListenArgs {
    /// Address for agents (gRPC) [default: 127.0.0.1:7171]
    #[arg(long, env = "QUERYPULSE_GRPC_LISTEN")]
    grpc_listen: Option<SocketAddr>,
    /// Address for the API and dashboard (HTTP) [default: 127.0.0.1:7070]
    #[arg(long, env = "QUERYPULSE_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML config file; flags and environment variables override it
    #[arg(long, short, env = "QUERYPULSE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the store and the settings database [default: ./querypulse-data]
    #[arg(long, env = "QUERYPULSE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    listen: ListenArgs,
    /// Bearer token agents must present
    #[arg(long, env = "QUERYPULSE_INGEST_TOKEN", hide_env_values = true)]
    ingest_token: Option<String>,
    /// Bearer token for changes through the API (retention, rules, …); without it the API is read-only
    #[arg(long, env = "QUERYPULSE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Bearer token for reading (the API, the dashboard, /metrics; the admin token reads too); without it only loopback peers read freely (others need the admin token) unless --open-reads
    #[arg(long, env = "QUERYPULSE_READ_TOKEN", hide_env_values = true)]
    read_token: Option<String>,
    /// Without a read token, let anyone who reaches the HTTP listener read, not only loopback peers
    #[arg(long, env = "QUERYPULSE_OPEN_READS")]
    open_reads: bool,
    /// PEM certificate chain: serve both listeners over TLS (with --tls-key); reloaded on SIGHUP
    #[arg(long, env = "QUERYPULSE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "QUERYPULSE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA: agents must present a client certificate signed by it (needs --tls-cert)
    #[arg(long, env = "QUERYPULSE_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Seconds between alert rule evaluations [default: 10]
    #[arg(long, env = "QUERYPULSE_ALERT_EVALUATION_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    alert_evaluation_secs: Option<u64>,
    /// Remote-write the fleet's series to this Prometheus-compatible endpoint
    /// (repeatable; `[[remote_write]]` in the config file sets the rest)
    #[arg(long, value_name = "URL")]
    remote_write_url: Vec<String>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Directory for the demo's data [default: a temporary directory, removed on exit]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    listen: ListenArgs,
}

#[derive(Debug, Args)]
struct FingerprintArgs {
    /// SQL dialect of the statements
    #[arg(long, value_enum, default_value_t = DialectArg::Generic)]
    dialect: DialectArg,
    /// Print JSON lines, {"fingerprint": "…", "text": "…"}, instead
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DialectArg {
    /// Unknown engine
    Generic,
    /// PostgreSQL
    #[value(alias = "postgresql")]
    Postgres,
    /// MySQL and MariaDB
    #[value(alias = "mariadb")]
    Mysql,
    /// SQLite
    Sqlite,
}

impl From<DialectArg> for Dialect {
    fn from(arg: DialectArg) -> Self {
        match arg {
            DialectArg::Generic => Dialect::Generic,
            DialectArg::Postgres => Dialect::Postgres,
            DialectArg::Mysql => Dialect::Mysql,
            DialectArg::Sqlite => Dialect::Sqlite,
        }
    }
}

#[derive(Debug, Args)]
struct LoadgenArgs {
    /// Simulated service instances, one gRPC stream each
    #[arg(long, default_value_t = 100)]
    instances: u32,
    /// Statements each instance reports every window
    #[arg(long, default_value_t = 100)]
    fingerprints: usize,
    /// Services the instances are spread over [default: one per 20 instances]
    #[arg(long)]
    services: Option<usize>,
    /// Window length (10s, 1m, ...)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    interval: Duration,
    /// Stop after this long (30s, 5m, 2h, ...)
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// The collector's gRPC endpoint
    #[arg(
        long,
        default_value = "http://127.0.0.1:7171",
        conflicts_with = "prometheus_remote_write"
    )]
    endpoint: String,
    /// Bearer token for the collector
    #[arg(long, env = "QUERYPULSE_INGEST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA the collector's certificate chains to, for an https:// endpoint [default: the system's roots]
    #[arg(long, env = "QUERYPULSE_CA_CERT", value_name = "PATH")]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate for a collector that asks for one (its --client-ca)
    #[arg(long, env = "QUERYPULSE_CLIENT_CERT", value_name = "PATH", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert
    #[arg(long, env = "QUERYPULSE_CLIENT_KEY", value_name = "PATH", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Send to this Prometheus remote-write URL instead of a collector, as
    /// classic histograms with the default buckets
    #[arg(long, value_name = "URL")]
    prometheus_remote_write: Option<String>,
    /// With --prometheus-remote-write: send native histograms (schema 3)
    /// instead of classic ones
    #[arg(long, requires = "prometheus_remote_write")]
    native_histograms: bool,
    /// Seed of the generated latency distributions
    #[arg(long, default_value_t = querypulse_loadgen::DEFAULT_SEED)]
    seed: u64,
    /// Send every window of this past span as fast as acks allow, then stop
    /// (the collector rejects windows older than its max age, 2 days by default)
    #[arg(long, value_parser = parse_duration)]
    backfill: Option<Duration>,
    /// With --backfill: end the backfilled span this long ago instead of now
    #[arg(long, value_parser = parse_duration, default_value = "0s", requires = "backfill")]
    backfill_ending: Duration,
    /// Unacknowledged batches per instance
    #[arg(long, default_value_t = querypulse_loadgen::DEFAULT_IN_FLIGHT)]
    in_flight: usize,
    /// Print a progress line this often
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    report_every: Duration,
    /// Write the final report, with the exact quantiles of every series, as JSON
    #[arg(long, value_name = "PATH")]
    summary_json: Option<PathBuf>,
}

/// Parses a duration in the product's one grammar (`250ms`, `10s`, `5m`,
/// `24h`, `7d`; a bare number is seconds).
fn parse_duration(value: &str) -> Result<Duration, String> {
    querypulse_domain::duration::parse(value).map_err(|e| e.to_string())
}

impl LoadgenArgs {
    fn config(self) -> anyhow::Result<LoadgenConfig> {
        let target = match self.prometheus_remote_write {
            Some(url) => Target::PrometheusRemoteWrite {
                url,
                native: self.native_histograms,
            },
            None => Target::Collector {
                endpoint: self.endpoint,
                token: self.token.filter(|t| !t.is_empty()),
            },
        };
        let mut config = LoadgenConfig::new(self.instances, self.fingerprints, self.interval, self.duration, target);
        if let Some(services) = self.services {
            config.services = services;
        }
        config.seed = self.seed;
        config.backfill = self.backfill;
        config.backfill_ending = self.backfill_ending;
        config.in_flight = self.in_flight;
        config.report_every = Some(self.report_every);
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            let read = |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
            config.client_identity_pem = Some((read(cert)?, read(key)?));
        }
        if let Some(path) = &self.ca_cert {
            config.ca_cert_pem =
                Some(std::fs::read(path).with_context(|| format!("reading --ca-cert {}", path.display()))?);
        }
        Ok(config)
    }
}

impl ServeArgs {
    fn config(self) -> anyhow::Result<Config> {
        let mut config = Config::new(DEFAULT_DATA_DIR);
        if let Some(path) = &self.config {
            FileConfig::load(path)?.apply(&mut config);
        }
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        self.listen.apply(&mut config);
        if let Some(token) = self.ingest_token.filter(|t| !t.is_empty()) {
            config.ingest_token = Some(token);
        }
        if let Some(token) = self.admin_token.filter(|t| !t.is_empty()) {
            config.admin_token = Some(token);
        }
        if let Some(token) = self.read_token.filter(|t| !t.is_empty()) {
            config.read_token = Some(token);
        }
        if self.open_reads {
            config.open_reads = true;
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            config.tls = Some(crate::tls::TlsFiles {
                cert,
                key,
                client_ca: self
                    .client_ca
                    .or_else(|| config.tls.as_ref().and_then(|t| t.client_ca.clone())),
            });
        }
        if let Some(secs) = self.alert_evaluation_secs {
            config.alerts.evaluation_interval = std::time::Duration::from_secs(secs);
        }
        for url in self.remote_write_url {
            let destination = crate::remote_write::Destination::new(url);
            destination.validate().map_err(anyhow::Error::msg)?;
            if config.remote_write.iter().any(|d| d.name == destination.name) {
                anyhow::bail!("remote write to {} is configured twice", destination.url);
            }
            config.remote_write.push(destination);
        }
        Ok(config)
    }
}

impl ListenArgs {
    fn apply(self, config: &mut Config) {
        if let Some(addr) = self.grpc_listen {
            config.grpc_listen = addr;
        }
        if let Some(addr) = self.http_listen {
            config.http_listen = addr;
        }
    }
}

/// Entry point of the `querypulse` binary.
pub fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => run_async(serve(args)),
        Command::Demo(args) => run_async(demo(args)),
        Command::Fingerprint(args) => fingerprint(args),
        Command::Loadgen(args) => run_async(loadgen(args)),
        Command::Report(args) => run_async(crate::report::run(args)),
        Command::Verify(args) => {
            if run_async(crate::verify_cmd::run(args))? {
                Ok(())
            } else {
                // The report is printed; the exit status says it disagreed.
                std::process::exit(1)
            }
        }
    }
}

/// Runs a server command: logs to stderr and an async runtime.
fn run_async<T>(command: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(command)
}

fn fingerprint(args: FingerprintArgs) -> anyhow::Result<()> {
    let format = if args.json { Format::Json } else { Format::Text };
    match fingerprint_cmd::run(
        std::io::stdin().lock(),
        std::io::stdout().lock(),
        args.dialect.into(),
        format,
    ) {
        // The reader went away (`querypulse fingerprint < log | head`): done.
        Err(FingerprintError::Write(e)) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        result => result.context("fingerprinting statements from stdin"),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config().context("reading the configuration")?;
    crate::run(config, shutdown_signal())
        .await
        .context("running the collector")
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let temp;
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => {
            temp = tempfile::Builder::new()
                .prefix("querypulse-demo-")
                .tempdir()
                .context("creating a temporary data directory")?;
            temp.path().to_owned()
        }
    };
    let mut config = Config::new(&data_dir);
    args.listen.apply(&mut config);
    let demo = Demo::start(config).await.context("starting the demo")?;
    let http = demo.collector().http_addr();
    // stdout may be closed (piped into something that stopped reading): the
    // demo keeps running regardless.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "querypulse demo is running: three simulated service instances on SQLite pools, with seven days of history"
    );
    let _ = writeln!(out, "  dashboard  http://{http}/");
    let _ = writeln!(out, "  API        http://{http}/api/v1/queries");
    let _ = writeln!(out, "  ingest     http://{} (gRPC)", demo.collector().grpc_addr());
    let _ = writeln!(out, "  data       {}", data_dir.display());
    let _ = writeln!(
        out,
        "The first numbers arrive within a few seconds. Press Ctrl-C to stop."
    );
    let _ = out.flush();
    drop(out);
    shutdown_signal().await;
    demo.shutdown().await.context("stopping the demo")
}

async fn loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    let summary_json = args.summary_json.clone();
    let config = args.config()?;
    let target = match &config.target {
        Target::Collector { endpoint, .. } => format!("collector {endpoint}"),
        Target::PrometheusRemoteWrite { url, native: false } => format!("Prometheus remote write {url}"),
        Target::PrometheusRemoteWrite { url, native: true } => {
            format!("Prometheus remote write {url} (native histograms)")
        }
    };
    println!(
        "loadgen: {} instances × {} fingerprints in {} services, {} s windows, {} for at most {} s, to {target}",
        config.instances,
        config.fingerprints,
        config.services,
        config.interval.as_secs(),
        match config.backfill {
            Some(span) => format!("backfilling {} s", span.as_secs()),
            None => "live".to_owned(),
        },
        config.duration.as_secs(),
    );
    let report = tokio::select! {
        report = querypulse_loadgen::run(config) => report.context("running the load generator")?,
        _ = shutdown_signal() => anyhow::bail!("interrupted"),
    };
    print!("{}", report.summary());
    if let Some(path) = summary_json {
        let json = serde_json::to_vec_pretty(&report.to_json()).context("encoding the report")?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        println!("  report     {}", path.display());
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_flags_read_the_one_duration_grammar() {
        let parse = |duration: &str| Cli::try_parse_from(["querypulse", "loadgen", &format!("--duration={duration}")]);
        let Ok(Cli {
            command: Command::Loadgen(args),
        }) = parse("1.5m")
        else {
            panic!("1.5m is a duration")
        };
        assert_eq!(args.config().unwrap().duration, Duration::from_secs(90));
        let refused = parse("-5s").expect_err("a negative duration is refused").to_string();
        assert!(refused.contains("must not be negative"), "{refused}");
    }

    #[test]
    fn loadgen_spreads_instances_over_services_by_default() {
        let cli =
            Cli::try_parse_from(["querypulse", "loadgen", "--instances", "2000", "--fingerprints", "1000"]).unwrap();
        let Command::Loadgen(args) = cli.command else {
            panic!("not loadgen")
        };
        let config = args.config().unwrap();
        assert_eq!(
            (config.instances, config.fingerprints, config.services),
            (2000, 1000, 100)
        );
        assert_eq!(config.interval, Duration::from_secs(10));
        assert!(matches!(config.target, Target::Collector { ref endpoint, .. } if endpoint == "http://127.0.0.1:7171"));
        let both = Cli::try_parse_from([
            "querypulse",
            "loadgen",
            "--endpoint",
            "http://127.0.0.1:1",
            "--prometheus-remote-write",
            "http://127.0.0.1:2/api/v1/write",
        ]);
        assert!(both.is_err(), "one target per run");
    }
}
