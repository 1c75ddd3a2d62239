//! The exe-unit against real yagna 0.17.6 daemons (a local Golem network: anvil, ya-sb-router,
//! requestor and provider yagnas), a real provider machine (Nginx, anvil for `dev`) and the real
//! `ya-runtime-erigon`. The market and activity are driven by REST from the test itself
//! ([`rest`]); the test plays the provider agent: it watches the provider's activity events and
//! spawns / shuts down the exe-unit. Run offline, as scripts/test.sh does:
//! `unshare -n sh -c 'ip link set lo up; cargo nextest run -p erigolem-exe-unit'`.
#![allow(clippy::unwrap_used)]

mod activity;
mod rest;
mod spawn;
