//! What the control plane answers.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET, HEAD | `/metrics` | every metric; OpenMetrics when asked for, else the classic text format |
//! | GET, HEAD | `/healthz` | 200 while the process serves HTTP at all |
//! | GET, HEAD | `/readyz` | 200 while the shards serve and the store takes writes, else 503 |
//! | GET | `/api/v1/config` | the effective configuration (defaults included) |
//! | POST | `/api/v1/config/reload` | read the configuration again and put it in force, as SIGHUP does ([`crate::live`]); 422 with why when it is not valid |
//! | GET | `/api/v1/users` | the accounts, with usage and quota |
//! | POST | `/api/v1/users` | `{"name", "password"}`: create (201; 409 if it exists) |
//! | PUT | `/api/v1/users/NAME/password` | `{"password"}`: change it |
//! | PUT | `/api/v1/users/NAME/quota` | `{"storage_bytes", "messages"}`: each a number, `"none"` or `"default"`; absent: unchanged |
//! | DELETE | `/api/v1/users/NAME` | delete the account, its mailboxes and mail; its sessions are logged out |
//! | GET | `/api/v1/users/NAME/sieve` | the account's Sieve scripts: name, size, active |
//! | GET | `/api/v1/users/NAME/sieve/SCRIPT` | `{"name", "text"}` |
//! | PUT | `/api/v1/users/NAME/sieve/SCRIPT` | `{"text", "activate"?}`: store (and by default activate) a script; 422 with the line and why when it does not parse |
//! | DELETE | `/api/v1/users/NAME/sieve/SCRIPT` | delete a script (409 while it is active) |
//! | POST | `/api/v1/users/NAME/sieve/activate` | `{"name"}`: the script delivery runs; `null` for none |
//! | GET | `/api/v1/queue?domain=&sender=&recipient=&min_age=&state=&ids=&limit=` | queue entries, in due order |
//! | GET | `/api/v1/queue/stats` | entries by destination: ready, deferred, held, the oldest |
//! | GET | `/api/v1/queue/ID` | one message: envelope, entries, header |
//! | POST | `/api/v1/queue/ACTION` | `hold`, `release`, `delete`, `bounce` or `flush` the entries a JSON filter picks (`ids`, `domain`, `sender`, `recipient`, `min_age_secs`, `state`, or `"all": true`) |
//!
//! | GET | `/api/v1/suppressions?limit=` | the suppression list |
//! | POST | `/api/v1/suppressions` | `{"address", "scope"?, "ttl_days"?, "reason"?}`: add one |
//! | DELETE | `/api/v1/suppressions/ADDR?scope=` | remove one |
//! | POST | `/api/v1/inject` | store a message for its recipients, as SMTP would ([`crate::inject`]); 200 with the queue ids once durable |
//!
//! `/api/v1/` wants `Authorization: Bearer <token>` (401 otherwise).
//! Answers are JSON; errors are `{"error": "..."}` with a 4xx or 5xx status.

use super::{exposition, AdminContext, MAX_BODY};
use crate::accounts::{self, AccountError, Limit};
use crate::inject::Refusal;
use crate::queue_admin::{self, Action, Filter, Outcome, State};
use crate::sieve::scripts::{self, ScriptError};
use crate::suppressions::{self, SuppressionError};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ACCEPT, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use ringpost_storage::StoreError;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

type Answer = Response<Full<Bytes>>;

