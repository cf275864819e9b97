//! The worked example of docs/protocol.md: generated here from the code, held equal to the
//! document, and re-verified from the document's hex alone — with urbis-core, with `blst` as a
//! second BLS implementation, and with plain BLAKE3, SHA-512 Ed25519 and a hand-written borsh
//! reader that follow the spec's text rather than urbis-core's helpers.
//!
//! Regenerate the section after a deliberate protocol change with `URBIS_WRITE_EXAMPLE=1` and
//! `cargo test -p urbis-core --test it worked_example_in_protocol_md_is_current`.

use bls12_381::G1Affine;
use std::collections::BTreeMap;
use urbis_core::beacon::{BeaconHeader, CommitCertificate, Crosslink};
use urbis_core::bls::PublicKey;
use urbis_core::encoding::{decode, encode};
use urbis_core::genesis::Genesis;
use urbis_core::hash::Hash32;
use urbis_core::header::{ShardHeader, SignedShardHeader};
use urbis_core::light_client::LightClient;
use urbis_core::merkle::{Blake3Tree, InclusionProof, TreeHasher, root_from_leaf_hashes};
use urbis_core::proof::{
    FinalityProof, HistoryLink, RecordProof, StateFactProof, verify_record_proof,
    verify_state_proof,
};
use urbis_core::record::{CityId, PayloadCommitment, Record};
use urbis_core::state::{StateKey, StateProof, value_hash};
use urbis_core::subject::{IdentifierScheme, SubjectKey, normalise, subject_id};
use urbis_core::testkit::{BeaconChain, Federation, ShardChain, information_record, seed};
use urbis_core::{Domain, Level};

/// `docs/protocol.md` of this checkout (found at run time: a test binary reused from another
/// checkout, as CI's shared target directory allows, must read this one).
fn doc_path() -> std::path::PathBuf {
    crate::manifest_dir().join("../docs/protocol.md")
}
const BEGIN: &str = "<!-- worked-example:begin -->";
const END: &str = "<!-- worked-example:end -->";
/// The IETF DST of signatures, typed out again rather than taken from `urbis_core::bls`.
const DST_SIGNATURE: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";
/// The IETF DST of proofs of possession, typed out again.
const DST_POP: &[u8] = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Every domain with its name in the document (`key_<name>` lines and the domain table).
const DOMAINS: [(Domain, &str); 16] = [
    (Domain::RecordId, "record_id"),
    (Domain::ShardHeader, "shard_header"),
    (Domain::BeaconHeader, "beacon_header"),
    (Domain::ValidatorSet, "validator_set"),
    (Domain::Genesis, "genesis"),
    (Domain::PayloadCommitment, "payload_commitment"),
    (Domain::SigningRoot, "signing_root"),
    (Domain::RecordsTree, "records_tree"),
    (Domain::HistoryTree, "history_tree"),
    (Domain::CrosslinksTree, "crosslinks_tree"),
    (Domain::StateTree, "state_tree"),
    (Domain::BeaconBody, "beacon_body"),
    (Domain::BatchCoefficients, "batch_coefficients"),
    (Domain::SubjectIndex, "subject_index"),
    (Domain::ConsensusMessage, "consensus_message"),
    (Domain::OutboundBatch, "outbound_batch"),
];

// ---------------------------------------------------------------------------------------------
// The example, built from the code
// ---------------------------------------------------------------------------------------------

/// One subsection of the generated text: a heading, one explanatory paragraph, and its values.
struct Section {
    title: &'static str,
    text: &'static str,
    values: Vec<(String, String)>,
}

impl Section {
    fn new(title: &'static str, text: &'static str) -> Self {
        Section { title, text, values: Vec::new() }
    }

    fn put(&mut self, name: impl Into<String>, bytes: impl AsRef<[u8]>) {
        self.values.push((name.into(), hex::encode(bytes.as_ref())));
    }
}

