//! When a node's alerts fire and resolve. [`decide`] takes the node's rules, which alerts are
//! active now (and how many clear samples each has seen in a row), and one input — a STATUS poll's
//! lag and runway, the node failing, being replaced or stopped — and answers with the new state
//! and the alerts to fire or resolve. Pure: the server stores the alerts and delivers them.
//!
//! One firing per episode: an active alert never fires again; it resolves only after
//! [`CLEAR_SAMPLES`] polls in a row within its threshold, so a lag that flaps around the threshold
//! stays one alert instead of a storm of them. A node in its first sync is behind by nature (its
//! sync progress shows that): lag alerts start once it has caught up for the first time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Polls in a row within the threshold before an active alert resolves.
pub const CLEAR_SAMPLES: u32 = 3;

/// Chainstack fails a node over at 40 blocks behind.
pub const DEFAULT_LAG_BLOCKS: u64 = 40;
/// Ten mainnet slots.
pub const DEFAULT_LAG_SECONDS: u64 = 120;
/// An hour of budget left.
pub const DEFAULT_RUNWAY_SECS: u64 = 3_600;

/// Bounds of what a rule may say (the API answers 400 outside them).
pub const MAX_LAG_BLOCKS: u64 = 1_000_000;
pub const MAX_LAG_SECONDS: u64 = 7 * 24 * 3_600;
pub const MIN_RUNWAY_SECS: u64 = 60;
pub const MAX_RUNWAY_SECS: u64 = 30 * 24 * 3_600;

/// A node's alert rules; `null` (or `false`) turns a rule off.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRules {
    /// Fire when the node is more than this many blocks behind the network's head.
    #[cfg_attr(
        feature = "openapi",
        schema(required, minimum = 1, maximum = 1_000_000)
    )]
    pub lag_blocks: Option<u64>,
    /// Fire when the node's head block is more than this many seconds old.
    #[cfg_attr(feature = "openapi", schema(required, minimum = 1, maximum = 604_800))]
    pub lag_seconds: Option<u64>,
    /// Fire when the node's budget pays for fewer seconds than this (nodes with a budget only).
    #[cfg_attr(
        feature = "openapi",
        schema(required, minimum = 60, maximum = 2_592_000)
    )]
    pub runway_secs: Option<u64>,
    /// Fire when the node fails.
    pub failed: bool,
    /// Fire when the node is replaced by a new one.
    pub replaced: bool,
}

impl Default for AlertRules {
    fn default() -> Self {
        Self {
            lag_blocks: Some(DEFAULT_LAG_BLOCKS),
            lag_seconds: Some(DEFAULT_LAG_SECONDS),
            runway_secs: Some(DEFAULT_RUNWAY_SECS),
            failed: true,
            replaced: true,
        }
    }
}

/// A rule outside its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("lag_blocks must be from 1 to {MAX_LAG_BLOCKS} (or null: off), not {0}")]
    LagBlocks(u64),
    #[error("lag_seconds must be from 1 to {MAX_LAG_SECONDS} (or null: off), not {0}")]
    LagSeconds(u64),
    #[error(
        "runway_secs must be from {MIN_RUNWAY_SECS} to {MAX_RUNWAY_SECS} (or null: off), not {0}"
    )]
    Runway(u64),
}

impl AlertRules {
    /// The rules if every one is within its bounds.
    pub fn validate(self) -> Result<Self, RuleError> {
        if let Some(n) = self
            .lag_blocks
            .filter(|n| !(1..=MAX_LAG_BLOCKS).contains(n))
        {
            return Err(RuleError::LagBlocks(n));
        }
        if let Some(n) = self
            .lag_seconds
            .filter(|n| !(1..=MAX_LAG_SECONDS).contains(n))
        {
            return Err(RuleError::LagSeconds(n));
        }
        if let Some(n) = self
            .runway_secs
            .filter(|n| !(MIN_RUNWAY_SECS..=MAX_RUNWAY_SECS).contains(n))
        {
            return Err(RuleError::Runway(n));
        }
        Ok(self)
    }
}

/// What an alert is about.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    LagBlocks,
    LagSeconds,
    Runway,
    Failed,
    Replaced,
}

