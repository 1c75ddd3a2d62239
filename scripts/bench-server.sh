#!/usr/bin/env bash
# Runs the `erigolem serve` benchmark (release build) offline, as the tests run; prints Markdown
# tables. Results are recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
cargo bench --locked -p erigolem --bench server --no-run
offline=(unshare --net -- bash -c 'ip link set lo up && exec "$@"' offline)
[ "$(id -u)" -eq 0 ] || offline=(sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME "${offline[@]}")
"${offline[@]}" cargo bench --offline --locked -p erigolem --bench server
