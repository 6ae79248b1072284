//! Alert rules, channels, silences and history in the collector's SQLite
//! settings database (its migrations are `collector/migrations/`).
//! Every change is one transaction: nothing is ever half written.

use serde::Serialize;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};

use super::AlertsError;
use super::channels::{self, Channel, ChannelInput};
use super::rules::{self, Rule, RuleInput};
use super::silences::{Matcher, Silence};
use querypulse_domain::alerting::HistoryEntry;

/// A rule with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRule {
    /// Id.
    pub id: i64,
    /// The built-in default it was installed from.
    pub default_key: Option<String>,
    /// The rule.
    pub rule: Rule,
}

/// One stored entry of the alert history: its id and what it records (the
/// same fields the dashboard's history shows).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEvent {
    /// Id.
    pub id: i64,
    /// The transition or delivery.
    #[serde(flatten)]
    pub entry: HistoryEntry,
}

/// Which history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryFilter {
    /// Only this rule.
    pub rule_id: Option<i64>,
    /// From (inclusive), Unix epoch milliseconds.
    pub from_ms: i64,
    /// To (exclusive).
    pub to_ms: i64,
    /// At most this many, newest first.
    pub limit: i64,
}

/// The alerting tables of the settings database.
#[derive(Debug, Clone)]
pub struct AlertDb {
    pool: SqlitePool,
}

fn sql(error: sqlx::Error) -> AlertsError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            AlertsError::Conflict("the name is already taken".into())
        }
        _ => AlertsError::Database(error),
    }
}

fn corrupt(what: &str, id: i64, why: impl std::fmt::Display) -> AlertsError {
    AlertsError::Corrupt(format!("{what} {id}: {why}"))
}

/// A statement on one row by id that found none is a 404.
fn one_row(done: sqlx::sqlite::SqliteQueryResult, what: &str, id: i64) -> Result<(), AlertsError> {
    if done.rows_affected() == 0 {
        return Err(AlertsError::NotFound(format!("no {what} {id}")));
    }
    Ok(())
}

/// A stored rule or channel this version cannot read (written by a newer
/// one, or edited by hand) is logged and left out, so the others still work.
fn readable<T>(row: Result<T, AlertsError>) -> Option<T> {
    row.map_err(|error| tracing::error!(%error, "skipping an unreadable alert database entry"))
        .ok()
}

fn encode(value: &impl Serialize) -> Result<String, AlertsError> {
    serde_json::to_string(value).map_err(|e| AlertsError::Corrupt(e.to_string()))
}

impl AlertDb {
    /// The alert tables of `pool`, a settings database the collector has
    /// migrated.
    pub fn new(pool: SqlitePool) -> AlertDb {
        AlertDb { pool }
    }

