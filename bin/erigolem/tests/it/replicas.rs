//! Several `erigolem serve --backend golem` processes on one PostgreSQL database and one
//! requestor yagna, in the local Golem network: a replica killed with SIGKILL has its nodes taken
//! over by another (same URLs, same credentials), stops reach whoever holds a node, every payment
//! document is accepted once, event streams follow the user across replicas, and replicas started
//! at once never both control a node. Observed from outside: `/healthz` of each replica (the
//! nodes it holds, the STATUS polls it made), the replicas' logs (every document accepted), the
//! store, the requestor's and the provider's yagna, and the payment chain.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use erigolem_client::{Client, CreateNode, Node, TransitionEvent as Transition, Wallet};
use erigolem_test_utils::replicas::ReplicaStack;
use erigolem_test_utils::serve::ServeProcess;
use erigolem_test_utils::wallet::DEV_KEY_0;
use erigolem_test_utils::{rpc, wait_for_every};
use futures::StreamExt;
use serde_json::{json, Value};

const LOOK: Duration = Duration::from_millis(200);

fn now_ms() -> i64 {
    erigolem_store::now_ms()
}

/// Signs in at `url`; the client and its bearer token.
async fn sign_in(url: &str) -> (Client, String) {
    let mut c = Client::new(url);
    let token = c
        .sign_in(&Wallet::from_hex(DEV_KEY_0).unwrap(), 1)
        .await
        .unwrap();
    (c, token)
}

/// The same session on another replica (sessions live in the shared store).
fn on(url: &str, token: &str) -> Client {
    Client::new(url).with_token(token)
}

async fn wait_node(c: &Client, id: &str, what: &str, f: impl Fn(&Node) -> bool) -> Node {
    wait_for_every(
        &format!("node {id}: {what}"),
        Duration::from_secs(90),
        LOOK,
        || async {
            let n = c.node(id).await.ok()?;
            f(&n).then_some(n)
        },
    )
    .await
}

async fn running(c: &Client, id: &str) -> Node {
    let n = wait_node(c, id, "running", |n| {
        n.state == "running" || n.state == "failed"
    })
    .await;
    assert_eq!(n.state, "running", "{n:?}");
    n
}

async fn answers(node: &Node) {
    let auth = node.auth.as_ref().unwrap();
    let url = node.url.as_ref().unwrap();
    let block = rpc(
        url,
        Some((&auth.user, &auth.password)),
        "eth_blockNumber",
        json!([]),
    )
    .await
    .unwrap_or_else(|e| panic!("{url} with the node's credentials: {e:?}"));
    assert!(block.as_str().unwrap().starts_with("0x"));
}

/// Collects the transitions an event stream delivers, in order.
fn collect(
    stream: impl futures::Stream<Item = Result<Transition, erigolem_client::ClientError>>
        + Send
        + 'static,
) -> (Arc<Mutex<Vec<Transition>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Vec<Transition>>> = Arc::default();
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut stream = Box::pin(stream);
            while let Some(Ok(t)) = stream.next().await {
                seen.lock().unwrap().push(t);
            }
        }
    });
    (seen, task)
}

/// Waits until the node is polled by one of `replicas` after `since` (unix ms); which one.
async fn polled_after(replicas: &[&ServeProcess], node: &str, since: i64) -> usize {
    wait_for_every(
        &format!("node {node} polled by another replica"),
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            for (i, r) in replicas.iter().enumerate() {
                if r.last_poll(node).await.is_some_and(|t| t > since) {
                    return Some(i);
                }
            }
            None
        },
    )
    .await
}

/// Every payment document accepted, per the replicas' logs: document id → how many times a
/// replica logged accepting it. (Logs append across restarts of one replica.)
fn acceptances(logs: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for log in logs {
        for line in log.lines().filter(|l| l.contains(" accepting ")) {
            if let Some(doc) = line.split("document=").nth(1) {
                let id = doc.split_whitespace().next().unwrap_or_default().to_owned();
                *out.entry(id).or_insert(0) += 1;
            }
        }
    }
    out
}

