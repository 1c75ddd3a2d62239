//! One exe-script batch: its commands, what each produced, and the events a stream replays —
//! kept the way yagna's exe-unit keeps them (`state.rs`, `output.rs`), so results read the same,
//! and counted in bytes, so that [`crate::batches::Batches`] can bound what an activity holds.

use std::time::Instant;

use chrono::{DateTime, Utc};
use ya_client_model::activity::{
    CaptureFormat, CaptureMode, CapturePart, CommandOutput, CommandResult, ExeScriptCommand,
    ExeScriptCommandResult, ExeScriptCommandState, RuntimeEvent, RuntimeEventKind,
};

#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) commands: Vec<ExeScriptCommand>,
    /// One entry per started command, in order.
    results: Vec<CommandState>,
    /// No command will run any more: all ran, one failed, or the batch was aborted.
    pub(crate) done: bool,
    /// When it became done.
    pub(crate) finished_at: Option<Instant>,
    /// Every event streamed so far: a stream opened late still sees the whole batch.
    history: Vec<RuntimeEvent>,
    /// Output bytes held (in the results and in the history).
    bytes: usize,
}

impl Batch {
    pub(crate) fn new(commands: Vec<ExeScriptCommand>) -> Self {
        Self {
            commands,
            results: Vec::new(),
            done: false,
            finished_at: None,
            history: Vec::new(),
            bytes: 0,
        }
    }

    /// Output bytes this batch holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether command `idx` has finished.
    pub(crate) fn finished(&self, idx: usize) -> bool {
        self.results
            .get(idx)
            .is_some_and(|state| state.result.is_some())
    }

    /// Records `event` and forwards it to the streams (output only where its capture streams).
    pub(crate) fn handle(&mut self, event: RuntimeEvent) {
        let idx = event.index;
        if idx >= self.commands.len() {
            return;
        }
        while self.results.len() <= idx {
            let command = &self.commands[self.results.len()];
            self.results.push(CommandState::for_command(command));
        }
        let state = &mut self.results[idx];
        let forward = match &event.kind {
            RuntimeEventKind::Started { .. } => Some(event),
            RuntimeEventKind::Finished {
                return_code,
                message,
            } => {
                state.date = Utc::now();
                state.message = message.clone();
                state.result = Some(match return_code {
                    0 => CommandResult::Ok,
                    _ => CommandResult::Error,
                });
                Some(event)
            }
            RuntimeEventKind::StdOut(out) => {
                let written = state.stdout.write(output_bytes(out));
                self.bytes += written.as_ref().map_or(0, output_len);
                written
                    .filter(|_| state.stdout.stream)
                    .map(|o| RuntimeEvent {
                        kind: RuntimeEventKind::StdOut(o),
                        ..event
                    })
            }
            RuntimeEventKind::StdErr(out) => {
                let written = state.stderr.write(output_bytes(out));
                self.bytes += written.as_ref().map_or(0, output_len);
                written
                    .filter(|_| state.stderr.stream)
                    .map(|o| RuntimeEvent {
                        kind: RuntimeEventKind::StdErr(o),
                        ..event
                    })
            }
        };
        if let Some(event) = forward {
            if let RuntimeEventKind::StdOut(o) | RuntimeEventKind::StdErr(o) = &event.kind {
                self.bytes += output_len(o);
            }
            self.history.push(event);
        }
    }

    /// Event `i` of what streams see: a stream reads them one by one, from the batch's start
    /// (yagna's exe-unit streams only the events after the subscription, so a stream opened
    /// right after `Exec` may miss the start; here it never does), and ends once the batch is
    /// done and it read them all.
    pub(crate) fn event(&self, i: usize) -> Option<RuntimeEvent> {
        self.history.get(i).cloned()
    }

    /// Marks the batch done (its streams end once they read what there is).
    pub(crate) fn finish(&mut self, now: Instant) {
        if !self.done {
            self.done = true;
            self.finished_at = Some(now);
        }
    }

