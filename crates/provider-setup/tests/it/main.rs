//! Integration tests of `erigolem-provider setup | check | uninstall` under a temp prefix: snapshots
//! of the generated files, a real Nginx and runtime instance through the generated site, the doctor
//! naming broken parts, idempotence, and an uninstall that leaves the prefix as it was.
#![allow(clippy::unwrap_used)]

mod machine;
mod snapshots;
