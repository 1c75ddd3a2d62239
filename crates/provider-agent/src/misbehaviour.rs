//! **Test-only.** Named ways for the agent to misbehave, so that requestors (the server's golem
//! backend) are tested against the real agent acting as a hostile provider. All off by default;
//! `erigolem-provider run --misbehave <name>[=<value>],…` switches them on. A provider that sells
//! nodes never sets them.
//!
//! | name | what the agent then does |
//! |---|---|
//! | `overbill-debit-notes=F` | every debit note asks F × the amount due |
//! | `overbill-invoice=G` | the final invoice asks G GLM more than due |
//! | `node-name=NAME` | the offer calls the provider NAME (e.g. another provider's name) |
//! | `status-failed-after=N` | after N STATUS answers, STATUS says the node failed |
//! | `silent-after=N` | after N STATUS answers, STATUS never answers |
//! | `status-garbage-after=N` | after N STATUS answers, STATUS says failed with a huge error full of terminal escapes |

use std::str::FromStr;

use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Misbehaviour {
    pub overbill_debit_notes: Option<f64>,
    pub overbill_invoice: Option<f64>,
    pub node_name: Option<String>,
    pub status_failed_after: Option<u64>,
    pub silent_after: Option<u64>,
    pub status_garbage_after: Option<u64>,
}

/// The error text a garbage STATUS carries: escapes that clear a terminal, retitle it and hide
/// a link, then 30 000 characters of filler with a BEL in every fifth (a STATUS of about 60 KB as
/// JSON, under the requestor's 64 KiB limit, so the text itself reaches it).
pub fn garbage_error() -> String {
    let mut text =
        String::from("\u{1b}[2J\u{1b}[H\u{1b}]0;pwned\u{07}\u{1b}]8;;http://evil.example\u{1b}\\click\u{1b}]8;;\u{1b}\\\u{1b}[31m");
    text.push_str(&"AAAA\u{7}".repeat(6_000));
    text
}

impl Misbehaviour {
    pub fn is_none(&self) -> bool {
        self == &Misbehaviour::default()
    }

    /// Whether STATUS answers are rewritten (the exe-unit needs a filter then).
    pub fn rewrites_status(&self) -> bool {
        self.status_failed_after.is_some()
            || self.silent_after.is_some()
            || self.status_garbage_after.is_some()
    }

    /// What the `n`th (0-based) STATUS answers instead of `stdout`; `None`: no answer at all.
    pub fn status(&self, n: u64, stdout: Vec<u8>) -> Option<Vec<u8>> {
        if self.silent_after.is_some_and(|after| n >= after) {
            return None;
        }
        let error = if self.status_garbage_after.is_some_and(|after| n >= after) {
            garbage_error()
        } else if self.status_failed_after.is_some_and(|after| n >= after) {
            "the node died (a misbehaving test provider)".to_owned()
        } else {
            return Some(stdout);
        };
        let mut status: Value = serde_json::from_slice(&stdout).ok()?;
        status["state"] = Value::from("failed");
        status["error"] = Value::from(error);
        serde_json::to_vec(&status).ok()
    }
}

impl FromStr for Misbehaviour {
    type Err = String;

    /// `name[=value],…` (see the module's table).
    fn from_str(spec: &str) -> Result<Self, String> {
        let mut m = Misbehaviour::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item.split_once('=').unwrap_or((item, ""));
            let number = |what: &str| -> Result<f64, String> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| format!("{name} needs {what}, like {name}=2"))
            };
            let count = || -> Result<u64, String> {
                value
                    .parse()
                    .map_err(|_| format!("{name} needs a count, like {name}=1"))
            };
            match name {
                "overbill-debit-notes" => m.overbill_debit_notes = Some(number("a factor")?),
                "overbill-invoice" => m.overbill_invoice = Some(number("an amount of GLM")?),
                "node-name" if !value.is_empty() => m.node_name = Some(value.to_owned()),
                "status-failed-after" => m.status_failed_after = Some(count()?),
                "silent-after" => m.silent_after = Some(count()?),
                "status-garbage-after" => m.status_garbage_after = Some(count()?),
                other => return Err(format!("unknown misbehaviour {other:?}")),
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_named_switches_and_refuses_unknown_ones() {
        let m: Misbehaviour =
            "overbill-debit-notes=10, node-name=erigolem-provider-0xabc,silent-after=2"
                .parse()
                .unwrap();
        assert_eq!(m.overbill_debit_notes, Some(10.0));
        assert_eq!(m.node_name.as_deref(), Some("erigolem-provider-0xabc"));
        assert_eq!(m.silent_after, Some(2));
        assert!(m.rewrites_status());
        assert!("".parse::<Misbehaviour>().unwrap().is_none());
        assert!("steal-keys".parse::<Misbehaviour>().is_err());
        assert!("overbill-invoice=-1".parse::<Misbehaviour>().is_err());
        assert!("silent-after=x".parse::<Misbehaviour>().is_err());
    }

    #[test]
    fn status_answers_change_after_n() {
        let ok = serde_json::to_vec(&json!({"state": "running", "url": "http://x/"})).unwrap();
        let failing: Misbehaviour = "status-failed-after=1".parse().unwrap();
        assert_eq!(failing.status(0, ok.clone()), Some(ok.clone()));
        let second: Value =
            serde_json::from_slice(&failing.status(1, ok.clone()).unwrap()).unwrap();
        assert_eq!(second["state"], "failed");
        assert_eq!(second["url"], "http://x/");
        let silent: Misbehaviour = "silent-after=1".parse().unwrap();
        assert!(silent.status(0, ok.clone()).is_some());
        assert_eq!(silent.status(1, ok.clone()), None);
        let garbage: Misbehaviour = "status-garbage-after=0".parse().unwrap();
        let g: Value = serde_json::from_slice(&garbage.status(0, ok).unwrap()).unwrap();
        assert!(g["error"].as_str().unwrap().len() > 30_000);
        assert!(serde_json::to_vec(&g).unwrap().len() < 64 * 1024);
    }
}
