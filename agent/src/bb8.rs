//! bb8 integration (feature `bb8`): the gauges and counters of a
//! [`bb8::Pool`] of any manager, read from its `state()` and `config()`.
//!
//! bb8 keeps cumulative statistics, so besides the size / idle / in-use /
//! waiting gauges and their peaks, the acquires, timeouts and connections
//! opened and closed of every window are recorded. (bb8 sums wait times
//! instead of keeping their distribution, so there is no acquire-wait
//! histogram unless checkouts are timed through
//! [`PoolMonitor::begin_acquire`](crate::PoolMonitor::begin_acquire).)
//!
//! ```no_run
//! # async fn run<M: bb8::ManageConnection>(agent: querypulse_agent::Agent, pool: bb8::Pool<M>) {
//! use querypulse_agent::DbSystem;
//!
//! // Keep the watch as long as the pool: dropping it stops the sampling.
//! let watch = querypulse_agent::bb8::watch(&agent, "main", DbSystem::Postgresql, &pool);
//! # }
//! ```

use bb8::{ManageConnection, Pool};

pub use crate::pool::PoolWatch;
use crate::pool::{PoolSample, PoolTotals};
use crate::{Agent, DbSystem};

/// Records the gauges and counters of `pool` as the pool called `name`,
/// sampling its state several times a second. Must be called inside a Tokio
/// runtime.
pub fn watch<M: ManageConnection>(agent: &Agent, name: &str, db_system: DbSystem, pool: &Pool<M>) -> PoolWatch {
    let monitor = agent.pool_monitor(name, db_system);
    let pool = pool.clone();
    monitor.set_probe(move || {
        let state = pool.state();
        let config = pool.config();
        let stats = &state.statistics;
        Some(PoolSample {
            size: state.connections,
            idle: state.idle_connections,
            waiting: Some(u32::try_from(stats.pending_gets()).unwrap_or(u32::MAX)),
            max_size: config.max_size,
            min_idle: config.min_idle.unwrap_or(0),
            totals: PoolTotals {
                acquires: Some(stats.get_direct + stats.get_waited),
                timeouts: Some(stats.get_timed_out),
                connections_created: Some(stats.connections_created),
                connections_closed: Some(
                    stats.connections_closed_broken
                        + stats.connections_closed_invalid
                        + stats.connections_closed_max_lifetime
                        + stats.connections_closed_idle_timeout,
                ),
            },
        })
    });
    PoolWatch::start(monitor)
}
