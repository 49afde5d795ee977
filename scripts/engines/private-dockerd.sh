#!/bin/sh
# A private, restartable second dockerd (rootful) in its own network namespace,
# next to the machine's main Docker engine, which it does not touch (no
# iptables, no docker0, own socket/data-root/exec-root/pidfile/config file).
# Run as root. Idempotent, quiet on success.
#
#   private-dockerd.sh start      # start (or keep) the daemon; load test images
#   private-dockerd.sh stop       # SIGTERM dockerd, wait for it to exit
#   private-dockerd.sh kill       # SIGKILL dockerd (containers keep running;
#                                 # the socket file stays: ECONNREFUSED)
#   private-dockerd.sh destroy    # remove its containers, stop it, kill any
#                                 # shims it left, delete the netns; the data
#                                 # root stays, as a cache of the copied test
#                                 # images (rm -rf it to reclaim the space)
#   private-dockerd.sh status     # exit 0 when the API answers
#   private-dockerd.sh socket     # print unix://... of the daemon
#
# Env (same values for every call):
#   ECR_D2_NAME          netns name and default path suffix (default ecrd2)
#   ECR_D2_RUN           socket, pidfile, exec-root dir (default /run/ecr-<name>)
#   ECR_D2_DATA          data root (default /var/lib/ecr-<name>)
#   ECR_D2_DATA_SIZE     a size (mount's size=, e.g. 96m): the data root is a
#                        tmpfs of that size, mounted by start, gone at destroy
#                        (a small disk of the test's own, to fill up)
#   ECR_D2_BRIDGE        "create" (default): bridge ecrbr0 made in the netns
#                        with ECR_D2_BRIDGE_CIDR, used as the default bridge;
#                        "none": --bridge=none (no default bridge network)
#   ECR_D2_BRIDGE_CIDR   default 172.31.250.1/24 (inside the netns only)
#   ECR_D2_LIVE_RESTORE  1: --live-restore (containers survive a stop/kill)
#   ECR_D2_DRIVER        storage driver (default: dockerd picks overlay2 here;
#                        fuse-overlayfs and vfs work too)
#   ECR_D2_IMAGES        images copied from the main engine on start
#                        (default: the two test images; "" for none). The netns
#                        has no route out and its 127.0.0.1 is its own: this
#                        daemon cannot pull from registries on the host's
#                        loopback.
#   ECR_D2_LOG           daemon log, appended (default $ECR_D2_RUN/dockerd.log)
set -eu
. "$(dirname "$0")/lib.sh"
NAME=${ECR_D2_NAME:-ecrd2}
RUN=${ECR_D2_RUN:-/run/ecr-$NAME}
DATA=${ECR_D2_DATA:-/var/lib/ecr-$NAME}
BRIDGE=${ECR_D2_BRIDGE:-create}
CIDR=${ECR_D2_BRIDGE_CIDR:-172.31.250.1/24}
LIVE=${ECR_D2_LIVE_RESTORE:-0}
DRIVER=${ECR_D2_DRIVER:-}
DATA_SIZE=${ECR_D2_DATA_SIZE:-}
IMAGES=${ECR_D2_IMAGES-ecr-executor-test/busybox:latest ecr-executor-test/helper:latest}
LOG=${ECR_D2_LOG:-$RUN/dockerd.log}
SOCK=$RUN/docker.sock
PIDFILE=$RUN/docker.pid
NETNS=/run/netns/$NAME
BR=ecrbr0

up() { curl -sf --max-time 2 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }
d2() { docker -H "unix://$SOCK" "$@"; }
# the pid in our pidfile, if it is a live dockerd that uses our exec-root
ours() {
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [ -n "$pid" ] && ps -o args= -p "$pid" 2>/dev/null | grep -q -- "--exec-root $RUN/exec"
}
stop_daemon() {
    ours || return 0
    kill -TERM "$pid"
    # without live-restore it stops running containers first (10 s timeout each)
    wait_gone "$pid" 600 || { kill -KILL "$pid"; wait_gone "$pid" 50 || true; }
}

