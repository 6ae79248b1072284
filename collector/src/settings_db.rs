//! The settings database: what users change through the API and the
//! dashboard, in SQLite (`catalog.sqlite` in the data directory). This module
//! reads and writes retention and agent settings; the alert rules, channels,
//! silences and history are the alert engine's (`querypulse_alerts::db`).
//! The migrations for all of them are `collector/migrations/`, embedded in
//! the binary and run on open.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::agent_settings::AgentSettings;
use querypulse_store::Retention;

/// The database's file in the data directory. Every data directory written
/// since the first release has its settings, rules and alert history here:
/// the name never changes.
pub const FILE_NAME: &str = "catalog.sqlite";

/// A settings database failure.
#[derive(Debug, thiserror::Error)]
pub enum SettingsDbError {
    /// The database could not be opened or queried.
    #[error("settings database: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("settings database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value is out of range.
    #[error("settings database holds an invalid value: {0}")]
    Invalid(String),
}

/// The settings database.
#[derive(Debug, Clone)]
pub struct SettingsDb {
    pool: SqlitePool,
}

impl SettingsDb {
    /// Opens (creating if needed) `catalog.sqlite` in `data_dir` and applies
    /// pending migrations.
    pub async fn open(data_dir: &Path) -> Result<SettingsDb, SettingsDbError> {
        let path = data_dir.join(FILE_NAME);
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!().run(&pool).await?;
        Ok(SettingsDb { pool })
    }

    /// The stored retention settings, `None` before the first change.
    pub async fn retention(&self) -> Result<Option<Retention>, SettingsDbError> {
        let row: Option<(i64, i64, i64, Option<i64>)> =
            sqlx::query_as("SELECT raw_seconds, minute_seconds, hour_seconds, max_bytes FROM retention WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        let Some((raw, minute, hour, max_bytes)) = row else {
            return Ok(None);
        };
        let positive =
            |v: i64| u64::try_from(v).map_err(|_| SettingsDbError::Invalid(format!("negative retention {v}")));
        Ok(Some(Retention {
            raw_seconds: positive(raw)?,
            minute_seconds: positive(minute)?,
            hour_seconds: positive(hour)?,
            max_bytes: max_bytes.map(positive).transpose()?,
        }))
    }

    /// Stores new retention settings (validated by the caller).
    pub async fn set_retention(&self, retention: &Retention, now_ms: i64) -> Result<(), SettingsDbError> {
        let signed = |v: u64| i64::try_from(v).map_err(|_| SettingsDbError::Invalid(format!("{v} is too large")));
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
    pub async fn agent_settings(&self) -> Result<AgentSettings, SettingsDbError> {
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
        let narrow = |v: Option<i64>| -> Result<Option<u32>, SettingsDbError> {
            v.map(|v| u32::try_from(v).map_err(|_| SettingsDbError::Invalid(format!("agent setting {v}"))))
                .transpose()
        };
        Ok(AgentSettings {
            slow_threshold_ms: slow
                .map(|v| u64::try_from(v).map_err(|_| SettingsDbError::Invalid(format!("agent setting {v}"))))
                .transpose()?,
            max_samples_per_fingerprint: narrow(per_fingerprint)?,
            max_samples_per_window: narrow(per_window)?,
            interval_ms: narrow(interval)?,
        })
    }

    /// Stores the settings pushed to agents (validated by the caller).
    pub async fn set_agent_settings(&self, settings: &AgentSettings, now_ms: i64) -> Result<(), SettingsDbError> {
        let slow = settings
            .slow_threshold_ms
            .map(|v| i64::try_from(v).map_err(|_| SettingsDbError::Invalid(format!("{v} is too large"))))
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

    /// The connection pool, for the tables other crates own (alert
    /// rules, channels, silences, history: `querypulse_alerts::db`).
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
        let db = SettingsDb::open(dir.path()).await.unwrap();
        assert_eq!(db.retention().await.unwrap(), None);
        let custom = Retention {
            raw_seconds: 86_400,
            max_bytes: Some(1 << 30),
            ..Retention::default()
        };
        db.set_retention(&custom, 1).await.unwrap();
        db.set_retention(&custom, 2).await.unwrap();
        let settings = AgentSettings {
            slow_threshold_ms: Some(250),
            interval_ms: Some(5_000),
            ..Default::default()
        };
        db.set_agent_settings(&settings, 3).await.unwrap();
        db.close().await;
        let reopened = SettingsDb::open(dir.path()).await.unwrap();
        assert_eq!(reopened.retention().await.unwrap(), Some(custom));
        assert_eq!(reopened.agent_settings().await.unwrap(), settings);
    }

    #[tokio::test]
    async fn a_data_directory_of_an_earlier_release_keeps_its_settings() {
        // Earlier releases kept the settings in `catalog.sqlite`: write one
        // as they did, without this module.
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("catalog.sqlite"))
            .create_if_missing(true);
        let earlier = SqlitePoolOptions::new().connect_with(options).await.unwrap();
        sqlx::migrate!().run(&earlier).await.unwrap();
        sqlx::query(
            "INSERT INTO retention (id, raw_seconds, minute_seconds, hour_seconds, max_bytes, updated_at_ms)
             VALUES (1, 86400, 1209600, 31536000, NULL, 1)",
        )
        .execute(&earlier)
        .await
        .unwrap();
        earlier.close().await;

        let db = SettingsDb::open(dir.path()).await.unwrap();
        let retention = db.retention().await.unwrap().expect("the stored retention");
        assert_eq!(retention.raw_seconds, 86_400);
        assert_eq!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sqlite"))
                .count(),
            1
        );
    }
}
