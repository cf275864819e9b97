//! Validators talk QUIC (quinn) with mutual TLS 1.3 (rustls, ring). A validator's identity is
//! its TLS key: the SHA-256 of its SubjectPublicKeyInfo is the `tls_fingerprint` of its entry in
//! the validator set, and both sides of every connection must present a key the set names (key
//! pinning; no certificate authority). A connection from any other key fails its handshake, so
//! its messages are never read. Each message travels on its own unidirectional stream.

use rcgen::PublicKeyData;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;

/// ALPN of the validator protocol.
pub const ALPN: &[u8] = b"urbis-beacon/1";
/// Largest message read from a stream.
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;

/// SHA-256 of a SubjectPublicKeyInfo (DER).
pub type Fingerprint = [u8; 32];

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// TLS configuration or certificate generation failed.
    #[error("tls: {0}")]
    Tls(String),
    /// Binding or connecting failed.
    #[error("quic: {0}")]
    Quic(String),
    /// The peer's key is not the expected one.
    #[error("peer presented another key")]
    WrongPeer,
}

/// A validator's TLS identity: a self-signed certificate over an Ed25519 key.
pub struct TlsIdentity {
    certificate: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: Fingerprint,
}

impl TlsIdentity {
    /// A fresh identity.
    pub fn generate() -> Result<Self, TransportError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        Self::from_key(&key)
    }

    /// The identity of a 32-byte Ed25519 seed (how key files keep it).
    pub fn from_ed25519_seed(seed: &[u8; 32]) -> Result<Self, TransportError> {
        // RFC 8410 PKCS#8 v1: the fixed prefix of an Ed25519 private key, then the seed.
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut pkcs8 = PREFIX.to_vec();
        pkcs8.extend_from_slice(seed);
        let identity = Self::from_pkcs8(&pkcs8);
        zeroize::Zeroize::zeroize(&mut pkcs8);
        identity
    }

    /// The identity of a PKCS#8 Ed25519 key (as written by [`TlsIdentity::key_pkcs8`]).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, TransportError> {
        let der = PrivatePkcs8KeyDer::from(pkcs8.to_vec());
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        Self::from_key(&key)
    }

    fn from_key(key: &rcgen::KeyPair) -> Result<Self, TransportError> {
        let params = rcgen::CertificateParams::new(vec!["urbis-validator".to_string()])
            .map_err(|e| TransportError::Tls(e.to_string()))?;
        let cert = params.self_signed(key).map_err(|e| TransportError::Tls(e.to_string()))?;
        Ok(TlsIdentity {
            certificate: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            fingerprint: Sha256::digest(key.subject_public_key_info()).into(),
        })
    }

    /// The key, PKCS#8 DER (secret: store it mode 0600).
    pub fn key_pkcs8(&self) -> &[u8] {
        self.key.secret_pkcs8_der()
    }

    /// SHA-256 of the public key's SubjectPublicKeyInfo: the validator set names this.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

/// One DER element at the start of `bytes`: (its whole encoding, its contents, what follows).
fn der_element(bytes: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let tag = *bytes.first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags do not occur in certificates' outer structure
    }
    let first = *bytes.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*bytes.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    if end > bytes.len() {
        return None;
    }
    Some((&bytes[..end], &bytes[header..end], &bytes[end..]))
}

/// The SubjectPublicKeyInfo of an X.509 certificate (DER), by walking its outer structure.
pub fn subject_public_key_info(certificate: &[u8]) -> Option<&[u8]> {
    let (_, cert, _) = der_element(certificate).filter(|(w, _, _)| w.first() == Some(&0x30))?;
    let (_, tbs, _) = der_element(cert).filter(|(w, _, _)| w.first() == Some(&0x30))?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der_element(rest)?.2; // [0] version
    }
    for _ in 0..5 {
        rest = der_element(rest)?.2; // serial, signature, issuer, validity, subject
    }
    let (spki, _, _) = der_element(rest).filter(|(w, _, _)| w.first() == Some(&0x30))?;
    Some(spki)
}

/// The fingerprint of a certificate's key.
pub fn certificate_fingerprint(certificate: &[u8]) -> Option<Fingerprint> {
    subject_public_key_info(certificate).map(|spki| Sha256::digest(spki).into())
}

/// The keys allowed to connect: shared, so a validator-set change updates it in place.
pub type Allowed = Arc<RwLock<BTreeSet<Fingerprint>>>;