case "${1:-}" in
start)
    if ! up; then # (already running: only refresh the images)
        # after a SIGKILL the old dockerd can stay a zombie for a few seconds
        # (PID 1 here reaps late), and dockerd refuses to start while the pid in
        # its pidfile exists: "failed to start daemon: pid file found, ensure
        # docker is not running or delete .../docker.pid". Drop a pidfile that
        # names no live dockerd of ours.
        if [ -f "$PIDFILE" ] && ! ours; then rm -f "$PIDFILE"; fi
        # Same for the containerd that dockerd runs: after a SIGKILL of dockerd it
        # dies too (parent-death signal) but may still be an unreaped zombie, and
        # dockerd then logs "libcontainerd: containerd is still running" and waits
        # 60 s for its socket: "failed to start containerd: timeout waiting for
        # containerd to start".
        cpid=$RUN/exec/containerd/containerd.pid
        if [ -f "$cpid" ]; then
            c=$(cat "$cpid")
            if ! ps -o stat=,args= -p "$c" 2>/dev/null | grep -q "^[^Z].*containerd --config $RUN/exec/containerd/"; then
                rm -f "$cpid"
            fi
        fi
        ensure_packages curl iproute2
        [ -e "$NETNS" ] || ip netns add "$NAME"
        ip -n "$NAME" link set lo up
        mkdir -p "$RUN/exec" "$DATA"
        if [ -n "$DATA_SIZE" ] && ! mountpoint -q "$DATA"; then
            mount -t tmpfs -o "size=$DATA_SIZE,mode=0711" "ecr-$NAME-data" "$DATA"
        fi
        # an empty config file: the default /etc/docker/daemon.json names the main
        # engine's data-root, and a flag plus the same key in the file is an error.
        [ -f "$RUN/daemon.json" ] || echo '{}' >"$RUN/daemon.json"
        args="--config-file $RUN/daemon.json --host unix://$SOCK --data-root $DATA"
        args="$args --exec-root $RUN/exec --pidfile $PIDFILE"
        args="$args --iptables=false --ip-masq=false --cgroup-parent=/$NAME"
        if [ "$BRIDGE" = create ]; then
            if ! ip -n "$NAME" link show "$BR" >/dev/null 2>&1; then
                ip -n "$NAME" link add "$BR" type bridge
                ip -n "$NAME" addr add "$CIDR" dev "$BR"
            fi
            ip -n "$NAME" link set "$BR" up
            args="$args --bridge=$BR"
        else
            args="$args --bridge=none"
        fi
        [ "$LIVE" = 1 ] && args="$args --live-restore"
        [ -n "$DRIVER" ] && args="$args --storage-driver=$DRIVER"
        # nsenter --net only: `ip netns exec` remounts /sys in a new mount
        # namespace, and dockerd then finds no cgroups. setsid: own session.
        # shellcheck disable=SC2086
        setsid nsenter --net="$NETNS" dockerd $args >>"$LOG" 2>&1 </dev/null &
        # 60 s: a restart without live-restore stops the old containers first
        # (10 s stop timeout each)
        wait_up 600 "private dockerd" "$LOG" up
    fi
    # copy (again) when missing or different from the main engine's: the
    # test images get rebuilt, and docker save/load keeps the image ID
    for img in $IMAGES; do
        want=$(docker image inspect -f '{{.Id}}' "$img")
        have=$(d2 image inspect -f '{{.Id}}' "$img" 2>/dev/null || true)
        [ "$want" = "$have" ] || docker save "$img" | d2 load -q >/dev/null
    done
    ;;
stop)
    stop_daemon
    ;;
kill)
    ours || exit 0
    cpid=$(cat "$RUN/exec/containerd/containerd.pid" 2>/dev/null || true)
    kill -KILL "$pid"
    wait_gone "$pid" 50 || true
    # its containerd gets SIGKILL from the kernel (parent-death signal)
    [ -z "$cpid" ] || wait_gone "$cpid" 50 || true
    ;;
destroy)
    if up; then
        ids=$(d2 ps -aq)
        [ -z "$ids" ] || d2 rm -f $ids >/dev/null 2>&1 || true
    fi
    stop_daemon
    # containers left running by a kill or a live-restore stop: kill them
    # through runc's state dir of this daemon, then their shims (only those
    # whose -address is under our exec-root) and a leftover containerd
    rr=$RUN/exec/runtime-runc/moby
    if [ -d "$rr" ]; then
        for c in $(runc --root "$rr" list -q 2>/dev/null); do
            runc --root "$rr" delete --force "$c" >/dev/null 2>&1 || true
        done
    fi
    for p in $(ps -eo pid=,args= | awk -v a="$RUN/exec/" 'index($0, "containerd-shim") && index($0, "-address " a) {print $1}'); do
        kill -KILL "$p" 2>/dev/null || true
    done
    for p in $(ps -eo pid=,args= | awk -v a="--config $RUN/exec/containerd/" 'index($0, a) {print $1}'); do
        kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.5
    # mounts left under the data root (dockerd bind-mounts the data root onto
    # itself, and killed containers leave their rootfs mounts) and exec-root
    awk -v d="$DATA" -v r="$RUN" '$5 == d || index($5, d "/") == 1 || index($5, r "/") == 1 {print $5}' \
        /proc/self/mountinfo | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    [ -e "$NETNS" ] && ip netns delete "$NAME"
    rm -f "$SOCK" "$PIDFILE"
    ;;
status)
    up
    ;;
socket)
    echo "unix://$SOCK"
    ;;
*)
    echo "usage: $0 start|stop|kill|destroy|status|socket" >&2
    exit 2
    ;;
esac
