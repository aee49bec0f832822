//! MX resolution against an in-process authoritative server.
//!
//! Each test starts its own `TestDns` and its own resolver, so nothing one
//! test caches (negative answers included) can leak into another. Lookups
//! are driven with `futures::executor::block_on`, which shows the future
//! needs no tokio on the caller's side.

mod support;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use ringpost_engine::relay::resolver::{
    start, MxHost, MxLookup, Resolver, ResolverConfig, ResolverThread,
};
use support::dns::{silent_dns, TestDns, TestRecord};

const ZONE: &str = "test.";

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn resolver_at(server: SocketAddr, timeout: Duration) -> (Resolver, ResolverThread) {
    start(ResolverConfig {
        nameservers: vec![server],
        timeout,
        attempts: 1,
        cache_size: 256,
        mta_sts: None,
    })
    .expect("resolver starts")
}

fn resolver(dns: &TestDns) -> (Resolver, ResolverThread) {
    resolver_at(dns.addr(), Duration::from_secs(2))
}

fn host(name: &str, preference: u16, addrs: &[IpAddr]) -> MxHost {
    MxHost {
        name: name.into(),
        preference,
        addrs: addrs.to_vec(),
    }
}

#[test]
fn mx_hosts_ordered_by_preference_equal_ones_shuffled() {
    let dns = TestDns::start(
        ZONE,
        &[
            TestRecord::mx("mail.test", 20, "b.test"),
            TestRecord::mx("mail.test", 20, "c.test"),
            TestRecord::mx("mail.test", 10, "a.test"),
            TestRecord::mx("mail.test", 30, "d.test"),
            TestRecord::a("a.test", v4(1)),
            TestRecord::a("b.test", v4(2)),
            TestRecord::a("c.test", v4(3)),
            TestRecord::aaaa("c.test", Ipv6Addr::LOCALHOST),
            TestRecord::a("d.test", v4(4)),
        ],
    );
    let (resolver, _thread) = resolver(&dns);

    let mut orders = HashSet::new();
    for _ in 0..64 {
        let MxLookup::Hosts(hosts) = block_on(resolver.mx("mail.test")) else {
            panic!("hosts expected");
        };
        assert_eq!(hosts.len(), 4);
        assert_eq!(hosts[0], host("a.test", 10, &[v4(1).into()]));
        assert_eq!(hosts[3], host("d.test", 30, &[v4(4).into()]));
        let middle = [&hosts[1], &hosts[2]];
        assert!(middle.contains(&&host("b.test", 20, &[v4(2).into()])));
        // IPv4 first, then IPv6.
        assert!(middle.contains(&&host(
            "c.test",
            20,
            &[v4(3).into(), Ipv6Addr::LOCALHOST.into()]
        )));
        orders.insert(hosts[1].name.clone());
    }
    // Both orders of the two preference-20 hosts turn up (chance of not:
    // 2 in 2^64).
    assert_eq!(orders.len(), 2, "{orders:?}");
}

#[test]
fn names_are_case_insensitive_and_may_end_in_a_dot() {
    let dns = TestDns::start(
        ZONE,
        &[
            TestRecord::mx("mail.test", 10, "mx.test"),
            TestRecord::a("mx.test", v4(9)),
        ],
    );
    let (resolver, _thread) = resolver(&dns);
    let want = MxLookup::Hosts(vec![host("mx.test", 10, &[v4(9).into()])]);
    assert_eq!(block_on(resolver.mx("MAIL.Test")), want);
    assert_eq!(block_on(resolver.mx("mail.test.")), want);
}

#[test]
fn implicit_mx_from_address_records() {
    let dns = TestDns::start(
        ZONE,
        &[
            TestRecord::a("plain.test", v4(5)),
            TestRecord::aaaa("plain.test", Ipv6Addr::LOCALHOST),
        ],
    );
    let (resolver, _thread) = resolver(&dns);
    assert_eq!(
        block_on(resolver.mx("plain.test")),
        MxLookup::Hosts(vec![host(
            "plain.test",
            0,
            &[v4(5).into(), Ipv6Addr::LOCALHOST.into()]
        )])
    );
}