/// Answer one request.
pub async fn handle(
    context: &Arc<AdminContext>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Answer {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let read_only = matches!(method, Method::GET | Method::HEAD);
    match path.as_str() {
        "/metrics" | "/healthz" | "/readyz" if !read_only => not_allowed("GET, HEAD"),
        "/metrics" => {
            if context.config().admin.metrics_need_token && !authorized(context, &request) {
                return unauthorized();
            }
            metrics(context, &request)
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            // A full disk is judged again here: with no new mail coming
            // (this answer keeps it away) nothing else would see that
            // space came back.
            let disk_has_room = || {
                !context.metrics.disk_full()
                    || matches!(context.store.disk_room(), Ok(room) if room.is_none_or(|r| r.fits(0)))
            };
            // A commit writer that died (a panic) takes no more mail.
            let ready = context.ready.load(Ordering::Acquire)
                && context.commits.is_open()
                && disk_has_room();
            match ready {
                true => text(StatusCode::OK, "ready\n"),
                false => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            }
        }
        _ if path.starts_with("/api/") => {
            if !authorized(context, &request) {
                tracing::warn!(%peer, %method, %path, "admin: request without a valid token");
                return unauthorized();
            }
            api(context, peer, request).await
        }
        _ => error(StatusCode::NOT_FOUND, "no such path"),
    }
}

/// The versioned JSON API.
async fn api(context: &Arc<AdminContext>, peer: SocketAddr, request: Request<Incoming>) -> Answer {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let segments: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["api", "v1", "users"]) => {
            let default = context.config().quota.default_quota();
            blocking(context, move |c| {
                let list = accounts::list(&*c.store, default)?;
                Ok((StatusCode::OK, json!(list)))
            })
            .await
        }
        (&Method::POST, ["api", "v1", "users"]) => {
            let body = match json_body(request).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let (Some(name), Some(password)) = (string(&body, "name"), string(&body, "password"))
            else {
                return error(StatusCode::BAD_REQUEST, "give \"name\" and \"password\"");
            };
            blocking(context, move |c| {
                let config = c.config();
                let locals = config.local_domain_list();
                let now = crate::intake::unix_micros() / 1_000_000;
                let commit = |batch| c.commits.commit_blocking(batch);
                let user = accounts::add(&*c.store, &commit, &name, &password, Some(&locals), now)?;
                tracing::info!(%peer, user = %user.name, "admin: account added");
                Ok((StatusCode::CREATED, json!({ "name": user.name })))
            })
            .await
        }
        (&Method::PUT, ["api", "v1", "users", name, "password"]) => {
            let name = name.to_string();
            let body = match json_body(request).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let Some(password) = string(&body, "password") else {
                return error(StatusCode::BAD_REQUEST, "give \"password\"");
            };
            blocking(context, move |c| {
                let commit = |batch| c.commits.commit_blocking(batch);
                let user = accounts::set_password(&*c.store, &commit, &name, &password)?;
                tracing::info!(%peer, user = %user.name, "admin: password changed");
                Ok((StatusCode::OK, json!({ "name": user.name })))
            })
            .await
        }
        (&Method::PUT, ["api", "v1", "users", name, "quota"]) => {
            let name = name.to_string();
            let body = match json_body(request).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let (Ok(storage), Ok(messages)) =
                (limit(&body, "storage_bytes"), limit(&body, "messages"))
            else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "\"storage_bytes\" and \"messages\" are each a positive number, \"none\" or \"default\"",
                );
            };
            blocking(context, move |c| {
                let commit = |batch| c.commits.commit_blocking(batch);
                let user = accounts::set_quota(&*c.store, &commit, &name, storage, messages)?;
                tracing::info!(%peer, user = %user.name, "admin: quota changed");
                Ok((StatusCode::OK, json!({ "name": user.name })))
            })
            .await
        }
        (&Method::DELETE, ["api", "v1", "users", name]) => {
            let name = name.to_string();
            blocking(context, move |c| {
                let commit = |batch| c.commits.commit_blocking(batch);
                let mailboxes = accounts::delete(&*c.store, &commit, &name)?;
                let name = name.to_lowercase();
                tracing::info!(%peer, user = %name, mailboxes, "admin: account deleted");
                Ok((
                    StatusCode::OK,
                    json!({ "name": name, "mailboxes": mailboxes }),
                ))
            })
            .await
        }
        (&Method::GET, ["api", "v1", "users", name, "sieve"]) => {
            let name = name.to_string();
            blocking(context, move |c| {
                let scripts = scripts::list(&*c.store, &accounts::existing(&*c.store, &name)?.name)?;
                Ok((StatusCode::OK, json!({ "scripts": scripts })))
            })
            .await
        }
        (&Method::GET, ["api", "v1", "users", name, "sieve", script]) => {
            let (name, script) = (name.to_string(), script.to_string());
            blocking(context, move |c| {
                let user = accounts::existing(&*c.store, &name)?.name;
                let text = scripts::get(&*c.store, &user, &script)?;
                let text = String::from_utf8_lossy(&text).into_owned();
                Ok((StatusCode::OK, json!({ "name": script, "text": text })))
            })
            .await
        }
        (&Method::PUT, ["api", "v1", "users", name, "sieve", script]) => {
            let (name, script) = (name.to_string(), script.to_string());
            // A script may be larger than other requests (JSON escapes
            // can double it).
            let limit = 2 * ringpost_protocols::sieve::MAX_SCRIPT_SIZE + 1024;
            let body = match json_body_up_to(request, limit).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let Some(text) = string(&body, "text") else {
                return error(StatusCode::BAD_REQUEST, "give \"text\", the script");
            };
            let activate = body.get("activate").and_then(Value::as_bool).unwrap_or(true);
            blocking(context, move |c| {
                let commit = |batch| c.commits.commit_blocking(batch);
                scripts::put(&*c.store, &commit, &name, &script, text.as_bytes(), activate)?;
                tracing::info!(%peer, user = %name.to_lowercase(), script, activate, "admin: Sieve script stored");
                Ok((StatusCode::OK, json!({ "name": script, "active": activate })))
            })
            .await
        }
        (&Method::DELETE, ["api", "v1", "users", name, "sieve", script]) => {
            let (name, script) = (name.to_string(), script.to_string());
            blocking(context, move |c| {
                let commit = |batch| c.commits.commit_blocking(batch);
                scripts::delete(&*c.store, &commit, &name, &script)?;
                tracing::info!(%peer, user = %name.to_lowercase(), script, "admin: Sieve script deleted");
                Ok((StatusCode::OK, json!({ "name": script })))
            })
            .await
        }
        (&Method::POST, ["api", "v1", "users", name, "sieve", "activate"]) => {
            let name = name.to_string();
            let body = match json_body(request).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let script = string(&body, "name");
            blocking(context, move |c| {
                let commit = |batch| c.commits.commit_blocking(batch);
                scripts::activate(&*c.store, &commit, &name, script.as_deref())?;
                tracing::info!(%peer, user = %name.to_lowercase(), script = script.as_deref().unwrap_or("-"), "admin: active Sieve script set");
                Ok((StatusCode::OK, json!({ "active": script })))
            })
            .await
        }
        (&Method::GET, ["api", "v1", "config"]) => match serde_json::to_value(context.config().without_secrets()) {
            Ok(config) => json_answer(StatusCode::OK, &config),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        (&Method::POST, ["api", "v1", "config", "reload"]) => {
            blocking(context, move |c| match c.reloader.reload() {
                Ok(reloaded) => {
                    tracing::info!(%peer, generation = reloaded.generation, "admin: configuration reloaded");
                    Ok((StatusCode::OK, json!(reloaded)))
                }
                Err(why) => Err(Failure(StatusCode::UNPROCESSABLE_ENTITY, why)),
            })
            .await
        }
        (_, ["api", "v1", "config", "reload"]) => not_allowed("POST"),
        (&Method::GET, ["api", "v1", "queue"]) => {
            let (filter, limit) = match query_filter(request.uri().query().unwrap_or_default()) {
                Ok(parsed) => parsed,
                Err(problem) => return error(StatusCode::BAD_REQUEST, &problem),
            };
            blocking(context, move |c| {
                let now = crate::intake::unix_micros() / 1000;
                let picked = queue_admin::select(&*c.store, &filter, now, limit)?;
                let views: Vec<_> = picked.into_iter().map(|(_, view)| view).collect();
                Ok((StatusCode::OK, json!(views)))
            })
            .await
        }
        (&Method::GET, ["api", "v1", "queue", "stats"]) => {
            blocking(context, move |c| {
                let now = crate::intake::unix_micros() / 1000;
                Ok((StatusCode::OK, json!(queue_admin::stats(&*c.store, now)?)))
            })
            .await
        }
        (&Method::GET, ["api", "v1", "queue", id]) if *id != "stats" => {
            let id = id.to_string();
            blocking(context, move |c| {
                let now = crate::intake::unix_micros() / 1000;
                match queue_admin::show(&*c.store, &id, now)? {
                    Some(shown) => Ok((StatusCode::OK, json!(shown))),
                    None => Err(Failure(
                        StatusCode::NOT_FOUND,
                        format!("no queued message {id}"),
                    )),
                }
            })
            .await
        }
        (&Method::POST, ["api", "v1", "queue", action]) => {
            let Some(action) = Action::parse(action) else {
                return error(StatusCode::NOT_FOUND, "no such queue action");
            };
            let body = match json_body(request).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let filter = match body_filter(&body) {
                Ok(filter) => filter,
                Err(problem) => return error(StatusCode::BAD_REQUEST, &problem),
            };
            queue_action(context, peer, action, filter).await
        }
        (&Method::GET, ["api", "v1", "suppressions"]) => {
            let query = request.uri().query().unwrap_or_default().to_owned();
            let limit = match query_value(&query, "limit").map(|v| number("limit", &v)) {
                None => 1000,
                Some(Ok(limit)) => limit as usize,
                Some(Err(problem)) => return error(StatusCode::BAD_REQUEST, &problem),
            };
            blocking(context, move |c| {
                let now = crate::intake::unix_micros();
                Ok((
                    StatusCode::OK,
                    json!(suppressions::list(&*c.store, limit, now)?),
                ))
            })
            .await
        }
        (&Method::POST, ["api", "v1", "suppressions"]) => {
            let body = match json_body(request).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let Some(address) = string(&body, "address") else {
                return error(StatusCode::BAD_REQUEST, "give \"address\"");
            };
            let scope = string(&body, "scope").unwrap_or_default();
            let reason = string(&body, "reason").unwrap_or_default();
            let ttl_days = match body.get("ttl_days") {
                None => 0,
                Some(days) => match days.as_u64() {
                    Some(days) => days,
                    None => return error(StatusCode::BAD_REQUEST, "\"ttl_days\" is a number"),
                },
            };
            blocking(context, move |c| {
                let commit = |batch| c.commits.commit_blocking(batch);
                let now = crate::intake::unix_micros();
                let entry = suppressions::add(&commit, &address, &scope, &reason, ttl_days, now)?;
                tracing::info!(%peer, address = %entry.address, scope = %entry.scope, "admin: address suppressed");
                Ok((StatusCode::CREATED, json!(entry)))
            })
            .await
        }
        (&Method::DELETE, ["api", "v1", "suppressions", address]) => {
            let address = address.to_string();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let scope = query_value(&query, "scope").unwrap_or_default();
            blocking(context, move |c| {
                let commit = |batch| c.commits.commit_blocking(batch);
                let now = crate::intake::unix_micros();
                if suppressions::remove(&*c.store, &commit, &address, &scope, now)? {
                    tracing::info!(%peer, %address, %scope, "admin: suppression removed");
                    Ok((
                        StatusCode::OK,
                        json!({ "address": address, "scope": scope }),
                    ))
                } else {
                    Err(Failure(
                        StatusCode::NOT_FOUND,
                        format!("{address} is not suppressed for scope {scope:?}"),
                    ))
                }
            })
            .await
        }
        (&Method::POST, ["api", "v1", "inject"]) => inject(context, peer, request).await,
        (_, ["api", "v1", "inject"]) => not_allowed("POST"),
        (_, ["api", "v1", "suppressions"]) => not_allowed("GET, POST"),
        (_, ["api", "v1", "suppressions", _]) => not_allowed("DELETE"),
        (_, ["api", "v1", "queue" | "users"]) => not_allowed("GET, POST"),
        (_, ["api", "v1", "queue", "stats"]) => not_allowed("GET"),
        (_, ["api", "v1", "queue", _]) => not_allowed("GET, POST"),
        (_, ["api", "v1", "users", _, "password" | "quota"]) => not_allowed("PUT"),
        (_, ["api", "v1", "users", _, "sieve"]) => not_allowed("GET"),
        (_, ["api", "v1", "users", _, "sieve", "activate"]) => not_allowed("POST"),
        (_, ["api", "v1", "users", _, "sieve", _]) => not_allowed("GET, PUT, DELETE"),
        (_, ["api", "v1", "users", _]) => not_allowed("DELETE"),
        _ => error(StatusCode::NOT_FOUND, "no such API path"),
    }
}

