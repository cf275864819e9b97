//! The ledger's rules, pure: which submissions a block may take, the state writes they make,
//! and the block's header. No I/O: the state is read through [`StateView`].

use borsh::{BorshDeserialize, BorshSerialize};
use std::collections::BTreeMap;
use urbis_core::encoding::{decode, encode};
use urbis_core::genesis::ValidGenesis;
use urbis_core::hash::{Domain, Hash32};
use urbis_core::header::{SHARD_HEADER_VERSION, ShardHeader};
use urbis_core::merkle::{Blake3Tree, Frontier, TreeHasher, root_from_leaf_hashes};
use urbis_core::packet::{
    AckError, Acknowledgement, OutboundBatch, OutboundPacket, PacketId, PacketOutcome, Receipt,
    Settlements, VerifiedPacket,
};
use urbis_core::record::{CapitalOperation, CityId, Record, RecordBody, TalentPayload};
use urbis_core::state::{ErasureNote, StateKey};

/// Beacon blocks a packet may take to be received before the source may prove its timeout,
/// unless configured otherwise.
pub const DEFAULT_PACKET_TIMEOUT_BLOCKS: u64 = 600;

/// The service allowed to issue an asset at its issuing city.
pub const TREASURY_SERVICE: &str = "treasury";

/// Reads the state as of the last sealed block.
pub trait StateView {
    /// The value under `key`, if any.
    fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>, String>;
    /// Whether a record with this id is already sealed. `time_ms` is the record's own time: a
    /// record newer than every sealed record cannot be sealed already (its id hashes its time),
    /// which lets a view skip the lookup.
    fn has_record(&self, id: &Hash32, time_ms: Option<u64>) -> Result<bool, String>;
    /// A sealed record by id (to refund a settled packet).
    fn record(&self, id: &Hash32) -> Result<Option<Record>, String>;
    /// What this city sent as packet `id`, from its own index of the batches it sealed
    /// ([`SentBatch`]), if it sent it.
    fn sent_packet(&self, id: &PacketId) -> Result<Option<OutboundPacket>, String>;
}

/// The packets one block sends on one channel: the batch it writes under
/// `OutboundBatch{source, destination}`, and the record ids the batch's tree is over, in
/// sequence order (the source's index of its packets is kept from them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentBatch {
    /// The channel's destination.
    pub destination: CityId,
    /// The batch as written.
    pub batch: OutboundBatch,
    /// Record ids of sequences `batch.first_sequence..`, in order.
    pub record_ids: Vec<Hash32>,
}

impl SentBatch {
    /// Each packet of the batch as the source's index keeps it: `(sequence, packet)`.
    pub fn packets(&self) -> impl Iterator<Item = (u64, OutboundPacket)> + '_ {
        self.record_ids.iter().enumerate().map(|(i, id)| {
            (
                self.batch.first_sequence + i as u64,
                OutboundPacket { record_id: *id, timeout_height: self.batch.timeout_height },
            )
        })
    }
}

/// A packet operation a block may take: receiving a verified packet at the destination, or
/// settling an outbound one at the source.
#[derive(Clone, Debug)]
pub enum PacketOp {
    /// Receive a packet whose proof chain was verified against this shard's light client.
    Receive(Box<VerifiedPacket>),
    /// Settle an outbound packet with the destination's verified acknowledgement.
    Acknowledge {
        /// The packet.
        id: PacketId,
        /// The acknowledgement.
        acknowledgement: Acknowledgement,
    },
    /// Settle an outbound packet whose timeout was verified.
    Timeout {
        /// The packet.
        id: PacketId,
    },
    /// Refuse packets from a city: two validly sealed headers of it at one height (verified).
    Freeze {
        /// The city.
        source: CityId,
        /// The evidence, kept under `FrozenChannel{source}`.
        evidence: Box<urbis_core::crosslink::ShardEquivocation>,
    },
    /// An operator lifts a freeze.
    Unfreeze {
        /// The city.
        source: CityId,
    },
    /// Erase the off-chain copy of a received packet's payload (its source's erasure was
    /// verified); no state changes, the store purges the bytes with the block.
    EraseCopy {
        /// The source city.
        source: CityId,
        /// The packet's sequence.
        sequence: u64,
    },
}

