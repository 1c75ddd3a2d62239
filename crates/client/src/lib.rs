//! Typed client of the Erigolem REST API (`/api/v1`), used by the `erigolem` CLI, with Sign-In with
//! Ethereum from a local secp256k1 key (hex or an encrypted JSON keystore).

use std::path::Path;
use std::time::Duration;

use k256::ecdsa::SigningKey;
use serde_json::{json, Value};
use sha3::{Digest, Keccak256};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with its error envelope (`code` is `None` for a code this client
    /// does not know, from a newer server, or an answer without the envelope).
    #[error("{message} ({}, HTTP {status})", code.map_or("no code", ErrorCode::as_str))]
    Api {
        status: u16,
        code: Option<ErrorCode>,
        message: String,
    },
    #[error("cannot reach {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("invalid private key: {0}")]
    Key(String),
    #[error("keystore {path}: {reason}")]
    Keystore { path: String, reason: String },
    #[error("cannot build the sign-in message: {0}")]
    Message(String),
}

type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The error envelope of an answer, as far as it can be read.
fn api_error(status: u16, body: &Value) -> ClientError {
    let detail = &body["error"];
    ClientError::Api {
        status,
        code: serde_json::from_value(detail["code"].clone()).ok(),
        message: detail["message"].as_str().unwrap_or_default().to_owned(),
    }
}

/// A secp256k1 key: EIP-55 address and EIP-191 `personal_sign`.
#[derive(Clone)]
pub struct Wallet {
    key: SigningKey,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

impl Wallet {
    /// From a hex private key (with or without `0x`).
    pub fn from_hex(hex_key: &str) -> Result<Self> {
        let bytes = hex::decode(hex_key.trim().trim_start_matches("0x"))
            .map_err(|e| ClientError::Key(e.to_string()))?;
        let key = SigningKey::from_slice(&bytes).map_err(|e| ClientError::Key(e.to_string()))?;
        Ok(Self { key })
    }

    /// From an encrypted JSON keystore (Web3 Secret Storage, as geth and foundry write them).
    pub fn from_keystore(path: &Path, password: &str) -> Result<Self> {
        let bytes =
            eth_keystore::decrypt_key(path, password).map_err(|e| ClientError::Keystore {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let key = SigningKey::from_slice(&bytes).map_err(|e| ClientError::Key(e.to_string()))?;
        Ok(Self { key })
    }

    pub fn address_bytes(&self) -> [u8; 20] {
        let point = self.key.verifying_key().to_encoded_point(false);
        let hash = Keccak256::digest(&point.as_bytes()[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        out
    }

    /// The EIP-55 checksummed address.
    pub fn address(&self) -> String {
        siwe::eip55(&self.address_bytes())
    }

    /// EIP-191 `personal_sign`: r ‖ s ‖ v (v = 27/28), 0x-prefixed hex.
    pub fn personal_sign(&self, message: &str) -> Result<String> {
        let prefixed = format!("\x19Ethereum Signed Message:\n{}{message}", message.len());
        let digest = Keccak256::new_with_prefix(prefixed.as_bytes());
        let (sig, recovery) = self
            .key
            .sign_digest_recoverable(digest)
            .map_err(|e| ClientError::Key(e.to_string()))?;
        let mut bytes = sig.to_bytes().to_vec();
        bytes.push(27 + recovery.to_byte());
        Ok(format!("0x{}", hex::encode(bytes)))
    }
}

pub use erigolem_api::{
    CreateNode, Credentials, ErrorCode, LoginRequest, LoginResponse, MeResponse, NetworkOffer,
    Node, NodeEvent, NodeLogs, NodeUsage, NonceResponse, TransitionEvent, UsageWindow,
};

/// A signed-in (or not yet) connection to one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: None,
        }
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: self.base.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let body: Value = if status == 204 {
            Value::Null
        } else {
            resp.json().await.unwrap_or(Value::Null)
        };
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(api_error(status, &body))
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let v = self
            .send(self.http.get(format!("{}/api/v1{path}", self.base)))
            .await?;
        serde_json::from_value(v).map_err(|e| ClientError::Message(e.to_string()))
    }

    async fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: Value) -> Result<T> {
        let v = self
            .send(
                self.http
                    .post(format!("{}/api/v1{path}", self.base))
                    .json(&body),
            )
            .await?;
        serde_json::from_value(v).map_err(|e| ClientError::Message(e.to_string()))
    }

