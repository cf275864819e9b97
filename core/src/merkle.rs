//! RFC 9162 Merkle trees with the hash and the domain as parameters.
//!
//! Shape (RFC 9162 §2.1.1): leaf `H(0x00 || data)`, node `H(0x01 || left || right)`, split at the
//! largest power of two smaller than the size, no duplicated last leaf. Urbis instantiates `H`
//! as keyed BLAKE3 with one key per tree ([`Domain::RecordsTree`], [`Domain::HistoryTree`],
//! [`Domain::CrosslinksTree`]) so a node of one tree is never a node of another; [`Sha256`]
//! is the plain RFC 6962 instance used to check the published vectors.

use crate::hash::{Domain, Hash32};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// Longest inclusion or consistency path any tree of at most 2^64-1 leaves can need.
pub const PATH_LEN_MAX: usize = 64;

/// The hash function of one tree.
pub trait TreeHasher {
    /// `H(0x00 || data)`.
    fn leaf(&self, data: &[u8]) -> Hash32;
    /// `H(0x01 || left || right)`.
    fn node(&self, left: &Hash32, right: &Hash32) -> Hash32;
    /// `H("")`, the root of the empty tree.
    fn empty(&self) -> Hash32;
}

/// Keyed BLAKE3, one key per tree.
#[derive(Clone, Copy, Debug)]
pub struct Blake3Tree {
    key: [u8; 32],
}

impl Blake3Tree {
    /// The hasher of the tree named by `domain`.
    pub fn new(domain: Domain) -> Self {
        Blake3Tree { key: *domain.key() }
    }
    /// The records tree of a shard block.
    pub fn records() -> Self {
        Self::new(Domain::RecordsTree)
    }
    /// The history tree of a shard (all earlier header hashes).
    pub fn history() -> Self {
        Self::new(Domain::HistoryTree)
    }
    /// The crosslinks tree of a beacon block.
    pub fn crosslinks() -> Self {
        Self::new(Domain::CrosslinksTree)
    }
    /// The tree over the record ids of the packets one block sends on one channel.
    pub fn outbound_batch() -> Self {
        Self::new(Domain::OutboundBatch)
    }
}

impl TreeHasher for Blake3Tree {
    fn leaf(&self, data: &[u8]) -> Hash32 {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&[0x00]);
        h.update(data);
        Hash32(*h.finalize().as_bytes())
    }
    fn node(&self, left: &Hash32, right: &Hash32) -> Hash32 {
        let mut buf = [0u8; 65];
        buf[0] = 0x01;
        buf[1..33].copy_from_slice(&left.0);
        buf[33..].copy_from_slice(&right.0);
        Hash32(*blake3::keyed_hash(&self.key, &buf).as_bytes())
    }
    fn empty(&self) -> Hash32 {
        Hash32(*blake3::keyed_hash(&self.key, b"").as_bytes())
    }
}

/// SHA-256 with no domain key: exactly RFC 6962.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sha256;

impl TreeHasher for Sha256 {
    fn leaf(&self, data: &[u8]) -> Hash32 {
        let mut h = sha2::Sha256::new();
        h.update([0x00]);
        h.update(data);
        Hash32(h.finalize().into())
    }
    fn node(&self, left: &Hash32, right: &Hash32) -> Hash32 {
        let mut h = sha2::Sha256::new();
        h.update([0x01]);
        h.update(left.0);
        h.update(right.0);
        Hash32(h.finalize().into())
    }
    fn empty(&self) -> Hash32 {
        Hash32(sha2::Sha256::digest(b"").into())
    }
}

/// Why a Merkle proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Claimed leaf index.
        index: u64,
        /// Claimed tree size.
        size: u64,
    },
    /// A consistency proof from a larger tree to a smaller one.
    #[error("consistency from size {size1} to the smaller size {size2}")]
    SizeOrder {
        /// Older tree size.
        size1: u64,
        /// Newer tree size.
        size2: u64,
    },
    /// The path does not have the one length that (index, size) or (size1, size2) fixes.
    #[error("proof has {actual} hashes where exactly {expected} are needed")]
    WrongPathLength {
        /// Length fixed by the parameters.
        expected: usize,
        /// Length supplied.
        actual: usize,
    },
    /// The recomputed root is not the trusted root.
    #[error("recomputed root does not match the trusted root")]
    RootMismatch,
}

