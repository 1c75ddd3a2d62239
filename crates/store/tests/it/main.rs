//! Integration tests of erigolem-store, each run against SQLite (a file in a temp dir) and a real
//! PostgreSQL cluster (started by `erigolem_test_utils::postgres`).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use erigolem_lifecycle::{DocumentKind, Glm, LinearPrice};
use erigolem_store::{
    now_ms, DocumentState, Key, KeyFile, NewDeal, NewDocument, NewNode, NewPlan, NodeState,
    Reservation, Reserved, Store, StoreError, SERVER_LEDGER,
};
use erigolem_test_utils::postgres::Postgres;
use serde_json::json;
use sqlx::Row;

/// A store under test, with what it takes to open it again.
struct Db {
    url: String,
    key: Key,
    store: Store,
    _dir: tempfile::TempDir,
    _pg: Option<Postgres>,
}

impl Db {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("erigolem.db").display()
        );
        Self::open(url, dir, None).await
    }

    async fn postgres() -> Self {
        let pg = Postgres::start().await;
        Self::open(pg.url.clone(), tempfile::tempdir().unwrap(), Some(pg)).await
    }

    async fn open(url: String, dir: tempfile::TempDir, pg: Option<Postgres>) -> Self {
        let key = KeyFile::load_or_create(dir.path().join("store.key")).unwrap();
        let store = Store::connect(&url, key.clone()).await.unwrap();
        Self {
            url,
            key,
            store,
            _dir: dir,
            _pg: pg,
        }
    }

    /// Closes the store and opens it again (a server restart).
    async fn restart(&mut self) {
        self.store.close().await;
        self.store = Store::connect(&self.url, self.key.clone()).await.unwrap();
    }
}

/// Runs `async fn $name(db: Db)` once per backend: tests `$name::sqlite` and `$name::postgres`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::Db::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(super::Db::postgres().await).await
            }
        }
    )*};
}

mod alerts;
use alerts::{
    alerts_fire_once_per_episode_with_their_delivery, concurrent_enqueues_and_claims_never_fail,
    deliveries_are_claimed_by_exactly_one_claimer,
};

both!(
    alerts_fire_once_per_episode_with_their_delivery,
    deliveries_are_claimed_by_exactly_one_claimer,
    concurrent_enqueues_and_claims_never_fail,
    usage_rows_stay_bounded,
    nonce_single_use,
    nonce_expired,
    sessions_expire_and_revoke,
    node_lifecycle_and_events,
    illegal_transitions_refused,
    concurrent_transitions_one_wins,
    owner_scoping,
    count_active_and_reconciler_query,
    delete_only_when_down,
    password_encrypted_at_rest,
    restart_keeps_everything,
    transition_from_is_a_compare_and_set,
    plans_allow_a_bounded_number_of_replacements_each_recorded,
    deals_freeze_billing_once_and_survive_a_restart,
    payments_are_reserved_once_and_totals_compare_and_set,
    concurrent_payments_never_exceed_what_was_read,
    provider_text_is_length_capped,
    capped_inserts_race_to_exactly_the_cap,
    nonces_per_client_are_capped,
    purge_removes_old_events_only,
    counts_by_state,
    access_is_kept_with_the_node_and_its_replacement,
);

async fn access_is_kept_with_the_node_and_its_replacement(mut db: Db) {
    let access = json!({"methods": ["eth_blockNumber"], "allow_ips": ["10.0.0.0/8"]});
    let new = NewNode {
        access: Some(access.clone()),
        ..new_node(ALICE, "guarded")
    };
    let (n, _) = db
        .store
        .insert_node_with_plan(&new, &plan("2", 1), None)
        .await
        .unwrap();
    assert_eq!(n.access.as_ref(), Some(&access));
    let plain = db
        .store
        .insert_node(&new_node(ALICE, "plain"))
        .await
        .unwrap();
    db.restart().await;
    let read = db.store.node(&n.id, ALICE).await.unwrap().unwrap();
    assert_eq!(read.access.as_ref(), Some(&access));
    let read = db.store.node(&plain.id, ALICE).await.unwrap().unwrap();
    assert_eq!(read.access, None);
    let next = db
        .store
        .replace_node(&n, &new, "failed")
        .await
        .unwrap()
        .unwrap();
    let listed = db.store.nodes(ALICE).await.unwrap();
    let next = listed.iter().find(|x| x.id == next.id).unwrap();
    assert_eq!(next.access.as_ref(), Some(&access));
}

const ALICE: &str = "0xaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const BOB: &str = "0xbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn new_node(owner: &str, name: &str) -> NewNode {
    NewNode {
        owner: owner.into(),
        name: name.into(),
        network: "sepolia".into(),
        mode: "shared".into(),
        prune: "full".into(),
        access: None,
    }
}

async fn nonce_single_use(db: Db) {
    let now = now_ms();
    for i in 0..20 {
        let nonce = format!("nonce-{i}");
        db.store.put_nonce(&nonce, now + 60_000).await.unwrap();
        let consumers = (0..4).map(|_| {
            let store = db.store.clone();
            let nonce = nonce.clone();
            tokio::spawn(async move { store.consume_nonce(&nonce, now).await.unwrap() })
        });
        let mut wins = 0;
        for c in consumers.collect::<Vec<_>>() {
            wins += c.await.unwrap() as u32;
        }
        assert_eq!(wins, 1, "nonce {nonce}: exactly one consumer wins");
        assert!(!db.store.consume_nonce(&nonce, now).await.unwrap());
    }
    assert!(!db.store.consume_nonce("never-issued", now).await.unwrap());
    // A duplicate nonce is refused (primary key).
    db.store.put_nonce("dup", now + 1000).await.unwrap();
    assert!(matches!(
        db.store.put_nonce("dup", now + 1000).await,
        Err(StoreError::Sqlx(_))
    ));
}

async fn nonce_expired(db: Db) {
    let now = now_ms();
    db.store.put_nonce("old", now - 1).await.unwrap();
    db.store.put_nonce("edge", now).await.unwrap();
    db.store.put_nonce("fresh", now + 60_000).await.unwrap();
    db.store.put_nonce("stale", now - 5).await.unwrap();
    assert!(!db.store.consume_nonce("old", now).await.unwrap());
    assert!(
        !db.store.consume_nonce("edge", now).await.unwrap(),
        "expires_at is exclusive"
    );
    // purge removes the other expired one only.
    assert_eq!(db.store.purge_expired(now).await.unwrap(), 1);
    assert!(db.store.consume_nonce("fresh", now).await.unwrap());
}

