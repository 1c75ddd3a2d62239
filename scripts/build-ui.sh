#!/usr/bin/env bash
# Builds the web UI into ui/dist, which `erigolem` embeds at compile time (crates/web-ui).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d ui/node_modules ] || npm ci --prefix ui --no-audit --no-fund --loglevel=error
npm --prefix ui run --silent build
