//! Store behaviour a user relies on: exact merges and rollups, idempotent
//! resends, late windows, memtable flushes and runs, sealing, retention,
//! crash recovery.

use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use querypulse_domain::{
    Batch, Fingerprint, FingerprintText, Gauge, Hello, PoolStats, QueryStats, SlowQuerySample, Window,
};

use super::codec::key;
use super::partition::{self, floor};
use super::*;
use querypulse_domain::Clock;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// A fixed "now" far from partition boundaries: 2026-11-27T10:00:00Z.
const NOW: i64 = 1_795_773_600_000;
const TEXT: &str = "select * from orders where id = ?";

fn fingerprint() -> Fingerprint {
    Fingerprint::of_normalized(TEXT)
}

fn hello(instance: &str) -> Arc<Hello> {
    Arc::new(Hello {
        service: "orders".into(),
        instance_id: instance.into(),
        ..Hello::default()
    })
}

fn stats(latencies: &[u64]) -> QueryStats {
    let mut s = QueryStats::new(fingerprint());
    for (i, us) in latencies.iter().enumerate() {
        s.record(*us, 1, (i % 4 == 3).then_some("40001"));
    }
    s
}

fn batch(seq: u64, start_ms: i64, latencies: &[u64]) -> Batch {
    let mut b = Batch::new(
        seq,
        Window {
            start_ms,
            length_ms: 10_000,
        },
    );
    b.queries.push(stats(latencies));
    b
}

fn request(instance: &str, batch: Batch) -> BatchRequest {
    BatchRequest {
        hello: hello(instance),
        batch,
        texts: vec![FingerprintText {
            fingerprint: fingerprint(),
            text: TEXT.into(),
        }],
    }
}

fn open(dir: &std::path::Path) -> (Store, StoreWriter) {
    Store::open(dir, Retention::default(), Limits::default(), Clock::manual(NOW)).unwrap()
}

fn write(writer: &mut StoreWriter, requests: Vec<BatchRequest>) -> Vec<ApplyOutcome> {
    writer.write(requests).unwrap()
}

/// Starts a flush in the background and returns at once.
fn testing_flush(writer: &mut StoreWriter) {
    writer.finish_flush().unwrap();
    writer.start_flush().unwrap();
}

/// Flushes the memtable, then runs a maintenance pass over what the
/// partitions hold.
fn maintain(writer: &mut StoreWriter) -> crate::MaintenanceReport {
    writer.checkpoint().unwrap();
    writer.maintain().unwrap()
}

/// Runs `check` on the store as it is, once its memtable is flushed, and
/// after a restart.
fn in_memory_flushed_and_reopened(
    dir: &std::path::Path,
    store: Store,
    mut writer: StoreWriter,
    check: impl Fn(&Store),
) {
    check(&store);
    writer.checkpoint().unwrap();
    check(&store);
    drop((store, writer));
    let (store, _writer) = open(dir);
    check(&store);
}

fn service(store: &Store) -> u32 {
    store.service_id("orders").unwrap()
}

#[test]
fn instances_merge_into_one_series_and_resends_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let t = NOW - 5 * MINUTE;
    let outcomes = write(
        &mut writer,
        vec![
            request("a", batch(1, t, &[100, 200])),
            request("b", batch(1, t, &[300])),
            request("a", batch(1, t, &[100, 200])),
        ],
    );
    assert_eq!(
        outcomes,
        vec![ApplyOutcome::Applied, ApplyOutcome::Applied, ApplyOutcome::Duplicate]
    );
    assert_eq!(
        write(&mut writer, vec![request("b", batch(1, t, &[300]))]),
        vec![ApplyOutcome::Duplicate]
    );

    let merged = store
        .query(service(&store), fingerprint(), t - MINUTE, NOW)
        .unwrap()
        .unwrap();
    assert_eq!((merged.calls, merged.min_us, merged.max_us), (3, 100, 300));
    assert_eq!(store.text(fingerprint()).unwrap().as_deref(), Some(TEXT));
    let breakdown = store
        .instance_breakdown("orders", fingerprint(), t - MINUTE, NOW)
        .unwrap();
    let mut calls: Vec<(String, u64)> = breakdown
        .iter()
        .map(|(i, q)| (i.instance_id.clone(), q.calls))
        .collect();
    calls.sort();
    assert_eq!(calls, vec![("a".into(), 2), ("b".into(), 1)]);
}

#[test]
fn a_batch_with_an_unknown_fingerprint_is_rejected_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let mut req = request("a", batch(1, NOW, &[100]));
    req.texts.clear();
    let outcome = write(&mut writer, vec![req]);
    assert!(matches!(&outcome[0], ApplyOutcome::Rejected(reason) if reason.contains("unknown")));
    assert!(store.services().is_empty(), "nothing was half written");
    // The same batch with its text is accepted afterwards: a rejection leaves no marker.
    assert_eq!(
        write(&mut writer, vec![request("a", batch(1, NOW, &[100]))]),
        vec![ApplyOutcome::Applied]
    );
}

