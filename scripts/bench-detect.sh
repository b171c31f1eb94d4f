#!/usr/bin/env bash
# Measures what detection costs batched ingest and prints the figures
# recorded in docs/BENCHMARKS.md: batched ingest (8 clients x 100 events of
# ~1 KiB) with the built-in rule pack plus 100 generated extra rules,
# against the same build with no rules at all, alternating, each run on a
# fresh data directory; then the time from an event's receipt to its alert
# being recorded, at 10,000 events/s, with the same rules plus one that
# fires on the first event of every request.
# Usage: scripts/bench-detect.sh [seconds per run, default 15] [pairs, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
pairs=${2:-3}
. scripts/bench-common.sh
addr=127.0.0.1:18183

# 100 extra rules of every kind over the common event types, as a large
# deployment might add (the same shapes as internal/detect's BenchmarkObserve).
types=(ai.inference api.call access.attempt data.export admin.change)
{
  echo "rules:"
  for i in $(seq 0 99); do
    echo "  - id: extra-$i"
    echo "    types: [${types[$((i % 5))]}]"
    case $((i % 4)) in
      0) echo "    kind: match"
         echo "    condition: actor.id == 'hmac-sha256:user-$i' && outcome == 'failure'" ;;
      1) echo "    kind: threshold"
         echo "    condition: outcome != 'success' || double(attributes[?'gen_ai.usage.input_tokens'].orValue(0)) > $((1000 + i)).0"
         echo "    group_by: [tenant, actor.id]"
         echo "    window: 5m"
         echo "    threshold: 1000000" ;;
      2) echo "    kind: new_value"
         echo "    condition: model.name.startsWith('gpt-$i')"
         echo "    group_by: [tenant]"
         echo "    value: [model.version]" ;;
      3) echo "    kind: anomaly"
         echo "    condition: action.contains('$i')"
         echo "    group_by: [tenant, actor.id]"
         echo "    min_volume: 100" ;;
    esac
  done
} >"$work/extra.yaml"
printf 'detect:\n  rules: [%s]\n' "$work/extra.yaml" >"$work/with.yaml"
printf 'detect:\n  disable_builtin: true\n' >"$work/without.yaml"
"$bin" rules check "$work/extra.yaml" >/dev/null


# run CONFIG prints the events/s of one batched run on a fresh directory.
run() {
  local data=$work/data-$RANDOM
  AITRAIL_ADMIN_TOKEN=$AITRAIL_TOKEN "$bin" serve --config "$work/$1.yaml" --data "$data" --addr "$addr" --log-level warn 2>"$work/server.log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.1; done
  "$bin" bench --url "http://$addr" --clients 8 --batch 100 --size 1024 --duration "${secs}s" --json 2>/dev/null |
    sed 's/.*"events_per_sec":\([0-9.]*\).*/\1/'
  kill -TERM $pid; wait $pid || true
  # The data directory goes only at exit (bench-common.sh): removing its
  # tens of thousands of tile files would make ext4 slower to create files
  # for a while (it passes over recently freed inodes) and slow the next run.
}

echo
echo "## batched ingest, events/s: built-in pack + 100 extra rules | no rules"
sum_with=0; sum_without=0
for _ in $(seq "$pairs"); do
  w=$(run with); wo=$(run without)
  printf '%.0f | %.0f\n' "$w" "$wo"
  sum_with=$(echo "$sum_with + $w" | bc); sum_without=$(echo "$sum_without + $wo" | bc)
done
printf -- '- detection costs %.1f %% of batched ingest\n' "$(echo "scale=6; 100 * (1 - $sum_with / $sum_without)" | bc)"

echo
echo "## receipt to alert at 10,000 events/s (8 clients x 100 events, 100 requests/s)"
{
  cat "$work/extra.yaml"
  echo "  - id: first-of-request"
  echo "    kind: match"
  echo "    condition: attributes[?\"gen_ai.usage.input_tokens\"].orValue(1.0) == 0.0"
} >"$work/firing.yaml"
printf 'detect:\n  rules: [%s]\n' "$work/firing.yaml" >"$work/firing-config.yaml"
data=$work/data-alerts
AITRAIL_ADMIN_TOKEN=$AITRAIL_TOKEN "$bin" serve --config "$work/firing-config.yaml" --data "$data" --addr "$addr" --log-level warn 2>"$work/server.log" &
pid=$!
for _ in $(seq 100); do curl -sf "http://$addr/readyz" >/dev/null && break; sleep 0.1; done
"$bin" bench --url "http://$addr" --clients 8 --batch 100 --size 1024 --rate 100 --duration "${secs}s" --json 2>/dev/null |
  sed 's/.*"events_per_sec":\([0-9.]*\).*/- achieved \1 events\/s/'
sleep 2
curl -s "http://$addr/metrics" | awk '
  /^aitrail_alert_latency_seconds_bucket\{le="0.25"\}/ {a=$2}
  /^aitrail_alert_latency_seconds_bucket\{le="0.5"\}/ {b=$2}
  /^aitrail_alert_latency_seconds_bucket\{le="1"\}/ {c=$2}
  /^aitrail_alert_latency_seconds_count/ {n=$2}
  /^aitrail_alert_latency_seconds_sum/ {s=$2}
  END {printf "- %d alerts: %d within 0.25 s, %d within 0.5 s, %d within 1 s; mean %.0f ms\n", n, a, b, c, 1000*s/n}'
kill -TERM $pid; wait $pid || true
