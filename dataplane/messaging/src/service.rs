//! The message service: what it holds, how it is built, and the state
//! changes every stage reports through one place ([`Messaging::changed`]).

use crate::lifecycle::{Lifecycle, Observer};
use crate::metrics::{LifecycleMetrics, TimedStore};
use crate::stats::{Scope, Stats};
use crate::trace::RequestTrace;
use crate::views::{AppEvent, status_name};
use crate::{MessagingError, SendRequest, SendResponse};
use arc_swap::ArcSwap;
use smsgw_core::bounded::{BoundedMap, MemoryUse};
use smsgw_core::limits::RateLimiter;
use smsgw_core::links::LinkControl;
use smsgw_core::messages::{MessageRecord, MessageStatus, MessageStore, Target};
use smsgw_core::outbox::{Outbox, OutboxEvent, status_event_id};
use smsgw_core::policy::PolicyEngine;
use smsgw_core::users::{UserRecord, UserStore};
use smsgw_crds::Snapshot;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast};
use tokio::time::Instant;

/// Log target of the message lifecycle: one info line per state change
/// (`event` = `accepted`, `submitted`, `delivered`, `failed`, `rejected`,
/// `unknown`, or `refused` before anything was stored), with `message_id`,
/// `transaction_id`, `app_id` and `trace_id`. Filter with
/// `RUST_LOG=smsgw::message=info`.
pub const MESSAGE_LOG: &str = "smsgw::message";

/// How long a background submission is retried while nothing can be sent
/// before the message is left to the sweeper, unless the builder says
/// otherwise.
pub const DEFAULT_SUBMIT_RETRY: Duration = Duration::from_secs(10);

/// Background submissions in flight at once, per gateway, unless the
/// builder says otherwise (`--max-background-submissions`).
pub const DEFAULT_BACKGROUND_SUBMISSIONS: usize = 2048;

/// How long a user record is cached for quota checks on the send path.
pub(crate) const USER_CACHE: Duration = Duration::from_secs(5);

/// Users (and apps' rate limits) cached at most; past it the oldest are
/// dropped and read again from the store when next needed.
pub const USER_CACHE_ENTRIES: usize = 10_000;

/// Who sends: an authenticated user of an app.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// The user's id (its record holds its quotas and permissions).
    pub user_id: &'a str,
    /// The user's app.
    pub app_id: &'a str,
}

/// The life of a message, from a send request to its last receipt, over
/// the core traits: a [`MessageStore`], a [`UserStore`] (quotas), a
/// [`RateLimiter`], an optional [`PolicyEngine`], the gateway's
/// [`LinkControl`] and the configuration in force.
pub struct Messaging {
    pub(crate) store: Arc<dyn MessageStore>,
    pub(crate) users: Arc<dyn UserStore>,
    pub(crate) links: Arc<dyn LinkControl>,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) policy: Option<Arc<dyn PolicyEngine>>,
    pub(crate) config: Arc<ArcSwap<Snapshot>>,
    /// How long a background submission retries before the sweeper.
    pub(crate) submit_retry: Duration,
    /// How long the store keeps a message (bounds how far ahead one may
    /// be scheduled).
    pub(crate) message_ttl: Duration,
    events: broadcast::Sender<AppEvent>,
    /// Users of the send path, each kept [`USER_CACHE`]; at most
    /// [`USER_CACHE_ENTRIES`] (the oldest are dropped first: the next
    /// request of that user reads the store again).
    user_cache: Mutex<BoundedMap<String, Arc<UserRecord>>>,
    /// Address claims (or their absence) for MO routing.
    pub(crate) claim_cache: crate::claims::ClaimCache,
    /// Late submit_sm_resp that came back without a segment to settle (its
    /// link had forgotten the submit: past its window or bound), or for a
    /// message no longer stored.
    pub(crate) late_unmatched: AtomicU64,
    /// SMSC ids whose submission this pod is recording now (receipts for
    /// them wait rather than park).
    pub(crate) recording: crate::receipts::Recording,
    /// Concatenation reference of the next multi-part message.
    pub(crate) reference: AtomicU16,
    /// App rate limits last written to the limiter, and when: rewritten
    /// only when the rate changes or the entry is older than
    /// [`USER_CACHE`], so the send path does not write a limit (a store
    /// round trip with a shared limiter) for every message.
    pub(crate) app_limits: Mutex<BoundedMap<String, u32>>,
    /// Bounds background submissions: when every slot is taken, `send`
    /// waits, which holds clients back instead of queueing without limit.
    pub(crate) submit_slots: Arc<Semaphore>,
    /// The bound of `submit_slots`.
    pub(crate) submit_slots_max: usize,
    /// Size of one background submission's task state, taken at the
    /// first spawn (for the `background_submissions` memory gauge).
    pub(crate) submit_task_bytes: AtomicU64,
    /// Counters for the admin statistics.
    pub stats: Stats,
    pub(crate) metrics: LifecycleMetrics,
    observer: OnceLock<Observer>,
    /// Where app events are appended durably before anything is
    /// acknowledged (webhooks and pull read them from there).
    pub(crate) outbox: Option<Arc<dyn Outbox>>,
    /// The routing table of the configuration in force, for sends that
    /// omit `esme`.
    pub(crate) routes: crate::routing::RouteCache,
    /// Counts apps' quotas and balances (only for apps that have any).
    pub(crate) quotas: Arc<dyn smsgw_core::quotas::QuotaLedger>,
}

