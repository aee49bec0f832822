//! A test certificate authority: a CA certificate and a server certificate
//! it signed, written as PEM files, so that real clients can verify the
//! server the way they would in production (no "insecure" switches).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The files of one test CA and its server certificate.
pub struct TestCa {
    /// The CA certificate clients trust.
    pub ca_file: PathBuf,
    /// The server's chain (leaf, then CA).
    pub cert_file: PathBuf,
    /// The server's private key.
    pub key_file: PathBuf,
}

impl TestCa {
    /// A CA and a server certificate for `names` (DNS names) and the
    /// loopback addresses, under `dir`.
    pub fn new(dir: &Path, names: &[&str]) -> TestCa {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ringpost test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        leaf_params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();

        let ca_file = dir.join("ca.pem");
        let cert_file = dir.join("server.pem");
        let key_file = dir.join("server.key");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(&cert_file, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
        TestCa {
            ca_file,
            cert_file,
            key_file,
        }
    }

    /// A rustls server configuration with the server's chain and key.
    pub fn server_config(&self) -> std::sync::Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert_file)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&self.key_file).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        std::sync::Arc::new(config)
    }

    /// The `[[tls.certificates]]` entry for the server.
    pub fn pair(&self) -> ringpost_engine::config::CertificatePair {
        ringpost_engine::config::CertificatePair {
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
        }
    }
}

/// A rustls server configuration with a fresh self-signed certificate for
/// `names`, and that certificate's PEM (for the client to trust).
pub fn self_signed_server(names: &[&str]) -> (std::sync::Arc<rustls::ServerConfig>, String) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let key =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert_pem = key.cert.pem();
    let cert = CertificateDer::from(key.cert.der().to_vec());
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.key_pair.serialize_der()));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .unwrap();
    (std::sync::Arc::new(config), cert_pem)
}
