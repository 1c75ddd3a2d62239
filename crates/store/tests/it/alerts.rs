//! Alerts (one active per node and kind, whoever fires it) and the webhook delivery queue (a
//! delivery enqueued with its alert, claimed by exactly one of several claimers, kept across a
//! restart, retried, given up).

use erigolem_lifecycle::alert::{AlertRules, AlertType};
use erigolem_store::{Attempt, NewDelivery};

use super::{Db, ALICE, BOB};

fn delivery(n: usize) -> NewDelivery {
    NewDelivery {
        id: format!("d{n:03}"),
        event: "alert.fired".into(),
        body: format!("{{\"n\":{n}}}"),
    }
}

pub(super) async fn alerts_fire_once_per_episode_with_their_delivery(mut db: Db) {
    let s = &db.store;
    assert_eq!(s.alert_rules("n1").await.unwrap(), AlertRules::default());
    let rules = AlertRules {
        lag_blocks: Some(5),
        ..AlertRules::default()
    };
    s.set_alert_rules("n1", &rules, 1).await.unwrap();
    assert_eq!(s.alert_rules("n1").await.unwrap(), rules);

    // No webhook: the alert is stored, nothing is queued.
    let fired = s
        .fire_alert("n1", ALICE, AlertType::LagBlocks, "behind", 10, |_| {
            delivery(0)
        })
        .await
        .unwrap();
    assert!(fired.is_some());
    assert!(s.deliveries(ALICE, 10).await.unwrap().is_empty());
    s.put_webhook(ALICE, "http://127.0.0.1:9/hook", Some("whsec_x"), 11)
        .await
        .unwrap();

    // Many concurrent firings of an active kind (replicas, restarts): none of them fires.
    let tries: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.fire_alert("n1", ALICE, AlertType::LagBlocks, "again", 20, |_| {
                    delivery(i)
                })
                .await
                .unwrap()
            })
        })
        .collect();
    for t in tries {
        assert!(t.await.unwrap().is_none());
    }
    assert!(s.deliveries(ALICE, 10).await.unwrap().is_empty());

    // Resolving queues its delivery in the same transaction; a second resolve does nothing.
    let resolved = s
        .resolve_alert("n1", AlertType::LagBlocks, 30, |a| NewDelivery {
            id: "r1".into(),
            event: "alert.resolved".into(),
            body: format!("{{\"id\":{}}}", a.id),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.resolved_at, Some(30));
    assert!(s
        .resolve_alert("n1", AlertType::LagBlocks, 31, |_| delivery(9))
        .await
        .unwrap()
        .is_none());
    // A new episode fires again.
    let again = s
        .fire_alert(
            "n1",
            ALICE,
            AlertType::LagBlocks,
            "behind again",
            40,
            |_| delivery(1),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(again.id > resolved.id);
    assert_eq!(s.active_alerts("n1").await.unwrap(), vec![again.clone()]);
    assert_eq!(
        s.active_alerts_of(ALICE).await.unwrap(),
        vec![again.clone()]
    );
    assert!(s.active_alerts_of(BOB).await.unwrap().is_empty());
    let recent = s.recent_alerts("n1", 10).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].id, again.id, "newest first");
    let queued: Vec<String> = s
        .deliveries(ALICE, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(queued, vec!["d001", "r1"]);

    // Kept across a restart, the secret decrypted with the same key.
    db.restart().await;
    let s = &db.store;
    assert_eq!(s.active_alerts("n1").await.unwrap(), vec![again]);
    let hook = s.webhook(ALICE).await.unwrap().unwrap();
    assert_eq!(hook.secret, "whsec_x");
    assert!(
        !format!("{hook:?}").contains("whsec_x"),
        "Debug hides the secret"
    );
    assert_eq!(s.deliveries(ALICE, 10).await.unwrap().len(), 2);
    assert!(s.webhook(BOB).await.unwrap().is_none());
    assert!(s.deliveries(BOB, 10).await.unwrap().is_empty());
    // Purged: the resolved alert (and no active one), none of the pending deliveries.
    assert_eq!(s.purge_alerts(i64::MAX).await.unwrap(), 1);
    assert_eq!(s.recent_alerts("n1", 10).await.unwrap().len(), 1);
    assert_eq!(s.deliveries(ALICE, 10).await.unwrap().len(), 2);
}