    /// The command that has started and not finished, if any.
    pub(crate) fn running_command(&self) -> Option<ExeScriptCommandState> {
        let (idx, state) = self
            .results
            .iter()
            .enumerate()
            .find(|(_, s)| s.result.is_none())?;
        let mut command = ExeScriptCommandState::from(self.commands.get(idx)?.clone());
        command.progress = state.message.clone();
        Some(command)
    }

    /// The results of the finished commands, up to `cmd_idx` (or all), as yagna's exe-unit
    /// gives them: output only for `cmd_idx` when it is given (for all otherwise), and
    /// `is_batch_finished` on the last one asked for or on an error.
    pub(crate) fn results(&self, cmd_idx: Option<usize>) -> Vec<ExeScriptCommandResult> {
        let last_idx = cmd_idx.unwrap_or_else(|| self.commands.len().saturating_sub(1));
        self.results
            .iter()
            .enumerate()
            .take_while(|(idx, s)| *idx <= last_idx && s.result.is_some())
            .filter_map(|(idx, s)| {
                let result = s.result?;
                let output = cmd_idx.is_none_or(|i| i == idx);
                Some(ExeScriptCommandResult {
                    index: idx as u32,
                    result,
                    stdout: output.then(|| s.stdout.output()).flatten(),
                    stderr: output.then(|| s.stderr.output()).flatten(),
                    message: s.message.clone(),
                    is_batch_finished: idx == last_idx || result == CommandResult::Error,
                    event_date: s.date,
                })
            })
            .collect()
    }
}

#[derive(Debug)]
struct CommandState {
    result: Option<CommandResult>,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    message: Option<String>,
    date: DateTime<Utc>,
}

impl CommandState {
    fn for_command(command: &ExeScriptCommand) -> Self {
        let (stdout, stderr) = match command {
            // yagna's exe-unit discards the output of a `run` that names no capture; this
            // runtime's commands exist for their output (STATUS, HEALTH, …), so such a `run`
            // captures everything, as the other commands do.
            ExeScriptCommand::Run {
                capture: Some(capture),
                ..
            } => (
                CapturedOutput::from(capture.stdout.clone()),
                CapturedOutput::from(capture.stderr.clone()),
            ),
            _ => (CapturedOutput::all(), CapturedOutput::all()),
        };
        Self {
            result: None,
            stdout,
            stderr,
            message: None,
            date: Utc::now(),
        }
    }
}

/// What is kept of one output stream of a command (yagna's `CapturedOutput`).
#[derive(Debug)]
struct CapturedOutput {
    stream: bool,
    format: CaptureFormat,
    head: Buffer,
    tail: Buffer,
}

impl CapturedOutput {
    fn all() -> Self {
        Self {
            stream: true,
            format: CaptureFormat::default(),
            head: Buffer::All(Vec::new()),
            tail: Buffer::Discard,
        }
    }

    fn discard() -> Self {
        Self {
            stream: false,
            format: CaptureFormat::default(),
            head: Buffer::Discard,
            tail: Buffer::Discard,
        }
    }

    fn output(&self) -> Option<CommandOutput> {
        let mut bytes = self.head.as_slice().to_vec();
        bytes.extend_from_slice(self.tail.as_slice());
        if bytes.is_empty() {
            return None;
        }
        Some(match self.format {
            CaptureFormat::Bin => CommandOutput::Bin(bytes),
            CaptureFormat::Str => CommandOutput::Str(match String::from_utf8(bytes) {
                Ok(s) => s,
                // As yagna does: bytes as Latin-1 characters.
                Err(e) => e.as_bytes().iter().map(|&b| b as char).collect(),
            }),
        })
    }

    /// Keeps what the capture keeps of `bytes`; returns the part to stream.
    fn write(&mut self, bytes: &[u8]) -> Option<CommandOutput> {
        let head = self.head.write(bytes);
        let tail = self.tail.write(bytes);
        let kept = head.or(tail)?;
        Some(match self.format {
            CaptureFormat::Str => CommandOutput::Str(String::from_utf8_lossy(kept).into_owned()),
            CaptureFormat::Bin => CommandOutput::Bin(kept.to_vec()),
        })
    }
}

