#!/usr/bin/env bash
# The benchmark command: the same machine setup as the tests, the floors (raw API exec, host
# pipe) in release,
# then every side-by-side comparison in one run. Results go to stdout (Markdown) and
# docs/performance.svg. Then the soak (tests/integration/soak.rs): SOAK_JOBS whole jobs of
# every kind (default 1000), eight at a time, through the release driver; its figures go to
# stderr, last.
#   scripts/bench.sh                  full run (about 4 minutes after the release build, then
#                                     about 10 for the soak)
#   BENCH_QUICK=1 scripts/bench.sh    fewer iterations
#   SOAK_JOBS=0 scripts/bench.sh      no soak
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/setup-test-machine.sh

cargo build --release --locked --example raw_exec --example pipe_floor
cargo bench --locked --bench driver

if [ "${SOAK_JOBS:-1000}" -gt 0 ]; then
  ECR_EXECUTOR_SOAK_JOBS=${SOAK_JOBS:-1000} cargo test --release --locked --test integration \
    -- --ignored --exact soak::soak_mixed_jobs_leave_the_host_as_it_was --nocapture
fi
