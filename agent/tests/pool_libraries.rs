//! deadpool and bb8 pools of real SQLite connections, watched through their
//! status / state APIs, asserted on what the agent ships.

mod support;

use std::time::Duration;

use querypulse_agent::DbSystem;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use support::TestCollector;

const WAIT: Duration = Duration::from_secs(20);

/// Opens SQLite connections to one file, for either pool library.
#[derive(Debug, Clone)]
struct Sqlite(SqliteConnectOptions);

impl Sqlite {
    fn in_dir(dir: &tempfile::TempDir) -> Sqlite {
        Sqlite(
            SqliteConnectOptions::new()
                .filename(dir.path().join("pool.sqlite"))
                .create_if_missing(true),
        )
    }
}

impl deadpool::managed::Manager for Sqlite {
    type Type = SqliteConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<SqliteConnection, sqlx::Error> {
        SqliteConnection::connect_with(&self.0).await
    }

    async fn recycle(
        &self,
        conn: &mut SqliteConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<sqlx::Error> {
        Ok(conn.ping().await?)
    }
}

impl bb8::ManageConnection for Sqlite {
    type Connection = SqliteConnection;
    type Error = sqlx::Error;

    async fn connect(&self) -> Result<SqliteConnection, sqlx::Error> {
        SqliteConnection::connect_with(&self.0).await
    }

    async fn is_valid(&self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        conn.ping().await
    }

    fn has_broken(&self, _: &mut SqliteConnection) -> bool {
        false
    }
}

/// Polls until `ready` holds, for at most `WAIT`.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_gauges_show_a_pool_running_dry() {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start().await;
    let agent = collector.agent("deadpool");
    let pool = deadpool::managed::Pool::<Sqlite>::builder(Sqlite::in_dir(&dir))
        .max_size(2)
        .build()
        .unwrap();
    let watch = querypulse_agent::deadpool::watch(&agent, "dp", DbSystem::Sqlite, &pool);

    let first = pool.get().await.unwrap();
    let second = pool.get().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { drop(pool.get().await.unwrap()) }
    });
    until("a task waiting for the pool", || pool.status().waiting == 1).await;
    assert!(watch.monitor().sample(), "the pool is alive");
    drop((first, second));
    waiter.await.unwrap();
    agent.flush().await.expect("the window is acknowledged");

    let stats = collector.eventually("the pool's window", WAIT, |c| c.pool("dp")).await;
    assert_eq!(stats.db_system, DbSystem::Sqlite);
    assert_eq!(stats.max_size, 2);
    assert_eq!(stats.waiting.peak, 1, "{stats:?}");
    assert_eq!(stats.in_use.peak, 2, "{stats:?}");
    assert_eq!(stats.size.peak, 2);
    assert_eq!(stats.in_use.last, 0, "everything was returned: {stats:?}");
    assert_eq!(stats.idle.last, 2);

    drop(pool);
    assert!(!watch.monitor().sample(), "a dropped pool is noticed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_counters_and_gauges_come_from_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start().await;
    let agent = collector.agent("bb8");
    let pool = bb8::Pool::builder()
        .max_size(2)
        .connection_timeout(Duration::from_millis(200))
        .build(Sqlite::in_dir(&dir))
        .await
        .unwrap();
    let watch = querypulse_agent::bb8::watch(&agent, "b8", DbSystem::Sqlite, &pool);

    let first = pool.get().await.unwrap();
    let second = pool.get().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(drop) }
    });
    until("a task waiting for the pool", || {
        pool.state().statistics.pending_gets() == 1
    })
    .await;
    assert!(watch.monitor().sample());
    assert!(
        waiter.await.unwrap().is_err(),
        "both connections stay busy past the timeout"
    );
    drop((first, second));
    drop(pool.get().await.unwrap());
    agent.flush().await.expect("the window is acknowledged");

    let stats = collector.eventually("the pool's window", WAIT, |c| c.pool("b8")).await;
    assert_eq!(stats.max_size, 2);
    assert_eq!(stats.acquires, 3, "{stats:?}");
    assert_eq!(stats.timeouts, 1, "{stats:?}");
    assert_eq!(stats.connections_created, 2, "{stats:?}");
    assert_eq!(stats.waiting.peak, 1, "{stats:?}");
    assert_eq!(stats.in_use.peak, 2, "{stats:?}");
    assert_eq!((stats.size.last, stats.in_use.last), (2, 0));
}
