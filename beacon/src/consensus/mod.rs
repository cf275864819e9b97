//! Byzantine fault tolerant agreement on beacon blocks, by driving the sans-IO core of
//! Malachite (`arc-malachitebft-core-consensus`, pinned). Urbis is the host: it feeds inputs and
//! carries out effects (`host`), signs with BLS (`scheme`), and folds the precommits of a
//! decision into the aggregate commit certificate of `urbis-core` (`fold_certificate`).

pub mod context;
pub mod evidence;
pub mod host;
pub mod scheme;
pub mod wire;

pub use context::{Address, BlockId, Ctx, Height, Proposal, Validator, ValidatorSet, Vote};
pub use host::{Action, App, Host, Message};
pub use malachitebft_core_consensus::Input;
pub use malachitebft_core_types::{
    CommitCertificate as MalachiteCertificate, LinearTimeouts, Round, Timeout, TimeoutKind,
};
pub use scheme::{Bls, BlsSignature, Scheme};

/// Folds the precommit signatures of a decision into the certificate light clients verify:
/// the aggregate signature and the signer bitfield in the set's order. `None` when a signer is
/// not in `set` or the scheme does not aggregate.
pub fn fold_certificate<S: Scheme>(
    set: &ValidatorSet<S>,
    certificate: &MalachiteCertificate<Ctx<S>>,
) -> Option<urbis_core::beacon::CommitCertificate> {
    let n = set.validators().len();
    let mut signers = vec![0u8; n.div_ceil(8)];
    let mut signatures = Vec::with_capacity(certificate.commit_signatures.len());
    for c in &certificate.commit_signatures {
        let i = set.index_of(&c.address)?;
        signers[i / 8] |= 1 << (i % 8);
        signatures.push(&c.signature);
    }
    let signature = S::aggregate(&signatures)?;
    Some(urbis_core::beacon::CommitCertificate { signature, signers })
}