#[test]
fn rollups_equal_the_exact_merge_of_their_windows() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let minute = NOW - 10 * MINUTE;
    let mut expected = QueryStats::new(fingerprint());
    let mut requests = Vec::new();
    for i in 0..6u64 {
        let latencies: Vec<u64> = (1..=50).map(|v| v * (i + 1) * 37).collect();
        expected.merge(&stats(&latencies));
        requests.push(request("a", batch(i + 1, minute + i as i64 * 10_000, &latencies)));
    }
    write(&mut writer, requests);
    let series = store
        .registry()
        .series_id(&SeriesKey::Query {
            service: service(&store),
            fingerprint: fingerprint(),
        })
        .unwrap();
    let raw = store
        .windows::<QueryStats>(Tier::Raw, series, minute, minute + MINUTE)
        .unwrap();
    assert_eq!(raw.len(), 6);
    let one_minute = store
        .windows::<QueryStats>(Tier::Minute, series, minute, minute + MINUTE)
        .unwrap();
    let hour = floor(minute, HOUR);
    let one_hour = store
        .windows::<QueryStats>(Tier::Hour, series, hour, hour + HOUR)
        .unwrap();
    let mut expected_rollup = expected.clone();
    expected_rollup.fingerprint = Fingerprint::OTHER; // stored values carry no fingerprint
    assert_eq!(one_minute, vec![(minute, expected_rollup.clone())]);
    assert_eq!(one_hour, vec![(hour, expected_rollup)]);
}

#[test]
fn late_windows_merge_into_closed_windows_and_their_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let hour = floor(NOW, HOUR) - 3 * HOUR;
    write(
        &mut writer,
        vec![
            request("a", batch(1, hour + 10_000, &[100])),
            request("a", batch(2, hour + 20_000, &[200])),
        ],
    );
    // The windows closed long ago and are in the partitions' runs.
    writer.checkpoint().unwrap();
    let series = query_series(&store);
    assert!(!store.partitions().get(Tier::Raw, hour).unwrap().runs().is_empty());

    // An agent that was cut off sends its window of that hour now: it is
    // exact at every resolution while in the memtable, once flushed, and
    // after a restart.
    write(&mut writer, vec![request("b", batch(1, hour + 10_000, &[400]))]);
    let check = |store: &Store| {
        let raw = store
            .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
            .unwrap();
        assert_eq!(
            raw.iter().map(|(t, s)| (*t - hour, s.calls)).collect::<Vec<_>>(),
            vec![(10_000, 2), (20_000, 1)]
        );
        assert_eq!(raw[0].1.max_us, 400);
        let minute = store
            .windows::<QueryStats>(Tier::Minute, series, hour, hour + MINUTE)
            .unwrap();
        assert_eq!(minute.len(), 1);
        assert_eq!(minute[0].1.calls, 3);
        let hourly = store
            .windows::<QueryStats>(Tier::Hour, series, hour, hour + HOUR)
            .unwrap();
        assert_eq!((hourly[0].1.calls, hourly[0].1.max_us), (3, 400));
        let summary = store
            .query(service(store), fingerprint(), hour, hour + HOUR)
            .unwrap()
            .unwrap();
        assert_eq!(summary.calls, 3);
        let mut by_instance: Vec<(String, u64)> = store
            .instance_breakdown("orders", fingerprint(), hour, hour + HOUR)
            .unwrap()
            .into_iter()
            .map(|(i, q)| (i.instance_id, q.calls))
            .collect();
        by_instance.sort();
        assert_eq!(by_instance, vec![("a".into(), 2), ("b".into(), 1)]);
    };
    in_memory_flushed_and_reopened(dir.path(), store, writer, check);
}

#[test]
fn a_flush_that_fails_keeps_every_window_and_the_next_one_writes_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let hour = floor(NOW, HOUR) - 3 * HOUR;
    // A file where the raw partition's directory goes: no run can be
    // written there (a full or broken disk, as far as the flush can tell).
    let raw_start = floor(hour, Tier::Raw.partition_ms());
    let blocked = dir
        .path()
        .join("partitions")
        .join(Tier::Raw.name())
        .join(raw_start.to_string());
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, b"not a directory").unwrap();
    let acked = write(
        &mut writer,
        vec![
            request("a", batch(1, hour + 10_000, &[100, 300])),
            request("b", batch(1, hour + 10_000, &[200])),
        ],
    );
    assert_eq!(acked, vec![ApplyOutcome::Applied, ApplyOutcome::Applied]);
    assert!(writer.checkpoint().is_err(), "the flush cannot write the raw partition");

    let calls = |store: &Store, tier: Tier, span: i64| {
        store
            .windows::<QueryStats>(tier, query_series(store), hour, hour + span)
            .unwrap()
            .iter()
            .map(|(_, s)| s.calls)
            .sum::<u64>()
    };
    let every_tier = |store: &Store| {
        [(Tier::Raw, MINUTE), (Tier::Minute, HOUR), (Tier::Hour, HOUR)].map(|(tier, span)| calls(store, tier, span))
    };
    // Still read from memory, once, at every resolution; the runs the
    // failed flush wrote elsewhere (1-minute, 1-hour) were not kept.
    assert_eq!(every_tier(&store), [3, 3, 3]);
    for tier in [Tier::Minute, Tier::Hour] {
        if let Some(partition) = store.partitions().get(tier, hour) {
            assert!(partition.runs().is_empty(), "{tier:?} keeps no run of the failed flush");
        }
    }

    // Once the disk is writable again, the next flush writes them once.
    std::fs::remove_file(&blocked).unwrap();
    in_memory_flushed_and_reopened(dir.path(), store, writer, |store| {
        assert_eq!(every_tier(store), [3, 3, 3]);
    });
}

