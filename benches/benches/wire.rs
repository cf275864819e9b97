//! What a packet's proof parts cost to write and read as they travel, in the JSON the bridges
//! and shards exchange and in the canonical encoding (`docs/protocol.md` §2), each beside the
//! limit of the same run: the hashing a verifier must do over those parts anyway.
//!
//! The parts are the ones a packet carries alone once its group's shared parts (batch, header,
//! finality) are written once: its record and its path in the block's outbound batch on the
//! way out, its acknowledgement and the receipt's state proof on the way back. Their shapes
//! are the cross-city benchmark's: an information record with 220 bytes of inline content, a
//! path in a batch of 645 packets, a state proof from a tree of 100 000 receipts.
#![allow(missing_docs, clippy::disallowed_methods, clippy::unwrap_used, clippy::print_stdout)]

use criterion::Criterion;
use std::hint::black_box;
use urbis_benches::{ns_per_call, report};
use urbis_core::encoding::{decode, encode};
use urbis_core::hash::Hash32;
use urbis_core::merkle::{Blake3Tree, InclusionProof, TreeHasher};
use urbis_core::packet::{Acknowledgement, OutboundBatch, PacketId, Receipt};
use urbis_core::record::{CityId, InformationContent, InformationPayload, Record, RecordBody};
use urbis_core::state::StateProof;
use urbis_core::state::memory::MemoryTree;
use urbis_core::testkit::information_record;

/// Packets in the block whose batch the path is in (the cross-city burst's A sealed 645 per
/// block).
const BATCH_PACKETS: u64 = 645;
/// Receipts in the destination's state tree.
const RECEIPTS: u64 = 100_000;

struct Parts {
    record: Record,
    path: InclusionProof,
    batch_root: Hash32,
    ack: (Acknowledgement, StateProof),
    state_root: Hash32,
    receipt_key: urbis_core::state::StateKey,
    receipt: Vec<u8>,
}