/// Builds the whole example deterministically and checks, on the way, that it verifies.
fn generate() -> Vec<Section> {
    let federation = Federation::new("worked-example", 2, 4);
    let federation_id = federation.id();
    let genesis = federation.genesis.genesis();

    // City 0 seals four blocks; block 1 (N) holds three records and writes two state keys;
    // block 3 (M) is the one the beacon crosslinks. City 1 seals one block.
    let mut shard = ShardChain::new(CityId(0));
    shard.seal(&federation, vec![information_record(CityId(0), 0)], &[]);
    let present_key = StateKey::Revocation { credential_id: Hash32(seed("worked-example/cred-1")) };
    let present_value = b"revoked: reason 7".to_vec();
    let balance_key = StateKey::Balance { asset: "EUR".into(), account: "alice".into() };
    let absent_key = StateKey::Revocation { credential_id: Hash32(seed("worked-example/cred-2")) };
    shard.seal(
        &federation,
        (1..=3).map(|n| information_record(CityId(0), n)).collect(),
        &[
            (present_key.clone(), Some(present_value.clone())),
            (balance_key, Some(500u128.to_le_bytes().to_vec())),
        ],
    );
    let (value, present_proof) = shard.state.prove(&present_key).unwrap();
    assert_eq!(value.as_deref(), Some(&present_value[..]));
    let (value, absent_proof) = shard.state.prove(&absent_key).unwrap();
    assert_eq!(value, None);
    shard.seal(&federation, vec![information_record(CityId(0), 4)], &[]);
    shard.seal(&federation, vec![information_record(CityId(0), 5)], &[]);
    let mut other = ShardChain::new(CityId(1));
    other.seal(&federation, vec![information_record(CityId(1), 0)], &[]);

    let n = shard.headers[1].clone();
    let m = shard.headers[3].clone();
    let mut beacon = BeaconChain::new(&federation);
    let crosslinks = vec![
        Crosslink { city: CityId(1), header_hash: other.headers[0].header.hash() },
        Crosslink { city: CityId(0), header_hash: m.header.hash() },
    ];
    beacon.produce(&federation, crosslinks, None);
    let beacon_header = beacon.blocks[0].header.clone();
    let crosslinks = beacon.blocks[0].crosslinks.clone();
    assert_eq!(crosslinks[0].city, CityId(0), "crosslinks are sorted by city");

    // Validators 0, 1 and 3 sign (30 of 40 weight): bitfield 0b1011.
    let keys = &federation.validator_keys;
    let signer_keys = [Some(&keys[0]), Some(&keys[1]), None, Some(&keys[3])];
    let certificate =
        CommitCertificate::sign(&beacon_header, &federation_id, &signer_keys).unwrap();
    beacon.blocks[0].certificate = certificate.clone();
    let beacon_root = beacon_header.signing_root(&federation_id);

    let mut proof = shard.record_proof(1, 1);
    proof.finality = beacon.finality(&shard, 1, 1);
    let finality = proof.finality.clone().unwrap();
    let client = LightClient::from_genesis(&federation.genesis);
    let verified = verify_record_proof(&federation.genesis, &client, &proof).unwrap();
    assert_eq!((verified.level, verified.beacon_height), (Level::Final, Some(1)));
    for (key, value, state_proof) in [
        (&present_key, Some(present_value.clone()), &present_proof),
        (&absent_key, None, &absent_proof),
    ] {
        let fact = StateFactProof {
            key: key.clone(),
            value: value.clone(),
            proof: state_proof.clone(),
            header: n.clone(),
            finality: Some(finality.clone()),
        };
        let v =
            verify_state_proof(&federation.genesis, &client, n.header.city, key, &fact).unwrap();
        assert_eq!((v.value, v.level), (value, Level::Final));
    }

    let mut sections = Vec::new();

    let mut s = Section::new(
        "Domain keys",
        "`key_<domain>` is K_d = BLAKE3-derive_key(context_d, \"\") for each row of the domain \
         table.",
    );
    for (domain, name) in DOMAINS {
        s.put(format!("key_{name}"), domain.key());
    }
    sections.push(s);

    let mut s = Section::new(
        "Genesis and federation id",
        "Federation `worked-example`: 2 cities, 4 validators of weight 10 (validator i operated \
         by city i mod 2), quorum 2/3. `genesis` is borsh(Genesis); `federation_id` is \
         H_genesis(genesis); `validator_set_hash` is H_validator_set(borsh(genesis.validators)).",
    );
    s.put("genesis", encode(genesis));
    s.put("federation_id", federation_id.as_bytes());
    s.put("validator_set_hash", genesis.validators.hash().as_bytes());
    for (i, v) in genesis.validators.validators.iter().enumerate() {
        s.put(format!("validator{i}_bls_public_key"), v.bls_key);
        s.put(format!("validator{i}_proof_of_possession"), v.proof_of_possession);
    }
    for c in &genesis.cities {
        s.put(format!("city{}_sealing_public_key", c.id.0), c.sealing_keys[0].public_key);
    }
    sections.push(s);

    let record = &shard.blocks[1][1];
    let mut s = Section::new(
        "Record",
        "Record 1 of city 0's shard block 1: an information record with inline content. \
         `record` is borsh(Record); `record_id` is H_record_id(record).",
    );
    s.put("record", encode(record));
    s.put("record_id", record.id().as_bytes());
    sections.push(s);

    let tree = Blake3Tree::records();
    let leaves: Vec<Hash32> =
        shard.blocks[1].iter().map(|r| tree.leaf(r.id().as_bytes())).collect();
    let mut s = Section::new(
        "Records tree of shard block 1",
        "Three leaves (the record ids of records 0, 1, 2); `records_leaf<i>` is \
         BLAKE3-keyed(K_records_tree, 0x00 || record_id_i), `records_node01` is \
         BLAKE3-keyed(K_records_tree, 0x01 || leaf0 || leaf1), the root is node(node01, leaf2). \
         `record_path<j>` is the inclusion path of record 1 (leaf index 1, tree size 3), \
         bottom-up.",
    );
    for (i, l) in leaves.iter().enumerate() {
        s.put(format!("records_leaf{i}"), l.as_bytes());
    }
    s.put("records_node01", tree.node(&leaves[0], &leaves[1]).as_bytes());
    s.put("records_root", root_from_leaf_hashes(&tree, &leaves).as_bytes());
    for (j, p) in proof.inclusion.path.iter().enumerate() {
        s.put(format!("record_path{j}"), p.as_bytes());
    }
    sections.push(s);

    let mut s = Section::new(
        "Shard header N",
        "City 0's header at height 1, sealed with city 0's key. `shard_header` is \
         borsh(ShardHeader); its hash is H_shard_header(shard_header); the signing root has \
         purpose 1; `shard_header_signature` is the Ed25519 signature (R || S) over the 32 bytes \
         of the signing root.",
    );
    s.put("shard_header", encode(&n.header));
    s.put("shard_header_hash", n.header.hash().as_bytes());
    s.put("shard_header_signing_root", n.header.signing_root(&federation_id).as_bytes());
    s.put("shard_header_signature", n.signature);
    sections.push(s);

    let present_leaf = present_proof.leaf.unwrap();
    let mut s = Section::new(
        "State proofs against N's state_root",
        "Block 1 wrote two keys (a revocation and a balance). `state_present_*` is a membership \
         proof of the revocation key with value `state_present_value`; `state_absent_*` a \
         non-membership proof of another revocation key. `*_key` is borsh(StateKey), \
         `*_key_hash` is H_state_tree(key), `*_proof` is borsh(StateProof), siblings bottom-up.",
    );
    s.put("state_root", n.header.state_root.as_bytes());
    s.put("state_present_key", encode(&present_key));
    s.put("state_present_key_hash", present_key.key_hash().as_bytes());
    s.put("state_present_value", &present_value);
    s.put("state_present_value_hash", value_hash(&present_value).as_bytes());
    assert_eq!(present_leaf.value_hash, value_hash(&present_value));
    s.put("state_present_proof", encode(&present_proof));
    s.put("state_absent_key", encode(&absent_key));
    s.put("state_absent_key_hash", absent_key.key_hash().as_bytes());
    s.put("state_absent_proof", encode(&absent_proof));
    sections.push(s);

    let history = Blake3Tree::history();
    let link = finality.history.as_ref().unwrap();
    let mut s = Section::new(
        "History link from N to the crosslinked header M",
        "M is city 0's header at height 3; its history_root is the history tree over the hashes \
         of headers 0, 1, 2 (`history_leaf<i>` = BLAKE3-keyed(K_history_tree, 0x00 || hash of \
         header i)). N's path is leaf index 1 (N's height) in a tree of size 3 (M's height). \
         `history_empty_root` = BLAKE3-keyed(K_history_tree, \"\") is the history_root of every \
         height-0 header.",
    );
    for h in 0..3 {
        s.put(
            format!("history_leaf{h}"),
            history.leaf(shard.headers[h].header.hash().as_bytes()).as_bytes(),
        );
    }
    s.put("history_empty_root", history.empty().as_bytes());
    for (j, p) in link.inclusion.path.iter().enumerate() {
        s.put(format!("history_path{j}"), p.as_bytes());
    }
    s.put("crosslinked_header", encode(&m.header));
    s.put("crosslinked_header_hash", m.header.hash().as_bytes());
    s.put("crosslinked_header_signature", m.signature);
    sections.push(s);

    let ctree = Blake3Tree::crosslinks();
    let cleaves: Vec<Hash32> = crosslinks.iter().map(Crosslink::leaf_hash).collect();
    let mut s = Section::new(
        "Crosslinks tree of beacon block 1",
        "Two crosslinks sorted by city: city 0 → M, city 1 → its header 0. `crosslink<i>` is \
         borsh(Crosslink) (u32 city || header hash), `crosslink<i>_leaf` = \
         BLAKE3-keyed(K_crosslinks_tree, 0x00 || crosslink<i>); the root is node(leaf0, \
         leaf1). City 0's path (leaf index 0, tree size 2) is `crosslink_path0`.",
    );
    for (i, c) in crosslinks.iter().enumerate() {
        s.put(format!("crosslink{i}"), encode(c));
        s.put(format!("crosslink{i}_leaf"), cleaves[i].as_bytes());
    }
    s.put("crosslinks_root", root_from_leaf_hashes(&ctree, &cleaves).as_bytes());
    for (j, p) in finality.crosslink.path.iter().enumerate() {
        s.put(format!("crosslink_path{j}"), p.as_bytes());
    }
    sections.push(s);

    let mut s = Section::new(
        "Beacon header F",
        "Beacon block 1. `beacon_header` is borsh(BeaconHeader); its hash is \
         H_beacon_header(beacon_header); the signing root (purpose 2) is the message every \
         validator signs. (Here body_hash = H_beacon_body(borsh(Vec<Crosslink>)), as the testkit \
         builds it; no verifier checks body_hash.)",
    );
    s.put("beacon_header", encode(&beacon_header));
    s.put("beacon_header_hash", beacon_header.hash().as_bytes());
    s.put("beacon_header_signing_root", beacon_root.as_bytes());
    sections.push(s);

    let signer_points: Vec<PublicKey> = [0usize, 1, 3]
        .iter()
        .map(|&i| PublicKey::from_bytes(&genesis.validators.validators[i].bls_key).unwrap())
        .collect();
    let aggregate_key = G1Affine::from(PublicKey::aggregate_points(&signer_points));
    let mut s = Section::new(
        "Commit certificate of F",
        "Validators 0, 1 and 3 sign (weight 30 of 40; 30 * 3 > 40 * 2): `certificate_signers` \
         = 0x0b (bits 0, 1, 3). `validator<i>_precommit` is validator i's signature over the \
         beacon signing root; `certificate_signature` is their sum (compressed G2); \
         `signers_aggregate_public_key` is the sum of the three public keys (compressed G1); \
         `commit_certificate` is borsh(CommitCertificate).",
    );
    for i in [0usize, 1, 3] {
        s.put(format!("validator{i}_precommit"), keys[i].sign(beacon_root.as_bytes()).to_bytes());
    }
    s.put("certificate_signature", certificate.signature);
    s.put("certificate_signers", &certificate.signers);
    s.put("signers_aggregate_public_key", aggregate_key.to_compressed());
    s.put("commit_certificate", encode(&certificate));
    sections.push(s);

    let mut s = Section::new(
        "Record proof",
        "borsh(RecordProof) of record 1 at level final: the record, its records path, N sealed, \
         and a finality part with the history link to M, city 0's crosslink path, F, F's \
         certificate and no set updates.",
    );
    s.put("record_proof", encode(&proof));
    sections.push(s);

    // Block 1's three records sent to city 1 as one batch, sequences 5, 6, 7 (illustrative: the
    // example's block writes no batch itself).
    let batch_ids: Vec<Hash32> = shard.blocks[1].iter().map(Record::id).collect();
    let batch = urbis_core::packet::OutboundBatch::new(1, 5, 42, &batch_ids);
    let batch_tree = Blake3Tree::outbound_batch();
    let batch_leaves = urbis_core::packet::OutboundBatch::leaf_hashes(&batch_ids);
    let batch_key = StateKey::OutboundBatch { source: CityId(0), destination: CityId(1) };
    let batch_path = InclusionProof::build(&batch_tree, &batch_leaves, 1).unwrap();
    let mut s = Section::new(
        "Outbound batch",
        "A block at height 1 of city 0 sending the three records of block 1 to city 1 as \
         sequences 5, 6, 7 with timeout 42 (§12.6). `batch_record_id<i>` are their record ids \
         in sequence order; `batch_leaf<i>` is BLAKE3-keyed(K_outbound_batch, 0x00 || \
         record_id_i), `batch_node01` is BLAKE3-keyed(K_outbound_batch, 0x01 || leaf0 || \
         leaf1), `batch_root` is node(node01, leaf2); `batch` is borsh(OutboundBatch) \
         (height, first_sequence, count, timeout_height, root); `batch_key` is \
         borsh(StateKey::OutboundBatch{0, 1}) and `batch_key_hash` H_state_tree(batch_key); \
         `batch_path<j>` is the path of sequence 6 (leaf index 1, tree size 3), bottom-up.",
    );
    for (i, id) in batch_ids.iter().enumerate() {
        s.put(format!("batch_record_id{i}"), id.as_bytes());
    }
    for (i, l) in batch_leaves.iter().enumerate() {
        s.put(format!("batch_leaf{i}"), l.as_bytes());
    }
    s.put("batch_node01", batch_tree.node(&batch_leaves[0], &batch_leaves[1]).as_bytes());
    s.put("batch_root", batch.root.as_bytes());
    s.put("batch", encode(&batch));
    s.put("batch_key", encode(&batch_key));
    s.put("batch_key_hash", batch_key.key_hash().as_bytes());
    for (j, p) in batch_path.path.iter().enumerate() {
        s.put(format!("batch_path{j}"), p.as_bytes());
    }
    sections.push(s);

    let subject_key_bytes = seed("worked-example/subject-key");
    let scheme = IdentifierScheme::National { country: "de".into() };
    let raw = " ab-12 345.678 ";
    let salt = seed("worked-example/salt");
    let payload = b"credit report: no defaults";
    let mut s = Section::new(
        "Subject id and payload commitment",
        "`subject_identifier` is the raw UTF-8 input, scheme national with country `de` (tag \
         `national:DE`); `subject_normalised` the normalised identifier; `subject_id` = \
         BLAKE3-keyed(subject_key, \"national:DE\" || 0x00 || normalised). `payload_commitment` \
         = H_payload_commitment(payload_salt || payload).",
    );
    s.put("subject_key", subject_key_bytes);
    s.put("subject_identifier", raw.as_bytes());
    s.put("subject_normalised", normalise(&scheme, raw).unwrap().as_bytes());
    let id = subject_id(&SubjectKey::from_bytes(subject_key_bytes), &scheme, raw).unwrap();
    s.put("subject_id", id.0.as_bytes());
    s.put("payload_salt", salt);
    s.put("payload", payload);
    s.put("payload_commitment", PayloadCommitment::new(&salt, payload).0.as_bytes());
    sections.push(s);

    sections
}

