#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, checks formatting and lints, builds
# everything (this needs the package registries), then runs every test offline in a network
# namespace that has only loopback, so nothing can leave the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }

step "setup"
bash scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --bins --examples --locked
cargo nextest run --workspace --locked --no-run

step "tests (offline: network namespace with loopback only)"
offline=(unshare --net -- bash -c 'ip link set lo up && exec "$@"' offline)
if [ "$(id -u)" -ne 0 ]; then
  # A network namespace needs root; Nginx's worker user switch needs real root too.
  offline=(sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME "${offline[@]}")
fi
"${offline[@]}" cargo nextest run --workspace --offline --locked --profile ci "$@"
