//! sqlx integration (feature `sqlx`, with `sqlx-postgres`, `sqlx-mysql` and
//! `sqlx-sqlite` for the drivers): an instrumented [`Pool`], health pings, and
//! the error class of an [`sqlx::Error`].
//!
//! [`InstrumentedPool::builder`] installs `after_connect`, `before_acquire`
//! and `after_release` hooks on the pool's options (connections opened, and
//! the size / idle / in-use gauges refreshed at every checkout and return,
//! whichever way the pool is used), and the [`InstrumentedPool`] it returns
//! times every acquire: tasks waiting, the acquire-wait and hold-time
//! histograms, timeouts, errors and connections held past the leak threshold.
//! A background task runs a health check (`SELECT 1` every 30 s by default).
//!
//! Statements are timed with [`InstrumentedPool::timed`] or [`timed`], which
//! record the error class that sqlx's own `sqlx::query` events do not carry.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ::sqlx::error::DatabaseError;
use ::sqlx::pool::{PoolConnection, PoolOptions};
use ::sqlx::{Connection, Database, Error, Executor, Pool};
use querypulse_proto::DbSystem;
use tokio::task::JoinHandle;

use crate::pool::{DEFAULT_HEALTH_CHECK_INTERVAL, DEFAULT_HEALTH_CHECK_TIMEOUT, PoolMonitor, PoolSample, PoolTotals};
use crate::{Agent, ErrorClass, Outcome};

/// The error a custom health check may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
type HealthCheck<DB> = Arc<dyn Fn(Pool<DB>) -> CheckFuture + Send + Sync>;

/// The class querypulse records for an sqlx error.
///
/// - PostgreSQL and MySQL/MariaDB errors: their SQLSTATE (`23505`, `23000`, …);
///   MySQL's and MariaDB's statement timeouts (errors 3024 and 1969):
///   `timeout`.
/// - SQLite errors: the SQLSTATE a PostgreSQL user would recognize for
///   constraint violations (`23505` unique, `23503` foreign key, `23502` not
///   null, `23514` check); "database is locked" after the busy timeout:
///   `timeout`; anything else: `other`.
/// - `pool_timeout` for [`Error::PoolTimedOut`], `timeout` for an I/O
///   timeout, `io` for other I/O and TLS errors, `other` for the rest.
pub fn error_class(error: &Error) -> ErrorClass {
    match error {
        Error::Database(db) => database_error_class(db.as_ref()),
        Error::PoolTimedOut => ErrorClass::PoolTimeout,
        Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ErrorClass::Timeout,
        Error::Io(_) | Error::Tls(_) => ErrorClass::Io,
        _ => ErrorClass::Other,
    }
}

fn database_error_class(error: &dyn DatabaseError) -> ErrorClass {
    #[cfg(feature = "sqlx-sqlite")]
    if error.try_downcast_ref::<::sqlx::sqlite::SqliteError>().is_some() {
        return sqlite_error_class(error);
    }
    #[cfg(feature = "sqlx-mysql")]
    if let Some(mysql) = error.try_downcast_ref::<::sqlx::mysql::MySqlDatabaseError>() {
        // ER_QUERY_TIMEOUT (MySQL) and ER_STATEMENT_TIMEOUT (MariaDB) carry
        // the catch-all SQLSTATE HY000.
        if matches!(mysql.number(), 3024 | 1969) {
            return ErrorClass::Timeout;
        }
    }
    error
        .code()
        .map_or(ErrorClass::Other, |code| ErrorClass::sqlstate(&code))
}

