//! Webhooks: every status change and inbound message of an app is POSTed
//! as JSON to the app's webhook URL, signed with HMAC-SHA256, retried with
//! exponential backoff. Delivery runs off the send path.
//!
//! Webhook URLs are chosen by tenants, so delivery must not become a way
//! into the gateway's network: the address actually connected to is
//! checked when it is resolved (a name resolving to 127.0.0.1 or the
//! metadata service is refused, not only such URL text), redirects are
//! not followed, and no proxy from the environment is used. Private,
//! loopback and link-local targets are allowed only with
//! `--webhook-allow-private` or for an app an admin allowed.
//!
//! The signing secret is not stored: the record keeps a random nonce and
//! the id of the JWT key the secret is derived from
//! ([`crate::auth::Auth::webhook_secret`]).

use crate::auth::Caller;
use crate::{ApiError, ApiState};
use hmac::{Hmac, Mac};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use smsgw_core::outbox::{Claimed, EventMask, Outbox, wanted};
use smsgw_core::users::WebhookOptions;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Header carrying `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-smsgw-signature";
/// Header carrying the Unix timestamp (seconds) that was signed.
pub const TIMESTAMP_HEADER: &str = "x-smsgw-timestamp";

/// The signature a receiver recomputes to trust a webhook body.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(71);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// `PUT /api/v1/settings/webhook` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http(s)://…` URL; `null` or empty removes the webhook.
    pub url: Option<String>,
    /// Send events in batches (a JSON array of up to the gateway's batch
    /// size per request) instead of one JSON object per request (the
    /// default).
    #[serde(default)]
    pub batch: Option<bool>,
    /// Event kinds wanted: `pending`, `delivered`, `failed`, `rejected`,
    /// `unknown`, `mo`, or `final` (delivered, failed and rejected); absent:
    /// every kind.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

/// The webhook as set; the secret is shown only here.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookSet {
    /// The URL, if any.
    pub url: Option<String>,
    /// Signing secret (new each time the webhook is set).
    pub secret: Option<String>,
    /// Events are sent in batches (JSON arrays).
    #[serde(default)]
    pub batch: bool,
    /// Event kinds sent (`final` expanded); absent: every kind.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

/// Sets (or removes) the calling app's webhook and issues a new secret.
pub async fn set(
    state: &ApiState,
    caller: &Caller,
    settings: WebhookSettings,
) -> Result<WebhookSet, ApiError> {
    let Caller::User { user_id, .. } = caller else {
        return Err(ApiError::PermissionDenied(
            "webhooks belong to a user's app".into(),
        ));
    };
    let url = settings.url.filter(|u| !u.trim().is_empty());
    let mut user = state
        .auth
        .store()
        .get(user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("the token's user no longer exists".into()))?;
    if let Some(u) = &url {
        check_destination(
            u,
            "url",
            state.webhook_allow_private || user.webhook_allow_private,
        )?;
    }
    let events = match settings.events {
        Some(words) => Some(
            EventMask::parse(&words).map_err(|e| ApiError::InvalidField {
                field: "events",
                reason: e.to_string(),
            })?,
        ),
        None => None,
    };
    let (stored, secret) = match &url {
        Some(_) => {
            let (stored, secret) = state.auth.new_webhook_secret(&user.user_id);
            (Some(stored), Some(secret))
        }
        None => (None, None),
    };
    user.webhook_url = url.clone();
    user.webhook_secret = stored;
    user.webhook_options = WebhookOptions {
        batch: settings.batch.unwrap_or(false),
        events: events.clone(),
    };
    state.auth.store().update(&user).await?;
    tracing::info!(user_id = %user.user_id, set = url.is_some(), "webhook settings changed");
    Ok(WebhookSet {
        url,
        secret,
        batch: user.webhook_options.batch,
        events: events.map(|m| m.0),
    })
}

/// Checks a destination chosen by a tenant (an app's webhook, a message's
/// `callback_url`): an `http(s)://` URL of at most 2,048 bytes, and unless
/// `allow_private`, not naming a private, loopback, link-local or
/// metadata address literally (names are checked when they are resolved,
/// at delivery). The one copy of these rules; `field` names the request
/// field in the error.
pub fn check_destination(
    url: &str,
    field: &'static str,
    allow_private: bool,
) -> Result<(), ApiError> {
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.len() > 2048
        || reqwest::Url::parse(url).is_err()
    {
        return Err(ApiError::InvalidField {
            field,
            reason: "must be an http:// or https:// URL".into(),
        });
    }
    if let Some(ip) = literal_ip(url)
        && !crate::net::is_public(ip)
        && !allow_private
    {
        return Err(ApiError::InvalidField {
            field,
            reason: format!(
                "{ip} is a private, loopback, link-local or reserved address; webhooks must reach a public address"
            ),
        });
    }
    Ok(())
}

