//! The event fan-out behind `GET /events`: one feed per owner with open streams. A feed reads its
//! owner's new transitions from the store once per change (and every few seconds, for transitions
//! another server wrote) and hands them to every stream of that owner; a stream reads the store
//! itself only to replay what it missed (`Last-Event-ID`, or after falling behind). Progress
//! updates are routed to the owner's feed only. Streams are capped per user, and end when their
//! session is revoked (at once on this server; within [`RECHECK`] when another server revoked
//! it) or expires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use erigolem_store::{EventRecord, Store};
use tokio::sync::{broadcast, oneshot, Notify};

use crate::routes::events::Progress;

/// How often a feed looks for transitions nobody told it about and re-checks its sessions.
pub(crate) const RECHECK: Duration = Duration::from_secs(5);
/// Events read per store query.
const BATCH: i64 = 100;
/// Events and progress updates buffered per stream; a stream further behind catches up from the
/// store (events) or skips (progress: each update supersedes the last).
const BUFFER: usize = 256;

/// The user already has as many streams open as allowed.
#[derive(Debug)]
pub(crate) struct TooManyStreams(pub(crate) usize);

#[derive(Debug)]
pub(crate) struct Hub {
    feeds: Mutex<HashMap<String, Feed>>,
    store: Store,
    max_streams: usize,
    next_stream: AtomicU64,
}

#[derive(Debug)]
struct Feed {
    events: broadcast::Sender<EventRecord>,
    progress: broadcast::Sender<Progress>,
    wake: Arc<Notify>,
    /// The newest event id sent to the streams.
    sent_upto: i64,
    streams: HashMap<u64, Stream>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Stream {
    token_hash: String,
    /// Dropped to end the stream.
    _close: oneshot::Sender<()>,
}

/// One open stream's end of its owner's feed; leaving the feed when dropped.
#[derive(Debug)]
pub(crate) struct Subscription {
    hub: Arc<Hub>,
    owner: String,
    id: u64,
    /// Events with ids above this reach [`Subscription::events`]; older ones are in the store.
    pub(crate) sent_upto: i64,
    pub(crate) events: broadcast::Receiver<EventRecord>,
    pub(crate) progress: broadcast::Receiver<Progress>,
    /// Resolves when the stream must end (logout, revoked session, shutdown).
    pub(crate) closed: oneshot::Receiver<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(&self.owner, |streams| {
            streams.remove(&self.id);
        });
    }
}

impl Hub {
    pub(crate) fn new(store: Store, max_streams: usize) -> Arc<Self> {
        Arc::new(Self {
            feeds: Mutex::default(),
            store,
            max_streams,
            next_stream: AtomicU64::new(0),
        })
    }

