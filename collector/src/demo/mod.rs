//! `querypulse demo`: a collector plus simulated services whose agents drive
//! real SQLite pools (sqlx, instrumented by the agent: pool statistics and
//! health checks included) with a realistic mix of fast and slow statements
//! and some failures, so a newcomer sees a live dashboard with one command.
//! Before the dashboard URL is printed, seven days of simulated history for
//! the same services go through the real ingest path ([`history`]).

mod history;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use querypulse_agent::sqlx::InstrumentedPool;
use querypulse_agent::{Agent, DbSystem};
use rand::Rng;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, Sqlite};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Collector, CollectorError, Config};

use history::HISTORY;

/// Aggregation interval of the simulated agents: short, so the dashboard
/// fills within seconds.
pub const DEMO_INTERVAL: Duration = Duration::from_secs(5);
/// Concurrent workers per simulated instance.
const WORKERS: usize = 4;
/// Connections per simulated pool: fewer than workers, so the pool runs dry
/// now and then.
const POOL_SIZE: u32 = 3;

/// The simulated instances: (service, instance number).
const INSTANCES: [(&str, u32); 3] = [("checkout", 1), ("checkout", 2), ("inventory", 1)];

/// A running demo.
#[derive(Debug)]
pub struct Demo {
    collector: Collector,
    instances: Vec<Simulated>,
    stop: watch::Sender<bool>,
}

#[derive(Debug)]
struct Simulated {
    agent: Agent,
    pool: InstrumentedPool<Sqlite>,
    workers: Vec<JoinHandle<()>>,
}

impl Demo {
    /// Starts the collector with `config` and the simulated services, and
    /// writes their seven days of history (raw retention is raised to cover
    /// it).
    pub async fn start(mut config: Config) -> Result<Demo, CollectorError> {
        let data_dir = config.data_dir.clone();
        let history_seconds = HISTORY.as_secs() + 86_400;
        config.retention.raw_seconds = config.retention.raw_seconds.max(history_seconds);
        config.retention.minute_seconds = config.retention.minute_seconds.max(history_seconds);
        let collector = Collector::start(config).await?;
        let endpoint = format!("http://{}", collector.grpc_addr());
        let (stop, stopped) = watch::channel(false);
        let mut instances = Vec::new();
        for (service, number) in INSTANCES {
            let db = data_dir.join(format!("demo-{service}-{number}.sqlite"));
            let instance = Simulated::start(service, &db, &endpoint, stopped.clone())
                .await
                .map_err(|e| CollectorError::Serve(format!("cannot start simulated {service}: {e}")))?;
            instances.push(instance);
        }
        let history: Vec<history::Instance<'_>> = INSTANCES
            .iter()
            .zip(&instances)
            .map(|(&(service, number), live)| history::Instance {
                service,
                number,
                host: live.agent.host(),
                mix: mix(service),
            })
            .collect();
        let started = std::time::Instant::now();
        match history::write(&endpoint, &history).await {
            Ok(windows) => tracing::info!(windows, elapsed = ?started.elapsed(), "wrote the demo's history"),
            // The live demo works without it.
            Err(error) => tracing::warn!(%error, "the demo runs without its history"),
        }
        Ok(Demo {
            collector,
            instances,
            stop,
        })
    }

    /// The collector behind the demo.
    pub fn collector(&self) -> &Collector {
        &self.collector
    }

    /// Stops the simulated services (their agents ship their last window),
    /// then the collector.
    pub async fn shutdown(self) -> Result<(), CollectorError> {
        let _ = self.stop.send(true);
        for instance in self.instances {
            for worker in instance.workers {
                let _ = worker.await;
            }
            if let Err(error) = instance.agent.shutdown().await {
                tracing::warn!(%error, "a simulated agent did not finish cleanly");
            }
            instance.pool.close().await;
        }
        self.collector.shutdown().await
    }
}

impl Simulated {
    async fn start(
        service: &str,
        db: &Path,
        endpoint: &str,
        stopped: watch::Receiver<bool>,
    ) -> Result<Simulated, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(2));
        let agent = Agent::builder(service)
            .endpoint(endpoint)
            .db_system(DbSystem::Sqlite)
            .interval(DEMO_INTERVAL)
            .slow_threshold(Duration::from_millis(250))
            .label("demo", "true")
            .start()
            .map_err(|e| sqlx::Error::Configuration(Box::new(e)))?;
        let pool_options = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_millis(750));
        let pool = InstrumentedPool::builder(&agent, "main")
            .health_check_interval(DEMO_INTERVAL)
            .leak_threshold(Duration::from_secs(2))
            .connect_with(pool_options, options)
            .await?;
        for statement in SCHEMA {
            pool.pool().execute(*statement).await?;
        }
        let workers = (0..WORKERS)
            .map(|_| tokio::spawn(work(pool.clone(), mix(service), stopped.clone())))
            .collect();
        Ok(Simulated { agent, pool, workers })
    }
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL, created_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, total_cents INTEGER NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at)",
    "CREATE TABLE IF NOT EXISTS products (sku TEXT PRIMARY KEY, title TEXT NOT NULL, stock INTEGER NOT NULL CHECK (stock >= 0))",
    "INSERT OR IGNORE INTO users (id, email, name, created_at) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) SELECT i, 'user' || i || '@example.com', 'User ' || i, 1700000000 + i FROM n",
    "INSERT OR IGNORE INTO orders (id, user_id, total_cents, status, created_at) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) SELECT i, 1 + i % 2000, 100 + (i * 7919) % 90000, CASE i % 3 WHEN 0 THEN 'new' WHEN 1 THEN 'paid' ELSE 'shipped' END, 1700000000 + i FROM n",
    "INSERT OR IGNORE INTO products (sku, title, stock) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) SELECT 'SKU-' || i, 'Product ' || i, 1000 FROM n",
];