/// The IP address a URL names literally (no resolution happens for those,
/// so they are checked here).
fn literal_ip(url: &str) -> Option<IpAddr> {
    // The URL parser normalises IPv4 spellings (`2130706433`, `0x7f.1`)
    // to dotted quads and keeps IPv6 in brackets.
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Resolves webhook hosts and keeps only public addresses, so the check
/// applies to the address connected to, whatever the name said.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| crate::net::is_public(a.ip()))
                .collect();
            if public.is_empty() {
                tracing::warn!(host, resolved = ?all, "webhook target refused: the name resolves only to private, loopback or link-local addresses");
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves only to non-public addresses"),
                ))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The webhook HTTP client: no redirects, no proxy from the environment,
/// and with `public_only` the resolver that refuses non-public addresses.
pub fn client(public_only: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    let b = if public_only {
        b.dns_resolver(Arc::new(PublicOnly))
    } else {
        b
    };
    b.build().expect("TLS-free client builds")
}

/// How the outbox is delivered.
///
/// # Defaults
/// Retries for 24 h ([`smsgw_core::outbox::DEFAULT_RETRY_FOR`]), first
/// after 500 ms, doubling up to 5 min apart; batches of up to 100 events
/// gathered for at most 20 ms; 8 lanes per destination.
#[derive(Clone, Debug)]
pub struct DeliveryOptions {
    /// How long an event is retried (from its append) before it is dropped.
    pub retry_for: Duration,
    /// First retry delay (doubled after each failure).
    pub retry_initial: Duration,
    /// Longest delay between two tries.
    pub retry_max: Duration,
    /// Most events in one request of a batching webhook.
    pub batch_max: usize,
    /// Longest a batch waits to fill up.
    pub batch_linger: Duration,
    /// Requests in flight at once per destination; events of one message
    /// always go through the same lane, in order.
    pub lanes: usize,
    /// This pod's name (the outbox consumer).
    pub consumer: String,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            retry_for: smsgw_core::outbox::DEFAULT_RETRY_FOR,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(300),
            batch_max: 100,
            batch_linger: Duration::from_millis(20),
            lanes: 8,
            consumer: "smsgw".into(),
        }
    }
}

/// Labels of a dropped event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    /// `expired` (retried for the whole period) or `refused` (the
    /// destination is not allowed).
    reason: &'static str,
}

