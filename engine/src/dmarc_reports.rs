//! DMARC aggregate reports (RFC 7489 §7.2) on the mail the inbound checks
//! judged, for the domains whose record asks for them (`rua=mailto:`),
//! when `inbound_auth.dmarc_reports` is on.
//!
//! - Each shard counts what its sessions saw ([`Counter`]): per period
//!   (`inbound_auth.dmarc_report_interval_secs`, a day), per policy
//!   domain, per row of messages alike in what is reported. At most
//!   [`MAX_ROWS`] rows per shard wait in memory; more are dropped, counted.
//! - Every [`flush_every`] a shard's counts go into the store (the `state`
//!   family, `dmarc/<begin>/<end>/<shard>/<time>`), so a crash loses at
//!   most that much and memory stays small over a day.
//! - Shard 0 then sends the reports of the periods that ended, in a task
//!   of its own: it reads every shard's counts (off the shard), merges them
//!   per domain, keeps the `rua=` addresses that may receive them (one
//!   outside the domain must agree, §7.1), and queues one message per
//!   domain and address (from the null sender, so a report never bounces
//!   back; built, gzipped and DKIM-signed off the shard) in the commit that
//!   removes the counts.

use crate::config::Config;
use crate::mail_auth::{dmarc, Dns, Verdicts};
use crate::relay::resolver::{LookupFailure, RecordKind};
use crate::shard::Shard;
use ringpost_protocols::dmarc_report::{self, DkimResult, Feedback, Published, Row, SpfResult};
use ringpost_storage::spool::MessageId;
use ringpost_storage::{state, Store, StoreError, WriteBatch};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

/// Rows (and domains) one shard keeps in memory between flushes.
pub const MAX_ROWS: usize = 10_000;

/// Where the counts wait in the store.
const PREFIX: &str = "dmarc/";

/// Stored counts one round of sending reads at most, bytes: the rest
/// waits for the next round, so a busy day's counts never all sit in
/// memory at once.
const MAX_READ: usize = 32 << 20;

/// Rows one report carries at most; the rarest are left out.
const MAX_REPORT_ROWS: usize = 100_000;

/// Longest identifier kept in a row (a domain name's limit): a row's
/// size is bounded, whatever a message's signatures claim.
const MAX_NAME: usize = 255;

/// How long a report waits for a destination's consent record that could
/// not be looked up (a DNS error) before it goes to those that agreed.
const RETRY_FOR_SECS: u64 = 86_400;

/// Messages alike in everything a report says of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct RowKey {
    ip: IpAddr,
    header_from: String,
    disposition: String,
    /// Why the disposition is not what the policy asked, if it is not.
    reason: Option<String>,
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

/// A period: its begin and end, Unix seconds.
type Period = (u64, u64);

/// A domain's policy as last seen and its rows' counts, in memory.
type Counting = (Policy, HashMap<RowKey, u64>);

/// What one shard counted since its last flush.
#[derive(Default)]
pub struct Counter {
    /// By period, then policy domain.
    periods: RefCell<BTreeMap<Period, HashMap<String, Counting>>>,
    /// Rows held (a domain's first row counts for the domain too).
    rows: Cell<usize>,
}

