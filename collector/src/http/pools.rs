//! `/api/v1/pools…`: pool summaries and one pool's series.

use axum::Json;
use axum::extract::{Path, State};
use querypulse_domain::source::{PoolSeries, PoolSummary};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::openapi::ReadErrors;
use super::params::{Parameters, Params, PoolSeriesParams, SummaryParams};
use super::params::{known_service, rfc3339, step_for, summary_range};
use super::{Api, SeriesResponse, read};

/// Pools over a range, the busiest first.
#[derive(Serialize, ToSchema)]
pub(super) struct PoolsResponse {
    /// Start of the range covered (RFC 3339).
    from: String,
    /// End of the range covered (exclusive).
    to: String,
    /// One per instance and pool, by peak utilization.
    pools: Vec<PoolSummary>,
}

/// Connection pools: size, idle, in use, waiting, utilization, acquire
/// waits, timeouts, leaks and health checks over a range.
#[utoipa::path(
    get,
    path = "/api/v1/pools",
    tag = "pools",
    params(SummaryParams),
    responses((status = 200, description = "OK.", body = PoolsResponse), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn pools(State(api): State<Api>, params: Params) -> Result<Json<PoolsResponse>, ApiError> {
    let params = Parameters::new::<SummaryParams>(params)?;
    let range = summary_range(params.range()?);
    let service = params.service();
    known_service(&api.source, &service).await?;
    let source = api.source.clone();
    let mut pools = read(move || source.pools(range)).await?;
    pools.retain(|p| service.as_ref().is_none_or(|s| *s == p.service));
    pools.sort_by(|a, b| {
        b.peak_utilization
            .total_cmp(&a.peak_utilization)
            .then_with(|| a.pool.cmp(&b.pool))
    });
    Ok(Json(PoolsResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        pools,
    }))
}

/// One pool's history in steps.
#[utoipa::path(
    get,
    path = "/api/v1/pools/{service}/{instance}/{pool}/series",
    tag = "pools",
    params(
        ("service" = String, Path, description = "Service name."),
        ("instance" = String, Path, description = "Instance id."),
        ("pool" = String, Path, description = "Pool name."),
        PoolSeriesParams,
    ),
    responses((status = 200, description = "OK.", body = SeriesResponse<PoolSeries>), ReadErrors),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub(super) async fn pool_series(
    State(api): State<Api>,
    Path((service, instance, pool)): Path<(String, String, String)>,
    params: Params,
) -> Result<Json<SeriesResponse<PoolSeries>>, ApiError> {
    let params = Parameters::new::<PoolSeriesParams>(params)?;
    let range = params.range()?;
    let step = step_for(&params, range)?;
    let source = api.source.clone();
    let (s, i, p) = (service.clone(), instance.clone(), pool.clone());
    let series = read(move || source.pool_series(&s, &i, &p, range, step))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no pool {pool:?} on instance {instance:?} of service {service:?}"
            ))
        })?;
    Ok(Json(SeriesResponse {
        from: rfc3339(range.from_ms),
        to: rfc3339(range.to_ms),
        series,
    }))
}