#[derive(Clone)]
struct DeliveryMetrics {
    delivered: Counter,
    dropped: Family<DropLabels, Counter>,
    requests: Family<OutcomeLabels, Counter>,
    latency: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

impl DeliveryMetrics {
    fn register(state: &ApiState) -> Self {
        let m = Self {
            delivered: Counter::default(),
            dropped: Family::default(),
            requests: Family::default(),
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
        };
        // Every label value exported from the start, at 0.
        for reason in ["expired", "refused"] {
            let _ = m.dropped.get_or_create(&DropLabels { reason });
        }
        for outcome in ["ok", "error"] {
            let _ = m.requests.get_or_create(&OutcomeLabels { outcome });
        }
        state.metrics.with_registry(|r| {
            r.register(
                "webhook_events_delivered",
                "Outbox events acknowledged by their webhook or callback",
                m.delivered.clone(),
            );
            r.register(
                "webhook_events_dropped",
                "Outbox events given up: retried for the whole retry period (expired) or to a refused destination",
                m.dropped.clone(),
            );
            r.register(
                "webhook_requests",
                "Webhook requests by outcome (ok, error)",
                m.requests.clone(),
            );
            r.register(
                "webhook_delivery_latency_seconds",
                "Time from an event's append to the outbox to its acknowledgement by the receiver",
                m.latency.clone(),
            );
        });
        m
    }
}

/// Where one event goes.
#[derive(Clone)]
struct Destination {
    url: String,
    /// Signing secret; `None`: unsigned (a callback of an app without a
    /// webhook secret).
    secret: Option<String>,
    /// May reach private addresses.
    private: bool,
    batch: bool,
}

/// An app's webhook as last read.
#[derive(Clone)]
struct AppTarget {
    webhook: Option<Destination>,
    events: Option<EventMask>,
    /// Secret and private permission for callbacks without a webhook.
    secret: Option<String>,
    private: bool,
    batch: bool,
    /// When these settings were read (Unix ms).
    read_at_ms: u64,
}

type LaneKey = (String, usize);

struct Lane {
    tx: tokio::sync::mpsc::UnboundedSender<Claimed>,
}

/// Shared by the lanes.
struct Shared {
    outbox: Arc<dyn Outbox>,
    opts: DeliveryOptions,
    public: reqwest::Client,
    any: reqwest::Client,
    metrics: DeliveryMetrics,
    /// Bounds the events held in memory (claimed, not yet acknowledged).
    held: Arc<tokio::sync::Semaphore>,
    /// Approximate bytes of the events held ([`held_size`]).
    held_bytes: std::sync::atomic::AtomicU64,
    /// Events waiting for their app to be read again ([`Recheck`]) and
    /// their approximate bytes.
    recheck_entries: std::sync::atomic::AtomicU64,
    recheck_bytes: std::sync::atomic::AtomicU64,
    cancel: CancellationToken,
}

/// Approximate bytes an event held for delivery takes.
fn held_size(c: &Claimed) -> u64 {
    let e = &c.event;
    (std::mem::size_of::<Claimed>()
        + c.position.len()
        + e.event_id.len()
        + e.app_id.len()
        + e.key.len()
        + e.kind.len()
        + e.body.len()
        + e.callback.as_ref().map_or(0, |cb| cb.url.len())) as u64
}

impl Shared {
    /// The events held for delivery, as the `smsgw_memory_*` gauges show
    /// them (`webhook_held_events`).
    fn held_memory(&self) -> smsgw_core::bounded::MemoryUse {
        smsgw_core::bounded::MemoryUse {
            structure: "webhook_held_events",
            entries: HELD.saturating_sub(self.held.available_permits()) as u64,
            bytes: self.held_bytes.load(std::sync::atomic::Ordering::Relaxed),
            capacity: HELD as u64,
            evicted: 0,
        }
    }

