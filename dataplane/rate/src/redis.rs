//! [`RedisLimiter`]: GCRA in Redis, shared by every pod (L2).
//!
//! # Keys
//!
//! Every key carries one hash tag (default `{smsgw:rl}`): limiter hashes
//! `{smsgw:rl}:<scope>:<name>` (fields `r` rate, `b` burst, `t` TAT in µs)
//! and the live-pod set `{smsgw:rl}:pods`. One tag puts them all in one
//! slot, so one script call can take tokens from an app, a link and a pool
//! at once on Redis Cluster too. The price is that the limiter's load lands
//! on one cluster node; it is small (one short script per batch of
//! messages, see BENCHMARKS.md), and deployments sharing a cluster with
//! heavy tenants can move it with [`RedisLimiterConfig::key_tag`].
//!
//! # Round trips
//!
//! Acquisitions go through a dispatcher: while up to `max_in_flight`
//! script calls are under way, new acquisitions queue and the next call
//! takes all of them (up to `max_batch`) at once. Each acquisition is still
//! decided atomically and in order by the script, so batching costs no
//! exactness; at low load every acquisition is its own call (one round
//! trip), under load many share one.
//!
//! # Failure
//!
//! Every call is bounded by `response_timeout`. A failed or late call puts
//! the limiter in degraded mode: [`FailMode::Closed`] refuses every
//! acquisition with [`LimitError::Unavailable`]; [`FailMode::Open`] limits
//! each key in process to its share of the cap (rate and burst ÷ live pods,
//! the count seen before the outage). While degraded, no acquisition waits
//! on Redis: a background probe (every `probe_interval`) reconnects, and on
//! success writes back every limit this pod set (a restarted Redis has lost
//! them) and returns to shared mode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, RedisResult, Script};
use smsgw_core::limits::{
    LimitError, LimiterMode, LimiterStatus, RateDecision, RateKey, RateLimit, RateLimiter,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::local::{DEFAULT_ZERO_RATE_RETRY, InProcessLimiter, validate};
use super::metrics::LimiterMetrics;

/// What to do while Redis is unreachable or too slow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse every acquisition ([`LimitError::Unavailable`]).
    Closed,
    /// Limit each key in process to its share of the cap: rate and burst
    /// divided by the number of live pods.
    Open,
}

impl std::str::FromStr for FailMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" | "fail-open" => Ok(Self::Open),
            "closed" | "fail-closed" => Ok(Self::Closed),
            other => Err(format!(
                "unknown fail mode {other:?}; expected open or closed"
            )),
        }
    }
}

/// Settings of a [`RedisLimiter`].
///
/// # Defaults
///
/// One node at `redis://127.0.0.1:6379`, not a cluster; hash tag
/// `smsgw:rl`; a random pod id; connect timeout 1 s, response timeout
/// 100 ms; fail open; heartbeat every 2 s with a pod TTL of 6 s; probe every
/// 500 ms while degraded; batches of up to 256 acquisitions, 4 in flight;
/// queue of 65 536 acquisitions; `retry_after` 1 s for keys of rate 0; no
/// metrics.
#[derive(Clone)]
pub struct RedisLimiterConfig {
    /// `redis://` URLs: one for a single Redis, any number of seed nodes for
    /// a cluster.
    pub urls: Vec<String>,
    /// Whether `urls` are Redis Cluster nodes.
    pub cluster: bool,
    /// Hash tag of every key (without braces).
    pub key_tag: String,
    /// This pod's id in the live-pod set (the pod name in Kubernetes).
    pub pod_id: String,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on one call (an acquisition waits at most about this long on
    /// Redis before the fail mode answers).
    pub response_timeout: Duration,
    /// What to do while Redis is unreachable.
    pub fail_mode: FailMode,
    /// How often the pod renews its entry in the live-pod set.
    pub heartbeat_interval: Duration,
    /// How long a pod counts as live after its last heartbeat.
    pub pod_ttl: Duration,
    /// How often to try Redis again while degraded.
    pub probe_interval: Duration,
    /// Most acquisitions in one script call.
    pub max_batch: usize,
    /// Most script calls under way at once.
    pub max_in_flight: usize,
    /// Most acquisitions queued for the dispatcher; beyond, acquisitions
    /// are answered by the fail mode.
    pub queue: usize,
    /// `retry_after` of keys with rate 0.
    pub zero_rate_retry: Duration,
    /// Metrics to update (round trips, batch sizes, errors, mode).
    pub metrics: Option<LimiterMetrics>,
}

impl Default for RedisLimiterConfig {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            key_tag: "smsgw:rl".into(),
            pod_id: uuid::Uuid::new_v4().to_string(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_millis(100),
            fail_mode: FailMode::Open,
            heartbeat_interval: Duration::from_secs(2),
            pod_ttl: Duration::from_secs(6),
            probe_interval: Duration::from_millis(500),
            max_batch: 256,
            max_in_flight: 4,
            queue: 65_536,
            zero_rate_retry: DEFAULT_ZERO_RATE_RETRY,
            metrics: None,
        }
    }
}

