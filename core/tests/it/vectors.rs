//! Published test vectors (../shared/vectors, see its SOURCES.md) run against urbis-core.
//!
//! One test per vector file or handler. Every test counts its cases and asserts the count
//! SOURCES.md gives, so an empty or truncated folder cannot pass. Where our policy deliberately
//! differs from a file's expected output, the case is named in a divergence table with our
//! verdict and the reason, and the test checks that exactly those cases differ.

use bls12_381::G2Affine;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::io::Write;
use std::path::{Path, PathBuf};
use urbis_core::bls::{self, BlsError, PublicKey, SecretKey, Signature};
use urbis_core::hash::Hash32;
use urbis_core::merkle::{self, ConsistencyProof, InclusionProof, MerkleError, Sha256, TreeHasher};
use urbis_core::sealing::{self, Ed25519Error, SealingKey, SealingPublicKey};

// ---------------------------------------------------------------------------------------------
// Locating and reading the vectors
// ---------------------------------------------------------------------------------------------

/// `$URBIS_SHARED/vectors`, by default the `shared` folder beside the workspace. Missing: a
/// panic under CI (`CI=true`), otherwise a loud skip (`None`, the test returns early).
fn vectors_dir() -> Option<PathBuf> {
    let shared = std::env::var_os("URBIS_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::manifest_dir().join("../../shared"));
    let dir = shared.join("vectors");
    if dir.join("SOURCES.md").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "published test vectors not found at {} (set URBIS_SHARED to the folder holding \
             vectors/SOURCES.md); CI must run them",
            dir.display()
        );
    }
    // Straight to the stderr handle, not `eprintln!`, which the test harness captures.
    let _ = writeln!(
        std::io::stderr(),
        "\n**********************************************************************\n\
         SKIPPED: published test vectors not found at {} (set URBIS_SHARED)\n\
         **********************************************************************",
        dir.display()
    );
    None
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read vector file {}: {e}", path.display()))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> T {
    serde_json::from_str(&read_text(path))
        .unwrap_or_else(|e| panic!("cannot parse vector file {}: {e}", path.display()))
}

/// Hex with or without a `0x` prefix.
fn unhex(s: &str) -> Vec<u8> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(digits).unwrap_or_else(|e| panic!("bad hex {s:?} in a vector file: {e}"))
}

fn unhex_array<const N: usize>(s: &str) -> [u8; N] {
    let bytes = unhex(s);
    bytes.try_into().unwrap_or_else(|b: Vec<u8>| panic!("expected {N} bytes, got {}: {s}", b.len()))
}

fn hash32(s: &str) -> Hash32 {
    Hash32(unhex_array(s))
}

// ---------------------------------------------------------------------------------------------
// RFC 6962 / RFC 9162 Merkle trees with SHA-256
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct MerkleFile {
    leaf_inputs_hex: Vec<String>,
    leaf_hashes_hex: Vec<String>,
    roots_by_tree_size: std::collections::BTreeMap<u64, String>,
    inclusion_proofs: Vec<InclusionCase>,
    consistency_proofs: Vec<ConsistencyCase>,
}

#[derive(Deserialize)]
struct InclusionCase {
    leaf_index: u64,
    tree_size: u64,
    leaf_input_hex: String,
    root_hex: String,
    audit_path_hex: Vec<String>,
}

#[derive(Deserialize)]
struct ConsistencyCase {
    size1: u64,
    size2: u64,
    root1_hex: String,
    root2_hex: String,
    proof_hex: Vec<String>,
}

fn flip_bit(h: &Hash32, bit: usize) -> Hash32 {
    let mut out = *h;
    out.0[bit / 8] ^= 1 << (bit % 8);
    out
}

