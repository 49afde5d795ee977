#!/usr/bin/env bash
# The project's test command: prepares a fresh machine and runs everything, fast to slow.
#   scripts/test.sh [cargo test args...]
# 1. The guard rails (scripts/check.sh): rustfmt, clippy, rustdoc, the unit tests without
#    root, cargo deny.
# 2. The test world (scripts/setup-test-machine.sh): Debian packages, a running Docker daemon,
#    the local test images (there is no registry to pull from), moto, two authenticated
#    registries and a Podman API service on loopback.
# 3. The whole suite as root (`cargo test`), extra arguments passed on; then, alone, a soak
#    of 300 mixed jobs (skipped when arguments narrow the run).
# 4. The packages (scripts/test-packages.sh): one release build into a .deb and an .rpm, the
#    .deb installed into a fresh Debian container, the .rpm inspected. Skipped when cargo
#    test arguments narrow the run.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/check.sh

source scripts/setup-test-machine.sh

printf '==> cargo test\n' >&2
# The integration tests mostly wait on the engine: four at a time on two cores takes the
# suite from about 90 to about 70 s here (more threads gain nothing).
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
# Bounded (a cold build and the suite take about 5 minutes): a test that hangs fails the run
# with the tests' names so far, well inside CI's limit.
timeout --kill-after=30 2400 cargo test --locked "$@"

if [ $# -eq 0 ]; then
  # Alone, so that no other test's jobs blur dockerd's descriptors (tests/integration/soak.rs);
  # 300 jobs take about two minutes here. scripts/bench.sh runs 1000.
  printf '==> soak\n' >&2
  ECR_EXECUTOR_SOAK_JOBS=${ECR_EXECUTOR_SOAK_JOBS:-300} timeout --kill-after=30 900 \
    cargo test --locked --test integration -- --ignored --exact \
    soak::soak_mixed_jobs_leave_the_host_as_it_was --nocapture
fi

if [ $# -eq 0 ]; then
  printf '==> packages\n' >&2
  scripts/test-packages.sh
fi
