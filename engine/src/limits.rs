//! Abuse limits shared by every listener and shard: connections per client
//! address (at once, and new ones per minute), and password-guessing
//! lockouts per address and per account.
//!
//! The kernel spreads one client's connections over all shards, so these
//! counts live behind one lock each. They are taken once per connection or
//! per login, never per command or message.

use crate::config::{in_networks, LimitsConfig};
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Client addresses tracked before stale ones are dropped.
const MAX_TRACKED: usize = 100_000;
/// Addresses remembered per locked account.
const MAX_IPS_PER_ACCOUNT: usize = 1024;

/// Password checks one address may have under way at once, failed before
/// or not: the checks share one pool (Argon2 threads, a bounded queue),
/// and a few addresses must not fill it and keep everyone else out. Far
/// above what a busy NAT's users need at one moment (a remembered
/// password is checked in microseconds).
const MAX_CHECKS_AT_ONCE: u32 = 16;

/// The key a client's limits are kept under: its IPv4 address (an
/// IPv4-mapped IPv6 one too), or its IPv6 /64. One host is given a whole
/// /64, so counting per /128 would let it take any number of addresses,
/// each with a fresh allowance.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match crate::config::canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a connection was refused before anything was said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address holds `max_connections_per_ip` already.
    PerIp,
    /// The address opened `connections_per_minute_per_ip` in the last minute.
    Rate,
    /// The shard's listener is at `max_connections_per_shard`.
    Shard,
    /// The address may not use this listener at all (LMTP's
    /// `allowed_networks`).
    Network,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::PerIp => "per_ip",
            Refusal::Rate => "rate",
            Refusal::Shard => "shard_full",
            Refusal::Network => "network",
        }
    }
}

/// Per-address connection counts and rates.
pub struct ConnectionLimits {
    settings: std::sync::RwLock<Settings>,
    clients: Mutex<HashMap<IpAddr, Client>>,
}

/// What [`ConnectionLimits`] enforces; a config reload replaces it.
struct Settings {
    max_per_ip: usize,
    per_minute: u32,
    exempt: Vec<IpNet>,
}

impl Settings {
    fn new(config: &LimitsConfig, trusted: &[IpNet]) -> Settings {
        let mut exempt = config.exempt_networks.clone();
        exempt.extend_from_slice(trusted);
        Settings {
            max_per_ip: config.max_connections_per_ip,
            per_minute: config.connections_per_minute_per_ip,
            exempt,
        }
    }
}

struct Client {
    connections: usize,
    /// Token bucket of new connections: `per_minute` tokens, refilled
    /// continuously.
    tokens: f64,
    refilled: Instant,
}

/// A connection admitted; dropping it gives its slot back.
pub struct Admission {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut clients = lock(&self.limits.clients);
            if let Some(client) = clients.get_mut(&ip) {
                client.connections = client.connections.saturating_sub(1);
            }
        }
    }
}

impl ConnectionLimits {
    /// Limits as configured; clients in `trusted` (the relay networks) are
    /// exempt too.
    pub fn new(config: &LimitsConfig, trusted: &[IpNet]) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            settings: std::sync::RwLock::new(Settings::new(config, trusted)),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Enforce `config` from now on (a reload); counts so far are kept.
    pub fn reconfigure(&self, config: &LimitsConfig, trusted: &[IpNet]) {
        *self
            .settings
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Settings::new(config, trusted);
    }

    /// Admit a connection from `ip` at `now`, or say why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Admission, Refusal> {
        let settings = self
            .settings
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (max_per_ip, per_minute) = (settings.max_per_ip, settings.per_minute);
        if in_networks(&settings.exempt, ip) || (max_per_ip == 0 && per_minute == 0) {
            return Ok(Admission {
                limits: self.clone(),
                ip: None,
            });
        }
        drop(settings);
        let ip = client_key(ip);
        let per_minute = f64::from(per_minute);
        let mut clients = lock(&self.clients);
        if clients.len() >= MAX_TRACKED {
            prune(&mut clients, per_minute, now);
        }
        let client = clients.entry(ip).or_insert(Client {
            connections: 0,
            tokens: per_minute,
            refilled: now,
        });
        if max_per_ip > 0 && client.connections >= max_per_ip {
            return Err(Refusal::PerIp);
        }
        if per_minute > 0.0 {
            let elapsed = now.saturating_duration_since(client.refilled).as_secs_f64();
            client.tokens = (client.tokens + elapsed * per_minute / 60.0).min(per_minute);
            client.refilled = now;
            if client.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
            client.tokens -= 1.0;
        }
        client.connections += 1;
        Ok(Admission {
            limits: self.clone(),
            ip: Some(ip),
        })
    }

    /// Addresses tracked now (tests).
    pub fn tracked(&self) -> usize {
        lock(&self.clients).len()
    }
}

