#!/usr/bin/env bash
# Builds the images the tests use from Debian's busybox-static, with `docker import`
# (no registry is reachable here). Idempotent and quick (well under a second per image).
#   ecr-executor-test/busybox:latest     a minimal job image (sh, no bash)
#   ecr-executor-test/helper:latest      busybox + a stand-in `gitlab-runner-helper`
#   ecr-executor-test/entrypoint:latest  ENTRYPOINT that records it ran, sets a variable and the
#                                        working directory, then execs its args
#   ecr-executor-test/bad-entrypoint:latest  ENTRYPOINT that prints a line and exits at once
set -euo pipefail
busybox=/bin/busybox
[ -x "$busybox" ] || busybox=/usr/bin/busybox
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root/base/bin" "$root/base/etc" "$root/base/tmp" "$root/base/root" "$root/base/usr/bin"
cp "$busybox" "$root/base/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/base/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/base/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/base/etc/group"
chmod 1777 "$root/base/tmp"

import() { # name dir [change...]
  local name=$1 dir=$2; shift 2
  local changes=(-c 'ENV PATH=/usr/local/bin:/usr/bin:/bin')
  for c in "$@"; do changes+=(-c "$c"); done
  tar -C "$dir" -c . | docker import "${changes[@]}" - "$name" >/dev/null
}

import ecr-executor-test/busybox:latest "$root/base"

cp -a "$root/base" "$root/helper"
cat >"$root/helper/usr/bin/gitlab-runner-helper" <<'SH'
#!/bin/sh
# Stand-in for GitLab's helper binary: answers --version and records other calls.
case "$1" in
  --version|-v) echo "gitlab-runner-helper (ecr-executor test stand-in)"; exit 0 ;;
esac
echo "gitlab-runner-helper $*"
SH
chmod 755 "$root/helper/usr/bin/gitlab-runner-helper"
import ecr-executor-test/helper:latest "$root/helper"

cp -a "$root/base" "$root/entry"
cat >"$root/entry/entrypoint.sh" <<'SH'
#!/bin/sh
echo "entrypoint ran" >/tmp/entrypoint-ran
export ENTRYPOINT_SET=from-entrypoint
cd /tmp
exec "$@"
SH
chmod 755 "$root/entry/entrypoint.sh"
import ecr-executor-test/entrypoint:latest "$root/entry" 'ENTRYPOINT ["/entrypoint.sh"]'
import ecr-executor-test/bad-entrypoint:latest "$root/base" 'ENTRYPOINT ["/bin/sh", "-c", "echo bad-entrypoint: this image runs no shell >&2; exit 3"]'
echo "==> test images ready" >&2
