//! DNS servers for tests: an authoritative one serving the records a test
//! gives ([`TestDns`]), and one that never answers ([`silent_dns`]).
//!
//! [`TestDns::validating`] also plays a validating recursive resolver (the
//! kind DANE relies on): answers for names under its "signed" suffixes
//! carry the AD bit, and names it calls bogus get SERVFAIL, as unbound
//! answers for data whose signatures fail.
//!
//! Both listen on 127.0.0.1 with UDP and TCP on the same port, so a resolver
//! pointed at `addr()` can fall back to TCP as it would in production. Each
//! [`TestDns`] runs hickory-server on its own thread and tokio runtime, so it
//! serves whatever runtime (or none) the test itself uses.
#![allow(dead_code)] // each test binary uses a different part

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures::channel::oneshot;
use hickory_server::authority::{
    AuthorityObject, Catalog, MessageResponse, MessageResponseBuilder, ZoneType,
};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_server::proto::rr::rdata::{A, AAAA, MX, SOA, TLSA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryAuthority;
use hickory_server::ServerFuture;

/// TTL of every record served; long enough that nothing expires mid-test.
const TTL: u32 = 300;

/// Negative answers (NXDOMAIN, no data) are cached for the SOA minimum;
/// 0 keeps them from sticking if a resolver is shared between cases.
const NEGATIVE_TTL: u32 = 0;

/// How long the server keeps an idle TCP connection.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// A record for [`TestDns`] to serve. Names may be given with or without the
/// trailing dot; they must lie inside the zone.
#[derive(Debug, Clone)]
pub enum TestRecord {
    /// `name MX preference exchange`; exchange "." makes a null MX (RFC 7505).
    Mx {
        name: String,
        preference: u16,
        exchange: String,
    },
    /// `name A ip`.
    A { name: String, ip: Ipv4Addr },
    /// `name AAAA ip`.
    Aaaa { name: String, ip: Ipv6Addr },
    /// `name TXT "..."`, split into strings of at most 255 octets.
    Txt { name: String, text: String },
    /// `name TLSA usage selector matching data` (RFC 6698).
    Tlsa {
        name: String,
        usage: u8,
        selector: u8,
        matching: u8,
        data: Vec<u8>,
    },
}

impl TestRecord {
    /// An MX record.
    pub fn mx(name: impl Into<String>, preference: u16, exchange: impl Into<String>) -> Self {
        TestRecord::Mx {
            name: name.into(),
            preference,
            exchange: exchange.into(),
        }
    }

    /// An A record.
    pub fn a(name: impl Into<String>, ip: Ipv4Addr) -> Self {
        TestRecord::A {
            name: name.into(),
            ip,
        }
    }

    /// A TXT record (DKIM keys, SPF, DMARC policies).
    pub fn txt(name: impl Into<String>, text: impl Into<String>) -> Self {
        TestRecord::Txt {
            name: name.into(),
            text: text.into(),
        }
    }

    /// A TLSA record, e.g. `_25._tcp.mx.test. TLSA 3 1 1 <sha-256>`.
    pub fn tlsa(
        name: impl Into<String>,
        usage: u8,
        selector: u8,
        matching: u8,
        data: &[u8],
    ) -> Self {
        TestRecord::Tlsa {
            name: name.into(),
            usage,
            selector,
            matching,
            data: data.to_vec(),
        }
    }

    /// An AAAA record.
    pub fn aaaa(name: impl Into<String>, ip: Ipv6Addr) -> Self {
        TestRecord::Aaaa {
            name: name.into(),
            ip,
        }
    }

    fn to_record(&self, ttl: u32) -> Record {
        match self {
            TestRecord::Mx {
                name,
                preference,
                exchange,
            } => Record::from_rdata(
                fqdn(name),
                ttl,
                RData::MX(MX::new(*preference, fqdn(exchange))),
            ),
            TestRecord::A { name, ip } => Record::from_rdata(fqdn(name), ttl, RData::A(A(*ip))),
            TestRecord::Aaaa { name, ip } => {
                Record::from_rdata(fqdn(name), ttl, RData::AAAA(AAAA(*ip)))
            }
            TestRecord::Txt { name, text } => {
                let strings = text
                    .as_bytes()
                    .chunks(255)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect();
                Record::from_rdata(fqdn(name), ttl, RData::TXT(TXT::new(strings)))
            }
            TestRecord::Tlsa {
                name,
                usage,
                selector,
                matching,
                data,
            } => {
                let tlsa = TLSA::new(
                    CertUsage::from(*usage),
                    Selector::from(*selector),
                    Matching::from(*matching),
                    data.clone(),
                );
                Record::from_rdata(fqdn(name), ttl, RData::TLSA(tlsa))
            }
        }
    }
}

/// Parses a name, making it fully qualified; "." is the root.
fn fqdn(name: &str) -> Name {
    let mut name = Name::from_str(name).unwrap_or_else(|e| panic!("bad test name {name:?}: {e}"));
    name.set_fqdn(true);
    name
}

/// An authoritative DNS server for one zone, on 127.0.0.1 (UDP and TCP, one
/// port). Names in the zone without records answer NXDOMAIN (a name with
/// records but not of the asked type answers NOERROR with no data); names
/// outside it answer REFUSED. Stops when dropped.
pub struct TestDns {
    addr: SocketAddr,
    /// The names answered as validated; [`TestDns::set_signed`] changes them.
    signed: Arc<std::sync::Mutex<Vec<LowerName>>>,
    /// Dropping it ends the server's thread.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestDns {
    /// Starts serving `records` as zone `zone` (e.g. "test."), with an SOA
    /// at the apex added. Panics on a bad name or if no port can be bound.
    pub fn start(zone: &str, records: &[TestRecord]) -> TestDns {
        Self::validating(zone, records, &[], &[])
    }

    /// [`TestDns::start`], answering as a validating resolver would: with
    /// the AD bit for names equal to or under one of `signed`, SERVFAIL for
    /// the names in `bogus`.
    pub fn validating(
        zone: &str,
        records: &[TestRecord],
        signed: &[&str],
        bogus: &[&str],
    ) -> TestDns {
        Self::validating_ttl(zone, records, signed, bogus, TTL)
    }

    /// [`TestDns::validating`] with records of `ttl` seconds, for tests
    /// that change what is validated ([`TestDns::set_signed`]) and need
    /// caches to see it.
    pub fn validating_ttl(
        zone: &str,
        records: &[TestRecord],
        signed: &[&str],
        bogus: &[&str],
        ttl: u32,
    ) -> TestDns {
        let sockets = bind_pair().expect("binding the test DNS server");
        let validation = Validation {
            signed: Arc::new(std::sync::Mutex::new(lower_names(signed))),
            bogus: lower_names(bogus),
        };
        Self::serve(zone, records, sockets, validation, ttl)
    }

    /// From now on, answer names under `signed` (and only those) as
    /// validated.
    pub fn set_signed(&self, signed: &[&str]) {
        *self.signed.lock().unwrap() = lower_names(signed);
    }

    fn serve(
        zone: &str,
        records: &[TestRecord],
        sockets: (UdpSocket, TcpListener),
        validation: Validation,
        ttl: u32,
    ) -> TestDns {
        let signed = validation.signed.clone();
        let origin = fqdn(zone);
        let mut authority = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
        let serial = 1;
        let soa = SOA::new(
            fqdn(&format!("ns.{origin}")),
            fqdn(&format!("hostmaster.{origin}")),
            serial,
            3600,
            600,
            86400,
            NEGATIVE_TTL,
        );
        authority.upsert_mut(
            Record::from_rdata(origin.clone(), ttl, RData::SOA(soa)),
            serial,
        );
        for record in records {
            let record = record.to_record(ttl);
            assert!(
                origin.zone_of(record.name()),
                "{} is outside zone {origin}",
                record.name()
            );
            authority.upsert_mut(record, serial);
        }
        let mut catalog = Catalog::new();
        let authority: Arc<dyn AuthorityObject> = Arc::new(authority);
        catalog.upsert(LowerName::new(&origin), vec![authority]);

        let (udp, tcp) = sockets;
        let addr = udp.local_addr().expect("test DNS address");
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-dns".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("test DNS runtime");
                runtime.block_on(async move {
                    let mut server = ServerFuture::new(Validating {
                        catalog,
                        validation,
                    });
                    server.register_socket_std(udp).expect("test DNS UDP");
                    server
                        .register_listener_std(tcp, TCP_IDLE)
                        .expect("test DNS TCP");
                    // Ok (told to stop) or Err (TestDns dropped): both mean stop.
                    let _ = stopped.await;
                    // Dropping the runtime after this ends the server's tasks.
                });
            })
            .expect("test DNS thread");
        TestDns {
            addr,
            signed,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where the server listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Don't turn a failing test's panic into an abort.
            let _ = thread.join();
        }
    }
}

