//! Only as much JSON-RPC as policy and metering need: the method, id and params of each call of a
//! request (one call or a batch), and whether an answer is a result, an error or a notification.
//! Everything else passes through as the bytes the client sent.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// One call of a request.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    /// `None`: not a JSON-RPC call (not an object, no string `method`, a method name outside
    /// `[A-Za-z0-9_]{1,128}`).
    pub(crate) method: Option<Cow<'a, str>>,
    /// `None` for a notification (no `id` member): it gets no answer.
    pub(crate) id: Option<&'a RawValue>,
    pub(crate) params: Option<&'a RawValue>,
    /// The whole call as sent, to forward it unchanged.
    pub(crate) raw: &'a RawValue,
}

/// A request body: one call, or a batch of them.
#[derive(Debug)]
pub(crate) enum Request<'a> {
    Single(Call<'a>),
    Batch(Vec<Call<'a>>),
}

impl<'a> Request<'a> {
    pub(crate) fn calls(&self) -> &[Call<'a>] {
        match self {
            Request::Single(c) => std::slice::from_ref(c),
            Request::Batch(calls) => calls,
        }
    }
}

/// The body is not JSON (or not an object or array).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse error: {0}")]
pub(crate) struct ParseError(pub(crate) String);

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    /// Present (`null` included) or absent: `Some(raw)` / `None`.
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn call(raw: &RawValue) -> Call<'_> {
    // Not an object, a non-string method, a duplicated member: not a call. (A duplicated
    // `method` is refused so that the guard and the node can never read different methods.)
    match serde_json::from_str::<Wire<'_>>(raw.get()) {
        Ok(w) => Call {
            method: w.method.filter(|m| erigolem_primitives::is_method_name(m)),
            id: w.id,
            params: w.params,
            raw,
        },
        Err(_) => Call {
            method: None,
            id: id_of_invalid(raw),
            params: None,
            raw,
        },
    }
}

/// The `id` of an object that is not a valid call, so its error can still carry it.
fn id_of_invalid(raw: &RawValue) -> Option<&RawValue> {
    #[derive(Deserialize)]
    struct OnlyId<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        id: Option<&'a RawValue>,
    }
    serde_json::from_str::<OnlyId<'_>>(raw.get())
        .ok()
        .and_then(|o| o.id)
}

/// Parses a request body. A batch's elements are parsed one by one, so one bad element does not
/// spoil the others.
pub(crate) fn parse(body: &[u8]) -> Result<Request<'_>, ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| ParseError(e.to_string()))?;
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            let elements: Vec<&RawValue> =
                serde_json::from_str(text).map_err(|e| ParseError(e.to_string()))?;
            Ok(Request::Batch(elements.into_iter().map(call).collect()))
        }
        Some(b'{') => {
            let raw: &RawValue =
                serde_json::from_str(text).map_err(|e| ParseError(e.to_string()))?;
            Ok(Request::Single(call(raw)))
        }
        _ => Err(ParseError("expected a JSON-RPC object or batch".into())),
    }
}

/// What a message from the node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Result,
    Error,
    /// A subscription notification (`method`, no `id`).
    Notification,
    /// Not a JSON-RPC answer.
    Unknown,
}

/// The kind of one answer object and its raw `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head<'a> {
    pub(crate) kind: Kind,
    pub(crate) id: Option<&'a [u8]>,
}

/// Reads the top-level members of one answer object until it knows its kind and id, skipping
/// values without parsing them (a `result` of megabytes costs one pass over its bytes at most,
/// and nothing when `id` comes first, as geth, Erigon and anvil write it).
pub(crate) fn head(msg: &[u8]) -> Head<'_> {
    scan_head(msg).unwrap_or(Head {
        kind: Kind::Unknown,
        id: None,
    })
}

fn scan_head(msg: &[u8]) -> Option<Head<'_>> {
    let mut s = Scanner { b: msg, i: 0 };
    s.ws();
    s.eat(b'{')?;
    let mut kind = None;
    let mut id = None;
    let mut method = false;
    loop {
        s.ws();
        if s.peek()? == b'}' {
            break;
        }
        let key = s.string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        let start = s.i;
        match key {
            b"result" => kind = Some(Kind::Result),
            b"error" => kind = Some(Kind::Error),
            b"method" => method = true,
            _ => {}
        }
        s.value()?;
        if key == b"id" {
            id = Some(&msg[start..s.i]);
        }
        if kind.is_some() && id.is_some() {
            break;
        }
        s.ws();
        match s.peek()? {
            b',' => s.i += 1,
            b'}' => break,
            _ => return None,
        }
    }
    let kind = match (kind, method) {
        (Some(k), _) => k,
        (None, true) if id.is_none() => Kind::Notification,
        _ => Kind::Unknown,
    };
    Some(Head { kind, id })
}

/// The heads of a batch answer (an array of answer objects); one unknown head for anything else.
pub(crate) fn heads(msg: &[u8]) -> Vec<Head<'_>> {
    let trimmed = msg.iter().position(|b| !b.is_ascii_whitespace());
    if trimmed.map(|i| msg[i]) != Some(b'[') {
        return vec![head(msg)];
    }
    let Ok(text) = std::str::from_utf8(msg) else {
        return vec![head(msg)];
    };
    match serde_json::from_str::<Vec<&RawValue>>(text) {
        Ok(elements) => elements
            .into_iter()
            .map(|e| {
                let h = head(e.get().as_bytes());
                // Re-borrow the id from `msg` (the element borrows from `text`, i.e. `msg`).
                Head {
                    kind: h.kind,
                    id: h.id.map(|id| subslice(msg, id)),
                }
            })
            .collect(),
        Err(_) => vec![Head {
            kind: Kind::Unknown,
            id: None,
        }],
    }
}

