//! The webhook poster: a thread of its own that posts the delivery events
//! ([`crate::events`]) waiting in the store to each endpoint (`webhook.url`
//! and `webhook.endpoints`, one task each, every endpoint its own rows),
//! oldest first, as JSON arrays of at most `webhook.batch_size` events, and
//! deletes them once the endpoint answers 2xx. A failed POST (no connection, a timeout,
//! any other status) is tried again after a pause that starts at a second
//! and doubles up to `webhook.retry_max_secs`; the events wait in the
//! store meanwhile, so a restart loses none. Delivery is at least once: an
//! endpoint that took a batch but whose answer was lost sees it again.
//!
//! Memory holds one batch at a time; the backlog is on disk. hyper's
//! HTTP/1.1 client on a tokio current-thread runtime, rustls for https
//! (the webpki roots), one connection per batch.

use crate::config::WebhookConfig;
use crate::events::Endpoint;
use crate::metrics::WebhookMetrics;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Uri};
use ringpost_storage::{events, CommitHandle, Store, WriteBatch};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Old events dropped per round (`webhook.max_event_age_hours`).
const MAX_DROPPED: usize = 10_000;

/// How often an idle poster looks for new events.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// The poster's thread.
pub struct WebhookPoster {
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl WebhookPoster {
    /// Start posting what `store` holds to every endpoint of `config`.
    pub fn start(
        config: WebhookConfig,
        store: Arc<dyn Store>,
        commits: CommitHandle,
        metrics: WebhookMetrics,
    ) -> std::io::Result<WebhookPoster> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let posters: Vec<Poster> = crate::events::endpoints(&config)
            .into_iter()
            .map(|endpoint| Poster {
                endpoint,
                config: config.clone(),
                store: store.clone(),
                commits: commits.clone(),
                metrics: metrics.clone(),
            })
            .collect();
        let thread = std::thread::Builder::new()
            .name("ringpost-webhook".into())
            .spawn(move || {
                runtime.block_on(forget_removed(&posters));
                let all = posters.into_iter().map(|p| p.run(stopped.clone()));
                runtime.block_on(futures::future::join_all(all));
            })?;
        Ok(WebhookPoster {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Delete the waiting events of endpoints no longer configured: nobody
/// would ever post them.
async fn forget_removed(posters: &[Poster]) {
    let Some(first) = posters.first() else {
        return;
    };
    let prefixes: Vec<Vec<u8>> = posters.iter().map(|p| p.endpoint.prefix.clone()).collect();
    loop {
        let batch = match events::forget_others(&*first.store, &prefixes, MAX_DROPPED) {
            Ok(batch) if batch.is_empty() => return,
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: cannot look for events of removed endpoints");
                return;
            }
        };
        let n = batch.len();
        if let Err(e) = first.commits.commit(batch).await {
            tracing::warn!(error = %e, "webhook: cannot delete events of removed endpoints");
            return;
        }
        tracing::info!(
            events = n,
            "webhook: events of endpoints no longer configured deleted"
        );
    }
}

impl Drop for WebhookPoster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One endpoint's poster.
struct Poster {
    endpoint: Endpoint,
    config: WebhookConfig,
    store: Arc<dyn Store>,
    commits: CommitHandle,
    metrics: WebhookMetrics,
}

impl Poster {
    async fn run(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let url = self.endpoint.url.clone();
        let endpoint = self.endpoint.name.as_str();
        tracing::info!(endpoint, %url, "webhook: posting delivery events");
        let mut pause = Duration::ZERO;
        // Events still to post one at a time, to find one the endpoint refuses.
        let mut singly = 0usize;
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            let size = if singly > 0 {
                1
            } else {
                self.config.batch_size
            };
            pause = match self.post_some(&url, size).await {
                Ok(0) => IDLE_POLL,
                Ok(n) => {
                    singly = singly.saturating_sub(n);
                    Duration::ZERO
                }
                Err(Failed::Refused(n)) if n > 1 => {
                    tracing::warn!(endpoint, %url, events = n, "webhook: the endpoint refused a batch; posting its events one at a time");
                    singly = n;
                    Duration::ZERO
                }
                Err(Failed::Refused(_)) => {
                    singly = singly.saturating_sub(1);
                    Duration::ZERO
                }
                Err(Failed::Retry(why)) => {
                    let next = (pause * 2).clamp(
                        Duration::from_secs(1),
                        Duration::from_secs(self.config.retry_max_secs),
                    );
                    tracing::warn!(endpoint, %url, error = %why, retry_in_secs = next.as_secs(), "webhook: POST failed; the events wait in the store");
                    next
                }
            };
        }
    }

    /// Post the oldest `size` events, if any, and delete them once taken;
    /// how many were posted. A single event the endpoint refuses for good
    /// (a 4xx other than 408 and 429) is dropped, logged and counted, so it
    /// cannot hold back every event after it.
    async fn post_some(&self, url: &str, size: usize) -> Result<usize, Failed> {
        let batch = events::oldest(&*self.store, &self.endpoint.prefix, size)
            .map_err(|e| Failed::Retry(format!("cannot read events: {e}")))?;
        let Some((first, _)) = batch.first() else {
            self.metrics.oldest_age(&self.endpoint.name, 0.0);
            return Ok(0);
        };
        let now = crate::intake::unix_micros();
        let age = now.saturating_sub(events::key_micros(first));
        self.metrics
            .oldest_age(&self.endpoint.name, age as f64 / 1e6);
        let max_age = self
            .config
            .max_event_age_hours
            .saturating_mul(3_600_000_000);
        if age > max_age {
            return self.drop_older(now.saturating_sub(max_age)).await;
        }
        let mut body =
            Vec::with_capacity(batch.iter().map(|(_, v)| v.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, (_, event)) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(event);
        }
        body.push(b']');
        let timeout = Duration::from_secs(self.config.timeout_secs);
        let posted = tokio::time::timeout(timeout, self.post(url, body)).await;
        let refused = match posted {
            Ok(Ok(())) => false,
            Ok(Err(Failed::Refused(_))) if batch.len() > 1 => {
                self.metrics.post(&self.endpoint.name, "refused");
                return Err(Failed::Refused(batch.len()));
            }
            Ok(Err(Failed::Refused(status))) => {
                self.metrics.post(&self.endpoint.name, "refused");
                let event = String::from_utf8_lossy(&batch[0].1);
                tracing::error!(endpoint = %self.endpoint.name, %url, status, %event, "webhook: the endpoint refuses this event for good; dropped");
                self.metrics.dropped(&self.endpoint.name, 1);
                true
            }
            Ok(Err(failed)) => {
                self.metrics.post(&self.endpoint.name, "failed");
                return Err(failed);
            }
            Err(_) => {
                self.metrics.post(&self.endpoint.name, "timeout");
                return Err(Failed::Retry(format!(
                    "no answer within {} s",
                    timeout.as_secs()
                )));
            }
        };
        let mut done = WriteBatch::new();
        for (key, _) in &batch {
            events::delete(&mut done, key);
        }
        self.commits.commit(done).await.map_err(|e| {
            Failed::Retry(format!(
                "posted, but cannot delete the events (they will be posted again): {e}"
            ))
        })?;
        if refused {
            return Err(Failed::Refused(1));
        }
        self.metrics.post(&self.endpoint.name, "ok");
        self.metrics.posted(&self.endpoint.name, batch.len());
        tracing::debug!(endpoint = %self.endpoint.name, events = batch.len(), "webhook: events posted");
        Ok(batch.len())
    }

    /// Drop up to [`MAX_DROPPED`] events from before `cutoff` (unix µs):
    /// they waited longer than `webhook.max_event_age_hours`.
    async fn drop_older(&self, cutoff: u64) -> Result<usize, Failed> {
        let old = events::oldest(&*self.store, &self.endpoint.prefix, MAX_DROPPED)
            .map_err(|e| Failed::Retry(format!("cannot read events: {e}")))?;
        let mut done = WriteBatch::new();
        let mut dropped = 0;
        for (key, _) in old
            .iter()
            .take_while(|(key, _)| events::key_micros(key) < cutoff)
        {
            events::delete(&mut done, key);
            dropped += 1;
        }
        self.commits
            .commit(done)
            .await
            .map_err(|e| Failed::Retry(format!("cannot drop old events: {e}")))?;
        self.metrics.dropped(&self.endpoint.name, dropped);
        tracing::warn!(
            endpoint = %self.endpoint.name,
            events = dropped,
            max_age_hours = self.config.max_event_age_hours,
            "webhook: events older than the limit dropped unposted"
        );
        Ok(dropped)
    }

    /// One POST of `body` to `url`; Ok on a 2xx answer.
    async fn post(&self, url: &str, body: Vec<u8>) -> Result<(), Failed> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let authority = uri.authority().map_or("", |a| a.as_str()).to_owned();
        let mut request = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "ringpost-webhook");
        if let Some(authorization) = &self.endpoint.authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let tls = crate::http_client::web_pki();
        let (status, _) = crate::http_client::send(&uri, request, &tls, 64 * 1024).await?;
        let code = status.as_u16();
        match code {
            200..=299 => Ok(()),
            // What is wrong with the events themselves: they are dropped
            // (one by one, to find which). Anything else (401, 403, 404: a
            // rotated secret, a deploy) is the endpoint's to mend, and the
            // events wait for it.
            400 | 413 | 415 | 422 => Err(Failed::Refused(code as usize)),
            _ => Err(Failed::Retry(format!("the endpoint answered {status}"))),
        }
    }
}

/// Why a POST did not take.
enum Failed {
    /// Try the same again later (no connection, a timeout, 5xx, 401, 403,
    /// 404, 408, 429: any answer but those that refuse the events).
    Retry(String),
    /// The endpoint refuses it for good (4xx): the status, or from
    /// `post_some` the number of events refused together.
    Refused(usize),
}

impl From<String> for Failed {
    fn from(why: String) -> Failed {
        Failed::Retry(why)
    }
}

impl From<&str> for Failed {
    fn from(why: &str) -> Failed {
        Failed::Retry(why.to_owned())
    }
}
