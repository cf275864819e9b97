//! Packets between two cities: the honest flow verifies, and each hostile relay case of
//! ../shared/THREATS.md that the core can see fails with its specific error.

use urbis_core::beacon::Crosslink;
use urbis_core::encoding::encode;
use urbis_core::hash::Hash32;
use urbis_core::light_client::{LightClient, LightClientError};
use urbis_core::merkle::{Blake3Tree, InclusionProof, MerkleError};
use urbis_core::packet::{
    AckError, Acknowledgement, AcknowledgementProof, ChainCache, OutboundBatch, PacketError,
    PacketId, PacketProof, Receipt, TimeoutProof, verify_acknowledgement, verify_packet,
    verify_packet_with, verify_timeout,
};
use urbis_core::proof::ProofError;
use urbis_core::record::{CityId, Record};
use urbis_core::sealing::{Ed25519Error, SealingKey};
use urbis_core::state::{StateKey, StateProofError};
use urbis_core::testkit::{BeaconChain, Federation, ShardChain, information_record, seed};

const A: CityId = CityId(0);
const B: CityId = CityId(1);
const TIMEOUT: u64 = 3;

/// City A (0) sends records 1 and 2 to B (1) in block 0 (sequences 1, 2); B receives 1 and
/// acknowledges it with success in its block 0 with beacon view 1; B's block 1 has view 3.
/// Beacon block 1 crosslinks A:0 and B:0, beacon block 2 B:1, beacon block 3 B:1 again.
struct Pair {
    federation: Federation,
    a: ShardChain,
    b: ShardChain,
    beacon: BeaconChain,
    records: Vec<Record>,
}

fn packet_record(n: u64) -> Record {
    let mut r = information_record(A, n);
    r.destination = Some(B);
    r
}

fn id(sequence: u64) -> PacketId {
    PacketId { source: A, destination: B, sequence }
}

fn ids(records: &[Record]) -> Vec<Hash32> {
    records.iter().map(Record::id).collect()
}

/// A's block 0 sends both records: sequences 1 and 2.
fn batch(records: &[Record]) -> OutboundBatch {
    OutboundBatch::new(0, 1, TIMEOUT, &ids(records))
}

fn pair_in(federation: Federation) -> Pair {
    let mut a = ShardChain::new(A);
    let mut b = ShardChain::new(B);
    let mut beacon = BeaconChain::new(&federation);
    let records = vec![packet_record(1), packet_record(2)];
    a.seal(&federation, records.clone(), &[(id(1).batch_key(), Some(encode(&batch(&records))))]);
    b.seal(
        &federation,
        vec![],
        &[
            (
                id(1).receipt_key(),
                Some(encode(&Receipt {
                    record_id: records[0].id(),
                    acknowledgement: Acknowledgement::Success,
                })),
            ),
            (StateKey::BeaconView, Some(encode(&1u64))),
        ],
    );
    let link = |s: &ShardChain, h: usize| Crosslink {
        city: s.city,
        header_hash: s.headers[h].header.hash(),
    };
    beacon.produce(&federation, vec![link(&a, 0), link(&b, 0)], None);
    b.seal(&federation, vec![], &[(StateKey::BeaconView, Some(encode(&3u64)))]);
    beacon.produce(&federation, vec![link(&b, 1)], None);
    beacon.produce(&federation, vec![link(&b, 1)], None);
    Pair { federation, a, b, beacon, records }
}

fn pair() -> Pair {
    pair_in(Federation::new("packets", 3, 4))
}

impl Pair {
    fn client(&self) -> LightClient {
        let mut c = LightClient::from_genesis(&self.federation.genesis);
        for h in 1..=self.beacon.blocks.len() as u64 {
            c.apply(&self.beacon.update(h)).unwrap();
        }
        c
    }

    fn packet(&self, sequence: u64) -> PacketProof {
        let index = sequence - 1;
        let rp = self.a.record_proof(0, index);
        let (_, batch_proof) = self.a.state.prove(&id(sequence).batch_key()).unwrap();
        let leaves = OutboundBatch::leaf_hashes(&ids(&self.records));
        PacketProof {
            sequence,
            batch: batch(&self.records),
            batch_proof,
            path: InclusionProof::build(&Blake3Tree::outbound_batch(), &leaves, index).unwrap(),
            record: rp.record,
            header: rp.header,
            finality: self.beacon.finality(&self.a, 0, 1).unwrap(),
        }
    }

