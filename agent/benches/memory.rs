//! How much memory an agent holds with 5,000 fingerprints, measured with a
//! counting allocator (every heap byte the process asks for) and the kernel's
//! resident-set figures.
//!
//! `cargo bench -p querypulse-agent --bench memory`
//!
//! A real agent records from several threads and ships each window to a
//! collector stand-in that acknowledges every batch, so the outbox drains as
//! it would in production and every fingerprint text is sent once. The
//! stand-in is this same program started again as a child process, so the
//! counting allocator sees the agent's memory only. Windows are closed with
//! `flush()` rather than the clock so the run is short and deterministic.
//!
//! Figures are heap bytes above a baseline taken after the runtime and the
//! benchmark's own statement strings exist.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peak_alloc::PeakAlloc;
use querypulse_agent::{Agent, Outcome};
use querypulse_proto::wire::v1::{self as wire, ingest_server};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

mod support;
use support::latency;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const FINGERPRINTS: usize = 5_000;
/// Raw variants (differing literals) of each statement.
const VARIANTS: usize = 4;
const THREADS: usize = 4;
/// Set in the child process that plays the collector.
const STAND_IN: &str = "QUERYPULSE_BENCH_MEMORY_STAND_IN";

/// Acknowledges every batch at once, like a collector whose store never waits.
struct AckEverything;

#[tonic::async_trait]
impl ingest_server::Ingest for AckEverything {
    type ReportStream = ReceiverStream<Result<wire::CollectorMessage, tonic::Status>>;

    async fn report(
        &self,
        request: tonic::Request<tonic::Streaming<wire::AgentMessage>>,
    ) -> Result<tonic::Response<Self::ReportStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let (out, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if let Some(wire::agent_message::Kind::Batch(batch)) = message.kind {
                    let ack = wire::CollectorMessage {
                        kind: Some(wire::collector_message::Kind::Ack(wire::Ack {
                            seq: batch.seq,
                            duplicate: false,
                        })),
                    };
                    if out.send(Ok(ack)).await.is_err() {
                        break;
                    }
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

/// The statements of one scenario: `FINGERPRINTS` distinct shapes of about
/// 200 bytes, each in `VARIANTS` raw forms.
fn statements() -> Vec<Vec<String>> {
    (0..FINGERPRINTS)
        .map(|k| {
            (0..VARIANTS)
                .map(|v| {
                    format!(
                        "SELECT o.id, o.customer_id, o.total, o.status, o.created_at, c.name, c.email \
                         FROM orders_{k} o JOIN customers c ON c.id = o.customer_id \
                         WHERE o.id = {v} AND o.status = 'paid' ORDER BY o.created_at DESC LIMIT 20"
                    )
                })
                .collect()
        })
        .collect()
}

struct Scenario {
    name: &'static str,
    /// Calls per window of the fingerprint of rank `k`.
    calls: fn(usize) -> usize,
    windows: usize,
}

const SCENARIOS: [Scenario; 2] = [
    Scenario {
        name: "skewed: calls per window = 20000/(rank+1), at least 2 (~190,000 records per window)",
        calls: |k| (20_000 / (k + 1)).max(2),
        windows: 5,
    },
    Scenario {
        name: "every fingerprint busy: 200 calls each per window (1,000,000 records per window)",
        calls: |_| 200,
        windows: 3,
    },
];

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn above(bytes: usize, baseline: usize) -> f64 {
    mib(bytes.saturating_sub(baseline))
}

/// `VmRSS` and `VmHWM` of this process, MiB.
fn resident() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Records one window's calls from `THREADS` threads, each taking every
/// `THREADS`-th record of the window.
fn record_window(agent: &Agent, statements: &[Vec<String>], calls: fn(usize) -> usize, window: usize) {
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                let mut n = 0u64;
                for (k, variants) in statements.iter().enumerate() {
                    for call in 0..calls(k) {
                        n += 1;
                        if (call + k) % THREADS == t {
                            let sql = &variants[(call + window) % VARIANTS];
                            agent.record_query(sql, latency(n + k as u64), Outcome::rows(1));
                        }
                    }
                }
            });
        }
    });
}

/// How many times each scenario runs, each with a fresh agent. How threads
/// meet on the stripes differs from run to run, and with it how many
/// buckets each stripe fills, so the table reports the range and the worst.
const ROUNDS: usize = 5;