/// Forget addresses with no connection whose bucket is full again.
fn prune(clients: &mut HashMap<IpAddr, Client>, per_minute: f64, now: Instant) {
    clients.retain(|_, c| {
        let elapsed = now.saturating_duration_since(c.refilled).as_secs_f64();
        c.connections > 0 || c.tokens + elapsed * per_minute / 60.0 < per_minute
    });
}

/// What the lockout check says about a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVerdict {
    /// Go ahead; `clean` when this address has no recent failure (its
    /// check goes first in the password-check queue).
    Allowed {
        /// No failure from this address in the window.
        clean: bool,
    },
    /// Refuse without checking the password.
    LockedOut,
}

/// A lockout that a failure started, for the log and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lockout {
    /// This address may not log in at all for a while.
    Ip(IpAddr),
    /// Addresses that failed for this account may not try it for a while.
    Account(String),
}

/// Failed logins per address and per account, and the lockouts they earn.
pub struct AuthGuard {
    per_ip: u32,
    per_account: u32,
    window: Duration,
    lockout: Duration,
    state: Mutex<GuardState>,
}

#[derive(Default)]
struct GuardState {
    ips: HashMap<IpAddr, IpFailures>,
    accounts: HashMap<String, AccountFailures>,
}

struct IpFailures {
    failures: Failures,
    /// The account all of the window's failures were for; None once the
    /// address failed for a second one (a login then forgives nothing:
    /// one good password must not clear guesses at other accounts).
    only_account: Option<String>,
    /// Logins from this address, after a failure, whose passwords are
    /// being checked now: they count against the limit until they end, so
    /// many connections guessing at once cannot pass it together.
    in_flight: u32,
}

struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

struct AccountFailures {
    failures: Failures,
    /// Addresses that failed for the account in the window.
    from: HashSet<IpAddr>,
}

impl IpFailures {
    fn new(now: Instant) -> IpFailures {
        IpFailures {
            failures: Failures::new(now),
            only_account: None,
            in_flight: 0,
        }
    }
}

impl Failures {
    fn new(now: Instant) -> Failures {
        Failures {
            count: 0,
            since: now,
            locked_until: None,
        }
    }

    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// Count one failure; true if it crosses `limit` (a lockout starts).
    fn add(&mut self, now: Instant, window: Duration, lockout: Duration, limit: u32) -> bool {
        if now.saturating_duration_since(self.since) > window {
            self.count = 0;
            self.since = now;
        }
        self.count += 1;
        if limit > 0 && self.count >= limit && !self.locked(now) {
            self.locked_until = Some(now + lockout);
            return true;
        }
        false
    }

    fn stale(&self, now: Instant, window: Duration) -> bool {
        !self.locked(now) && now.saturating_duration_since(self.since) > window
    }
}

impl AuthGuard {
    /// A guard as configured.
    pub fn new(config: &LimitsConfig) -> AuthGuard {
        AuthGuard {
            per_ip: config.auth_failures_per_ip,
            per_account: config.auth_failures_per_account,
            window: Duration::from_secs(config.auth_window_secs),
            lockout: Duration::from_secs(config.lockout_secs),
            state: Mutex::new(GuardState::default()),
        }
    }

    /// May `ip` try to log in as `account` now? (A query: see
    /// [`AuthGuard::attempt`] for a login.)
    pub fn check(&self, ip: IpAddr, account: &str, now: Instant) -> AuthVerdict {
        let ip = client_key(ip);
        self.verdict(&lock(&self.state), ip, account, now)
    }

