#!/usr/bin/env bash
# Measures OTLP/HTTP trace ingest and prints the figures recorded in
# docs/BENCHMARKS.md: batches of GenAI chat spans (8 clients x 1000 spans of
# ~1 KiB, one protobuf request per batch, as the OpenTelemetry SDK's batch
# exporter sends them) against NDJSON events of the same shape, alternating,
# each run on a fresh server and data directory so that no run inherits the
# query index's backlog of the one before.
# Usage: scripts/bench-otlp.sh [seconds per run, default 10] [pairs, default 3]
#        [index.max_lag, default the server's default, 0: no limit]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
pairs=${2:-3}
. scripts/bench-common.sh
addr=127.0.0.1:18184
config=()
if [ -n "${3:-}" ]; then
  printf 'index:\n  max_lag: %s\n' "$3" >"$work/config.yaml"
  config=(--config "$work/config.yaml")
fi

# run [--otlp] prints one run's JSON result on a fresh server.
run() {
  local data=$work/data-$RANDOM
  AITRAIL_ADMIN_TOKEN=$AITRAIL_TOKEN "$bin" serve "${config[@]}" --data "$data" --addr "$addr" --log-level warn 2>"$work/server.log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.1; done
  "$bin" bench "$@" --url "http://$addr" --clients 8 --batch 1000 --size 1024 --duration "${secs}s" --json 2>/dev/null
  kill -TERM $pid; wait $pid || true
  # The data directory goes only at exit (bench-common.sh): removing its
  # tens of thousands of tile files would make ext4 slower to create files
  # for a while (it passes over recently freed inodes) and slow the next run.
}

echo
echo "## 8 clients x 1000 items: OTLP spans/s (ack p50, p99 ms) | NDJSON events/s"
# field JSON NAME prints a number from bench's JSON result.
field() { echo "$1" | sed "s/.*\"$2\":\([0-9.]*\).*/\1/"; }
for _ in $(seq "$pairs"); do
  o=$(run --otlp); n=$(run)
  printf '%.0f (%.0f, %.0f) | %.0f\n' "$(field "$o" events_per_sec)" "$(field "$o" p50_ms)" "$(field "$o" p99_ms)" "$(field "$n" events_per_sec)"
done
