#!/usr/bin/env bash
# Builds the .deb and the .rpm (scripts/package.sh) and tests them as a runner admin would
# meet them:
#   .deb  installed with dpkg into a fresh Debian 12 container (the debootstrap image of
#         scripts/build-debian-image.sh, no network): the binary, `--version`, `doctor`, the
#         man page and completions, the conffile kept over a reinstall, the gc timer enabled,
#         remove and purge;
#   .rpm  its file list, config files, scriptlets and requirements (`rpm -qp`).
# Run by scripts/test.sh after the suite; needs Docker and root (as the rest of the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'test-packages: FAILED: %s\n' "$*" >&2; exit 1; }

out=$(scripts/package.sh)
printf '%s\n' "$out"
deb=$(printf '%s\n' "$out" | sed -n 's/^deb: //p')
rpm=$(printf '%s\n' "$out" | sed -n 's/^rpm: //p')
glibc=$(printf '%s\n' "$out" | sed -n 's/^minimum glibc: //p')
[ -f "$deb" ] && [ -f "$rpm" ] || fail "package.sh named no packages"
# The README states the minimum glibc read off the binary: it must still be true.
grep -q "glibc $glibc or newer" README.md ||
  fail "README.md does not state the minimum glibc the binary needs ($glibc)"

say "the .deb's control data"
control=$(dpkg-deb -f "$deb")
printf '%s\n' "$control" | grep -q '^Depends: .*libc6' || fail "no libc6 dependency: $control"
if printf '%s\n' "$control" | grep -i '^Depends:' | grep -qi docker; then
  fail "a hard dependency on a Docker package: $control"
fi
printf '%s\n' "$control" | grep -q '^Recommends: .*docker' || fail "Docker is not recommended"

say "installing the .deb into a fresh Debian 12 container"
scripts/build-debian-image.sh
dist=$(cd "$(dirname "$deb")" && pwd)
docker run --rm --network none -v "$dist:/pkg:ro" -e DEB="/pkg/$(basename "$deb")" \
  ecr-executor-test/debian:12 bash -euo pipefail -c '
fail() { echo "in the container: FAILED: $*" >&2; exit 1; }
# The test image leaves out /usr/share/{doc,man}; a runner host would not.
rm -f /etc/dpkg/dpkg.cfg.d/ecr-executor-test-slim
dpkg -i "$DEB" >/dev/null
dpkg-query -W -f="\${Status}\n" ecr-executor | grep -qx "install ok installed"
test "$(command -v ecr-executor)" = /usr/bin/ecr-executor || fail "not at /usr/bin/ecr-executor"
ecr-executor --version | grep -qx "ecr-executor [0-9.]*" || fail "--version"
grep -qx /etc/ecr-executor/config.toml /var/lib/dpkg/info/ecr-executor.conffiles || fail "conffile"
# doctor, as an admin runs it first: here no engine answers (none in this container) and
# no AWS credentials exist, so it must say both, with the fix, and exit non-zero.
set +e
report=$(AWS_EC2_METADATA_DISABLED=true ecr-executor doctor --runner-version 17.11.4 2>&1)
code=$?
set -e
printf "%s\n" "$report"
test "$code" -ne 0 || fail "doctor passed a host without an engine"
printf "%s\n" "$report" | grep -q "^✔ config: /etc/ecr-executor/config.toml parses" || fail "doctor: config"
printf "%s\n" "$report" | grep -q "^✘ engine: .*dockerd is running" || fail "doctor: engine"
printf "%s\n" "$report" | grep -q "^✘ AWS identity: no AWS credentials" || fail "doctor: AWS"
# The packaged gc service runs as gitlab-runner, which this container lacks; a drop-in
# naming this user (root) puts it right.
printf "%s\n" "$report" | grep -q "^✘ gc timer: ecr-executor-gc.service runs as .gitlab-runner., which does not exist here" ||
  fail "doctor: gc timer without its user"
