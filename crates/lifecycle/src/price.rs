//! What an offer costs and whether it may be taken.
//!
//! Golem's linear price ([golem-architecture `com/pricing/model.md`]) is
//! `price = [counter₁ … counterₙ, 1] · [coeff₁ … coeffₙ, fixed]`, its counters named by the offer's
//! `golem.com.usage.vector`. We read three counters: duration (seconds), CPU seconds (bounded by
//! the offer's `golem.inf.cpu.threads` per second of duration) and requests (issue 12's
//! `golem.usage.erigolem.requests`); a coefficient on any other counter cannot be bounded, so such
//! an offer is refused. Offers are ranked by the cost of serving the node for its expected time,
//! as yapapi's `LeastExpensiveLinearPayuMS` scores them (start fee + price × expected time), with
//! separate caps for the start fee and the hourly price.
//!
//! yagna's market cannot enforce these caps in a demand's constraints: its resolver answers
//! `false` to `<`/`<=`/`>`/`>=` on a list property (`core/market/resolver/src/resolver/properties.rs`,
//! "operator meaningless for List"), and `[…]` after a property name is an aspect, not an index;
//! so no constraint can bound one coefficient of `golem.com.pricing.model.linear.coeffs`. The
//! demand asks for `golem.com.pricing.model=linear` (what yapapi's strategy asks too) and every
//! proposal, initial or counter, is judged here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::money::Glm;

pub const DURATION_COUNTER: &str = "golem.usage.duration_sec";
pub const CPU_COUNTER: &str = "golem.usage.cpu_sec";
pub const REQUESTS_COUNTER: &str = "golem.usage.erigolem.requests";

/// More CPU threads than this in an offer is not believed (it would make the CPU price unbounded).
const MAX_THREADS: u64 = 4096;

/// An agreed (or offered) linear price, per hour and per request, as the requestor can bound it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearPrice {
    /// GLM per hour of service: the duration coefficient × 3600, plus the CPU coefficient × 3600 ×
    /// threads (the most the CPU counter can add in an hour).
    pub per_hour: Glm,
    /// The fixed coefficient: charged once per agreement.
    pub start_fee: Glm,
    /// GLM per request, when the offer prices `golem.usage.erigolem.requests`.
    pub per_request: Option<Glm>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("no linear price (golem.com.pricing.model is {0:?})")]
    NotLinear(Option<String>),
    #[error("its price is malformed: {0}")]
    Malformed(String),
    #[error("it prices {0}, which this server cannot bound")]
    UnboundedCounter(String),
}

/// `key` of market properties, flat (`{"a.b": 1}`) or nested (`{"a": {"b": 1}}`).
pub fn property<'a>(properties: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(v) = properties.get(key) {
        return Some(v);
    }
    key.split('.')
        .try_fold(properties, |node, part| node.get(part))
}

impl LinearPrice {
    /// The price in an offer's (or agreement's) properties.
    pub fn from_properties(properties: &Value) -> Result<Self, PriceError> {
        let model = property(properties, "golem.com.pricing.model").and_then(Value::as_str);
        if model != Some("linear") {
            return Err(PriceError::NotLinear(model.map(str::to_owned)));
        }
        let malformed = |why: &str| PriceError::Malformed(why.to_owned());
        let coeffs = property(properties, "golem.com.pricing.model.linear.coeffs")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("no coefficients"))?;
        let vector = property(properties, "golem.com.usage.vector")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("no usage vector"))?;
        if coeffs.len() != vector.len() + 1 {
            return Err(malformed(&format!(
                "{} coefficients for {} usage counters",
                coeffs.len(),
                vector.len()
            )));
        }
        let coeff = |v: &Value| -> Result<Glm, PriceError> {
            let n = v
                .as_number()
                .ok_or_else(|| malformed(&format!("coefficient {v} is not a number")))?;
            Glm::from_json_number(n).map_err(|e| malformed(&e.to_string()))
        };
        let threads = match property(properties, "golem.inf.cpu.threads") {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|t| (1..=MAX_THREADS).contains(t))
                .ok_or_else(|| malformed(&format!("golem.inf.cpu.threads is {v}")))?,
        };
        let mut per_hour = Glm::zero();
        let mut per_request = None;
        for (counter, c) in vector.iter().zip(coeffs) {
            let c = coeff(c)?;
            let name = counter
                .as_str()
                .ok_or_else(|| malformed("a usage counter is not a string"))?;
            match name {
                DURATION_COUNTER => per_hour = &per_hour + &c.times(3600),
                CPU_COUNTER => per_hour = &per_hour + &c.times(3600).times(threads),
                REQUESTS_COUNTER => per_request = Some(c),
                _ if c.is_zero() => {}
                other => return Err(PriceError::UnboundedCounter(other.to_owned())),
            }
        }
        let start_fee = coeff(coeffs.last().unwrap_or(&Value::Null))?;
        Ok(LinearPrice {
            per_hour,
            start_fee,
            per_request,
        })
    }

    /// What serving a node for `expected` costs under this price.
    pub fn cost(&self, expected: &Expected) -> Glm {
        let time = self.per_hour.times(u64::from(expected.hours));
        let requests = self.per_request.as_ref().map_or_else(Glm::zero, |p| {
            p.times(expected.requests_per_hour)
                .times(u64::from(expected.hours))
        });
        &(&self.start_fee + &time) + &requests
    }
}