impl From<Option<CaptureMode>> for CapturedOutput {
    fn from(mode: Option<CaptureMode>) -> Self {
        match mode {
            None => Self::discard(),
            Some(CaptureMode::AtEnd { part, format }) => {
                let (head, tail) = match part {
                    Some(CapturePart::Head(limit)) => (Buffer::capped(limit), Buffer::Discard),
                    Some(CapturePart::Tail(limit)) => (Buffer::Discard, Buffer::ring(limit)),
                    Some(CapturePart::HeadTail(limit)) => {
                        let head_limit = limit.div_ceil(2);
                        (Buffer::capped(head_limit), Buffer::ring(limit - head_limit))
                    }
                    None => (Buffer::All(Vec::new()), Buffer::Discard),
                };
                Self {
                    stream: false,
                    format: format.unwrap_or_default(),
                    head,
                    tail,
                }
            }
            Some(CaptureMode::Stream { limit, format }) => Self {
                stream: true,
                format: format.unwrap_or_default(),
                head: match limit {
                    Some(limit) => Buffer::capped(limit),
                    None => Buffer::All(Vec::new()),
                },
                tail: Buffer::Discard,
            },
        }
    }
}

#[derive(Debug)]
enum Buffer {
    All(Vec<u8>),
    /// The first `limit` bytes.
    Capped(Vec<u8>, usize),
    /// The last `limit` bytes.
    Ring(Vec<u8>, usize),
    Discard,
}

impl Buffer {
    fn capped(limit: usize) -> Self {
        if limit == 0 {
            return Self::Discard;
        }
        Self::Capped(Vec::new(), limit)
    }

    fn ring(limit: usize) -> Self {
        if limit == 0 {
            return Self::Discard;
        }
        Self::Ring(Vec::new(), limit)
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Self::All(v) | Self::Capped(v, _) | Self::Ring(v, _) => v,
            Self::Discard => &[],
        }
    }

    /// Appends what this buffer keeps of `bytes`; returns that part.
    fn write<'b>(&mut self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        if bytes.is_empty() {
            return None;
        }
        match self {
            Self::All(v) => {
                v.extend_from_slice(bytes);
                Some(bytes)
            }
            Self::Capped(v, limit) => {
                let room = limit.saturating_sub(v.len());
                let kept = &bytes[..bytes.len().min(room)];
                if kept.is_empty() {
                    return None;
                }
                v.extend_from_slice(kept);
                Some(kept)
            }
            Self::Ring(v, limit) => {
                let kept = &bytes[bytes.len().saturating_sub(*limit)..];
                v.extend_from_slice(kept);
                let excess = v.len().saturating_sub(*limit);
                v.drain(..excess);
                Some(kept)
            }
            Self::Discard => None,
        }
    }
}

fn output_bytes(output: &CommandOutput) -> &[u8] {
    match output {
        CommandOutput::Bin(b) => b,
        CommandOutput::Str(s) => s.as_bytes(),
    }
}

