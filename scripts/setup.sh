#!/usr/bin/env bash
# Installs whatever this project needs and is missing, and nothing else. Idempotent: a second run
# changes nothing. System packages come from Debian (apt), JS tools from npm into the clone (.tools/).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ANVIL_PKG="@foundry-rs/anvil-linux-amd64"
ANVIL_VERSION="1.7.1"
APT_PACKAGES=(protobuf-compiler nginx-light curl iproute2 util-linux postgresql chromium)

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package enables a system-wide nginx on port 80; this project runs its own instances.
  $sudo_cmd systemctl disable --now nginx >/dev/null 2>&1 || true
  # Likewise a system PostgreSQL cluster on 5432: tests start private clusters on free ports.
  $sudo_cmd systemctl disable --now postgresql >/dev/null 2>&1 || true
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | awk '$4 == "online" {print $1, $2}' | while read -r ver name; do
      $sudo_cmd pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
    done || true
  fi
else
  log "apt: ${APT_PACKAGES[*]} present"
fi

tools="$root/.tools"
mkdir -p "$tools/bin"
anvil_bin="$tools/npm/node_modules/$ANVIL_PKG/bin/anvil"
if [ ! -x "$anvil_bin" ] || ! grep -q "\"version\": \"$ANVIL_VERSION\"" "$tools/npm/node_modules/$ANVIL_PKG/package.json" 2>/dev/null; then
  log "npm: installing $ANVIL_PKG@$ANVIL_VERSION into .tools/npm"
  mkdir -p "$tools/npm"
  npm install --prefix "$tools/npm" --no-audit --no-fund --loglevel=error "$ANVIL_PKG@$ANVIL_VERSION" >/dev/null
  [ -x "$anvil_bin" ] || anvil_bin=$(find "$tools/npm/node_modules/$ANVIL_PKG" -type f -name anvil | head -n1)
else
  log "npm: $ANVIL_PKG@$ANVIL_VERSION present"
fi
ln -sf "$anvil_bin" "$tools/bin/anvil"
"$tools/bin/anvil" --version | head -n1 | sed 's/^/[setup] /'

# The web UI's packages (exact versions from ui/package-lock.json), reinstalled when the lock changes.
if [ ! -f ui/node_modules/.package-lock.json ] || ! cmp -s ui/package-lock.json ui/node_modules/.erigolem-lock; then
  log "npm: installing the web UI's packages (ui/package-lock.json)"
  npm ci --prefix ui --no-audit --no-fund --loglevel=error >/dev/null
  cp ui/package-lock.json ui/node_modules/.erigolem-lock
else
  log "npm: web UI packages present"
fi

# ---------------------------------------------------------------------------------------------------
# A local Golem network for tests (crates/test-utils/src/golem.rs, docs/golem-local.md):
# `yagna` from PyPI (the golem-node wheel ships the binary) into a venv in the clone, and the
# central-net router `ya-sb-router` from crates.io into .tools/bin (building it needs protoc, above).
YAGNA_PKG="golem-node"
YAGNA_VERSION="0.17.6"
SB_ROUTER_VERSION="0.6.4"

venv="$tools/venv"
if [ ! -x "$venv/bin/python3" ]; then
  log "python: creating venv .tools/venv"
  python3 -m venv "$venv"
fi
if [ "$("$venv/bin/python3" -m pip show "$YAGNA_PKG" 2>/dev/null | sed -n 's/^Version: //p')" != "$YAGNA_VERSION" ] \
  || [ ! -x "$venv/bin/yagna" ]; then
  log "pip: installing $YAGNA_PKG==$YAGNA_VERSION into .tools/venv"
  "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "$YAGNA_PKG==$YAGNA_VERSION"
else
  log "pip: $YAGNA_PKG==$YAGNA_VERSION present"
fi
ln -sf "$venv/bin/yagna" "$tools/bin/yagna"
"$tools/bin/yagna" --version | head -n1 | sed 's/^/[setup] /'

if ! "$tools/bin/ya-sb-router" --help >/dev/null 2>&1 \
  || ! grep -qs "ya-sb-router $SB_ROUTER_VERSION" "$tools/.crates.toml"; then
  log "cargo: installing ya-sb-router $SB_ROUTER_VERSION into .tools/bin"
  cargo install --quiet --locked --root "$tools" ya-sb-router --version "$SB_ROUTER_VERSION" --features bin
else
  log "cargo: ya-sb-router $SB_ROUTER_VERSION present"
fi
