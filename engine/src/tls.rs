//! TLS for the listeners: certificates from PEM files chosen by the name
//! the client asks for (SNI), a self-signed one made at first start when
//! none is configured, and reload (SIGHUP) without dropping a connection.
//!
//! Every listener shares one rustls [`ServerConfig`] whose certificate
//! resolver reads the current [`Certificates`] at each handshake; a reload
//! swaps them, so connections already up keep theirs and new ones get the
//! new set. rustls' defaults apply: TLS 1.2 and 1.3 only, with its safe
//! cipher suites.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// File names of the generated certificate in `data_dir/tls/`.
const SELF_SIGNED_CERT: &str = "self-signed.crt";
const SELF_SIGNED_KEY: &str = "self-signed.key";

/// A certificate set ready to serve.
pub struct Certificates {
    /// By lowercase DNS name (`*.example.com` for wildcards).
    by_name: HashMap<String, Arc<CertifiedKey>>,
    /// For clients that send no SNI, or a name we have no certificate for.
    default: Arc<CertifiedKey>,
    /// Where each certificate came from, for the start-up summary.
    sources: Vec<String>,
    /// The set is the generated self-signed certificate.
    self_signed: bool,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("sources", &self.sources)
            .field("self_signed", &self.self_signed)
            .finish()
    }
}

impl Certificates {
    /// Where the certificates came from, in words.
    pub fn describe(&self) -> String {
        self.sources.join(", ")
    }

    /// Whether this is the generated self-signed certificate.
    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }

    /// Each certificate served (by its first DNS name) and when it
    /// expires (notAfter), Unix seconds; for the expiry metric and alert.
    pub fn expiries(&self) -> Vec<(String, i64)> {
        let mut keys: Vec<&Arc<CertifiedKey>> = self.by_name.values().collect();
        keys.push(&self.default);
        let mut seen = std::collections::BTreeMap::new();
        for key in keys {
            let Ok(cert) = key.end_entity_cert() else {
                continue;
            };
            let name = dns_names(cert)
                .into_iter()
                .next()
                .unwrap_or_else(|| "default".into());
            if let Some(not_after) = not_after(cert) {
                seen.entry(name).or_insert(not_after);
            }
        }
        seen.into_iter().collect()
    }

    /// The certificate for `name` (SNI): exact, then a wildcard one level
    /// up, then the default.
    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        if let Some(key) = self.by_name.get(&name) {
            return key.clone();
        }
        let wildcard = name
            .split_once('.')
            .map(|(_, parent)| format!("*.{parent}"));
        wildcard
            .and_then(|w| self.by_name.get(&w).cloned())
            .unwrap_or_else(|| self.default.clone())
    }
}

/// The certificates every listener serves, swappable at run time.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<Certificates>>,
}

impl CertStore {
    /// A store serving `certificates`.
    pub fn new(certificates: Certificates) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: RwLock::new(Arc::new(certificates)),
        })
    }

    /// The set in use.
    pub fn current(&self) -> Arc<Certificates> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serve `certificates` from the next handshake on.
    pub fn replace(&self, certificates: Certificates) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certificates);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().pick(hello.server_name()))
    }
}

/// The rustls configuration all listeners share.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    Ok(Arc::new(config))
}

/// Load what `config` names, or the self-signed certificate in
/// `data_dir/tls/` (made now if it is not there yet) when it names none.
pub fn load(config: &TlsConfig, data_dir: &Path, hostname: &str) -> Result<Certificates, String> {
    if config.certificates.is_empty() {
        return self_signed(data_dir, hostname);
    }
    let provider = rustls::crypto::ring::default_provider();
    let mut by_name = HashMap::new();
    let mut default = None;
    let mut sources = Vec::new();
    for pair in &config.certificates {
        let key = certified_key(&pair.cert, &pair.key, &provider)?;
        let names = dns_names(key.end_entity_cert().map_err(|e| e.to_string())?);
        if names.is_empty() {
            return Err(format!(
                "{}: the certificate names no DNS host (subjectAltName)",
                pair.cert.display()
            ));
        }
        sources.push(format!("{} ({})", pair.cert.display(), names.join(" ")));
        let key = Arc::new(key);
        for name in names {
            by_name.entry(name).or_insert_with(|| key.clone());
        }
        default.get_or_insert(key);
    }
    Ok(Certificates {
        by_name,
        default: default.expect("at least one certificate"),
        sources,
        self_signed: false,
    })
}

/// A certificate chain and its key from PEM files, checked to match.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in the file", cert.display()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let certified = CertifiedKey::from_der(chain, private, provider)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
    Ok(certified)
}

/// When a certificate stops being valid (its notAfter), Unix seconds:
/// X.509's TBSCertificate read with the `der` crate as far as the validity.
fn not_after(cert: &[u8]) -> Option<i64> {
    use der::asn1::{AnyRef, GeneralizedTime, UtcTime};
    use der::{Decode, Reader, SliceReader, Tag, TagNumber, Tagged};
    fn skip_rest<'r>(r: &mut impl Reader<'r>) -> der::Result<()> {
        let rest = r.remaining_len();
        r.read_slice(rest).map(drop)
    }
    let mut reader = SliceReader::new(cert).ok()?;
    let seconds = reader
        .sequence(|certificate| {
            let seconds = certificate.sequence(|tbs| {
                let version = Tag::ContextSpecific {
                    constructed: true,
                    number: TagNumber::N0,
                };
                if tbs.peek_tag()? == version {
                    AnyRef::decode(tbs)?;
                }
                AnyRef::decode(tbs)?; // serialNumber
                AnyRef::decode(tbs)?; // signature
                AnyRef::decode(tbs)?; // issuer
                let seconds = tbs.sequence(|validity| {
                    AnyRef::decode(validity)?; // notBefore
                    let time = AnyRef::decode(validity)?;
                    let unix = match time.tag() {
                        Tag::UtcTime => UtcTime::try_from(time)?.to_unix_duration(),
                        _ => GeneralizedTime::try_from(time)?.to_unix_duration(),
                    };
                    Ok(unix.as_secs())
                })?;
                skip_rest(tbs)?;
                Ok(seconds)
            })?;
            skip_rest(certificate)?;
            Ok(seconds)
        })
        .ok()?;
    i64::try_from(seconds).ok()
}

