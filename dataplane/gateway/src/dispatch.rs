//! Cross-pod dispatch (issue 17): in a cluster the operator spreads a link's
//! few bind slots over many proxy pods, so most pods hold no bind of a given
//! link. A message accepted by such a pod is handed, synchronously, to a
//! pod that holds one, over the internal `dispatch.v1` gRPC service; the
//! accepting pod's send path sees an ordinary [`LinkControl::submit`] and
//! records the outcome in the shared store as it would a local one.
//!
//! Who holds what: every pod publishes, every [`PUBLISH_EVERY`], the links
//! it holds up into Redis (one sorted set per link, member = the pod's
//! dispatch address, score = when the entry expires) and reads everyone
//! else's in the same round trip. A dead pod's entries lapse within
//! [`ENTRY_TTL`]; until then a call to it fails at connect and the next
//! holder is tried.
//!
//! Across the hand-off: a call that failed before it reached the peer
//! (connect refused, the stream refused unprocessed by a pod shutting down,
//! the peer answered that it holds no bind, does not know the target or
//! refused the token) sent nothing and the next holder is tried. A call that
//! failed after it was sent (peer killed mid-call, deadline) may have
//! reached the SMSC (counted in `smsgw_dispatch_forwarded_total
//! {outcome="lost"}`): under the link's `unknownPolicy: resubmit` (the
//! default) it is sent again through another holder and every segment is
//! marked a possible duplicate (`resubmitted`), as the link does with a
//! session closed before its answer; under `hold`, or when no holder takes
//! it within [`LOST_RESUBMIT_WAIT`], every segment is `Unknown`. A serving
//! pod never forwards
//! again, so a hand-off is one hop.

use crate::links::LinkSet;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use smsgw_core::links::{
    Address, LinkAction, LinkControl, LinkView, OutboundMessage, OutboundSegment, SarParts,
    SegmentResult, Submission, SubmitError,
};
use smsgw_proto::dispatch::v1 as pb;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// How often a pod publishes its links and reads the others'.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// How long a published entry stays valid without being renewed.
pub(crate) const ENTRY_TTL: Duration = Duration::from_secs(3);
/// Key prefix of the per-link holder sets.
const KEY_PREFIX: &str = "smsgw:dispatch:";
/// Hash of the admins' wishes per link, for every pod: `<link>:stopped`
/// (`1`/`0`) and `<link>:epoch` (incremented by each restart).
const ADMIN_KEY: &str = "smsgw:links:admin";
/// Hash of each pod's link views (JSON with an expiry), merged into the
/// cluster-wide view.
const VIEWS_KEY: &str = "smsgw:links:views";
/// Hash of each pod's numbers (JSON with an expiry) for the cluster-wide
/// admin statistics and dashboard.
const NUMBERS_KEY: &str = "smsgw:pods:numbers";
/// Registry rounds between two publications of this pod's numbers.
const NUMBERS_EVERY: u32 = 4;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Dispatch counters (METRICS.md): hand-offs made, by outcome, and
/// hand-offs served.
#[derive(Clone, Default)]
pub(crate) struct DispatchMetrics {
    forwarded: Family<OutcomeLabels, Counter>,
    served: Family<OutcomeLabels, Counter>,
}

impl DispatchMetrics {
    fn register(&self, metrics: &smsgw_api::metrics::Metrics) {
        // Every outcome from zero, so the series exist (and `rate()` works)
        // before the first hand-off.
        for o in ["submitted", "refused", "lost"] {
            let _ = self.forwarded.get_or_create(&OutcomeLabels { outcome: o });
        }
        for o in [
            "submitted",
            "not_bound",
            "unknown_target",
            "unauthenticated",
            "invalid",
        ] {
            let _ = self.served.get_or_create(&OutcomeLabels { outcome: o });
        }
        metrics.with_registry(|r| {
            r.register(
                "dispatch_forwarded",
                "Messages handed to another pod holding a bind of their link, by outcome (submitted, refused: nothing sent and the next pod tried, lost: sent but the outcome unknown)",
                self.forwarded.clone(),
            );
            r.register(
                "dispatch_served",
                "Hand-offs from other pods served here, by outcome (submitted, not_bound, unknown_target, unauthenticated, invalid)",
                self.served.clone(),
            );
        });
    }

