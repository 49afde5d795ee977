# Sourced by the test and bench commands (from the repository root): installs the Debian
# packages, makes sure a Docker daemon runs, builds the local test images, then starts the
# test world (moto, two authenticated registries, podman) and stops it when the caller exits.
scripts/install-test-deps.sh
scripts/ensure-docker.sh
scripts/build-test-images.sh
scripts/build-debian-image.sh

# Its exports go through a file, not `$(...)`: a daemon that kept the script's stdout would
# make a command substitution wait for ever.
world_env=$(mktemp)
# Bounded: it takes well under a minute; a hang should fail the run, not stall it.
timeout 600 scripts/start-test-world.sh >"$world_env" || {
  echo "ERROR: the test world did not start within 600 s (or failed): see the lines above" >&2
  exit 1
}
# shellcheck disable=SC1090
source "$world_env"
rm -f "$world_env"
# The real docker-credential-ecr-login reaches moto at ECR's real hostname over TLS, through
# an HTTPS proxy on loopback (proxy mode: port 443 stays free for the tests that bind it).
ECR_LOGIN_MODE=proxy timeout 120 scripts/engines/ecr-login-world.sh start >"$world_env" || {
  echo "ERROR: the credential helper's TLS endpoint did not start (see the lines above)" >&2
  exit 1
}
# shellcheck disable=SC1090
source "$world_env"
rm -f "$world_env"
stop_world() {
  # moto_server may run under a wrapper: stop children too.
  for pid in $ECR_EXECUTOR_TEST_PIDS; do pkill -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  ECR_ROOTLESS_USER=$ECR_EXECUTOR_TEST_ROOTLESS_USER scripts/engines/rootless-cleanup.sh || true
  ECR_LOGIN_MODE=proxy scripts/engines/ecr-login-world.sh stop || true
  rm -rf "$ECR_EXECUTOR_TEST_RUN"
}
trap stop_world EXIT
