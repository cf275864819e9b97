//! Cross-city packets: what travels between cities, and the pure checks a destination makes
//! before it accepts a packet and a source makes before it settles one.
//!
//! A record submitted with a destination becomes an outbound packet in its source shard's
//! state: each block that sends on a channel writes one [`OutboundBatch`] under
//! `OutboundBatch{source, destination}`, which gives its packets their sequences and commits to
//! their record ids in a Merkle tree of its own. The destination accepts a packet only with a
//! [`PacketProof`] that reaches a beacon block certified under the destination's own light
//! client, writes a [`Receipt`] holding its
//! [`Acknowledgement`] under its own `state_root`, and the source settles the packet with an
//! [`AcknowledgementProof`] or, once the destination's certified view passed the timeout, a
//! [`TimeoutProof`] of the receipt's absence, recording its [`PacketOutcome`] in the
//! [`Settlements`] of its range of sequences. Every key and every expected value is built here
//! from `(source, destination, sequence)` and the caller's own record of its packet; nothing a relay
//! says is taken on trust.
//!
//! The source writes no key per packet: the packets a block sends on a channel share its
//! batch's key, and their outcomes share one key per [`SETTLEMENT_BUCKET_SIZE`] sequences, so
//! the packets a block sends or settles on one channel cost the state tree one or two leaf
//! writes, not one each. The destination writes one key per packet, its receipt, which
//! carries the acknowledgement.

use crate::encoding::encode;
use crate::genesis::ValidGenesis;
use crate::hash::Hash32;
use crate::header::SignedShardHeader;
use crate::light_client::LightClient;
use crate::merkle::{Blake3Tree, InclusionProof, MerkleError, TreeHasher, root_from_leaf_hashes};
use crate::proof::{FinalityProof, ProofError, verify_finality, verify_seal};
use crate::record::{CityId, Record};
use crate::state::{StateKey, StateProof, StateProofError};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// One packet's identity: its channel and sequence.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
pub struct PacketId {
    /// Source city.
    pub source: CityId,
    /// Destination city.
    pub destination: CityId,
    /// Sequence on the (source, destination) channel, from 1.
    pub sequence: u64,
}

impl PacketId {
    /// The source's key of the newest batch it sent on the packet's channel.
    pub fn batch_key(&self) -> StateKey {
        StateKey::OutboundBatch { source: self.source, destination: self.destination }
    }
    /// The source's key of the settlements of the packet's range of sequences, where its
    /// outcome is recorded once it is settled.
    pub fn settlements_key(&self) -> StateKey {
        StateKey::PacketSettlements {
            source: self.source,
            destination: self.destination,
            bucket: self.settlement_range(),
        }
    }
    /// The range of sequences whose settlements hold this packet's outcome.
    pub fn settlement_range(&self) -> u64 {
        self.sequence / SETTLEMENT_BUCKET_SIZE
    }
    /// The destination's receipt key (the receipt holds the acknowledgement).
    pub fn receipt_key(&self) -> StateKey {
        StateKey::PacketReceipt {
            source: self.source,
            destination: self.destination,
            sequence: self.sequence,
        }
    }
}

impl std::fmt::Display for PacketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.source, self.destination, self.sequence)
    }
}

/// The packets one block sent on one channel: the value under
/// `OutboundBatch{source, destination}` from that block until the next block that sends on
/// the channel. Packet `first_sequence + i` carries the record whose id is leaf `i` of the
/// tree of [`Blake3Tree::outbound_batch`] over the batch's record ids, in sequence order,
/// whose root is `root`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct OutboundBatch {
    /// Height of the block that sent them.
    pub height: u64,
    /// Sequence of the first (from 1 on each channel).
    pub first_sequence: u64,
    /// How many (at least one).
    pub count: u64,
    /// The beacon height from which the destination refuses them and the source may prove a
    /// timeout.
    pub timeout_height: u64,
    /// Root of the batch's tree of record ids.
    pub root: Hash32,
}