    /// B's state proofs are taken at B's latest header (1), certified by beacon block `f`.
    fn b_state(&self, key: &StateKey) -> (Option<Vec<u8>>, urbis_core::state::StateProof) {
        self.b.state.prove(key).unwrap()
    }

    fn ack(&self) -> AcknowledgementProof {
        let (_, proof) = self.b_state(&id(1).receipt_key());
        AcknowledgementProof {
            acknowledgement: Acknowledgement::Success,
            proof,
            header: self.b.headers[1].clone(),
            finality: self.beacon.finality(&self.b, 1, 2).unwrap(),
        }
    }

    fn timeout(&self, sequence: u64, beacon_height: u64) -> TimeoutProof {
        let (_, receipt_absence) = self.b_state(&id(sequence).receipt_key());
        let (_, beacon_view_proof) = self.b_state(&StateKey::BeaconView);
        TimeoutProof {
            receipt_absence,
            beacon_view: 3,
            beacon_view_proof,
            header: self.b.headers[1].clone(),
            finality: self.beacon.finality(&self.b, 1, beacon_height).unwrap(),
        }
    }
}

#[test]
fn an_honest_packet_its_acknowledgement_and_a_timeout_verify() {
    let p = pair();
    let c = p.client();
    let g = &p.federation.genesis;
    let v = verify_packet(g, &c, B, &p.packet(1)).unwrap();
    assert_eq!(v.id, id(1));
    assert_eq!(v.record_id, p.records[0].id());
    assert_eq!((v.timeout_height, v.source_height, v.beacon_height), (TIMEOUT, 0, 1));
    assert_eq!(verify_packet(g, &c, B, &p.packet(2)).unwrap().id, id(2));
    assert_eq!(
        verify_acknowledgement(g, &c, &id(1), &p.records[0].id(), &p.ack()).unwrap(),
        (Acknowledgement::Success, 2)
    );
    // Sequence 2 was never received, and B's header 1 has view 3 and is covered by block 3.
    assert_eq!(verify_timeout(g, &c, &id(2), TIMEOUT, &p.timeout(2, 3)).unwrap(), 3);
}

#[test]
fn settlements_keep_each_outcome_once_in_sequence_order_within_their_range() {
    use urbis_core::encoding::decode;
    use urbis_core::packet::{PacketOutcome, SETTLEMENT_BUCKET_SIZE, Settlements};
    let bucket = 3;
    let first = bucket * SETTLEMENT_BUCKET_SIZE;
    let mut s = Settlements::default();
    assert!(!s.is_well_formed(bucket), "an empty range is never written");
    let acked = PacketOutcome::Acknowledged { height: 9 };
    let timed_out = PacketOutcome::TimedOut { height: 12 };
    assert!(s.insert(first + 40, acked));
    assert!(s.insert(first + 2, timed_out));
    assert!(!s.insert(first + 40, timed_out), "a settled packet is never settled again");
    assert_eq!(s.outcome(first + 40), Some(acked), "the first outcome stays");
    assert_eq!(s.outcome(first + 2), Some(timed_out));
    assert_eq!(s.outcome(first + 3), None);
    let sequences: Vec<u64> = s.settled.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, vec![first + 2, first + 40]);
    assert!(s.is_well_formed(bucket));
    assert!(!s.is_well_formed(bucket + 1), "entries outside the key's range");
    assert_eq!(id(first + 40).settlements_key(), id(first).settlements_key());
    assert_ne!(id(first - 1).settlements_key(), id(first).settlements_key());
    // One value, one encoding: the bytes the source writes decode to the same entries.
    let bytes = encode(&s);
    assert_eq!(decode::<Settlements>(&bytes).unwrap(), s);
    let mut out_of_order = s.clone();
    out_of_order.settled.swap(0, 1);
    assert!(!out_of_order.is_well_formed(bucket));
    assert_eq!(Settlements::decode_range(&bytes, bucket).unwrap(), s);
    assert!(Settlements::decode_range(&encode(&out_of_order), bucket).is_err());
    assert!(Settlements::decode_range(&bytes, bucket + 1).is_err());
}

