//! DMARC aggregate reports (RFC 7489 §7.2) on the mail the inbound checks
//! judged, for the domains whose record asks for them (`rua=mailto:`),
//! when `inbound_auth.dmarc_reports` is on.
//!
//! - Each shard counts what its sessions saw ([`Counter`]): per period
//!   (`inbound_auth.dmarc_report_interval_secs`, a day), per policy
//!   domain, per row of messages alike in what is reported. At most
//!   [`MAX_ROWS`] rows per shard wait in memory; more are dropped, counted.
//! - Every [`flush_every`] a shard's counts go into the store (the `state`
//!   family, `dmarc/<period>/<shard>/<time>`), so a crash loses at most that
//!   much and memory stays small over a day.
//! - Shard 0 then sends the reports of the periods that ended: it reads
//!   every shard's counts, merges them per domain, keeps the `rua=`
//!   addresses that may receive them (one outside the domain must agree,
//!   §7.1), and queues one message per domain (from the null sender, so a
//!   report never bounces back) in the commit that removes the counts.

use crate::mail_auth::{dmarc, Dns, Verdicts};
use crate::relay::resolver::RecordKind;
use crate::shard::Shard;
use ringpost_protocols::dmarc_report::{self, DkimResult, Feedback, Published, Row, SpfResult};
use ringpost_storage::{state, WriteBatch};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

/// Rows one shard keeps in memory between flushes.
pub const MAX_ROWS: usize = 10_000;

/// Where the counts wait in the store.
const PREFIX: &str = "dmarc/";

/// Stored counts one round of sending reads at most, bytes: the rest
/// waits for the next round, so a busy day's counts never all sit in
/// memory at once.
const MAX_READ: usize = 32 << 20;

/// Rows one report carries at most; the rarest are left out.
const MAX_REPORT_ROWS: usize = 100_000;

/// Messages alike in everything a report says of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct RowKey {
    ip: IpAddr,
    header_from: String,
    disposition: String,
    dkim_aligned: bool,
    spf_aligned: bool,
    /// Each signature: domain, selector, result.
    dkim: Vec<(String, String, String)>,
    /// Domain, scope, result.
    spf: (String, String, String),
}

/// The policy a domain published, and where its reports go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Policy {
    domain: String,
    strict_dkim: bool,
    strict_spf: bool,
    policy: String,
    subdomain_policy: Option<String>,
    percent: u8,
    rua: Vec<String>,
}

/// A domain's counts for one period, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DomainCounts {
    policy: Policy,
    rows: Vec<(RowKey, u64)>,
}

/// A domain's policy as last seen and its rows' counts, in memory.
type Counting = (Policy, HashMap<RowKey, u64>);

/// What one shard counted since its last flush.
#[derive(Default)]
pub struct Counter {
    /// By period start (Unix seconds), then policy domain.
    periods: RefCell<BTreeMap<u64, HashMap<String, Counting>>>,
    rows: std::cell::Cell<usize>,
}