/// Why a submission was refused by the ledger rules (nothing of it is written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The asset is not in genesis.
    #[error("record {index}: unknown asset {asset}")]
    UnknownAsset {
        /// Record position in the request.
        index: usize,
        /// Asset id.
        asset: String,
    },
    /// Only the issuing city's treasury issues.
    #[error(
        "record {index}: only the {TREASURY_SERVICE} service of the issuing city may issue {asset}"
    )]
    NotIssuer {
        /// Record position.
        index: usize,
        /// Asset id.
        asset: String,
    },
    /// A balance would go negative.
    #[error("record {index}: account {account} holds {balance} {asset}, {amount} requested")]
    InsufficientFunds {
        /// Record position.
        index: usize,
        /// Account.
        account: String,
        /// Asset.
        asset: String,
        /// Balance.
        balance: u128,
        /// Amount.
        amount: u128,
    },
    /// A balance would overflow.
    #[error("record {index}: balance overflow")]
    Overflow {
        /// Record position.
        index: usize,
    },
    /// A transfer to the paying account itself.
    #[error("record {index}: paying and receiving account are the same")]
    SelfTransfer {
        /// Record position.
        index: usize,
    },
    /// The destination city is not in genesis.
    #[error("record {index}: unknown destination city {city}")]
    UnknownDestination {
        /// Record position.
        index: usize,
        /// City id.
        city: CityId,
    },
    /// The credential is already revoked.
    #[error("record {index}: credential already revoked")]
    AlreadyRevoked {
        /// Record position.
        index: usize,
    },
    /// The same record was already sealed or is twice in the block.
    #[error("record {index}: duplicate record {id}")]
    Duplicate {
        /// Record position.
        index: usize,
        /// Record id.
        id: Hash32,
    },
    /// No sealed record has this id.
    #[error("no record {id}")]
    UnknownRecord {
        /// Record id.
        id: Hash32,
    },
    /// The record's payload was already erased.
    #[error("the payload of record {id} is already erased")]
    AlreadyErased {
        /// Record id.
        id: Hash32,
    },
    /// A voucher goes only to the city that issued its asset.
    #[error("record {index}: a voucher of {asset} can only be sent home to city {issuer}")]
    VoucherNotHome {
        /// Record position.
        index: usize,
        /// Asset id.
        asset: String,
        /// Its issuing city.
        issuer: CityId,
    },
    /// The packet was received here before.
    #[error("packet {id} was already received")]
    PacketDuplicate {
        /// The packet.
        id: PacketId,
    },
    /// This shard's certified beacon view reached the packet's timeout.
    #[error("packet {id} timed out at beacon height {timeout}; this shard's view is {view}")]
    PacketTimedOut {
        /// The packet.
        id: PacketId,
        /// Its timeout.
        timeout: u64,
        /// This shard's view.
        view: u64,
    },
    /// The outbound packet was already settled (acknowledged or refunded).
    #[error("packet {id} is already settled")]
    PacketSettled {
        /// The packet.
        id: PacketId,
    },
    /// Packets from this city are not frozen.
    #[error("packets from city {city} are not frozen")]
    NotFrozen {
        /// The city.
        city: CityId,
    },
    /// No outbound packet has this channel and sequence.
    #[error("no outbound packet {id}")]
    UnknownPacket {
        /// The packet.
        id: PacketId,
    },
    /// The state could not be read.
    #[error("state unavailable: {0}")]
    State(String),
}

impl Rejection {
    /// Whether the rejection is a conflict with the current state (HTTP 409) rather than an
    /// invalid request (HTTP 422).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Rejection::InsufficientFunds { .. }
                | Rejection::AlreadyRevoked { .. }
                | Rejection::Duplicate { .. }
                | Rejection::AlreadyErased { .. }
                | Rejection::PacketDuplicate { .. }
                | Rejection::PacketTimedOut { .. }
                | Rejection::PacketSettled { .. }
        )
    }
    /// Whether the caller is not allowed to do this (HTTP 403).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Rejection::NotIssuer { .. })
    }
}

/// A running capital total the shard keeps beside its state (unauthenticated, for
/// `GET /v1/capital/totals`): sums a checker adds up across cities.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize)]
pub enum TotalKey {
    /// Σ `Balance{asset, *}`.
    Balances(String),
    /// Σ `Voucher{asset, *}`.
    Vouchers(String),
    /// `Escrow{asset, city}`.
    Escrow(String, CityId),
    /// Sent to `city` and not settled yet.
    InFlight(String, CityId),
}

/// The subject index entry: how many records, and a running digest of their ids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SubjectIndexEntry {
    /// Records about the subject in this shard.
    pub count: u64,
    /// `H_SubjectIndex(previous digest || record id)`, from the zero hash.
    pub digest: Hash32,
}

/// The state writes of a block, in key order (`None` deletes).
pub type StateWrites = Vec<(StateKey, Option<Vec<u8>>)>;

/// State writes keyed by the encoded state key (for order and lookup).
type Overlay = BTreeMap<Vec<u8>, (StateKey, Option<Vec<u8>>)>;

/// A block being assembled: submissions are added whole or not at all.
pub struct BlockBuilder<'a, V: StateView> {
    view: &'a V,
    genesis: &'a ValidGenesis,
    city: CityId,
    height: u64,
    time_ms: u64,
    records: Vec<Record>,
    erasures: usize,
    packet_ops: usize,
    beacon_view: u64,
    packet_timeout: u64,
    effective_view: Option<u64>,
    /// The packet sequence the record being applied got.
    sequence: Option<u64>,
    /// Capital sent and not settled, by (asset, destination): this block's change.
    in_flight: BTreeMap<(String, CityId), i128>,
    /// Sends of the submission being added, kept only if all of it is.
    staged_flight: Vec<(String, CityId, u128)>,
    /// Packets this block sends, by destination: the first sequence and the record ids.
    outbound: BTreeMap<CityId, (u64, Vec<Hash32>)>,
    /// Packets of the submission being added, by destination, kept only if all of it is.
    staged_packets: BTreeMap<CityId, Vec<Hash32>>,
    ids: Vec<Hash32>,
    seen: std::collections::HashSet<Hash32>,
    writes: Overlay,
}