#[test]
fn threat_a_mutated_byte_anywhere_in_a_packet_proof_is_refused() {
    let p = pair();
    // A client that has not seen the beacon blocks checks every certificate byte too.
    let c = LightClient::from_genesis(&p.federation.genesis);
    let g = &p.federation.genesis;
    let honest = encode(&p.packet(1));
    let mut refused = 0;
    // Every byte position, flipped: the proof either no longer decodes or no longer verifies.
    for i in 0..honest.len() {
        let mut bytes = honest.clone();
        bytes[i] ^= 0x01;
        if let Ok(mutated) = urbis_core::encoding::decode::<PacketProof>(&bytes) {
            assert!(
                verify_packet(g, &c, B, &mutated).is_err(),
                "a packet with byte {i} flipped verified"
            );
        }
        refused += 1;
    }
    assert_eq!(refused, honest.len());
}

#[test]
fn a_batch_proof_checked_once_serves_the_packets_it_proves_and_no_other_bytes() {
    let p = pair();
    let (g, c) = (&p.federation.genesis, p.client());
    // The packets of one block share their batch and its proof: one cache checks both.
    let mut cache = ChainCache::default();
    for sequence in [1, 2] {
        let q = p.packet(sequence);
        assert_eq!(verify_packet_with(g, &c, B, &q, &mut cache), verify_packet(g, &c, B, &q));
        assert!(verify_packet_with(g, &c, B, &q, &mut cache).is_ok());
    }
    // With the honest proof remembered, any byte of the packet flipped gives what a verifier
    // without memory gives: a remembered result stands only for equal inputs.
    let honest = encode(&p.packet(2));
    let mut compared = 0;
    for i in 0..honest.len() {
        let mut bytes = honest.clone();
        bytes[i] ^= 0x01;
        let Ok(mutated) = urbis_core::encoding::decode::<PacketProof>(&bytes) else { continue };
        let fresh = verify_packet(g, &c, B, &mutated);
        assert_eq!(verify_packet_with(g, &c, B, &mutated, &mut cache), fresh, "byte {i}");
        if fresh.is_err() {
            compared += 1;
        }
    }
    assert!(compared > honest.len() / 2, "{compared} refusals compared");
    // A refusal remembered does not refuse the honest packet after it.
    let mut q = p.packet(2);
    q.batch_proof.leaf.as_mut().expect("the batch is present").key_hash.0[0] ^= 1;
    assert!(matches!(
        verify_packet_with(g, &c, B, &q, &mut cache).unwrap_err(),
        PacketError::BatchPath(_)
    ));
    assert!(verify_packet_with(g, &c, B, &p.packet(2), &mut cache).is_ok());
    // The same proof for another batch of the channel, or under another root, is refused.
    let mut q = p.packet(2);
    q.batch.count += 1;
    assert_eq!(
        verify_packet_with(g, &c, B, &q, &mut cache).unwrap_err(),
        PacketError::BatchPath(StateProofError::ValueMismatch)
    );
    let mut q = p.packet(2);
    q.header.header.state_root.0[0] ^= 1;
    assert_eq!(
        verify_packet_with(g, &c, B, &q, &mut cache).unwrap_err(),
        verify_packet(g, &c, B, &q).unwrap_err()
    );
    assert!(matches!(verify_packet(g, &c, B, &q).unwrap_err(), PacketError::BatchPath(_)));
}

#[test]
fn threat_verifier_input_from_the_caller_a_packet_for_another_city_is_refused() {
    let p = pair();
    let e = verify_packet(&p.federation.genesis, &p.client(), CityId(2), &p.packet(1)).unwrap_err();
    assert_eq!(e, PacketError::WrongDestination { expected: CityId(2), actual: Some(B) });
}