impl Counter {
    /// Count a message from `ip` whose checks gave `verdicts`, handled as
    /// `disposition` (`none`, `quarantine` or `reject`), at `now` (Unix
    /// seconds) in periods of `interval` seconds. Nothing for a message
    /// whose DMARC record asks for no reports. Returns false when the row
    /// was dropped (memory bound).
    pub fn observe(
        &self,
        now: u64,
        interval: u64,
        ip: IpAddr,
        verdicts: &Verdicts,
        disposition: dmarc::Policy,
    ) -> bool {
        let Some(verdict) = &verdicts.dmarc else {
            return true;
        };
        let Some((domain, record)) = &verdict.published else {
            return true;
        };
        if record.reports.is_empty() {
            return true;
        }
        let spf = &verdicts.spf;
        let spf_domain = match spf.value.rsplit_once('@') {
            Some((_, domain)) => domain,
            None => spf.value.as_str(),
        };
        let key = RowKey {
            ip,
            header_from: verdict.from.clone(),
            disposition: disposition.name().to_owned(),
            dkim_aligned: verdict.dkim_aligned,
            spf_aligned: verdict.spf_aligned,
            dkim: verdicts
                .dkim
                .iter()
                .map(|d| (d.domain.clone(), d.selector.clone(), d.result.to_owned()))
                .collect(),
            spf: (
                spf_domain.to_ascii_lowercase(),
                match spf.identity {
                    "helo" => "helo",
                    _ => "mfrom",
                }
                .to_owned(),
                spf.result.name().to_owned(),
            ),
        };
        let policy = Policy {
            domain: domain.clone(),
            strict_dkim: record.strict_dkim,
            strict_spf: record.strict_spf,
            policy: record.policy.name().to_owned(),
            subdomain_policy: record.subdomain_policy.map(|p| p.name().to_owned()),
            percent: record.percent,
            rua: record.reports.clone(),
        };
        let period = now - now % interval.max(1);
        let mut periods = self.periods.borrow_mut();
        let (kept, rows) = periods
            .entry(period)
            .or_default()
            .entry(domain.clone())
            .or_insert_with(|| (policy.clone(), HashMap::new()));
        // The record as last seen is the one reported.
        *kept = policy;
        if let Some(count) = rows.get_mut(&key) {
            *count += 1;
            return true;
        }
        if self.rows.get() >= MAX_ROWS {
            return false;
        }
        self.rows.set(self.rows.get() + 1);
        rows.insert(key, 1);
        true
    }

    /// Everything counted, by period, emptied.
    fn take(&self) -> BTreeMap<u64, Vec<DomainCounts>> {
        self.rows.set(0);
        std::mem::take(&mut *self.periods.borrow_mut())
            .into_iter()
            .map(|(period, domains)| {
                let counts = domains
                    .into_values()
                    .map(|(policy, rows)| DomainCounts {
                        policy,
                        rows: rows.into_iter().collect(),
                    })
                    .collect();
                (period, counts)
            })
            .collect()
    }
}

/// How often counts go to the store: a quarter of the period, between a
/// second and a minute.
pub fn flush_every(interval_secs: u64) -> Duration {
    Duration::from_secs((interval_secs / 4).clamp(1, 60))
}

/// Flush the shard's counts every [`flush_every`] (and once more at
/// shutdown); on shard 0, send the reports of the periods that ended.
pub(crate) async fn run(shard: Rc<Shard>, shutdown: crate::shard::ShutdownSignal) {
    loop {
        let interval = shard.config().inbound_auth.dmarc_report_interval_secs;
        let tick = async {
            glommio::timer::sleep(flush_every(interval)).await;
            false
        };
        let stop = async {
            shutdown.clone().await.ok();
            true
        };
        let stopping = futures_lite::FutureExt::or(tick, stop).await;
        flush(&shard).await;
        if stopping {
            return;
        }
        if shard.id == 0 && shard.config().inbound_auth.dmarc_reports {
            send_due(&shard).await;
        }
    }
}

/// The shard's counts into the store, one key per period.
async fn flush(shard: &Shard) {
    let periods = shard.dmarc_counter.take();
    if periods.is_empty() {
        return;
    }
    let now = crate::intake::unix_micros();
    let mut batch = WriteBatch::new();
    for (period, counts) in periods {
        let Ok(json) = serde_json::to_vec(&counts) else {
            continue;
        };
        let name = format!("{PREFIX}{period:020}/{:04}/{now:020}", shard.id);
        state::put(&mut batch, &name, json);
    }
    if let Err(e) = shard.commits.commit(batch).await {
        tracing::warn!(shard = shard.id, error = %e, "DMARC report counts could not be stored; they are lost");
    }
}

