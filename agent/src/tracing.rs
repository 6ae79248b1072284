//! tracing integration (feature `tracing`): a [`tracing_subscriber::Layer`]
//! that records every statement sqlx reports through its `sqlx::query` events.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tracing_subscriber::prelude::*;
//!
//! let agent = querypulse_agent::Agent::builder("checkout").start()?;
//! tracing_subscriber::registry()
//!     .with(querypulse_agent::tracing::layer(&agent))
//!     .init();
//! # Ok(())
//! # }
//! ```
//!
//! The layer comes with its own filter that lets `sqlx::query` events through
//! at every level, so sqlx logs each statement even when the rest of the
//! logging is quieter. Give other layers their own filter
//! (`fmt::layer().with_filter(EnvFilter::from_default_env())`) rather than a
//! global one: a global filter that drops `sqlx::query` at debug level hides
//! the statements from querypulse too.
//!
//! sqlx's events carry the statement, its latency and row counts, but no
//! error: failed statements are recorded as successes. Time statements with
//! `querypulse_agent::sqlx::timed` (the `sqlx` feature) where their error
//! class matters (and leave them out of this layer, or they count twice).

use std::cell::RefCell;
use std::time::Duration;

use ::tracing::field::{Field, Visit};
use ::tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::{Agent, Outcome};

/// The target of sqlx's per-statement events.
pub const SQLX_QUERY_TARGET: &str = "sqlx::query";

/// The querypulse layer with its `sqlx::query` filter: install it with
/// `tracing_subscriber::registry().with(layer(&agent))`.
pub fn layer<S>(agent: &Agent) -> Filtered<QueryLayer, Targets, S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    QueryLayer::new(agent).with_filter(Targets::new().with_target(SQLX_QUERY_TARGET, Level::TRACE))
}

/// Records sqlx's `sqlx::query` events into an [`Agent`]; other events are
/// ignored. Use [`layer`] unless you filter events yourself.
#[derive(Debug, Clone)]
pub struct QueryLayer {
    agent: Agent,
    pool: Option<String>,
}

impl QueryLayer {
    /// A layer recording into `agent`.
    pub fn new(agent: &Agent) -> QueryLayer {
        QueryLayer {
            agent: agent.clone(),
            pool: None,
        }
    }

    /// Names the pool the statements ran on (shown with slow-query samples).
    pub fn pool(mut self, name: impl Into<String>) -> QueryLayer {
        self.pool = Some(name.into());
        self
    }

    fn record(&self, fields: &QueryFields) {
        let Some(elapsed) = fields.elapsed else {
            return;
        };
        // sqlx puts the whole statement in `db.statement` (framed by blank
        // lines) when it is longer than the four-word `summary`, and leaves
        // it empty when the summary already is the whole statement.
        let statement = fields.statement.trim();
        let sql = if statement.is_empty() {
            fields.summary.trim()
        } else {
            statement
        };
        if sql.is_empty() {
            return;
        }
        let outcome = Outcome::rows(fields.rows_returned.max(fields.rows_affected));
        match &self.pool {
            Some(pool) => self.agent.record_query_on(pool, sql, elapsed, outcome),
            None => self.agent.record_query(sql, elapsed, outcome),
        }
    }
}

impl<S: Subscriber> Layer<S> for QueryLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != SQLX_QUERY_TARGET {
            return;
        }
        // One buffer per thread: no allocation per statement once warm.
        thread_local! {
            static FIELDS: RefCell<QueryFields> = RefCell::new(QueryFields::default());
        }
        FIELDS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut fields) => {
                fields.clear();
                event.record(&mut *fields);
                self.record(&fields);
            }
            // Re-entered from inside the recording (an event emitted while
            // recording): use a fresh buffer.
            Err(_) => {
                let mut fields = QueryFields::default();
                event.record(&mut fields);
                self.record(&fields);
            }
        });
    }
}

#[derive(Debug, Default)]
struct QueryFields {
    summary: String,
    statement: String,
    elapsed: Option<Duration>,
    rows_affected: u64,
    rows_returned: u64,
}

impl QueryFields {
    fn clear(&mut self) {
        self.summary.clear();
        self.statement.clear();
        self.elapsed = None;
        self.rows_affected = 0;
        self.rows_returned = 0;
    }
}

impl Visit for QueryFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary.push_str(value),
            "db.statement" => self.statement.push_str(value),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "rows_affected" => self.rows_affected = value,
            "rows_returned" => self.rows_returned = value,
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, u64::try_from(value).unwrap_or(0));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed = Duration::try_from_secs_f64(value).ok();
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {
        // Every field read here arrives typed (strings, integers, floats);
        // `elapsed` (a Duration, formatted with Debug) is read from
        // `elapsed_secs` instead.
    }
}
