//! A node's lifecycle as a pure function: [`decide`] (facts + event → next state + actions).
//! The reconciler records the state with a compare-and-set on the state it decided from, then
//! carries the actions out; the backends only start, poll and stop.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's lifecycle state.
///
/// Allowed transitions (anything else is refused by the store, including a state to itself):
///
/// | from | to |
/// |---|---|
/// | `pending` | `starting`, `stopping`, `failed` |
/// | `starting` | `running`, `stopping`, `failed` |
/// | `running` | `stopping`, `failed` |
/// | `stopping` | `stopped`, `failed` |
/// | `failed` | `stopping` (tear down what is left), `stopped` (nothing left to tear down) |
/// | `stopped` | — (final) |
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Pending,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

/// A state equals its name (`state == "running"`), as the API spells it.
impl PartialEq<&str> for NodeState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown node state {0:?}")]
pub struct UnknownState(pub String);

impl NodeState {
    pub const ALL: [NodeState; 6] = [
        Self::Pending,
        Self::Starting,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Failed,
    ];
    /// The states that count against a user's active nodes.
    pub const ACTIVE: [NodeState; 4] =
        [Self::Pending, Self::Starting, Self::Running, Self::Stopping];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }

    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    /// Whether the node is down (`stopped` or `failed`).
    pub fn is_down(self) -> bool {
        matches!(self, Self::Stopped | Self::Failed)
    }

    /// The states from which `self` may be entered.
    pub fn predecessors(self) -> &'static [NodeState] {
        use NodeState::*;
        match self {
            Pending => &[],
            Starting => &[Pending],
            Running => &[Starting],
            Stopping => &[Pending, Starting, Running, Failed],
            Stopped => &[Stopping, Failed],
            Failed => &[Pending, Starting, Running, Stopping],
        }
    }

    pub fn can_transition_to(self, to: NodeState) -> bool {
        to.predecessors().contains(&self)
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, UnknownState> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// Consecutive failed STATUS polls after which a running node is failed.
pub const MISS_LIMIT: u32 = 3;

/// What the decision looks at besides the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub state: NodeState,
    /// The backend still holds something for the node (an open agreement, a runtime).
    pub held: bool,
    /// STATUS polls that failed in a row.
    pub misses: u32,
    /// Whether a failure while running may start a replacement (auto-replace on, and replacements
    /// left in the node's plan).
    pub may_replace: bool,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The user asked for the node (it is `pending`).
    Created,
    /// The backend's start returned a STATUS: the node serves.
    Started,
    /// The backend could not start it (every provider tried).
    StartFailed { reason: String },
    /// A STATUS poll answered: `failed` is the runtime's reason when it reports the node failed.
    Status { failed: Option<String> },
    /// A STATUS poll got no answer.
    MissedPoll { error: String },
    /// The user asked to stop it.
    StopAsked,
    /// The user asked to delete it.
    DeleteAsked,
    /// Its money or its agreement runs out: stop it, with the reason.
    Ending { reason: String },
    /// The provider ended the agreement (its final invoice came while the node ran).
    ProviderEnded { reason: String },
    /// The provider asked more than its agreement allows.
    Overbilled { reason: String },
    /// The backend finished a stop.
    StopDone(StopOutcome),
    /// The server started again; the node is as the store says.
    Restarted,
    /// After a restart the node could not be picked up again.
    ResumeFailed { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Everything ended (agreement terminated, activity destroyed; runtime gone).
    Stopped,
    /// The backend held nothing for the node.
    Gone,
    /// The backend could not confirm the stop.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    Failed,
    Replaced,
}

/// What the reconciler carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the node on the backend (reports `Started` or `StartFailed`).
    Start,
    /// Pick the node up again after a restart (reports `Started` or `ResumeFailed`).
    Resume,
    /// End everything the backend holds for it; its billing is frozen at this decision
    /// (reports `StopDone`).
    Stop,
    /// Remove the node's row (after a `Stop` that succeeded, when one comes first).
    Delete,
    /// Start a new node on the same plan, on another provider.
    Replace {
        reason: String,
    },
    Alert {
        kind: AlertKind,
        message: String,
    },
    /// The node is running but its polls fail: say so (it fails after [`MISS_LIMIT`]).
    Unhealthy {
        message: String,
    },
    /// A poll answered: clear the unhealthy flag, record block and sync progress.
    Healthy,
}

