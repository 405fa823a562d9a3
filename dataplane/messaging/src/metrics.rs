//! Prometheus metrics of the message lifecycle that are not counters of
//! messages ([`crate::stats`]): message-store call latency and
//! contact-policy decisions. Registered in the gateway's registry (prefix
//! `smsgw`) by [`crate::Messaging::register_metrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use smsgw_core::messages::{
    ClaimRequest, Claimed, CreateOutcome, MessageRecord, MessageStore, MessageStoreError,
    ReceiptOutcome, ReceiptUpdate, SubmitUpdate,
};

/// Labels of a message-store or object-store (S3) operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    /// Message store: `create`, `get`, `by_transaction`, `record_submit`,
    /// `apply_receipt`, `claim_stale_accepted`, `release_claim` or
    /// `purge_expired`; object
    /// store: `put`, `get` or `list`.
    pub op: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels of a contact-policy decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Strategy named by the request (configured names only; unknown
    /// strategies count as `unknown`).
    pub strategy: String,
    /// `pass`, the refusal's state (`daily_cp`, `weekly_cp`, `blacklist`,
    /// `duplicate`, `quiet_hours`, `policy_refused`), or `error`.
    pub outcome: &'static str,
}

/// The lifecycle's own series.
#[derive(Clone)]
pub struct LifecycleMetrics {
    /// `smsgw_store_operation_duration_seconds`.
    pub store_duration: Family<StoreOpLabels, Histogram>,
    /// `smsgw_policy_decisions_total`.
    pub policy_decisions: Family<PolicyLabels, Counter>,
    /// `smsgw_policy_check_duration_seconds`: one engine call (in process,
    /// Redis script or MCP request), whatever its outcome.
    pub policy_duration: Histogram,
    /// `smsgw_sweeper_in_doubt_total{policy}`: stale messages whose
    /// submitter stopped in the crash window (lease lapsed, no outcome
    /// stored), by what became of them (`resubmit`: sent again, marked
    /// `possible_duplicate`; `hold`: left `unknown`).
    pub in_doubt: Family<PolicyOnly, Counter>,
    /// `smsgw_receipts_held_total`: receipts that arrived while this pod
    /// was recording their submission and waited for it instead of being
    /// parked.
    pub receipts_held: Counter,
}

/// The `policy` label of [`LifecycleMetrics::in_doubt`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyOnly {
    /// `resubmit` or `hold`.
    pub policy: &'static str,
}

impl Default for LifecycleMetrics {
    fn default() -> Self {
        let in_doubt = Family::<PolicyOnly, Counter>::default();
        // Both series from the start (zero), so a dashboard has them.
        for policy in ["resubmit", "hold"] {
            drop(in_doubt.get_or_create(&PolicyOnly { policy }));
        }
        Self {
            store_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
            }),
            policy_decisions: Family::default(),
            policy_duration: Histogram::new(exponential_buckets(0.000_005, 2.0, 20)),
            in_doubt,
            receipts_held: Counter::default(),
        }
    }
}

impl LifecycleMetrics {
    /// Registers the series in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "store_operation_duration_seconds",
            "Message-store call latency by operation and result",
            self.store_duration.clone(),
        );
        registry.register(
            "policy_decisions",
            "Contact-policy decisions by strategy and outcome",
            self.policy_decisions.clone(),
        );
        registry.register(
            "policy_check_duration_seconds",
            "Contact-policy engine call latency",
            self.policy_duration.clone(),
        );
        registry.register(
            "sweeper_in_doubt",
            "Stale messages whose submitter stopped before the SMSC's answer was stored, by unknown policy",
            self.in_doubt.clone(),
        );
        registry.register(
            "receipts_held",
            "Receipts that waited for this pod to record their submission instead of being parked",
            self.receipts_held.clone(),
        );
    }

    /// Counts a message found in doubt by the sweeper; answers the policy
    /// label it was counted under.
    pub fn in_doubt(&self, hold: bool) -> &'static str {
        let policy = if hold { "hold" } else { "resubmit" };
        self.in_doubt.get_or_create(&PolicyOnly { policy }).inc();
        policy
    }

    /// Counts a contact-policy decision.
    pub fn observe_policy(&self, strategy: &str, outcome: &'static str) {
        self.policy_decisions
            .get_or_create(&PolicyLabels {
                strategy: strategy.to_owned(),
                outcome,
            })
            .inc();
    }
}