/// The generated section of docs/protocol.md, markers included.
fn render(sections: &[Section]) -> String {
    let mut out = String::new();
    out.push_str(BEGIN);
    out.push_str(
        "\n<!-- Generated by core/tests/it/worked_example.rs; do not edit by hand. Regenerate \
         with: URBIS_WRITE_EXAMPLE=1 cargo test -p urbis-core --test it \
         worked_example_in_protocol_md_is_current -->\n",
    );
    for s in sections {
        out.push_str(&format!("\n### {}\n\n{}\n\n```text\n", s.title, s.text));
        for (name, value) in &s.values {
            out.push_str(&format!("{name} = {value}\n"));
        }
        out.push_str("```\n");
    }
    out.push('\n');
    out.push_str(END);
    out
}

// ---------------------------------------------------------------------------------------------
// Reading the document
// ---------------------------------------------------------------------------------------------

fn read_doc() -> String {
    std::fs::read_to_string(doc_path())
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", doc_path().display()))
}

/// The byte range of the generated section, markers included.
fn section_range(doc: &str) -> std::ops::Range<usize> {
    let start = doc.find(BEGIN).unwrap_or_else(|| panic!("{} lacks {BEGIN}", doc_path().display()));
    let end =
        doc[start..].find(END).unwrap_or_else(|| panic!("{} lacks {END}", doc_path().display()))
            + start
            + END.len();
    start..end
}