impl RedisLimiterConfig {
    /// Defaults with one Redis at `url`.
    pub fn single(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            ..Self::default()
        }
    }

    /// Defaults with a Redis Cluster reached through `seeds`.
    pub fn cluster(seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            urls: seeds.into_iter().map(Into::into).collect(),
            cluster: true,
            ..Self::default()
        }
    }

    fn key(&self, key: &RateKey) -> String {
        format!("{{{}}}:{}:{}", self.key_tag, key.scope, key.name)
    }

    fn health_key(&self, link: &str) -> String {
        format!("{{{}}}:up:{link}", self.key_tag)
    }

    fn pods_key(&self) -> String {
        format!("{{{}}}:pods", self.key_tag)
    }
}

/// A connection to one Redis or to a cluster; both reconnect by
/// themselves.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn connect(config: &RedisLimiterConfig) -> RedisResult<Conn> {
        if config.cluster {
            let client = redis::cluster::ClusterClientBuilder::new(config.urls.clone())
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .retries(1)
                .build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        } else {
            let url = config.urls.first().map(String::as_str).unwrap_or_default();
            let client = redis::Client::open(url)?;
            let cm = ConnectionManagerConfig::new()
                .set_connection_timeout(config.connect_timeout)
                .set_response_timeout(config.response_timeout)
                .set_number_of_retries(1);
            Ok(Conn::Single(
                ConnectionManager::new_with_config(client, cm).await?,
            ))
        }
    }

    async fn query<T: FromRedisValue>(&mut self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

/// Runs `f` on `conn`, bounded by `timeout`.
async fn bounded<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// One acquisition waiting for the dispatcher.
struct Request {
    keys: Vec<RateKey>,
    cost: u32,
    max_wait_us: u64,
    reply: oneshot::Sender<Result<RateDecision, String>>,
}

/// State shared by the limiter, its dispatcher and its maintenance task.
struct Shared {
    config: RedisLimiterConfig,
    conn: RwLock<Option<Conn>>,
    degraded: AtomicBool,
    last_error: Mutex<Option<String>>,
    live_pods: AtomicU32,
    /// The limits this pod set, as set (for the fallback and for writing
    /// back after an outage).
    limits: Mutex<HashMap<RateKey, RateLimit>>,
    /// Fail-open limiter: each key at its share of the cap.
    fallback: InProcessLimiter,
    acquire_script: Script,
    heartbeat_script: Script,
    health_script: Script,
    acquires: AtomicU64,
    round_trips: AtomicU64,
}

impl Shared {
    fn conn(&self) -> Option<Conn> {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn mode(&self) -> LimiterMode {
        if !self.degraded.load(Ordering::Acquire) {
            LimiterMode::Shared
        } else {
            match self.config.fail_mode {
                FailMode::Open => LimiterMode::FailOpen,
                FailMode::Closed => LimiterMode::FailClosed,
            }
        }
    }

    fn degrade(&self, reason: String) {
        if let Some(m) = &self.config.metrics {
            m.store_errors.inc();
        }
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %reason, mode = %self.mode(), "rate-limit store unavailable");
            if let Some(m) = &self.config.metrics {
                m.set_mode(self.mode());
            }
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// The share of `limit` one pod of `pods` gets.
    fn share(limit: RateLimit, pods: u32) -> RateLimit {
        let pods = pods.max(1);
        RateLimit::new(
            limit.rate / f64::from(pods),
            limit.burst.div_ceil(pods).max(1),
        )
    }

    /// Sets every fallback limit to its share for the current pod count.
    fn rebuild_fallback(&self) {
        let pods = self.live_pods.load(Ordering::Acquire);
        let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        for (key, limit) in limits.iter() {
            let share = if limit.is_zero() {
                RateLimit::ZERO
            } else {
                Self::share(*limit, pods)
            };
            let _ = self.fallback.set(key, Some(share));
        }
    }

    /// The answer while degraded.
    fn fallback_decision(
        &self,
        keys: &[RateKey],
        cost: u32,
        max_wait: Duration,
    ) -> Result<RateDecision, LimitError> {
        match self.config.fail_mode {
            FailMode::Closed => Err(LimitError::Unavailable {
                reason: self
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| "not connected".into()),
            }),
            FailMode::Open => Ok(self.fallback.acquire_now(keys, cost, max_wait)),
        }
    }

    async fn write_limit(&self, key: &RateKey, limit: Option<RateLimit>) -> Result<(), String> {
        let Some(mut conn) = self.conn() else {
            return Err("not connected".into());
        };
        let rkey = self.config.key(key);
        let cmd = match limit {
            Some(l) => {
                let mut c = redis::cmd("HSET");
                c.arg(&rkey).arg("r").arg(l.rate).arg("b").arg(l.burst);
                c
            }
            None => {
                let mut c = redis::cmd("HDEL");
                c.arg(&rkey).arg("r").arg("b");
                c
            }
        };
        bounded(self.config.response_timeout, conn.query::<()>(&cmd)).await
    }

    /// One script call for a batch of acquisitions.
    async fn run_batch(&self, batch: Vec<Request>) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.config.metrics {
            m.round_trips.inc();
            m.batch_size.observe(batch.len() as f64);
        }
        let result = match self.conn() {
            None => Err("not connected".to_owned()),
            Some(mut conn) => {
                let mut index: HashMap<&RateKey, usize> = HashMap::new();
                let mut keys = Vec::new();
                let mut args: Vec<u64> = Vec::with_capacity(2 + batch.len() * 5);
                args.push(self.config.zero_rate_retry.as_micros() as u64);
                args.push(batch.len() as u64);
                for req in &batch {
                    args.extend([u64::from(req.cost), req.max_wait_us, req.keys.len() as u64]);
                    for k in &req.keys {
                        let next = index.len() + 1;
                        let i = *index.entry(k).or_insert_with(|| {
                            keys.push(self.config.key(k));
                            next
                        });
                        args.push(i as u64);
                    }
                }
                let mut inv = self.acquire_script.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                for a in &args {
                    inv.arg(*a);
                }
                bounded(
                    self.config.response_timeout,
                    invoke::<Vec<i64>>(&inv, &mut conn),
                )
                .await
            }
        };
        match result {
            Ok(out) if out.len() == batch.len() * 3 => {
                for (req, r) in batch.into_iter().zip(out.chunks_exact(3)) {
                    let micros = Duration::from_micros(r[1].max(0) as u64);
                    let decision = if r[0] == 0 {
                        RateDecision::Allowed { wait: micros }
                    } else {
                        let j = (r[2].max(1) as usize - 1).min(req.keys.len() - 1);
                        RateDecision::Limited {
                            retry_after: micros,
                            key: req.keys[j].clone(),
                        }
                    };
                    let _ = req.reply.send(Ok(decision));
                }
            }
            other => {
                let reason = match other {
                    Err(e) => e,
                    Ok(out) => format!("unexpected script answer of {} numbers", out.len()),
                };
                for req in batch {
                    let _ = req.reply.send(Err(reason.clone()));
                }
            }
        }
    }

    /// Connects if needed, renews the heartbeat and, when coming back
    /// from an outage, writes every limit back. Returns whether Redis
    /// answered.
    async fn maintain(&self) -> bool {
        let conn = match self.conn() {
            Some(c) => c,
            None => {
                match bounded(self.config.connect_timeout * 2, Conn::connect(&self.config)).await {
                    Ok(c) => {
                        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        self.degrade(format!("connect: {e}"));
                        return false;
                    }
                }
            }
        };
        let mut conn = conn;
        let mut inv = self.heartbeat_script.prepare_invoke();
        inv.key(self.config.pods_key())
            .arg(&self.config.pod_id)
            .arg(self.config.pod_ttl.as_micros() as u64);
        match bounded(self.config.response_timeout, invoke::<u32>(&inv, &mut conn)).await {
            Ok(pods) => {
                let before = self.live_pods.swap(pods.max(1), Ordering::AcqRel);
                if self.degraded.load(Ordering::Acquire) {
                    // Back: restore the limits (Redis may have restarted
                    // empty), then share again.
                    let limits: Vec<(RateKey, RateLimit)> = self
                        .limits
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .map(|(k, l)| (k.clone(), *l))
                        .collect();
                    for (k, l) in limits {
                        if let Err(e) = self.write_limit(&k, Some(l)).await {
                            self.degrade(format!("restoring limits: {e}"));
                            return false;
                        }
                    }
                    self.degraded.store(false, Ordering::Release);
                    *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    tracing::info!(live_pods = pods, "rate-limit store reachable again");
                    if let Some(m) = &self.config.metrics {
                        m.set_mode(LimiterMode::Shared);
                    }
                }
                if before != pods.max(1) {
                    self.rebuild_fallback();
                }
                true
            }
            Err(e) => {
                self.degrade(format!("heartbeat: {e}"));
                false
            }
        }
    }

    async fn leave(&self) {
        if let Some(mut conn) = self.conn() {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(self.config.pods_key()).arg(&self.config.pod_id);
            let _ = bounded(self.config.response_timeout, conn.query::<()>(&cmd)).await;
        }
    }
}

