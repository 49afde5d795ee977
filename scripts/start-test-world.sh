#!/usr/bin/env bash
# Starts the services the ECR tests talk to, all on loopback, and prints `export` lines
# for them (the caller evals them). Stop them with: kill $ECR_EXECUTOR_TEST_PIDS
#   - moto (AWS emulator: STS, ECR) from PyPI, in a cached virtualenv;
#   - two Debian `docker-registry` instances with htpasswd auth (user AWS), one per test
#     account, holding the busybox and helper test images; their passwords are what moto hands out
#     (`<account>-auth-token`);
#   - /etc/hosts names so that real ECR hostnames of those accounts reach them;
#   - Podman's Docker-compatible API service on a private socket, with the test images.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNNER_ACCOUNT=123456789012   # moto's default account: runner identity
JOB_ACCOUNT=210987654321      # the account of the role jobs assume
REGION=eu-west-1
MOTO_VERSION=5.2.5

state=${ECR_EXECUTOR_TEST_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/ecr-executor-test}
mkdir -p "$state"
run=$(mktemp -d /tmp/ecr-executor-world.XXXXXX)
pids=()

log() { printf '==> %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url expected-status
  for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)
    [ "$code" = "$2" ] && return 0
    sleep 0.1
  done
  echo "ERROR: $1 did not answer $2" >&2
  return 1
}

# moto, in its own virtualenv (kept between runs on the same machine)
venv="$state/venv-moto-$MOTO_VERSION"
if [ ! -x "$venv/bin/moto_server" ]; then
  log "installing moto[server]==$MOTO_VERSION"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "moto[server]==$MOTO_VERSION" >&2
fi
moto_port=$(free_port)
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$run/moto.log" 2>&1 &
pids+=($!)

# /etc/hosts: the ECR hostnames of both test accounts point at loopback, and so do the FIPS
# registry and API names, so that an SDK resolving FIPS endpoints itself reaches the tests'
# stand-in there (and never the network).
for name in $RUNNER_ACCOUNT.dkr.ecr.$REGION.amazonaws.com $JOB_ACCOUNT.dkr.ecr.$REGION.amazonaws.com \
  $RUNNER_ACCOUNT.dkr.ecr-fips.$REGION.amazonaws.com ecr-fips.$REGION.amazonaws.com \
  sts-fips.$REGION.amazonaws.com api.ecr.$REGION.amazonaws.com sts.$REGION.amazonaws.com \
  sts.amazonaws.com; do
  grep -q " $name\$" /etc/hosts || echo "127.0.0.1 $name" >>/etc/hosts
done

start_registry() { # account -> sets REGISTRY_PORT (no subshell, so the pid is kept)
  local account=$1 port dir
  port=$(free_port)
  dir="$run/registry-$account"
  mkdir -p "$dir/data"
  htpasswd -Bbn AWS "$account-auth-token" >"$dir/htpasswd"
  cat >"$dir/config.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $dir/data }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$port }
auth: { htpasswd: { realm: ecr-executor-test, path: $dir/htpasswd } }
YML
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/v2/" 401
  # Push the test image with a throwaway client config, then forget it locally so that
  # pulls under test really pull.
  local cfg="$run/docker-config-$account" image ref
  mkdir -p "$cfg"
  echo "$account-auth-token" | DOCKER_CONFIG=$cfg docker login -u AWS --password-stdin "127.0.0.1:$port" >/dev/null 2>&1
  # The test images, and the same at the paths an ECR pull-through cache lays out
  # (`<prefix>/<upstream path>`): Docker Hub's busybox, a quay.io tool, GitLab's helper.
  local pair source path
  for pair in busybox:ecr-executor-test/busybox:latest helper:ecr-executor-test/helper:latest \
    busybox:docker-hub/library/busybox:latest busybox:quay/team/tool:1 \
    helper:gitlab/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v17.11.4; do
    source=${pair%%:*} path=${pair#*:}
    ref="127.0.0.1:$port/$path"
    docker tag "ecr-executor-test/$source:latest" "$ref"
    out=$(DOCKER_CONFIG=$cfg docker push "$ref")
    docker rmi "$ref" >/dev/null
    if [ "$path" = docker-hub/library/busybox:latest ]; then
      BUSYBOX_DIGEST=$(printf '%s\n' "$out" | grep -o 'sha256:[0-9a-f]\{64\}' | tail -n1)
    fi
  done
  rm -rf "$cfg"
  REGISTRY_PORT=$port
}
start_registry $RUNNER_ACCOUNT
runner_port=$REGISTRY_PORT
start_registry $JOB_ACCOUNT
job_port=$REGISTRY_PORT
# Podman: its service speaks the Docker API; this sandbox cannot set the rlimits Podman
# applies by default, so they are switched off.
# Networks go through netavark (installed by install-test-deps.sh); Debian's CNI plugins come
# only as a recommendation, which the test dependencies do not install.
printf '[containers]\ndefault_ulimits = []\n[network]\nnetwork_backend = "netavark"\n' >"$run/containers.conf"
CONTAINERS_CONF="$run/containers.conf" podman system service --time=0 "unix://$run/podman.sock" >"$run/podman.log" 2>&1 &
pids+=($!)
docker save ecr-executor-test/busybox:latest ecr-executor-test/helper:latest \
  ecr-executor-test/bad-entrypoint:latest | podman load -q >/dev/null
for _ in $(seq 1 100); do [ -S "$run/podman.sock" ] && break; sleep 0.1; done

# Rootless Docker and rootless Podman of an unprivileged user, with the test images.
rootless_user=ecr-rootless

ECR_ROOTLESS_USER=$rootless_user ECR_ROOTLESS_IMAGES="ecr-executor-test/busybox:latest ecr-executor-test/helper:latest ecr-executor-test/debian:12" \
  scripts/engines/rootless-docker.sh start
ECR_ROOTLESS_USER=$rootless_user scripts/engines/rootless-podman.sh start
rootless_uid=$(id -u "$rootless_user")

wait_http "http://127.0.0.1:$moto_port/moto-api/" 200
log "moto on :$moto_port, registries on :$runner_port ($RUNNER_ACCOUNT) and :$job_port ($JOB_ACCOUNT)"

cat <<ENV
export ECR_EXECUTOR_TEST_AWS=http://127.0.0.1:$moto_port
export ECR_EXECUTOR_TEST_REGISTRY_RUNNER=$runner_port
export ECR_EXECUTOR_TEST_REGISTRY_JOB=$job_port
export ECR_EXECUTOR_TEST_BUSYBOX_DIGEST=$BUSYBOX_DIGEST
export ECR_EXECUTOR_TEST_PODMAN=unix://$run/podman.sock
export ECR_EXECUTOR_TEST_ROOTLESS_USER=$rootless_user
export ECR_EXECUTOR_TEST_ROOTLESS_DOCKER=unix:///run/user/$rootless_uid/docker.sock
export ECR_EXECUTOR_TEST_ROOTLESS_PODMAN=unix:///run/user/$rootless_uid/podman.sock
export ECR_EXECUTOR_TEST_PIDS="${pids[*]}"
export ECR_EXECUTOR_TEST_RUN=$run
ENV
