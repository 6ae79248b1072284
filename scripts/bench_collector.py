#!/usr/bin/env python3
"""Collector benchmarks: ingest, storage and reads, side by side with Prometheus.

Run through scripts/bench-collector.sh, which builds the release binary first.
Everything listens on 127.0.0.1 (free ports), keeps its data in a temporary
directory, and stops by itself. Python standard library only.

Phases (all by default; pick with --phases):
  ingest   live load, N instances x M fingerprints: durable windows/s, ack
           latency, collector RSS and CPU, disk per window
  compare  the same backfilled hour (100 instances merged in one service) into
           querypulse, into Prometheus (classic and, in a second run, native
           histograms) and (when installed) into VictoriaMetrics by remote
           write: windows/s vs histograms/s, bytes
           on disk, p50/p95/p99 error against the exact quantiles of the
           generated data
  reads    /api/v1/queries (and .../series when it exists) latency with 1,000
           fingerprints over 24 h and over 7 days
"""

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

QUANTILES = (0.5, 0.95, 0.99)
SCALES = {
    # instances x fingerprints for the live ingest; the compare backfill; the
    # read data sets (fingerprints, span, interval).
    "full": {
        "ingest": (2000, 1000, "90s"),
        "compare": (100, 100, "1h"),
        "reads": (1000, [("24h", "24h", "10s"), ("7d", "7d", "60s")]),
    },
    "quick": {
        "ingest": (200, 100, "30s"),
        "compare": (20, 50, "10m"),
        "reads": (200, [("24h", "2h", "10s"), ("7d", "12h", "60s")]),
    },
}


# Every server started, so an interrupted run still stops them.
STARTED = []


def stop_all():
    for proc in STARTED:
        stop_process(proc, 30)


def stop_process(proc, timeout):
    """SIGTERM, then SIGKILL if it has not stopped within timeout seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def discard(ctx, data_dir):
    """Removes a server's data once measured (the full run writes ~12 GB)."""
    if not ctx.keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)