impl OutboundBatch {
    /// The batch block `height` writes for packets `first_sequence..` carrying the records
    /// `record_ids`, in sequence order (at least one).
    pub fn new(
        height: u64,
        first_sequence: u64,
        timeout_height: u64,
        record_ids: &[Hash32],
    ) -> Self {
        OutboundBatch {
            height,
            first_sequence,
            count: record_ids.len() as u64,
            timeout_height,
            root: root_from_leaf_hashes(
                &Blake3Tree::outbound_batch(),
                &Self::leaf_hashes(record_ids),
            ),
        }
    }

    /// The leaf hashes of the batch's tree over `record_ids`.
    pub fn leaf_hashes(record_ids: &[Hash32]) -> Vec<Hash32> {
        let tree = Blake3Tree::outbound_batch();
        record_ids.iter().map(|id| tree.leaf(id.as_bytes())).collect()
    }

    /// The sequence the channel's next packet gets.
    pub fn next_sequence(&self) -> u64 {
        self.first_sequence.saturating_add(self.count)
    }

    /// Whether `sequence` is one of this batch's packets.
    pub fn contains(&self, sequence: u64) -> bool {
        sequence >= self.first_sequence && sequence < self.next_sequence()
    }
}

/// What a source knows of one packet it sent (from its own store, never from a relay): which
/// record travels, and until when.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct OutboundPacket {
    /// The record's id (the record travels beside the proof).
    pub record_id: Hash32,
    /// The beacon height from which the destination refuses the packet and the source may
    /// prove a timeout.
    pub timeout_height: u64,
}

/// Why a destination answered a packet with an error (the source refunds).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AckError {
    /// The asset is not in the destination's genesis.
    UnknownAsset,
    /// Packets from the source are frozen after evidence of its equivocation.
    FrozenChannel,
    /// A voucher came home for more than is escrowed for the sending city.
    EscrowShortfall,
    /// Crediting would overflow the recipient's balance.
    Overflow,
}

impl AckError {
    /// Stable name (API, metrics).
    pub fn name(&self) -> &'static str {
        match self {
            AckError::UnknownAsset => "unknown_asset",
            AckError::FrozenChannel => "frozen_channel",
            AckError::EscrowShortfall => "escrow_shortfall",
            AckError::Overflow => "overflow",
        }
    }
}

/// The destination's answer to a packet, kept in its [`Receipt`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(tag = "result", content = "error", rename_all = "snake_case")]
pub enum Acknowledgement {
    /// Accepted: the record (and for capital, the credit) took effect.
    Success,
    /// Refused with a reason; nothing but the receipt and this answer was written.
    Error(AckError),
}

/// How a packet ended at its source (kept in its range's [`Settlements`]).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PacketOutcome {
    /// Acknowledged with success.
    Acknowledged {
        /// Source height that settled it.
        height: u64,
    },
    /// Acknowledged with an error; any escrow or burn was refunded.
    ErrorAcknowledged {
        /// The destination's reason.
        error: AckError,
        /// Source height that settled it.
        height: u64,
    },
    /// Proven timed out; any escrow or burn was refunded.
    TimedOut {
        /// Source height that settled it.
        height: u64,
    },
}

/// Most bytes of JSON the parts a group of packets shares (`batch_proof`, `header` and
/// `finality`) may take together (`docs/protocol.md` §12.8): each packet of a group is checked
/// with its own copy of them, so this bounds what one request can make a shard hold (a
/// packet's whole proof chain is about 4 KB).
pub const GROUP_SHARED_JSON_MAX: usize = 64 << 10;

/// Whether parts a group shares, `bytes` of JSON together, fit a group
/// ([`GROUP_SHARED_JSON_MAX`]); the error says how large they are.
pub fn check_group_shared(bytes: usize) -> Result<(), String> {
    if bytes > GROUP_SHARED_JSON_MAX {
        return Err(format!(
            "the shared parts of a group take {bytes} bytes; at most {GROUP_SHARED_JSON_MAX}"
        ));
    }
    Ok(())
}