/// Every `name = hex` line inside a fenced block of the generated section, in order.
fn parse_values(section: &str) -> Vec<(String, String)> {
    let mut values = Vec::new();
    let mut fenced = false;
    for line in section.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            continue;
        }
        let (name, value) =
            line.split_once(" = ").unwrap_or_else(|| panic!("not a `name = hex` line: {line}"));
        assert!(
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "bad name in line {line}"
        );
        assert!(
            value.len() % 2 == 0
                && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "not lowercase hex in line {line}"
        );
        values.push((name.to_string(), value.to_string()));
    }
    assert!(!fenced, "unclosed code fence in the worked example");
    values
}

/// The document's example values by name.
struct DocValues(BTreeMap<String, Vec<u8>>);

impl DocValues {
    fn load() -> Self {
        let doc = read_doc();
        let mut map = BTreeMap::new();
        for (name, value) in parse_values(&doc[section_range(&doc)]) {
            let bytes = hex::decode(&value).unwrap();
            assert!(map.insert(name.clone(), bytes).is_none(), "{name} appears twice");
        }
        DocValues(map)
    }

    fn bytes(&self, name: &str) -> &[u8] {
        self.0.get(name).unwrap_or_else(|| panic!("the worked example lacks `{name}`"))
    }

    fn array<const N: usize>(&self, name: &str) -> [u8; N] {
        self.bytes(name).try_into().unwrap_or_else(|_| panic!("`{name}` is not {N} bytes"))
    }

    fn hash(&self, name: &str) -> Hash32 {
        Hash32(self.array(name))
    }

    /// `prefix0`, `prefix1`, ... while present.
    fn list(&self, prefix: &str) -> Vec<[u8; 32]> {
        (0..)
            .map_while(|j| self.0.get(&format!("{prefix}{j}")))
            .map(|b| b[..].try_into().unwrap())
            .collect()
    }
}