async fn sessions_expire_and_revoke(db: Db) {
    let now = now_ms();
    db.store
        .create_session("h1", ALICE, now + 1000)
        .await
        .unwrap();
    db.store
        .create_session("h2", BOB, now + 1000)
        .await
        .unwrap();
    db.store.create_session("h3", BOB, now - 1).await.unwrap();
    let s = db.store.session("h1", now).await.unwrap().unwrap();
    assert_eq!(s.address, ALICE);
    assert_eq!(s.expires_at, now + 1000);
    assert_eq!(
        db.store.session("h1", now + 1000).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(db.store.session("h3", now).await.unwrap(), None, "expired");
    assert_eq!(db.store.session("nope", now).await.unwrap(), None);

    assert!(db.store.revoke_session("h2").await.unwrap());
    assert!(
        !db.store.revoke_session("h2").await.unwrap(),
        "already revoked"
    );
    assert!(!db.store.revoke_session("nope").await.unwrap());
    assert_eq!(db.store.session("h2", now).await.unwrap(), None, "revoked");
    assert!(db.store.session("h1", now).await.unwrap().is_some());

    assert_eq!(
        db.store.purge_expired(now).await.unwrap(),
        2,
        "h2 (revoked) and h3 (expired)"
    );
    assert!(db.store.session("h1", now).await.unwrap().is_some());
    let live = db
        .store
        .live_sessions(&["h1".into(), "h2".into(), "h3".into(), "nope".into()], now)
        .await
        .unwrap();
    assert_eq!(live, ["h1"]);
}

async fn node_lifecycle_and_events(db: Db) {
    let s = &db.store;
    let before = now_ms();
    let n = s.insert_node(&new_node(ALICE, "first")).await.unwrap();
    assert_eq!(n.state, NodeState::Pending);
    assert!(n.created_at >= before && n.updated_at == n.created_at);
    assert_eq!(s.node(&n.id, ALICE).await.unwrap().unwrap(), n);

    let n1 = s
        .transition(&n.id, NodeState::Starting, None)
        .await
        .unwrap();
    assert_eq!(n1.state, NodeState::Starting);
    assert_eq!(n1.stopped_at, None);
    s.set_endpoint(
        &n.id,
        "https://p.example:8545/inst1/",
        Some("wss://p.example:8545/inst1/"),
        "u1",
        "secret-1",
        Some("inst1"),
        Some(&json!({"kind": "local", "pid": 42})),
    )
    .await
    .unwrap();
    let n2 = s.transition(&n.id, NodeState::Running, None).await.unwrap();
    assert_eq!(n2.url.as_deref(), Some("https://p.example:8545/inst1/"));
    assert_eq!(n2.ws_url.as_deref(), Some("wss://p.example:8545/inst1/"));
    assert_eq!(n2.username.as_deref(), Some("u1"));
    assert_eq!(n2.instance.as_deref(), Some("inst1"));
    assert_eq!(n2.backend_ref, Some(json!({"kind": "local", "pid": 42})));

    let sync = json!({"currentBlock": "0x10", "highestBlock": "0x20", "stages": [1, 2]});
    s.set_progress(&n.id, Some(16), Some(sync.clone()))
        .await
        .unwrap();
    let n3 = s.node(&n.id, ALICE).await.unwrap().unwrap();
    assert_eq!(n3.block, Some(16));
    assert_eq!(n3.sync, Some(sync));
    s.set_progress(&n.id, Some(32), None).await.unwrap();
    let n3 = s.node(&n.id, ALICE).await.unwrap().unwrap();
    assert_eq!((n3.block, n3.sync), (Some(32), None));

    s.transition(&n.id, NodeState::Stopping, Some("stopped by user"))
        .await
        .unwrap();
    let done = s.transition(&n.id, NodeState::Stopped, None).await.unwrap();
    assert_eq!(done.state, NodeState::Stopped);
    assert_eq!(done.reason.as_deref(), Some("stopped by user"), "kept");
    assert!(done.stopped_at.is_some());
    assert!(done.updated_at >= done.created_at);

    // Events: one per state entered, in order, with reasons.
    let events = s.events(ALICE, 0, 100).await.unwrap();
    let states: Vec<_> = events.iter().map(|e| e.state).collect();
    use NodeState::*;
    assert_eq!(states, [Pending, Starting, Running, Stopping, Stopped]);
    assert!(events.iter().all(|e| e.node_id == n.id && e.owner == ALICE));
    assert_eq!(events[3].reason.as_deref(), Some("stopped by user"));
    assert!(events
        .windows(2)
        .all(|w| w[0].id < w[1].id && w[0].at <= w[1].at));
    // Paging by id.
    let page = s.events(ALICE, events[1].id, 2).await.unwrap();
    assert_eq!(page, events[2..4]);
    assert!(s.events(ALICE, events[4].id, 10).await.unwrap().is_empty());

    // A failure path with its reason and stopped_at; failed → stopping → stopped is allowed.
    let m = s.insert_node(&new_node(ALICE, "second")).await.unwrap();
    s.transition(&m.id, Starting, None).await.unwrap();
    let f = s
        .transition(&m.id, Failed, Some("no provider"))
        .await
        .unwrap();
    assert_eq!(f.reason.as_deref(), Some("no provider"));
    assert!(f.stopped_at.is_some());
    s.transition(&m.id, Stopping, None).await.unwrap();
    s.transition(&m.id, Stopped, None).await.unwrap();
    let tail = s.events(ALICE, events[4].id, 10).await.unwrap();
    let states: Vec<_> = tail.iter().map(|e| e.state).collect();
    assert_eq!(states, [Pending, Starting, Failed, Stopping, Stopped]);
    assert!(tail.iter().all(|e| e.node_id == m.id));

    // Newest first.
    let list = s.nodes(ALICE).await.unwrap();
    assert_eq!(
        list.iter().map(|n| &n.name[..]).collect::<Vec<_>>(),
        ["second", "first"]
    );
}

async fn illegal_transitions_refused(db: Db) {
    use NodeState::*;
    let s = &db.store;
    let n = s.insert_node(&new_node(ALICE, "n")).await.unwrap();
    let err = s.transition(&n.id, Running, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::IllegalTransition {
                from: Pending,
                to: Running
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "illegal node state transition: pending → running"
    );
    assert!(matches!(
        s.transition(&n.id, Pending, None).await,
        Err(StoreError::IllegalTransition {
            from: Pending,
            to: Pending
        })
    ));
    assert!(matches!(
        s.transition(&n.id, Stopped, None).await,
        Err(StoreError::IllegalTransition {
            from: Pending,
            to: Stopped
        })
    ));
    assert!(matches!(
        s.transition("no-such-node", Starting, None).await,
        Err(StoreError::NotFound)
    ));
    s.transition(&n.id, Stopping, None).await.unwrap();
    s.transition(&n.id, Stopped, None).await.unwrap();
    for to in NodeState::ALL {
        assert!(
            matches!(
                s.transition(&n.id, to, None).await,
                Err(StoreError::IllegalTransition { from: Stopped, .. })
            ),
            "stopped is final ({to})"
        );
    }
    // Nothing recorded for the refused ones.
    assert_eq!(s.events(ALICE, 0, 100).await.unwrap().len(), 3);
    assert_eq!(s.node(&n.id, ALICE).await.unwrap().unwrap().state, Stopped);

    // The table in the docs.
    for from in NodeState::ALL {
        for to in NodeState::ALL {
            let allowed = matches!(
                (from, to),
                (Pending, Starting | Stopping | Failed)
                    | (Starting, Running | Stopping | Failed)
                    | (Running, Stopping | Failed)
                    | (Stopping, Stopped | Failed)
                    | (Failed, Stopping | Stopped)
            );
            assert_eq!(from.can_transition_to(to), allowed, "{from} → {to}");
        }
    }
}

async fn concurrent_transitions_one_wins(db: Db) {
    for _ in 0..10 {
        let n = db
            .store
            .insert_node(&new_node(ALICE, "race"))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let store = db.store.clone();
                let id = n.id.clone();
                let to = if i % 2 == 0 {
                    NodeState::Starting
                } else {
                    NodeState::Failed
                };
                tokio::spawn(async move { store.transition(&id, to, None).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::IllegalTransition { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        // Starting and Failed are both legal from pending; Failed is also legal from starting,
        // so one or two may win — but every win is an event and no event is lost.
        let events: Vec<_> = db
            .store
            .events(ALICE, 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.node_id == n.id)
            .collect();
        assert_eq!(events.len(), 1 + ok, "one event per successful transition");
        assert!((1..=2).contains(&ok));
    }
    // Same target from the same state: exactly one wins.
    for _ in 0..10 {
        let n = db.store.insert_node(&new_node(BOB, "race2")).await.unwrap();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let store = db.store.clone();
                let id = n.id.clone();
                tokio::spawn(async move { store.transition(&id, NodeState::Starting, None).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap().is_ok() as u32;
        }
        assert_eq!(ok, 1);
    }
}

async fn owner_scoping(db: Db) {
    let s = &db.store;
    let n = s.insert_node(&new_node(ALICE, "mine")).await.unwrap();
    s.set_endpoint(&n.id, "http://x/i/", None, "u", "pw", None, None)
        .await
        .unwrap();
    assert!(s.node(&n.id, BOB).await.unwrap().is_none());
    assert!(s.nodes(BOB).await.unwrap().is_empty());
    assert_eq!(s.password(&n.id, BOB).await.unwrap(), None);
    assert!(s.events(BOB, 0, 100).await.unwrap().is_empty());
    assert_eq!(s.count_active(BOB).await.unwrap(), 0);
    // Exact match: the same address in another case is another owner (normalise before calling).
    assert!(s
        .node(&n.id, &ALICE.to_uppercase())
        .await
        .unwrap()
        .is_none());

    s.transition(&n.id, NodeState::Failed, Some("x"))
        .await
        .unwrap();
    assert!(
        !s.delete_node(&n.id, BOB).await.unwrap(),
        "bob cannot delete it"
    );
    assert!(s.node(&n.id, ALICE).await.unwrap().is_some());
    assert_eq!(s.nodes(ALICE).await.unwrap().len(), 1);
    assert_eq!(
        s.password(&n.id, ALICE).await.unwrap().as_deref(),
        Some("pw")
    );
}

async fn count_active_and_reconciler_query(db: Db) {
    use NodeState::*;
    let s = &db.store;
    let mut ids = Vec::new();
    for path in [
        &[][..],
        &[Starting],
        &[Starting, Running],
        &[Stopping],
        &[Stopping, Stopped],
        &[Failed],
    ] {
        let n = s.insert_node(&new_node(ALICE, "n")).await.unwrap();
        for to in path {
            s.transition(&n.id, *to, None).await.unwrap();
        }
        ids.push(n.id);
    }
    s.insert_node(&new_node(BOB, "b")).await.unwrap();
    assert_eq!(s.count_active(ALICE).await.unwrap(), 4);
    assert_eq!(s.count_active(BOB).await.unwrap(), 1);

    let live = s.nodes_in_states(&NodeState::ACTIVE).await.unwrap();
    assert_eq!(live.len(), 5, "all owners");
    let mut got: Vec<_> = s
        .nodes_in_states(&[Running, Failed])
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    got.sort();
    let mut want = vec![ids[2].clone(), ids[5].clone()];
    want.sort();
    assert_eq!(got, want);
    assert!(s.nodes_in_states(&[]).await.unwrap().is_empty());
}

async fn delete_only_when_down(db: Db) {
    use NodeState::*;
    let s = &db.store;
    let n = s.insert_node(&new_node(ALICE, "n")).await.unwrap();
    for (to, state) in [
        (None, Pending),
        (Some(Starting), Starting),
        (Some(Running), Running),
        (Some(Stopping), Stopping),
    ] {
        if let Some(to) = to {
            s.transition(&n.id, to, None).await.unwrap();
        }
        let err = s.delete_node(&n.id, ALICE).await.unwrap_err();
        assert!(
            matches!(err, StoreError::NotStopped { state: st } if st == state),
            "{err:?}"
        );
    }
    assert_eq!(
        s.delete_node(&n.id, ALICE).await.unwrap_err().to_string(),
        "the node is stopping: only stopped or failed nodes can be deleted"
    );
    s.transition(&n.id, Stopped, None).await.unwrap();
    assert!(s.delete_node(&n.id, ALICE).await.unwrap());
    assert!(s.node(&n.id, ALICE).await.unwrap().is_none());
    assert!(!s.delete_node(&n.id, ALICE).await.unwrap(), "already gone");
    // Its history stays.
    assert_eq!(s.events(ALICE, 0, 100).await.unwrap().len(), 5);

    let f = s.insert_node(&new_node(ALICE, "f")).await.unwrap();
    s.transition(&f.id, Failed, Some("boom")).await.unwrap();
    assert!(s.delete_node(&f.id, ALICE).await.unwrap());
    assert!(s.nodes(ALICE).await.unwrap().is_empty());
    // Updates to a deleted node say so.
    assert!(matches!(
        s.set_progress(&f.id, Some(1), None).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.set_password(&f.id, "x").await,
        Err(StoreError::NotFound)
    ));
}

async fn password_encrypted_at_rest(db: Db) {
    let s = &db.store;
    let plain = "correct-horse-battery-staple-0123456789";
    let n = s.insert_node(&new_node(ALICE, "n")).await.unwrap();
    assert_eq!(s.password(&n.id, ALICE).await.unwrap(), None, "none yet");
    s.set_endpoint(&n.id, "http://x/i/", None, "user", plain, Some("i"), None)
        .await
        .unwrap();

    let raw: Option<String> = sqlx::query("SELECT password_enc FROM nodes WHERE id = $1")
        .bind(&n.id)
        .fetch_one(s.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let raw = raw.unwrap();
    assert_ne!(raw, plain);
    assert!(!raw.contains(plain) && !raw.contains("horse"));
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&raw)
        .unwrap();
    assert_eq!(
        bytes.len(),
        24 + plain.len() + 16,
        "nonce ‖ ciphertext ‖ tag"
    );
    assert_eq!(
        s.password(&n.id, ALICE).await.unwrap().as_deref(),
        Some(plain)
    );

    // Never in Debug or serde output.
    let rec = s.node(&n.id, ALICE).await.unwrap().unwrap();
    assert_eq!(rec.password_enc.as_deref(), Some(&raw[..]));
    let debug = format!("{rec:?}");
    assert!(
        !debug.contains(&raw) && debug.contains("<redacted>"),
        "{debug}"
    );
    let json = serde_json::to_string(&rec).unwrap();
    assert!(!json.contains(&raw) && !json.contains("password"), "{json}");

    // Rotation: a fresh nonce every time.
    s.set_password(&n.id, "rotated").await.unwrap();
    let rec2 = s.node(&n.id, ALICE).await.unwrap().unwrap();
    assert_ne!(rec2.password_enc, rec.password_enc);
    assert_eq!(
        s.password(&n.id, ALICE).await.unwrap().as_deref(),
        Some("rotated")
    );

    // Bound to its row: another node's ciphertext does not decrypt here.
    let m = s.insert_node(&new_node(ALICE, "m")).await.unwrap();
    sqlx::query("UPDATE nodes SET password_enc = $1 WHERE id = $2")
        .bind(rec2.password_enc.unwrap())
        .bind(&m.id)
        .execute(s.pool())
        .await
        .unwrap();
    assert!(matches!(
        s.password(&m.id, ALICE).await,
        Err(StoreError::Crypto(_))
    ));

    // The wrong key cannot read it.
    let other = Store::connect(&db.url, Key::generate()).await.unwrap();
    let err = other.password(&n.id, ALICE).await.unwrap_err();
    assert!(err.to_string().contains("wrong key file"), "{err}");
}

async fn restart_keeps_everything(mut db: Db) {
    use NodeState::*;
    let now = now_ms();
    db.store.put_nonce("n1", now + 60_000).await.unwrap();
    db.store
        .create_session("h1", ALICE, now + 60_000)
        .await
        .unwrap();
    let n = db
        .store
        .insert_node(&new_node(ALICE, "keep"))
        .await
        .unwrap();
    db.store.transition(&n.id, Starting, None).await.unwrap();
    db.store
        .set_endpoint(
            &n.id,
            "http://x/i/",
            Some("ws://x/i/"),
            "u",
            "pw",
            Some("i"),
            Some(&json!([1])),
        )
        .await
        .unwrap();
    let running = db.store.transition(&n.id, Running, None).await.unwrap();
    db.store
        .set_progress(&n.id, Some(7), Some(json!({"a": 1})))
        .await
        .unwrap();
    let before = db.store.node(&n.id, ALICE).await.unwrap().unwrap();
    let events = db.store.events(ALICE, 0, 100).await.unwrap();
    assert!(before.updated_at >= running.updated_at);

    db.restart().await;
    let s = &db.store;
    assert_eq!(s.node(&n.id, ALICE).await.unwrap().unwrap(), before);
    assert_eq!(s.events(ALICE, 0, 100).await.unwrap(), events);
    assert_eq!(
        s.password(&n.id, ALICE).await.unwrap().as_deref(),
        Some("pw")
    );
    assert_eq!(s.session("h1", now).await.unwrap().unwrap().address, ALICE);
    assert!(s.consume_nonce("n1", now).await.unwrap());
    // Event ids keep growing after a restart.
    let stopping = s.transition(&n.id, Stopping, None).await.unwrap();
    assert_eq!(stopping.state, Stopping);
    let after = s
        .events(ALICE, events.last().unwrap().id, 10)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);

    // And with the key reloaded from its file.
    let key = KeyFile::load_or_create(db._dir.path().join("store.key")).unwrap();
    let again = Store::connect(&db.url, key).await.unwrap();
    assert_eq!(
        again.password(&n.id, ALICE).await.unwrap().as_deref(),
        Some("pw")
    );
}

#[test]
fn key_file_created_0600_and_loose_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/store.key");
    let key = KeyFile::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 64);
    assert!(format!("{key:?}") == "Key(..)");
    // Loading again gives the same key (same file, unchanged); no temp files left behind.
    KeyFile::load_or_create(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = KeyFile::load_or_create(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::KeyFilePermissions { mode: 0o644, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("0644"),
        "{msg}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(
        KeyFile::load(&path).is_err(),
        "group-readable is refused too"
    );

    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not hex\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        KeyFile::load_or_create(&bad),
        Err(StoreError::KeyFileInvalid { .. })
    ));
}

#[tokio::test]
async fn same_key_file_decrypts_across_stores() {
    // Two keys from the same file are the same key; different files differ.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("db").display());
    let k1 = KeyFile::load_or_create(dir.path().join("a.key")).unwrap();
    let s1 = Store::connect(&url, k1).await.unwrap();
    let n = s1.insert_node(&new_node(ALICE, "n")).await.unwrap();
    s1.set_password(&n.id, "pw").await.unwrap();
    let s2 = Store::connect(&url, KeyFile::load(dir.path().join("a.key")).unwrap())
        .await
        .unwrap();
    assert_eq!(
        s2.password(&n.id, ALICE).await.unwrap().as_deref(),
        Some("pw")
    );
    let s3 = Store::connect(
        &url,
        KeyFile::load_or_create(dir.path().join("b.key")).unwrap(),
    )
    .await
    .unwrap();
    assert!(s3.password(&n.id, ALICE).await.is_err());
}

#[tokio::test]
async fn unsupported_url_refused() {
    let err = Store::connect("mysql://x/y", Key::generate())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedUrl(ref s) if s == "mysql"),
        "{err}"
    );
}

#[tokio::test]
async fn sqlite_settings_and_parent_dir() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not/yet/there/erigolem.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = Store::connect(&url, Key::generate()).await.unwrap();
    assert!(path.exists());
    // Every pooled connection has the settings: hold several at once.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(store.pool().acquire().await.unwrap());
    }
    for conn in &mut conns {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut **conn)
            .await
            .unwrap();
        assert_eq!(busy, 10_000);
    }
    drop(conns);
    // Migrations are recorded once; connecting again applies nothing new.
    drop(store);
    let store = Store::connect(&url, Key::generate()).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    assert_eq!(applied, files as i64);
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = Store::connect("sqlite::memory:", Key::generate())
        .await
        .unwrap();
    let n = store.insert_node(&new_node(ALICE, "m")).await.unwrap();
    store
        .transition(&n.id, NodeState::Starting, None)
        .await
        .unwrap();
    assert_eq!(store.nodes(ALICE).await.unwrap().len(), 1);
    assert_eq!(store.backend_name(), "sqlite");
}

