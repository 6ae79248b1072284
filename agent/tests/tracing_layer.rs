//! The tracing layer sees real sqlx statements. This binary installs the
//! layer as the global subscriber, so it holds this one test only.

mod support;

use std::time::Duration;

use sqlx::{Connection, Executor};
use support::{MYSQL_URL, POSTGRES_URL, TestCollector, database_url};
use tracing_subscriber::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracing_layer_records_statements_sqlx_reports() {
    let collector = TestCollector::start().await;
    let agent = collector.agent("traced");
    tracing_subscriber::registry()
        .with(querypulse_agent::tracing::layer(&agent))
        .init();

    // Longer than sqlx's four-word summary: the text comes from `db.statement`.
    let long = "SELECT 42 AS answer, 'x' AS qp_traced_sqlite WHERE 1 = 1";
    let mut sqlite = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .expect("SQLite opens in memory");
    let rows = sqlite.fetch_all(long).await.expect("the statement runs");
    assert_eq!(rows.len(), 1);
    // Four words or fewer: the summary is the whole statement.
    sqlite
        .fetch_all("SELECT qp_traced_short")
        .await
        .expect_err("no such column");
    let mut expected = vec!["qp_traced_sqlite"];

    if let Some(url) = database_url(POSTGRES_URL) {
        let mut pg = sqlx::PgConnection::connect(&url)
            .await
            .expect("PostgreSQL is reachable");
        pg.fetch_all("SELECT 42 AS answer, 'x' AS qp_traced_postgres WHERE 1 = 1")
            .await
            .expect("the statement runs");
        expected.push("qp_traced_postgres");
    }
    if let Some(url) = database_url(MYSQL_URL) {
        let mut mysql = sqlx::MySqlConnection::connect(&url)
            .await
            .expect("MariaDB/MySQL is reachable");
        mysql
            .fetch_all("SELECT 42 AS answer, 'x' AS qp_traced_mysql FROM DUAL WHERE 1 = 1")
            .await
            .expect("the statement runs");
        expected.push("qp_traced_mysql");
    }
    agent.flush().await.expect("the window is acknowledged");

    for marker in expected {
        let (text, stats) = collector
            .eventually(marker, Duration::from_secs(20), |c| c.query(marker))
            .await;
        assert!(!text.contains("42"), "literals never leave the process: {text}");
        assert_eq!(stats.calls, 1, "{marker}: {stats:?}");
        assert_eq!(stats.rows, 1, "{marker}: rows returned are counted");
        assert!(stats.max_us > 0);
    }
    // A statement sqlx logs by its summary alone.
    let (_, short) = collector
        .eventually("qp_traced_short", Duration::from_secs(20), |c| {
            c.query("qp_traced_short")
        })
        .await;
    assert_eq!(short.calls, 1);
}
