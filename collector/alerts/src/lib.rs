#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! - `rules`: kinds, parameters, validation, the zero-config defaults
//!   ([`Rule`], [`RuleInput`]).
//! - `evaluate`: one value per series from merged histograms.
//! - `state`: the state machine and notification planning, free of I/O.
//! - `notify`: webhook, email, Alertmanager, log, and the [`Notifier`] trait
//!   for handlers of an embedding program.
//! - `db`: rules, channels, silences and history in the collector's SQLite
//!   settings database ([`AlertDb`]).
//! - `view`: the engine as the dashboard sees it (the domain's `Alerting`).
//! - the engine: one task owning the alerts; [`Alerts`] is its handle.

mod channels;
mod db;
mod durations;
mod engine;
mod evaluate;
mod notify;
mod rules;
mod silences;
mod state;
mod template;
mod view;

use std::fmt;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use channels::{Channel, ChannelInput, ChannelSettings, REDACTED};
use db::validate_channel;
pub use db::{AlertDb, HistoryEvent, HistoryFilter, StoredRule};
use engine::{Command, Engine};
pub use notify::{
    HttpClient, Notification, Notifier, Notifiers, NotifyError, NotifyFuture, SIGNATURE_HEADER, Status, signature,
};
pub use rules::{Labels, Rule, RuleInput, RuleKind, Scope};
pub use silences::{MatchOp, Matcher, Silence, SilenceInput};
pub use state::State;

use querypulse_domain::alerting::{ActiveAlert, Evaluation, SilenceStatus};
use querypulse_store::Store;
use sqlx::SqlitePool;

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
    /// The settings database failed.
    #[error("alert database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored rule, channel or silence does not decode.
    #[error("alert database holds an invalid value: {0}")]
    Corrupt(String),
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
    store: AlertDb,
    notifiers: Notifiers,
    http: HttpClient,
}