#[test]
fn flushes_merge_their_runs_and_keep_every_window() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let hour = floor(NOW, HOUR) - 2 * HOUR;
    // Forty flushes of one window each: the raw, 1-minute and 1-hour
    // partitions would hold forty runs each; merging keeps a few.
    for i in 0..40i64 {
        write(
            &mut writer,
            vec![request("a", batch(i as u64 + 1, hour + i * 10_000, &[100 + i as u64]))],
        );
        writer.checkpoint().unwrap();
    }
    for tier in Tier::ALL {
        let runs = store.partitions().get(tier, hour).unwrap().runs().len();
        assert!((1..=super::flush::MAX_RUNS).contains(&runs), "{tier:?}: {runs} runs");
    }
    let series = query_series(&store);
    let check = |store: &Store| {
        let raw = store
            .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
            .unwrap();
        assert_eq!(raw.len(), 40);
        assert!(raw.iter().all(|(_, s)| s.calls == 1));
        let minutes = store
            .windows::<QueryStats>(Tier::Minute, series, hour, hour + HOUR)
            .unwrap();
        assert_eq!(
            minutes.iter().map(|(_, s)| s.calls).collect::<Vec<_>>(),
            vec![6, 6, 6, 6, 6, 6, 4]
        );
        let hourly = store
            .windows::<QueryStats>(Tier::Hour, series, hour, hour + HOUR)
            .unwrap();
        assert_eq!(
            (hourly[0].1.calls, hourly[0].1.min_us, hourly[0].1.max_us),
            (40, 100, 139)
        );
    };
    check(&store);
    drop((store, writer));
    let (store, _writer) = open(dir.path());
    check(&store);
    let report = super::verify(&store);
    assert!(report.is_clean(), "{report}");
}

#[test]
fn retention_drops_whole_partitions_and_the_disk_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let old = NOW - 4 * DAY;
    for i in 0..200u64 {
        let latencies: Vec<u64> = (0..200).map(|v| 100 + v * 97 + i).collect();
        write(
            &mut writer,
            vec![request("a", batch(i + 1, old + i as i64 * 10_000, &latencies))],
        );
    }
    write(&mut writer, vec![request("a", batch(1_000, NOW - MINUTE, &[5]))]);
    writer.checkpoint().unwrap();
    let before = store.disk_bytes();
    let raw_before = store.partitions().all().iter().filter(|p| p.tier == Tier::Raw).count();
    let report = maintain(&mut writer);
    assert!(report.partitions_dropped >= 1);
    let raw_after = store.partitions().all().iter().filter(|p| p.tier == Tier::Raw).count();
    assert_eq!(
        raw_after,
        raw_before - 1,
        "the old raw partition went; the current one stayed"
    );
    assert!(store.disk_bytes() < before, "{} -> {}", before, store.disk_bytes());
    // The minute rollups of those days are still there.
    let summary = store
        .query(service(&store), fingerprint(), old, old + HOUR)
        .unwrap()
        .unwrap();
    assert_eq!(summary.calls, 200 * 200);

    // Shorter retention, changed at run time, takes effect at the next pass.
    store.set_retention(Retention {
        minute_seconds: 3_600,
        raw_seconds: 3_600,
        ..Retention::default()
    });
    maintain(&mut writer);
    assert!(
        store
            .partitions()
            .all()
            .iter()
            .all(|p| p.tier == Tier::Hour || p.end_ms() > NOW - 2 * DAY)
    );
}

#[test]
fn instances_silent_past_every_retention_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    store.set_retention(Retention {
        raw_seconds: 3_600,
        minute_seconds: 2 * 3_600,
        hour_seconds: 86_400,
        max_bytes: None,
    });
    let gone = NOW - 2 * DAY;
    store.clock().set(gone);
    writer.write(vec![request("gone", batch(1, gone, &[100]))]).unwrap();
    // Heard from by a hello only, as long ago: forgotten too.
    writer.register(&hello("hello-only")).unwrap();
    // Silent for 20 hours: its hourly data is still kept, so it stays.
    store.clock().set(NOW - 20 * HOUR);
    writer
        .write(vec![request("quiet", batch(1, NOW - 20 * HOUR, &[100]))])
        .unwrap();
    store.clock().set(NOW);
    write(&mut writer, vec![request("live", batch(1, NOW - MINUTE, &[100]))]);
    maintain(&mut writer);
    let mut left: Vec<String> = store.instances().into_iter().map(|i| i.instance_id).collect();
    left.sort();
    assert_eq!(left, ["live", "quiet"]);

    // Forgotten for good: not back after a restart...
    drop(writer);
    drop(store);
    let (store, mut writer) = open(dir.path());
    let mut left: Vec<String> = store.instances().into_iter().map(|i| i.instance_id).collect();
    left.sort();
    assert_eq!(left, ["live", "quiet"]);
    // ...until the instance reports again.
    write(&mut writer, vec![request("gone", batch(2, NOW - MINUTE, &[100]))]);
    assert!(store.instances().iter().any(|i| i.instance_id == "gone"));
}

