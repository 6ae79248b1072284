//! Alerting: rules evaluated against the stored windows, alerts with the
//! states operators know from Prometheus (inactive → pending → firing →
//! resolved, `for`, `keep_firing_for`), and notifications with
//! Alertmanager's habits (grouping per channel, deduplication,
//! `repeat_interval`, resolved notifications, silences).
//!
//! - [`rules`]: kinds, parameters, validation, the zero-config defaults.
//! - [`evaluate`]: one value per series from merged histograms.
//! - [`state`]: the state machine and notification planning, free of I/O.
//! - [`notify`]: webhook, email, Alertmanager, log, and the [`notify::Notifier`]
//!   trait for handlers of an embedding program.
//! - [`store`]: rules, channels, silences and history in the catalog.
//! - the engine: one task owning the alerts; [`Alerts`] is its handle.

pub(crate) mod api;
pub mod channels;
pub mod durations;
mod engine;
pub mod evaluate;
pub mod notify;
pub mod rules;
pub mod silences;
pub mod state;
pub mod store;
pub mod template;

use std::fmt;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use engine::{AlertView, DryRun};
use engine::{Command, Engine};
use notify::{HttpClient, Notification, Notifiers, NotifyError};
use store::AlertStore;

use crate::catalog::{Catalog, CatalogError};
use crate::store::Store;

/// How often rules are evaluated by default.
pub const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(10);

/// A field of a rule, channel or silence that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field (`threshold`, `scope.pool`, `channels[1]`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Why an alerting request failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// The input is invalid.
    #[error("{0}")]
    Invalid(FieldError),
    /// No such rule, channel or silence.
    #[error("{0}")]
    NotFound(String),
    /// A name is taken, or a channel is still in use.
    #[error("{0}")]
    Conflict(String),
    /// A rule could not be measured.
    #[error("evaluation failed: {0}")]
    Evaluation(String),
    /// A test notification failed.
    #[error("delivery failed: {0}")]
    Delivery(NotifyError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The engine has stopped.
    #[error("the alert engine has stopped")]
    Stopped,
}

/// Alerting settings of the collector.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// How often every rule is evaluated.
    pub evaluation_interval: Duration,
    /// Handlers of the embedding program, for `custom` channels.
    pub notifiers: Notifiers,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            evaluation_interval: DEFAULT_EVALUATION_INTERVAL,
            notifiers: Notifiers::default(),
        }
    }
}

/// Handle to the alert engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Alerts {
    commands: mpsc::Sender<Command>,
    store: AlertStore,
    notifiers: Notifiers,
    http: HttpClient,
}

impl Alerts {
    /// Installs the zero-config defaults on first start and starts the
    /// engine; it stops when `shutdown` turns true.
    pub async fn start(
        store: Store,
        catalog: &Catalog,
        config: &AlertsConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Alerts, JoinHandle<()>), AlertsError> {
        let alert_store = AlertStore::new(catalog);
        if alert_store.install_defaults(crate::now_ms()).await? {
            tracing::info!(
                "installed the default alert rules (pool exhaustion, slow service, health checks, silent agents)"
            );
        }
        let http = HttpClient::new();
        let (commands, receiver) = mpsc::channel(64);
        let engine = Engine::new(
            store,
            alert_store.clone(),
            config.evaluation_interval.max(Duration::from_millis(100)),
            config.notifiers.clone(),
            http.clone(),
        );
        let task = tokio::spawn(engine.run(receiver, shutdown));
        Ok((
            Alerts {
                commands,
                store: alert_store,
                notifiers: config.notifiers.clone(),
                http,
            },
            task,
        ))
    }

    /// The alerting tables of the catalog.
    pub fn store(&self) -> &AlertStore {
        &self.store
    }

    /// Handlers registered by the embedding program.
    pub fn notifiers(&self) -> &Notifiers {
        &self.notifiers
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, AlertsError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| AlertsError::Stopped)?;
        answer.await.map_err(|_| AlertsError::Stopped)
    }

    /// Makes the engine re-read rules, channels and silences; returns once it
    /// has.
    pub async fn reload(&self) -> Result<(), AlertsError> {
        self.ask(Command::Reload).await?
    }

    /// Pending and firing alerts.
    pub async fn alerts(&self) -> Result<Vec<AlertView>, AlertsError> {
        self.ask(Command::Alerts).await
    }

    /// Evaluates rule `id` now without changing any state.
    pub async fn dry_run(&self, id: i64) -> Result<DryRun, AlertsError> {
        self.ask(|reply| Command::DryRun(id, reply)).await?
    }

    /// Sends a test notification through channel `id`.
    pub async fn test_channel(&self, id: i64) -> Result<(), AlertsError> {
        let channel = self
            .store
            .channel(id)
            .await?
            .ok_or_else(|| AlertsError::NotFound(format!("no channel {id}")))?;
        let notifier = notify::notifier(&channel, &self.notifiers, &self.http);
        let notification = Notification::test(id, &channel.name, crate::now_ms());
        notifier.notify(&notification).await.map_err(AlertsError::Delivery)
    }
}
