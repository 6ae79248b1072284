#![doc = include_str!("../README.md")]

pub mod convert;
pub mod domain;
pub mod fingerprint;
pub mod histogram;

/// Code generated from `querypulse/v1/*.proto`. Only the agent's sender and the
/// collector's ingest service touch these types; everything else works with
/// [`domain`] types.
pub mod wire {
    /// The `querypulse.v1` package.
    #[allow(missing_docs, clippy::all, missing_debug_implementations)]
    pub mod v1 {
        tonic::include_proto!("querypulse.v1");
    }
}

pub use convert::ValidationError;
pub use domain::*;
pub use fingerprint::Fingerprint;
pub use histogram::{DenseHistogram, LatencyHistogram};