/// Why an asked-for change is refused (the HTTP layer maps it to 409).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// A live node cannot be deleted.
    NotStopped(NodeState),
}

/// The next state (with the reason recorded on the transition) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub next: Option<(NodeState, Option<String>)>,
    pub actions: Vec<Action>,
}

impl Decision {
    fn to(state: NodeState, reason: Option<String>, actions: Vec<Action>) -> Self {
        Decision {
            next: Some((state, reason)),
            actions,
        }
    }

    fn act(actions: Vec<Action>) -> Self {
        Decision {
            next: None,
            actions,
        }
    }

    fn none() -> Self {
        Decision::default()
    }
}

/// The node moves to `failed` with `reason`: its backend is stopped (billing frozen now), an
/// alert goes out, and when it failed while running and may be replaced, a replacement starts.
fn fail(facts: &Facts, reason: String, while_running: bool) -> Decision {
    let mut actions = Vec::new();
    if facts.held || while_running {
        actions.push(Action::Stop);
    }
    actions.push(Action::Alert {
        kind: AlertKind::Failed,
        message: reason.clone(),
    });
    if while_running && facts.may_replace {
        actions.push(Action::Replace {
            reason: reason.clone(),
        });
    }
    Decision::to(NodeState::Failed, Some(reason), actions)
}

