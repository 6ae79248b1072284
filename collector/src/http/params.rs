//! Request parameters: unknown names refused, times, ranges, steps and
//! fingerprints parsed with errors that name the parameter.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use chrono::{DateTime, TimeZone, Utc};
use querypulse_domain::Fingerprint;
use querypulse_domain::source::{Source, TimeRange};

use super::error::ApiError;
use super::read;
use querypulse_domain::now_ms;
use utoipa::IntoParams;

/// Default range of reads: the last hour.
pub(super) const DEFAULT_RANGE_MS: i64 = 3_600_000;
/// Longest range one read may cover.
pub(super) const MAX_RANGE_MS: i64 = 400 * 24 * 3_600_000;
/// Most steps one series request may return.
pub(super) const MAX_POINTS: i64 = 11_000;
pub(super) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Query parameters, with unknown names refused (a typo should not silently
/// widen a query).
pub(super) struct Parameters(HashMap<String, String>);

impl Parameters {
    /// The parameters of a request whose handler accepts those `P`
    /// describes (the same list the OpenAPI document shows).
    pub(super) fn new<P: IntoParams>(params: Params) -> Result<Parameters, ApiError> {
        let Query(params) = params?;
        let known = super::openapi::parameter_names::<P>();
        if let Some(key) = params.keys().find(|k| !known.contains(k)) {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter {key:?}; expected one of {}",
                known.join(", ")
            )));
        }
        Ok(Parameters(params))
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub(super) fn range(&self) -> Result<TimeRange, ApiError> {
        parse_range(&self.0)
    }

    pub(super) fn service(&self) -> Option<String> {
        self.get("service").map(str::to_owned)
    }
}

/// Parses a time parameter: RFC 3339 (`2026-11-27T10:00:00Z`) or Unix epoch
/// milliseconds.
pub(crate) fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    let value = value.trim();
    let invalid = || {
        ApiError::BadRequest(format!(
            "{name}={value:?} is not a time: use RFC 3339 (2026-11-27T10:00:00Z) or Unix epoch milliseconds"
        ))
    };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = value.parse().map_err(|_| invalid())?;
        return Utc
            .timestamp_millis_opt(ms)
            .single()
            .map(|t| t.timestamp_millis())
            .ok_or_else(invalid);
    }
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| invalid())
}

/// The `from`/`to` range of a request; the last hour by default.
pub(super) fn parse_range(params: &HashMap<String, String>) -> Result<TimeRange, ApiError> {
    let now = now_ms();
    let to = params
        .get("to")
        .map(|v| parse_time("to", v))
        .transpose()?
        .unwrap_or(now);
    let from = params
        .get("from")
        .map(|v| parse_time("from", v))
        .transpose()?
        .unwrap_or(to - DEFAULT_RANGE_MS);
    if from >= to {
        return Err(ApiError::BadRequest("from must be earlier than to".into()));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::BadRequest("the range may cover at most 400 days".into()));
    }
    Ok(TimeRange {
        from_ms: from,
        to_ms: to,
    })
}

/// Summaries over long ranges are read from whole hours (and over ranges of
/// an hour or more from whole minutes), so the range widens to those
/// boundaries; the response says which range was used.
pub(super) fn summary_range(range: TimeRange) -> TimeRange {
    range.for_summary()
}

/// Parses a step in the product's one duration grammar (`60`, `10s`, `5m`,
/// `1h`, `1d`): a whole number of seconds, at least one.
pub(crate) fn parse_step(value: &str) -> Result<i64, ApiError> {
    let duration = querypulse_domain::duration::parse(value).map_err(|e| ApiError::BadRequest(format!("step: {e}")))?;
    let step = i64::try_from(duration.as_millis())
        .map_err(|_| ApiError::BadRequest(format!("step={value:?} is out of range")))?;
    if step < 1_000 {
        return Err(ApiError::BadRequest("step must be at least 1s".into()));
    }
    if step % 1_000 != 0 {
        return Err(ApiError::BadRequest(format!(
            "step={value:?} is not a whole number of seconds"
        )));
    }
    Ok(step)
}

/// Points of a series whose request names no step.
const AUTOMATIC_POINTS: i64 = 120;

/// The step for a series request: given, or the smallest chart step giving
/// at most ~120 points.
pub(super) fn step_for(params: &Parameters, range: TimeRange) -> Result<i64, ApiError> {
    let step = match params.get("step") {
        Some(step) => parse_step(step)?,
        None => querypulse_domain::source::step_for(range.length_ms(), AUTOMATIC_POINTS),
    };
    if range.length_ms() / step > MAX_POINTS {
        return Err(ApiError::BadRequest(format!(
            "step is too small for this range: at most {MAX_POINTS} points per request"
        )));
    }
    Ok(step)
}
pub(super) use querypulse_domain::rfc3339;

pub(super) fn fingerprint(value: &str) -> Result<Fingerprint, ApiError> {
    value
        .parse()
        .map_err(|e: querypulse_domain::fingerprint::ParseFingerprintError| ApiError::BadRequest(e.to_string()))
}

/// Checks `service` exists (a typo should be a 404, not an empty list).
pub(super) async fn known_service(source: &Arc<dyn Source>, service: &Option<String>) -> Result<(), ApiError> {
    let Some(name) = service.clone() else {
        return Ok(());
    };
    let source = source.clone();
    let services = read(move || source.services()).await?;
    if services.iter().any(|s| s.name == name) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("unknown service {name:?}")))
    }
}
// The query parameters of each read, for the OpenAPI document and for
// refusing the names a handler does not know. Handlers read the values by
// name through `Parameters`; these types are never built.

