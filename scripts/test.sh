#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, checks formatting and lints, builds
# everything (the web UI first: erigolem embeds it; this needs the package registries), then runs
# every test offline in a network namespace that has only loopback, so nothing can leave the machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }

step "setup"
bash scripts/setup.sh

step "web UI: typecheck, build (embedded by erigolem), size budget"
npm --prefix ui run --silent typecheck
bash scripts/build-ui.sh
node ui/scripts/bundle-size.mjs

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --bins --examples --locked
cargo nextest run --workspace --locked --no-run

step "API contract: docs/openapi.json and ui/src/api/schema.ts are what the server's types give"
bash scripts/api-types.sh --check

step "tests (offline: network namespace with loopback only)"
offline=(unshare --net -- bash -c 'ip link set lo up && exec "$@"' offline)
if [ "$(id -u)" -ne 0 ]; then
  # A network namespace needs root; Nginx's worker user switch needs real root too.
  offline=(sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME "${offline[@]}")
fi
# Every runner runs even if an earlier one failed, so each prints its `N passed, N failed`.
failed=()
"${offline[@]}" cargo nextest run --workspace --offline --locked --profile ci "$@" || failed+=(cargo)

step "web UI: unit and component tests (vitest)"
"${offline[@]}" node ui/scripts/run-suite.mjs unit || failed+=(vitest)

step "web UI: end to end in Chromium (Playwright) against erigolem serve"
"${offline[@]}" node ui/scripts/run-suite.mjs e2e || failed+=(e2e)

if [ ${#failed[@]} -gt 0 ]; then
  printf '\n\033[1;31mfailed: %s\033[0m\n' "${failed[*]}"
  exit 1
fi
