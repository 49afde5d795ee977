#!/usr/bin/env bash
# The project's test command: prepares a fresh machine and runs the whole suite.
#   scripts/test.sh [cargo test args...]
# It installs what the tests need (Debian packages), makes sure a Docker daemon runs,
# builds the local test images (there is no registry to pull from), starts the test world
# (moto, two authenticated registries, podman), then runs `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/setup-test-machine.sh

printf '==> cargo test\n' >&2
cargo test --locked "$@"
