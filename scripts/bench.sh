#!/usr/bin/env bash
# Runs aitrail's ingest benchmarks in one go on this machine and prints the
# figures recorded in docs/BENCHMARKS.md:
#   - the raw reference: one writer appending 1 KiB records to one file with
#     group-committed fdatasync (aitrail bench-disk);
#   - batched ingest: 8 clients x 100 events of ~1 KiB;
#   - single-event ingest: 64 clients x 1 event, and as its reference the
#     same requests answered by net/http alone (aitrail bench-http);
#   - acknowledgement latency at light load (1 client, 100 requests/s);
#   - the cost of encryption and pseudonyms (service actors and no content
#     against pseudonymised user actors and encrypted content, alternating
#     in a balanced order);
#   - index lag during batched ingest, peak server memory, log and index
#     sizes on disk;
#   - aitrail verify --data speed over the log the run wrote;
#   - batched ingest again on a fresh server with index.max_lag 0 (no
#     limit; the default is 12000), with its index lag.
# Usage: scripts/bench.sh [seconds per run, default 20]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
. scripts/bench-common.sh
data=$work/data
addr=127.0.0.1:18181
http_addr=127.0.0.1:18182
echo

echo "## raw reference (bench-disk: 1 KiB records, 800 per fdatasync)"
mkdir -p "$data"
ref=$("$bin" bench-disk --dir "$data" --size 1024 --batch 800 --duration "${secs}s" --json)
echo "$ref"
ref_rps=$(echo "$ref" | sed 's/.*"records_per_sec":\([0-9.]*\).*/\1/')

AITRAIL_ADMIN_TOKEN=$AITRAIL_TOKEN "$bin" serve --data "$data" --addr "$addr" --log-level warn 2>"$work/server.log" &
pid=$!
for _ in $(seq 100); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.1; done

# caught_up waits until the query index has applied every record.
caught_up() {
  while [ "$(curl -s "http://$addr/metrics" | awk '/^aitrail_follower_lag_records\{follower="index"\}/ {print int($2)}')" != "0" ]; do sleep 0.05; done
}

echo
echo "## batched ingest (8 clients x 100 events of ~1 KiB)"
"$bin" bench --url "http://$addr" --clients 8 --batch 100 --size 1024 --duration "${secs}s" --watch-lag 100ms --json >"$work/batched.json"
cat "$work/batched.json"
batched_rps=$(field events_per_sec "$work/batched.json")
echo "- max index lag during the run: $(field max_index_lag "$work/batched.json") records"
echo "- index caught up $(field index_caught_up_s "$work/batched.json") s after the run"
echo "- ratio to the raw reference: $(echo "scale=3; $batched_rps / $ref_rps" | bc)"

echo
echo "## single-event ingest (64 clients x 1 event)"
"$bin" bench --url "http://$addr" --clients 64 --batch 1 --size 1024 --duration "${secs}s" --json >"$work/single.json"
cat "$work/single.json"

echo
echo "## HTTP reference: the same requests answered by net/http alone (bench-http), the server above idle"
"$bin" bench-http --addr "$http_addr" >/dev/null &
http_pid=$! pids=$http_pid
for _ in $(seq 100); do curl -sf "http://$http_addr/readyz" >/dev/null && break; sleep 0.1; done
"$bin" bench --url "http://$http_addr" --clients 64 --batch 1 --size 1024 --duration "${secs}s" --json >"$work/http.json"
kill -TERM $http_pid; wait $http_pid || true
pids=
cat "$work/http.json"
echo "- single-event ingest as a share of the HTTP reference: $(echo "scale=3; $(field events_per_sec "$work/single.json") / $(field events_per_sec "$work/http.json")" | bc)"

echo
echo "## light load (1 client, 100 requests/s, 1 event each)"
"$bin" bench --url "http://$addr" --clients 1 --batch 1 --size 1024 --rate 100 --duration 10s --json

echo
echo "## cost of encryption and pseudonyms: batched ingest with service actors (stored as sent)"
echo "## and no content, then with pseudonymised user actors and encrypted content: 4 pairs of"
echo "## half-length runs in the order S C C S S C C S, so that a machine slowing down (or speeding"
echo "## up) through the runs weighs on both kinds alike; each run starts once the index has caught up"
half=$(( (secs + 1) / 2 ))
plain_sum=0 protected_sum=0
for kind in S C C S S C C S; do
  caught_up
  if [ $kind = S ]; then
    r=$("$bin" bench --url "http://$addr" --clients 8 --batch 100 --size 1024 --actor-type service --duration "${half}s" --json)
  else
    r=$("$bin" bench --url "http://$addr" --clients 8 --batch 100 --size 1024 --content --duration "${half}s" --json)
  fi
  echo "$r"
  rate=$(echo "$r" | sed 's/.*"events_per_sec":\([0-9.]*\).*/\1/')
  if [ $kind = S ]; then plain_sum=$(echo "$plain_sum + $rate" | bc); else protected_sum=$(echo "$protected_sum + $rate" | bc); fi
done
echo "- service actors, no content: $(echo "$plain_sum / 4" | bc) events/s on average;" \
  "user actors and content: $(echo "$protected_sum / 4" | bc) events/s:" \
  "$(echo "scale=1; 100 * ($plain_sum - $protected_sum) / $plain_sum" | bc) % slower"
echo

echo "## server memory"
grep -E 'VmHWM|VmRSS' /proc/$pid/status

kill -TERM $pid; wait $pid || true
echo
echo "## on disk (the log, and the query index that points into it)"
echo "- records: $(ls "$data"/log/segments | wc -l) segment files, $(du -sm "$data/log" | cut -f1) MiB of log"
echo "- index.db: $(du -cm "$data"/index.db* | tail -1 | cut -f1) MiB with its write-ahead log"
echo
echo "## verify --data"
# The OK line's rate is the log's verification; the query index is checked
# after it, and the whole command is timed too.
vstart=$(date +%s.%N)
"$bin" verify --data "$data" 2>&1 | grep -E "^(OK|FAILED|Query index)"
echo "- the whole command, query index check included: $(awk -v s="$vstart" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }') s"

echo
echo "## batched ingest with index.max_lag 0 (producers never wait for the query index), fresh data"
printf 'index:\n  max_lag: 0\n' >"$work/maxlag.yaml"
data2=$work/data-maxlag
AITRAIL_ADMIN_TOKEN=$AITRAIL_TOKEN "$bin" serve --config "$work/maxlag.yaml" --data "$data2" --addr "$addr" --log-level warn 2>"$work/server2.log" &
pid=$!
for _ in $(seq 100); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.1; done
"$bin" bench --url "http://$addr" --clients 8 --batch 100 --size 1024 --duration "${secs}s" --watch-lag 100ms --json >"$work/maxlag.json"
cat "$work/maxlag.json"
echo "- max index lag during the run: $(field max_index_lag "$work/maxlag.json") records"
echo "- index caught up $(field index_caught_up_s "$work/maxlag.json") s after the run"
kill -TERM $pid; wait $pid || true