/// The lifecycle: what `event` does to a node described by `facts`.
pub fn decide(facts: &Facts, event: &Event) -> Result<Decision, Conflict> {
    use Action::*;
    use Event::*;
    use NodeState::*;
    let stop_if_held = || {
        if facts.held {
            vec![Stop]
        } else {
            vec![]
        }
    };
    Ok(match (facts.state, event) {
        (_, DeleteAsked) => match facts.state {
            Stopped | Failed => {
                let mut actions = stop_if_held();
                actions.push(Delete);
                Decision::act(actions)
            }
            live => return Err(Conflict::NotStopped(live)),
        },

        (Pending, Created | Restarted) => Decision::to(Starting, None, vec![Start]),
        (Pending, StopAsked) => Decision::to(Stopping, None, vec![Stop]),
        (Pending, _) => Decision::none(),

        (Starting, Started) => Decision::to(Running, None, vec![Healthy]),
        (Starting, StartFailed { reason }) => fail(facts, reason.clone(), false),
        // The start is in flight: its result decides (a `Started` in `stopping` is stopped).
        (Starting, StopAsked) => Decision::to(Stopping, None, vec![]),
        (Starting, Restarted) => fail(
            facts,
            "the server restarted while the node was starting".into(),
            false,
        ),
        (Starting, Overbilled { reason } | ProviderEnded { reason }) => {
            fail(facts, reason.clone(), false)
        }
        (Starting, _) => Decision::none(),

        (Running, Status { failed: None }) => Decision::act(vec![Healthy]),
        (
            Running,
            Status {
                failed: Some(reason),
            },
        ) => fail(facts, reason.clone(), true),
        (Running, MissedPoll { error }) => {
            let misses = facts.misses + 1;
            if misses >= MISS_LIMIT {
                fail(facts, format!("the node stopped answering: {error}"), true)
            } else {
                Decision::act(vec![Unhealthy {
                    message: format!(
                        "not answering ({misses} of {MISS_LIMIT} checks failed): {error}"
                    ),
                }])
            }
        }
        (Running, StopAsked) => Decision::to(Stopping, None, vec![Stop]),
        (Running, Ending { reason }) => {
            Decision::to(Stopping, Some(format!("stopped: {reason}")), vec![Stop])
        }
        (Running, ProviderEnded { reason } | Overbilled { reason }) => {
            fail(facts, reason.clone(), true)
        }
        (Running, Restarted) => Decision::act(vec![Resume]),
        (Running, ResumeFailed { reason }) => fail(
            facts,
            format!("could not be picked up after a server restart: {reason}"),
            false,
        ),
        (Running, _) => Decision::none(),

        (Stopping, StopDone(StopOutcome::Stopped | StopOutcome::Gone)) => {
            Decision::to(Stopped, None, vec![])
        }
        (Stopping, StopDone(StopOutcome::Failed(e))) => {
            fail(facts, format!("the stop failed: {e}"), false)
        }
        // A start that returned after the stop was asked: stop what it started.
        (Stopping, Started) => Decision::act(vec![Stop]),
        (Stopping, StartFailed { .. }) => Decision::to(Stopped, None, stop_if_held()),
        // A stop the old server did not finish: finish it (on Golem the agreement may be open).
        (Stopping, Restarted) => Decision::act(vec![Stop]),
        (Stopping, _) => Decision::none(),

        (Stopped, Restarted) if facts.held => Decision::act(vec![Stop]),
        (Stopped, _) => Decision::none(),

        // Whatever a failed node still holds is ended: asked by the user, or found after a
        // restart, or started by a start that returned late.
        (Failed, StopAsked | Restarted | Started) if facts.held => Decision::act(vec![Stop]),
        (Failed, Started) => Decision::act(vec![Stop]),
        (Failed, _) => Decision::none(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use Action::*;
    use NodeState::*;

    fn events() -> Vec<Event> {
        vec![
            Event::Created,
            Event::Started,
            Event::StartFailed {
                reason: "no offers".into(),
            },
            Event::Status { failed: None },
            Event::Status {
                failed: Some("erigon exited".into()),
            },
            Event::MissedPoll {
                error: "timeout".into(),
            },
            Event::StopAsked,
            Event::DeleteAsked,
            Event::Ending {
                reason: "budget".into(),
            },
            Event::ProviderEnded {
                reason: "invoice came".into(),
            },
            Event::Overbilled {
                reason: "9 GLM".into(),
            },
            Event::StopDone(StopOutcome::Stopped),
            Event::StopDone(StopOutcome::Gone),
            Event::StopDone(StopOutcome::Failed("yagna down".into())),
            Event::Restarted,
            Event::ResumeFailed {
                reason: "no answer".into(),
            },
        ]
    }

    fn name(e: &Event) -> &'static str {
        match e {
            Event::Created => "created",
            Event::Started => "started",
            Event::StartFailed { .. } => "start failed",
            Event::Status { failed: None } => "status ok",
            Event::Status { failed: Some(_) } => "status failed",
            Event::MissedPoll { .. } => "missed poll",
            Event::StopAsked => "stop asked",
            Event::DeleteAsked => "delete asked",
            Event::Ending { .. } => "ending",
            Event::ProviderEnded { .. } => "provider ended",
            Event::Overbilled { .. } => "overbilled",
            Event::StopDone(StopOutcome::Stopped) => "stopped",
            Event::StopDone(StopOutcome::Gone) => "gone",
            Event::StopDone(StopOutcome::Failed(_)) => "stop failed",
            Event::Restarted => "restarted",
            Event::ResumeFailed { .. } => "resume failed",
        }
    }

    /// A compact spelling of a decision: `→state [actions]`, `-` for nothing, `409`.
    fn spell(d: &Result<Decision, Conflict>) -> String {
        let d = match d {
            Err(Conflict::NotStopped(_)) => return "409".into(),
            Ok(d) => d,
        };
        let mut out = String::new();
        if let Some((s, _)) = &d.next {
            out.push_str(&format!("→{s}"));
        }
        let acts: Vec<&str> = d
            .actions
            .iter()
            .map(|a| match a {
                Start => "start",
                Resume => "resume",
                Stop => "stop",
                Delete => "delete",
                Replace { .. } => "replace",
                Alert {
                    kind: AlertKind::Failed,
                    ..
                } => "alert",
                Alert {
                    kind: AlertKind::Replaced,
                    ..
                } => "alert-replaced",
                Unhealthy { .. } => "unhealthy",
                Healthy => "healthy",
            })
            .collect();
        if !acts.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&acts.join(","));
        }
        if out.is_empty() {
            "-".into()
        } else {
            out
        }
    }

    /// Every state × event, for a node that holds nothing on the backend, with no replacement
    /// allowed and no missed polls yet. Columns are in [`events`]' order.
    #[test]
    fn every_state_and_event_not_held() {
        let table: [(NodeState, [&str; 16]); 6] = [
            (
                Pending,
                [
                    "→starting start",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "→stopping stop",
                    "409",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "→starting start",
                    "-",
                ],
            ),
            (
                Starting,
                [
                    "-",
                    "→running healthy",
                    "→failed alert",
                    "-",
                    "-",
                    "-",
                    "→stopping",
                    "409",
                    "-",
                    "→failed alert",
                    "→failed alert",
                    "-",
                    "-",
                    "-",
                    "→failed alert",
                    "-",
                ],
            ),
            (
                Running,
                [
                    "-",
                    "-",
                    "-",
                    "healthy",
                    "→failed stop,alert",
                    "unhealthy",
                    "→stopping stop",
                    "409",
                    "→stopping stop",
                    "→failed stop,alert",
                    "→failed stop,alert",
                    "-",
                    "-",
                    "-",
                    "resume",
                    "→failed alert",
                ],
            ),
            (
                Stopping,
                [
                    "-",
                    "stop",
                    "→stopped",
                    "-",
                    "-",
                    "-",
                    "-",
                    "409",
                    "-",
                    "-",
                    "-",
                    "→stopped",
                    "→stopped",
                    "→failed alert",
                    "stop",
                    "-",
                ],
            ),
            (
                Stopped,
                [
                    "-", "-", "-", "-", "-", "-", "-", "delete", "-", "-", "-", "-", "-", "-", "-",
                    "-",
                ],
            ),
            (
                Failed,
                [
                    "-", "stop", "-", "-", "-", "-", "-", "delete", "-", "-", "-", "-", "-", "-",
                    "-", "-",
                ],
            ),
        ];
        check(&table, false, false, 0);
    }

    /// The same, for a node the backend still holds (an open agreement, a live runtime), with a
    /// replacement allowed and two polls missed already.
    #[test]
    fn every_state_and_event_held_replaceable_two_misses() {
        let table: [(NodeState, [&str; 16]); 6] = [
            (
                Pending,
                [
                    "→starting start",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "→stopping stop",
                    "409",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "→starting start",
                    "-",
                ],
            ),
            (
                Starting,
                [
                    "-",
                    "→running healthy",
                    "→failed stop,alert",
                    "-",
                    "-",
                    "-",
                    "→stopping",
                    "409",
                    "-",
                    "→failed stop,alert",
                    "→failed stop,alert",
                    "-",
                    "-",
                    "-",
                    "→failed stop,alert",
                    "-",
                ],
            ),
            (
                Running,
                [
                    "-",
                    "-",
                    "-",
                    "healthy",
                    "→failed stop,alert,replace",
                    "→failed stop,alert,replace",
                    "→stopping stop",
                    "409",
                    "→stopping stop",
                    "→failed stop,alert,replace",
                    "→failed stop,alert,replace",
                    "-",
                    "-",
                    "-",
                    "resume",
                    "→failed stop,alert",
                ],
            ),
            (
                Stopping,
                [
                    "-",
                    "stop",
                    "→stopped stop",
                    "-",
                    "-",
                    "-",
                    "-",
                    "409",
                    "-",
                    "-",
                    "-",
                    "→stopped",
                    "→stopped",
                    "→failed stop,alert",
                    "stop",
                    "-",
                ],
            ),
            (
                Stopped,
                [
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "stop,delete",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "stop",
                    "-",
                ],
            ),
            (
                Failed,
                [
                    "-",
                    "stop",
                    "-",
                    "-",
                    "-",
                    "-",
                    "stop",
                    "stop,delete",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "stop",
                    "-",
                ],
            ),
        ];
        check(&table, true, true, 2);
    }

    fn check(table: &[(NodeState, [&str; 16]); 6], held: bool, may_replace: bool, misses: u32) {
        let events = events();
        let mut wrong = Vec::new();
        for (state, row) in table {
            let facts = Facts {
                state: *state,
                held,
                misses,
                may_replace,
            };
            for (event, want) in events.iter().zip(row) {
                let got = spell(&decide(&facts, event));
                if got != *want {
                    wrong.push(format!(
                        "{state} × {}: got {got:?}, want {want:?}",
                        name(event)
                    ));
                }
                // Every decided next state is one the store allows.
                if let Ok(Decision {
                    next: Some((to, _)),
                    ..
                }) = decide(&facts, event)
                {
                    assert!(
                        state.can_transition_to(to),
                        "{state} → {to} on {}",
                        name(event)
                    );
                }
            }
        }
        assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    }

    #[test]
    fn reasons_are_recorded_and_every_failure_of_a_running_node_stops_it() {
        let running = Facts {
            state: Running,
            held: false,
            misses: 0,
            may_replace: false,
        };
        let d = decide(
            &running,
            &Event::Status {
                failed: Some("erigon exited".into()),
            },
        )
        .unwrap();
        assert_eq!(d.next, Some((Failed, Some("erigon exited".into()))));
        assert_eq!(
            d.actions[0], Stop,
            "billing is frozen and the agreement ends"
        );
        let d = decide(
            &running,
            &Event::Ending {
                reason: "its budget of 1.2 GLM is used up".into(),
            },
        )
        .unwrap();
        assert_eq!(
            d.next,
            Some((
                Stopping,
                Some("stopped: its budget of 1.2 GLM is used up".into())
            ))
        );
        let d = decide(
            &Facts {
                misses: 1,
                ..running
            },
            &Event::MissedPoll {
                error: "timed out".into(),
            },
        )
        .unwrap();
        assert_eq!(
            d.actions,
            vec![Unhealthy {
                message: "not answering (2 of 3 checks failed): timed out".into()
            }]
        );
        let d = decide(
            &Facts {
                misses: 2,
                may_replace: true,
                ..running
            },
            &Event::MissedPoll {
                error: "timed out".into(),
            },
        )
        .unwrap();
        let reason = "the node stopped answering: timed out".to_owned();
        assert_eq!(d.next, Some((Failed, Some(reason.clone()))));
        assert!(d.actions.contains(&Replace { reason }));
        assert_eq!(
            decide(
                &Facts {
                    state: Running,
                    held: true,
                    misses: 0,
                    may_replace: false
                },
                &Event::DeleteAsked
            ),
            Err(Conflict::NotStopped(Running))
        );
    }

    #[test]
    fn states_round_trip_and_the_transition_table_holds() {
        for s in NodeState::ALL {
            assert_eq!(s.as_str().parse::<NodeState>().unwrap(), s);
            assert!(!s.can_transition_to(s), "{s} → {s}");
        }
        assert!("running ".parse::<NodeState>().is_err());
        assert!(Failed.can_transition_to(Stopping));
        assert!(!Stopped.can_transition_to(Running));
    }
}