/// Which answers a [`TestDns`] calls validated, and which bogus.
struct Validation {
    signed: Arc<std::sync::Mutex<Vec<LowerName>>>,
    bogus: Vec<LowerName>,
}

fn lower_names(names: &[&str]) -> Vec<LowerName> {
    names.iter().map(|n| LowerName::new(&fqdn(n))).collect()
}

/// The catalog, with the AD bit or SERVFAIL of a validating resolver.
struct Validating {
    catalog: Catalog,
    validation: Validation,
}

#[async_trait::async_trait]
impl RequestHandler for Validating {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        response: R,
    ) -> ResponseInfo {
        let name = request.request_info().map(|info| info.query.name().clone());
        let (secure, bogus) = match &name {
            Ok(name) => (
                self.validation
                    .signed
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|zone| zone.zone_of(name)),
                self.validation.bogus.contains(name),
            ),
            Err(_) => (false, false),
        };
        if bogus {
            let failure = MessageResponseBuilder::from_message_request(request)
                .error_msg(request.header(), ResponseCode::ServFail);
            let mut response = response;
            return match response.send_response(failure).await {
                Ok(info) => info,
                Err(_) => ResponseInfo::from(*request.header()),
            };
        }
        let response = SetAd {
            inner: response,
            secure,
        };
        self.catalog.handle_request(request, response).await
    }
}