    fn verdict(&self, state: &GuardState, ip: IpAddr, account: &str, now: Instant) -> AuthVerdict {
        let from_ip = state.ips.get(&ip);
        // Failures of a window gone by count no more; its checks under
        // way still do.
        let failures = |f: &IpFailures| match f.failures.stale(now, self.window) {
            true => 0,
            false => f.failures.count,
        };
        if let Some(f) = from_ip {
            // Failures and the checks under way that could each add one:
            // together they stay within the limit, so guesses sent at once
            // cannot pass it. An address that never failed may have as
            // many checks under way as the limit (a busy NAT's logins are
            // short: a remembered password is checked in microseconds).
            let in_doubt = failures(f) + f.in_flight;
            let full = self.per_ip > 0 && f.in_flight > 0 && in_doubt >= self.per_ip;
            let busy = f.in_flight >= MAX_CHECKS_AT_ONCE;
            if f.failures.locked(now) || full || busy {
                return AuthVerdict::LockedOut;
            }
        }
        if let Some(acct) = state.accounts.get(account) {
            // An account under attack stays open to addresses that have
            // not failed for it: its owner logging in from elsewhere.
            if acct.failures.locked(now) && acct.from.contains(&ip) {
                return AuthVerdict::LockedOut;
            }
        }
        let clean = from_ip.is_none_or(|f| failures(f) == 0);
        AuthVerdict::Allowed { clean }
    }

    /// A login from `ip` as `account` begins: refused when locked out;
    /// otherwise the attempt, to be ended with its outcome. An address
    /// with recent failures holds a place against its limit until then.
    pub fn attempt(&self, ip: IpAddr, account: &str, now: Instant) -> Result<Attempt<'_>, Locked> {
        let ip = client_key(ip);
        let mut state = lock(&self.state);
        let AuthVerdict::Allowed { clean } = self.verdict(&state, ip, account, now) else {
            return Err(Locked);
        };
        state
            .ips
            .entry(ip)
            .or_insert_with(|| IpFailures::new(now))
            .in_flight += 1;
        Ok(Attempt {
            guard: self,
            ip,
            account: account.to_owned(),
            clean,
            reserved: true,
        })
    }

    /// A login from `ip` as `account` failed; returns the lockouts it
    /// started.
    pub fn failed(&self, ip: IpAddr, account: &str, now: Instant) -> Vec<Lockout> {
        self.ended(client_key(ip), account, false, Some(now))
    }

    /// A login from `ip` as `account` succeeded: the address's failures
    /// are forgiven when they were all for this account (its owner
    /// mistyping), not when they were guesses at others.
    pub fn succeeded(&self, ip: IpAddr, account: &str, now: Instant) {
        let ip = client_key(ip);
        let mut state = lock(&self.state);
        if state.ips.get(&ip).is_some_and(|f| {
            !f.failures.locked(now)
                && f.in_flight == 0
                && f.only_account.as_deref() == Some(account)
        }) {
            state.ips.remove(&ip);
        }
    }

    /// Release a reserved place (`reserved`), and count a failure when
    /// `failed_at` says when it failed.
    fn ended(
        &self,
        ip: IpAddr,
        account: &str,
        reserved: bool,
        failed_at: Option<Instant>,
    ) -> Vec<Lockout> {
        let (window, lockout) = (self.window, self.lockout);
        let mut state = lock(&self.state);
        if reserved {
            if let Some(f) = state.ips.get_mut(&ip) {
                f.in_flight = f.in_flight.saturating_sub(1);
                if f.in_flight == 0 && f.failures.count == 0 && failed_at.is_none() {
                    // A clean address's last login ended well: forget it.
                    state.ips.remove(&ip);
                }
            }
        }
        let Some(now) = failed_at else {
            return Vec::new();
        };
        if state.ips.len() + state.accounts.len() >= MAX_TRACKED {
            state
                .ips
                .retain(|_, f| f.in_flight > 0 || !f.failures.stale(now, window));
            state.accounts.retain(|_, a| !a.failures.stale(now, window));
        }
        let mut started = Vec::new();
        let from_ip = state.ips.entry(ip).or_insert_with(|| IpFailures::new(now));
        let first = from_ip.failures.count == 0
            || now.saturating_duration_since(from_ip.failures.since) > window;
        if first {
            from_ip.only_account = Some(account.to_owned());
        } else if from_ip.only_account.as_deref() != Some(account) {
            from_ip.only_account = None;
        }
        if from_ip.failures.add(now, window, lockout, self.per_ip) {
            started.push(Lockout::Ip(ip));
        }
        let acct = state
            .accounts
            .entry(account.to_owned())
            .or_insert_with(|| AccountFailures {
                failures: Failures::new(now),
                from: HashSet::new(),
            });
        // A new window forgets who failed, but not while the lockout they
        // earned runs: a late guess from elsewhere must not lift it.
        if now.saturating_duration_since(acct.failures.since) > window && !acct.failures.locked(now)
        {
            acct.from.clear();
        }
        if acct.from.len() < MAX_IPS_PER_ACCOUNT {
            acct.from.insert(ip);
        }
        if acct.failures.add(now, window, lockout, self.per_account) {
            started.push(Lockout::Account(account.to_owned()));
        }
        started
    }
}

