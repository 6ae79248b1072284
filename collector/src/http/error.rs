//! `ApiError`: every failure of the API and the `/metrics` endpoint, as
//! JSON `{"error": "..."}` with a status that says whose fault it is.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use querypulse_domain::source::SourceError;

/// Every API failure, as JSON `{"error": "..."}` with a fitting status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the message says which parameter and why.
    #[error("{0}")]
    BadRequest(String),
    /// No or a wrong admin token.
    #[error("{0}")]
    Unauthorized(String),
    /// Writes are switched off.
    #[error("{0}")]
    Forbidden(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with what is stored (a name taken, a channel in
    /// use).
    #[error("{0}")]
    Conflict(String),
    /// The request body is over the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Something failed inside the collector; details go to the log only.
    #[error("internal error")]
    Internal(String),
}

impl From<SourceError> for ApiError {
    fn from(error: SourceError) -> Self {
        ApiError::Internal(error.0)
    }
}

impl From<querypulse_domain::settings::SettingsError> for ApiError {
    fn from(error: querypulse_domain::settings::SettingsError) -> Self {
        match error {
            querypulse_domain::settings::SettingsError::Invalid(message) => ApiError::BadRequest(message),
            querypulse_domain::settings::SettingsError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("request body too large: {}", rejection.body_text()))
        } else {
            ApiError::BadRequest(format!("invalid JSON body: {}", rejection.body_text()))
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = super::openapi::ErrorBody {
            error: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}