/// SQLite reports its own result codes, never a SQLSTATE.
#[cfg(feature = "sqlx-sqlite")]
fn sqlite_error_class(error: &dyn DatabaseError) -> ErrorClass {
    /// SQLITE_BUSY; its extended codes keep it in the low byte.
    const SQLITE_BUSY: i32 = 5;
    use ::sqlx::error::ErrorKind;
    match error.kind() {
        ErrorKind::UniqueViolation => ErrorClass::sqlstate("23505"),
        ErrorKind::ForeignKeyViolation => ErrorClass::sqlstate("23503"),
        ErrorKind::NotNullViolation => ErrorClass::sqlstate("23502"),
        ErrorKind::CheckViolation => ErrorClass::sqlstate("23514"),
        _ => match error.code().and_then(|code| code.parse::<i32>().ok()) {
            Some(code) if code & 0xff == SQLITE_BUSY => ErrorClass::Timeout,
            _ => ErrorClass::Other,
        },
    }
}

/// How many rows a query's result returned or affected, for the row counts
/// querypulse keeps per statement. Implement it for your own result types.
pub trait RowCount {
    /// Rows returned or affected.
    fn row_count(&self) -> u64;
}

impl<T> RowCount for Vec<T> {
    fn row_count(&self) -> u64 {
        self.len() as u64
    }
}

impl<T> RowCount for Option<T> {
    fn row_count(&self) -> u64 {
        u64::from(self.is_some())
    }
}

/// A row count already taken (`rows.len()`, `done.rows_affected()`).
impl RowCount for u64 {
    fn row_count(&self) -> u64 {
        *self
    }
}

impl RowCount for () {
    fn row_count(&self) -> u64 {
        0
    }
}

macro_rules! row_count_of_query_results {
    ($($feature:literal => $result:ty, $row:ty;)*) => {$(
        #[cfg(feature = $feature)]
        impl RowCount for $result {
            fn row_count(&self) -> u64 {
                self.rows_affected()
            }
        }

        #[cfg(feature = $feature)]
        impl RowCount for $row {
            fn row_count(&self) -> u64 {
                1
            }
        }
    )*};
}

row_count_of_query_results! {
    "sqlx-postgres" => ::sqlx::postgres::PgQueryResult, ::sqlx::postgres::PgRow;
    "sqlx-mysql" => ::sqlx::mysql::MySqlQueryResult, ::sqlx::mysql::MySqlRow;
    "sqlx-sqlite" => ::sqlx::sqlite::SqliteQueryResult, ::sqlx::sqlite::SqliteRow;
}

/// Runs `query` (an sqlx future such as `sqlx::query(SQL).execute(&pool)`),
/// and records `sql` with its latency, row count and, when it fails, its
/// [`error_class`].
///
/// ```no_run
/// # async fn run(agent: querypulse_agent::Agent, pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
/// const SQL: &str = "UPDATE orders SET status = 'paid' WHERE id = $1";
/// let done = querypulse_agent::sqlx::timed(&agent, SQL, sqlx::query(SQL).bind(42).execute(&pool)).await?;
/// # Ok(())
/// # }
/// ```
pub async fn timed<T: RowCount>(
    agent: &Agent,
    sql: &str,
    query: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    run_timed(agent, None, sql, query).await
}

async fn run_timed<T: RowCount>(
    agent: &Agent,
    pool: Option<&str>,
    sql: &str,
    query: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let started = Instant::now();
    let result = query.await;
    let elapsed = started.elapsed();
    let outcome = match &result {
        Ok(value) => Outcome::rows(value.row_count()),
        Err(error) => Outcome::Error(error_class(error)),
    };
    match pool {
        Some(pool) => agent.record_query_on(pool, sql, elapsed, outcome),
        None => agent.record_query(sql, elapsed, outcome),
    }
    result
}

fn db_system_of<DB: Database>() -> DbSystem {
    match DB::NAME {
        "PostgreSQL" => DbSystem::Postgresql,
        "MySQL" => DbSystem::Mysql,
        "SQLite" => DbSystem::Sqlite,
        _ => DbSystem::Other,
    }
}

