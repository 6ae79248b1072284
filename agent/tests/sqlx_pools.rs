//! The sqlx integration against real PostgreSQL, MariaDB/MySQL and SQLite,
//! asserted on what the agent actually ships to a gRPC collector.

mod support;

use std::time::Duration;

use querypulse_agent::Agent;
use querypulse_agent::sqlx::{BoxError, InstrumentedPool, PoolInstrumentation, RowCount, error_class};
use querypulse_proto::HealthCheckStats;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Database, Executor, MySql, Postgres, Sqlite};
use support::{MYSQL_URL, POSTGRES_URL, TestCollector, closed_port, database_url, max_ms, unique_name};

const WAIT: Duration = Duration::from_secs(20);

/// The pieces every scenario needs: a collector, an agent reporting to it,
/// and where SQLite keeps its file.
struct Setup {
    collector: TestCollector,
    agent: Agent,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let collector = TestCollector::start().await;
        let agent = collector.agent("pools");
        Setup {
            collector,
            agent,
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    fn builder<DB: Database>(&self, name: &str) -> PoolInstrumentation<DB> {
        InstrumentedPool::builder(&self.agent, name)
    }

    fn sqlite(&self) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(self._dir.path().join("test.sqlite"))
            .create_if_missing(true)
    }
}

/// Turns the health check off: most scenarios look at checkouts only.
fn quiet<DB: Database>(builder: PoolInstrumentation<DB>) -> PoolInstrumentation<DB> {
    builder.without_health_check()
}

/// Health checks every [`FAST_CHECKS`].
fn pinged<DB: Database>(builder: PoolInstrumentation<DB>) -> PoolInstrumentation<DB> {
    builder.health_check_interval(FAST_CHECKS)
}

async fn postgres(
    setup: &Setup,
    name: &str,
    options: PgPoolOptions,
    configure: impl FnOnce(PoolInstrumentation<Postgres>) -> PoolInstrumentation<Postgres>,
) -> Option<InstrumentedPool<Postgres>> {
    let url = database_url(POSTGRES_URL)?;
    let pool = configure(setup.builder(name)).connect(options, &url).await;
    Some(pool.expect("PostgreSQL is reachable at QUERYPULSE_TEST_POSTGRES_URL"))
}

async fn mysql(
    setup: &Setup,
    name: &str,
    options: MySqlPoolOptions,
    configure: impl FnOnce(PoolInstrumentation<MySql>) -> PoolInstrumentation<MySql>,
) -> Option<InstrumentedPool<MySql>> {
    let url = database_url(MYSQL_URL)?;
    let pool = configure(setup.builder(name)).connect(options, &url).await;
    Some(pool.expect("MariaDB/MySQL is reachable at QUERYPULSE_TEST_MYSQL_URL"))
}

async fn sqlite(
    setup: &Setup,
    name: &str,
    options: SqlitePoolOptions,
    configure: impl FnOnce(PoolInstrumentation<Sqlite>) -> PoolInstrumentation<Sqlite>,
) -> InstrumentedPool<Sqlite> {
    let pool = configure(setup.builder(name))
        .connect_with(options, setup.sqlite())
        .await;
    pool.expect("SQLite opens a file in a temporary directory")
}

fn two_connections<DB: Database>() -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
}

fn one_connection_short_timeout<DB: Database>() -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(150))
}

// ---------------------------------------------------------------------------
// A pool of 2 connections, 10 tasks each holding one for 200 ms.

