#!/usr/bin/env bash
# The guard rails, fast to slow, before the integration suite (scripts/test.sh runs this first):
#   1. formatting          cargo fmt --check
#   2. lints               cargo clippy --all-targets -- -D warnings
#   3. docs                cargo doc (private items too) with warnings denied: dead links fail
#   4. unit tests, no root the library's tests run as an unprivileged user, so nothing passes
#                          only because root may do anything
#   5. dependencies        cargo deny: licenses, bans and sources always; advisories when the
#                          RustSec database can be fetched, else skipped with the reason
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --document-private-items --quiet

step "unit tests as an unprivileged user"
scripts/unit-tests-unprivileged.sh

step "cargo deny"
scripts/deny.sh
