//! The alert state machine, free of I/O and clocks (every call takes `now`),
//! so its timing is tested exactly.
//!
//! One alert per rule and series (label set). Each evaluation moves it:
//!
//! - inactive → pending when the condition becomes true (straight to firing
//!   when the rule's `for` is 0);
//! - pending → firing once the condition has held for `for`; pending →
//!   inactive when it stops holding before that;
//! - firing → resolved once the condition has been false for
//!   `keep_firing_for` (or the series vanished, or the rule was removed);
//! - resolved → pending when the condition comes back before the resolved
//!   notification is through.
//!
//! Notifications are planned per channel: a firing alert is notified once,
//! then again every `repeat_interval` while it fires; a resolved alert once
//! on every channel that was told it fired (when the channel sends resolved
//! notifications). Silenced alerts are not notified. A failed delivery leaves
//! the alert unnotified on that channel, so the next evaluation tries again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use querypulse_domain::Fingerprint;
use serde::Serialize;

use super::evaluate::Sample;
use super::notify::{AlertNotice, Status};
use super::rules::{Labels, Rule};
use super::template;

/// Resolved alerts whose resolved notification cannot be delivered are
/// dropped after this long.
pub const RESOLVED_KEEP_MS: i64 = 3_600_000;

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The condition is false (the alert does not exist).
    Inactive,
    /// The condition is true, for less than `for`.
    Pending,
    /// The condition has held for `for`.
    Firing,
    /// It fired and the condition cleared.
    Resolved,
}

impl State {
    /// The name used in JSON and history.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// Identity of an alert: its rule and the labels of its series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlertKey {
    /// Rule id.
    pub rule_id: i64,
    /// Series labels.
    pub labels: Labels,
}

/// The last successful notification of an alert on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// What was said.
    pub status: Status,
    /// When, Unix epoch milliseconds.
    pub at_ms: i64,
}

/// One alert.
#[derive(Debug, Clone)]
pub struct Alert {
    /// Its rule as last evaluated (kept after the rule is removed, for the
    /// resolved notification).
    pub rule: Arc<Rule>,
    /// Identity.
    pub key: AlertKey,
    /// Current state (never `Inactive` inside a [`Book`]).
    pub state: State,
    /// Last measured value.
    pub value: f64,
    /// When the condition became true (start of this episode).
    pub active_since_ms: i64,
    /// When it started firing.
    pub fired_at_ms: Option<i64>,
    /// Last evaluation where the condition held.
    pub last_true_ms: i64,
    /// When it resolved.
    pub resolved_at_ms: Option<i64>,
    /// Last successful notification per channel.
    pub sent: BTreeMap<i64, Sent>,
    /// Channels with a delivery of this alert under way.
    pub in_flight: BTreeSet<i64>,
}

impl Alert {
    /// Every label: the series', the rule's, `alertname` and `severity`.
    pub fn all_labels(&self) -> Labels {
        let mut labels = self.rule.labels.clone();
        labels.extend(self.key.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert("alertname".into(), self.rule.name.clone());
        labels.insert("severity".into(), self.rule.severity.as_str().into());
        labels
    }

    /// Stable id of the alert (16 hex digits) from its rule and series.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key)
    }

    /// The rule's annotations rendered with this alert's value.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let labels = self.all_labels();
        self.rule
            .annotations
            .iter()
            .map(|(k, text)| (k.clone(), template::render(text, &self.rule, &labels, self.value)))
            .collect()
    }

    fn notice(&self, status: Status) -> AlertNotice {
        AlertNotice {
            status,
            rule_id: self.key.rule_id,
            labels: self.all_labels(),
            annotations: self.annotations(),
            starts_at_ms: self.fired_at_ms.unwrap_or(self.active_since_ms),
            ends_at_ms: if status == Status::Resolved {
                self.resolved_at_ms
            } else {
                None
            },
            value: self.value,
            value_text: self.rule.kind.format_value(self.value),
            fingerprint: self.fingerprint(),
        }
    }
}

/// Stable id of an alert from its rule id and series labels.
pub fn fingerprint(key: &AlertKey) -> String {
    let mut canonical = key.rule_id.to_string();
    for (k, v) in &key.labels {
        canonical.push('\u{0}');
        canonical.push_str(k);
        canonical.push('=');
        canonical.push_str(v);
    }
    Fingerprint::of_normalized(&canonical).to_string()
}

/// A state change, recorded in the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Rule id.
    pub rule_id: i64,
    /// Rule name at the time.
    pub rule_name: String,
    /// Alert id.
    pub fingerprint: String,
    /// Every label of the alert.
    pub labels: Labels,
    /// Previous state.
    pub from: State,
    /// New state.
    pub to: State,
    /// The value that caused it.
    pub value: f64,
    /// When.
    pub at_ms: i64,
}