/// `part` (a slice of `whole`) as a slice with `whole`'s lifetime.
fn subslice<'a>(whole: &'a [u8], part: &[u8]) -> &'a [u8] {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    &whole[start..start + part.len()]
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }
    /// A string's contents (escapes left as they are).
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.peek()? {
                b'"' => {
                    let s = &self.b[start..self.i];
                    self.i += 1;
                    return Some(s);
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
    }
    /// Skips one value: a string, or a scalar, or a nested object/array (by counting brackets
    /// outside strings).
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }
}

/// JSON-RPC error codes the guard answers with (EIP-1474 where it has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    Parse = -32700,
    InvalidRequest = -32600,
    MethodNotAllowed = -32601,
    Internal = -32603,
    /// EIP-1474 "Limit exceeded".
    LimitExceeded = -32005,
    /// Access refused (credentials, origin, address).
    Unauthorized = -32000,
}

/// One error answer: `{"jsonrpc":"2.0","id":…,"error":{"code":…,"message":…}}`.
pub(crate) fn error(id: Option<&RawValue>, code: Code, message: &str) -> String {
    let id = id.map(RawValue::get).unwrap_or("null");
    let message = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into());
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{},"message":{message}}}}}"#,
        code as i64
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn methods(body: &str) -> Vec<Option<String>> {
        parse(body.as_bytes())
            .unwrap()
            .calls()
            .iter()
            .map(|c| c.method.as_deref().map(str::to_owned))
            .collect()
    }

    #[test]
    fn single_calls_and_batches() {
        assert_eq!(
            methods(r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#),
            [Some("eth_blockNumber".to_owned())]
        );
        assert_eq!(
            methods(
                r#" [{"id":1,"method":"eth_chainId"}, {"id":2,"method":"anvil_reset"}, 7, {"id":3}]"#
            ),
            [
                Some("eth_chainId".to_owned()),
                Some("anvil_reset".to_owned()),
                None,
                None
            ]
        );
        let req = parse(br#"{"method":"eth_subscribe","params":["newHeads"]}"#).unwrap();
        let c = &req.calls()[0];
        assert!(c.id.is_none(), "no id: a notification");
        assert_eq!(c.params.unwrap().get(), r#"["newHeads"]"#);
        let req = parse(br#"{"id":null,"method":"eth_chainId"}"#).unwrap();
        assert_eq!(req.calls()[0].id.unwrap().get(), "null");
    }

    #[test]
    fn what_could_smuggle_a_method_is_not_a_call() {
        // Escapes are decoded: the policy sees what the node sees.
        assert_eq!(
            methods(r#"{"id":1,"method":"anvil\u005freset"}"#),
            [Some("anvil_reset".to_owned())]
        );
        for body in [
            r#"{"id":1,"method":"eth_chainId","method":"anvil_reset"}"#,
            r#"{"id":1,"method":["anvil_reset"]}"#,
            r#"{"id":1,"method":"eth_call "}"#,
            r#"{"id":1,"method":"debug.traceCall"}"#,
            r#"{"id":1,"method":""}"#,
        ] {
            assert_eq!(methods(body), [None], "{body}");
        }
        let req = parse(br#"{"id":7,"method":1}"#).unwrap();
        assert_eq!(
            req.calls()[0].id.unwrap().get(),
            "7",
            "the error keeps the id"
        );
        for bad in ["", "null", "\"x\"", "{", "[{}", "{} {}", "\u{0}"] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn heads_of_answers() {
        let cases: &[(&str, Kind, Option<&str>)] = &[
            (
                r#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#,
                Kind::Result,
                Some("1"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":"a\"b","error":{"code":-32601,"message":"x"}}"#,
                Kind::Error,
                Some(r#""a\"b""#),
            ),
            (
                r#"{"result":{"logs":[{"data":"}]\"error\""}]},"id":7,"jsonrpc":"2.0"}"#,
                Kind::Result,
                Some("7"),
            ),
            (
                r#" { "jsonrpc" : "2.0" , "method":"eth_subscription","params":{"result":{}}}"#,
                Kind::Notification,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":null,"error":{}}"#,
                Kind::Error,
                Some("null"),
            ),
            ("<html>", Kind::Unknown, None),
            (r#"{"id":1}"#, Kind::Unknown, Some("1")),
            (r#"{"id":1,"result":"#, Kind::Unknown, None),
        ];
        for (msg, kind, id) in cases {
            let h = head(msg.as_bytes());
            assert_eq!(h.kind, *kind, "{msg}");
            assert_eq!(h.id.map(|i| std::str::from_utf8(i).unwrap()), *id, "{msg}");
        }
        let batch = heads(br#"[{"id":1,"result":1},{"id":2,"error":{"code":1}}]"#);
        assert_eq!(
            batch.iter().map(|h| h.kind).collect::<Vec<_>>(),
            [Kind::Result, Kind::Error]
        );
        assert_eq!(batch[1].id, Some(&b"2"[..]));
        assert_eq!(heads(b"[1,").len(), 1);
    }

    #[test]
    fn errors_are_json_rpc() {
        let raw = RawValue::from_string("\"x\"".into()).unwrap();
        let e = error(
            Some(&raw),
            Code::MethodNotAllowed,
            "no \"anvil_reset\" here",
        );
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["id"], "x");
        assert_eq!(v["error"]["code"], -32601);
        assert_eq!(v["error"]["message"], "no \"anvil_reset\" here");
        let v: serde_json::Value =
            serde_json::from_str(&error(None, Code::LimitExceeded, "slow down")).unwrap();
        assert!(v["id"].is_null());
    }
}