#[test]
fn threat_merkle_path_for_another_leaf_is_refused() {
    let p = pair();
    let (g, c) = (&p.federation.genesis, p.client());
    // Record 2 carried under record 1's sequence and path.
    let mut q = p.packet(1);
    q.record = p.records[1].clone();
    assert_eq!(
        verify_packet(g, &c, B, &q).unwrap_err(),
        PacketError::BatchRecordPath(MerkleError::RootMismatch)
    );
    // Record 2 with its own path, claimed as sequence 1: the path is of another leaf.
    let mut q = p.packet(1);
    let other = p.packet(2);
    q.record = other.record;
    q.path = other.path;
    assert_eq!(
        verify_packet(g, &c, B, &q).unwrap_err(),
        PacketError::BatchPosition {
            leaf_index: 1,
            tree_size: 2,
            expected_index: 0,
            expected_size: 2
        }
    );
    // ... and with the path's index rewritten to sequence 1's leaf.
    let mut q = p.packet(1);
    q.record = p.records[1].clone();
    q.path.path = p.packet(2).path.path;
    assert_eq!(
        verify_packet(g, &c, B, &q).unwrap_err(),
        PacketError::BatchRecordPath(MerkleError::RootMismatch)
    );
    // A sequence the batch does not hold.
    let mut q = p.packet(1);
    q.sequence = 3;
    assert_eq!(
        verify_packet(g, &c, B, &q).unwrap_err(),
        PacketError::NotInBatch { sequence: 3, first: 1, count: 2 }
    );
    // A batch of more packets than the source sent (to make room for a forged sequence).
    let mut q = p.packet(1);
    q.batch.count = 3;
    assert!(matches!(
        verify_packet(g, &c, B, &q).unwrap_err(),
        PacketError::BatchPath(StateProofError::ValueMismatch)
    ));
    // A longer timeout than the source wrote.
    let mut q = p.packet(1);
    q.batch.timeout_height = 1_000;
    assert!(matches!(
        verify_packet(g, &c, B, &q).unwrap_err(),
        PacketError::BatchPath(StateProofError::ValueMismatch)
    ));
    // A proof of another key, from another state (B's receipt of sequence 1).
    let mut q = p.packet(1);
    q.batch_proof = p.b_state(&id(1).receipt_key()).1;
    assert!(matches!(verify_packet(g, &c, B, &q).unwrap_err(), PacketError::BatchPath(_)));
    // A path of another size of tree.
    let mut q = p.packet(1);
    q.path = InclusionProof { leaf_index: 0, tree_size: 1, path: vec![] };
    assert_eq!(
        verify_packet(g, &c, B, &q).unwrap_err(),
        PacketError::BatchPosition {
            leaf_index: 0,
            tree_size: 1,
            expected_index: 0,
            expected_size: 2
        }
    );
    // A records-tree path passed off as the batch's: the trees' keys differ.
    let mut q = p.packet(1);
    q.path = p.a.record_proof(0, 0).inclusion;
    assert_eq!(
        verify_packet(g, &c, B, &q).unwrap_err(),
        PacketError::BatchRecordPath(MerkleError::RootMismatch)
    );
}

#[test]
fn threat_a_header_sealed_by_the_wrong_key_is_refused() {
    let p = pair();
    let mut q = p.packet(1);
    let wrong = SealingKey::from_seed(&seed("not city 0"));
    q.header = q.header.header.clone().seal(&p.federation.id(), &wrong);
    assert_eq!(
        verify_packet(&p.federation.genesis, &p.client(), B, &q).unwrap_err(),
        PacketError::Proof(ProofError::HeaderSeal(Ed25519Error::BadSignature))
    );
}

#[test]
fn threat_a_packet_proven_against_a_forged_beacon_block_is_refused() {
    let p = pair();
    let mut q = p.packet(1);
    q.finality.beacon_header.time_ms += 1;
    assert!(matches!(
        verify_packet(&p.federation.genesis, &p.client(), B, &q).unwrap_err(),
        PacketError::Proof(ProofError::Beacon(LightClientError::Certificate(_)))
    ));
}

#[test]
fn threat_a_packet_from_another_federation_is_refused() {
    // The same cities and keys under another genesis: the seal binds the federation id.
    let other = pair_in(Federation::new("another federation", 3, 4));
    let here = pair();
    let e = verify_packet(&here.federation.genesis, &here.client(), B, &other.packet(1));
    assert_eq!(
        e.unwrap_err(),
        PacketError::Proof(ProofError::HeaderSeal(Ed25519Error::BadSignature))
    );
}

#[test]
fn threat_forged_absence_proofs_a_non_membership_proof_for_a_present_receipt_is_refused() {
    let p = pair();
    let (g, c) = (&p.federation.genesis, p.client());
    // Sequence 1 was received: an absence proof for it cannot be made to verify, neither with
    // its own path nor with sequence 2's.
    for donor in [1, 2] {
        let mut t = p.timeout(2, 3);
        t.receipt_absence = p.timeout(donor, 3).receipt_absence;
        let e = verify_timeout(g, &c, &id(1), TIMEOUT, &t).unwrap_err();
        assert!(matches!(e, PacketError::ReceiptPath(_)), "{e:?}");
    }
}

