//! DANE for SMTP (RFC 7672): the TLSA records of a destination's MX hosts,
//! found on DNSSEC-validated answers, and a certificate check against them.
//!
//! ringpost does not check DNSSEC signatures itself. Like Postfix and Exim,
//! it asks its recursive resolver with the AD bit set (RFC 6840 §5.7) and
//! believes the AD bit of the answer, so the resolver must validate and the
//! path to it must be one an attacker cannot forge: a validating resolver
//! on loopback (unbound, knot-resolver) is the usual set-up. An answer
//! without AD is "insecure" and DANE does not apply; the destination's
//! other policy (opportunistic TLS, MTA-STS) does. With a resolver that
//! does not validate at all, DANE is simply never used.
//!
//! A domain's verdict (RFC 7672 §2.2):
//! - its MX RRset (with no MX, its own address records) must be secure,
//!   else DANE does not apply to the domain;
//! - for each MX host whose address records are secure, the TLSA RRset at
//!   `_PORT._tcp.HOST`: usable DANE-EE(3) or DANE-TA(2) records mean TLS
//!   with a certificate that matches one of them; records of which none is
//!   usable mean TLS without authentication; no records, or an insecure
//!   answer, mean no DANE for that host; a failed lookup means the host is
//!   not used at all (a failure is what an attacker hiding the records
//!   would cause).
//!
//! The lookups run on the DNS thread ([`lookup`]); a shard gets the verdict
//! through [`super::resolver::Resolver::dane`] and checks the server's
//! certificate with the rustls configuration [`client_config`] builds.

use std::sync::Arc;
use std::time::Duration;

use futures::future;
use hickory_resolver::name_server::{NameServerPool, TokioConnectionProvider};
use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::proto::xfer::{DnsHandle, DnsRequest, DnsRequestOptions, FirstAnswer};
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::Name;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// TLSA certificate usage DANE-TA (RFC 7218): the record names a trust
/// anchor the server's chain must lead to.
pub const DANE_TA: u8 = 2;
/// TLSA certificate usage DANE-EE: the record names the server's own
/// certificate or key.
pub const DANE_EE: u8 = 3;

/// The MX hosts the resolver keeps of a domain's.
const MAX_HOSTS: usize = super::resolver::MAX_MX_HOSTS;

/// The most hosts looked up for one domain (TLSA and address lookups
/// each): a bound for MX sets with many hosts of one preference.
const MAX_VERDICTS: usize = 4 * MAX_HOSTS;

/// How long a verdict drawn from "nothing there" is kept when no record
/// gave a TTL.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// One TLSA record (RFC 6698 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0: the whole certificate; 1: its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0: the data itself; 1: its SHA-256; 2: its SHA-512.
    pub matching: u8,
    /// The certificate association data.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Usable for SMTP: DANE-TA or DANE-EE (RFC 7672 §3.1: the PKIX usages
    /// are not), a known selector and matching type, and a digest of its
    /// algorithm's length (RFC 7671 §10).
    pub fn usable(&self) -> bool {
        let length_ok = match self.matching {
            0 => !self.data.is_empty(),
            1 => self.data.len() == 32,
            2 => self.data.len() == 64,
            _ => false,
        };
        matches!(self.usage, DANE_TA | DANE_EE) && self.selector <= 1 && length_ok
    }

    /// Whether `cert` is the certificate, or carries the key, this record
    /// names.
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        let spki;
        let selected: &[u8] = match self.selector {
            0 => cert.as_ref(),
            1 => match webpki::EndEntityCert::try_from(cert) {
                Ok(parsed) => {
                    spki = parsed.subject_public_key_info();
                    spki.as_ref()
                }
                Err(_) => return false,
            },
            _ => return false,
        };
        match self.matching {
            0 => selected == self.data.as_slice(),
            1 => ring::digest::digest(&ring::digest::SHA256, selected).as_ref() == self.data,
            2 => ring::digest::digest(&ring::digest::SHA512, selected).as_ref() == self.data,
            _ => false,
        }
    }
}