/// Why a request failed: the status and what to say.
struct Failure(StatusCode, String);

impl From<AccountError> for Failure {
    fn from(e: AccountError) -> Self {
        let status = match &e {
            AccountError::Invalid(_) => StatusCode::BAD_REQUEST,
            AccountError::Exists(_) => StatusCode::CONFLICT,
            AccountError::NotFound(_) => StatusCode::NOT_FOUND,
            AccountError::Store(e) => return Failure::from(e.clone()),
        };
        Failure(status, e.to_string())
    }
}

impl From<ScriptError> for Failure {
    fn from(e: ScriptError) -> Self {
        let message = e.to_string();
        let status = match e {
            ScriptError::Account(e) => return Failure::from(e),
            ScriptError::Invalid(_) | ScriptError::BadName(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ScriptError::NoSuchScript(_) => StatusCode::NOT_FOUND,
            ScriptError::Active(_) | ScriptError::Exists(_) | ScriptError::TooMany => {
                StatusCode::CONFLICT
            }
        };
        Failure(status, message)
    }
}

impl From<SuppressionError> for Failure {
    fn from(e: SuppressionError) -> Self {
        match e {
            SuppressionError::Invalid(problem) => Failure(StatusCode::BAD_REQUEST, problem),
            SuppressionError::Store(e) => Failure::from(e),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(status, format!("store: {e}"))
    }
}

/// Run `work` off the runtime's thread (it reads the store, hashes a
/// password or waits for a commit) and answer with what it returns.
async fn blocking<F>(context: &Arc<AdminContext>, work: F) -> Answer
where
    F: FnOnce(&AdminContext) -> Result<(StatusCode, Value), Failure> + Send + 'static,
{
    let context = context.clone();
    match tokio::task::spawn_blocking(move || work(&context)).await {
        Ok(Ok((status, body))) => json_answer(status, &body),
        Ok(Err(Failure(status, message))) => {
            if status.is_server_error() {
                tracing::error!(error = %message, "admin: request failed");
            }
            error(status, &message)
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Do `action` to every entry `filter` picks, each by the shard that owns
/// it, and count how it went.
async fn queue_action(
    context: &Arc<AdminContext>,
    peer: SocketAddr,
    action: Action,
    filter: Filter,
) -> Answer {
    let store = context.store.clone();
    let now = crate::intake::unix_micros() / 1000;
    let picked = tokio::task::spawn_blocking(move || {
        queue_admin::select(&*store, &filter, now, MAX_ACTION_ENTRIES)
    })
    .await;
    let entries = match picked {
        Ok(Ok(picked)) => picked,
        Ok(Err(e)) => {
            let Failure(status, message) = Failure::from(e);
            return error(status, &message);
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut counts = BTreeMap::from([
        ("done", 0u64),
        ("not_found", 0),
        ("in_flight", 0),
        ("not_applicable", 0),
        ("failed", 0),
    ]);
    let mut problems = Vec::new();
    for (entry, view) in &entries {
        let outcome = match &context.hub {
            Some(hub) => hub.administer(action, entry.clone()).await,
            None => {
                let (context, entry) = (context.clone(), entry.clone());
                tokio::task::spawn_blocking(move || {
                    let commit = |batch| context.commits.commit_blocking(batch);
                    queue_admin::hold_or_release_stored(
                        &*context.store,
                        &commit,
                        &entry,
                        action,
                        now,
                    )
                })
                .await
                .unwrap_or_else(|e| Outcome::Failed(e.to_string()))
            }
        };
        let counted = match &outcome {
            Outcome::Done => "done",
            Outcome::NotFound => "not_found",
            Outcome::InFlight => "in_flight",
            Outcome::NotApplicable(_) => "not_applicable",
            Outcome::Failed(_) => "failed",
        };
        *counts.entry(counted).or_default() += 1;
        if let Outcome::NotApplicable(why) = &outcome {
            problems.push(format!("{} {}: {why}", view.id, view.domain));
        }
        if let Outcome::Failed(why) = &outcome {
            problems.push(format!("{} {}: {why}", view.id, view.domain));
        }
    }
    tracing::info!(%peer, action = action.name(), matched = entries.len(), done = counts["done"], "admin: queue action");
    problems.truncate(20);
    json_answer(
        StatusCode::OK,
        &json!({
            "action": action.name(),
            "matched": entries.len(),
            "done": counts["done"],
            "not_found": counts["not_found"],
            "in_flight": counts["in_flight"],
            "not_applicable": counts["not_applicable"],
            "failed": counts["failed"],
            "problems": problems,
        }),
    )
}

/// `POST /api/v1/inject`: 200 with the report when something was stored,
/// 422 when every recipient was refused, 400 for a bad request, 413 for
/// one too large, 408 for a body that came too slowly, 503 when the store
/// failed (nothing stored) or the memory budget stayed full, 507 for a
/// full disk, 500 when the server failed part way.
async fn inject(
    context: &Arc<AdminContext>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Answer {
    let injector = &context.inject;
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > injector.max_request_bytes()) {
        injector.metrics().request("too_large");
        let limit = injector.max_request_bytes();
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body too large: at most {limit} bytes"),
        );
    }
    // A request waits a little for its share of the memory budget, then
    // hears to come back: a queue behind a stalled upload would hold every
    // later one until the connection deadline.
    let Ok(mut room) = tokio::time::timeout(BUDGET_WAIT, injector.room_for(declared)).await else {
        injector.metrics().request("busy");
        return busy("other injections hold the memory budget; try again shortly");
    };
    // And its body must come at a useful rate, or it gives its share back.
    let limit = injector.max_request_bytes();
    let allowed = body_time(declared.unwrap_or(limit).min(limit));
    let body = match tokio::time::timeout(allowed, read_body(request, limit)).await {
        Ok(Ok(body)) => body,
        Ok(Err(answer)) => {
            injector.metrics().request("too_large");
            return answer;
        }
        Err(_) => {
            injector.metrics().request("too_slow");
            return error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {} s",
                    allowed.as_secs()
                ),
            );
        }
    };
    let body = Vec::from(body);
    injector.fit_room(&mut room, body.len());
    let report = match injector.inject(peer.ip(), body, room).await {
        Ok(report) => report,
        Err(Refusal::BadRequest(problem)) => return error(StatusCode::BAD_REQUEST, &problem),
        Err(Refusal::Failed(problem)) => return error(StatusCode::INTERNAL_SERVER_ERROR, &problem),
    };
    let status = match (report.success_count, report.store_failure) {
        (0, Some(crate::inject::StoreFailure::DiskFull)) => StatusCode::INSUFFICIENT_STORAGE,
        (0, Some(crate::inject::StoreFailure::Other)) => StatusCode::SERVICE_UNAVAILABLE,
        (0, None) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    match serde_json::to_value(&report) {
        Ok(body) => json_answer(status, &body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// How long an injection waits for its share of the memory budget.
const BUDGET_WAIT: Duration = Duration::from_secs(10);
/// An injection's body arrives within this, plus a second per
/// [`BODY_RATE`] bytes.
const BODY_GRACE: Duration = Duration::from_secs(30);
/// The slowest upload an injection's body may come at, bytes per second
/// (half a megabit).
const BODY_RATE: usize = 64 * 1024;

/// The time a body of `bytes` may take to arrive: never so long that the
/// connection's deadline comes first, so the client hears 408.
fn body_time(bytes: usize) -> Duration {
    let time = BODY_GRACE + Duration::from_secs((bytes / BODY_RATE) as u64);
    time.min(super::CONNECTION_DEADLINE - Duration::from_secs(10))
}

/// 503 with a Retry-After: come back soon.
fn busy(text: &str) -> Answer {
    let mut answer = error(StatusCode::SERVICE_UNAVAILABLE, text);
    answer
        .headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("5"));
    answer
}

/// The most entries one queue action touches (the rest: run it again).
const MAX_ACTION_ENTRIES: usize = 100_000;
/// The most entries one listing shows unless `limit` says otherwise.
const DEFAULT_LIST_LIMIT: usize = 1_000;

/// A queue filter and limit from a query string: `ids=a,b`, `domain`,
/// `sender`, `recipient`, `min_age` (seconds), `state`, `limit`.
/// A query string's `key=value` pairs, values decoded.
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, String)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key, percent_decode(&value.replace('+', " ")))
    })
}

/// The value of `key` in a query string.
fn query_value(query: &str, key: &str) -> Option<String> {
    query_pairs(query).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn query_filter(query: &str) -> Result<(Filter, usize), String> {
    let mut filter = Filter::default();
    let mut limit = DEFAULT_LIST_LIMIT;
    for (key, value) in query_pairs(query) {
        match key {
            "ids" | "id" => filter.ids.extend(value.split(',').map(str::to_owned)),
            "domain" => filter.domain = Some(value),
            "sender" => filter.sender = Some(value),
            "recipient" => filter.recipient = Some(value),
            "min_age" => filter.min_age_secs = Some(number(key, &value)?),
            "state" => filter.state = Some(State::parse(&value)?),
            "limit" => limit = number(key, &value)? as usize,
            _ => return Err(format!("unknown query parameter `{key}`")),
        }
    }
    Ok((filter, limit))
}

/// A queue filter from a JSON body; it must name something (`"all":
/// true` for everything), so an empty body never acts on the whole queue.
fn body_filter(body: &Value) -> Result<Filter, String> {
    // A field misspelt or of the wrong type must not be dropped silently:
    // the filter left would name more entries than the caller meant.
    const KEYS: [&str; 7] = [
        "ids",
        "domain",
        "sender",
        "recipient",
        "min_age_secs",
        "state",
        "all",
    ];
    let Some(fields) = body.as_object() else {
        return Err("the body is a JSON object".into());
    };
    if let Some(unknown) = fields.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(format!("unknown field \"{unknown}\""));
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(format!("\"{key}\" is a string")),
        }
    };
    let min_age_secs = match body.get("min_age_secs") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or("\"min_age_secs\" is a number of seconds")?,
        ),
    };
    let all = match body.get("all") {
        None | Some(Value::Null) => false,
        Some(value) => value.as_bool().ok_or("\"all\" is true or false")?,
    };
    let ids = match body.get("ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| id.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or("\"ids\" is a list of queue ids")?,
        Some(_) => return Err("\"ids\" is a list of queue ids".into()),
    };
    let filter = Filter {
        ids,
        domain: text("domain")?,
        sender: text("sender")?,
        recipient: text("recipient")?,
        min_age_secs,
        state: text("state")?.map(|s| State::parse(&s)).transpose()?,
    };
    if filter == Filter::default() && !all {
        return Err("name the entries (ids, domain, sender, recipient, min_age_secs, state), or say \"all\": true".into());
    }
    Ok(filter)
}