#[test]
fn threat_forged_timeouts_a_proof_from_before_the_timeout_is_refused() {
    let p = pair();
    let (g, c) = (&p.federation.genesis, p.client());
    // A view lowered to 1 (B's view at header 0) no longer matches B's state.
    let mut t = p.timeout(2, 3);
    t.beacon_view = 1;
    assert!(matches!(
        verify_timeout(g, &c, &id(2), TIMEOUT, &t).unwrap_err(),
        PacketError::BeaconViewPath(_)
    ));
    // An honest view of 3 but a timeout of 4: not timed out yet.
    assert_eq!(
        verify_timeout(g, &c, &id(2), 4, &p.timeout(2, 3)).unwrap_err(),
        PacketError::NotTimedOut { timeout: 4, view: 3 }
    );
    // View 3 but certified only by beacon block 2, below the timeout of 3.
    assert_eq!(
        verify_timeout(g, &c, &id(2), TIMEOUT, &p.timeout(2, 2)).unwrap_err(),
        PacketError::NotTimedOut { timeout: TIMEOUT, view: 2 }
    );
    // A timeout proof from the source's own state, not the destination's.
    let mut t = p.timeout(2, 3);
    t.header = p.a.headers[0].clone();
    assert_eq!(
        verify_timeout(g, &c, &id(2), TIMEOUT, &t).unwrap_err(),
        PacketError::WrongCity { expected: B, actual: A }
    );
}

#[test]
fn threat_a_forged_acknowledgement_is_refused() {
    let p = pair();
    let (g, c) = (&p.federation.genesis, p.client());
    // An error acknowledgement claimed where B wrote success (it would refund a delivered
    // transfer).
    let mut a = p.ack();
    a.acknowledgement = Acknowledgement::Error(AckError::UnknownAsset);
    let (r1, r2) = (p.records[0].id(), p.records[1].id());
    assert!(matches!(
        verify_acknowledgement(g, &c, &id(1), &r1, &a).unwrap_err(),
        PacketError::AcknowledgementPath(_)
    ));
    // Sequence 1's acknowledgement claimed for sequence 2.
    assert!(matches!(
        verify_acknowledgement(g, &c, &id(2), &r2, &p.ack()).unwrap_err(),
        PacketError::AcknowledgementPath(_)
    ));
    // The receipt is of another record than the one the source sent under this sequence: the
    // record id comes from the source's own record of its packet, not from the proof.
    assert!(matches!(
        verify_acknowledgement(g, &c, &id(1), &r2, &p.ack()).unwrap_err(),
        PacketError::AcknowledgementPath(StateProofError::ValueMismatch)
    ));
    // Not final: a finality proof whose crosslink names another header.
    let mut a = p.ack();
    a.finality.crosslink.path.push(Hash32::ZERO);
    assert!(matches!(
        verify_acknowledgement(g, &c, &id(1), &r1, &a).unwrap_err(),
        PacketError::Proof(ProofError::CrosslinkPath(_))
    ));
}

#[test]
fn a_beacon_block_the_client_already_certified_is_not_checked_again_but_only_that_block() {
    let p = pair();
    let g = &p.federation.genesis;
    // The client applied beacon block 1: a packet through it needs no second pairing, so the
    // certificate it carries is not looked at...
    let mut q = p.packet(1);
    q.finality.certificate.signature[0] ^= 1;
    assert!(verify_packet(g, &p.client(), B, &q).is_ok());
    // ...but a client that has not seen it checks it, and any other header is checked in full.
    assert!(matches!(
        verify_packet(g, &LightClient::from_genesis(g), B, &q).unwrap_err(),
        PacketError::Proof(ProofError::Beacon(LightClientError::Certificate(_)))
    ));
    let mut q = p.packet(1);
    q.finality.beacon_header.time_ms += 1;
    assert!(matches!(
        verify_packet(g, &p.client(), B, &q).unwrap_err(),
        PacketError::Proof(ProofError::Beacon(LightClientError::Certificate(_)))
    ));
}