impl AlertType {
    pub const ALL: [AlertType; 5] = [
        AlertType::LagBlocks,
        AlertType::LagSeconds,
        AlertType::Runway,
        AlertType::Failed,
        AlertType::Replaced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::LagBlocks => "lag_blocks",
            AlertType::LagSeconds => "lag_seconds",
            AlertType::Runway => "runway",
            AlertType::Failed => "failed",
            AlertType::Replaced => "replaced",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Measured on every poll (and resolved when the measure clears), rather than an event.
    fn measured(self) -> bool {
        matches!(
            self,
            AlertType::LagBlocks | AlertType::LagSeconds | AlertType::Runway
        )
    }
}

/// What one STATUS poll measured (`None`: not known, e.g. no budget: within every threshold).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub behind_blocks: Option<u64>,
    pub behind_seconds: Option<u64>,
    pub runway_secs: Option<u64>,
}

/// What happened to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Sample(Sample),
    /// The node failed (why).
    Failed(String),
    /// The node was replaced (by which node, why).
    Replaced {
        by: String,
        reason: String,
    },
    /// The node was stopped: nothing about it is measured any more.
    Stopped,
}

/// What the decision remembers of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertState {
    /// Active alerts, each with the polls in a row within its threshold since.
    pub active: BTreeMap<AlertType, u32>,
    /// The node was within its lag thresholds once (its first sync is over).
    pub caught_up: bool,
}

/// What the server carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlertAction {
    Fire { kind: AlertType, message: String },
    Resolve { kind: AlertType },
}

/// The new state and the alerts to fire or resolve, for `input` under `rules`.
pub fn decide(
    rules: &AlertRules,
    state: &AlertState,
    input: &Input,
) -> (AlertState, Vec<AlertAction>) {
    let mut state = state.clone();
    let mut actions = Vec::new();
    let next = &mut state.active;
    let resolve_measured = |next: &mut BTreeMap<AlertType, u32>, actions: &mut Vec<AlertAction>| {
        for kind in AlertType::ALL.into_iter().filter(|k| k.measured()) {
            if next.remove(&kind).is_some() {
                actions.push(AlertAction::Resolve { kind });
            }
        }
    };
    match input {
        Input::Sample(sample) => {
            let within = |t: Option<u64>, v: Option<u64>| match (t, v) {
                (Some(t), Some(v)) => v <= t,
                _ => true,
            };
            let in_sync = within(rules.lag_blocks, sample.behind_blocks)
                && within(rules.lag_seconds, sample.behind_seconds);
            let first_sync = !state.caught_up;
            state.caught_up |= in_sync;
            let checks = [
                (
                    AlertType::LagBlocks,
                    rules.lag_blocks,
                    sample.behind_blocks,
                    true,
                ),
                (
                    AlertType::LagSeconds,
                    rules.lag_seconds,
                    sample.behind_seconds,
                    true,
                ),
                (
                    AlertType::Runway,
                    rules.runway_secs,
                    sample.runway_secs,
                    false,
                ),
            ];
            for (kind, threshold, value, above) in checks {
                if above && first_sync {
                    continue;
                }
                let breached = match (threshold, value) {
                    (Some(t), Some(v)) if above => v > t,
                    (Some(t), Some(v)) => v < t,
                    _ => false,
                };
                match (next.get(&kind).copied(), breached) {
                    (None, true) => {
                        next.insert(kind, 0);
                        let message = message(kind, threshold, value);
                        actions.push(AlertAction::Fire { kind, message });
                    }
                    (None, false) => {}
                    // Still (or again) breached: the same episode; its clear streak starts over.
                    (Some(_), true) => {
                        next.insert(kind, 0);
                    }
                    // A rule turned off resolves its alert at once.
                    (Some(_), false) if threshold.is_none() => {
                        next.remove(&kind);
                        actions.push(AlertAction::Resolve { kind });
                    }
                    (Some(clear), false) if clear + 1 >= CLEAR_SAMPLES => {
                        next.remove(&kind);
                        actions.push(AlertAction::Resolve { kind });
                    }
                    (Some(clear), false) => {
                        next.insert(kind, clear + 1);
                    }
                }
            }
        }
        Input::Failed(reason) => {
            resolve_measured(next, &mut actions);
            if rules.failed && !next.contains_key(&AlertType::Failed) {
                next.insert(AlertType::Failed, 0);
                actions.push(AlertAction::Fire {
                    kind: AlertType::Failed,
                    message: format!("the node failed: {reason}"),
                });
            }
        }
        Input::Replaced { by, reason } => {
            if rules.replaced && !next.contains_key(&AlertType::Replaced) {
                next.insert(AlertType::Replaced, 0);
                actions.push(AlertAction::Fire {
                    kind: AlertType::Replaced,
                    message: format!("the node was replaced by node {by}: {reason}"),
                });
            }
        }
        Input::Stopped => {
            for kind in AlertType::ALL {
                if next.remove(&kind).is_some() {
                    actions.push(AlertAction::Resolve { kind });
                }
            }
        }
    }
    (state, actions)
}