/// One round's figures.
struct Round {
    held_mib: f64,
    peak_mib: f64,
    grown_bytes: usize,
}

async fn run(scenario: &Scenario, endpoint: &str, statements: &Arc<Vec<Vec<String>>>, round: usize) -> Round {
    let baseline = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let agent = Agent::builder("memory")
        .endpoint(endpoint)
        // Windows are closed by flush() only.
        .interval(Duration::from_secs(3_600))
        .start()
        .expect("agent starts");
    let started = Instant::now();
    for window in 0..scenario.windows {
        let (recording, statements) = (agent.clone(), Arc::clone(statements));
        let calls = scenario.calls;
        tokio::task::spawn_blocking(move || record_window(&recording, &statements, calls, window))
            .await
            .expect("recording threads");
        agent.flush().await.expect("the stand-in acknowledges every batch");
    }
    let standing = HEAP.current_usage();
    let peak = HEAP.peak_usage();

    // Steady state on one thread: statements already known on its stripe.
    let hot = &statements[0][0];
    for i in 0..10_000 {
        agent.record_query(hot, latency(i), Outcome::OK);
    }
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    for i in 0..1_000_000 {
        agent.record_query(hot, latency(i), Outcome::OK);
    }
    let grown = HEAP.peak_usage().saturating_sub(before);

    let stats = agent.stats();
    agent.shutdown().await.expect("last window acknowledged");
    let figures = Round {
        held_mib: above(standing, baseline),
        peak_mib: above(peak, baseline),
        grown_bytes: grown,
    };
    println!(
        "  round {round}: {} fingerprints, {} windows in {:.1?}; held {:.1} MiB, peak {:.1} MiB, \
         growth over 1,000,000 known records {} bytes",
        stats.fingerprints,
        scenario.windows,
        started.elapsed(),
        figures.held_mib,
        figures.peak_mib,
        figures.grown_bytes
    );
    figures
}

fn report(rounds: &[Round]) {
    let range = |f: fn(&Round) -> f64| {
        let values = rounds.iter().map(f);
        let low = values.clone().fold(f64::INFINITY, f64::min);
        (low, values.fold(0.0, f64::max))
    };
    let (held_low, held_high) = range(|r| r.held_mib);
    let (peak_low, peak_high) = range(|r| r.peak_mib);
    let grown = rounds.iter().map(|r| r.grown_bytes).max().unwrap_or(0);
    let (rss, hwm) = resident();
    println!(
        "  heap held by the agent after the last window: worst {held_high:.1} MiB (range {held_low:.1}-{held_high:.1})"
    );
    println!(
        "  peak heap above baseline during a round:      worst {peak_high:.1} MiB (range {peak_low:.1}-{peak_high:.1})"
    );
    println!("  heap growth over 1,000,000 known records:     at most {grown} bytes");
    println!("  process VmRSS {rss:.1} MiB, VmHWM {hwm:.1} MiB (whole process, high-water since start)");
}

/// The child process: serves the stand-in on a loopback port, prints the
/// port, and exits when the parent closes its stdin (or dies).
async fn stand_in() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback port");
    println!("{}", listener.local_addr().expect("bound"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ingest_server::IngestServer::new(AckEverything).max_decoding_message_size(64 << 20))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await
        .ok();
}

/// Kills the stand-in when the benchmark ends, however it ends.
struct StandIn(Child);

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_stand_in() -> (StandIn, String) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(STAND_IN, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("stand-in process starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("stand-in prints its address");
    (StandIn(child), format!("http://{}", line.trim()))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os(STAND_IN).is_some() {
        runtime.block_on(stand_in());
        return;
    }
    let (_stand_in, endpoint) = start_stand_in();
    runtime.block_on(async {
        let statements = Arc::new(statements());
        println!(
            "querypulse agent memory (heap from a counting allocator; the collector stand-in runs in a \
             child process; baseline excludes the runtime and the benchmark's {:.1} MiB of statement strings)",
            mib(FINGERPRINTS * VARIANTS * statements[0][0].len())
        );
        for scenario in &SCENARIOS {
            println!("scenario: {}", scenario.name);
            println!("  {FINGERPRINTS} statement shapes, {VARIANTS} raw variants each, {THREADS} recording threads");
            let mut rounds = Vec::new();
            for round in 1..=ROUNDS {
                rounds.push(run(scenario, &endpoint, &statements, round).await);
            }
            report(&rounds);
        }
    });
}
