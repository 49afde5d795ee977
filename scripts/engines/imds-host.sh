#!/bin/sh
# A test host that stands in for the EC2 instance metadata service (IMDS) and
# the container credential endpoints (ECS task role, EKS Pod Identity), serving
# planted credentials, reachable only from the network namespace of the private
# dockerd (private-dockerd.sh) and from its containers. Nothing goes in the
# machine's own network namespace: no address, no route, no packet from there.
# Run as root. Idempotent, quiet on success.
#
#   imds-host.sh start     # wire the test host to the dockerd's netns, start
#                          # (or keep) the server, wait until it answers there;
#                          # a server running with other settings (secret,
#                          # role, v2-only) is restarted
#   imds-host.sh stop      # kill the server, remove the veth (and with it the
#                          # routes) and the test host's netns; put back the
#                          # forwarding sysctls start turned on; the log stays
#   imds-host.sh status    # exit 0 when it answers from the dockerd's netns
#   imds-host.sh log       # print the path of the request log
#
# Env (same values for every call):
#   ECR_D2_NAME       the private dockerd's netns (default ecrd2); it must
#                     exist for start (private-dockerd.sh start makes it)
#   ECR_IMDS_NAME     the test host's netns (default <ECR_D2_NAME>-imds)
#   ECR_IMDS_RUN      pidfile and log dir (default /run/ecr-imds-<ECR_IMDS_NAME>)
#   ECR_IMDS_SECRET   planted secret access key (default PLANTED-IMDS-SECRET-7f3c)
#   ECR_IMDS_ROLE     role name (default ecr-executor-test-role)
#   ECR_IMDS_V2_ONLY  1: IMDS paths answer 401 without an IMDSv2 token
#                     (default 0: IMDSv1 enabled, a token is optional)
#   ECR_IMDS_IPV6     auto (default): also serve the IPv6 addresses when the
#                     namespaces have IPv6; 0: IPv4 only
#   ECR_IMDS_PYTHON   the server's python3 (default /usr/bin/python3, else PATH's)
#
# Wiring (the interface names are per netns, so they never clash):
#   dockerd netns   imds0 169.254.100.1/30, fe80::1/64  <-veth->
#   test host netns eth0  169.254.100.2/30, fe80::2/64; on lo 169.254.169.254,
#                   169.254.170.2, 169.254.170.23 (/32) and fd00:ec2::254,
#                   fd00:ec2::23 (/128); default routes via 169.254.100.1 and
#                   fe80::1
#   dockerd netns   routes to those five addresses via imds0; IPv4 (and IPv6)
#                   forwarding on in that netns only, so containers on its
#                   bridges (the default one and the per-job ones) reach them
# Only one test host per dockerd netns (the name imds0 and the addresses are
# fixed). The private dockerd's bridges have no IPv6 (it runs without --ipv6),
# so its containers reach only the IPv4 addresses; the IPv6 ones answer from
# the dockerd's netns itself (and from containers on a network made with
# --ipv6, if a test makes one).
#
# The server (imds-server.py, see its header for the paths) answers the same
# paths on every address. Its log, $ECR_IMDS_RUN/imds.log, starts empty each
# time start launches a server and has one line per request:
#   request client=ADDR server=ADDR method=M path=P status=N token=yes|no authorization=yes|no
# start and status send GET /ecr-imds-probe (not an AWS path) to each address.
set -eu
. "$(dirname "$0")/lib.sh"
D2=${ECR_D2_NAME:-ecrd2}
NAME=${ECR_IMDS_NAME:-$D2-imds}
RUN=${ECR_IMDS_RUN:-/run/ecr-imds-$NAME}
SECRET=${ECR_IMDS_SECRET:-PLANTED-IMDS-SECRET-7f3c}
ROLE=${ECR_IMDS_ROLE:-ecr-executor-test-role}
V2_ONLY=${ECR_IMDS_V2_ONLY:-0}
IPV6=${ECR_IMDS_IPV6:-auto}
D2NS=/run/netns/$D2
NETNS=/run/netns/$NAME
PIDFILE=$RUN/imds.pid
LOG=$RUN/imds.log
SAVED=$RUN/sysctl.saved
CONF=$RUN/server.conf
SERVER=$(cd "$(dirname "$0")" && pwd)/imds-server.py
V4="169.254.169.254 169.254.170.2 169.254.170.23"
V6="fd00:ec2::254 fd00:ec2::23"
D2IF=imds0 # in the dockerd's netns
IF=eth0    # in the test host's netns

