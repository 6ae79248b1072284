#![doc = include_str!("../README.md")]

mod format;
mod pages;
pub mod source;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use source::{QueryFilter, QuerySummary, ServiceSummary, Source, SourceError, TimeRange};

/// Shared state of the dashboard's handlers.
#[derive(Clone)]
pub struct Dashboard {
    source: Arc<dyn Source>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

/// The dashboard's routes, reading through `source`.
pub fn router(source: Arc<dyn Source>) -> Router {
    Router::new()
        .route("/", get(pages::overview::page))
        .with_state(Dashboard { source })
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
