#!/usr/bin/env bash
# Runs the library's unit tests without root. As root (CI), the test binary and a copy of the
# sources it reads run as an unprivileged user, created when missing; as anyone else, the
# tests simply run. A test that passes only because root may do anything fails here.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  exec cargo test --locked --lib --quiet
fi

user=${ECR_EXECUTOR_CI_USER:-ecr-ci}
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)

bin=$(cargo test --locked --lib --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "lib" in m["target"]["kind"]:
        print(m["executable"])')
[ -n "$bin" ] || { echo "ERROR: no unit-test binary was built" >&2; exit 1; }

work=$(mktemp -d /tmp/ecr-executor-unit.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$bin" "$work/unit-tests"
cp -r Cargo.toml src runner-config docs "$work/"
chown -R "$user" "$work"
cd "$work"
runuser -u "$user" -- env -i PATH="$PATH" HOME="$home" TMPDIR=/tmp \
  CARGO_MANIFEST_DIR="$work" ./unit-tests --quiet