mkdir -p /etc/systemd/system/ecr-executor-gc.service.d
printf "[Service]\nUser=root\n" >/etc/systemd/system/ecr-executor-gc.service.d/user.conf
report=$(AWS_EC2_METADATA_DISABLED=true ecr-executor doctor --runner-version 17.11.4 2>&1 || true)
printf "%s\n" "$report" | grep -q "^✔ gc timer: ecr-executor-gc.service runs as .root., this user" ||
  fail "doctor: gc timer drop-in"
rm -r /etc/systemd/system/ecr-executor-gc.service.d
grep -q "^ExecStart=/usr/bin/ecr-executor gc$" /usr/lib/systemd/system/ecr-executor-gc.service
test -f /usr/lib/systemd/system/ecr-executor-gc.timer
# No systemd here: the timer is enabled (the symlink) and not started.
test -L /etc/systemd/system/timers.target.wants/ecr-executor-gc.timer || fail "timer not enabled"
for f in /usr/share/man/man1/ecr-executor.1.gz /usr/share/man/man1/ecr-executor-doctor.1.gz \
  /usr/share/bash-completion/completions/ecr-executor /usr/share/zsh/vendor-completions/_ecr-executor \
  /usr/share/fish/vendor_completions.d/ecr-executor.fish /usr/share/doc/ecr-executor/copyright \
  /usr/share/doc/ecr-executor/README.md /usr/share/doc/ecr-executor/docs/pull-through.md; do
  test -s "$f" || fail "missing $f"
done
grep -q "MIT License" /usr/share/doc/ecr-executor/copyright || fail "license"
# The admin edits the config; a reinstall keeps it.
echo "# local edit" >>/etc/ecr-executor/config.toml
dpkg --force-confold -i "$DEB" >/dev/null
tail -n1 /etc/ecr-executor/config.toml | grep -qx "# local edit" || fail "the conffile was overwritten"
dpkg -r ecr-executor >/dev/null
test ! -e /usr/bin/ecr-executor && test -f /etc/ecr-executor/config.toml || fail "remove"
dpkg -P ecr-executor >/dev/null
test ! -e /etc/ecr-executor/config.toml || fail "purge"
echo "deb: installed, checked, removed, purged"
'

say "the .rpm"
files=$(rpm -qlp "$rpm" 2>/dev/null)
for f in /usr/bin/ecr-executor /etc/ecr-executor/config.toml \
  /usr/lib/systemd/system/ecr-executor-gc.service /usr/lib/systemd/system/ecr-executor-gc.timer \
  /usr/share/man/man1/ecr-executor.1.gz /usr/share/bash-completion/completions/ecr-executor \
  /usr/share/zsh/site-functions/_ecr-executor /usr/share/fish/vendor_completions.d/ecr-executor.fish \
  /usr/share/licenses/ecr-executor/LICENSE /usr/share/doc/ecr-executor/README.md; do
  printf '%s\n' "$files" | grep -qx "$f" || fail "the .rpm has no $f"
done
rpm -qcp "$rpm" 2>/dev/null | grep -qx /etc/ecr-executor/config.toml || fail "the config is not %config"
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" 2>/dev/null |
  grep -q '^cn /etc/ecr-executor/config.toml$' || fail "the config is not %config(noreplace)"
rpm -qp --scripts "$rpm" 2>/dev/null | grep -q 'enable --now ecr-executor-gc.timer' ||
  fail "the .rpm does not enable the gc timer"
requires=$(rpm -qp --requires "$rpm" 2>/dev/null)
printf '%s\n' "$requires" | grep -qi docker && fail "the .rpm requires Docker: $requires"
printf '%s\n' "$requires" | grep -q 'libc.so.6(GLIBC_' || fail "the .rpm states no glibc"
echo "rpm: $(printf '%s\n' "$files" | wc -l) files checked"
echo "packages: ok (minimum glibc $glibc)"