async fn invoke<T: FromRedisValue>(
    inv: &redis::ScriptInvocation<'_>,
    conn: &mut Conn,
) -> RedisResult<T> {
    match conn {
        Conn::Single(c) => inv.invoke_async(c).await,
        Conn::Cluster(c) => inv.invoke_async(c).await,
    }
}

/// Takes queued acquisitions in batches, one script call per batch, with
/// at most `max_in_flight` calls under way.
async fn dispatch(shared: Arc<Shared>, mut rx: mpsc::Receiver<Request>) {
    let slots = Arc::new(Semaphore::new(shared.config.max_in_flight.max(1)));
    let max_batch = shared.config.max_batch.max(1);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.run_batch(batch).await;
            drop(permit);
        });
    }
}

/// Heartbeat while shared, probe while degraded; ends with the limiter.
async fn maintenance(shared: Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        s.maintain().await;
        let pause = if s.degraded.load(Ordering::Acquire) {
            s.config.probe_interval
        } else {
            s.config.heartbeat_interval
        };
        drop(s);
        tokio::time::sleep(pause).await;
    }
}

/// Rate limits in Redis shared by every pod: see the [module
/// documentation](self) for keys, batching and failure handling.
pub struct RedisLimiter {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Request>,
    maintenance: tokio::task::JoinHandle<()>,
}