    /// A write transaction that holds SQLite's write lock from its start.
    /// A deferred `BEGIN` takes it at the first write instead, and SQLite
    /// refuses at once (`SQLITE_BUSY`, no waiting) a transaction that has
    /// read and then wants to write while another connection holds the
    /// lock — such as a transaction that just returned a conflict and whose
    /// rollback is still queued. Taken up front, the lock is waited for.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>, AlertsError> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(sql)
    }

    /// Installs the zero-config defaults (a `log` channel and the default
    /// rules) unless they were installed before, even if they have since
    /// been removed. Returns whether it installed them.
    pub async fn install_defaults(&self, now_ms: i64) -> Result<bool, AlertsError> {
        let mut tx = self.write().await?;
        let installed: Option<i64> = sqlx::query_scalar("SELECT installed_at_ms FROM alert_defaults WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql)?;
        if installed.is_some() {
            return Ok(false);
        }
        let existing: Option<i64> = sqlx::query_scalar("SELECT id FROM alert_channels WHERE name = ?")
            .bind(rules::DEFAULT_CHANNEL)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql)?;
        let log_channel = match existing {
            Some(id) => id,
            None => {
                let channel = channels::default_log_channel()
                    .validate(None, |_| true)
                    .map_err(AlertsError::Invalid)?;
                insert_channel(&mut tx, &channel, now_ms).await?
            }
        };
        for default in rules::defaults() {
            let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM alert_rules WHERE name = ?")
                .bind(default.input.name.as_deref().unwrap_or_default())
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql)?;
            if taken.is_some() {
                continue;
            }
            let input = RuleInput {
                channels: Some(vec![log_channel]),
                ..default.input
            };
            let rule = input.validate(|_| true).map_err(AlertsError::Invalid)?;
            insert_rule(&mut tx, &rule, Some(default.key), now_ms).await?;
        }
        sqlx::query("INSERT INTO alert_defaults (id, installed_at_ms) VALUES (1, ?)")
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        tx.commit().await.map_err(sql)?;
        Ok(true)
    }

    // -- channels ------------------------------------------------------------

    /// Every channel, by id.
    pub async fn channels(&self) -> Result<Vec<(i64, Channel)>, AlertsError> {
        let rows = sqlx::query("SELECT id, settings FROM alert_channels ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(sql)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let id: i64 = row.get(0);
                let text: String = row.get(1);
                let value = serde_json::from_str(&text).map_err(|e| corrupt("channel", id, e))?;
                Ok((id, channels::from_stored(value).map_err(|e| corrupt("channel", id, e))?))
            })
            .filter_map(readable)
            .collect())
    }

    /// One channel.
    pub async fn channel(&self, id: i64) -> Result<Option<Channel>, AlertsError> {
        Ok(self
            .channels()
            .await?
            .into_iter()
            .find(|(i, _)| *i == id)
            .map(|(_, c)| c))
    }

    /// Stores a new channel; returns its id.
    pub async fn create_channel(&self, channel: &Channel, now_ms: i64) -> Result<i64, AlertsError> {
        let mut tx = self.write().await?;
        let id = insert_channel(&mut tx, channel, now_ms).await?;
        tx.commit().await.map_err(sql)?;
        Ok(id)
    }

    /// Replaces a channel.
    pub async fn update_channel(&self, id: i64, channel: &Channel, now_ms: i64) -> Result<(), AlertsError> {
        let done = sqlx::query(
            "UPDATE alert_channels SET name = ?, kind = ?, settings = ?, send_resolved = ?, repeat_interval_ms = ?,
                 updated_at_ms = ? WHERE id = ?",
        )
        .bind(&channel.name)
        .bind(channel.settings.kind())
        .bind(encode(&channel.to_json(false))?)
        .bind(channel.send_resolved)
        .bind(millis(channel.repeat_interval))
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(sql)?;
        one_row(done, "channel", id)
    }

    /// Deletes a channel no rule uses.
    pub async fn delete_channel(&self, id: i64) -> Result<(), AlertsError> {
        let mut tx = self.write().await?;
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT r.name FROM alert_rule_channels rc JOIN alert_rules r ON r.id = rc.rule_id
             WHERE rc.channel_id = ? ORDER BY r.name",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(sql)?;
        if !users.is_empty() {
            return Err(AlertsError::Conflict(format!(
                "channel {id} is used by rules {}: remove it from them first",
                users.join(", ")
            )));
        }
        let done = sqlx::query("DELETE FROM alert_channels WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        one_row(done, "channel", id)?;
        tx.commit().await.map_err(sql)?;
        Ok(())
    }

    // -- rules ---------------------------------------------------------------

    /// Every rule, by id.
    pub async fn rules(&self) -> Result<Vec<StoredRule>, AlertsError> {
        let rows = sqlx::query("SELECT id, definition, default_key FROM alert_rules ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(sql)?;
        let links: Vec<(i64, i64)> =
            sqlx::query_as("SELECT rule_id, channel_id FROM alert_rule_channels ORDER BY rule_id, position")
                .fetch_all(&self.pool)
                .await
                .map_err(sql)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let id: i64 = row.get(0);
                let text: String = row.get(1);
                let input: RuleInput = serde_json::from_str(&text).map_err(|e| corrupt("rule", id, e))?;
                let mut rule = input.validate(|_| true).map_err(|e| corrupt("rule", id, e))?;
                rule.channels = links.iter().filter(|(r, _)| *r == id).map(|(_, c)| *c).collect();
                Ok(StoredRule {
                    id,
                    default_key: row.get(2),
                    rule,
                })
            })
            .filter_map(readable)
            .collect())
    }

    /// One rule.
    pub async fn rule(&self, id: i64) -> Result<Option<StoredRule>, AlertsError> {
        Ok(self.rules().await?.into_iter().find(|r| r.id == id))
    }

    /// Stores a new rule (validated against the channels that exist);
    /// returns its id.
    pub async fn create_rule(&self, rule: &Rule, now_ms: i64) -> Result<i64, AlertsError> {
        let mut tx = self.write().await?;
        let id = insert_rule(&mut tx, rule, None, now_ms).await?;
        tx.commit().await.map_err(sql)?;
        Ok(id)
    }

    /// Replaces a rule and its channels.
    pub async fn update_rule(&self, id: i64, rule: &Rule, now_ms: i64) -> Result<(), AlertsError> {
        let mut tx = self.write().await?;
        let done = sqlx::query("UPDATE alert_rules SET name = ?, definition = ?, updated_at_ms = ? WHERE id = ?")
            .bind(&rule.name)
            .bind(encode(rule)?)
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        one_row(done, "rule", id)?;
        sqlx::query("DELETE FROM alert_rule_channels WHERE rule_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        link_channels(&mut tx, id, &rule.channels).await?;
        tx.commit().await.map_err(sql)?;
        Ok(())
    }

    /// Deletes a rule.
    pub async fn delete_rule(&self, id: i64) -> Result<(), AlertsError> {
        self.delete("DELETE FROM alert_rules WHERE id = ?", "rule", id).await
    }

    async fn delete(&self, statement: &'static str, what: &str, id: i64) -> Result<(), AlertsError> {
        let done = sqlx::query(statement).bind(id).execute(&self.pool).await.map_err(sql)?;
        one_row(done, what, id)
    }

    // -- silences ------------------------------------------------------------

    /// Every silence, by id.
    pub async fn silences(&self) -> Result<Vec<(i64, Silence)>, AlertsError> {
        let rows = sqlx::query(
            "SELECT id, matchers, starts_at_ms, ends_at_ms, created_by, comment FROM alert_silences ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?;
        rows.into_iter()
            .map(|row| {
                let id: i64 = row.get(0);
                let text: String = row.get(1);
                let stored: Vec<Matcher> = serde_json::from_str(&text).map_err(|e| corrupt("silence", id, e))?;
                let matchers = stored
                    .iter()
                    .map(|m| Matcher::new(&m.name, m.op, &m.value))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| corrupt("silence", id, e))?;
                Ok((
                    id,
                    Silence {
                        matchers,
                        starts_at_ms: row.get(2),
                        ends_at_ms: row.get(3),
                        created_by: row.get(4),
                        comment: row.get(5),
                    },
                ))
            })
            .collect()
    }

    /// Stores a new silence; returns its id.
    pub async fn create_silence(&self, silence: &Silence, now_ms: i64) -> Result<i64, AlertsError> {
        let done = sqlx::query(
            "INSERT INTO alert_silences (matchers, starts_at_ms, ends_at_ms, created_by, comment, created_at_ms,
                 updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(encode(&silence.matchers)?)
        .bind(silence.starts_at_ms)
        .bind(silence.ends_at_ms)
        .bind(&silence.created_by)
        .bind(&silence.comment)
        .bind(now_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .map_err(sql)?;
        Ok(done.last_insert_rowid())
    }

    /// Replaces a silence.
    pub async fn update_silence(&self, id: i64, silence: &Silence, now_ms: i64) -> Result<(), AlertsError> {
        let done = sqlx::query(
            "UPDATE alert_silences SET matchers = ?, starts_at_ms = ?, ends_at_ms = ?, created_by = ?, comment = ?,
                 updated_at_ms = ? WHERE id = ?",
        )
        .bind(encode(&silence.matchers)?)
        .bind(silence.starts_at_ms)
        .bind(silence.ends_at_ms)
        .bind(&silence.created_by)
        .bind(&silence.comment)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(sql)?;
        one_row(done, "silence", id)
    }

    /// Deletes a silence.
    pub async fn delete_silence(&self, id: i64) -> Result<(), AlertsError> {
        self.delete("DELETE FROM alert_silences WHERE id = ?", "silence", id)
            .await
    }

    // -- history -------------------------------------------------------------

    /// Appends history entries in one transaction.
    pub async fn record(&self, events: &[HistoryEntry]) -> Result<(), AlertsError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO alert_history (at_ms, rule_id, rule_name, alert, labels, event, value, channel_id, detail)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(e.at_ms)
            .bind(e.rule_id)
            .bind(&e.rule)
            .bind(&e.alert)
            .bind(encode(&e.labels)?)
            .bind(&e.event)
            .bind(e.value.filter(|v| v.is_finite()))
            .bind(e.channel_id)
            .bind(&e.detail)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        }
        tx.commit().await.map_err(sql)?;
        Ok(())
    }

    /// History entries, newest first.
    pub async fn history(&self, filter: HistoryFilter) -> Result<Vec<HistoryEvent>, AlertsError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, rule_id, rule_name, alert, labels, event, value, channel_id, detail FROM alert_history
             WHERE at_ms >= ? AND at_ms < ? AND (? IS NULL OR rule_id = ?) ORDER BY at_ms DESC, id DESC LIMIT ?",
        )
        .bind(filter.from_ms)
        .bind(filter.to_ms)
        .bind(filter.rule_id)
        .bind(filter.rule_id)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?;
        rows.into_iter()
            .map(|row| {
                let id: i64 = row.get(0);
                let labels: String = row.get(5);
                Ok(HistoryEvent {
                    id,
                    entry: HistoryEntry {
                        at_ms: row.get(1),
                        rule_id: row.get(2),
                        rule: row.get(3),
                        alert: row.get(4),
                        labels: serde_json::from_str(&labels).map_err(|e| corrupt("history entry", id, e))?,
                        event: row.get(6),
                        value: row.get(7),
                        channel_id: row.get(8),
                        detail: row.get(9),
                    },
                })
            })
            .collect()
    }

    /// Forgets history older than `before_ms`.
    pub async fn prune_history(&self, before_ms: i64) -> Result<u64, AlertsError> {
        let done = sqlx::query("DELETE FROM alert_history WHERE at_ms < ?")
            .bind(before_ms)
            .execute(&self.pool)
            .await
            .map_err(sql)?;
        Ok(done.rows_affected())
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn insert_channel(tx: &mut Transaction<'_, Sqlite>, channel: &Channel, now_ms: i64) -> Result<i64, AlertsError> {
    let done = sqlx::query(
        "INSERT INTO alert_channels (name, kind, settings, send_resolved, repeat_interval_ms, created_at_ms,
             updated_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&channel.name)
    .bind(channel.settings.kind())
    .bind(encode(&channel.to_json(false))?)
    .bind(channel.send_resolved)
    .bind(millis(channel.repeat_interval))
    .bind(now_ms)
    .bind(now_ms)
    .execute(&mut **tx)
    .await
    .map_err(sql)?;
    Ok(done.last_insert_rowid())
}

async fn insert_rule(
    tx: &mut Transaction<'_, Sqlite>,
    rule: &Rule,
    default_key: Option<&str>,
    now_ms: i64,
) -> Result<i64, AlertsError> {
    let done = sqlx::query(
        "INSERT INTO alert_rules (name, definition, default_key, created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&rule.name)
    .bind(encode(rule)?)
    .bind(default_key)
    .bind(now_ms)
    .bind(now_ms)
    .execute(&mut **tx)
    .await
    .map_err(sql)?;
    let id = done.last_insert_rowid();
    link_channels(tx, id, &rule.channels).await?;
    Ok(id)
}

async fn link_channels(tx: &mut Transaction<'_, Sqlite>, rule_id: i64, channels: &[i64]) -> Result<(), AlertsError> {
    for (position, channel) in channels.iter().enumerate() {
        sqlx::query("INSERT INTO alert_rule_channels (rule_id, channel_id, position) VALUES (?, ?, ?)")
            .bind(rule_id)
            .bind(channel)
            .bind(position as i64)
            .execute(&mut **tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                    AlertsError::Invalid(super::FieldError::new("channels", format!("unknown channel {channel}")))
                }
                _ => sql(e),
            })?;
    }
    Ok(())
}

