#!/bin/sh
# Start/stop a rootless dockerd for an unprivileged user, without systemd.
# Run as root. Idempotent, quiet on success (prints nothing for start/stop).
#
#   rootless-docker.sh start   # socket: unix:///run/user/<uid>/docker.sock
#   rootless-docker.sh stop
#   rootless-docker.sh status  # exit 0 when the daemon answers
#
# Env:
#   ECR_ROOTLESS_USER     user (default ecr-rootless; made by setup-rootless-user.sh)
#   ECR_ROOTLESS_DATA     data root (default ~USER/docker-data)
#   ECR_ROOTLESS_DRIVER   storage driver (default: let dockerd pick; it picks
#                         overlay2 on this kernel; fuse-overlayfs and vfs also work)
#   ECR_ROOTLESS_LOG      daemon log (default ~USER/dockerd-rootless.log)
#   ECR_ROOTLESS_IMAGES   images to copy from the main engine after start
#                         (default: the two test images; "" for none)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
U=${ECR_ROOTLESS_USER:-ecr-rootless}
[ "${1:-}" = start ] && "$here/setup-rootless-user.sh"
if ! getent passwd "$U" >/dev/null; then # stop/status without the user: nothing runs
    [ "${1:-}" = status ] && exit 1
    exit 0
fi
uid=$(id -u "$U")
home=$(getent passwd "$U" | cut -d: -f6)
R=/run/user/$uid
SOCK=$R/docker.sock
DATA=${ECR_ROOTLESS_DATA:-$home/docker-data}
LOG=${ECR_ROOTLESS_LOG:-$home/dockerd-rootless.log}
DRIVER=${ECR_ROOTLESS_DRIVER:-}
IMAGES=${ECR_ROOTLESS_IMAGES-ecr-executor-test/busybox:latest ecr-executor-test/helper:latest}
PIDFILE=$R/rootlesskit.pid   # written by us: the rootlesskit parent

as_user() {
    runuser -u "$U" -- env -i HOME="$home" USER="$U" LOGNAME="$U" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        XDG_RUNTIME_DIR="$R" "$@"
}
up() { as_user docker -H "unix://$SOCK" version >/dev/null 2>&1; }

case "${1:-}" in
start)
    if ! up; then # (already running: only refresh the images)
        as_user mkdir -p "$DATA"
        args="--data-root $DATA"
        [ -n "$DRIVER" ] && args="$args --storage-driver $DRIVER"
        # setsid: own session, so the caller's signals do not reach it.
        # rootlesskit: --net=slirp4netns --copy-up=/etc --copy-up=/run (set by the script)
        # The background subshell redirects with `exec` (see detach in lib.sh).
        # shellcheck disable=SC2086
        (
            detach "$LOG"
            as_user setsid sh -c 'echo $$ > "$0"; exec /usr/share/docker.io/contrib/dockerd-rootless.sh "$@"' \
                "$PIDFILE" $args
        ) &
        wait_up 300 "rootless dockerd" "$LOG" up
    fi
    # copy (again) when missing or different from the main engine's: the
    # test images get rebuilt, and docker save/load keeps the image ID
    for img in $IMAGES; do
        want=$(docker image inspect -f '{{.Id}}' "$img")
        have=$(as_user docker -H "unix://$SOCK" image inspect -f '{{.Id}}' "$img" 2>/dev/null || true)
        [ "$want" = "$have" ] ||
            docker save "$img" | as_user docker -H "unix://$SOCK" load >/dev/null
    done
    ;;
stop)
    [ -f "$PIDFILE" ] || exit 0
    pid=$(cat "$PIDFILE")
    # the pid file names the rootlesskit parent (sh exec'd the script, which
    # exec'd rootlesskit); check it still is one of ours before signalling.
    if [ "$(ps -o uid= -p "$pid" 2>/dev/null | tr -d " ")" = "$uid" ] &&
        ps -o args= -p "$pid" | grep -q '^rootlesskit'; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_gone "$pid" 300 || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    ;;
status)
    up
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
