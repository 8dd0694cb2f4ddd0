#!/usr/bin/env bash
# Load bench for `rulehost serve` (issue 5): starts the server on loopback
# with a fresh database, drives it with wrk for a bounded time, and prints
# requests/s and latency percentiles for
#   (a) hook evaluation: `authorize` check-ins of 1,000 members;
#   (b) durable writes: alternating lock/unlock actions (each an authorize,
#       a transition and one committed, fsynced change).
# The load generator runs on the same machine as the server.
#
# Usage: bench/load.sh [SECONDS] [ISOLATION]   (defaults: 10, fresh)
# Needs wrk (Debian package `wrk`); installs it with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
isolation="${2:-fresh}"
port="${RULEHOST_BENCH_PORT:-7880}"

if ! command -v wrk >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
cargo build --release -q -p rulehost
bin="$PWD/target/release/rulehost"
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" serve --db "$work/bench.db" --listen "127.0.0.1:$port" --isolation "$isolation" \
  >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
export RULEHOST_TOKEN="$("$bin" token --db "$work/bench.db" --operator demo-gym --name bench)"

echo "== rulehost load bench: ${duration}s per run, isolation ${isolation}, $(nproc) cores"
if [ -z "${RULEHOST_BENCH_WRITES_ONLY:-}" ]; then
echo "-- (a) evaluations: POST /v1/operators/demo-gym/hooks/authorize"
wrk -t2 -c32 -d"${duration}s" --latency -s bench/authorize.lua "http://127.0.0.1:$port"
fi
echo "-- (b) durable writes: POST .../lock and .../unlock"
wrk -t2 -c32 -d"${duration}s" --latency -s bench/lock-unlock.lua "http://127.0.0.1:$port"
echo "-- server resident memory: $(ps -o rss= -p "$server") KiB"