/// What DANE asks of the connection to one MX host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDane {
    /// Nothing: no TLSA records, or not on validated answers.
    NotApplicable,
    /// TLS, with a certificate that matches one of these (usable) records.
    Authenticate(Arc<[Tlsa]>),
    /// TLS (any certificate): TLSA records are published, none usable.
    EncryptOnly,
    /// The host's TLSA (or address) lookup failed: do not use the host.
    Failed(String),
}

/// A destination domain's DANE verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaneLookup {
    /// Its MX (or address) records are not DNSSEC-validated, or it has no
    /// mail hosts: DANE does not apply.
    Insecure,
    /// Its MX hosts are validated; what each one needs, by lowercase name
    /// without the trailing dot.
    Hosts(Vec<(String, HostDane)>),
    /// Its MX lookup failed: whether DANE applies is unknown, so nothing
    /// may be sent for now.
    Failed(String),
}

/// The name servers, asked directly (no cache) so that the AD bit of each
/// answer can be read.
pub(super) type Servers = NameServerPool<TokioConnectionProvider>;

/// What one query found.
enum Answer {
    /// Records of the asked type, whether the resolver validated them, and
    /// their smallest TTL.
    Found {
        records: Vec<RData>,
        secure: bool,
        ttl: u32,
    },
    /// NXDOMAIN, or the name has no records of the type.
    Nothing,
    /// SERVFAIL (what a validating resolver answers for bogus data), a
    /// timeout, a network error.
    Failed(String),
}

/// Ask for `kind` records of `name`, with AD and DO set.
async fn query(servers: &Servers, name: &Name, kind: RecordType) -> Answer {
    let mut message = Message::new();
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_dnssec_ok(true);
    message
        .add_query(Query::query(name.clone(), kind))
        .set_id(fastrand::u16(..))
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .set_authentic_data(true)
        .set_edns(edns);
    let mut options = DnsRequestOptions::default();
    options.use_edns = true;
    options.edns_set_dnssec_ok = true;
    let response = match servers
        .send(DnsRequest::new(message, options))
        .first_answer()
        .await
    {
        Ok(response) => response,
        Err(e) => return failed(&e),
    };
    let secure = response.authentic_data();
    let mut ttl = u32::MAX;
    let records: Vec<RData> = response
        .answers()
        .iter()
        .filter(|r| r.record_type() == kind)
        .inspect(|r| ttl = ttl.min(r.ttl()))
        .map(Record::data)
        .cloned()
        .collect();
    match records.is_empty() {
        true => Answer::Nothing,
        false => Answer::Found {
            records,
            secure,
            ttl,
        },
    }
}

/// hickory reports NXDOMAIN and NODATA as errors too: sort them out.
fn failed(e: &ProtoError) -> Answer {
    match e.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
            ResponseCode::NXDomain | ResponseCode::NoError => Answer::Nothing,
            code => Answer::Failed(format!("server answered {code}")),
        },
        _ => Answer::Failed(e.to_string()),
    }
}

