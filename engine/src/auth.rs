//! Logins for every protocol: lockout check, a short-lived cache of
//! verified passwords, and Argon2 on a small pool of its own threads.
//!
//! An Argon2id check costs tens of milliseconds of CPU by design. Run on
//! the shards it would stall every session there; run on one thread per
//! shard, a flood of guesses queues real users behind it. So checks go to
//! [`AuthPool`] threads through three queues, served in order: an account
//! logging in from a client it logged in from lately ([`Standing::Known`]:
//! an attacker cannot be there), then addresses with no recent failure,
//! then the rest. Each queue is bounded on its own, so a flood in one (a
//! botnet's fresh IPv6 /64s are all "clean" once) cannot keep the others
//! out, and a full one answers "try again later" at once. Addresses and
//! accounts that fail too often are refused before their password is
//! looked at ([`AuthGuard`]).
//!
//! A password that checked out is remembered for `auth_cache_secs` as a
//! keyed hash (HMAC-SHA-256 with a key made at start), together with the
//! stored password hash it matched. Every login still reads the account,
//! so a changed password or a deleted account misses the cache at once.

use crate::config::LimitsConfig;
use crate::limits::{AuthGuard, Lockout};
use crate::users::verify_password;
use futures::channel::oneshot;
use ring::hmac;
use ringpost_storage::{users, Store, StoreError};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Checks waiting for a pool thread before new ones are turned away.
const MAX_QUEUED: usize = 256;
/// Verified passwords remembered at most.
const MAX_CACHED: usize = 16 * 1024;
/// How long a client an account logged in from stays its known client.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Known (client, account) pairs remembered at most.
const MAX_KNOWN: usize = 64 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a login ended.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The credentials are good: the account's canonical name.
    Accepted(String),
    /// No such account, or the wrong password.
    Rejected,
    /// Refused unchecked: too many failures from this address or for
    /// this account.
    LockedOut,
    /// The check could not run (store failure, queue full): try later.
    Unavailable(String),
}

/// Everything a protocol needs to log a client in.
pub struct Authenticator {
    store: Arc<dyn Store>,
    guard: AuthGuard,
    pool: AuthPool,
    cache: Mutex<HashMap<String, Verified>>,
    cache_for: Duration,
    /// When each account last logged in from each client (address, IPv6
    /// /64): its checks go first ([`Standing::Known`]).
    known: Mutex<HashMap<(IpAddr, String), Instant>>,
    key: hmac::Key,
    lockouts: Box<dyn Fn(&Lockout) + Send + Sync>,
}

/// A password that checked out.
struct Verified {
    tag: hmac::Tag,
    /// The stored hash it matched; a new password changes it.
    hash: String,
    at: Instant,
}

impl Authenticator {
    /// An authenticator over `store`; `on_lockout` hears of every lockout
    /// that starts (metrics, log).
    pub fn new(
        store: Arc<dyn Store>,
        config: &LimitsConfig,
        on_lockout: Box<dyn Fn(&Lockout) + Send + Sync>,
    ) -> Authenticator {
        let threads = match config.auth_threads {
            0 => (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1),
            n => n,
        };
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the OS has randomness");
        Authenticator {
            store,
            guard: AuthGuard::new(config),
            pool: AuthPool::start(threads),
            cache: Mutex::new(HashMap::new()),
            cache_for: Duration::from_secs(config.auth_cache_secs),
            known: Mutex::new(HashMap::new()),
            key,
            lockouts: on_lockout,
        }
    }