fn message(kind: AlertType, threshold: Option<u64>, value: Option<u64>) -> String {
    let (t, v) = (threshold.unwrap_or(0), value.unwrap_or(0));
    match kind {
        AlertType::LagBlocks => {
            format!("the node is {v} blocks behind the network (rule: more than {t})")
        }
        AlertType::LagSeconds => {
            format!("the node's head block is {v} s old (rule: more than {t} s)")
        }
        AlertType::Runway => {
            format!("the node's budget lasts {v} s more (rule: less than {t} s)")
        }
        AlertType::Failed | AlertType::Replaced => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlertType::*;

    fn lag(blocks: Option<u64>, secs: Option<u64>) -> Input {
        Input::Sample(Sample {
            behind_blocks: blocks,
            behind_seconds: secs,
            runway_secs: None,
        })
    }

    fn runway(secs: Option<u64>) -> Input {
        Input::Sample(Sample {
            runway_secs: secs,
            ..Sample::default()
        })
    }

    fn caught_up() -> AlertState {
        AlertState {
            caught_up: true,
            ..AlertState::default()
        }
    }

    /// Feeds `inputs` in order to a node past its first sync; the actions of each step as
    /// `+kind` / `-kind`.
    fn run(rules: &AlertRules, inputs: &[Input]) -> Vec<String> {
        run_from(caught_up(), rules, inputs)
    }

    fn run_from(mut state: AlertState, rules: &AlertRules, inputs: &[Input]) -> Vec<String> {
        inputs
            .iter()
            .map(|input| {
                let (next, actions) = decide(rules, &state, input);
                state = next;
                actions
                    .iter()
                    .map(|a| match a {
                        AlertAction::Fire { kind, .. } => format!("+{}", kind.as_str()),
                        AlertAction::Resolve { kind } => format!("-{}", kind.as_str()),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn defaults() {
        let d = AlertRules::default();
        assert_eq!(d.lag_blocks, Some(40));
        assert_eq!(d.lag_seconds, Some(120));
        assert_eq!(d.runway_secs, Some(3_600));
        assert!(d.failed && d.replaced);
        assert_eq!(d.validate(), Ok(d));
    }

    #[test]
    fn fire_once_no_refire_while_active_resolve_after_clear_polls() {
        let rules = AlertRules::default();
        let table: Vec<(&str, Vec<Input>, Vec<&str>)> = vec![
            (
                "at the threshold is not lagging",
                vec![lag(Some(40), Some(120))],
                vec![""],
            ),
            (
                "more than N blocks fires once",
                vec![
                    lag(Some(41), None),
                    lag(Some(90), None),
                    lag(Some(500), None),
                ],
                vec!["+lag_blocks", "", ""],
            ),
            (
                "resolves after three clear polls",
                vec![
                    lag(Some(41), None),
                    lag(Some(0), None),
                    lag(None, None),
                    lag(Some(3), None),
                    lag(Some(3), None),
                ],
                vec!["+lag_blocks", "", "", "-lag_blocks", ""],
            ),
            (
                "flapping around the threshold stays one episode",
                vec![
                    lag(Some(41), None),
                    lag(Some(39), None),
                    lag(Some(41), None),
                    lag(Some(39), None),
                    lag(Some(39), None),
                    lag(Some(41), None),
                    lag(Some(39), None),
                    lag(Some(39), None),
                    lag(Some(39), None),
                ],
                vec!["+lag_blocks", "", "", "", "", "", "", "", "-lag_blocks"],
            ),
            (
                "a new episode after a resolve fires again",
                vec![
                    lag(None, Some(121)),
                    lag(None, Some(1)),
                    lag(None, Some(1)),
                    lag(None, Some(1)),
                    lag(None, Some(500)),
                ],
                vec!["+lag_seconds", "", "", "-lag_seconds", "+lag_seconds"],
            ),
            (
                "blocks and seconds are alerts of their own",
                vec![lag(Some(100), Some(200))],
                vec!["+lag_blocks +lag_seconds"],
            ),
            (
                "runway below T fires; no budget (None) never does",
                vec![
                    runway(None),
                    runway(Some(3_600)),
                    runway(Some(3_599)),
                    runway(Some(10)),
                ],
                vec!["", "", "+runway", ""],
            ),
            (
                "failing resolves what was measured and fires once",
                vec![
                    lag(Some(100), None),
                    Input::Failed("gone".into()),
                    Input::Failed("gone again".into()),
                ],
                vec!["+lag_blocks", "-lag_blocks +failed", ""],
            ),
            (
                "replaced fires once",
                vec![
                    Input::Failed("x".into()),
                    Input::Replaced {
                        by: "n2".into(),
                        reason: "x".into(),
                    },
                    Input::Replaced {
                        by: "n2".into(),
                        reason: "x".into(),
                    },
                ],
                vec!["+failed", "+replaced", ""],
            ),
            (
                "a stop resolves everything",
                vec![lag(Some(100), Some(500)), runway(Some(1)), Input::Stopped],
                vec![
                    "+lag_blocks +lag_seconds",
                    "+runway",
                    "-lag_blocks -lag_seconds -runway",
                ],
            ),
        ];
        for (what, inputs, want) in table {
            assert_eq!(run(&rules, &inputs), want, "{what}");
        }
    }

    #[test]
    fn rules_turned_off_never_fire_and_resolve_what_they_fired() {
        let off = AlertRules {
            lag_blocks: None,
            lag_seconds: None,
            runway_secs: None,
            failed: false,
            replaced: false,
        };
        let inputs = [
            lag(Some(1_000), Some(1_000)),
            runway(Some(1)),
            Input::Failed("x".into()),
            Input::Replaced {
                by: "n".into(),
                reason: "x".into(),
            },
        ];
        assert_eq!(run(&off, &inputs), vec!["", "", "", ""]);
        // Active, then the rule is turned off: resolved at the next poll.
        let (state, _) = decide(&AlertRules::default(), &caught_up(), &lag(Some(100), None));
        let (state, actions) = decide(&off, &state, &lag(Some(100), None));
        assert_eq!(actions, vec![AlertAction::Resolve { kind: LagBlocks }]);
        assert!(state.active.is_empty());
    }

    #[test]
    fn a_custom_threshold_and_its_message() {
        let rules = AlertRules {
            lag_blocks: Some(5),
            ..AlertRules::default()
        };
        let (_, actions) = decide(&rules, &caught_up(), &lag(Some(6), None));
        assert_eq!(
            actions,
            vec![AlertAction::Fire {
                kind: LagBlocks,
                message: "the node is 6 blocks behind the network (rule: more than 5)".into()
            }]
        );
    }

    #[test]
    fn lag_alerts_start_once_the_first_sync_is_over() {
        let rules = AlertRules::default();
        let syncing = AlertState::default();
        let inputs = [
            lag(Some(5_000), Some(90_000)),
            lag(Some(100), Some(600)),
            runway(Some(10)),
            // Caught up: from now on a lag is an alert.
            lag(Some(0), Some(2)),
            lag(Some(41), None),
        ];
        assert_eq!(
            run_from(syncing.clone(), &rules, &inputs),
            vec!["", "", "+runway", "", "+lag_blocks"]
        );
        // Unknown lag (no sync report, no head age) counts as caught up.
        let (state, actions) = decide(&rules, &syncing, &lag(None, None));
        assert!(state.caught_up && actions.is_empty());
        // Failing during the first sync is an alert all the same.
        assert_eq!(
            run_from(syncing, &rules, &[Input::Failed("x".into())]),
            vec!["+failed"]
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        let with = |f: fn(&mut AlertRules)| {
            let mut r = AlertRules::default();
            f(&mut r);
            r.validate()
        };
        assert_eq!(
            with(|r| r.lag_blocks = Some(0)),
            Err(RuleError::LagBlocks(0))
        );
        assert_eq!(
            with(|r| r.lag_blocks = Some(MAX_LAG_BLOCKS + 1)),
            Err(RuleError::LagBlocks(MAX_LAG_BLOCKS + 1))
        );
        assert_eq!(
            with(|r| r.lag_seconds = Some(0)),
            Err(RuleError::LagSeconds(0))
        );
        assert_eq!(
            with(|r| r.runway_secs = Some(59)),
            Err(RuleError::Runway(59))
        );
        assert!(with(|r| r.runway_secs = None).is_ok());
        assert!(with(|r| r.lag_blocks = Some(1)).is_ok());
    }
}
