//! A whole federation in memory, with deterministic keys: genesis, shard chains, a certified
//! beacon chain and every kind of proof. For tests, benchmarks, the worked example in
//! `docs/protocol.md` and tools; never for production keys (the seeds are public).

use crate::beacon::{BEACON_HEADER_VERSION, BeaconHeader, CommitCertificate, Crosslink};
use crate::bls::SecretKey;
use crate::encoding::encode;
use crate::genesis::{
    Asset, City, GENESIS_VERSION, Genesis, Parameters, SealingKeyEntry, ValidGenesis,
};
use crate::hash::{Domain, Hash32};
use crate::header::{SHARD_HEADER_VERSION, ShardHeader, SignedShardHeader};
use crate::light_client::LightClientUpdate;
use crate::merkle::{Blake3Tree, InclusionProof, TreeHasher, root_from_leaf_hashes};
use crate::proof::{FinalityProof, HistoryLink, RecordProof, StateFactProof};
use crate::record::{
    CityId, InformationContent, InformationPayload, RECORD_VERSION, Record, RecordBody, SubjectId,
};
use crate::sealing::SealingKey;
use crate::state::{StateKey, memory::MemoryTree};
use crate::validators::{Quorum, Validator, ValidatorSet};

/// Deterministic 32 bytes from a label.
pub fn seed(label: &str) -> [u8; 32] {
    blake3::derive_key("urbis testkit seed", label.as_bytes())
}

/// A validator's secret key and its registry entry.
pub fn validator(label: &str, weight: u64, city: Option<CityId>) -> (SecretKey, Validator) {
    // KeyGen only fails on short key material; 32 bytes are never short.
    let sk = SecretKey::key_gen(&seed(label)).unwrap_or_else(|_| unreachable!());
    let v = Validator {
        name: label.to_string(),
        city,
        bls_key: sk.public_key().to_bytes(),
        proof_of_possession: sk.pop_prove().to_bytes(),
        weight,
        tls_fingerprint: Domain::RecordId.hash(label.as_bytes()),
    };
    (sk, v)
}

/// A federation's keys and genesis.
pub struct Federation {
    /// The checked genesis.
    pub genesis: ValidGenesis,
    /// Validator keys, in set order.
    pub validator_keys: Vec<SecretKey>,
    /// Sealing key of each city, by city index.
    pub sealing_keys: Vec<SealingKey>,
}

impl Federation {
    /// `cities` cities and `validators` equally weighted validators, named after `name`.
    pub fn new(name: &str, cities: u32, validators: usize) -> Self {
        let sealing_keys: Vec<SealingKey> =
            (0..cities).map(|i| SealingKey::from_seed(&seed(&format!("{name}/city{i}")))).collect();
        let city_list = (0..cities)
            .map(|i| City {
                id: CityId(i),
                name: format!("city{i}"),
                sealing_keys: vec![SealingKeyEntry {
                    from_height: 0,
                    public_key: sealing_keys[i as usize].public_key().to_bytes(),
                }],
                tls_ca_pem: format!(
                    "-----BEGIN CERTIFICATE-----\ncity{i}\n-----END CERTIFICATE-----\n"
                ),
                first_height: 0,
            })
            .collect();
        let (validator_keys, entries): (Vec<_>, Vec<_>) = (0..validators)
            .map(|i| {
                validator(
                    &format!("{name}/validator{i}"),
                    10,
                    Some(CityId(i as u32 % cities.max(1))),
                )
            })
            .unzip();
        let genesis = Genesis {
            version: GENESIS_VERSION,
            name: name.to_string(),
            genesis_time_ms: 1_790_000_000_000,
            parameters: Parameters {
                quorum: Quorum::TWO_THIRDS,
                beacon_block_interval_ms: 500,
                block_records_max: 10_000,
                record_bytes_max: 128 * 1024,
            },
            cities: city_list,
            validators: ValidatorSet { validators: entries },
            assets: vec![Asset { id: "EUR".into(), issuer: CityId(0) }],
        };
        let genesis = genesis.validate().unwrap_or_else(|e| unreachable!("testkit genesis: {e}"));
        Federation { genesis, validator_keys, sealing_keys }
    }