    /// Joins `owner`'s feed (starting it if need be) for a stream of session `token_hash`.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        owner: &str,
        token_hash: &str,
    ) -> Result<Subscription, SubscribeError> {
        loop {
            if let Some(sub) = self.attach(owner, token_hash, None)? {
                return Ok(sub);
            }
            // No feed yet: it starts after the newest event now in the store.
            let latest = self.store.latest_event_id(owner).await?;
            if let Some(sub) = self.attach(owner, token_hash, Some(latest))? {
                return Ok(sub);
            }
        }
    }

    /// Attaches to the feed; creates it (starting after `start`) if there is none and `start` is
    /// given. `Ok(None)`: no feed and no `start`.
    fn attach(
        self: &Arc<Self>,
        owner: &str,
        token_hash: &str,
        start: Option<i64>,
    ) -> Result<Option<Subscription>, SubscribeError> {
        let mut feeds = self.lock();
        if !feeds.contains_key(owner) {
            let Some(start) = start else {
                return Ok(None);
            };
            let wake = Arc::new(Notify::new());
            let task = tokio::spawn(run_feed(
                Arc::downgrade(self),
                owner.to_owned(),
                start,
                wake.clone(),
            ));
            feeds.insert(
                owner.to_owned(),
                Feed {
                    events: broadcast::channel(BUFFER).0,
                    progress: broadcast::channel(BUFFER).0,
                    wake,
                    sent_upto: start,
                    streams: HashMap::new(),
                    task,
                },
            );
        }
        let feed = feeds.get_mut(owner).ok_or(SubscribeError::Gone)?;
        if feed.streams.len() >= self.max_streams {
            return Err(SubscribeError::TooMany(TooManyStreams(self.max_streams)));
        }
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = oneshot::channel();
        feed.streams.insert(
            id,
            Stream {
                token_hash: token_hash.to_owned(),
                _close: close,
            },
        );
        let sub = Subscription {
            hub: self.clone(),
            owner: owner.to_owned(),
            id,
            sent_upto: feed.sent_upto,
            events: feed.events.subscribe(),
            progress: feed.progress.subscribe(),
            closed,
        };
        set_gauge(&feeds);
        Ok(Some(sub))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Feed>> {
        // A panic while holding the lock leaves the map consistent (every change is one call).
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` to `owner`'s streams; a feed left without streams stops.
    fn leave(&self, owner: &str, change: impl FnOnce(&mut HashMap<u64, Stream>)) {
        let mut feeds = self.lock();
        if let Some(feed) = feeds.get_mut(owner) {
            change(&mut feed.streams);
            if feed.streams.is_empty() {
                feeds.remove(owner);
            }
        }
        set_gauge(&feeds);
    }

    /// `owner` has a new transition in the store.
    pub(crate) fn notify(&self, owner: &str) {
        if let Some(feed) = self.lock().get(owner) {
            feed.wake.notify_one();
        }
    }

    /// A running node's progress, for its owner's streams.
    pub(crate) fn progress(&self, progress: Progress) {
        if let Some(feed) = self.lock().get(&progress.owner) {
            let _ = feed.progress.send(progress);
        }
    }

    /// Ends the streams of session `token_hash` (logout).
    pub(crate) fn close_session(&self, owner: &str, token_hash: &str) {
        self.leave(owner, |streams| {
            streams.retain(|_, s| s.token_hash != token_hash);
        });
    }

    /// Ends every stream (shutdown).
    pub(crate) fn close_all(&self) {
        let mut feeds = self.lock();
        feeds.clear();
        set_gauge(&feeds);
    }
}

fn set_gauge(feeds: &HashMap<String, Feed>) {
    let open: usize = feeds.values().map(|f| f.streams.len()).sum();
    metrics::gauge!("erigolem_event_streams").set(open as f64);
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SubscribeError {
    #[error("at most {} event streams per user", .0 .0)]
    TooMany(TooManyStreams),
    #[error("the feed ended while joining it")]
    Gone,
    #[error("store: {0}")]
    Store(#[from] erigolem_store::StoreError),
}

/// One owner's feed: sends each new event once to all of the owner's streams; every [`RECHECK`]
/// it also ends streams whose session is no longer live in the store.
async fn run_feed(hub: Weak<Hub>, owner: String, mut after: i64, wake: Arc<Notify>) {
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.tick().await;
    // First round at once: a transition recorded while the feed was being set up woke nobody.
    let mut sessions_due = false;
    loop {
        let Some(hub) = hub.upgrade() else { return };
        loop {
            let batch = match hub.store.events(&owner, after, BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(%owner, "event feed: {e}");
                    break;
                }
            };
            let Some(last) = batch.last().map(|e| e.id) else {
                break;
            };
            {
                let mut feeds = hub.lock();
                let Some(feed) = feeds.get_mut(&owner) else {
                    return;
                };
                for event in batch {
                    let _ = feed.events.send(event);
                }
                feed.sent_upto = last;
            }
            after = last;
        }
        if sessions_due {
            let hashes: Vec<String> = match hub.lock().get(&owner) {
                Some(feed) => {
                    let mut h: Vec<String> = feed
                        .streams
                        .values()
                        .map(|s| s.token_hash.clone())
                        .collect();
                    h.sort();
                    h.dedup();
                    h
                }
                None => return,
            };
            match hub
                .store
                .live_sessions(&hashes, erigolem_store::now_ms())
                .await
            {
                Ok(live) => hub.leave(&owner, |streams| {
                    streams.retain(|_, s| live.contains(&s.token_hash));
                }),
                Err(e) => tracing::warn!(%owner, "event feed: checking sessions: {e}"),
            }
        }
        drop(hub);
        sessions_due = tokio::select! {
            _ = wake.notified() => false,
            _ = recheck.tick() => true,
        };
    }
}