#[test]
fn null_mx() {
    let dns = TestDns::start(
        ZONE,
        &[
            TestRecord::mx("nomail.test", 0, "."),
            // Address records must not turn a null MX into an implicit MX.
            TestRecord::a("nomail.test", v4(6)),
        ],
    );
    let (resolver, _thread) = resolver(&dns);
    let answer = block_on(resolver.mx("nomail.test"));
    assert_eq!(answer, MxLookup::NullMx);
    assert_eq!(answer.status(), Some("5.1.10"));
}

#[test]
fn nxdomain() {
    let dns = TestDns::start(ZONE, &[TestRecord::a("exists.test", v4(1))]);
    let (resolver, _thread) = resolver(&dns);
    let answer = block_on(resolver.mx("missing.test"));
    assert_eq!(answer, MxLookup::NoSuchDomain);
    assert_eq!(answer.status(), Some("5.1.2"));
    // Asked again (now from the negative cache): same answer.
    assert_eq!(
        block_on(resolver.mx("missing.test")),
        MxLookup::NoSuchDomain
    );
}

#[test]
fn domain_without_mx_or_address_is_permanent() {
    // The zone apex exists (it has the SOA) but has no MX, A or AAAA.
    let dns = TestDns::start(ZONE, &[]);
    let (resolver, _thread) = resolver(&dns);
    let answer = block_on(resolver.mx("test"));
    assert!(matches!(answer, MxLookup::NoAddress(_)), "{answer:?}");
    assert_eq!(answer.status(), Some("5.4.4"));
}

#[test]
fn refused_is_temporary() {
    let dns = TestDns::start(ZONE, &[TestRecord::a("a.test", v4(1))]);
    let (resolver, _thread) = resolver(&dns);
    let answer = block_on(resolver.mx("example.org"));
    assert!(matches!(answer, MxLookup::TempFail(_)), "{answer:?}");
    assert_eq!(answer.status(), Some("4.4.3"));
    // Not cached as a negative answer: still temporary next time.
    let again = block_on(resolver.mx("example.org"));
    assert!(matches!(again, MxLookup::TempFail(_)), "{again:?}");
}

#[test]
fn silent_server_times_out_as_temporary() {
    let (addr, _guard) = silent_dns();
    let timeout = Duration::from_millis(300);
    let (resolver, _thread) = resolver_at(addr, timeout);
    let started = Instant::now();
    let answer = block_on(resolver.mx("anything.test"));
    let took = started.elapsed();
    assert!(matches!(answer, MxLookup::TempFail(_)), "{answer:?}");
    assert!(took >= timeout, "answered in {took:?}, before the timeout");
    assert!(took < timeout * 3, "took {took:?}");
}

#[test]
fn mx_host_without_addresses_is_skipped() {
    let dns = TestDns::start(
        ZONE,
        &[
            TestRecord::mx("mail.test", 10, "ghost.test"),
            TestRecord::mx("mail.test", 20, "real.test"),
            TestRecord::a("real.test", v4(7)),
        ],
    );
    let (resolver, _thread) = resolver(&dns);
    assert_eq!(
        block_on(resolver.mx("mail.test")),
        MxLookup::Hosts(vec![host("real.test", 20, &[v4(7).into()])])
    );
}

#[test]
fn no_mx_host_with_an_address_is_permanent() {
    let dns = TestDns::start(
        ZONE,
        &[
            TestRecord::mx("mail.test", 10, "ghost1.test"),
            TestRecord::mx("mail.test", 20, "ghost2.test"),
        ],
    );
    let (resolver, _thread) = resolver(&dns);
    let answer = block_on(resolver.mx("mail.test"));
    assert!(matches!(answer, MxLookup::NoAddress(_)), "{answer:?}");
}

