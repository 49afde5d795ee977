# ecr-executor %postun ($1: 0 = erase, >= 1 = upgrade; run by /bin/sh). On an upgrade this
# runs after the new package's files are in place (new %post, then old %preun/%postun).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        # Picks up a changed timer file; does nothing if the admin stopped the timer.
        systemctl try-restart ecr-executor-gc.timer >/dev/null 2>&1 || :
    fi
fi
exit 0