/// `domain`'s verdict for mail to port `port`, and how long it may be kept
/// (None: not at all).
pub(super) async fn lookup(
    servers: &Servers,
    domain: &Name,
    port: u16,
) -> (DaneLookup, Option<Duration>) {
    let (hosts, mut ttl, implicit) = match query(servers, domain, RecordType::MX).await {
        Answer::Found {
            secure: false, ttl, ..
        } => return (DaneLookup::Insecure, Some(seconds(ttl))),
        Answer::Found { records, ttl, .. } => {
            // By preference, as the resolver cuts them at the same number.
            let by_preference: Vec<(u16, Name)> = records
                .iter()
                .filter_map(|r| r.as_mx())
                .filter(|mx| !mx.exchange().is_root())
                .map(|mx| (mx.preference(), mx.exchange().to_lowercase()))
                .collect();
            let hosts = hosts_to_judge(by_preference);
            if hosts.is_empty() {
                // A null MX: no mail goes there anyway.
                return (DaneLookup::Insecure, Some(seconds(ttl)));
            }
            (hosts, ttl, false)
        }
        // No MX: the domain is its own mail host (RFC 5321 §5.1); its
        // address records decide whether DANE applies.
        Answer::Nothing => (vec![domain.to_lowercase()], u32::MAX, true),
        Answer::Failed(why) => return (DaneLookup::Failed(format!("MX lookup: {why}")), None),
    };
    let verdicts =
        future::join_all(hosts.iter().map(|host| host_verdict(servers, host, port))).await;
    let mut keep = true;
    let mut found = Vec::with_capacity(verdicts.len());
    for (host, (verdict, host_ttl)) in hosts.iter().zip(verdicts) {
        match host_ttl {
            Some(host_ttl) => ttl = ttl.min(host_ttl),
            None => keep = false,
        }
        match (verdict, implicit) {
            (Some(verdict), _) => found.push((display(host), verdict)),
            // The implicit MX's addresses stand for the MX RRset: insecure.
            (None, true) => return (DaneLookup::Insecure, keep.then(|| seconds(ttl))),
            (None, false) => found.push((display(host), HostDane::NotApplicable)),
        }
    }
    let lookup = DaneLookup::Hosts(found);
    let keep = keep.then(|| seconds(ttl));
    (lookup, keep)
}

/// One MX host's verdict (None: its addresses are not validated, so DANE
/// does not apply to it), and the smallest TTL it rests on (None: a
/// failure, not to be kept).
async fn host_verdict(
    servers: &Servers,
    host: &Name,
    port: u16,
) -> (Option<HostDane>, Option<u32>) {
    // The A records, or the AAAA records when there are no A records.
    let mut addresses = query(servers, host, RecordType::A).await;
    if matches!(addresses, Answer::Nothing) {
        addresses = query(servers, host, RecordType::AAAA).await;
    }
    let address_ttl = match addresses {
        Answer::Found {
            secure: true, ttl, ..
        } => ttl,
        Answer::Found { ttl, .. } => return (None, Some(ttl)),
        Answer::Nothing => return (None, Some(u32::MAX)),
        Answer::Failed(why) => {
            let why = format!("address lookup of {}: {why}", display(host));
            return (Some(HostDane::Failed(why)), None);
        }
    };
    let Ok(tlsa_name) = Name::from_ascii(format!("_{port}._tcp")).and_then(|n| n.append_name(host))
    else {
        return (None, Some(address_ttl));
    };
    match query(servers, &tlsa_name, RecordType::TLSA).await {
        Answer::Found {
            records,
            secure: true,
            ttl,
        } => {
            let all: Vec<Tlsa> = records
                .iter()
                .filter_map(|r| match r {
                    RData::TLSA(t) => Some(Tlsa {
                        usage: t.cert_usage().into(),
                        selector: t.selector().into(),
                        matching: t.matching().into(),
                        data: t.cert_data().to_vec(),
                    }),
                    _ => None,
                })
                .collect();
            let usable: Vec<Tlsa> = all.into_iter().filter(Tlsa::usable).collect();
            let verdict = match usable.is_empty() {
                true => HostDane::EncryptOnly,
                false => HostDane::Authenticate(usable.into()),
            };
            (Some(verdict), Some(address_ttl.min(ttl)))
        }
        // Not validated: as if there were none.
        Answer::Found { ttl, .. } => (Some(HostDane::NotApplicable), Some(address_ttl.min(ttl))),
        Answer::Nothing => (Some(HostDane::NotApplicable), Some(address_ttl)),
        Answer::Failed(why) => {
            let why = format!("TLSA lookup of {tlsa_name}: {why}");
            (Some(HostDane::Failed(why)), None)
        }
    }
}

/// How long a verdict resting on records of `ttl` seconds holds; with
/// none (`u32::MAX`: it rests on "nothing there"), [`NEGATIVE_TTL`].
fn seconds(ttl: u32) -> Duration {
    match ttl {
        u32::MAX => NEGATIVE_TTL,
        ttl => Duration::from_secs(u64::from(ttl)),
    }
}

