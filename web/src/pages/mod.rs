//! One module per page; templates under `templates/` mirror them.

pub(crate) mod overview;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// A page that could not be rendered: a short HTML explanation, never the
/// internals (those go to the log).
#[derive(Debug)]
pub(crate) struct PageError(String);

impl From<crate::SourceError> for PageError {
    fn from(error: crate::SourceError) -> Self {
        PageError(error.0)
    }
}

impl From<askama::Error> for PageError {
    fn from(error: askama::Error) -> Self {
        PageError(error.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "dashboard page failed");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html("<!doctype html><title>querypulse: error</title><h1>Something went wrong</h1><p>The collector could not read its data; see its log.</p>"),
        )
            .into_response()
    }
}

/// Runs a blocking read of the source off the async executor.
pub(crate) async fn read<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, crate::SourceError> + Send + 'static,
) -> Result<T, PageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PageError(format!("read task failed: {e}")))?
        .map_err(PageError::from)
}
