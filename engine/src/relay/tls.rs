//! TLS for outbound SMTP: the rustls client configuration STARTTLS uses.
//!
//! By default TLS is opportunistic (RFC 7435): a server's certificate is not
//! checked, because MX hosts are found through unauthenticated DNS and most
//! present certificates for other names; encryption still defeats passive
//! listeners, and the handshake signature is still verified. Under the
//! `verify` policy (`relay.verify_certificates`, or `relay.tls_policy` for a
//! destination) the certificate must chain to the web PKI roots (or to
//! `relay.ca_file`) and name the host; under `verify` and `encrypt` a
//! server that offers no STARTTLS, or a failed handshake, defers the mail
//! instead of sending it in the clear.

use crate::config::RelayConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The client configurations of outbound STARTTLS: one that checks
/// certificates (the `verify` policy) and one that does not (`may`,
/// `encrypt`).
#[derive(Debug, Clone)]
pub struct TlsClients {
    /// Certificates must chain to the web PKI roots (or `ca_file`) and
    /// name the host.
    pub verified: Arc<rustls::ClientConfig>,
    /// Any certificate; the handshake signature is still checked.
    pub opportunistic: Arc<rustls::ClientConfig>,
}

/// Both client configurations for this server's outbound STARTTLS.
pub fn client_configs(relay: &RelayConfig) -> Result<TlsClients, String> {
    Ok(TlsClients {
        verified: client_config(relay, true)?,
        opportunistic: client_config(relay, false)?,
    })
}

/// A client configuration, checking certificates when `verify`.
pub(crate) fn client_config(
    relay: &RelayConfig,
    verify: bool,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if verify {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &relay.ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Opportunistic(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name to present (SNI) and, when verifying, to check: the host name,
/// or the address when the route is an IP literal.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).ok()
}

/// Accepts any certificate, but still checks that the server holds the key
/// of the certificate it sent (the handshake signature). Other verifiers
/// (DANE's) use its handshake signature checks.
#[derive(Debug)]
pub(crate) struct Opportunistic(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for Opportunistic {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
