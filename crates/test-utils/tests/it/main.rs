//! The test harnesses themselves, against the real components they start.
#![allow(clippy::unwrap_used)]

mod golem;