    /// The events waiting for a fresh read of their app
    /// (`webhook_recheck_events`).
    fn recheck_memory(&self) -> smsgw_core::bounded::MemoryUse {
        use std::sync::atomic::Ordering::Relaxed;
        smsgw_core::bounded::MemoryUse {
            structure: "webhook_recheck_events",
            entries: self.recheck_entries.load(Relaxed),
            bytes: self.recheck_bytes.load(Relaxed),
            capacity: RECHECK_MAX as u64,
            evicted: 0,
        }
    }
}

/// Events held in memory at most (claimed from the outbox, not yet
/// acknowledged); beyond it claiming waits.
const HELD: usize = 65_536;

/// Delivers the outbox to the apps' webhooks and the messages' callbacks
/// until `cancel` fires: at least once, in order per message, retried with
/// a doubling delay for [`DeliveryOptions::retry_for`], then dropped
/// (counted and logged).
pub async fn run(
    state: ApiState,
    outbox: Arc<dyn Outbox>,
    opts: DeliveryOptions,
    cancel: CancellationToken,
) {
    let shared = Arc::new(Shared {
        outbox: outbox.clone(),
        metrics: DeliveryMetrics::register(&state),
        public: client(true),
        any: client(false),
        held: Arc::new(tokio::sync::Semaphore::new(HELD)),
        held_bytes: Default::default(),
        recheck_entries: Default::default(),
        recheck_bytes: Default::default(),
        cancel: cancel.clone(),
        opts,
    });
    let mut lanes: HashMap<LaneKey, Lane> = HashMap::new();
    let cache = Arc::new(std::sync::Mutex::new(AppCache::new(
        "webhook_apps",
        APP_CACHE,
        usize::MAX,
        Duration::from_secs(5),
    )));
    let (held, apps) = (Arc::downgrade(&shared), Arc::downgrade(&cache));
    state.metrics.add_memory_source(move || {
        let mut out = Vec::new();
        if let Some(a) = apps.upgrade() {
            out.push(a.lock().unwrap_or_else(|p| p.into_inner()).memory());
        }
        if let Some(s) = held.upgrade() {
            out.push(s.held_memory());
            out.push(s.recheck_memory());
        }
        out
    });
    let mut beat = Instant::now();
    claim_loop(&state, &shared, &mut lanes, &cache, &mut beat).await;
    // Stopping: what this pod held goes to another pod at once.
    if let Err(e) = outbox.release(&shared.opts.consumer).await {
        tracing::warn!(error = %e, "cannot release the outbox on the way out");
    }
}

async fn claim_loop(
    state: &ApiState,
    shared: &Arc<Shared>,
    lanes: &mut HashMap<LaneKey, Lane>,
    cache: &std::sync::Mutex<AppCache>,
    beat: &mut Instant,
) {
    let (outbox, cancel) = (&shared.outbox, &shared.cancel);
    // Claimed events whose app could not be read (the user store failed):
    // held here, in order, and tried again before anything new is claimed.
    let mut unresolved: Vec<smsgw_core::outbox::Claimed> = Vec::new();
    // Events their app's cached settings send nowhere, made after those
    // settings were read (see `Recheck`).
    let mut recheck = Recheck::default();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        // Due: the apps read again once, then these events go (in order)
        // where the new settings say, or are acknowledged.
        let rechecking = unresolved.is_empty() && recheck.due(Instant::now());
        if rechecking {
            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
            for app in &recheck.apps {
                c.remove(app);
            }
            drop(c);
            unresolved = recheck.take(shared);
        }
        if beat.elapsed() > Duration::from_secs(2) {
            *beat = Instant::now();
            if let Err(e) = outbox.heartbeat(&shared.opts.consumer).await {
                tracing::warn!(error = %e, "outbox heartbeat failed");
            }
        }
        let room = shared.held.available_permits().min(1024);
        let got = if unresolved.is_empty() {
            None
        } else {
            if !rechecking {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = cancel.cancelled() => return,
                }
            }
            Some(std::mem::take(&mut unresolved))
        };
        if got.is_none() && room == 0 {
            tokio::select! {
                _ = shared.held.acquire() => {}
                () = cancel.cancelled() => return,
            }
            continue;
        }
        let got = match got {
            Some(held) => Ok(held),
            None => tokio::select! {
                r = outbox.claim(&shared.opts.consumer, room, recheck.block(Instant::now())) => r,
                () = cancel.cancelled() => return,
            },
        };
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = cancel.cancelled() => return,
                }
                continue;
            }
        };
        let mut skip = Vec::new();
        let mut got = got.into_iter();
        while let Some(c) = got.next() {
            // An event with its message's own callback goes where the
            // event says, whatever its app's settings (and so do the other
            // events of its message): it never waits for them.
            let by_app = c.event.callback.is_none();
            if by_app && recheck.apps.contains(&c.event.app_id) {
                // Behind an event of its app waiting for a fresh read: in
                // order after it.
                recheck.push(shared, c, false, Instant::now());
                continue;
            }
            let resolved = resolve_app(state, cache, &c.event.app_id).await;
            if !rechecking
                && by_app
                && let Ok(app) = &resolved
                && destination(app, &c.event).is_none()
                && c.event.created_at_ms >= app.read_at_ms
            {
                // Settings read before this event was made may predate a
                // webhook (or a choice of events) set since: read them
                // again rather than skip it — once for every such event of
                // the app within `RECHECK_AFTER`, not once each (an app
                // without a webhook would cost two user-store reads an
                // event); within `RECHECK_SOON` for an app with a webhook,
                // whose wanted events wait behind this one.
                recheck.push(shared, c, app.webhook.is_some(), Instant::now());
                continue;
            }
            let app = match resolved {
                Ok(app) => app,
                Err(e) => {
                    // Not known to want nothing: keep this event and the
                    // rest (in order) and read the app again shortly,
                    // rather than acknowledge events nobody received.
                    tracing::warn!(app_id = %c.event.app_id, error = %e, "cannot read the app's webhook settings; its events wait");
                    unresolved.push(c);
                    unresolved.extend(got.by_ref());
                    break;
                }
            };
            let dest = destination(&app, &c.event);
            let Some(dest) = dest else {
                skip.push(c.position);
                continue;
            };
            if !dest.private
                && let Some(ip) = literal_ip(&dest.url)
                && !crate::net::is_public(ip)
            {
                tracing::warn!(app_id = %c.event.app_id, event_id = %c.event.event_id, %ip, "webhook target refused: not a public address; event dropped");
                shared
                    .metrics
                    .dropped
                    .get_or_create(&DropLabels { reason: "refused" })
                    .inc();
                skip.push(c.position);
                continue;
            }
            let Ok(permit) = shared.held.clone().acquire_owned().await else {
                return;
            };
            permit.forget();
            shared
                .held_bytes
                .fetch_add(held_size(&c), std::sync::atomic::Ordering::Relaxed);
            let key = (dest.url.clone(), lane_of(&c.event.key, shared.opts.lanes));
            let c = match lanes.get(&key) {
                Some(l) => match l.tx.send(c) {
                    Ok(()) => continue,
                    Err(e) => e.0,
                },
                None => c,
            };
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let _ = tx.send(c);
            tokio::spawn(lane(shared.clone(), dest, rx));
            lanes.insert(key, Lane { tx });
        }
        if !skip.is_empty() {
            // Not awaited, like a delivered batch's (see `lane`): the next
            // claim need not wait for this durable write.
            let outbox = outbox.clone();
            tokio::spawn(async move {
                if let Err(e) = outbox.ack(&skip).await {
                    tracing::warn!(error = %e, "cannot acknowledge skipped outbox events");
                }
            });
        }
        lanes.retain(|_, l| !l.tx.is_closed());
    }
}

