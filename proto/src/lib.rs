#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod convert;
pub mod native;

/// Code generated from `querypulse/v1/*.proto`. Only the agent's sender, the
/// collector's ingest service and the load generator touch these types;
/// everything else works with the domain types (`querypulse-domain`).
pub mod wire {
    /// The `querypulse.v1` package.
    #[allow(missing_docs, clippy::all, missing_debug_implementations)]
    pub mod v1 {
        tonic::include_proto!("querypulse.v1");
    }
}

/// Prometheus remote write 1.0 (`prompb`): the messages the collector sends
/// to Prometheus-compatible storage, from `prometheus/remote.proto`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod prompb {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

pub use convert::ValidationError;
pub use querypulse_domain::{
    AgentCounters, AgentMessage, Batch, CollectorMessage, ConfigUpdate, DbSystem, ErrorClassCount, FingerprintText,
    Gauge, HealthCheckStats, Hello, LeakSample, MAX_INTERVAL_MS, MAX_KEPT_LEAK_SAMPLES, MIN_INTERVAL_MS, PoolStats,
    QueryStats, SlowQuerySample, Window,
};
/// The domain types the wire converts to and from, so a crate that speaks the
/// wire needs one dependency for both.
pub use querypulse_domain::{
    Clock, DenseHistogram, Fingerprint, LatencyHistogram, clock, fingerprint, histogram, now_ms, stats,
};