impl<'a, V: StateView> BlockBuilder<'a, V> {
    /// Starts block `height` of `city`, to be sealed with time `time_ms`.
    pub fn new(
        view: &'a V,
        genesis: &'a ValidGenesis,
        city: CityId,
        height: u64,
        time_ms: u64,
    ) -> Self {
        BlockBuilder {
            view,
            genesis,
            city,
            height,
            time_ms,
            records: vec![],
            erasures: 0,
            packet_ops: 0,
            beacon_view: 0,
            packet_timeout: DEFAULT_PACKET_TIMEOUT_BLOCKS,
            effective_view: None,
            sequence: None,
            in_flight: BTreeMap::new(),
            staged_flight: Vec::new(),
            outbound: BTreeMap::new(),
            staged_packets: BTreeMap::new(),
            ids: vec![],
            seen: Default::default(),
            writes: BTreeMap::new(),
        }
    }

    /// Sets the certified beacon height this shard has followed (the block's `BeaconView`, never
    /// below the previous block's) and the timeout of packets it sends, in beacon blocks.
    pub fn with_beacon(mut self, view: u64, packet_timeout_blocks: u64) -> Self {
        self.beacon_view = view;
        self.packet_timeout = packet_timeout_blocks;
        self
    }

    /// The block's `BeaconView`: the configured view, or the previous block's if higher. The
    /// first call writes it when it moved.
    pub fn view(&mut self) -> Result<u64, Rejection> {
        if let Some(v) = self.effective_view {
            return Ok(v);
        }
        let stored = match self.view.get(&StateKey::BeaconView).map_err(Rejection::State)? {
            None => 0,
            Some(v) => decode::<u64>(&v).map_err(|e| Rejection::State(e.to_string()))?,
        };
        let v = stored.max(self.beacon_view);
        if v > stored {
            let key = StateKey::BeaconView;
            self.writes.insert(encode(&key), (key, Some(encode(&v))));
        }
        self.effective_view = Some(v);
        Ok(v)
    }

    /// Applies a packet operation whole or not at all. A receive answers with the
    /// acknowledgement it wrote.
    pub fn packet(&mut self, op: &PacketOp) -> Result<Option<Acknowledgement>, Rejection> {
        let view = self.view()?;
        let mut overlay = Overlay::new();
        let ack = match op {
            PacketOp::Receive(p) => Some(self.receive(p, view, &mut overlay)?),
            PacketOp::Acknowledge { id, acknowledgement } => {
                let outcome = match acknowledgement {
                    Acknowledgement::Success => PacketOutcome::Acknowledged { height: self.height },
                    Acknowledgement::Error(error) => {
                        PacketOutcome::ErrorAcknowledged { error: *error, height: self.height }
                    }
                };
                let settled = self.settle(id, outcome, &mut overlay)?;
                self.land(id, settled);
                None
            }
            PacketOp::Timeout { id } => {
                let outcome = PacketOutcome::TimedOut { height: self.height };
                let settled = self.settle(id, outcome, &mut overlay)?;
                self.land(id, settled);
                None
            }
            PacketOp::Freeze { source, evidence } => {
                let key = StateKey::FrozenChannel { source: *source };
                // Frozen already: the first evidence stays.
                if self.read(&overlay, &key)?.is_none() {
                    Self::put(&mut overlay, key, Some(encode(evidence.as_ref())));
                }
                None
            }
            PacketOp::EraseCopy { .. } => None,
            PacketOp::Unfreeze { source } => {
                let key = StateKey::FrozenChannel { source: *source };
                if self.read(&overlay, &key)?.is_none() {
                    return Err(Rejection::NotFrozen { city: *source });
                }
                Self::put(&mut overlay, key, None);
                None
            }
        };
        self.writes.extend(overlay);
        self.packet_ops += 1;
        Ok(ack)
    }

    /// Capital of a settled packet is no longer in flight.
    fn land(&mut self, id: &PacketId, settled: Option<(String, u128)>) {
        if let Some((asset, amount)) = settled {
            *self.in_flight.entry((asset, id.destination)).or_default() -= amount as i128;
        }
    }

    /// This block's change to the capital totals, from its state writes (each compared with
    /// the state before the block) and the capital it sent or settled.
    pub fn capital_deltas(&self) -> Result<Vec<(TotalKey, i128)>, Rejection> {
        let mut deltas: BTreeMap<TotalKey, i128> = BTreeMap::new();
        for (key, new) in self.writes.values() {
            let total = match key {
                StateKey::Balance { asset, .. } => TotalKey::Balances(asset.clone()),
                StateKey::Voucher { asset, .. } => TotalKey::Vouchers(asset.clone()),
                StateKey::Escrow { asset, destination } => {
                    TotalKey::Escrow(asset.clone(), *destination)
                }
                _ => continue,
            };
            let amount = |v: Option<&Vec<u8>>| -> Result<i128, Rejection> {
                Ok(match v {
                    None => 0,
                    Some(v) => {
                        decode::<u128>(v).map_err(|e| Rejection::State(e.to_string()))? as i128
                    }
                })
            };
            let old = self.view.get(key).map_err(Rejection::State)?;
            *deltas.entry(total).or_default() += amount(new.as_ref())? - amount(old.as_ref())?;
        }
        for ((asset, city), d) in &self.in_flight {
            *deltas.entry(TotalKey::InFlight(asset.clone(), *city)).or_default() += d;
        }
        Ok(deltas.into_iter().filter(|(_, d)| *d != 0).collect())
    }

