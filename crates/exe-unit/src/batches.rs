//! The batches of one activity, within [`ExeUnitLimits`]: which scripts are taken, how much of
//! their output is kept, and which finished batches are forgotten (oldest first) to stay within
//! count, age and bytes. No I/O and no clock of its own (`now` is passed in), so every rule is
//! tested here by tables.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use ya_client_model::activity::ExeScriptCommand;

use crate::batch::Batch;
use crate::ExeUnitLimits;

/// Why an exe script is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("Batch {0} already exists")]
    Exists(String),
    #[error("an exe script may hold at most {max} commands on this provider; this one has {got}")]
    TooManyCommands { got: usize, max: usize },
    #[error(
        "{max} batches of this activity are waiting or running already; wait for their results"
    )]
    TooManyPending { max: usize },
}

#[derive(Debug)]
pub(crate) struct Batches {
    limits: ExeUnitLimits,
    map: HashMap<String, Batch>,
    /// Ids in arrival order (the order batches run and are forgotten in).
    order: VecDeque<String>,
}

impl Batches {
    pub(crate) fn new(limits: ExeUnitLimits) -> Self {
        Self {
            limits,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Takes a new batch, or says why not.
    pub(crate) fn admit(
        &mut self,
        id: &str,
        commands: Vec<ExeScriptCommand>,
    ) -> Result<(), Refusal> {
        if self.map.contains_key(id) {
            return Err(Refusal::Exists(id.to_owned()));
        }
        if commands.len() > self.limits.max_commands {
            return Err(Refusal::TooManyCommands {
                got: commands.len(),
                max: self.limits.max_commands,
            });
        }
        if self.map.values().filter(|b| !b.done).count() >= self.limits.max_pending {
            return Err(Refusal::TooManyPending {
                max: self.limits.max_pending,
            });
        }
        self.map.insert(id.to_owned(), Batch::new(commands));
        self.order.push_back(id.to_owned());
        Ok(())
    }

    /// Undoes [`admit`](Self::admit) (the batch could not be queued).
    pub(crate) fn remove(&mut self, id: &str) {
        self.map.remove(id);
        self.order.retain(|b| b != id);
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Batch> {
        self.map.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Batch> {
        self.map.get_mut(id)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Batch> {
        self.map.values()
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.order.iter().cloned().collect()
    }

    /// Output bytes held over all batches.
    pub(crate) fn bytes(&self) -> usize {
        self.map.values().map(Batch::bytes).sum()
    }

    /// How many more output bytes a command of batch `id` may add: its own cap
    /// ([`ExeUnitLimits::max_output`]), and what the budget leaves once every finished batch
    /// could be forgotten (those still running are never forgotten).
    pub(crate) fn room(&self, already: usize) -> usize {
        let running: usize = self
            .map
            .values()
            .filter(|b| !b.done)
            .map(Batch::bytes)
            .sum();
        self.limits
            .max_output
            .saturating_sub(already)
            .min(self.limits.output_budget.saturating_sub(running))
    }

    /// Forgets finished batches, oldest first, that are older than the TTL, beyond the count,
    /// or needed to bring the bytes within the budget. Returns how many were forgotten.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let mut finished = self.map.values().filter(|b| b.done).count();
        let mut bytes = self.bytes();
        let mut forgotten = Vec::new();
        for id in &self.order {
            let Some(batch) = self.map.get(id) else {
                continue;
            };
            let Some(finished_at) = batch.finished_at else {
                continue;
            };
            let old = now.saturating_duration_since(finished_at) >= self.limits.finished_ttl;
            if old || finished > self.limits.max_finished || bytes > self.limits.output_budget {
                finished -= 1;
                bytes -= batch.bytes();
                forgotten.push(id.clone());
            }
        }
        for id in &forgotten {
            self.remove(id);
        }
        forgotten.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use ya_client_model::activity::{CommandOutput, RuntimeEvent, RuntimeEventKind};

    use super::*;

    fn limits() -> ExeUnitLimits {
        ExeUnitLimits {
            max_commands: 3,
            max_pending: 2,
            max_output: 10,
            output_budget: 25,
            max_finished: 2,
            finished_ttl: Duration::from_secs(60),
            max_calls: 1,
        }
    }

    fn script(n: usize) -> Vec<ExeScriptCommand> {
        (0..n)
            .map(|_| ExeScriptCommand::Run {
                entry_point: "LOGS".into(),
                args: vec![],
                capture: None,
            })
            .collect()
    }

    /// Runs command 0 of `id` with `n` bytes of stdout (kept and streamed: 2n bytes held).
    fn output(batches: &mut Batches, id: &str, n: usize) {
        let batch = batches.get_mut(id).unwrap();
        let command = batch.commands[0].clone();
        batch.handle(RuntimeEvent::started(id.into(), 0, command));
        batch.handle(RuntimeEvent::new(
            id.into(),
            0,
            RuntimeEventKind::StdOut(CommandOutput::Bin(vec![b'x'; n])),
        ));
    }

    #[test]
    fn scripts_are_taken_within_the_limits() {
        let mut b = Batches::new(limits());
        let cases: [(&str, usize, Result<(), Refusal>); 5] = [
            ("a", 3, Ok(())),
            ("a", 1, Err(Refusal::Exists("a".into()))),
            ("b", 4, Err(Refusal::TooManyCommands { got: 4, max: 3 })),
            ("b", 1, Ok(())),
            ("c", 1, Err(Refusal::TooManyPending { max: 2 })),
        ];
        for (id, n, expected) in cases {
            assert_eq!(b.admit(id, script(n)), expected, "{id} with {n}");
        }
        // A finished batch no longer counts as pending.
        b.get_mut("a").unwrap().finish(Instant::now());
        assert_eq!(b.admit("c", script(1)), Ok(()));
        assert_eq!(b.ids(), ["a", "b", "c"]);
        let message = Refusal::TooManyCommands { got: 65, max: 64 }.to_string();
        assert!(message.contains("at most 64 commands"), "{message}");
    }

    #[test]
    fn finished_batches_are_forgotten_by_age_count_and_bytes_oldest_first() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let mut b = Batches::new(ExeUnitLimits {
            max_pending: 10,
            ..limits()
        });
        for (id, at) in [("a", 0), ("b", 10), ("c", 20)] {
            b.admit(id, script(1)).unwrap();
            output(&mut b, id, 2); // 4 bytes held each
            b.get_mut(id).unwrap().finish(secs(at));
        }
        b.admit("running", script(1)).unwrap();
        // Three finished, two allowed: the oldest goes.
        assert_eq!(b.expire(secs(30)), 1);
        assert_eq!(b.ids(), ["b", "c", "running"]);
        // b is 60 s old at 70 s.
        assert_eq!(b.expire(secs(70)), 1);
        assert_eq!(b.ids(), ["c", "running"]);
        // Over the budget (25): finished ones go, a running one never does.
        output(&mut b, "running", 10); // 20 bytes held: 24 in all
        assert_eq!(b.expire(secs(71)), 0);
        b.admit("d", script(1)).unwrap();
        output(&mut b, "d", 1);
        b.get_mut("d").unwrap().finish(secs(71)); // 26 in all
        assert_eq!(b.expire(secs(72)), 1);
        assert_eq!(b.ids(), ["running", "d"]);
        assert_eq!(b.bytes(), 22);
    }

    #[test]
    fn room_is_the_command_cap_and_what_running_batches_leave_of_the_budget() {
        let mut b = Batches::new(limits());
        b.admit("a", script(1)).unwrap();
        assert_eq!(b.room(0), 10);
        assert_eq!(b.room(7), 3);
        assert_eq!(b.room(12), 0);
        output(&mut b, "a", 10); // 20 of 25 held by a running batch
        assert_eq!(b.room(0), 5);
        // Once finished, it could be forgotten: the whole cap is available again.
        b.get_mut("a").unwrap().finish(Instant::now());
        assert_eq!(b.room(0), 10);
    }
}