impl RedisLimiter {
    /// Starts the limiter: connects in the background (degraded until
    /// connected), heartbeats, dispatches. Needs a tokio runtime. See
    /// [`wait_ready`](Self::wait_ready) to wait for the first connection.
    pub fn start(config: RedisLimiterConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        if let Some(m) = &config.metrics {
            m.set_mode(match config.fail_mode {
                FailMode::Open => LimiterMode::FailOpen,
                FailMode::Closed => LimiterMode::FailClosed,
            });
        }
        let shared = Arc::new(Shared {
            fallback: InProcessLimiter::new().with_zero_rate_retry(config.zero_rate_retry),
            config,
            conn: RwLock::new(None),
            degraded: AtomicBool::new(true),
            last_error: Mutex::new(Some("not connected yet".into())),
            live_pods: AtomicU32::new(1),
            limits: Mutex::default(),
            acquire_script: Script::new(include_str!("gcra.lua")),
            heartbeat_script: Script::new(include_str!("heartbeat.lua")),
            health_script: Script::new(include_str!("link_health.lua")),
            acquires: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
        });
        tokio::spawn(dispatch(shared.clone(), rx));
        let maintenance = tokio::spawn(maintenance(Arc::downgrade(&shared)));
        Self {
            shared,
            tx,
            maintenance,
        }
    }

