//! What a node's endpoint serves only: the requestor's method, origin and address allowlists
//! (`POST /nodes` `methods`, `allow_origins`, `allow_ips`). Validated here with the runtime's own
//! parsers (`erigolem_primitives`), so what the server accepts is exactly what the endpoint guard
//! enforces; stored with the node in that normal form, and passed in the runtime's start
//! arguments on every start (and by replacements). Pure.

use std::collections::HashSet;
use std::fmt::Display;
use std::str::FromStr;

use erigolem_primitives::{
    InvalidPattern, IpBlock, MethodPattern, OriginPattern, StartArgs, MAX_ALLOWLIST,
};
use serde::{Deserialize, Serialize};

/// Longest allowlist entry accepted (a method name is at most 128, a host 253 characters).
pub(crate) const MAX_ENTRY_CHARS: usize = 300;

/// A node's allowlists; `None` for "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Access {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) methods: Option<Vec<MethodPattern>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) allow_origins: Option<Vec<OriginPattern>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) allow_ips: Option<Vec<IpBlock>>,
}

/// Why an allowlist was refused; the text names the field and the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidAccess(pub(crate) String);

impl Access {
    /// The lists of a create request: each absent, or 1-[`MAX_ALLOWLIST`] valid entries
    /// (duplicates dropped).
    pub(crate) fn parse(
        methods: Option<Vec<String>>,
        allow_origins: Option<Vec<String>>,
        allow_ips: Option<Vec<String>>,
    ) -> Result<Self, InvalidAccess> {
        Ok(Self {
            methods: list("methods", "method", methods)?,
            allow_origins: list("allow_origins", "origin", allow_origins)?,
            allow_ips: list("allow_ips", "address", allow_ips)?,
        })
    }

    fn is_any(&self) -> bool {
        self.methods.is_none() && self.allow_origins.is_none() && self.allow_ips.is_none()
    }

    /// What the store keeps (`None`: no list at all).
    pub(crate) fn to_stored(&self) -> Option<serde_json::Value> {
        if self.is_any() {
            return None;
        }
        serde_json::to_value(self).ok()
    }

    /// What the store kept.
    pub(crate) fn from_stored(stored: Option<&serde_json::Value>) -> Result<Self, String> {
        match stored {
            None => Ok(Self::default()),
            Some(v) => Self::deserialize(v).map_err(|e| format!("stored allowlists: {e}")),
        }
    }

    /// Into the runtime's start arguments.
    pub(crate) fn apply(self, args: &mut StartArgs) {
        args.methods = self.methods;
        args.allow_origins = self.allow_origins;
        args.allow_ips = self.allow_ips;
    }

    /// As the API shows them.
    pub(crate) fn view(&self) -> [Option<Vec<String>>; 3] {
        fn texts<T: Display>(list: &Option<Vec<T>>) -> Option<Vec<String>> {
            list.as_ref()
                .map(|l| l.iter().map(ToString::to_string).collect())
        }
        [
            texts(&self.methods),
            texts(&self.allow_origins),
            texts(&self.allow_ips),
        ]
    }
}