/// The proof verifies, and every corruption listed in the file's `negative_notes` is refused.
fn check_inclusion(c: &InclusionCase, leaves: &[Hash32]) {
    let hasher = Sha256;
    let what = format!("inclusion ({}, {})", c.leaf_index, c.tree_size);
    let leaf = hasher.leaf(&unhex(&c.leaf_input_hex));
    let root = hash32(&c.root_hex);
    let proof = InclusionProof {
        leaf_index: c.leaf_index,
        tree_size: c.tree_size,
        path: c.audit_path_hex.iter().map(|h| hash32(h)).collect(),
    };
    assert_eq!(proof.verify(&hasher, &leaf, &root), Ok(()), "{what}");
    // Our builder produces the published path.
    let built = InclusionProof::build(&hasher, &leaves[..c.tree_size as usize], c.leaf_index)
        .unwrap_or_else(|e| panic!("{what}: build failed: {e}"));
    assert_eq!(built, proof, "{what}: built proof");

    let with = |f: &dyn Fn(&mut InclusionProof)| {
        let mut p = proof.clone();
        f(&mut p);
        p
    };
    // Index out of range.
    for index in [c.tree_size, c.tree_size + 1, u64::MAX] {
        let p = with(&|p| p.leaf_index = index);
        assert_eq!(
            p.verify(&hasher, &leaf, &root),
            Err(MerkleError::IndexOutOfRange { index, size: c.tree_size }),
            "{what}: index {index}"
        );
    }
    // Extra element appended or prepended, an element removed.
    let n = proof.path.len();
    let extra = Hash32([0x5a; 32]);
    let wrong_length = [
        with(&|p| p.path.push(extra)),
        with(&|p| p.path.insert(0, extra)),
        with(&|p| p.path.push(leaf)),
    ];
    for p in wrong_length {
        assert_eq!(
            p.verify(&hasher, &leaf, &root),
            Err(MerkleError::WrongPathLength { expected: n, actual: n + 1 }),
            "{what}: extra element"
        );
    }
    for i in 0..n {
        let p = with(&|p| {
            p.path.remove(i);
        });
        assert_eq!(
            p.verify(&hasher, &leaf, &root),
            Err(MerkleError::WrongPathLength { expected: n, actual: n - 1 }),
            "{what}: element {i} removed"
        );
    }
    // Any single bit flip in the path, the leaf or the root.
    for bit in 0..256 {
        for i in 0..n {
            let p = with(&|p| p.path[i] = flip_bit(&p.path[i], bit));
            assert_eq!(
                p.verify(&hasher, &leaf, &root),
                Err(MerkleError::RootMismatch),
                "{what}: bit {bit} of element {i}"
            );
        }
        assert_eq!(
            proof.verify(&hasher, &flip_bit(&leaf, bit), &root),
            Err(MerkleError::RootMismatch)
        );
        assert_eq!(
            proof.verify(&hasher, &leaf, &flip_bit(&root, bit)),
            Err(MerkleError::RootMismatch)
        );
    }
    // Wrong index (+-1, ^2), doubled or halved size, wrong leaf, empty or zero root.
    let mut wrong = vec![with(&|p| p.leaf_index ^= 2), with(&|p| p.tree_size *= 2)];
    wrong.push(with(&|p| p.tree_size /= 2));
    wrong.push(with(&|p| p.leaf_index = p.leaf_index.wrapping_add(1)));
    if c.leaf_index > 0 {
        wrong.push(with(&|p| p.leaf_index -= 1));
    }
    for p in &wrong {
        assert!(p.verify(&hasher, &leaf, &root).is_err(), "{what}: corrupted {p:?} accepted");
    }
    let other_leaf = hasher.leaf(b"not a leaf of this tree");
    assert!(proof.verify(&hasher, &other_leaf, &root).is_err(), "{what}: wrong leaf");
    for bad_root in [hasher.empty(), Hash32::ZERO] {
        assert!(proof.verify(&hasher, &leaf, &bad_root).is_err(), "{what}: root {bad_root}");
    }
}

fn check_consistency(c: &ConsistencyCase, leaves: &[Hash32]) {
    let hasher = Sha256;
    let what = format!("consistency ({}, {})", c.size1, c.size2);
    let (root1, root2) = (hash32(&c.root1_hex), hash32(&c.root2_hex));
    let proof = ConsistencyProof {
        size1: c.size1,
        size2: c.size2,
        path: c.proof_hex.iter().map(|h| hash32(h)).collect(),
    };
    assert_eq!(proof.verify(&hasher, &root1, &root2), Ok(()), "{what}");
    let built = ConsistencyProof::build(&hasher, &leaves[..c.size2 as usize], c.size1)
        .unwrap_or_else(|e| panic!("{what}: build failed: {e}"));
    assert_eq!(built, proof, "{what}: built proof");

    let with = |f: &dyn Fn(&mut ConsistencyProof)| {
        let mut p = proof.clone();
        f(&mut p);
        p
    };
    // size1 > size2.
    if c.size1 != c.size2 {
        let p = with(&|p| std::mem::swap(&mut p.size1, &mut p.size2));
        assert_eq!(
            p.verify(&hasher, &root2, &root1),
            Err(MerkleError::SizeOrder { size1: c.size2, size2: c.size1 }),
            "{what}: sizes swapped"
        );
    }
    let p = with(&|p| p.size2 = p.size1 - 1);
    assert_eq!(
        p.verify(&hasher, &root1, &root2),
        Err(MerkleError::SizeOrder { size1: c.size1, size2: c.size1 - 1 }),
        "{what}: size2 below size1"
    );
    // Extra element appended or prepended, an element removed, empty proof.
    let n = proof.path.len();
    let extra = Hash32([0x5a; 32]);
    for p in [with(&|p| p.path.push(extra)), with(&|p| p.path.insert(0, extra))] {
        assert_eq!(
            p.verify(&hasher, &root1, &root2),
            Err(MerkleError::WrongPathLength { expected: n, actual: n + 1 }),
            "{what}: extra element"
        );
    }
    for i in 0..n {
        let p = with(&|p| {
            p.path.remove(i);
        });
        assert_eq!(
            p.verify(&hasher, &root1, &root2),
            Err(MerkleError::WrongPathLength { expected: n, actual: n - 1 }),
            "{what}: element {i} removed"
        );
    }
    if n > 0 {
        let p = with(&|p| p.path.clear());
        assert_eq!(
            p.verify(&hasher, &root1, &root2),
            Err(MerkleError::WrongPathLength { expected: n, actual: 0 }),
            "{what}: empty proof with size1 != size2"
        );
    }
    // Any single bit flip in the proof or either root.
    for bit in 0..256 {
        for i in 0..n {
            let p = with(&|p| p.path[i] = flip_bit(&p.path[i], bit));
            assert_eq!(
                p.verify(&hasher, &root1, &root2),
                Err(MerkleError::RootMismatch),
                "{what}: bit {bit} of element {i}"
            );
        }
        assert_eq!(
            proof.verify(&hasher, &flip_bit(&root1, bit), &root2),
            Err(MerkleError::RootMismatch)
        );
        assert_eq!(
            proof.verify(&hasher, &root1, &flip_bit(&root2, bit)),
            Err(MerkleError::RootMismatch)
        );
    }
    // Swapped roots, doubled or halved sizes.
    if root1 != root2 {
        assert!(proof.verify(&hasher, &root2, &root1).is_err(), "{what}: roots swapped");
    }
    let wrong = [with(&|p| p.size2 *= 2), with(&|p| p.size1 /= 2), with(&|p| p.size1 += 1)];
    for p in &wrong {
        assert!(p.verify(&hasher, &root1, &root2).is_err(), "{what}: corrupted {p:?} accepted");
    }
}