#[test]
fn mx_host_failing_temporarily_is_skipped_when_another_resolves() {
    // mx.elsewhere. is outside the zone: the server refuses to answer for it.
    let dns = TestDns::start(
        ZONE,
        &[
            TestRecord::mx("mail.test", 10, "mx.elsewhere"),
            TestRecord::mx("mail.test", 20, "real.test"),
            TestRecord::a("real.test", v4(8)),
        ],
    );
    let (resolver, _thread) = resolver(&dns);
    assert_eq!(
        block_on(resolver.mx("mail.test")),
        MxLookup::Hosts(vec![host("real.test", 20, &[v4(8).into()])])
    );
}

#[test]
fn mx_hosts_failing_temporarily_with_none_resolved_is_temporary() {
    let dns = TestDns::start(
        ZONE,
        &[
            TestRecord::mx("mail.test", 10, "mx.elsewhere"),
            TestRecord::mx("mail.test", 20, "ghost.test"),
        ],
    );
    let (resolver, _thread) = resolver(&dns);
    let answer = block_on(resolver.mx("mail.test"));
    assert!(matches!(answer, MxLookup::TempFail(_)), "{answer:?}");
}

#[test]
fn ip_literals_skip_dns() {
    // A silent server: any query would time out instead of answering.
    let (addr, _guard) = silent_dns();
    let (resolver, _thread) = resolver_at(addr, Duration::from_millis(300));
    assert_eq!(
        block_on(resolver.mx("[127.0.0.1]")),
        MxLookup::Hosts(vec![host("[127.0.0.1]", 0, &[v4(1).into()])])
    );
    assert_eq!(
        block_on(resolver.mx("[IPv6:::1]")),
        MxLookup::Hosts(vec![host("[ipv6:::1]", 0, &[Ipv6Addr::LOCALHOST.into()])])
    );
}

#[test]
fn many_lookups_run_concurrently() {
    let dns = TestDns::start(
        ZONE,
        &[
            TestRecord::mx("mail.test", 10, "mx.test"),
            TestRecord::a("mx.test", v4(1)),
            TestRecord::a("plain.test", v4(2)),
        ],
    );
    // A silent server would make this slow; here every lookup hits the test
    // server, and some of them the cache. 200 UDP queries at once can lose a
    // datagram on a loaded machine, so this resolver retries, as a deployed
    // one does (`attempts = 2` by default): the test is about concurrency,
    // not about a single lost packet.
    let (resolver, _thread) = start(ResolverConfig {
        nameservers: vec![dns.addr()],
        timeout: Duration::from_secs(2),
        attempts: 4,
        cache_size: 256,
        mta_sts: None,
    })
    .expect("resolver starts");
    let lookups = (0..200).map(|i| {
        let resolver = resolver.clone();
        async move {
            match i % 3 {
                0 => resolver.mx("mail.test").await,
                1 => resolver.mx("plain.test").await,
                _ => resolver.mx("missing.test").await,
            }
        }
    });
    let answers = block_on(futures::future::join_all(lookups));
    for (i, answer) in answers.iter().enumerate() {
        let ok = match i % 3 {
            0 => matches!(answer, MxLookup::Hosts(h) if h[0].name == "mx.test"),
            1 => matches!(answer, MxLookup::Hosts(h) if h[0].name == "plain.test"),
            _ => *answer == MxLookup::NoSuchDomain,
        };
        assert!(ok, "lookup {i}: {answer:?}");
    }
}

