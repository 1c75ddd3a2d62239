//! How much disk an Erigon node takes, from Erigon's own published figures: the "Current Disk
//! Usage" of docs.erigon.tech's Hardware Requirements page (`docs/site/src/data/disk-sizes.json` in
//! erigontech/erigon), whole datadir minus `temp/`, default flags but `--prune.mode`.
//! Mainnet: erigontech/erigon PR #22640 (v3.5.2, measured 2026-07-19); Sepolia and Hoodi:
//! PR #23113 (v3.5.4, 2026-08). Erigon publishes no figure for `--prune.mode=blocks`: it keeps
//! every block but no historical state, so it is at most the archive figure, shown as such.

use erigolem_primitives::{Network, Prune};
use serde::Serialize;

/// What an estimate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskBasis {
    /// Erigon measured a synced node of this network and mode.
    Measured,
    /// Not measured by Erigon; at most this much.
    AtMost,
}

/// Disk one node of a network takes in one prune mode (it grows with the chain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskEstimate {
    pub prune: Prune,
    /// Bytes (decimal units, as Erigon publishes them).
    pub bytes: u64,
    pub basis: DiskBasis,
    /// Where the figure comes from.
    pub source: &'static str,
}

const GB: u64 = 1_000_000_000;
const MAINNET: &str = "docs.erigon.tech hardware requirements (Erigon 3.5.2, 2026-07-19; erigontech/erigon PR #22640)";
const TESTNETS: &str =
    "docs.erigon.tech hardware requirements (Erigon 3.5.4, 2026-08; erigontech/erigon PR #23113)";

/// Erigon's published figure for `network` in `prune` mode, in hundredths of a GB.
fn measured(network: Network, prune: Prune) -> Option<(u64, &'static str)> {
    use Network::*;
    use Prune::*;
    Some(match (network, prune) {
        (Mainnet, Archive) => (203_000, MAINNET),
        (Mainnet, Full) => (41_904, MAINNET),
        (Mainnet, Minimal) => (37_897, MAINNET),
        (Sepolia, Archive) => (104_000, TESTNETS),
        (Sepolia, Full) => (23_871, TESTNETS),
        (Sepolia, Minimal) => (21_806, TESTNETS),
        (Hoodi, Archive) => (11_585, TESTNETS),
        (Hoodi, Full) => (4_836, TESTNETS),
        (Hoodi, Minimal) => (4_561, TESTNETS),
        _ => return None,
    })
}

/// The disk a node of `network` needs in `prune` mode; `None` for the dev chain (anvil keeps its
/// state in memory and a small JSON dump).
pub fn disk_estimate(network: Network, prune: Prune) -> Option<DiskEstimate> {
    let (centi_gb, source, basis) = match measured(network, prune) {
        Some((c, s)) => (c, s, DiskBasis::Measured),
        None => {
            let (c, s) = measured(network, Prune::Archive)?;
            (c, s, DiskBasis::AtMost)
        }
    };
    Some(DiskEstimate {
        prune,
        bytes: centi_gb * GB / 100,
        basis,
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_erigon_network_and_mode_has_an_estimate() {
        for network in [Network::Mainnet, Network::Sepolia, Network::Hoodi] {
            let archive = disk_estimate(network, Prune::Archive).unwrap();
            for prune in Prune::ALL {
                let e = disk_estimate(network, prune).unwrap();
                assert!(e.bytes <= archive.bytes, "{network} {prune}");
                assert_eq!(e.basis == DiskBasis::AtMost, prune == Prune::Blocks);
            }
        }
        assert_eq!(
            disk_estimate(Network::Mainnet, Prune::Full).unwrap().bytes,
            419_040_000_000
        );
        assert_eq!(disk_estimate(Network::Dev, Prune::Full), None);
    }
}
