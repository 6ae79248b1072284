//! How long each resolution is kept, and the optional cap on total size.

use std::time::Duration;

use serde::{Deserialize, Serialize};

const MINUTE: u64 = 60;
const HOUR: u64 = 3_600;
const DAY: u64 = 86_400;
/// Longest retention accepted for any resolution (10 years).
pub const MAX_RETENTION_SECS: u64 = 10 * 366 * DAY;
/// Smallest size cap accepted.
pub const MIN_MAX_BYTES: u64 = 64 << 20;
/// Largest size cap accepted (1 EiB): beyond any disk, and within what the
/// settings database stores.
pub const MAX_MAX_BYTES: u64 = 1 << 60;

/// Retention settings. Data is removed in whole time partitions (raw: 6 h,
/// 1 m: 1 day, 1 h: 30 days), so up to one partition span more than the
/// setting stays on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "raw_seconds": 172_800,
    "minute_seconds": 1_209_600,
    "hour_seconds": 34_560_000,
    "max_bytes": null
})))]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Raw windows (as the agents sent them), seconds. Default 2 days. Also
    /// the oldest window the collector accepts from an agent.
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 316_224_000))]
    pub raw_seconds: u64,
    /// 1-minute rollups, seconds. Default 14 days.
    #[cfg_attr(feature = "openapi", schema(minimum = 3_600, maximum = 316_224_000))]
    pub minute_seconds: u64,
    /// 1-hour rollups, seconds. Default 400 days.
    #[cfg_attr(feature = "openapi", schema(minimum = 86_400, maximum = 316_224_000))]
    pub hour_seconds: u64,
    /// Total size of the store; beyond it the oldest partitions go first.
    /// `null` for no cap.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 67_108_864_u64, maximum = 1_152_921_504_606_846_976_u64)
    )]
    pub max_bytes: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw_seconds: 2 * DAY,
            minute_seconds: 14 * DAY,
            hour_seconds: 400 * DAY,
            max_bytes: None,
        }
    }
}

/// A retention setting that cannot be applied; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RetentionError(pub String);

impl Retention {
    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<(), RetentionError> {
        let fail = |message: String| Err(RetentionError(message));
        for (name, value) in [
            ("raw_seconds", self.raw_seconds),
            ("minute_seconds", self.minute_seconds),
            ("hour_seconds", self.hour_seconds),
        ] {
            if value > MAX_RETENTION_SECS {
                return fail(format!(
                    "{name} must be at most {MAX_RETENTION_SECS} (10 years), got {value}"
                ));
            }
        }
        if self.raw_seconds < MINUTE {
            return fail(format!(
                "raw_seconds must cover at least one 1-minute rollup interval (60), got {}",
                self.raw_seconds
            ));
        }
        if self.minute_seconds < HOUR {
            return fail(format!(
                "minute_seconds must cover at least one 1-hour rollup interval (3600), got {}",
                self.minute_seconds
            ));
        }
        if self.hour_seconds < DAY {
            return fail(format!(
                "hour_seconds must be at least one day (86400), got {}",
                self.hour_seconds
            ));
        }
        if self.minute_seconds < self.raw_seconds {
            return fail("minute_seconds must not be shorter than raw_seconds: rollups outlive raw data".into());
        }
        if self.hour_seconds < self.minute_seconds {
            return fail("hour_seconds must not be shorter than minute_seconds: rollups outlive raw data".into());
        }
        if let Some(bytes) = self.max_bytes
            && !(MIN_MAX_BYTES..=MAX_MAX_BYTES).contains(&bytes)
        {
            return fail(format!(
                "max_bytes must be from {MIN_MAX_BYTES} (64 MiB) to {MAX_MAX_BYTES} (1 EiB), or null; got {bytes}"
            ));
        }
        Ok(())
    }

    /// Retention of raw windows.
    pub fn raw(&self) -> Duration {
        Duration::from_secs(self.raw_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Retention::default().validate(), Ok(()));
    }

    #[test]
    fn nonsense_is_refused_with_the_field_named() {
        let base = Retention::default();
        for (bad, field) in [
            (
                Retention {
                    raw_seconds: 30,
                    ..base
                },
                "raw_seconds",
            ),
            (
                Retention {
                    minute_seconds: 600,
                    ..base
                },
                "minute_seconds",
            ),
            (
                Retention {
                    hour_seconds: 3_600,
                    ..base
                },
                "hour_seconds",
            ),
            (
                Retention {
                    raw_seconds: 20 * DAY,
                    ..base
                },
                "minute_seconds",
            ),
            (
                Retention {
                    hour_seconds: u64::MAX,
                    ..base
                },
                "hour_seconds",
            ),
            (
                Retention {
                    max_bytes: Some(1_000),
                    ..base
                },
                "max_bytes",
            ),
            (
                // Past what the settings database stores (a 500 once).
                Retention {
                    max_bytes: Some(1 << 63),
                    ..base
                },
                "max_bytes",
            ),
        ] {
            let err = bad.validate().unwrap_err().0;
            assert!(err.contains(field), "{err}");
        }
    }
}
