#!/usr/bin/env bash
currentDir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "${currentDir}/base.sh"
docker rm -f "$CONTAINER_ID" >/dev/null 2>&1 || true
docker volume rm "$CONTAINER_ID-builds" >/dev/null 2>&1 || true
