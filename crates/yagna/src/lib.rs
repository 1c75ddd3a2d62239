//! A typed client for the yagna daemon's REST API: market (offers, demands, proposals, agreements),
//! activity (provider events, requestor exec) and payment (debit notes, invoices, allocations).
//! Models come from `ya-client-model` 0.7 (what yagna 0.17.6 speaks); HTTP is reqwest on tokio, so
//! nothing here needs actix.

pub mod props;
pub mod requestor;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

pub use bigdecimal::BigDecimal;
pub use chrono::{self, DateTime, Utc};
pub use ya_client_model as model;

use model::activity::provider_event::ProviderEvent as ActivityEvent;
use model::activity::{ExeScriptCommandResult, ExeScriptRequest};
use model::market::{
    Agreement, AgreementProposal, NewDemand, NewOffer, ProviderEvent, Reason, RequestorEvent,
};
use model::payment::{
    Acceptance, Allocation, DebitNote, DebitNoteEvent, Invoice, InvoiceEvent, NewAllocation,
    NewDebitNote, NewInvoice, Rejection,
};

/// Slack added to the HTTP timeout of long-polling calls, on top of the server-side timeout.
const LONG_POLL_SLACK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum YagnaError {
    #[error("yagna at {url} is unreachable: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("yagna answered {status} to {method} {path}: {message}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    #[error("yagna's answer to {path} did not parse: {source}")]
    Decode {
        path: String,
        source: serde_json::Error,
    },
}

impl YagnaError {
    /// The HTTP status yagna answered, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            YagnaError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The identity behind an app key (`GET /me`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Me {
    pub identity: String,
    pub name: String,
}

/// One yagna daemon, reached with one app key.
#[derive(Debug, Clone)]
pub struct Yagna {
    base: url::Url,
    app_key: String,
    http: reqwest::Client,
}