# runs a command in the dockerd's netns (nsenter fails, and runs nothing, when
# that netns is gone: never falls back to the machine's own netns)
in_d2() { nsenter --net="$D2NS" "$@"; }
probe() { in_d2 curl -gsf --connect-timeout 1 --max-time 2 -o /dev/null "http://$1/ecr-imds-probe"; }
# the addresses served: IPv6 ones too when set up
addrs() {
    for a in $V4; do echo "$a"; done
    if [ -e "$NETNS" ] && ip -n "$NAME" -6 addr show dev lo 2>/dev/null | grep -q 'fd00:ec2::254'; then
        for a in $V6; do echo "[$a]"; done
    fi
}
answers() {
    [ -e "$D2NS" ] && [ -e "$NETNS" ] || return 1
    for a in $(addrs); do probe "$a" || return 1; done
}
# the pid in our pidfile, if it is a live imds-server.py in our netns
ours() {
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [ -n "$pid" ] && ps -o args= -p "$pid" 2>/dev/null | grep -q 'imds-server\.py' &&
        [ "$(ip netns identify "$pid" 2>/dev/null)" = "$NAME" ]
}
# the inode of the dockerd's netns: restore its sysctls only in the same one
d2_inode() { stat -L -c %i "$D2NS" 2>/dev/null; }
# set_sysctl PATH: writes 1 to /proc/sys/net/PATH in the dockerd's netns,
# remembering an earlier 0 for stop
set_sysctl() {
    old=$(in_d2 cat "/proc/sys/net/$1")
    [ "$old" = 1 ] && return 0
    grep -q "^$1 " "$SAVED" 2>/dev/null || echo "$1 $old $(d2_inode)" >>"$SAVED"
    in_d2 sh -c "echo 1 >/proc/sys/net/$1"
}
has_ipv6() { nsenter --net="$1" test -e /proc/sys/net/ipv6/conf/all/disable_ipv6 &&
    [ "$(nsenter --net="$1" cat /proc/sys/net/ipv6/conf/all/disable_ipv6)" = 0 ]; }

