//! Late windows are counted exactly. An agent cut off from the collector
//! replays its outbox when it reconnects, so windows minutes or hours old
//! arrive at once, beside windows of the same time from other instances. Every
//! call the collector acknowledged must then be found exactly once, whichever
//! way it is read: summaries over a range and over its halves, 10-second and
//! 1-minute series, and the per-instance breakdown.
//!
//! The real `querypulse serve` (a child process on a temporary data directory,
//! free ports) is fed by the real `querypulse loadgen --backfill`, whose
//! summary says which calls were acknowledged, per service and fingerprint.
//! One backfill covers the last hour. The other ends 7 hours ago, in a time
//! partition the collector compacts and seals soon after; it is read right
//! away, again once the log says the partition was sealed, again after a
//! second fleet replayed the same hour into the sealed partition, and again
//! after a restart on the same directory.

#![cfg(unix)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// The simulated fleet: small, so a run takes seconds, yet every window of a
/// service merges several instances (3 and 2) and every read covers several
/// fingerprints.
const INSTANCES: u32 = 5;
const FINGERPRINTS: usize = 20;
const SERVICES: usize = 2;
/// What `--backfill 1h` covers.
const BACKFILL_MS: i64 = HOUR_MS;
/// Upper bound of a load-generator run: it stops as soon as the backfill is
/// delivered, in seconds, but a collector that acknowledges slowly still gets
/// to be counted. And how long the test waits for loadgen to exit.
const LOADGEN_DURATION: &str = "120s";
const LOADGEN_LIMIT: Duration = Duration::from_secs(150);
/// How long the collector may take to start, to stop, and to seal.
const START_LIMIT: Duration = Duration::from_secs(60);
const STOP_LIMIT: Duration = Duration::from_secs(30);
const SEAL_LIMIT: Duration = Duration::from_secs(150);

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
/// Span of one raw partition of the store (`Tier::Raw.partition_ms()`).
const RAW_PARTITION_MS: i64 = 6 * HOUR_MS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_the_last_hour_is_counted_exactly_by_every_read() {
    let binary = querypulse();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let collector = Serve::start(&binary, dir.path(), "serve").await;
    let delivery = loadgen(&binary, &collector, dir.path(), "loadgen", &["--backfill", "1h"]).await;
    check_every_read(&collector, &delivery, "after a backfill of the last hour").await;
    collector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_backfill_and_its_replay_are_counted_exactly_through_sealing_and_a_restart() {
    let binary = querypulse();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut collector = Serve::start(&binary, dir.path(), "serve").await;
    // Ending 7 hours ago, the span lies in raw partitions (6 hours each) that
    // ended at least an hour ago, well past the 15 minutes after which the
    // collector seals a partition whose chunks are compacted.
    let old_hour = ["--backfill", "1h", "--backfill-ending", "7h"];
    let delivery = loadgen(&binary, &collector, dir.path(), "loadgen", &old_hour).await;
    assert!(
        delivery.to_ms <= now_ms() - 7 * HOUR_MS,
        "the backfill should end 7 hours ago, it ends at {}",
        rfc3339(delivery.to_ms)
    );

    // Maintenance may seal while these reads run: they are "before" only if
    // nothing was sealed by their end, which the output says.
    let sealed_before = collector.sealed();
    check_every_read(
        &collector,
        &delivery,
        &format!(
            "right after the backfill (partitions sealed so far: {})",
            describe_sealed(&sealed_before)
        ),
    )
    .await;
    println!(
        "partitions sealed by the end of those reads: {}",
        describe_sealed(&collector.sealed())
    );

    let raw_partitions: Vec<i64> = (floor(delivery.from_ms, RAW_PARTITION_MS)..delivery.to_ms)
        .step_by(RAW_PARTITION_MS as usize)
        .collect();
    let sealed = collector.wait_for_sealing(&raw_partitions).await;
    check_every_read(
        &collector,
        &delivery,
        &format!("after the log said {}", describe_sealed(&sealed)),
    )
    .await;

    // A second fleet replays the same hour (a few seconds later, so nearly
    // the same windows): every window now arrives after its time was
    // compacted and sealed, beside what the first fleet left there.
    let replay = loadgen(&binary, &collector, dir.path(), "loadgen-replay", &old_hour).await;
    let delivery = delivery.and(&replay);
    check_every_read(
        &collector,
        &delivery,
        "after a second fleet replayed the hour into the sealed partition",
    )
    .await;

    collector.stop().await;
    let collector = Serve::start(&binary, dir.path(), "serve-after-restart").await;
    check_every_read(&collector, &delivery, "after a restart on the same data directory").await;
    collector.stop().await;

    // The store agrees with itself at every resolution and breakdown.
    let verify = Command::new(&binary)
        .arg("verify")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("querypulse verify runs");
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && report.contains("everything agrees"),
        "querypulse verify: {report}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// What the load generator had acknowledged.
#[derive(Debug)]
struct Delivery {
    /// Start of the earliest window delivered (`delivered_from_ms`).
    from_ms: i64,
    /// End of the latest window delivered (`delivered_to_ms`).
    to_ms: i64,
    /// Calls acknowledged, by service and fingerprint (16 hex digits).
    calls: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Delivery {
    fn total(&self) -> u64 {
        self.calls.values().flat_map(BTreeMap::values).sum()
    }

    /// Both deliveries: the calls added up over the span covering both.
    fn and(&self, other: &Delivery) -> Delivery {
        let mut calls = self.calls.clone();
        for (service, fingerprints) in &other.calls {
            let into = calls.entry(service.clone()).or_default();
            for (fingerprint, n) in fingerprints {
                *into.entry(fingerprint.clone()).or_default() += n;
            }
        }
        Delivery {
            from_ms: self.from_ms.min(other.from_ms),
            to_ms: self.to_ms.max(other.to_ms),
            calls,
        }
    }

    /// Reads `loadgen --summary-json`. The acknowledged calls are the exact
    /// reference only if the whole backfill was delivered, once: a window
    /// acknowledged as a duplicate (a resend) is counted again in the summary
    /// though the collector stored nothing new, and a rejected or undelivered
    /// window is missing from it.
    fn from_summary(summary: &Value, output: &str) -> Delivery {
        let totals = &summary["totals"];
        let count = |name: &str| {
            totals[name]
                .as_u64()
                .unwrap_or_else(|| panic!("loadgen's summary has no totals.{name}: {summary}"))
        };
        for name in [
            "rejected",
            "dropped",
            "duplicates",
            "unacked_at_end",
            "instances_aborted",
        ] {
            assert_eq!(
                count(name),
                0,
                "loadgen reports {name} = {}: the backfill was not delivered whole and exactly once, so its \
                 acknowledged calls are no exact reference\n{output}",
                count(name)
            );
        }
        let windows = summary["backfill_windows"].as_u64().expect("backfill_windows");
        assert_eq!(
            count("batches_acked"),
            windows * u64::from(INSTANCES),
            "every instance should have delivered all {windows} windows\n{output}"
        );
        let ms = |name: &str| {
            summary[name]
                .as_i64()
                .unwrap_or_else(|| panic!("loadgen's summary has no {name}: {summary}"))
        };
        let (from_ms, to_ms) = (ms("delivered_from_ms"), ms("delivered_to_ms"));
        assert_eq!(
            to_ms - from_ms,
            BACKFILL_MS,
            "the delivered windows should span the backfill"
        );

        let mut calls: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for series in summary["series"].as_array().expect("a series array") {
            let field = |name: &str| {
                series[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("series.{name}: {series}"))
            };
            let previous = calls.entry(field("service").to_owned()).or_default().insert(
                field("fingerprint").to_owned(),
                series["calls"].as_u64().expect("calls"),
            );
            assert!(previous.is_none(), "a series listed twice: {series}");
        }
        let delivery = Delivery { from_ms, to_ms, calls };
        assert_eq!(
            delivery.total(),
            count("calls_acked"),
            "loadgen's series should add up to its calls_acked"
        );
        assert_eq!(delivery.calls.len(), SERVICES, "services in loadgen's summary");
        for (service, fingerprints) in &delivery.calls {
            assert_eq!(fingerprints.len(), FINGERPRINTS, "fingerprints of {service}");
        }
        delivery
    }
}

/// Reads the acknowledged calls back through every read of the API, for every
/// service; panics with every disagreement found.
async fn check_every_read(collector: &Serve, delivery: &Delivery, when: &str) {
    let (f, t) = (delivery.from_ms, delivery.to_ms);
    // A whole minute near the middle: the halves are read from raw windows
    // at their ragged edges and 1-minute rollups in between.
    let m = floor(f + (t - f) / 2, MINUTE_MS);
    assert!(f < m && m < t, "no whole minute inside [{f}, {t})");
    // Whole hours around the span: this read also takes 1-hour rollups.
    let (hour_from, hour_to) = (floor(f, HOUR_MS), ceil(t, HOUR_MS));

    let listed: Vec<String> = collector.get_json("/api/v1/services").await["services"]
        .as_array()
        .expect("a services array")
        .iter()
        .map(|s| s["name"].as_str().expect("a service name").to_owned())
        .collect();
    let expected_services: Vec<String> = delivery.calls.keys().cloned().collect();
    assert_eq!(listed, expected_services, "{when}: /api/v1/services");

    let mut check = Check::default();
    let mut reads = 0;
    for (service, expected) in &delivery.calls {
        let summary = |from: i64, to: i64| format!("/api/v1/queries?service={service}&from={from}&to={to}");

        // (a) The summary over the span, and over the whole hours around it
        // (the store holds nothing else).
        for (from, to) in [(f, t), (hour_from, hour_to)] {
            let (got, read) = collector.summary(&summary(from, to)).await;
            check.calls(&format!("GET {} (read {read})", summary(from, to)), &got, expected);
        }

        // (b) The two halves add up to the whole.
        let (first, first_read) = collector.summary(&summary(f, m)).await;
        let (second, second_read) = collector.summary(&summary(m, t)).await;
        let mut halves = first;
        for (fingerprint, calls) in &second {
            *halves.entry(fingerprint.clone()).or_default() += calls;
        }
        check.calls(
            &format!(
                "GET {} (read {first_read}) + GET {} (read {second_read})",
                summary(f, m),
                summary(m, t)
            ),
            &halves,
            expected,
        );
        reads += 4;

        // (c) The series of every fingerprint, at raw and 1-minute resolution.
        for step in ["10s", "1m"] {
            let mut got = BTreeMap::new();
            for fingerprint in expected.keys() {
                let path =
                    format!("/api/v1/queries/{fingerprint}/series?service={service}&from={f}&to={t}&step={step}");
                let series = collector.get_json(&path).await;
                let calls: u64 = series["points"]
                    .as_array()
                    .unwrap_or_else(|| panic!("GET {path}: no points: {series}"))
                    .iter()
                    .map(|p| p["calls"].as_u64().expect("calls"))
                    .sum();
                got.insert(fingerprint.clone(), calls);
                reads += 1;
            }
            check.calls(
                &format!(
                    "the points of GET /api/v1/queries/{{fp}}/series?service={service}&from={f}&to={t}&step={step}"
                ),
                &got,
                expected,
            );
        }

        // (d) Each fingerprint's detail: the service's total, and its
        // per-instance breakdown, which must add up to that total.
        let mut totals = BTreeMap::new();
        let mut breakdowns = BTreeMap::new();
        let mut read = String::new();
        for fingerprint in expected.keys() {
            let path = format!("/api/v1/queries/{fingerprint}?service={service}&from={f}&to={t}");
            let detail = collector.get_json(&path).await;
            read = range_read(&detail);
            let rows = |name: &str| -> Vec<Value> {
                detail[name]
                    .as_array()
                    .unwrap_or_else(|| panic!("GET {path}: no {name}: {detail}"))
                    .iter()
                    .filter(|row| row["service"] == service.as_str())
                    .cloned()
                    .collect()
            };
            let calls = |rows: &[Value]| -> u64 { rows.iter().map(|r| r["calls"].as_u64().expect("calls")).sum() };
            totals.insert(fingerprint.clone(), calls(&rows("services")));
            breakdowns.insert(fingerprint.clone(), calls(&rows("instances")));
            reads += 1;
        }
        let detail = format!("GET /api/v1/queries/{{fp}}?service={service}&from={f}&to={t} (read {read})");
        check.calls(&format!("the service's calls in {detail}"), &totals, expected);
        check.calls(
            &format!("the instances' calls added up in {detail}"),
            &breakdowns,
            expected,
        );
        check.same(
            &format!("the instances against their service in {detail}"),
            ("instances added up", &breakdowns),
            ("service", &totals),
        );
    }
    assert!(
        check.problems.is_empty(),
        "{when}: reads disagree with the {} calls loadgen had acknowledged in [{f}, {t}) = [{}, {}), \
         M = {m} = {}:\n{}",
        delivery.total(),
        rfc3339(f),
        rfc3339(t),
        rfc3339(m),
        check.problems.join("\n")
    );
    println!(
        "{when}: {reads} reads of {SERVICES} services count exactly the {} acknowledged calls",
        delivery.total()
    );
}

/// Disagreements collected over a whole round of reads, so a failure shows
/// every read path that is off, not only the first.
#[derive(Debug, Default)]
struct Check {
    problems: Vec<String>,
}

impl Check {
    /// Fingerprints listed in a disagreement; the totals cover them all.
    const LISTED: usize = 5;

    /// Compares the calls per fingerprint `got` by a read with those loadgen
    /// had acknowledged.
    fn calls(&mut self, what: &str, got: &BTreeMap<String, u64>, acknowledged: &BTreeMap<String, u64>) {
        self.same(what, ("read", got), ("acknowledged", acknowledged));
    }

    /// Compares two sets of calls per fingerprint; on a difference, records
    /// both totals and the first fingerprints that differ.
    fn same(&mut self, what: &str, left: (&str, &BTreeMap<String, u64>), right: (&str, &BTreeMap<String, u64>)) {
        let ((left_name, left), (right_name, right)) = (left, right);
        if left == right {
            return;
        }
        let (left_total, right_total): (u64, u64) = (left.values().sum(), right.values().sum());
        let mut line = format!(
            "- {what}:\n    {left_name} {left_total} calls, {right_name} {right_total} ({:+})",
            i128::from(left_total) - i128::from(right_total)
        );
        let mut fingerprints: Vec<&String> = left.keys().chain(right.keys()).collect();
        fingerprints.sort();
        fingerprints.dedup();
        let differing: Vec<String> = fingerprints
            .into_iter()
            .filter_map(|fp| {
                let (l, r) = (left.get(fp).copied().unwrap_or(0), right.get(fp).copied().unwrap_or(0));
                (l != r).then(|| format!("{fp} {l}/{r}"))
            })
            .collect();
        let _ = write!(
            line,
            "; {} of {} fingerprints differ ({left_name}/{right_name}): {}",
            differing.len(),
            right.len(),
            differing[..differing.len().min(Self::LISTED)].join(", ")
        );
        if differing.len() > Self::LISTED {
            line.push_str(", …");
        }
        self.problems.push(line);
    }
}

/// `from .. to` as the API says it read them (summaries widen long ranges to
/// whole minutes).
fn range_read(response: &Value) -> String {
    format!(
        "{} .. {}",
        response["from"].as_str().unwrap_or("?"),
        response["to"].as_str().unwrap_or("?")
    )
}

/// Runs `querypulse loadgen` with `backfill` against `collector`, its output
/// in `dir/<label>.*`, and returns what it had acknowledged.
async fn loadgen(binary: &Path, collector: &Serve, dir: &Path, label: &str, backfill: &[&str]) -> Delivery {
    let summary_path = dir.join(format!("{label}-summary.json"));
    let mut args: Vec<String> = [
        "loadgen",
        "--instances",
        &INSTANCES.to_string(),
        "--fingerprints",
        &FINGERPRINTS.to_string(),
        "--services",
        &SERVICES.to_string(),
        "--duration",
        LOADGEN_DURATION,
        "--endpoint",
        &format!("http://{}", collector.grpc_addr),
        "--summary-json",
        summary_path.to_str().expect("a UTF-8 temporary path"),
    ]
    .map(str::to_owned)
    .into();
    args.extend(backfill.iter().map(|a| a.to_string()));
    let mut process = Process::spawn(binary, &args, dir, label);
    let status = process
        .wait(LOADGEN_LIMIT)
        .await
        .unwrap_or_else(|| panic!("loadgen {backfill:?} did not finish within {LOADGEN_LIMIT:?}"));
    let output = format!(
        "loadgen {backfill:?} ({status}):\n{}{}",
        process.stdout(),
        process.stderr()
    );
    assert!(status.success(), "{output}");
    let summary: Value = serde_json::from_slice(
        &std::fs::read(&summary_path).unwrap_or_else(|e| panic!("reading {}: {e}\n{output}", summary_path.display())),
    )
    .expect("loadgen's summary is JSON");
    let delivery = Delivery::from_summary(&summary, &output);
    println!(
        "loadgen {backfill:?} acknowledged {} calls in windows [{}, {})",
        delivery.total(),
        rfc3339(delivery.from_ms),
        rfc3339(delivery.to_ms)
    );
    delivery
}

/// A `querypulse serve` child process on `dir/data` and free ports of
/// 127.0.0.1, killed when dropped.
struct Serve {
    process: Process,
    grpc_addr: String,
    http_addr: String,
    http: reqwest::Client,
}

impl Serve {
    /// Starts `querypulse serve`, logging to `dir/<label>.stderr`, and waits
    /// until it listens.
    async fn start(binary: &Path, dir: &Path, label: &str) -> Serve {
        let data = dir.join("data");
        let args = [
            OsStr::new("serve"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--grpc-listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--http-listen"),
            OsStr::new("127.0.0.1:0"),
        ];
        let mut serve = Serve {
            process: Process::spawn(binary, args, dir, label),
            grpc_addr: String::new(),
            http_addr: String::new(),
            http: querypulse_collector::http_client(),
        };
        // Port 0 picks free ports; the log line says which.
        let started = serve
            .wait_for_log("the collector to start", START_LIMIT, |log| {
                log.lines().find(|l| l.contains("collector started")).map(str::to_owned)
            })
            .await;
        let addr = |name: &str| {
            field(&started, name)
                .unwrap_or_else(|| panic!("no {name} in {started:?}"))
                .to_owned()
        };
        serve.grpc_addr = addr("grpc_addr");
        serve.http_addr = addr("http_addr");
        serve
    }

    /// Stops the collector as an operator does (SIGTERM) and waits for a
    /// clean exit.
    async fn stop(mut self) {
        let pid = self.process.child.id();
        // The shell's own `kill`: no extra dependency, and no `unsafe`.
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {pid}"))
            .status()
            .expect("running sh");
        assert!(status.success(), "kill -TERM {pid}: {status}");
        let exit = self
            .process
            .wait(STOP_LIMIT)
            .await
            .unwrap_or_else(|| panic!("the collector did not stop within {STOP_LIMIT:?}"));
        assert!(exit.success(), "the collector stopped with {exit}");
    }

    /// Polls the log every 100 ms until `found` returns something, for at most
    /// `limit`; panics on timeout or if the collector exits.
    async fn wait_for_log<T>(&mut self, what: &str, limit: Duration, mut found: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = found(&self.process.stderr()) {
                return value;
            }
            if let Ok(Some(status)) = self.process.child.try_wait() {
                panic!("waiting for {what}, the collector exited ({status})");
            }
            assert!(Instant::now() < deadline, "{what} took more than {limit:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The partitions the log says were sealed so far: (tier, start_ms).
    fn sealed(&self) -> Vec<(String, i64)> {
        sealed(&self.process.stderr())
    }

    /// Waits until the log says each raw partition starting at one of `starts`
    /// was sealed; returns every partition sealed so far.
    async fn wait_for_sealing(&mut self, starts: &[i64]) -> Vec<(String, i64)> {
        let waited = Instant::now();
        let what = format!(
            "the log to say raw partition(s) {} were sealed",
            starts.iter().map(|s| rfc3339(*s)).collect::<Vec<_>>().join(", ")
        );
        let sealed = self
            .wait_for_log(&what, SEAL_LIMIT, |log| {
                let sealed = sealed(log);
                starts
                    .iter()
                    .all(|start| sealed.iter().any(|(tier, at)| tier == "raw" && at == start))
                    .then_some(sealed)
            })
            .await;
        println!(
            "{} after {:.1} s of waiting",
            describe_sealed(&sealed),
            waited.elapsed().as_secs_f64()
        );
        sealed
    }

    /// GET `path` as JSON; panics unless the answer is 200.
    async fn get_json(&self, path: &str) -> Value {
        let url = format!("http://{}{path}", self.http_addr);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(status.is_success(), "GET {path} answered {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
    }

    /// Calls per fingerprint of a `/api/v1/queries` summary, and the range
    /// it read.
    async fn summary(&self, path: &str) -> (BTreeMap<String, u64>, String) {
        let response = self.get_json(path).await;
        let mut calls = BTreeMap::new();
        for query in response["queries"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: no queries: {response}"))
        {
            let fingerprint = query["fingerprint"].as_str().expect("a fingerprint").to_owned();
            let previous = calls.insert(fingerprint, query["calls"].as_u64().expect("calls"));
            assert!(previous.is_none(), "GET {path} lists a fingerprint twice: {query}");
        }
        (calls, range_read(&response))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.process.stderr();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "the collector's log, last lines:\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// A child process of the test, its stdout and stderr in files, killed when
/// dropped (a failing test leaves nothing running).
struct Process {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    /// Starts `binary` with `args`, writing `dir/<label>.stdout` and
    /// `.stderr`. The child ignores the caller's `QUERYPULSE_*` settings (a
    /// token, a config file) and logs at info level without colours.
    fn spawn<I, S>(binary: &Path, args: I, dir: &Path, label: &str) -> Process
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let stdout = dir.join(format!("{label}.stdout"));
        let stderr = dir.join(format!("{label}.stderr"));
        let create = |path: &Path| File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(create(&stdout))
            .stderr(create(&stderr));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("QUERYPULSE_") {
                command.env_remove(name);
            }
        }
        command.env("RUST_LOG", "info,sqlx=warn").env("NO_COLOR", "1");
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({label}): {e}", binary.display()));
        Process { child, stdout, stderr }
    }

    /// Polls every 100 ms for the exit, for at most `limit`.
    async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for a child") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stdout(&self) -> String {
        read_text(&self.stdout)
    }

    fn stderr(&self) -> String {
        read_text(&self.stderr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A log file without terminal colours.
fn read_text(path: &Path) -> String {
    strip_ansi(&String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()))
}

/// The partitions a collector log says were sealed, by its lines `sealed a
/// partition tier="raw" start_ms=…`: (tier, start_ms).
fn sealed(log: &str) -> Vec<(String, i64)> {
    log.lines()
        .filter(|line| line.contains("sealed a partition"))
        .filter_map(|line| Some((field(line, "tier")?.to_owned(), field(line, "start_ms")?.parse().ok()?)))
        .collect()
}

/// The value of `name=value` in a log line, without quotes.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next().map(|v| v.trim_matches('"'))
}

/// `line` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `querypulse` binary Cargo built for these tests.
fn querypulse() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_querypulse"))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn floor(time: i64, step: i64) -> i64 {
    time.div_euclid(step) * step
}

fn ceil(time: i64, step: i64) -> i64 {
    -floor(-time, step)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}

fn describe_sealed(sealed: &[(String, i64)]) -> String {
    if sealed.is_empty() {
        return "none".to_owned();
    }
    sealed
        .iter()
        .map(|(tier, start)| format!("{tier} partition of {}", rfc3339(*start)))
        .collect::<Vec<_>>()
        .join(", ")
}
