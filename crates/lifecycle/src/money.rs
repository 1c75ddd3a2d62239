//! GLM amounts as decimals (`BigDecimal`, the type of yagna's own API), never `f64`.
//!
//! [`Glm`] is never negative. Amounts a person types (budgets, caps) are parsed strictly with
//! [`Glm::parse`]: plain digits, at most 18 decimals (the token's), no sign, exponent or spaces.
//! Prices from the market and amounts from yagna come as decimals already ([`Glm::from_decimal`]):
//! any non-negative value, since a per-second coefficient may carry more than 18 decimals.
//! Sums that are paid are rounded *down* to 18 decimals ([`Glm::to_wei_precision`]).

use std::fmt;
use std::ops::Add;
use std::str::FromStr;

use bigdecimal::BigDecimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Decimals of the GLM token (ERC-20): the smallest amount is 10⁻¹⁸ GLM.
pub const DECIMALS: i64 = 18;

/// The most GLM a person may type for one amount: a guard against typos, far above any real budget.
const MAX_TYPED_INTEGER_DIGITS: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{0:?} is not an amount of GLM: use digits with an optional fraction, like \"2\" or \"0.25\"")]
    Malformed(String),
    #[error(
        "{0:?} has more than 18 decimals (the token's smallest unit is 0.000000000000000001 GLM)"
    )]
    TooPrecise(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
    #[error("{0} is negative: an amount of GLM is never below zero")]
    Negative(String),
}

/// A non-negative amount (or rate) of GLM.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Glm(BigDecimal);

impl Glm {
    pub fn zero() -> Self {
        Glm(BigDecimal::from(0))
    }

    /// A whole number of GLM.
    pub fn whole(n: u64) -> Self {
        Glm(BigDecimal::from(n))
    }

    /// An amount a person typed: `^[0-9]{1,12}(\.[0-9]{1,18})?$`.
    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        let malformed = || MoneyError::Malformed(text.to_owned());
        let (int, frac) = match text.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (text, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || frac.is_some_and(|f| !digits(f)) {
            return Err(malformed());
        }
        if int.trim_start_matches('0').len() > MAX_TYPED_INTEGER_DIGITS {
            return Err(MoneyError::TooLarge(text.to_owned()));
        }
        if frac.is_some_and(|f| f.len() as i64 > DECIMALS) {
            return Err(MoneyError::TooPrecise(text.to_owned()));
        }
        BigDecimal::from_str(text)
            .map(|d| Glm(d.normalized()))
            .map_err(|_| malformed())
    }

    /// An amount or price from yagna or the market; refused when negative.
    pub fn from_decimal(value: &BigDecimal) -> Result<Self, MoneyError> {
        if value < &BigDecimal::from(0) {
            return Err(MoneyError::Negative(value.to_string()));
        }
        Ok(Glm(value.normalized()))
    }

    /// A market property's number (`serde_json` prints it as the shortest text that reads back as
    /// the same `f64`, e.g. `2.777777777777778e-6`): that text, read as a decimal.
    pub fn from_json_number(n: &serde_json::Number) -> Result<Self, MoneyError> {
        let text = n.to_string();
        let value = BigDecimal::from_str(&text).map_err(|_| MoneyError::Malformed(text.clone()))?;
        Self::from_decimal(&value)
    }

    pub fn as_decimal(&self) -> &BigDecimal {
        &self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0 == BigDecimal::from(0)
    }

    /// `self - other`, or zero when `other` is larger.
    pub fn saturating_sub(&self, other: &Glm) -> Glm {
        if other >= self {
            Glm::zero()
        } else {
            Glm((&self.0 - &other.0).normalized())
        }
    }

    /// `self × n` (a count of things, e.g. hours or requests).
    pub fn times(&self, n: u64) -> Glm {
        Glm((&self.0 * BigDecimal::from(n)).normalized())
    }

    /// `self × numerator / denominator`, rounded down to 18 decimals. A rate times a share of its
    /// unit: a price per hour × milliseconds / 3 600 000.
    pub fn times_ratio(&self, numerator: u64, denominator: u64) -> Glm {
        if denominator == 0 {
            return Glm::zero();
        }
        let value = &self.0 * BigDecimal::from(numerator) / BigDecimal::from(denominator);
        Glm(value).to_wei_precision()
    }

    /// Rounded down to the token's 18 decimals: what can actually be paid.
    pub fn to_wei_precision(&self) -> Glm {
        Glm(self.0.with_scale(DECIMALS).normalized())
    }

    /// Rounded half up to 12 decimals, for messages: a price per hour made from an `f64` per-second
    /// coefficient (`0.2 / 3600 × 3600 = 0.2000000000000000016`) reads `0.2`. Never for paying.
    pub fn approx(&self) -> Glm {
        let half = BigDecimal::new(5.into(), 13);
        Glm((&self.0 + half).with_scale(12).normalized())
    }

    /// For yagna's API (allocations, acceptances).
    pub fn to_decimal(&self) -> BigDecimal {
        self.0.clone()
    }