#[test]
fn rfc6962_sha256_merkle_vectors_verify_and_every_corruption_is_refused() {
    let Some(dir) = vectors_dir() else { return };
    let file: MerkleFile = read_json(&dir.join("rfc6962-merkle/rfc6962_sha256_vectors.json"));
    let hasher = Sha256;

    assert_eq!(file.leaf_inputs_hex.len(), 8, "leaf inputs");
    assert_eq!(file.leaf_hashes_hex.len(), file.leaf_inputs_hex.len(), "leaf hashes");
    let mut leaves = Vec::new();
    for (input, expected) in file.leaf_inputs_hex.iter().zip(&file.leaf_hashes_hex) {
        let leaf = hasher.leaf(&unhex(input));
        assert_eq!(leaf, hash32(expected), "leaf hash of {input:?}");
        leaves.push(leaf);
    }
    let inputs: Vec<Vec<u8>> = file.leaf_inputs_hex.iter().map(|h| unhex(h)).collect();

    assert_eq!(file.roots_by_tree_size.len(), 9, "roots (sizes 0-8)");
    for (&size, expected) in &file.roots_by_tree_size {
        let n = size as usize;
        assert_eq!(merkle::root(&hasher, &inputs[..n]), hash32(expected), "root of size {size}");
        assert_eq!(
            merkle::root_from_leaf_hashes(&hasher, &leaves[..n]),
            hash32(expected),
            "root of size {size} from leaf hashes"
        );
    }

    assert_eq!(file.inclusion_proofs.len(), 5, "inclusion proofs");
    for c in &file.inclusion_proofs {
        check_inclusion(c, &leaves);
    }
    assert_eq!(file.consistency_proofs.len(), 5, "consistency proofs");
    for c in &file.consistency_proofs {
        check_consistency(c, &leaves);
    }
}

// ---------------------------------------------------------------------------------------------
// BLAKE3
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Blake3File {
    key: String,
    context_string: String,
    cases: Vec<Blake3Case>,
}

#[derive(Deserialize)]
struct Blake3Case {
    input_len: usize,
    hash: String,
    keyed_hash: String,
    derive_key: String,
}

/// The extended output of `hasher` equals `expected_hex`, and its first 32 bytes are `default`.
fn check_blake3(mode: &str, len: usize, hasher: &blake3::Hasher, default: [u8; 32], hex: &str) {
    let expected = unhex(hex);
    assert!(expected.len() > 32, "{mode}, input length {len}: extended output expected");
    let mut out = vec![0u8; expected.len()];
    hasher.finalize_xof().fill(&mut out);
    assert_eq!(hex::encode(&out), hex::encode(&expected), "{mode}, input length {len}");
    assert_eq!(default, expected[..32], "{mode}, input length {len}: default-length output");
}

#[test]
fn blake3_vectors_match_hash_keyed_hash_and_derive_key_with_extended_output() {
    let Some(dir) = vectors_dir() else { return };
    let file: Blake3File = read_json(&dir.join("blake3/test_vectors.json"));
    let key: [u8; 32] = file.key.as_bytes().try_into().expect("the BLAKE3 test key is 32 bytes");
    let context = file.context_string.as_str();
    let mut count = 0;
    for c in &file.cases {
        let input: Vec<u8> = (0..c.input_len).map(|i| (i % 251) as u8).collect();
        let len = c.input_len;

        let mut h = blake3::Hasher::new();
        h.update(&input);
        check_blake3("hash", len, &h, *blake3::hash(&input).as_bytes(), &c.hash);

        let mut h = blake3::Hasher::new_keyed(&key);
        h.update(&input);
        check_blake3(
            "keyed_hash",
            len,
            &h,
            *blake3::keyed_hash(&key, &input).as_bytes(),
            &c.keyed_hash,
        );

        let mut h = blake3::Hasher::new_derive_key(context);
        h.update(&input);
        check_blake3("derive_key", len, &h, blake3::derive_key(context, &input), &c.derive_key);
        count += 1;
    }
    assert_eq!(count, 35, "BLAKE3 cases");
}

// ---------------------------------------------------------------------------------------------
// Ethereum BLS (ethereum/bls12-381-tests), ciphersuite BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_
// ---------------------------------------------------------------------------------------------

