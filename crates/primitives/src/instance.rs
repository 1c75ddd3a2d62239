use std::fmt;

use serde::{Deserialize, Serialize};

/// The name of one endpoint: its URL path (`/<name>/`), its Nginx files and its data directory.
///
/// It is written into Nginx config and file names, so only `[a-z0-9-]`, 3–63 characters, starting
/// with a letter or digit, is accepted: nothing that could break out of a path or a directive.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct InstanceName(String);

#[derive(Debug, thiserror::Error)]
#[error("invalid instance name {0:?}: use 3-63 characters of a-z, 0-9 and '-', starting with a letter or digit")]
pub struct InvalidInstanceName(pub String);

impl InstanceName {
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidInstanceName> {
        let name = name.into();
        let valid = (3..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if valid {
            Ok(Self(name))
        } else {
            Err(InvalidInstanceName(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for InstanceName {
    type Err = InvalidInstanceName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for InstanceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_anything_that_could_inject() {
        for bad in [
            "a;b", "../etc", "x y", "a\nb", "UPPER", "-lead", "ab", "a{b}", "a$b", "a/b", "a'b",
            "é-aa",
        ] {
            assert!(InstanceName::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["abc", "node-1", "0ab", "a1b2c3d4e5f6a7b8"] {
            assert!(InstanceName::new(good).is_ok(), "{good:?} refused");
        }
        assert!(InstanceName::new("a".repeat(64)).is_err());
    }
}