    fn receive(
        &self,
        p: &VerifiedPacket,
        view: u64,
        overlay: &mut Overlay,
    ) -> Result<Acknowledgement, Rejection> {
        let id = p.id;
        if self.read(overlay, &id.receipt_key())?.is_some() {
            return Err(Rejection::PacketDuplicate { id });
        }
        if view >= p.timeout_height {
            return Err(Rejection::PacketTimedOut { id, timeout: p.timeout_height, view });
        }
        let frozen = self.read(overlay, &StateKey::FrozenChannel { source: id.source })?;
        let ack = if frozen.is_some() {
            Acknowledgement::Error(AckError::FrozenChannel)
        } else {
            self.credit_received(&p.record, id.source, overlay)?
        };
        let receipt = Receipt { record_id: p.record_id, acknowledgement: ack };
        Self::put(overlay, id.receipt_key(), Some(encode(&receipt)));
        Ok(ack)
    }

    /// The destination's side of a capital packet; an error leaves the state untouched.
    fn credit_received(
        &self,
        record: &Record,
        source: CityId,
        overlay: &mut Overlay,
    ) -> Result<Acknowledgement, Rejection> {
        let RecordBody::Capital(c) = &record.body else { return Ok(Acknowledgement::Success) };
        let CapitalOperation::Send { to, .. } = &c.operation else {
            return Ok(Acknowledgement::Success);
        };
        let Some(asset) = self.genesis.genesis().assets.iter().find(|a| a.id == c.asset) else {
            return Ok(Acknowledgement::Error(AckError::UnknownAsset));
        };
        let mut changes = Overlay::new();
        let credit_key = if asset.issuer == self.city {
            // A voucher came home: release what was escrowed for the sending city.
            let escrow = StateKey::Escrow { asset: c.asset.clone(), destination: source };
            let held = self.read_u128(overlay, &escrow)?;
            let Some(left) = held.checked_sub(c.amount) else {
                return Ok(Acknowledgement::Error(AckError::EscrowShortfall));
            };
            Self::put(&mut changes, escrow, (left != 0).then(|| encode(&left)));
            StateKey::Balance { asset: c.asset.clone(), account: to.clone() }
        } else {
            StateKey::Voucher { asset: c.asset.clone(), account: to.clone() }
        };
        let balance = self.read_u128(overlay, &credit_key)?;
        let Some(new) = balance.checked_add(c.amount) else {
            return Ok(Acknowledgement::Error(AckError::Overflow));
        };
        Self::put(&mut changes, credit_key, Some(encode(&new)));
        overlay.extend(changes);
        Ok(Acknowledgement::Success)
    }

    /// Settles an outbound packet once: records its outcome in its range's settlements, and
    /// refunds a capital send that did not arrive.
    /// Returns the capital (asset, amount) that was in flight.
    fn settle(
        &self,
        id: &PacketId,
        outcome: PacketOutcome,
        overlay: &mut Overlay,
    ) -> Result<Option<(String, u128)>, Rejection> {
        let id = *id;
        let Some(sent) = self.view.sent_packet(&id).map_err(Rejection::State)? else {
            return Err(Rejection::UnknownPacket { id });
        };
        let settlements_key = id.settlements_key();
        let mut settlements = match self.read(overlay, &settlements_key)? {
            None => Settlements::default(),
            Some(v) => Settlements::decode_range(&v, id.settlement_range())
                .map_err(|e| Rejection::State(format!("settlements of packet {id}: {e}")))?,
        };
        if !settlements.insert(id.sequence, outcome) {
            return Err(Rejection::PacketSettled { id });
        }
        let record = self
            .view
            .record(&sent.record_id)
            .map_err(Rejection::State)?
            .ok_or(Rejection::UnknownRecord { id: sent.record_id })?;
        let mut settled = None;
        if let RecordBody::Capital(c) = &record.body
            && let CapitalOperation::Send { from, .. } = &c.operation
        {
            settled = Some((c.asset.clone(), c.amount));
            if !matches!(outcome, PacketOutcome::Acknowledged { .. }) {
                let native = self
                    .genesis
                    .genesis()
                    .assets
                    .iter()
                    .any(|a| a.id == c.asset && a.issuer == self.city);
                if native {
                    let escrow =
                        StateKey::Escrow { asset: c.asset.clone(), destination: id.destination };
                    let held = self.read_u128(overlay, &escrow)?;
                    let left = held
                        .checked_sub(c.amount)
                        .ok_or_else(|| Rejection::State(format!("escrow short for {id}")))?;
                    Self::put(overlay, escrow, (left != 0).then(|| encode(&left)));
                }
                let back = if native {
                    StateKey::Balance { asset: c.asset.clone(), account: from.clone() }
                } else {
                    StateKey::Voucher { asset: c.asset.clone(), account: from.clone() }
                };
                let balance = self.read_u128(overlay, &back)?;
                let new = balance.checked_add(c.amount).ok_or(Rejection::Overflow { index: 0 })?;
                Self::put(overlay, back, Some(encode(&new)));
            }
        }
        Self::put(overlay, settlements_key, Some(encode(&settlements)));
        Ok(settled)
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing (no record, no erasure, no packet operation) was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.erasures == 0 && self.packet_ops == 0
    }

