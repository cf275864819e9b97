//! Service tokens: high-entropy bearer tokens stored only as BLAKE3 hashes in a file the
//! operator manages with `urbis tokens`; compared in constant time; reloaded when the file
//! changes, so issuing or revoking needs no restart.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;
use subtle::ConstantTimeEq;
use urbis_core::record::RecordKind;

/// Prefix of every token (helps secret scanners find leaked ones).
pub const TOKEN_PREFIX: &str = "urbis_";

/// One token's entry (the token itself is never stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Short public id, shown in lists and audit logs.
    pub id: String,
    /// BLAKE3 of the token, hex.
    pub hash: String,
    /// The service the token speaks for.
    pub service: String,
    /// Record kinds it may submit.
    pub kinds: Vec<RecordKind>,
    /// Revoked tokens authenticate nothing.
    pub revoked: bool,
    /// An operator's token: may erase any record's off-chain payload in this city.
    #[serde(default)]
    pub operator: bool,
}

/// The token file's content.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TokenFile {
    /// Entries.
    pub tokens: Vec<TokenEntry>,
}

/// What a valid token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Token id.
    pub token_id: String,
    /// Service name.
    pub service: String,
    /// Kinds it may submit.
    pub kinds: Vec<RecordKind>,
    /// Whether it is an operator's token.
    pub operator: bool,
}

impl Grant {
    /// Who the grant acts as, in audit trails and erasure notes: the service name, or
    /// `operator:<token id>`.
    pub fn actor(&self) -> String {
        if self.operator { format!("operator:{}", self.token_id) } else { self.service.clone() }
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token.
    #[error("missing bearer token")]
    Missing,
    /// Unknown or revoked token.
    #[error("invalid or revoked token")]
    Invalid,
    /// The token file could not be read.
    #[error("token store unavailable")]
    Unavailable,
}

/// When the token file was last read: (modification time, length, inode).
type FileStamp = (SystemTime, u64, u64);

/// The entries and the stamp of the file they were read from.
type Cached = (Option<FileStamp>, Vec<TokenEntry>);

/// The token store.
pub struct Tokens {
    path: PathBuf,
    cache: RwLock<Cached>,
}

impl Tokens {
    /// Uses the token file at `path` (created empty when missing).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            write_file(path, &TokenFile::default())?;
        }
        let t = Tokens { path: path.to_path_buf(), cache: RwLock::new((None, vec![])) };
        t.reload()?;
        Ok(t)
    }

    fn reload(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.path)?;
        // Modification time alone can miss two rewrites within one tick; the file is always
        // replaced by rename, so the inode changes with every write.
        let modified = meta.modified().ok().map(|m| (m, meta.len(), meta.ino()));
        let fresh = self.cache.read().map(|c| c.0.is_some() && c.0 == modified).unwrap_or(false);
        if fresh {
            return Ok(());
        }
        let file = read_file(&self.path)?;
        if let Ok(mut c) = self.cache.write() {
            *c = (modified, file.tokens);
        }
        Ok(())
    }

    /// Checks a bearer token.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        self.reload().map_err(|_| AuthError::Unavailable)?;
        let hash = blake3::hash(token.as_bytes());
        let cache = self.cache.read().map_err(|_| AuthError::Unavailable)?;
        let mut found: Option<&TokenEntry> = None;
        // Compare against every entry in constant time per entry; no early exit.
        for e in cache.1.iter() {
            let mut stored = [0u8; 32];
            if hex::decode_to_slice(&e.hash, &mut stored).is_ok()
                && bool::from(stored.ct_eq(hash.as_bytes()))
            {
                found = Some(e);
            }
        }
        match found {
            Some(e) if !e.revoked => Ok(Grant {
                token_id: e.id.clone(),
                service: e.service.clone(),
                kinds: e.kinds.clone(),
                operator: e.operator,
            }),
            _ => Err(AuthError::Invalid),
        }
    }
}

/// Reads a token file.
pub fn read_file(path: &Path) -> anyhow::Result<TokenFile> {
    let text = std::fs::read_to_string(path)?;
    Ok(serde_json::from_str(&text)?)
}

/// Writes a token file atomically with mode 0600.
pub fn write_file(path: &Path, file: &TokenFile) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(file)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Issues a service token: appends its hash to the file and returns the token (shown once).
pub fn issue(
    path: &Path,
    service: &str,
    kinds: Vec<RecordKind>,
) -> anyhow::Result<(String, TokenEntry)> {
    issue_token(path, service, kinds, false)
}

/// Issues a token, an operator's when `operator` is set.
pub fn issue_token(
    path: &Path,
    service: &str,
    kinds: Vec<RecordKind>,
    operator: bool,
) -> anyhow::Result<(String, TokenEntry)> {
    let mut file = if path.exists() { read_file(path)? } else { TokenFile::default() };
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    zeroize::Zeroize::zeroize(&mut secret);
    let hash = blake3::hash(token.as_bytes());
    let entry = TokenEntry {
        id: hex::encode(&hash.as_bytes()[..6]),
        hash: hash.to_hex().to_string(),
        service: service.to_string(),
        kinds,
        revoked: false,
        operator,
    };
    file.tokens.push(entry.clone());
    write_file(path, &file)?;
    Ok((token, entry))
}

/// Revokes the token with public id `id`.
pub fn revoke(path: &Path, id: &str) -> anyhow::Result<bool> {
    let mut file = read_file(path)?;
    let mut found = false;
    for e in file.tokens.iter_mut().filter(|e| e.id == id) {
        e.revoked = true;
        found = true;
    }
    write_file(path, &file)?;
    Ok(found)
}