/// Validates a channel input against the stored channel it replaces.
pub fn validate_channel(
    input: ChannelInput,
    previous: Option<&Channel>,
    custom: &super::notify::Notifiers,
) -> Result<Channel, AlertsError> {
    input
        .validate(previous, |h| custom.contains(h))
        .map_err(AlertsError::Invalid)
}

/// A settings database in `dir` with the collector's migrations applied, for
/// tests.
#[cfg(test)]
pub(crate) async fn test_database(dir: &std::path::Path) -> SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("catalog.sqlite"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .foreign_keys(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("open the settings database");
    sqlx::migrate!("../migrations").run(&pool).await.expect("migrate");
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn defaults_are_installed_once_and_removed_ones_stay_removed() {
        let dir = tempfile::tempdir().unwrap();
        let database = test_database(dir.path()).await;
        let store = AlertDb::new(database.clone());
        assert!(store.install_defaults(1).await.unwrap());
        let rules = store.rules().await.unwrap();
        assert_eq!(rules.len(), 4);
        let log = store.channels().await.unwrap();
        assert_eq!(log.len(), 1);
        assert!(rules.iter().all(|r| r.rule.channels == vec![log[0].0]));
        store.delete_rule(rules[0].id).await.unwrap();
        database.close().await;

        let database = test_database(dir.path()).await;
        let store = AlertDb::new(database.clone());
        assert!(!store.install_defaults(2).await.unwrap());
        let after = store.rules().await.unwrap();
        assert_eq!(after.len(), 3, "the removed default is not installed again");
        assert_eq!(after[0].default_key.as_deref(), Some("service_p99"));
    }

    #[tokio::test]
    async fn an_unreadable_rule_is_left_out_and_the_others_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let database = test_database(dir.path()).await;
        let store = AlertDb::new(database.clone());
        store.install_defaults(1).await.unwrap();
        sqlx::query("UPDATE alert_rules SET definition = '{\"kind\": \"from_the_future\"}' WHERE id = 1")
            .execute(&database)
            .await
            .unwrap();
        let rules = store.rules().await.unwrap();
        assert_eq!(rules.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[tokio::test]
    async fn a_channel_in_use_cannot_be_deleted_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let database = test_database(dir.path()).await;
        let store = AlertDb::new(database.clone());
        store.install_defaults(1).await.unwrap();
        let (log, channel) = store.channels().await.unwrap().remove(0);
        assert!(
            matches!(store.delete_channel(log).await, Err(AlertsError::Conflict(m)) if m.contains("Pool exhaustion"))
        );
        let again = store.create_channel(&channel, 2).await;
        assert!(matches!(again, Err(AlertsError::Conflict(_))), "{again:?}");
        let missing = store.delete_channel(999).await;
        assert!(matches!(missing, Err(AlertsError::NotFound(_))), "{missing:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_changes_succeed_or_conflict_and_never_fail_on_a_busy_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlertDb::new(test_database(dir.path()).await);
        store.install_defaults(1).await.unwrap();
        let (log, channel) = store.channels().await.unwrap().remove(0);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..48i64 {
            let store = store.clone();
            let mut channel = channel.clone();
            tasks.spawn(async move {
                match i % 4 {
                    // A new name: created.
                    0 => {
                        channel.name = format!("hook-{i}");
                        store.create_channel(&channel, i).await.map(|_| ())
                    }
                    // A taken name, a channel in use, a missing one: refused.
                    1 => store.create_channel(&channel, i).await.map(|_| ()),
                    2 => store.delete_channel(log).await,
                    _ => store.delete_channel(10_000 + i).await,
                }
                .map_err(|error| (i, error))
            });
        }
        while let Some(outcome) = tasks.join_next().await {
            match outcome.unwrap() {
                Ok(()) => {}
                Err((i, AlertsError::Conflict(_))) if i % 4 == 1 || i % 4 == 2 => {}
                Err((i, AlertsError::NotFound(_))) if i % 4 == 3 => {}
                Err((i, error)) => panic!("change {i} failed: {error:?}"),
            }
        }
        assert_eq!(store.channels().await.unwrap().len(), 1 + 12);
    }
}
