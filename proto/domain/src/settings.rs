//! The settings the dashboard's forms change, and the trait the collector
//! implements to apply them (the same path the JSON API's `PUT`s take, so a
//! change from a form and one from the API are checked and stored alike).

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

/// A boxed future, so the trait stays usable as `dyn Settings`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long each resolution is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionSettings {
    /// Raw windows, seconds.
    pub raw_seconds: u64,
    /// 1-minute rollups, seconds.
    pub minute_seconds: u64,
    /// 1-hour rollups, seconds.
    pub hour_seconds: u64,
    /// Total size cap, bytes; `None` for no cap.
    pub max_bytes: Option<u64>,
}

/// Settings pushed to every agent; `None` keeps each agent's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct AgentDefaults {
    /// Slow-query threshold, milliseconds.
    pub slow_threshold_ms: Option<u64>,
    /// Slow samples per fingerprint and window.
    pub max_samples_per_fingerprint: Option<u32>,
    /// Slow samples per window.
    pub max_samples_per_window: Option<u32>,
    /// Aggregation interval, milliseconds.
    pub interval_ms: Option<u32>,
}

/// A change that was not applied.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The values are out of range; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// Storing the change failed; details go to the log.
    #[error("{0}")]
    Internal(String),
}

/// Where the collector keeps its changeable settings.
pub trait Settings: Send + Sync + 'static {
    /// Current retention.
    fn retention(&self) -> RetentionSettings;

    /// Validates, stores and applies a retention change.
    fn set_retention(&self, retention: RetentionSettings) -> BoxFuture<'_, Result<(), SettingsError>>;

    /// Current agent settings.
    fn agent_defaults(&self) -> AgentDefaults;

    /// Validates, stores and pushes agent settings to every agent.
    fn set_agent_defaults(&self, settings: AgentDefaults) -> BoxFuture<'_, Result<(), SettingsError>>;
}
