# ecr-executor %preun ($1: 0 = erase, >= 1 = upgrade; run by /bin/sh).
# Erase only: stop and disable the timer, and stop a gc run in progress.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now ecr-executor-gc.timer >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop ecr-executor-gc.service >/dev/null 2>&1 || :
    fi
fi
exit 0
