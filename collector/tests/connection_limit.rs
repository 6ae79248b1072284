//! Neither listener can starve the other of file descriptors:
//!
//! - the HTTP listener serves at most `MAX_HTTP_CONNECTIONS` connections at
//!   once. With more than that open against a `querypulse serve` process,
//!   the collector holds no more descriptors than the cap allows, says so
//!   once in its log, keeps acknowledging agents on its gRPC listener, and
//!   answers a waiting request as soon as idle connections are closed;
//! - the agents' gRPC listener serves at most `max_agent_connections`, and
//!   closes a connection that sends nothing within
//!   `AGENT_HANDSHAKE_TIMEOUT`: a flood of silent connections holds no more
//!   descriptors than the cap, `/healthz` keeps answering, and agents are
//!   acknowledged once the silent ones are gone.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Process, free_port, wait_ok};
use querypulse_collector::{AGENT_HANDSHAKE_TIMEOUT, HEADER_READ_TIMEOUT, MAX_HTTP_CONNECTIONS};
use querypulse_loadgen::{LoadgenConfig, Target};
use tokio::io::AsyncWriteExt as _;

/// Connections opened: past the cap by this many.
const PAST_THE_CAP: usize = 76;

/// Sockets the process `pid` holds: its listeners and connections, which
/// the caps bound. Its files come and go with the store's work (a log
/// segment, a run being written) and would make the count drift.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// This process' limit on open files, which must leave room for the
/// connections the test holds.
fn file_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap_or(usize::MAX)
}

/// A `querypulse serve` on free ports with `config` (TOML), logging warnings
/// to `dir/serve.log`; its gRPC and HTTP ports.
async fn serve(dir: &std::path::Path, config: &str) -> (Process, u16, u16) {
    let (grpc, http) = (free_port(), free_port());
    let config_file = dir.join("querypulse.toml");
    std::fs::write(&config_file, config).unwrap();
    let collector = Process(
        Command::new(env!("CARGO_BIN_EXE_querypulse"))
            .arg("serve")
            .arg("--config")
            .arg(&config_file)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--grpc-listen",
                &format!("127.0.0.1:{grpc}"),
                "--http-listen",
                &format!("127.0.0.1:{http}"),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
            .spawn()
            .expect("the collector starts"),
    );
    wait_ok(
        &querypulse_collector::http_client(),
        &format!("http://127.0.0.1:{http}/healthz"),
    )
    .await;
    (collector, grpc, http)
}

/// A short load on `grpc`, which must be acknowledged in full.
async fn acknowledged_load(grpc: u16) {
    let mut load = LoadgenConfig::new(
        3,
        10,
        Duration::from_secs(1),
        Duration::from_secs(3),
        Target::Collector {
            endpoint: format!("http://127.0.0.1:{grpc}"),
            token: None,
        },
    );
    load.services = 1;
    let report = tokio::time::timeout(Duration::from_secs(20), querypulse_loadgen::run(load))
        .await
        .expect("the load generator finishes")
        .unwrap();
    assert!(report.totals.batches_acked >= 3, "{}", report.summary());
    assert_eq!(
        (report.totals.failures, report.totals.unacked_at_end),
        (0, 0),
        "{}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_without_taking_descriptors_or_starving_ingest() {
    let wanted = MAX_HTTP_CONNECTIONS + PAST_THE_CAP;
    assert!(
        file_limit() > wanted + 256,
        "the test holds {wanted} sockets: raise the open-file limit (ulimit -n) above {}",
        wanted + 256
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let (collector, grpc, http) = serve(dir.path(), "").await;
    let pid = collector.0.id();
    // The client's pooled connection is idle now; the collector's baseline
    // includes it.
    let baseline = open_sockets(pid);

    // Connections that start a request and never finish its headers.
    let opened = Instant::now();
    let mut idle = Vec::with_capacity(wanted);
    for _ in 0..wanted {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", http)).await.unwrap();
        socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        idle.push(socket);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = open_sockets(pid) - baseline;
    assert!(
        held <= MAX_HTTP_CONNECTIONS,
        "{wanted} connections open: the collector holds {held} more sockets than before, past the cap of {MAX_HTTP_CONNECTIONS}"
    );
    assert!(
        held + 8 >= MAX_HTTP_CONNECTIONS - 1,
        "only {held} of the connections were accepted: the cap should be reached"
    );

    // Agents are still acknowledged on the gRPC listener.
    acknowledged_load(grpc).await;

    // A request past the cap waits for a slot, and is answered once the idle
    // connections' header-read timeout closes them.
    let asked = Instant::now();
    let fresh = querypulse_collector::http_client();
    let response = tokio::time::timeout(
        HEADER_READ_TIMEOUT + Duration::from_secs(15),
        fresh.get(format!("http://127.0.0.1:{http}/healthz")).send(),
    )
    .await
    .expect("answered once idle connections are closed")
    .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        opened.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "answered {:?} after the cap was reached, before any idle connection timed out",
        asked.elapsed()
    );
    drop(idle);

    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log.matches("HTTP connections at their limit").count(),
        1,
        "said once:\n{log}"
    );
    drop(collector);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_agent_connections_are_capped_and_closed_and_starve_nothing() {
    const CAP: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (collector, grpc, http) = serve(dir.path(), &format!("max_agent_connections = {CAP}\n")).await;
    let pid = collector.0.id();
    let baseline = open_sockets(pid);

    // Connections to the agents' port that never send a byte.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..CAP + 20 {
        silent.push(tokio::net::TcpStream::connect(("127.0.0.1", grpc)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = open_sockets(pid) - baseline;
    assert!(
        (CAP - 2..=CAP + 2).contains(&held),
        "{} silent agent connections: the collector holds {held} more sockets, the cap is {CAP}",
        CAP + 20
    );
    // The HTTP side answers at once.
    let asked = Instant::now();
    let client = querypulse_collector::http_client();
    let health = client
        .get(format!("http://127.0.0.1:{http}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "/healthz took {:?}",
        asked.elapsed()
    );

    // Silent connections are closed once they have said nothing for the
    // handshake timeout (those past the cap after their own wait), and
    // agents are acknowledged again.
    let mut buf = [0u8; 16];
    for socket in &mut silent {
        use tokio::io::AsyncReadExt as _;
        let read = tokio::time::timeout(
            AGENT_HANDSHAKE_TIMEOUT * 2 + Duration::from_secs(10),
            socket.read(&mut buf),
        )
        .await
        .expect("the collector closes a silent connection");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "{read:?} after {:?}: {:?}",
            opened.elapsed(),
            &buf
        );
    }
    assert!(
        opened.elapsed() >= AGENT_HANDSHAKE_TIMEOUT - Duration::from_secs(1),
        "closed after {:?}, before the {AGENT_HANDSHAKE_TIMEOUT:?} timeout",
        opened.elapsed()
    );
    drop(silent);
    acknowledged_load(grpc).await;
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert_eq!(
        log.matches("agent connections at their limit").count(),
        1,
        "said once:\n{log}"
    );
    drop(collector);
}