/// The root of the tree over the already-hashed leaves `leaf_hashes`.
pub fn root_from_leaf_hashes<H: TreeHasher>(hasher: &H, leaf_hashes: &[Hash32]) -> Hash32 {
    match leaf_hashes.len() {
        0 => hasher.empty(),
        1 => leaf_hashes[0],
        n => {
            let k = split(n as u64) as usize;
            let left = root_from_leaf_hashes(hasher, &leaf_hashes[..k]);
            let right = root_from_leaf_hashes(hasher, &leaf_hashes[k..]);
            hasher.node(&left, &right)
        }
    }
}

/// The root of the tree over `leaves` (raw leaf data).
pub fn root<H: TreeHasher, L: AsRef<[u8]>>(hasher: &H, leaves: &[L]) -> Hash32 {
    let hashes: Vec<Hash32> = leaves.iter().map(|l| hasher.leaf(l.as_ref())).collect();
    root_from_leaf_hashes(hasher, &hashes)
}

/// An inclusion proof (RFC 9162 §2.1.3): the audit path of leaf `leaf_index` in a tree of
/// `tree_size` leaves, siblings ordered from the leaf up.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct InclusionProof {
    /// Index of the leaf, from 0.
    pub leaf_index: u64,
    /// Number of leaves in the tree.
    pub tree_size: u64,
    /// Sibling hashes from the leaf to the root.
    pub path: Vec<Hash32>,
}

impl InclusionProof {
    /// Builds the proof for leaf `index` from all leaf hashes of the tree.
    pub fn build<H: TreeHasher>(
        hasher: &H,
        leaf_hashes: &[Hash32],
        index: u64,
    ) -> Result<Self, MerkleError> {
        let size = leaf_hashes.len() as u64;
        if index >= size {
            return Err(MerkleError::IndexOutOfRange { index, size });
        }
        let mut path = Vec::new();
        inclusion_path(hasher, leaf_hashes, index as usize, &mut path);
        Ok(InclusionProof { leaf_index: index, tree_size: size, path })
    }

    /// Checks that `leaf_hash` is leaf `leaf_index` of the tree of `tree_size` leaves whose root
    /// is `root` (RFC 9162 §2.1.3.2).
    pub fn verify<H: TreeHasher>(
        &self,
        hasher: &H,
        leaf_hash: &Hash32,
        root: &Hash32,
    ) -> Result<(), MerkleError> {
        let computed = self.root_from_leaf(hasher, leaf_hash)?;
        if &computed == root { Ok(()) } else { Err(MerkleError::RootMismatch) }
    }

    /// Recomputes the root from the leaf hash and the path, after checking the parameters.
    pub fn root_from_leaf<H: TreeHasher>(
        &self,
        hasher: &H,
        leaf_hash: &Hash32,
    ) -> Result<Hash32, MerkleError> {
        let (index, size) = (self.leaf_index, self.tree_size);
        if index >= size {
            return Err(MerkleError::IndexOutOfRange { index, size });
        }
        let expected = inclusion_path_len(index, size);
        if self.path.len() != expected {
            return Err(MerkleError::WrongPathLength { expected, actual: self.path.len() });
        }
        let mut fn_ = index;
        let mut sn = size - 1;
        let mut r = *leaf_hash;
        for p in &self.path {
            if fn_ & 1 == 1 || fn_ == sn {
                r = hasher.node(p, &r);
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            } else {
                r = hasher.node(&r, p);
            }
            fn_ >>= 1;
            sn >>= 1;
        }
        // The length check above makes this hold; it is the RFC's own final condition.
        debug_assert_eq!(sn, 0);
        Ok(r)
    }
}

/// The number of path hashes RFC 9162 §2.1.3.2 consumes for leaf `index` of `size` leaves.
pub fn inclusion_path_len(index: u64, size: u64) -> usize {
    if index >= size {
        return 0;
    }
    let (mut fn_, mut sn, mut n) = (index, size - 1, 0usize);
    while sn != 0 {
        if fn_ & 1 == 1 || fn_ == sn {
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        }
        fn_ >>= 1;
        sn >>= 1;
        n += 1;
    }
    n
}

/// A consistency proof (RFC 9162 §2.1.4): the tree of `size1` leaves is a prefix of the tree of
/// `size2` leaves.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// Size of the older tree.
    pub size1: u64,
    /// Size of the newer tree.
    pub size2: u64,
    /// The proof hashes.
    pub path: Vec<Hash32>,
}

