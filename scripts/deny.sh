#!/usr/bin/env bash
# Dependency checks with cargo-deny (installed from crates.io when missing): licenses, bans and
# sources, from Cargo.lock and deny.toml, always. RustSec advisories when the advisory
# database is on this machine ($CARGO_HOME/advisory-dbs, as `cargo deny fetch` leaves it);
# it is a git repository on GitHub, which CI cannot reach, so otherwise the check is skipped
# and says why. Nothing here reaches beyond crates.io.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $version"; then
  printf '==> installing cargo-deny %s from crates.io\n' "$version" >&2
  cargo install --locked --quiet cargo-deny --version "$version"
fi

cargo deny --locked check --hide-inclusion-graph licenses bans sources

db_dir=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs
if compgen -G "$db_dir/*/crates" >/dev/null; then
  cargo deny --locked --offline check --hide-inclusion-graph advisories
else
  printf 'SKIPPED: RustSec advisories: no advisory database in %s (it is fetched from GitHub, which this machine cannot reach; run `cargo deny fetch` where it can)\n' \
    "$db_dir" >&2
fi