#[test]
fn a_damaged_log_entry_loses_only_itself_and_the_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_, mut writer) = open(dir.path());
        write(&mut writer, vec![request("a", batch(1, NOW - MINUTE, &[100]))]);
        // Three entries logged but not applied (a crash), the middle one
        // then damaged on disk.
        for (seq, latencies) in [(2, &[200, 300][..]), (3, &[400, 500, 600][..]), (4, &[700; 4][..])] {
            let mut entries = vec![super::codec::WalEntry {
                wal_seq: 0,
                received_ms: NOW,
                service: "orders".into(),
                instance_id: "a".into(),
                batch: batch(seq, NOW - MINUTE + 10_000 * seq as i64, latencies),
            }];
            writer.wal.append(&mut entries).unwrap();
        }
    }
    let segment = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let frame_len = |at: usize| 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let (mut at, mut starts) = (0, Vec::new());
    while at < bytes.len() {
        starts.push(at);
        at += frame_len(at);
    }
    let damaged = starts[starts.len() - 2];
    bytes[damaged + 20] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let (store, _) = open(dir.path());
    let summary = store
        .query(service(&store), fingerprint(), NOW - HOUR, NOW)
        .unwrap()
        .unwrap();
    assert_eq!(summary.calls, 1 + 2 + 4, "everything but the damaged entry");
    let problems = store.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("damaged") && problems[0].contains("lost"),
        "{problems:?}"
    );
}

#[test]
fn the_log_is_replayed_into_databases_that_missed_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_, mut writer) = open(dir.path());
        write(&mut writer, vec![request("a", batch(1, NOW - MINUTE, &[100]))]);
        // Logged but never applied: what a crash between the fsync and the
        // database writes leaves behind.
        let mut entries = vec![super::codec::WalEntry {
            wal_seq: 0,
            received_ms: NOW,
            service: "orders".into(),
            instance_id: "a".into(),
            batch: batch(2, NOW - MINUTE + 10_000, &[200, 300]),
        }];
        writer.wal.append(&mut entries).unwrap();
    }
    {
        let (store, mut writer) = open(dir.path());
        let summary = store
            .query(service(&store), fingerprint(), NOW - HOUR, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(summary.calls, 3, "the logged batch was applied once");
        let resent = write(
            &mut writer,
            vec![request("a", batch(2, NOW - MINUTE + 10_000, &[200, 300]))],
        );
        assert_eq!(resent, vec![ApplyOutcome::Duplicate]);
    }
    let (store, _) = open(dir.path());
    assert_eq!(
        store
            .query(service(&store), fingerprint(), NOW - HOUR, NOW)
            .unwrap()
            .unwrap()
            .calls,
        3
    );
}

#[test]
fn fingerprints_beyond_the_service_limit_fold_into_other() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_fingerprints_per_service: 2,
        ..Limits::default()
    };
    let (store, mut writer) = Store::open(dir.path(), Retention::default(), limits, Clock::manual(NOW)).unwrap();
    let mut b = Batch::new(
        1,
        Window {
            start_ms: NOW - MINUTE,
            length_ms: 10_000,
        },
    );
    let mut texts = Vec::new();
    for table in ["a", "b", "c", "d"] {
        let text = format!("select * from {table}");
        let fp = Fingerprint::of_normalized(&text);
        let mut s = QueryStats::new(fp);
        s.record(10, 0, None);
        b.queries.push(s);
        texts.push(FingerprintText { fingerprint: fp, text });
    }
    let outcome = writer
        .write(vec![BatchRequest {
            hello: hello("a"),
            batch: b,
            texts,
        }])
        .unwrap();
    assert_eq!(outcome, vec![ApplyOutcome::Applied]);
    let services = store.services();
    assert_eq!(services[0].3, 2, "two fingerprints counted as overflow");
    let stats = store.query_stats(service(&store), NOW - HOUR, NOW).unwrap();
    let other = stats.iter().find(|s| s.fingerprint == Fingerprint::OTHER).unwrap();
    assert_eq!(other.calls, 2);
    assert_eq!(stats.iter().map(|s| s.calls).sum::<u64>(), 4, "nothing is lost");
}

/// Every statement of `service` merged, the slow way.
fn merged_statements(store: &Store, service: u32, from: i64, to: i64) -> Option<QueryStats> {
    let mut merged: Option<QueryStats> = None;
    for stats in store.query_stats(service, from, to).unwrap() {
        match &mut merged {
            Some(m) => m.merge(&stats),
            None => merged = Some(stats),
        }
    }
    merged.map(|mut m| {
        m.fingerprint = Fingerprint::OTHER;
        m
    })
}