/// Sequences per [`Settlements`] range: sequence `q` is settled under
/// `PacketSettlements{source, destination, q / SETTLEMENT_BUCKET_SIZE}`.
pub const SETTLEMENT_BUCKET_SIZE: u64 = 64;

/// One settled packet of a range.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct SettledPacket {
    /// Its sequence.
    pub sequence: u64,
    /// How it ended.
    pub outcome: PacketOutcome,
}

/// The value under `PacketSettlements{source, destination, bucket}` at the source: the
/// outcome of every settled packet of the range, in ascending sequence order, each sequence
/// once and in the range. An entry is added when its packet is settled and never changed or
/// removed: a packet with an entry is never settled again. The key is absent until the
/// range's first settlement.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Settlements {
    /// The settled packets, by ascending sequence.
    pub settled: Vec<SettledPacket>,
}

impl Settlements {
    /// Decodes the value stored under range `bucket`'s key, refusing one the rules could not
    /// have written ([`Settlements::is_well_formed`]).
    pub fn decode_range(bytes: &[u8], bucket: u64) -> Result<Self, crate::encoding::DecodeError> {
        let s: Settlements = crate::encoding::decode(bytes)?;
        if !s.is_well_formed(bucket) {
            return Err(crate::encoding::DecodeError::Malformed {
                type_name: "Settlements",
                reason: format!("entries out of order, duplicated or outside range {bucket}"),
            });
        }
        Ok(s)
    }

    /// The outcome of `sequence`, if it is settled.
    pub fn outcome(&self, sequence: u64) -> Option<PacketOutcome> {
        self.settled
            .binary_search_by_key(&sequence, |s| s.sequence)
            .ok()
            .map(|i| self.settled[i].outcome)
    }

    /// Records the outcome of `sequence`; `false` (and nothing changed) when it is settled
    /// already.
    pub fn insert(&mut self, sequence: u64, outcome: PacketOutcome) -> bool {
        match self.settled.binary_search_by_key(&sequence, |s| s.sequence) {
            Ok(_) => false,
            Err(i) => {
                self.settled.insert(i, SettledPacket { sequence, outcome });
                true
            }
        }
    }

    /// Whether this is a value the rules can write under range `bucket`: at least one entry,
    /// strictly ascending sequences, every one in the range.
    pub fn is_well_formed(&self, bucket: u64) -> bool {
        !self.settled.is_empty()
            && self.settled.windows(2).all(|w| w[0].sequence < w[1].sequence)
            && self.settled.iter().all(|s| s.sequence / SETTLEMENT_BUCKET_SIZE == bucket)
    }
}

/// The value under `PacketReceipt{source, destination, sequence}` at the destination: which
/// record was received, and the answer the destination gave in the same block.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Receipt {
    /// The received record's id.
    pub record_id: Hash32,
    /// The acknowledgement written with the receipt.
    pub acknowledgement: Acknowledgement,
}

/// A packet as it travels: the record, and the batch that sent it proven against one sealed
/// source header that a certified beacon block covers.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct PacketProof {
    /// Sequence on the channel (the channel is the record's city and destination).
    pub sequence: u64,
    /// The batch that holds the packet, as the source's state keeps it.
    pub batch: OutboundBatch,
    /// Membership of `OutboundBatch{source, destination}` = `batch` under header N's
    /// `state_root`.
    pub batch_proof: StateProof,
    /// Path of the record id at leaf `sequence - batch.first_sequence` of the batch's tree.
    pub path: InclusionProof,
    /// The record.
    pub record: Record,
    /// Source header N, sealed.
    pub header: SignedShardHeader,
    /// N to a certified beacon block.
    pub finality: FinalityProof,
}