/// A case whose file output our policy deliberately does not reproduce.
struct Divergence {
    /// Case file name without `.json`.
    case: &'static str,
    /// Our verdict: `true` = accepted / produced an output.
    ours: bool,
    /// Why.
    why: &'static str,
}

/// No divergence: our verdict equals the file's on every case.
const AGREES_EVERYWHERE: &[Divergence] = &[];

/// `aggregate`: the file sums signatures as raw G2 points and so aggregates the identity.
const AGGREGATE_DIVERGENCES: &[Divergence] = &[Divergence {
    case: "aggregate_infinity_signature",
    ours: false,
    why: "Signature::from_bytes refuses the identity (BlsError::Identity), so the identity \
          signature never reaches Signature::aggregate; the file returns the identity",
}];

/// `deserialization_G1` read as public keys (`PublicKey::from_bytes` = KeyValidate).
const PUBLIC_KEY_DIVERGENCES: &[Divergence] = &[Divergence {
    case: "deserialization_succeeds_infinity_with_true_b_flag",
    ours: false,
    why: "KeyValidate refuses the identity public key (BlsError::Identity); the file only \
          tests point decoding, which bls::decode_g1 accepts",
}];

/// `deserialization_G2` read as signatures (`Signature::from_bytes`).
const SIGNATURE_DIVERGENCES: &[Divergence] = &[Divergence {
    case: "deserialization_succeeds_infinity_with_true_b_flag",
    ours: false,
    why: "Signature::from_bytes refuses the identity signature (BlsError::Identity); the file \
          only tests point decoding, which bls::decode_g2 accepts",
}];

/// DST of the RFC 9380 G2 test vectors, which the Ethereum `hash_to_G2` cases also use
/// (SOURCES.md); it is not the POP signature DST.
const RFC9380_G2_TEST_DST: &[u8] = b"QUUX-V01-CS02-with-BLS12381G2_XMD:SHA-256_SSWU_RO_";

#[derive(Deserialize)]
struct BlsCase<I, O> {
    input: I,
    output: O,
}

/// Runs `check` (our verdict) on every case of `bls/<handler>`, compares it with the file's
/// verdict (`expected`), honours `divergences` and asserts the case count. `check` may assert
/// more on its own.
fn run_bls_handler<I: DeserializeOwned, O: DeserializeOwned>(
    handler: &str,
    expected_count: usize,
    divergences: &[Divergence],
    expected: impl Fn(&O) -> bool,
    mut check: impl FnMut(&str, &I, &O) -> bool,
) {
    let Some(dir) = vectors_dir() else { return };
    let dir = dir.join("ethereum-bls12-381-tests/bls").join(handler);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut seen_divergences = Vec::new();
    for path in &files {
        let name = path.file_stem().and_then(|s| s.to_str()).expect("UTF-8 case file name");
        let case: BlsCase<I, O> = read_json(path);
        let ours = check(name, &case.input, &case.output);
        let theirs = expected(&case.output);
        match divergences.iter().find(|d| d.case == name) {
            Some(d) => {
                assert_eq!(ours, d.ours, "{handler}/{name}: our verdict changed ({})", d.why);
                assert_ne!(ours, theirs, "{handler}/{name}: listed as divergent but agrees");
                seen_divergences.push(name.to_owned());
            }
            None => assert_eq!(ours, theirs, "{handler}/{name}: our verdict differs from the file"),
        }
    }
    assert_eq!(files.len(), expected_count, "{handler}: case count");
    for d in divergences {
        assert!(seen_divergences.iter().any(|s| s == d.case), "{handler}: no case {}", d.case);
    }
}

fn is_listed(divergences: &[Divergence], case: &str) -> bool {
    divergences.iter().any(|d| d.case == case)
}

fn public_key(hex: &str) -> Result<PublicKey, BlsError> {
    PublicKey::from_slice(&unhex(hex))
}

fn signature(hex: &str) -> Result<Signature, BlsError> {
    Signature::from_slice(&unhex(hex))
}

fn public_keys(hexes: &[String]) -> Result<Vec<PublicKey>, BlsError> {
    hexes.iter().map(|h| public_key(h)).collect()
}

#[derive(Deserialize)]
struct SignInput {
    privkey: String,
    message: String,
}

#[test]
fn ethereum_bls_sign_cases() {
    run_bls_handler(
        "sign",
        10,
        AGREES_EVERYWHERE,
        |out: &Option<String>| out.is_some(),
        |name, input: &SignInput, output| {
            let Ok(sk) = SecretKey::from_bytes(&unhex_array(&input.privkey)) else {
                return false;
            };
            let message = unhex(&input.message);
            let sig = sk.sign(&message);
            if let Some(expected) = output {
                assert_eq!(sig.to_bytes().to_vec(), unhex(expected), "sign/{name}");
            }
            assert!(sk.public_key().verify(&message, &sig), "sign/{name}: own signature");
            true
        },
    );
}

#[derive(Deserialize)]
struct VerifyInput {
    pubkey: String,
    message: String,
    signature: String,
}