/// After every node stopped: each agreement settled once in the store, each document accepted
/// once across replicas, the invoices accepted at yagna, and the chain got exactly what the store
/// accepted.
async fn paid_once(stack: &ReplicaStack, nodes: &[String], logs: &[String], paid_before: u128) {
    let store = erigolem_store::Store::connect(
        &stack.database_url,
        erigolem_store::KeyFile::load(&stack.key_file).unwrap(),
    )
    .await
    .unwrap();
    let mut accepted_wei = 0u128;
    for id in nodes {
        let deals = wait_for_every(
            &format!("node {id}'s agreements settled"),
            Duration::from_secs(120),
            LOOK,
            || async {
                let deals = store.node_deals(id).await.ok()?;
                deals
                    .iter()
                    .all(|d| d.settled && d.ended_at.is_some())
                    .then_some(deals)
            },
        )
        .await;
        for deal in deals {
            let docs = store.agreement_documents(&deal.agreement_id).await.unwrap();
            let invoices: Vec<_> = docs
                .iter()
                .filter(|d| d.kind == erigolem_lifecycle::DocumentKind::Invoice)
                .collect();
            assert_eq!(invoices.len(), 1, "one invoice per agreement: {docs:?}");
            let invoice: Value = stack
                .net
                .requestor(0)
                .get(&format!("/payment-api/v1/invoices/{}", invoices[0].id))
                .await
                .unwrap();
            assert!(
                matches!(invoice["status"].as_str(), Some("ACCEPTED" | "SETTLED")),
                "{invoice}"
            );
            let agreement: Value = stack
                .net
                .provider(0)
                .get(&format!("/market-api/v1/agreements/{}", deal.agreement_id))
                .await
                .unwrap();
            assert_eq!(agreement["state"], "Terminated", "{agreement}");
            accepted_wei += wei(&deal.accepted.to_string());
        }
    }
    let counted = acceptances(logs);
    assert!(!counted.is_empty(), "no acceptance logged at all");
    for (doc, n) in &counted {
        assert_eq!(*n, 1, "document {doc} accepted {n} times");
    }
    let chain = stack.net.chain();
    let provider = &stack.net.provider(0).node_id;
    let got = wait_for_every(
        "the provider paid on the chain",
        Duration::from_secs(90),
        LOOK,
        || async {
            let got = chain.token_balance(provider).await.ok()? - paid_before;
            (got >= accepted_wei).then_some(got)
        },
    )
    .await;
    assert_eq!(
        got, accepted_wei,
        "the chain got exactly what was accepted, once"
    );
}

fn wei(glm: &str) -> u128 {
    let (int, frac) = glm.split_once('.').unwrap_or((glm, ""));
    let frac = format!("{:0<18}", &frac[..frac.len().min(18)]);
    int.parse::<u128>().unwrap() * 10u128.pow(18) + frac.parse::<u128>().unwrap()
}

