#!/usr/bin/env bash
# Click → working URL through the golem backend (release build), offline in the local Golem
# network; prints a Markdown table. Results are recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
cargo bench --locked -p erigolem --bench golem --no-run
offline=(unshare --net -- bash -c 'ip link set lo up && exec "$@"' offline)
[ "$(id -u)" -eq 0 ] || offline=(sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME "${offline[@]}")
"${offline[@]}" cargo bench --offline --locked -p erigolem --bench golem
