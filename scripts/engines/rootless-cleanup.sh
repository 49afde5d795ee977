#!/bin/sh
# Stop rootless Docker and Podman of the test user, then end every process
# still owned by that user (rootless podman's pause process, exec-session
# conmons that linger 300 s, shims), by pid. Run as root. Quiet on success.
#   rootless-cleanup.sh            # processes only
#   rootless-cleanup.sh --purge    # also delete the user, its home, its
#                                  # /run/user/<uid> and subuid/subgid lines
set -eu
here=$(cd "$(dirname "$0")" && pwd)
U=${ECR_ROOTLESS_USER:-ecr-rootless}
getent passwd "$U" >/dev/null || exit 0
uid=$(id -u "$U")
[ "$uid" -ne 0 ] || { echo "refusing: $U is root" >&2; exit 1; }

"$here/rootless-docker.sh" stop || true
"$here/rootless-podman.sh" stop || true

for sig in TERM KILL; do
    pids=$(ps -u "$uid" -o pid= 2>/dev/null || true)
    [ -n "$pids" ] || break
    for p in $pids; do kill -"$sig" "$p" 2>/dev/null || true; done
    sleep 1
done

if [ "${1:-}" = --purge ]; then
    # rootless storage holds files owned by subordinate ids: plain rm as root works
    for m in $(awk -v h="/home/$U/" -v r="/run/user/$uid/" 'index($5, h) == 1 || index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "/run/user/$uid"
    userdel -r "$U" 2>/dev/null || userdel "$U"
    rm -rf "/home/${U:?}"
    sed -i "/^$U:/d" /etc/subuid /etc/subgid
fi
exit 0