/// Configures how an sqlx pool is watched; see [`InstrumentedPool::builder`].
pub struct PoolInstrumentation<DB: Database> {
    agent: Agent,
    name: String,
    db_system: DbSystem,
    leak_threshold: Option<Duration>,
    health_interval: Option<Duration>,
    health_timeout: Duration,
    health_check: Option<HealthCheck<DB>>,
    /// Connections opened, counted by the `after_connect` hook; `None` until
    /// the hooks are installed.
    opened: Option<Arc<AtomicU64>>,
    monitor: Option<PoolMonitor>,
}

impl<DB: Database> std::fmt::Debug for PoolInstrumentation<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolInstrumentation")
            .field("name", &self.name)
            .field("db_system", &self.db_system)
            .field("leak_threshold", &self.leak_threshold)
            .field("health_interval", &self.health_interval)
            .field("health_timeout", &self.health_timeout)
            .field("custom_health_check", &self.health_check.is_some())
            .finish_non_exhaustive()
    }
}

impl<DB: Database> PoolInstrumentation<DB> {
    /// Reports the engine as `system` instead of the one sqlx names (use
    /// [`DbSystem::Mariadb`] for a MariaDB server behind sqlx's MySQL driver).
    pub fn db_system(mut self, system: DbSystem) -> Self {
        self.db_system = system;
        self
    }

    /// Reports connections held longer than `threshold` as leaks (off by
    /// default). See [`PoolMonitor::set_leak_threshold`].
    pub fn leak_threshold(mut self, threshold: Duration) -> Self {
        self.leak_threshold = Some(threshold);
        self
    }

    /// How often the health check runs (default
    /// [`DEFAULT_HEALTH_CHECK_INTERVAL`], 30 s); the first runs right away.
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.health_interval = Some(interval);
        self
    }

    /// How long one health check may take before it counts as failed
    /// (default [`DEFAULT_HEALTH_CHECK_TIMEOUT`], 5 s).
    pub fn health_check_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// Replaces the default health check (`SELECT 1` on a pooled connection)
    /// with `check`, which gets the raw pool.
    ///
    /// ```no_run
    /// # async fn run(agent: querypulse_agent::Agent) -> Result<(), sqlx::Error> {
    /// use querypulse_agent::sqlx::{BoxError, InstrumentedPool};
    ///
    /// let pool = InstrumentedPool::builder(&agent, "main")
    ///     .health_check(|pool: sqlx::PgPool| async move {
    ///         let lag: f64 = sqlx::query_scalar("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8")
    ///             .fetch_one(&pool)
    ///             .await?;
    ///         if lag > 30.0 {
    ///             return Err(format!("replica is {lag:.0} s behind").into());
    ///         }
    ///         Ok::<(), BoxError>(())
    ///     })
    ///     .connect(sqlx::postgres::PgPoolOptions::new(), "postgres://replica/app")
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn health_check<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn(Pool<DB>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.health_check = Some(Arc::new(move |pool| Box::pin(check(pool))));
        self
    }

    /// Turns health checks off.
    pub fn without_health_check(mut self) -> Self {
        self.health_interval = None;
        self
    }

    fn monitor(&mut self) -> PoolMonitor {
        let (agent, name, system) = (&self.agent, &self.name, self.db_system);
        self.monitor
            .get_or_insert_with(|| agent.pool_monitor(name, system))
            .clone()
    }

    /// Installs querypulse's `after_connect`, `before_acquire` and
    /// `after_release` hooks on `options`, replacing hooks set before. Call it
    /// when you build the pool yourself, then [`PoolInstrumentation::attach`]
    /// the pool. ([`PoolInstrumentation::connect`] does both.)
    pub fn install_hooks(&mut self, options: PoolOptions<DB>) -> PoolOptions<DB> {
        let monitor = self.monitor();
        let opened = self.opened.get_or_insert_with(Default::default).clone();
        let (on_acquire, on_release) = (monitor.clone(), monitor.clone());
        options
            .after_connect(move |_, _| {
                opened.fetch_add(1, Ordering::Relaxed);
                monitor.connection_created();
                monitor.sample();
                Box::pin(async { Ok(()) })
            })
            .before_acquire(move |_, _| {
                on_acquire.sample();
                Box::pin(async { Ok(true) })
            })
            .after_release(move |_, _| {
                on_release.sample();
                Box::pin(async { Ok(true) })
            })
    }
}

