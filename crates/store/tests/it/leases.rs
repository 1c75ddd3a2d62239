//! Leases, replicas, requests and notifications: several stores on one database stand for
//! several replicas.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use erigolem_lifecycle::lease::{self, Tick};
use erigolem_store::{channel, Key, NewReplica, NodeState, Store, StoreError};

use super::{new_node, Db, ALICE};

both!(
    racing_replicas_take_each_lease_exactly_once,
    expired_leases_are_taken_over_and_the_old_holder_cannot_renew,
    handed_back_leases_are_free_at_once,
    a_new_node_is_leased_to_its_creator_in_the_insert,
    requests_are_taken_once_by_the_holder,
    replicas_register_heartbeat_and_leave,
    only_nodes_that_need_a_holder_have_leases,
    three_replicas_killed_and_restarted_keep_every_one_of_100_nodes_held_once,
);

async fn replica(db: &Db) -> Store {
    Store::connect(&db.url, db.key.clone()).await.unwrap()
}

async fn nodes(store: &Store, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            store
                .insert_node(&new_node(ALICE, &format!("n{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    ids
}

async fn holders(store: &Store) -> BTreeMap<String, Option<String>> {
    store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.node_id, l.holder))
        .collect()
}

async fn racing_replicas_take_each_lease_exactly_once(db: Db) {
    let ids = nodes(&db.store, 100).await;
    db.store.leases().await.unwrap();
    let mut tasks = Vec::new();
    for r in 0..3 {
        let store = replica(&db).await;
        tasks.push(tokio::spawn(async move {
            let me = format!("r{r}");
            let mut got = Vec::new();
            // Small bites, many rounds: the replicas' takes interleave.
            for _ in 0..40 {
                for (id, epoch) in store.take_leases(&me, 7, 60_000).await.unwrap() {
                    assert_eq!(epoch, 1, "{id} taken before");
                    got.push(id);
                }
            }
            (me, got)
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in tasks {
        let (me, got) = t.await.unwrap();
        total += got.len();
        for id in got {
            assert!(seen.insert(id.clone()), "{id} taken twice (again by {me})");
        }
    }
    assert_eq!(total, 100);
    let by = holders(&db.store).await;
    assert!(ids.iter().all(|id| by[id].is_some()));
}

async fn expired_leases_are_taken_over_and_the_old_holder_cannot_renew(db: Db) {
    let ids = nodes(&db.store, 3).await;
    db.store.leases().await.unwrap();
    let a = replica(&db).await;
    let b = replica(&db).await;
    let taken = a.take_leases("a", 10, 400).await.unwrap();
    assert_eq!(taken.len(), 3);
    assert!(b.take_leases("b", 10, 400).await.unwrap().is_empty());
    assert_eq!(b.take_lease("b", &ids[0], 400).await.unwrap(), None);
    // A late tick of a's: its own expired leases are not taken from it by itself (it renews
    // them); only another replica may take them.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(a.take_leases("a", 10, 400).await.unwrap().is_empty());
    // a is gone (it stops renewing): once the ttl passed, b takes them, under a new epoch.
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = b.take_leases("b", 10, 60_000).await.unwrap();
        if !got.is_empty() {
            break got;
        }
        assert!(Instant::now() < deadline, "a's leases never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(_, epoch)| *epoch == 2), "{got:?}");
    // a comes back (a pause, not a death): what it renews is nothing; its plan says lost.
    assert!(a.renew_leases("a", 60_000).await.unwrap().is_empty());
    let held: BTreeMap<String, i64> = taken.into_iter().collect();
    let rows = a.leases().await.unwrap();
    let needed = a.needed_nodes().await.unwrap();
    let plan = lease::plan(&Tick {
        me: "a",
        now: a.db_now().await.unwrap(),
        ttl: 400,
        replicas: 2,
        leases: &rows,
        needed: &needed,
        held: &held,
    });
    assert_eq!(plan.lost.len(), 3, "{plan:?}");
    assert_eq!(plan.take, 0, "{plan:?}");
    assert_eq!(b.renew_leases("b", 60_000).await.unwrap().len(), 3);
}

async fn handed_back_leases_are_free_at_once(db: Db) {
    let ids = nodes(&db.store, 4).await;
    db.store.leases().await.unwrap();
    let a = replica(&db).await;
    let b = replica(&db).await;
    assert_eq!(a.take_leases("a", 10, 60_000).await.unwrap().len(), 4);
    assert_eq!(a.release_leases("a", Some(&ids[..1])).await.unwrap(), 1);
    assert_eq!(b.take_leases("b", 10, 60_000).await.unwrap().len(), 1);
    assert_eq!(a.release_leases("a", None).await.unwrap(), 3);
    assert_eq!(b.take_leases("b", 10, 60_000).await.unwrap().len(), 3);
    // Handing back what another holds does nothing.
    assert_eq!(a.release_leases("a", None).await.unwrap(), 0);
    assert!(holders(&db.store)
        .await
        .values()
        .all(|h| h.as_deref() == Some("b")));
}

async fn a_new_node_is_leased_to_its_creator_in_the_insert(db: Db) {
    let a = replica(&db).await.for_replica("a", 60_000);
    let b = replica(&db).await;
    let node = a.insert_node(&new_node(ALICE, "mine")).await.unwrap();
    let l = b.lease(&node.id).await.unwrap().unwrap();
    assert_eq!((l.holder.as_deref(), l.epoch), (Some("a"), 1));
    b.leases().await.unwrap();
    assert!(b.take_leases("b", 10, 60_000).await.unwrap().is_empty());
    assert_eq!(b.take_lease("b", &node.id, 60_000).await.unwrap(), None);
    // Without a replica (a lone store), nodes get their lease row when a replica looks.
    let free = b.insert_node(&new_node(ALICE, "free")).await.unwrap();
    assert!(b.lease(&free.id).await.unwrap().is_none());
    b.leases().await.unwrap();
    assert_eq!(b.take_leases("b", 10, 60_000).await.unwrap().len(), 1);
}

async fn requests_are_taken_once_by_the_holder(db: Db) {
    let ids = nodes(&db.store, 2).await;
    let a = replica(&db).await;
    let b = replica(&db).await;
    assert_eq!(a.take_lease("a", &ids[0], 60_000).await.unwrap(), Some(1));
    let req = b.put_request(&ids[0], "stop").await.unwrap();
    let other = b.put_request(&ids[1], "delete").await.unwrap();
    assert!(
        b.take_requests("b").await.unwrap().is_empty(),
        "not b's node"
    );
    let taken = a.take_requests("a").await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].id, taken[0].request.as_str()), (req, "stop"));
    assert!(a.take_requests("a").await.unwrap().is_empty(), "taken once");
    assert_eq!(b.request_outcome(req).await.unwrap(), None);
    assert!(a.finish_request(req, "done").await.unwrap());
    assert!(!a.finish_request(req, "again").await.unwrap());
    assert_eq!(
        b.request_outcome(req).await.unwrap().as_deref(),
        Some("done")
    );
    // The holder of the other node is gone: the waiting replica takes its request back.
    assert!(b.take_request_back("b", other).await.unwrap());
    assert!(b.finish_request(other, "deleted").await.unwrap());
    assert!(!b.take_request_back("b", other).await.unwrap());
    let bad = b.put_request(&ids[1], "format c:").await;
    assert!(matches!(bad, Err(StoreError::Sqlx(_))), "{bad:?}");
}

async fn replicas_register_heartbeat_and_leave(db: Db) {
    let r = |id: &str, backend: &str| NewReplica {
        id: id.into(),
        backend: backend.into(),
        host: "h".into(),
        data_dir: format!("/d/{id}"),
        listen: "127.0.0.1:1".into(),
    };
    assert!(db
        .store
        .register_replica(&r("a", "golem"), 60_000)
        .await
        .unwrap()
        .is_empty());
    let others = db
        .store
        .register_replica(&r("b", "local"), 300)
        .await
        .unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(
        (others[0].id.as_str(), others[0].backend.as_str()),
        ("a", "golem")
    );
    assert!(db.store.heartbeat("a", 60_000).await.unwrap());
    assert!(!db.store.heartbeat("nobody", 60_000).await.unwrap());
    // b stops beating: it drops out of the live ones.
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.store.live_replicas().await.unwrap().len() != 1 {
        assert!(Instant::now() < deadline, "b never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.store.remove_replica("a").await.unwrap();
    assert!(db.store.live_replicas().await.unwrap().is_empty());
}

async fn only_nodes_that_need_a_holder_have_leases(db: Db) {
    let ids = nodes(&db.store, 3).await;
    for id in &ids[1..] {
        db.store
            .transition(id, NodeState::Stopping, None)
            .await
            .unwrap();
        db.store
            .transition(id, NodeState::Stopped, None)
            .await
            .unwrap();
    }
    let needed = db.store.needed_nodes().await.unwrap();
    assert_eq!(needed, vec![ids[0].clone()]);
    let rows = db.store.leases().await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    // A stopped node's lease row, once handed back, is forgotten.
    db.store.take_lease("a", &ids[1], 60_000).await.unwrap();
    assert_eq!(db.store.leases().await.unwrap().len(), 2);
    db.store
        .release_leases("a", Some(&ids[1..2]))
        .await
        .unwrap();
    assert_eq!(db.store.leases().await.unwrap().len(), 1);
    // Nor may a free stopped node be taken by a bulk take.
    db.store.take_lease("a", &ids[2], 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let got = db.store.take_leases("b", 10, 60_000).await.unwrap();
    assert_eq!(
        got.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        vec![ids[0].clone()]
    );
}

/// A simulated replica: the lifecycle core's plan carried out on the store, as the server's lease
/// loop does.
struct Sim {
    me: String,
    store: Store,
    held: BTreeMap<String, i64>,
}

const TTL: i64 = 1_500;

impl Sim {
    async fn tick(&mut self) {
        self.store.heartbeat(&self.me, TTL).await.unwrap();
        self.store.renew_leases(&self.me, TTL).await.unwrap();
        let rows = self.store.leases().await.unwrap();
        let needed = self.store.needed_nodes().await.unwrap();
        let replicas = self.store.live_replicas().await.unwrap().len().max(1);
        let plan = lease::plan(&Tick {
            me: &self.me,
            now: self.store.db_now().await.unwrap(),
            ttl: TTL,
            replicas,
            leases: &rows,
            needed: &needed,
            held: &self.held,
        });
        for id in plan.lost.iter().chain(&plan.release) {
            self.held.remove(id);
        }
        for (id, epoch) in self
            .store
            .take_leases(&self.me, plan.take, TTL)
            .await
            .unwrap()
        {
            self.held.insert(id, epoch);
        }
    }
}

/// 100 nodes, 3 replicas; one is killed (stops ticking, hands nothing back) and a new one started
/// in its place, 5 times. At every step the live replicas' beliefs never overlap (no node is
/// controlled twice), and in the end every node is held, by exactly one.
async fn three_replicas_killed_and_restarted_keep_every_one_of_100_nodes_held_once(db: Db) {
    let mut sims = Vec::new();
    for r in 0..3 {
        let me = format!("r{r}-0");
        let store = replica(&db).await.for_replica(&me, TTL);
        store
            .register_replica(
                &NewReplica {
                    id: me.clone(),
                    backend: "golem".into(),
                    host: "h".into(),
                    data_dir: format!("/d{r}"),
                    listen: "x".into(),
                },
                TTL,
            )
            .await
            .unwrap();
        sims.push(Sim {
            me,
            store,
            held: BTreeMap::new(),
        });
    }
    // Each replica creates a third of the nodes: leased to it in the insert.
    let mut ids = Vec::new();
    for i in 0..100 {
        let s = &mut sims[i % 3];
        let id = s
            .store
            .insert_node(&new_node(ALICE, &format!("n{i}")))
            .await
            .unwrap()
            .id;
        s.held.insert(id.clone(), 1);
        ids.push(id);
    }
    let check = |sims: &[Sim]| {
        let mut seen: BTreeMap<&String, &String> = BTreeMap::new();
        for s in sims {
            for id in s.held.keys() {
                if let Some(other) = seen.insert(id, &s.me) {
                    panic!("{id} held by {other} and {}", s.me);
                }
            }
        }
        seen.len()
    };
    for round in 1..=5 {
        let settle = Instant::now() + Duration::from_secs(20);
        loop {
            for s in sims.iter_mut() {
                s.tick().await;
            }
            if check(&sims) == ids.len() {
                break;
            }
            assert!(
                Instant::now() < settle,
                "round {round}: not every node held"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shares: Vec<usize> = sims.iter().map(|s| s.held.len()).collect();
        // A killed replica's nodes are shared out among the live ones (fair shares of ⌈100 / 3⌉,
        // beyond them only what stayed free for a whole ttl).
        assert!(shares.iter().all(|n| *n <= 67), "round {round}: {shares:?}");
        // Kill replica `round % 3`: it vanishes without a word; a new process takes its place.
        let victim = round % 3;
        let me = format!("r{victim}-{round}");
        sims[victim] = Sim {
            me: me.clone(),
            store: replica(&db).await,
            held: BTreeMap::new(),
        };
        sims[victim]
            .store
            .register_replica(
                &NewReplica {
                    id: me,
                    backend: "golem".into(),
                    host: "h".into(),
                    data_dir: format!("/d{victim}"),
                    listen: "x".into(),
                },
                TTL,
            )
            .await
            .unwrap();
    }
    let settle = Instant::now() + Duration::from_secs(20);
    loop {
        for s in sims.iter_mut() {
            s.tick().await;
        }
        if check(&sims) == ids.len() {
            break;
        }
        assert!(Instant::now() < settle, "not every node held at the end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by = holders(&db.store).await;
    for id in &ids {
        let holder = by[id].as_ref().unwrap();
        assert!(sims
            .iter()
            .any(|s| &s.me == holder && s.held.contains_key(id)));
    }
}

#[tokio::test]
async fn a_second_key_on_one_database_is_refused() {
    let db = Db::sqlite().await;
    db.store.check_key().await.unwrap();
    replica(&db).await.check_key().await.unwrap();
    let other = Store::connect(&db.url, Key::generate()).await.unwrap();
    let err = other.check_key().await.unwrap_err();
    assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("--key-file"), "{err}");
}

#[tokio::test]
async fn transitions_and_notes_reach_every_listener() {
    let db = Db::postgres().await;
    let other = replica(&db).await;
    let mut listener = other
        .listen(&[channel::EVENTS, channel::LEASES])
        .await
        .unwrap()
        .unwrap();
    let node = db.store.insert_node(&new_node(ALICE, "n")).await.unwrap();
    db.store
        .transition(&node.id, NodeState::Starting, None)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("no notification within 10 s")
            .unwrap();
        got.push(n);
    }
    let want = (channel::EVENTS.to_owned(), ALICE.to_owned());
    assert_eq!(
        got,
        vec![want.clone(), want],
        "one per transition, with its owner"
    );
    db.store.take_lease("a", &node.id, 60_000).await.unwrap();
    db.store.release_leases("a", None).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, (channel::LEASES.to_owned(), "a".to_owned()));
    // SQLite: one replica, nothing to listen to.
    let lone = Db::sqlite().await;
    assert!(lone
        .store
        .listen(&[channel::EVENTS])
        .await
        .unwrap()
        .is_none());
}