#[test]
fn shutdown_while_a_lookup_waits_answers_temporary() {
    let (addr, _guard) = silent_dns();
    let (resolver, thread) = resolver_at(addr, Duration::from_secs(10));
    let pending = std::thread::spawn(move || block_on(resolver.mx("slow.test")));
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    thread.shutdown();
    let answer = pending.join().unwrap();
    assert!(matches!(answer, MxLookup::TempFail(_)), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn large_answers_fall_back_to_tcp() {
    // 300 AAAA records (about 8 KB) do not fit a UDP reply: the server sets
    // TC and the resolver must ask again over TCP on the same port.
    let mut records = vec![TestRecord::mx("big.test", 10, "mx.test")];
    records.extend(
        (0..300)
            .map(|i| TestRecord::aaaa("mx.test", Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))),
    );
    let dns = TestDns::start(ZONE, &records);
    let (resolver, _thread) = resolver(&dns);
    let MxLookup::Hosts(hosts) = block_on(resolver.mx("big.test")) else {
        panic!("hosts expected");
    };
    assert_eq!(hosts[0].addrs.len(), 300);
}

#[test]
fn glommio_task_can_await_a_lookup() {
    let dns = TestDns::start(
        ZONE,
        &[
            TestRecord::mx("mail.test", 10, "mx.test"),
            TestRecord::a("mx.test", v4(3)),
        ],
    );
    let (resolver, _thread) = resolver(&dns);
    let answer = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { resolver.mx("mail.test").await })
        .expect("glommio executor")
        .join()
        .expect("glommio task");
    assert_eq!(
        answer,
        MxLookup::Hosts(vec![host("mx.test", 10, &[v4(3).into()])])
    );
}

/// The answer cache: hosts and negative answers come back from it (equal
/// preferences still shuffled), temporary failures never do.
#[test]
fn answers_are_cached_failures_are_not() {
    let dns = TestDns::start(
        ZONE,
        &[
            TestRecord::mx("mail.test", 10, "a.test"),
            TestRecord::mx("mail.test", 10, "b.test"),
            TestRecord::a("a.test", v4(1)),
            TestRecord::a("b.test", v4(2)),
        ],
    );
    let (resolver, _thread) = resolver(&dns);
    let (first, cached) = block_on(resolver.lookup("mail.test"));
    assert!(!cached);
    let MxLookup::Hosts(hosts) = &first else {
        panic!("{first:?}")
    };
    let mut orders = HashSet::new();
    for _ in 0..40 {
        let (again, cached) = block_on(resolver.lookup("Mail.Test."));
        assert!(cached, "{again:?}");
        let MxLookup::Hosts(again) = again else {
            panic!("{again:?}")
        };
        assert_eq!(again.len(), hosts.len());
        orders.insert(again.iter().map(|h| h.name.clone()).collect::<Vec<_>>());
    }
    assert_eq!(orders.len(), 2, "equal preferences are still shuffled");

    assert_eq!(
        block_on(resolver.lookup("missing.test")),
        (MxLookup::NoSuchDomain, false)
    );
    assert_eq!(
        block_on(resolver.lookup("missing.test")),
        (MxLookup::NoSuchDomain, true)
    );

    let (refused, _) = block_on(resolver.lookup("example.org"));
    assert!(matches!(refused, MxLookup::TempFail(_)), "{refused:?}");
    let (again, cached) = block_on(resolver.lookup("example.org"));
    assert!(
        matches!(again, MxLookup::TempFail(_)) && !cached,
        "{again:?}"
    );
}

/// Record lookups (inbound SPF, DKIM, DMARC) have a share of the DNS
/// thread: past it they fail for now at once, leaving room for MX lookups.
#[test]
fn record_lookups_have_their_share_of_the_dns_thread() {
    use ringpost_engine::relay::resolver::{LookupFailure, RecordKind, MAX_RECORD_LOOKUPS};
    let (addr, _guard) = silent_dns();
    let (resolver, _thread) = resolver_at(addr, Duration::from_millis(500));
    let lookups = (0..MAX_RECORD_LOOKUPS + 50)
        .map(|n| {
            let resolver = resolver.clone();
            async move {
                resolver
                    .records(&format!("n{n}.test"), RecordKind::Txt)
                    .await
            }
        })
        .collect::<Vec<_>>();
    let answers = block_on(futures::future::join_all(lookups));
    let busy = answers
        .iter()
        .filter(|a| matches!(a, Err(LookupFailure::Temporary(why)) if why.contains("too many")))
        .count();
    assert!(busy >= 50, "{busy} refused for lack of room");
}

// -- DANE verdicts (RFC 7672 §2.2) --------------------------------------------

