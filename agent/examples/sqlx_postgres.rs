//! A PostgreSQL service on sqlx with an instrumented pool: every checkout's
//! wait, hold time and leaks, the pool's gauges, health pings, and each
//! statement's latency, rows and SQLSTATE.
//!
//! ```sh
//! querypulse serve &                                  # a collector on 127.0.0.1:7171
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run -p querypulse-agent --features sqlx-postgres --example sqlx_postgres -- 30
//! ```
//!
//! Creates a table `querypulse_example_orders`, runs a small order workload
//! on it for the given number of seconds (default 15) with a few duplicate
//! keys, drops the table, ships the last window and exits. `QUERYPULSE_*`
//! variables (`AgentBuilder::from_env`) configure the agent.

use std::time::{Duration, Instant};

use querypulse_agent::sqlx::InstrumentedPool;
use querypulse_agent::{AgentBuilder, DbSystem};
use sqlx::postgres::PgPoolOptions;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(15);
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());

    let agent = AgentBuilder::from_env("example-checkout")?
        .db_system(DbSystem::Postgresql)
        .interval(Duration::from_secs(5))
        .start()?;
    let pool = InstrumentedPool::builder(&agent, "main")
        .leak_threshold(Duration::from_secs(5))
        .connect(PgPoolOptions::new().max_connections(4), &url)
        .await?;

    const CREATE: &str = "CREATE TABLE IF NOT EXISTS querypulse_example_orders (id bigint PRIMARY KEY, total bigint)";
    const INSERT: &str = "INSERT INTO querypulse_example_orders (id, total) VALUES ($1, $2)";
    const SELECT: &str = "SELECT id, total FROM querypulse_example_orders WHERE id = $1";
    const DROP: &str = "DROP TABLE querypulse_example_orders";
    pool.timed(CREATE, sqlx::query(CREATE).execute(pool.pool())).await?;

    let until = Instant::now() + Duration::from_secs(seconds);
    let mut id: i64 = 0;
    let mut duplicates = 0;
    while Instant::now() < until {
        id += 1;
        let mut conn = pool.acquire().await?;
        // Every tenth order is inserted twice: recorded under SQLSTATE 23505.
        let key = if id % 10 == 0 { id - 1 } else { id };
        if pool
            .timed(INSERT, sqlx::query(INSERT).bind(key).bind(id * 10).execute(&mut *conn))
            .await
            .is_err()
        {
            duplicates += 1;
        }
        pool.timed(SELECT, sqlx::query(SELECT).bind(key).fetch_optional(&mut *conn))
            .await?;
    }
    pool.timed(DROP, sqlx::query(DROP).execute(pool.pool())).await?;

    pool.close().await;
    agent.shutdown().await?;
    println!(
        "{id} orders, {duplicates} duplicate keys; {} batches acknowledged",
        agent.stats().acked_batches
    );
    Ok(())
}
