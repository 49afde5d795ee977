#!/usr/bin/env bash
# Builds ecr-executor-test/debian:12, a small Debian 12 (bookworm) job image with bash, git
# (incl. `git daemon`), ca-certificates, dpkg/apt and an unprivileged user `build` (uid/gid 1000,
# home /home/build), for the tests that need a real shell and git. No registry is reachable
# here, so the rootfs comes from `debootstrap --variant=minbase` against the Debian mirror of
# the apt sources, and the image from `docker import`.
#
# Cache: $ECR_EXECUTOR_TEST_STATE (default ${XDG_CACHE_HOME:-$HOME/.cache}/ecr-executor-test)
#   debian-12-<key>.tar         the trimmed rootfs; <key> hashes suite, variant, packages, arch
#                               and RECIPE, so changing any of them rebuilds
#   debian-12-<key>.tar.sha256  its content hash (sidecar, trusted while .stamp = size+mtime)
#   debian-12-rootfs.tar        symlink to the current tarball (for tests that want a plain rootfs)
#   debian-12-build.log         debootstrap's output of the last build (shown on failure)
# The image carries LABEL org.ecr-executor-test.rootfs-sha256=<hash> and the extra tag
# ecr-executor-test/debian:12-<hash:0:12>; it is re-imported only when missing or when the
# label differs from the tarball's hash.
#
# Usage: build-debian-image.sh [--rootfs-path]
#   --rootfs-path  after ensuring the image, print the rootfs tarball's path on stdout
# Env: ECR_EXECUTOR_DEBIAN_MIRROR overrides the mirror found in the apt sources.
#      ECR_EXECUTOR_TEST_DEBIAN_IMAGE overrides the image name (repo:tag), e.g. for a trial build.
# Needs root (debootstrap, chroot) and a Docker daemon. Quiet when all is in place; one `==> `
# line on stderr when it builds or imports. Cold run ~1 min, warm run well under 0.1 s.
set -euo pipefail

SUITE=bookworm
VARIANT=minbase
PACKAGES=bash,git,ca-certificates
IMAGE=${ECR_EXECUTOR_TEST_DEBIAN_IMAGE:-ecr-executor-test/debian:12}
USER_NAME=build
USER_ID=1000
RECIPE=1   # bump when the trimming or user steps below change
LABEL=org.ecr-executor-test.rootfs-sha256

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

print_path=false
case "${1:-}" in
  "") ;;
  --rootfs-path) print_path=true ;;
  *) die "usage: $0 [--rootfs-path]" ;;
esac

state=${ECR_EXECUTOR_TEST_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/ecr-executor-test}
mkdir -p "$state"
# One builder at a time (tests may call this concurrently).
exec 9>"$state/debian-12.lock"
flock 9

arch=$(dpkg --print-architecture)
key=$(printf '%s\n' "$SUITE" "$VARIANT" "$PACKAGES" "$arch" "$RECIPE" | sha256sum | cut -c1-16)
tarball="$state/debian-12-$key.tar"
buildlog="$state/debian-12-build.log"