/// Accepts exactly the pinned keys, checking the handshake signature with the key itself.
#[derive(Debug)]
struct Pinned {
    allowed: Allowed,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Pinned {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let fingerprint = certificate_fingerprint(end_entity)
            .ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let allowed = self.allowed.read().map_err(|_| rustls::Error::General("lock".into()))?;
        if allowed.contains(&fingerprint) {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
        }
    }
}

/// Only TLS 1.3 is offered; a 1.2 handshake signature is never checked.
const TLS12_REFUSED: rustls::Error =
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered);

impl Pinned {
    /// The TLS 1.3 handshake signature, checked with the certificate's own (pinned) key.
    fn handshake_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(TLS12_REFUSED)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity).map(|()| ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(TLS12_REFUSED)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.handshake_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A message received: the sender's key fingerprint and the bytes.
pub type Received = (Fingerprint, Vec<u8>);

/// A validator's QUIC endpoint.
pub struct Transport {
    endpoint: quinn::Endpoint,
    accepting: tokio::task::JoinHandle<()>,
    connections: tokio::sync::Mutex<HashMap<SocketAddr, (Fingerprint, quinn::Connection)>>,
}

fn tls(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

impl Transport {
    /// Listens on `listen` as `identity`, accepting only keys in `allowed`; received messages go
    /// to the returned channel.
    pub fn bind(
        identity: &TlsIdentity,
        listen: SocketAddr,
        allowed: Allowed,
    ) -> Result<(Transport, mpsc::Receiver<Received>), TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            Arc::new(Pinned { allowed, algorithms: provider.signature_verification_algorithms });
        let chain = vec![identity.certificate.clone()];
        let key = || PrivateKeyDer::Pkcs8(identity.key.clone_key());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(chain.clone(), key())
            .map_err(tls)?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key())
            .map_err(tls)?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        let server = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(tls)?,
        ));
        let mut client = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(tls)?,
        ));
        // A validator that stops answering is noticed within seconds, not the default 30.
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(std::time::Duration::from_secs(1)));
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(std::time::Duration::from_secs(5)).map_err(tls)?,
        ));
        client.transport_config(Arc::new(transport));
        let mut endpoint = quinn::Endpoint::server(server, listen)
            .map_err(|e| TransportError::Quic(e.to_string()))?;
        endpoint.set_default_client_config(client);
        let (tx, rx) = mpsc::channel(4096);
        let listener = endpoint.clone();
        let accepting = tokio::spawn(async move {
            while let Some(incoming) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        serve(connection, tx).await;
                    }
                });
            }
        });
        Ok((Transport { endpoint, accepting, connections: Default::default() }, rx))
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.endpoint.local_addr().map_err(|e| TransportError::Quic(e.to_string()))
    }

    /// Sends `bytes` to the validator at `to`, whose key must be `expected`.
    pub async fn send(
        &self,
        to: SocketAddr,
        expected: &Fingerprint,
        bytes: &[u8],
    ) -> Result<(), TransportError> {
        let connection = self.connection(to, expected).await?;
        let result = async {
            let mut stream = connection.open_uni().await.map_err(|e| e.to_string())?;
            stream.write_all(bytes).await.map_err(|e| e.to_string())?;
            stream.finish().map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = result {
            self.connections.lock().await.remove(&to);
            return Err(TransportError::Quic(e));
        }
        Ok(())
    }

    async fn connection(
        &self,
        to: SocketAddr,
        expected: &Fingerprint,
    ) -> Result<quinn::Connection, TransportError> {
        // The map is not held across a handshake: a peer that is down must not delay sends to
        // the others.
        // A cached connection to another key than the one now expected (the validator rotated
        // its keys) is replaced by a new handshake.
        if let Some((fingerprint, c)) = self.connections.lock().await.get(&to)
            && c.close_reason().is_none()
            && fingerprint == expected
        {
            return Ok(c.clone());
        }
        let connection = self
            .endpoint
            .connect(to, "urbis-validator")
            .map_err(|e| TransportError::Quic(e.to_string()))?
            .await
            .map_err(|e| TransportError::Quic(e.to_string()))?;
        // The handshake proved a pinned key; it must be the one expected at this address.
        let Some(fingerprint) = peer_fingerprint(&connection) else {
            return Err(TransportError::WrongPeer);
        };
        self.connections.lock().await.insert(to, (fingerprint, connection.clone()));
        if fingerprint != *expected {
            return Err(TransportError::WrongPeer);
        }
        Ok(connection)
    }

    /// Closes every connection and waits until they are closed (at most `urbis_ops::QUIC_CLOSE_WAIT`), so the
    /// port is free once the transport is dropped.
    pub async fn shutdown(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
        self.accepting.abort();
        self.connections.lock().await.clear();
        urbis_ops::quic_closed(self.endpoint.wait_idle()).await;
    }
}