    /// Signs in: asks for a nonce, signs an EIP-4361 message for this server, and keeps the token.
    /// Returns the bearer token.
    pub async fn sign_in(&mut self, wallet: &Wallet, chain_id: u64) -> Result<String> {
        let NonceResponse { nonce, .. } = self.get("/auth/nonce").await?;
        let base = url::Url::parse(&self.base).map_err(|e| ClientError::Message(e.to_string()))?;
        let host = base
            .host_str()
            .ok_or_else(|| ClientError::Message("server URL has no host".into()))?;
        let domain = match base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let now = time::OffsetDateTime::now_utc();
        let message = siwe::Message {
            domain: domain
                .parse()
                .map_err(|e| ClientError::Message(format!("domain: {e}")))?,
            address: wallet.address_bytes(),
            statement: Some("Sign in to Erigolem.".to_owned()),
            uri: base
                .origin()
                .ascii_serialization()
                .parse()
                .map_err(|e| ClientError::Message(format!("uri: {e:?}")))?,
            version: siwe::Version::V1,
            chain_id,
            nonce,
            issued_at: now.into(),
            // The session lasts until this at most (and the server's own limit, 24 h by default).
            expiration_time: Some((now + time::Duration::hours(24)).into()),
            not_before: None,
            request_id: None,
            resources: Vec::new(),
        }
        .to_string();
        let signature = wallet.personal_sign(&message)?;
        let login: LoginResponse = self
            .post("/auth/login", json!(LoginRequest { message, signature }))
            .await?;
        let token = login.token;
        self.token = Some(token.clone());
        Ok(token)
    }

    /// The signed-in address.
    pub async fn me(&self) -> Result<String> {
        let me: MeResponse = self.get("/me").await?;
        Ok(me.address)
    }

    pub async fn networks(&self) -> Result<Vec<NetworkOffer>> {
        self.get("/networks").await
    }

    pub async fn nodes(&self) -> Result<Vec<Node>> {
        self.get("/nodes").await
    }

    pub async fn node(&self, id: &str) -> Result<Node> {
        self.get(&format!("/nodes/{id}")).await
    }

    pub async fn create(&self, node: &CreateNode) -> Result<Node> {
        self.post("/nodes", serde_json::to_value(node).unwrap_or_default())
            .await
    }

    pub async fn stop(&self, id: &str) -> Result<Node> {
        self.post(&format!("/nodes/{id}/stop"), json!({})).await
    }

    pub async fn rotate(&self, id: &str) -> Result<Node> {
        self.post(&format!("/nodes/{id}/credentials/rotate"), json!({}))
            .await
    }

    /// What the node's endpoint served over `window`.
    pub async fn usage(&self, id: &str, window: UsageWindow) -> Result<NodeUsage> {
        self.get(&format!("/nodes/{id}/usage?window={}", window.as_str()))
            .await
    }

    /// The node's last `lines` log lines (secrets redacted by the server).
    pub async fn logs(&self, id: &str, lines: usize) -> Result<NodeLogs> {
        self.get(&format!("/nodes/{id}/logs?lines={lines}")).await
    }

    /// The node's last `lines` log lines, then each batch of new ones as the node writes them,
    /// until it stops.
    pub async fn follow_logs(
        &self,
        id: &str,
        lines: usize,
    ) -> Result<impl futures::Stream<Item = Result<NodeLogs>>> {
        self.sse(
            &format!("/nodes/{id}/logs?lines={lines}&follow=true"),
            "lines",
            None,
        )
        .await
    }

