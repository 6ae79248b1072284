//! The admin token of write requests.

use axum::http::HeaderMap;

use super::Admin;
use super::error::ApiError;

/// Checks the admin token of a write request.
pub(crate) fn authorize(admin: &Admin, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &admin.token else {
        return Err(ApiError::Forbidden(
            "changes are disabled: start the collector with --admin-token (or QUERYPULSE_ADMIN_TOKEN)".into(),
        ));
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized("this change needs the admin token: Authorization: Bearer <token>".into())
        })?;
    if querypulse_domain::token::tokens_match(presented, expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("the admin token is not valid".into()))
    }
}