/// Builds a [`Messaging`].
///
/// # Defaults
///
/// No links ([`smsgw_core::links::NoLinks`]), no rate limits
/// ([`Unlimited`]), no contact-policy engine (a request naming a strategy
/// is refused), background submissions retried for
/// [`DEFAULT_SUBMIT_RETRY`], messages kept
/// [`smsgw_core::messages::DEFAULT_MESSAGE_TTL`], quotas counted in memory
/// ([`smsgw_core::quotas::MemoryLedger`]).
pub struct MessagingBuilder {
    store: Arc<dyn MessageStore>,
    users: Arc<dyn UserStore>,
    config: Arc<ArcSwap<Snapshot>>,
    links: Arc<dyn LinkControl>,
    limiter: Arc<dyn RateLimiter>,
    policy: Option<Arc<dyn PolicyEngine>>,
    submit_retry: Duration,
    outbox: Option<Arc<dyn Outbox>>,
    background_submissions: usize,
    message_ttl: Duration,
    quotas: Arc<dyn smsgw_core::quotas::QuotaLedger>,
}

impl MessagingBuilder {
    /// How long the message store keeps a message (its `ttl`): a
    /// `schedule_delivery_time` must fall an hour before it ends.
    pub fn message_ttl(mut self, ttl: Duration) -> Self {
        self.message_ttl = ttl;
        self
    }

    /// How many accepted messages may be on their way to a link at once in
    /// the background (each waits for a window slot, a bind, or its retry
    /// period). Past it `send` waits for one to finish, which holds
    /// clients back instead of queueing without limit; each costs its
    /// record and task state (`smsgw_memory_bytes{structure=
    /// "background_submissions"}`).
    pub fn background_submissions(mut self, max: usize) -> Self {
        self.background_submissions = max.max(1);
        self
    }