/// How long events their app's cached settings send nowhere wait for the
/// app to be read again (one read for all of them).
const RECHECK_AFTER: Duration = Duration::from_millis(100);
/// The same for an app that has a webhook but does not want this kind of
/// event: its other events wait in order behind the skipped one, so the
/// read comes sooner (at most one an app every 5 ms; the wait used to be
/// `RECHECK_AFTER`, ~75 ms more on every event of an app wanting only
/// final states: BENCHMARKS.md, session 19).
const RECHECK_SOON: Duration = Duration::from_millis(5);
/// Events waiting for a fresh read at most before it is due (one claim,
/// up to 1,024 events, may add to them first).
const RECHECK_MAX: usize = 4096;

/// Claimed events that the cached settings of their app send nowhere but
/// that were made after those settings were read: a webhook may have been
/// set since. They wait (in claim order, not acknowledged) up to
/// [`RECHECK_AFTER`] ([`RECHECK_SOON`] when an app among them has a
/// webhook); then each of their apps is read once and they go on by the
/// new settings.
#[derive(Default)]
struct Recheck {
    events: Vec<smsgw_core::outbox::Claimed>,
    apps: std::collections::HashSet<String>,
    /// When the read is due: [`RECHECK_AFTER`] after the first event came,
    /// or [`RECHECK_SOON`] after the first of an app with a webhook.
    due: Option<Instant>,
}

impl Recheck {
    /// Holds `c` for the next read of its app; `soon`: its app has a
    /// webhook (events it wants may wait behind this one).
    fn push(&mut self, shared: &Shared, c: smsgw_core::outbox::Claimed, soon: bool, now: Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        shared.recheck_entries.fetch_add(1, Relaxed);
        shared.recheck_bytes.fetch_add(held_size(&c), Relaxed);
        let wait = if soon { RECHECK_SOON } else { RECHECK_AFTER };
        self.due = Some(self.due.map_or(now + wait, |d| d.min(now + wait)));
        self.apps.insert(c.event.app_id.clone());
        self.events.push(c);
    }

    fn due(&self, now: Instant) -> bool {
        self.due
            .is_some_and(|d| now >= d || self.events.len() >= RECHECK_MAX)
    }

    /// How long the next claim may wait for events: until the recheck is
    /// due, at most 1 s.
    fn block(&self, now: Instant) -> Duration {
        self.due.map_or(Duration::from_secs(1), |d| {
            d.saturating_duration_since(now)
                .max(Duration::from_millis(1))
        })
    }

    /// The waiting events, in order (their apps forgotten: the caller
    /// drops the apps' cached settings first).
    fn take(&mut self, shared: &Shared) -> Vec<smsgw_core::outbox::Claimed> {
        use std::sync::atomic::Ordering::Relaxed;
        shared.recheck_entries.store(0, Relaxed);
        shared.recheck_bytes.store(0, Relaxed);
        self.due = None;
        self.apps.clear();
        std::mem::take(&mut self.events)
    }
}

