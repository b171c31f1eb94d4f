#!/usr/bin/env bash
# Installs what the test suite needs beyond Go: Prometheus Alertmanager (the
# alert delivery tests start a real one) and promtool (the end-to-end tests
# check the server's /metrics with it). Both come from Debian's packages
# prometheus-alertmanager and prometheus. Safe to run again: when both
# programs are already on PATH it does nothing. Debian names the Alertmanager
# program prometheus-alertmanager; the tests accept either name.
# Usage: scripts/install-test-deps.sh && go test ./...
set -euo pipefail

have_alertmanager() {
	command -v alertmanager >/dev/null || command -v prometheus-alertmanager >/dev/null
}

if have_alertmanager && command -v promtool >/dev/null; then
	exit 0
fi

if ! command -v apt-get >/dev/null; then
	echo "install-test-deps: alertmanager and promtool are missing and this is not a Debian-like system;" >&2
	echo "install Prometheus Alertmanager and promtool so that both are on PATH, then run the tests again." >&2
	exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null; then
		sudo=(sudo)
	else
		echo "install-test-deps: alertmanager and promtool are missing; installing them with apt-get needs root." >&2
		echo "Run this script as root (or with sudo), or run: apt-get install prometheus-alertmanager prometheus" >&2
		exit 1
	fi
fi

echo "install-test-deps: installing prometheus-alertmanager and prometheus with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends prometheus-alertmanager prometheus

if ! have_alertmanager || ! command -v promtool >/dev/null; then
	echo "install-test-deps: alertmanager or promtool is still not on PATH after installing the packages" >&2
	exit 1
fi