/// A statement kind of the simulated workload and its relative weight.
#[derive(Debug, Clone, Copy)]
enum Statement {
    UserById,
    RecentOrders,
    PlaceOrder,
    PayOrder,
    StatusTotals,
    TopCustomers,
    DuplicateUser,
    MonthlyReport,
    ProductBySku,
    ReserveStock,
    OversellStock,
    LowStock,
    MissingTable,
}

type Mix = &'static [(Statement, u32)];

const CHECKOUT_MIX: Mix = &[
    (Statement::UserById, 400),
    (Statement::RecentOrders, 250),
    (Statement::PlaceOrder, 150),
    (Statement::PayOrder, 100),
    (Statement::StatusTotals, 40),
    (Statement::TopCustomers, 12),
    (Statement::DuplicateUser, 30),
    (Statement::MonthlyReport, 2),
];

const INVENTORY_MIX: Mix = &[
    (Statement::ProductBySku, 500),
    (Statement::ReserveStock, 200),
    (Statement::OversellStock, 25),
    (Statement::LowStock, 60),
    (Statement::MissingTable, 15),
    (Statement::MonthlyReport, 2),
];

/// The statements `service` runs.
fn mix(service: &str) -> Mix {
    if service == "inventory" {
        INVENTORY_MIX
    } else {
        CHECKOUT_MIX
    }
}

impl Statement {
    /// The SQL as an application would send it, literals inlined.
    fn sql(self, rng: &mut impl Rng) -> String {
        let user = rng.random_range(1..=2000);
        let sku = rng.random_range(1..=500);
        match self {
            Statement::UserById => format!("SELECT id, email, name FROM users WHERE id = {user}"),
            Statement::RecentOrders => format!(
                "SELECT id, total_cents, status FROM orders WHERE user_id = {user} ORDER BY created_at DESC LIMIT 20"
            ),
            Statement::PlaceOrder => format!(
                "INSERT INTO orders (user_id, total_cents, status, created_at) VALUES ({user}, {}, 'new', {})",
                rng.random_range(100..90_000),
                chrono::Utc::now().timestamp()
            ),
            Statement::PayOrder => {
                format!("UPDATE orders SET status = 'paid' WHERE id = {}", rng.random_range(1..20_000))
            }
            Statement::StatusTotals => {
                "SELECT status, count(*), sum(total_cents) FROM orders GROUP BY status".to_owned()
            }
            Statement::TopCustomers => "SELECT u.id, u.email, count(o.id) AS n, sum(o.total_cents) AS spent FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.id ORDER BY spent DESC LIMIT 10".to_owned(),
            Statement::DuplicateUser => format!(
                "INSERT INTO users (id, email, name, created_at) VALUES ({user}, 'user{user}@example.com', 'Again', 0)"
            ),
            Statement::MonthlyReport => format!(
                "WITH RECURSIVE days(d) AS (SELECT 0 UNION ALL SELECT d + 1 FROM days WHERE d < {}) SELECT count(*), sum(d % 7) FROM days",
                rng.random_range(600_000..1_600_000)
            ),
            Statement::ProductBySku => format!("SELECT sku, title, stock FROM products WHERE sku = 'SKU-{sku}'"),
            Statement::ReserveStock => {
                format!("UPDATE products SET stock = stock - 1 WHERE sku = 'SKU-{sku}' AND stock > 0")
            }
            Statement::OversellStock => {
                format!("UPDATE products SET stock = stock - 100000 WHERE sku = 'SKU-{sku}'")
            }
            Statement::LowStock => {
                format!("SELECT sku, stock FROM products WHERE stock < {} ORDER BY stock LIMIT 50", rng.random_range(10..900))
            }
            Statement::MissingTable => format!("SELECT qty FROM warehouse_stock WHERE sku = 'SKU-{sku}'"),
        }
    }

    fn returns_rows(self) -> bool {
        !matches!(
            self,
            Statement::PlaceOrder
                | Statement::PayOrder
                | Statement::DuplicateUser
                | Statement::ReserveStock
                | Statement::OversellStock
        )
    }
}

fn pick(mix: Mix, rng: &mut impl Rng) -> Statement {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (statement, weight) in mix {
        if roll < *weight {
            return *statement;
        }
        roll -= weight;
    }
    mix[0].0
}

async fn work(pool: InstrumentedPool<Sqlite>, mix: Mix, mut stopped: watch::Receiver<bool>) {
    loop {
        let (statement, sql, pause) = {
            let mut rng = rand::rng();
            let statement = pick(mix, &mut rng);
            let sql = statement.sql(&mut rng);
            (statement, sql, Duration::from_millis(rng.random_range(5..60)))
        };
        // The literals are numbers and fixed words generated above, never
        // outside input: inlining them is what the demo wants the agent to see.
        let query = sqlx::AssertSqlSafe(sql.clone());
        // Timed from the checkout on, as a service sees it: a pool that runs
        // dry shows up in the statements' latency and as `pool_timeout`.
        let _ = pool
            .timed(&sql, async {
                let mut conn = pool.acquire().await?;
                if statement.returns_rows() {
                    conn.fetch_all(query).await.map(|rows| rows.len() as u64)
                } else {
                    conn.execute(query).await.map(|done| done.rows_affected())
                }
            })
            .await;
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}
