#!/usr/bin/env bash
# Runs the workspace's test executables with the system clock moved ahead
# (default a year) under faketime, so a test that reads the wall clock where
# it should read an injected one fails today instead of on some future date.
#
#   scripts/test-clock-ahead.sh [--offset +365d] [--skip TEST]... [-- cargo test selection...]
#   scripts/test-clock-ahead.sh --offset +730d -- -p querypulse-collector --lib
#
# The executables are built without faketime (rustc can hang under it), then
# each runs from its package's directory, as `cargo test` runs it. Child
# processes inherit the moved clock, except static Go programs (Alertmanager,
# Prometheus' promtool), which read the kernel's: a test that needs the two
# clocks to agree is named with --skip.
set -euo pipefail
cd "$(dirname "$0")/.."

offset="+365d"
skips=()
while [ $# -gt 0 ]; do
  case "$1" in
    --offset) offset="$2"; shift 2 ;;
    --skip) skips+=(--skip "$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
selection=("$@")
[ ${#selection[@]} -gt 0 ] || selection=(--workspace)

command -v faketime >/dev/null || {
  echo "faketime is not installed (apt-get install faketime)" >&2
  exit 2
}

list=$(mktemp)
trap 'rm -f "$list"' EXIT
cargo test "${selection[@]}" --no-run --message-format=json 2>/dev/null | python3 -c '
import json, os, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(os.path.dirname(m["manifest_path"]) + "\t" + m["executable"])
' | sort -u >"$list"

echo "clock: $(faketime -f "$offset" date -u)"
failed=0
ran=0
while IFS=$'\t' read -r dir exe; do
  ran=$((ran + 1))
  echo "-- $(basename "$exe") (in ${dir#"$PWD"/})"
  if ! (cd "$dir" && faketime -f "$offset" "$exe" -q ${skips[@]+"${skips[@]}"}); then
    failed=$((failed + 1))
    echo "FAILED with the clock at $offset: $exe"
  fi
done <"$list"
echo "== clock $offset: $((ran - failed)) of $ran test executables passed"
[ "$ran" -gt 0 ] && [ "$failed" -eq 0 ]