impl ConsistencyProof {
    /// Builds the proof from all leaf hashes of the newer tree.
    pub fn build<H: TreeHasher>(
        hasher: &H,
        leaf_hashes: &[Hash32],
        size1: u64,
    ) -> Result<Self, MerkleError> {
        let size2 = leaf_hashes.len() as u64;
        if size1 > size2 {
            return Err(MerkleError::SizeOrder { size1, size2 });
        }
        let mut path = Vec::new();
        if size1 != 0 && size1 != size2 {
            subproof(hasher, size1 as usize, leaf_hashes, true, &mut path);
        }
        Ok(ConsistencyProof { size1, size2, path })
    }

    /// Checks that `root1` (size1 leaves) and `root2` (size2 leaves) are roots of one
    /// append-only log (RFC 9162 §2.1.4.2). A consistency from the empty tree needs an empty
    /// path.
    pub fn verify<H: TreeHasher>(
        &self,
        hasher: &H,
        root1: &Hash32,
        root2: &Hash32,
    ) -> Result<(), MerkleError> {
        let (size1, size2) = (self.size1, self.size2);
        if size1 > size2 {
            return Err(MerkleError::SizeOrder { size1, size2 });
        }
        if size1 == 0 || size1 == size2 {
            if !self.path.is_empty() {
                return Err(MerkleError::WrongPathLength { expected: 0, actual: self.path.len() });
            }
            if size1 == 0 {
                // Every tree extends the empty tree; only the empty roots themselves are checked.
                let empty = hasher.empty();
                let ok = root1 == &empty && (size2 != 0 || root2 == &empty);
                return if ok { Ok(()) } else { Err(MerkleError::RootMismatch) };
            }
            return if root1 == root2 { Ok(()) } else { Err(MerkleError::RootMismatch) };
        }
        let expected = consistency_path_len(size1, size2);
        if self.path.len() != expected {
            return Err(MerkleError::WrongPathLength { expected, actual: self.path.len() });
        }
        let mut path: Vec<Hash32> = Vec::with_capacity(self.path.len() + 1);
        if size1.is_power_of_two() {
            path.push(*root1);
        }
        path.extend_from_slice(&self.path);
        let mut fn_ = size1 - 1;
        let mut sn = size2 - 1;
        while fn_ & 1 == 1 {
            fn_ >>= 1;
            sn >>= 1;
        }
        let mut fr = path[0];
        let mut sr = path[0];
        for c in &path[1..] {
            if sn == 0 {
                return Err(MerkleError::WrongPathLength { expected, actual: self.path.len() });
            }
            if fn_ & 1 == 1 || fn_ == sn {
                fr = hasher.node(c, &fr);
                sr = hasher.node(c, &sr);
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            } else {
                sr = hasher.node(&sr, c);
            }
            fn_ >>= 1;
            sn >>= 1;
        }
        if sn != 0 {
            return Err(MerkleError::WrongPathLength { expected, actual: self.path.len() });
        }
        if &fr == root1 && &sr == root2 { Ok(()) } else { Err(MerkleError::RootMismatch) }
    }
}

/// The number of proof hashes a consistency proof from `size1` to `size2` carries
/// (0 < size1 < size2).
pub fn consistency_path_len(size1: u64, size2: u64) -> usize {
    if size1 == 0 || size1 >= size2 {
        return 0;
    }
    let mut fn_ = size1 - 1;
    let mut sn = size2 - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // One hash is consumed per level while `sn` is not zero; the first one is the old root
    // itself when size1 is a power of two.
    let mut n = 0usize;
    while sn != 0 {
        if fn_ & 1 == 1 || fn_ == sn {
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        }
        fn_ >>= 1;
        sn >>= 1;
        n += 1;
    }
    if size1.is_power_of_two() { n } else { n + 1 }
}

/// The right edge of an append-only RFC 9162 tree: the roots of its perfect subtrees, largest
/// first. Appending and computing the root cost O(log n) without keeping the leaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    /// (subtree size, subtree root), sizes strictly decreasing powers of two.
    peaks: Vec<(u64, Hash32)>,
    size: u64,
}

