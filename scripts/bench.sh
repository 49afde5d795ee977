#!/usr/bin/env bash
# The benchmark command: the same machine setup as the tests, the floors (raw API exec, host
# pipe) in release,
# then every side-by-side comparison in one run. Results go to stdout (Markdown) and
# docs/performance.svg.
#   scripts/bench.sh                  full run (about 4 minutes after the release build)
#   BENCH_QUICK=1 scripts/bench.sh    fewer iterations
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/setup-test-machine.sh

cargo build --release --locked --example raw_exec --example pipe_floor
cargo bench --locked --bench driver