    /// Records the erasure of a sealed record's off-chain payload, by `by` (the issuing
    /// service, or `operator:<token id>`). Whether the record has an off-chain payload and
    /// whether `by` may erase it are the caller's checks; this one keeps the chain's fact.
    pub fn erase(&mut self, record_id: &Hash32, by: &str) -> Result<(), Rejection> {
        if !self.view.has_record(record_id, None).map_err(Rejection::State)? {
            return Err(Rejection::UnknownRecord { id: *record_id });
        }
        let key = StateKey::Erasure { record_id: *record_id };
        if self.read(&Overlay::new(), &key)?.is_some() {
            return Err(Rejection::AlreadyErased { id: *record_id });
        }
        let note = ErasureNote { height: self.height, time_ms: self.time_ms, by: by.to_string() };
        self.writes.insert(encode(&key), (key, Some(encode(&note))));
        self.erasures += 1;
        Ok(())
    }

    /// Adds all of `records` (already validated by `Record::validate`), whose ids are `ids`
    /// (`Record::id`, computed by the caller), or none of them. Returns the index of each in
    /// the block, with its packet sequence when it is addressed to another city.
    pub fn add(
        &mut self,
        records: &[Record],
        ids: &[Hash32],
    ) -> Result<Vec<(u64, Option<u64>)>, Rejection> {
        debug_assert_eq!(records.len(), ids.len());
        let mut overlay = Overlay::new();
        let mut fresh = std::collections::HashSet::with_capacity(ids.len());
        let mut sequences = Vec::with_capacity(records.len());
        self.staged_flight.clear();
        self.staged_packets.clear();
        for (index, (r, id)) in records.iter().zip(ids).enumerate() {
            let seen = self.seen.contains(id) || !fresh.insert(*id);
            if seen || self.view.has_record(id, Some(r.time_ms)).map_err(Rejection::State)? {
                return Err(Rejection::Duplicate { index, id: *id });
            }
            self.sequence = None;
            self.apply(index, r, id, &mut overlay)?;
            sequences.push(self.sequence);
        }
        let first = self.records.len() as u64;
        self.records.extend_from_slice(records);
        self.ids.extend_from_slice(ids);
        self.seen.extend(fresh);
        self.writes.extend(overlay);
        for (asset, city, amount) in std::mem::take(&mut self.staged_flight) {
            *self.in_flight.entry((asset, city)).or_default() += amount as i128;
        }
        for (destination, staged) in std::mem::take(&mut self.staged_packets) {
            if let Some((_, ids)) = self.outbound.get_mut(&destination) {
                ids.extend(staged);
            }
        }
        Ok((first..first + records.len() as u64).zip(sequences).collect())
    }

    fn read(&self, overlay: &Overlay, key: &StateKey) -> Result<Option<Vec<u8>>, Rejection> {
        let k = encode(key);
        if let Some((_, v)) = overlay.get(&k).or_else(|| self.writes.get(&k)) {
            return Ok(v.clone());
        }
        self.view.get(key).map_err(Rejection::State)
    }

    fn read_u128(&self, overlay: &Overlay, key: &StateKey) -> Result<u128, Rejection> {
        Ok(match self.read(overlay, key)? {
            None => 0,
            Some(v) => decode::<u128>(&v).map_err(|e| Rejection::State(e.to_string()))?,
        })
    }

    fn put(overlay: &mut Overlay, key: StateKey, value: Option<Vec<u8>>) {
        overlay.insert(encode(&key), (key, value));
    }