impl Frontier {
    /// The frontier of a tree over `leaf_hashes`.
    pub fn from_leaf_hashes<H: TreeHasher>(hasher: &H, leaf_hashes: &[Hash32]) -> Self {
        let mut f = Frontier::default();
        for l in leaf_hashes {
            f.push(hasher, *l);
        }
        f
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf hash.
    pub fn push<H: TreeHasher>(&mut self, hasher: &H, leaf_hash: Hash32) {
        self.push_completed(hasher, leaf_hash);
    }

    /// Appends one leaf hash and returns the perfect aligned subtrees it completes, as
    /// `(level, index, root)` (see [`subtree_root`]): the leaf itself at level 0, then one per
    /// merge. Keeping these is enough to build any later proof without the leaves.
    pub fn push_completed<H: TreeHasher>(
        &mut self,
        hasher: &H,
        leaf_hash: Hash32,
    ) -> Vec<(u32, u64, Hash32)> {
        let position = self.size;
        let mut completed = vec![(0, position, leaf_hash)];
        let mut node = (1u64, leaf_hash);
        while let Some(&(size, root)) = self.peaks.last() {
            if size != node.0 {
                break;
            }
            self.peaks.pop();
            node = (size * 2, hasher.node(&root, &node.1));
            let level = node.0.trailing_zeros();
            completed.push((level, position >> level, node.1));
        }
        self.peaks.push(node);
        self.size += 1;
        completed
    }

    /// The frontier of a tree of `size` leaves from the roots of its perfect aligned subtrees.
    pub fn from_subtrees<E>(
        size: u64,
        perfect: &mut impl FnMut(u32, u64) -> Result<Hash32, E>,
    ) -> Result<Self, E> {
        let mut peaks = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            let width = 1u64 << level;
            if size & width != 0 {
                peaks.push((width, perfect(level, start >> level)?));
                start += width;
            }
        }
        Ok(Frontier { peaks, size })
    }

    /// The root of the tree (RFC 9162: perfect subtrees folded from the right).
    pub fn root<H: TreeHasher>(&self, hasher: &H) -> Hash32 {
        let mut iter = self.peaks.iter().rev();
        match iter.next() {
            None => hasher.empty(),
            Some(&(_, last)) => iter.fold(last, |acc, (_, peak)| hasher.node(peak, &acc)),
        }
    }
}

/// The largest power of two strictly smaller than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Why a proof could not be built from stored subtree roots.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubtreeError<E> {
    /// The parameters do not describe a proof.
    #[error(transparent)]
    Merkle(MerkleError),
    /// The source of subtree roots failed.
    #[error("subtree roots: {0}")]
    Source(E),
}

/// The root of leaves `[lo, lo + n)` (n ≥ 1) of an RFC 9162 tree, from the roots of its
/// perfect aligned subtrees: `perfect(level, index)` is the root of the `2^level` leaves from
/// `index << level`. Every left subtree of an RFC 9162 tree is perfect and aligned, so this
/// reads at most two roots per level.
pub fn subtree_root<H: TreeHasher, E>(
    hasher: &H,
    perfect: &mut impl FnMut(u32, u64) -> Result<Hash32, E>,
    lo: u64,
    n: u64,
) -> Result<Hash32, E> {
    if n.is_power_of_two() {
        return perfect(n.trailing_zeros(), lo >> n.trailing_zeros());
    }
    let k = split(n);
    let left = perfect(k.trailing_zeros(), lo >> k.trailing_zeros())?;
    let right = subtree_root(hasher, perfect, lo + k, n - k)?;
    Ok(hasher.node(&left, &right))
}

/// The roots of every perfect aligned subtree of a tree, level by level (level 0: the leaf
/// hashes): built once in O(n), it answers any leaf's inclusion proof in O(log² n) without
/// hashing (what a page of many proofs into one block needs).
#[derive(Clone, Debug)]
pub struct PerfectSubtrees {
    levels: Vec<Vec<Hash32>>,
}

impl PerfectSubtrees {
    /// From all leaf hashes of the tree.
    pub fn from_leaf_hashes<H: TreeHasher>(hasher: &H, leaf_hashes: &[Hash32]) -> Self {
        let mut levels = vec![leaf_hashes.to_vec()];
        while let Some(last) = levels.last()
            && last.len() >= 2
        {
            let next = last.chunks_exact(2).map(|p| hasher.node(&p[0], &p[1])).collect();
            levels.push(next);
        }
        PerfectSubtrees { levels }
    }

    /// Leaves of the tree.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The inclusion proof of leaf `index`; the same as [`InclusionProof::build`] from the
    /// leaf hashes.
    pub fn inclusion<H: TreeHasher>(
        &self,
        hasher: &H,
        index: u64,
    ) -> Result<InclusionProof, MerkleError> {
        let mut perfect = |level: u32, i: u64| {
            self.levels
                .get(level as usize)
                .and_then(|l| l.get(usize::try_from(i).ok()?))
                .copied()
                .ok_or(MerkleError::IndexOutOfRange { index: i, size: self.size() })
        };
        InclusionProof::build_from_subtrees(hasher, &mut perfect, self.size(), index).map_err(|e| {
            match e {
                SubtreeError::Merkle(e) | SubtreeError::Source(e) => e,
            }
        })
    }
}