fn list<T>(
    field: &str,
    what: &str,
    entries: Option<Vec<String>>,
) -> Result<Option<Vec<T>>, InvalidAccess>
where
    T: FromStr<Err = InvalidPattern> + Display,
{
    let Some(entries) = entries else {
        return Ok(None);
    };
    if entries.is_empty() {
        return Err(InvalidAccess(format!(
            "{field} is empty: it would refuse every {what}; leave it out to allow any"
        )));
    }
    if entries.len() > MAX_ALLOWLIST {
        return Err(InvalidAccess(format!(
            "{field} has {} entries; at most {MAX_ALLOWLIST}",
            entries.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if entry.chars().count() > MAX_ENTRY_CHARS {
            return Err(InvalidAccess(format!(
                "{field}[{i}] has more than {MAX_ENTRY_CHARS} characters"
            )));
        }
        let parsed: T = entry
            .trim()
            .parse()
            .map_err(|e: InvalidPattern| InvalidAccess(format!("{field}[{i}]: {}", e.0)))?;
        if seen.insert(parsed.to_string()) {
            out.push(parsed);
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn strings(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn valid_lists_are_normalised_stored_and_passed_on() {
        let access = Access::parse(
            strings(&["eth_blockNumber", " eth_* ", "eth_blockNumber"]),
            strings(&["https://App.Example.org:443", "http://localhost:3000"]),
            strings(&["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"]),
        )
        .unwrap();
        let [methods, origins, ips] = access.view();
        assert_eq!(methods.unwrap(), ["eth_blockNumber", "eth_*"]);
        assert_eq!(
            origins.unwrap(),
            ["https://app.example.org", "http://localhost:3000"]
        );
        assert_eq!(ips.unwrap(), ["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"]);
        let stored = access.to_stored();
        assert_eq!(Access::from_stored(stored.as_ref()).unwrap(), access);
        let mut args = StartArgs::default();
        access.apply(&mut args);
        // What the runtime parses back is what was validated here.
        let text = serde_json::to_string(&args).unwrap();
        let parsed = StartArgs::parse(&[text]).unwrap();
        assert_eq!(parsed.methods.unwrap().len(), 2);
        assert_eq!(parsed.allow_origins.unwrap().len(), 2);
        assert_eq!(parsed.allow_ips.unwrap().len(), 3);
    }

    #[test]
    fn none_is_any_and_stores_nothing() {
        let access = Access::parse(None, None, None).unwrap();
        assert_eq!(access.to_stored(), None);
        assert_eq!(Access::from_stored(None).unwrap(), access);
        assert_eq!(access.view(), [None, None, None]);
    }

    #[test]
    fn hostile_and_careless_lists_are_refused_with_the_field_and_entry() {
        let many: Vec<String> = (0..=MAX_ALLOWLIST).map(|i| format!("m_{i}")).collect();
        let cases: Vec<(Access3, &str)> = vec![
            ((strings(&[]), None, None), "methods is empty"),
            (
                (strings(&["eth call"]), None, None),
                "methods[0]: invalid method pattern",
            ),
            ((strings(&["eth_call", "*"]), None, None), "methods[1]"),
            ((strings(&["eth*"]), None, None), "methods[0]"),
            ((strings(&["a\"b"]), None, None), "methods[0]"),
            ((Some(many.clone()), None, None), "methods has 101 entries"),
            (
                (strings(&[&"a".repeat(5_000)]), None, None),
                "more than 300 characters",
            ),
            (
                (None, strings(&["app.example.org"]), None),
                "allow_origins[0]: invalid origin",
            ),
            (
                (None, strings(&["javascript://x"]), None),
                "allow_origins[0]",
            ),
            ((None, strings(&["https://a*.b"]), None), "allow_origins[0]"),
            (
                (None, strings(&["https://x:99999"]), None),
                "allow_origins[0]",
            ),
            (
                (None, strings(&["https://a.org/path"]), None),
                "allow_origins[0]",
            ),
            ((None, strings(&[]), None), "allow_origins is empty"),
            (
                (None, None, strings(&["10.0.0.0/33"])),
                "allow_ips[0]: invalid IP",
            ),
            ((None, None, strings(&["::/129"])), "allow_ips[0]"),
            ((None, None, strings(&["example.org"])), "allow_ips[0]"),
            ((None, None, strings(&["10.0.0.1/"])), "allow_ips[0]"),
            ((None, None, Some(many)), "allow_ips has 101 entries"),
        ];
        for ((m, o, i), want) in cases {
            let err = Access::parse(m.clone(), o.clone(), i.clone()).unwrap_err();
            assert!(err.0.contains(want), "{m:?} {o:?} {i:?}: {err}");
            assert!(err.0.len() < 400, "message too long: {}", err.0.len());
        }
    }

    type Access3 = (
        Option<Vec<String>>,
        Option<Vec<String>>,
        Option<Vec<String>>,
    );
}