fn g(s: &str) -> Glm {
    Glm::parse(s).unwrap()
}

fn plan(budget: &str, max_replacements: u32) -> NewPlan {
    NewPlan {
        budget: Some(g(budget)),
        max_price_per_hour: Some(g("1")),
        max_start_fee: Some(g("0.1")),
        expected_hours: Some(2),
        auto_replace: true,
        max_replacements,
    }
}

fn new_deal(agreement: &str, node: &str, plan_id: &str, provider: &str) -> NewDeal {
    NewDeal {
        agreement_id: agreement.into(),
        node_id: node.into(),
        plan_id: plan_id.into(),
        owner: ALICE.into(),
        provider_id: provider.into(),
        provider_name: Some("honest".into()),
        allocation_id: format!("alloc-{agreement}"),
        price: LinearPrice {
            per_hour: Glm::from_decimal(
                &"0.2000000000000000016"
                    .parse::<bigdecimal::BigDecimal>()
                    .unwrap(),
            )
            .unwrap(),
            start_fee: g("0.01"),
            per_request: None,
        },
        expires_at: now_ms() + 86_400_000,
    }
}

async fn transition_from_is_a_compare_and_set(db: Db) {
    let n = db.store.insert_node(&new_node(ALICE, "cas")).await.unwrap();
    db.store
        .transition_from(&n.id, NodeState::Pending, NodeState::Starting, None)
        .await
        .unwrap();
    // Decided from `pending`, but the node moved on: refused, even though starting → failed is legal.
    let err = db
        .store
        .transition_from(&n.id, NodeState::Pending, NodeState::Failed, Some("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::IllegalTransition {
                from: NodeState::Starting,
                ..
            }
        ),
        "{err}"
    );
    let node = db
        .store
        .transition_from(&n.id, NodeState::Starting, NodeState::Running, None)
        .await
        .unwrap();
    assert_eq!(node.state, NodeState::Running);
    assert!(matches!(
        db.store
            .transition_from(&n.id, NodeState::Running, NodeState::Running, None)
            .await,
        Err(StoreError::IllegalTransition { .. })
    ));
    assert!(matches!(
        db.store
            .transition_from("nope", NodeState::Running, NodeState::Failed, None)
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn plans_allow_a_bounded_number_of_replacements_each_recorded(db: Db) {
    let (first, p) = db
        .store
        .insert_node_with_plan(&new_node(ALICE, "keeper"), &plan("2", 2), None)
        .await
        .unwrap();
    assert_eq!(first.plan_id.as_deref(), Some(first.id.as_str()));
    assert_eq!(p.id, first.id);
    assert!(p.may_replace());
    let stored = db.store.plan(&p.id).await.unwrap().unwrap();
    assert_eq!(stored, p);
    assert_eq!(stored.budget, Some(g("2")));
    assert_eq!(stored.expected_hours, Some(2));

    let mut failed = first.clone();
    let mut chain = vec![first.id.clone()];
    for i in 0..2 {
        let next = db
            .store
            .replace_node(&failed, &new_node(ALICE, "keeper"), &format!("reason {i}"))
            .await
            .unwrap()
            .expect("a replacement left");
        assert_eq!(next.plan_id.as_deref(), Some(p.id.as_str()));
        assert_eq!(next.replaces.as_deref(), Some(failed.id.as_str()));
        assert_eq!(next.state, NodeState::Pending);
        assert!(next
            .reason
            .as_deref()
            .unwrap()
            .contains(&format!("reason {i}")));
        assert_eq!(
            db.store
                .replacement_of(&failed.id)
                .await
                .unwrap()
                .as_deref(),
            Some(next.id.as_str())
        );
        chain.push(next.id.clone());
        failed = next;
    }
    assert!(db
        .store
        .replace_node(&failed, &new_node(ALICE, "keeper"), "third")
        .await
        .unwrap()
        .is_none());
    let stored = db.store.plan(&p.id).await.unwrap().unwrap();
    assert_eq!(stored.replacements, 2);
    assert!(!stored.may_replace());
    let recorded = db.store.replacements(&p.id).await.unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1].seq, 2);
    assert_eq!(recorded[1].failed_node, chain[1]);
    assert_eq!(recorded[1].new_node, chain[2]);
    assert_eq!(recorded[1].reason, "reason 1");

    // Concurrent replacements of one failure: exactly one wins the last slot.
    let (n, p) = db
        .store
        .insert_node_with_plan(&new_node(BOB, "race"), &plan("1", 1), None)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (store, n) = (db.store.clone(), n.clone());
            tokio::spawn(async move {
                store
                    .replace_node(&n, &new_node(BOB, "race"), "race")
                    .await
                    .unwrap()
                    .is_some()
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += u32::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(db.store.plan(&p.id).await.unwrap().unwrap().replacements, 1);
    // Without auto-replace, none.
    let (n, _) = db
        .store
        .insert_node_with_plan(
            &new_node(BOB, "manual"),
            &NewPlan {
                auto_replace: false,
                ..plan("1", 2)
            },
            None,
        )
        .await
        .unwrap();
    assert!(db
        .store
        .replace_node(&n, &new_node(BOB, "manual"), "x")
        .await
        .unwrap()
        .is_none());
}

async fn deals_freeze_billing_once_and_survive_a_restart(mut db: Db) {
    // A plan comes with its node, within the owner's node cap, or not at all.
    let carol = "0xcccccccccccccccccccccccccccccccccccccccc";
    db.store
        .insert_node_with_plan(&new_node(carol, "one"), &plan("1", 0), Some(1))
        .await
        .unwrap();
    let over = db
        .store
        .insert_node_with_plan(&new_node(carol, "two"), &plan("1", 0), Some(1))
        .await;
    assert!(
        matches!(over, Err(StoreError::TooManyNodes { active: 1, max: 1 })),
        "{over:?}"
    );
    assert_eq!(db.store.nodes(carol).await.unwrap().len(), 1);
    let (n, p) = db
        .store
        .insert_node_with_plan(&new_node(ALICE, "paid"), &plan("2", 0), None)
        .await
        .unwrap();
    db.store
        .insert_deal(&new_deal("a1", &n.id, &p.id, "0xprov1"))
        .await
        .unwrap();
    // The same agreement twice is an error, never a second row.
    assert!(db
        .store
        .insert_deal(&new_deal("a1", &n.id, &p.id, "0xprov1"))
        .await
        .is_err());
    db.store.set_deal_activity("a1", "act1").await.unwrap();
    db.store.mark_served("a1", 1_000).await.unwrap();
    db.store.mark_served("a1", 2_000).await.unwrap();
    db.store.note_requests("a1", 10).await.unwrap();
    db.store.note_requests("a1", 7).await.unwrap();
    let d = db.store.live_deal(&n.id).await.unwrap().unwrap();
    assert_eq!(d.activity_id.as_deref(), Some("act1"));
    assert_eq!(
        d.service.served_from,
        Some(1_000),
        "the first STATUS counts"
    );
    assert_eq!(d.service.requests, 10, "the count only grows");
    assert_eq!(
        d.price.per_hour.to_string(),
        "0.2000000000000000016",
        "exact"
    );
    db.store.freeze_billing(&n.id, 5_000).await.unwrap();
    db.store.freeze_billing(&n.id, 9_000).await.unwrap();
    db.store.note_requests("a1", 12).await.unwrap();
    let d = db.store.deal("a1").await.unwrap().unwrap();
    assert_eq!(
        d.service.served_until,
        Some(5_000),
        "frozen at the first stop or failure"
    );
    assert_eq!(
        d.service.requests, 12,
        "requests answered until the agreement ends still count"
    );
    assert!(
        db.store.live_deal(&n.id).await.unwrap().is_some(),
        "not ended yet"
    );
    db.store.end_deal("a1", 7_000).await.unwrap();
    db.store.note_requests("a1", 99).await.unwrap();
    assert!(db.store.live_deal(&n.id).await.unwrap().is_none());
    let d = db.store.deal("a1").await.unwrap().unwrap();
    assert_eq!(
        (d.ended_at, d.service.served_until),
        (Some(7_000), Some(5_000))
    );
    assert_eq!(d.service.requests, 12, "frozen once the agreement ended");
    // A second agreement of the same plan, on another provider.
    db.store
        .insert_deal(&new_deal("a2", &n.id, &p.id, "0xprov2"))
        .await
        .unwrap();
    assert_eq!(
        db.store.plan_providers(&p.id).await.unwrap(),
        ["0xprov1", "0xprov2"]
    );
    db.restart().await;
    let open: Vec<String> = db
        .store
        .open_deals()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.agreement_id)
        .collect();
    assert_eq!(open, ["a1", "a2"], "unsettled or not ended: still owed");
    assert_eq!(db.store.node_deals(&n.id).await.unwrap().len(), 2);
    // Deals stay when their node is deleted: an invoice may still come.
    db.store
        .transition(&n.id, NodeState::Failed, Some("x"))
        .await
        .unwrap();
    assert!(db.store.delete_node(&n.id, ALICE).await.unwrap());
    assert!(db.store.deal("a1").await.unwrap().is_some());
}

fn doc(id: &str, kind: DocumentKind, agreement: &str, amount: &str) -> NewDocument {
    NewDocument {
        id: id.into(),
        kind,
        agreement_id: agreement.into(),
        owner: ALICE.into(),
        amount: amount.into(),
    }
}

async fn payments_are_reserved_once_and_totals_compare_and_set(db: Db) {
    let (n, p) = db
        .store
        .insert_node_with_plan(&new_node(ALICE, "paid"), &plan("2", 0), None)
        .await
        .unwrap();
    db.store
        .insert_deal(&new_deal("a1", &n.id, &p.id, "0xprov1"))
        .await
        .unwrap();
    let period = 86_400_000;
    let zero = Glm::zero();
    let dn1 = doc("dn1", DocumentKind::DebitNote, "a1", "0.3");
    let reserve = |d: &'static NewDocument, inc: &'static str, seen: [&'static str; 4]| {
        let store = db.store.clone();
        async move {
            let (inc, s) = (g(inc), seen.map(g));
            store
                .reserve_payment(&Reservation {
                    document: d,
                    increment: &inc,
                    period_start: period,
                    deal_accepted: &s[0],
                    plan_spent: &s[1],
                    user_spent: &s[2],
                    server_spent: &s[3],
                })
                .await
                .unwrap()
        }
    };
    let dn1: &'static NewDocument = Box::leak(Box::new(dn1));
    assert_eq!(
        reserve(dn1, "0.3", ["0", "0", "0", "0"]).await,
        Reserved::Done
    );
    assert_eq!(
        reserve(dn1, "0.3", ["0.3", "0.3", "0.3", "0.3"]).await,
        Reserved::Duplicate,
        "a document is decided once"
    );
    let d = db.store.document("dn1").await.unwrap().unwrap();
    assert_eq!(d.state, DocumentState::Accepting);
    assert_eq!(d.increment, g("0.3"));
    assert_eq!(
        db.store
            .documents_in_state(DocumentState::Accepting)
            .await
            .unwrap()
            .len(),
        1
    );
    // Decided on numbers that moved: stale, and nothing of it stays.
    let dn2: &'static NewDocument =
        Box::leak(Box::new(doc("dn2", DocumentKind::DebitNote, "a1", "0.5")));
    assert_eq!(
        reserve(dn2, "0.2", ["0", "0", "0", "0"]).await,
        Reserved::Stale
    );
    assert!(db.store.document("dn2").await.unwrap().is_none());
    assert_eq!(
        reserve(dn2, "0.2", ["0.3", "0.3", "0.3", "0.3"]).await,
        Reserved::Done
    );
    db.store.confirm_payment("dn1").await.unwrap();
    db.store.confirm_payment("dn2").await.unwrap();
    assert_eq!(
        db.store.deal("a1").await.unwrap().unwrap().accepted,
        g("0.5")
    );
    assert_eq!(db.store.plan(&p.id).await.unwrap().unwrap().spent, g("0.5"));
    assert_eq!(db.store.spent(ALICE, period).await.unwrap(), g("0.5"));
    assert_eq!(
        db.store.spent(SERVER_LEDGER, period).await.unwrap(),
        g("0.5")
    );
    assert_eq!(db.store.spent(ALICE, 0).await.unwrap(), zero);
    assert_eq!(db.store.spent(BOB, period).await.unwrap(), zero);

    // A refusal is recorded once and shown on the deal.
    let greedy = doc("dn3", DocumentKind::DebitNote, "a1", "9");
    assert!(db
        .store
        .refuse_payment(&greedy, "too much", period)
        .await
        .unwrap());
    assert!(!db
        .store
        .refuse_payment(&greedy, "too much", period)
        .await
        .unwrap());
    let d = db.store.deal("a1").await.unwrap().unwrap();
    assert_eq!(d.refused.as_deref(), Some("debit note dn3: too much"));
    assert_eq!(d.accepted, g("0.5"), "a refusal pays nothing");

    // A reservation yagna would not accept is given back.
    let inv: &'static NewDocument =
        Box::leak(Box::new(doc("inv1", DocumentKind::Invoice, "a1", "0.6")));
    assert_eq!(
        reserve(inv, "0.1", ["0.5", "0.5", "0.5", "0.5"]).await,
        Reserved::Done
    );
    assert!(db
        .store
        .release_payment("inv1", "yagna: 400")
        .await
        .unwrap());
    let d = db.store.document("inv1").await.unwrap().unwrap();
    assert_eq!(d.state, DocumentState::Failed);
    assert_eq!(
        db.store.deal("a1").await.unwrap().unwrap().accepted,
        g("0.5")
    );
    assert_eq!(db.store.plan(&p.id).await.unwrap().unwrap().spent, g("0.5"));
    assert_eq!(db.store.spent(ALICE, period).await.unwrap(), g("0.5"));
    // An invoice accepted settles its agreement.
    let inv2: &'static NewDocument =
        Box::leak(Box::new(doc("inv2", DocumentKind::Invoice, "a1", "0.6")));
    assert_eq!(
        reserve(inv2, "0.1", ["0.5", "0.5", "0.5", "0.5"]).await,
        Reserved::Done
    );
    db.store.confirm_payment("inv2").await.unwrap();
    let d = db.store.deal("a1").await.unwrap().unwrap();
    assert!(d.settled);
    assert_eq!(d.accepted, g("0.6"));
    assert_eq!(db.store.agreement_documents("a1").await.unwrap().len(), 5);
    assert!(db
        .store
        .documents_in_state(DocumentState::Accepting)
        .await
        .unwrap()
        .is_empty());
}

async fn concurrent_payments_never_exceed_what_was_read(db: Db) {
    let (n, p) = db
        .store
        .insert_node_with_plan(&new_node(ALICE, "race"), &plan("1", 0), None)
        .await
        .unwrap();
    db.store
        .insert_deal(&new_deal("a1", &n.id, &p.id, "0xprov1"))
        .await
        .unwrap();
    // Eight documents decided on the same totals (zero): only one may count.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let d = doc(&format!("dn{i}"), DocumentKind::DebitNote, "a1", "0.6");
                let (inc, zero) = (g("0.6"), Glm::zero());
                store
                    .reserve_payment(&Reservation {
                        document: &d,
                        increment: &inc,
                        period_start: 0,
                        deal_accepted: &zero,
                        plan_spent: &zero,
                        user_spent: &zero,
                        server_spent: &zero,
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut done = 0;
    for t in tasks {
        if t.await.unwrap() == Reserved::Done {
            done += 1;
        }
    }
    assert_eq!(done, 1);
    assert_eq!(db.store.plan(&p.id).await.unwrap().unwrap().spent, g("0.6"));
    assert_eq!(db.store.spent(SERVER_LEDGER, 0).await.unwrap(), g("0.6"));
}

/// Whatever a provider sends (failure reasons, URLs, user names, sync JSON) is stored at a
/// bounded length: a megabyte of reason does not become a megabyte per event row.
async fn provider_text_is_length_capped(db: Db) {
    use NodeState::*;
    let s = &db.store;
    let n = s.insert_node(&new_node(ALICE, "n")).await.unwrap();
    s.transition(&n.id, Starting, None).await.unwrap();
    let huge = "é".repeat(1 << 20);
    s.set_endpoint(&n.id, &huge, Some(&huge), &huge, "pw-1", Some(&huge), None)
        .await
        .unwrap();
    let sync = json!({"stages": vec![huge.clone(); 4]});
    s.set_progress(&n.id, Some(1), Some(sync)).await.unwrap();
    let stored = s.node(&n.id, ALICE).await.unwrap().unwrap();
    for (what, text) in [
        ("url", stored.url.clone()),
        ("ws_url", stored.ws_url.clone()),
        ("username", stored.username.clone()),
        ("instance", stored.instance.clone()),
    ] {
        let len = text.map(|t| t.len()).unwrap_or(0);
        assert!(len <= 4096, "{what}: {len} bytes stored");
    }
    let sync_len = stored.sync.map(|v| v.to_string().len()).unwrap_or(0);
    assert!(sync_len <= 16 * 1024, "sync: {sync_len} bytes stored");
    let failed = s.transition(&n.id, Failed, Some(&huge)).await.unwrap();
    let reason = failed.reason.unwrap();
    assert!(reason.len() <= 4096, "reason: {} bytes", reason.len());
    assert!(reason.starts_with("éé"), "cut on a character boundary");
    let events = s.events(ALICE, 0, 10).await.unwrap();
    assert!(events
        .iter()
        .all(|e| e.reason.as_ref().is_none_or(|r| r.len() <= 4096)));
}

/// 50 concurrent capped inserts for one owner: exactly the cap gets in (per owner: another
/// owner's nodes do not count), the rest are refused with the count.
async fn capped_inserts_race_to_exactly_the_cap(db: Db) {
    let s = &db.store;
    s.insert_node(&new_node(BOB, "bob's")).await.unwrap();
    let tries = (0..50).map(|i| {
        let store = s.clone();
        tokio::spawn(async move {
            store
                .insert_node_capped(&new_node(ALICE, &format!("n{i}")), 3)
                .await
        })
    });
    let mut created = 0;
    for t in tries.collect::<Vec<_>>() {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::TooManyNodes { active, max }) => {
                assert_eq!((active, max), (3, 3));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(created, 3);
    assert_eq!(s.count_active(ALICE).await.unwrap(), 3);
    // Stopped and failed nodes make room.
    let first = s.nodes(ALICE).await.unwrap().pop().unwrap();
    s.transition(&first.id, NodeState::Failed, None)
        .await
        .unwrap();
    s.insert_node_capped(&new_node(ALICE, "again"), 3)
        .await
        .unwrap();
    assert!(s
        .insert_node_capped(&new_node(ALICE, "over"), 3)
        .await
        .is_err());
    // Every node that got in has its `pending` event.
    let events = s.events(ALICE, 0, 100).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.state == NodeState::Pending)
            .count(),
        4
    );
}

async fn nonces_per_client_are_capped(db: Db) {
    let s = &db.store;
    let now = now_ms();
    let issued = (0..40).map(|i| {
        let store = s.clone();
        tokio::spawn(async move {
            store
                .issue_nonce(&format!("a{i}"), now + 60_000, "192.0.2.1", 8, now)
                .await
                .unwrap()
        })
    });
    let mut ok = 0;
    for t in issued.collect::<Vec<_>>() {
        ok += t.await.unwrap() as u32;
    }
    assert_eq!(ok, 8);
    assert!(s
        .issue_nonce("b", now + 60_000, "192.0.2.2", 8, now)
        .await
        .unwrap());
    assert!(!s
        .issue_nonce("c", now + 60_000, "192.0.2.1", 8, now)
        .await
        .unwrap());
    // Expired nonces free the slots.
    let later = now + 61_000;
    assert!(s
        .issue_nonce("e", later + 60_000, "192.0.2.1", 8, later)
        .await
        .unwrap());
    assert_eq!(s.purge_expired(later).await.unwrap(), 9);
    assert!(s.consume_nonce("e", later).await.unwrap());
}

async fn purge_removes_old_events_only(db: Db) {
    use NodeState::*;
    let s = &db.store;
    let n = s.insert_node(&new_node(ALICE, "n")).await.unwrap();
    s.transition(&n.id, Starting, None).await.unwrap();
    let cut = now_ms() + 1;
    while now_ms() <= cut {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    s.transition(&n.id, Running, None).await.unwrap();
    let purged = s.purge(now_ms(), cut).await.unwrap();
    assert_eq!(purged.events, 2);
    let left: Vec<_> = s.events(ALICE, 0, 10).await.unwrap();
    assert_eq!(left.iter().map(|e| e.state).collect::<Vec<_>>(), [Running]);
    assert_eq!(s.latest_event_id(ALICE).await.unwrap(), left[0].id);
    assert_eq!(s.latest_event_id(BOB).await.unwrap(), 0);
    // The node itself stays.
    assert_eq!(s.node(&n.id, ALICE).await.unwrap().unwrap().state, Running);
}

async fn counts_by_state(db: Db) {
    use NodeState::*;
    let s = &db.store;
    for owner in [ALICE, BOB, BOB] {
        s.insert_node(&new_node(owner, "n")).await.unwrap();
    }
    let n = s.insert_node(&new_node(ALICE, "f")).await.unwrap();
    s.transition(&n.id, Failed, None).await.unwrap();
    let counts = s.count_by_state().await.unwrap();
    assert_eq!(
        counts,
        [
            (Pending, 3),
            (Starting, 0),
            (Running, 0),
            (Stopping, 0),
            (Stopped, 0),
            (Failed, 1)
        ]
    );
}

mod leases;
/// Nine simulated days of a node's polls (every 30 minutes for eight days, then every minute for
/// the last day): its rows stay within the bound, the kept steps add up exactly, and another
/// node's usage is its own.
async fn usage_rows_stay_bounded(db: Db) {
    use erigolem_store::{Tier, UsageSample, MAX_ROWS_PER_NODE};
    let store = &db.store;
    let day = 24 * 3_600_000_i64;
    let start = 1_800_000_000_000_i64; // a fixed instant: the run does not depend on the clock
    let sample = |at: i64, requests: u64| UsageSample {
        at,
        requests,
        methods: [("eth_call".to_owned(), requests)].into(),
        latency: vec![requests, 0, 0],
        block: Some((at / 1_000) as u64),
        ..UsageSample::default()
    };
    let mut at = start;
    while at < start + 8 * day {
        store.add_usage("n1", &sample(at, 7), None).await.unwrap();
        at += 30 * 60_000;
    }
    let last_day = at;
    while at < last_day + day {
        let cursor = json!({"requests": at});
        store
            .add_usage("n1", &sample(at, 1), Some(&cursor))
            .await
            .unwrap();
        at += 60_000;
    }
    store.add_usage("n2", &sample(at, 5), None).await.unwrap();
    let end = at;

    let rows = store.usage_rows("n1").await.unwrap();
    assert!(
        rows <= MAX_ROWS_PER_NODE,
        "{rows} rows > {MAX_ROWS_PER_NODE}"
    );
    let minutes = store.usage("n1", Tier::Minute, 0).await.unwrap();
    let hours = store.usage("n1", Tier::Hour, 0).await.unwrap();
    assert!(
        minutes.len() as i64 <= Tier::Minute.max_rows(),
        "{}",
        minutes.len()
    );
    assert!(
        hours.len() as i64 <= Tier::Hour.max_rows(),
        "{}",
        hours.len()
    );
    assert!(
        minutes.len() >= 1_440,
        "a day of minutes is kept: {}",
        minutes.len()
    );
    assert!(minutes.first().unwrap().at >= end - day - 60_000);
    assert!(hours.first().unwrap().at >= end - 8 * day - 3_600_000);
    // The last hour, per minute: one request each, exactly.
    let last_hour = store
        .usage("n1", Tier::Minute, end - 3_600_000)
        .await
        .unwrap();
    assert_eq!(last_hour.iter().map(|s| s.requests).sum::<u64>(), 60);
    assert!(last_hour
        .iter()
        .all(|s| s.methods["eth_call"] == s.requests));
    // An hour step of the last day holds its sixty minutes.
    let full_hour = &hours[hours.len() - 3];
    assert_eq!(full_hour.requests, 60);
    assert_eq!(full_hour.latency, vec![60, 0, 0]);
    assert_eq!(
        store.usage_cursor("n1").await.unwrap(),
        Some(json!({"requests": end - 60_000}))
    );
    assert_eq!(store.usage("n2", Tier::Minute, 0).await.unwrap().len(), 1);
    assert_eq!(store.usage_cursor("n2").await.unwrap(), None);

    // Steps of a node nobody polls any more go with the housekeeping purge.
    assert!(store.purge_usage(end + 2 * day).await.unwrap() >= 1_440);
    assert!(store.usage("n1", Tier::Minute, 0).await.unwrap().is_empty());
    store.delete_usage("n1").await.unwrap();
    assert_eq!(store.usage_rows("n1").await.unwrap(), 0);
    assert_eq!(store.usage_cursor("n1").await.unwrap(), None);
}