    fn forwarded(&self, outcome: &'static str) {
        self.forwarded
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    fn served(&self, outcome: &'static str) {
        self.served.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// Which pods hold which links up, as last read from Redis.
pub(crate) struct Registry {
    redis: redis::aio::ConnectionManager,
    /// This pod's dispatch address, as peers reach it.
    advertise: String,
    /// This pod's name, as views and breakdowns show it.
    pod: String,
    /// Where this pod's numbers come from, once the API state exists.
    state: std::sync::OnceLock<smsgw_api::ApiState>,
    /// The other pods' numbers, as last read.
    peer_numbers: std::sync::RwLock<Vec<(String, smsgw_api::cluster::PodNumbers)>>,
    holders: std::sync::RwLock<HashMap<String, Vec<String>>>,
    /// The other pods' link views (each session tagged with its pod), as
    /// last read.
    peer_views: std::sync::RwLock<Vec<Vec<LinkView>>>,
    /// Restart epochs of each link already acted on here.
    epochs: std::sync::Mutex<HashMap<String, u64>>,
}

/// What the admins asked for a link, cluster-wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkWish {
    /// Stopped until started again (survives pod restarts).
    pub(crate) stopped: bool,
    /// Incremented by every restart.
    pub(crate) epoch: u64,
}

/// Reads the admin hash (`<link>:stopped`, `<link>:epoch`) into wishes.
fn wishes(raw: HashMap<String, String>) -> HashMap<String, LinkWish> {
    let mut out: HashMap<String, LinkWish> = HashMap::new();
    for (field, value) in raw {
        if let Some(link) = field.strip_suffix(":stopped") {
            out.entry(link.to_owned()).or_default().stopped = value == "1";
        } else if let Some(link) = field.strip_suffix(":epoch") {
            out.entry(link.to_owned()).or_default().epoch = value.parse().unwrap_or(0);
        }
    }
    out
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PodViews {
    /// Unix ms after which the entry is stale (the pod is gone).
    until: u64,
    /// The pod's name.
    #[serde(default)]
    pod: String,
    links: Vec<LinkView>,
}

/// A pod's numbers as published.
#[derive(serde::Serialize, serde::Deserialize)]
struct Published {
    /// Unix ms after which the entry is stale (the pod is gone).
    until: u64,
    pod: String,
    numbers: smsgw_api::cluster::PodNumbers,
}

/// Marks every session of `views` as held by `pod`.
fn tag_sessions(mut views: Vec<LinkView>, pod: &str) -> Vec<LinkView> {
    for v in &mut views {
        for s in &mut v.sessions {
            s.pod = Some(pod.to_owned());
        }
    }
    views
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Registry {
    /// Connects to the registry's Redis.
    pub(crate) async fn connect(url: &str, advertise: String, pod: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("invalid dispatch Redis URL: {e}"))?;
        let redis = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the dispatch Redis: {e}"))?;
        Ok(Self {
            redis,
            advertise,
            pod: pod.to_owned(),
            state: Default::default(),
            peer_numbers: Default::default(),
            holders: Default::default(),
            peer_views: Default::default(),
            epochs: Default::default(),
        })
    }

    /// The other pods holding any of `links` up, each once.
    pub(crate) fn peers_for(&self, links: &[String]) -> Vec<String> {
        let holders = self.holders.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<String> = Vec::new();
        for l in links {
            for h in holders.get(l).into_iter().flatten() {
                if *h != self.advertise && !out.contains(h) {
                    out.push(h.clone());
                }
            }
        }
        out
    }

    /// Publishes which of `links` this pod holds up (renewing those, taking
    /// the others back) and reads every holder of each, in one round trip.
    pub(crate) async fn publish(
        &self,
        links: &[(String, bool)],
        views: &[LinkView],
    ) -> redis::RedisResult<HashMap<String, LinkWish>> {
        let now = now_ms();
        let mut pipe = redis::pipe();
        for (name, up) in links {
            let key = format!("{KEY_PREFIX}{name}");
            if *up {
                pipe.zadd(&key, &self.advertise, now + ENTRY_TTL.as_millis() as u64)
                    .ignore()
                    .pexpire(&key, (ENTRY_TTL * 4).as_millis() as i64)
                    .ignore();
            } else {
                pipe.zrem(&key, &self.advertise).ignore();
            }
            pipe.zrangebyscore(&key, now, "+inf");
        }
        let mine = PodViews {
            until: now + ENTRY_TTL.as_millis() as u64,
            pod: self.pod.clone(),
            links: views.to_vec(),
        };
        pipe.hset(
            VIEWS_KEY,
            &self.advertise,
            serde_json::to_string(&mine).unwrap_or_default(),
        )
        .ignore()
        .hgetall(VIEWS_KEY)
        .hgetall(ADMIN_KEY);
        let mut conn = self.redis.clone();
        let mut read: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let admin: HashMap<String, String> =
            redis::from_redis_value(&read.pop().unwrap_or(redis::Value::Nil))?;
        let all_views: HashMap<String, String> =
            redis::from_redis_value(&read.pop().unwrap_or(redis::Value::Nil))?;
        let mut fresh = HashMap::new();
        for ((name, _), v) in links.iter().zip(read) {
            fresh.insert(name.clone(), redis::from_redis_value::<Vec<String>>(&v)?);
        }
        *self.holders.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        let peers = self
            .live_peers(&mut conn, VIEWS_KEY, all_views, now, |v: &PodViews| v.until)
            .await
            .into_iter()
            .map(|v| tag_sessions(v.links, &v.pod))
            .collect();
        *self.peer_views.write().unwrap_or_else(|p| p.into_inner()) = peers;
        Ok(wishes(admin))
    }

    /// The other pods' entries of a published hash (`key`, pod address →
    /// JSON) that are still valid at `now`; entries that are stale or do not
    /// decode belong to pods that are gone and are deleted.
    async fn live_peers<T: serde::de::DeserializeOwned>(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        key: &str,
        all: HashMap<String, String>,
        now: u64,
        until: impl Fn(&T) -> u64,
    ) -> Vec<T> {
        let mut stale = Vec::new();
        let mut live = Vec::new();
        for (addr, json) in all {
            if addr == self.advertise {
                continue;
            }
            match serde_json::from_str::<T>(&json) {
                Ok(v) if until(&v) >= now => live.push(v),
                _ => stale.push(addr),
            }
        }
        if !stale.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("HDEL")
                .arg(key)
                .arg(&stale)
                .query_async(conn)
                .await;
        }
        live
    }

    /// Publishes this pod's numbers and reads the other live pods'.
    async fn share_numbers(&self) -> redis::RedisResult<()> {
        let Some(state) = self.state.get() else {
            return Ok(());
        };
        let now = now_ms();
        let mine = Published {
            // Published every NUMBERS_EVERY rounds: valid for a few of those.
            until: now
                + (PUBLISH_EVERY * NUMBERS_EVERY).as_millis() as u64
                + ENTRY_TTL.as_millis() as u64,
            pod: self.pod.clone(),
            numbers: state.pod_numbers(),
        };
        let mut conn = self.redis.clone();
        let ((), all): ((), HashMap<String, String>) = redis::pipe()
            .hset(
                NUMBERS_KEY,
                &self.advertise,
                serde_json::to_string(&mine).unwrap_or_default(),
            )
            .hgetall(NUMBERS_KEY)
            .query_async(&mut conn)
            .await?;
        let mut peers: Vec<(String, smsgw_api::cluster::PodNumbers)> = self
            .live_peers(&mut conn, NUMBERS_KEY, all, now, |p: &Published| p.until)
            .await
            .into_iter()
            .map(|p| (p.pod, p.numbers))
            .collect();
        peers.sort_by(|a, b| a.0.cmp(&b.0));
        *self.peer_numbers.write().unwrap_or_else(|p| p.into_inner()) = peers;
        Ok(())
    }

    /// Records an admin action for every pod; returns the wish now in force.
    pub(crate) async fn wish(
        &self,
        link: &str,
        action: LinkAction,
    ) -> redis::RedisResult<LinkWish> {
        let mut conn = self.redis.clone();
        let stopped = format!("{link}:stopped");
        let epoch = format!("{link}:epoch");
        let (stop, epoch): (bool, u64) = match action {
            LinkAction::Stop => {
                let ((), e): ((), Option<u64>) = redis::pipe()
                    .hset(ADMIN_KEY, &stopped, "1")
                    .hget(ADMIN_KEY, &epoch)
                    .query_async(&mut conn)
                    .await?;
                (true, e.unwrap_or(0))
            }
            LinkAction::Start => {
                let ((), e): ((), Option<u64>) = redis::pipe()
                    .hset(ADMIN_KEY, &stopped, "0")
                    .hget(ADMIN_KEY, &epoch)
                    .query_async(&mut conn)
                    .await?;
                (false, e.unwrap_or(0))
            }
            LinkAction::Restart => {
                let ((), e): ((), u64) = redis::pipe()
                    .hset(ADMIN_KEY, &stopped, "0")
                    .hincr(ADMIN_KEY, &epoch, 1)
                    .query_async(&mut conn)
                    .await?;
                (false, e)
            }
        };
        // This pod acts on it at once; the others within one round.
        self.epochs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(link.to_owned(), epoch);
        Ok(LinkWish {
            stopped: stop,
            epoch,
        })
    }

    /// Brings this pod's links in line with the admins' wishes: stops or
    /// starts them, restarts those whose epoch moved since last seen (the
    /// first sighting only records it).
    async fn follow(&self, running: &crate::links::Links, wishes: HashMap<String, LinkWish>) {
        for (link, want) in wishes {
            // A suspended link follows its SmppLink alone.
            if running.link(&link).is_none() || running.is_suspended(&link) {
                continue;
            }
            let stopped = running.is_stopped(&link);
            if want.stopped && !stopped {
                tracing::info!(%link, "stopping the link: an admin stopped it cluster-wide");
                running.control(&link, LinkAction::Stop).await;
            } else if !want.stopped && stopped {
                tracing::info!(%link, "starting the link: an admin started it cluster-wide");
                running.control(&link, LinkAction::Start).await;
            }
            let restart = {
                let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
                let seen = epochs.entry(link.clone()).or_insert(want.epoch);
                let moved = want.epoch > *seen;
                *seen = (*seen).max(want.epoch);
                moved
            };
            if restart && !want.stopped {
                tracing::info!(%link, "restarting the link: an admin restarted it cluster-wide");
                running.control(&link, LinkAction::Restart).await;
            }
        }
    }

    /// The other pods' views, as last read.
    fn peer_views(&self) -> Vec<Vec<LinkView>> {
        self.peer_views
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes this pod out of every link's holders (shutdown).
    pub(crate) async fn withdraw(&self, links: &[String]) {
        let mut pipe = redis::pipe();
        for name in links {
            pipe.zrem(format!("{KEY_PREFIX}{name}"), &self.advertise)
                .ignore();
        }
        let mut conn = self.redis.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(error = %e, "could not withdraw from the dispatch registry");
        }
    }

    /// Publishes this pod's links every [`PUBLISH_EVERY`] until `cancel`,
    /// then withdraws them.
    pub(crate) async fn run(self: Arc<Self>, links: Arc<LinkSet>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut round = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = cancel.cancelled() => break,
            }
            round = round.wrapping_add(1);
            if round % NUMBERS_EVERY == 1
                && let Err(e) = self.share_numbers().await
            {
                tracing::debug!(error = %e, "cannot share this pod's numbers");
            }
            let running = links.get();
            let up = running.as_ref().map(|l| l.up_links()).unwrap_or_default();
            let views = running.as_ref().map(|l| l.links()).unwrap_or_default();
            match self.publish(&up, &views).await {
                Ok(wishes) => {
                    if failing {
                        failing = false;
                        tracing::info!("dispatch registry reachable again");
                    }
                    if let Some(r) = &running {
                        self.follow(r, wishes).await;
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot publish to the dispatch registry; hand-offs use the last known holders");
                }
                Err(_) => {}
            }
        }
        let names: Vec<String> = links
            .get()
            .map(|l| l.up_links().into_iter().map(|(n, _)| n).collect())
            .unwrap_or_default();
        self.withdraw(&names).await;
        let mut conn = self.redis.clone();
        let _: redis::RedisResult<()> = redis::pipe()
            .hdel(VIEWS_KEY, &self.advertise)
            .hdel(NUMBERS_KEY, &self.advertise)
            .query_async(&mut conn)
            .await;
    }
}

impl smsgw_api::cluster::Peers for Registry {
    fn pod(&self) -> String {
        self.pod.clone()
    }

