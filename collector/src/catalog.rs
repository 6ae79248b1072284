//! The catalog: configuration that users change through the API (retention,
//! agent settings; alert rules, channels, silences and history live in
//! `crate::alerts::store`), in SQLite inside the data directory, with
//! migrations from `migrations/` embedded in the binary.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::agent_settings::AgentSettings;
use crate::retention::Retention;

/// A catalog failure.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database could not be opened or queried.
    #[error("catalog: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("catalog migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value is out of range.
    #[error("catalog holds an invalid value: {0}")]
    Invalid(String),
}

/// The catalog database.
#[derive(Debug, Clone)]
pub struct Catalog {
    pool: SqlitePool,
}

impl Catalog {
    /// Opens (creating if needed) `catalog.sqlite` in `data_dir` and applies
    /// pending migrations.
    pub async fn open(data_dir: &Path) -> Result<Catalog, CatalogError> {
        let path = data_dir.join("catalog.sqlite");
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        Ok(Catalog { pool })
    }

    /// The stored retention settings, `None` before the first change.
    pub async fn retention(&self) -> Result<Option<Retention>, CatalogError> {
        let row: Option<(i64, i64, i64, Option<i64>)> =
            sqlx::query_as("SELECT raw_seconds, minute_seconds, hour_seconds, max_bytes FROM retention WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        let Some((raw, minute, hour, max_bytes)) = row else {
            return Ok(None);
        };
        let positive = |v: i64| u64::try_from(v).map_err(|_| CatalogError::Invalid(format!("negative retention {v}")));
        Ok(Some(Retention {
            raw_seconds: positive(raw)?,
            minute_seconds: positive(minute)?,
            hour_seconds: positive(hour)?,
            max_bytes: max_bytes.map(positive).transpose()?,
        }))
    }

    /// Stores new retention settings (validated by the caller).
    pub async fn set_retention(&self, retention: &Retention, now_ms: i64) -> Result<(), CatalogError> {
        let signed = |v: u64| i64::try_from(v).map_err(|_| CatalogError::Invalid(format!("{v} is too large")));
        sqlx::query(
            "INSERT INTO retention (id, raw_seconds, minute_seconds, hour_seconds, max_bytes, updated_at_ms)
             VALUES (1, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET raw_seconds = excluded.raw_seconds,
                 minute_seconds = excluded.minute_seconds, hour_seconds = excluded.hour_seconds,
                 max_bytes = excluded.max_bytes, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(signed(retention.raw_seconds)?)
        .bind(signed(retention.minute_seconds)?)
        .bind(signed(retention.hour_seconds)?)
        .bind(retention.max_bytes.map(signed).transpose()?)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The settings pushed to agents (all `None` before the first change).
    pub async fn agent_settings(&self) -> Result<AgentSettings, CatalogError> {
        type Row = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT slow_threshold_ms, max_samples_per_fingerprint, max_samples_per_window, interval_ms
             FROM agent_settings WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some((slow, per_fingerprint, per_window, interval)) = row else {
            return Ok(AgentSettings::default());
        };
        let narrow = |v: Option<i64>| -> Result<Option<u32>, CatalogError> {
            v.map(|v| u32::try_from(v).map_err(|_| CatalogError::Invalid(format!("agent setting {v}"))))
                .transpose()
        };
        Ok(AgentSettings {
            slow_threshold_ms: slow
                .map(|v| u64::try_from(v).map_err(|_| CatalogError::Invalid(format!("agent setting {v}"))))
                .transpose()?,
            max_samples_per_fingerprint: narrow(per_fingerprint)?,
            max_samples_per_window: narrow(per_window)?,
            interval_ms: narrow(interval)?,
        })
    }

    /// Stores the settings pushed to agents (validated by the caller).
    pub async fn set_agent_settings(&self, settings: &AgentSettings, now_ms: i64) -> Result<(), CatalogError> {
        let slow = settings
            .slow_threshold_ms
            .map(|v| i64::try_from(v).map_err(|_| CatalogError::Invalid(format!("{v} is too large"))))
            .transpose()?;
        sqlx::query(
            "INSERT INTO agent_settings (id, slow_threshold_ms, max_samples_per_fingerprint, max_samples_per_window,
                 interval_ms, updated_at_ms)
             VALUES (1, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET slow_threshold_ms = excluded.slow_threshold_ms,
                 max_samples_per_fingerprint = excluded.max_samples_per_fingerprint,
                 max_samples_per_window = excluded.max_samples_per_window,
                 interval_ms = excluded.interval_ms, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(slow)
        .bind(settings.max_samples_per_fingerprint.map(i64::from))
        .bind(settings.max_samples_per_window.map(i64::from))
        .bind(settings.interval_ms.map(i64::from))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The connection pool, for the catalog tables other modules own (alert
    /// rules, channels, silences, history: `crate::alerts::store`).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settings_are_stored_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).await.unwrap();
        assert_eq!(catalog.retention().await.unwrap(), None);
        let custom = Retention {
            raw_seconds: 86_400,
            max_bytes: Some(1 << 30),
            ..Retention::default()
        };
        catalog.set_retention(&custom, 1).await.unwrap();
        catalog.set_retention(&custom, 2).await.unwrap();
        let settings = AgentSettings {
            slow_threshold_ms: Some(250),
            interval_ms: Some(5_000),
            ..Default::default()
        };
        catalog.set_agent_settings(&settings, 3).await.unwrap();
        catalog.close().await;
        let reopened = Catalog::open(dir.path()).await.unwrap();
        assert_eq!(reopened.retention().await.unwrap(), Some(custom));
        assert_eq!(reopened.agent_settings().await.unwrap(), settings);
    }
}