fn number(key: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("`{key}` must be a number, not `{value}`"))
}

fn metrics(context: &AdminContext, request: &Request<Incoming>) -> Answer {
    let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let rendered = context.metrics.render();
    let (content_type, body) = if exposition::wants_openmetrics(accept) {
        (exposition::OPENMETRICS, rendered)
    } else {
        (exposition::CLASSIC, exposition::classic(&rendered))
    };
    // A HEAD gets the same head; hyper leaves out the body.
    answer(StatusCode::OK, content_type, body.into())
}

fn authorized(context: &AdminContext, request: &Request<Incoming>) -> bool {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    context.token.admits(header)
}

/// The request's body, at most `limit` bytes (413 beyond).
async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, Answer> {
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body too large: at most {limit} bytes"),
        )),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, &e.to_string())),
    }
}

/// The request's body as JSON, at most [`MAX_BODY`] bytes.
async fn json_body(request: Request<Incoming>) -> Result<Value, Answer> {
    json_body_up_to(request, MAX_BODY).await
}

/// The request's body as JSON, at most `limit` bytes.
async fn json_body_up_to(request: Request<Incoming>, limit: usize) -> Result<Value, Answer> {
    let bytes = read_body(request, limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("the body is not JSON: {e}"),
        )
    })
}