/// Refused: the address (or the address for this account) is locked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked;

/// A login under way ([`AuthGuard::attempt`]): end it with
/// [`Attempt::failed`] or [`Attempt::succeeded`]; dropped without either
/// (the check could not run, the client left), it counts as neither.
pub struct Attempt<'a> {
    guard: &'a AuthGuard,
    ip: IpAddr,
    account: String,
    clean: bool,
    reserved: bool,
}

impl Attempt<'_> {
    /// No failure from this address in the window (its password check
    /// goes first in the queue).
    pub fn clean(&self) -> bool {
        self.clean
    }

    /// The password was wrong; returns the lockouts this started.
    pub fn failed(mut self, now: Instant) -> Vec<Lockout> {
        let reserved = std::mem::take(&mut self.reserved);
        self.guard
            .ended(self.ip, &self.account, reserved, Some(now))
    }

    /// The password was right.
    pub fn succeeded(mut self, now: Instant) {
        let reserved = std::mem::take(&mut self.reserved);
        self.guard.ended(self.ip, &self.account, reserved, None);
        self.guard.succeeded(self.ip, &self.account, now);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.reserved {
            self.guard.ended(self.ip, &self.account, true, None);
        }
    }
}

/// Messages per account per hour (submission), as a token bucket per
/// account: `per_hour` tokens, refilled continuously.
pub struct SendRate {
    /// A config reload may change it.
    per_hour: std::sync::atomic::AtomicU32,
    accounts: Mutex<HashMap<String, (f64, Instant)>>,
}