impl InclusionProof {
    /// Builds the proof for leaf `index` of the tree of `size` leaves from the roots of its
    /// perfect aligned subtrees (see [`subtree_root`]): O(log² n) reads, no leaves needed.
    pub fn build_from_subtrees<H: TreeHasher, E>(
        hasher: &H,
        perfect: &mut impl FnMut(u32, u64) -> Result<Hash32, E>,
        size: u64,
        index: u64,
    ) -> Result<Self, SubtreeError<E>> {
        if index >= size {
            return Err(SubtreeError::Merkle(MerkleError::IndexOutOfRange { index, size }));
        }
        let mut path = Vec::new();
        let (mut lo, mut n, mut m) = (0u64, size, index);
        // PATH(m, D[lo, lo+n)), iteratively from the root; the siblings come out root first.
        while n > 1 {
            let k = split(n);
            if m < k {
                path.push(
                    subtree_root(hasher, perfect, lo + k, n - k).map_err(SubtreeError::Source)?,
                );
                n = k;
            } else {
                path.push(subtree_root(hasher, perfect, lo, k).map_err(SubtreeError::Source)?);
                lo += k;
                n -= k;
                m -= k;
            }
        }
        path.reverse();
        Ok(InclusionProof { leaf_index: index, tree_size: size, path })
    }
}

impl ConsistencyProof {
    /// Builds the proof between sizes `size1 ≤ size2` from the roots of the newer tree's
    /// perfect aligned subtrees (see [`subtree_root`]).
    pub fn build_from_subtrees<H: TreeHasher, E>(
        hasher: &H,
        perfect: &mut impl FnMut(u32, u64) -> Result<Hash32, E>,
        size1: u64,
        size2: u64,
    ) -> Result<Self, SubtreeError<E>> {
        if size1 > size2 {
            return Err(SubtreeError::Merkle(MerkleError::SizeOrder { size1, size2 }));
        }
        let mut path = Vec::new();
        if size1 != 0 && size1 != size2 {
            // SUBPROOF(m, D[lo, lo+n), complete), iteratively; hashes come out root first.
            let (mut lo, mut n, mut m, mut complete) = (0u64, size2, size1, true);
            loop {
                if m == n {
                    if !complete {
                        path.push(
                            subtree_root(hasher, perfect, lo, n).map_err(SubtreeError::Source)?,
                        );
                    }
                    break;
                }
                let k = split(n);
                if m <= k {
                    path.push(
                        subtree_root(hasher, perfect, lo + k, n - k)
                            .map_err(SubtreeError::Source)?,
                    );
                    n = k;
                } else {
                    path.push(subtree_root(hasher, perfect, lo, k).map_err(SubtreeError::Source)?);
                    lo += k;
                    n -= k;
                    m -= k;
                    complete = false;
                }
            }
            path.reverse();
        }
        Ok(ConsistencyProof { size1, size2, path })
    }
}

fn inclusion_path<H: TreeHasher>(hasher: &H, leaves: &[Hash32], m: usize, out: &mut Vec<Hash32>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n as u64) as usize;
    if m < k {
        inclusion_path(hasher, &leaves[..k], m, out);
        out.push(root_from_leaf_hashes(hasher, &leaves[k..]));
    } else {
        inclusion_path(hasher, &leaves[k..], m - k, out);
        out.push(root_from_leaf_hashes(hasher, &leaves[..k]));
    }
}