/// `text` cut to [`MAX_NAME`] bytes on a character boundary.
fn clip(text: &str) -> String {
    let mut end = text.len().min(MAX_NAME);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl Counter {
    /// Count a message from `ip` whose checks gave `verdicts`, handled as
    /// `disposition` (refused, to Junk, or delivered), at `now` (Unix
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
        // What DMARC asked for; anything else was this server's choice
        // (an SPF refusal, a policy not honoured by configuration).
        let asked = match verdict.result {
            "fail" => verdict.disposition,
            _ => dmarc::Policy::None,
        };
        let key = RowKey {
            ip,
            header_from: clip(&verdict.from),
            disposition: disposition.name().to_owned(),
            reason: match (disposition != asked, verdict.sampled_out) {
                (true, _) => Some("local_policy".to_owned()),
                (false, true) => Some("sampled_out".to_owned()),
                (false, false) => None,
            },
            dkim_aligned: verdict.dkim_aligned,
            spf_aligned: verdict.spf_aligned,
            dkim: verdicts
                .dkim
                .iter()
                .filter(|d| !d.domain.is_empty())
                .map(|d| (clip(&d.domain), clip(&d.selector), d.result.to_owned()))
                .collect(),
            spf: (
                clip(&spf_domain.to_ascii_lowercase()),
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
        let interval = interval.max(1);
        let begin = now - now % interval;
        let period = (begin, begin + interval);
        let mut periods = self.periods.borrow_mut();
        let known = periods
            .get_mut(&period)
            .and_then(|domains| domains.get_mut(domain));
        if let Some((kept, rows)) = known {
            // The record as last seen is the one reported.
            *kept = policy.clone();
            if let Some(count) = rows.get_mut(&key) {
                *count += 1;
                return true;
            }
        }
        if self.rows.get() >= MAX_ROWS {
            return false;
        }
        self.rows.set(self.rows.get() + 1);
        let (_, rows) = periods
            .entry(period)
            .or_default()
            .entry(domain.clone())
            .or_insert_with(|| (policy, HashMap::new()));
        rows.insert(key, 1);
        true
    }

    /// Everything counted, by period, emptied.
    fn take(&self) -> BTreeMap<Period, Vec<DomainCounts>> {
        self.rows.set(0);
        std::mem::take(&mut *self.periods.borrow_mut())
            .into_iter()
            .map(|(period, domains)| (period, into_counts(domains)))
            .collect()
    }
}

/// Domains' counts in memory as stored, domains with no rows left out.
fn into_counts(domains: HashMap<String, Counting>) -> Vec<DomainCounts> {
    domains
        .into_values()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(policy, rows)| DomainCounts {
            policy,
            rows: rows.into_iter().collect(),
        })
        .collect()
}

/// How often counts go to the store: a quarter of the period, between a
/// second and a minute.
pub fn flush_every(interval_secs: u64) -> Duration {
    Duration::from_secs((interval_secs / 4).clamp(1, 60))
}

/// Flush the shard's counts every [`flush_every`]; on shard 0, start a
/// round of sending after each flush unless one is still going (it runs
/// as a task of its own, so flushing never waits for it).
pub(crate) async fn run(shard: Rc<Shard>, shutdown: crate::shard::ShutdownSignal) {
    let sending = Rc::new(Cell::new(false));
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
        if futures_lite::FutureExt::or(tick, stop).await {
            return;
        }
        flush(&shard).await;
        // Without the relay nothing would carry them: the counts wait.
        let wanted =
            shard.id == 0 && shard.config().inbound_auth.dmarc_reports && shard.hub.is_some();
        if wanted && !sending.get() {
            sending.set(true);
            let (shard, sending) = (shard.clone(), sending.clone());
            glommio::spawn_local(async move {
                send_due(&shard).await;
                sending.set(false);
            })
            .detach();
        }
    }
}

/// The shard's counts into the store, one key per period (also once the
/// shard's sessions are over at shutdown).
pub(crate) async fn flush(shard: &Shard) {
    let periods = shard.dmarc_counter.take();
    if periods.is_empty() {
        return;
    }
    let now = crate::intake::unix_micros();
    let mut batch = WriteBatch::new();
    for ((begin, end), counts) in periods {
        if counts.is_empty() {
            continue;
        }
        let Ok(json) = serde_json::to_vec(&counts) else {
            continue;
        };
        state::put(&mut batch, &name_for((begin, end), shard.id, now), json);
    }
    if let Err(e) = shard.commits.commit(batch).await {
        tracing::warn!(shard = shard.id, error = %e, "DMARC report counts could not be stored; they are lost");
    }
}

/// Where counts of `period` stored by `shard` at `now_micros` go: the
/// period first, so a scan meets the oldest first.
fn name_for((begin, end): Period, shard: usize, now_micros: u64) -> String {
    format!("{PREFIX}{begin:020}/{end:020}/{shard:04}/{now_micros:020}")
}

/// The period a stored name's counts belong to.
fn period_of(name: &str) -> Option<Period> {
    let mut parts = name.strip_prefix(PREFIX)?.split('/');
    let begin: u64 = parts.next()?.parse().ok()?;
    let end: u64 = parts.next()?.parse().ok()?;
    (end > begin).then_some((begin, end))
}

/// Counts of an ended period, merged over shards and flushes.
struct Due {
    period: Period,
    /// The stored names read.
    names: Vec<String>,
    domains: Vec<DomainCounts>,
}

/// Send the reports of the periods that ended, once every shard has
/// flushed them.
async fn send_due(shard: &Shard) {
    let interval = shard.config().inbound_auth.dmarc_report_interval_secs;
    let settle = 2 * flush_every(interval).as_secs();
    let now = crate::intake::unix_micros() / 1_000_000;
    let store = shard.store.clone();
    let read = glommio::executor()
        .spawn_blocking(move || {
            // A panic here must not leave the round waiting for ever.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                read_due(&*store, now, settle)
            }))
            .unwrap_or_else(|_| Err(StoreError::Engine("reading the counts panicked".into())))
        })
        .await;
    match read {
        Ok(periods) => {
            for due in periods {
                send_period(shard, due).await;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "DMARC report counts could not be read; will retry");
        }
    }
}

