//! Backing up a running collector, as README "Running in production"
//! documents it: freeze the process (SIGSTOP), copy its data directory,
//! thaw it (SIGCONT). The copy is what a crash at that moment would leave,
//! which the collector recovers from: restored, `querypulse verify` finds it
//! consistent, and it holds exactly the calls the collector held when
//! frozen. A copy taken under load is consistent too.

#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Process, free_port, total_calls as calls};
use querypulse_loadgen::{LoadgenConfig, Target};

fn serve(data: &Path, grpc: u16, http: u16) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_querypulse"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// Freezes `process`, copies `from` to `to` (`cp -a`), thaws it.
fn frozen_copy(process: &Process, from: &Path, to: &Path) {
    let pid = process.0.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let copied = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    assert!(copied.success());
}

/// `querypulse verify` on a stopped data directory: clean?
fn verify(data: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_querypulse"))
        .arg("verify")
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_copy_of_a_running_collector_restores_consistent_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (grpc, http) = (free_port(), free_port());
    let collector = serve(&data, grpc, http);
    let client = querypulse_collector::http_client();
    calls(&client, http).await;

    let mut load = LoadgenConfig::new(
        6,
        30,
        Duration::from_secs(1),
        Duration::from_secs(8),
        Target::Collector {
            endpoint: format!("http://127.0.0.1:{grpc}"),
            token: None,
        },
    );
    load.services = 2;
    let load = tokio::spawn(querypulse_loadgen::run(load));
    // Under load: the copy is what a crash would leave.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let under_load = dir.path().join("under-load");
    frozen_copy(&collector, &data, &under_load);
    let report = load.await.unwrap().expect("the load generator runs");
    assert_eq!(report.totals.unacked_at_end, 0);

    // Quiet: the copy holds exactly what the collector holds.
    let held = calls(&client, http).await;
    assert_eq!(held, report.totals.calls_acked, "everything acknowledged is stored");
    let quiet = dir.path().join("quiet");
    frozen_copy(&collector, &data, &quiet);
    drop(collector);

    for (copy, label) in [(&under_load, "under load"), (&quiet, "quiet")] {
        let (clean, report) = verify(copy);
        assert!(clean, "the copy taken {label} is not consistent:\n{report}");
    }
    let (grpc, http) = (free_port(), free_port());
    let restored = serve(&quiet, grpc, http);
    assert_eq!(calls(&client, http).await, held, "the restored copy holds every call");
    drop(restored);
    let (grpc, http) = (free_port(), free_port());
    let restored = serve(&under_load, grpc, http);
    let partial = calls(&client, http).await;
    assert!(
        partial > 0 && partial < held,
        "the copy under load holds part of the run: {partial} of {held}"
    );
    drop(restored);
}