#[test]
fn a_service_total_equals_its_statements_merged_and_an_upgraded_store_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let other_text = "update orders set state = ? where id = ?";
    let other = Fingerprint::of_normalized(other_text);
    for (i, at) in (0..12).map(|i| (i, NOW - 2 * HOUR + i * 10_000)) {
        let mut b = batch(i as u64 + 1, at, &[100 + i as u64, 2_000, 35_000]);
        let mut s = QueryStats::new(other);
        s.record(700 * (i as u64 + 1), 3, None);
        b.queries.push(s);
        let mut r = request("a", b);
        r.texts.push(FingerprintText {
            fingerprint: other,
            text: other_text.into(),
        });
        assert_eq!(write(&mut writer, vec![r]), vec![ApplyOutcome::Applied]);
    }
    let svc = service(&store);
    let ranges = [
        (NOW - 3 * HOUR, NOW),
        (NOW - 2 * HOUR + 30_000, NOW - 2 * HOUR + 70_000),
    ];
    let check = |store: &Store| {
        for (from, to) in ranges {
            let total = store.service_stats(svc, from, to).unwrap();
            assert!(total.as_ref().is_some_and(|t| t.calls > 0));
            assert_eq!(total, merged_statements(store, svc, from, to), "[{from}, {to})");
        }
    };
    // In the memtable, then in runs.
    check(&store);
    writer.checkpoint().unwrap();
    check(&store);

    // A store written by a version without totals: its registry knows no
    // total series. Totals start after its newest window, so older ranges
    // are read statement by statement.
    drop((store, writer));
    {
        let meta = sled::open(dir.path().join("meta")).unwrap();
        meta.remove(super::registry::SERVICE_TOTALS_SINCE).unwrap();
        let mut total_key = b"kV".to_vec();
        total_key.extend_from_slice(&svc.to_be_bytes());
        assert!(
            meta.remove(total_key).unwrap().is_some(),
            "the total series was registered"
        );
        meta.flush().unwrap();
    }
    let (store, writer) = open(dir.path());
    check(&store);
    // The start of totals is decided once.
    drop((store, writer));
    let (store, _writer) = open(dir.path());
    check(&store);
}

#[test]
fn pools_health_and_slow_samples_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let t = NOW - 2 * MINUTE;
    let mut b = batch(1, t, &[2_000_000]);
    let mut pool = PoolStats {
        pool: "main".into(),
        max_size: 2,
        acquires: 10,
        timeouts: 1,
        ..PoolStats::default()
    };
    pool.in_use = Gauge { last: 2, peak: 2 };
    pool.waiting = Gauge { last: 3, peak: 8 };
    pool.acquire_wait.record(150_000);
    b.pools.push(pool);
    let mut health = querypulse_domain::HealthCheckStats {
        pool: "main".into(),
        checks: 2,
        failures: 1,
        ..Default::default()
    };
    health.latency.record(900);
    health.latency.record(1_100);
    b.health_checks.push(health);
    b.slow_queries.push(SlowQuerySample {
        fingerprint: fingerprint(),
        at_ms: t + 5_000,
        duration_us: 2_000_000,
        rows: 0,
        error_class: None,
        pool: Some("main".into()),
        raw_text: None,
    });
    write(&mut writer, vec![request("a", b)]);
    let mut b2 = batch(2, t + 10_000, &[10]);
    b2.pools.push(PoolStats {
        pool: "main".into(),
        max_size: 2,
        acquires: 5,
        in_use: Gauge { last: 0, peak: 1 },
        ..PoolStats::default()
    });
    write(&mut writer, vec![request("a", b2)]);

    let pools = store.pools(NOW - HOUR, NOW).unwrap();
    assert_eq!(pools.len(), 1);
    let p = &pools[0];
    assert_eq!(
        (p.service.as_str(), p.instance_id.as_str(), p.pool.as_str()),
        ("orders", "a", "main")
    );
    assert_eq!(
        (p.stats.acquires, p.stats.timeouts, p.stats.in_use),
        (15, 1, Gauge { last: 0, peak: 2 })
    );
    assert_eq!(p.stats.waiting.peak, 8);
    assert_eq!(p.health.as_ref().map(|h| (h.checks, h.failures)), Some((2, 1)));

    let slow = store.slow_samples(None, None, NOW - HOUR, NOW, 10).unwrap();
    assert_eq!(slow.len(), 1);
    assert_eq!(
        (slow[0].service.as_str(), slow[0].instance_id.as_str()),
        ("orders", "a")
    );
    assert!(
        store
            .slow_samples(None, Some(Fingerprint::new(1)), NOW - HOUR, NOW, 10)
            .unwrap()
            .is_empty()
    );

    let (steps, health_steps) = store.pool_steps("a", "main", t, t + MINUTE, MINUTE).unwrap().unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].1.acquires, 15);
    assert_eq!(health_steps[0].1.checks, 2);
}