/// Read and merge the stored counts of periods that ended at least
/// `settle` seconds before `now`: oldest first, stopping at the first not
/// due or past [`MAX_READ`] bytes. Blocking: run off the shard.
fn read_due(store: &dyn Store, now: u64, settle: u64) -> Result<Vec<Due>, StoreError> {
    let mut periods: BTreeMap<Period, (Vec<String>, HashMap<String, Counting>)> = BTreeMap::new();
    let mut read = 0;
    state::scan_prefix(store, PREFIX, &mut |name, value| {
        // A name that does not read is due: it is removed.
        let period = period_of(name);
        let due = period.is_none_or(|(_, end)| end.saturating_add(settle) <= now);
        if !due || read > MAX_READ {
            return false;
        }
        read += value.len();
        let (names, domains) = periods.entry(period.unwrap_or_default()).or_default();
        names.push(name.to_owned());
        // A value that does not read is dropped with its name.
        let counts: Vec<DomainCounts> = serde_json::from_slice(value).unwrap_or_default();
        for counts in counts {
            let (kept, rows) = domains
                .entry(counts.policy.domain.clone())
                .or_insert_with(|| (counts.policy.clone(), HashMap::new()));
            *kept = counts.policy;
            for (key, count) in counts.rows {
                *rows.entry(key).or_default() += count;
            }
        }
        true
    })?;
    Ok(periods
        .into_iter()
        .map(|(period, (names, domains))| Due {
            period,
            names,
            domains: into_counts(domains),
        })
        .collect())
}

/// Queue the reports of one period, one message per domain and agreeing
/// address, and remove the counts read, in one commit. A domain whose
/// destinations could not all be checked (a DNS error) keeps its counts,
/// stored again, for a later round within [`RETRY_FOR_SECS`].
async fn send_period(shard: &Shard, due: Due) {
    let config = shard.config();
    let now = crate::intake::unix_micros();
    // The relay runs (the caller saw to it), so there is a resolver.
    let Some(dns) = &shard.dns else {
        return;
    };
    let mut batch = WriteBatch::new();
    let mut reports = Vec::new();
    let mut kept = 0;
    for counts in due.domains {
        let domain = counts.policy.domain.clone();
        let (addresses, unsure) = agreed(dns, &domain, &counts.policy.rua).await;
        if unsure && due.period.1 + RETRY_FOR_SECS > now / 1_000_000 {
            let json = serde_json::to_vec(&[&counts]).unwrap_or_default();
            // A name of its own for each domain kept (the time is the same).
            kept += 1;
            state::put(
                &mut batch,
                &name_for(due.period, shard.id, now + kept),
                json,
            );
            continue;
        }
        if addresses.is_empty() {
            shard.security.dmarc_report("no_destination");
            tracing::info!(%domain, "DMARC report not sent: no rua address agreed to take it");
            continue;
        }
        for address in addresses {
            reports.push((shard.next_id(now), counts.clone(), address));
        }
    }
    // The documents are built, gzipped and signed off the shard.
    let signer = shard.dkim.clone();
    let built_for = config.clone();
    let period = due.period;
    let built = glommio::executor()
        .spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                reports
                    .into_iter()
                    .map(|(id, counts, address)| {
                        let body = report_message(
                            &built_for,
                            signer.as_deref(),
                            &id,
                            period,
                            &counts,
                            &address,
                            now,
                        );
                        (id, counts.policy.domain, address, body)
                    })
                    .collect::<Vec<_>>()
            }))
            .ok()
        })
        .await;
    let Some(built) = built else {
        tracing::error!("building DMARC reports panicked; their counts are kept");
        return;
    };
    let is_local = |domain: &str| config.is_local_domain(domain);
    let resolve = crate::intake::local_targets_in(&config, &*shard.store);
    let to = crate::intake::Recipients {
        hostname: &config.hostname,
        is_local: &is_local,
        pool: config.relay.default_pool.as_deref(),
        local_targets: Some(&resolve),
    };
    let mut queue = Vec::new();
    let mut queued = Vec::new();
    for (id, domain, address, body) in built {
        let message = crate::intake::stored(id, body, "", std::slice::from_ref(&address), &to, now);
        queue.extend(message.queue.iter().cloned());
        batch.append(message.into_batch());
        queued.push((domain, id.to_hex(), address));
    }
    for name in &due.names {
        state::delete(&mut batch, name);
    }
    match shard.commits.commit(batch).await {
        Ok(()) => {
            if let Some(hub) = &shard.hub {
                hub.route(queue);
            }
            let (begin, end) = due.period;
            for (domain, queue_id, address) in queued {
                shard.security.dmarc_report("queued");
                tracing::info!(%domain, %queue_id, to = %address, begin, end, "DMARC aggregate report queued");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "DMARC reports could not be queued; will retry");
        }
    }
}

