#![doc = include_str!("../README.md")]

mod adapters;
mod agent_settings;
mod cli;
mod config;
mod demo;
mod fingerprint_cmd;
mod http;
mod ingest;
mod outbound;
pub mod remote_write;
mod report;
mod settings_db;
#[cfg(test)]
mod store_model;
pub mod tls;
mod verify_cmd;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use adapters::source::StoreSource;
pub use cli::main;
pub use config::{Config, ScopedToken};
pub use demo::Demo;
pub use http::serve::{AGENT_HANDSHAKE_TIMEOUT, HEADER_READ_TIMEOUT, MAX_CONNECTIONS as MAX_HTTP_CONNECTIONS};
use ingest::{IngestGrpc, IngestService, Writer};
pub use outbound::{http_client, http_client_builder};
use querypulse_store::{Store, StoreError};
pub use report::{Format as ReportFormat, ReportArgs, fetch as fetch_report};
use settings_db::SettingsDb;

/// How long shutdown waits for servers and open streams to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// HTTP/2 flow-control window per agent connection and stream.
const GRPC_WINDOW_BYTES: u32 = 128 * 1024;

/// Why the collector could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store could not be opened (or flushed on shutdown).
    #[error("cannot open the store in {path}: {source}")]
    Store {
        /// The store directory.
        path: PathBuf,
        /// The storage error.
        source: StoreError,
    },
    /// The settings database could not be opened.
    #[error("cannot open the settings database in {path}: {source}")]
    SettingsDb {
        /// The data directory.
        path: PathBuf,
        /// The database error.
        source: settings_db::SettingsDbError,
    },
    /// A listen address could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// `gRPC` or `HTTP`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A server or the writer failed.
    #[error("{0}")]
    Serve(String),
}

/// A running collector: gRPC ingest, the writer, the HTTP API and dashboard.
#[derive(Debug)]
pub struct Collector {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: JoinHandle<std::io::Result<()>>,
    writer: std::thread::JoinHandle<()>,
    alerts: JoinHandle<()>,
    remote_write: Vec<JoinHandle<()>>,
    settings_db: SettingsDb,
}

