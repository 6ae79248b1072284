//! Store behaviour a user relies on: exact merges and rollups, idempotent
//! resends, late windows, compaction, retention, crash recovery.

use std::sync::Arc;
use std::time::Duration;

use querypulse_domain::{
    Batch, Fingerprint, FingerprintText, Gauge, Hello, PoolStats, QueryStats, SlowQuerySample, Window,
};

use super::codec::key;
use super::partition::{self, Partition, floor};
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

/// Flushes the memtable, then runs a maintenance pass over what the
/// partitions hold.
fn maintain(writer: &mut StoreWriter, budget: Duration) -> crate::MaintenanceReport {
    writer.checkpoint().unwrap();
    writer.maintain(budget).unwrap()
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
fn late_windows_land_in_their_own_time_at_every_resolution_even_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let hour = floor(NOW, HOUR) - 3 * HOUR;
    let svc = |store: &Store| service(store);
    write(
        &mut writer,
        vec![
            request("a", batch(1, hour + 10_000, &[100])),
            request("a", batch(2, hour + 20_000, &[200])),
        ],
    );
    // Much later: the hour's raw windows are compacted into one chunk.
    let report = maintain(&mut writer, Duration::from_secs(10));
    assert!(report.chunks_compacted >= 1, "{report:?}");
    let series = store
        .registry()
        .series_id(&SeriesKey::Query {
            service: svc(&store),
            fingerprint: fingerprint(),
        })
        .unwrap();
    let partition = store.partitions().get(Tier::Raw, hour).unwrap();
    assert!(
        partition
            .get(&key::window(series, hour + 10_000, key::SINGLE))
            .unwrap()
            .is_none()
    );
    assert!(partition.get(&key::window(series, hour, key::CHUNK)).unwrap().is_some());

    // An agent that was cut off sends its window of that hour now.
    write(&mut writer, vec![request("b", batch(1, hour + 10_000, &[400]))]);
    let raw = store
        .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
        .unwrap();
    assert_eq!(
        raw.iter().map(|(t, s)| (*t - hour, s.calls)).collect::<Vec<_>>(),
        vec![(10_000, 2), (20_000, 1)]
    );
    let minute = store
        .windows::<QueryStats>(Tier::Minute, series, hour, hour + MINUTE)
        .unwrap();
    assert_eq!(minute[0].1.calls, 3);
    let hourly = store
        .windows::<QueryStats>(Tier::Hour, series, hour, hour + HOUR)
        .unwrap();
    assert_eq!((hourly[0].1.calls, hourly[0].1.max_us), (3, 400));
    let summary = store
        .query(svc(&store), fingerprint(), hour, hour + HOUR)
        .unwrap()
        .unwrap();
    assert_eq!(summary.calls, 3);
}

#[test]
fn compaction_keeps_every_window_and_shrinks_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let hour = floor(NOW, HOUR) - 5 * HOUR;
    fill_hour(&mut writer, hour);
    let series = query_series(&store);
    let before = store
        .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
        .unwrap();
    let partition = store.partitions().get(Tier::Raw, hour).unwrap();
    let value_bytes = |partition: &Partition| -> usize {
        partition
            .range(b"w", b"x")
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k[1..5] == series.to_be_bytes())
            .map(|(_, v)| v.len())
            .sum()
    };
    let single_bytes = value_bytes(&partition);
    maintain(&mut writer, Duration::from_secs(30));
    let after = store
        .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
        .unwrap();
    assert_eq!(after, before);
    let chunk_bytes = value_bytes(&partition);
    assert!(
        chunk_bytes * 3 < single_bytes,
        "chunk {chunk_bytes} B vs {single_bytes} B as single windows"
    );
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
    let report = maintain(&mut writer, Duration::from_secs(1));
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
    maintain(&mut writer, Duration::from_secs(1));
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
    maintain(&mut writer, Duration::from_secs(1));
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

