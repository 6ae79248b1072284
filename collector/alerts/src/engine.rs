//! The engine: one task owning every alert. It evaluates the rules on a
//! fixed cadence (and exactly when a pending alert's `for` runs out), records
//! transitions, and hands notifications to delivery tasks whose outcomes come
//! back to it. Everything else talks to it through [`Command`]s.

use querypulse_domain::alerting::{ActiveAlert, AlertState, Evaluation, PreviewRow};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::AlertsError;
use super::channels::Channel;
use super::db::AlertDb;
use super::evaluate::measure;
use super::notify::{HttpClient, Notification, Notifier, Notifiers, NotifyError, Status, notifier, rfc3339};
use super::rules::{Labels, Rule};
use super::silences::Silence;
use super::state::{AlertKey, Book, ChannelPolicy, State, Transition};
use querypulse_domain::alerting::HistoryEntry;
use querypulse_domain::now_ms;
use querypulse_store::Store;

/// History older than this is forgotten.
pub const HISTORY_RETENTION_MS: i64 = 90 * 86_400_000;
const PRUNE_EVERY_MS: i64 = 3_600_000;

/// What other tasks ask of the engine.
#[derive(Debug)]
pub(super) enum Command {
    /// Re-read rules, channels and silences from the database.
    Reload(oneshot::Sender<Result<(), AlertsError>>),
    /// The pending and firing alerts.
    Alerts(oneshot::Sender<Vec<ActiveAlert>>),
    /// Evaluate one rule without changing anything.
    DryRun(i64, oneshot::Sender<Result<Evaluation, AlertsError>>),
}

struct Delivering {
    channel_id: i64,
    items: Vec<(AlertKey, Status)>,
    notification: Notification,
}

pub(super) struct Engine {
    store: Store,
    db: AlertDb,
    interval: Duration,
    custom: Notifiers,
    http: HttpClient,
    rules: Vec<(i64, Arc<Rule>)>,
    channels: BTreeMap<i64, (Channel, Arc<dyn Notifier>)>,
    silences: Vec<(i64, Silence)>,
    book: Book,
    deliveries: JoinSet<Result<(), NotifyError>>,
    delivering: HashMap<tokio::task::Id, Delivering>,
    pruned_at_ms: i64,
    evaluated_at_ms: i64,
}

impl Engine {
    pub(super) fn new(store: Store, db: AlertDb, interval: Duration, custom: Notifiers, http: HttpClient) -> Engine {
        Engine {
            store,
            db,
            interval,
            custom,
            http,
            rules: Vec::new(),
            channels: BTreeMap::new(),
            silences: Vec::new(),
            book: Book::default(),
            deliveries: JoinSet::new(),
            delivering: HashMap::new(),
            pruned_at_ms: 0,
            evaluated_at_ms: 0,
        }
    }