    pub fn min(self, other: Glm) -> Glm {
        std::cmp::min(self, other)
    }
}

impl Default for Glm {
    fn default() -> Self {
        Glm::zero()
    }
}

impl Add for &Glm {
    type Output = Glm;
    fn add(self, other: &Glm) -> Glm {
        Glm((&self.0 + &other.0).normalized())
    }
}

impl Add for Glm {
    type Output = Glm;
    fn add(self, other: Glm) -> Glm {
        &self + &other
    }
}

impl std::iter::Sum for Glm {
    fn sum<I: Iterator<Item = Glm>>(iter: I) -> Glm {
        iter.fold(Glm::zero(), |a, b| a + b)
    }
}

/// Plain decimal notation without trailing zeros: `2`, `0.25`, `0.000001`.
impl fmt::Display for Glm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            &text
        };
        f.write_str(text)
    }
}

impl fmt::Debug for Glm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} GLM")
    }
}

impl FromStr for Glm {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, MoneyError> {
        Glm::parse(s)
    }
}

/// As a JSON string (`"0.25"`): exact, whatever the reader's number type.
impl Serialize for Glm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Only from a JSON string, strictly ([`Glm::parse`]): a JSON number would have passed through
/// `f64` already.
impl<'de> Deserialize<'de> for Glm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Glm;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount of GLM as a string, like \"2.5\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Glm, E> {
                Glm::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// In the OpenAPI document: a decimal string, never a number.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Glm {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(r"^[0-9]{1,12}(\.[0-9]{1,18})?$"))
            .description(Some("An amount of GLM as a decimal string, e.g. \"0.25\""))
            .examples(["0.25"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Glm {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn typed_amounts_parse_strictly() {
        for (text, shown) in [
            ("2", "2"),
            ("0.25", "0.25"),
            ("1.990", "1.99"),
            ("007", "7"),
            ("0.000000000000000001", "0.000000000000000001"),
            ("999999999999", "999999999999"),
        ] {
            assert_eq!(Glm::parse(text).unwrap().to_string(), shown, "{text}");
        }
        for bad in [
            "", ".5", "5.", "-1", "+1", "1e3", "1E-3", " 1", "1 ", "0x10", "1,5", "NaN", "inf",
            "1.2.3", "١",
        ] {
            assert!(
                matches!(Glm::parse(bad), Err(MoneyError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Glm::parse("0.0000000000000000001"),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            Glm::parse("1000000000000"),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn serde_is_a_string_both_ways_and_refuses_numbers() {
        let amount: Glm = serde_json::from_str("\"1.5\"").unwrap();
        assert_eq!(serde_json::to_string(&amount).unwrap(), "\"1.5\"");
        assert!(serde_json::from_str::<Glm>("1.5").is_err());
        assert!(serde_json::from_str::<Glm>("\"-1\"").is_err());
    }

    #[test]
    fn market_numbers_and_yagna_decimals() {
        let per_sec: serde_json::Number = serde_json::from_str("2.777777777777778e-6").unwrap();
        let g = Glm::from_json_number(&per_sec).unwrap();
        assert_eq!(g.to_string(), "0.000002777777777777778");
        assert_eq!(g.times(3600).to_string(), "0.0100000000000000008");
        let negative: serde_json::Number = serde_json::from_str("-0.1").unwrap();
        assert!(Glm::from_json_number(&negative).is_err());
        let d = BigDecimal::from_str("0.500000000000000000").unwrap();
        assert_eq!(Glm::from_decimal(&d).unwrap().to_string(), "0.5");
    }

    #[test]
    fn arithmetic_is_exact_and_rounds_down_only_when_paid() {
        let a = Glm::parse("0.1").unwrap();
        let b = Glm::parse("0.2").unwrap();
        assert_eq!((&a + &b).to_string(), "0.3");
        assert_eq!(a.saturating_sub(&b), Glm::zero());
        assert_eq!(b.saturating_sub(&a).to_string(), "0.1");
        // 1 GLM/h for 1 ms: 1/3 600 000 GLM, rounded down at the 18th decimal.
        assert_eq!(
            Glm::whole(1).times_ratio(1, 3_600_000).to_string(),
            "0.000000277777777777"
        );
        assert_eq!(
            Glm::whole(36).times_ratio(1_000, 3_600_000).to_string(),
            "0.01"
        );
        assert!(Glm::parse("0.3").unwrap() > Glm::parse("0.29999").unwrap());
        let f64_made =
            Glm::from_decimal(&BigDecimal::from_str("0.2000000000000000016").unwrap()).unwrap();
        assert_eq!(f64_made.approx().to_string(), "0.2");
        assert_eq!(
            Glm::parse("0.0099999999999999")
                .unwrap()
                .approx()
                .to_string(),
            "0.01"
        );
        assert_eq!(
            [a.clone(), b.clone(), a]
                .into_iter()
                .sum::<Glm>()
                .to_string(),
            "0.4"
        );
    }
}