/// A store with a full hour 5 hours ago, compacted, its partition being
/// sealed: the directory, store, writer, hour and query series.
fn closed_hour() -> (tempfile::TempDir, Store, StoreWriter, i64, u32) {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let hour = floor(NOW, HOUR) - 5 * HOUR;
    fill_hour(&mut writer, hour);
    let series = query_series(&store);
    maintain(&mut writer, Duration::from_secs(30));
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
        sealed_bytes * 4 < live_bytes,
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
    assert_eq!(maintain(&mut writer, Duration::from_secs(30)).partitions_sealed, 0);
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
        maintain(&mut writer, Duration::from_secs(30));
        assert_eq!(writer.wait_for_sealing().unwrap(), 1);
        // An agent cut off for hours delivers its window now.
        write(&mut writer, vec![request("b", batch(1, hour + 10_000, &[90_000]))]);
        writer.checkpoint().unwrap();
        let partition = store.partitions().get(Tier::Raw, hour).unwrap();
        assert!(partition.is_sealed() && partition.has_overlay());
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
    assert!(partition.has_overlay());
    let expect = store
        .windows::<QueryStats>(Tier::Raw, series, hour, hour + HOUR)
        .unwrap();
    assert_eq!(expect.iter().map(|(_, s)| s.calls).sum::<u64>(), 360 * 40 + 1);
    maintain(&mut writer, Duration::from_secs(30));
    assert_eq!(writer.wait_for_sealing().unwrap(), 0, "the overlay is not quiet yet");
    store.clock().advance(6 * MINUTE);
    maintain(&mut writer, Duration::from_secs(30));
    assert_eq!(writer.wait_for_sealing().unwrap(), 1);
    let partition = store.partitions().get(Tier::Raw, hour).unwrap();
    assert!(partition.is_sealed() && !partition.has_overlay());
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
    maintain(&mut writer, Duration::from_secs(30));
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

    // The raw window of "a" loses a call behind the rollups' back: what the
    // late-window bug did.
    let series = query_series(&store);
    let partition = store.partitions().get(Tier::Raw, t).unwrap();
    let mut damaged = sled::Batch::default();
    damaged.insert(
        &key::window(series, t, key::SINGLE)[..],
        super::codec::WindowValue::encode(&stats(&[100])),
    );
    partition.apply(damaged).unwrap();

    let report = super::verify(&store);
    let checks: Vec<&str> = report.problems.iter().map(|p| p.check.as_str()).collect();
    assert!(checks.contains(&"rollup raw→1m"), "{report}");
    assert!(checks.contains(&"service vs instances (raw)"), "{report}");
    let rollup = report.problems.iter().find(|p| p.check == "rollup raw→1m").unwrap();
    assert_eq!((rollup.from_ms, rollup.to_ms), (t, t + MINUTE));
    assert!(rollup.subject.contains("orders") && rollup.subject.contains(&fingerprint().to_string()));
    assert!(
        rollup.detail.contains("calls 2 ") && rollup.detail.contains("calls 3 "),
        "{rollup}"
    );
    assert!(report.to_string().ends_with("2 disagreements"), "{report}");
}

#[test]
fn verify_reads_every_sealed_block_and_reports_a_damaged_one() {
    let (dir, store, mut writer, hour, _) = closed_hour();
    assert_eq!(writer.wait_for_sealing().unwrap(), 1);
    let report = super::verify(&store);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.sealed_partitions, 1);
    assert!(report.sealed_entries > 0);
    drop((store, writer));

    // Flip bytes in the middle of the sealed file's first block.
    let path = dir
        .path()
        .join("partitions/raw")
        .join(floor(hour, 6 * HOUR).to_string())
        .join("sealed.seg");
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[64..96] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    let (store, _writer) = open(dir.path());
    let report = super::verify(&store);
    let sealed: Vec<_> = report.problems.iter().filter(|p| p.check == "sealed block").collect();
    assert!(!sealed.is_empty(), "{report}");
    assert!(sealed[0].subject.starts_with("raw partition"), "{}", sealed[0]);
}

#[test]
fn reads_during_compaction_and_sealing_count_every_window_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, mut writer) = open(dir.path());
    let hour = floor(NOW, HOUR) - 5 * HOUR;
    fill_hour(&mut writer, hour);
    let service = service(&store);
    let expected = store.query(service, fingerprint(), hour, hour + HOUR).unwrap().unwrap();
    assert_eq!(expected.calls, 360 * 40);

    // A reader runs against the store while compaction rewrites every
    // single window into chunks and the partition is sealed: each read sees
    // a partition between two applied batches, never half of a compaction.
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
    let report = maintain(&mut writer, Duration::from_secs(30));
    assert!(report.windows_compacted >= 360, "{report:?}");
    assert_eq!(writer.wait_for_sealing().unwrap(), 1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("every read during maintenance was exact");
    assert!(reads >= 20);
}