/// Sends a response with the AD bit as [`Validating`] decided.
#[derive(Clone)]
struct SetAd<R> {
    inner: R,
    secure: bool,
}

#[async_trait::async_trait]
impl<R: ResponseHandler> ResponseHandler for SetAd<R> {
    async fn send_response<'a>(
        &mut self,
        mut response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> io::Result<ResponseInfo> {
        response.header_mut().set_authentic_data(self.secure);
        self.inner.send_response(response).await
    }
}

/// Keeps a [`silent_dns`] server's sockets open; they close on drop.
pub struct SilentDns {
    _udp: UdpSocket,
    _tcp: TcpListener,
}

/// A "server" on 127.0.0.1 that never answers: queries over UDP sit unread,
/// TCP connections are accepted by the kernel and never served. For timeout
/// tests. Keep the guard alive as long as the address is used.
pub fn silent_dns() -> (SocketAddr, SilentDns) {
    let (udp, tcp) = bind_pair().expect("binding the silent DNS server");
    let addr = udp.local_addr().expect("silent DNS address");
    (
        addr,
        SilentDns {
            _udp: udp,
            _tcp: tcp,
        },
    )
}

/// Binds UDP and TCP on one free port of 127.0.0.1. The UDP port is picked
/// by the kernel; its TCP twin may be taken, so try a few.
fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..32 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}