fn output_len(output: &CommandOutput) -> usize {
    output_bytes(output).len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ya_client_model::activity::Capture;

    fn capture(stdout: Option<CaptureMode>) -> Capture {
        Capture {
            stdout,
            stderr: None,
        }
    }

    fn run(capture: Option<Capture>) -> ExeScriptCommand {
        ExeScriptCommand::Run {
            entry_point: "STATUS".into(),
            args: vec![],
            capture,
        }
    }

    fn event(idx: usize, kind: RuntimeEventKind) -> RuntimeEvent {
        RuntimeEvent::new("b".into(), idx, kind)
    }

    fn finished(code: i32, message: Option<&str>) -> RuntimeEventKind {
        RuntimeEventKind::Finished {
            return_code: code,
            message: message.map(str::to_owned),
        }
    }

    #[test]
    fn results_as_yagna_gives_them() {
        let commands = vec![
            ExeScriptCommand::Deploy {
                net: vec![],
                hosts: Default::default(),
            },
            run(None),
            run(None),
        ];
        let mut batch = Batch::new(commands.clone());
        assert!(batch.results(None).is_empty());
        batch.handle(event(
            0,
            RuntimeEventKind::Started {
                command: commands[0].clone(),
            },
        ));
        assert!(batch.running_command().is_some());
        assert!(batch.results(None).is_empty());
        batch.handle(event(
            0,
            RuntimeEventKind::StdOut(CommandOutput::Str("{}".into())),
        ));
        batch.handle(event(0, finished(0, None)));
        assert!(batch.running_command().is_none());
        batch.handle(event(
            1,
            RuntimeEventKind::Started {
                command: commands[1].clone(),
            },
        ));
        batch.handle(event(
            1,
            RuntimeEventKind::StdOut(CommandOutput::Bin(b"ab".to_vec())),
        ));
        batch.handle(event(
            1,
            RuntimeEventKind::StdOut(CommandOutput::Bin(b"c".to_vec())),
        ));
        batch.handle(event(
            1,
            RuntimeEventKind::StdErr(CommandOutput::Bin(b"oops".to_vec())),
        ));
        batch.handle(event(1, finished(3, Some("failed"))));

        let all = batch.results(None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].result, CommandResult::Ok);
        assert_eq!(all[0].stdout, Some(CommandOutput::Str("{}".into())));
        assert_eq!(all[0].stderr, None);
        assert!(!all[0].is_batch_finished);
        assert_eq!(all[1].result, CommandResult::Error);
        assert_eq!(all[1].stdout, Some(CommandOutput::Str("abc".into())));
        assert_eq!(all[1].stderr, Some(CommandOutput::Str("oops".into())));
        assert_eq!(all[1].message.as_deref(), Some("failed"));
        assert!(all[1].is_batch_finished);
        // Streamed output is held twice: in the results and in what streams replay.
        assert_eq!(batch.bytes(), 2 * (2 + 3 + 4));

        // With a command index: up to it, output only for it.
        let first = batch.results(Some(0));
        assert_eq!(first.len(), 1);
        assert!(first[0].is_batch_finished);
        let second = batch.results(Some(1));
        assert_eq!(second[0].stdout, None);
        assert_eq!(second[1].stdout, Some(CommandOutput::Str("abc".into())));
    }

    #[test]
    fn captures() {
        let head = |n| {
            Some(CaptureMode::AtEnd {
                part: Some(CapturePart::Head(n)),
                format: None,
            })
        };
        let mut batch = Batch::new(vec![run(Some(capture(head(3))))]);
        batch.handle(event(
            0,
            RuntimeEventKind::StdOut(CommandOutput::Str("hello".into())),
        ));
        batch.handle(event(0, finished(0, None)));
        assert_eq!(
            batch.results(None)[0].stdout,
            Some(CommandOutput::Str("hel".into()))
        );
        assert_eq!(batch.results(None)[0].stderr, None);
        // At-end capture: the output is not streamed, the end is; only what is kept counts.
        assert!(matches!(
            batch.event(0).unwrap().kind,
            RuntimeEventKind::Finished { .. }
        ));
        assert_eq!(batch.event(1), None);
        assert_eq!(batch.bytes(), 3);
        batch.finish(Instant::now());
        assert!(batch.done && batch.finished_at.is_some());

        let mut tail = CapturedOutput::from(Some(CaptureMode::AtEnd {
            part: Some(CapturePart::Tail(4)),
            format: Some(CaptureFormat::Bin),
        }));
        tail.write(b"abcdef");
        tail.write(b"gh");
        assert_eq!(tail.output(), Some(CommandOutput::Bin(b"efgh".to_vec())));

        let mut both = CapturedOutput::from(Some(CaptureMode::AtEnd {
            part: Some(CapturePart::HeadTail(5)),
            format: None,
        }));
        both.write(b"0123456789");
        assert_eq!(both.output(), Some(CommandOutput::Str("01289".into())));
    }
}
