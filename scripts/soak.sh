#!/usr/bin/env bash
# Soak: a fresh `querypulse serve` under a steady fleet for a long time,
# sampling the collector's resident memory, its data directory's size and
# the load generator's acknowledgement latency once a minute. Not run by CI.
#
#   scripts/soak.sh [OUT_DIR]
#
# Environment (defaults in brackets): BIN [target/release/querypulse],
# DURATION [3600] seconds, INSTANCES [1000], FINGERPRINTS [1000] (half of the
# 2,000 x 1,000 fleet one collector takes on two cores), INTERVAL [10s],
# SAMPLE_EVERY [60] seconds, CONFIG [none] (a TOML file for `serve --config`,
# for example a short retention so that it is reached during the run).
# Ports 17471 (gRPC) and 17470 (HTTP) on
# 127.0.0.1. Writes OUT_DIR/samples.csv (elapsed_s, rss_mib, disk_mib,
# ack_p50_ms, ack_p99_ms, windows_per_s) and the collector's and load
# generator's logs; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${BIN:-target/release/querypulse}"
DURATION="${DURATION:-3600}"
INSTANCES="${INSTANCES:-1000}"
FINGERPRINTS="${FINGERPRINTS:-1000}"
INTERVAL="${INTERVAL:-10s}"
SAMPLE_EVERY="${SAMPLE_EVERY:-60}"
CONFIG="${CONFIG:-}"
OUT="${1:-soak-$(date +%Y%m%dT%H%M%S)}"

mkdir -p "$OUT"
rm -rf "$OUT/data"
"$BIN" serve ${CONFIG:+--config "$CONFIG"} --data-dir "$OUT/data" --grpc-listen 127.0.0.1:17471 --http-listen 127.0.0.1:17470 \
  >"$OUT/serve.log" 2>&1 &
serve=$!
trap 'kill $serve $loadgen 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:17470/healthz >/dev/null 2>&1 && break
  sleep 0.1
done

"$BIN" loadgen --instances "$INSTANCES" --fingerprints "$FINGERPRINTS" --interval "$INTERVAL" \
  --duration "${DURATION}s" --endpoint http://127.0.0.1:17471 --report-every "${SAMPLE_EVERY}s" \
  >"$OUT/loadgen.log" 2>&1 &
loadgen=$!

echo "elapsed_s,rss_mib,disk_mib,ack_p50_ms,ack_p99_ms,windows_per_s" >"$OUT/samples.csv"
started=$SECONDS
while kill -0 "$loadgen" 2>/dev/null; do
  sleep "$SAMPLE_EVERY"
  rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$serve/status" 2>/dev/null || echo "")
  disk=$(du -sm "$OUT/data" 2>/dev/null | cut -f1)
  # The load generator's last progress line: "... N fingerprint-windows/s, ... ack p50 X ms, p99 Y ms ..."
  line=$(grep -a "fingerprint-windows/s" "$OUT/loadgen.log" | tail -1 || true)
  p50=$(sed -n 's/.*ack p50 \([0-9.]*\) \(m\?s\).*/\1 \2/p' <<<"$line" | awk '{print ($2 == "s") ? $1 * 1000 : $1}')
  p99=$(sed -n 's/.*p99 \([0-9.]*\) \(m\?s\),.*/\1 \2/p' <<<"$line" | awk '{print ($2 == "s") ? $1 * 1000 : $1}')
  rate=$(sed -n 's/^\[[^]]*\] *\([0-9]*\) fingerprint-windows\/s.*/\1/p' <<<"$line")
  echo "$((SECONDS - started)),$rss,$disk,$p50,$p99,$rate" | tee -a "$OUT/samples.csv"
done
wait "$loadgen" || true
tail -4 "$OUT/loadgen.log"
