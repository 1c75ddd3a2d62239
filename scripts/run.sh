#!/usr/bin/env bash
# Sets up whatever is missing and runs the main job. Until `erigolem serve` exists, that is the runtime
# demo: a private Nginx and one ya-runtime-erigon instance on the dev chain, with a curl command
# that works. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --bins --examples --locked
exec cargo run --locked -q -p ya-runtime-erigon --example demo
