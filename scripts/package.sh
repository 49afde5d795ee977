#!/usr/bin/env bash
# Builds the .deb and the .rpm of ecr-executor from ONE release build:
#   1. installs cargo-deb / cargo-generate-rpm (pinned) from crates.io when missing;
#   2. cargo build --release --locked (the only compile);
#   3. runs the built binary's hidden `generate-assets` to write the man pages and the
#      bash/zsh/fish completions into target/packaging/assets (gzips the man pages) and makes
#      a stripped copy of the binary for the RPM;
#   4. cargo deb --no-build, cargo generate-rpm (both read [package.metadata.*] in Cargo.toml);
#   5. prints both package paths and the minimum glibc the binary needs.
# Needs on the build host: binutils (strip, objdump), dpkg-dev (dpkg-shlibdeps, for the
# .deb's Depends), gzip, ldd (libc-bin). Run from anywhere; ~4 min for the two tools the first
# time on 2 cores, then the release build.
#   scripts/package.sh
#   DEB_REVISION=2 scripts/package.sh     # package revision (default 1, both formats)
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0          # rust-version 1.85
CARGO_GENERATE_RPM_VERSION=0.21.1  # edition 2024, let-chains: needs Rust >= 1.88
BIN=ecr-executor
REVISION=${DEB_REVISION:-1}

target_dir=${CARGO_TARGET_DIR:-target}
assets=target/packaging/assets   # relative to the repo: the Cargo.toml assets name these paths
dist=target/packaging/dist

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'package.sh: %s\n' "$*" >&2; exit 1; }

for tool in strip objdump gzip ldd dpkg-shlibdeps; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool not found (Debian: apt-get install binutils gzip libc-bin dpkg-dev)"
done

# Tools: `cargo install` only when the pinned version is not the one on PATH.
ensure_tool() { # crate version
  local crate=$1 version=$2
  if "$crate" --version 2>/dev/null | grep -qw -- "$version"; then return; fi
  say "installing $crate $version (cargo install --locked)"
  cargo install --locked --version "$version" "$crate"
}
ensure_tool cargo-deb "$CARGO_DEB_VERSION"
ensure_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

# The RPM scriptlet keys take a path OR inline text; a missing file would be shipped as a
# "script" consisting of its own path. Fail here instead.
for f in packaging/rpm/post-install.sh packaging/rpm/pre-uninstall.sh packaging/rpm/post-uninstall.sh \
         packaging/systemd/ecr-executor-gc.service packaging/systemd/ecr-executor-gc.timer LICENSE; do
  [ -f "$f" ] || die "missing $f"
done

# Reproducible timestamps in both packages (cargo-deb and cargo-generate-rpm read it).
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && git rev-parse --git-dir >/dev/null 2>&1; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
  export SOURCE_DATE_EPOCH
fi

say "release build"
cargo build --release --locked --bin "$BIN"
bin="$target_dir/release/$BIN"
[ -x "$bin" ] || die "no binary at $bin"

say "man pages and completions from the built binary"
rm -rf "$assets"
mkdir -p "$assets/bin"
"$bin" generate-assets --out-dir "$assets"
gzip -9nf "$assets"/man/*.1          # -n: no name/timestamp in the header (reproducible)
for f in ecr-executor.bash _ecr-executor ecr-executor.fish; do
  [ -s "$assets/completions/$f" ] || die "generate-assets wrote no completions/$f"
done
if grep -l 'generate-assets' "$assets"/completions/* >/dev/null; then
  die "a completion offers the hidden generate-assets subcommand"
fi
# The RPM gets the file as is; strip it exactly as cargo-deb strips the .deb's copy.
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
  -o "$assets/bin/$BIN" "$bin"

rm -rf "$dist"
mkdir -p "$dist"

say ".deb"
cargo deb --no-build --locked --deb-revision "$REVISION" --output "$dist/"

say ".rpm"
# builtin: ldd-based requires, the same on every build host (auto would switch to
# /usr/lib/rpm/find-requires when the `rpm` package happens to be installed).
cargo generate-rpm --auto-req builtin --set-metadata "release = \"$REVISION\"" --output "$dist/"

deb=$(find "$dist" -maxdepth 1 -name '*.deb' -print -quit)
rpm=$(find "$dist" -maxdepth 1 -name '*.rpm' -print -quit)
[ -n "$deb" ] || die "cargo deb wrote no .deb into $dist"
[ -n "$rpm" ] || die "cargo generate-rpm wrote no .rpm into $dist"

# The newest GLIBC_x.y symbol version the binary imports = the oldest glibc it runs on.
glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -n1)

echo "deb: $deb"
echo "rpm: $rpm"
echo "minimum glibc: ${glibc#GLIBC_}"
