#!/bin/sh
# Prepare an unprivileged user for rootless Docker / rootless Podman.
# Idempotent, quiet on success. Run as root.
#   ECR_ROOTLESS_USER  (default ecr-rootless)
set -eu
. "$(dirname "$0")/lib.sh"
U=${ECR_ROOTLESS_USER:-ecr-rootless}

# Packages: rootlesskit + slirp4netns + uidmap (newuidmap/newgidmap setuid).
# fuse-overlayfs is optional (rootless docker falls back / can be told vfs).
ensure_packages rootlesskit slirp4netns uidmap fuse-overlayfs

getent passwd "$U" >/dev/null || useradd --create-home --shell /bin/sh "$U"
uid=$(id -u "$U")
gid=$(id -g "$U")

# subordinate id ranges. useradd adds one itself (login.defs SUB_UID_MIN=100000,
# count 65536) when /etc/subuid exists; add one past the existing ranges only
# if it is missing.
for f in subuid subgid; do
    touch "/etc/$f"
    if ! grep -q "^$U:" "/etc/$f"; then
        next=$(awk -F: 'BEGIN {m = 100000} {e = $2 + $3; if (e > m) m = e} END {print m}' "/etc/$f")
        if [ $f = subuid ]; then
            usermod --add-subuids "$next-$((next + 65535))" "$U"
        else
            usermod --add-subgids "$next-$((next + 65535))" "$U"
        fi
    fi
done

# No udev in this VM: devtmpfs leaves /dev/fuse and /dev/net/tun at 0600, so
# an unprivileged user (even as root of its user namespace) cannot open them:
# slirp4netns needs /dev/net/tun, fuse-overlayfs needs /dev/fuse.
# Debian+udev would make both 0666.
for d in /dev/net/tun /dev/fuse; do
    [ -e "$d" ] && chmod 0666 "$d"
done

# XDG_RUNTIME_DIR without systemd-logind
mkdir -p "/run/user/$uid"
chown "$uid:$gid" "/run/user/$uid"
chmod 0700 "/run/user/$uid"
exit 0
