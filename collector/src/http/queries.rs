//! `/api/v1/services`, `/api/v1/queries…` and `/api/v1/slow-queries`.

use axum::Json;
use axum::extract::{Path, State};
use querypulse_domain::source::{QueryDetail, QuerySeries, SlowFilter, SlowQuery};
use querypulse_domain::source::{QueryFilter, QuerySummary, ServiceSummary};
use serde::Serialize;

use super::error::ApiError;
use super::params::{Parameters, Params, fingerprint, known_service, rfc3339, step_for, summary_range};
use super::{Api, SeriesResponse, read};

/// Default and largest number of slow samples per request.
pub(super) const DEFAULT_SLOW_LIMIT: usize = 100;
pub(super) const MAX_SLOW_LIMIT: usize = 1_000;
#[derive(Serialize)]
pub(super) struct ServicesResponse {
    services: Vec<ServiceSummary>,
}

pub(super) async fn services(State(api): State<Api>) -> Result<Json<ServicesResponse>, ApiError> {
    let mut services = read(move || api.source.services()).await?;
    services.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(ServicesResponse { services }))
}

#[derive(Serialize)]
pub(super) struct QueriesResponse {
    from: String,
    to: String,
    queries: Vec<QuerySummary>,
}

pub(super) async fn queries(State(api): State<Api>, params: Params) -> Result<Json<QueriesResponse>, ApiError> {
    let params = Parameters::new(params, &["service", "from", "to"])?;
    let range = summary_range(params.range()?);
    let service = params.service();
    known_service(&api.source, &service).await?;
    let filter = QueryFilter { service, range };
    let source = api.source.clone();
    let mut queries = read(move || source.queries(&filter)).await?;
    queries.sort_by(|a, b| {
        b.total_ms
            .total_cmp(&a.total_ms)
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    Ok(Json(QueriesResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        queries,
    }))
}

#[derive(Serialize)]
pub(super) struct DetailResponse {
    from: String,
    to: String,
    #[serde(flatten)]
    detail: QueryDetail,
}

pub(super) async fn query_detail(
    State(api): State<Api>,
    Path(fp): Path<String>,
    params: Params,
) -> Result<Json<DetailResponse>, ApiError> {
    let fingerprint = fingerprint(&fp)?;
    let params = Parameters::new(params, &["service", "from", "to"])?;
    let range = summary_range(params.range()?);
    let filter = QueryFilter {
        service: params.service(),
        range,
    };
    let source = api.source.clone();
    let detail = read(move || source.query_detail(fingerprint, &filter))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("fingerprint {fingerprint} was never reported")))?;
    Ok(Json(DetailResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        detail,
    }))
}

pub(super) async fn query_series(
    State(api): State<Api>,
    Path(fp): Path<String>,
    params: Params,
) -> Result<Json<SeriesResponse<QuerySeries>>, ApiError> {
    let fingerprint = fingerprint(&fp)?;
    let params = Parameters::new(params, &["service", "from", "to", "step"])?;
    let range = params.range()?;
    let step = step_for(&params, range)?;
    let filter = QueryFilter {
        service: params.service(),
        range,
    };
    let source = api.source.clone();
    let series = read(move || source.query_series(fingerprint, &filter, step))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("fingerprint {fingerprint} was never reported")))?;
    Ok(Json(SeriesResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        series,
    }))
}

#[derive(Serialize)]
pub(super) struct SlowResponse {
    from: String,
    to: String,
    slow_queries: Vec<SlowQuery>,
}

pub(super) async fn slow_queries(State(api): State<Api>, params: Params) -> Result<Json<SlowResponse>, ApiError> {
    let params = Parameters::new(params, &["service", "fingerprint", "limit", "from", "to"])?;
    let range = params.range()?;
    let fingerprint = params.get("fingerprint").map(fingerprint).transpose()?;
    let limit = match params.get("limit") {
        Some(limit) => limit
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_SLOW_LIMIT).contains(l))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be a number from 1 to {MAX_SLOW_LIMIT}")))?,
        None => DEFAULT_SLOW_LIMIT,
    };
    let service = params.service();
    known_service(&api.source, &service).await?;
    let filter = SlowFilter {
        service,
        fingerprint,
        range,
        limit,
    };
    let source = api.source.clone();
    let slow_queries = read(move || source.slow_queries(&filter)).await?;
    Ok(Json(SlowResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        slow_queries,
    }))
}