#[test]
fn ethereum_bls_verify_cases() {
    run_bls_handler(
        "verify",
        29,
        AGREES_EVERYWHERE,
        |out: &bool| *out,
        |_, input: &VerifyInput, _| {
            let (Ok(pk), Ok(sig)) = (public_key(&input.pubkey), signature(&input.signature)) else {
                return false;
            };
            pk.verify(&unhex(&input.message), &sig)
        },
    );
}

#[test]
fn ethereum_bls_aggregate_cases() {
    run_bls_handler(
        "aggregate",
        6,
        AGGREGATE_DIVERGENCES,
        |out: &Option<String>| out.is_some(),
        |name, input: &Vec<String>, output| {
            let sigs = match input.iter().map(|s| signature(s)).collect::<Result<Vec<_>, _>>() {
                Ok(sigs) => sigs,
                Err(e) => {
                    assert!(is_listed(AGGREGATE_DIVERGENCES, name), "aggregate/{name}: {e}");
                    assert_eq!(e, BlsError::Identity, "aggregate/{name}");
                    return false;
                }
            };
            match Signature::aggregate(&sigs) {
                Ok(agg) => {
                    if let Some(expected) = output {
                        assert_eq!(agg.to_bytes().to_vec(), unhex(expected), "aggregate/{name}");
                    }
                    true
                }
                Err(e) => {
                    assert!(input.is_empty() && e == BlsError::Empty, "aggregate/{name}: {e}");
                    false
                }
            }
        },
    );
}

#[derive(Deserialize)]
struct FastAggregateVerifyInput {
    pubkeys: Vec<String>,
    message: String,
    signature: String,
}

#[test]
fn ethereum_bls_fast_aggregate_verify_cases() {
    run_bls_handler(
        "fast_aggregate_verify",
        12,
        AGREES_EVERYWHERE,
        |out: &bool| *out,
        |_, input: &FastAggregateVerifyInput, _| {
            let (Ok(pks), Ok(sig)) = (public_keys(&input.pubkeys), signature(&input.signature))
            else {
                return false;
            };
            bls::fast_aggregate_verify(&pks, &unhex(&input.message), &sig)
        },
    );
}

#[derive(Deserialize)]
struct AggregateVerifyInput {
    pubkeys: Vec<String>,
    messages: Vec<String>,
    signature: String,
}

#[test]
fn ethereum_bls_aggregate_verify_cases() {
    run_bls_handler(
        "aggregate_verify",
        5,
        AGREES_EVERYWHERE,
        |out: &bool| *out,
        |_, input: &AggregateVerifyInput, _| {
            let (Ok(pks), Ok(sig)) = (public_keys(&input.pubkeys), signature(&input.signature))
            else {
                return false;
            };
            let messages: Vec<Vec<u8>> = input.messages.iter().map(|m| unhex(m)).collect();
            let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            bls::aggregate_verify(&pks, &messages, &sig)
        },
    );
}

#[derive(Deserialize)]
struct BatchVerifyInput {
    pubkeys: Vec<String>,
    messages: Vec<String>,
    signatures: Vec<String>,
}

#[test]
fn ethereum_bls_batch_verify_cases() {
    run_bls_handler(
        "batch_verify",
        4,
        AGREES_EVERYWHERE,
        |out: &bool| *out,
        |name, input: &BatchVerifyInput, _| {
            let Ok(pks) = public_keys(&input.pubkeys) else { return false };
            let Ok(sigs) =
                input.signatures.iter().map(|s| signature(s)).collect::<Result<Vec<_>, _>>()
            else {
                return false;
            };
            let messages: Vec<Vec<u8>> = input.messages.iter().map(|m| unhex(m)).collect();
            let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let verdict = bls::batch_verify(&pks, &messages, &sigs, &[0x42; 32]);
            // The seed only randomises the coefficients; the verdict is the same for any seed
            // and equals the conjunction of single verifications.
            assert_eq!(verdict, bls::batch_verify(&pks, &messages, &sigs, &[0x17; 32]), "{name}");
            let singles = pks.iter().zip(&messages).zip(&sigs).all(|((k, m), s)| k.verify(m, s));
            assert_eq!(verdict, singles, "batch_verify/{name}: batch and single disagree");
            verdict
        },
    );
}

#[derive(Deserialize)]
struct G1Input {
    pubkey: String,
}

#[test]
fn ethereum_bls_deserialization_g1_cases() {
    // Point decoding (identity accepted) agrees with the file on every case.
    run_bls_handler(
        "deserialization_G1",
        16,
        AGREES_EVERYWHERE,
        |out: &bool| *out,
        |_, input: &G1Input, _| {
            let bytes = unhex(&input.pubkey);
            <&[u8; 48]>::try_from(bytes.as_slice()).is_ok_and(|b| bls::decode_g1(b).is_ok())
        },
    );
    // Public-key validation differs only on the identity.
    run_bls_handler(
        "deserialization_G1",
        16,
        PUBLIC_KEY_DIVERGENCES,
        |out: &bool| *out,
        |name, input: &G1Input, _| {
            let result = public_key(&input.pubkey);
            if is_listed(PUBLIC_KEY_DIVERGENCES, name) {
                assert_eq!(result, Err(BlsError::Identity), "{name}");
            }
            result.is_ok()
        },
    );
}

#[derive(Deserialize)]
struct G2Input {
    signature: String,
}