    /// The `kind` events of a server-sent event stream at `path`, parsed; `last` resumes after
    /// that event id (`Last-Event-ID`).
    async fn sse<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        kind: &'static str,
        last: Option<i64>,
    ) -> Result<impl futures::Stream<Item = Result<T>>> {
        use eventsource_stream::Eventsource;
        use futures::StreamExt;
        let url = format!("{}/api/v1{path}", self.base);
        // No overall timeout: the stream stays open (the server sends keep-alives).
        let mut req = reqwest::Client::new().get(&url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(last) = last {
            req = req.header("Last-Event-ID", last.to_string());
        }
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(api_error(status, &body));
        }
        Ok(resp
            .bytes_stream()
            .eventsource()
            .filter_map(move |event| async move {
                match event {
                    Ok(e) if e.event == kind => Some(
                        serde_json::from_str(&e.data)
                            .map_err(|e| ClientError::Message(e.to_string())),
                    ),
                    Ok(_) => None,
                    Err(e) => Some(Err(ClientError::Message(format!("event stream: {e}")))),
                }
            }))
    }

    /// The caller's node transitions as they happen (server-sent events), from now on.
    pub async fn events(&self) -> Result<impl futures::Stream<Item = Result<TransitionEvent>>> {
        self.events_after(None).await
    }

    /// [`Client::events`], resuming after transition `last` (`Last-Event-ID`): what happened
    /// since comes first, in order — from whichever server of the same database answers.
    pub async fn events_after(
        &self,
        last: Option<i64>,
    ) -> Result<impl futures::Stream<Item = Result<TransitionEvent>>> {
        self.sse("/events", "transition", last).await
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        self.send(self.http.delete(format!("{}/api/v1/nodes/{id}", self.base)))
            .await
            .map(drop)
    }

    async fn put<T: serde::de::DeserializeOwned>(&self, path: &str, body: Value) -> Result<T> {
        let v = self
            .send(
                self.http
                    .put(format!("{}/api/v1{path}", self.base))
                    .json(&body),
            )
            .await?;
        serde_json::from_value(v).map_err(|e| ClientError::Message(e.to_string()))
    }

    /// The node's alert rules, active and recent alerts.
    pub async fn alerts(&self, id: &str) -> Result<erigolem_api::NodeAlerts> {
        self.get(&format!("/nodes/{id}/alerts")).await
    }

    pub async fn set_alert_rules(
        &self,
        id: &str,
        rules: &erigolem_api::AlertRules,
    ) -> Result<erigolem_api::NodeAlerts> {
        self.put(
            &format!("/nodes/{id}/alerts"),
            serde_json::to_value(rules).unwrap_or_default(),
        )
        .await
    }

    pub async fn webhook(&self) -> Result<erigolem_api::Webhook> {
        self.get("/me/webhook").await
    }

    /// Sets the webhook URL; the answer has the secret when it is new (or rotated).
    pub async fn set_webhook(
        &self,
        url: &str,
        rotate_secret: bool,
    ) -> Result<erigolem_api::Webhook> {
        self.put(
            "/me/webhook",
            json!(erigolem_api::SetWebhook {
                url: url.to_owned(),
                rotate_secret
            }),
        )
        .await
    }

    pub async fn delete_webhook(&self) -> Result<()> {
        self.send(self.http.delete(format!("{}/api/v1/me/webhook", self.base)))
            .await
            .map(drop)
    }

    pub async fn test_webhook(&self) -> Result<erigolem_api::WebhookDelivery> {
        self.post("/me/webhook/test", json!({})).await
    }

    pub async fn deliveries(&self) -> Result<Vec<erigolem_api::WebhookDelivery>> {
        self.get("/me/webhook/deliveries").await
    }
}
