//! State proofs built straight from the tree's nodes, in Urbis's encoding.
//!
//! `jmt`'s own `get_with_proof` gives the same proof (a property test below checks it on
//! random trees), but builds each sibling as a typed node: for a sibling that is a single
//! child it reads that child from the store and, for an internal child, hashes both halves of
//! its 16 slots again — only for [`StateProof::from_jmt`] to hash the result once more into
//! the hash its parent already holds. Here each sibling is computed from the parent's child
//! hashes alone, so a proof reads only the nodes on its own path.

use jmt::storage::{Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, Version};
use std::collections::HashMap;
use urbis_core::encoding::{decode, encode};
use urbis_core::hash::{Domain, Hash32};
use urbis_core::state::{INTERNAL_DOMAIN_SEPARATOR, PLACEHOLDER_HASH, StateLeaf, StateProof};

/// The value of `key` in the tree at `version` (`None`: absent) and its proof against that
/// version's root.
pub fn prove(
    reader: &impl TreeReader,
    key: KeyHash,
    version: Version,
) -> anyhow::Result<(Option<OwnedValue>, StateProof)> {
    let (present, proof) = prove_presence(reader, key, version)?;
    let value = if present {
        Some(reader.get_value_option(version, key)?.ok_or_else(|| {
            anyhow::anyhow!("state value missing for a leaf at version {version}")
        })?)
    } else {
        None
    };
    Ok((value, proof))
}

/// Whether `key` is in the tree at `version`, and the proof of that, without reading its
/// value (for a caller that knows it).
pub fn prove_presence(
    reader: &impl TreeReader,
    key: KeyHash,
    version: Version,
) -> anyhow::Result<(bool, StateProof)> {
    walk(reader, key, version, None)
}

/// What the internal nodes already walked contribute to a path, for proving many keys of one
/// tree: keys that share a node read it and hash its siblings once (a block's receipts share
/// the top of their paths). A node's key names its version, so one memo serves any versions.
#[derive(Default)]
pub struct PathMemo {
    /// Per internal node, the steps through the child slots walked so far.
    steps: HashMap<NodeKey, Vec<(u8, Step)>>,
}

/// One internal node's part of a path through the child slot `nibble`: the siblings it adds
/// (top-down, one to four) and the child the path goes on to (`None`: the path ends there,
/// in an empty subtree).
#[derive(Clone, Copy)]
struct Step {
    siblings: [Hash32; 4],
    count: u8,
    next: Option<(u8, Version)>,
}

/// [`prove_presence`] with a memo of the internal nodes walked by earlier proofs.
pub fn prove_presence_with(
    reader: &impl TreeReader,
    key: KeyHash,
    version: Version,
    memo: &mut PathMemo,
) -> anyhow::Result<(bool, StateProof)> {
    walk(reader, key, version, Some(memo))
}