/// The destination's acknowledgement, proven against its sealed, certified header.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct AcknowledgementProof {
    /// The acknowledgement.
    pub acknowledgement: Acknowledgement,
    /// Membership of the receipt holding it under header D's `state_root`.
    pub proof: StateProof,
    /// Destination header D, sealed.
    pub header: SignedShardHeader,
    /// D to a certified beacon block.
    pub finality: FinalityProof,
}

/// The receipt's absence at a destination header whose certified beacon view reached the
/// timeout.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct TimeoutProof {
    /// Non-membership of the receipt under header D's `state_root`.
    pub receipt_absence: StateProof,
    /// D's `BeaconView` value.
    pub beacon_view: u64,
    /// Membership of `BeaconView` = `beacon_view` under D's `state_root`.
    pub beacon_view_proof: StateProof,
    /// Destination header D, sealed.
    pub header: SignedShardHeader,
    /// D to a certified beacon block.
    pub finality: FinalityProof,
}

/// Which check a packet, acknowledgement or timeout failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// A link of the proof chain failed (record path, seal, history, crosslink, certificate).
    #[error("{0}")]
    Proof(#[from] ProofError),
    /// The record is not addressed to this city.
    #[error("packet is addressed to {actual:?}, this is city {expected}")]
    WrongDestination {
        /// This city.
        expected: CityId,
        /// The record's destination.
        actual: Option<CityId>,
    },
    /// A city cannot send a packet to itself.
    #[error("packet from city {0} to itself")]
    SelfPacket(CityId),
    /// The proof is about another city's header than the packet's channel needs.
    #[error("proof is sealed by city {actual}, city {expected} was needed")]
    WrongCity {
        /// City needed.
        expected: CityId,
        /// City of the header.
        actual: CityId,
    },
    /// The batch is not in the source's state as claimed.
    #[error("batch path: {0}")]
    BatchPath(StateProofError),
    /// The packet's sequence is not one of the batch's.
    #[error("sequence {sequence} is not in the batch of {count} from {first}")]
    NotInBatch {
        /// The packet's sequence.
        sequence: u64,
        /// The batch's first sequence.
        first: u64,
        /// Its count.
        count: u64,
    },
    /// The record's path is for another leaf or another size of tree than the sequence and
    /// the batch give.
    #[error(
        "the path is of leaf {leaf_index} of {tree_size}, leaf {expected_index} of {expected_size} was needed"
    )]
    BatchPosition {
        /// The path's leaf.
        leaf_index: u64,
        /// The path's tree size.
        tree_size: u64,
        /// `sequence - first_sequence`.
        expected_index: u64,
        /// The batch's count.
        expected_size: u64,
    },
    /// The carried record's id is not at its leaf of the batch's tree.
    #[error("record path in the batch: {0}")]
    BatchRecordPath(MerkleError),
    /// The receipt holding the acknowledgement is not in the destination's state as claimed.
    #[error("acknowledgement path: {0}")]
    AcknowledgementPath(StateProofError),
    /// The receipt's absence is not proven (for example, the receipt is present).
    #[error("receipt absence path: {0}")]
    ReceiptPath(StateProofError),
    /// The destination's beacon view is not proven.
    #[error("beacon view path: {0}")]
    BeaconViewPath(StateProofError),
    /// The proof is from before the timeout: the packet may still be received.
    #[error("the destination's certified view is {view}, the timeout is {timeout}")]
    NotTimedOut {
        /// The packet's timeout height.
        timeout: u64,
        /// The destination's proven view (or the certifying beacon height, if lower).
        view: u64,
    },
}

/// A packet the destination may act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPacket {
    /// Channel and sequence.
    pub id: PacketId,
    /// The record.
    pub record: Record,
    /// Its id.
    pub record_id: Hash32,
    /// Timeout beacon height.
    pub timeout_height: u64,
    /// Height of the source header that proves it.
    pub source_height: u64,
    /// The certified beacon height that covers that header.
    pub beacon_height: u64,
}

