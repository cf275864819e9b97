//! Crosslink entries: a shard's header is crosslinked only when sealed by its city and
//! extending the header crosslinked before.

use crate::fixture::world;
use urbis_core::crosslink::{CrosslinkError, ShardEquivocation, verify_entry, verify_equivocation};
use urbis_core::hash::Hash32;
use urbis_core::merkle::MerkleError;
use urbis_core::record::CityId;
use urbis_core::sealing::Ed25519Error;
use urbis_core::testkit::{ShardChain, information_record};

#[test]
fn a_first_crosslink_and_each_extension_verify_and_chain_their_heads() {
    let w = world();
    let g = &w.federation.genesis;
    let first = w.shard.crosslink_entry(2, None);
    let head2 = verify_entry(g, 1, None, &first).unwrap();
    assert_eq!(head2.height, 2);
    assert_eq!(head2.hash, w.shard.headers[2].header.hash());
    for m in 3..6 {
        let next = w.shard.crosslink_entry(m, Some(2));
        let head = verify_entry(g, 2, Some(&head2), &next).unwrap();
        assert_eq!(head.height, m);
    }
    // From height 0 (the empty history) too.
    let head0 = verify_entry(g, 1, None, &w.shard.crosslink_entry(0, None)).unwrap();
    verify_entry(g, 2, Some(&head0), &w.shard.crosslink_entry(1, Some(0))).unwrap();
    verify_entry(g, 2, Some(&head0), &w.shard.crosslink_entry(5, Some(0))).unwrap();
}

#[test]
fn an_entry_must_start_from_the_crosslinked_header() {
    let w = world();
    let g = &w.federation.genesis;
    let head2 = w.shard.crosslink_entry(2, None).head();
    // No extension although the city was crosslinked before.
    let e = verify_entry(g, 2, Some(&head2), &w.shard.crosslink_entry(4, None)).unwrap_err();
    assert_eq!(e, CrosslinkError::Base { expected: Some(2), actual: None });
    // An extension from another height.
    let e = verify_entry(g, 2, Some(&head2), &w.shard.crosslink_entry(4, Some(1))).unwrap_err();
    assert_eq!(e, CrosslinkError::Base { expected: Some(2), actual: Some(1) });
    // An extension where none is expected.
    let e = verify_entry(g, 1, None, &w.shard.crosslink_entry(4, Some(1))).unwrap_err();
    assert_eq!(e, CrosslinkError::Base { expected: None, actual: Some(1) });
    // Not newer.
    for m in [1, 2] {
        let e = verify_entry(g, 2, Some(&head2), &w.shard.crosslink_entry(m, None)).unwrap_err();
        assert_eq!(e, CrosslinkError::NotNewer { height: m, crosslinked: 2 });
    }
}

#[test]
fn threat_rewritten_history_cannot_be_crosslinked() {
    // A fork of city 0 sealed with city 0's own key (a compromised or equivocating city):
    // same heights 0..2, different block 3 onwards. Its header 5 does not extend the header 3
    // the beacon crosslinked from the honest chain.
    let w = world();
    let g = &w.federation.genesis;
    let mut fork = ShardChain::new(CityId(0));
    for h in 0..6u64 {
        let n = if h < 3 { h * 10 } else { 1_000 + h };
        let records = (0..5).map(|i| information_record(CityId(0), n + i)).collect();
        fork.seal(&w.federation, records, &[]);
    }
    let honest3 = w.shard.crosslink_entry(3, None).head();
    let e = verify_entry(g, 2, Some(&honest3), &fork.crosslink_entry(5, Some(3))).unwrap_err();
    assert_eq!(e, CrosslinkError::Inclusion(MerkleError::RootMismatch));
    // A header whose history rewrites what an earlier crosslink committed to.
    let honest4 = w.shard.crosslink_entry(4, None).head();
    let e = verify_entry(g, 2, Some(&honest4), &fork.crosslink_entry(5, Some(4))).unwrap_err();
    assert_eq!(e, CrosslinkError::Consistency(MerkleError::RootMismatch));
}

#[test]
fn threat_forged_or_foreign_headers_are_not_crosslinked() {
    let w = world();
    let g = &w.federation.genesis;
    // A header altered after sealing.
    let mut entry = w.shard.crosslink_entry(2, None);
    entry.header.header.state_root = Hash32([9; 32]);
    let e = verify_entry(g, 1, None, &entry).unwrap_err();
    assert_eq!(e, CrosslinkError::Seal(Ed25519Error::BadSignature));
    // City 0's header relabelled as city 1's: city 1's key did not seal it.
    let mut entry = w.shard.crosslink_entry(2, None);
    entry.header.header.city = CityId(1);
    let e = verify_entry(g, 1, None, &entry).unwrap_err();
    assert_eq!(e, CrosslinkError::Seal(Ed25519Error::BadSignature));
    // A city that is not in genesis.
    let mut entry = w.shard.crosslink_entry(2, None);
    entry.header.header.city = CityId(7);
    let e = verify_entry(g, 1, None, &entry).unwrap_err();
    assert_eq!(e, CrosslinkError::UnknownCity(CityId(7)));
}

#[test]
fn two_sealed_headers_at_one_height_are_evidence_and_nothing_else_is() {
    let w = world();
    let g = &w.federation.genesis;
    let mut fork = ShardChain::new(CityId(0));
    for h in 0..3u64 {
        let records = (0..5).map(|i| information_record(CityId(0), 5_000 + h * 10 + i)).collect();
        fork.seal(&w.federation, records, &[]);
    }
    let e =
        ShardEquivocation { first: w.shard.headers[2].clone(), second: fork.headers[2].clone() };
    assert_eq!(verify_equivocation(g, &e), Ok((CityId(0), 2)));
    // The same header twice, two heights, or a forged second seal prove nothing.
    let same = ShardEquivocation { first: e.first.clone(), second: e.first.clone() };
    assert_eq!(verify_equivocation(g, &same), Err(CrosslinkError::NotConflicting));
    let heights = ShardEquivocation { first: e.first.clone(), second: fork.headers[1].clone() };
    assert_eq!(verify_equivocation(g, &heights), Err(CrosslinkError::NotConflicting));
    let mut forged = e.clone();
    forged.second.signature[40] ^= 1;
    assert_eq!(
        verify_equivocation(g, &forged),
        Err(CrosslinkError::Seal(Ed25519Error::BadSignature))
    );
}