impl Collector {
    /// Opens the store and starts serving. Returns once both listeners are
    /// bound, so [`Collector::grpc_addr`] and [`Collector::http_addr`] are
    /// ready to use (port 0 in the config picks free ports).
    pub async fn start(config: Config) -> Result<Collector, CollectorError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| CollectorError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let settings_db = SettingsDb::open(&config.data_dir)
            .await
            .map_err(|source| CollectorError::SettingsDb {
                path: config.data_dir.clone(),
                source,
            })?;
        let retention = match settings_db.retention().await {
            Ok(Some(stored)) => stored,
            Ok(None) => config.retention,
            Err(source) => {
                return Err(CollectorError::SettingsDb {
                    path: config.data_dir.clone(),
                    source,
                });
            }
        };
        let agent_settings = settings_db
            .agent_settings()
            .await
            .map_err(|source| CollectorError::SettingsDb {
                path: config.data_dir.clone(),
                source,
            })?;
        let (agent_settings, agent_settings_rx) = watch::channel(agent_settings);
        let store_dir = config.data_dir.join("store");
        let (store, store_writer) = {
            let dir = store_dir.clone();
            let limits = config.store_limits;
            let clock = config.clock.clone();
            tokio::task::spawn_blocking(move || Store::open(&dir, retention, limits, clock))
                .await
                .map_err(|e| CollectorError::Serve(format!("opening the store panicked: {e}")))?
                .map_err(|source| CollectorError::Store {
                    path: store_dir.clone(),
                    source,
                })?
        };
        let grpc_listener = TcpListener::bind(config.grpc_listen)
            .await
            .map_err(|source| CollectorError::Bind {
                what: "gRPC",
                addr: config.grpc_listen,
                source,
            })?;
        let http_listener = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| CollectorError::Bind {
                what: "HTTP",
                addr: config.http_listen,
                source,
            })?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|e| CollectorError::Serve(e.to_string()))?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|e| CollectorError::Serve(e.to_string()))?;

        let (writer, writer_thread) =
            Writer::spawn(store_writer).map_err(|e| CollectorError::Serve(format!("cannot start the writer: {e}")))?;
        let (shutdown, shutdown_rx) = watch::channel(false);

        let ingest = IngestService::new(
            writer,
            store.clone(),
            config.ingest_token.clone(),
            config.ingest_tokens.clone(),
            config.limits,
            agent_settings_rx,
            shutdown_rx.clone(),
        );
        let grpc_service = IngestGrpc::new(ingest, config.max_message_bytes);
        let grpc_stop = stopped(shutdown_rx.clone());
        let tls = match &config.tls {
            Some(files) => {
                let tls = tls::Tls::load(files).map_err(CollectorError::Serve)?;
                tls.reload_on_sighup(shutdown_rx.clone());
                Some(tls)
            }
            None => None,
        };
        let grpc_server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            // What one agent may have in flight before the collector reads
            // it: bounds the memory thousands of connections can fill.
            .initial_connection_window_size(Some(GRPC_WINDOW_BYTES))
            .initial_stream_window_size(Some(GRPC_WINDOW_BYTES))
            .add_service(grpc_service);
        let grpc = tokio::spawn(grpc_server.serve_with_incoming_shutdown(
            http::serve::agent_incoming(
                grpc_listener,
                tls.as_ref().map(|tls| tls.grpc.clone()),
                config.max_agent_connections,
                shutdown_rx.clone(),
            ),
            grpc_stop,
        ));

        let (alerts, alerts_task) =
            querypulse_alerts::Alerts::start(store.clone(), settings_db.pool(), &config.alerts, shutdown_rx.clone())
                .await
                .map_err(|e| CollectorError::Serve(format!("cannot start the alert engine: {e}")))?;
        let mut destinations = config.remote_write.clone();
        let agents_interval_ms = agent_settings.borrow().interval_ms;
        for destination in &mut destinations {
            destination.use_agents_interval(agents_interval_ms);
        }
        let (remote_write_status, remote_write) = remote_write::start(
            store.clone(),
            config.data_dir.clone(),
            destinations,
            shutdown_rx.clone(),
        );
        let source = Arc::new(
            StoreSource::new(store.clone())
                .with_alerts(alerts.clone(), tokio::runtime::Handle::current())
                .with_remote_write(remote_write_status.clone()),
        );
        let admin = http::Admin {
            settings_db: settings_db.clone(),
            store,
            token: config.admin_token.clone(),
            agent_settings: Arc::new(agent_settings),
            alerts,
            remote_write: remote_write_status,
        };
        let dashboard = querypulse_web::Dashboard::new(source.clone())
            .with_read_token(config.read_token.clone())
            .with_loopback_reads_only(!config.open_reads)
            .with_settings(Arc::new(admin.clone()), config.admin_token.clone())
            .with_alerting(Arc::new(admin.alerts.clone()));
        if config.read_token.is_none() && !http_addr.ip().is_loopback() {
            if config.open_reads {
                tracing::warn!(%http_addr, "reads (the API, the dashboard, /metrics) are open to the network (--open-reads)");
            } else {
                tracing::info!(
                    %http_addr,
                    "reads from other hosts need the admin token: set --read-token for readers, or --open-reads"
                );
            }
        }
        let app = dashboard
            .guard_reads(http::router(source, admin).merge(dashboard.clone().router()))
            .layer(axum::middleware::map_response(http::security_headers));
        let http = tokio::spawn(http::serve::serve(
            http_listener,
            app,
            tls.map(|tls| tls.http),
            shutdown_rx,
        ));

        tracing::info!(%grpc_addr, %http_addr, data_dir = %config.data_dir.display(), "collector started");
        Ok(Collector {
            grpc_addr,
            http_addr,
            shutdown,
            grpc,
            http,
            writer: writer_thread,
            alerts: alerts_task,
            remote_write,
            settings_db,
        })
    }

    /// Where agents connect (`http://` + this address).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the API and the dashboard are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops accepting, lets open streams acknowledge what they took, flushes
    /// the store and closes it, so the data directory can be reopened.
    pub async fn shutdown(self) -> Result<(), CollectorError> {
        let _ = self.shutdown.send(true);
        let grpc = tokio::time::timeout(SHUTDOWN_GRACE, self.grpc).await;
        let http = tokio::time::timeout(SHUTDOWN_GRACE, self.http).await;
        if tokio::time::timeout(SHUTDOWN_GRACE, self.alerts).await.is_err() {
            tracing::warn!("the alert engine did not stop in time");
        }
        for task in self.remote_write {
            if tokio::time::timeout(SHUTDOWN_GRACE, task).await.is_err() {
                tracing::warn!("a remote-write task did not stop in time");
            }
        }
        let writer = self.writer;
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(|e| CollectorError::Serve(format!("writer join failed: {e}")))?
            .map_err(|_| CollectorError::Serve("the writer thread panicked".into()))?;
        server_outcome("gRPC", grpc.map(|joined| joined.map(|r| r.map_err(|e| e.to_string()))))?;
        server_outcome("HTTP", http.map(|joined| joined.map(|r| r.map_err(|e| e.to_string()))))?;
        self.settings_db.close().await;
        tracing::info!("collector stopped");
        Ok(())
    }
}

type Joined = Result<Result<Result<(), String>, tokio::task::JoinError>, tokio::time::error::Elapsed>;

fn server_outcome(name: &str, joined: Joined) -> Result<(), CollectorError> {
    match joined {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(CollectorError::Serve(format!("{name} server: {e}"))),
        Ok(Err(e)) => Err(CollectorError::Serve(format!("{name} server task: {e}"))),
        Err(_) => Err(CollectorError::Serve(format!("{name} server did not stop in time"))),
    }
}

pub(crate) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs a collector until `shutdown` completes, then stops it cleanly.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), CollectorError> {
    let collector = Collector::start(config).await?;
    shutdown.await;
    collector.shutdown().await
}
