//! One small federation with a shard chain and a certified beacon chain, shared by the tests.

use urbis_core::beacon::Crosslink;
use urbis_core::light_client::LightClient;
use urbis_core::proof::{RecordProof, StateFactProof};
use urbis_core::record::CityId;
use urbis_core::state::StateKey;
use urbis_core::testkit::{BeaconChain, Federation, ShardChain, information_record};

/// A federation of 3 cities and 4 validators; city 0 has sealed 6 blocks of 5 records; beacon
/// block 1 crosslinks city 0's header 2, beacon block 2 its header 5.
pub struct World {
    pub federation: Federation,
    pub shard: ShardChain,
    pub beacon: BeaconChain,
}

pub fn revoked_key() -> StateKey {
    StateKey::Revocation { credential_id: urbis_core::Domain::RecordId.hash(b"cred-1") }
}

pub fn balance_key(n: u32) -> StateKey {
    StateKey::Balance { asset: "EUR".into(), account: format!("account-{n}") }
}

pub fn absent_key() -> StateKey {
    StateKey::Revocation { credential_id: urbis_core::Domain::RecordId.hash(b"cred-2") }
}

pub fn world() -> World {
    let federation = Federation::new("test", 3, 4);
    let mut shard = ShardChain::new(CityId(0));
    let mut beacon = BeaconChain::new(&federation);
    for h in 0..6u64 {
        let records = (0..5).map(|i| information_record(CityId(0), h * 10 + i)).collect();
        let mut writes = vec![];
        if h == 4 {
            writes.push((revoked_key(), Some(b"revoked at 4".to_vec())));
            for b in 0..8 {
                writes.push((balance_key(b), Some((b as u128 * 100).to_le_bytes().to_vec())));
            }
        }
        shard.seal(&federation, records, &writes);
        if h == 2 || h == 5 {
            let c =
                Crosslink { city: CityId(0), header_hash: shard.headers[h as usize].header.hash() };
            let other = Crosslink {
                city: CityId(2),
                header_hash: urbis_core::Domain::RecordId.hash(&h.to_le_bytes()),
            };
            beacon.produce(&federation, vec![c, other], None);
        }
    }
    World { federation, shard, beacon }
}

impl World {
    pub fn client(&self) -> LightClient {
        LightClient::from_genesis(&self.federation.genesis)
    }

    /// Record `index` of block `height`, final through beacon block `beacon_height`.
    pub fn final_record(&self, height: u64, index: u64, beacon_height: u64) -> RecordProof {
        let mut p = self.shard.record_proof(height, index);
        p.finality = self.beacon.finality(&self.shard, height, beacon_height);
        assert!(p.finality.is_some(), "beacon block {beacon_height} covers height {height}");
        p
    }

    /// State proof of `key` at the latest header (5), final through beacon block 2.
    pub fn final_state(&self, key: &StateKey) -> StateFactProof {
        let mut p = self.shard.state_proof(key);
        p.finality = self.beacon.finality(&self.shard, 5, 2);
        p
    }
}
