//! The state machine's timing and notification planning, with explicit
//! clocks.

use super::*;
use crate::rules::{Labels, RuleInput};
use serde_json::json;

const S: i64 = 1_000;
const HOUR: i64 = 3_600 * S;
const CHANNEL: i64 = 1;

fn rule(patch: serde_json::Value) -> Arc<Rule> {
    let mut base = json!({
        "name": "Pool exhaustion", "kind": "pool_utilization", "threshold": 0.9,
        "for": "60s", "channels": [CHANNEL]
    });
    for (k, v) in patch.as_object().unwrap() {
        base[k] = v.clone();
    }
    let input: RuleInput = serde_json::from_value(base).unwrap();
    Arc::new(input.validate(|_| true).unwrap())
}

fn series(pool: &str) -> Labels {
    Labels::from([
        ("pool".to_owned(), pool.to_owned()),
        ("service".to_owned(), "shop".to_owned()),
    ])
}

fn sample(value: f64) -> Vec<Sample> {
    vec![Sample {
        labels: series("main"),
        value,
    }]
}

fn policy(repeat_ms: i64) -> impl Fn(i64) -> Option<ChannelPolicy> {
    move |id| {
        (id == CHANNEL).then_some(ChannelPolicy {
            repeat_interval_ms: repeat_ms,
            send_resolved: true,
        })
    }
}

fn nothing_silenced(_: &Labels) -> bool {
    false
}

fn state(book: &Book) -> State {
    book.alerts().next().map_or(State::Inactive, |a| a.state)
}

/// Plans at `now`, asserts what is sent, and reports it delivered.
#[track_caller]
fn notify(book: &mut Book, now: i64, expected: &[Status]) {
    let planned = book.plan(now, policy(4 * HOUR), nothing_silenced);
    let statuses: Vec<Status> = planned.iter().flat_map(|d| d.items.iter().map(|(_, s)| *s)).collect();
    assert_eq!(statuses, expected, "notifications at {now}");
    for d in planned {
        book.delivered(d.channel_id, &d.items, true, now);
    }
}

#[test]
fn an_alert_is_pending_for_exactly_for_then_fires() {
    let r = rule(json!({}));
    let mut book = Book::default();
    let t = book.apply(7, &r, &sample(1.0), 0);
    assert_eq!((t[0].from, t[0].to, t[0].value), (State::Inactive, State::Pending, 1.0));
    assert_eq!(book.next_deadline(0), Some(60 * S));
    assert_eq!(
        book.next_deadline(60 * S),
        None,
        "a deadline already evaluated waits for the tick"
    );
    assert!(book.apply(7, &r, &sample(0.95), 59 * S + 999).is_empty());
    assert_eq!(state(&book), State::Pending);
    let t = book.apply(7, &r, &sample(0.95), 60 * S);
    assert_eq!((t[0].from, t[0].to, t[0].value), (State::Pending, State::Firing, 0.95));
    assert_eq!(book.next_deadline(60 * S), None);
    notify(&mut book, 60 * S, &[Status::Firing]);
}

#[test]
fn a_rule_without_for_fires_at_once_and_values_below_the_threshold_do_not() {
    let r = rule(json!({"for": "0s"}));
    let mut book = Book::default();
    assert!(book.apply(1, &r, &sample(0.89), 0).is_empty());
    let t = book.apply(1, &r, &sample(0.9), S);
    assert_eq!((t[0].from, t[0].to), (State::Inactive, State::Firing));
}

