//! deadpool integration (feature `deadpool`): the gauges of a
//! [`deadpool::managed::Pool`] of any manager, read from its `status()`.
//!
//! deadpool reports its size, available objects and waiting tasks, so the
//! size / idle / in-use / waiting gauges and their peaks are recorded; it
//! keeps no counters of acquires or timeouts. Wrap `pool.get()` in
//! [`PoolMonitor::begin_acquire`](crate::PoolMonitor::begin_acquire) (through
//! [`PoolWatch::monitor`]) to record those as well.
//!
//! ```no_run
//! # async fn run<M: deadpool::managed::Manager + 'static>(agent: querypulse_agent::Agent, pool: deadpool::managed::Pool<M>) {
//! use querypulse_agent::DbSystem;
//!
//! // Keep the watch as long as the pool: dropping it stops the sampling.
//! let watch = querypulse_agent::deadpool::watch(&agent, "main", DbSystem::Postgresql, &pool);
//! # }
//! ```

use deadpool::managed::{Manager, Object, Pool};

use crate::pool::PoolSample;
pub use crate::pool::PoolWatch;
use crate::{Agent, DbSystem};

/// Records the gauges of `pool` as the pool called `name`, sampling its
/// status several times a second. Must be called inside a Tokio runtime.
pub fn watch<M, W>(agent: &Agent, name: &str, db_system: DbSystem, pool: &Pool<M, W>) -> PoolWatch
where
    M: Manager + 'static,
    W: From<Object<M>> + 'static,
{
    let monitor = agent.pool_monitor(name, db_system);
    let weak = pool.weak();
    monitor.set_probe(move || {
        let status = weak.upgrade()?.status();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Some(PoolSample {
            size: count(status.size),
            idle: count(status.available),
            waiting: Some(count(status.waiting)),
            max_size: count(status.max_size),
            ..PoolSample::default()
        })
    });
    PoolWatch::start(monitor)
}