impl<DB: Database> PoolInstrumentation<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Instruments `pool` and starts its health check. Without
    /// [`PoolInstrumentation::install_hooks`] on its options, connections
    /// opened and closed are not counted and gauges are read only at acquire,
    /// release and the end of each window.
    pub fn attach(mut self, pool: Pool<DB>) -> InstrumentedPool<DB> {
        let monitor = self.monitor();
        monitor.set_leak_threshold(self.leak_threshold);
        let pinger = self.health_interval.map(|interval| {
            let check = self.health_check.clone().unwrap_or_else(|| Arc::new(select_one));
            spawn_pinger(pool.clone(), monitor.clone(), interval, self.health_timeout, check)
        });
        let shared = Arc::new(Shared {
            pool,
            monitor: monitor.clone(),
            agent: self.agent,
            pinger,
        });
        let weak: Weak<Shared<DB>> = Arc::downgrade(&shared);
        let opened = self.opened;
        monitor.set_probe(move || weak.upgrade().map(|shared| shared.sample(opened.as_deref())));
        monitor.sample();
        InstrumentedPool { shared }
    }

    /// Installs the hooks on `options`, connects to `url` and instruments the
    /// pool.
    pub async fn connect(mut self, options: PoolOptions<DB>, url: &str) -> Result<InstrumentedPool<DB>, Error> {
        let pool = self.install_hooks(options).connect(url).await?;
        Ok(self.attach(pool))
    }

    /// Like [`PoolInstrumentation::connect`] with connect options.
    pub async fn connect_with(
        mut self,
        options: PoolOptions<DB>,
        connect: <DB::Connection as Connection>::Options,
    ) -> Result<InstrumentedPool<DB>, Error> {
        let pool = self.install_hooks(options).connect_with(connect).await?;
        Ok(self.attach(pool))
    }

    /// Like [`PoolInstrumentation::connect_with`], opening connections only
    /// when they are first needed (the pool exists even while the database is
    /// down; the health check says so).
    pub fn connect_lazy_with(
        mut self,
        options: PoolOptions<DB>,
        connect: <DB::Connection as Connection>::Options,
    ) -> InstrumentedPool<DB> {
        let pool = self.install_hooks(options).connect_lazy_with(connect);
        self.attach(pool)
    }
}

fn select_one<DB: Database>(pool: Pool<DB>) -> CheckFuture
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    Box::pin(async move {
        let mut conn = pool.acquire().await?;
        conn.execute("SELECT 1").await?;
        Ok(())
    })
}

fn spawn_pinger<DB: Database>(
    pool: Pool<DB>,
    monitor: PoolMonitor,
    interval: Duration,
    timeout: Duration,
    check: HealthCheck<DB>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if pool.is_closed() {
                return;
            }
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, check(pool.clone())).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("health check timed out after {timeout:?}")),
            };
            monitor.record_health_check(started.elapsed(), result.as_ref().map(|_| ()).map_err(String::as_str));
        }
    })
}

struct Shared<DB: Database> {
    pool: Pool<DB>,
    monitor: PoolMonitor,
    agent: Agent,
    pinger: Option<JoinHandle<()>>,
}

