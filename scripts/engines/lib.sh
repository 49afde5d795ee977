# Shared by the engine scripts (sourced, POSIX sh).

# Installs the Debian packages among "$@" that are missing.
ensure_packages() {
    need=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need="$need $p"
    done
    [ -n "$need" ] || return 0
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
    }
}

# detach LOG: in a background subshell that starts a daemon, points stdin at /dev/null and
# stdout and stderr at LOG for good. Not `func args >LOG &`: while a shell function runs
# with redirections, dash keeps the caller's stdout open in a saved descriptor, and that
# subshell lives as long as the daemon, so a caller reading our stdout (`$(...)`) never
# sees its end.
detach() {
    exec </dev/null >"$1" 2>&1
}

# wait_up TENTHS WHAT LOG CMD...: runs CMD every 0.1 s until it succeeds; after TENTHS
# tries, says WHAT did not come up with the end of LOG, and exits 1.
wait_up() {
    tenths=$1 what=$2 log=$3
    shift 3
    i=0
    until "$@"; do
        i=$((i + 1))
        if [ $i -gt "$tenths" ]; then
            echo "$what did not come up; see $log" >&2
            tail -20 "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
}

# wait_gone PID TENTHS: waits until PID has exited; fails after TENTHS * 0.1 s. A zombie
# counts as gone (PID 1 here may reap late).
wait_gone() {
    i=0
    while kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]; do
        i=$((i + 1))
        [ $i -gt "$2" ] && return 1
        sleep 0.1
    done
}