impl Alerts {
    /// Installs the zero-config defaults on first start and starts the
    /// engine; it stops when `shutdown` turns true.
    pub async fn start(
        store: Store,
        database: &SqlitePool,
        config: &AlertsConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Alerts, JoinHandle<()>), AlertsError> {
        let alert_store = AlertDb::new(database.clone());
        if alert_store.install_defaults(querypulse_domain::now_ms()).await? {
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

    /// The alerting tables of the settings database.
    pub fn store(&self) -> &AlertDb {
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
    pub async fn alerts(&self) -> Result<Vec<ActiveAlert>, AlertsError> {
        self.ask(Command::Alerts).await
    }

    /// Evaluates rule `id` now without changing any state.
    pub async fn dry_run(&self, id: i64) -> Result<Evaluation, AlertsError> {
        self.ask(|reply| Command::DryRun(id, reply)).await?
    }

    /// Sends a test notification through channel `id`. Someone is waiting
    /// for the answer, so the whole delivery gets one attempt's time (the
    /// channel's `timeout`, 10 s for kinds without one) instead of every
    /// retry an alert would get.
    pub async fn test_channel(&self, id: i64) -> Result<(), AlertsError> {
        let channel = self
            .store
            .channel(id)
            .await?
            .ok_or_else(|| AlertsError::NotFound(format!("no channel {id}")))?;
        let notifier = notify::notifier(&channel, &self.notifiers, &self.http);
        let notification = Notification::test(id, &channel.name, querypulse_domain::now_ms());
        let limit = channel.settings.timeout().unwrap_or(channels::DEFAULT_TIMEOUT);
        match tokio::time::timeout(limit, notifier.notify(&notification)).await {
            Ok(delivered) => delivered.map_err(AlertsError::Delivery),
            Err(_) => Err(AlertsError::Delivery(NotifyError(format!(
                "timed out after {}",
                durations::format(limit)
            )))),
        }
    }

    // Changes: the JSON API and the dashboard's forms both go through these,
    // so a change is validated, stored and applied the same way whichever
    // way it came.

    async fn channel_ids(&self) -> Result<Vec<i64>, AlertsError> {
        Ok(self.store.channels().await?.into_iter().map(|(id, _)| id).collect())
    }

    /// Validates and stores a new rule, then applies it.
    pub async fn create_rule(&self, input: RuleInput) -> Result<StoredRule, AlertsError> {
        let known = self.channel_ids().await?;
        let rule = input.validate(|c| known.contains(&c)).map_err(AlertsError::Invalid)?;
        let id = self.store.create_rule(&rule, querypulse_domain::now_ms()).await?;
        self.reload().await?;
        tracing::info!(id, name = %rule.name, "alert rule created");
        Ok(StoredRule {
            id,
            default_key: None,
            rule,
        })
    }

    /// Validates and replaces rule `id`, then applies it.
    pub async fn update_rule(&self, id: i64, input: RuleInput) -> Result<StoredRule, AlertsError> {
        let previous = self
            .store
            .rule(id)
            .await?
            .ok_or_else(|| AlertsError::NotFound(format!("no rule {id}")))?;
        let known = self.channel_ids().await?;
        let rule = input.validate(|c| known.contains(&c)).map_err(AlertsError::Invalid)?;
        self.store.update_rule(id, &rule, querypulse_domain::now_ms()).await?;
        self.reload().await?;
        tracing::info!(id, name = %rule.name, "alert rule changed");
        Ok(StoredRule {
            id,
            default_key: previous.default_key,
            rule,
        })
    }

    /// Deletes rule `id`; its alerts go with it.
    pub async fn delete_rule(&self, id: i64) -> Result<(), AlertsError> {
        self.store.delete_rule(id).await?;
        self.reload().await?;
        tracing::info!(id, "alert rule deleted");
        Ok(())
    }

    /// Validates and stores a new channel.
    pub async fn create_channel(&self, input: ChannelInput) -> Result<(i64, Channel), AlertsError> {
        let channel = validate_channel(input, None, &self.notifiers)?;
        let id = self.store.create_channel(&channel, querypulse_domain::now_ms()).await?;
        self.reload().await?;
        tracing::info!(id, name = %channel.name, kind = channel.settings.kind(), "notification channel created");
        Ok((id, channel))
    }

    /// Validates and replaces channel `id` (secrets sent back redacted are
    /// kept).
    pub async fn update_channel(&self, id: i64, input: ChannelInput) -> Result<Channel, AlertsError> {
        let previous = self
            .store
            .channel(id)
            .await?
            .ok_or_else(|| AlertsError::NotFound(format!("no channel {id}")))?;
        let channel = validate_channel(input, Some(&previous), &self.notifiers)?;
        self.store
            .update_channel(id, &channel, querypulse_domain::now_ms())
            .await?;
        self.reload().await?;
        tracing::info!(id, name = %channel.name, "notification channel changed");
        Ok(channel)
    }

    /// Deletes channel `id`; refused while a rule uses it.
    pub async fn delete_channel(&self, id: i64) -> Result<(), AlertsError> {
        self.store.delete_channel(id).await?;
        self.reload().await?;
        tracing::info!(id, "notification channel deleted");
        Ok(())
    }

    /// Validates and stores a new silence.
    pub async fn create_silence(&self, input: SilenceInput) -> Result<(i64, Silence), AlertsError> {
        let now = querypulse_domain::now_ms();
        let silence = input.validate(now).map_err(AlertsError::Invalid)?;
        let id = self.store.create_silence(&silence, now).await?;
        self.reload().await?;
        tracing::info!(id, "silence created");
        Ok((id, silence))
    }

    /// Validates and replaces silence `id`.
    pub async fn update_silence(&self, id: i64, input: SilenceInput) -> Result<Silence, AlertsError> {
        let now = querypulse_domain::now_ms();
        let silence = input.validate(now).map_err(AlertsError::Invalid)?;
        self.store.update_silence(id, &silence, now).await?;
        self.reload().await?;
        Ok(silence)
    }

    /// Deletes silence `id`.
    pub async fn delete_silence(&self, id: i64) -> Result<(), AlertsError> {
        self.store.delete_silence(id).await?;
        self.reload().await
    }

    /// Ends silence `id` now, keeping it listed as expired (one that has
    /// not started yet is deleted).
    pub async fn expire_silence(&self, id: i64) -> Result<(), AlertsError> {
        let now = querypulse_domain::now_ms();
        let (_, mut silence) = self
            .store
            .silences()
            .await?
            .into_iter()
            .find(|(i, _)| *i == id)
            .ok_or_else(|| AlertsError::NotFound(format!("no silence {id}")))?;
        match silence.status(now) {
            SilenceStatus::Expired => return Err(AlertsError::Conflict(format!("silence {id} has already expired"))),
            SilenceStatus::Pending => self.store.delete_silence(id).await?,
            _ => {
                silence.ends_at_ms = now;
                self.store.update_silence(id, &silence, now).await?;
            }
        }
        self.reload().await?;
        tracing::info!(id, "silence expired");
        Ok(())
    }
}