/// The rows of the domain table: (name, context), e.g. ("record_id", "urbis v1 record id").
fn doc_domain_contexts() -> Vec<(String, String)> {
    read_doc()
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // | `name` | `context` | ... |
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let context = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            context.starts_with("urbis v1 ").then(|| (name.to_string(), context.to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn worked_example_in_protocol_md_is_current() {
    let sections = generate();
    let generated = render(&sections);
    let doc = read_doc();
    let range = section_range(&doc);
    if std::env::var("URBIS_WRITE_EXAMPLE").as_deref() == Ok("1") {
        let mut updated = doc.clone();
        updated.replace_range(range, &generated);
        // Write beside and rename, so a test reading the document concurrently sees the old or
        // the new text, never a truncated file.
        let temporary = doc_path().with_extension("md.tmp");
        std::fs::write(&temporary, updated).unwrap();
        std::fs::rename(&temporary, doc_path()).unwrap();
        println!("{generated}");
        return;
    }
    let in_doc = parse_values(&doc[range.clone()]);
    let expected: Vec<(String, String)> = sections.iter().flat_map(|s| s.values.clone()).collect();
    let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&in_doc), names(&expected), "the example's names differ from the code's");
    for ((name, doc_value), (_, code_value)) in in_doc.iter().zip(&expected) {
        assert_eq!(
            doc_value, code_value,
            "`{name}` in docs/protocol.md is not what the code gives"
        );
    }
    assert!(
        doc[range] == generated,
        "the worked example's text differs from the generator's; regenerate it with \
         URBIS_WRITE_EXAMPLE=1 cargo test -p urbis-core --test it \
         worked_example_in_protocol_md_is_current"
    );
    // The domain table names exactly the code's contexts.
    let table = doc_domain_contexts();
    let code: Vec<(String, String)> =
        DOMAINS.iter().map(|(d, n)| (n.to_string(), d.context().to_string())).collect();
    assert_eq!(table, code, "the domain table of docs/protocol.md differs from hash.rs");
}

#[test]
fn worked_example_record_proof_from_the_document_verifies() {
    let d = DocValues::load();
    let genesis: Genesis = decode(d.bytes("genesis")).unwrap();
    let genesis = genesis.validate().unwrap();
    assert_eq!(genesis.federation_id(), d.hash("federation_id"));

    let record: Record = decode(d.bytes("record")).unwrap();
    let n: ShardHeader = decode(d.bytes("shard_header")).unwrap();
    let m: ShardHeader = decode(d.bytes("crosslinked_header")).unwrap();
    let beacon: BeaconHeader = decode(d.bytes("beacon_header")).unwrap();
    let certificate: CommitCertificate = decode(d.bytes("commit_certificate")).unwrap();
    assert_eq!(certificate.signature, d.array("certificate_signature"));
    assert_eq!(certificate.signers, d.bytes("certificate_signers"));
    let hashes = |prefix: &str| d.list(prefix).into_iter().map(Hash32).collect::<Vec<_>>();
    let n_signed =
        SignedShardHeader { header: n.clone(), signature: d.array("shard_header_signature") };
    let finality = FinalityProof {
        history: Some(HistoryLink {
            inclusion: InclusionProof {
                leaf_index: n.height,
                tree_size: m.height,
                path: hashes("history_path"),
            },
            crosslinked: SignedShardHeader {
                header: m,
                signature: d.array("crosslinked_header_signature"),
            },
        }),
        // City 0 sorts first among the crosslinks.
        crosslink: InclusionProof {
            leaf_index: 0,
            tree_size: beacon.crosslinks_count,
            path: hashes("crosslink_path"),
        },
        beacon_header: beacon,
        certificate,
        set_updates: vec![],
    };
    let proof = RecordProof {
        record,
        inclusion: InclusionProof {
            leaf_index: 1,
            tree_size: n.records_count,
            path: hashes("record_path"),
        },
        header: n_signed.clone(),
        finality: Some(finality.clone()),
    };
    assert_eq!(
        encode(&proof),
        d.bytes("record_proof"),
        "assembled proof differs from the document's"
    );
    assert_eq!(decode::<RecordProof>(d.bytes("record_proof")).unwrap(), proof);

    let client = LightClient::from_genesis(&genesis);
    let v = verify_record_proof(&genesis, &client, &proof).unwrap();
    assert_eq!((v.level, v.height, v.beacon_height), (Level::Final, 1, Some(1)));
    assert_eq!(v.id, d.hash("record_id"));
    // Without the finality part the same proof is only committed.
    let committed = RecordProof { finality: None, ..proof.clone() };
    assert_eq!(verify_record_proof(&genesis, &client, &committed).unwrap().level, Level::Committed);

    // Both state proofs, with the same header and finality part.
    for (prefix, value) in
        [("state_present", Some(d.bytes("state_present_value").to_vec())), ("state_absent", None)]
    {
        let key: StateKey = decode(d.bytes(&format!("{prefix}_key"))).unwrap();
        assert_eq!(key.key_hash(), d.hash(&format!("{prefix}_key_hash")));
        let fact = StateFactProof {
            key: key.clone(),
            value: value.clone(),
            proof: decode::<StateProof>(d.bytes(&format!("{prefix}_proof"))).unwrap(),
            header: n_signed.clone(),
            finality: Some(finality.clone()),
        };
        let v = verify_state_proof(&genesis, &client, n_signed.header.city, &key, &fact).unwrap();
        assert_eq!((v.value, v.level, v.beacon_height), (value, Level::Final, Some(1)));
    }
}

#[test]
fn worked_example_certificate_verifies_with_blst() {
    use blst::BLST_ERROR;
    use blst::min_pk::{AggregatePublicKey, AggregateSignature, PublicKey, Signature};

    let d = DocValues::load();
    let keys: Vec<PublicKey> = (0..4)
        .map(|i| {
            let bytes = d.bytes(&format!("validator{i}_bls_public_key"));
            let key = PublicKey::key_validate(bytes).unwrap();
            assert_eq!(PublicKey::from_bytes(bytes).unwrap(), key);
            // Each proof of possession: the PoP DST over the 48-byte compressed key.
            let pop = Signature::sig_validate(
                d.bytes(&format!("validator{i}_proof_of_possession")),
                true,
            )
            .unwrap();
            assert_eq!(pop.verify(true, bytes, DST_POP, &[], &key, true), BLST_ERROR::BLST_SUCCESS);
            key
        })
        .collect();

    // Bit i is bit i % 8 (least significant first) of byte i / 8; ceil(4 / 8) = 1 byte.
    let bitfield = d.bytes("certificate_signers");
    assert_eq!(bitfield.len(), 1);
    let signers: Vec<usize> = (0..4).filter(|i| bitfield[i / 8] & (1 << (i % 8)) != 0).collect();
    assert_eq!(signers, [0, 1, 3]);
    assert_eq!(bitfield[0] >> 4, 0, "padding bits are zero");

    let signer_keys: Vec<&PublicKey> = signers.iter().map(|&i| &keys[i]).collect();
    let aggregate = AggregatePublicKey::aggregate(&signer_keys, true).unwrap().to_public_key();
    assert_eq!(aggregate.compress(), d.array::<48>("signers_aggregate_public_key"));

    let root = d.array::<32>("beacon_header_signing_root");
    let signature = Signature::sig_validate(d.bytes("certificate_signature"), true).unwrap();
    assert_eq!(
        signature.verify(true, &root, DST_SIGNATURE, &[], &aggregate, true),
        BLST_ERROR::BLST_SUCCESS
    );

    // The certificate is the sum of the individual precommits, each valid on its own.
    let precommits: Vec<Signature> = signers
        .iter()
        .map(|&i| {
            let s =
                Signature::sig_validate(d.bytes(&format!("validator{i}_precommit")), true).unwrap();
            assert_eq!(
                s.verify(true, &root, DST_SIGNATURE, &[], &keys[i], true),
                BLST_ERROR::BLST_SUCCESS
            );
            s
        })
        .collect();
    let refs: Vec<&Signature> = precommits.iter().collect();
    let sum = AggregateSignature::aggregate(&refs, true).unwrap().to_signature();
    assert_eq!(sum.compress(), d.array::<96>("certificate_signature"));

    // One flipped byte of the message, or another signer set, and blst refuses.
    let mut flipped = root;
    flipped[7] ^= 0x01;
    assert_ne!(
        signature.verify(true, &flipped, DST_SIGNATURE, &[], &aggregate, true),
        BLST_ERROR::BLST_SUCCESS
    );
    let everyone: Vec<&PublicKey> = keys.iter().collect();
    let all = AggregatePublicKey::aggregate(&everyone, true).unwrap().to_public_key();
    assert_ne!(
        signature.verify(true, &root, DST_SIGNATURE, &[], &all, true),
        BLST_ERROR::BLST_SUCCESS
    );
}

/// A cursor over borsh bytes, written from the spec's tables rather than borsh's derive.
struct Borsh<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Borsh<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Borsh { bytes, at: 0 }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn h32(&mut self) -> [u8; 32] {
        self.take(32).try_into().unwrap()
    }
    fn bytes_vec(&mut self) -> &'a [u8] {
        let len = self.u32() as usize;
        self.take(len)
    }
    fn string(&mut self) -> String {
        String::from_utf8(self.bytes_vec().to_vec()).unwrap()
    }
    fn option_u32(&mut self) -> Option<u32> {
        match self.u8() {
            0 => None,
            1 => Some(self.u32()),
            t => panic!("bad option tag {t}"),
        }
    }
    fn end(&self) {
        assert_eq!(self.at, self.bytes.len(), "trailing bytes");
    }
}

