//! Golem market properties: building our offer, and what in a demand we cannot serve.

use erigolem_yagna::model::market::NewOffer;
use serde_json::{json, Map, Value};

use crate::{Pricing, ServedOffer};

/// The runtime name our offers carry and demands ask for.
pub const RUNTIME_NAME: &str = "erigon";
/// Usage counters, in the order of the linear price's coefficients (the last coefficient is the start fee).
pub const USAGE_VECTOR: [&str; 2] = [DURATION_SEC, "golem.usage.cpu_sec"];
pub const DURATION_SEC: &str = "golem.usage.duration_sec";
/// The runtime's counter of JSON-RPC requests its endpoint answered; in the offer's usage vector
/// (after [`USAGE_VECTOR`]) when the provider prices requests.
pub const REQUESTS: &str = "golem.usage.erigolem.requests";

/// The offer's usage vector for `pricing`.
pub fn usage_vector(pricing: &Pricing) -> Vec<&'static str> {
    let mut v = USAGE_VECTOR.to_vec();
    if pricing.per_request > 0.0 {
        v.push(REQUESTS);
    }
    v
}
/// Our offer's nonce: proposals from offers we no longer hold (after a re-subscription or a restart)
/// can still arrive for a while and are ignored.
pub const NONCE: &str = "erigolem.offer.nonce";
/// The network a demand asks for (one of the offer's `erigolem.networks`).
pub const DEMAND_NETWORK: &str = "erigolem.network";
pub const DEMAND_MODE: &str = "erigolem.mode";

pub use erigolem_yagna::props::{prop, prop_str};

/// GLM per second of duration, per CPU second, per request (when priced), and the start fee.
pub fn linear_coeffs(pricing: &Pricing) -> Vec<f64> {
    let mut c = vec![pricing.per_hour / 3600.0, 0.0];
    if pricing.per_request > 0.0 {
        c.push(pricing.per_request);
    }
    c.push(pricing.start_fee);
    c
}

/// What we offer: runtime `erigon` with the networks and modes the runtime config serves, the price,
/// the payment platform with our address, the subnet and a nonce.
pub fn offer(
    served: &ServedOffer,
    pricing: &Pricing,
    node_id: &str,
    platform: &str,
    subnet: &str,
    nonce: &str,
    accept_timeout_secs: u64,
) -> NewOffer {
    let mut p = Map::new();
    let mut put = |k: &str, v: Value| {
        p.insert(k.to_owned(), v);
    };
    put(
        "golem.node.id.name",
        json!(format!(
            "erigolem-provider-{}",
            &node_id[..node_id.len().min(10)]
        )),
    );
    put("golem.node.debug.subnet", json!(subnet));
    put("golem.runtime.name", json!(RUNTIME_NAME));
    put("golem.runtime.version", json!(served.runtime_version));
    put("golem.inf.cpu.threads", json!(1));
    put("golem.com.scheme", json!("payu"));
    put(
        "golem.com.scheme.payu.debit-note.interval-sec?",
        json!(served.debit_note_interval_secs),
    );
    put("golem.com.scheme.payu.payment-timeout-sec?", json!(120));
    put("golem.com.pricing.model", json!("linear"));
    put(
        "golem.com.pricing.model.linear.coeffs",
        json!(linear_coeffs(pricing)),
    );
    put("golem.com.usage.vector", json!(usage_vector(pricing)));
    put(
        &format!("golem.com.payment.platform.{platform}.address"),
        json!(node_id),
    );
    put("golem.com.payment.protocol.version", json!(3));
    put(
        "golem.com.payment.debit-notes.accept-timeout?",
        json!(accept_timeout_secs),
    );
    put("erigolem.networks", json!(served.networks));
    put("erigolem.modes", json!(served.modes));
    put(NONCE, json!(nonce));
    NewOffer::new(
        Value::Object(p),
        format!("(golem.node.debug.subnet={subnet})"),
    )
}

