#!/usr/bin/env bash
# Makes Debian's amazon-ecr-credential-helper (docker-credential-ecr-login 0.6.0) work
# against the test world (start-test-world.sh): its ECR API calls reach moto, on loopback
# only. Version 0.6.0 takes no endpoint setting (no AWS_ENDPOINT_URL): it always calls
# https://api.ecr.<region>.amazonaws.com:443 (the region from the registry's hostname). So
# tls-forward.py serves TLS for that name (and the STS and FIPS names) with a certificate
# from a throwaway CA and relays the bytes to moto; the helper trusts that CA through
# AWS_CA_BUNDLE (its AWS SDK for Go v2 honours it). Nothing goes in the system CA store.
# Run as root, after the test world is up. Idempotent, quiet on success.
#
#   ecr-login-world.sh start    # install the helper if missing, make the CA and the
#                               # certificate (again when missing, expiring or for other
#                               # names), start (or keep) the forwarder, wait until it
#                               # relays to moto; print `export` lines (eval them);
#                               # a forwarder running with other settings is restarted
#   ecr-login-world.sh stop     # kill the forwarder, remove the /etc/hosts lines start
#                               # added and the CA, keys and certificate; the log stays
#   ecr-login-world.sh status   # exit 0 when the forwarder relays to moto
#
# Modes (ECR_LOGIN_MODE, same value for every call):
#   direct (default)  TLS on 127.0.0.1:443, reached through /etc/hosts (start adds the
#                     names start-test-world.sh has not, and stop removes those); port
#                     443 is then taken, so tests that bind it themselves (fake_aws.rs's
#                     AwsNames) cannot run meanwhile
#   proxy             an HTTPS proxy on a free loopback port instead: the helper gets
#                     HTTPS_PROXY=$ECR_EXECUTOR_TEST_ECR_LOGIN_PROXY and sends
#                     `CONNECT api.ecr.<region>.amazonaws.com:443`; only the certificate's
#                     names are let through, and always to moto; no port 443, no /etc/hosts
#
# Env:
#   ECR_EXECUTOR_TEST_AWS  moto's URL, http://127.0.0.1:PORT (start-test-world.sh's
#                          export); needed by start
#   ECR_LOGIN_MODE         direct (default) or proxy, see above
#   ECR_LOGIN_REGION       the region whose endpoint names are served (default eu-west-1)
#   ECR_LOGIN_PROXY_PORT   proxy mode: the port (default: the one used before, else free)
#   ECR_LOGIN_RUN          state dir: pidfile, certificates, log (default /run/ecr-login-world)
#   ECR_LOGIN_PYTHON       the forwarder's python3 (default /usr/bin/python3, else PATH's)
#
# Exports printed by start:
#   ECR_EXECUTOR_TEST_ECR_LOGIN        the helper's path (/usr/bin/docker-credential-ecr-login)
#   ECR_EXECUTOR_TEST_ECR_LOGIN_CA     the test CA: give it to the helper as AWS_CA_BUNDLE
#                                      (it then trusts only that CA)
#   ECR_EXECUTOR_TEST_ECR_LOGIN_PROXY  proxy mode: give it to the helper as HTTPS_PROXY;
#                                      empty in direct mode
#   ECR_EXECUTOR_TEST_ECR_LOGIN_LOG    the forwarder's log, one line per connection:
#                                      conn client=A sni=NAME connect=NAME:443|- status=S
# The helper also needs AWS credentials (AWS_ACCESS_KEY_ID=testing ... is what moto takes);
# it keeps a token cache in $AWS_ECR_CACHE_DIR (default ~/.ecr, file cache.json) unless
# AWS_ECR_DISABLE_CACHE is non-empty, and logs to ~/.ecr/log/ecr-login.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/engines/lib.sh
. "$here/lib.sh"

MODE=${ECR_LOGIN_MODE:-direct}
REGION=${ECR_LOGIN_REGION:-eu-west-1}
RUN=${ECR_LOGIN_RUN:-/run/ecr-login-world}
FORWARDER=$here/tls-forward.py
PIDFILE=$RUN/forward.pid
LOG=$RUN/forward.log
CONF=$RUN/forward.conf
HOSTS_ADDED=$RUN/hosts.added
PORTFILE=$RUN/proxy.port
HELPER=/usr/bin/docker-credential-ecr-login
NAMES="api.ecr.$REGION.amazonaws.com ecr-fips.$REGION.amazonaws.com sts.$REGION.amazonaws.com"
NAMES="$NAMES sts-fips.$REGION.amazonaws.com sts.amazonaws.com"
PROBE_NAME=api.ecr.$REGION.amazonaws.com

