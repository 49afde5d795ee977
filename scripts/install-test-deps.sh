#!/usr/bin/env bash
# Installs the Debian packages the tests and the benchmark need, when missing: the busybox
# rootfs for test images, the registry and its htpasswd tool, moto's venv, podman, debootstrap
# for the Debian test image, what building and inspecting the packages takes, and what
# rootless Docker and Podman need, `ip` for the restart tests' private dockerd, and the
# real amazon-ecr-credential-helper (docker-credential-ecr-login) the Docker executor uses.
set -euo pipefail
need_packages=()
for pkg in busybox-static docker-registry apache2-utils curl python3-venv openssl podman \
  debootstrap binutils dpkg-dev rpm rootlesskit slirp4netns uidmap fuse-overlayfs netavark \
  aardvark-dns iproute2 amazon-ecr-credential-helper; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_packages+=("$pkg")
done
command -v docker >/dev/null 2>&1 || need_packages+=(docker.io)
if ((${#need_packages[@]})); then
  printf '==> installing %s\n' "${need_packages[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
fi