/// The most a user (or the server) lets a node's provider ask.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    pub max_price_per_hour: Option<Glm>,
    pub max_start_fee: Option<Glm>,
    pub max_price_per_request: Option<Glm>,
}

impl Caps {
    /// The tighter of two sets of caps (a user may lower the server's caps, never raise them).
    pub fn tightest(&self, other: &Caps) -> Caps {
        let min = |a: &Option<Glm>, b: &Option<Glm>| match (a, b) {
            (Some(a), Some(b)) => Some(a.clone().min(b.clone())),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        Caps {
            max_price_per_hour: min(&self.max_price_per_hour, &other.max_price_per_hour),
            max_start_fee: min(&self.max_start_fee, &other.max_start_fee),
            max_price_per_request: min(&self.max_price_per_request, &other.max_price_per_request),
        }
    }
}

/// How long a node is expected to run, and how busy it is: what offers are compared on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    pub hours: u32,
    pub requests_per_hour: u64,
}

/// Which offers a node may take: the caps, what is left of its budget, the providers the operator
/// allows or denies (by node id: names are chosen by providers and prove nothing), and the
/// providers this node's plan already had (never taken again).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferPolicy {
    pub caps: Caps,
    /// GLM the node's plan may still spend.
    pub budget_left: Glm,
    /// Lowercase node ids; empty = any.
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// Providers this plan already used (failed or replaced): lowercase node ids.
    pub excluded: Vec<String>,
}

impl OfferPolicy {
    /// The offer's price if `provider` may be taken at it, else why not.
    pub fn judge(&self, provider: &str, properties: &Value) -> Result<LinearPrice, String> {
        let provider = provider.to_ascii_lowercase();
        if self.deny.contains(&provider) {
            return Err("provider denied by configuration".into());
        }
        if !self.allow.is_empty() && !self.allow.contains(&provider) {
            return Err("provider not in the allow list".into());
        }
        if self.excluded.contains(&provider) {
            return Err("this provider already had this node (failed or replaced)".into());
        }
        let price = LinearPrice::from_properties(properties).map_err(|e| e.to_string())?;
        if let Some(cap) = &self.caps.max_start_fee {
            if &price.start_fee > cap {
                return Err(format!(
                    "asks a start fee of {} GLM, above the cap of {cap}",
                    price.start_fee.approx()
                ));
            }
        }
        if let Some(cap) = &self.caps.max_price_per_hour {
            if &price.per_hour > cap {
                return Err(format!(
                    "asks {} GLM/h, above the cap of {cap}",
                    price.per_hour.approx()
                ));
            }
        }
        if let (Some(cap), Some(p)) = (&self.caps.max_price_per_request, &price.per_request) {
            if p > cap {
                return Err(format!(
                    "asks {} GLM per request, above the cap of {cap}",
                    p.approx()
                ));
            }
        }
        if price.start_fee >= self.budget_left {
            return Err(format!(
                "its start fee of {} GLM would take all that is left of the budget ({} GLM)",
                price.start_fee.approx(),
                self.budget_left
            ));
        }
        Ok(price)
    }
}

/// Orders offers cheapest first by [`LinearPrice::cost`] for `expected`; ties go to the lower
/// start fee, then to the provider id (so the order never depends on arrival).
pub fn rank<T>(offers: &mut [(T, String, LinearPrice)], expected: &Expected) {
    offers.sort_by(|(_, a_id, a), (_, b_id, b)| {
        a.cost(expected)
            .cmp(&b.cost(expected))
            .then_with(|| a.start_fee.cmp(&b.start_fee))
            .then_with(|| a_id.cmp(b_id))
    });
}