#[test]
fn keep_firing_for_holds_a_firing_alert_through_a_short_dip() {
    let r = rule(json!({"for": "0s", "keep_firing_for": "30s"}));
    let mut book = Book::default();
    book.apply(1, &r, &sample(1.0), 0);
    notify(&mut book, 0, &[Status::Firing]);
    assert!(book.apply(1, &r, &sample(0.1), 10 * S).is_empty());
    assert!(book.apply(1, &r, &sample(0.1), 29 * S).is_empty());
    assert_eq!(state(&book), State::Firing);
    book.apply(1, &r, &sample(1.0), 35 * S);
    notify(&mut book, 35 * S, &[]);
    assert!(
        book.apply(1, &r, &[], 64 * S).is_empty(),
        "the series vanished, kept 30 s from 35 s"
    );
    let t = book.apply(1, &r, &[], 65 * S);
    assert_eq!((t[0].from, t[0].to), (State::Firing, State::Resolved));
    notify(&mut book, 65 * S, &[Status::Resolved]);
    notify(&mut book, 75 * S, &[]);
    assert_eq!(book.alerts().count(), 0, "a resolved alert is dropped once notified");
}

#[test]
fn a_flapping_condition_shorter_than_for_never_fires() {
    let r = rule(json!({"for": "30s"}));
    let mut book = Book::default();
    let mut events = Vec::new();
    for step in 0..12 {
        let value = if step % 2 == 0 { 1.0 } else { 0.0 };
        events.extend(
            book.apply(1, &r, &sample(value), step * 10 * S)
                .into_iter()
                .map(|t| t.to),
        );
        notify(&mut book, step * 10 * S, &[]);
    }
    assert!(
        events.iter().all(|s| matches!(s, State::Pending | State::Inactive)),
        "{events:?}"
    );
    assert_eq!(events.len(), 12, "every flap is recorded");
}

#[test]
fn a_flapping_firing_alert_with_keep_firing_for_notifies_once() {
    let r = rule(json!({"for": "0s", "keep_firing_for": "1m"}));
    let mut book = Book::default();
    for step in 0..20 {
        let value = if step % 3 == 0 { 0.0 } else { 1.0 };
        book.apply(1, &r, &sample(value), step * 10 * S);
        let expected: &[Status] = if step == 1 { &[Status::Firing] } else { &[] };
        notify(&mut book, step * 10 * S, expected);
    }
}

#[test]
fn a_firing_alert_is_notified_again_every_repeat_interval() {
    let r = rule(json!({"for": "0s"}));
    let mut book = Book::default();
    book.apply(1, &r, &sample(1.0), 0);
    notify(&mut book, 0, &[Status::Firing]);
    for t in [10 * S, HOUR, 4 * HOUR - 1] {
        book.apply(1, &r, &sample(1.0), t);
        notify(&mut book, t, &[]);
    }
    book.apply(1, &r, &sample(1.0), 4 * HOUR);
    notify(&mut book, 4 * HOUR, &[Status::Firing]);
    book.apply(1, &r, &sample(1.0), 5 * HOUR);
    notify(&mut book, 5 * HOUR, &[]);
}

#[test]
fn silenced_alerts_stay_listed_but_are_not_notified_until_the_silence_ends() {
    let r = rule(json!({"for": "0s"}));
    let mut book = Book::default();
    book.apply(1, &r, &sample(1.0), 0);
    let silence_ends = 30 * S;
    let silenced = |labels: &Labels, now: i64| now < silence_ends && labels.get("pool").is_some_and(|p| p == "main");
    for t in [0, 10 * S, 20 * S] {
        book.apply(1, &r, &sample(1.0), t);
        assert!(book.plan(t, policy(4 * HOUR), |l| silenced(l, t)).is_empty());
        assert_eq!(state(&book), State::Firing, "still visible while silenced");
    }
    let planned = book.plan(silence_ends, policy(4 * HOUR), |l| silenced(l, silence_ends));
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].notices[0].labels["alertname"], "Pool exhaustion");
}