/// A name lowercase, without the trailing dot (as the resolver shows hosts).
fn display(name: &Name) -> String {
    let mut text = name.to_lowercase().to_ascii();
    if text.len() > 1 && text.ends_with('.') {
        text.pop();
    }
    text
}

/// The client configuration for a host with usable TLSA records: its
/// certificate must match one of them (see [`DaneVerifier`]).
pub fn client_config(tlsa: Arc<[Tlsa]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = DaneVerifier {
        tlsa,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Checks a server's certificate against its TLSA records (RFC 7672 §3.1):
/// a DANE-EE record must match the server's own certificate or key, with
/// no check of names or dates (the DNS vouches for the key); a DANE-TA
/// record must match a certificate the server sent, from which the usual
/// chain, date and name checks (for the MX host name, the SNI) must pass.
#[derive(Debug)]
struct DaneVerifier {
    tlsa: Arc<[Tlsa]>,
    provider: Arc<CryptoProvider>,
}

impl DaneVerifier {
    /// The handshake signature checks, as every outbound verifier does them.
    fn signatures(&self) -> super::tls::Opportunistic {
        super::tls::Opportunistic(self.provider.clone())
    }

    /// The chain from `end_entity` to `anchor`, checked as the web PKI
    /// would, with `anchor` the only root.
    fn verify_to_anchor(
        &self,
        anchor: &CertificateDer<'_>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let anchor = webpki::anchor_from_trusted_cert(anchor)
            .map_err(|e| rustls::Error::General(format!("DANE-TA certificate: {e}")))?
            .to_owned();
        let roots = RootCertStore {
            roots: vec![anchor],
        };
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("DANE-TA: {e}")))?
            .verify_server_cert(end_entity, intermediates, server_name, &[], now)
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ee = self.tlsa.iter().filter(|t| t.usage == DANE_EE);
        if ee.clone().any(|t| t.matches(end_entity)) {
            return Ok(ServerCertVerified::assertion());
        }
        let mut last_error = None;
        for tlsa in self.tlsa.iter().filter(|t| t.usage == DANE_TA) {
            for anchor in intermediates.iter().filter(|c| tlsa.matches(c)) {
                match self.verify_to_anchor(anchor, end_entity, intermediates, server_name, now) {
                    Ok(verified) => return Ok(verified),
                    Err(e) => last_error = Some(e),
                }
            }
        }
        let why = match last_error {
            Some(e) => format!("the chain from the DANE-TA certificate fails: {e}"),
            None => "the certificate matches none of the host's TLSA records".to_owned(),
        };
        Err(rustls::Error::General(format!("DANE: {why}")))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures().supported_verify_schemes()
    }
}