fn subproof<H: TreeHasher>(
    hasher: &H,
    m: usize,
    leaves: &[Hash32],
    complete: bool,
    out: &mut Vec<Hash32>,
) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root_from_leaf_hashes(hasher, leaves));
        }
        return;
    }
    let k = split(n as u64) as usize;
    if m <= k {
        subproof(hasher, m, &leaves[..k], complete, out);
        out.push(root_from_leaf_hashes(hasher, &leaves[k..]));
    } else {
        subproof(hasher, m - k, &leaves[k..], false, out);
        out.push(root_from_leaf_hashes(hasher, &leaves[..k]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_subtrees_give_the_proofs_the_leaves_give() {
        let tree = Blake3Tree::records();
        for size in 1u64..=70 {
            let leaves: Vec<Hash32> = (0..size).map(|i| tree.leaf(&i.to_le_bytes())).collect();
            let subtrees = PerfectSubtrees::from_leaf_hashes(&tree, &leaves);
            assert_eq!(subtrees.size(), size);
            for index in 0..size {
                let expected = InclusionProof::build(&tree, &leaves, index).unwrap();
                let got = subtrees.inclusion(&tree, index).unwrap();
                assert_eq!(got, expected, "size {size} index {index}");
                assert!(
                    got.verify(
                        &tree,
                        &leaves[index as usize],
                        &root_from_leaf_hashes(&tree, &leaves)
                    )
                    .is_ok()
                );
            }
            assert!(subtrees.inclusion(&tree, size).is_err());
        }
    }

    fn leaves(n: usize) -> Vec<Hash32> {
        let h = Blake3Tree::records();
        (0..n).map(|i| h.leaf(&(i as u64).to_le_bytes())).collect()
    }

    /// Proofs built from the perfect subtrees an appending frontier reports are the proofs built
    /// from all leaves, for every size, index and older size up to 70 leaves.
    #[test]
    fn proofs_from_stored_subtrees_equal_proofs_from_leaves() {
        let h = Blake3Tree::history();
        let all = leaves(70);
        let mut stored = std::collections::HashMap::new();
        let mut frontier = Frontier::default();
        for (n, leaf) in all.iter().enumerate() {
            for (level, index, root) in frontier.push_completed(&h, *leaf) {
                let width = 1usize << level;
                let start = index as usize * width;
                assert_eq!(root, root_from_leaf_hashes(&h, &all[start..start + width]));
                assert!(stored.insert((level, index), root).is_none(), "completed once");
            }
            let size = n as u64 + 1;
            let mut perfect =
                |level: u32, index: u64| stored.get(&(level, index)).copied().ok_or((level, index));
            let l = &all[..=n];
            assert_eq!(Frontier::from_subtrees(size, &mut perfect).unwrap(), frontier);
            for i in 0..size {
                assert_eq!(
                    InclusionProof::build_from_subtrees(&h, &mut perfect, size, i).unwrap(),
                    InclusionProof::build(&h, l, i).unwrap()
                );
            }
            for size1 in 0..=size {
                assert_eq!(
                    ConsistencyProof::build_from_subtrees(&h, &mut perfect, size1, size).unwrap(),
                    ConsistencyProof::build(&h, l, size1).unwrap()
                );
            }
            assert!(InclusionProof::build_from_subtrees(&h, &mut perfect, size, size).is_err());
            assert!(
                ConsistencyProof::build_from_subtrees(&h, &mut perfect, size + 1, size).is_err()
            );
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_has_the_predicted_length() {
        let h = Blake3Tree::records();
        for n in 1..40 {
            let l = leaves(n);
            let r = root_from_leaf_hashes(&h, &l);
            for i in 0..n {
                let p = InclusionProof::build(&h, &l, i as u64).unwrap();
                assert_eq!(p.path.len(), inclusion_path_len(i as u64, n as u64));
                p.verify(&h, &l[i], &r).unwrap();
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_has_the_predicted_length() {
        let h = Blake3Tree::history();
        for n in 1..34 {
            let l = leaves(n);
            let r2 = root_from_leaf_hashes(&h, &l);
            for m in 0..=n {
                let r1 = root_from_leaf_hashes(&h, &l[..m]);
                let p = ConsistencyProof::build(&h, &l, m as u64).unwrap();
                if m != 0 && m != n {
                    assert_eq!(p.path.len(), consistency_path_len(m as u64, n as u64), "{m}->{n}");
                }
                p.verify(&h, &r1, &r2).unwrap();
            }
        }
    }

    #[test]
    fn frontier_root_matches_the_full_tree_at_every_size() {
        let h = Blake3Tree::history();
        let l = leaves(70);
        let mut f = Frontier::default();
        assert_eq!(f.root(&h), h.empty());
        for (i, leaf) in l.iter().enumerate() {
            f.push(&h, *leaf);
            assert_eq!(f.root(&h), root_from_leaf_hashes(&h, &l[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn duplicated_last_leaf_changes_the_root() {
        let h = Blake3Tree::records();
        let l = leaves(3);
        let mut dup = l.clone();
        dup.push(l[2]);
        assert_ne!(root_from_leaf_hashes(&h, &l), root_from_leaf_hashes(&h, &dup));
    }
}