#[test]
fn ethereum_bls_deserialization_g2_cases() {
    // Point decoding (identity accepted) agrees with the file on every case.
    run_bls_handler(
        "deserialization_G2",
        18,
        AGREES_EVERYWHERE,
        |out: &bool| *out,
        |_, input: &G2Input, _| {
            let bytes = unhex(&input.signature);
            <&[u8; 96]>::try_from(bytes.as_slice()).is_ok_and(|b| bls::decode_g2(b).is_ok())
        },
    );
    // Signature decoding differs only on the identity.
    run_bls_handler(
        "deserialization_G2",
        18,
        SIGNATURE_DIVERGENCES,
        |out: &bool| *out,
        |name, input: &G2Input, _| {
            let result = signature(&input.signature);
            if is_listed(SIGNATURE_DIVERGENCES, name) {
                assert_eq!(result, Err(BlsError::Identity), "{name}");
            }
            result.is_ok()
        },
    );
}

/// An affine G2 point as the vector files write it: `x` and `y` are Fp2 elements `"c0,c1"`.
#[derive(Deserialize)]
struct G2Point {
    x: String,
    y: String,
}

/// The two 48-byte big-endian halves `(c0, c1)` of an Fp2 element written `"0x<c0>,0x<c1>"`.
fn fp2(s: &str) -> ([u8; 48], [u8; 48]) {
    let (c0, c1) = s.split_once(',').unwrap_or_else(|| panic!("Fp2 element {s:?} is not c0,c1"));
    (unhex_array(c0.trim()), unhex_array(c1.trim()))
}

/// `hash_to_g2(msg, dst)` is the point `expected`, compared through the uncompressed encoding
/// `x.c1 || x.c0 || y.c1 || y.c0`.
fn check_hash_to_g2(what: &str, msg: &[u8], dst: &[u8], expected: &G2Point) {
    let (x0, x1) = fp2(&expected.x);
    let (y0, y1) = fp2(&expected.y);
    let want = [x1, x0, y1, y0].concat();
    let got = G2Affine::from(bls::hash_to_g2(msg, dst)).to_uncompressed();
    assert_eq!(hex::encode(got), hex::encode(want), "{what}");
}

#[derive(Deserialize)]
struct HashToG2Input {
    msg: String,
}

#[test]
fn ethereum_bls_hash_to_g2_cases() {
    run_bls_handler(
        "hash_to_G2",
        4,
        AGREES_EVERYWHERE,
        |_: &G2Point| true,
        |name, input: &HashToG2Input, output| {
            // Messages are ASCII strings, not hex.
            check_hash_to_g2(name, input.msg.as_bytes(), RFC9380_G2_TEST_DST, output);
            true
        },
    );
}

// ---------------------------------------------------------------------------------------------
// RFC 9380 hash-to-curve, suite BLS12381G2_XMD:SHA-256_SSWU_RO_
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct HashToCurveFile {
    ciphersuite: String,
    dst: String,
    vectors: Vec<HashToCurveCase>,
}

#[derive(Deserialize)]
struct HashToCurveCase {
    msg: String,
    #[serde(rename = "P")]
    p: G2Point,
}

#[test]
fn rfc9380_hash_to_g2_vectors_match() {
    let Some(dir) = vectors_dir() else { return };
    let file: HashToCurveFile =
        read_json(&dir.join("bls12-381-hash-to-curve/BLS12381G2_XMD:SHA-256_SSWU_RO_.json"));
    assert_eq!(file.ciphersuite, "BLS12381G2_XMD:SHA-256_SSWU_RO_");
    assert_eq!(
        file.dst.as_bytes(),
        RFC9380_G2_TEST_DST,
        "the Ethereum hash_to_G2 cases use this DST"
    );
    for (i, c) in file.vectors.iter().enumerate() {
        check_hash_to_g2(
            &format!("RFC 9380 G2 vector {i}"),
            c.msg.as_bytes(),
            file.dst.as_bytes(),
            &c.p,
        );
    }
    assert_eq!(file.vectors.len(), 5, "RFC 9380 G2 vectors");
}

// ---------------------------------------------------------------------------------------------
// Ed25519
// ---------------------------------------------------------------------------------------------

/// Signs with the seed and checks the public key, the signature and verification, single and
/// in a batch of one.
fn check_ed25519_sign(what: &str, seed: &[u8; 32], public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) {
    let key = SealingKey::from_seed(seed);
    assert_eq!(key.public_key().to_bytes(), *public, "{what}: public key");
    assert_eq!(hex::encode(key.sign(msg)), hex::encode(sig), "{what}: signature");
    let pk = SealingPublicKey::from_bytes(public).unwrap_or_else(|e| panic!("{what}: key: {e}"));
    assert_eq!(pk.verify(msg, sig), Ok(()), "{what}: verify");
    assert_eq!(sealing::verify_batch(&[(&pk, msg, sig)]), Ok(()), "{what}: verify_batch");
    let mut other = msg.to_vec();
    other.push(0);
    assert_eq!(pk.verify(&other, sig), Err(Ed25519Error::BadSignature), "{what}: other message");
}

#[derive(Deserialize)]
struct Rfc8032Case {
    #[serde(rename = "priv")]
    seed: String,
    #[serde(rename = "pub")]
    public: String,
    msg: String,
    sig: String,
}