/// Remembers which (sealed header, finality proof) pairs already verified, so that many
/// packets or acknowledgements proven through one header cost one seal check, one history and
/// crosslink path and at most one pairing. A result is reused only for an equal pair (the
/// encoding is canonical, so equal values are byte-identical inputs); the pairs are compared
/// field by field rather than hashed, since a batch holds few distinct headers and a header of
/// another height differs at its first fields.
///
/// It also remembers the outbound-batch state proofs it checked, by the same rule: the packets
/// one source block sent arrive together, each with the same batch and the same proof of it
/// under the same state root, and the proof is hashed once for all of them. A proof that differs
/// in any byte, or stands under another root or for another channel, is checked afresh.
#[derive(Default)]
pub struct ChainCache {
    checked: Vec<(SignedShardHeader, FinalityProof, Result<u64, ProofError>)>,
    batches: Vec<BatchChecked>,
}

/// An outbound-batch state proof checked under a root for a channel, and its result.
struct BatchChecked {
    root: Hash32,
    channel: (CityId, CityId),
    batch: OutboundBatch,
    proof: StateProof,
    result: Result<(), StateProofError>,
}

impl ChainCache {
    /// Most pairs remembered; past it the oldest is forgotten (a batch of a few hundred
    /// packets spans a handful of headers).
    const PAIRS_MAX: usize = 64;

    /// Header N's seal and its link to a certified beacon block; returns the beacon height.
    pub fn check(
        &mut self,
        genesis: &ValidGenesis,
        client: &LightClient,
        header: &SignedShardHeader,
        finality: &FinalityProof,
    ) -> Result<u64, ProofError> {
        if let Some((_, _, r)) =
            self.checked.iter().rev().find(|(h, f, _)| h == header && f == finality)
        {
            return r.clone();
        }
        let r = verify_seal(genesis, header)
            .and_then(|()| verify_finality(genesis, client, header, finality));
        remember(&mut self.checked, (header.clone(), finality.clone(), r.clone()));
        r
    }

    /// Step 3 of [`verify_packet`]: `proof` proves `OutboundBatch{source, destination} =
    /// encode(batch)` under `root`, with the key built here.
    fn batch(
        &mut self,
        root: &Hash32,
        id: &PacketId,
        batch: &OutboundBatch,
        proof: &StateProof,
    ) -> Result<(), StateProofError> {
        let channel = (id.source, id.destination);
        if let Some(done) = self.batches.iter().rev().find(|b| {
            b.root == *root && b.channel == channel && b.batch == *batch && b.proof == *proof
        }) {
            return done.result.clone();
        }
        let result = proof.verify(root, &id.batch_key(), Some(&encode(batch)));
        remember(
            &mut self.batches,
            BatchChecked {
                root: *root,
                channel,
                batch: *batch,
                proof: proof.clone(),
                result: result.clone(),
            },
        );
        result
    }
}

/// Adds `entry` to a [`ChainCache`] memory, forgetting the oldest past `PAIRS_MAX`.
fn remember<T>(memory: &mut Vec<T>, entry: T) {
    if memory.len() == ChainCache::PAIRS_MAX {
        let _forgotten = memory.remove(0);
    }
    memory.push(entry);
}

/// Checks a packet addressed to `destination` against the destination's own light client.
/// Whether the timeout has passed and whether it was received before are the destination's
/// state checks, not this function's.
pub fn verify_packet(
    genesis: &ValidGenesis,
    client: &LightClient,
    destination: CityId,
    p: &PacketProof,
) -> Result<VerifiedPacket, PacketError> {
    verify_packet_with(genesis, client, destination, p, &mut ChainCache::default())
}