/// Send the reports of every period that ended (and whose counts every
/// shard has flushed by now).
async fn send_due(shard: &Shard) {
    let config = shard.config();
    let interval = config.inbound_auth.dmarc_report_interval_secs.max(1);
    let settle = 2 * flush_every(interval).as_secs();
    let now = crate::intake::unix_micros() / 1_000_000;
    let store = shard.store.clone();
    let stored = glommio::executor()
        .spawn_blocking(move || {
            // Names hold the period first: the oldest come first, and the
            // scan stops at the first period not due yet.
            let mut entries = Vec::new();
            let mut read = 0;
            state::scan_prefix(&*store, PREFIX, &mut |name, value| {
                // A name that does not read is due: it is removed.
                let due = period_of(name)
                    .is_none_or(|p| p.saturating_add(interval).saturating_add(settle) <= now);
                if !due || read > MAX_READ {
                    return false;
                }
                read += value.len();
                entries.push((name.to_owned(), value.to_vec()));
                true
            })
            .map(|()| entries)
        })
        .await;
    let entries = match stored {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, "DMARC report counts could not be read; will retry");
            return;
        }
    };
    // Period → (names to remove, counts by domain).
    let mut due: BTreeMap<u64, (Vec<String>, BTreeMap<String, DomainCounts>)> = BTreeMap::new();
    for (name, value) in entries {
        let period = period_of(&name).unwrap_or(0);
        let (names, domains) = due.entry(period).or_default();
        names.push(name);
        // A value that does not read is dropped with its key.
        let counts: Vec<DomainCounts> = serde_json::from_slice(&value).unwrap_or_default();
        for counts in counts {
            merge(domains, counts);
        }
    }
    for (period, (names, domains)) in due {
        send_period(shard, period, period + interval, names, domains).await;
    }
}

/// The period a stored name's counts belong to.
fn period_of(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?.split('/').next()?.parse().ok()
}

/// `counts` added to what `domains` holds for its domain.
fn merge(domains: &mut BTreeMap<String, DomainCounts>, counts: DomainCounts) {
    let kept = domains
        .entry(counts.policy.domain.clone())
        .or_insert_with(|| DomainCounts {
            policy: counts.policy.clone(),
            rows: Vec::new(),
        });
    kept.policy = counts.policy;
    let mut rows: HashMap<RowKey, u64> = std::mem::take(&mut kept.rows).into_iter().collect();
    for (key, count) in counts.rows {
        *rows.entry(key).or_default() += count;
    }
    kept.rows = rows.into_iter().collect();
}

/// Queue the reports of one period and remove its counts, in one commit.
async fn send_period(
    shard: &Shard,
    begin: u64,
    end: u64,
    names: Vec<String>,
    domains: BTreeMap<String, DomainCounts>,
) {
    let config = shard.config();
    let is_local = |domain: &str| config.is_local_domain(domain);
    let resolve = crate::intake::local_targets_in(&config, &*shard.store);
    let to = crate::intake::Recipients {
        hostname: &config.hostname,
        is_local: &is_local,
        pool: config.relay.default_pool.as_deref(),
        local_targets: Some(&resolve),
    };
    let mut batch = WriteBatch::new();
    let mut queue = Vec::new();
    let mut queued = Vec::new();
    for (domain, counts) in domains {
        let addresses = match &shard.spf_dns {
            Some(dns) => agreed(dns, &domain, &counts.policy.rua).await,
            None => Vec::new(),
        };
        if addresses.is_empty() {
            shard.security.dmarc_report("no_destination");
            tracing::info!(%domain, "DMARC report not sent: no rua address agreed to take it");
            continue;
        }
        let now = crate::intake::unix_micros();
        let id = shard.next_id(now);
        let body = report_message(&config, &id, begin, end, &counts, &addresses, now);
        let message = crate::intake::stored(id, body, "", &addresses, &to, now);
        queue.extend(message.queue.iter().cloned());
        batch.append(message.into_batch());
        queued.push((domain, id.to_hex(), addresses));
    }
    for name in &names {
        state::delete(&mut batch, name);
    }
    match shard.commits.commit(batch).await {
        Ok(()) => {
            if let Some(hub) = &shard.hub {
                hub.route(queue);
            }
            for (domain, queue_id, addresses) in queued {
                shard.security.dmarc_report("queued");
                tracing::info!(%domain, %queue_id, to = %addresses.join(","), begin, end, "DMARC aggregate report queued");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, begin, "DMARC reports could not be queued; will retry");
        }
    }
}