    /// The durable outbox app events are appended to (status changes, MO):
    /// a receipt is acknowledged to the SMSC only once its event is in it.
    pub fn outbox(mut self, outbox: Arc<dyn Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// The links messages are submitted over.
    pub fn links(mut self, links: Arc<dyn LinkControl>) -> Self {
        self.links = links;
        self
    }

    /// The rate limiter (in process, or shared in Redis).
    pub fn limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// The ledger of apps' quotas and prepaid balances (the user store's,
    /// so counts are shared and durable like the users).
    pub fn quotas(mut self, ledger: Arc<dyn smsgw_core::quotas::QuotaLedger>) -> Self {
        self.quotas = ledger;
        self
    }

    /// The contact-policy engine.
    pub fn policy(mut self, policy: Arc<dyn PolicyEngine>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// How long a background submission is retried while nothing can be
    /// sent (every window full, links rebinding) before the message is left
    /// to the sweeper.
    pub fn submit_retry(mut self, retry: Duration) -> Self {
        self.submit_retry = retry;
        self
    }

    /// The service. Every message-store call is timed into
    /// `smsgw_store_operation_duration_seconds`.
    pub fn build(self) -> Messaging {
        let metrics = LifecycleMetrics::default();
        Messaging {
            store: Arc::new(TimedStore::new(self.store, metrics.store_duration.clone())),
            users: self.users,
            links: self.links,
            limiter: self.limiter,
            policy: self.policy,
            config: self.config,
            submit_retry: self.submit_retry,
            message_ttl: self.message_ttl,
            events: broadcast::channel(16_384).0,
            user_cache: Mutex::new(BoundedMap::new(
                "user_cache",
                USER_CACHE_ENTRIES,
                usize::MAX,
                USER_CACHE,
            )),
            claim_cache: crate::claims::ClaimCache::new(),
            late_unmatched: AtomicU64::new(0),
            recording: Default::default(),
            reference: AtomicU16::new(rand::random()),
            app_limits: Mutex::new(BoundedMap::new(
                "app_limits",
                USER_CACHE_ENTRIES,
                usize::MAX,
                USER_CACHE,
            )),
            submit_slots: Arc::new(Semaphore::new(self.background_submissions)),
            submit_slots_max: self.background_submissions,
            submit_task_bytes: AtomicU64::new(0),
            stats: Stats::default(),
            metrics,
            observer: OnceLock::new(),
            outbox: self.outbox,
            routes: Default::default(),
            quotas: self.quotas,
        }
    }
}

impl Messaging {
    /// A builder over a message store, a user store and the configuration
    /// in force (shared with whoever swaps it).
    pub fn builder(
        store: Arc<dyn MessageStore>,
        users: Arc<dyn UserStore>,
        config: Arc<ArcSwap<Snapshot>>,
    ) -> MessagingBuilder {
        MessagingBuilder {
            store,
            users,
            config,
            links: Arc::new(smsgw_core::links::NoLinks),
            limiter: Arc::new(Unlimited),
            policy: None,
            submit_retry: DEFAULT_SUBMIT_RETRY,
            outbox: None,
            background_submissions: DEFAULT_BACKGROUND_SUBMISSIONS,
            message_ttl: smsgw_core::messages::DEFAULT_MESSAGE_TTL,
            quotas: Arc::new(smsgw_core::quotas::MemoryLedger::default()),
        }
    }

    /// Registers the lifecycle's Prometheus series (message counters, store
    /// latency, contact-policy decisions) in `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.stats.register(registry);
        self.metrics.register(registry);
    }

    /// What the service's bounded in-memory structures hold now (user cache, app limits, campaigns, and the contact-policy
    /// engine's counters when they are in process), for the
    /// `smsgw_memory_*` gauges.
    pub fn memory(&self) -> Vec<MemoryUse> {
        vec![
            self.user_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .memory(),
            self.app_limits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .memory(),
            self.claim_cache.memory(),
            self.stats.campaigns_memory(),
            self.background_memory(),
            self.recording.memory(),
        ]
        .into_iter()
        .chain(self.policy.as_ref().and_then(|p| p.memory()))
        .collect()
    }

    /// Background submissions in flight: entries, their task state, and
    /// the bound.
    fn background_memory(&self) -> MemoryUse {
        let entries = self
            .submit_slots_max
            .saturating_sub(self.submit_slots.available_permits()) as u64;
        MemoryUse {
            structure: "background_submissions",
            entries,
            bytes: entries * self.submit_task_bytes.load(Ordering::Relaxed),
            capacity: self.submit_slots_max as u64,
            evicted: 0,
        }
    }

    /// Late submit_sm_resp that settled no segment (their link had
    /// forgotten the submit, or the message is gone), since start
    /// (`smsgw_smpp_late_responses_unmatched_total`).
    pub fn late_unmatched(&self) -> u64 {
        self.late_unmatched.load(Ordering::Relaxed)
    }

    /// Sets the observer of every message state change (the journal);
    /// there is at most one, so a second call is refused (`false`).
    pub fn set_observer(&self, observer: Observer) -> bool {
        self.observer.set(observer).is_ok()
    }

    pub(crate) fn observe(&self, ev: Lifecycle<'_>) {
        if let Some(o) = self.observer.get() {
            o(&ev);
        }
    }

    /// The message store (timed).
    pub fn store(&self) -> &Arc<dyn MessageStore> {
        &self.store
    }

    /// The links messages go out over.
    pub fn links(&self) -> &Arc<dyn LinkControl> {
        &self.links
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &Arc<dyn RateLimiter> {
        &self.limiter
    }

    /// The contact-policy engine, if any.
    pub fn policy(&self) -> Option<&Arc<dyn PolicyEngine>> {
        self.policy.as_ref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.config
    }

    /// Subscribes to every app's events (callers filter by app).
    pub fn subscribe(&self) -> broadcast::Receiver<AppEvent> {
        self.events.subscribe()
    }

    /// Publishes an event (no subscriber is fine).
    pub fn publish(&self, ev: AppEvent) {
        let _ = self.events.send(ev);
    }

    /// Sends one message: normalisation, acceptance (limits, policy,
    /// idempotent persistence), submission (in the background unless
    /// `wait_for_submit`). A refusal is logged, counted and journaled here.
    ///
    /// `trace` is the request's trace; the transport finishes it with the
    /// outcome.
    pub async fn send(
        self: &Arc<Self>,
        sender: Sender<'_>,
        req: SendRequest,
        trace: &RequestTrace,
    ) -> Result<SendResponse, MessagingError> {
        let req = req.normalize();
        let result = self.accept(sender, &req, trace).await;
        if let Err(e) = &result
            && !e.is_internal()
        {
            self.refused(sender, &req, e, trace);
        }
        result
    }

    /// Reports a send refused before anything was stored.
    fn refused(
        &self,
        sender: Sender<'_>,
        req: &crate::request::Normalized,
        e: &MessagingError,
        trace: &RequestTrace,
    ) {
        let transaction_id = req.given_transaction_id();
        let target = req.esme.as_str();
        self.observe(Lifecycle::Refused {
            app_id: sender.app_id,
            transaction_id,
            destination: &req.destination,
            reason: e.code(),
        });
        let config = self.config.load();
        let scope = Scope {
            app: sender.app_id,
            link: config.links.contains_key(target).then_some(target),
            pool: config.pools.contains_key(target).then_some(target),
            task: Some(req.task_id.as_deref().unwrap_or("")),
        };
        self.stats.rejected(&scope, e.code());
        tracing::info!(
            target: MESSAGE_LOG,
            event = "refused",
            message_id = "",
            transaction_id = %transaction_id,
            app_id = %sender.app_id,
            esme = %target,
            reason = e.code(),
            trace_id = %trace.trace_id(),
            "message refused"
        );
    }

    /// The one place a stored message's change is reported. When its status
    /// differs from `before` (`None`: the message was just accepted): one
    /// info line under [`MESSAGE_LOG`], and the delivered/failed counters
    /// when it became final. Then, for a message that existed before, its
    /// app is told (WatchEvents, webhooks).
    pub(crate) fn changed(&self, before: Option<MessageStatus>, rec: &MessageRecord) {
        if before != Some(rec.status) {
            let event = match rec.status {
                MessageStatus::Pending => "submitted",
                other => status_name(other),
            };
            tracing::info!(
                target: MESSAGE_LOG,
                event,
                message_id = %rec.message_id,
                transaction_id = %rec.transaction_id,
                app_id = %rec.app_id,
                esme = rec.target.name(),
                link = rec.link.as_deref().unwrap_or(""),
                segments = rec.segments.len(),
                trace_id = rec.trace_id(),
                "message {event}"
            );
            match rec.status {
                MessageStatus::Delivered => self.stats.finished(&scope_of(rec), true),
                MessageStatus::Failed => self.stats.finished(&scope_of(rec), false),
                _ => {}
            }
        }
        // Built only for a watcher (gRPC WatchEvents): three strings a
        // status change otherwise.
        if before.is_some() && self.events.receiver_count() > 0 {
            self.publish(status_event(rec));
        }
    }

    /// The outbox, if one is configured.
    pub fn outbox(&self) -> Option<&Arc<dyn Outbox>> {
        self.outbox.as_ref()
    }

    /// Appends the event telling that `rec` reached its status, when it
    /// moved there from `before` (or, with `again`, re-appends the event of
    /// its present status: a receipt delivered twice may follow a crash
    /// between the store write and the append; its id is the same, so the
    /// receiver drops a copy). No outbox, or a message still `accepted`:
    /// nothing.
    pub(crate) async fn notify(
        &self,
        before: MessageStatus,
        rec: &MessageRecord,
        again: bool,
    ) -> Result<(), MessagingError> {
        let Some(outbox) = &self.outbox else {
            return Ok(());
        };
        if (before == rec.status && !again) || rec.status == MessageStatus::Accepted {
            return Ok(());
        }
        let kind = status_name(rec.status);
        let event_id = status_event_id(&rec.message_id, kind);
        let ev = status_event(rec);
        let out = OutboxEvent {
            body: event_body(&ev, &event_id),
            event_id,
            app_id: rec.app_id.clone(),
            key: rec.message_id.clone(),
            kind: kind.to_owned(),
            callback: rec.callback.clone(),
            created_at_ms: smsgw_core::messages::unix_now_ms(),
        };
        outbox
            .append(std::slice::from_ref(&out))
            .await
            .map_err(|e| MessagingError::Internal(e.to_string()))
    }

    /// The sending user's record, cached for [`USER_CACHE`].
    pub(crate) async fn user(&self, user_id: &str) -> Result<Arc<UserRecord>, MessagingError> {
        if let Some(u) = self
            .user_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user_id.to_owned(), Instant::now().into_std())
        {
            return Ok(u.clone());
        }
        let u = self
            .users
            .get(user_id)
            .await
            .map_err(MessagingError::Users)?
            .ok_or(MessagingError::UnknownUser)?;
        let u = Arc::new(u);
        // A user record is a few hundred bytes plus its quotas and lists.
        let bytes = 2 * user_id.len() + std::mem::size_of::<UserRecord>() + 256;
        self.user_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                user_id.to_owned(),
                u.clone(),
                bytes,
                Instant::now().into_std(),
            );
        Ok(u)
    }

