#!/usr/bin/env bash
# Measures what the OpenAI recording proxy adds to a model call and prints
# the figures recorded in docs/BENCHMARKS.md: the same chat completion is
# sent straight to a fake provider on loopback and through a real
# `aitrail serve` in front of it, in the same run, by 32 concurrent clients
# and by 1; and the time to the first chunk of a stream, both ways. For
# reference the 32 clients also go through a reverse proxy that records
# nothing (net/http/httputil in a process of its own).
# Usage: scripts/bench-proxy.sh [calls each way at 32 clients, default 20000]
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-20000}

echo "## machine"
echo "- cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- $(go version)"
echo
go test ./cmd/aitrail -run '^$' -bench '^BenchmarkProxyOverhead$' -benchtime "${calls}x" -count 1
echo "- load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