fn peer_fingerprint(connection: &quinn::Connection) -> Option<Fingerprint> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    certificate_fingerprint(chain.first()?)
}

async fn serve(connection: quinn::Connection, tx: mpsc::Sender<Received>) {
    let Some(from) = peer_fingerprint(&connection) else { return };
    while let Ok(mut stream) = connection.accept_uni().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Ok(bytes) = stream.read_to_end(MESSAGE_BYTES_MAX).await {
                let _ = tx.send((from, bytes)).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_fingerprint_is_the_hash_of_the_certificates_key() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let identity = TlsIdentity::from_key(&key).unwrap();
        assert_eq!(
            subject_public_key_info(&identity.certificate),
            Some(key.subject_public_key_info().as_slice())
        );
        let again = TlsIdentity::from_pkcs8(identity.key_pkcs8()).unwrap();
        assert_eq!(again.fingerprint(), identity.fingerprint());
        let seeded = TlsIdentity::from_ed25519_seed(&[7; 32]).unwrap();
        assert_eq!(
            seeded.fingerprint(),
            TlsIdentity::from_ed25519_seed(&[7; 32]).unwrap().fingerprint()
        );
        assert_ne!(
            seeded.fingerprint(),
            TlsIdentity::from_ed25519_seed(&[8; 32]).unwrap().fingerprint()
        );
        // Hostile DER never panics.
        for n in 0..identity.certificate.len() {
            let _ = subject_public_key_info(&identity.certificate[..n]);
        }
        assert_eq!(subject_public_key_info(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    /// Mutual TLS with pinned keys over real QUIC sockets: pinned validators exchange messages
    /// both ways; a key the set does not name cannot connect, and nothing it sends is read.
    #[tokio::test]
    async fn only_pinned_keys_connect_and_messages_carry_the_senders_key() {
        let (a, b, stranger) = (
            TlsIdentity::generate().unwrap(),
            TlsIdentity::generate().unwrap(),
            TlsIdentity::generate().unwrap(),
        );
        let allowed: Allowed =
            Arc::new(RwLock::new([a.fingerprint(), b.fingerprint()].into_iter().collect()));
        let local = "127.0.0.1:0".parse().unwrap();
        let (ta, mut ra) = Transport::bind(&a, local, allowed.clone()).unwrap();
        let (tb, mut rb) = Transport::bind(&b, local, allowed.clone()).unwrap();
        let stranger_allows: Allowed = Arc::new(RwLock::new(
            [a.fingerprint(), b.fingerprint(), stranger.fingerprint()].into_iter().collect(),
        ));
        let (ts, _) = Transport::bind(&stranger, local, stranger_allows).unwrap();
        let (addr_a, addr_b) = (ta.local_addr().unwrap(), tb.local_addr().unwrap());

        ta.send(addr_b, &b.fingerprint(), b"to b").await.unwrap();
        let (from, bytes) =
            tokio::time::timeout(Duration::from_secs(5), rb.recv()).await.unwrap().unwrap();
        assert_eq!((from, bytes.as_slice()), (a.fingerprint(), b"to b".as_slice()));
        tb.send(addr_a, &a.fingerprint(), b"to a").await.unwrap();
        let (from, _) =
            tokio::time::timeout(Duration::from_secs(5), ra.recv()).await.unwrap().unwrap();
        assert_eq!(from, b.fingerprint());

        // Expecting another key at an address is refused even though the key is pinned.
        assert!(matches!(
            ta.send(addr_b, &a.fingerprint(), b"x").await,
            Err(TransportError::WrongPeer)
        ));
        // A stranger's client certificate fails B's check. (In TLS 1.3 the client learns of it
        // only from B's alert, so its own send may look done.) B reads nothing from it.
        let _ = ts.send(addr_b, &b.fingerprint(), b"let me in").await;
        assert!(tokio::time::timeout(Duration::from_millis(500), rb.recv()).await.is_err());
        // A stranger's server certificate fails A's check before anything is sent.
        let addr_s = ts.local_addr().unwrap();
        assert!(ta.send(addr_s, &stranger.fingerprint(), b"hello?").await.is_err());
        for t in [ta, tb, ts] {
            t.shutdown().await;
        }
    }
}