impl<DB: Database> Shared<DB> {
    fn sample(&self, opened: Option<&AtomicU64>) -> PoolSample {
        let size = self.pool.size();
        let options = self.pool.options();
        PoolSample {
            size,
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            waiting: None,
            max_size: options.get_max_connections(),
            min_idle: options.get_min_connections(),
            totals: PoolTotals {
                // Every connection ever opened is either still open or closed.
                // sqlx counts a connection in `size` while it is being opened,
                // so this can lag; the monitor never counts a total twice.
                connections_closed: opened.map(|opened| opened.load(Ordering::Relaxed).saturating_sub(u64::from(size))),
                ..PoolTotals::default()
            },
        }
    }
}

impl<DB: Database> Drop for Shared<DB> {
    fn drop(&mut self) {
        if let Some(pinger) = &self.pinger {
            pinger.abort();
        }
    }
}

/// An sqlx [`Pool`] whose checkouts, waits, hold times, timeouts, leaks and
/// health querypulse records. Cheap to clone; clones share the pool.
///
/// Acquire connections through [`InstrumentedPool::acquire`] (a `&mut *conn`
/// is an sqlx executor, and `conn.begin()` starts a transaction). Code that
/// needs the plain [`Pool`] gets it from [`InstrumentedPool::pool`]; its
/// checkouts still move the gauges, but their waits and hold times are not
/// recorded.
///
/// ```no_run
/// # async fn run(agent: querypulse_agent::Agent) -> Result<(), sqlx::Error> {
/// use std::time::Duration;
/// use querypulse_agent::sqlx::InstrumentedPool;
/// use sqlx::postgres::PgPoolOptions;
///
/// let pool = InstrumentedPool::builder(&agent, "main")
///     .leak_threshold(Duration::from_secs(30))
///     .connect(PgPoolOptions::new().max_connections(10), "postgres://localhost/app")
///     .await?;
///
/// const SQL: &str = "SELECT id, total FROM orders WHERE customer_id = $1";
/// let mut conn = pool.acquire().await?;
/// let rows = pool.timed(SQL, sqlx::query(SQL).bind(17).fetch_all(&mut *conn)).await?;
/// # Ok(())
/// # }
/// ```
pub struct InstrumentedPool<DB: Database> {
    shared: Arc<Shared<DB>>,
}

impl<DB: Database> Clone for InstrumentedPool<DB> {
    fn clone(&self) -> Self {
        InstrumentedPool {
            shared: self.shared.clone(),
        }
    }
}

impl<DB: Database> std::fmt::Debug for InstrumentedPool<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstrumentedPool")
            .field("name", &self.shared.monitor.name())
            .field("pool", &self.shared.pool)
            .finish()
    }
}

impl<DB: Database> InstrumentedPool<DB> {
    /// Starts instrumenting a pool called `name` for `agent`. Finish with
    /// [`PoolInstrumentation::connect`] (or `connect_with`,
    /// `connect_lazy_with`, or `install_hooks` + `attach`).
    pub fn builder(agent: &Agent, name: impl Into<String>) -> PoolInstrumentation<DB> {
        PoolInstrumentation {
            agent: agent.clone(),
            name: name.into(),
            db_system: db_system_of::<DB>(),
            leak_threshold: None,
            health_interval: Some(DEFAULT_HEALTH_CHECK_INTERVAL),
            health_timeout: DEFAULT_HEALTH_CHECK_TIMEOUT,
            health_check: None,
            opened: None,
            monitor: None,
        }
    }

    /// Checks a connection out, recording how long the task waited (and
    /// counting it as waiting meanwhile), a timeout as `timeouts`, any other
    /// failure as `errors`. The connection's hold time is recorded when it is
    /// dropped.
    pub async fn acquire(&self) -> Result<PooledConnection<DB>, Error> {
        let pending = self.shared.monitor.begin_acquire();
        match self.shared.pool.acquire().await {
            Ok(conn) => Ok(PooledConnection {
                conn,
                checkout: pending.acquired(),
            }),
            Err(error @ Error::PoolTimedOut) => {
                pending.timed_out();
                Err(error)
            }
            Err(error) => {
                pending.failed();
                Err(error)
            }
        }
    }