    /// The next concatenation reference.
    pub(crate) fn next_reference(&self) -> u16 {
        self.reference.fetch_add(1, Ordering::Relaxed)
    }
}

/// The event telling `rec`'s app of its present status.
fn status_event(rec: &MessageRecord) -> AppEvent {
    AppEvent::Status {
        app_id: rec.app_id.clone(),
        message_id: rec.message_id.clone(),
        transaction_id: rec.transaction_id.clone(),
        status: rec.status,
        at_ms: rec.updated_at_ms,
        possible_duplicate: rec.possible_duplicate(),
    }
}

/// The JSON object a receiver gets for `ev`: the event's fields and its
/// `event_id`.
pub(crate) fn event_body(ev: &AppEvent, event_id: &str) -> String {
    // Written straight after the event's own fields (an internally tagged
    // enum is one JSON object), not through a `serde_json::Value`: one
    // buffer instead of a map of owned strings, for every event.
    let mut out = Vec::with_capacity(256);
    serde_json::to_writer(&mut out, ev).expect("events serialise");
    debug_assert_eq!(out.last(), Some(&b'}'));
    out.pop();
    out.extend_from_slice(b",\"event_id\":");
    serde_json::to_writer(&mut out, event_id).expect("strings serialise");
    out.push(b'}');
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// The statistics scope of a stored message.
pub(crate) fn scope_of(r: &MessageRecord) -> Scope<'_> {
    Scope {
        app: &r.app_id,
        link: r.link.as_deref(),
        pool: match &r.target {
            Target::Pool(p) => Some(p),
            Target::Link(_) => None,
        },
        task: r.task_id.as_deref(),
    }
}

