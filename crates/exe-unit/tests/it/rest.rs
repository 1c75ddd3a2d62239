//! Minimal yagna REST helpers (reqwest + serde_json): market negotiation, activity events, exe
//! scripts. Deliberately independent of the project's market client.

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use erigolem_test_utils::golem::{YagnaNode, PAYMENT_PLATFORM};
use reqwest::Method;
use serde_json::{json, Value};
use ya_client_model::activity::provider_event::{ProviderEvent, ProviderEventType};

/// One REST call with the node's app key: `(status, JSON body or Null)`.
pub(crate) async fn call(
    node: &YagnaNode,
    method: Method,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .unwrap();
    let mut req = client
        .request(method.clone(), format!("{}{path}", node.api_url))
        .bearer_auth(&node.app_key);
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", node.name));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(if text.trim().is_empty() {
        Value::Null
    } else {
        Value::String(text)
    });
    (status, value)
}

/// A call that must succeed.
pub(crate) async fn ok(
    node: &YagnaNode,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Value {
    let (status, value) = call(node, method.clone(), path, body, Duration::from_secs(30)).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path} on {}: {status} {value}",
        node.name
    );
    value
}

fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Polls a market event list until `pick` takes one of its events (others are dropped).
async fn market_event(
    node: &YagnaNode,
    events: &str,
    what: &str,
    mut pick: impl FnMut(&Value) -> Option<Value>,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let path = format!("{events}?timeout=1&maxEvents=16");
        let (status, list) = call(node, Method::GET, &path, None, Duration::from_secs(10)).await;
        if status == 200 {
            if let Some(found) = list.as_array().into_iter().flatten().find_map(&mut pick) {
                return found;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{}: no {what} within 30 s",
            node.name
        );
    }
}

fn proposal_in(state: &'static str) -> impl FnMut(&Value) -> Option<Value> {
    move |e| {
        (e["eventType"] == "ProposalEvent" && e["proposal"]["state"] == state)
            .then(|| e["proposal"].clone())
    }
}

/// The usage vector of the test agreements: time, CPU and the runtime's request counter.
pub(crate) const USAGE_VECTOR: [&str; 3] = [
    "golem.usage.duration_sec",
    "golem.usage.cpu_sec",
    "golem.usage.erigolem.requests",
];

/// Offer (provider) and demand (requestor) for runtime `erigon`, countered once each way, then an
/// agreement: created and confirmed by the requestor, approved by the provider. Returns its id.
pub(crate) async fn agreement(requestor: &YagnaNode, provider: &YagnaNode) -> String {
    let nonce = nonce();
    let offer = json!({
        "properties": {
            "golem.node.id.name": provider.name,
            "golem.runtime.name": "erigon",
            "golem.runtime.version": "0.1.0",
            "golem.inf.cpu.threads": 1,
            "golem.com.scheme": "payu",
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": [0.0, 0.0, 0.0, 0.0],
            "golem.com.usage.vector": USAGE_VECTOR,
            format!("golem.com.payment.platform.{PAYMENT_PLATFORM}.address"): provider.node_id,
            "golem.com.payment.protocol.version": 3,
            "golem.com.payment.debit-notes.accept-timeout?": 240,
            "erigolem.test.nonce": nonce,
        },
        "constraints": "(golem.srv.comp.expiration>0)",
    });
    let offer_id = ok(
        provider,
        Method::POST,
        "/market-api/v1/offers",
        Some(&offer),
    )
    .await;
    let offer_id = offer_id.as_str().unwrap().to_owned();
    let expiration = Utc::now().timestamp_millis() + 3_600_000;
    let demand = json!({
        "properties": {
            "golem.node.id.name": requestor.name,
            "golem.srv.comp.expiration": expiration,
            "golem.com.payment.chosen-platform": PAYMENT_PLATFORM,
            format!("golem.com.payment.platform.{PAYMENT_PLATFORM}.address"): requestor.node_id,
        },
        "constraints": format!("(&(golem.runtime.name=erigon)(erigolem.test.nonce={nonce}))"),
    });
    let demand_id = ok(
        requestor,
        Method::POST,
        "/market-api/v1/demands",
        Some(&demand),
    )
    .await;
    let demand_id = demand_id.as_str().unwrap().to_owned();
    let demand_events = format!("/market-api/v1/demands/{demand_id}/events");
    let offer_events = format!("/market-api/v1/offers/{offer_id}/events");

    // The offer reaches the requestor as an initial proposal: answer it with the demand.
    let initial = market_event(
        requestor,
        &demand_events,
        "initial proposal",
        proposal_in("Initial"),
    )
    .await;
    let path = format!(
        "/market-api/v1/demands/{demand_id}/proposals/{}",
        initial["proposalId"].as_str().unwrap()
    );
    ok(requestor, Method::POST, &path, Some(&demand)).await;
    // The provider counters with its offer: a draft at the requestor.
    let theirs = market_event(provider, &offer_events, "the requestor's proposal", |e| {
        (e["eventType"] == "ProposalEvent").then(|| e["proposal"].clone())
    })
    .await;
    let path = format!(
        "/market-api/v1/offers/{offer_id}/proposals/{}",
        theirs["proposalId"].as_str().unwrap()
    );
    ok(provider, Method::POST, &path, Some(&offer)).await;
    let draft = market_event(
        requestor,
        &demand_events,
        "draft proposal",
        proposal_in("Draft"),
    )
    .await;

    let valid_to = rfc3339(Utc::now() + chrono::Duration::hours(1));
    let agreement_id = ok(
        requestor,
        Method::POST,
        "/market-api/v1/agreements",
        Some(&json!({"proposalId": draft["proposalId"], "validTo": valid_to})),
    )
    .await;
    let agreement_id = agreement_id.as_str().unwrap().to_owned();
    ok(
        requestor,
        Method::POST,
        &format!("/market-api/v1/agreements/{agreement_id}/confirm"),
        None,
    )
    .await;
    let theirs = market_event(provider, &offer_events, "the agreement", |e| {
        (e["eventType"] == "AgreementEvent").then(|| e["agreement"].clone())
    })
    .await;
    let provider_agreement = theirs["agreementId"].as_str().unwrap().to_owned();
    let approve = format!("/market-api/v1/agreements/{provider_agreement}/approve?timeout=15");
    let wait = format!("/market-api/v1/agreements/{agreement_id}/wait?timeout=15");
    let long = Duration::from_secs(25);
    let ((approved, a), (waited, w)) = tokio::join!(
        call(provider, Method::POST, &approve, None, long),
        call(requestor, Method::POST, &wait, None, long),
    );
    assert!((200..300).contains(&approved), "approve: {approved} {a}");
    assert!((200..300).contains(&waited), "wait: {waited} {w}");
    // yagna 0.17.6 answers `wait` with an empty 2xx once the provider approved.

    ok(
        provider,
        Method::DELETE,
        &format!("/market-api/v1/offers/{offer_id}"),
        None,
    )
    .await;
    ok(
        requestor,
        Method::DELETE,
        &format!("/market-api/v1/demands/{demand_id}"),
        None,
    )
    .await;
    agreement_id
}