/// A valid provider node id: `0x` and 40 hex digits; lowercase.
pub fn node_id(text: &str) -> Option<String> {
    let hex = text.strip_prefix("0x")?;
    (hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn g(s: &str) -> Glm {
        Glm::parse(s).unwrap()
    }

    /// Our agent's offer: `[GLM/s, GLM per CPU s, start fee]` over `[duration, cpu]`.
    fn offer(per_hour: f64, start_fee: f64) -> Value {
        json!({
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": [per_hour / 3600.0, 0.0, start_fee],
            "golem.com.usage.vector": [DURATION_COUNTER, CPU_COUNTER],
        })
    }

    #[test]
    fn reads_linear_prices_flat_nested_and_per_request() {
        let p = LinearPrice::from_properties(&offer(36.0, 0.5)).unwrap();
        assert_eq!(
            p,
            LinearPrice {
                per_hour: g("36"),
                start_fee: g("0.5"),
                per_request: None
            }
        );
        // Nested properties are read too.
        let nested = json!({"golem": {"com": {"usage": {"vector": [DURATION_COUNTER]}}},
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": [0.001, 0.0]});
        assert_eq!(
            LinearPrice::from_properties(&nested).unwrap().per_hour,
            g("3.6")
        );
        let per_request = json!({
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": [0.0001, 0.0, 0.00002, 0.01],
            "golem.com.usage.vector": [DURATION_COUNTER, CPU_COUNTER, REQUESTS_COUNTER],
        });
        let p = LinearPrice::from_properties(&per_request).unwrap();
        assert_eq!(p.per_hour, g("0.36"));
        assert_eq!(p.per_request, Some(g("0.00002")));
        assert_eq!(p.start_fee, g("0.01"));
        // CPU seconds cost at most threads × duration.
        let cpu = json!({
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": [0.0, 0.001, 0.0],
            "golem.com.usage.vector": [DURATION_COUNTER, CPU_COUNTER],
            "golem.inf.cpu.threads": 4,
        });
        assert_eq!(
            LinearPrice::from_properties(&cpu).unwrap().per_hour,
            g("14.4")
        );
    }

    #[test]
    fn refuses_prices_it_cannot_bound() {
        let cases = [
            (
                json!({"golem.com.pricing.model": "fixed"}),
                "no linear price",
            ),
            (
                json!({"golem.com.pricing.model": "linear", "golem.com.usage.vector": [DURATION_COUNTER]}),
                "no coefficients",
            ),
            (
                json!({"golem.com.pricing.model": "linear", "golem.com.pricing.model.linear.coeffs": [0.1, 0.0, 1.0], "golem.com.usage.vector": [DURATION_COUNTER]}),
                "3 coefficients for 1",
            ),
            (
                json!({"golem.com.pricing.model": "linear", "golem.com.pricing.model.linear.coeffs": [-0.1, 1.0], "golem.com.usage.vector": [DURATION_COUNTER]}),
                "negative",
            ),
            (
                json!({"golem.com.pricing.model": "linear", "golem.com.pricing.model.linear.coeffs": ["0.1", 1.0], "golem.com.usage.vector": [DURATION_COUNTER]}),
                "not a number",
            ),
            (
                json!({"golem.com.pricing.model": "linear", "golem.com.pricing.model.linear.coeffs": [0.0, 0.5, 1.0], "golem.com.usage.vector": [DURATION_COUNTER, "golem.usage.gib"]}),
                "prices golem.usage.gib",
            ),
            (
                json!({"golem.com.pricing.model": "linear", "golem.com.pricing.model.linear.coeffs": [0.0, 0.5, 1.0], "golem.com.usage.vector": [DURATION_COUNTER, CPU_COUNTER], "golem.inf.cpu.threads": 1_000_000}),
                "threads",
            ),
        ];
        for (props, why) in cases {
            let err = LinearPrice::from_properties(&props)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{err} (wanted {why})");
        }
        // An unknown counter at price zero is harmless.
        let free = json!({"golem.com.pricing.model": "linear", "golem.com.pricing.model.linear.coeffs": [0.001, 0.0, 1.0], "golem.com.usage.vector": [DURATION_COUNTER, "golem.usage.gib"]});
        assert_eq!(
            LinearPrice::from_properties(&free).unwrap().per_hour,
            g("3.6")
        );
    }

    /// The measured drain: 0.2 GLM/h + 0.01 start against 0.1 GLM/h + 1.99 start.
    #[test]
    fn ranking_counts_the_start_fee_for_the_expected_time() {
        let honest = LinearPrice::from_properties(&offer(0.2, 0.01)).unwrap();
        let drain = LinearPrice::from_properties(&offer(0.1, 1.99)).unwrap();
        let one_hour = Expected {
            hours: 1,
            requests_per_hour: 0,
        };
        let mut offers = vec![
            ((), "0xb".to_owned(), drain.clone()),
            ((), "0xa".to_owned(), honest.clone()),
        ];
        rank(&mut offers, &one_hour);
        assert_eq!(offers[0].2, honest, "0.21 GLM beats 2.09 GLM for an hour");
        // Over 24 h the cheaper hourly price wins: the start fee is paid once.
        let day = Expected {
            hours: 24,
            requests_per_hour: 0,
        };
        rank(&mut offers, &day);
        assert_eq!(offers[0].2, drain, "4.39 GLM beats 4.81 GLM for a day");
        // Per-request prices count at the expected rate.
        let mut busy_price = honest.clone();
        busy_price.per_request = Some(g("0.001"));
        let busy = Expected {
            hours: 1,
            requests_per_hour: 1000,
        };
        assert_eq!(busy_price.cost(&busy).approx(), g("1.21"));
        // Equal costs: the lower start fee, then the provider id.
        let mut ties = vec![
            ((), "0xb".to_owned(), honest.clone()),
            ((), "0xa".to_owned(), honest.clone()),
        ];
        rank(&mut ties, &one_hour);
        assert_eq!(ties[0].1, "0xa");
    }

    #[test]
    fn the_policy_caps_start_fee_and_hourly_price_separately_and_trusts_only_node_ids() {
        let honest = "0x00000000000000000000000000000000000000aa";
        let policy = OfferPolicy {
            caps: Caps {
                max_price_per_hour: Some(g("1")),
                max_start_fee: Some(g("0.1")),
                max_price_per_request: Some(g("0.0001")),
            },
            budget_left: g("2"),
            allow: vec![honest.into()],
            deny: vec!["0x00000000000000000000000000000000000000dd".into()],
            excluded: vec!["0x00000000000000000000000000000000000000ee".into()],
        };
        assert!(policy.judge(honest, &offer(0.2, 0.01)).is_ok());
        assert!(policy
            .judge(
                &honest.to_uppercase().replace("0X", "0x"),
                &offer(0.2, 0.01)
            )
            .is_ok());
        let why = |p: &str, o: Value| policy.judge(p, &o).unwrap_err();
        assert!(
            why(honest, offer(0.1, 1.99)).contains("start fee of 1.99 GLM, above the cap of 0.1")
        );
        assert!(why(honest, offer(1000.0, 0.0)).contains("asks 1000 GLM/h, above the cap of 1"));
        assert!(why(
            "0x00000000000000000000000000000000000000bb",
            offer(0.2, 0.01)
        )
        .contains("not in the allow list"));
        assert!(why(
            "0x00000000000000000000000000000000000000dd",
            offer(0.2, 0.01)
        )
        .contains("denied"));
        let open = OfferPolicy {
            allow: vec![],
            ..policy.clone()
        };
        assert!(open
            .judge(
                "0x00000000000000000000000000000000000000ee",
                &offer(0.2, 0.01)
            )
            .unwrap_err()
            .contains("already had this node"));
        let per_request = json!({
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": [0.0, 0.0, 0.5, 0.0],
            "golem.com.usage.vector": [DURATION_COUNTER, CPU_COUNTER, REQUESTS_COUNTER],
        });
        assert!(why(honest, per_request).contains("0.5 GLM per request"));
        // A start fee that eats what is left of the budget is never taken, whatever the caps.
        let poor = OfferPolicy {
            caps: Caps::default(),
            budget_left: g("0.5"),
            ..policy.clone()
        };
        assert!(poor
            .judge(honest, &offer(0.1, 0.5))
            .unwrap_err()
            .contains("all that is left"));
    }

    #[test]
    fn caps_combine_to_the_tightest_and_node_ids_are_strict() {
        let server = Caps {
            max_price_per_hour: Some(g("1")),
            max_start_fee: None,
            max_price_per_request: Some(g("0.001")),
        };
        let user = Caps {
            max_price_per_hour: Some(g("2")),
            max_start_fee: Some(g("0.1")),
            max_price_per_request: None,
        };
        assert_eq!(
            user.tightest(&server),
            Caps {
                max_price_per_hour: Some(g("1")),
                max_start_fee: Some(g("0.1")),
                max_price_per_request: Some(g("0.001")),
            }
        );
        assert_eq!(
            node_id("0x00000000000000000000000000000000000000AA").as_deref(),
            Some("0x00000000000000000000000000000000000000aa")
        );
        for bad in [
            "erigolem-provider-0xabc",
            "0xabc",
            "",
            "00000000000000000000000000000000000000aa00",
        ] {
            assert_eq!(node_id(bad), None, "{bad}");
        }
    }
}
