# Sourced by the bench scripts, from the repository's root: a work
# directory that is removed on exit (after stopping the server whose pid is
# in $pid and any other process in $pids), the aitrail binary built into it
# as $bin, the admin token the servers are started with, and a description
# of the machine.
work=$(mktemp -d)
pid= pids=
trap '{ kill $pid $pids && wait $pid $pids; } 2>/dev/null || true; chattr -R -ia "$work" 2>/dev/null; rm -rf "$work"' EXIT
bin=$work/aitrail
go build -o "$bin" ./cmd/aitrail
export AITRAIL_TOKEN=bench-admin-token

echo "## machine"
echo "- cpu: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "- memory: $(free -g | awk '/Mem:/ {print $2}') GiB; disk: $(df -h "$work" | awk 'NR==2 {print $2" "$1}')"
echo "- $(go version)"

# field prints the value of the top-level member $1 of the one-line JSON
# object in file $2 (as aitrail bench --json writes it).
field() {
  sed "s/.*\"$1\":\([^,}]*\).*/\1/" "$2"
}