    /// Starts the limiter and waits up to `timeout` for Redis; the limiter
    /// is returned either way (degraded if Redis did not answer).
    pub async fn connect(config: RedisLimiterConfig, timeout: Duration) -> Self {
        let l = Self::start(config);
        l.wait_ready(timeout).await;
        l
    }

    /// Waits until the limiter is in shared mode, up to `timeout`; returns
    /// whether it is.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !self.shared.degraded.load(Ordering::Acquire) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Pods seen live at the last heartbeat (this one included).
    pub fn live_pods(&self) -> u32 {
        self.shared.live_pods.load(Ordering::Acquire)
    }

    /// Leaves the live-pod set (on shutdown) and stops heartbeating, so the
    /// other pods' fail-open shares grow at once.
    pub async fn leave(&self) {
        self.maintenance.abort();
        self.shared.leave().await;
    }

    /// Shares this pod's view of link health with the other pods and
    /// returns the cluster-wide view, in one round trip: `local` says, per
    /// link, whether this pod holds a bound session; the answer says, in
    /// the same order, whether any live pod does (reports expire after
    /// `ttl`). Pods that compute pool limits from this view agree, so
    /// their absolute writes do not fight. An error (Redis unreachable or
    /// degraded) leaves the caller to fall back on its local view.
    pub async fn share_health(
        &self,
        local: &[(String, bool)],
        ttl: Duration,
    ) -> Result<Vec<bool>, String> {
        let s = &self.shared;
        if local.is_empty() {
            return Ok(Vec::new());
        }
        if s.degraded.load(Ordering::Acquire) {
            return Err("rate-limit store degraded".into());
        }
        let Some(mut conn) = s.conn() else {
            return Err("not connected".into());
        };
        let mut inv = s.health_script.prepare_invoke();
        for (link, _) in local {
            inv.key(s.config.health_key(link));
        }
        inv.arg(&s.config.pod_id).arg(ttl.as_micros() as u64);
        for (_, up) in local {
            inv.arg(if *up { "1" } else { "0" });
        }
        let out = bounded(
            s.config.response_timeout,
            invoke::<Vec<i64>>(&inv, &mut conn),
        )
        .await?;
        if out.len() != local.len() {
            return Err(format!(
                "unexpected health answer of {} numbers for {} links",
                out.len(),
                local.len()
            ));
        }
        Ok(out.into_iter().map(|v| v == 1).collect())
    }

    /// The Redis key of a limiter key (for tests and operators).
    pub fn redis_key(&self, key: &RateKey) -> String {
        self.shared.config.key(key)
    }
}

impl Drop for RedisLimiter {
    fn drop(&mut self) {
        self.maintenance.abort();
    }
}

/// Sorted and without duplicates.
fn dedup(keys: &[RateKey]) -> Vec<RateKey> {
    let mut v = keys.to_vec();
    if v.len() > 1 {
        v.sort();
        v.dedup();
    }
    v
}