# The Debian mirror: first URI of a `deb` source for $SUITE in the apt sources.
mirror() {
  if [ -n "${ECR_EXECUTOR_DEBIAN_MIRROR:-}" ]; then echo "$ECR_EXECUTOR_DEBIAN_MIRROR"; return; fi
  local f m=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    m=$(awk -v suite="$SUITE" '
      function flush() { if (deb && has && uri != "" && !done) { print uri; done = 1 } deb = has = 0; uri = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      tolower($1) == "types:"  { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      tolower($1) == "uris:"   { uri = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has = 1 }
      END { flush() }' "$f")
    [ -n "$m" ] && break
  done
  if [ -z "$m" ]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk -v suite="$SUITE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++;
                                           if ($(i + 1) == suite) { print $i; exit } }')
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

ensure_debootstrap() {
  command -v debootstrap >/dev/null && return
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q debootstrap >"$buildlog" 2>&1 ||
    { apt-get update -q >>"$buildlog" 2>&1 && apt-get install -y -q debootstrap >>"$buildlog" 2>&1; } ||
    { cat "$buildlog" >&2; die "could not install debootstrap"; }
}

work=""
built=false
remove_tree() { # dir: unmount what debootstrap may have left mounted in it (proc, sys), then delete
  awk -v w="${1%/}/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l
  rm -rf --one-file-system "$1"
}
cleanup() { [ -z "$work" ] || [ ! -d "$work" ] || remove_tree "$work"; }
trap cleanup EXIT

build_rootfs() {
  [ "$(id -u)" = 0 ] || die "building the rootfs needs root (debootstrap)"
  local m; m=$(mirror)
  local extra=""
  command -v debootstrap >/dev/null || extra="installing debootstrap, "
  log "${extra}building Debian $SUITE rootfs ($VARIANT + $PACKAGES) from $m, importing $IMAGE (about a minute)"
  built=true
  ensure_debootstrap
  local stale  # left by a run that was killed (we hold the lock, so none is in use)
  for stale in "$state"/debian-12-build.*/; do [ ! -d "$stale" ] || remove_tree "$stale"; done
  work=$(mktemp -d "$state/debian-12-build.XXXXXX")
  local root="$work/rootfs"
  debootstrap --variant="$VARIANT" --include="$PACKAGES" "$SUITE" "$root" "$m" >"$buildlog" 2>&1 ||
    { tail -n 40 "$buildlog" >&2; die "debootstrap failed (log: $buildlog)"; }

  # Unprivileged user for non-root job tests.
  chroot "$root" useradd --create-home --uid "$USER_ID" --user-group --shell /bin/bash "$USER_NAME"

  # Keep later package installs small too (as Debian's own slim images do).
  cat >"$root/etc/dpkg/dpkg.cfg.d/ecr-executor-test-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
  cat >"$root/etc/apt/apt.conf.d/ecr-executor-test-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF

  # Trim: apt lists and caches, docs (but copyright), man/info pages, locales, logs, leftovers.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/var/lib/dpkg/*-old "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/lintian "$root"/usr/share/linda "$root"/var/log/*.log "$root"/var/log/apt/* \
    "$root"/tmp/* "$root"/var/tmp/*
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  # Docker supplies these at run time; don't bake the build host's into the image.
  : >"$root/etc/resolv.conf"
  : >"$root/etc/hostname"
  rm -f "$root/etc/machine-id" "$root/var/lib/dbus/machine-id"

  tar --numeric-owner --sort=name -C "$root" -cf "$work/rootfs.tar" .
  rm -f "$tarball.sha256" "$tarball.stamp"
  mv "$work/rootfs.tar" "$tarball"
  # Drop tarballs of other keys.
  find "$state" -maxdepth 1 -name 'debian-12-*.tar*' -not -name "debian-12-$key.tar*" -delete
}

# Content hash of the tarball, recomputed when size or mtime differ from the sidecar's.
tarball_hash() {
  local stamp; stamp=$(stat -c '%s %Y' "$tarball")
  if [ -f "$tarball.sha256" ] && [ -f "$tarball.stamp" ] && [ "$(cat "$tarball.stamp")" = "$stamp" ]; then
    cat "$tarball.sha256"
    return
  fi
  sha256sum <"$tarball" | cut -d' ' -f1 >"$tarball.sha256"
  echo "$stamp" >"$tarball.stamp"
  cat "$tarball.sha256"
}

[ -s "$tarball" ] || build_rootfs
ln -sfn "$(basename "$tarball")" "$state/debian-12-rootfs.tar"
hash=$(tarball_hash)

have=$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$IMAGE" 2>/dev/null || true)
if [ "$have" != "$hash" ]; then
  old=$(docker image ls -q "${IMAGE%:*}" | sort -u)
  $built || log "importing $IMAGE (rootfs ${hash:0:12})"
  docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c "LABEL $LABEL=$hash" \
    -c 'CMD ["bash"]' \
    - "$IMAGE" <"$tarball" >/dev/null
  docker tag "$IMAGE" "$IMAGE-${hash:0:12}"
  # Untag earlier builds.
  docker image ls --format '{{.Repository}}:{{.Tag}}' "${IMAGE%:*}" |
    grep -Fx -v -e "$IMAGE" -e "$IMAGE-${hash:0:12}" | grep "^$IMAGE-" | xargs -r docker rmi >/dev/null || true
  # Drop the images those tags left behind (kept if a container still uses one).
  new=$(docker image inspect -f '{{.Id}}' "$IMAGE")
  for id in $old; do
    case "$new" in *"$id"*) continue ;; esac
    [ -z "$(docker image inspect -f '{{range .RepoTags}}{{.}}{{end}}' "$id" 2>/dev/null)" ] &&
      docker rmi "$id" >/dev/null 2>&1 || true
  done
fi

if $print_path; then echo "$state/debian-12-rootfs.tar"; fi