/// The report message for `counts`: the document gzipped, attached.
fn report_message(
    config: &crate::config::Config,
    id: &ringpost_storage::spool::MessageId,
    begin: u64,
    end: u64,
    counts: &DomainCounts,
    addresses: &[String],
    now_micros: u64,
) -> Vec<u8> {
    let p = &counts.policy;
    let published = Published {
        domain: p.domain.clone(),
        strict_dkim: p.strict_dkim,
        strict_spf: p.strict_spf,
        policy: p.policy.clone(),
        subdomain_policy: p.subdomain_policy.clone(),
        percent: p.percent,
    };
    let mut by_count: Vec<&(RowKey, u64)> = counts.rows.iter().collect();
    by_count.sort_by_key(|row| std::cmp::Reverse(row.1));
    by_count.truncate(MAX_REPORT_ROWS);
    let mut rows: Vec<Row> = by_count
        .into_iter()
        .map(|(key, count)| Row {
            source_ip: key.ip,
            count: *count,
            disposition: key.disposition.clone(),
            dkim_aligned: key.dkim_aligned,
            spf_aligned: key.spf_aligned,
            header_from: key.header_from.clone(),
            dkim: key
                .dkim
                .iter()
                .map(|(domain, selector, result)| DkimResult {
                    domain: domain.clone(),
                    selector: selector.clone(),
                    result: result.clone(),
                })
                .collect(),
            spf: SpfResult {
                domain: key.spf.0.clone(),
                scope: key.spf.1.clone(),
                result: key.spf.2.clone(),
            },
        })
        .collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.source_ip.cmp(&b.source_ip)));
    let report_id = id.to_hex();
    let from = config.dmarc_report_from();
    let feedback = Feedback {
        org_name: config.dmarc_report_org(),
        email: &from,
        report_id: &report_id,
        begin,
        end,
        published: &published,
        rows: &rows,
    };
    let xml = dmarc_report::xml(&feedback);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let gzipped = gz
        .write_all(xml.as_bytes())
        .and_then(|()| gz.finish())
        .unwrap_or_default();
    let date = chrono::DateTime::from_timestamp_micros(now_micros as i64)
        .unwrap_or_default()
        .to_rfc2822();
    let message_id = format!("{report_id}@{}", config.hostname);
    dmarc_report::compose(
        &feedback,
        &dmarc_report::Envelope {
            receiver: &config.hostname,
            from: &from,
            to: addresses,
            date: &date,
            message_id: &message_id,
        },
        &gzipped,
    )
}

