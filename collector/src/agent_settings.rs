//! Settings the collector pushes to every connected agent, so a threshold set
//! once in the API reaches the whole fleet without a deploy.

use querypulse_domain::{ConfigUpdate, MAX_INTERVAL_MS, MIN_INTERVAL_MS};
use serde::{Deserialize, Serialize};

/// Longest slow-query threshold accepted (1 hour).
const MAX_SLOW_THRESHOLD_MS: u64 = 3_600_000;
/// Most slow-query samples per window accepted.
const MAX_SAMPLES: u32 = 10_000;

/// Agent settings; `null` leaves an agent's own setting alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "slow_threshold_ms": 500,
    "max_samples_per_fingerprint": 5,
    "max_samples_per_window": 100,
    "interval_ms": null
}))]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// Executions at least this slow are sampled as slow queries.
    pub slow_threshold_ms: Option<u64>,
    /// Slow samples kept per fingerprint per window.
    pub max_samples_per_fingerprint: Option<u32>,
    /// Slow samples kept per window.
    pub max_samples_per_window: Option<u32>,
    /// Aggregation interval, milliseconds.
    pub interval_ms: Option<u32>,
}

/// A setting out of range; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AgentSettingsError(pub String);

impl AgentSettings {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), AgentSettingsError> {
        if let Some(ms) = self.slow_threshold_ms
            && ms > MAX_SLOW_THRESHOLD_MS
        {
            return Err(AgentSettingsError(format!(
                "slow_threshold_ms must be at most {MAX_SLOW_THRESHOLD_MS}, got {ms}"
            )));
        }
        for (name, value) in [
            ("max_samples_per_fingerprint", self.max_samples_per_fingerprint),
            ("max_samples_per_window", self.max_samples_per_window),
        ] {
            if let Some(n) = value
                && n > MAX_SAMPLES
            {
                return Err(AgentSettingsError(format!(
                    "{name} must be at most {MAX_SAMPLES}, got {n}"
                )));
            }
        }
        if let Some(ms) = self.interval_ms
            && !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms)
        {
            return Err(AgentSettingsError(format!(
                "interval_ms must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}, got {ms}"
            )));
        }
        Ok(())
    }

    /// True when nothing is set (nothing to push).
    pub fn is_empty(&self) -> bool {
        *self == AgentSettings::default()
    }

    /// The protocol message.
    pub fn to_update(self) -> ConfigUpdate {
        ConfigUpdate {
            slow_threshold_us: self.slow_threshold_ms.map(|ms| ms * 1_000),
            max_samples_per_fingerprint: self.max_samples_per_fingerprint,
            max_samples_per_window: self.max_samples_per_window,
            interval_ms: self.interval_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_fields_are_named() {
        for (bad, field) in [
            (
                AgentSettings {
                    slow_threshold_ms: Some(u64::MAX),
                    ..Default::default()
                },
                "slow_threshold_ms",
            ),
            (
                AgentSettings {
                    max_samples_per_window: Some(1_000_000),
                    ..Default::default()
                },
                "max_samples_per_window",
            ),
            (
                AgentSettings {
                    interval_ms: Some(10),
                    ..Default::default()
                },
                "interval_ms",
            ),
        ] {
            assert!(bad.validate().unwrap_err().0.contains(field));
        }
        let good = AgentSettings {
            slow_threshold_ms: Some(250),
            ..Default::default()
        };
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(good.to_update().slow_threshold_us, Some(250_000));
    }
}
