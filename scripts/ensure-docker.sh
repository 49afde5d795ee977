#!/usr/bin/env bash
# Makes sure a Docker daemon answers: use the running one, else start the installed one.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
echo "==> starting dockerd" >&2
if command -v service >/dev/null 2>&1 && service docker start >/dev/null 2>&1; then :; else
  (nohup dockerd >/tmp/ecr-executor-dockerd.log 2>&1 &)
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "ERROR: no Docker daemon: the integration tests need one (see /tmp/ecr-executor-dockerd.log)" >&2
exit 1
