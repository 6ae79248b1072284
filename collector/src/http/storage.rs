//! `/api/v1/retention` and `/api/v1/verify`.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;

use super::Api;
use super::auth::authorize;
use super::error::ApiError;
use super::openapi::{ErrorBody, ReadErrors, WriteErrors};
use querypulse_store::{Retention, VerifyReport};

/// How long each resolution is kept, and the store's size cap.
#[utoipa::path(
    get,
    path = "/api/v1/retention",
    tag = "storage",
    responses((status = 200, description = "OK.", body = Retention), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn get_retention(State(api): State<Api>) -> Json<Retention> {
    Json(api.admin.store.retention())
}

/// Changes retention; applied at once, and kept across restarts.
#[utoipa::path(
    put,
    path = "/api/v1/retention",
    tag = "storage",
    request_body = Retention,
    responses((status = 200, description = "The retention now in force.", body = Retention), WriteErrors),
    security(("admin_token" = [])),
)]
pub(super) async fn put_retention(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Result<Json<Retention>, JsonRejection>,
) -> Result<Json<Retention>, ApiError> {
    authorize(&api.admin, &headers)?;
    let Json(retention) = body?;
    api.admin.change_retention(retention).await?;
    Ok(Json(retention))
}

/// Checks that the store's numbers agree (`querypulse verify --url`): rollups
/// against raw windows, services against instances, sealed blocks against
/// their checksums. Reads every window held, so it needs the admin token.
#[utoipa::path(
    get,
    path = "/api/v1/verify",
    tag = "storage",
    responses(
        (status = 200, description = "What was checked, and every disagreement found.", body = VerifyReport),
        (status = 401, description = "No or a wrong admin token.", body = ErrorBody),
        (status = 403, description = "The collector has no admin token.", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub(super) async fn verify_store(State(api): State<Api>, headers: HeaderMap) -> Result<Json<VerifyReport>, ApiError> {
    if api.admin.token.is_none() {
        return Err(ApiError::Forbidden(
            "verifying the store reads all of it, so it needs the admin token: start the collector with \
             --admin-token (or QUERYPULSE_ADMIN_TOKEN)"
                .into(),
        ));
    }
    authorize(&api.admin, &headers)?;
    let store = api.admin.store.clone();
    let report = tokio::task::spawn_blocking(move || {
        querypulse_store::verify_settled(
            &store,
            crate::verify_cmd::RUNNING_RETRIES,
            crate::verify_cmd::RUNNING_PAUSE,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the check failed: {e}")))?;
    if !report.is_clean() {
        tracing::warn!(
            problems = report.problems.len(),
            "verify: the store disagrees with itself"
        );
    }
    Ok(Json(report))
}
