#!/usr/bin/env bash
# Sets up whatever is missing and runs the main job: `erigolem serve` on http://127.0.0.1:8080 with
# the local backend (this machine is the provider: its own Nginx on 127.0.0.1:8081, anvil dev
# chains), SQLite in ./.erigolem, the web UI at /. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-ui.sh
cargo build --workspace --bins --locked
exec target/debug/erigolem serve "$@"