/// A limiter that allows everything (no limits configured).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

#[async_trait::async_trait]
impl RateLimiter for Unlimited {
    async fn acquire(
        &self,
        _keys: &[smsgw_core::limits::RateKey],
        _cost: u32,
        _max_wait: Duration,
    ) -> Result<smsgw_core::limits::RateDecision, smsgw_core::limits::LimitError> {
        Ok(smsgw_core::limits::RateDecision::Allowed {
            wait: Duration::ZERO,
        })
    }
    async fn set_limit(
        &self,
        _key: &smsgw_core::limits::RateKey,
        _limit: Option<smsgw_core::limits::RateLimit>,
    ) -> Result<(), smsgw_core::limits::LimitError> {
        Ok(())
    }
    fn mode(&self) -> smsgw_core::limits::LimiterMode {
        smsgw_core::limits::LimiterMode::InProcess
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_body_is_the_events_object_with_its_id() {
        let events = [
            AppEvent::Status {
                app_id: "app-1".into(),
                message_id: "m\"1".into(),
                transaction_id: "t1".into(),
                status: MessageStatus::Delivered,
                at_ms: 7,
                possible_duplicate: true,
            },
            AppEvent::MobileOriginated {
                app_id: "app-2".into(),
                link: "l".into(),
                source: "+1".into(),
                destination: "123".into(),
                message: "ünï \\ \"x\"\n".into(),
                at_ms: 8,
                text_error: None,
                undecoded_payload: None,
                data_coding: 8,
                incomplete: true,
            },
        ];
        for ev in events {
            let body = event_body(&ev, "ev_\"q\"");
            let got: serde_json::Value = serde_json::from_str(&body).unwrap();
            let mut want = serde_json::to_value(&ev).unwrap();
            want.as_object_mut()
                .unwrap()
                .insert("event_id".into(), "ev_\"q\"".into());
            assert_eq!(got, want);
        }
    }
}