def log(*parts):
    print(*parts, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def disk_bytes(path):
    """Bytes allocated on disk under path (what du counts)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def http_get(url, timeout=600):
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    return status, body, time.perf_counter() - started


def wait_http(url, what, deadline_s=60):
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        try:
            if http_get(url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer {url} within {deadline_s} s")


class ProcWatch:
    """CPU seconds and peak RSS of one process, from /proc. With kill_above
    (bytes), the process is killed once its RSS passes that, so a collector
    that cannot keep up does not take the machine down with it."""

    def __init__(self, pid, kill_above=None):
        self.pid = pid
        self.kill_above = kill_above
        self.killed = None
        self.over_512mib_after_s = None
        self.peak_rss = 0
        self.stop = threading.Event()
        self.cpu0 = self.cpu()
        self.t0 = time.time()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def cpu(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def sample(self):
        while not self.stop.is_set():
            try:
                rss = self.rss()
            except OSError:
                return
            self.peak_rss = max(self.peak_rss, rss)
            if rss > 512 * 2**20 and self.over_512mib_after_s is None:
                self.over_512mib_after_s = time.time() - self.t0
            if self.kill_above and rss > self.kill_above and self.killed is None:
                os.kill(self.pid, signal.SIGKILL)
                self.killed = {"after_s": time.time() - self.t0, "rss": rss}
                log(f"  !! killed pid {self.pid}: RSS {mib(rss)} passed the {mib(self.kill_above)} limit")
                return
            time.sleep(0.25)

    def finish(self):
        self.stop.set()
        self.thread.join()
        wall = time.time() - self.t0
        try:
            cpu, final_rss = self.cpu() - self.cpu0, self.rss()
        except (OSError, IndexError):
            cpu, final_rss = None, None
        return {"cpu_s": cpu, "wall_s": wall, "cpu_cores": cpu / wall if cpu is not None else None,
                "peak_rss": self.peak_rss, "rss": final_rss, "killed": self.killed,
                "over_512mib_after_s": self.over_512mib_after_s}


class Collector:
    def __init__(self, binary, workdir, name, max_age_s=None):
        self.dir = os.path.join(workdir, name)
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.dir)
        self.grpc = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        config = os.path.join(self.dir, "querypulse.toml")
        with open(config, "w") as f:
            f.write(f'data_dir = "{self.data}"\ngrpc_listen = "{self.grpc}"\nhttp_listen = "{self.http}"\n')
            if max_age_s:
                f.write(f"[retention]\nraw_seconds = {max_age_s}\nminute_seconds = {max(max_age_s, 1209600)}\nhour_seconds = 34560000\n")
        self.log = open(os.path.join(self.dir, "collector.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", config],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        STARTED.append(self.proc)
        wait_http(f"http://{self.http}/healthz", "the collector")

    def stop(self):
        stop_process(self.proc, 60)
        self.log.close()


class PeerServer:
    """A peer store on a free 127.0.0.1 port, its data and log in
    workdir/<name>, registered to be stopped at exit."""

    def __init__(self, workdir, name):
        self.dir = os.path.join(workdir, name)
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.data)
        self.addr = f"127.0.0.1:{free_port()}"
        self.log = open(os.path.join(self.dir, f"{name}.log"), "w")

    def start(self, argv, ready_path, label):
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        STARTED.append(self.proc)
        wait_http(f"http://{self.addr}{ready_path}", label)

    def stop(self):
        stop_process(self.proc, 120)
        self.log.close()


class Prometheus(PeerServer):
    def __init__(self, workdir, native=False):
        super().__init__(workdir, "prometheus-native" if native else "prometheus")
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("# remote-write receiver only: nothing is scraped\nglobal:\n  scrape_interval: 1m\n")
        self.start(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data}",
                f"--web.listen-address={self.addr}",
                "--web.enable-remote-write-receiver",
                "--web.enable-admin-api",
                "--storage.tsdb.retention.time=30d",
                "--log.level=warn",
                *(["--enable-feature=native-histograms"] if native else []),
            ],
            "/-/ready",
            "Prometheus",
        )

    def metric(self, name):
        _, body, _ = http_get(f"http://{self.addr}/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def snapshot_bytes(self):
        request = urllib.request.Request(f"http://{self.addr}/api/v1/admin/tsdb/snapshot", method="POST")
        with urllib.request.urlopen(request, timeout=600) as response:
            name = json.load(response)["data"]["name"]
        return disk_bytes(os.path.join(self.data, "snapshots", name))

    def quantiles(self, promql_for, at_ms):
        """{(service, fingerprint): [ms per QUANTILES entry, None when NaN]}
        from promql_for(q), one instant query per quantile."""
        estimates = {}
        for i, q in enumerate(QUANTILES):
            for r in self.query(promql_for(q), at_ms):
                key = (r["metric"]["service"], r["metric"]["fingerprint"])
                value = float(r["value"][1])
                estimates.setdefault(key, [None] * len(QUANTILES))[i] = value * 1000 if value == value else None
        return estimates

    def query(self, promql, at_ms):
        params = urllib.parse.urlencode({"query": promql, "time": f"{at_ms / 1000:.3f}"})
        status, body, _ = http_get(f"http://{self.addr}/api/v1/query?{params}")
        if status != 200:
            raise SystemExit(f"Prometheus query failed ({status}): {body[:300]!r}")
        return json.loads(body)["data"]["result"]


class VictoriaMetrics(PeerServer):
    """Debian's victoria-metrics, single node, as a remote-write receiver.
    It acknowledges a write before the data is durable (it buffers in memory
    and flushes every few seconds), so its rate is a generous anchor."""

    def __init__(self, workdir):
        super().__init__(workdir, "victoria-metrics")
        self.start(
            [
                "victoria-metrics",
                f"-storageDataPath={self.data}",
                f"-httpListenAddr={self.addr}",
                "-retentionPeriod=100y",
                "-loggerLevel=WARN",
            ],
            "/health",
            "VictoriaMetrics",
        )

    def rows(self):
        """Samples stored (vm_rows summed over its storage parts)."""
        _, body, _ = http_get(f"http://{self.addr}/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith("vm_rows{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def flushed_bytes(self):
        """Bytes on disk once everything buffered is written and merged."""
        http_get(f"http://{self.addr}/internal/force_flush")
        http_get(f"http://{self.addr}/internal/force_merge")
        return settle(self.data, quiet_s=10, limit_s=300)


def loadgen(binary, workdir, name, args):
    summary = os.path.join(workdir, f"{name}.json")
    command = [binary, "loadgen", *args, "--summary-json", summary]
    log("  $ " + " ".join(command[1:]))
    usage0, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    with open(os.path.join(workdir, f"{name}.log"), "w") as out:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        STARTED.append(proc)
        for line in proc.stdout:
            out.write(line)
            log("    " + line.rstrip())
        if proc.wait() != 0:
            raise SystemExit(f"loadgen {name} failed; see {out.name}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(summary) as f:
        report = json.load(f)
    cpu = usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime
    report["loadgen_cpu_cores"] = cpu / max(time.time() - started, 1e-9)
    return report


def errors_against_exact(series, estimates):
    """Relative errors per quantile, overall and per statement class."""
    result = {}
    for i, q in enumerate(QUANTILES):
        rel, by_class = [], {}
        for s in series:
            got = estimates.get((s["service"], s["fingerprint"]))
            exact = s["exact_ms"][i]
            if got is None or got[i] is None or exact <= 0:
                continue
            err = (got[i] - exact) / exact
            rel.append(err)
            by_class.setdefault(s["class"], []).append(err)
        if not rel:
            continue
        result[f"p{round(q * 100)}"] = {
            "series": len(rel),
            "median_abs": statistics.median(abs(e) for e in rel),
            "max_abs": max(abs(e) for e in rel),
            "median_signed_by_class": {c: statistics.median(v) for c, v in sorted(by_class.items())},
        }
    return result


def api_estimates(http, report, service=None):
    params = {"from": report["delivered_from_ms"], "to": report["delivered_to_ms"]}
    if service:
        params["service"] = service
    status, body, _ = http_get(f"http://{http}/api/v1/queries?" + urllib.parse.urlencode(params))
    if status != 200:
        raise SystemExit(f"/api/v1/queries answered {status}: {body[:300]!r}")
    out, calls = {}, {}
    for q in json.loads(body)["queries"]:
        key = (q["service"], q["fingerprint"])
        out[key] = [q["p50_ms"], q["p95_ms"], q["p99_ms"]]
        calls[key] = q["calls"]
    return out, calls


def phase_ingest(ctx, scale):
    instances, fingerprints, duration = scale
    log(f"== ingest: live, {instances} instances x {fingerprints} fingerprints, 10 s windows, {duration}")
    collector = Collector(ctx.binary, ctx.workdir, "ingest")
    watch = ProcWatch(collector.proc.pid, ctx.rss_limit_gib * 2**30)
    report = loadgen(
        ctx.binary,
        ctx.workdir,
        "ingest-loadgen",
        ["--instances", str(instances), "--fingerprints", str(fingerprints), "--interval", "10s",
         "--duration", duration, "--endpoint", f"http://{collector.grpc}"],
    )
    proc = watch.finish()
    collector.stop()
    windows = report["totals"]["fingerprint_windows_acked"]
    disk = disk_bytes(collector.data)
    discard(ctx, collector.data)
    offered = instances * fingerprints / 10
    return {
        "instances": instances,
        "fingerprints": fingerprints,
        "offered_windows_per_s": offered,
        "acked_windows_per_s": report["fingerprint_windows_per_s"],
        "batches_per_s": report["totals"]["batches_acked"] / max(report["active_s"], 1e-9),
        "ack_latency_ms": report["ack_latency_ms"],
        "totals": report["totals"],
        "loadgen_cpu_cores": report["loadgen_cpu_cores"],
        "collector": proc,
        "disk_bytes": disk,
        "disk_per_window": disk / windows if windows else None,
    }


def settle(path, quiet_s=15, limit_s=240):
    """Waits until the collector's background compaction and sealing stop
    changing the bytes under path (or limit_s passes); returns the bytes."""
    deadline = time.time() + limit_s
    last, since = disk_bytes(path), time.time()
    while time.time() < deadline and time.time() - since < quiet_s:
        time.sleep(1)
        now = disk_bytes(path)
        if now != last:
            last, since = now, time.time()
    return last


def phase_compare(ctx, scale):
    instances, fingerprints, span = scale
    common = ["--instances", str(instances), "--services", "1", "--fingerprints", str(fingerprints),
              "--interval", "10s", "--backfill", span, "--duration", "3600s", "--seed", str(ctx.seed)]
    log(f"== compare: backfill {span}, {instances} instances x {fingerprints} fingerprints in one service")

    collector = Collector(ctx.binary, ctx.workdir, "compare")
    watch = ProcWatch(collector.proc.pid, ctx.rss_limit_gib * 2**30)
    # The same windows, ending 7 h ago so they lie in closed partitions that
    # the collector seals: the steady state, like Prometheus's block below.
    ours = loadgen(ctx.binary, ctx.workdir, "compare-querypulse",
                   [*common, "--backfill-ending", "7h", "--endpoint", f"http://{collector.grpc}"])
    ours_proc = watch.finish()
    ours_live_disk = disk_bytes(collector.data)
    ours_disk = settle(collector.data)
    estimates, calls = api_estimates(collector.http, ours, "svc-000")
    calls_ok = all(calls.get((s["service"], s["fingerprint"])) == s["calls"] for s in ours["series"])
    collector.stop()
    ours_windows = ours["totals"]["fingerprint_windows_acked"]
    discard(ctx, collector.data)

    prometheus = Prometheus(ctx.workdir)
    watch = ProcWatch(prometheus.proc.pid)
    samples_before = prometheus.metric("prometheus_tsdb_head_samples_appended_total")
    theirs = loadgen(
        ctx.binary,
        ctx.workdir,
        "compare-prometheus",
        [*common, "--prometheus-remote-write", f"http://{prometheus.addr}/api/v1/write"],
    )
    prom_proc = watch.finish()
    samples = prometheus.metric("prometheus_tsdb_head_samples_appended_total") - samples_before
    prom_estimates = prometheus.quantiles(
        lambda q: (f'histogram_quantile({q}, sum by (service, fingerprint, le) '
                   f'(db_client_operation_duration_seconds_bucket{{service="svc-000"}}))'),
        theirs["delivered_to_ms"])
    snapshot = prometheus.snapshot_bytes()
    prometheus.stop()
    discard(ctx, prometheus.data)
    prom_histograms = theirs["totals"]["fingerprint_windows_acked"]
    prom_rate = prom_histograms / max(theirs["active_s"], 1e-9)

    # The same windows as native histograms (schema 3, converted the way the
    # collector's remote write converts them): Prometheus' best histogram.
    prometheus = Prometheus(ctx.workdir, native=True)
    watch = ProcWatch(prometheus.proc.pid)
    native_report = loadgen(
        ctx.binary,
        ctx.workdir,
        "compare-prometheus-native",
        [*common, "--prometheus-remote-write", f"http://{prometheus.addr}/api/v1/write", "--native-histograms"],
    )
    native_proc = watch.finish()
    native_estimates = prometheus.quantiles(
        lambda q: (f'histogram_quantile({q}, sum by (service, fingerprint) '
                   f'(db_client_operation_duration_seconds{{service="svc-000"}}))'),
        native_report["delivered_to_ms"])
    native_snapshot = prometheus.snapshot_bytes()
    prometheus.stop()
    discard(ctx, prometheus.data)
    native_histograms = native_report["totals"]["fingerprint_windows_acked"]
    prometheus_native = {
        "histograms": native_histograms,
        "histograms_per_s": native_histograms / max(native_report["active_s"], 1e-9),
        "process": native_proc,
        "loadgen_cpu_cores": native_report["loadgen_cpu_cores"],
        "snapshot_bytes": native_snapshot,
        "bytes_per_histogram": native_snapshot / native_histograms if native_histograms else None,
        "errors": errors_against_exact(native_report["series"], native_estimates),
    }

    victoria = None
    if shutil.which("victoria-metrics"):
        vm = VictoriaMetrics(ctx.workdir)
        watch = ProcWatch(vm.proc.pid)
        vm_report = loadgen(
            ctx.binary,
            ctx.workdir,
            "compare-victoria-metrics",
            [*common, "--prometheus-remote-write", f"http://{vm.addr}/api/v1/write"],
        )
        vm_proc = watch.finish()
        vm_bytes = vm.flushed_bytes()
        vm_rows = vm.rows()
        vm.stop()
        discard(ctx, vm.data)
        vm_histograms = vm_report["totals"]["fingerprint_windows_acked"]
        victoria = {
            "histograms": vm_histograms,
            "histograms_per_s": vm_histograms / max(vm_report["active_s"], 1e-9),
            "rows": vm_rows,
            "loadgen_cpu_cores": vm_report["loadgen_cpu_cores"],
            "process": vm_proc,
            "disk_bytes": vm_bytes,
            "bytes_per_histogram": vm_bytes / vm_histograms if vm_histograms else None,
        }
    else:
        log("  victoria-metrics is not installed (apt-get install victoria-metrics): skipped")
    return {
        "instances": instances,
        "fingerprints": fingerprints,
        "span": span,
        "querypulse": {
            "windows": ours_windows,
            "windows_per_s": ours["fingerprint_windows_per_s"],
            "ack_latency_ms": ours["ack_latency_ms"],
            "totals": ours["totals"],
            "loadgen_cpu_cores": ours["loadgen_cpu_cores"],
            "collector": ours_proc,
            "disk_bytes": ours_disk,
            "disk_per_window": ours_disk / ours_windows if ours_windows else None,
            "disk_bytes_before_sealing": ours_live_disk,
            "api_calls_match_sent": calls_ok,
            "errors": errors_against_exact(ours["series"], estimates),
        },
        "victoria_metrics": victoria,
        "prometheus_native": prometheus_native,
        "prometheus": {
            "histograms": prom_histograms,
            "histograms_per_s": prom_rate,
            "samples_appended": samples,
            "samples_per_s": samples / max(theirs["active_s"], 1e-9),
            "request_latency_ms": theirs["ack_latency_ms"],
            "totals": theirs["totals"],
            "loadgen_cpu_cores": theirs["loadgen_cpu_cores"],
            "process": prom_proc,
            "snapshot_bytes": snapshot,
            "bytes_per_sample": snapshot / samples if samples else None,
            "bytes_per_histogram": snapshot / prom_histograms if prom_histograms else None,
            "errors": errors_against_exact(theirs["series"], prom_estimates),
        },
    }


def time_requests(url, max_requests, max_seconds):
    times, status = [], None
    deadline = time.time() + max_seconds
    while len(times) < max_requests and (len(times) < 3 or time.time() < deadline):
        status, _, elapsed = http_get(url)
        if status == 404:
            return None
        if status != 200:
            raise SystemExit(f"{url} answered {status}")
        times.append(elapsed * 1000)
    times.sort()
    pick = lambda q: times[min(len(times) - 1, max(0, int(round(q * len(times) + 0.5)) - 1))]
    return {"requests": len(times), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": times[-1]}


def phase_reads(ctx, scale):
    fingerprints, cases = scale
    results = {}
    for label, span, interval in cases:
        log(f"== reads: {fingerprints} fingerprints x {span} of {interval} windows, one instance")
        collector = Collector(ctx.binary, ctx.workdir, f"reads-{label}", max_age_s=9 * 86400)
        load_started = time.time()
        report = loadgen(
            ctx.binary,
            ctx.workdir,
            f"reads-{label}-loadgen",
            ["--instances", "1", "--fingerprints", str(fingerprints), "--interval", interval,
             "--backfill", span, "--in-flight", "32", "--duration", "7200s", "--seed", str(ctx.seed),
             "--endpoint", f"http://{collector.grpc}"],
        )
        load_s = time.time() - load_started
        live_disk = disk_bytes(collector.data)
        window = {"from": report["delivered_from_ms"], "to": report["delivered_to_ms"]}
        base = f"http://{collector.http}/api/v1/queries"
        watch = ProcWatch(collector.proc.pid)
        queries = time_requests(f"{base}?service=svc-000&{urllib.parse.urlencode(window)}", ctx.requests, ctx.read_seconds)
        fingerprint = report["series"][0]["fingerprint"]
        series = time_requests(f"{base}/{fingerprint}/series?{urllib.parse.urlencode(window)}", ctx.requests,
                               ctx.read_seconds)
        proc = watch.finish()
        disk = settle(collector.data)
        collector.stop()
        discard(ctx, collector.data)
        results[label] = {
            "span": span,
            "interval": interval,
            "windows": report["totals"]["fingerprint_windows_acked"],
            "load_s": load_s,
            "load_windows_per_s": report["fingerprint_windows_per_s"],
            "queries": queries,
            "series": series if series else "404: not served by this collector",
            "collector_during_reads": proc,
            "disk_bytes_before_sealing": live_disk,
            "disk_bytes": disk,
            "disk_per_window": disk / report["totals"]["fingerprint_windows_acked"],
        }
    return results


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    run = lambda *c: subprocess.run(c, capture_output=True, text=True).stdout.strip().splitlines()[0]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "rustc": run("rustc", "--version"),
        "prometheus": run("prometheus", "--version"),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    }


def mib(n):
    return f"{n / 2**20:.0f} MiB"


def cores(proc):
    return "n/a (killed)" if proc["cpu_cores"] is None else f"{proc['cpu_cores']:.2f} cores"


def rss_text(proc):
    text = mib(proc["peak_rss"])
    if proc.get("over_512mib_after_s") is not None:
        text += f", past 512 MiB after {proc['over_512mib_after_s']:.0f} s"
    if proc.get("killed"):
        text += f"; killed by the harness at {mib(proc['killed']['rss'])} after {proc['killed']['after_s']:.0f} s"
    return text


def pct(x):
    return "n/a" if x is None else f"{x * 100:+.1f} %"


def pct_abs(x):
    return "n/a" if x is None else f"{x * 100:.1f} %"


def markdown(results):
    lines = []
    m = results["machine"]
    lines.append(f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, {m['rustc']}, "
                 f"{m['prometheus'].split(' (')[0]}; load average at start {' '.join(m['loadavg_at_start'])}.")
    if "ingest" in results:
        r = results["ingest"]
        lines += ["", f"Live ingest, {r['instances']} instances x {r['fingerprints']} fingerprints, 10 s windows "
                  f"(offered {r['offered_windows_per_s']:.0f} fingerprint-windows/s):", "",
                  "| measure | value |", "|---|---|",
                  f"| durable fingerprint-windows/s (acked) | {r['acked_windows_per_s']:.0f} |",
                  f"| batches/s (acked) | {r['batches_per_s']:.1f} |",
                  f"| ack latency p50 / p99 / max | {r['ack_latency_ms']['p50']:.0f} / {r['ack_latency_ms']['p99']:.0f} / {r['ack_latency_ms']['max']:.0f} ms |",
                  f"| rejected / dropped / reconnects / unacked at end | {r['totals']['rejected']} / {r['totals']['dropped']} / {r['totals']['reconnects']} / {r['totals']['unacked_at_end']} |",
                  f"| collector RSS peak | {rss_text(r['collector'])} |",
                  f"| collector CPU | {cores(r['collector'])} |",
                  f"| loadgen CPU (same machine) | {r.get('loadgen_cpu_cores', 0):.2f} cores |",
                  f"| disk per fingerprint-window, current partitions (not yet sealed) | {r['disk_per_window']:.1f} B ({mib(r['disk_bytes'])} total) |"]
    if "compare" in results:
        r = results["compare"]
        q, p = r["querypulse"], r["prometheus"]
        ratio = q["windows_per_s"] / p["histograms_per_s"] if p["histograms_per_s"] else float("nan")
        lines += ["", f"Side by side, same data: {r['span']} backfilled for {r['instances']} instances x "
                  f"{r['fingerprints']} fingerprints in one service, as fast as each acknowledges:", "",
                  "| measure | querypulse | Prometheus 2.42 | ratio |", "|---|---|---|---|",
                  f"| distributions/s absorbed | {q['windows_per_s']:.0f} fingerprint-windows/s | {p['histograms_per_s']:.0f} histograms/s ({p['samples_per_s']:.0f} samples/s) | {ratio:.2f}x |",
                  f"| server CPU while ingesting | {cores(q['collector'])} | {cores(p['process'])} | |",
                  f"| server RSS peak | {rss_text(q['collector'])} | {rss_text(p['process'])} | |",
                  f"| loadgen CPU (same machine) | {q.get('loadgen_cpu_cores', 0):.2f} cores | {p.get('loadgen_cpu_cores', 0):.2f} cores | |",
                  f"| bytes on disk per distribution | {q['disk_per_window']:.1f} B per fingerprint-window (sealed; {q['disk_bytes_before_sealing'] / q['windows']:.1f} B before) | {p['bytes_per_histogram']:.1f} B per histogram ({p['bytes_per_sample']:.2f} B/sample, block snapshot) | {q['disk_per_window'] / p['bytes_per_histogram']:.2f}x |"]
        n = r.get("prometheus_native")
        if n:
            lines.append(f"| Prometheus 2.42 native histograms (schema 3), same data, separate run: histograms/s | "
                         f"{q['windows_per_s']:.0f} | {n['histograms_per_s']:.0f} | {q['windows_per_s'] / n['histograms_per_s']:.2f}x |")
            lines.append(f"| Prometheus native: CPU / RSS peak / bytes per histogram (block snapshot) | "
                         f"{q['disk_per_window']:.1f} B | {cores(n['process'])} / {rss_text(n['process'])} / {n['bytes_per_histogram']:.1f} B | "
                         f"{q['disk_per_window'] / n['bytes_per_histogram']:.2f}x |")
            for name in ("p50", "p95", "p99"):
                ne = n["errors"].get(name)
                if ne:
                    lines.append(f"| Prometheus native: {name} abs. error, median / worst of {ne['series']} series | | "
                                 f"{pct_abs(ne['median_abs'])} / {pct_abs(ne['max_abs'])} | |")
        v = r.get("victoria_metrics")
        if v:
            lines.append(f"| VictoriaMetrics 1.79, same data, separate run: histograms/s (acked before durable) | "
                         f"{q['windows_per_s']:.0f} | {v['histograms_per_s']:.0f} | {q['windows_per_s'] / v['histograms_per_s']:.2f}x |")
            lines.append(f"| VictoriaMetrics: CPU / RSS peak / bytes per histogram after a flush and merge | "
                         f"{q['disk_per_window']:.1f} B | {cores(v['process'])} / {rss_text(v['process'])} / {v['bytes_per_histogram']:.1f} B | "
                         f"{q['disk_per_window'] / v['bytes_per_histogram']:.2f}x |")
        for name in ("p50", "p95", "p99"):
            qe, pe = q["errors"].get(name), p["errors"].get(name)
            if qe and pe:
                lines.append(f"| {name} abs. error, median / worst of {qe['series']} series | {pct_abs(qe['median_abs'])} / {pct_abs(qe['max_abs'])} | {pct_abs(pe['median_abs'])} / {pct_abs(pe['max_abs'])} | |")
        for name in ("p50", "p95", "p99"):
            qe, pe = q["errors"].get(name), p["errors"].get(name)
            if qe and pe:
                classes = ", ".join(f"{c} {pct(v)}" for c, v in qe["median_signed_by_class"].items())
                pclasses = ", ".join(f"{c} {pct(v)}" for c, v in pe["median_signed_by_class"].items())
                lines.append(f"| {name} median signed error by class | {classes} | {pclasses} | |")
        lines.append(f"| API calls equal calls sent | {q['api_calls_match_sent']} | | |")
    if "reads" in results:
        lines += ["", "API latency (client side, sequential requests, 1 instance):", "",
                  "| data set | windows loaded | load rate | `/api/v1/queries` p50 / p99 | `.../series` p50 / p99 | disk per window (closed partitions sealed) |",
                  "|---|---|---|---|---|---|"]
        for label, r in results["reads"].items():
            qs = r["queries"]
            ser = r["series"]
            ser_text = ser if isinstance(ser, str) else f"{ser['p50_ms']:.0f} / {ser['p99_ms']:.0f} ms ({ser['requests']} requests)"
            lines.append(f"| {r['span']} of {r['interval']} windows | {r['windows']} | {r['load_windows_per_s']:.0f}/s | "
                         f"{qs['p50_ms']:.0f} / {qs['p99_ms']:.0f} ms ({qs['requests']} requests) | {ser_text} | "
                         f"{r['disk_per_window']:.1f} B ({mib(r['disk_bytes'])}) |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/querypulse")
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--phases", default="ingest,compare,reads")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=50, help="read requests per endpoint and data set, at most")
    parser.add_argument("--read-seconds", type=float, default=120, help="time cap per endpoint and data set")
    parser.add_argument("--ingest", metavar="INSTANCESxFINGERPRINTS",
                        help="shape of the live ingest phase instead of the scale's, e.g. 200x1000")
    parser.add_argument("--rss-limit-gib", type=float, default=4,
                        help="kill a collector whose RSS passes this (the machine is shared)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the servers' data directories (the full run needs ~12 GB free)")
    parser.add_argument("--out", help="directory for logs and results [default: a new temporary directory]")
    ctx = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx.binary = os.path.abspath(ctx.binary)
    if not os.path.exists(ctx.binary):
        raise SystemExit(f"{ctx.binary} is missing: cargo build --release -p querypulse-collector")
    if "compare" in ctx.phases and not shutil.which("prometheus"):
        raise SystemExit("prometheus is missing: apt-get install -y prometheus")
    ctx.workdir = ctx.out or tempfile.mkdtemp(prefix="querypulse-bench-")
    os.makedirs(ctx.workdir, exist_ok=True)
    log(f"working in {ctx.workdir}")
    scale = dict(SCALES[ctx.scale])
    if ctx.ingest:
        instances, fingerprints = (int(n) for n in ctx.ingest.lower().split("x"))
        scale["ingest"] = (instances, fingerprints, scale["ingest"][2])
    results = {"machine": machine(), "scale": ctx.scale}
    try:
        for phase in ctx.phases.split(","):
            runner = {"ingest": phase_ingest, "compare": phase_compare, "reads": phase_reads}[phase]
            results[phase] = runner(ctx, scale[phase])
            with open(os.path.join(ctx.workdir, "results.json"), "w") as f:
                json.dump(results, f, indent=2)
    finally:
        stop_all()
    table = markdown(results)
    with open(os.path.join(ctx.workdir, "results.md"), "w") as f:
        f.write(table)
    log("")
    log(table)
    log(f"results: {ctx.workdir}/results.json and results.md")


if __name__ == "__main__":
    sys.exit(main())