    /// The federation id.
    pub fn id(&self) -> Hash32 {
        self.genesis.federation_id()
    }
}

/// An information record of `city` about a subject derived from `n`.
pub fn information_record(city: CityId, n: u64) -> Record {
    Record {
        version: RECORD_VERSION,
        city,
        service: "open-data-office".into(),
        subject: SubjectId(Domain::RecordId.hash(&n.to_le_bytes())),
        time_ms: 1_790_000_000_000 + n,
        destination: None,
        body: RecordBody::Information(InformationPayload {
            dataset: "street-trees".into(),
            media_type: "text/csv".into(),
            content: InformationContent::Inline(format!("tree,{n}\n").into_bytes()),
        }),
    }
}

/// One city's chain of sealed blocks, kept whole in memory.
pub struct ShardChain {
    /// The city.
    pub city: CityId,
    /// Sealed headers by height.
    pub headers: Vec<SignedShardHeader>,
    /// Records of each block.
    pub blocks: Vec<Vec<Record>>,
    /// The state tree after the last block.
    pub state: MemoryTree,
    history: Vec<Hash32>,
}

impl ShardChain {
    /// An empty chain.
    pub fn new(city: CityId) -> Self {
        ShardChain {
            city,
            headers: vec![],
            blocks: vec![],
            state: MemoryTree::default(),
            history: vec![],
        }
    }

    /// Seals a block of `records` with `writes` applied to the state.
    pub fn seal(
        &mut self,
        federation: &Federation,
        records: Vec<Record>,
        writes: &[(StateKey, Option<Vec<u8>>)],
    ) -> &SignedShardHeader {
        let tree = Blake3Tree::records();
        let leaves: Vec<Hash32> = records.iter().map(|r| tree.leaf(r.id().as_bytes())).collect();
        let history = Blake3Tree::history();
        let history_leaves: Vec<Hash32> =
            self.history.iter().map(|h| history.leaf(h.as_bytes())).collect();
        let state_root = if writes.is_empty() {
            self.state.root()
        } else {
            self.state.apply(writes).unwrap_or_else(|e| unreachable!("testkit state: {e}"))
        };
        let height = self.headers.len() as u64;
        let header = ShardHeader {
            version: SHARD_HEADER_VERSION,
            city: self.city,
            height,
            time_ms: 1_790_000_000_000 + height * 100,
            previous: self.history.last().copied().unwrap_or(Hash32::ZERO),
            records_root: root_from_leaf_hashes(&tree, &leaves),
            records_count: records.len() as u64,
            state_root,
            history_root: root_from_leaf_hashes(&history, &history_leaves),
        };
        self.history.push(header.hash());
        let signed = header.seal(&federation.id(), &federation.sealing_keys[self.city.0 as usize]);
        self.headers.push(signed);
        self.blocks.push(records);
        &self.headers[self.headers.len() - 1]
    }

    /// A committed-level proof of record `index` of block `height`.
    pub fn record_proof(&self, height: u64, index: u64) -> RecordProof {
        let tree = Blake3Tree::records();
        let block = &self.blocks[height as usize];
        let leaves: Vec<Hash32> = block.iter().map(|r| tree.leaf(r.id().as_bytes())).collect();
        RecordProof {
            record: block[index as usize].clone(),
            inclusion: InclusionProof::build(&tree, &leaves, index)
                .unwrap_or_else(|e| unreachable!("{e}")),
            header: self.headers[height as usize].clone(),
            finality: None,
        }
    }

    /// A committed-level proof of `key` in the latest state.
    pub fn state_proof(&self, key: &StateKey) -> StateFactProof {
        let (value, proof) = self.state.prove(key).unwrap_or_else(|e| unreachable!("{e}"));
        StateFactProof {
            key: key.clone(),
            value,
            proof,
            header: self.headers[self.headers.len() - 1].clone(),
            finality: None,
        }
    }

