//! The pure decisions of a node's life: its states and transitions ([`node`]), which offer to take
//! ([`price`]), what a provider may be paid ([`bound`]), all in GLM decimals ([`money`]), and how
//! provider text is made harmless ([`text`]). No I/O, no clocks (time is an argument): the
//! reconciler, the payment loop and the backends carry the decisions out.

pub mod bound;
pub mod money;
pub mod node;
pub mod price;
pub mod text;

pub use bound::{DocumentKind, Ledger, PaymentDecision, Refusal, Service};
pub use money::{Glm, MoneyError};
pub use node::{Action, AlertKind, Conflict, Decision, Event, Facts, NodeState, StopOutcome};
pub use price::{Caps, Expected, LinearPrice, OfferPolicy};