/// Fills the raw hour starting at `hour` with 360 windows of 40 calls.
fn fill_hour(writer: &mut StoreWriter, hour: i64) {
    for i in 0..360i64 {
        let latencies: Vec<u64> = (0..40).map(|v| 800 + (v * 53 + i as u64 * 7) % 5_000).collect();
        write(
            writer,
            vec![request("a", batch(i as u64 + 1, hour + i * 10_000, &latencies))],
        );
    }
    writer.checkpoint().unwrap();
}

fn query_series(store: &Store) -> u32 {
    store
        .registry()
        .series_id(&SeriesKey::Query {
            service: service(store),
            fingerprint: fingerprint(),
        })
        .unwrap()
}

/// A store with a full hour 5 hours ago, flushed, its partition being
/// sealed: the directory, store, writer, hour and query series.
fn closed_hour() -> (tempfile::TempDir, Store, StoreWriter, i64, u32) {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let hour = floor(NOW, HOUR) - 5 * HOUR;
    fill_hour(&mut writer, hour);
    let series = query_series(&store);
    maintain(&mut writer);
    (dir, store, writer, hour, series)
}

#[test]
fn closed_partitions_are_sealed_into_fewer_bytes_and_read_the_same() {
    let (dir, store, mut writer, hour, series) = closed_hour();
    writer.checkpoint().unwrap();
    let raw_dir = dir.path().join("partitions").join("raw");
    let live_bytes = partition::disk_bytes(&raw_dir);
    let before = store
        .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
        .unwrap();
    let summary = store.query(service(&store), fingerprint(), hour, hour + HOUR).unwrap();

    assert_eq!(
        writer.wait_for_sealing().unwrap(),
        1,
        "the closed raw partition was sealed"
    );
    let partition = store.partitions().get(Tier::Raw, hour).unwrap();
    assert!(partition.is_sealed());
    assert!(
        !store.partitions().get(Tier::Minute, hour).unwrap().is_sealed(),
        "the current day of minutes stays live"
    );
    let sealed_bytes = partition::disk_bytes(&raw_dir);
    assert!(
        sealed_bytes < live_bytes,
        "sealed {sealed_bytes} B vs {live_bytes} B live"
    );
    assert_eq!(
        store
            .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
            .unwrap(),
        before
    );
    assert_eq!(
        store.query(service(&store), fingerprint(), hour, hour + HOUR).unwrap(),
        summary
    );
    // Nothing is left to seal.
    assert_eq!(maintain(&mut writer).partitions_sealed, 0);
    assert_eq!(writer.wait_for_sealing().unwrap(), 0);

    drop((store, writer));
    let (store, _) = open(dir.path());
    assert!(store.partitions().get(Tier::Raw, hour).unwrap().is_sealed());
    assert_eq!(
        store
            .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
            .unwrap(),
        before
    );
}

#[test]
fn late_windows_reach_a_sealed_partition_and_are_sealed_in_later() {
    let dir = tempfile::tempdir().unwrap();
    let hour = floor(NOW, HOUR) - 5 * HOUR;
    let series;
    {
        let (store, mut writer) = open(dir.path());
        fill_hour(&mut writer, hour);
        series = query_series(&store);
        maintain(&mut writer);
        assert_eq!(writer.wait_for_sealing().unwrap(), 1);
        // An agent cut off for hours delivers its window now.
        write(&mut writer, vec![request("b", batch(1, hour + 10_000, &[90_000]))]);
        writer.checkpoint().unwrap();
        let partition = store.partitions().get(Tier::Raw, hour).unwrap();
        assert!(partition.is_sealed() && !partition.runs().is_empty());
        let raw = store
            .windows::<QueryStats>(Tier::Raw, series, hour, hour + MINUTE)
            .unwrap();
        assert_eq!(
            raw[1],
            (hour + 10_000, {
                let mut merged = raw[1].1.clone();
                merged.calls = 41;
                merged
            })
        );
        assert_eq!(raw[1].1.max_us, 90_000);
        assert_eq!(raw.iter().map(|(_, s)| s.calls).sum::<u64>(), 6 * 40 + 1);
    }
    // The late window survives a restart, then is folded into a new sealed
    // file once the overlay has been quiet for a while.
    let (store, mut writer) = open(dir.path());
    let partition = store.partitions().get(Tier::Raw, hour).unwrap();
    assert!(!partition.runs().is_empty());
    let expect = store
        .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
        .unwrap();
    assert_eq!(expect.iter().map(|(_, s)| s.calls).sum::<u64>(), 360 * 40 + 1);
    maintain(&mut writer);
    assert_eq!(writer.wait_for_sealing().unwrap(), 0, "the overlay is not quiet yet");
    store.clock().advance(6 * MINUTE);
    maintain(&mut writer);
    assert_eq!(writer.wait_for_sealing().unwrap(), 1);
    let partition = store.partitions().get(Tier::Raw, hour).unwrap();
    assert!(partition.is_sealed() && !partition.has_overlay() && partition.runs().is_empty());
    assert_eq!(
        store
            .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
            .unwrap(),
        expect
    );
    let summary = store
        .query(service(&store), fingerprint(), hour, hour + HOUR)
        .unwrap()
        .unwrap();
    assert_eq!(summary.calls, 360 * 40 + 1);
}