    /// Check `name` and `password` for a client at `ip`.
    pub async fn login(&self, ip: IpAddr, name: &str, password: &str) -> LoginOutcome {
        // What no account can be (too long, control characters or spaces,
        // an overlong password) is refused before it costs a check or a
        // place in the failure table.
        let impossible = name.len() > crate::users::MAX_NAME_LEN
            || password.len() > crate::users::MAX_PASSWORD_LEN
            || name.chars().any(|c| c.is_control() || c.is_whitespace());
        if impossible {
            return LoginOutcome::Rejected;
        }
        // Folded as the store folds account names, so that one account has
        // one lockout, one cache entry and one identity however its name
        // is spelt (`K` and KELVIN SIGN alike).
        let name = name.to_lowercase();
        let now = Instant::now();
        let Ok(attempt) = self.guard.attempt(ip, &name, now) else {
            return LoginOutcome::LockedOut;
        };
        let client = crate::limits::client_key(ip);
        let standing = if self.is_known(client, &name, now) {
            Standing::Known
        } else if attempt.clean() {
            Standing::Clean
        } else {
            Standing::Suspect
        };
        let account = match users::get_user(&*self.store, &name) {
            Ok(account) => account,
            Err(e) => return LoginOutcome::Unavailable(e.to_string()),
        };
        let tag = hmac::sign(&self.key, password.as_bytes());
        let cached = account.as_ref().is_some_and(|user| {
            lock(&self.cache).get(&name).is_some_and(|v| {
                v.hash == user.password_hash
                    && now.saturating_duration_since(v.at) < self.cache_for
                    && hmac::verify(&self.key, password.as_bytes(), v.tag.as_ref()).is_ok()
            })
        });
        let good = if cached {
            true
        } else {
            // An unknown name costs the same check against a dummy hash,
            // so timing does not tell which accounts exist.
            let hash = account
                .as_ref()
                .map_or_else(|| dummy_hash().to_owned(), |u| u.password_hash.clone());
            let password = password.to_owned();
            let check = move || verify_password(&password, &hash).unwrap_or(false);
            match self.pool.run(check, standing).await {
                Some(good) => good && account.is_some(),
                None => return LoginOutcome::Unavailable("password checks are queued full".into()),
            }
        };
        if good {
            if let Some(user) = &account {
                if !cached && !self.cache_for.is_zero() {
                    self.remember(&name, tag, &user.password_hash, now);
                }
            }
            self.know(client, &name, now);
            attempt.succeeded(now);
            LoginOutcome::Accepted(name)
        } else {
            for lockout in attempt.failed(Instant::now()) {
                (self.lockouts)(&lockout);
            }
            LoginOutcome::Rejected
        }
    }

    /// Whether `name` logged in from `client` within [`KNOWN_FOR`].
    fn is_known(&self, client: IpAddr, name: &str, now: Instant) -> bool {
        lock(&self.known)
            .get(&(client, name.to_owned()))
            .is_some_and(|at| now.saturating_duration_since(*at) < KNOWN_FOR)
    }

    /// `name` logged in from `client`.
    fn know(&self, client: IpAddr, name: &str, now: Instant) {
        let mut known = lock(&self.known);
        if known.len() >= MAX_KNOWN {
            known.retain(|_, at| now.saturating_duration_since(*at) < KNOWN_FOR);
            if known.len() >= MAX_KNOWN {
                // Keep the newer half.
                let mut ages: Vec<Instant> = known.values().copied().collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                known.retain(|_, at| *at >= cut);
            }
        }
        known.insert((client, name.to_owned()), now);
    }

    fn remember(&self, name: &str, tag: hmac::Tag, hash: &str, now: Instant) {
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED {
            let ttl = self.cache_for;
            cache.retain(|_, v| now.saturating_duration_since(v.at) < ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            name.to_owned(),
            Verified {
                tag,
                hash: hash.to_owned(),
                at: now,
            },
        );
    }

    /// Forget `name`'s cached password (the store check makes this a
    /// courtesy: a changed hash misses anyway).
    pub fn forget(&self, name: &str) {
        lock(&self.cache).remove(&name.to_ascii_lowercase());
    }
}

impl From<StoreError> for LoginOutcome {
    fn from(e: StoreError) -> Self {
        LoginOutcome::Unavailable(e.to_string())
    }
}

/// An Argon2id hash of a random password, made once.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let random = format!(
            "{:x}",
            crate::intake::unix_micros().wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        crate::users::hash_password(&random).unwrap_or_default()
    })
}

type Job = Box<dyn FnOnce() + Send>;

/// Who a password check is for; checks are served in this order, each
/// kind from a queue bounded on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// The account logged in from this client lately: its usual user.
    Known = 0,
    /// No recent failure from this address or for this account.
    Clean = 1,
    /// Recent failures.
    Suspect = 2,
}

