//! The bridges' mutual TLS: each city has a certificate authority named in genesis
//! (`tls_ca_pem`); its bridge presents a certificate that CA issued for
//! `bridge.<city>.urbis.invalid`. A bridge accepts connections only from certificates one of the
//! federation's city CAs issued, and when it connects to a city it accepts only that city's
//! CA and name. TLS is for accountability and denial-of-service control, not trust: the shard
//! verifies every proof a bridge hands it.

use base64::Engine;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use urbis_core::genesis::ValidGenesis;

/// ALPN of the bridge protocol whose deliveries carry packets of one source block as a group.
pub const ALPN_GROUPS: &[u8] = b"urbis-bridge/2";
/// ALPN of the bridge protocol whose deliveries carry each packet with its whole proof.
pub const ALPN_SINGLE: &[u8] = b"urbis-bridge/1";

/// The protocols a bridge speaks, the one it prefers first: a bridge of a release before
/// groups offers only `urbis-bridge/1`, and is spoken to in it.
fn protocols() -> Vec<Vec<u8>> {
    vec![ALPN_GROUPS.to_vec(), ALPN_SINGLE.to_vec()]
}

/// Whether the bridge at the other end of `connection` reads grouped deliveries.
pub fn speaks_groups(connection: &quinn::Connection) -> bool {
    connection
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == ALPN_GROUPS)
}

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate generation, parsing or configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// A city has no CA in genesis.
    #[error("city {0} has no bridge CA in genesis")]
    NoCa(String),
}

fn tls(e: impl std::fmt::Display) -> TlsError {
    TlsError::Tls(e.to_string())
}

/// The TLS name of a city's bridge.
pub fn server_name(city: &str) -> String {
    format!("bridge.{city}.urbis.invalid")
}

/// PEM armour of DER bytes.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A city CA: its certificate (PEM, for genesis) and its private key (PKCS#8 PEM).
pub struct CityCa {
    /// The CA certificate, PEM.
    pub certificate_pem: String,
    /// The CA's private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// A bridge's certificate and key, PEM.
pub struct BridgeCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

fn ca_params(city: &str) -> Result<rcgen::CertificateParams, TlsError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("Urbis bridge CA of {city}"));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// A fresh CA for `city` (Ed25519).
pub fn generate_ca(city: &str) -> Result<CityCa, TlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(tls)?;
    let cert = ca_params(city)?.self_signed(&key).map_err(tls)?;
    Ok(CityCa {
        certificate_pem: pem("CERTIFICATE", cert.der()),
        key_pem: pem("PRIVATE KEY", &key.serialize_der()),
    })
}

/// A bridge certificate for `city`, issued by its CA.
pub fn issue_bridge_certificate(city: &str, ca: &CityCa) -> Result<BridgeCertificate, TlsError> {
    let ca_key_der = PrivatePkcs8KeyDer::from_pem_slice(ca.key_pem.as_bytes()).map_err(tls)?;
    let ca_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&ca_key_der, &rcgen::PKCS_ED25519)
        .map_err(tls)?;
    let issuer = rcgen::Issuer::new(ca_params(city)?, ca_key);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(tls)?;
    let mut params = rcgen::CertificateParams::new(vec![server_name(city)]).map_err(tls)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, server_name(city));
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer).map_err(tls)?;
    Ok(BridgeCertificate {
        certificate_pem: pem("CERTIFICATE", cert.der()),
        key_pem: pem("PRIVATE KEY", &key.serialize_der()),
    })
}

fn roots(pems: &[&str]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for p in pems {
        let der = CertificateDer::from_pem_slice(p.as_bytes()).map_err(tls)?;
        store.add(der).map_err(tls)?;
    }
    Ok(store)
}

/// A bridge's TLS identity and the federation's CAs.
pub struct BridgeTls {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl BridgeTls {
    /// From this bridge's certificate and key (PEM).
    pub fn new(certificate_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let chain = vec![CertificateDer::from_pem_slice(certificate_pem.as_bytes()).map_err(tls)?];
        let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(tls)?;
        Ok(BridgeTls { chain, key, provider: Arc::new(rustls::crypto::ring::default_provider()) })
    }

