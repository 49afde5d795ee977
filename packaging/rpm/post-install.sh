# ecr-executor %post ($1: 1 = first install, >= 2 = upgrade; run by /bin/sh).
# First install: enable the gc timer, and start it where systemd is running. Enabling works
# without a running systemd (image builds, chroots): it only creates the symlink. Upgrades
# keep whatever the admin chose; %postun restarts the timer if it was running.
# (`systemctl preset` would follow the distribution's policy instead, which on
# Fedora/RHEL disables units not listed in a preset file: the timer would stay off.)
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || :
        systemctl enable --now ecr-executor-gc.timer >/dev/null 2>&1 || :
    else
        systemctl enable ecr-executor-gc.timer >/dev/null 2>&1 || :
    fi
fi
exit 0