#[test]
fn a_rule_edited_while_firing_keeps_its_alert_and_takes_the_new_settings() {
    let r = rule(json!({"for": "0s"}));
    let mut book = Book::default();
    book.apply(1, &r, &sample(0.95), 0);
    notify(&mut book, 0, &[Status::Firing]);

    let reworded = rule(json!({"for": "0s", "annotations": {"summary": "now {{ value }}"}}));
    assert!(book.apply(1, &reworded, &sample(0.95), 10 * S).is_empty());
    notify(&mut book, 10 * S, &[]);
    assert_eq!(book.alerts().next().unwrap().annotations()["summary"], "now 95 %");

    let raised = rule(json!({"for": "0s", "threshold": 0.99}));
    let t = book.apply(1, &raised, &sample(0.95), 20 * S);
    assert_eq!((t[0].from, t[0].to), (State::Firing, State::Resolved));
    notify(&mut book, 20 * S, &[Status::Resolved]);

    let mut book = Book::default();
    book.apply(2, &r, &sample(1.0), 0);
    notify(&mut book, 0, &[Status::Firing]);
    let t = book.retire(|id| id != 2, 5 * S);
    assert_eq!(
        (t[0].from, t[0].to),
        (State::Firing, State::Resolved),
        "a removed rule resolves its alerts"
    );
    notify(&mut book, 5 * S, &[Status::Resolved]);
}

#[test]
fn a_channel_that_fails_is_retried_until_it_recovers() {
    let r = rule(json!({"for": "0s"}));
    let mut book = Book::default();
    book.apply(1, &r, &sample(1.0), 0);
    let first = book.plan(0, policy(4 * HOUR), nothing_silenced);
    assert_eq!(first.len(), 1);
    assert!(
        book.plan(S, policy(4 * HOUR), nothing_silenced).is_empty(),
        "nothing is sent twice while a delivery is under way"
    );
    book.delivered(CHANNEL, &first[0].items, false, 2 * S);
    let retry = book.plan(10 * S, policy(4 * HOUR), nothing_silenced);
    assert_eq!(retry.len(), 1, "the failed notification is sent again");
    book.delivered(CHANNEL, &retry[0].items, true, 10 * S);
    notify(&mut book, 20 * S, &[]);
    book.apply(1, &r, &sample(0.0), 30 * S);
    notify(&mut book, 30 * S, &[Status::Resolved]);
}

#[test]
fn resolved_notifications_go_only_where_the_firing_one_went() {
    let r = rule(json!({"for": "0s"}));
    let mut book = Book::default();
    book.apply(1, &r, &sample(1.0), 0);
    let muted_until = 10 * S;
    assert!(book.plan(0, policy(HOUR), |_| 0 < muted_until).is_empty());
    book.apply(1, &r, &sample(0.0), 5 * S);
    assert!(
        book.plan(5 * S, policy(HOUR), |_| false).is_empty(),
        "never told it fired: nothing to resolve"
    );
    assert_eq!(book.alerts().count(), 0);

    book.apply(1, &r, &sample(1.0), 20 * S);
    notify(&mut book, 20 * S, &[Status::Firing]);
    book.apply(1, &r, &sample(0.0), 30 * S);
    let quiet = |id: i64| {
        (id == CHANNEL).then_some(ChannelPolicy {
            repeat_interval_ms: HOUR,
            send_resolved: false,
        })
    };
    assert!(
        book.plan(30 * S, quiet, nothing_silenced).is_empty(),
        "send_resolved off"
    );
}

#[test]
fn one_alert_per_series_and_a_dry_run_changes_nothing() {
    let r = rule(json!({"for": "10s"}));
    let mut book = Book::default();
    let two = vec![
        Sample {
            labels: series("main"),
            value: 1.0,
        },
        Sample {
            labels: series("replica"),
            value: 0.5,
        },
    ];
    book.apply(1, &r, &two, 0);
    assert_eq!(book.alerts().count(), 1);
    let preview = book.preview(1, &r, &two, 10 * S);
    assert_eq!(preview[0].state, State::Pending);
    assert_eq!(preview[0].next_state, State::Firing);
    assert_eq!(preview[1].next_state, State::Inactive);
    assert_eq!(state(&book), State::Pending, "the preview left the book alone");
    let a = book.alerts().next().unwrap();
    assert_eq!(a.fingerprint(), fingerprint(&a.key));
    assert_eq!(a.fingerprint().len(), 16);
}