/// What the book needs to know about a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPolicy {
    /// Re-notify a firing alert this often, milliseconds.
    pub repeat_interval_ms: i64,
    /// Notify resolved alerts.
    pub send_resolved: bool,
}

/// The notifications of one channel planned by one evaluation.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The channel.
    pub channel_id: i64,
    /// Alerts and what is said about each.
    pub items: Vec<(AlertKey, Status)>,
    /// What is sent.
    pub notices: Vec<AlertNotice>,
}

/// What a dry run reports for one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    /// Series labels.
    pub labels: Labels,
    /// Measured value (`None` for an alert whose series vanished).
    pub value: Option<f64>,
    /// The value in the rule's unit.
    pub value_text: Option<String>,
    /// Whether `value >= threshold`.
    pub condition: bool,
    /// State now.
    pub state: State,
    /// State this evaluation would give it.
    pub next_state: State,
}

/// Every alert, owned by the engine task.
#[derive(Debug, Clone, Default)]
pub struct Book {
    alerts: BTreeMap<AlertKey, Alert>,
}

impl Book {
    /// Every alert (pending, firing, and resolved ones not yet notified).
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// Applies one evaluation of `rule` at `now_ms`.
    pub fn apply(&mut self, rule_id: i64, rule: &Arc<Rule>, samples: &[Sample], now_ms: i64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let mut seen = BTreeSet::new();
        for sample in samples {
            let key = AlertKey {
                rule_id,
                labels: sample.labels.clone(),
            };
            let holds = sample.value >= rule.threshold;
            seen.insert(key.clone());
            match self.alerts.get_mut(&key) {
                None if holds => {
                    let mut alert = Alert {
                        rule: rule.clone(),
                        key: key.clone(),
                        state: State::Pending,
                        value: sample.value,
                        active_since_ms: now_ms,
                        fired_at_ms: None,
                        last_true_ms: now_ms,
                        resolved_at_ms: None,
                        sent: BTreeMap::new(),
                        in_flight: BTreeSet::new(),
                    };
                    promote(&mut alert, now_ms);
                    transitions.push(transition(&alert, State::Inactive, now_ms));
                    self.alerts.insert(key, alert);
                }
                None => {}
                Some(alert) => {
                    alert.rule = rule.clone();
                    alert.value = sample.value;
                    if holds {
                        alert.last_true_ms = now_ms;
                        let before = alert.state;
                        if before == State::Resolved {
                            alert.state = State::Pending;
                            alert.active_since_ms = now_ms;
                            alert.fired_at_ms = None;
                            alert.resolved_at_ms = None;
                        }
                        promote(alert, now_ms);
                        if alert.state != before {
                            transitions.push(transition(alert, before, now_ms));
                        }
                    } else if let Some(t) = clear(alert, now_ms, false) {
                        transitions.push(t);
                    }
                }
            }
        }
        let vanished: Vec<AlertKey> = self
            .alerts
            .keys()
            .filter(|k| k.rule_id == rule_id && !seen.contains(*k))
            .cloned()
            .collect();
        for key in vanished {
            if let Some(alert) = self.alerts.get_mut(&key) {
                alert.rule = rule.clone();
                if let Some(t) = clear(alert, now_ms, false) {
                    transitions.push(t);
                }
            }
        }
        self.alerts.retain(|_, a| a.state != State::Inactive);
        transitions
    }

    /// Ends the alerts of rules that are gone or disabled (`keep` says which
    /// rule ids stay): pending ones become inactive, firing ones resolve at
    /// once.
    pub fn retire(&mut self, keep: impl Fn(i64) -> bool, now_ms: i64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for alert in self.alerts.values_mut().filter(|a| !keep(a.key.rule_id)) {
            if let Some(t) = clear(alert, now_ms, true) {
                transitions.push(t);
            }
        }
        self.alerts.retain(|_, a| a.state != State::Inactive);
        transitions
    }

    /// When the first pending alert is due to fire after `after_ms` (the
    /// last evaluation), so the engine can evaluate exactly then rather than
    /// at the next tick. Deadlines already evaluated (a rule whose
    /// measurement failed) wait for the regular tick.
    pub fn next_deadline(&self, after_ms: i64) -> Option<i64> {
        self.alerts
            .values()
            .filter(|a| a.state == State::Pending)
            .map(|a| a.active_since_ms.saturating_add(millis(a.rule.for_)))
            .filter(|deadline| *deadline > after_ms)
            .min()
    }