#[test]
fn ed25519_rfc8032_vectors_sign_and_verify() {
    let Some(dir) = vectors_dir() else { return };
    let cases: Vec<Rfc8032Case> = read_json(&dir.join("ed25519-rfc8032/rfc8032-ed25519.json"));
    for (i, c) in cases.iter().enumerate() {
        let what = format!("RFC 8032 case {i}");
        let (seed, public, sig) =
            (unhex_array(&c.seed), unhex_array(&c.public), unhex_array(&c.sig));
        check_ed25519_sign(&what, &seed, &public, &unhex(&c.msg), &sig);
    }
    assert_eq!(cases.len(), 4, "RFC 8032 cases");
}

#[test]
fn ed25519_supercop_vectors_sign_and_verify() {
    let Some(dir) = vectors_dir() else { return };
    let path = dir.join("ed25519-supercop/vectors.txt");
    let text = read_text(&path);
    let mut keys = Vec::new();
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        // sk‖pk : pk : msg : sig‖msg :
        let fields: Vec<&str> = line.split(':').collect();
        assert_eq!(fields.len(), 5, "{}:{}: five ':'-separated fields", path.display(), n + 1);
        let sk_pk = unhex(fields[0]);
        let sig_msg = unhex(fields[3]);
        let msg = unhex(fields[2]);
        let what = format!("{} line {}", path.display(), n + 1);
        assert_eq!(sk_pk.len(), 64, "{what}");
        assert_eq!(sig_msg[64..], msg[..], "{what}: sig‖msg ends with msg");
        let seed: [u8; 32] = sk_pk[..32].try_into().expect("32-byte seed");
        let public: [u8; 32] = unhex_array(fields[1]);
        assert_eq!(sk_pk[32..], public, "{what}: sk‖pk ends with pk");
        let sig: [u8; 64] = sig_msg[..64].try_into().expect("64-byte signature");
        check_ed25519_sign(&what, &seed, &public, &msg, &sig);
        keys.push(SealingPublicKey::from_bytes(&public).expect("checked above"));
        items.push((msg, sig));
    }
    assert_eq!(items.len(), 1024, "SUPERCOP lines");
    // All 1024 in one batch, then with one message swapped for another.
    let mut batch: Vec<(&SealingPublicKey, &[u8], &[u8; 64])> =
        keys.iter().zip(&items).map(|(k, (m, s))| (k, m.as_slice(), s)).collect();
    assert_eq!(sealing::verify_batch(&batch), Ok(()), "SUPERCOP batch");
    batch[700].1 = b"not the signed message";
    assert_eq!(
        sealing::verify_batch(&batch),
        Err((700, Ed25519Error::BadSignature)),
        "SUPERCOP batch with one wrong message"
    );
}

/// Verifies (key, msg, sig) under our rule: key validation, then single verification. When the
/// key is valid, also checks that `verify_batch` agrees, alone and after a valid item.
fn verify_single_and_batch(
    what: &str,
    key: &[u8; 32],
    msg: &[u8],
    sig: &[u8; 64],
) -> Result<(), Ed25519Error> {
    let pk = SealingPublicKey::from_bytes(key)?;
    let single = pk.verify(msg, sig);
    let batch = sealing::verify_batch(&[(&pk, msg, sig)]);
    assert_eq!(batch, single.map_err(|e| (0, e)), "{what}: batch of one disagrees with single");
    let good = SealingKey::from_seed(&[7; 32]);
    let (good_pk, good_sig) = (good.public_key(), good.sign(b"fine"));
    let batch = sealing::verify_batch(&[(&good_pk, b"fine", &good_sig), (&pk, msg, sig)]);
    assert_eq!(batch, single.map_err(|e| (1, e)), "{what}: batch of two disagrees with single");
    single
}

/// A valid prime-order key (RFC 8032 TEST 1): verifying a case's signature under it exercises
/// the checks on `R` and `S` even when the case's own key is refused first.
const PRIME_ORDER_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

#[derive(Deserialize)]
struct SpeccheckCase {
    message: String,
    pub_key: String,
    signature: String,
}

/// Our verdict (`true` = accept) on each ed25519-speccheck case, and why. The rule
/// (core/src/sealing.rs): canonical `A` and `R` in the prime-order subgroup, `S < L`,
/// cofactorless equation. The orders named below were computed with an independent (Python)
/// Edwards implementation, not with dalek.
const SPECCHECK_VERDICT: [(usize, bool, &str); 12] = [
    (0, false, "S = 0 with small-order A and R: A is small-order"),
    (1, false, "A is small-order (R mixed-order)"),
    (2, false, "A is mixed-order (R small-order)"),
    (3, false, "A and R are mixed-order"),
    (4, false, "only the cofactored equation holds; A and R are mixed-order"),
    (5, false, "A is mixed-order (passes cofactorless only)"),
    (6, false, "S > L (A and R prime-order)"),
    (7, false, "S >> L (A and R prime-order)"),
    (8, false, "A is mixed-order (R non-canonical small-order)"),
    (9, false, "A is mixed-order (R non-canonical small-order)"),
    (10, false, "A is a non-canonical encoding of a small-order point"),
    (11, false, "A is a non-canonical encoding of a small-order point"),
];