/// Threads for password checks, with a queue per [`Standing`].
struct AuthPool {
    queues: Arc<(Mutex<Queues>, Condvar)>,
}

#[derive(Default)]
struct Queues {
    /// Indexed by [`Standing`].
    waiting: [VecDeque<Job>; 3],
    closed: bool,
}

impl AuthPool {
    fn start(threads: usize) -> AuthPool {
        let queues = Arc::new((Mutex::new(Queues::default()), Condvar::new()));
        for n in 0..threads {
            let queues = queues.clone();
            std::thread::Builder::new()
                .name(format!("ringpost-auth{n}"))
                .spawn(move || worker(&queues))
                .expect("the OS starts a thread");
        }
        AuthPool { queues }
    }

    /// Run `check` on a pool thread; `None` if the queue for `standing`
    /// is full.
    async fn run(
        &self,
        check: impl FnOnce() -> bool + Send + 'static,
        standing: Standing,
    ) -> Option<bool> {
        let (tx, rx) = oneshot::channel();
        {
            let (queues, wake) = &*self.queues;
            let mut queues = lock(queues);
            let queue = &mut queues.waiting[standing as usize];
            if queue.len() >= MAX_QUEUED {
                return None;
            }
            queue.push_back(Box::new(move || {
                let _ = tx.send(check());
            }));
            wake.notify_one();
        }
        rx.await.ok()
    }
}

impl Drop for AuthPool {
    fn drop(&mut self) {
        let (queues, wake) = &*self.queues;
        lock(queues).closed = true;
        wake.notify_all();
    }
}

