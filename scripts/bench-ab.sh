#!/usr/bin/env bash
# Compares two builds of aitrail under the same load, alternating, so that
# a shared machine's changing speed falls on both alike: each run starts a
# fresh server on a fresh data directory, drives it with `aitrail bench`,
# watches the query index's lag every 0.2 s, then times how long the index
# takes to catch up and reads the server's peak memory.
# Usage: scripts/bench-ab.sh OLD_BINARY NEW_BINARY [seconds per run, default 15]
#        [pairs, default 3] [aitrail bench flags, default --clients 8 --batch 100]
# Build the two binaries first, e.g. with git worktree and go build. Set
# AB_CONFIG to a configuration file both servers start with.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
old=$(realpath "$1")
new=$(realpath "$2")
secs=${3:-15}
pairs=${4:-3}
shift $(( $# < 4 ? $# : 4 ))
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(--clients 8 --batch 100)
. scripts/bench-common.sh
addr=127.0.0.1:18185

index_lag() {
  curl -s "http://$addr/metrics" | awk '/^aitrail_follower_lag_records\{follower="index"\}/ {print int($2)}'
}

# run prints one run's line for the binary $1.
run() {
  local data=$work/data-$RANDOM
  AITRAIL_ADMIN_TOKEN=$AITRAIL_TOKEN "$1" serve ${AB_CONFIG:+--config "$AB_CONFIG"} --data "$data" --addr "$addr" --log-level warn 2>"$work/server.log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.1; done
  "$1" bench --url "http://$addr" --size 1024 --duration "${secs}s" --json "${flags[@]}" >"$work/run.json" 2>/dev/null &
  local bpid=$! max=0 l
  while kill -0 $bpid 2>/dev/null; do
    l=$(index_lag)
    [ -n "$l" ] && [ "$l" -gt "$max" ] && max=$l
    sleep 0.2
  done
  wait $bpid
  local start
  start=$(date +%s.%N)
  while [ "$(index_lag)" != "0" ]; do sleep 0.05; done
  local caught
  caught=$(echo "$(date +%s.%N) - $start" | bc)
  local hwm
  hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status")
  kill -TERM $pid; wait $pid || true
  chattr -R -ia "$data" 2>/dev/null; rm -rf "$data"
  sed 's/.*"events_per_sec":\([0-9.]*\).*"p50_ms":\([0-9.]*\).*"p99_ms":\([0-9.]*\).*/\1 \2 \3/' "$work/run.json" |
    awk -v max="$max" -v caught="$caught" -v hwm="$hwm" \
      '{printf "%.0f events/s, ack p50 %s ms, p99 %s ms; index lag up to %d, caught up %.2f s after; peak memory %d MiB\n", $1, $2, $3, max, caught, hwm}'
}

echo
echo "## $secs s runs: aitrail bench ${flags[*]}, alternating (old: $old, new: $new)"
for _ in $(seq "$pairs"); do
  echo "old: $(run "$old")"
  echo "new: $(run "$new")"
done