/// The MX hosts (preference, name) that need a verdict, most preferred
/// first, each once. The resolver keeps [`MAX_HOSTS`], shuffling hosts of
/// equal preference first: every host as preferred as the last one it may
/// keep needs a verdict, or a validated host would be dropped for want of
/// one. At most [`MAX_VERDICTS`].
fn hosts_to_judge(mut by_preference: Vec<(u16, Name)>) -> Vec<Name> {
    by_preference.sort();
    let mut seen = std::collections::HashSet::new();
    by_preference.retain(|(_, name)| seen.insert(name.clone()));
    let cut = by_preference
        .get(MAX_HOSTS.saturating_sub(1))
        .map_or(u16::MAX, |(preference, _)| *preference);
    by_preference
        .into_iter()
        .filter(|(preference, _)| *preference <= cut)
        .map(|(_, name)| name)
        .take(MAX_VERDICTS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_the_resolver_may_keep_is_judged() {
        let name = |i: usize| Name::from_ascii(format!("mx{i:02}.d.test.")).unwrap();
        // 20 hosts of one preference: the resolver keeps a random 16.
        let equal: Vec<(u16, Name)> = (0..20).map(|i| (10, name(i))).collect();
        assert_eq!(hosts_to_judge(equal).len(), 20);
        // 16 at 10, then 4 at 20: the less preferred never make the cut.
        let mut two: Vec<(u16, Name)> = (0..16).map(|i| (10, name(i))).collect();
        two.extend((16..20).map(|i| (20, name(i))));
        two.push((10, name(0)));
        let judged = hosts_to_judge(two);
        assert_eq!(judged.len(), 16, "each once, the 20s left out");
        assert!(judged.iter().all(|n| n.to_ascii().as_str() < "mx16"));
    }

    fn cert_and_key() -> (CertificateDer<'static>, Vec<u8>) {
        let key = rcgen::generate_simple_self_signed(vec!["mx.dane.test".to_owned()]).unwrap();
        let der = CertificateDer::from(key.cert.der().to_vec());
        let spki = key.key_pair.public_key_der();
        (der, spki)
    }

    fn tlsa(usage: u8, selector: u8, matching: u8, data: &[u8]) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data: data.to_vec(),
        }
    }

    #[test]
    fn records_match_the_certificate_or_its_key_by_every_matching_type() {
        let (cert, spki) = cert_and_key();
        let sha256 = |b: &[u8]| {
            ring::digest::digest(&ring::digest::SHA256, b)
                .as_ref()
                .to_vec()
        };
        let sha512 = |b: &[u8]| {
            ring::digest::digest(&ring::digest::SHA512, b)
                .as_ref()
                .to_vec()
        };
        for record in [
            tlsa(3, 0, 0, cert.as_ref()),
            tlsa(3, 0, 1, &sha256(cert.as_ref())),
            tlsa(3, 0, 2, &sha512(cert.as_ref())),
            tlsa(3, 1, 0, &spki),
            tlsa(3, 1, 1, &sha256(&spki)),
            tlsa(3, 1, 2, &sha512(&spki)),
        ] {
            assert!(record.usable(), "{record:?}");
            assert!(record.matches(&cert), "{record:?}");
        }
        let (other, other_spki) = cert_and_key();
        assert!(!tlsa(3, 1, 1, &sha256(&spki)).matches(&other));
        assert!(!tlsa(3, 1, 0, &other_spki).matches(&cert));
    }

    #[test]
    fn pkix_usages_unknown_types_and_short_digests_are_unusable() {
        let digest = [7u8; 32];
        assert!(!tlsa(0, 1, 1, &digest).usable(), "PKIX-TA");
        assert!(!tlsa(1, 1, 1, &digest).usable(), "PKIX-EE");
        assert!(!tlsa(3, 2, 1, &digest).usable(), "selector 2");
        assert!(!tlsa(3, 1, 3, &digest).usable(), "matching type 3");
        assert!(!tlsa(3, 1, 1, &digest[..20]).usable(), "a short SHA-256");
        assert!(!tlsa(3, 1, 2, &digest).usable(), "a SHA-256 as SHA-512");
        assert!(tlsa(2, 1, 1, &digest).usable());
    }

    #[test]
    fn the_verifier_takes_a_dane_ee_match_whatever_the_name_and_refuses_others() {
        let (cert, spki) = cert_and_key();
        let sha256 = ring::digest::digest(&ring::digest::SHA256, &spki);
        let verifier = |records: Vec<Tlsa>| DaneVerifier {
            tlsa: records.into(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        let other_name = ServerName::try_from("elsewhere.test").unwrap();
        let good = verifier(vec![tlsa(3, 1, 1, sha256.as_ref())]);
        assert!(good
            .verify_server_cert(&cert, &[], &other_name, &[], UnixTime::now())
            .is_ok());
        let wrong = verifier(vec![tlsa(3, 1, 1, &[0u8; 32])]);
        let refused = wrong
            .verify_server_cert(&cert, &[], &other_name, &[], UnixTime::now())
            .unwrap_err();
        assert!(refused.to_string().contains("TLSA"), "{refused}");
    }
}