fn logs(replicas: &[&ServeProcess]) -> Vec<String> {
    replicas.iter().map(|r| r.log_text()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replica_s_nodes_are_taken_over_stopped_and_paid_once_and_events_follow() {
    let stack = ReplicaStack::start(3).await;
    let paid_before = stack
        .net
        .chain()
        .token_balance(&stack.net.provider(0).node_id)
        .await
        .unwrap();
    let mut a = stack.replica(0).await;
    let mut b = stack.replica(1).await;
    let c = stack.replica(2).await;
    let (on_a, token) = sign_in(&a.url).await;
    let on_b = on(&b.url, &token);
    let on_c = on(&c.url, &token);
    let (on_b_events, watching_b) = collect(on_b.events().await.unwrap());

    let mut ids = Vec::new();
    for i in 0..3 {
        let n = on_a
            .create(&CreateNode {
                name: Some(format!("n{i}")),
                ..CreateNode::new(erigolem_api::Network::Dev)
            })
            .await
            .unwrap();
        ids.push(n.id);
    }
    let mut before = Vec::new();
    for id in &ids {
        before.push(running(&on_a, id).await);
    }
    let held: BTreeSet<String> = a.held().await.into_iter().collect();
    assert_eq!(
        held,
        ids.iter().cloned().collect(),
        "A holds what it created"
    );
    assert!(b.held().await.is_empty() && c.held().await.is_empty());

    let killed = now_ms();
    let clock = Instant::now();
    a.kill9();
    for id in &ids {
        let by = polled_after(&[&b, &c], id, killed).await;
        eprintln!(
            "node {id} polled by {} {:?} after the kill",
            ["B", "C"][by],
            clock.elapsed()
        );
    }
    for (old, id) in before.iter().zip(&ids) {
        let now = on_b.node(id).await.unwrap();
        assert_eq!(now.state, "running", "{now:?}");
        assert_eq!(now.url, old.url, "same URL");
        assert_eq!(
            now.auth.as_ref().map(|a| (&a.user, &a.password)),
            old.auth.as_ref().map(|a| (&a.user, &a.password)),
            "same credentials"
        );
        answers(old).await;
    }
    let all_ids: BTreeSet<String> = ids.iter().cloned().collect();
    wait_for_every(
        "B and C to hold them all",
        Duration::from_secs(30),
        LOOK,
        || async {
            let taken: BTreeSet<String> =
                b.held().await.into_iter().chain(c.held().await).collect();
            (taken == all_ids).then_some(())
        },
    )
    .await;

    // A stop sent to the replica that does not hold the node is handed to the one that does,
    // which ends the agreement.
    let held_by_c: BTreeSet<String> = c.held().await.into_iter().collect();
    let target = 0;
    let (via, via_log): (&Client, &ServeProcess) = if held_by_c.contains(&ids[target]) {
        (&on_b, &b)
    } else {
        (&on_c, &c)
    };
    via.stop(&ids[target]).await.unwrap();
    let stopped = wait_node(via, &ids[target], "stopped", |n| n.state == "stopped").await;
    assert!(
        stopped.url.is_none() || stopped.auth.is_none(),
        "{stopped:?}"
    );
    assert!(
        via_log
            .log_text()
            .contains("handing the request to the node's replica"),
        "the stop was not handed over"
    );
    let gone = rpc(
        before[target].url.as_ref().unwrap(),
        before[target]
            .auth
            .as_ref()
            .map(|a| (a.user.as_str(), a.password.as_str())),
        "eth_blockNumber",
        json!([]),
    )
    .await;
    assert!(gone.is_err(), "the stopped node still answers: {gone:?}");

    // B's stream saw every transition of the nodes created through A.
    wait_for_every(
        "B's stream to see the stop",
        Duration::from_secs(30),
        LOOK,
        || async {
            on_b_events
                .lock()
                .unwrap()
                .iter()
                .any(|t| t.node_id == ids[0] && t.state == "stopped")
                .then_some(())
        },
    )
    .await;
    {
        let seen = on_b_events.lock().unwrap();
        for id in &ids {
            let states: Vec<&str> = seen
                .iter()
                .filter(|t| &t.node_id == id)
                .map(|t| t.state.as_str())
                .collect();
            assert!(
                states.starts_with(&["pending", "starting", "running"]),
                "node {id} on B: {states:?}"
            );
        }
    }

    // B dies; C resumes the user's stream from the last event B delivered: nothing is lost,
    // including what happened while no stream was open.
    let last_on_b = on_b_events.lock().unwrap().last().map(|t| t.id);
    watching_b.abort();
    b.kill9();
    on_c.stop(&ids[1]).await.unwrap();
    let (on_c_events, watching_c) = collect(on_c.events_after(last_on_b).await.unwrap());
    on_c.stop(&ids[2]).await.unwrap();
    for id in &ids[1..] {
        wait_node(&on_c, id, "stopped", |n| n.state == "stopped").await;
    }
    let store = erigolem_store::Store::connect(
        &stack.database_url,
        erigolem_store::KeyFile::load(&stack.key_file).unwrap(),
    )
    .await
    .unwrap();
    let owner = store.node_by_id(&ids[0]).await.unwrap().unwrap().owner;
    let all = store.events(&owner, 0, 10_000).await.unwrap();
    wait_for_every(
        "C's stream to catch up",
        Duration::from_secs(30),
        LOOK,
        || async {
            let b_seen = on_b_events.lock().unwrap().len();
            let c_seen = on_c_events.lock().unwrap().len();
            (b_seen + c_seen >= all.len()).then_some(())
        },
    )
    .await;
    watching_c.abort();
    let delivered: Vec<i64> = on_b_events
        .lock()
        .unwrap()
        .iter()
        .chain(on_c_events.lock().unwrap().iter())
        .map(|t| t.id)
        .collect();
    let stored: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(
        delivered, stored,
        "B then C delivered every transition once, in order"
    );

    paid_once(&stack, &ids, &logs(&[&a, &b, &c]), paid_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_started_at_once_never_both_poll_or_pay_a_node() {
    let stack = ReplicaStack::start(4).await;
    let paid_before = stack
        .net
        .chain()
        .token_balance(&stack.net.provider(0).node_id)
        .await
        .unwrap();
    // A first replica creates the nodes and dies: its leases expire while nobody runs.
    let mut first = stack.replica(0).await;
    let (client, token) = sign_in(&first.url).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            client
                .create(&CreateNode {
                    name: Some(format!("n{i}")),
                    ..CreateNode::new(erigolem_api::Network::Dev)
                })
                .await
                .unwrap()
                .id,
        );
    }
    for id in &ids {
        running(&client, id).await;
    }
    first.kill9();
    let (a, b) = tokio::join!(stack.replica(1), stack.replica(2));
    let on_a = on(&a.url, &token);
    // Both take their share as the leases expire, then run side by side through several polls
    // and debit notes.
    wait_for_every("every node held", Duration::from_secs(60), LOOK, || async {
        let n = a.held().await.len() + b.held().await.len();
        (n == ids.len()).then_some(())
    })
    .await;
    let settle = now_ms();
    wait_for_every(
        "ten polls of every node",
        Duration::from_secs(90),
        LOOK,
        || async {
            let (ha, hb) = (a.healthz().await, b.healthz().await);
            ids.iter()
                .all(|id| {
                    let n = |h: &Value| h["polled"][id]["polls"].as_u64().unwrap_or(0);
                    n(&ha) + n(&hb) >= 10
                })
                .then_some(())
        },
    )
    .await;
    let (ha, hb) = (a.healthz().await, b.healthz().await);
    for id in &ids {
        let by_a = ha["polled"][id]["polls"].as_u64().unwrap_or(0);
        let by_b = hb["polled"][id]["polls"].as_u64().unwrap_or(0);
        eprintln!("node {id}: {by_a} polls by A, {by_b} by B");
        assert!(
            by_a == 0 || by_b == 0,
            "node {id} polled by both replicas ({by_a} and {by_b})"
        );
        assert!(by_a + by_b > 0);
    }
    let shares = (a.held().await.len(), b.held().await.len());
    eprintln!("shares after {} ms: {shares:?}", now_ms() - settle);
    for id in &ids {
        on_a.stop(id).await.unwrap();
    }
    for id in &ids {
        wait_node(&on_a, id, "stopped", |n| n.state == "stopped").await;
    }
    paid_once(&stack, &ids, &logs(&[&first, &a, &b]), paid_before).await;
}

/// The issue asks for 100 nodes across 3 replicas; each node here is a real Golem activity
/// running a dev chain (anvil + Nginx entry + runtime) on the provider, and CI has 2 cores: 6
/// nodes keep this under two minutes. The lease decisions themselves are run at 100 nodes with
/// kill/restart loops against PostgreSQL in the store's tests
/// (`three_replicas_killed_and_restarted_keep_every_one_of_100_nodes_held_once`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_across_three_replicas_killed_and_restarted_are_never_lost_nor_paid_twice() {
    let stack = ReplicaStack::start(6).await;
    let paid_before = stack
        .net
        .chain()
        .token_balance(&stack.net.provider(0).node_id)
        .await
        .unwrap();
    let mut replicas = vec![
        stack.replica(0).await,
        stack.replica(1).await,
        stack.replica(2).await,
    ];
    let (client, token) = sign_in(&replicas[0].url).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let via = on(&replicas[i % 3].url, &token);
        ids.push(
            via.create(&CreateNode {
                name: Some(format!("n{i}")),
                ..CreateNode::new(erigolem_api::Network::Dev)
            })
            .await
            .unwrap()
            .id,
        );
    }
    let mut first = BTreeMap::new();
    for id in &ids {
        first.insert(id.clone(), running(&client, id).await);
    }
    for round in 0..5 {
        let victim = round % 3;
        let theirs = replicas[victim].held().await;
        let killed = now_ms();
        replicas[victim].kill9();
        let survivors: Vec<&ServeProcess> = replicas.iter().filter(|r| r.running()).collect();
        for id in &theirs {
            polled_after(&survivors, id, killed).await;
        }
        let again = stack.restart(victim, &replicas[victim]).await;
        replicas[victim] = again;
        // Every node is held by exactly one replica, by the store's row and by that replica's own
        // account. (The replicas' /healthz are read one after another, so a lease moving between
        // two reads — a tick late on a loaded machine — is looked at again.)
        let store = erigolem_store::Store::connect(
            &stack.database_url,
            erigolem_store::KeyFile::load(&stack.key_file).unwrap(),
        )
        .await
        .unwrap();
        wait_for_every(
            &format!("round {round}: every node held by exactly one replica"),
            Duration::from_secs(30),
            LOOK,
            || async {
                let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for r in &replicas {
                    let h = r.healthz().await;
                    let me = h["replica"].as_str().unwrap_or_default().to_owned();
                    for n in h["nodes"].as_array().into_iter().flatten() {
                        let id = n["id"].as_str().unwrap_or_default().to_owned();
                        holders.entry(id).or_default().push(me.clone());
                    }
                }
                let rows = store.leases().await.ok()?;
                ids.iter()
                    .all(|id| {
                        let row = rows.iter().find(|l| &l.node_id == id);
                        matches!(holders.get(id), Some(by) if by.len() == 1
                            && row.and_then(|l| l.holder.as_ref()) == Some(&by[0]))
                    })
                    .then_some(())
            },
        )
        .await;
        eprintln!(
            "round {round}: replica {victim} killed ({} nodes) and restarted",
            theirs.len()
        );
    }
    // A graceful stop hands the leases back at once: no row names the replica once it is gone,
    // and the others take them without waiting for them to expire.
    let store = erigolem_store::Store::connect(
        &stack.database_url,
        erigolem_store::KeyFile::load(&stack.key_file).unwrap(),
    )
    .await
    .unwrap();
    let leaving = replicas[2].healthz().await["replica"]
        .as_str()
        .unwrap()
        .to_owned();
    let handing = replicas[2].held().await;
    replicas[2].stop();
    let rows = store.leases().await.unwrap();
    assert!(
        rows.iter().all(|l| l.holder.as_deref() != Some(&leaving)),
        "{rows:?}"
    );
    assert!(store
        .live_replicas()
        .await
        .unwrap()
        .iter()
        .all(|r| r.id != leaving));
    let stopped_at = now_ms();
    let survivors: Vec<&ServeProcess> = replicas.iter().filter(|r| r.running()).collect();
    for id in &handing {
        polled_after(&survivors, id, stopped_at).await;
    }
    replicas[2] = stack.restart(2, &replicas[2]).await;
    let via = on(&replicas[1].url, &token);
    for id in &ids {
        let n = via.node(id).await.unwrap();
        assert_eq!(n.state, "running", "{n:?}");
        assert_eq!(n.url, first[id].url);
        answers(&n).await;
    }
    for id in &ids {
        via.stop(id).await.unwrap();
    }
    for id in &ids {
        wait_node(&via, id, "stopped", |n| n.state == "stopped").await;
    }
    // Logs append across restarts: the replicas' files hold every incarnation's lines.
    paid_once(
        &stack,
        &ids,
        &logs(&replicas.iter().collect::<Vec<_>>()),
        paid_before,
    )
    .await;
}