#[test]
fn a_write_during_sealing_keeps_the_partition_live() {
    let (_dir, store, mut writer, hour, series) = closed_hour();
    write(&mut writer, vec![request("b", batch(1, hour + 10_000, &[90_000]))]);
    writer.checkpoint().unwrap();
    assert_eq!(
        writer.wait_for_sealing().unwrap(),
        0,
        "the sealed copy missed a write and is discarded"
    );
    assert!(!store.partitions().get(Tier::Raw, hour).unwrap().is_sealed());
    let raw = store
        .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
        .unwrap();
    assert_eq!(raw.iter().map(|(_, s)| s.calls).sum::<u64>(), 360 * 40 + 1);
    // The next pass seals it with the late window in.
    maintain(&mut writer);
    assert_eq!(writer.wait_for_sealing().unwrap(), 1);
    assert_eq!(
        store
            .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
            .unwrap(),
        raw
    );
}

#[test]
fn verify_names_the_series_and_span_where_resolutions_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let t = floor(NOW, HOUR) - 2 * HOUR;
    write(&mut writer, vec![request("a", batch(1, t, &[100, 200]))]);
    write(&mut writer, vec![request("b", batch(1, t + 10_000, &[300]))]);
    writer.checkpoint().unwrap();
    let clean = super::verify(&store);
    assert!(clean.is_clean(), "{clean}");
    assert!(clean.series >= 1 && clean.windows > 0, "{clean:?}");

    // The raw window of "a" gains a call behind the rollups' back (a value
    // beside the run's delta adds up with it).
    let series = query_series(&store);
    let partition = store.partitions().get(Tier::Raw, t).unwrap();
    let damaged = (
        sled::IVec::from(&key::window(series, t, key::SINGLE)[..]),
        sled::IVec::from(super::codec::WindowValue::encode(&stats(&[100]))),
    );
    let run = partition.write_run(0, std::iter::once(Ok(damaged))).unwrap();
    partition.install_run(run);

    let report = super::verify(&store);
    let checks: Vec<&str> = report.problems.iter().map(|p| p.check.as_str()).collect();
    assert!(checks.contains(&"rollup raw→1m"), "{report}");
    assert!(checks.contains(&"service vs instances (raw)"), "{report}");
    // The service's total no longer equals its statements either.
    let total = report
        .problems
        .iter()
        .find(|p| p.check == "service total vs statements (raw)")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!((total.subject.as_str(), total.from_ms), ("orders", t));
    assert!(
        total.detail.contains("calls 2 ") && total.detail.contains("calls 3 "),
        "{total}"
    );
    let rollup = report.problems.iter().find(|p| p.check == "rollup raw→1m").unwrap();
    assert_eq!((rollup.from_ms, rollup.to_ms), (t, t + MINUTE));
    assert!(rollup.subject.contains("orders") && rollup.subject.contains(&fingerprint().to_string()));
    assert!(
        rollup.detail.contains("calls 4 ") && rollup.detail.contains("calls 3 "),
        "{rollup}"
    );
    assert!(report.to_string().ends_with("3 disagreements"), "{report}");
}

#[test]
fn verify_reads_every_sealed_block_and_reports_a_damaged_one() {
    let (dir, store, mut writer, hour, _) = closed_hour();
    assert_eq!(writer.wait_for_sealing().unwrap(), 1);
    let report = super::verify(&store);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.sealed_partitions, 1);
    assert!(report.sealed_entries > 0);

    // Flip bytes in the sealed file's block while the store has it open
    // (the file is changed in place, as a failing disk would): verify,
    // which reads every block from disk, finds it.
    let path = dir
        .path()
        .join("partitions/raw")
        .join(floor(hour, 6 * HOUR).to_string())
        .join("sealed.seg");
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[64..96] {
        *b ^= 0x5a;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&bytes[64..96], 64)
        .unwrap();
    let report = super::verify(&store);
    let sealed: Vec<_> = report.problems.iter().filter(|p| p.check == "sealed block").collect();
    assert!(!sealed.is_empty(), "{report}");
    assert!(sealed[0].subject.starts_with("raw partition"), "{}", sealed[0]);
    assert!(sealed[0].detail.contains("is damaged"), "{}", sealed[0]);
    drop((store, writer));

    // That block also holds the partition's own records, which a start
    // reads: the partition is moved aside, the store opens without it and
    // verify says so.
    let (store, _writer) = open(dir.path());
    let report = super::verify(&store);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.check == "damaged files" && p.detail.contains("quarantine")),
        "{report}"
    );
}