/// A message store that times every call into
/// `smsgw_store_operation_duration_seconds{op, result}`.
pub struct TimedStore {
    inner: std::sync::Arc<dyn MessageStore>,
    hist: Family<StoreOpLabels, Histogram>,
}

impl TimedStore {
    /// Wraps `inner`.
    pub fn new(
        inner: std::sync::Arc<dyn MessageStore>,
        hist: Family<StoreOpLabels, Histogram>,
    ) -> Self {
        Self { inner, hist }
    }

    async fn time<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, MessageStoreError>>,
    ) -> Result<T, MessageStoreError> {
        let start = std::time::Instant::now();
        let r = f.await;
        let result = if r.is_ok() { "ok" } else { "error" };
        self.hist
            .get_or_create(&StoreOpLabels { op, result })
            .observe(start.elapsed().as_secs_f64());
        r
    }
}

#[async_trait::async_trait]
impl MessageStore for TimedStore {
    async fn create(&self, rec: &MessageRecord) -> Result<CreateOutcome, MessageStoreError> {
        self.time("create", self.inner.create(rec)).await
    }
    async fn get(&self, message_id: &str) -> Result<Option<MessageRecord>, MessageStoreError> {
        self.time("get", self.inner.get(message_id)).await
    }
    async fn by_transaction(
        &self,
        app_id: &str,
        transaction_id: &str,
    ) -> Result<Option<MessageRecord>, MessageStoreError> {
        self.time(
            "by_transaction",
            self.inner.by_transaction(app_id, transaction_id),
        )
        .await
    }
    async fn record_submit(&self, s: &SubmitUpdate) -> Result<MessageRecord, MessageStoreError> {
        self.time("record_submit", self.inner.record_submit(s))
            .await
    }
    async fn apply_receipt(&self, r: &ReceiptUpdate) -> Result<ReceiptOutcome, MessageStoreError> {
        self.time("apply_receipt", self.inner.apply_receipt(r))
            .await
    }
    async fn record_submit_change(
        &self,
        s: &SubmitUpdate,
    ) -> Result<smsgw_core::messages::StatusChange, MessageStoreError> {
        self.time("record_submit", self.inner.record_submit_change(s))
            .await
    }
    async fn apply_receipt_change(
        &self,
        r: &ReceiptUpdate,
    ) -> Result<smsgw_core::messages::ReceiptChange, MessageStoreError> {
        self.time("apply_receipt", self.inner.apply_receipt_change(r))
            .await
    }
    async fn claim_stale_accepted(
        &self,
        req: &ClaimRequest,
    ) -> Result<Vec<Claimed>, MessageStoreError> {
        self.time("claim_stale_accepted", self.inner.claim_stale_accepted(req))
            .await
    }
    async fn record_submits(
        &self,
        updates: &[SubmitUpdate],
    ) -> Result<smsgw_core::messages::StatusChange, MessageStoreError> {
        self.time("record_submit", self.inner.record_submits(updates))
            .await
    }
    async fn release_claim(
        &self,
        message_id: &str,
        owner: &str,
        until_ms: u64,
    ) -> Result<bool, MessageStoreError> {
        self.time(
            "release_claim",
            self.inner.release_claim(message_id, owner, until_ms),
        )
        .await
    }
    async fn purge_expired(&self) -> Result<u64, MessageStoreError> {
        self.time("purge_expired", self.inner.purge_expired()).await
    }
}