fn parts() -> Parts {
    let (source, destination) = (CityId(0), CityId(1));
    let mut record = information_record(source, 7);
    record.destination = Some(destination);
    let content = format!("{{\"n\":7,\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes();
    record.body = RecordBody::Information(InformationPayload {
        dataset: "bench".into(),
        media_type: "application/json".into(),
        content: InformationContent::Inline(content),
    });
    let ids: Vec<Hash32> = (0..BATCH_PACKETS)
        .map(|i| if i == 300 { record.id() } else { information_record(source, 1000 + i).id() })
        .collect();
    let leaves = OutboundBatch::leaf_hashes(&ids);
    let tree = Blake3Tree::outbound_batch();
    let path = InclusionProof::build(&tree, &leaves, 300).unwrap();
    let batch_root = urbis_core::merkle::root_from_leaf_hashes(&tree, &leaves);

    let mut state = MemoryTree::default();
    let receipt_of = |sequence: u64| {
        let id = PacketId { source, destination, sequence };
        let r = Receipt {
            record_id: Hash32([sequence as u8; 32]),
            acknowledgement: Acknowledgement::Success,
        };
        (id.receipt_key(), Some(encode(&r)))
    };
    let mut sequence = 1;
    while sequence <= RECEIPTS {
        let writes: Vec<_> =
            (sequence..(sequence + 10_000).min(RECEIPTS + 1)).map(receipt_of).collect();
        sequence += writes.len() as u64;
        state.apply(&writes).unwrap();
    }
    let (receipt_key, receipt) = receipt_of(RECEIPTS / 2);
    let (value, proof) = state.prove(&receipt_key).unwrap();
    assert_eq!(value, receipt);
    Parts {
        record,
        path,
        batch_root,
        ack: (Acknowledgement::Success, proof),
        state_root: state.root(),
        receipt_key,
        receipt: receipt.unwrap(),
    }
}

fn wire(c: &mut Criterion) {
    let p = parts();
    let tree = Blake3Tree::outbound_batch();
    // What the verifier hashes over these parts whatever their encoding: the record's id and
    // its path to the batch root, the receipt's value and its path to the state root.
    let verify = || {
        let leaf = tree.leaf(p.record.id().as_bytes());
        p.path.verify(&tree, &leaf, &p.batch_root).unwrap();
        p.ack.1.verify(&p.state_root, &p.receipt_key, Some(&p.receipt)).unwrap();
    };
    verify();

    let json_record = serde_json::to_vec(&p.record).unwrap();
    let json_path = serde_json::to_vec(&p.path).unwrap();
    let json_ack = serde_json::to_vec(&p.ack).unwrap();
    let bin_record = encode(&p.record);
    let bin_path = encode(&p.path);
    let bin_ack = encode(&p.ack);

    // Each way of handling the parts, written once and timed twice: by criterion, and by the
    // median timer whose figures are the `RESULT` rows.
    let json_write = || {
        black_box(serde_json::to_vec(black_box(&p.record)).unwrap());
        black_box(serde_json::to_vec(black_box(&p.path)).unwrap());
        black_box(serde_json::to_vec(black_box(&p.ack)).unwrap());
    };
    let json_read = || {
        black_box(serde_json::from_slice::<Record>(black_box(&json_record)).unwrap());
        black_box(serde_json::from_slice::<InclusionProof>(black_box(&json_path)).unwrap());
        black_box(
            serde_json::from_slice::<(Acknowledgement, StateProof)>(black_box(&json_ack)).unwrap(),
        );
    };
    // What a bridge does with parts it passes on without reading them: checks that they are
    // JSON and keeps them as they came (`RawValue`).
    let json_scan = || {
        for bytes in [&json_record, &json_path, &json_ack] {
            black_box(
                serde_json::from_slice::<Box<serde_json::value::RawValue>>(black_box(bytes))
                    .unwrap(),
            );
        }
    };
    let bin_write = || {
        black_box(encode(black_box(&p.record)));
        black_box(encode(black_box(&p.path)));
        black_box(encode(black_box(&p.ack)));
    };
    let bin_read = || {
        black_box(decode::<Record>(black_box(&bin_record)).unwrap());
        black_box(decode::<InclusionProof>(black_box(&bin_path)).unwrap());
        black_box(decode::<(Acknowledgement, StateProof)>(black_box(&bin_ack)).unwrap());
    };
    let ways: [(&str, &str, &dyn Fn()); 6] = [
        ("json_write", "JSON write", &json_write),
        ("json_read", "JSON read", &json_read),
        ("json_scan", "JSON scan (a bridge's RawValue)", &json_scan),
        ("canonical_write", "canonical write", &bin_write),
        ("canonical_read", "canonical read", &bin_read),
        ("verify_hashing", "verifier's hashing", &verify),
    ];
    let mut g = c.benchmark_group("packet_parts");
    for (id, _, f) in ways {
        g.bench_function(id, |b| b.iter(f));
    }
    g.finish();
    let [json_write, json_read, json_scan, bin_write, bin_read, hashing] =
        ways.map(|(_, _, f)| ns_per_call(15, 2_000, f));
    let json_bytes = json_record.len() + json_path.len() + json_ack.len();
    let bin_bytes = bin_record.len() + bin_path.len() + bin_ack.len();
    println!(
        "packet parts: record {} / {} bytes, path ({} siblings) {} / {} bytes, acknowledgement \
         with its state proof ({} siblings) {} / {} bytes (JSON / canonical)",
        json_record.len(),
        bin_record.len(),
        p.path.path.len(),
        json_path.len(),
        bin_path.len(),
        p.ack.1.siblings.len(),
        json_ack.len(),
        bin_ack.len(),
    );
    // On its way a packet's parts are written once by the shard that proves them, read whole
    // by the shard that verifies them, and scanned by each of the two bridges between, in
    // each direction.
    let json_way = json_write + json_read + 2.0 * json_scan;
    // Charged as if each bridge decoded them whole, though a length-prefixed frame needs less.
    let bin_way = bin_write + bin_read + 2.0 * bin_read;
    let figures = [json_write, json_read, json_scan, bin_write, bin_read];
    for ((_, name, _), ns) in ways.iter().zip(figures) {
        report(
            &format!("a packet's own proof parts, {name}"),
            &format!("{:.2} µs", ns / 1e3),
            &format!("verifier's hashing of them {:.2} µs", hashing / 1e3),
            ns / hashing,
            "—",
        );
    }
    report(
        "a packet's own proof parts, all their ways (write, two bridges, read; out and back)",
        &format!(
            "JSON {:.2} µs ({json_bytes} bytes), canonical {:.2} µs ({bin_bytes} bytes)",
            json_way / 1e3,
            bin_way / 1e3
        ),
        &format!("verifier's hashing {:.2} µs", hashing / 1e3),
        json_way / bin_way,
        "JSON / canonical",
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    wire(&mut c);
    c.final_summary();
}
