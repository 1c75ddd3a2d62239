//! The pure decisions of a node's life: its states and transitions ([`node`]), its alerts ([`alert`]), which offer to take
//! ([`price`]), what a provider may be paid ([`bound`]), all in GLM decimals ([`money`]), how
//! provider text is made harmless ([`text`]), and which replica controls which node ([`lease`]). No I/O, no clocks (time is an argument): the
//! reconciler, the payment loop and the backends carry the decisions out.

pub mod alert;
pub mod bound;
pub mod lease;
pub mod money;
pub mod node;
pub mod price;
pub mod text;

pub use bound::{DocumentKind, Ledger, PaymentDecision, Refusal, Service};
pub use money::{Glm, MoneyError};
pub use node::{Action, AlertKind, Conflict, Decision, Event, Facts, NodeState, StopOutcome};
pub use price::{Caps, Expected, LinearPrice, OfferPolicy};