#[test]
fn a_partition_whose_index_is_damaged_is_quarantined_and_the_store_opens() {
    let (dir, store, mut writer, hour, series) = closed_hour();
    assert_eq!(writer.wait_for_sealing().unwrap(), 1);
    let service = service(&store);
    // A window in the partition before, untouched.
    let before = floor(hour, 6 * HOUR) - HOUR;
    write(&mut writer, vec![request("a", batch(90, before, &[100, 200]))]);
    drop((store, writer));

    let partition = dir
        .path()
        .join("partitions/raw")
        .join(floor(hour, 6 * HOUR).to_string());
    let path = partition.join("sealed.seg");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let (store, _writer) = open(dir.path());
    let problems = store.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("raw partition") && problems[0].contains("quarantine"),
        "{problems:?}"
    );
    assert!(!partition.exists(), "moved aside");
    let kept = std::fs::read_dir(dir.path().join("quarantine")).unwrap().count();
    assert_eq!(kept, 1, "kept for inspection");
    // Its windows are missing from raw reads; the rest is there.
    assert_eq!(
        store
            .query(service, fingerprint(), before, before + MINUTE)
            .unwrap()
            .unwrap()
            .calls,
        2
    );
    assert!(
        store
            .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
            .unwrap()
            .is_empty(),
        "the raw windows went with it (the rollups, in partitions of their own, remain)"
    );
    let report = super::verify(&store);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.check == "damaged files" && p.detail.contains("quarantine")),
        "{report}"
    );
}

#[test]
fn reads_during_flushes_and_sealing_count_every_window_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let hour = floor(NOW, HOUR) - 5 * HOUR;
    fill_hour(&mut writer, hour);
    let service = service(&store);
    let expected = store.query(service, fingerprint(), hour, hour + HOUR).unwrap().unwrap();
    assert_eq!(expected.calls, 360 * 40);

    // A reader runs against the store while flushes add runs and merge
    // them, and the partition is sealed: each read sees every window once,
    // never in a frozen memtable and its run both, never half of a merge.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop, expected) = (store.clone(), stop.clone(), expected.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads < 20 {
                let got = store.query(service, fingerprint(), hour, hour + HOUR).unwrap().unwrap();
                assert_eq!(got, expected, "read {reads} during maintenance");
                let raw: u64 = store
                    .windows::<QueryStats>(Tier::Raw, query_series(&store), hour, hour + HOUR)
                    .unwrap()
                    .iter()
                    .map(|(_, s)| s.calls)
                    .sum();
                assert_eq!(raw, expected.calls, "raw windows, read {reads}");
                reads += 1;
            }
            reads
        })
    };
    // Other hours' windows flush again and again meanwhile.
    for i in 0..20u64 {
        let other = hour + 2 * HOUR + i as i64 * 10_000;
        write(&mut writer, vec![request("b", batch(i + 1, other, &[100]))]);
        testing_flush(&mut writer);
    }
    maintain(&mut writer);
    assert_eq!(writer.wait_for_sealing().unwrap(), 1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("every read during maintenance was exact");
    assert!(reads >= 20);
}

#[test]
fn the_memtable_stays_within_its_bound_under_a_flood_of_distinct_series() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        memtable_bytes: 64 << 10,
        ..Limits::default()
    };
    let (store, mut writer) = Store::open(dir.path(), Retention::default(), limits, Clock::manual(NOW)).unwrap();
    let hour = floor(NOW, HOUR) - HOUR;
    // 300 batches of 20 statements never seen before: 6,000 series, each
    // window several hundred bytes in the memtable.
    let mut largest = 0;
    for i in 0..300u64 {
        let mut b = Batch::new(i + 1, Window::containing(hour + i as i64 * 10_000, 10_000));
        let mut texts = Vec::new();
        for j in 0..20u64 {
            let fp = Fingerprint::new(1_000 + i * 20 + j);
            let mut stats = QueryStats::new(fp);
            for v in 0..30 {
                stats.record(100 + v * 37 + j, 1, None);
            }
            b.queries.push(stats);
            texts.push(FingerprintText {
                fingerprint: fp,
                text: format!("select {j} from t{i}"),
            });
        }
        let outcome = writer
            .write(vec![BatchRequest {
                hello: hello("a"),
                batch: b,
                texts,
            }])
            .unwrap();
        assert_eq!(outcome, vec![ApplyOutcome::Applied]);
        largest = largest.max(store.memtable_stats().bytes);
    }
    let stats = store.memtable_stats();
    assert!(
        // The bound, plus the batch merged into each half before the writer
        // froze it or waited.
        largest <= (64 << 10) + 2 * (20 << 10),
        "the active and the frozen table held {largest} B against a bound of 64 KiB"
    );
    assert!(stats.early_flushes > 10, "{stats:?}");
    // Every window is there, once.
    let service = service(&store);
    let all = store.query_stats(service, hour, hour + 2 * HOUR).unwrap();
    assert_eq!(all.len(), 6_000);
    assert!(all.iter().all(|s| s.calls == 30));
    writer.checkpoint().unwrap();
    let stats = store.memtable_stats();
    assert_eq!(stats.bytes, 0);
    assert!(stats.flushes >= stats.early_flushes, "{stats:?}");
    let all = store.query_stats(service, hour, hour + 2 * HOUR).unwrap();
    assert_eq!(all.iter().map(|s| s.calls).sum::<u64>(), 6_000 * 30);
}