case "${1:-}" in
start)
    if [ ! -e "$D2NS" ]; then
        echo "$0: the private dockerd's netns $D2 does not exist (no $D2NS);" \
            "start it first: ECR_D2_NAME=$D2 $(dirname "$0")/private-dockerd.sh start" >&2
        exit 1
    fi
    ensure_packages curl iproute2
    PY=${ECR_IMDS_PYTHON:-}
    if [ -z "$PY" ]; then
        if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else
            command -v python3 >/dev/null 2>&1 || ensure_packages python3
            PY=$(command -v python3)
        fi
    fi
    mkdir -p "$RUN"
    # sysctls saved for another (since deleted) dockerd netns are of no use
    if [ -f "$SAVED" ] && awk -v i="$(d2_inode)" '$3 != i {x = 1} END {exit !x}' "$SAVED"; then
        rm -f "$SAVED"
    fi
    [ -e "$NETNS" ] || ip netns add "$NAME"
    ip -n "$NAME" link set lo up
    # a veth whose other end is gone (the dockerd's netns was deleted and made
    # again) goes with its pair: make both again when either is missing
    if ! ip -n "$NAME" link show "$IF" >/dev/null 2>&1 || ! ip -n "$D2" link show "$D2IF" >/dev/null 2>&1; then
        ip -n "$NAME" link del "$IF" 2>/dev/null || true
        ip -n "$D2" link del "$D2IF" 2>/dev/null || true
        ip -n "$NAME" link add "$IF" type veth peer name "$D2IF" netns "$D2"
    fi
    ip -n "$D2" addr replace 169.254.100.1/30 dev "$D2IF"
    ip -n "$NAME" addr replace 169.254.100.2/30 dev "$IF"
    for a in $V4; do ip -n "$NAME" addr replace "$a/32" dev lo; done
    ip -n "$D2" link set "$D2IF" up
    ip -n "$NAME" link set "$IF" up
    ip -n "$NAME" route replace default via 169.254.100.1 dev "$IF"
    for a in $V4; do ip -n "$D2" route replace "$a/32" via 169.254.100.2 dev "$D2IF"; done
    set_sysctl ipv4/ip_forward
    if [ "$IPV6" != 0 ] && has_ipv6 "$D2NS" && has_ipv6 "$NETNS"; then
        ip -n "$D2" addr replace fe80::1/64 dev "$D2IF" nodad
        ip -n "$NAME" addr replace fe80::2/64 dev "$IF" nodad
        for a in $V6; do ip -n "$NAME" addr replace "$a/128" dev lo nodad; done
        ip -n "$NAME" -6 route replace default via fe80::1 dev "$IF"
        for a in $V6; do ip -n "$D2" -6 route replace "$a/128" via fe80::2 dev "$D2IF"; done
        set_sysctl ipv6/conf/all/forwarding
    fi
    # a server started with other settings makes way for one with these
    # (a checksum of them: the secret stays off the disk)
    conf=$(printf '%s\n' "$ROLE" "$V2_ONLY" "$SECRET" "$PY" "$SERVER" | cksum)
    if ours && [ "$conf" != "$(cat "$CONF" 2>/dev/null)" ]; then
        kill -TERM "$pid"
        wait_gone "$pid" 30 || { kill -KILL "$pid"; wait_gone "$pid" 30 || true; }
    fi
    if ! ours; then
        rm -f "$PIDFILE"
        printf '%s\n' "$conf" >"$CONF"
        : >"$LOG"
        v2=""
        [ "$V2_ONLY" = 1 ] && v2=--v2-only
        # the secret goes in the environment, not on the command line (ps)
        # (SC2094: the server appends to the log it is named, as its stdout does)
        # shellcheck disable=SC2086,SC2094
        ECR_IMDS_SECRET=$SECRET setsid nsenter --net="$NETNS" "$PY" -u "$SERVER" \
            --role "$ROLE" --log "$LOG" --pidfile "$PIDFILE" $v2 >>"$LOG" 2>&1 </dev/null &
    fi
    wait_up 50 "imds test host (from netns $D2)" "$LOG" answers
    ;;
stop)
    if ours; then
        kill -TERM "$pid"
        wait_gone "$pid" 30 || { kill -KILL "$pid"; wait_gone "$pid" 30 || true; }
    fi
    rm -f "$PIDFILE"
    if [ -e "$NETNS" ]; then
        # anything else left in the test host's netns was started by us
        for p in $(ip netns pids "$NAME" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    fi
    # deleting imds0 deletes the routes through it (and its veth pair)
    if [ -e "$D2NS" ]; then
        ip -n "$D2" link del "$D2IF" 2>/dev/null || true
        if [ -f "$SAVED" ]; then
            ino=$(d2_inode)
            while read -r key old at; do
                if [ "$at" = "$ino" ]; then in_d2 sh -c "echo $old >/proc/sys/net/$key"; fi
            done <"$SAVED"
        fi
    fi
    rm -f "$SAVED"
    [ ! -e "$NETNS" ] || ip netns delete "$NAME"
    ;;
status)
    answers
    ;;
log)
    echo "$LOG"
    ;;
*)
    echo "usage: $0 start|stop|status|log" >&2
    exit 2
    ;;
esac
