#!/usr/bin/env bash
# Measures how long `aitrail serve` takes to become ready on a log it wrote:
# it fills a fresh data directory with batched ingest (8 clients x 100
# events of ~1 KiB) for the given seconds, stops the server with SIGTERM
# (which writes the start-up snapshot), then starts it again in alternation
# from the snapshot and reading every record (ledger.snapshot_records: -1),
# and finally kills it with SIGKILL under load and times the start after.
# Usage: scripts/bench-startup.sh [seconds of ingest, default 35] [pairs, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-35}
pairs=${2:-3}
. scripts/bench-common.sh
addr=127.0.0.1:18187
data=$work/data
printf 'ledger:\n  snapshot_records: -1\n' >"$work/every-record.yaml"

# start starts the server on $data with the extra arguments given, and
# sets ready to the seconds until /readyz answered.
start() {
  local t0
  t0=$(date +%s%N)
  AITRAIL_ADMIN_TOKEN=$AITRAIL_TOKEN "$bin" serve --data "$data" --addr "$addr" "$@" >/dev/null 2>"$work/server.log" &
  pid=$!
  until curl -sf "http://$addr/readyz" >/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/server.log"; exit 1; }
    sleep 0.02
  done
  ready=$(awk -v ms=$(( ($(date +%s%N) - t0) / 1000000 )) 'BEGIN {printf "%.2f", ms / 1000}')
}

# snapshotLines prints what the server logged about the start-up snapshot.
snapshotLines() {
  grep -o '"msg":"[^"]*snapshot[^}]*' "$work/server.log" | sed 's/^"msg"://; s/^/  /' || true
}

# stop stops the server, after the check of the records below the
# snapshot if it runs one.
stop() {
  if grep -q 'started from the start-up snapshot' "$work/server.log"; then
    until grep -q 'checked the records below' "$work/server.log"; do sleep 0.2; done
  fi
  kill -TERM $pid
  wait $pid
  pid=
}

echo
echo "## filling the log: ${secs} s of batched ingest"
start
"$bin" bench --url "http://$addr" --size 1024 --duration "${secs}s" --clients 8 --batch 100 --json >"$work/run.json" 2>/dev/null
stop
echo "- $(field events "$work/run.json") events at $(field events_per_sec "$work/run.json" | cut -d. -f1) events/s; log $(du -sh "$data/log" | cut -f1)"
snapshotLines

echo
echo "## time to /readyz, alternating"
for _ in $(seq "$pairs"); do
  start
  echo "- from the snapshot: $ready s"
  stop
  snapshotLines | grep -v wrote
  start --config "$work/every-record.yaml"
  echo "- reading every record: $ready s"
  stop
done

echo
echo "## after SIGKILL under batched ingest (12 s of load)"
start
"$bin" bench --url "http://$addr" --size 1024 --duration 30s --clients 8 --batch 100 >/dev/null 2>&1 &
pids=$!
sleep 12
kill -KILL $pid
wait $pid 2>/dev/null || true
kill $pids 2>/dev/null || true
wait $pids 2>/dev/null || true
pids=
start
echo "- from the newest snapshot: $ready s"
stop
snapshotLines