/// The provider's activity events (`GET /activity-api/v1/events`), oldest first.
#[derive(Debug)]
pub(crate) struct ActivityEvents<'a> {
    node: &'a YagnaNode,
    after: chrono::DateTime<Utc>,
}

impl<'a> ActivityEvents<'a> {
    pub(crate) fn new(node: &'a YagnaNode) -> Self {
        Self {
            node,
            after: Utc::now() - chrono::Duration::seconds(60),
        }
    }

    /// The next event of `activity` (any, if None) whose type `pick` takes; earlier ones are
    /// skipped.
    pub(crate) async fn next(
        &mut self,
        pick: impl Fn(&ProviderEvent) -> bool,
        within: Duration,
    ) -> ProviderEvent {
        let deadline = Instant::now() + within;
        loop {
            let after = rfc3339(self.after);
            let path = format!(
                "/activity-api/v1/events?afterTimestamp={}&timeout=1&maxEvents=16",
                after.replace('+', "%2B").replace(':', "%3A")
            );
            let (status, list) =
                call(self.node, Method::GET, &path, None, Duration::from_secs(10)).await;
            // 408: no event yet.
            if status == 200 {
                let events: Vec<ProviderEvent> = serde_json::from_value(list.clone())
                    .unwrap_or_else(|e| panic!("activity events {list}: {e}"));
                for event in events {
                    self.after = self.after.max(event.event_date);
                    if pick(&event) {
                        return event;
                    }
                }
            } else {
                assert_eq!(status, 408, "activity events: {list}");
            }
            assert!(
                Instant::now() < deadline,
                "{}: no such activity event within {within:?}",
                self.node.name
            );
        }
    }
}

pub(crate) fn is_create(event: &ProviderEvent) -> bool {
    matches!(event.event_type, ProviderEventType::CreateActivity { .. })
}

pub(crate) fn is_destroy(event: &ProviderEvent) -> bool {
    matches!(event.event_type, ProviderEventType::DestroyActivity {})
}

/// `POST /activity-api/v1/activity/{id}/exec`: the batch id.
pub(crate) async fn exec(requestor: &YagnaNode, activity_id: &str, script: Value) -> String {
    let body = json!({"text": script.to_string()});
    let batch = ok(
        requestor,
        Method::POST,
        &format!("/activity-api/v1/activity/{activity_id}/exec"),
        Some(&body),
    )
    .await;
    batch.as_str().unwrap().to_owned()
}

/// Polls `GET /activity-api/v1/activity/{id}/exec/{batch}` until the batch is finished (its last
/// result says so); returns the results.
pub(crate) async fn results(
    requestor: &YagnaNode,
    activity_id: &str,
    batch_id: &str,
) -> Vec<Value> {
    let path = format!("/activity-api/v1/activity/{activity_id}/exec/{batch_id}?timeout=2");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut polls = 0;
    loop {
        polls += 1;
        let (status, value) =
            call(requestor, Method::GET, &path, None, Duration::from_secs(10)).await;
        assert_eq!(
            status, 200,
            "poll {polls} of batch {batch_id}: {status} {value}"
        );
        let list = value.as_array().cloned().unwrap_or_default();
        if list.last().is_some_and(|r| r["isBatchFinished"] == true) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "batch {batch_id} unfinished after 90 s: {value}"
        );
    }
}