/// [`verify_packet`], reusing the header checks `cache` already made.
pub fn verify_packet_with(
    genesis: &ValidGenesis,
    client: &LightClient,
    destination: CityId,
    p: &PacketProof,
    cache: &mut ChainCache,
) -> Result<VerifiedPacket, PacketError> {
    verify_packet_parts(genesis, client, destination, p.parts(), cache)
}

/// A [`PacketProof`]'s parts, borrowed: its batch, batch proof, header and finality may be
/// shared with the other packets one source block sent on the channel (a group).
#[derive(Clone, Copy, Debug)]
pub struct PacketParts<'a> {
    /// Sequence on the channel.
    pub sequence: u64,
    /// The batch that holds the packet.
    pub batch: &'a OutboundBatch,
    /// Membership of the batch under the header's `state_root`.
    pub batch_proof: &'a StateProof,
    /// Path of the record id in the batch's tree.
    pub path: &'a InclusionProof,
    /// The record.
    pub record: &'a Record,
    /// Source header N, sealed.
    pub header: &'a SignedShardHeader,
    /// N to a certified beacon block.
    pub finality: &'a FinalityProof,
}

impl PacketProof {
    /// Its parts, borrowed.
    pub fn parts(&self) -> PacketParts<'_> {
        PacketParts {
            sequence: self.sequence,
            batch: &self.batch,
            batch_proof: &self.batch_proof,
            path: &self.path,
            record: &self.record,
            header: &self.header,
            finality: &self.finality,
        }
    }
}

/// [`verify_packet_with`] of a proof given as its parts: the same checks, in the same order,
/// with the same errors.
pub fn verify_packet_parts(
    genesis: &ValidGenesis,
    client: &LightClient,
    destination: CityId,
    p: PacketParts<'_>,
    cache: &mut ChainCache,
) -> Result<VerifiedPacket, PacketError> {
    let header = &p.header.header;
    p.record.validate().map_err(ProofError::Record)?;
    if p.record.city != header.city {
        return Err(ProofError::CityMismatch { record: p.record.city, header: header.city }.into());
    }
    if p.record.destination != Some(destination) {
        return Err(PacketError::WrongDestination {
            expected: destination,
            actual: p.record.destination,
        });
    }
    let source = p.record.city;
    if source == destination {
        return Err(PacketError::SelfPacket(source));
    }
    let id = PacketId { source, destination, sequence: p.sequence };
    cache.batch(&header.state_root, &id, p.batch, p.batch_proof).map_err(PacketError::BatchPath)?;
    let batch = p.batch;
    if !batch.contains(p.sequence) {
        return Err(PacketError::NotInBatch {
            sequence: p.sequence,
            first: batch.first_sequence,
            count: batch.count,
        });
    }
    let expected_index = p.sequence - batch.first_sequence;
    if p.path.leaf_index != expected_index || p.path.tree_size != batch.count {
        return Err(PacketError::BatchPosition {
            leaf_index: p.path.leaf_index,
            tree_size: p.path.tree_size,
            expected_index,
            expected_size: batch.count,
        });
    }
    let record_id = p.record.id();
    let tree = Blake3Tree::outbound_batch();
    p.path
        .verify(&tree, &tree.leaf(record_id.as_bytes()), &batch.root)
        .map_err(PacketError::BatchRecordPath)?;
    let beacon_height = cache.check(genesis, client, p.header, p.finality)?;
    Ok(VerifiedPacket {
        id,
        record: p.record.clone(),
        record_id,
        timeout_height: batch.timeout_height,
        source_height: header.height,
        beacon_height,
    })
}

/// Checks the destination's acknowledgement of `packet`, which carried the record
/// `record_id` (from the source's own record of the packet, never from the proof): the destination's
/// receipt of that record holding that acknowledgement. Returns it with the certified beacon
/// height that covers it.
pub fn verify_acknowledgement(
    genesis: &ValidGenesis,
    client: &LightClient,
    packet: &PacketId,
    record_id: &Hash32,
    p: &AcknowledgementProof,
) -> Result<(Acknowledgement, u64), PacketError> {
    verify_acknowledgement_with(genesis, client, packet, record_id, p, &mut ChainCache::default())
}