    fn apply(
        &mut self,
        index: usize,
        r: &Record,
        id: &Hash32,
        overlay: &mut Overlay,
    ) -> Result<(), Rejection> {
        // Subject index: count and running digest.
        let subject_key = StateKey::SubjectIndex { subject: r.subject };
        let mut entry: SubjectIndexEntry = match self.read(overlay, &subject_key)? {
            None => SubjectIndexEntry::default(),
            Some(v) => decode(&v).map_err(|e| Rejection::State(e.to_string()))?,
        };
        let mut h = Domain::SubjectIndex.hasher();
        h.update(entry.digest.as_bytes());
        h.update(id.as_bytes());
        entry.digest = Hash32(*h.finalize().as_bytes());
        entry.count = entry.count.saturating_add(1);
        Self::put(overlay, subject_key, Some(encode(&entry)));

        match &r.body {
            RecordBody::Capital(c) => {
                let asset = self
                    .genesis
                    .genesis()
                    .assets
                    .iter()
                    .find(|a| a.id == c.asset)
                    .ok_or_else(|| Rejection::UnknownAsset { index, asset: c.asset.clone() })?;
                let native = asset.issuer == self.city;
                let account_key = |account: &str| {
                    if native {
                        StateKey::Balance { asset: c.asset.clone(), account: account.to_string() }
                    } else {
                        StateKey::Voucher { asset: c.asset.clone(), account: account.to_string() }
                    }
                };
                let debit = |this: &Self,
                             overlay: &mut BTreeMap<_, _>,
                             account: &str|
                 -> Result<(), Rejection> {
                    let key = account_key(account);
                    let balance = this.read_u128(overlay, &key)?;
                    let left = balance.checked_sub(c.amount).ok_or_else(|| {
                        Rejection::InsufficientFunds {
                            index,
                            account: account.to_string(),
                            asset: c.asset.clone(),
                            balance,
                            amount: c.amount,
                        }
                    })?;
                    Self::put(overlay, key, (left != 0).then(|| encode(&left)));
                    Ok(())
                };
                let credit = |this: &Self,
                              overlay: &mut BTreeMap<_, _>,
                              key: StateKey|
                 -> Result<(), Rejection> {
                    let balance = this.read_u128(overlay, &key)?;
                    let new = balance.checked_add(c.amount).ok_or(Rejection::Overflow { index })?;
                    Self::put(overlay, key, Some(encode(&new)));
                    Ok(())
                };
                match &c.operation {
                    CapitalOperation::Issue { to } => {
                        if !native || r.service != TREASURY_SERVICE {
                            return Err(Rejection::NotIssuer { index, asset: c.asset.clone() });
                        }
                        credit(self, overlay, account_key(to))?;
                    }
                    CapitalOperation::Transfer { from, to } => {
                        if from == to {
                            return Err(Rejection::SelfTransfer { index });
                        }
                        debit(self, overlay, from)?;
                        credit(self, overlay, account_key(to))?;
                    }
                    CapitalOperation::Send { from, .. } => {
                        let destination = r
                            .destination
                            .ok_or(Rejection::UnknownDestination { index, city: self.city })?;
                        if self.genesis.city(destination).is_none() {
                            return Err(Rejection::UnknownDestination { index, city: destination });
                        }
                        if !native && asset.issuer != destination {
                            return Err(Rejection::VoucherNotHome {
                                index,
                                asset: c.asset.clone(),
                                issuer: asset.issuer,
                            });
                        }
                        debit(self, overlay, from)?;
                        if native {
                            // The escrow backs the voucher the destination will credit.
                            credit(
                                self,
                                overlay,
                                StateKey::Escrow { asset: c.asset.clone(), destination },
                            )?;
                        }
                        // A voucher of a foreign asset is burned here; its packet releases the
                        // escrow at the issuer (DESIGN.md, "Capital").
                        self.send_packet(destination, id)?;
                        self.staged_flight.push((c.asset.clone(), destination, c.amount));
                    }
                }
            }
            RecordBody::Talent(TalentPayload::Revoke { credential_id, .. }) => {
                let key = StateKey::Revocation { credential_id: *credential_id };
                if self.read(overlay, &key)?.is_some() {
                    return Err(Rejection::AlreadyRevoked { index });
                }
                Self::put(overlay, key, Some(encode(&self.height)));
            }
            RecordBody::Talent(TalentPayload::Issue { .. })
            | RecordBody::Credit(_)
            | RecordBody::Information(_) => {}
        }
        if let (Some(destination), false) =
            (r.destination, matches!(r.body, RecordBody::Capital(_)))
        {
            if self.genesis.city(destination).is_none() {
                return Err(Rejection::UnknownDestination { index, city: destination });
            }
            self.send_packet(destination, id)?;
        }
        Ok(())
    }

    /// Sends record `id` as the channel's next packet: its sequence follows the channel's
    /// newest batch and the packets this block already sends on it. The batch is written when
    /// the block is finished.
    fn send_packet(&mut self, destination: CityId, id: &Hash32) -> Result<(), Rejection> {
        // The timeout is the block's view plus the configured timeout: fix the view now.
        self.view()?;
        let sent = match self.outbound.get(&destination) {
            Some((first, ids)) => first + ids.len() as u64,
            None => {
                let key = StateKey::OutboundBatch { source: self.city, destination };
                let next = match self.view.get(&key).map_err(Rejection::State)? {
                    None => 1u64,
                    Some(v) => decode::<OutboundBatch>(&v)
                        .map_err(|e| Rejection::State(e.to_string()))?
                        .next_sequence(),
                };
                self.outbound.insert(destination, (next, Vec::new()));
                next
            }
        };
        let staged = self.staged_packets.entry(destination).or_default();
        self.sequence = Some(sent + staged.len() as u64);
        staged.push(*id);
        Ok(())
    }

    /// Finishes the block: its records, their ids, its state writes (each channel's batch
    /// among them) and the batches it sends.
    pub fn finish(mut self) -> (Vec<Record>, Vec<Hash32>, StateWrites, Vec<SentBatch>) {
        // `send_packet` fixed the view before any packet was staged.
        let timeout_height =
            self.effective_view.unwrap_or(self.beacon_view).saturating_add(self.packet_timeout);
        let mut sent = Vec::new();
        for (destination, (first, record_ids)) in std::mem::take(&mut self.outbound) {
            if record_ids.is_empty() {
                continue;
            }
            let batch = OutboundBatch::new(self.height, first, timeout_height, &record_ids);
            let key = StateKey::OutboundBatch { source: self.city, destination };
            self.writes.insert(encode(&key), (key, Some(encode(&batch))));
            sent.push(SentBatch { destination, batch, record_ids });
        }
        (self.records, self.ids, self.writes.into_values().collect(), sent)
    }

    /// The block's time, for its header.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }
}