    fn peers(&self) -> Vec<(String, smsgw_api::cluster::PodNumbers)> {
        self.peer_numbers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What became of one hand-off attempt.
enum Forward {
    /// The peer submitted it.
    Done(Submission),
    /// Nothing was sent; try the next holder.
    NotSent(String),
    /// Sent, the outcome is unknown.
    Lost(String),
    /// The peer's link refused it for good ([`SubmitError::Refused`]):
    /// nothing was sent, and no other holder would send it.
    Refused(SubmitError),
}

/// [`LinkControl`] of a pod in a cluster: submits through its own links when
/// it holds the target up, else hands the message to a pod that does.
pub(crate) struct Dispatching {
    links: Arc<LinkSet>,
    registry: Arc<Registry>,
    token: Arc<str>,
    timeout: Duration,
    clients: std::sync::Mutex<HashMap<String, pb::dispatch_client::DispatchClient<Channel>>>,
    next: AtomicUsize,
    metrics: DispatchMetrics,
}

impl Dispatching {
    pub(crate) fn new(
        links: Arc<LinkSet>,
        registry: Arc<Registry>,
        token: &str,
        timeout: Duration,
        metrics: DispatchMetrics,
    ) -> Self {
        Self {
            links,
            registry,
            token: token.into(),
            timeout,
            clients: Default::default(),
            next: AtomicUsize::new(0),
            metrics,
        }
    }

    async fn client(
        &self,
        peer: &str,
    ) -> Result<pb::dispatch_client::DispatchClient<Channel>, String> {
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
        {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{peer}"))
            .map_err(|e| format!("bad peer address {peer}: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {peer}: {e}"))?;
        let client = pb::dispatch_client::DispatchClient::new(channel)
            .max_decoding_message_size(1 << 20)
            .max_encoding_message_size(1 << 20);
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.to_owned(), client.clone());
        Ok(client)
    }

    fn forget(&self, peer: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }

    async fn forward(&self, peer: &str, target: &str, msg: &OutboundMessage) -> Forward {
        let mut client = match self.client(peer).await {
            Ok(c) => c,
            Err(e) => return Forward::NotSent(e),
        };
        let mut req = tonic::Request::new(to_proto(target, msg));
        req.set_timeout(self.timeout);
        if let Ok(v) = format!("Bearer {}", self.token).parse() {
            req.metadata_mut().insert("authorization", v);
        }
        match client.submit(req).await {
            Ok(reply) => match from_reply(reply.into_inner(), msg.segments.len()) {
                Ok(Ok(sub)) => Forward::Done(sub),
                Ok(Err(refused)) => Forward::Refused(refused),
                Err(e) => Forward::Lost(format!("pod {peer} answered a malformed reply: {e}")),
            },
            Err(s) => {
                use tonic::Code;
                match s.code() {
                    // Answered by the peer's handler before anything was sent.
                    Code::FailedPrecondition
                    | Code::NotFound
                    | Code::Unauthenticated
                    | Code::InvalidArgument
                    | Code::ResourceExhausted => {
                        if s.code() == Code::Unauthenticated {
                            tracing::warn!(%peer, "a peer refused this pod's dispatch token");
                        }
                        Forward::NotSent(format!("pod {peer}: {}", s.message()))
                    }
                    // Connection could not be (re)established, or the peer
                    // refused the stream unprocessed: never sent.
                    _ if never_sent(&s) => {
                        self.forget(peer);
                        Forward::NotSent(format!("pod {peer} unreachable: {}", s.message()))
                    }
                    _ => {
                        self.forget(peer);
                        Forward::Lost(format!(
                            "handed to pod {peer}, which did not answer ({:?}: {})",
                            s.code(),
                            s.message()
                        ))
                    }
                }
            }
        }
    }
}

/// True when the request provably never reached the peer's handler: the
/// connection could not be made, or the peer refused the stream unprocessed
/// (HTTP/2 REFUSED_STREAM, or a GOAWAY from a pod shutting down whose last
/// processed stream is before ours). A stream cut by a connection lost
/// while the peer worked on it is none of these: its outcome is unknown.
fn never_sent(s: &tonic::Status) -> bool {
    let mut text = s.message().to_owned();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote()))
        {
            return true;
        }
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    let text = text.to_ascii_lowercase();
    text.contains("error trying to connect")
        || text.contains("tcp connect error")
        || text.contains("connection refused")
}

#[async_trait::async_trait]
impl LinkControl for Dispatching {
    /// Every link as the whole cluster holds it (this pod's live view
    /// merged with the others' last published ones).
    fn links(&self) -> Vec<LinkView> {
        merge_views(
            tag_sessions(self.links.links(), &self.registry.pod),
            self.registry.peer_views(),
        )
    }