impl SendRate {
    /// A limiter; 0 means no limit.
    pub fn new(per_hour: u32) -> SendRate {
        SendRate {
            per_hour: std::sync::atomic::AtomicU32::new(per_hour),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// Allow `per_hour` from now on (a reload; 0: no limit).
    pub fn reconfigure(&self, per_hour: u32) {
        self.per_hour
            .store(per_hour, std::sync::atomic::Ordering::Relaxed);
    }

    fn per_hour(&self) -> u32 {
        self.per_hour.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn refill(&self, tokens: &mut (f64, Instant), now: Instant) {
        let rate = f64::from(self.per_hour());
        let elapsed = now.saturating_duration_since(tokens.1).as_secs_f64();
        tokens.0 = (tokens.0 + elapsed * rate / 3600.0).min(rate);
        tokens.1 = now;
    }

    /// Whether `account` may send one more message now.
    pub fn has_room(&self, account: &str, now: Instant) -> bool {
        if self.per_hour() == 0 {
            return true;
        }
        let mut accounts = lock(&self.accounts);
        match accounts.get_mut(account) {
            Some(tokens) => {
                self.refill(tokens, now);
                tokens.0 >= 1.0
            }
            None => true,
        }
    }

    /// Take one message from `account`'s allowance, if it has one: the
    /// check and the count are one step, so sessions of one account on
    /// every shard at once cannot send past it together.
    pub fn take(&self, account: &str, now: Instant) -> bool {
        if self.per_hour() == 0 {
            return true;
        }
        let rate = f64::from(self.per_hour());
        let mut accounts = lock(&self.accounts);
        if accounts.len() >= MAX_TRACKED {
            accounts.retain(|_, t| now.saturating_duration_since(t.1).as_secs() < 3600);
        }
        let tokens = accounts.entry(account.to_owned()).or_insert((rate, now));
        self.refill(tokens, now);
        if tokens.0 < 1.0 {
            return false;
        }
        tokens.0 -= 1.0;
        true
    }

    /// Give back what [`SendRate::take`] took (the message was not
    /// stored after all).
    pub fn give_back(&self, account: &str) {
        if let Some(tokens) = lock(&self.accounts).get_mut(account) {
            tokens.0 = (tokens.0 + 1.0).min(f64::from(self.per_hour()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LimitsConfig {
        LimitsConfig {
            max_connections_per_ip: 2,
            connections_per_minute_per_ip: 3,
            auth_failures_per_ip: 3,
            auth_failures_per_account: 5,
            auth_window_secs: 60,
            lockout_secs: 120,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let limits = ConnectionLimits::new(&config(), &[]);
        let t = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _first = limits.admit(a, t).unwrap();
        let _second = limits.admit(b, t).unwrap();
        assert_eq!(
            limits.admit("2001:db8:1:2::77".parse().unwrap(), t).err(),
            Some(Refusal::PerIp),
            "another address of the same /64"
        );
        assert!(limits.admit(elsewhere, t).is_ok());
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn connections_per_ip_and_per_minute() {
        let limits = ConnectionLimits::new(&config(), &[]);
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t = Instant::now();
        let first = limits.admit(a, t).unwrap();
        let _second = limits.admit(a, t).unwrap();
        assert_eq!(limits.admit(a, t).err(), Some(Refusal::PerIp));
        let _other = limits.admit(b, t).unwrap();
        drop(first);
        // A slot is free again, but the minute's third token is the last.
        let third = limits.admit(a, t).unwrap();
        drop(third);
        assert_eq!(limits.admit(a, t).err(), Some(Refusal::Rate));
        // Twenty seconds earn one more.
        let _fourth = limits.admit(a, t + Duration::from_secs(20)).unwrap();
        // IPv4-mapped IPv6 is the same client.
        assert_eq!(
            limits
                .admit(
                    "::ffff:192.0.2.1".parse().unwrap(),
                    t + Duration::from_secs(20)
                )
                .err(),
            Some(Refusal::PerIp)
        );
    }

    #[test]
    fn exempt_networks_are_not_counted() {
        let limits = ConnectionLimits::new(
            &LimitsConfig {
                exempt_networks: vec!["127.0.0.0/8".parse().unwrap()],
                ..config()
            },
            &["10.0.0.0/8".parse().unwrap()],
        );
        let t = Instant::now();
        let held: Vec<_> = (0..10)
            .map(|_| limits.admit("127.0.0.1".parse().unwrap(), t).unwrap())
            .collect();
        assert_eq!(held.len(), 10);
        let trusted: Vec<_> = (0..10)
            .map(|_| limits.admit("10.1.2.3".parse().unwrap(), t).unwrap())
            .collect();
        assert_eq!(trusted.len(), 10);
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn an_address_is_locked_out_after_its_failures() {
        let guard = AuthGuard::new(&config());
        let (bad, good) = ("192.0.2.66".parse().unwrap(), "192.0.2.7".parse().unwrap());
        let t = Instant::now();
        assert_eq!(
            guard.check(bad, "ann", t),
            AuthVerdict::Allowed { clean: true }
        );
        assert!(guard.failed(bad, "ann", t).is_empty());
        assert_eq!(
            guard.check(bad, "ann", t),
            AuthVerdict::Allowed { clean: false }
        );
        guard.failed(bad, "bob", t);
        assert_eq!(guard.failed(bad, "cy", t), vec![Lockout::Ip(bad)]);
        assert_eq!(guard.check(bad, "dee", t), AuthVerdict::LockedOut);
        assert_eq!(
            guard.check(good, "ann", t),
            AuthVerdict::Allowed { clean: true }
        );
        // The lockout ends.
        let later = t + Duration::from_secs(121);
        assert_eq!(
            guard.check(bad, "ann", later),
            AuthVerdict::Allowed { clean: true }
        );
    }

    #[test]
    fn an_account_under_attack_stays_open_to_its_owner() {
        let guard = AuthGuard::new(&config());
        let t = Instant::now();
        let attackers: Vec<IpAddr> = (1..=5)
            .map(|i| format!("198.51.100.{i}").parse().unwrap())
            .collect();
        let mut started = Vec::new();
        for ip in &attackers {
            started.extend(guard.failed(*ip, "ann", t));
        }
        assert_eq!(started, vec![Lockout::Account("ann".into())]);
        // Each attacker is out of ann's account, though not locked itself.
        assert_eq!(guard.check(attackers[0], "ann", t), AuthVerdict::LockedOut);
        assert_eq!(
            guard.check(attackers[0], "bob", t),
            AuthVerdict::Allowed { clean: false }
        );
        // Ann, from an address that never failed, gets in.
        let ann: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            guard.check(ann, "ann", t),
            AuthVerdict::Allowed { clean: true }
        );
    }

    /// A guess from a new address after the failure window does not lift
    /// the lockout that the addresses before it earned (window 60 s,
    /// lockout 120 s).
    #[test]
    fn a_late_guess_does_not_lift_an_account_lockout() {
        let guard = AuthGuard::new(&config());
        let t = Instant::now();
        let attackers: Vec<IpAddr> = (1..=6)
            .map(|i| format!("198.51.100.{i}").parse().unwrap())
            .collect();
        for ip in &attackers[..5] {
            guard.failed(*ip, "ann", t);
        }
        let later = t + Duration::from_secs(61);
        guard.failed(attackers[5], "ann", later);
        assert_eq!(
            guard.check(attackers[0], "ann", later),
            AuthVerdict::LockedOut,
            "still locked out of ann"
        );
    }

    #[test]
    fn sending_rate_per_account() {
        let rate = SendRate::new(2);
        let t = Instant::now();
        assert!(rate.has_room("ann", t));
        assert!(rate.take("ann", t));
        assert!(rate.take("ann", t));
        assert!(!rate.take("ann", t), "two an hour");
        assert!(!rate.has_room("ann", t));
        rate.give_back("ann");
        assert!(rate.has_room("ann", t), "a message not stored after all");
        assert!(rate.take("ann", t));
        assert!(rate.has_room("bob", t));
        // Half an hour earns one message back.
        assert!(rate.has_room("ann", t + Duration::from_secs(1800)));
        assert!(SendRate::new(0).has_room("ann", t));
        assert!((0..1000).all(|_| SendRate::new(0).take("ann", t)));
    }

    #[test]
    fn sessions_sending_at_once_never_pass_the_hourly_rate() {
        let rate = std::sync::Arc::new(SendRate::new(50));
        let t = Instant::now();
        let taken: usize = (0..4)
            .map(|_| {
                let rate = rate.clone();
                std::thread::spawn(move || (0..100).filter(|_| rate.take("ann", t)).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .sum();
        assert_eq!(taken, 50);
    }

    #[test]
    fn success_forgives_an_address() {
        let guard = AuthGuard::new(&config());
        let ip = "192.0.2.5".parse().unwrap();
        let t = Instant::now();
        guard.failed(ip, "ann", t);
        guard.failed(ip, "ann", t);
        guard.succeeded(ip, "ann", t);
        assert!(guard.failed(ip, "ann", t).is_empty());
        assert_eq!(
            guard.check(ip, "ann", t),
            AuthVerdict::Allowed { clean: false }
        );
    }

    #[test]
    fn a_clean_address_is_forgotten_once_its_logins_end() {
        let guard = AuthGuard::new(&config());
        let ip = "192.0.2.5".parse().unwrap();
        let t = Instant::now();
        guard.attempt(ip, "ann", t).unwrap().succeeded(t);
        drop(guard.attempt(ip, "ann", t).unwrap());
        assert!(guard.state.lock().unwrap().ips.is_empty());
    }

    #[test]
    fn one_good_password_does_not_forgive_guesses_at_others() {
        // Limit 3 per address: two guesses at others, a login to the
        // attacker's own account, and the third guess still locks it out.
        let guard = AuthGuard::new(&config());
        let ip = "192.0.2.5".parse().unwrap();
        let t = Instant::now();
        guard.failed(ip, "ann", t);
        guard.failed(ip, "bob", t);
        guard.succeeded(ip, "mallory", t);
        assert_eq!(guard.failed(ip, "cy", t), vec![Lockout::Ip(ip)]);
        assert_eq!(guard.check(ip, "mallory", t), AuthVerdict::LockedOut);
    }

    /// However clean, one address has at most MAX_CHECKS_AT_ONCE checks
    /// under way (when no failure limit is lower): a few addresses cannot
    /// fill the shared pool.
    #[test]
    fn one_address_cannot_take_the_whole_password_pool() {
        let guard = AuthGuard::new(&LimitsConfig {
            auth_failures_per_ip: 0,
            ..config()
        });
        let ip = "192.0.2.5".parse().unwrap();
        let t = Instant::now();
        let running: Vec<_> = (0..MAX_CHECKS_AT_ONCE)
            .map(|_| guard.attempt(ip, "ann", t).unwrap())
            .collect();
        assert!(guard.attempt(ip, "ann", t).is_err());
        let other: IpAddr = "192.0.2.6".parse().unwrap();
        assert!(
            guard.attempt(other, "ann", t).is_ok(),
            "others are not held back"
        );
        drop(running);
        assert!(guard.attempt(ip, "ann", t).is_ok());
    }

    /// Failures of a window gone by are forgiven, but the checks under
    /// way still count: waiting out the window and then sending hundreds
    /// of guesses at once does not pass the limit.
    #[test]
    fn checks_under_way_count_after_the_window_too() {
        let guard = AuthGuard::new(&config());
        let ip = "192.0.2.5".parse().unwrap();
        let t = Instant::now();
        guard.failed(ip, "ann", t);
        guard.failed(ip, "bob", t);
        let later = t + Duration::from_secs(61);
        let running: Vec<_> = (0..3)
            .map(|_| guard.attempt(ip, "cy", later).unwrap())
            .collect();
        assert!(running[0].clean(), "the old failures are forgiven");
        assert!(guard.attempt(ip, "cy", later).is_err(), "the limit holds");
    }

    #[test]
    fn guesses_in_flight_count_against_the_limit() {
        // Limit 3: after one failure, two more attempts may be checked at
        // once; a third waits for one of them to end.
        let guard = AuthGuard::new(&config());
        let ip = "192.0.2.5".parse().unwrap();
        let t = Instant::now();
        // Clean, as many at once as the limit: guesses sent together
        // cannot pass it before the first of them fails.
        let first = guard.attempt(ip, "ann", t).unwrap();
        assert!(first.clean());
        let clean: Vec<_> = (0..2)
            .map(|_| guard.attempt(ip, "bob", t).unwrap())
            .collect();
        assert_eq!(guard.attempt(ip, "dee", t).err(), Some(Locked));
        // The first fails while the others run: they count with it.
        assert!(first.failed(t).is_empty());
        assert_eq!(guard.attempt(ip, "dee", t).err(), Some(Locked));
        drop(clean);
        assert_eq!(guard.state.lock().unwrap().ips[&ip].in_flight, 0);
        let second = guard.attempt(ip, "bob", t).unwrap();
        let third = guard.attempt(ip, "cy", t).unwrap();
        assert!(!second.clean());
        assert_eq!(guard.attempt(ip, "dee", t).err(), Some(Locked));
        // One ends without a verdict (the client left): its place is free.
        drop(third);
        let third = guard.attempt(ip, "cy", t).unwrap();
        assert!(second.failed(t).is_empty());
        assert_eq!(third.failed(t), vec![Lockout::Ip(ip)]);
        assert_eq!(guard.attempt(ip, "eve", t).err(), Some(Locked));
    }
}