    /// The crosslink entry for header `m`, extending header `from` (None: a first crosslink).
    pub fn crosslink_entry(&self, m: u64, from: Option<u64>) -> crate::crosslink::CrosslinkEntry {
        let history = Blake3Tree::history();
        let leaves: Vec<Hash32> =
            self.history[..m as usize].iter().map(|h| history.leaf(h.as_bytes())).collect();
        let extension = from.map(|p| crate::crosslink::Extension {
            consistency: crate::merkle::ConsistencyProof::build(&history, &leaves, p)
                .unwrap_or_else(|e| unreachable!("{e}")),
            inclusion: InclusionProof::build(&history, &leaves, p)
                .unwrap_or_else(|e| unreachable!("{e}")),
        });
        crate::crosslink::CrosslinkEntry { header: self.headers[m as usize].clone(), extension }
    }

    /// N's link into the history tree of M (None when N = M).
    pub fn history_link(&self, n: u64, m: u64) -> Option<HistoryLink> {
        if n == m {
            return None;
        }
        let history = Blake3Tree::history();
        let leaves: Vec<Hash32> =
            self.history[..m as usize].iter().map(|h| history.leaf(h.as_bytes())).collect();
        Some(HistoryLink {
            crosslinked: self.headers[m as usize].clone(),
            inclusion: InclusionProof::build(&history, &leaves, n)
                .unwrap_or_else(|e| unreachable!("{e}")),
        })
    }
}

/// A beacon block as the testkit keeps it.
pub struct BeaconBlock {
    /// Header.
    pub header: BeaconHeader,
    /// Certificate.
    pub certificate: CommitCertificate,
    /// Crosslinks, sorted by city.
    pub crosslinks: Vec<Crosslink>,
    /// The next set when this block changes it.
    pub next_set: Option<ValidatorSet>,
}

/// A certified beacon chain driven by the federation's validator keys.
pub struct BeaconChain {
    /// Blocks from height 1.
    pub blocks: Vec<BeaconBlock>,
    /// Keys of the set in force for the next block.
    pub keys: Vec<SecretKey>,
    /// The set in force for the next block.
    pub set: ValidatorSet,
}

impl BeaconChain {
    /// Starts after genesis.
    pub fn new(federation: &Federation) -> Self {
        BeaconChain {
            blocks: vec![],
            keys: federation.validator_keys.clone(),
            set: federation.genesis.genesis().validators.clone(),
        }
    }

    /// Produces the next block with `crosslinks`, signed by every validator; `next` installs a
    /// new set (with its keys) from the following height.
    pub fn produce(
        &mut self,
        federation: &Federation,
        mut crosslinks: Vec<Crosslink>,
        next: Option<(ValidatorSet, Vec<SecretKey>)>,
    ) -> &BeaconBlock {
        crosslinks.sort();
        let tree = Blake3Tree::crosslinks();
        let leaves: Vec<Hash32> = crosslinks.iter().map(Crosslink::leaf_hash).collect();
        let height = self.blocks.len() as u64 + 1;
        let set_hash = self.set.hash();
        let header = BeaconHeader {
            version: BEACON_HEADER_VERSION,
            height,
            time_ms: 1_790_000_000_000 + height * 500,
            previous: self.blocks.last().map_or(Hash32::ZERO, |b| b.header.hash()),
            body_hash: Domain::BeaconBody.hash(&encode(&crosslinks)),
            crosslinks_root: root_from_leaf_hashes(&tree, &leaves),
            crosslinks_count: crosslinks.len() as u64,
            validator_set_hash: set_hash,
            next_validator_set_hash: next.as_ref().map_or(set_hash, |(s, _)| s.hash()),
        };
        let signers: Vec<Option<&SecretKey>> = self.keys.iter().map(Some).collect();
        let certificate = CommitCertificate::sign(&header, &federation.id(), &signers)
            .unwrap_or_else(|e| unreachable!("{e}"));
        let next_set = next.as_ref().map(|(s, _)| s.clone());
        if let Some((set, keys)) = next {
            self.set = set;
            self.keys = keys;
        }
        self.blocks.push(BeaconBlock { header, certificate, crosslinks, next_set });
        &self.blocks[self.blocks.len() - 1]
    }