fn worker(queues: &(Mutex<Queues>, Condvar)) {
    let (queues, wake) = queues;
    loop {
        let job = {
            let mut q = lock(queues);
            loop {
                if let Some(job) = q.waiting.iter_mut().find_map(VecDeque::pop_front) {
                    break job;
                }
                if q.closed {
                    return;
                }
                q = wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringpost_storage::{MemoryStore, WriteBatch};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn store_with(name: &str, password: &str) -> Arc<dyn Store> {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        set_password(&store, name, password);
        store
    }

    fn set_password(store: &Arc<dyn Store>, name: &str, password: &str) {
        let user = crate::users::new_account(name, password, None, 1).unwrap();
        let mut batch = WriteBatch::new();
        users::put_user(&mut batch, &user);
        store.write(&[batch], true).unwrap();
    }

    fn run<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
    where
        F: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn good_bad_cached_and_changed_passwords() {
        let store = store_with("ann@x.test", "right horse");
        let lockouts = Arc::new(AtomicUsize::new(0));
        let counted = lockouts.clone();
        let auth = Arc::new(Authenticator::new(
            store.clone(),
            &LimitsConfig {
                auth_failures_per_ip: 3,
                ..LimitsConfig::default()
            },
            Box::new(move |_| {
                counted.fetch_add(1, Ordering::Relaxed);
            }),
        ));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = auth.clone();
        run(move || async move {
            let t = Instant::now();
            assert_eq!(
                a.login(ip, "Ann@X.test", "right horse").await,
                LoginOutcome::Accepted("ann@x.test".into())
            );
            let hashed = t.elapsed();
            assert!(lock(&a.cache).contains_key("ann@x.test"));
            // Its client is known now: its checks go first from then on.
            let now = Instant::now();
            assert!(a.is_known(crate::limits::client_key(ip), "ann@x.test", now));
            let elsewhere: IpAddr = "198.51.100.1".parse().unwrap();
            assert!(!a.is_known(elsewhere, "ann@x.test", now));
            assert!(!a.is_known(crate::limits::client_key(ip), "bob@x.test", now));
            // Cached now: no hash to check, and still right.
            let t = Instant::now();
            assert_eq!(
                a.login(ip, "ann@x.test", "right horse").await,
                LoginOutcome::Accepted("ann@x.test".into())
            );
            assert!(t.elapsed() < hashed, "{:?} vs {hashed:?}", t.elapsed());
            assert_eq!(
                a.login(ip, "ann@x.test", "wrong").await,
                LoginOutcome::Rejected
            );
            assert_eq!(
                a.login(ip, "nobody@x.test", "x").await,
                LoginOutcome::Rejected
            );
        });
        // A new password: the cached old one no longer works.
        set_password(&store, "ann@x.test", "new battery");
        let a = auth.clone();
        run(move || async move {
            assert_eq!(
                a.login(ip, "ann@x.test", "right horse").await,
                LoginOutcome::Rejected
            );
            // The third failure locks the address out, even for the right
            // password.
            assert_eq!(
                a.login(ip, "ann@x.test", "new battery").await,
                LoginOutcome::LockedOut
            );
        });
        assert_eq!(lockouts.load(Ordering::Relaxed), 1);
    }

    /// One account answers to one identity: the KELVIN SIGN folds to `k`
    /// as the store folds it, so it shares the account's lockout and
    /// cache; names no account can have are refused unchecked.
    #[test]
    fn names_fold_as_the_store_folds_them_and_impossible_ones_are_refused() {
        let store = store_with("kate@x.test", "pw one");
        let auth = Arc::new(Authenticator::new(
            store,
            &LimitsConfig::default(),
            Box::new(|_| {}),
        ));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = auth.clone();
        run(move || async move {
            assert_eq!(
                a.login(ip, "\u{212A}ATE@X.test", "pw one").await,
                LoginOutcome::Accepted("kate@x.test".into())
            );
            let long = format!("{}@x.test", "a".repeat(300));
            for (name, password) in [
                (long.as_str(), "pw one"),
                ("kate@x.test\nforged", "pw one"),
                ("kate@x.test", &*"p".repeat(2000)),
            ] {
                assert_eq!(a.login(ip, name, password).await, LoginOutcome::Rejected);
            }
        });
    }

    #[test]
    fn a_full_queue_answers_at_once_and_keeps_out_no_other() {
        let pool = AuthPool::start(1);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g = gate.clone();
        let started = Arc::new(AtomicBool::new(false));
        let s = started.clone();
        let pool = Arc::new(pool);
        let p = pool.clone();
        run(move || async move {
            // Block the one thread, then fill the queue of failing clients.
            let blocker = glommio::spawn_local({
                let p = p.clone();
                async move {
                    p.run(
                        move || {
                            s.store(true, Ordering::Release);
                            let (open, cv) = &*g;
                            let mut open = lock(open);
                            while !*open {
                                open = cv.wait(open).unwrap();
                            }
                            true
                        },
                        Standing::Clean,
                    )
                    .await
                }
            });
            for _ in 0..1000 {
                if started.load(Ordering::Acquire) {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            assert!(started.load(Ordering::Acquire), "the thread took the job");
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut waiting = Vec::new();
            for _ in 0..MAX_QUEUED {
                let (p, order) = (p.clone(), order.clone());
                waiting.push(glommio::spawn_local(async move {
                    p.run(
                        move || {
                            lock(&order).push(Standing::Suspect);
                            true
                        },
                        Standing::Suspect,
                    )
                    .await
                }));
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert_eq!(p.run(|| true, Standing::Suspect).await, None);
            // The flood keeps out neither clean clients nor known ones, and
            // they are served first.
            let (pc, oc) = (p.clone(), order.clone());
            let clean = glommio::spawn_local(async move {
                pc.run(
                    move || {
                        lock(&oc).push(Standing::Clean);
                        true
                    },
                    Standing::Clean,
                )
                .await
            });
            let (pk, ok) = (p.clone(), order.clone());
            let known = glommio::spawn_local(async move {
                pk.run(
                    move || {
                        lock(&ok).push(Standing::Known);
                        true
                    },
                    Standing::Known,
                )
                .await
            });
            glommio::timer::sleep(Duration::from_millis(50)).await;
            let (open, cv) = &*gate;
            *lock(open) = true;
            cv.notify_all();
            assert_eq!(blocker.await, Some(true));
            assert_eq!(known.await, Some(true));
            assert_eq!(clean.await, Some(true));
            for w in waiting {
                assert_eq!(w.await, Some(true));
            }
            let order = lock(&order);
            assert_eq!(order[..2], [Standing::Known, Standing::Clean], "{order:?}");
        });
    }
}