/// The `rua` addresses of `domain` that may receive its reports: those in
/// the domain's own organization, and those elsewhere whose domain says so
/// at `<domain>._report._dmarc.<their domain>` (RFC 7489 §7.1), so a record
/// cannot make us send reports to a stranger.
async fn agreed(dns: &impl Dns, domain: &str, rua: &[String]) -> Vec<String> {
    let organization = dmarc::organizational(domain);
    let mut agreed = Vec::new();
    for address in rua {
        let Some((_, destination)) = address.rsplit_once('@') else {
            continue;
        };
        let destination = destination.trim_end_matches('.').to_ascii_lowercase();
        let ours = dmarc::organizational(&destination) == organization;
        let consents = ours || {
            let name = format!("{domain}._report._dmarc.{destination}");
            dns.records(&name, RecordKind::Txt)
                .await
                .is_ok_and(|texts| {
                    texts.iter().any(|t| {
                        t.trim_start()
                            .get(..8)
                            .is_some_and(|v| v.eq_ignore_ascii_case("v=DMARC1"))
                    })
                })
        };
        if consents && !agreed.contains(address) {
            agreed.push(address.clone());
        }
    }
    agreed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail_auth::{dkim, spf};
    use ringpost_protocols::spf::SpfResult as Spf;

    fn verdicts(from: &str, rua: &[&str]) -> Verdicts {
        let record = dmarc::parse(&format!(
            "v=DMARC1; p=quarantine; rua={}",
            rua.iter()
                .map(|a| format!("mailto:{a}"))
                .collect::<Vec<_>>()
                .join(",")
        ))
        .unwrap();
        Verdicts {
            spf: spf::Verdict {
                result: Spf::Pass,
                identity: "mailfrom",
                value: format!("bounce@{from}"),
                why: String::new(),
            },
            dkim: vec![dkim::Verdict {
                result: "fail",
                domain: from.to_owned(),
                selector: "s1".into(),
                b_prefix: String::new(),
                why: String::new(),
            }],
            dmarc: Some(dmarc::Verdict {
                result: "pass",
                from: from.to_owned(),
                disposition: dmarc::Policy::None,
                why: String::new(),
                published: Some((from.to_owned(), record)),
                spf_aligned: true,
                dkim_aligned: false,
            }),
        }
    }

    #[test]
    fn alike_messages_share_a_row_and_periods_stay_apart() {
        let counter = Counter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let v = verdicts("example.com", &["d@example.com"]);
        for now in [1_000, 1_010, 1_099, 1_100] {
            assert!(counter.observe(now, 100, ip, &v, dmarc::Policy::None));
        }
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        counter.observe(1_050, 100, other, &v, dmarc::Policy::None);
        // A domain that asks for no reports is not counted.
        counter.observe(
            1_050,
            100,
            ip,
            &verdicts("quiet.test", &[]),
            dmarc::Policy::None,
        );
        let taken = counter.take();
        assert_eq!(taken.keys().copied().collect::<Vec<_>>(), [1_000, 1_100]);
        let first = &taken[&1_000];
        assert_eq!(first.len(), 1);
        let mut counts: Vec<u64> = first[0].rows.iter().map(|(_, c)| *c).collect();
        counts.sort();
        assert_eq!(counts, [1, 3]);
        assert_eq!(first[0].policy.rua, ["d@example.com"]);
        assert!(counter.take().is_empty(), "taken once");
    }

    #[test]
    fn rows_past_the_bound_are_dropped() {
        let counter = Counter::default();
        let v = verdicts("example.com", &["d@example.com"]);
        for n in 0..MAX_ROWS as u32 {
            let ip = IpAddr::from(n.to_be_bytes());
            assert!(counter.observe(0, 100, ip, &v, dmarc::Policy::None));
        }
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        assert!(!counter.observe(0, 100, ip, &v, dmarc::Policy::None));
        // A row already there still counts.
        let known = IpAddr::from(7u32.to_be_bytes());
        assert!(counter.observe(0, 100, known, &v, dmarc::Policy::None));
    }

    #[test]
    fn shards_counts_merge_per_row() {
        let counter = Counter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let v = verdicts("example.com", &["d@example.com"]);
        counter.observe(0, 100, ip, &v, dmarc::Policy::None);
        let a = counter.take().remove(&0).unwrap();
        counter.observe(0, 100, ip, &v, dmarc::Policy::None);
        counter.observe(0, 100, ip, &v, dmarc::Policy::None);
        let b = counter.take().remove(&0).unwrap();
        let mut domains = BTreeMap::new();
        for counts in a.into_iter().chain(b) {
            merge(&mut domains, counts);
        }
        assert_eq!(domains["example.com"].rows.len(), 1);
        assert_eq!(domains["example.com"].rows[0].1, 3);
    }

    struct Table(Vec<(&'static str, &'static str)>);

    impl Dns for Table {
        async fn records(&self, name: &str, _kind: RecordKind) -> crate::relay::resolver::Records {
            let found: Vec<String> = self
                .0
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, t)| t.to_string())
                .collect();
            match found.is_empty() {
                true => Err(crate::relay::resolver::LookupFailure::None),
                false => Ok(found),
            }
        }
    }

    #[test]
    fn addresses_outside_the_domain_must_agree() {
        let dns = Table(vec![(
            "example.com._report._dmarc.reports.test",
            "v=DMARC1",
        )]);
        let rua = [
            "d@example.com".to_owned(),
            "d@sub.example.com".to_owned(),
            "x@reports.test".to_owned(),
            "y@stranger.test".to_owned(),
        ];
        let agreed = futures::executor::block_on(agreed(&dns, "example.com", &rua));
        assert_eq!(
            agreed,
            ["d@example.com", "d@sub.example.com", "x@reports.test"]
        );
    }
}