case "$MODE" in direct | proxy) ;; *)
    echo "$0: ECR_LOGIN_MODE must be direct or proxy, not $MODE" >&2
    exit 2
    ;;
esac

# moto's loopback host:port, from ECR_EXECUTOR_TEST_AWS
backend() {
    local url=${ECR_EXECUTOR_TEST_AWS:-}
    if [ -z "$url" ]; then
        # shellcheck disable=SC2016 # the command to run, as is
        echo "$0: ECR_EXECUTOR_TEST_AWS is not set; start the test world first:" \
            'eval "$(scripts/start-test-world.sh)"' >&2
        exit 1
    fi
    case "$url" in
    http://127.*:* | http://localhost:*) ;;
    *)
        echo "$0: ECR_EXECUTOR_TEST_AWS=$url is not moto on loopback (http://127.0.0.1:PORT)" >&2
        exit 1
        ;;
    esac
    url=${url#http://}
    url=${url%%/*}
    echo "${url/#localhost:/127.0.0.1:}"
}

# the pid in our pidfile, if it is a live tls-forward.py
ours() {
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [ -n "$pid" ] && ps -o args= -p "$pid" 2>/dev/null | grep -q 'tls-forward\.py'
}

# the address the forwarder listens on
listen() {
    if [ "$MODE" = direct ]; then echo 127.0.0.1:443; else echo "127.0.0.1:$(cat "$PORTFILE")"; fi
}

# a request through the forwarder reaches moto: any HTTP answer (only moto makes one)
relays() {
    local code
    if [ "$MODE" = direct ]; then
        code=$(curl -s --noproxy '*' --cacert "$RUN/ca.pem" --resolve "$PROBE_NAME:443:127.0.0.1" \
            --connect-timeout 1 --max-time 3 -o /dev/null -w '%{http_code}' \
            "https://$PROBE_NAME/ecr-login-world-probe" || true)
    else
        code=$(curl -s --proxy "http://$(listen)" --cacert "$RUN/ca.pem" \
            --connect-timeout 1 --max-time 3 -o /dev/null -w '%{http_code}' \
            "https://$PROBE_NAME/ecr-login-world-probe" || true)
    fi
    [ -n "$code" ] && [ "$code" != 000 ]
}

# makes the CA and a certificate for $NAMES, unless those in $RUN still serve (a day left)
certificates() {
    local names
    names=$NAMES
    if [ -s "$RUN/ca.pem" ] && [ -s "$RUN/cert.pem" ] && [ -s "$RUN/key.pem" ] &&
        [ "$(cat "$RUN/cert.names" 2>/dev/null)" = "$names" ] &&
        openssl x509 -checkend 86400 -noout -in "$RUN/cert.pem" >/dev/null 2>&1 &&
        openssl x509 -checkend 86400 -noout -in "$RUN/ca.pem" >/dev/null 2>&1; then
        return 0
    fi
    local tmp san="" n
    tmp=$(mktemp -d "$RUN/certs.XXXXXX")
    for n in $NAMES; do san="$san${san:+,}DNS:$n"; done
    (
        cd "$tmp"
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 30 \
            -subj /CN=ecr-login-world-test-ca \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        openssl req -newkey rsa:2048 -nodes -keyout key.pem -out server.csr -subj "/CN=$PROBE_NAME"
        printf '%s\n' "subjectAltName=$san" basicConstraints=CA:FALSE \
            keyUsage=critical,digitalSignature,keyEncipherment extendedKeyUsage=serverAuth >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -out cert.pem -days 29 -extfile server.ext
        chmod 644 ca.pem cert.pem
    ) >"$tmp/openssl.log" 2>&1 || {
        echo "$0: openssl failed:" >&2
        cat "$tmp/openssl.log" >&2
        rm -rf "$tmp"
        exit 1
    }
    mv -f "$tmp/ca-key.pem" "$tmp/key.pem" "$RUN/"
    mv -f "$tmp/cert.pem" "$RUN/cert.pem"
    mv -f "$tmp/ca.pem" "$RUN/ca.pem"
    printf '%s\n' "$names" >"$RUN/cert.names"
    rm -rf "$tmp"
}

# /etc/hosts sends $NAMES to loopback (written in place: it may be a bind mount)
hosts_add() {
    local n
    for n in $NAMES; do
        if ! awk -v n="$n" '$1 == "127.0.0.1" { for (i = 2; i <= NF; i++) if ($i == n) f = 1 }
                END { exit !f }' /etc/hosts; then
            echo "127.0.0.1 $n" >>/etc/hosts
            echo "127.0.0.1 $n" >>"$HOSTS_ADDED"
        fi
    done
    # every name must resolve to loopback and nowhere else, or the helper could leave it
    for n in $NAMES; do
        if getent ahosts "$n" | awk '{print $1}' | grep -v -q -x -E '127\.[0-9.]+|::1'; then
            echo "$0: $n resolves to more than loopback ($(getent ahosts "$n" | awk '{print $1}' | sort -u | tr '\n' ' '))" >&2
            exit 1
        fi
    done
}

hosts_remove() {
    [ -s "$HOSTS_ADDED" ] || { rm -f "$HOSTS_ADDED"; return 0; }
    local kept
    kept=$(grep -v -x -F -f "$HOSTS_ADDED" /etc/hosts || true)
    printf '%s\n' "$kept" >/etc/hosts
    rm -f "$HOSTS_ADDED"
}

stop_forwarder() {
    if ours; then
        kill -TERM "$pid"
        wait_gone "$pid" 30 || { kill -KILL "$pid"; wait_gone "$pid" 30 || true; }
    fi
    rm -f "$PIDFILE"
}

case "${1:-}" in
start)
    back=$(backend)
    [ -x "$HELPER" ] || ensure_packages amazon-ecr-credential-helper
    command -v openssl >/dev/null 2>&1 || ensure_packages openssl
    command -v curl >/dev/null 2>&1 || ensure_packages curl
    PY=${ECR_LOGIN_PYTHON:-}
    if [ -z "$PY" ]; then
        if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else
            command -v python3 >/dev/null 2>&1 || ensure_packages python3
            PY=$(command -v python3)
        fi
    fi
    mkdir -p "$RUN"
    chmod 755 "$RUN"
    certificates
    if [ "$MODE" = direct ]; then
        hosts_add
        connect=""
    else
        connect=${NAMES// /,}
    fi
    # a forwarder started with other settings (or another certificate) makes way
    conf=$(printf '%s\n' "$MODE" "$back" "$connect" "${ECR_LOGIN_PROXY_PORT:-}" "$PY" "$FORWARDER" \
        "$(cat "$RUN/cert.pem")" | cksum)
    if ours && [ "$conf" != "$(cat "$CONF" 2>/dev/null)" ]; then
        stop_forwarder
    fi
    if ! ours; then
        rm -f "$PIDFILE"
        if [ "$MODE" = proxy ]; then
            port=${ECR_LOGIN_PROXY_PORT:-$(cat "$PORTFILE" 2>/dev/null || true)}
            if [ -z "$port" ] || ! "$PY" -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
                [ -z "${ECR_LOGIN_PROXY_PORT:-}" ] || {
                    echo "$0: 127.0.0.1:$ECR_LOGIN_PROXY_PORT is taken" >&2
                    exit 1
                }
                port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
            fi
            echo "$port" >"$PORTFILE"
        fi
        printf '%s\n' "$conf" >"$CONF"
        : >"$LOG"
        # (SC2094: the forwarder appends to the log it is named, as its stdout does)
        # shellcheck disable=SC2094
        setsid "$PY" -u "$FORWARDER" --listen "$(listen)" --backend "$back" \
            --cert "$RUN/cert.pem" --key "$RUN/key.pem" --log "$LOG" --pidfile "$PIDFILE" \
            ${connect:+--connect "$connect"} >>"$LOG" 2>&1 </dev/null &
        started=$!
        # it writes its pidfile once it listens; an early exit (port 443 taken) says why
        i=0
        until [ -f "$PIDFILE" ]; do
            if ! kill -0 "$started" 2>/dev/null; then
                echo "$0: tls-forward.py exited before listening on $(listen); see $LOG" >&2
                tail -5 "$LOG" >&2
                exit 1
            fi
            i=$((i + 1))
            [ $i -le 50 ] || break
            sleep 0.1
        done
    fi
    wait_up 50 "tls-forward.py (on $(listen), to moto at $back)" "$LOG" relays
    proxy=""
    [ "$MODE" = direct ] || proxy="http://$(listen)"
    cat <<ENV
export ECR_EXECUTOR_TEST_ECR_LOGIN=$HELPER
export ECR_EXECUTOR_TEST_ECR_LOGIN_CA=$RUN/ca.pem
export ECR_EXECUTOR_TEST_ECR_LOGIN_PROXY=$proxy
export ECR_EXECUTOR_TEST_ECR_LOGIN_LOG=$LOG
ENV
    ;;
stop)
    stop_forwarder
    hosts_remove
    rm -f "$RUN/ca.pem" "$RUN/ca-key.pem" "$RUN/ca.srl" "$RUN/cert.pem" "$RUN/key.pem" \
        "$RUN/cert.names" "$CONF" "$PORTFILE"
    rm -rf "$RUN"/certs.*
    ;;
status)
    ours && [ -s "$RUN/ca.pem" ] && { [ "$MODE" = direct ] || [ -s "$PORTFILE" ]; } && relays
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
