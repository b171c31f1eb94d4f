#!/usr/bin/env bash
# Compares two builds of aitrail under the same load, alternating, so that
# a shared machine's changing speed falls on both alike: each run starts a
# fresh server on a fresh data directory, drives it with the new build's
# `aitrail bench --watch-lag 200ms` (which follows the query index's lag and
# times how long the index takes to catch up after the run), and reads the
# server's peak memory.
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

# run prints one run's line for the binary $1. Both builds are driven by the
# new build's load generator, which also follows the index lag.
run() {
  local data=$work/data-$RANDOM
  AITRAIL_ADMIN_TOKEN=$AITRAIL_TOKEN "$1" serve ${AB_CONFIG:+--config "$AB_CONFIG"} --data "$data" --addr "$addr" --log-level warn 2>"$work/server.log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.1; done
  "$new" bench --url "http://$addr" --size 1024 --duration "${secs}s" --watch-lag 200ms --json "${flags[@]}" >"$work/run.json" 2>/dev/null
  local hwm
  hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status")
  kill -TERM $pid; wait $pid || true
  # The data directory goes only at exit (bench-common.sh): removing its
  # tens of thousands of tile files would make ext4 slower to create files
  # for a while (it passes over recently freed inodes) and slow the next run.
  local r=$work/run.json
  printf '%.0f events/s, ack p50 %s ms, p99 %s ms; index lag up to %d, caught up %.2f s after; peak memory %d MiB\n' \
    "$(field events_per_sec "$r")" "$(field p50_ms "$r")" "$(field p99_ms "$r")" \
    "$(field max_index_lag "$r")" "$(field index_caught_up_s "$r")" "$hwm"
}

echo
echo "## $secs s runs: aitrail bench ${flags[*]}, alternating (old: $old, new: $new)"
for _ in $(seq "$pairs"); do
  echo "old: $(run "$old")"
  echo "new: $(run "$new")"
done