    /// Every set-changing block up to and including `height`, as light-client updates.
    pub fn set_updates(&self, height: u64) -> Vec<LightClientUpdate> {
        self.blocks
            .iter()
            .filter(|b| b.header.height <= height && b.next_set.is_some())
            .map(|b| self.update(b.header.height))
            .collect()
    }

    /// The light-client update for the block at `height`.
    pub fn update(&self, height: u64) -> LightClientUpdate {
        let b = &self.blocks[height as usize - 1];
        LightClientUpdate {
            header: b.header.clone(),
            certificate: b.certificate.clone(),
            next_set: b.next_set.clone(),
        }
    }

    /// The finality proof of shard header `n` of `shard` through the block at `beacon_height`,
    /// which must crosslink one of the shard's headers at or after `n`.
    pub fn finality(
        &self,
        shard: &ShardChain,
        n: u64,
        beacon_height: u64,
    ) -> Option<FinalityProof> {
        let b = &self.blocks[beacon_height as usize - 1];
        let index = b.crosslinks.iter().position(|c| c.city == shard.city)?;
        let m_hash = b.crosslinks[index].header_hash;
        let m = shard.headers.iter().position(|h| h.header.hash() == m_hash)? as u64;
        if m < n {
            return None;
        }
        let leaves: Vec<Hash32> = b.crosslinks.iter().map(Crosslink::leaf_hash).collect();
        Some(FinalityProof {
            history: shard.history_link(n, m),
            crosslink: InclusionProof::build(&Blake3Tree::crosslinks(), &leaves, index as u64)
                .ok()?,
            beacon_header: b.header.clone(),
            certificate: b.certificate.clone(),
            set_updates: self.set_updates(beacon_height),
        })
    }
}

/// A complete packet proof in `federation`: city 0 sends [`information_record`] 1 to city 1
/// as sequence 1 with `timeout_height`, sealed in city 0's block 0, which beacon block 1
/// crosslinks.
pub fn first_packet(federation: &Federation, timeout_height: u64) -> crate::packet::PacketProof {
    use crate::packet::{OutboundBatch, PacketId, PacketProof};
    let (source, destination) = (CityId(0), CityId(1));
    let mut record = information_record(source, 1);
    record.destination = Some(destination);
    let id = PacketId { source, destination, sequence: 1 };
    let batch = OutboundBatch::new(0, 1, timeout_height, &[record.id()]);
    let leaves = OutboundBatch::leaf_hashes(&[record.id()]);
    let mut shard = ShardChain::new(source);
    shard.seal(federation, vec![record], &[(id.batch_key(), Some(encode(&batch)))]);
    let mut beacon = BeaconChain::new(federation);
    let link = Crosslink { city: source, header_hash: shard.headers[0].header.hash() };
    beacon.produce(federation, vec![link], None);
    let rp = shard.record_proof(0, 0);
    let (_, batch_proof) = shard
        .state
        .prove(&id.batch_key())
        .unwrap_or_else(|e| unreachable!("testkit state proof: {e}"));
    PacketProof {
        sequence: 1,
        batch,
        batch_proof,
        path: InclusionProof::build(&Blake3Tree::outbound_batch(), &leaves, 0)
            .unwrap_or_else(|e| unreachable!("one leaf: {e}")),
        record: rp.record,
        header: rp.header,
        finality: beacon
            .finality(&shard, 0, 1)
            .unwrap_or_else(|| unreachable!("beacon block 1 crosslinks block 0")),
    }
}
