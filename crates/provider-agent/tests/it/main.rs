//! The agent against real yagna daemons in the local Golem network harness (offline). Exe-units are
//! stand-ins here (the real one is tested in erigolem-exe-unit and end to end in erigolem-provider):
//! these tests are about the market: offers, negotiation, approval, capacity, and restarts.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use erigolem_provider_agent::{
    ActivityRunner, ActivityStart, AgentConfig, Pricing, RunningActivity, ServedOffer,
};
use erigolem_test_utils::golem::{GolemNet, GolemNetConfig, YagnaNode};
use erigolem_yagna::requestor::{make_deal, DealError, DemandSpec};
use erigolem_yagna::Yagna;

#[derive(Default)]
struct StandInRunner {
    started: AtomicUsize,
}

struct StandIn;

#[async_trait::async_trait]
impl RunningActivity for StandIn {
    async fn ended(&self) {
        std::future::pending::<()>().await
    }
    async fn shutdown(self: Box<Self>, _reason: &str) -> u64 {
        0
    }
}

#[async_trait::async_trait]
impl ActivityRunner for StandInRunner {
    async fn start(&self, _activity: ActivityStart) -> Result<Box<dyn RunningActivity>, String> {
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(StandIn))
    }
    async fn report_terminated(&self, _activity_id: &str, _reason: &str) -> Result<(), String> {
        Ok(())
    }
}

fn yagna(node: &YagnaNode) -> Yagna {
    Yagna::new(node.api_url.parse().unwrap(), node.app_key.clone())
}

fn served() -> ServedOffer {
    ServedOffer {
        networks: vec!["dev".into()],
        modes: vec!["dedicated".into()],
        runtime_version: "0.1.0".into(),
        debit_note_interval_secs: 60,
    }
}

const SUBNET: &str = "erigolem-test";

fn agent_config(net: &GolemNet, dir: &std::path::Path, capacity: usize) -> AgentConfig {
    let mut config = AgentConfig::new(
        yagna(net.provider(0)),
        served(),
        Arc::new(StandInRunner::default()),
        dir.join("agent-state.json"),
    );
    config.subnet = SUBNET.into();
    config.capacity = capacity;
    config.pricing = Pricing {
        per_hour: 0.5,
        start_fee: 0.01,
        per_request: 0.0,
    };
    config
}

fn spec(requestor: &YagnaNode, network: &str) -> DemandSpec {
    DemandSpec {
        network: network.into(),
        mode: None,
        subnet: SUBNET.into(),
        payment_platform: "erc20-hoodi-tglm".into(),
        payer: requestor.node_id.clone(),
        expiration: Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn a_demand_for_a_served_network_gets_an_approved_agreement_priced_from_the_offer() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = erigolem_provider_agent::spawn(agent_config(&net, dir.path(), 2))
        .await
        .unwrap();
    let requestor = yagna(net.requestor(0));
    let deal = make_deal(
        &requestor,
        &spec(net.requestor(0), "dev"),
        Duration::from_secs(20),
        |_| true,
    )
    .await
    .unwrap();
    assert_eq!(deal.provider_id, net.provider(0).node_id.to_lowercase());
    let coeffs = erigolem_yagna::requestor::linear_coeffs(&deal.offer.properties).unwrap();
    assert_eq!(coeffs, vec![0.5 / 3600.0, 0.0, 0.01]);
    let agreement = requestor.agreement(&deal.agreement_id).await.unwrap();
    assert_eq!(format!("{:?}", agreement.state), "Approved");
    eprintln!(
        "demand → offer {:?}, → approved agreement {:?}",
        deal.first_offer_after, deal.approved_after
    );
    assert_eq!(agent.stats().agreements_approved, 1);
    // The agreement is remembered for a restart.
    let state = std::fs::read_to_string(dir.path().join("agent-state.json")).unwrap();
    assert!(state.contains(&deal.agreement_id), "{state}");
}

#[tokio::test]
async fn a_demand_for_a_network_not_served_gets_no_agreement_and_a_reason() {
    let net = GolemNet::spawn(GolemNetConfig::test()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = erigolem_provider_agent::spawn(agent_config(&net, dir.path(), 2))
        .await
        .unwrap();
    let err = make_deal(
        &yagna(net.requestor(0)),
        &spec(net.requestor(0), "mainnet"),
        Duration::from_secs(8),
        |_| true,
    )
    .await
    .unwrap_err();
    match err {
        DealError::NoDeal { rejections, .. } => {
            assert!(
                rejections
                    .iter()
                    .any(|r| r.contains("mainnet is not served")),
                "{rejections:?}"
            )
        }
        other => panic!("{other}"),
    }
    assert_eq!(agent.stats().agreements_approved, 0);
    assert!(agent.stats().proposals_rejected >= 1);
}

#[tokio::test]
async fn with_capacity_one_the_second_requestor_is_refused() {
    let net = GolemNet::spawn(GolemNetConfig::test().with_nodes(2, 1))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = erigolem_provider_agent::spawn(agent_config(&net, dir.path(), 1))
        .await
        .unwrap();
    let first = make_deal(
        &yagna(net.requestor(0)),
        &spec(net.requestor(0), "dev"),
        Duration::from_secs(20),
        |_| true,
    )
    .await;
    assert!(first.is_ok(), "{first:?}");
    let second = make_deal(
        &yagna(net.requestor(1)),
        &spec(net.requestor(1), "dev"),
        Duration::from_secs(8),
        |_| true,
    )
    .await;
    match second {
        Err(DealError::NoDeal { rejections, .. }) => {
            assert!(
                rejections.iter().any(|r| r.contains("at capacity")),
                "{rejections:?}; agent: {:?}",
                agent.stats()
            )
        }
        other => panic!(
            "the second requestor got {other:?}; agent: {:?}",
            agent.stats()
        ),
    }
    assert_eq!(agent.stats().agreements_approved, 1);
}