/// Parameters of a summary over a range.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "describes the parameters; never built")]
pub(super) struct SummaryParams {
    /// Only this service (404 when no agent of that name ever reported).
    service: Option<String>,
    /// Start of the range: RFC 3339 (`2026-11-27T10:00:00Z`) or Unix epoch
    /// milliseconds. Default: one hour before `to`.
    from: Option<String>,
    /// End of the range (exclusive), as `from`. Default: now.
    to: Option<String>,
}

/// Parameters of a statement's history.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "describes the parameters; never built")]
pub(super) struct QuerySeriesParams {
    /// Only this service.
    service: Option<String>,
    /// Start of the range: RFC 3339 or Unix epoch milliseconds. Default: one
    /// hour before `to`.
    from: Option<String>,
    /// End of the range (exclusive). Default: now.
    to: Option<String>,
    /// Step: seconds, or a duration such as `10s`, `5m`, `1h`, `1d`; at
    /// least 1s and at most 11,000 steps. Default: about 120 steps.
    step: Option<String>,
}

/// Parameters of a pool's history.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "describes the parameters; never built")]
pub(super) struct PoolSeriesParams {
    /// Start of the range: RFC 3339 or Unix epoch milliseconds. Default: one
    /// hour before `to`.
    from: Option<String>,
    /// End of the range (exclusive). Default: now.
    to: Option<String>,
    /// Step, as for a statement's history.
    step: Option<String>,
}

/// Parameters of the slow-query log.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "describes the parameters; never built")]
pub(super) struct SlowParams {
    /// Only this service.
    service: Option<String>,
    /// Only this statement: 16 lowercase hex digits.
    #[param(pattern = "^[0-9a-f]{16}$")]
    fingerprint: Option<String>,
    /// Most samples returned, newest first. Default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Start of the range: RFC 3339 or Unix epoch milliseconds. Default: one
    /// hour before `to`.
    from: Option<String>,
    /// End of the range (exclusive). Default: now.
    to: Option<String>,
}

/// Parameters of the agent list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "describes the parameters; never built")]
pub(super) struct ServiceParams {
    /// Only this service.
    service: Option<String>,
}

/// Parameters of the Prometheus exposition.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "describes the parameters; never built")]
pub(super) struct MetricsParams {
    /// Trailing window the statement and pool series cover, 1m to 1d.
    /// Default 5m.
    window: Option<String>,
    /// Statements exported: the ones with the most total time. Default 500.
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<u32>,
}

/// Parameters of the alert history.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "describes the parameters; never built")]
pub(super) struct HistoryParams {
    /// Only this rule's id.
    rule: Option<i64>,
    /// Start of the range: RFC 3339 or Unix epoch milliseconds. Default: one
    /// hour before `to`.
    from: Option<String>,
    /// End of the range (exclusive). Default: now.
    to: Option<String>,
    /// Most entries returned, newest first. Default 500.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_epoch_millis() {
        assert_eq!(parse_time("from", "1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("from", "2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_time("from", "2023-11-14T23:13:20+01:00").unwrap(),
            1_700_000_000_000
        );
        for bad in [
            "yesterday",
            "",
            "-5",
            "2023-13-01T00:00:00Z",
            "99999999999999999999",
            "1e12",
        ] {
            let err = parse_time("from", bad).unwrap_err();
            assert!(
                matches!(err, ApiError::BadRequest(ref m) if m.contains("from=")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn ranges_must_be_ordered_and_bounded() {
        let params = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let range = parse_range(&params(&[("from", "1000"), ("to", "2000")])).unwrap();
        assert_eq!((range.from_ms, range.to_ms), (1_000, 2_000));
        let default = parse_range(&params(&[("to", "7200000")])).unwrap();
        assert_eq!(default.from_ms, 3_600_000);
        assert!(parse_range(&params(&[("from", "2000"), ("to", "1000")])).is_err());
        assert!(parse_range(&params(&[("from", "0"), ("to", "99999999999999")])).is_err());
    }

    #[test]
    fn steps_parse_with_units_and_long_ranges_snap_to_whole_hours() {
        assert_eq!(parse_step("60").unwrap(), 60_000);
        assert_eq!(parse_step("10s").unwrap(), 10_000);
        assert_eq!(parse_step("5m").unwrap(), 300_000);
        assert_eq!(parse_step("1h").unwrap(), 3_600_000);
        assert_eq!(parse_step("1d").unwrap(), 86_400_000);
        assert_eq!(parse_step("1.5h").unwrap(), 5_400_000);
        for bad in ["", "0", "5x", "-1m", "1500ms", "99999999999999999999d"] {
            assert!(parse_step(bad).is_err(), "{bad}");
        }
        let day = summary_range(TimeRange {
            from_ms: 3_600_000 + 5,
            to_ms: 27 * 3_600_000 - 5,
        });
        assert_eq!((day.from_ms, day.to_ms), (3_600_000, 27 * 3_600_000));
        let short = TimeRange {
            from_ms: 5,
            to_ms: 600_000,
        };
        assert_eq!(summary_range(short), short);
    }
}