/// The report message for `counts` to `address`: the document gzipped,
/// attached, and DKIM-signed when a key signs for its `From:` (§7.2.1.1:
/// a report should pass DMARC itself).
fn report_message(
    config: &Config,
    signer: Option<&crate::dkim::DkimSigner>,
    id: &MessageId,
    (begin, end): Period,
    counts: &DomainCounts,
    address: &str,
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
            reason: key.reason.clone(),
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
    let message = dmarc_report::compose(
        &feedback,
        &dmarc_report::Envelope {
            receiver: &config.hostname,
            from: &from,
            to: address,
            date: &date,
            message_id: &message_id,
        },
        &gzipped,
    );
    crate::dkim::signed_generated(signer, message)
}

/// The `rua` addresses of `domain` that may receive its reports: those in
/// the domain's own organization, and those elsewhere whose domain says so
/// at `<domain>._report._dmarc.<their domain>` (RFC 7489 §7.1), so a record
/// cannot make us send reports to a stranger. True with them when some
/// consent record could not be looked up (a DNS error): maybe later.
async fn agreed(dns: &impl Dns, domain: &str, rua: &[String]) -> (Vec<String>, bool) {
    let organization = dmarc::organizational(domain);
    let mut agreed = Vec::new();
    let mut unsure = false;
    for address in rua {
        let Some((_, destination)) = address.rsplit_once('@') else {
            continue;
        };
        let destination = destination.trim_end_matches('.').to_ascii_lowercase();
        let consents = dmarc::organizational(&destination) == organization || {
            let name = format!("{domain}._report._dmarc.{destination}");
            match dns.records(&name, RecordKind::Txt).await {
                Ok(texts) => texts.iter().any(|t| {
                    t.trim_start()
                        .get(..8)
                        .is_some_and(|v| v.eq_ignore_ascii_case("v=DMARC1"))
                }),
                Err(LookupFailure::None) => false,
                Err(LookupFailure::Temporary(_)) => {
                    unsure = true;
                    false
                }
            }
        };
        if consents && !agreed.contains(address) {
            agreed.push(address.clone());
        }
    }
    (agreed, unsure)
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
                sampled_out: false,
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
        assert_eq!(
            taken.keys().copied().collect::<Vec<_>>(),
            [(1_000, 1_100), (1_100, 1_200)]
        );
        let first = &taken[&(1_000, 1_100)];
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
    fn stored_counts_merge_per_row_and_only_ended_periods_are_read() {
        let store = ringpost_storage::memory::MemoryStore::new();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let v = verdicts("example.com", &["d@example.com"]);
        let counter = Counter::default();
        // Two shards, two flushes of the first period, one of the next.
        let mut batch = WriteBatch::new();
        for (shard, times, now) in [(0, 1, 10), (1, 2, 20), (0, 1, 30), (0, 1, 150)] {
            for _ in 0..times {
                counter.observe(now, 100, ip, &v, dmarc::Policy::None);
            }
            for (period, counts) in counter.take() {
                let json = serde_json::to_vec(&counts).unwrap();
                state::put(&mut batch, &name_for(period, shard, now), json);
            }
        }
        store.write(&[batch], false).unwrap();
        let due = read_due(&store, 160, 10).unwrap();
        assert_eq!(due.len(), 1, "the second period has not ended");
        assert_eq!(due[0].period, (0, 100));
        assert_eq!(due[0].names.len(), 3);
        let rows = &due[0].domains[0].rows;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1, 4);
        assert_eq!(read_due(&store, 300, 10).unwrap().len(), 2);
    }

    #[test]
    fn a_disposition_the_policy_did_not_ask_for_says_why() {
        let counter = Counter::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        // DMARC passed, but the message was refused (its SPF failed).
        let v = verdicts("example.com", &["d@example.com"]);
        counter.observe(0, 100, ip, &v, dmarc::Policy::Reject);
        counter.observe(0, 100, ip, &v, dmarc::Policy::None);
        let taken = counter.take();
        let mut reasons: Vec<Option<String>> = taken[&(0, 100)][0]
            .rows
            .iter()
            .map(|(key, _)| key.reason.clone())
            .collect();
        reasons.sort();
        assert_eq!(reasons, [None, Some("local_policy".into())]);
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
        let (agreed, unsure) = futures::executor::block_on(agreed(&dns, "example.com", &rua));
        assert!(!unsure);
        assert_eq!(
            agreed,
            ["d@example.com", "d@sub.example.com", "x@reports.test"]
        );
    }
}
