#!/usr/bin/env bash
# Runs the benchmarks (release build) offline, as the tests run; prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
cargo bench --locked -p ya-runtime-erigon --bench runtime --no-run
offline=(unshare --net -- bash -c 'ip link set lo up && exec "$@"' offline)
[ "$(id -u)" -eq 0 ] || offline=(sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME "${offline[@]}")
"${offline[@]}" cargo bench --offline --locked -p ya-runtime-erigon --bench runtime