    fn link(&self, name: &str) -> Option<LinkView> {
        let mine = tag_sessions(vec![self.links.link(name)?], &self.registry.pod);
        let peers = self
            .registry
            .peer_views()
            .into_iter()
            .map(|v| v.into_iter().filter(|l| l.name == name).collect())
            .collect();
        merge_views(mine, peers).pop()
    }

    /// Acts on every pod: the wish is recorded in Redis (and survives pod
    /// restarts), this pod follows at once, the others within one round.
    async fn control(&self, name: &str, action: LinkAction) -> Option<LinkView> {
        let running = self.links.get()?;
        running.link(name)?;
        if running.is_suspended(name) {
            return self.link(name);
        }
        if let Err(e) = self.registry.wish(name, action).await {
            tracing::warn!(link = %name, error = %e, "cannot record the link action for the other pods; applied on this pod only");
        }
        running.control(name, action).await?;
        self.link(name)
    }

    /// Submits through this pod's links when it holds `target` up, else
    /// through a pod that does. A hand-off whose outcome is lost (the
    /// holder went away after taking it) is, under `unknownPolicy:
    /// resubmit`, sent again through another holder for up to
    /// [`LOST_RESUBMIT_WAIT`] and marked as a possible duplicate, as the
    /// link itself does with a session closed before its response.
    async fn submit(&self, target: &str, msg: OutboundMessage) -> Result<Submission, SubmitError> {
        let Some(running) = self.links.get() else {
            return Err(SubmitError::UnknownTarget(target.to_owned()));
        };
        let mut lost: Option<String> = None;
        let mut losses = 0;
        let deadline = tokio::time::Instant::now() + LOST_RESUBMIT_WAIT;
        loop {
            let why = match self.try_once(&running, target, &msg).await {
                Attempt::Done(mut sub) => {
                    if lost.is_some() {
                        sub.resubmitted = (0..sub.results.len() as u16).collect();
                        self.metrics.forwarded("resubmitted");
                    }
                    return Ok(sub);
                }
                Attempt::Failed(e) => match (&lost, e) {
                    (None, e) => return Err(e),
                    (Some(_), SubmitError::Unavailable(_))
                        if tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    (Some(why), _) => why.clone(),
                },
                Attempt::Lost(why) => {
                    losses += 1;
                    if running.resubmits_unknown(target)
                        && losses < LOST_RESUBMIT_ROUNDS
                        && tokio::time::Instant::now() < deadline
                    {
                        tracing::warn!(%target, reason = %why, "hand-off lost: sending it again through another holder (a possible duplicate)");
                        lost = Some(why);
                        continue;
                    }
                    why
                }
            };
            tracing::warn!(%target, reason = %why, "hand-off lost: outcome unknown");
            return Ok(Submission {
                link: target.to_owned(),
                results: msg
                    .segments
                    .iter()
                    .map(|_| SegmentResult::Unknown {
                        reason: why.clone(),
                    })
                    .collect(),
                resubmitted: Vec::new(),
            });
        }
    }
}

/// How long a lost hand-off waits for a holder to send it again through.
/// With a 1-session link the lost holder was the only one: the bind comes
/// back only when that pod has restarted (or another pod has taken its
/// slot), seconds under Kubernetes, so the wait covers a restart rather
/// than the send path's 10 s retry of an unavailable link. It stays below
/// the sweeper's default `--sweep-after` (30 s), which would otherwise
/// claim the still-`accepted` message and submit it unmarked meanwhile.
const LOST_RESUBMIT_WAIT: Duration = Duration::from_secs(20);
/// Lost hand-offs of one message at most before its outcome is unknown.
const LOST_RESUBMIT_ROUNDS: usize = 3;

/// What became of one round of [`Dispatching::try_once`].
enum Attempt {
    Done(Submission),
    Failed(SubmitError),
    Lost(String),
}

impl Dispatching {
    /// One round: this pod's links when it holds `target` up, else each
    /// holder in turn, else this pod's links (unavailable until a bind is
    /// up somewhere).
    async fn try_once(
        &self,
        running: &crate::links::Links,
        target: &str,
        msg: &OutboundMessage,
    ) -> Attempt {
        let up_here = running.up_here(target);
        if up_here == Some(true) {
            match running.submit(target, msg.clone()).await {
                Err(SubmitError::Unavailable(_)) => {} // went down meanwhile: a peer may have it
                Ok(sub) => return Attempt::Done(sub),
                Err(e) => return Attempt::Failed(e),
            }
        }
        let peers = self.registry.peers_for(&running.members(target));
        if !peers.is_empty() {
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let mut last = String::new();
            for i in 0..peers.len() {
                let peer = &peers[(start + i) % peers.len()];
                match self.forward(peer, target, msg).await {
                    Forward::Done(sub) => {
                        self.metrics.forwarded("submitted");
                        return Attempt::Done(sub);
                    }
                    Forward::NotSent(why) => {
                        self.metrics.forwarded("refused");
                        tracing::debug!(%peer, %target, reason = %why, "hand-off refused, trying the next holder");
                        last = why;
                    }
                    Forward::Lost(why) => {
                        self.metrics.forwarded("lost");
                        return Attempt::Lost(why);
                    }
                    Forward::Refused(e) => {
                        self.metrics.forwarded("rejected");
                        return Attempt::Failed(e);
                    }
                }
            }
            if up_here.is_none() {
                return Attempt::Failed(SubmitError::Unavailable(format!(
                    "no pod could take {target:?}: {last}"
                )));
            }
        }
        // Nobody else holds it: this pod's own links answer (unavailable
        // until a bind is up somewhere; the send path retries).
        match running.submit(target, msg.clone()).await {
            Ok(sub) => Attempt::Done(sub),
            Err(e) => Attempt::Failed(e),
        }
    }
}

/// Rank of a link or session state: the most useful one wins a merge.
fn rank(state: &str) -> u8 {
    match state {
        "bound" => 5,
        "binding" => 4,
        "unbinding" => 3,
        "down" => 2,
        "stopped" | "suspended" => 1,
        _ => 0,
    }
}

/// One view per link over every pod: binds, in-flight and rates summed,
/// the best state (bound on any pod is bound), each session slot as the pod
/// holding it sees it, the latest error.
fn merge_views(mine: Vec<LinkView>, peers: Vec<Vec<LinkView>>) -> Vec<LinkView> {
    let mut merged: std::collections::BTreeMap<String, LinkView> =
        mine.into_iter().map(|v| (v.name.clone(), v)).collect();
    for view in peers.into_iter().flatten() {
        // Only links this pod's configuration knows (a peer may lag).
        let Some(m) = merged.get_mut(&view.name) else {
            continue;
        };
        if rank(&view.state) > rank(&m.state) {
            m.state = view.state.clone();
        }
        m.sessions_bound += view.sessions_bound;
        m.sessions_total = m.sessions_total.max(view.sessions_total);
        m.in_flight += view.in_flight;
        m.submit_rate += view.submit_rate;
        m.receipt_rate += view.receipt_rate;
        if m.last_enquire_link_rtt_ms.is_none() {
            m.last_enquire_link_rtt_ms = view.last_enquire_link_rtt_ms;
        }
        if view.last_error_at_ms > m.last_error_at_ms {
            m.last_error = view.last_error.clone();
            m.last_error_at_ms = view.last_error_at_ms;
        }
        for s in view.sessions {
            match m.sessions.iter_mut().find(|x| x.index == s.index) {
                Some(x) if rank(&s.state) > rank(&x.state) => *x = s,
                Some(_) => {}
                None => m.sessions.push(s),
            }
        }
        m.sessions.sort_by_key(|s| s.index);
    }
    merged.into_values().collect()
}

fn to_proto(target: &str, m: &OutboundMessage) -> pb::SubmitRequest {
    let addr = |a: &Address| pb::Address {
        addr: a.addr.clone(),
        ton: a.ton.into(),
        npi: a.npi.into(),
    };
    pb::SubmitRequest {
        target: target.to_owned(),
        source: Some(addr(&m.source)),
        destination: Some(addr(&m.destination)),
        data_coding: m.data_coding.into(),
        udhi: m.udhi,
        registered_delivery: m.registered_delivery,
        segments: m
            .segments
            .iter()
            .map(|s| pb::Segment {
                payload: s.payload.clone(),
                sar: s.sar.map(|p| pb::Sar {
                    msg_ref_num: p.msg_ref_num.into(),
                    total_segments: p.total_segments.into(),
                    segment_seqnum: p.segment_seqnum.into(),
                }),
                message_payload: s.message_payload,
            })
            .collect(),
        priority: m.priority.into(),
        validity_period_s: m.validity_period_s,
        schedule_delivery_ms: m.schedule_delivery_ms,
        tag: m.tag.as_deref().map(str::to_owned),
    }
}

fn narrow<T: TryFrom<u32>>(v: u32, what: &str) -> Result<T, String> {
    T::try_from(v).map_err(|_| format!("{what} {v} out of range"))
}

/// The message of a hand-off request, checked.
fn from_proto(r: pb::SubmitRequest) -> Result<(String, OutboundMessage), String> {
    let addr = |a: Option<pb::Address>, what: &str| -> Result<Address, String> {
        let a = a.ok_or_else(|| format!("{what} missing"))?;
        Ok(Address {
            addr: a.addr,
            ton: narrow(a.ton, "ton")?,
            npi: narrow(a.npi, "npi")?,
        })
    };
    if r.target.is_empty() {
        return Err("target missing".into());
    }
    if r.segments.is_empty() || r.segments.len() > 255 {
        return Err(format!("{} segments (1 to 255)", r.segments.len()));
    }
    let segments = r
        .segments
        .into_iter()
        .map(|s| {
            Ok(OutboundSegment {
                payload: s.payload,
                sar: s
                    .sar
                    .map(|p| -> Result<SarParts, String> {
                        Ok(SarParts {
                            msg_ref_num: narrow(p.msg_ref_num, "sar_msg_ref_num")?,
                            total_segments: narrow(p.total_segments, "sar_total_segments")?,
                            segment_seqnum: narrow(p.segment_seqnum, "sar_segment_seqnum")?,
                        })
                    })
                    .transpose()?,
                message_payload: s.message_payload,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((
        r.target,
        OutboundMessage {
            source: addr(r.source, "source")?,
            destination: addr(r.destination, "destination")?,
            data_coding: narrow(r.data_coding, "data_coding")?,
            udhi: r.udhi,
            registered_delivery: r.registered_delivery,
            segments,
            priority: narrow::<u8>(r.priority, "priority")?.min(3),
            validity_period_s: r.validity_period_s,
            schedule_delivery_ms: r.schedule_delivery_ms,
            tag: r.tag.map(Into::into),
        },
    ))
}

fn to_reply(sub: Submission, pod: &str) -> pb::SubmitReply {
    use pb::segment_result::Result as R;
    let resubmitted = sub.resubmitted;
    pb::SubmitReply {
        link: sub.link,
        pod: pod.to_owned(),
        refused: None,
        results: sub
            .results
            .into_iter()
            .map(|r| match r {
                SegmentResult::Accepted { smsc_message_id } => pb::SegmentResult {
                    result: Some(R::Accepted(smsc_message_id)),
                    ..Default::default()
                },
                SegmentResult::Rejected { command_status } => pb::SegmentResult {
                    result: Some(R::Rejected(command_status)),
                    ..Default::default()
                },
                SegmentResult::Unknown { reason } => pb::SegmentResult {
                    result: Some(R::Unknown(reason)),
                    ..Default::default()
                },
                SegmentResult::NotSent { reason } => pb::SegmentResult {
                    result: Some(R::NotSent(reason)),
                    ..Default::default()
                },
            })
            .enumerate()
            .map(|(i, mut r)| {
                r.resubmitted = resubmitted.contains(&(i as u16));
                r
            })
            .collect(),
    }
}

/// The submission a peer reported, or its link's permanent refusal
/// (inner `Err`); `Err` for a reply that does not fit the request. A late
/// answer to an unknown segment arrives on the serving pod's session and is
/// settled there by the message's tag.
fn from_reply(
    r: pb::SubmitReply,
    segments: usize,
) -> Result<Result<Submission, SubmitError>, String> {
    use pb::segment_result::Result as R;
    if let Some(refusal) = r.refused {
        return Ok(Err(SubmitError::Refused {
            command_status: refusal.command_status,
            reason: format!("{} (on pod {})", refusal.reason, r.pod),
        }));
    }
    if r.results.len() != segments {
        return Err(format!(
            "{} results for {segments} segments",
            r.results.len()
        ));
    }
    let resubmitted = r
        .results
        .iter()
        .enumerate()
        .filter(|(_, s)| s.resubmitted)
        .map(|(i, _)| i as u16)
        .collect();
    let results = r
        .results
        .into_iter()
        .map(|s| match s.result {
            Some(R::Accepted(id)) => Ok(SegmentResult::Accepted {
                smsc_message_id: id,
            }),
            Some(R::Rejected(command_status)) => Ok(SegmentResult::Rejected { command_status }),
            Some(R::Unknown(reason)) => Ok(SegmentResult::Unknown {
                reason: format!("{reason} (on pod {})", r.pod),
            }),
            Some(R::NotSent(reason)) => Ok(SegmentResult::NotSent { reason }),
            None => Err("a segment without a result".to_owned()),
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Ok(Submission {
        link: r.link,
        results,
        resubmitted,
    }))
}

/// The `dispatch.v1` service: submits hand-offs through this pod's own
/// links, never forwarding again.
pub(crate) struct DispatchService {
    links: Arc<LinkSet>,
    token: Arc<str>,
    pod: String,
    metrics: DispatchMetrics,
}

#[tonic::async_trait]
impl pb::dispatch_server::Dispatch for DispatchService {
    async fn submit(
        &self,
        req: tonic::Request<pb::SubmitRequest>,
    ) -> Result<tonic::Response<pb::SubmitReply>, tonic::Status> {
        use subtle::ConstantTimeEq;
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(self.token.as_bytes())) {
            self.metrics.served("unauthenticated");
            return Err(tonic::Status::unauthenticated(
                "a valid dispatch token is required",
            ));
        }
        let (target, msg) = from_proto(req.into_inner()).map_err(|e| {
            self.metrics.served("invalid");
            tonic::Status::invalid_argument(e)
        })?;
        let Some(running) = self.links.get() else {
            self.metrics.served("not_bound");
            return Err(tonic::Status::failed_precondition(
                "no links configured yet",
            ));
        };
        match running.up_here(&target) {
            None => {
                self.metrics.served("unknown_target");
                Err(tonic::Status::not_found(format!(
                    "no link or pool named {target:?} here"
                )))
            }
            Some(false) => {
                self.metrics.served("not_bound");
                Err(tonic::Status::failed_precondition(format!(
                    "no session of {target:?} is bound on {}",
                    self.pod
                )))
            }
            Some(true) => match running.submit(&target, msg).await {
                Ok(sub) => {
                    self.metrics.served("submitted");
                    Ok(tonic::Response::new(to_reply(sub, &self.pod)))
                }
                Err(SubmitError::UnknownTarget(t)) => {
                    self.metrics.served("unknown_target");
                    Err(tonic::Status::not_found(format!(
                        "no link or pool named {t:?} here"
                    )))
                }
                Err(SubmitError::Refused {
                    command_status,
                    reason,
                }) => {
                    self.metrics.served("rejected");
                    Ok(tonic::Response::new(pb::SubmitReply {
                        link: target,
                        results: Vec::new(),
                        pod: self.pod.clone(),
                        refused: Some(pb::Refusal {
                            command_status,
                            reason,
                        }),
                    }))
                }
                Err(e) => {
                    self.metrics.served("not_bound");
                    Err(tonic::Status::failed_precondition(e.to_string()))
                }
            },
        }
    }
}

/// Cross-pod dispatch as configured: the [`LinkControl`] the API uses and
/// the registry loop and server to start.
pub(crate) struct Dispatch {
    /// Submits locally or hands off.
    pub(crate) control: Arc<Dispatching>,
    registry: Arc<Registry>,
    listener: tokio::net::TcpListener,
    service: DispatchService,
}

impl Dispatch {
    /// Sets cross-pod dispatch up from the flags; `None` when
    /// `--dispatch-listen` is not set (one process: local links only).
    pub(crate) async fn build(
        args: &crate::cli::GatewayArgs,
        links: &Arc<LinkSet>,
        pod: &str,
        metrics: &smsgw_api::metrics::Metrics,
    ) -> anyhow::Result<Option<Dispatch>> {
        use anyhow::Context;
        // Registered in every mode, so dashboards and alerts see the same
        // catalogue whether or not this process dispatches (zero when not).
        let dispatch_metrics = DispatchMetrics::default();
        dispatch_metrics.register(metrics);
        let d = &args.dispatch;
        let Some(listen) = d.dispatch_listen else {
            return Ok(None);
        };
        let token = d
            .dispatch_token
            .clone()
            .filter(|t| !t.is_empty())
            .context("--dispatch-listen needs --dispatch-token (SMSGW_DISPATCH_TOKEN), the secret the pods of a release share")?;
        let advertise = match &d.dispatch_advertise {
            // A bare address (the pod IP from the downward API) takes the
            // listen port.
            Some(a) => match a.parse::<std::net::IpAddr>() {
                Ok(ip) => std::net::SocketAddr::new(ip, listen.port()).to_string(),
                Err(_) => a.clone(),
            },
            None if !listen.ip().is_unspecified() => listen.to_string(),
            None => anyhow::bail!(
                "--dispatch-listen {listen} is a wildcard address: set --dispatch-advertise (SMSGW_DISPATCH_ADVERTISE) to the address other pods reach this one at"
            ),
        };
        let url = d
            .dispatch_redis_url
            .clone()
            .or_else(|| args.redis_url.clone())
            .or_else(|| args.rate.redis_urls.first().cloned())
            .context("--dispatch-listen needs a Redis for the holder registry: --dispatch-redis-url, --redis-url or --rate-limit-redis-url")?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen for dispatch on {listen}"))?;
        let registry = Arc::new(Registry::connect(&url, advertise.clone(), pod).await?);
        let control = Arc::new(Dispatching::new(
            links.clone(),
            registry.clone(),
            &token,
            d.dispatch_timeout,
            dispatch_metrics,
        ));
        let service = DispatchService {
            links: links.clone(),
            token: token.into(),
            pod: pod.to_owned(),
            metrics: control.metrics.clone(),
        };
        tracing::info!(listen = %listener.local_addr()?, %advertise, "cross-pod dispatch on");
        Ok(Some(Dispatch {
            control,
            registry,
            listener,
            service,
        }))
    }

    /// Shares `state`'s numbers with the other pods and answers its admin
    /// statistics and dashboard for the whole cluster.
    pub(crate) fn share(&self, state: smsgw_api::ApiState) -> smsgw_api::ApiState {
        let _ = self.registry.state.set(state.clone());
        state.with_cluster(self.registry.clone())
    }

    /// Starts the registry loop and the `dispatch.v1` server on `tracker`.
    pub(crate) fn start(
        self,
        links: Arc<LinkSet>,
        cancel: &CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        tracker.spawn(self.registry.clone().run(links, cancel.clone()));
        let cancel = cancel.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(self.listener);
        let server = pb::dispatch_server::DispatchServer::new(self.service)
            .max_decoding_message_size(1 << 20)
            .max_encoding_message_size(1 << 20);
        tracker.spawn(async move {
            let r = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(server)
                .serve_with_incoming_shutdown(incoming, cancel.cancelled())
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "dispatch server failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> OutboundMessage {
        OutboundMessage {
            source: Address {
                addr: "SMSGW".into(),
                ton: 5,
                npi: 0,
            },
            destination: Address {
                addr: "4915112345678".into(),
                ton: 1,
                npi: 1,
            },
            data_coding: 8,
            udhi: true,
            registered_delivery: true,
            segments: vec![
                OutboundSegment {
                    payload: vec![5, 0, 3, 7, 2, 1, 0, 65],
                    sar: None,
                    message_payload: false,
                },
                OutboundSegment {
                    payload: vec![0, 66],
                    sar: Some(SarParts {
                        msg_ref_num: 300,
                        total_segments: 2,
                        segment_seqnum: 2,
                    }),
                    message_payload: true,
                },
            ],
            priority: 3,
            validity_period_s: Some(3_600),
            schedule_delivery_ms: Some(1_796_632_205_250),
            tag: Some("msg-1".into()),
        }
    }

    fn view(state: &str, bound: u32, sessions: &[(u32, &str)]) -> LinkView {
        LinkView {
            name: "sim".into(),
            state: state.into(),
            sessions_bound: bound,
            sessions_total: 2,
            in_flight: bound * 3,
            last_enquire_link_rtt_ms: None,
            last_error: None,
            last_error_at_ms: None,
            submit_rate: f64::from(bound) * 10.0,
            receipt_rate: 0.0,
            sessions: sessions
                .iter()
                .map(|(i, st)| smsgw_core::links::SessionView {
                    index: *i,
                    role: "transceiver".into(),
                    state: (*st).into(),
                    in_flight: 0,
                    last_enquire_link_rtt_ms: None,
                    pod: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_cluster_view_of_a_link_sums_every_pods_binds() {
        // This pod holds no slot; two peers hold one each; a lagging peer
        // reports a link this pod does not know.
        let mine = vec![view("down", 0, &[(0, "down"), (1, "down")])];
        let mut unknown = view("bound", 1, &[]);
        unknown.name = "gone".into();
        let mut errored = view("bound", 1, &[(0, "down"), (1, "bound")]);
        errored.last_error = Some("bind refused".into());
        errored.last_error_at_ms = Some(5);
        let peers = vec![
            vec![view("bound", 1, &[(0, "bound"), (1, "down")])],
            vec![errored, unknown],
        ];
        let merged = merge_views(mine, peers);
        assert_eq!(merged.len(), 1);
        let m = &merged[0];
        assert_eq!(
            (m.state.as_str(), m.sessions_bound, m.sessions_total),
            ("bound", 2, 2)
        );
        assert_eq!((m.in_flight, m.submit_rate), (6, 20.0));
        assert_eq!(m.last_error.as_deref(), Some("bind refused"));
        let states: Vec<_> = m
            .sessions
            .iter()
            .map(|s| (s.index, s.state.as_str()))
            .collect();
        assert_eq!(states, [(0, "bound"), (1, "bound")]);
        // Stopped everywhere stays stopped; stopped here but bound there is bound.
        assert_eq!(
            merge_views(
                vec![view("stopped", 0, &[])],
                vec![vec![view("stopped", 0, &[])]]
            )[0]
            .state,
            "stopped"
        );
        assert_eq!(
            merge_views(
                vec![view("stopped", 0, &[])],
                vec![vec![view("bound", 1, &[])]]
            )[0]
            .state,
            "bound"
        );
    }

    #[test]
    fn admin_wishes_are_read_per_link() {
        let raw: HashMap<String, String> = [
            ("a:stopped", "1"),
            ("a:epoch", "3"),
            ("b:epoch", "1"),
            ("b:stopped", "0"),
            ("junk", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let w = wishes(raw);
        assert_eq!(
            w["a"],
            LinkWish {
                stopped: true,
                epoch: 3
            }
        );
        assert_eq!(
            w["b"],
            LinkWish {
                stopped: false,
                epoch: 1
            }
        );
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn a_message_crosses_the_wire_unchanged() {
        let (target, back) = from_proto(to_proto("pool-a", &msg())).unwrap();
        assert_eq!(target, "pool-a");
        assert_eq!(back, msg());
    }

    #[test]
    fn out_of_range_fields_are_refused_by_name() {
        let mut p = to_proto("l", &msg());
        p.destination.as_mut().unwrap().ton = 256;
        assert_eq!(from_proto(p).unwrap_err(), "ton 256 out of range");
        let mut p = to_proto("l", &msg());
        p.segments[1].sar.as_mut().unwrap().msg_ref_num = 70_000;
        assert_eq!(
            from_proto(p).unwrap_err(),
            "sar_msg_ref_num 70000 out of range"
        );
        let mut p = to_proto("l", &msg());
        p.segments.clear();
        assert!(from_proto(p).unwrap_err().contains("0 segments"));
        let mut p = to_proto("", &msg());
        p.source = None;
        assert_eq!(from_proto(p).unwrap_err(), "target missing");
    }

    #[test]
    fn a_stream_the_peer_refused_unprocessed_was_never_sent_but_a_cut_one_may_have_been() {
        let refused =
            tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert!(never_sent(&refused), "{refused:?}");
        let refused_connect =
            tonic::Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert!(never_sent(&refused_connect));
        let cut = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "stream closed because of a broken pipe",
        )));
        assert!(!never_sent(&cut), "{cut:?}");
        let reset =
            tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        assert!(!never_sent(&reset));
    }

    #[test]
    fn results_come_back_per_segment_and_unknown_names_the_pod() {
        let sub = Submission {
            link: "a".into(),
            results: vec![
                SegmentResult::Accepted {
                    smsc_message_id: "ff01".into(),
                },
                SegmentResult::Unknown {
                    reason: "response timeout".into(),
                },
            ],
            resubmitted: vec![0],
        };
        let reply = to_reply(sub, "proxy-1");
        let back = from_reply(reply.clone(), 2).unwrap().unwrap();
        assert_eq!(back.link, "a");
        assert_eq!(
            back.resubmitted,
            vec![0],
            "a possible duplicate stays marked"
        );
        assert_eq!(
            back.results[0],
            SegmentResult::Accepted {
                smsc_message_id: "ff01".into()
            }
        );
        assert_eq!(
            back.results[1],
            SegmentResult::Unknown {
                reason: "response timeout (on pod proxy-1)".into(),
            }
        );
        assert!(
            from_reply(reply, 3)
                .unwrap_err()
                .contains("2 results for 3")
        );
    }

    #[test]
    fn a_permanent_refusal_comes_back_as_one_and_the_tag_crosses() {
        // The serving pod's refusal, as the server answers it.
        let reply = pb::SubmitReply {
            link: "sim".into(),
            results: Vec::new(),
            pod: "proxy-2".into(),
            refused: Some(pb::Refusal {
                command_status: 0x0B,
                reason: "destination address: too long".into(),
            }),
        };
        // Whatever the segment count: a refusal has no results.
        match from_reply(reply, 2) {
            Ok(Err(SubmitError::Refused {
                command_status,
                reason,
            })) => {
                assert_eq!(command_status, 0x0B);
                assert!(reason.contains("too long") && reason.contains("proxy-2"));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // The correlation tag goes over the wire and back unchanged.
        let (_, back) = from_proto(to_proto("sim", &msg())).unwrap();
        assert_eq!(back.tag.as_deref(), Some("msg-1"));
        let untagged = OutboundMessage { tag: None, ..msg() };
        let (_, back) = from_proto(to_proto("sim", &untagged)).unwrap();
        assert_eq!(back.tag, None);
    }
}