#[test]
fn dane_verdicts_follow_the_validation_of_each_answer() {
    use ringpost_engine::relay::dane::{DaneLookup, HostDane, Tlsa};
    let key = [0x11u8; 32];
    let dns = TestDns::validating(
        ZONE,
        &[
            // Validated MX; one host with a usable record, one with only a
            // PKIX one, one without records, one whose TLSA lookup fails.
            TestRecord::mx("signed.test", 10, "a.signed.test"),
            TestRecord::mx("signed.test", 20, "b.signed.test"),
            TestRecord::mx("signed.test", 30, "c.signed.test"),
            TestRecord::mx("signed.test", 40, "d.signed.test"),
            TestRecord::a("a.signed.test", v4(1)),
            TestRecord::a("b.signed.test", v4(2)),
            TestRecord::a("c.signed.test", v4(3)),
            TestRecord::a("d.signed.test", v4(4)),
            TestRecord::tlsa("_25._tcp.a.signed.test", 3, 1, 1, &key),
            TestRecord::tlsa("_25._tcp.b.signed.test", 1, 1, 1, &key),
            // A validated MX pointing at a host in an unsigned zone.
            TestRecord::mx("out.signed.test", 10, "mx.unsigned.test"),
            TestRecord::a("mx.unsigned.test", v4(5)),
            TestRecord::tlsa("_25._tcp.mx.unsigned.test", 3, 1, 1, &key),
            // No MX: the domain's own (validated) address and records.
            TestRecord::a("bare.signed.test", v4(6)),
            TestRecord::tlsa("_25._tcp.bare.signed.test", 3, 1, 1, &key),
            // Not validated at all.
            TestRecord::mx("unsigned.test", 10, "mx.unsigned.test"),
            // The MX lookup itself fails.
            TestRecord::mx("broken.signed.test", 10, "a.signed.test"),
        ],
        &["signed.test"],
        &["_25._tcp.d.signed.test", "broken.signed.test"],
    );
    let (resolver, _thread) = resolver(&dns);
    let usable = Tlsa {
        usage: 3,
        selector: 1,
        matching: 1,
        data: key.to_vec(),
    };
    match block_on(resolver.dane("signed.test", 25)) {
        DaneLookup::Hosts(mut hosts) => {
            hosts.sort_by(|a, b| a.0.cmp(&b.0));
            let names: Vec<&str> = hosts.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                [
                    "a.signed.test",
                    "b.signed.test",
                    "c.signed.test",
                    "d.signed.test"
                ]
            );
            assert_eq!(
                hosts[0].1,
                HostDane::Authenticate(vec![usable.clone()].into())
            );
            assert_eq!(hosts[1].1, HostDane::EncryptOnly);
            assert_eq!(hosts[2].1, HostDane::NotApplicable);
            assert!(matches!(&hosts[3].1, HostDane::Failed(why) if why.contains("TLSA")));
        }
        other => panic!("signed.test: {other:?}"),
    }
    assert_eq!(
        block_on(resolver.dane("out.signed.test", 25)),
        DaneLookup::Hosts(vec![("mx.unsigned.test".into(), HostDane::NotApplicable)]),
        "a host whose addresses are not validated gets no DANE"
    );
    assert_eq!(
        block_on(resolver.dane("bare.signed.test", 25)),
        DaneLookup::Hosts(vec![(
            "bare.signed.test".into(),
            HostDane::Authenticate(vec![usable].into())
        )]),
        "the implicit MX"
    );
    assert_eq!(
        block_on(resolver.dane("unsigned.test", 25)),
        DaneLookup::Insecure
    );
    assert_eq!(
        block_on(resolver.dane("[127.0.0.1]", 25)),
        DaneLookup::Insecure
    );
    assert!(matches!(
        block_on(resolver.dane("broken.signed.test", 25)),
        DaneLookup::Failed(_)
    ));
    // The records are for the port mail goes to.
    assert!(matches!(
        block_on(resolver.dane("bare.signed.test", 2525)),
        DaneLookup::Hosts(hosts) if hosts[0].1 == HostDane::NotApplicable
    ));
}
