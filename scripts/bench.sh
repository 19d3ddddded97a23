#!/usr/bin/env bash
# Every benchmark issue 12 asks for, at 50 ms and 200 ms per AWS request
# (bench/proxy.rs injects the delay in front of a local moto server):
# requests and serial rounds per no-op plan, apply from empty against its
# critical path, and `fleet list` at 100 and 5,000 history rows. Figures
# only: nothing here fails on timing. Reuses the debug build (--profile dev);
# set BENCH_PROFILE=release to time the shipped binary instead.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${BENCH_PROFILE:-dev}"
runs="${BENCH_RUNS:-3}"
for delay in 50 200; do
  echo "=== no-op plan, ${delay} ms per request"
  BENCH_DELAY_MS="$delay" BENCH_RUNS="$runs" cargo bench --locked --quiet --bench noop_plan --profile "$profile"
  echo "=== apply from empty, ${delay} ms per request"
  BENCH_DELAY_MS="$delay" BENCH_RUNS="$runs" cargo bench --locked --quiet --bench apply --profile "$profile"
done
echo "=== fleet (moto on loopback)"
FLEET_BENCH_RUNS="${FLEET_BENCH_RUNS:-7}" cargo bench --locked --quiet --bench fleet --profile "$profile"