/// Where `event` goes by `app`'s settings: the message's callback, else the
/// app's webhook, if either wants its kind.
fn destination(app: &AppTarget, event: &smsgw_core::outbox::OutboxEvent) -> Option<Destination> {
    match &event.callback {
        Some(cb) => wanted(cb.events.as_ref(), &event.kind).then(|| Destination {
            url: cb.url.clone(),
            secret: app.secret.clone(),
            private: app.private,
            batch: app.batch,
        }),
        None => app
            .webhook
            .clone()
            .filter(|_| wanted(app.events.as_ref(), &event.kind)),
    }
}

fn lane_of(key: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

/// An app's webhook settings, read at most every 5 s; an error (never
/// cached) when the user store cannot answer.
async fn resolve_app(
    state: &ApiState,
    cache: &std::sync::Mutex<AppCache>,
    app: &str,
) -> Result<Arc<AppTarget>, smsgw_core::users::StoreError> {
    let key = app.to_owned();
    let cached = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key, Instant::now())
        .cloned();
    if let Some(t) = cached {
        return Ok(t);
    }
    let read_at_ms = smsgw_core::messages::unix_now_ms();
    let t = match state.auth.store().by_app_id(app).await? {
        Some(u) => {
            let secret = u.webhook_secret.as_deref().and_then(|stored| {
                let s = state.auth.webhook_secret(&u.user_id, stored);
                if s.is_none() {
                    tracing::warn!(app_id = %app, "webhook secret derived from a retired JWT key; the app must set its webhook again");
                }
                s
            });
            let private = state.webhook_allow_private || u.webhook_allow_private;
            let batch = u.webhook_options.batch;
            AppTarget {
                webhook: match (&u.webhook_url, &secret) {
                    (Some(url), Some(secret)) => Some(Destination {
                        url: url.clone(),
                        secret: Some(secret.clone()),
                        private,
                        batch,
                    }),
                    _ => None,
                },
                events: u.webhook_options.events.clone(),
                secret,
                private,
                batch,
                read_at_ms,
            }
        }
        None => AppTarget {
            webhook: None,
            events: None,
            secret: None,
            private: false,
            batch: false,
            read_at_ms,
        },
    };
    let t = Arc::new(t);
    let bytes = 2 * key.len() + std::mem::size_of::<AppTarget>() + 256;
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, t.clone(), bytes, Instant::now());
    Ok(t)
}

/// Apps' webhook settings, each read at most every 5 s.
type AppCache = smsgw_core::bounded::BoundedMap<String, Arc<AppTarget>>;

/// Apps whose webhook settings are cached at most; past it the oldest is
/// dropped and read again when next needed.
const APP_CACHE: usize = 10_000;

