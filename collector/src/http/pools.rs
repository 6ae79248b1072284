//! `/api/v1/pools…`: pool summaries and one pool's series.

use axum::Json;
use axum::extract::{Path, State};
use querypulse_domain::source::{PoolSeries, PoolSummary};
use serde::Serialize;

use super::error::ApiError;
use super::params::{Parameters, Params, known_service, rfc3339, step_for, summary_range};
use super::{Api, SeriesResponse, read};

#[derive(Serialize)]
pub(super) struct PoolsResponse {
    from: String,
    to: String,
    pools: Vec<PoolSummary>,
}

pub(super) async fn pools(State(api): State<Api>, params: Params) -> Result<Json<PoolsResponse>, ApiError> {
    let params = Parameters::new(params, &["service", "from", "to"])?;
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

pub(super) async fn pool_series(
    State(api): State<Api>,
    Path((service, instance, pool)): Path<(String, String, String)>,
    params: Params,
) -> Result<Json<SeriesResponse<PoolSeries>>, ApiError> {
    let params = Parameters::new(params, &["from", "to", "step"])?;
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
