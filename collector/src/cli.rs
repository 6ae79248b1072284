//! The `querypulse` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, DEFAULT_DATA_DIR, FileConfig};
use crate::demo::Demo;

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
    /// Run a collector plus simulated services on real SQLite pools.
    Demo(DemoArgs),
    /// Print a running collector's performance report (top, slowest and failing queries, regressions, pools).
    Report(crate::report::ReportArgs),
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
    /// Directory for the store and catalog [default: ./querypulse-data]
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
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Directory for the demo's data [default: a temporary directory, removed on exit]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    listen: ListenArgs,
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
    let cli = Cli::parse();
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
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Demo(args) => demo(args).await,
            Command::Report(args) => crate::report::run(args).await,
        }
    })
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
        "querypulse demo is running: three simulated service instances on SQLite pools"
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