/// [`verify_acknowledgement`], reusing the header checks `cache` already made.
pub fn verify_acknowledgement_with(
    genesis: &ValidGenesis,
    client: &LightClient,
    packet: &PacketId,
    record_id: &Hash32,
    p: &AcknowledgementProof,
    cache: &mut ChainCache,
) -> Result<(Acknowledgement, u64), PacketError> {
    verify_acknowledgement_parts(genesis, client, packet, record_id, p.parts(), cache)
}

/// An [`AcknowledgementProof`]'s four parts, borrowed: its header and finality may be shared
/// with other acknowledgements proven through the same destination header (a group).
#[derive(Clone, Copy, Debug)]
pub struct AcknowledgementParts<'a> {
    /// The acknowledgement.
    pub acknowledgement: Acknowledgement,
    /// Membership of the receipt holding it under the header's `state_root`.
    pub proof: &'a StateProof,
    /// Destination header D, sealed.
    pub header: &'a SignedShardHeader,
    /// D to a certified beacon block.
    pub finality: &'a FinalityProof,
}

impl AcknowledgementProof {
    /// Its parts, borrowed.
    pub fn parts(&self) -> AcknowledgementParts<'_> {
        AcknowledgementParts {
            acknowledgement: self.acknowledgement,
            proof: &self.proof,
            header: &self.header,
            finality: &self.finality,
        }
    }
}

/// [`verify_acknowledgement_with`] of a proof given as its parts: the same checks, in the same
/// order, with the same errors.
pub fn verify_acknowledgement_parts(
    genesis: &ValidGenesis,
    client: &LightClient,
    packet: &PacketId,
    record_id: &Hash32,
    p: AcknowledgementParts<'_>,
    cache: &mut ChainCache,
) -> Result<(Acknowledgement, u64), PacketError> {
    let header = &p.header.header;
    if header.city != packet.destination {
        return Err(PacketError::WrongCity { expected: packet.destination, actual: header.city });
    }
    let receipt = Receipt { record_id: *record_id, acknowledgement: p.acknowledgement };
    p.proof
        .verify(&header.state_root, &packet.receipt_key(), Some(&encode(&receipt)))
        .map_err(PacketError::AcknowledgementPath)?;
    let beacon_height = cache.check(genesis, client, p.header, p.finality)?;
    Ok((p.acknowledgement, beacon_height))
}

/// Checks that `packet`, with timeout `timeout_height` (from the source's own record of the packet),
/// was not received at a destination header whose certified beacon view reached the timeout,
/// and that a certified beacon block at or past the timeout covers that header. Returns the
/// covering beacon height.
pub fn verify_timeout(
    genesis: &ValidGenesis,
    client: &LightClient,
    packet: &PacketId,
    timeout_height: u64,
    p: &TimeoutProof,
) -> Result<u64, PacketError> {
    let header = &p.header.header;
    if header.city != packet.destination {
        return Err(PacketError::WrongCity { expected: packet.destination, actual: header.city });
    }
    p.beacon_view_proof
        .verify(&header.state_root, &StateKey::BeaconView, Some(&encode(&p.beacon_view)))
        .map_err(PacketError::BeaconViewPath)?;
    if p.beacon_view < timeout_height {
        return Err(PacketError::NotTimedOut { timeout: timeout_height, view: p.beacon_view });
    }
    p.receipt_absence
        .verify(&header.state_root, &packet.receipt_key(), None)
        .map_err(PacketError::ReceiptPath)?;
    verify_seal(genesis, &p.header)?;
    let beacon_height = verify_finality(genesis, client, &p.header, &p.finality)?;
    if beacon_height < timeout_height {
        return Err(PacketError::NotTimedOut { timeout: timeout_height, view: beacon_height });
    }
    Ok(beacon_height)
}
