#!/usr/bin/env bash
# Collector benchmarks: durable ingest, disk per window, RSS, API latency, and
# the side-by-side comparison with Prometheus 2.42 (Debian 12's package), all
# on 127.0.0.1, data in a temporary directory, stopping by themselves.
#
#   apt-get install -y prometheus python3      # once, on Debian 12
#   scripts/bench-collector.sh                 # everything (~30 min on 2 cores)
#   scripts/bench-collector.sh --scale quick   # a smoke run (~3 min)
#   scripts/bench-collector.sh --phases compare
#
# Options are those of scripts/bench_collector.py (--help). Results land in
# the printed directory as results.md and results.json; see BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "python3 is missing: apt-get install -y python3" >&2; exit 1; }
command -v prometheus >/dev/null || { echo "prometheus is missing: apt-get install -y prometheus" >&2; exit 1; }
cargo build --release -p querypulse-collector
exec python3 scripts/bench_collector.py --binary target/release/querypulse "$@"