/// The DNS names a certificate is for, lowercased.
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok(parsed) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    parsed
        .valid_dns_names()
        .map(|name| name.to_ascii_lowercase())
        .collect()
}

/// The generated certificate: read it back, or make it (and keep it, so
/// clients that pinned it keep working across restarts).
fn self_signed(data_dir: &Path, hostname: &str) -> Result<Certificates, String> {
    let dir = data_dir.join("tls");
    let (cert_path, key_path) = (dir.join(SELF_SIGNED_CERT), dir.join(SELF_SIGNED_KEY));
    if !cert_path.exists() || !key_path.exists() {
        generate(&dir, &cert_path, &key_path, hostname)?;
    }
    let provider = rustls::crypto::ring::default_provider();
    let key = Arc::new(certified_key(&cert_path, &key_path, &provider)?);
    Ok(Certificates {
        by_name: HashMap::new(),
        default: key,
        sources: vec![format!("{} (self-signed)", cert_path.display())],
        self_signed: true,
    })
}

/// Make a self-signed certificate for `hostname`, `localhost` and the
/// loopback addresses, valid for ten years; the key file is private (0600).
fn generate(dir: &Path, cert: &Path, key: &Path, hostname: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names = vec![hostname.to_owned()];
    if hostname != "localhost" {
        names.push("localhost".into());
    }
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| format!("certificate names: {e}"))?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    params.subject_alt_names.push(rcgen::SanType::IpAddress(
        std::net::Ipv6Addr::LOCALHOST.into(),
    ));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let pair = rcgen::KeyPair::generate().map_err(|e| format!("key generation: {e}"))?;
    let made = params
        .self_signed(&pair)
        .map_err(|e| format!("self-signing: {e}"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    file.write_all(pair.serialize_pem().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", key.display()))?;
    std::fs::write(cert, made.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CertificatePair;

    fn write_cert(dir: &Path, name: &str, names: &[&str]) -> CertificatePair {
        let pair = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap()
                .self_signed(&pair)
                .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, pair.serialize_pem()).unwrap();
        CertificatePair { cert: c, key: k }
    }

    #[test]
    fn expiry_is_read_from_utc_and_generalized_times() {
        let made = |year, month| {
            let pair = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["mx.example.com".into()]).unwrap();
            params.not_after = rcgen::date_time_ymd(year, month, 1);
            params.self_signed(&pair).unwrap().der().to_vec()
        };
        // Up to 2049 notAfter is a UTCTime, from 2050 a GeneralizedTime.
        assert_eq!(not_after(&made(2036, 1)), Some(2_082_758_400));
        assert_eq!(not_after(&made(2051, 6)), Some(2_569_190_400));
        assert_eq!(not_after(b"not a certificate"), None);

        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&TlsConfig::default(), dir.path(), "mx.test").unwrap();
        assert_eq!(loaded.expiries(), [("mx.test".to_owned(), 2_082_758_400)]);
    }

    #[test]
    fn picks_by_name_then_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let config = TlsConfig {
            certificates: vec![
                write_cert(dir.path(), "mx", &["mx.example.com"]),
                write_cert(dir.path(), "wild", &["*.example.org", "example.org"]),
            ],
            ..TlsConfig::default()
        };
        let certs = load(&config, dir.path(), "mx.example.com").unwrap();
        let mx = certs.pick(Some("MX.example.com"));
        let wild = certs.pick(Some("imap.example.org"));
        assert!(Arc::ptr_eq(&mx, &certs.default));
        assert!(!Arc::ptr_eq(&wild, &mx));
        assert!(Arc::ptr_eq(&certs.pick(Some("example.org")), &wild));
        assert!(Arc::ptr_eq(&certs.pick(Some("a.b.example.org")), &mx));
        assert!(Arc::ptr_eq(&certs.pick(None), &mx));
    }

    #[test]
    fn self_signed_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load(&TlsConfig::default(), dir.path(), "mx.test").unwrap();
        assert!(first.is_self_signed());
        let key_file = dir.path().join("tls").join(SELF_SIGNED_KEY);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load(&TlsConfig::default(), dir.path(), "mx.test").unwrap();
        assert_eq!(
            first.default.end_entity_cert().unwrap(),
            second.default.end_entity_cert().unwrap()
        );
    }

    #[test]
    fn mismatched_key_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_cert(dir.path(), "a", &["a.test"]);
        let b = write_cert(dir.path(), "b", &["b.test"]);
        let config = TlsConfig {
            certificates: vec![CertificatePair {
                cert: a.cert.clone(),
                key: b.key,
            }],
            ..TlsConfig::default()
        };
        let error = load(&config, dir.path(), "a.test").unwrap_err();
        assert!(error.contains("a.crt"), "{error}");
        let config = TlsConfig {
            certificates: vec![CertificatePair {
                cert: dir.path().join("nope.crt"),
                key: a.key,
            }],
            ..TlsConfig::default()
        };
        let error = load(&config, dir.path(), "a.test").unwrap_err();
        assert!(error.contains("nope.crt"), "{error}");
    }
}
