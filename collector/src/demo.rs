//! `querypulse demo`: a collector plus simulated services whose agents drive
//! real SQLite pools (sqlx) with a realistic mix of fast and slow statements
//! and some failures, so a newcomer sees a live dashboard with one command.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use querypulse_agent::{Agent, DbSystem, ErrorClass, Outcome};
use rand::Rng;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Collector, CollectorError, Config};

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
    pool: SqlitePool,
    workers: Vec<JoinHandle<()>>,
}

impl Demo {
    /// Starts the collector with `config` and the simulated services.
    pub async fn start(config: Config) -> Result<Demo, CollectorError> {
        let data_dir = config.data_dir.clone();
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
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_millis(750))
            .connect_with(options)
            .await?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&pool).await?;
        }
        let agent = Agent::builder(service)
            .endpoint(endpoint)
            .db_system(DbSystem::Sqlite)
            .interval(DEMO_INTERVAL)
            .slow_threshold(Duration::from_millis(250))
            .label("demo", "true")
            .start()
            .map_err(|e| sqlx::Error::Configuration(Box::new(e)))?;
        let mix = if service == "inventory" {
            INVENTORY_MIX
        } else {
            CHECKOUT_MIX
        };
        let workers = (0..WORKERS)
            .map(|_| tokio::spawn(work(agent.clone(), pool.clone(), mix, stopped.clone())))
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

/// Maps an sqlx error to the class the agent records. SQLite reports its own
/// extended result codes; constraint violations are mapped to the SQLSTATE a
/// PostgreSQL or MySQL user would recognize.
pub fn classify_sqlx_error(error: &sqlx::Error) -> ErrorClass {
    match error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("1555" | "2067") => ErrorClass::sqlstate("23505"),
            Some("787") => ErrorClass::sqlstate("23503"),
            Some("1299") => ErrorClass::sqlstate("23502"),
            Some("275") => ErrorClass::sqlstate("23514"),
            Some(code) if code.len() == 5 => ErrorClass::sqlstate(code),
            _ => ErrorClass::Other,
        },
        sqlx::Error::PoolTimedOut => ErrorClass::PoolTimeout,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => ErrorClass::Io,
        _ => ErrorClass::Other,
    }
}

async fn work(agent: Agent, pool: SqlitePool, mix: Mix, mut stopped: watch::Receiver<bool>) {
    loop {
        let (statement, sql, pause) = {
            let mut rng = rand::rng();
            let statement = pick(mix, &mut rng);
            let sql = statement.sql(&mut rng);
            (statement, sql, Duration::from_millis(rng.random_range(5..60)))
        };
        // The literals are numbers and fixed words generated above, never
        // outside input: inlining them is what the demo wants the agent to see.
        let query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
        let started = Instant::now();
        let outcome = if statement.returns_rows() {
            query.fetch_all(&pool).await.map(|rows| rows.len() as u64)
        } else {
            query.execute(&pool).await.map(|done| done.rows_affected())
        };
        let elapsed = started.elapsed();
        let outcome = match outcome {
            Ok(rows) => Outcome::rows(rows),
            Err(error) => Outcome::Error(classify_sqlx_error(&error)),
        };
        agent.record_query_on("main", &sql, elapsed, outcome);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}
