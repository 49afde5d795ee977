#!/usr/bin/env bash
currentDir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "${currentDir}/base.sh"
if ! docker exec -i "$CONTAINER_ID" sh < "$1"; then
  exit "$BUILD_FAILURE_EXIT_CODE"
fi