/// One lane of one destination: sends its events in order, one request at
/// a time, each retried until it succeeds or expires. Ends after a minute
/// without events.
async fn lane(
    shared: Arc<Shared>,
    dest: Destination,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Claimed>,
) {
    let http = if dest.private {
        shared.any.clone()
    } else {
        shared.public.clone()
    };
    let max = if dest.batch {
        shared.opts.batch_max.max(1)
    } else {
        1
    };
    let mut queue: std::collections::VecDeque<Claimed> = std::collections::VecDeque::new();
    loop {
        if queue.is_empty() {
            tokio::select! {
                got = tokio::time::timeout(Duration::from_secs(60), rx.recv()) => match got {
                    Ok(Some(c)) => queue.push_back(c),
                    Ok(None) => return,
                    Err(_) => {
                        // Idle: close, but deliver what raced in first.
                        rx.close();
                        match rx.try_recv() {
                            Ok(c) => queue.push_back(c),
                            Err(_) => return,
                        }
                    }
                },
                () = shared.cancel.cancelled() => return,
            }
        }
        while let Ok(c) = rx.try_recv() {
            queue.push_back(c);
        }
        if max > 1 && queue.len() < max {
            let until = tokio::time::Instant::now() + shared.opts.batch_linger;
            while queue.len() < max {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(c)) => queue.push_back(c),
                    _ => break,
                }
            }
        }
        let n = queue.len().min(max);
        let mut batch: Vec<Claimed> = queue.drain(..n).collect();
        let mut delay = shared.opts.retry_initial;
        let mut attempt = 0u32;
        loop {
            // Give up on what has been retried for the whole period.
            let now = smsgw_core::messages::unix_now_ms();
            let limit = u64::try_from(shared.opts.retry_for.as_millis()).unwrap_or(u64::MAX);
            let (expired, keep): (Vec<Claimed>, Vec<Claimed>) = batch
                .into_iter()
                .partition(|c| now.saturating_sub(c.event.created_at_ms) > limit);
            batch = keep;
            if !expired.is_empty() {
                for c in &expired {
                    tracing::warn!(app_id = %c.event.app_id, event_id = %c.event.event_id, url_host = host_of(&dest.url), attempts = attempt, "webhook event dropped: not delivered within the retry period");
                }
                shared
                    .metrics
                    .dropped
                    .get_or_create(&DropLabels { reason: "expired" })
                    .inc_by(expired.len() as u64);
                settle(&shared, &expired).await;
            }
            if batch.is_empty() {
                break;
            }
            attempt += 1;
            match post(&http, &dest, &batch).await {
                Ok(()) => {
                    shared
                        .metrics
                        .requests
                        .get_or_create(&OutcomeLabels { outcome: "ok" })
                        .inc();
                    let now = smsgw_core::messages::unix_now_ms();
                    for c in &batch {
                        shared
                            .metrics
                            .latency
                            .observe(now.saturating_sub(c.event.created_at_ms) as f64 / 1000.0);
                    }
                    shared.metrics.delivered.inc_by(batch.len() as u64);
                    // The acknowledgement waits for a durable outbox write
                    // (a group commit, milliseconds under load): the lane
                    // goes on to its next request meanwhile, or it would
                    // send at most one batch per commit. A crash before
                    // the write only delivers the batch again (at least
                    // once).
                    let shared = shared.clone();
                    tokio::spawn(async move { settle(&shared, &batch).await });
                    break;
                }
                Err(why) => {
                    shared
                        .metrics
                        .requests
                        .get_or_create(&OutcomeLabels { outcome: "error" })
                        .inc();
                    tracing::debug!(attempt, why, "webhook delivery failed; retrying");
                }
            }
            // Keep taking events in meanwhile, so the claim loop never
            // waits on a slow destination.
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    got = rx.recv() => match got {
                        Some(c) => queue.push_back(c),
                        None => { sleep.as_mut().await; break; }
                    },
                    () = shared.cancel.cancelled() => return,
                }
            }
            delay = (delay * 2).min(shared.opts.retry_max);
        }
    }
}

/// Acknowledges delivered or dropped events in the outbox (an event whose
/// acknowledgement fails is handed out again after a restart: at least
/// once) and frees their room.
async fn settle(shared: &Shared, done: &[Claimed]) {
    let positions: Vec<String> = done.iter().map(|c| c.position.clone()).collect();
    if let Err(e) = shared.outbox.ack(&positions).await {
        tracing::warn!(error = %e, "cannot acknowledge delivered outbox events");
    }
    shared.held_bytes.fetch_sub(
        done.iter().map(held_size).sum(),
        std::sync::atomic::Ordering::Relaxed,
    );
    shared.held.add_permits(done.len());
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Header carrying the event id (of a batch: the ids, comma-separated).
pub const EVENT_ID_HEADER: &str = "x-smsgw-event-id";

/// One request: a JSON object (one event) or a JSON array (a batching
/// destination), signed as a whole.
async fn post(http: &reqwest::Client, dest: &Destination, batch: &[Claimed]) -> Result<(), String> {
    let body = if dest.batch {
        let mut b = String::from("[");
        for (i, c) in batch.iter().enumerate() {
            if i > 0 {
                b.push(',');
            }
            b.push_str(&c.event.body);
        }
        b.push(']');
        b
    } else {
        batch[0].event.body.clone()
    };
    let ids = batch
        .iter()
        .map(|c| c.event.event_id.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let ts = smsgw_core::unix_now();
    let mut req = http
        .post(&dest.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(EVENT_ID_HEADER, ids);
    if let Some(secret) = &dest.secret {
        req = req.header(SIGNATURE_HEADER, sign(secret, ts, body.as_bytes()));
    }
    match req.body(body).send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) if resp.status().is_redirection() => {
            tracing::warn!(status = %resp.status(), host = host_of(&dest.url), "webhook answered a redirect; redirects are not followed");
            Err(format!("redirect {}", resp.status()))
        }
        Ok(resp) => Err(format!("status {}", resp.status())),
        Err(e) => Err(format!("unreachable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let a = super::sign("k", 1, b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 71);
        assert_ne!(a, super::sign("k", 2, b"{}"));
        assert_ne!(a, super::sign("k", 1, b"{ }"));
        assert_ne!(a, super::sign("j", 1, b"{}"));
    }
}
