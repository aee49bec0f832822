//! TLS for the blaster's connections: rustls driven by hand over
//! tokio-uring, whose reads and writes take owned buffers (so the usual
//! `AsyncRead` adapters do not apply).
//!
//! [`Tls`] holds the rustls client connection and two buffers of TLS
//! records (in and out). The connection writes plaintext in with
//! [`Tls::seal`] and sends [`Tls::outgoing`]; it hands raw bytes it read to
//! [`Tls::open`], which returns the plaintext they carried.

use crate::cli::TrustArgs;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::io::{self, Read, Write};
use std::sync::Arc;

/// How the blaster trusts servers.
pub fn client_config(trust: &TrustArgs) -> Result<Arc<ClientConfig>, String> {
    let (ca_file, insecure) = (trust.ca_file.as_deref(), trust.insecure);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        let Some(path) = ca_file else {
            return Err("TLS needs --ca-file (or --insecure for a self-signed server)".into());
        };
        for cert in
            CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?
        {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// One TLS session in progress.
pub struct Tls {
    conn: ClientConnection,
    /// Records to send.
    out: Vec<u8>,
}

impl Tls {
    /// A client session for `name`.
    pub fn new(config: Arc<ClientConfig>, name: ServerName<'static>) -> io::Result<Tls> {
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        Ok(Tls {
            conn,
            out: Vec::with_capacity(16 * 1024),
        })
    }

    /// Still shaking hands.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Encrypt `plain` into the outgoing records.
    pub fn seal(&mut self, plain: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(plain)?;
        self.pull_records()
    }

    /// Move whatever rustls wants to send into [`Self::outgoing`].
    pub fn pull_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.out)?;
        }
        Ok(())
    }

    /// The records to send; the caller sends them, then calls
    /// [`Self::sent`].
    pub fn outgoing(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Give back the (emptied) buffer of [`Self::outgoing`].
    pub fn sent(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        if self.out.is_empty() {
            self.out = buf;
        }
    }

    /// Take raw bytes from the server; append the plaintext they carry to
    /// `plain`. Handshake replies go to the outgoing records.
    pub fn open(&mut self, mut raw: &[u8], plain: &mut Vec<u8>) -> io::Result<()> {
        while !raw.is_empty() {
            self.conn.read_tls(&mut raw)?;
            let state = self.conn.process_new_packets().map_err(io::Error::other)?;
            let mut left = state.plaintext_bytes_to_read();
            while left > 0 {
                let start = plain.len();
                plain.resize(start + left, 0);
                let n = self.conn.reader().read(&mut plain[start..])?;
                plain.truncate(start + n);
                left -= n;
                if n == 0 {
                    break;
                }
            }
        }
        self.pull_records()
    }
}

/// Accepts any certificate (still checking the handshake signature): for
/// servers with the self-signed certificate, as with `--insecure`.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