#[async_trait::async_trait]
impl RateLimiter for RedisLimiter {
    async fn acquire(
        &self,
        keys: &[RateKey],
        cost: u32,
        max_wait: Duration,
    ) -> Result<RateDecision, LimitError> {
        let s = &self.shared;
        s.acquires.fetch_add(1, Ordering::Relaxed);
        if keys.is_empty() {
            return Ok(RateDecision::NOW);
        }
        if s.degraded.load(Ordering::Acquire) {
            return s.fallback_decision(keys, cost, max_wait);
        }
        let (reply, rx) = oneshot::channel();
        let req = Request {
            keys: dedup(keys),
            cost,
            max_wait_us: max_wait.as_micros().min(u128::from(u64::MAX)) as u64,
            reply,
        };
        if self.tx.try_send(req).is_err() {
            // Queue full: this pod asks more than Redis answers.
            return s.fallback_decision(keys, cost, max_wait);
        }
        // The batch call is bounded by the response timeout; allow as much
        // again for queueing behind other batches.
        match tokio::time::timeout(s.config.response_timeout * 2, rx).await {
            Ok(Ok(Ok(decision))) => Ok(decision),
            Ok(Ok(Err(reason))) => {
                s.degrade(reason);
                s.fallback_decision(keys, cost, max_wait)
            }
            Ok(Err(_)) => s.fallback_decision(keys, cost, max_wait),
            Err(_) => {
                s.degrade(format!(
                    "acquisition not answered within {:?}",
                    s.config.response_timeout * 2
                ));
                s.fallback_decision(keys, cost, max_wait)
            }
        }
    }

    async fn set_limit(&self, key: &RateKey, limit: Option<RateLimit>) -> Result<(), LimitError> {
        let s = &self.shared;
        if let Some(l) = &limit {
            validate(key, l)?;
        }
        {
            let mut limits = s.limits.lock().unwrap_or_else(|p| p.into_inner());
            match limit {
                Some(l) => {
                    limits.insert(key.clone(), l);
                }
                None => {
                    limits.remove(key);
                }
            }
        }
        match limit {
            None => s.fallback.set(key, None)?,
            Some(_) => s.rebuild_fallback(),
        }
        if s.degraded.load(Ordering::Acquire) {
            // Written back when Redis answers again.
            return Ok(());
        }
        s.write_limit(key, limit).await.map_err(|reason| {
            s.degrade(reason.clone());
            LimitError::SetLimit {
                key: key.clone(),
                reason,
            }
        })
    }

    fn mode(&self) -> LimiterMode {
        self.shared.mode()
    }

    fn status(&self) -> LimiterStatus {
        let s = &self.shared;
        let mut st = LimiterStatus::new(s.mode());
        st.live_pods = Some(s.live_pods.load(Ordering::Acquire));
        st.acquires = s.acquires.load(Ordering::Relaxed);
        st.round_trips = s.round_trips.load(Ordering::Relaxed);
        st.last_error = s
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_should_share_one_hash_tag() {
        let c = RedisLimiterConfig::default();
        assert_eq!(c.key(&RateKey::link("l1")), "{smsgw:rl}:link:l1");
        assert_eq!(c.key(&RateKey::app("a}b")), "{smsgw:rl}:app:a}b");
        assert_eq!(c.pods_key(), "{smsgw:rl}:pods");
    }

    #[test]
    fn a_pod_share_should_divide_rate_and_burst() {
        let s = Shared::share(RateLimit::new(500.0, 50), 3);
        assert!((s.rate - 166.666).abs() < 0.01);
        assert_eq!(s.burst, 17);
        assert_eq!(Shared::share(RateLimit::new(1.0, 1), 4).burst, 1);
    }

    #[test]
    fn fail_modes_should_parse() {
        assert_eq!("open".parse::<FailMode>(), Ok(FailMode::Open));
        assert_eq!("closed".parse::<FailMode>(), Ok(FailMode::Closed));
        assert!("maybe".parse::<FailMode>().is_err());
    }
}
