//! What may go to the node, decided call by call, the same for HTTP and WebSocket: batch size,
//! the rate limit (each call counts), then each call's method against the policy. Refused calls
//! are answered here with JSON-RPC errors; a batch with some refused calls goes to the node
//! without them, and their errors are added to the node's answer.

use hyper::StatusCode;
use serde_json::value::RawValue;

use crate::jsonrpc::{self, Call, Code, Request};
use crate::meter::Reason;
use crate::Shared;

/// Nothing goes to the node: answer `answer` (None: nothing to answer, the calls were
/// notifications) with `status` (HTTP).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) answer: Option<String>,
}

/// What goes to the node.
#[derive(Debug)]
pub(crate) struct Forward<'a> {
    /// `None`: the request as the client sent it; else a batch without its refused calls.
    pub(crate) body: Option<String>,
    /// The forwarded calls: method, and id (None for notifications).
    pub(crate) calls: Vec<(&'a str, Option<&'a RawValue>)>,
    /// Errors for the refused calls of a batch, to add to the node's answer.
    pub(crate) append: Vec<String>,
}

#[derive(Debug)]
pub(crate) enum Screened<'a> {
    Refuse(Refusal),
    Forward(Forward<'a>),
}

/// The same error for every call that expects an answer: one object for a single call, an array
/// for a batch.
pub(crate) fn answer_all(request: &Request<'_>, code: Code, message: &str) -> Option<String> {
    match request {
        Request::Single(call) => Some(jsonrpc::error(call.id, code, message)),
        Request::Batch(calls) => {
            let errors: Vec<String> = calls
                .iter()
                .filter_map(|c| c.id.map(|id| jsonrpc::error(Some(id), code, message)))
                .collect();
            (!errors.is_empty()).then(|| format!("[{}]", errors.join(",")))
        }
    }
}

fn refuse(status: StatusCode, answer: Option<String>) -> Screened<'static> {
    Screened::Refuse(Refusal { status, answer })
}

/// The verdict on one call: Ok with its method, or the error to answer with.
fn verdict<'a>(shared: &Shared, call: &'a Call<'a>) -> Result<&'a str, (Reason, Code, String)> {
    let Some(method) = call.method.as_deref() else {
        return Err((
            Reason::Invalid,
            Code::InvalidRequest,
            "invalid request: expected a JSON-RPC call with a method name of A-Z, a-z, 0-9 and _"
                .into(),
        ));
    };
    shared
        .policy
        .check(method, call.params)
        .map(|()| method)
        .map_err(|denied| (Reason::Method, Code::MethodNotAllowed, denied.0))
}

pub(crate) fn screen<'a>(shared: &Shared, request: &'a Request<'a>) -> Screened<'a> {
    let calls = request.calls();
    let limits = &shared.limits;
    if let Request::Batch(batch) = request {
        if batch.is_empty() {
            shared.meter.refused(Reason::Invalid, 1);
            let answer = jsonrpc::error(None, Code::InvalidRequest, "invalid request: empty batch");
            return refuse(StatusCode::BAD_REQUEST, Some(answer));
        }
        if batch.len() > limits.max_batch as usize {
            shared.meter.refused(Reason::Batch, batch.len() as u64);
            let message = format!(
                "limit exceeded: a batch of {} calls is over this endpoint's limit of {}",
                batch.len(),
                limits.max_batch
            );
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                answer_all(request, Code::LimitExceeded, &message),
            );
        }
    }
    if !shared.limiter.take(calls.len()) {
        shared.meter.refused(Reason::Rate, calls.len() as u64);
        let message = format!(
            "limit exceeded: over this endpoint's {} requests per second (burst {})",
            limits.requests_per_sec, limits.burst
        );
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            answer_all(request, Code::LimitExceeded, &message),
        );
    }
    let verdicts: Vec<_> = calls.iter().map(|c| verdict(shared, c)).collect();
    for v in &verdicts {
        if let Err((reason, _, _)) = v {
            shared.meter.refused(*reason, 1);
        }
    }
    let forwarded: Vec<(&str, Option<&RawValue>)> = calls
        .iter()
        .zip(&verdicts)
        .filter_map(|(c, v)| v.as_ref().ok().map(|m| (*m, c.id)))
        .collect();
    let errors = || -> Vec<String> {
        calls
            .iter()
            .zip(&verdicts)
            .filter_map(|(c, v)| match (v, c.id) {
                (Err((_, code, message)), Some(id)) => {
                    Some(jsonrpc::error(Some(id), *code, message))
                }
                _ => None,
            })
            .collect()
    };
    match request {
        Request::Single(call) => match &verdicts[0] {
            Ok(_) => Screened::Forward(Forward {
                body: None,
                calls: forwarded,
                append: Vec::new(),
            }),
            Err((_, code, message)) => {
                // A refused notification is still refused, silently: HTTP wants an answer, so it
                // gets the error without an id.
                let answer = jsonrpc::error(call.id, *code, message);
                let status = match code {
                    Code::InvalidRequest => StatusCode::BAD_REQUEST,
                    _ => StatusCode::OK,
                };
                refuse(status, Some(answer))
            }
        },
        Request::Batch(_) if forwarded.len() == calls.len() => Screened::Forward(Forward {
            body: None,
            calls: forwarded,
            append: Vec::new(),
        }),
        Request::Batch(_) if forwarded.is_empty() => {
            let errors = errors();
            let answer = (!errors.is_empty()).then(|| format!("[{}]", errors.join(",")));
            refuse(StatusCode::OK, answer)
        }
        Request::Batch(batch) => {
            let kept: Vec<&str> = batch
                .iter()
                .zip(&verdicts)
                .filter(|(_, v)| v.is_ok())
                .map(|(c, _)| c.raw.get())
                .collect();
            Screened::Forward(Forward {
                body: Some(format!("[{}]", kept.join(","))),
                calls: forwarded,
                append: errors(),
            })
        }
    }
}

/// The node's answer with the errors of refused batch calls added.
pub(crate) fn merge(node_answer: &[u8], append: &[String]) -> Vec<u8> {
    if append.is_empty() {
        return node_answer.to_vec();
    }
    let text = std::str::from_utf8(node_answer).unwrap_or_default();
    let mut items: Vec<&str> = match text.trim() {
        "" => Vec::new(),
        t if t.starts_with('[') => match serde_json::from_str::<Vec<&RawValue>>(t) {
            Ok(elements) => elements.into_iter().map(RawValue::get).collect(),
            Err(_) => vec![t],
        },
        t => vec![t],
    };
    items.extend(append.iter().map(String::as_str));
    format!("[{}]", items.join(",")).into_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn merged_answers_keep_every_element() {
        let errors = vec![r#"{"id":2,"error":{}}"#.to_owned()];
        let m = merge(br#"[{"id":1,"result":1}]"#, &errors);
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["id"], 2);
        assert_eq!(merge(b"", &errors), br#"[{"id":2,"error":{}}]"#.to_vec());
        assert_eq!(merge(b"[1]", &[]), b"[1]".to_vec());
        let odd: serde_json::Value =
            serde_json::from_slice(&merge(br#"{"error":"batch refused"}"#, &errors)).unwrap();
        assert_eq!(odd.as_array().unwrap().len(), 2);
    }
}