/// The header of block `height` over the records with ids `ids`.
pub fn header(
    city: CityId,
    height: u64,
    time_ms: u64,
    previous: Hash32,
    ids: &[Hash32],
    state_root: Hash32,
    history: &Frontier,
) -> ShardHeader {
    let tree = Blake3Tree::records();
    let leaves: Vec<Hash32> = ids.iter().map(|id| tree.leaf(id.as_bytes())).collect();
    ShardHeader {
        version: SHARD_HEADER_VERSION,
        city,
        height,
        time_ms,
        previous,
        records_root: root_from_leaf_hashes(&tree, &leaves),
        records_count: ids.len() as u64,
        state_root,
        history_root: history.root(&Blake3Tree::history()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use urbis_core::record::CapitalPayload;
    use urbis_core::testkit::{Federation, information_record};

    /// The state of earlier blocks, as a map (the shard keeps it in RocksDB), the sealed
    /// records by id, and the packets sent.
    #[derive(Default)]
    struct Map(
        HashMap<Vec<u8>, Vec<u8>>,
        HashMap<Hash32, Record>,
        HashMap<PacketId, OutboundPacket>,
    );

    impl StateView for Map {
        fn get(&self, key: &StateKey) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.get(&encode(key)).cloned())
        }
        fn has_record(&self, _: &Hash32, _: Option<u64>) -> Result<bool, String> {
            Ok(false)
        }
        fn record(&self, id: &Hash32) -> Result<Option<Record>, String> {
            Ok(self.1.get(id).cloned())
        }
        fn sent_packet(&self, id: &PacketId) -> Result<Option<OutboundPacket>, String> {
            Ok(self.2.get(id).copied())
        }
    }

    /// A block's packets on a channel take the sequences after the channel's newest batch, in
    /// the order they are added, skipping a submission refused whole; the block writes one
    /// batch per channel over their record ids, and the next block continues after it.
    #[test]
    fn a_block_sends_its_packets_on_a_channel_as_one_batch_with_consecutive_sequences() {
        use urbis_core::merkle::{InclusionProof, MerkleError};
        let fed = Federation::new("ledger batches", 3, 4);
        let (a, b, c) = (CityId(0), CityId(1), CityId(2));
        let to = |n: u64, d: CityId| {
            let mut r = information_record(a, n);
            r.destination = Some(d);
            r
        };
        let mut state = Map::default();
        let mut block = BlockBuilder::new(&state, &fed.genesis, a, 7, 0).with_beacon(20, 5);
        let sequences = |placed: Vec<(u64, Option<u64>)>| -> Vec<Option<u64>> {
            placed.into_iter().map(|(_, q)| q).collect()
        };
        let first = [to(1, b), information_record(a, 2), to(3, c), to(4, b)];
        let ids: Vec<Hash32> = first.iter().map(Record::id).collect();
        assert_eq!(
            sequences(block.add(&first, &ids).unwrap()),
            vec![Some(1), None, Some(1), Some(2)]
        );
        // Refused whole (the same record twice): its packet takes no sequence.
        let twice = [to(5, b), to(5, b)];
        let twice_ids: Vec<Hash32> = twice.iter().map(Record::id).collect();
        assert!(matches!(block.add(&twice, &twice_ids), Err(Rejection::Duplicate { .. })));
        let last = [to(6, b)];
        assert_eq!(sequences(block.add(&last, &[last[0].id()]).unwrap()), vec![Some(3)]);
        let (_, _, writes, sent) = block.finish();
        let to_b = vec![ids[0], ids[3], last[0].id()];
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].destination, b);
        assert_eq!(sent[0].record_ids, to_b);
        assert_eq!(sent[0].batch, OutboundBatch::new(7, 1, 25, &to_b));
        assert_eq!((sent[1].destination, sent[1].batch.count), (c, 1));
        let batch_writes: Vec<_> =
            writes.iter().filter(|(k, _)| matches!(k, StateKey::OutboundBatch { .. })).collect();
        assert_eq!(batch_writes.len(), 2, "one write per channel, not per packet: {writes:?}");
        let key = StateKey::OutboundBatch { source: a, destination: b };
        let written = writes.iter().find(|(k, _)| *k == key).unwrap().1.clone().unwrap();
        let batch: OutboundBatch = decode(&written).unwrap();
        assert_eq!((batch.first_sequence, batch.count, batch.timeout_height), (1, 3, 25));
        // Sequence 2 is the second leaf of the batch's tree, and no other record is.
        let tree = Blake3Tree::outbound_batch();
        let leaves = OutboundBatch::leaf_hashes(&to_b);
        let path = InclusionProof::build(&tree, &leaves, 1).unwrap();
        assert_eq!(path.verify(&tree, &tree.leaf(ids[3].as_bytes()), &batch.root), Ok(()));
        assert_eq!(
            path.verify(&tree, &tree.leaf(ids[0].as_bytes()), &batch.root),
            Err(MerkleError::RootMismatch)
        );
        let packets: Vec<(u64, OutboundPacket)> = sent[0].packets().collect();
        assert_eq!(packets[2], (3, OutboundPacket { record_id: last[0].id(), timeout_height: 25 }));
        for (k, v) in writes {
            state.0.insert(encode(&k), v.unwrap());
        }
        let mut next = BlockBuilder::new(&state, &fed.genesis, a, 8, 0).with_beacon(21, 5);
        let more = [to(7, b)];
        assert_eq!(sequences(next.add(&more, &[more[0].id()]).unwrap()), vec![Some(4)]);
        let (_, _, _, sent) = next.finish();
        assert_eq!(sent[0].batch, OutboundBatch::new(8, 4, 26, &[more[0].id()]));
    }

    /// Settling writes each packet's outcome into its range's settlements, one key per range
    /// however many of its packets a block settles, and never touches the batches; a
    /// packet settled once, or never sent, is refused, and a malformed range is a state error.
    #[test]
    fn settlements_take_each_packet_once_with_one_write_per_range_and_block() {
        let fed = Federation::new("ledger", 2, 4);
        let (a, b) = (CityId(0), CityId(1));
        let id = |sequence| PacketId { source: a, destination: b, sequence };
        let mut state = Map::default();
        for q in [5u64, 6, 70, 130] {
            let mut r = information_record(a, q);
            r.destination = Some(b);
            let c = OutboundPacket { record_id: r.id(), timeout_height: 50 };
            state.2.insert(id(q), c);
            state.1.insert(r.id(), r);
        }
        let ack =
            |q| PacketOp::Acknowledge { id: id(q), acknowledgement: Acknowledgement::Success };
        let mut block = BlockBuilder::new(&state, &fed.genesis, a, 10, 0);
        block.packet(&ack(5)).unwrap();
        block.packet(&PacketOp::Timeout { id: id(6) }).unwrap();
        block.packet(&ack(70)).unwrap();
        assert!(matches!(block.packet(&ack(5)), Err(Rejection::PacketSettled { .. })));
        let (_, _, writes, _) = block.finish();
        let settlements: Vec<&(StateKey, Option<Vec<u8>>)> = writes
            .iter()
            .filter(|(k, _)| matches!(k, StateKey::PacketSettlements { .. }))
            .collect();
        assert_eq!(settlements.len(), 2, "{writes:?}");
        assert!(!writes.iter().any(|(k, _)| matches!(k, StateKey::OutboundBatch { .. })));
        let range0: Settlements = decode(
            writes.iter().find(|(k, _)| *k == id(5).settlements_key()).unwrap().1.as_ref().unwrap(),
        )
        .unwrap();
        assert_eq!(range0.outcome(5), Some(PacketOutcome::Acknowledged { height: 10 }));
        assert_eq!(range0.outcome(6), Some(PacketOutcome::TimedOut { height: 10 }));
        assert_eq!(range0.settled.len(), 2);
        for (k, v) in writes {
            if let Some(v) = v {
                state.0.insert(encode(&k), v);
            }
        }
        let mut next = BlockBuilder::new(&state, &fed.genesis, a, 11, 0);
        assert!(matches!(next.packet(&ack(5)), Err(Rejection::PacketSettled { .. })));
        assert!(matches!(
            next.packet(&PacketOp::Timeout { id: id(70) }),
            Err(Rejection::PacketSettled { .. })
        ));
        assert!(matches!(next.packet(&ack(7)), Err(Rejection::UnknownPacket { .. })));
        // A range whose entries are out of order is not a value the rules write.
        let mut broken = Settlements::default();
        broken.settled.push(urbis_core::packet::SettledPacket {
            sequence: 140,
            outcome: PacketOutcome::Acknowledged { height: 3 },
        });
        broken.settled.push(urbis_core::packet::SettledPacket {
            sequence: 129,
            outcome: PacketOutcome::Acknowledged { height: 3 },
        });
        state.0.insert(encode(&id(130).settlements_key()), encode(&broken));
        let mut last = BlockBuilder::new(&state, &fed.genesis, a, 12, 0);
        assert!(matches!(last.packet(&ack(130)), Err(Rejection::State(_))));
    }

    fn op(n: u64, amount: u128, operation: CapitalOperation) -> Record {
        let mut r = information_record(CityId(0), n);
        r.service = TREASURY_SERVICE.into();
        r.body = RecordBody::Capital(CapitalPayload { asset: "EUR".into(), amount, operation });
        r
    }

    proptest! {
        /// Whatever the order of issues and transfers, balances never go negative and their
        /// sum equals what was issued.
        #[test]
        fn capital_is_conserved_and_never_negative(ops in proptest::collection::vec((0u8..3, 0usize..4, 0usize..4, 1u128..500), 1..60)) {
            let fed = Federation::new("ledger", 1, 4);
            let accounts = ["a", "b", "c", "d"];
            let mut state = Map::default();
            let mut issued = 0u128;
            for (height, (kind, from, to, amount)) in ops.into_iter().enumerate() {
                let record = match kind {
                    0 => op(height as u64, amount, CapitalOperation::Issue { to: accounts[to].into() }),
                    _ => op(height as u64, amount, CapitalOperation::Transfer { from: accounts[from].into(), to: accounts[to].into() }),
                };
                let mut b = BlockBuilder::new(&state, &fed.genesis, CityId(0), height as u64, 0);
                match b.add(std::slice::from_ref(&record), &[record.id()]) {
                    Ok(_) => {
                        if kind == 0 { issued += amount; }
                        let (_, _, writes, _) = b.finish();
                        for (k, v) in writes {
                            match v { Some(v) => { state.0.insert(encode(&k), v); } None => { state.0.remove(&encode(&k)); } }
                        }
                    }
                    Err(Rejection::InsufficientFunds { balance, amount: a, .. }) => prop_assert!(balance < a),
                    Err(Rejection::SelfTransfer { .. }) => prop_assert_eq!(from, to),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
            let total: u128 = accounts.iter().map(|a| {
                state.get(&StateKey::Balance { asset: "EUR".into(), account: (*a).into() }).unwrap().map_or(0, |v| decode::<u128>(&v).unwrap())
            }).sum();
            prop_assert_eq!(total, issued);
        }
    }
}
