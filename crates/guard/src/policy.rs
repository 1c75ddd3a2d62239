//! Which JSON-RPC methods an endpoint serves: the engine's own deny list (what would let a tenant
//! reach beyond its node, or, on a shared node, change what other tenants see), the provider's
//! deny lists (e.g. heavy namespaces on shared nodes), then the requestor's allowlist.
//!
//! anvil's methods are those of `EthRequest` in foundry's `crates/anvil/core/src/eth/mod.rs`
//! (anvil 1.7.1, the version `scripts/setup.sh` installs): besides the standard namespaces it
//! serves `anvil_*` with the aliases `hardhat_*`, `evm_*` and `tenderly_*`. Of those,
//! `anvil_setRpcUrl` makes the node fetch state from any URL, and `anvil_reset`/`hardhat_reset`
//! with a `forking` argument does the same (`EthApi::anvil_reset` → `Backend::reset_fork`, which
//! connects to `forking.jsonRpcUrl`); without an argument it only resets the dev chain.

use erigolem_primitives::{EngineKind, MethodPattern, Mode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The provider's part of the policy (runtime config `guard`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// Refused on every endpoint of this provider.
    pub deny: Vec<MethodPattern>,
    /// Refused on endpoints of shared nodes (every tenant pays for what one tenant's heavy calls
    /// cost the node).
    pub shared_deny: Vec<MethodPattern>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            deny: Vec::new(),
            shared_deny: ["debug_*", "trace_*"]
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
        }
    }
}

/// Why a call is refused; the message is what the client reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// When a denied method is allowed after all, judged by its params.
type Exception = fn(Option<&RawValue>) -> bool;

#[derive(Debug, Clone)]
struct Rule {
    pattern: MethodPattern,
    why: String,
    unless: Option<Exception>,
}

/// The method policy of one endpoint.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    allow: Option<Vec<MethodPattern>>,
}

fn pattern(p: &str) -> MethodPattern {
    p.parse()
        .unwrap_or_else(|_| unreachable!("built-in pattern {p:?} is valid"))
}

/// `anvil_reset` without a fork config (absent, `[]`, `[null]`) only resets the dev chain.
fn reset_without_fork(params: Option<&RawValue>) -> bool {
    match params.map(|p| p.get().trim()) {
        None | Some("null") => true,
        Some(p) => {
            let inner: Option<Vec<serde_json::Value>> = serde_json::from_str(p).ok();
            matches!(inner.as_deref(), Some([] | [serde_json::Value::Null]))
        }
    }
}

/// The engine's built-in deny list for a mode.
fn engine_rules(engine: EngineKind, mode: Mode) -> Vec<Rule> {
    let rule = |p: &str, why: &str| Rule {
        pattern: pattern(p),
        why: why.to_owned(),
        unless: None,
    };
    let mut rules = vec![
        rule(
            "admin_*",
            "it administers the node (peers, data, RPC servers)",
        ),
        rule("personal_*", "it uses the node's own accounts and keys"),
        rule("engine_*", "it is the consensus client's API"),
        rule("miner_*", "it changes the node's block production"),
    ];
    if engine == EngineKind::Anvil {
        rules.push(rule(
            "anvil_setRpcUrl",
            "it makes the node fetch state from a URL",
        ));
        for reset in ["anvil_reset", "hardhat_reset"] {
            rules.push(Rule {
                pattern: pattern(reset),
                why: "with a fork config it makes the node fetch state from a URL (without one it is allowed)".into(),
                unless: Some(reset_without_fork),
            });
        }
        if mode == Mode::Shared {
            for ns in ["anvil_*", "hardhat_*", "evm_*", "tenderly_*"] {
                rules.push(rule(
                    ns,
                    "it changes the dev chain every tenant of this shared node uses",
                ));
            }
        }
    }
    rules
}

impl Policy {
    pub fn new(
        engine: EngineKind,
        mode: Mode,
        settings: &PolicySettings,
        allow: Option<Vec<MethodPattern>>,
    ) -> Self {
        let mut rules = engine_rules(engine, mode);
        let provider = |p: &MethodPattern, why: &str| Rule {
            pattern: p.clone(),
            why: why.to_owned(),
            unless: None,
        };
        rules.extend(
            settings
                .deny
                .iter()
                .map(|p| provider(p, "the provider does not serve it")),
        );
        if mode == Mode::Shared {
            rules.extend(
                settings
                    .shared_deny
                    .iter()
                    .map(|p| provider(p, "the provider does not serve it on shared nodes")),
            );
        }
        Self { rules, allow }
    }