/// The error of each refusal: with the case's own key, and with the case's signature under
/// [`PRIME_ORDER_KEY`] (which isolates the checks on `R` and `S`).
const SPECCHECK_REFUSAL: [(Ed25519Error, Ed25519Error); 12] = {
    use Ed25519Error::*;
    [
        (WeakKey, WeakR),               // R small-order
        (WeakKey, WeakR),               // R mixed-order
        (WeakKey, WeakR),               // R small-order
        (WeakKey, WeakR),               // R mixed-order
        (WeakKey, WeakR),               // R mixed-order
        (WeakKey, BadSignature),        // R prime-order, S < L, but another key
        (NonCanonicalS, NonCanonicalS), // S > L
        (NonCanonicalS, NonCanonicalS), // S >> L
        (WeakKey, NonCanonicalR),       // R non-canonical
        (WeakKey, NonCanonicalR),       // R non-canonical
        (NonCanonicalKey, WeakR),       // R mixed-order
        (NonCanonicalKey, WeakR),       // R mixed-order
    ]
};

#[test]
fn ed25519_speccheck_cases_match_our_verdicts() {
    let Some(dir) = vectors_dir() else { return };
    let cases: Vec<SpeccheckCase> = read_json(&dir.join("ed25519-speccheck/cases.json"));
    assert_eq!(cases.len(), SPECCHECK_VERDICT.len(), "speccheck cases");
    let prime_key: [u8; 32] = unhex_array(PRIME_ORDER_KEY);
    for (i, c) in cases.iter().enumerate() {
        let (index, accept, why) = SPECCHECK_VERDICT[i];
        assert_eq!(index, i, "table order");
        let what = format!("speccheck case {i} ({why})");
        let (key, msg, sig) =
            (unhex_array(&c.pub_key), unhex(&c.message), unhex_array(&c.signature));
        let verdict = verify_single_and_batch(&what, &key, &msg, &sig);
        assert_eq!(verdict.is_ok(), accept, "{what}: {verdict:?}");
        let (with_own_key, with_prime_key) = SPECCHECK_REFUSAL[i];
        assert_eq!(verdict, Err(with_own_key), "{what}");
        let verdict = verify_single_and_batch(&what, &prime_key, &msg, &sig);
        assert_eq!(verdict, Err(with_prime_key), "{what}: under a prime-order key");
    }
}

#[derive(Deserialize)]
struct Zip215Case {
    vk_bytes: String,
    sig_bytes: String,
    valid_legacy: bool,
    valid_zip215: bool,
}

/// The message of every zip215.json case (the ed25519-zebra generator of these vectors signs
/// `b"Zcash"`); our verdicts do not depend on it, as A and R are refused before the equation.
const ZIP215_MESSAGE: &[u8] = b"Zcash";

/// Our rule on zip215.json: every `A` and every `R` there is a small-order point, canonical or
/// not, so we refuse all 196 cases, whatever `valid_zip215` (true on all) and `valid_legacy`
/// (true on 3) say. A is refused first (WeakKey or NonCanonicalKey); under a prime-order key
/// the same signature is refused for its R (WeakR or NonCanonicalR).
#[test]
fn ed25519_zip215_cases_are_all_refused_because_a_and_r_are_small_order() {
    let Some(dir) = vectors_dir() else { return };
    let cases: Vec<Zip215Case> = read_json(&dir.join("ed25519-zip215/zip215.json"));
    let prime_key: [u8; 32] = unhex_array(PRIME_ORDER_KEY);
    let (mut weak_key, mut non_canonical_key, mut weak_r, mut non_canonical_r) = (0, 0, 0, 0);
    let (mut zip215_valid, mut legacy_valid) = (0, 0);
    for (i, c) in cases.iter().enumerate() {
        let what = format!("zip215 case {i}");
        let (key, sig) = (unhex_array(&c.vk_bytes), unhex_array(&c.sig_bytes));
        match verify_single_and_batch(&what, &key, ZIP215_MESSAGE, &sig) {
            Err(Ed25519Error::WeakKey) => weak_key += 1,
            Err(Ed25519Error::NonCanonicalKey) => non_canonical_key += 1,
            other => panic!("{what}: A must be refused as small-order, got {other:?}"),
        }
        match verify_single_and_batch(&what, &prime_key, ZIP215_MESSAGE, &sig) {
            Err(Ed25519Error::WeakR) => weak_r += 1,
            Err(Ed25519Error::NonCanonicalR) => non_canonical_r += 1,
            other => panic!("{what}: R must be refused as small-order, got {other:?}"),
        }
        zip215_valid += usize::from(c.valid_zip215);
        legacy_valid += usize::from(c.valid_legacy);
    }
    assert_eq!(cases.len(), 196, "zip215 cases");
    // 8 canonical and 6 non-canonical small-order encodings, each as A and as R (14 x 14).
    assert_eq!((weak_key, non_canonical_key), (112, 84), "A refusals (weak, non-canonical)");
    assert_eq!((weak_r, non_canonical_r), (112, 84), "R refusals (weak, non-canonical)");
    // Where the file disagrees with us: all 196 under ZIP-215, 3 under the legacy rules.
    assert_eq!((zip215_valid, legacy_valid), (196, 3), "cases the file calls valid");
}
