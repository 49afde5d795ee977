#!/usr/bin/env bash
# The project's test command: prepares a fresh machine and runs the whole suite.
#   scripts/test.sh [cargo test args...]
# It installs what the tests need (Debian packages), makes sure a Docker daemon runs,
# builds the local test images (there is no registry to pull from), then runs `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

need_packages=()
for pkg in busybox-static docker-registry apache2-utils curl python3-venv openssl podman; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_packages+=("$pkg")
done
command -v docker >/dev/null 2>&1 || need_packages+=(docker.io)
if ((${#need_packages[@]})); then
  log "installing ${need_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi

scripts/ensure-docker.sh
scripts/build-test-images.sh

eval "$(scripts/start-test-world.sh)"
stop_world() {
  # moto_server may run under a wrapper: stop children too.
  for pid in $ECR_EXECUTOR_TEST_PIDS; do pkill -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  rm -rf "$ECR_EXECUTOR_TEST_RUN"
}
trap stop_world EXIT

log "cargo test"
cargo test --locked "$@"