async fn ten_holders_drain_two_connections<DB: Database>(setup: Setup, pool: InstrumentedPool<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let holders: Vec<_> = (0..10)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.expect("a connection within the acquire timeout");
                conn.execute("SELECT 1").await.expect("SELECT 1 runs");
                // Holding the connection is the load under test.
                tokio::time::sleep(Duration::from_millis(200)).await;
            })
        })
        .collect();
    for holder in holders {
        holder.await.unwrap();
    }
    setup.agent.flush().await.expect("the window is acknowledged");

    let name = pool.monitor().name().to_owned();
    let stats = setup
        .collector
        .eventually("ten releases shipped", WAIT, |c| {
            c.pool(&name).filter(|p| p.releases == 10)
        })
        .await;
    assert_eq!(stats.max_size, 2);
    assert_eq!((stats.acquires, stats.releases), (10, 10));
    assert_eq!((stats.timeouts, stats.errors), (0, 0));
    assert!(
        stats.waiting.peak >= 1,
        "tasks queued for the two connections: {stats:?}"
    );
    assert_eq!(stats.in_use.peak, 2, "both connections were busy: {stats:?}");
    assert!(stats.size.peak <= 2);
    assert_eq!(
        stats.acquire_wait.count(),
        10,
        "every acquire's wait is in the histogram"
    );
    assert!(
        max_ms(&stats.acquire_wait) >= 500.0,
        "the last of 10 tasks on 2 connections waits for four rounds of 200 ms: {:?}",
        stats.acquire_wait
    );
    assert_eq!(stats.hold_time.count(), 10);
    assert!(
        stats.hold_time.quantile_us(0.0).unwrap() >= 195_000.0,
        "every hold lasted 200 ms"
    );
    assert!(
        (1..=2).contains(&stats.connections_created),
        "connections opened through the after_connect hook: {stats:?}"
    );
    assert_eq!(stats.leaks, 0, "leak detection is off by default");

    pool.close().await;
    setup.agent.flush().await.expect("the window is acknowledged");
    let closed = setup
        .collector
        .eventually("the closed connections shipped", WAIT, |c| {
            c.pool(&name).filter(|p| p.connections_closed > 0)
        })
        .await;
    assert_eq!(closed.connections_closed, closed.connections_created, "{closed:?}");
    assert_eq!((closed.size.last, closed.in_use.last, closed.waiting.last), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pool_of_two_runs_dry_under_ten_holders() {
    let setup = Setup::new().await;
    if let Some(pool) = postgres(&setup, "pg-dry", two_connections(), quiet).await {
        ten_holders_drain_two_connections(setup, pool).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_pool_of_two_runs_dry_under_ten_holders() {
    let setup = Setup::new().await;
    if let Some(pool) = mysql(&setup, "mysql-dry", two_connections(), quiet).await {
        ten_holders_drain_two_connections(setup, pool).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pool_of_two_runs_dry_under_ten_holders() {
    let setup = Setup::new().await;
    let pool = sqlite(&setup, "sqlite-dry", two_connections(), quiet).await;
    ten_holders_drain_two_connections(setup, pool).await;
}

// ---------------------------------------------------------------------------
// A short acquire timeout while the only connection is held.

async fn short_acquire_timeout_counts_timeouts<DB: Database>(setup: Setup, pool: InstrumentedPool<DB>)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::QueryResult: RowCount,
{
    const PROBE: &str = "SELECT 2 AS qp_pool_timeout_probe";
    let held = pool.acquire().await.expect("the only connection");
    let error = pool.acquire().await.expect_err("no connection is free");
    assert!(matches!(error, sqlx::Error::PoolTimedOut), "{error:?}");
    let Err(error) = pool
        .timed(PROBE, async {
            let mut conn = pool.acquire().await?;
            conn.execute(PROBE).await
        })
        .await
    else {
        panic!("the statement cannot get a connection");
    };
    assert_eq!(error_class(&error).as_str(), "pool_timeout");
    drop(held);
    setup.agent.flush().await.expect("the window is acknowledged");

    let name = pool.monitor().name().to_owned();
    let stats = setup
        .collector
        .eventually("two timeouts shipped", WAIT, |c| {
            c.pool(&name).filter(|p| p.timeouts == 2)
        })
        .await;
    assert_eq!((stats.acquires, stats.releases, stats.errors), (1, 1, 0));
    assert_eq!(stats.waiting.peak, 1);
    assert_eq!(
        stats.acquire_wait.count(),
        1,
        "only successful acquires are in the wait histogram"
    );
    let (_, query) = setup
        .collector
        .query("qp_pool_timeout_probe")
        .expect("the statement is recorded");
    assert_eq!((query.calls, query.errors), (1, 1));
    assert_eq!(query.error_classes[0].class, "pool_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_short_acquire_timeout_is_counted() {
    let setup = Setup::new().await;
    if let Some(pool) = postgres(&setup, "pg-timeout", one_connection_short_timeout(), quiet).await {
        short_acquire_timeout_counts_timeouts(setup, pool).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_short_acquire_timeout_is_counted() {
    let setup = Setup::new().await;
    if let Some(pool) = mysql(&setup, "mysql-timeout", one_connection_short_timeout(), quiet).await {
        short_acquire_timeout_counts_timeouts(setup, pool).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_short_acquire_timeout_is_counted() {
    let setup = Setup::new().await;
    let pool = sqlite(&setup, "sqlite-timeout", one_connection_short_timeout(), quiet).await;
    short_acquire_timeout_counts_timeouts(setup, pool).await;
}

// ---------------------------------------------------------------------------
// A unique violation is counted under its SQLSTATE.

async fn unique_violation_is_counted_under<DB: Database>(setup: Setup, pool: InstrumentedPool<DB>, sqlstate: &str)
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::QueryResult: RowCount,
{
    let table = unique_name("qp_unique");
    // A temporary table lives in this one session: parallel runs never meet.
    let mut conn = pool.acquire().await.expect("a connection");
    conn.execute(AssertSqlSafe(format!(
        "CREATE TEMPORARY TABLE {table} (id INTEGER PRIMARY KEY)"
    )))
    .await
    .expect("create a temporary table");
    let insert = format!("INSERT INTO {table} (id) VALUES (1)");
    let done = pool
        .timed(&insert, conn.execute(AssertSqlSafe(insert.clone())))
        .await
        .expect("the first insert succeeds");
    assert_eq!(done.row_count(), 1);
    let Err(error) = pool.timed(&insert, conn.execute(AssertSqlSafe(insert.clone()))).await else {
        panic!("the second insert violates the key");
    };
    assert_eq!(error_class(&error).as_str(), sqlstate, "{error}");
    drop(conn);
    setup.agent.flush().await.expect("the window is acknowledged");

    let (text, query) = setup
        .collector
        .eventually("the insert's statistics", WAIT, |c| {
            c.query(&table).filter(|(_, q)| q.calls == 2)
        })
        .await;
    assert!(!text.contains("(1)"), "literals never leave the process: {text}");
    assert_eq!((query.calls, query.errors, query.rows), (2, 1, 1));
    assert_eq!(query.error_classes.len(), 1);
    assert_eq!(query.error_classes[0].class, sqlstate);
    assert_eq!(query.error_classes[0].count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unique_violation_is_counted_under_23505() {
    let setup = Setup::new().await;
    if let Some(pool) = postgres(&setup, "pg-unique", two_connections(), quiet).await {
        unique_violation_is_counted_under(setup, pool, "23505").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_unique_violation_is_counted_under_23000() {
    let setup = Setup::new().await;
    if let Some(pool) = mysql(&setup, "mysql-unique", two_connections(), quiet).await {
        unique_violation_is_counted_under(setup, pool, "23000").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_unique_violation_is_counted_under_23505() {
    let setup = Setup::new().await;
    let pool = sqlite(&setup, "sqlite-unique", two_connections(), quiet).await;
    unique_violation_is_counted_under(setup, pool, "23505").await;
}

// ---------------------------------------------------------------------------
// Health checks.

const FAST_CHECKS: Duration = Duration::from_millis(100);

impl Setup {
    /// Closes a window at every poll (the pinger fills them) until the
    /// health checks of pool `name` shipped so far satisfy `done`.
    async fn shipped_health(&self, name: &str, done: impl Fn(&HealthCheckStats) -> bool) -> HealthCheckStats {
        self.collector
            .eventually(&format!("health checks of {name}"), WAIT, |c| {
                let agent = self.agent.clone();
                tokio::spawn(async move { agent.flush().await });
                c.health(name).filter(|h| done(h))
            })
            .await
    }
}

async fn health_reports_an_unreachable_database<DB: Database>(setup: Setup, pool: InstrumentedPool<DB>) {
    let health = setup.shipped_health(pool.monitor().name(), |h| h.failures >= 1).await;
    assert!(!health.last_ok, "{health:?}");
    assert!(!health.last_error.is_empty(), "the error says what failed: {health:?}");
    assert_eq!(health.failures, health.checks, "no check can succeed: {health:?}");
    assert_eq!(health.latency.count(), health.checks);
    pool.close().await;
}

fn unreachable<DB: Database>() -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_health_check_fails_against_a_closed_port() {
    let setup = Setup::new().await;
    let connect = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(closed_port())
        .username("postgres")
        .database("test");
    let pool = pinged(setup.builder::<Postgres>("pg-down")).connect_lazy_with(unreachable(), connect);
    health_reports_an_unreachable_database(setup, pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_health_check_fails_against_a_closed_port() {
    let setup = Setup::new().await;
    let connect = MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(closed_port())
        .username("root")
        .database("test");
    let pool = pinged(setup.builder::<MySql>("mysql-down")).connect_lazy_with(unreachable(), connect);
    health_reports_an_unreachable_database(setup, pool).await;
}

async fn health_reports_a_reachable_database<DB: Database>(setup: Setup, pool: InstrumentedPool<DB>) {
    let health = setup.shipped_health(pool.monitor().name(), |h| h.checks >= 2).await;
    assert!(health.last_ok, "{health:?}");
    assert_eq!(health.failures, 0, "{health:?}");
    assert!(health.last_check_ms > 0);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_health_check_passes_on_a_live_database() {
    let setup = Setup::new().await;
    if let Some(pool) = postgres(&setup, "pg-up", two_connections(), pinged).await {
        health_reports_a_reachable_database(setup, pool).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_health_check_passes_on_a_live_database() {
    let setup = Setup::new().await;
    if let Some(pool) = mysql(&setup, "mysql-up", two_connections(), pinged).await {
        health_reports_a_reachable_database(setup, pool).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_health_check_passes_on_a_live_database() {
    let setup = Setup::new().await;
    let pool = sqlite(&setup, "sqlite-up", two_connections(), pinged).await;
    health_reports_a_reachable_database(setup, pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_health_check_replaces_select_one() {
    let setup = Setup::new().await;
    let pool = sqlite(&setup, "sqlite-custom", two_connections(), |builder| {
        pinged(builder).health_check(|pool: sqlx::SqlitePool| async move {
            let behind: i64 = sqlx::query_scalar("SELECT 40").fetch_one(&pool).await?;
            Err::<(), BoxError>(format!("replica is {behind} s behind").into())
        })
    })
    .await;
    let health = setup.shipped_health("sqlite-custom", |h| h.failures >= 1).await;
    assert_eq!(health.last_error, "replica is 40 s behind");
    pool.close().await;
}

// ---------------------------------------------------------------------------
// Leaks.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_held_past_the_leak_threshold_is_reported_once() {
    let setup = Setup::new().await;
    let pool = sqlite(&setup, "sqlite-leak", two_connections(), |builder| {
        quiet(builder).leak_threshold(Duration::from_millis(50))
    })
    .await;
    let quick = pool.acquire().await.unwrap();
    drop(quick);
    let leaked = pool.acquire().await.unwrap();
    // Holding it past the threshold is the behaviour under test.
    tokio::time::sleep(Duration::from_millis(120)).await;
    setup.agent.flush().await.expect("the window is acknowledged");
    drop(leaked);
    setup.agent.flush().await.expect("the window is acknowledged");

    let stats = setup
        .collector
        .eventually("both releases shipped", WAIT, |c| {
            c.pool("sqlite-leak").filter(|p| p.releases == 2)
        })
        .await;
    assert_eq!(stats.leaks, 1, "reported while held, not again at release: {stats:?}");
    assert_eq!(stats.leak_threshold_ms, 50);
    assert_eq!(stats.leak_samples.len(), 1);
    assert!(stats.leak_samples[0].held_ms >= 50, "{:?}", stats.leak_samples);
    assert!(stats.leak_samples[0].acquired_at_ms > 0);
}