fn string(body: &Value, key: &str) -> Option<String> {
    body.get(key)?.as_str().map(str::to_owned)
}

/// A quota limit: absent (unchanged), a positive number, `"none"` or
/// `"default"`.
fn limit(body: &Value, key: &str) -> Result<Option<Limit>, ()> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "none" => Ok(Some(Limit::Unlimited)),
        Some(Value::String(s)) if s == "default" => Ok(Some(Limit::Default)),
        Some(value) => match value.as_u64() {
            Some(n) if n > 0 => Ok(Some(Limit::At(n))),
            _ => Err(()),
        },
    }
}

/// `%XX` escapes of a path segment decoded (an account name may arrive
/// with its `@` as `%40`).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: &'static str) -> Answer {
    answer(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn json_answer(status: StatusCode, body: &Value) -> Answer {
    let mut text = body.to_string();
    text.push('\n');
    answer(status, "application/json", text.into())
}

fn error(status: StatusCode, message: &str) -> Answer {
    json_answer(status, &json!({ "error": message }))
}

fn unauthorized() -> Answer {
    let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ringpost\""),
    );
    response
}

fn not_allowed(allow: &'static str) -> Answer {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("ann%40ours.test"), "ann@ours.test");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn quota_limits() {
        let body = json!({"storage_bytes": 10, "messages": "none"});
        assert_eq!(limit(&body, "storage_bytes"), Ok(Some(Limit::At(10))));
        assert_eq!(limit(&body, "messages"), Ok(Some(Limit::Unlimited)));
        assert_eq!(limit(&body, "other"), Ok(None));
        assert_eq!(
            limit(&json!({"m": "default"}), "m"),
            Ok(Some(Limit::Default))
        );
        assert_eq!(limit(&json!({"m": 0}), "m"), Err(()));
        assert_eq!(limit(&json!({"m": "lots"}), "m"), Err(()));
    }
}