    /// Runs `query` and records `sql` on this pool with its latency, row count
    /// and error class; see [`timed`].
    pub async fn timed<T: RowCount>(
        &self,
        sql: &str,
        query: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        run_timed(&self.shared.agent, Some(self.shared.monitor.name()), sql, query).await
    }

    /// The plain sqlx pool, for code that needs one (migrations, libraries).
    pub fn pool(&self) -> &Pool<DB> {
        &self.shared.pool
    }

    /// The monitor this pool records into.
    pub fn monitor(&self) -> &PoolMonitor {
        &self.shared.monitor
    }

    /// Closes the pool (see [`Pool::close`]) and stops its health check.
    pub async fn close(&self) {
        if let Some(pinger) = &self.shared.pinger {
            pinger.abort();
        }
        self.shared.pool.close().await;
        self.shared.monitor.sample();
    }
}

/// A connection checked out of an [`InstrumentedPool`]; it dereferences to
/// the driver's connection, and returns to the pool when dropped.
pub struct PooledConnection<DB: Database> {
    // Declared first so the connection is handed back before the release is
    // recorded.
    conn: PoolConnection<DB>,
    checkout: crate::pool::Checkout,
}

impl<DB: Database> std::fmt::Debug for PooledConnection<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConnection")
            .field("held_for", &self.checkout.held_for())
            .finish_non_exhaustive()
    }
}

impl<DB: Database> PooledConnection<DB> {
    /// How long the connection has been held so far.
    pub fn held_for(&self) -> Duration {
        self.checkout.held_for()
    }
}

impl<DB: Database> Deref for PooledConnection<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: Database> DerefMut for PooledConnection<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}

impl<DB: Database> AsMut<DB::Connection> for PooledConnection<DB> {
    fn as_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn pool_and_io_errors_have_coarse_classes() {
        assert_eq!(error_class(&Error::PoolTimedOut), ErrorClass::PoolTimeout);
        let io = |kind| Error::Io(io::Error::new(kind, "network"));
        assert_eq!(error_class(&io(io::ErrorKind::TimedOut)), ErrorClass::Timeout);
        assert_eq!(error_class(&io(io::ErrorKind::ConnectionReset)), ErrorClass::Io);
        assert_eq!(error_class(&Error::RowNotFound), ErrorClass::Other);
    }

    #[cfg(feature = "sqlx-sqlite")]
    #[tokio::test]
    async fn sqlite_errors_map_to_the_sqlstates_postgres_users_know() {
        use ::sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("classes.sqlite"))
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
        conn.execute(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER NOT NULL REFERENCES parent (id),
                                 qty INTEGER CHECK (qty > 0));
             INSERT INTO parent (id) VALUES (1);
             INSERT INTO child (id, parent, qty) VALUES (1, 1, 1);",
        )
        .await
        .unwrap();
        let class = |result: Result<_, Error>| error_class(&result.unwrap_err()).to_string();
        let cases = [
            ("INSERT INTO child (id, parent, qty) VALUES (1, 1, 1)", "23505"),
            ("INSERT INTO child (id, parent, qty) VALUES (2, 7, 1)", "23503"),
            ("INSERT INTO child (id, parent, qty) VALUES (3, NULL, 1)", "23502"),
            ("INSERT INTO child (id, parent, qty) VALUES (4, 1, 0)", "23514"),
            ("SELECT * FROM no_such_table", "other"),
        ];
        for (sql, expected) in cases {
            assert_eq!(class(conn.execute(sql).await), expected, "{sql}");
        }

        // Another connection holds the write lock past the busy timeout.
        let mut holder = SqliteConnection::connect_with(&options).await.unwrap();
        holder.execute("BEGIN EXCLUSIVE").await.unwrap();
        assert_eq!(
            class(conn.execute("INSERT INTO parent (id) VALUES (2)").await),
            "timeout"
        );
    }
}
