//! The OpenAPI 3.1 document of the API, `GET /api/v1/openapi.json`.
//!
//! It is generated from the handlers and types themselves: every route is
//! registered through [`utoipa_axum::routes!`], which takes the path and
//! method from the handler's `#[utoipa::path]`, and every query parameter a
//! handler accepts is the field list of its parameter type (anything else
//! is refused), so the document and the server cannot drift apart.

use axum::extract::State;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::Api;

/// The document's fixed part; the paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "querypulse",
        description = "The querypulse collector's JSON API: fleet-wide query and pool statistics, \
                       retention, agent settings and alerting. Reads are open unless the collector \
                       has a read token; changes need the admin token. Times are RFC 3339 or Unix \
                       epoch milliseconds; failures are `{\"error\": \"...\"}`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerTokens),
    tags(
        (name = "queries", description = "Statements: fleet-wide summaries, history and slow samples."),
        (name = "pools", description = "Connection pools."),
        (name = "agents", description = "Reporting instances and the settings pushed to them."),
        (name = "storage", description = "Retention and consistency checks of the store."),
        (name = "alerts", description = "Rules, notification channels, silences and alerts."),
        (name = "collector", description = "The collector itself."),
    )
)]
pub(super) struct ApiDoc;

/// Security schemes: `admin_token` for changes, `read_token` for reads when
/// the collector has one. Both are `Authorization: Bearer <token>`.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["admin_token", "read_token"] {
            components.add_security_scheme(name, SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        }
    }
}

/// Every failure: what went wrong, in words.
#[derive(Serialize, ToSchema)]
pub(super) struct ErrorBody {
    /// What went wrong and, where it helps, how to fix it.
    pub error: String,
}

/// How a read can fail (for the document: handlers answer with
/// [`super::ApiError`]).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "describes responses; never built")]
pub(super) enum ReadErrors {
    /// A parameter is malformed or unknown; the message names it.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The collector has a read token and the request did not carry it (or
    /// the admin token).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The service, statement or pool named is not known.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// How a change can fail (for the document: handlers answer with
/// [`super::ApiError`]).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code, reason = "describes responses; never built")]
pub(super) enum WriteErrors {
    /// The body or a parameter is invalid; the message names the field.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No or a wrong admin token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Changes are switched off: the collector has no admin token.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The thing to change does not exist.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The change conflicts with what is stored (a name taken, a channel in
    /// use by a rule).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The body is over 2 MiB.
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
}

/// The names of the query parameters `P` describes: the only ones its
/// handler accepts.
pub(super) fn parameter_names<P: IntoParams>() -> Vec<String> {
    P::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .map(|parameter| parameter.name)
        .collect()
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "collector",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json"),
        (status = 401, description = "The collector has a read token and the request did not carry it.", body = ErrorBody),
    ),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn openapi_json(State(api): State<Api>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        api.openapi.clone(),
    )
}
