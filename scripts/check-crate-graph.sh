#!/usr/bin/env bash
# Checks the rules the crate graph exists to enforce (README, "How it fits
# together"): which crates may not depend, directly or through others, on
# which. Also checks that the top level holds only the folders the project
# was specified with. Exits non-zero naming every broken rule.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0

# forbid CRATE FEATURES DEPENDENCY...: CRATE's normal dependency tree (with
# FEATURES) holds none of DEPENDENCY.
forbid() {
  local crate="$1" features="$2"
  shift 2
  local tree
  tree="$(cargo tree --quiet -e normal -p "$crate" $features --prefix none --format '{p}' | awk '{print $1}' | sort -u)"
  for dependency in "$@"; do
    if grep -qx "$dependency" <<<"$tree"; then
      echo "crate graph: $crate depends on $dependency:"
      cargo tree --quiet -e normal -p "$crate" $features -i "$dependency" | head -n 8
      failed=1
    fi
  done
}

forbid querypulse-domain "" tonic prost sled axum askama querypulse-proto
forbid querypulse-proto "" sled axum askama
forbid querypulse-agent "--all-features" sled axum askama
forbid querypulse-store "" tonic prost axum askama lettre reqwest hyper querypulse-proto
forbid querypulse-alerts "" axum askama tonic querypulse-proto
forbid querypulse-loadgen "" querypulse-store sled axum askama
forbid querypulse-web "" tonic prost sled querypulse-proto

# The top level: these folders and nothing else.
allowed="agent collector deploy docs proto scripts tests web"
for entry in */; do
  name="${entry%/}"
  if [ "$name" = target ]; then continue; fi
  if ! grep -qw "$name" <<<"$allowed"; then
    echo "layout: unexpected top-level folder $name/ (allowed: $allowed)"
    failed=1
  fi
done

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "crate graph and layout: ok"