    /// The QUIC server side: clients must present a certificate one of the federation's city
    /// CAs issued.
    pub fn server(&self, genesis: &ValidGenesis) -> Result<quinn::ServerConfig, TlsError> {
        let cas: Vec<&str> = genesis
            .genesis()
            .cities
            .iter()
            .filter(|c| !c.tls_ca_pem.is_empty())
            .map(|c| c.tls_ca_pem.as_str())
            .collect();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(&cas)?),
            self.provider.clone(),
        )
        .build()
        .map_err(tls)?;
        let mut server = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .map_err(tls)?;
        server.alpn_protocols = protocols();
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(tls)?,
        ));
        config.transport_config(Arc::new(transport()?));
        Ok(config)
    }

    /// The QUIC client side towards `city`'s bridge: only that city's CA is trusted.
    pub fn client(
        &self,
        genesis: &ValidGenesis,
        city: &str,
    ) -> Result<quinn::ClientConfig, TlsError> {
        self.client_offering(genesis, city, protocols())
    }

    /// The client side, offering `alpn`.
    fn client_offering(
        &self,
        genesis: &ValidGenesis,
        city: &str,
        alpn: Vec<Vec<u8>>,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let ca = genesis
            .genesis()
            .cities
            .iter()
            .find(|c| c.name == city && !c.tls_ca_pem.is_empty())
            .ok_or_else(|| TlsError::NoCa(city.to_string()))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots(&[&ca.tls_ca_pem])?),
            self.provider.clone(),
        )
        .build()
        .map_err(tls)?;
        let mut client = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .map_err(tls)?;
        client.alpn_protocols = alpn;
        let mut config = quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(tls)?,
        ));
        config.transport_config(Arc::new(transport()?));
        Ok(config)
    }
}

/// The transport both ends of a bridge connection use.
///
/// Each stream carries one whole batch (a request or its answers) and a batch is of use only
/// once all of it has arrived, so streams are sent in the order they were opened rather than
/// round-robin: with many batches in flight, round-robin would finish them all at about the
/// same late moment, while in order the first is complete after its own bytes alone.
fn transport() -> Result<quinn::TransportConfig, TlsError> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(2)));
    transport.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(std::time::Duration::from_secs(10)).map_err(tls)?,
    ));
    transport.send_fairness(false);
    Ok(transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two bridges of this release speak `urbis-bridge/2`, and a bridge that offers only
    /// `urbis-bridge/1` (a release before groups) is answered in it, so its peer writes it
    /// deliveries it reads.
    #[tokio::test]
    async fn bridges_agree_on_groups_and_speak_singly_to_a_bridge_that_offers_only_them() {
        let mut genesis =
            urbis_core::testkit::Federation::new("alpn", 2, 4).genesis.genesis().clone();
        let mut identities = Vec::new();
        for city in &mut genesis.cities {
            let ca = generate_ca(&city.name).unwrap();
            let certificate = issue_bridge_certificate(&city.name, &ca).unwrap();
            city.tls_ca_pem = ca.certificate_pem;
            identities
                .push(BridgeTls::new(&certificate.certificate_pem, &certificate.key_pem).unwrap());
        }
        let genesis = genesis.validate().unwrap();
        let server = quinn::Endpoint::server(
            identities[1].server(&genesis).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let address = server.local_addr().unwrap();
        let name = server_name(&genesis.genesis().cities[1].name);
        let city = genesis.genesis().cities[1].name.clone();
        for (offered, grouped) in [(protocols(), true), (vec![ALPN_SINGLE.to_vec()], false)] {
            let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            client.set_default_client_config(
                identities[0].client_offering(&genesis, &city, offered).unwrap(),
            );
            let (outgoing, incoming) = tokio::join!(
                async { client.connect(address, &name).unwrap().await.unwrap() },
                async { server.accept().await.unwrap().await.unwrap() },
            );
            assert_eq!(speaks_groups(&outgoing), grouped);
            assert_eq!(speaks_groups(&incoming), grouped);
        }
    }
}