/// Why a demand is not for us, or None when we can serve it.
pub fn refusal(demand: &Value, served: &ServedOffer, platform: &str) -> Option<String> {
    let Some(network) = prop_str(demand, DEMAND_NETWORK) else {
        return Some(format!("the demand names no network ({DEMAND_NETWORK})"));
    };
    if !served.networks.iter().any(|n| n == network) {
        return Some(format!(
            "network {network} is not served here (served: {})",
            served.networks.join(", ")
        ));
    }
    if let Some(mode) = prop_str(demand, DEMAND_MODE) {
        if !served.modes.iter().any(|m| m == mode) {
            return Some(format!(
                "mode {mode} is not served here (served: {})",
                served.modes.join(", ")
            ));
        }
    }
    match prop_str(demand, "golem.com.payment.chosen-platform") {
        Some(p) if p == platform => None,
        Some(p) => Some(format!(
            "payment platform {p} is not accepted (accepted: {platform})"
        )),
        None => Some(
            "the demand chooses no payment platform (golem.com.payment.chosen-platform)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn served() -> ServedOffer {
        ServedOffer {
            networks: vec!["dev".into(), "sepolia".into()],
            modes: vec!["dedicated".into()],
            runtime_version: "0.1.0".into(),
            debit_note_interval_secs: 60,
        }
    }

    #[test]
    fn refuses_unserved_networks_modes_and_platforms_with_a_reason() {
        let ok = json!({"erigolem.network": "dev", "golem.com.payment.chosen-platform": "erc20-hoodi-tglm"});
        assert_eq!(refusal(&ok, &served(), "erc20-hoodi-tglm"), None);
        let mainnet = json!({"erigolem.network": "mainnet", "golem.com.payment.chosen-platform": "erc20-hoodi-tglm"});
        assert!(refusal(&mainnet, &served(), "erc20-hoodi-tglm")
            .unwrap()
            .contains("mainnet is not served"));
        let shared = json!({"erigolem.network": "dev", "erigolem.mode": "shared", "golem.com.payment.chosen-platform": "erc20-hoodi-tglm"});
        assert!(refusal(&shared, &served(), "erc20-hoodi-tglm")
            .unwrap()
            .contains("mode shared"));
        let other = json!({"erigolem.network": "dev", "golem.com.payment.chosen-platform": "erc20-polygon-glm"});
        assert!(refusal(&other, &served(), "erc20-hoodi-tglm")
            .unwrap()
            .contains("platform"));
        assert!(refusal(&json!({}), &served(), "erc20-hoodi-tglm")
            .unwrap()
            .contains("no network"));
    }

    #[test]
    fn the_offer_carries_runtime_price_platform_and_nonce() {
        let pricing = Pricing {
            per_hour: 36.0,
            start_fee: 0.5,
            per_request: 0.0,
        };
        let o = offer(
            &served(),
            &pricing,
            "0xabc",
            "erc20-hoodi-tglm",
            "erigolem-test",
            "n1",
            240,
        );
        let p = &o.properties;
        assert_eq!(prop_str(p, "golem.runtime.name"), Some("erigon"));
        assert_eq!(
            prop(p, "golem.com.pricing.model.linear.coeffs"),
            Some(&json!([0.01, 0.0, 0.5]))
        );
        assert_eq!(
            prop_str(p, "golem.com.payment.platform.erc20-hoodi-tglm.address"),
            Some("0xabc")
        );
        assert_eq!(prop_str(p, NONCE), Some("n1"));
        assert_eq!(
            prop(p, "erigolem.networks"),
            Some(&json!(["dev", "sepolia"]))
        );
        assert_eq!(o.constraints, "(golem.node.debug.subnet=erigolem-test)");
        assert_eq!(
            prop(p, "golem.com.usage.vector"),
            Some(&json!(["golem.usage.duration_sec", "golem.usage.cpu_sec"])),
            "no request counter unless requests are priced"
        );
        let per_request = Pricing {
            per_request: 0.0001,
            ..pricing
        };
        let o = offer(
            &served(),
            &per_request,
            "0xabc",
            "erc20-hoodi-tglm",
            "s",
            "n",
            240,
        );
        let price = erigolem_yagna::props::LinearPrice::from_properties(&o.properties).unwrap();
        assert_eq!(price.coeff(REQUESTS), Some(0.0001));
        assert_eq!(price.coeff(DURATION_SEC), Some(0.01));
        assert_eq!(price.constant(), 0.5);
    }

    #[test]
    fn amounts_are_exact_decimals() {
        let p = Pricing {
            per_hour: 0.0,
            start_fee: 0.5,
            per_request: 0.001,
        };
        let amount = p.amount(std::time::Duration::from_secs(7), 37);
        assert_eq!(amount, "0.537".parse().unwrap());
        let p = Pricing {
            per_hour: 36.0,
            start_fee: 0.0,
            per_request: 0.0,
        };
        assert_eq!(
            p.amount(std::time::Duration::from_secs(10), 1_000),
            "0.1".parse().unwrap()
        );
    }
}
