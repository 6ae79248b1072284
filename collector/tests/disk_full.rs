//! The collector's disk fills up while agents report, then space is freed:
//! the collector refuses batches instead of failing writes (agents keep them
//! and resend), says so once in its log and on `/healthz` and in
//! `/metrics`, and takes batches again by itself within seconds of space
//! returning, without a restart; every call the load generator had
//! acknowledged is then in the store, once.
//!
//! The data directory is a 64 MiB tmpfs the test mounts, so it needs root:
//! `QUERYPULSE_TEST_DISK_FULL=1` (set by `.ci/run`) makes a failed mount fail
//! the test; without it, the test says it skipped.

#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Process, free_port, text, total_calls};
use querypulse_loadgen::{LoadgenConfig, Target};
use serde_json::Value;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn mount_tmpfs(size_mb: u32) -> Option<Tmpfs> {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        return Some(Tmpfs(dir));
    }
    if std::env::var_os("QUERYPULSE_TEST_DISK_FULL").is_some() {
        panic!("QUERYPULSE_TEST_DISK_FULL is set but a tmpfs could not be mounted (the test needs root)");
    }
    eprintln!("skipped: mounting a tmpfs needs root; set QUERYPULSE_TEST_DISK_FULL=1 where it is available");
    None
}

fn free_kib(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-k"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn health(client: &reqwest::Client, http: u16) -> Value {
    client
        .get(format!("http://127.0.0.1:{http}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_batches_and_ingest_resumes_once_space_returns() {
    let Some(tmpfs) = mount_tmpfs(64) else {
        return;
    };
    let mount = tmpfs.0.path().to_owned();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("querypulse.toml");
    std::fs::write(&config, "min_free_disk_mb = 16\nmemtable_mb = 16\n").unwrap();
    let log = work.path().join("collector.log");
    let (grpc, http) = (free_port(), free_port());
    let _collector = Process(
        Command::new(env!("CARGO_BIN_EXE_querypulse"))
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(mount.join("data"))
            .args([
                "--grpc-listen",
                &format!("127.0.0.1:{grpc}"),
                "--http-listen",
                &format!("127.0.0.1:{http}"),
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let client = querypulse_collector::http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("http://127.0.0.1:{http}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the collector did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut load = LoadgenConfig::new(
        4,
        20,
        Duration::from_secs(1),
        Duration::from_secs(30),
        Target::Collector {
            endpoint: format!("http://127.0.0.1:{grpc}"),
            token: None,
        },
    );
    load.services = 1;
    let load = tokio::spawn(querypulse_loadgen::run(load));

    // Fill the disk to 8 MiB free, under the 16 kept free.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let filler = mount.join("filler");
    let fill_kib = free_kib(&mount).saturating_sub(8 * 1024);
    let status = Command::new("dd")
        .args(["if=/dev/zero", "bs=1k", &format!("count={fill_kib}")])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let full = health(&client, http).await;
    assert_eq!(full["status"], "degraded", "{full}");
    assert!(full["problems"][0].as_str().unwrap().contains("MiB free"), "{full}");
    let metrics = text(&client, &format!("http://127.0.0.1:{http}/metrics")).await;
    assert!(metrics.contains("\nquerypulse_store_problems 1\n"), "{metrics}");
    let read_calls = || total_calls(&client, http);
    let while_full = read_calls().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        read_calls().await,
        while_full,
        "nothing is taken while the disk is full"
    );

    // Space returns: ingest resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    loop {
        let h = health(&client, http).await;
        if h["status"] == "ok" && read_calls().await > while_full {
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "ingest did not resume within 10 s of space returning: {h}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Every acknowledged call is there, once; the refused batches were resent.
    let report = load.await.unwrap().expect("the load generator runs");
    assert_eq!(report.totals.unacked_at_end, 0, "{:?}", report.totals);
    assert!(report.totals.failures > 0, "the full disk refused batches");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = read_calls().await;
        if stored == report.totals.calls_acked {
            break;
        }
        assert!(
            Instant::now() < deadline && stored < report.totals.calls_acked,
            "{stored} calls stored, {} acknowledged",
            report.totals.calls_acked
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The condition was logged once, and its end once: not once per batch.
    let logged = std::fs::read_to_string(&log).unwrap();
    let mentions = logged.lines().filter(|l| l.contains("MiB free")).count();
    assert!(
        (1..=3).contains(&mentions),
        "{mentions} log lines about the full disk:\n{logged}"
    );
    assert!(logged.contains("disk space is back"), "{logged}");
}