    /// Whether `method` (a valid method name) with `params` may reach the node.
    pub fn check(&self, method: &str, params: Option<&RawValue>) -> Result<(), Denied> {
        for rule in &self.rules {
            if rule.pattern.matches(method) && !rule.unless.is_some_and(|ok| ok(params)) {
                return Err(Denied(format!(
                    "method {method} is not allowed on this endpoint: {}",
                    rule.why
                )));
            }
        }
        match &self.allow {
            Some(allow) if !allow.iter().any(|p| p.matches(method)) => Err(Denied(format!(
                "method {method} is not in this endpoint's allowlist (methods: {})",
                allow
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn verdict(policy: &Policy, method: &str, params: Option<&str>) -> bool {
        let params = params.map(raw);
        policy.check(method, params.as_deref()).is_ok()
    }

    #[test]
    fn engine_and_mode_tables() {
        let settings = PolicySettings::default();
        let anvil_dedicated = Policy::new(EngineKind::Anvil, Mode::Dedicated, &settings, None);
        let anvil_shared = Policy::new(EngineKind::Anvil, Mode::Shared, &settings, None);
        let erigon_dedicated = Policy::new(EngineKind::Erigon, Mode::Dedicated, &settings, None);
        let erigon_shared = Policy::new(EngineKind::Erigon, Mode::Shared, &settings, None);
        let fork = r#"[{"forking":{"jsonRpcUrl":"http://127.0.0.1:9/","blockNumber":1}}]"#;
        // (method, params, anvil dedicated, anvil shared, erigon dedicated, erigon shared)
        let table: &[(&str, Option<&str>, [bool; 4])] = &[
            ("eth_blockNumber", None, [true, true, true, true]),
            ("eth_call", Some("[{}]"), [true, true, true, true]),
            (
                "anvil_setRpcUrl",
                Some(r#"["http://x"]"#),
                [false, false, true, true],
            ),
            ("anvil_reset", Some(fork), [false, false, true, true]),
            ("hardhat_reset", Some(fork), [false, false, true, true]),
            ("anvil_reset", None, [true, false, true, true]),
            ("anvil_reset", Some("[]"), [true, false, true, true]),
            ("anvil_reset", Some("[null]"), [true, false, true, true]),
            ("anvil_reset", Some("[{}]"), [false, false, true, true]),
            ("ANVIL_SETRPCURL", None, [false, false, true, true]),
            ("anvil_setBalance", Some("[]"), [true, false, true, true]),
            ("evm_mine", None, [true, false, true, true]),
            ("hardhat_setBalance", None, [true, false, true, true]),
            ("tenderly_setBalance", None, [true, false, true, true]),
            ("admin_addPeer", None, [false, false, false, false]),
            ("Admin_nodeInfo", None, [false, false, false, false]),
            ("personal_sign", None, [false, false, false, false]),
            (
                "engine_forkchoiceUpdatedV3",
                None,
                [false, false, false, false],
            ),
            ("debug_traceTransaction", None, [true, false, true, false]),
            ("trace_block", None, [true, false, true, false]),
            ("txpool_content", None, [true, true, true, true]),
        ];
        for (method, params, want) in table {
            let got = [
                verdict(&anvil_dedicated, method, *params),
                verdict(&anvil_shared, method, *params),
                verdict(&erigon_dedicated, method, *params),
                verdict(&erigon_shared, method, *params),
            ];
            assert_eq!(&got, want, "{method} {params:?}");
        }
    }

    #[test]
    fn provider_settings_and_requestor_allowlist() {
        let settings = PolicySettings {
            deny: vec!["ots_*".parse().unwrap()],
            shared_deny: vec![],
        };
        let allow = Some(vec![
            "eth_*".parse().unwrap(),
            "debug_traceCall".parse().unwrap(),
            "admin_nodeInfo".parse().unwrap(),
        ]);
        let p = Policy::new(EngineKind::Erigon, Mode::Shared, &settings, allow);
        assert!(p.check("eth_getLogs", None).is_ok());
        assert!(
            p.check("debug_traceCall", None).is_ok(),
            "shared_deny emptied"
        );
        let e = p.check("net_version", None).unwrap_err();
        assert!(
            e.0.contains("allowlist (methods: eth_*, debug_traceCall"),
            "{e}"
        );
        let e = p.check("ots_getApiLevel", None).unwrap_err();
        assert!(e.0.contains("the provider does not serve it"), "{e}");
        // The requestor's allowlist never re-opens what the engine denies.
        let e = p.check("admin_nodeInfo", None).unwrap_err();
        assert!(e.0.contains("administers the node"), "{e}");
    }
}