/// The path of `key` at `version`, through `memo` when there is one (a single proof keeps
/// none).
fn walk(
    reader: &impl TreeReader,
    key: KeyHash,
    version: Version,
    mut memo: Option<&mut PathMemo>,
) -> anyhow::Result<(bool, StateProof)> {
    let mut path: Vec<u8> = Vec::with_capacity(64);
    let mut node_key = node_key_for(version, &path)?;
    // Top-down while walking; the proof lists them bottom-up.
    let mut siblings: Vec<Hash32> = Vec::with_capacity(64);
    // A key has 64 nibbles: at most 64 internal nodes and a leaf.
    for depth in 0..=64usize {
        // The key's nibble at this depth (none past the 64th: only a leaf can be there).
        let n = key.0.get(depth / 2).map(|b| if depth % 2 == 0 { b >> 4 } else { b & 0x0f });
        let known = n.zip(memo.as_deref()).and_then(|(n, memo)| {
            memo.steps.get(&node_key).and_then(|s| s.iter().find(|(m, _)| *m == n))
        });
        let step = match known {
            Some((_, step)) => *step,
            None => {
                let node = reader.get_node_option(&node_key)?.ok_or_else(|| {
                    anyhow::anyhow!("state node missing at version {version}, depth {depth}")
                })?;
                match node {
                    Node::Null if depth == 0 => {
                        return Ok((false, StateProof { leaf: None, siblings: vec![] }));
                    }
                    Node::Null => anyhow::bail!("a null node below the root at depth {depth}"),
                    Node::Leaf(leaf) => {
                        // borsh(LeafNode) = key_hash ‖ value_hash.
                        let (key_hash, value_hash): ([u8; 32], [u8; 32]) =
                            decode(&encode(&leaf))
                                .map_err(|_| anyhow::anyhow!("state leaf does not decode"))?;
                        siblings.reverse();
                        let leaf = StateLeaf {
                            key_hash: Hash32(key_hash),
                            value_hash: Hash32(value_hash),
                        };
                        return Ok((key_hash == key.0, StateProof { leaf: Some(leaf), siblings }));
                    }
                    Node::Internal(internal) => {
                        let Some(n) = n else {
                            anyhow::bail!("ran out of nibbles at depth {depth}");
                        };
                        let mut children: [Option<(Hash32, Version)>; 16] = [None; 16];
                        for (nibble, child) in internal.children_unsorted() {
                            if let Some(slot) = children.get_mut(nibble.as_usize()) {
                                *slot = Some((Hash32(child.hash), child.version));
                            }
                        }
                        let (existence, leaves) = internal.generate_bitmaps();
                        let slots = Slots { children: &children, existence, leaves };
                        let step = slots.step(n, depth)?;
                        if let Some(memo) = memo.as_deref_mut() {
                            memo.steps.entry(node_key.clone()).or_default().push((n, step));
                        }
                        step
                    }
                }
            }
        };
        siblings.extend(step.siblings.iter().take(usize::from(step.count)));
        let Some((index, child_version)) = step.next else {
            // Nothing under the key's half: the path ends in an empty subtree.
            siblings.reverse();
            return Ok((false, StateProof { leaf: None, siblings }));
        };
        path.push(index);
        node_key = node_key_for(child_version, &path)?;
    }
    anyhow::bail!("state path longer than 64 nibbles")
}

/// An internal node's 16 child slots (hash, version) with its existence and leaf bitmaps.
struct Slots<'a> {
    children: &'a [Option<(Hash32, Version)>; 16],
    existence: u16,
    leaves: u16,
}

impl Slots<'_> {
    /// The siblings this node adds to the path through its child slot `n`, and the child
    /// the path goes on to.
    fn step(&self, n: u8, depth: usize) -> anyhow::Result<Step> {
        let mut step = Step { siblings: [PLACEHOLDER_HASH; 4], count: 0, next: None };
        for height in (0..4u8).rev() {
            let width = 1u8 << height;
            let child_half = (0xffu8 << height) & n;
            if let Some(slot) = step.siblings.get_mut(usize::from(step.count)) {
                *slot = self.hash(child_half ^ width, width);
                step.count += 1;
            }
            let (range, range_leaves) = self.range(child_half, width);
            if range == 0 {
                return Ok(step);
            }
            if only_child(width, range, range_leaves) {
                // The only child in the key's half (a leaf, or the key's own slot at the
                // lowest level) is where the path goes on.
                let index = range.trailing_zeros() as u8;
                let Some(Some((_, child_version))) = self.children.get(usize::from(index)) else {
                    anyhow::bail!("the bitmap names a child slot that is empty");
                };
                step.next = Some((index, *child_version));
                return Ok(step);
            }
        }
        anyhow::bail!("no child chosen at depth {depth}")
    }

    fn range(&self, start: u8, width: u8) -> (u16, u16) {
        let mask = (((1u32 << width) - 1) << start) as u16;
        (self.existence & mask, self.leaves & mask)
    }

    /// The hash of the binary subtree over slots `[start, start + width)`, as the tree
    /// defines it: empty → the placeholder; a single leaf (or a single slot) → that child's
    /// hash; otherwise the internal hash of both halves.
    fn hash(&self, start: u8, width: u8) -> Hash32 {
        let (range, range_leaves) = self.range(start, width);
        if range == 0 {
            return PLACEHOLDER_HASH;
        }
        if only_child(width, range, range_leaves) {
            let index = range.trailing_zeros() as usize;
            return self.children.get(index).copied().flatten().map_or(PLACEHOLDER_HASH, |c| c.0);
        }
        let half = width / 2;
        let (left, right) = (self.hash(start, half), self.hash(start + half, half));
        let mut h = Domain::StateTree.hasher();
        h.update(INTERNAL_DOMAIN_SEPARATOR);
        h.update(&left.0);
        h.update(&right.0);
        Hash32(*h.finalize().as_bytes())
    }
}