/// The shard header fields a verifier needs, read by the spec's table.
struct HeaderFields {
    city: u32,
    height: u64,
    records_root: [u8; 32],
    records_count: u64,
    state_root: [u8; 32],
    history_root: [u8; 32],
}

fn read_shard_header(bytes: &[u8]) -> HeaderFields {
    let mut r = Borsh::new(bytes);
    assert_eq!(r.u8(), 1, "version");
    let city = r.u32();
    let height = r.u64();
    let _time_ms = r.u64();
    let _previous = r.h32();
    let records_root = r.h32();
    let records_count = r.u64();
    let state_root = r.h32();
    let history_root = r.h32();
    r.end();
    HeaderFields { city, height, records_root, records_count, state_root, history_root }
}

fn keyed(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    for p in parts {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// RFC 9162 §2.1.3.2, with the path length the algorithm consumes required exactly.
fn rfc9162_root(
    key: &[u8; 32],
    index: u64,
    size: u64,
    leaf: [u8; 32],
    path: &[[u8; 32]],
) -> [u8; 32] {
    assert!(index < size);
    let node = |l: &[u8; 32], r: &[u8; 32]| keyed(key, &[&[0x01], l, r]);
    let (mut fn_, mut sn, mut r) = (index, size - 1, leaf);
    for p in path {
        assert!(sn != 0, "path too long");
        if fn_ & 1 == 1 || fn_ == sn {
            r = node(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    assert_eq!(sn, 0, "path too short");
    r
}

/// The state-tree verification of the spec, on borsh(StateProof) read by hand.
fn jmt_root(key: &[u8; 32], key_hash: &[u8; 32], value: Option<&[u8]>, proof: &[u8]) -> [u8; 32] {
    let mut r = Borsh::new(proof);
    let leaf = match r.u8() {
        0 => None,
        1 => Some((r.h32(), r.h32())),
        t => panic!("bad option tag {t}"),
    };
    let siblings: Vec<[u8; 32]> = (0..r.u32()).map(|_| r.h32()).collect();
    r.end();
    assert!(siblings.len() <= 256);
    match (value, leaf) {
        (Some(v), Some((k, h))) => {
            assert_eq!(&k, key_hash);
            assert_eq!(h, keyed(key, &[v]));
        }
        (None, Some((k, _))) => {
            assert_ne!(&k, key_hash);
            let common = (0..256).take_while(|&i| bit(&k, i) == bit(key_hash, i)).count();
            assert!(common >= siblings.len());
        }
        (None, None) => {}
        (Some(_), None) => panic!("membership claimed, absence shown"),
    }
    let mut current = match leaf {
        Some((k, h)) => keyed(key, &[b"JMT::LeafNode", &k, &h]),
        None => *b"SPARSE_MERKLE_PLACEHOLDER_HASH__",
    };
    let depth = siblings.len();
    for (i, s) in siblings.iter().enumerate() {
        current = if bit(key_hash, depth - 1 - i) {
            keyed(key, &[b"JMT::IntrnalNode", s, &current])
        } else {
            keyed(key, &[b"JMT::IntrnalNode", &current, s])
        };
    }
    current
}

/// Bit `i` of a key hash: bit 7 - i % 8 of byte i / 8 (most significant first).
fn bit(h: &[u8; 32], i: usize) -> bool {
    (h[i / 8] >> (7 - i % 8)) & 1 == 1
}

#[test]
fn worked_example_recomputes_from_the_spec_alone() {
    let d = DocValues::load();
    // Domain keys from the document's own table of contexts.
    let mut k = BTreeMap::new();
    let table = doc_domain_contexts();
    assert_eq!(table.len(), DOMAINS.len());
    for (name, context) in &table {
        let key = blake3::derive_key(context, b"");
        assert_eq!(key, d.array::<32>(&format!("key_{name}")), "K_{name}");
        k.insert(name.as_str(), key);
    }
    let k = |name: &str| k[name];

    // Genesis, read by the tables; the validator set is a slice of it.
    let genesis = d.bytes("genesis");
    let mut r = Borsh::new(genesis);
    assert_eq!(r.u16(), 1);
    assert_eq!(r.string(), "worked-example");
    let _genesis_time_ms = r.u64();
    assert_eq!((r.u64(), r.u64()), (2, 3), "quorum");
    let _interval_ms = r.u64();
    let _block_records_max = r.u64();
    let _record_bytes_max = r.u64();
    for c in 0..r.u32() {
        assert_eq!(r.u32(), c, "city id");
        let _name = r.string();
        let entries = r.u32();
        assert_eq!(entries, 1);
        assert_eq!(r.u64(), 0, "from_height");
        assert_eq!(r.h32(), d.array::<32>(&format!("city{c}_sealing_public_key")));
        let _pem = r.string();
        let _first_height = r.u64();
    }
    let set_start = r.at;
    assert_eq!(r.u32(), 4);
    for i in 0..4 {
        let _name = r.string();
        assert_eq!(r.option_u32(), Some(i % 2));
        assert_eq!(r.take(48), d.bytes(&format!("validator{i}_bls_public_key")));
        assert_eq!(r.take(96), d.bytes(&format!("validator{i}_proof_of_possession")));
        assert_eq!(r.u64(), 10, "weight");
        let _tls_fingerprint = r.h32();
    }
    let set_end = r.at;
    for _ in 0..r.u32() {
        let _asset = r.string();
        let _issuer = r.u32();
    }
    r.end();
    assert_eq!(keyed(&k("genesis"), &[genesis]), d.array::<32>("federation_id"));
    let validator_set = &genesis[set_start..set_end];
    assert_eq!(keyed(&k("validator_set"), &[validator_set]), d.array::<32>("validator_set_hash"));
    let federation_id = d.array::<32>("federation_id");
    let signing_root = |purpose: u8, object: &[u8; 32]| {
        keyed(&k("signing_root"), &[&[purpose], &1u16.to_le_bytes(), &federation_id, object])
    };

    // The record, read by the Record table, and its id.
    let record = d.bytes("record");
    let mut r = Borsh::new(record);
    assert_eq!(r.u8(), 1, "version");
    assert_eq!(r.u32(), 0, "city");
    assert_eq!(r.string(), "open-data-office");
    let _subject = r.h32();
    let _time_ms = r.u64();
    assert_eq!(r.option_u32(), None, "destination");
    assert_eq!(r.u8(), 0, "RecordBody::Information");
    assert_eq!(r.string(), "street-trees");
    assert_eq!(r.string(), "text/csv");
    assert_eq!(r.u8(), 0, "InformationContent::Inline");
    assert_eq!(r.bytes_vec(), b"tree,2\n");
    r.end();
    let record_id = keyed(&k("record_id"), &[record]);
    assert_eq!(record_id, d.array::<32>("record_id"));

    // Records tree and record 1's path to N's records_root; N's hash, signing root and seal.
    let records = k("records_tree");
    let leaf1 = keyed(&records, &[&[0x00], &record_id]);
    assert_eq!(leaf1, d.array::<32>("records_leaf1"));
    let (leaf0, leaf2) = (d.array::<32>("records_leaf0"), d.array::<32>("records_leaf2"));
    let node01 = keyed(&records, &[&[0x01], &leaf0, &leaf1]);
    assert_eq!(node01, d.array::<32>("records_node01"));
    let root = keyed(&records, &[&[0x01], &node01, &leaf2]);
    assert_eq!(root, d.array::<32>("records_root"));
    let n_bytes = d.bytes("shard_header");
    let n = read_shard_header(n_bytes);
    assert_eq!((n.city, n.height, n.records_count), (0, 1, 3));
    assert_eq!(n.records_root, root);
    assert_eq!(rfc9162_root(&records, 1, n.records_count, leaf1, &d.list("record_path")), root);
    let n_hash = keyed(&k("shard_header"), &[n_bytes]);
    assert_eq!(n_hash, d.array::<32>("shard_header_hash"));
    let n_root = signing_root(1, &n_hash);
    assert_eq!(n_root, d.array::<32>("shard_header_signing_root"));
    let city0_key =
        ed25519_dalek::VerifyingKey::from_bytes(&d.array("city0_sealing_public_key")).unwrap();
    let seal = ed25519_dalek::Signature::from_bytes(&d.array("shard_header_signature"));
    city0_key.verify_strict(&n_root, &seal).unwrap();

    // State proofs against N's state_root.
    let state = k("state_tree");
    assert_eq!(n.state_root, d.array::<32>("state_root"));
    let present_key = d.bytes("state_present_key");
    assert_eq!(present_key[0], 3, "StateKey::Revocation");
    let present_hash = keyed(&state, &[present_key]);
    assert_eq!(present_hash, d.array::<32>("state_present_key_hash"));
    let value = d.bytes("state_present_value");
    assert_eq!(keyed(&state, &[value]), d.array::<32>("state_present_value_hash"));
    let root = jmt_root(&state, &present_hash, Some(value), d.bytes("state_present_proof"));
    assert_eq!(root, n.state_root);
    let absent_hash = keyed(&state, &[d.bytes("state_absent_key")]);
    assert_eq!(absent_hash, d.array::<32>("state_absent_key_hash"));
    assert_eq!(jmt_root(&state, &absent_hash, None, d.bytes("state_absent_proof")), n.state_root);

    // History: N's hash is leaf N.height of the tree of size M.height under M's history_root.
    let history = k("history_tree");
    let m_bytes = d.bytes("crosslinked_header");
    let m = read_shard_header(m_bytes);
    assert_eq!((m.city, m.height), (0, 3));
    let n_leaf = keyed(&history, &[&[0x00], &n_hash]);
    assert_eq!(n_leaf, d.array::<32>("history_leaf1"));
    assert_eq!(
        rfc9162_root(&history, n.height, m.height, n_leaf, &d.list("history_path")),
        m.history_root
    );
    assert_eq!(keyed(&history, &[]), d.array::<32>("history_empty_root"));
    let m_hash = keyed(&k("shard_header"), &[m_bytes]);
    assert_eq!(m_hash, d.array::<32>("crosslinked_header_hash"));
    let seal = ed25519_dalek::Signature::from_bytes(&d.array("crosslinked_header_signature"));
    city0_key.verify_strict(&signing_root(1, &m_hash), &seal).unwrap();

    // Crosslinks: leaf 0 is (city 0, M's hash); the path leads to the beacon header's root.
    let crosslinks = k("crosslinks_tree");
    let crosslink0 = [&0u32.to_le_bytes()[..], &m_hash].concat();
    assert_eq!(crosslink0, d.bytes("crosslink0"));
    let cleaf0 = keyed(&crosslinks, &[&[0x00], &crosslink0]);
    assert_eq!(cleaf0, d.array::<32>("crosslink0_leaf"));
    let beacon = d.bytes("beacon_header");
    let mut r = Borsh::new(beacon);
    assert_eq!(r.u8(), 1, "version");
    assert_eq!(r.u64(), 1, "height");
    let _time_ms = r.u64();
    assert_eq!(r.h32(), [0; 32], "previous of height 1");
    let _body_hash = r.h32();
    let crosslinks_root = r.h32();
    let crosslinks_count = r.u64();
    assert_eq!(r.h32(), d.array::<32>("validator_set_hash"), "validator_set_hash");
    assert_eq!(r.h32(), d.array::<32>("validator_set_hash"), "next_validator_set_hash");
    r.end();
    assert_eq!(crosslinks_root, d.array::<32>("crosslinks_root"));
    assert_eq!(
        rfc9162_root(&crosslinks, 0, crosslinks_count, cleaf0, &d.list("crosslink_path")),
        crosslinks_root
    );

    // The beacon header's hash and signing root; the certificate's borsh form.
    let beacon_hash = keyed(&k("beacon_header"), &[beacon]);
    assert_eq!(beacon_hash, d.array::<32>("beacon_header_hash"));
    assert_eq!(signing_root(2, &beacon_hash), d.array::<32>("beacon_header_signing_root"));
    let certificate =
        [d.bytes("certificate_signature"), &1u32.to_le_bytes(), d.bytes("certificate_signers")]
            .concat();
    assert_eq!(certificate, d.bytes("commit_certificate"));

    // Outbound batch: its tree, its value and its key, from the record ids alone.
    let batch = k("outbound_batch");
    let ids: Vec<[u8; 32]> =
        (0..3).map(|i| d.array::<32>(&format!("batch_record_id{i}"))).collect();
    let bl: Vec<[u8; 32]> = ids.iter().map(|id| keyed(&batch, &[&[0x00], id])).collect();
    for (i, l) in bl.iter().enumerate() {
        assert_eq!(*l, d.array::<32>(&format!("batch_leaf{i}")));
    }
    let bnode01 = keyed(&batch, &[&[0x01], &bl[0], &bl[1]]);
    assert_eq!(bnode01, d.array::<32>("batch_node01"));
    let broot = keyed(&batch, &[&[0x01], &bnode01, &bl[2]]);
    assert_eq!(broot, d.array::<32>("batch_root"));
    assert_eq!(rfc9162_root(&batch, 1, 3, bl[1], &d.list("batch_path")), broot);
    let value = [
        &1u64.to_le_bytes()[..],
        &5u64.to_le_bytes(),
        &3u64.to_le_bytes(),
        &42u64.to_le_bytes(),
        &broot,
    ]
    .concat();
    assert_eq!(value, d.bytes("batch"));
    let key = [&[4u8][..], &0u32.to_le_bytes(), &1u32.to_le_bytes()].concat();
    assert_eq!(key, d.bytes("batch_key"));
    assert_eq!(keyed(&k("state_tree"), &[&key]), d.array::<32>("batch_key_hash"));

    // Subject id and payload commitment.
    let raw = String::from_utf8(d.bytes("subject_identifier").to_vec()).unwrap();
    let normalised: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '/'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    assert_eq!(normalised.as_bytes(), d.bytes("subject_normalised"));
    let subject = keyed(&d.array("subject_key"), &[b"national:DE", &[0x00], normalised.as_bytes()]);
    assert_eq!(subject, d.array::<32>("subject_id"));
    let commitment =
        keyed(&k("payload_commitment"), &[d.bytes("payload_salt"), d.bytes("payload")]);
    assert_eq!(commitment, d.array::<32>("payload_commitment"));
}
