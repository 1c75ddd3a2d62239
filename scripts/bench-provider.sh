#!/usr/bin/env bash
# Runs the provider agent benchmark (release build) offline in the local Golem network; prints
# Markdown tables. Results are recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
cargo bench --locked -p erigolem-provider --bench agent --no-run
offline=(unshare --net -- bash -c 'ip link set lo up && exec "$@"' offline)
[ "$(id -u)" -eq 0 ] || offline=(sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME "${offline[@]}")
"${offline[@]}" cargo bench --offline --locked -p erigolem-provider --bench agent