fn only_child(width: u8, range: u16, range_leaves: u16) -> bool {
    width == 1 || (range.count_ones() == 1 && range_leaves != 0)
}

/// `NodeKey{version, path}` for a path of nibbles. The key's fields are private to `jmt`;
/// it is built from its borsh form: version (u64) ‖ number of nibbles (u64) ‖ the nibbles
/// packed two per byte, high first, the last low half zero when odd (u32 length prefix).
fn node_key_for(version: Version, nibbles: &[u8]) -> anyhow::Result<NodeKey> {
    let mut packed = vec![0u8; nibbles.len().div_ceil(2)];
    for (i, n) in nibbles.iter().enumerate() {
        if let Some(b) = packed.get_mut(i / 2) {
            *b |= if i % 2 == 0 { n << 4 } else { n & 0x0f };
        }
    }
    let mut bytes = Vec::with_capacity(8 + 8 + 4 + packed.len());
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&(nibbles.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&(packed.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&packed);
    decode(&bytes).map_err(|_| anyhow::anyhow!("node key does not decode"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use jmt::storage::{LeafNode, NodeBatch, TreeWriter};
    use proptest::prelude::*;
    use std::sync::RwLock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use urbis_core::state::StateHasher;

    /// A tree store in memory.
    #[derive(Default)]
    struct Memory {
        nodes: RwLock<HashMap<NodeKey, Node>>,
        values: RwLock<HashMap<(Version, KeyHash), Option<OwnedValue>>>,
        /// Nodes read.
        reads: AtomicUsize,
    }

    impl TreeReader for Memory {
        fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Ok(self.nodes.read().unwrap().get(key).cloned())
        }
        fn get_value_option(&self, max: Version, key: KeyHash) -> anyhow::Result<Option<Vec<u8>>> {
            let values = self.values.read().unwrap();
            Ok(values
                .iter()
                .filter(|((v, k), _)| *k == key && *v <= max)
                .max_by_key(|((v, _), _)| *v)
                .and_then(|(_, value)| value.clone()))
        }
        fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
            anyhow::bail!("not needed for proofs")
        }
    }

    impl TreeWriter for Memory {
        fn write_node_batch(&self, batch: &NodeBatch) -> anyhow::Result<()> {
            self.nodes.write().unwrap().extend(batch.nodes().clone());
            self.values.write().unwrap().extend(batch.values().clone());
            Ok(())
        }
    }

    fn key(i: u16) -> KeyHash {
        KeyHash(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// On random trees (sets, overwrites and deletions over several versions), the proof
        /// of every key at every version — present, overwritten, deleted or never written — is
        /// the one `jmt` gives, converted, and it verifies against the version's root.
        #[test]
        fn proofs_match_the_tree_crates_own(
            versions in proptest::collection::vec(
                proptest::collection::vec((0u16..300, proptest::option::weighted(0.85, any::<u8>())), 1..40),
                1..6,
            ),
        ) {
            let store = Memory::default();
            let tree = jmt::JellyfishMerkleTree::<_, StateHasher>::new(&store);
            for (version, set) in versions.iter().enumerate() {
                let mut set: Vec<(KeyHash, Option<Vec<u8>>)> =
                    set.iter().map(|(k, v)| (key(*k), v.map(|b| vec![b; 3]))).collect();
                set.sort_by_key(|(k, _)| k.0);
                set.dedup_by_key(|(k, _)| k.0);
                let (_, batch) = tree.put_value_set(set, version as u64).unwrap();
                store.write_node_batch(&batch.node_batch).unwrap();
            }
            // One memo across every key and version, as an answer proving many receipts uses.
            let mut memo = PathMemo::default();
            for version in 0..versions.len() as u64 {
                let root = Hash32(tree.get_root_hash(version).unwrap().0);
                for i in 0..310u16 {
                    let (value, proof) = prove(&store, key(i), version).unwrap();
                    let (theirs, jmt_proof) = tree.get_with_proof(key(i), version).unwrap();
                    prop_assert_eq!(&value, &theirs, "value of {} at {}", i, version);
                    prop_assert_eq!(&proof, &StateProof::from_jmt(&jmt_proof).unwrap());
                    let (present, remembered) =
                        prove_presence_with(&store, key(i), version, &mut memo).unwrap();
                    prop_assert_eq!(present, value.is_some());
                    prop_assert_eq!(&remembered, &proof);
                    prop_assert!(proof
                        .verify_key_hash(&root, &Hash32(key(i).0), value.as_deref())
                        .is_ok());
                }
            }
        }
    }

    /// The empty tree's root is a null node: absence with no siblings.
    #[test]
    fn the_empty_tree_proves_absence_with_no_siblings() {
        let store = Memory::default();
        let tree = jmt::JellyfishMerkleTree::<_, StateHasher>::new(&store);
        let (_, batch) = tree.put_value_set(vec![(key(1), None)], 0).unwrap();
        store.write_node_batch(&batch.node_batch).unwrap();
        let (value, proof) = prove(&store, key(2), 0).unwrap();
        assert_eq!(value, None);
        assert_eq!(proof, StateProof { leaf: None, siblings: vec![] });
        assert!(proof.verify_key_hash(&PLACEHOLDER_HASH, &Hash32(key(2).0), None).is_ok());
    }

    /// Keys whose paths share internal nodes read each of them once through one memo: the
    /// second pass over the same keys reads only their leaves.
    #[test]
    fn a_memo_reads_each_internal_node_once() {
        let store = Memory::default();
        let tree = jmt::JellyfishMerkleTree::<_, StateHasher>::new(&store);
        let mut set: Vec<(KeyHash, Option<Vec<u8>>)> =
            (0..2000u16).map(|i| (key(i), Some(vec![1]))).collect();
        set.sort_by_key(|(k, _)| k.0);
        let (_, batch) = tree.put_value_set(set, 0).unwrap();
        store.write_node_batch(&batch.node_batch).unwrap();
        let keys: Vec<KeyHash> = (0..2000u16).step_by(7).map(key).collect();
        let alone = |store: &Memory| {
            store.reads.store(0, Ordering::Relaxed);
            for k in &keys {
                assert!(prove_presence(store, *k, 0).unwrap().0);
            }
            store.reads.load(Ordering::Relaxed)
        };
        let without = alone(&store);
        let mut memo = PathMemo::default();
        store.reads.store(0, Ordering::Relaxed);
        for k in &keys {
            assert!(prove_presence_with(&store, *k, 0, &mut memo).unwrap().0);
        }
        let first = store.reads.load(Ordering::Relaxed);
        store.reads.store(0, Ordering::Relaxed);
        for k in &keys {
            assert!(prove_presence_with(&store, *k, 0, &mut memo).unwrap().0);
        }
        let second = store.reads.load(Ordering::Relaxed);
        assert_eq!(second, keys.len(), "a second pass reads only the leaves");
        assert!(first < without, "the shared top is read once: {first} against {without}");
    }
}
