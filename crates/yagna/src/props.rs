//! Reading Golem market properties, and GLM amounts. yagna hands properties out flat
//! (`{"a.b.c": v}`) but accepts nested objects too, so both forms are read.

use serde_json::Value;

use crate::BigDecimal;

/// `key` of `properties`, flat or nested.
pub fn prop<'a>(properties: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(v) = properties.get(key) {
        return Some(v);
    }
    key.split('.')
        .try_fold(properties, |node, part| node.get(part))
}

pub fn prop_str<'a>(properties: &'a Value, key: &str) -> Option<&'a str> {
    prop(properties, key).and_then(Value::as_str)
}

/// A list of strings (empty when absent).
pub fn prop_list(properties: &Value, key: &str) -> Vec<String> {
    prop(properties, key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The linear price's coefficients (`[per duration second, per cpu second, constant]`).
pub fn linear_coeffs(properties: &Value) -> Option<Vec<f64>> {
    prop(properties, "golem.com.pricing.model.linear.coeffs")?
        .as_array()?
        .iter()
        .map(Value::as_f64)
        .collect()
}

/// A linear price as an offer states it: `golem.com.usage.vector` (counter names) and
/// `golem.com.pricing.model.linear.coeffs` (one coefficient per counter, then a constant: the
/// start fee). Cost = Σ coeffᵢ · usageᵢ + constant.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearPrice {
    pub usage_vector: Vec<String>,
    pub coeffs: Vec<f64>,
}

impl LinearPrice {
    /// None if either property is missing or their lengths do not fit.
    pub fn from_properties(properties: &Value) -> Option<Self> {
        let usage_vector = prop_list(properties, "golem.com.usage.vector");
        let coeffs = linear_coeffs(properties)?;
        (coeffs.len() == usage_vector.len() + 1).then_some(Self {
            usage_vector,
            coeffs,
        })
    }

    /// The coefficient of a counter (None if the offer does not price it).
    pub fn coeff(&self, counter: &str) -> Option<f64> {
        let i = self.usage_vector.iter().position(|n| n == counter)?;
        self.coeffs.get(i).copied()
    }

    /// The constant (start fee).
    pub fn constant(&self) -> f64 {
        self.coeffs.last().copied().unwrap_or(0.0)
    }
}

/// A decimal with the shortest digits that give `x` back as f64 (`0.001`, not
/// `0.001000000000000000020816681711721685`): a price read from JSON is what its author wrote.
pub fn decimal(x: f64) -> BigDecimal {
    if !x.is_finite() {
        return BigDecimal::default();
    }
    format!("{x}").parse().unwrap_or_default()
}

/// A GLM amount for yagna, with the token's 18 decimals at most. (The provider agent's billing;
/// the requestor decides in decimals, `erigolem_lifecycle::Glm`.)
pub fn glm(amount: f64) -> BigDecimal {
    format!("{amount:.18}").parse().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_flat_and_nested_properties() {
        let flat = json!({"erigolem.network": "dev", "golem.com.pricing.model.linear.coeffs": [0.01, 0.0, 0.5]});
        let nested = json!({"erigolem": {"network": "dev", "networks": ["dev", "sepolia"]}});
        assert_eq!(prop_str(&flat, "erigolem.network"), Some("dev"));
        assert_eq!(prop_str(&nested, "erigolem.network"), Some("dev"));
        assert_eq!(prop_str(&nested, "erigolem.mode"), None);
        assert_eq!(prop_list(&nested, "erigolem.networks"), ["dev", "sepolia"]);
        assert!(prop_list(&flat, "erigolem.networks").is_empty());
        assert_eq!(linear_coeffs(&flat), Some(vec![0.01, 0.0, 0.5]));
    }

    #[test]
    fn linear_prices_by_counter_name() {
        let offer = json!({
            "golem.com.usage.vector": ["golem.usage.duration_sec", "golem.usage.cpu_sec", "golem.usage.erigolem.requests"],
            "golem.com.pricing.model.linear.coeffs": [0.01, 0.0, 0.001, 0.5],
        });
        let p = LinearPrice::from_properties(&offer).unwrap();
        assert_eq!(p.coeff("golem.usage.erigolem.requests"), Some(0.001));
        assert_eq!(p.coeff("golem.usage.storage_gib"), None);
        assert_eq!(p.constant(), 0.5);
        let short = json!({
            "golem.com.usage.vector": ["golem.usage.duration_sec"],
            "golem.com.pricing.model.linear.coeffs": [0.01, 0.0, 0.5],
        });
        assert_eq!(
            LinearPrice::from_properties(&short),
            None,
            "lengths must fit"
        );
        assert_eq!(decimal(0.001).to_string(), "0.001");
        assert_eq!((decimal(0.001) * BigDecimal::from(37)).to_string(), "0.037");
    }

    #[test]
    fn glm_amounts_round_trip() {
        assert_eq!(glm(0.5).to_string(), "0.500000000000000000");
        assert_eq!(glm(1.0).to_string(), "1.000000000000000000");
    }
}
