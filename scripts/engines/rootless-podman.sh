#!/bin/sh
# Start/stop a rootless Podman API service (Docker-compatible) for an
# unprivileged user, without systemd. Run as root. Idempotent, quiet on success.
#
#   rootless-podman.sh start   # socket: unix:///run/user/<uid>/podman.sock
#   rootless-podman.sh stop
#   rootless-podman.sh status
#
# Env:
#   ECR_ROOTLESS_USER    user (default ecr-rootless; made by setup-rootless-user.sh)
#   ECR_PODMAN_LOG       service log (default ~USER/podman-service.log)
#   ECR_ROOTLESS_IMAGES  images copied from the main Docker engine after start
#
# Writes ~USER/.config/containers/{containers,storage}.conf:
#   network_backend = "netavark" (+ aardvark-dns): user networks resolve
#     aliases. With Debian's default CNI backend and no dnsname plugin they do
#     not (NXDOMAIN).
#   storage driver "overlay" (native rootless overlayfs; without a
#     storage.conf podman 4.3 picked vfs here).
# Rootless podman does not need `default_ulimits = []` (it keeps the user's
# own limits), unlike the rootful service.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
U=${ECR_ROOTLESS_USER:-ecr-rootless}
[ "${1:-}" = start ] && "$here/setup-rootless-user.sh"
if ! getent passwd "$U" >/dev/null; then # stop/status without the user: nothing runs
    [ "${1:-}" = status ] && exit 1
    exit 0
fi

[ "${1:-}" = start ] && ensure_packages podman netavark aardvark-dns curl

uid=$(id -u "$U")
home=$(getent passwd "$U" | cut -d: -f6)
R=/run/user/$uid
SOCK=$R/podman.sock
LOG=${ECR_PODMAN_LOG:-$home/podman-service.log}
IMAGES=${ECR_ROOTLESS_IMAGES-ecr-executor-test/busybox:latest ecr-executor-test/helper:latest}
PIDFILE=$R/podman-service.pid

as_user() {
    runuser -u "$U" -- env -i HOME="$home" USER="$U" LOGNAME="$U" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        XDG_RUNTIME_DIR="$R" "$@"
}
up() { as_user curl -sf --max-time 2 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }

write_conf() { # file content: write only when different
    if [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; then
        as_user mkdir -p "$(dirname "$1")"
        printf '%s\n' "$2" | as_user tee "$1" >/dev/null
    fi
}

case "${1:-}" in
start)
    if ! up; then # (already running: only refresh the images)
        write_conf "$home/.config/containers/containers.conf" '[network]
    network_backend = "netavark"'
        write_conf "$home/.config/containers/storage.conf" '[storage]
    driver = "overlay"'
        # Make the rootless pause process (it holds the user namespace) first, so
        # that the service then runs as a single process.
        as_user podman info >/dev/null 2>&1 || true
        rm -f "$SOCK"
        (
            detach "$LOG"
            as_user setsid sh -c 'echo $$ > "$0"; exec podman system service --time=0 "unix://$1"' \
                "$PIDFILE" "$SOCK"
        ) &
        wait_up 300 "rootless podman service" "$LOG" up
    fi
    # copy (again) when missing or different from the main engine's (the
    # test images get rebuilt; podman shows the same ID without "sha256:")
    for img in $IMAGES; do
        want=$(docker image inspect -f '{{.Id}}' "$img")
        have=$(as_user podman image inspect -f '{{.Id}}' "$img" 2>/dev/null || true)
        [ "${want#sha256:}" = "${have#sha256:}" ] ||
            docker save "$img" | as_user podman load -q >/dev/null
    done
    ;;
stop)
    [ -f "$PIDFILE" ] || exit 0
    pid=$(cat "$PIDFILE")
    if [ "$(ps -o uid= -p "$pid" 2>/dev/null | tr -d " ")" = "$uid" ] &&
        ps -o args= -p "$pid" | grep -q '^podman system service'; then
        # When no rootless pause process exists yet, podman runs as two
        # processes: the one we started and a child inside the user namespace
        # that serves the socket. Once, SIGTERM to the parent alone left the
        # child serving (reparented to PID 1); signal the child too.
        pids="$(ps -o pid= --ppid "$pid" -o args= | awk '$2=="podman"&&$3=="system"&&$4=="service"{print $1}') $pid"
        for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
        for p in $pids; do
            wait_gone "$p" 300 || kill -KILL "$p" 2>/dev/null || true
        done
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
