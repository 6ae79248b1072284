#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod aggregator;
mod builder;
pub mod fingerprint;
mod outbox;
mod outcome;
pub mod pool;
mod recorder;
mod sender;

#[cfg(feature = "bb8")]
pub mod bb8;
#[cfg(feature = "deadpool")]
pub mod deadpool;
#[cfg(feature = "sqlx")]
pub mod sqlx;
#[cfg(feature = "tracing")]
pub mod tracing;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::aggregator::Command;
use crate::recorder::Recorder;

pub use builder::{
    AgentBuilder, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINT,
    DEFAULT_INTERVAL, DEFAULT_MAX_FINGERPRINTS, DEFAULT_OUTBOX_BYTES, DEFAULT_SAMPLES_PER_FINGERPRINT,
    DEFAULT_SAMPLES_PER_WINDOW, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_SLOW_THRESHOLD, MIN_INTERVAL,
};
pub use outcome::{ErrorClass, Outcome};
pub use pool::{Checkout, PendingAcquire, PoolMonitor, PoolSample, PoolTotals};
pub use querypulse_proto::{AgentCounters, DbSystem, Fingerprint};

/// Why the agent could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// `start()` was called outside a Tokio runtime.
    #[error("the agent must be started inside a Tokio runtime")]
    NoRuntime,
    /// The collector endpoint is not a valid URL.
    #[error("invalid collector endpoint {0}")]
    InvalidEndpoint(String),
    /// A setting is out of range.
    #[error("invalid agent setting: {0}")]
    InvalidConfig(String),
    /// Some batches were not acknowledged before the timeout.
    #[error("{pending} batches were not acknowledged by the collector in time")]
    Unacknowledged {
        /// Batches still waiting.
        pending: usize,
    },
    /// The agent was already shut down.
    #[error("the agent has been shut down")]
    Stopped,
}

/// The handle a service records through. Cheap to clone; every clone records
/// into the same agent.
///
/// Recording ([`Agent::record_query`]) never awaits, never does I/O and never
/// fails: a collector outage is visible only in [`Agent::stats`].
#[derive(Clone)]
pub struct Agent {
    recorder: Arc<Recorder>,
    commands: mpsc::UnboundedSender<Command>,
    identity: Arc<Identity>,
}

pub(crate) struct Identity {
    pub(crate) instance_id: String,
    pub(crate) service: String,
    pub(crate) host: String,
    pub(crate) shutdown_timeout: Duration,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("service", &self.identity.service)
            .field("instance_id", &self.identity.instance_id)
            .finish_non_exhaustive()
    }
}

/// A snapshot of the agent's own health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentStats {
    /// Counters shipped to the collector with every batch.
    pub counters: AgentCounters,
    /// Batches acknowledged by the collector.
    pub acked_batches: u64,
    /// Distinct fingerprints tracked.
    pub fingerprints: usize,
}

impl Agent {
    /// Starts configuring an agent for `service`.
    pub fn builder(service: impl Into<String>) -> AgentBuilder {
        AgentBuilder::new(service.into())
    }

    pub(crate) fn new(recorder: Arc<Recorder>, commands: mpsc::UnboundedSender<Command>, identity: Identity) -> Agent {
        Agent {
            recorder,
            commands,
            identity: Arc::new(identity),
        }
    }

    /// Records one execution of `sql` that took `elapsed`.
    ///
    /// `sql` is the statement as sent to the database, literals and all; it is
    /// normalized the first time it is seen and never leaves the process
    /// unless raw-text capture is switched on.
    pub fn record_query(&self, sql: &str, elapsed: Duration, outcome: Outcome) {
        self.recorder.record(sql, elapsed, outcome, None);
    }

    /// Like [`Agent::record_query`], naming the pool the statement ran on (shown
    /// with slow-query samples).
    pub fn record_query_on(&self, pool: &str, sql: &str, elapsed: Duration, outcome: Outcome) {
        self.recorder.record(sql, elapsed, outcome, Some(pool));
    }

    /// The recording handle of the connection pool called `name` (one per
    /// name: asking twice gives handles to the same pool). Its statistics are
    /// shipped with every window for as long as a handle exists, and once
    /// more after the last one is dropped.
    ///
    /// The `sqlx`, `deadpool` and `bb8` integrations create and drive one for
    /// you; use this directly to watch any other pool.
    pub fn pool_monitor(&self, name: &str, db_system: DbSystem) -> PoolMonitor {
        PoolMonitor::new(self.recorder.pools.register(name, db_system))
    }

    /// The random id of this agent instance (one per process start).
    pub fn instance_id(&self) -> &str {
        &self.identity.instance_id
    }

    /// The service this agent reports for.
    pub fn service(&self) -> &str {
        &self.identity.service
    }

    /// The host name this agent reports (the machine's, read at start).
    pub fn host(&self) -> &str {
        &self.identity.host
    }

    /// The agent's own counters.
    pub fn stats(&self) -> AgentStats {
        AgentStats {
            counters: self.recorder.counters.snapshot(),
            acked_batches: self.recorder.counters.acked_batches.load(Ordering::Relaxed),
            fingerprints: self.recorder.fingerprint_count(),
        }
    }

    /// Closes the current window now and waits (up to the shutdown timeout)
    /// until every batch so far is acknowledged. Useful before a short-lived
    /// job exits, and in tests.
    pub async fn flush(&self) -> Result<(), AgentError> {
        self.request(|timeout, reply| Command::Flush { timeout, reply }).await
    }

    /// Ships the last (partial) window, waits up to the shutdown timeout for
    /// the collector to acknowledge everything, and stops the agent. Records
    /// made afterwards are ignored.
    pub async fn shutdown(&self) -> Result<(), AgentError> {
        self.request(|timeout, reply| Command::Shutdown { timeout, reply })
            .await
    }

    async fn request(
        &self,
        command: impl FnOnce(Duration, oneshot::Sender<usize>) -> Command,
    ) -> Result<(), AgentError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(self.identity.shutdown_timeout, reply))
            .map_err(|_| AgentError::Stopped)?;
        match answer.await {
            Ok(0) => Ok(()),
            Ok(pending) => Err(AgentError::Unacknowledged { pending }),
            Err(_) => Err(AgentError::Stopped),
        }
    }
}

/// Milliseconds since the Unix epoch on the UTC clock.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