    /// Runs until `shutdown` or until every handle is gone.
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: watch::Receiver<bool>) {
        let mut shutdown = shutdown;
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        tokio::pin!(stop);
        if let Err(error) = self.load().await {
            tracing::error!(%error, "cannot load the alert rules; alerting starts without them");
        }
        let mut next_tick = Instant::now() + self.interval;
        self.evaluate().await;
        loop {
            let wake = match self.book.next_deadline(self.evaluated_at_ms) {
                Some(deadline_ms) => {
                    let wait = u64::try_from(deadline_ms - now_ms()).unwrap_or(0) + 1;
                    next_tick.min(Instant::now() + Duration::from_millis(wait))
                }
                None => next_tick,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= next_tick {
                        next_tick += self.interval;
                        if next_tick <= now {
                            next_tick = now + self.interval;
                        }
                    }
                    self.evaluate().await;
                }
                Some(done) = self.deliveries.join_next_with_id(), if !self.deliveries.is_empty() => {
                    let (id, result) = match done {
                        Ok((id, result)) => (id, result),
                        Err(e) => (e.id(), Err(NotifyError(format!("the notifier failed: {e}")))),
                    };
                    if let Some(delivering) = self.delivering.remove(&id) {
                        self.delivered(delivering, result).await;
                    }
                }
                command = commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                () = &mut stop => break,
            }
        }
        self.deliveries.abort_all();
        tracing::debug!("alert engine stopped");
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Reload(reply) => {
                let result = self.load().await;
                if result.is_ok() {
                    let now = now_ms();
                    let enabled: Vec<i64> = self
                        .rules
                        .iter()
                        .filter(|(_, r)| r.enabled)
                        .map(|(id, _)| *id)
                        .collect();
                    let transitions = self.book.retire(|id| enabled.contains(&id), now);
                    self.record_transitions(transitions).await;
                    self.dispatch(now);
                }
                let _ = reply.send(result);
            }
            Command::Alerts(reply) => {
                let _ = reply.send(self.views(now_ms()));
            }
            Command::DryRun(id, reply) => {
                let _ = reply.send(self.dry_run(id).await);
            }
        }
    }

    async fn load(&mut self) -> Result<(), AlertsError> {
        let rules = self.db.rules().await?;
        let channels = self.db.channels().await?;
        let silences = self.db.silences().await?;
        self.rules = rules.into_iter().map(|r| (r.id, Arc::new(r.rule))).collect();
        self.channels = channels
            .into_iter()
            .map(|(id, channel)| {
                let n = notifier(&channel, &self.custom, &self.http);
                (id, (channel, n))
            })
            .collect();
        self.silences = silences;
        Ok(())
    }

    async fn measure_rules(
        &self,
        rules: Vec<(i64, Arc<Rule>)>,
        now: i64,
    ) -> Vec<(i64, Arc<Rule>, Result<Vec<super::evaluate::Sample>, String>)> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            rules
                .into_iter()
                .map(|(id, rule)| {
                    let samples = measure(&store, &rule, now).map_err(|e| e.to_string());
                    (id, rule, samples)
                })
                .collect()
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "rule evaluation panicked");
            Vec::new()
        })
    }

    async fn evaluate(&mut self) {
        let now = now_ms();
        self.evaluated_at_ms = now;
        let enabled: Vec<(i64, Arc<Rule>)> = self.rules.iter().filter(|(_, r)| r.enabled).cloned().collect();
        let mut transitions = Vec::new();
        for (id, rule, samples) in self.measure_rules(enabled.clone(), now).await {
            match samples {
                Ok(samples) => transitions.extend(self.book.apply(id, &rule, &samples, now)),
                Err(error) => {
                    tracing::warn!(rule = %rule.name, %error, "cannot evaluate rule; its alerts keep their state")
                }
            }
        }
        transitions.extend(self.book.retire(|id| enabled.iter().any(|(e, _)| *e == id), now));
        self.record_transitions(transitions).await;
        self.dispatch(now);
        if now - self.pruned_at_ms > PRUNE_EVERY_MS {
            self.pruned_at_ms = now;
            if let Err(error) = self.db.prune_history(now - HISTORY_RETENTION_MS).await {
                tracing::warn!(%error, "cannot prune the alert history");
            }
        }
    }

    async fn record_transitions(&self, transitions: Vec<Transition>) {
        if transitions.is_empty() {
            return;
        }
        let events: Vec<HistoryEntry> = transitions
            .into_iter()
            .map(|t| {
                tracing::info!(rule = %t.rule_name, alert = %t.fingerprint, from = t.from.as_str(), to = t.to.as_str(),
                    value = t.value, "alert state changed");
                HistoryEntry {
                    at_ms: t.at_ms,
                    rule_id: t.rule_id,
                    rule: t.rule_name,
                    alert: t.fingerprint,
                    labels: t.labels,
                    event: t.to.as_str().to_owned(),
                    value: Some(t.value),
                    channel_id: None,
                    detail: format!("from {}", t.from.as_str()),
                }
            })
            .collect();
        if let Err(error) = self.db.record(&events).await {
            tracing::error!(%error, "cannot record alert transitions in the history");
        }
    }

    fn muted_by(&self, labels: &Labels, now: i64) -> Vec<i64> {
        self.silences
            .iter()
            .filter(|(_, s)| s.mutes(labels, now))
            .map(|(id, _)| *id)
            .collect()
    }

    fn dispatch(&mut self, now: i64) {
        let channels = &self.channels;
        let silences = &self.silences;
        let planned = self.book.plan(
            now,
            |id| {
                channels.get(&id).map(|(c, _)| ChannelPolicy {
                    repeat_interval_ms: i64::try_from(c.repeat_interval.as_millis()).unwrap_or(i64::MAX),
                    send_resolved: c.send_resolved,
                })
            },
            |labels| silences.iter().any(|(_, s)| s.mutes(labels, now)),
        );
        for delivery in planned {
            let Some((channel, notifier)) = self.channels.get(&delivery.channel_id) else {
                continue;
            };
            let mut alerts = delivery.notices;
            alerts.sort_by_key(|a| a.status == Status::Resolved);
            let notification = Notification {
                channel_id: delivery.channel_id,
                channel: channel.name.clone(),
                alerts,
            };
            let notifier = notifier.clone();
            let sent = notification.clone();
            let handle = self.deliveries.spawn(async move { notifier.notify(&sent).await });
            self.delivering.insert(
                handle.id(),
                Delivering {
                    channel_id: delivery.channel_id,
                    items: delivery.items,
                    notification,
                },
            );
        }
    }

    async fn delivered(&mut self, delivering: Delivering, result: Result<(), NotifyError>) {
        let now = now_ms();
        let Delivering {
            channel_id,
            items,
            notification,
        } = delivering;
        self.book.delivered(channel_id, &items, result.is_ok(), now);
        let (event, error) = match &result {
            Ok(()) => ("notified", None),
            Err(e) => {
                tracing::warn!(channel = %notification.channel, error = %e, "notification failed; retrying at the next evaluation");
                ("notify_failed", Some(e.0.clone()))
            }
        };
        let events: Vec<HistoryEntry> = notification
            .alerts
            .iter()
            .map(|a| HistoryEntry {
                at_ms: now,
                rule_id: a.rule_id,
                rule: a.labels.get("alertname").cloned().unwrap_or_default(),
                alert: a.fingerprint.clone(),
                labels: a.labels.clone(),
                event: event.to_owned(),
                value: Some(a.value),
                channel_id: Some(channel_id),
                detail: match &error {
                    None => format!("{} sent to {}", a.status.as_str(), notification.channel),
                    Some(e) => format!("{} to {}: {e}", a.status.as_str(), notification.channel),
                },
            })
            .collect();
        if let Err(error) = self.db.record(&events).await {
            tracing::error!(%error, "cannot record a delivery in the alert history");
        }
    }

    fn views(&self, now: i64) -> Vec<ActiveAlert> {
        let mut views: Vec<ActiveAlert> = self
            .book
            .alerts()
            .filter(|a| matches!(a.state, State::Pending | State::Firing))
            .map(|a| {
                let labels = a.all_labels();
                let silenced_by = self.muted_by(&labels, now);
                ActiveAlert {
                    rule_id: a.key.rule_id,
                    rule: a.rule.name.clone(),
                    alert: a.fingerprint(),
                    state: if a.state == State::Firing {
                        AlertState::Firing
                    } else {
                        AlertState::Pending
                    },
                    severity: a.rule.severity,
                    annotations: a.annotations(),
                    labels,
                    value: a.value,
                    value_text: a.rule.kind.format_value(a.value),
                    threshold: a.rule.threshold,
                    threshold_text: a.rule.kind.format_value(a.rule.threshold),
                    active_since_ms: a.active_since_ms,
                    firing_since_ms: a.fired_at_ms,
                    silenced: !silenced_by.is_empty(),
                    silenced_by,
                }
            })
            .collect();
        views.sort_by(|a, b| {
            (b.state == AlertState::Firing)
                .cmp(&(a.state == AlertState::Firing))
                .then_with(|| a.rule.cmp(&b.rule))
                .then_with(|| a.alert.cmp(&b.alert))
        });
        views
    }

    async fn dry_run(&self, id: i64) -> Result<Evaluation, AlertsError> {
        let rule = self
            .rules
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, rule)| rule.clone())
            .ok_or_else(|| AlertsError::NotFound(format!("no rule {id}")))?;
        let now = now_ms();
        let measured = self.measure_rules(vec![(id, rule.clone())], now).await;
        let samples = match measured.into_iter().next() {
            Some((_, _, Ok(samples))) => samples,
            Some((_, _, Err(e))) => return Err(AlertsError::Evaluation(e)),
            None => return Err(AlertsError::Evaluation("the evaluation did not finish".into())),
        };
        let window_ms = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX / 2);
        Ok(Evaluation {
            rule_id: id,
            rule: rule.name.clone(),
            evaluated_at: rfc3339(now),
            window_from: rfc3339(now - window_ms),
            enabled: rule.enabled,
            series: self
                .book
                .preview(id, &rule, &samples, now)
                .into_iter()
                .map(|p| PreviewRow {
                    labels: p.labels,
                    value: p.value,
                    value_text: p.value_text,
                    condition: p.condition,
                    state: p.state.as_str().to_owned(),
                    next_state: p.next_state.as_str().to_owned(),
                })
                .collect(),
        })
    }
}
