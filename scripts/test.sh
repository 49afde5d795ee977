#!/usr/bin/env bash
# The project's test command: prepares a fresh machine and runs everything, fast to slow.
#   scripts/test.sh [cargo test args...]
# 1. The guard rails (scripts/check.sh): rustfmt, clippy, rustdoc, the unit tests without
#    root, cargo deny.
# 2. The test world (scripts/setup-test-machine.sh): Debian packages, a running Docker daemon,
#    the local test images (there is no registry to pull from), moto, two authenticated
#    registries and a Podman API service on loopback.
# 3. The whole suite as root (`cargo test`), extra arguments passed on.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/check.sh

source scripts/setup-test-machine.sh

printf '==> cargo test\n' >&2
cargo test --locked "$@"
