#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod alerting;
pub mod clock;
pub mod duration;
pub mod fingerprint;
pub mod histogram;
pub mod settings;
pub mod source;
pub mod stats;
pub mod token;

pub use clock::{Clock, now_ms, rfc3339};
pub use fingerprint::Fingerprint;
pub use histogram::{DenseHistogram, LatencyHistogram};
pub use stats::{
    AgentCounters, AgentMessage, Batch, CollectorMessage, ConfigUpdate, DbSystem, ErrorClassCount, FingerprintText,
    Gauge, HealthCheckStats, Hello, LeakSample, MAX_INTERVAL_MS, MAX_KEPT_LEAK_SAMPLES, MIN_INTERVAL_MS, PoolStats,
    QueryStats, SlowQuerySample, Window,
};