pub(super) async fn deliveries_are_claimed_by_exactly_one_claimer(db: Db) {
    let s = &db.store;
    s.put_webhook(ALICE, "http://127.0.0.1:9/hook", Some("whsec_a"), 0)
        .await
        .unwrap();
    for n in 0..30 {
        assert!(s.enqueue_delivery(ALICE, delivery(n), 100).await.unwrap());
    }
    // Bob has no webhook: nothing is queued for him.
    assert!(!s.enqueue_delivery(BOB, delivery(99), 100).await.unwrap());
    // Eight claimers at once (as eight replicas would): every delivery is claimed exactly once.
    let claimers: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(c) = s.claim_delivery(200, 60_000).await.unwrap() {
                    assert_eq!(c.webhook.secret, "whsec_a");
                    mine.push(c.delivery.id);
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    all.sort();
    let want: Vec<String> = (0..30).map(|n| format!("d{n:03}")).collect();
    assert_eq!(all, want);
    // Claimed: not claimed again until the claim expires.
    assert!(s.claim_delivery(300, 60_000).await.unwrap().is_none());
    let again = s
        .claim_delivery(200 + 60_000, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.delivery.attempts, 2,
        "an expired claim is an attempt that never came back"
    );

    // Failed attempts come back at their retry time; delivered and given-up ones never.
    let id = again.delivery.id.clone();
    let fail = |retry_at| Attempt {
        status: Some(500),
        error: Some("answered 500".into()),
        delivered: false,
        retry_at,
    };
    s.record_attempt(&id, &fail(Some(1_000_000)), 70_000)
        .await
        .unwrap();
    let log = s.deliveries(ALICE, 100).await.unwrap();
    let row = log.iter().find(|d| d.id == id).unwrap();
    assert_eq!(
        (row.state.as_str(), row.attempts, row.last_status),
        ("pending", 2, Some(500))
    );
    assert_eq!(row.next_attempt_at, 1_000_000);
    // Not due before its retry time (the others' claims expired: they are).
    let mut early = Vec::new();
    while let Some(c) = s.claim_delivery(999_999, 60_000).await.unwrap() {
        early.push(c.delivery.id);
    }
    assert_eq!(early.len(), 29);
    assert!(!early.contains(&id));
    let c = s.claim_delivery(1_000_000, 60_000).await.unwrap().unwrap();
    assert_eq!(
        (c.delivery.id.as_str(), c.delivery.attempts),
        (id.as_str(), 3)
    );
    s.record_attempt(
        &id,
        &Attempt {
            status: Some(200),
            error: None,
            delivered: true,
            retry_at: None,
        },
        1_000_001,
    )
    .await
    .unwrap();
    let row = s
        .deliveries(ALICE, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == id)
        .unwrap();
    assert_eq!(
        (row.state.as_str(), row.attempts, row.delivered_at),
        ("delivered", 3, Some(1_000_001))
    );
    assert!(s
        .claim_delivery(i64::MAX / 4, 60_000)
        .await
        .unwrap()
        .is_some_and(|c| c.delivery.id != id));

    // Removing the webhook gives up what is pending.
    assert!(s.delete_webhook(ALICE, 2_000_000).await.unwrap());
    assert!(s
        .claim_delivery(i64::MAX / 2, 60_000)
        .await
        .unwrap()
        .is_none());
    let log = s.deliveries(ALICE, 100).await.unwrap();
    assert_eq!(log.iter().filter(|d| d.state == "delivered").count(), 1);
    assert_eq!(log.iter().filter(|d| d.state == "gave_up").count(), 29);
    assert!(!s.delete_webhook(ALICE, 2_000_001).await.unwrap());
    // Finished deliveries past the retention are purged; pending ones never.
    assert_eq!(s.purge_alerts(i64::MAX).await.unwrap(), 30);
    assert!(s.deliveries(ALICE, 100).await.unwrap().is_empty());
}

/// Enqueues from many tasks while others claim and record attempts: none of the writes fails
/// (on SQLite a transaction that reads first and then writes fails at once when another
/// connection wrote in between), and every delivery is delivered once.
pub(super) async fn concurrent_enqueues_and_claims_never_fail(db: Db) {
    let s = &db.store;
    s.put_webhook(ALICE, "http://127.0.0.1:9/hook", Some("whsec_a"), 0)
        .await
        .unwrap();
    let enqueuers: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            tokio::spawn(async move {
                for n in 0..25 {
                    assert!(s
                        .enqueue_delivery(ALICE, delivery(t * 100 + n), 1)
                        .await
                        .unwrap());
                }
            })
        })
        .collect();
    let claimers: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut done = 0;
                let mut idle = 0;
                while idle < 200 {
                    match s.claim_delivery(10, 60_000).await.unwrap() {
                        Some(c) => {
                            let ok = Attempt {
                                status: Some(200),
                                error: None,
                                delivered: true,
                                retry_at: None,
                            };
                            s.record_attempt(&c.delivery.id, &ok, 11).await.unwrap();
                            done += 1;
                            idle = 0;
                        }
                        None => {
                            idle += 1;
                            tokio::task::yield_now().await;
                        }
                    }
                }
                done
            })
        })
        .collect();
    for e in enqueuers {
        e.await.unwrap();
    }
    let mut delivered = 0;
    for c in claimers {
        delivered += c.await.unwrap();
    }
    // What the claimers left (they stop after a while without work) is claimed here.
    while let Some(c) = s.claim_delivery(10, 60_000).await.unwrap() {
        let ok = Attempt {
            status: Some(200),
            error: None,
            delivered: true,
            retry_at: None,
        };
        s.record_attempt(&c.delivery.id, &ok, 11).await.unwrap();
        delivered += 1;
    }
    assert_eq!(delivered, 100);
    let log = s.deliveries(ALICE, 1000).await.unwrap();
    assert_eq!(log.len(), 100);
    assert!(log
        .iter()
        .all(|d| d.state == "delivered" && d.attempts == 1));
}
