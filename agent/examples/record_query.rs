//! A service without an integration: it times its own statements and hands
//! them to the agent with `record_query`.
//!
//! ```sh
//! querypulse serve &                                  # a collector on 127.0.0.1:7171
//! cargo run -p querypulse-agent --example record_query -- 30
//! ```
//!
//! Runs for the given number of seconds (default 15), then ships the last
//! window and exits. `QUERYPULSE_ENDPOINT` and the other `QUERYPULSE_*`
//! variables of `AgentBuilder::from_env` configure the agent. With no
//! collector running the service runs just the same: the agent keeps what it
//! could not send in its outbox and says so in its stats.

use std::time::{Duration, Instant};

use querypulse_agent::{AgentBuilder, AgentError, DbSystem, Outcome};

/// The statements this pretend service runs, with literals in them: the
/// agent strips them, so each line is one fingerprint however the id varies.
fn statement(i: u64) -> (String, Outcome) {
    match i % 4 {
        0 => (format!("SELECT * FROM orders WHERE id = {i}"), Outcome::rows(1)),
        1 => (
            format!("UPDATE orders SET status = 'paid' WHERE id = {i}"),
            Outcome::rows(1),
        ),
        2 if i % 20 == 2 => (
            format!("INSERT INTO orders (id, total) VALUES ({}, 990)", i / 20),
            Outcome::sqlstate("23505"),
        ),
        _ => (
            format!("SELECT count(*) FROM order_lines WHERE order_id IN ({i}, {})", i + 1),
            Outcome::rows(1),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(15);
    let agent = AgentBuilder::from_env("example-orders")?
        .db_system(DbSystem::Postgresql)
        .interval(Duration::from_secs(5))
        .start()?;

    let until = Instant::now() + Duration::from_secs(seconds);
    let mut i = 0;
    while Instant::now() < until {
        let (sql, outcome) = statement(i);
        let started = Instant::now();
        // Stands in for the database round trip.
        tokio::time::sleep(Duration::from_millis(1 + i % 7)).await;
        agent.record_query(&sql, started.elapsed(), outcome);
        i += 1;
    }

    agent.shutdown().await?;
    let stats = agent.stats();
    println!(
        "recorded {i} statements as {} fingerprints; {} batches acknowledged",
        stats.fingerprints, stats.acked_batches
    );
    Ok(())
}