    /// What the dry run of `rule` with `samples` would do, without changing
    /// anything.
    pub fn preview(&self, rule_id: i64, rule: &Arc<Rule>, samples: &[Sample], now_ms: i64) -> Vec<Preview> {
        let mut scratch = Book {
            alerts: self
                .alerts
                .iter()
                .filter(|(k, _)| k.rule_id == rule_id)
                .map(|(k, a)| (k.clone(), a.clone()))
                .collect(),
        };
        let before = scratch.clone();
        scratch.apply(rule_id, rule, samples, now_ms);
        let state_in = |book: &Book, key: &AlertKey| book.alerts.get(key).map_or(State::Inactive, |a| a.state);
        let mut out: Vec<Preview> = samples
            .iter()
            .map(|s| {
                let key = AlertKey {
                    rule_id,
                    labels: s.labels.clone(),
                };
                Preview {
                    labels: s.labels.clone(),
                    value: Some(s.value),
                    value_text: Some(rule.kind.format_value(s.value)),
                    condition: s.value >= rule.threshold,
                    state: state_in(&before, &key),
                    next_state: state_in(&scratch, &key),
                }
            })
            .collect();
        for key in before.alerts.keys() {
            if !samples.iter().any(|s| s.labels == key.labels) {
                out.push(Preview {
                    labels: key.labels.clone(),
                    value: None,
                    value_text: None,
                    condition: false,
                    state: state_in(&before, key),
                    next_state: state_in(&scratch, key),
                });
            }
        }
        out
    }

    /// Plans the notifications due at `now_ms`, grouped per channel, and
    /// marks them under way; drops resolved alerts with nothing left to say.
    /// `channel` gives a channel's policy (`None`: no such channel);
    /// `silenced` whether labels are silenced.
    pub fn plan(
        &mut self,
        now_ms: i64,
        channel: impl Fn(i64) -> Option<ChannelPolicy>,
        silenced: impl Fn(&Labels) -> bool,
    ) -> Vec<Delivery> {
        let mut groups: BTreeMap<i64, Delivery> = BTreeMap::new();
        let mut finished = Vec::new();
        for (key, alert) in &mut self.alerts {
            let muted = silenced(&alert.all_labels());
            for &channel_id in &alert.rule.channels {
                if alert.in_flight.contains(&channel_id) {
                    continue;
                }
                let Some(policy) = channel(channel_id) else {
                    continue;
                };
                let last = alert.sent.get(&channel_id);
                let status = match alert.state {
                    State::Firing if !muted => match last {
                        Some(s) if s.status == Status::Firing && now_ms - s.at_ms < policy.repeat_interval_ms => {
                            continue;
                        }
                        _ => Status::Firing,
                    },
                    State::Resolved
                        if !muted && policy.send_resolved && last.is_some_and(|s| s.status == Status::Firing) =>
                    {
                        Status::Resolved
                    }
                    _ => continue,
                };
                alert.in_flight.insert(channel_id);
                let group = groups.entry(channel_id).or_insert_with(|| Delivery {
                    channel_id,
                    items: Vec::new(),
                    notices: Vec::new(),
                });
                group.items.push((key.clone(), status));
                group.notices.push(alert.notice(status));
            }
            let expired = alert.resolved_at_ms.is_some_and(|at| now_ms - at > RESOLVED_KEEP_MS);
            if alert.state == State::Resolved && (alert.in_flight.is_empty() || expired) {
                finished.push(key.clone());
            }
        }
        for key in finished {
            self.alerts.remove(&key);
        }
        groups.into_values().collect()
    }

    /// Records the outcome of a delivery planned by [`Book::plan`].
    pub fn delivered(&mut self, channel_id: i64, items: &[(AlertKey, Status)], ok: bool, now_ms: i64) {
        for (key, status) in items {
            if let Some(alert) = self.alerts.get_mut(key) {
                alert.in_flight.remove(&channel_id);
                if ok {
                    alert.sent.insert(
                        channel_id,
                        Sent {
                            status: *status,
                            at_ms: now_ms,
                        },
                    );
                }
            }
        }
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Moves a pending alert to firing once `for` has passed.
fn promote(alert: &mut Alert, now_ms: i64) {
    if alert.state == State::Pending && now_ms - alert.active_since_ms >= millis(alert.rule.for_) {
        alert.state = State::Firing;
        alert.fired_at_ms = Some(now_ms);
    }
}

/// The condition is false (or the rule is gone, when `at_once`).
fn clear(alert: &mut Alert, now_ms: i64, at_once: bool) -> Option<Transition> {
    let before = alert.state;
    match before {
        State::Pending => alert.state = State::Inactive,
        State::Firing if at_once || now_ms - alert.last_true_ms >= millis(alert.rule.keep_firing_for) => {
            alert.state = State::Resolved;
            alert.resolved_at_ms = Some(now_ms);
        }
        _ => return None,
    }
    Some(transition(alert, before, now_ms))
}

fn transition(alert: &Alert, from: State, now_ms: i64) -> Transition {
    Transition {
        rule_id: alert.key.rule_id,
        rule_name: alert.rule.name.clone(),
        fingerprint: alert.fingerprint(),
        labels: alert.all_labels(),
        from,
        to: alert.state,
        value: alert.value,
        at_ms: now_ms,
    }
}

#[cfg(test)]
mod tests;
