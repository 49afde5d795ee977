#!/usr/bin/env bash
currentDir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "${currentDir}/base.sh"
set -eo pipefail
trap 'exit $SYSTEM_FAILURE_EXIT_CODE' ERR

# Remove a leftover of the same name, then start the job container.
docker rm -f "$CONTAINER_ID" >/dev/null 2>&1 || true
docker run -d --name "$CONTAINER_ID" -v "$CONTAINER_ID-builds:/builds" "$CUSTOM_ENV_CI_JOB_IMAGE" sleep 3600 >/dev/null
for i in $(seq 1 30); do
  if [ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER_ID")" = "true" ]; then exit 0; fi
  sleep 1
done
exit "$SYSTEM_FAILURE_EXIT_CODE"