impl Yagna {
    pub fn new(base: url::Url, app_key: impl Into<String>) -> Self {
        Self {
            base,
            app_key: app_key.into(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<Option<Value>, YagnaError> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|_| YagnaError::Status {
                method: method.clone(),
                path: path.to_owned(),
                status: StatusCode::BAD_REQUEST,
                message: "bad path".into(),
            })?;
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.app_key)
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| YagnaError::Unreachable {
                url: self.base.to_string(),
                source,
            })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|source| YagnaError::Unreachable {
                url: self.base.to_string(),
                source,
            })?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(text);
            return Err(YagnaError::Status {
                method,
                path: path.to_owned(),
                status,
                message,
            });
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| YagnaError::Decode {
                path: path.to_owned(),
                source,
            })
    }

    async fn json<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, YagnaError> {
        let value = self
            .call(method, path, body, timeout)
            .await?
            .unwrap_or(Value::Null);
        serde_json::from_value(value).map_err(|source| YagnaError::Decode {
            path: path.to_owned(),
            source,
        })
    }

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), YagnaError> {
        self.call(method, path, body, DEFAULT_TIMEOUT)
            .await
            .map(|_| ())
    }

    /// Long-polled event lists: an empty answer (or yagna's 408 for "no events yet") is no events.
    async fn events<T: DeserializeOwned>(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<Vec<T>, YagnaError> {
        match self
            .json::<Vec<T>, ()>(Method::GET, path, None, timeout + LONG_POLL_SLACK)
            .await
        {
            Err(YagnaError::Status {
                status: StatusCode::REQUEST_TIMEOUT,
                ..
            }) => Ok(Vec::new()),
            other => other,
        }
    }

    pub async fn me(&self) -> Result<Me, YagnaError> {
        self.json::<Me, ()>(Method::GET, "/me", None, DEFAULT_TIMEOUT)
            .await
    }

    // ---- market, provider side ----

    pub async fn subscribe_offer(&self, offer: &NewOffer) -> Result<String, YagnaError> {
        self.json(
            Method::POST,
            "/market-api/v1/offers",
            Some(offer),
            DEFAULT_TIMEOUT,
        )
        .await
    }

    pub async fn unsubscribe_offer(&self, subscription: &str) -> Result<(), YagnaError> {
        self.send::<()>(
            Method::DELETE,
            &format!("/market-api/v1/offers/{subscription}"),
            None,
        )
        .await
    }

    pub async fn offer_events(
        &self,
        subscription: &str,
        timeout: Duration,
        max: u32,
    ) -> Result<Vec<ProviderEvent>, YagnaError> {
        self.events(
            &format!(
                "/market-api/v1/offers/{subscription}/events?timeout={}&maxEvents={max}",
                secs(timeout)
            ),
            timeout,
        )
        .await
    }

    /// Answers a requestor's proposal with a counter-proposal (our offer); returns its id.
    pub async fn counter_offer(
        &self,
        subscription: &str,
        proposal_id: &str,
        offer: &NewOffer,
    ) -> Result<String, YagnaError> {
        self.json(
            Method::POST,
            &format!("/market-api/v1/offers/{subscription}/proposals/{proposal_id}"),
            Some(offer),
            DEFAULT_TIMEOUT,
        )
        .await
    }

    pub async fn reject_proposal_as_provider(
        &self,
        subscription: &str,
        proposal_id: &str,
        reason: &str,
    ) -> Result<(), YagnaError> {
        let reason = Reason::new(reason);
        self.send(
            Method::POST,
            &format!("/market-api/v1/offers/{subscription}/proposals/{proposal_id}/reject"),
            Some(&reason),
        )
        .await
    }

    /// Approves an agreement and waits up to `timeout` for the requestor to see it.
    pub async fn approve_agreement(
        &self,
        agreement_id: &str,
        timeout: Duration,
    ) -> Result<(), YagnaError> {
        self.call::<()>(
            Method::POST,
            &format!(
                "/market-api/v1/agreements/{agreement_id}/approve?timeout={}",
                secs(timeout).max(1)
            ),
            None,
            timeout + LONG_POLL_SLACK,
        )
        .await
        .map(|_| ())
    }

    pub async fn reject_agreement(
        &self,
        agreement_id: &str,
        reason: &str,
    ) -> Result<(), YagnaError> {
        self.send(
            Method::POST,
            &format!("/market-api/v1/agreements/{agreement_id}/reject"),
            Some(&Reason::new(reason)),
        )
        .await
    }

    // ---- market, both sides ----

    pub async fn agreement(&self, agreement_id: &str) -> Result<Agreement, YagnaError> {
        self.json::<_, ()>(
            Method::GET,
            &format!("/market-api/v1/agreements/{agreement_id}"),
            None,
            DEFAULT_TIMEOUT,
        )
        .await
    }

    pub async fn terminate_agreement(
        &self,
        agreement_id: &str,
        reason: &str,
    ) -> Result<(), YagnaError> {
        self.send(
            Method::POST,
            &format!("/market-api/v1/agreements/{agreement_id}/terminate"),
            Some(&Reason::new(reason)),
        )
        .await
    }

    // ---- market, requestor side ----

    pub async fn subscribe_demand(&self, demand: &NewDemand) -> Result<String, YagnaError> {
        self.json(
            Method::POST,
            "/market-api/v1/demands",
            Some(demand),
            DEFAULT_TIMEOUT,
        )
        .await
    }

    pub async fn unsubscribe_demand(&self, subscription: &str) -> Result<(), YagnaError> {
        self.send::<()>(
            Method::DELETE,
            &format!("/market-api/v1/demands/{subscription}"),
            None,
        )
        .await
    }

    pub async fn demand_events(
        &self,
        subscription: &str,
        timeout: Duration,
        max: u32,
    ) -> Result<Vec<RequestorEvent>, YagnaError> {
        self.events(
            &format!(
                "/market-api/v1/demands/{subscription}/events?timeout={}&maxEvents={max}",
                secs(timeout)
            ),
            timeout,
        )
        .await
    }

    pub async fn counter_demand(
        &self,
        subscription: &str,
        proposal_id: &str,
        demand: &NewDemand,
    ) -> Result<String, YagnaError> {
        self.json(
            Method::POST,
            &format!("/market-api/v1/demands/{subscription}/proposals/{proposal_id}"),
            Some(demand),
            DEFAULT_TIMEOUT,
        )
        .await
    }

    pub async fn create_agreement(
        &self,
        proposal_id: &str,
        valid_to: DateTime<Utc>,
    ) -> Result<String, YagnaError> {
        let body = AgreementProposal::new(proposal_id.to_owned(), valid_to);
        self.json(
            Method::POST,
            "/market-api/v1/agreements",
            Some(&body),
            DEFAULT_TIMEOUT,
        )
        .await
    }

    pub async fn confirm_agreement(&self, agreement_id: &str) -> Result<(), YagnaError> {
        self.send::<()>(
            Method::POST,
            &format!("/market-api/v1/agreements/{agreement_id}/confirm"),
            None,
        )
        .await
    }

    /// Waits for the provider's approval; an error carries its rejection.
    pub async fn wait_for_approval(
        &self,
        agreement_id: &str,
        timeout: Duration,
    ) -> Result<(), YagnaError> {
        self.call::<()>(
            Method::POST,
            &format!(
                "/market-api/v1/agreements/{agreement_id}/wait?timeout={}",
                secs(timeout).max(1)
            ),
            None,
            timeout + LONG_POLL_SLACK,
        )
        .await
        .map(|_| ())
    }

    // ---- activity ----

    /// Provider side: CreateActivity / DestroyActivity after `after`.
    pub async fn activity_events(
        &self,
        after: DateTime<Utc>,
        timeout: Duration,
        max: u32,
    ) -> Result<Vec<ActivityEvent>, YagnaError> {
        self.events(
            &format!(
                "/activity-api/v1/events?afterTimestamp={}&timeout={}&maxEvents={max}",
                after_param(after),
                secs(timeout)
            ),
            timeout,
        )
        .await
    }

    /// Requestor side: creates an activity on the agreement; returns its id.
    pub async fn create_activity(
        &self,
        agreement_id: &str,
        timeout: Duration,
    ) -> Result<String, YagnaError> {
        let value: Value = self
            .json(
                Method::POST,
                &format!("/activity-api/v1/activity?timeout={}", secs(timeout).max(1)),
                Some(&json!({"agreementId": agreement_id})),
                timeout + LONG_POLL_SLACK,
            )
            .await?;
        // yagna answers either the bare id or `{"activityId": …}` (with credentials).
        match &value {
            Value::String(id) => Ok(id.clone()),
            _ => value
                .get("activityId")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| YagnaError::Status {
                    method: Method::POST,
                    path: "/activity-api/v1/activity".into(),
                    status: StatusCode::OK,
                    message: format!("no activity id in {value}"),
                }),
        }
    }

    pub async fn destroy_activity(&self, activity_id: &str) -> Result<(), YagnaError> {
        self.send::<()>(
            Method::DELETE,
            &format!("/activity-api/v1/activity/{activity_id}"),
            None,
        )
        .await
    }

    /// Requestor side: sends an exe script (JSON array of commands); returns the batch id.
    pub async fn exec(&self, activity_id: &str, script: &Value) -> Result<String, YagnaError> {
        let request = ExeScriptRequest::new(script.to_string());
        self.json(
            Method::POST,
            &format!("/activity-api/v1/activity/{activity_id}/exec"),
            Some(&request),
            DEFAULT_TIMEOUT,
        )
        .await
    }

    /// Requestor side: results of a batch so far (waits up to `timeout` for new ones).
    pub async fn exec_results(
        &self,
        activity_id: &str,
        batch_id: &str,
        timeout: Duration,
    ) -> Result<Vec<ExeScriptCommandResult>, YagnaError> {
        self.events(
            &format!(
                "/activity-api/v1/activity/{activity_id}/exec/{batch_id}?timeout={}",
                secs_f(timeout)
            ),
            timeout,
        )
        .await
    }

    pub async fn activity_state(&self, activity_id: &str) -> Result<Value, YagnaError> {
        self.json::<_, ()>(
            Method::GET,
            &format!("/activity-api/v1/activity/{activity_id}/state"),
            None,
            DEFAULT_TIMEOUT,
        )
        .await
    }

    /// The activity's usage as its exe-unit last reported it (`currentUsage` in the order of the
    /// agreement's usage vector).
    pub async fn activity_usage(&self, activity_id: &str) -> Result<Value, YagnaError> {
        self.json::<_, ()>(
            Method::GET,
            &format!("/activity-api/v1/activity/{activity_id}/usage"),
            None,
            DEFAULT_TIMEOUT,
        )
        .await
    }

    // ---- payment, provider side ----

    pub async fn issue_debit_note(&self, note: &NewDebitNote) -> Result<DebitNote, YagnaError> {
        self.json(
            Method::POST,
            "/payment-api/v1/debitNotes",
            Some(note),
            DEFAULT_TIMEOUT,
        )
        .await
    }

    pub async fn send_debit_note(&self, debit_note_id: &str) -> Result<(), YagnaError> {
        self.send::<()>(
            Method::POST,
            &format!("/payment-api/v1/debitNotes/{debit_note_id}/send"),
            None,
        )
        .await
    }

    pub async fn debit_note(&self, debit_note_id: &str) -> Result<DebitNote, YagnaError> {
        self.json::<_, ()>(
            Method::GET,
            &format!("/payment-api/v1/debitNotes/{debit_note_id}"),
            None,
            DEFAULT_TIMEOUT,
        )
        .await
    }

    pub async fn issue_invoice(&self, invoice: &NewInvoice) -> Result<Invoice, YagnaError> {
        self.json(
            Method::POST,
            "/payment-api/v1/invoices",
            Some(invoice),
            DEFAULT_TIMEOUT,
        )
        .await
    }

    pub async fn send_invoice(&self, invoice_id: &str) -> Result<(), YagnaError> {
        self.send::<()>(
            Method::POST,
            &format!("/payment-api/v1/invoices/{invoice_id}/send"),
            None,
        )
        .await
    }

    pub async fn invoice(&self, invoice_id: &str) -> Result<Invoice, YagnaError> {
        self.json::<_, ()>(
            Method::GET,
            &format!("/payment-api/v1/invoices/{invoice_id}"),
            None,
            DEFAULT_TIMEOUT,
        )
        .await
    }

    // ---- payment, requestor side ----

    pub async fn create_allocation(
        &self,
        allocation: &NewAllocation,
    ) -> Result<Allocation, YagnaError> {
        self.json(
            Method::POST,
            "/payment-api/v1/allocations",
            Some(allocation),
            DEFAULT_TIMEOUT,
        )
        .await
    }

    pub async fn release_allocation(&self, allocation_id: &str) -> Result<(), YagnaError> {
        self.send::<()>(
            Method::DELETE,
            &format!("/payment-api/v1/allocations/{allocation_id}"),
            None,
        )
        .await
    }

    pub async fn invoice_events(
        &self,
        after: DateTime<Utc>,
        timeout: Duration,
    ) -> Result<Vec<InvoiceEvent>, YagnaError> {
        self.events(
            &format!(
                "/payment-api/v1/invoiceEvents?afterTimestamp={}&timeout={}",
                after_param(after),
                secs(timeout)
            ),
            timeout,
        )
        .await
    }

    pub async fn debit_note_events(
        &self,
        after: DateTime<Utc>,
        timeout: Duration,
    ) -> Result<Vec<DebitNoteEvent>, YagnaError> {
        self.events(
            &format!(
                "/payment-api/v1/debitNoteEvents?afterTimestamp={}&timeout={}",
                after_param(after),
                secs(timeout)
            ),
            timeout,
        )
        .await
    }

    pub async fn accept_invoice(
        &self,
        invoice_id: &str,
        acceptance: &Acceptance,
    ) -> Result<(), YagnaError> {
        self.send(
            Method::POST,
            &format!("/payment-api/v1/invoices/{invoice_id}/accept"),
            Some(acceptance),
        )
        .await
    }

    pub async fn reject_debit_note(
        &self,
        debit_note_id: &str,
        rejection: &Rejection,
    ) -> Result<(), YagnaError> {
        self.send(
            Method::POST,
            &format!("/payment-api/v1/debitNotes/{debit_note_id}/reject"),
            Some(rejection),
        )
        .await
    }

    pub async fn reject_invoice(
        &self,
        invoice_id: &str,
        rejection: &Rejection,
    ) -> Result<(), YagnaError> {
        self.send(
            Method::POST,
            &format!("/payment-api/v1/invoices/{invoice_id}/reject"),
            Some(rejection),
        )
        .await
    }

    pub async fn accept_debit_note(
        &self,
        debit_note_id: &str,
        acceptance: &Acceptance,
    ) -> Result<(), YagnaError> {
        self.send(
            Method::POST,
            &format!("/payment-api/v1/debitNotes/{debit_note_id}/accept"),
            Some(acceptance),
        )
        .await
    }
}

/// An event poll's `afterTimestamp`, RFC 3339 with microseconds, URL-encoded.
fn after_param(after: DateTime<Utc>) -> String {
    let text = after.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Timeout of short calls.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

fn secs_f(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}
