#!/usr/bin/env bash
# Measures ingest sustained on one server as its log grows: consecutive
# runs of `aitrail bench` against the same fresh server, printing after each
# the rate, the ack latency and how far each follower (query index,
# detector, registry) is behind the log, in the middle of the run and at
# its end. A follower that falls out of the log's in-memory tail, or an
# index whose cost grows with the log, shows here and not in a fresh
# server's first seconds.
# Usage: scripts/bench-sustained.sh [otlp|random|ordered, default otlp]
#        [runs, default 8] [seconds per run, default 15] [aitrail binary]
#   otlp:    8 clients x 1000 GenAI spans per OTLP/HTTP request
#   random:  8 clients x 100 NDJSON events with ids in no order (UUIDv4)
#   ordered: 8 clients x 100 NDJSON events with time-ordered ids
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-otlp}
runs=${2:-8}
secs=${3:-15}
. scripts/bench-common.sh
if [ -n "${4:-}" ]; then bin=$4; fi
case $mode in
otlp) flags=(--otlp --batch 1000) ;;
random) flags=(--random-ids --batch 100) ;;
ordered) flags=(--batch 100) ;;
*) echo "unknown mode $mode (otlp, random or ordered)" >&2; exit 2 ;;
esac
addr=127.0.0.1:18185
AITRAIL_ADMIN_TOKEN=$AITRAIL_TOKEN "$bin" serve --data "$work/data" --addr "$addr" --log-level warn 2>"$work/server.log" &
pid=$!
for _ in $(seq 100); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.1; done

# lags prints each follower's lag as name=records.
lags() {
  curl -s "http://$addr/metrics" | sed -n 's/^aitrail_follower_lag_records{follower="\(.*\)"} \(.*\)/\1=\2/p' | tr '\n' ' '
}

echo
echo "## $mode, ${secs} s runs on one server: rate (ack p50, p99 ms); followers behind mid-run | at the end"
for _ in $(seq "$runs"); do
  (sleep $((secs * 4 / 5)); lags >"$work/mid") &
  sampler=$!
  "$bin" bench "${flags[@]}" --url "http://$addr" --clients 8 --size 1024 --duration "${secs}s" --json >"$work/run.json" 2>/dev/null
  wait $sampler
  printf '%.0f/s (%.1f, %.1f); %s| %s\n' "$(field events_per_sec "$work/run.json")" "$(field p50_ms "$work/run.json")" \
    "$(field p99_ms "$work/run.json")" "$(cat "$work/mid")" "$(lags)"
done
echo "- records in the log: $(curl -s "http://$addr/metrics" | sed -n 's/^aitrail_ledger_records \(.*\)/\1/p')"
