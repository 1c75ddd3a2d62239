#!/usr/bin/env bash
# Runs one benchmark (release build) offline, as the tests run, in a network namespace with only
# loopback; prints Markdown tables (recorded in docs/benchmarks.md).
#   bash scripts/bench.sh [runtime|server|hostile|provider|golem]    (default: runtime)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-runtime}" in
  runtime)  target=(-p ya-runtime-erigon --bench runtime) ;;   # the runtime: start, memory, Nginx vs direct
  server)   target=(-p erigolem --bench server) ;;             # erigolem serve: create → running, sign-ins
  hostile)  target=(-p erigolem --bench hostile) ;;            # erigolem serve: /healthz under slowloris
  provider) target=(-p erigolem-provider --bench agent) ;;     # provider agent: demand → working URL
  golem)    target=(-p erigolem --bench golem) ;;              # golem backend: click → working URL
  *) echo "usage: $0 [runtime|server|hostile|provider|golem]" >&2; exit 2 ;;
esac
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
cargo bench --locked "${target[@]}" --no-run
offline=(unshare --net -- bash -c 'ip link set lo up && exec "$@"' offline)
[ "$(id -u)" -eq 0 ] || offline=(sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME "${offline[@]}")
"${offline[@]}" cargo bench --offline --locked "${target[@]}"