#[tokio::test]
async fn a_second_replica_on_a_local_backend_database_refuses_to_start() {
    let pg = erigolem_test_utils::postgres::Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = erigolem_test_utils::workspace_bin("erigolem");
    let key = dir.path().join("k.key");
    let args = |gw: u16, ports: u16| -> Vec<String> {
        [
            "--database-url",
            &pg.url,
            "--key-file",
            &key.display().to_string(),
            "--gateway-listen",
            &format!("127.0.0.1:{gw}"),
            "--node-ports",
            &ports.to_string(),
            "--anvil",
            &erigolem_test_utils::anvil_bin().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let first = ServeProcess::start(
        &bin,
        &dir.path().join("a"),
        &args(
            erigolem_test_utils::free_port(),
            erigolem_test_utils::free_port_block(24),
        ),
        &[],
    )
    .await;
    let said = ServeProcess::refused(
        &bin,
        &dir.path().join("b"),
        &args(
            erigolem_test_utils::free_port(),
            erigolem_test_utils::free_port_block(24),
        ),
        &[],
    )
    .await;
    assert!(
        said.contains("local backend runs nodes as the server's own child processes")
            && said.contains(
                &first.healthz().await["replica"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            ),
        "{said}"
    );
    // A golem replica may not join it either.
    let said = ServeProcess::refused(
        &bin,
        &dir.path().join("c"),
        &[
            "--backend".to_owned(),
            "golem".to_owned(),
            "--database-url".to_owned(),
            pg.url.clone(),
            "--key-file".to_owned(),
            key.display().to_string(),
            "--yagna-appkey".to_owned(),
            "unused".to_owned(),
            "--yagna-url".to_owned(),
            format!("http://127.0.0.1:{}", erigolem_test_utils::free_port()),
        ],
        &[],
    )
    .await;
    assert!(said.contains("another erigolem serve"), "{said}");
    // Another key on the same database is refused too, naming the flag.
    let said = ServeProcess::refused(
        &bin,
        &dir.path().join("d"),
        &[
            "--database-url".to_owned(),
            pg.url.clone(),
            "--gateway-listen".to_owned(),
            format!("127.0.0.1:{}", erigolem_test_utils::free_port()),
        ],
        &[],
    )
    .await;
    assert!(
        said.contains("encrypted with another key") && said.contains("--key-file"),
        "{said}"
    );
    drop(first);
}
