//! Prometheus metrics of the API layer, all under the `smsgw_` prefix.
//!
//! Label sets are bounded: routes are the matched route templates (never
//! raw paths), methods are the gRPC method names, statuses are codes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::Instant;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route template, e.g. `/api/v1/sms/check-text-len`, or `unmatched`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of an HTTP route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template.
    pub route: String,
}

/// Labels of a gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// Method name, e.g. `CheckTextLen`.
    pub method: String,
    /// gRPC status code name, e.g. `Ok`, `InvalidArgument`.
    pub code: String,
}

/// Labels of a text analysis.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EncodingLabels {
    /// `GSM7`, `LATIN1` or `UCS2`.
    pub encoding: String,
}

pub use smsgw_messaging::metrics::{PolicyLabels, StoreOpLabels};

/// The API's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// `smsgw_http_requests_total`.
    pub http_requests: Family<HttpLabels, Counter>,
    /// `smsgw_http_request_duration_seconds`.
    pub http_duration: Family<RouteLabels, Histogram>,
    /// `smsgw_grpc_requests_total`.
    pub grpc_requests: Family<GrpcLabels, Counter>,
    /// `smsgw_text_analyses_total`.
    pub text_analyses: Family<EncodingLabels, Counter>,
    /// `smsgw_config_links`: SMPP links in the configuration in force.
    pub config_links: Gauge,
    /// Recent API calls (REST and gRPC) and errors, for `/dashboard/stats`.
    pub recent: RequestWindow,
    /// Bounded structures outside the message service and the
    /// authenticator (webhook sender, MO reassembly), read by
    /// [`MemoryGauges`] at scrape time.
    memory_sources: MemorySources,
}

/// Reports of bounded in-memory structures, each read at scrape time.
pub type MemorySource = Box<dyn Fn() -> Vec<smsgw_core::bounded::MemoryUse> + Send + Sync>;

type MemorySources = std::sync::Arc<Mutex<Vec<MemorySource>>>;

/// Seconds [`RequestWindow`] covers.
pub const WINDOW_SECS: u64 = 60;

/// Calls and errors per second over the last [`WINDOW_SECS`] seconds: a
/// ring of one-second buckets.
pub struct RequestWindow {
    started: Instant,
    /// (second since start, calls, errors, server errors) per bucket.
    buckets: Mutex<[(u64, u64, u64, u64); WINDOW_SECS as usize]>,
}

/// What a [`RequestWindow`] saw recently.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowTotals {
    /// Seconds covered: the window, or the uptime when shorter.
    pub secs: f64,
    /// Calls answered.
    pub calls: u64,
    /// Calls answered with an error (HTTP status >= 400, gRPC code not OK).
    pub errors: u64,
    /// Calls that failed on the gateway's side (HTTP 5xx; gRPC INTERNAL,
    /// UNAVAILABLE, UNKNOWN, DATA_LOSS, UNIMPLEMENTED, DEADLINE_EXCEEDED).
    pub server_errors: u64,
}

impl Default for RequestWindow {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            buckets: Mutex::new([(u64::MAX, 0, 0, 0); WINDOW_SECS as usize]),
        }
    }
}

impl RequestWindow {
    /// Counts one answered call.
    pub fn record(&self, error: bool, server_error: bool) {
        let sec = self.started.elapsed().as_secs();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut b[(sec % WINDOW_SECS) as usize];
        if slot.0 != sec {
            *slot = (sec, 0, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u64::from(error);
        slot.3 += u64::from(server_error);
    }

    /// The totals of the last [`WINDOW_SECS`] seconds.
    pub fn totals(&self) -> WindowTotals {
        let elapsed = self.started.elapsed();
        let now = elapsed.as_secs();
        let b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut t = WindowTotals {
            secs: elapsed.as_secs_f64().clamp(1.0, WINDOW_SECS as f64),
            calls: 0,
            errors: 0,
            server_errors: 0,
        };
        for &(sec, calls, errors, server) in b.iter() {
            if sec != u64::MAX && sec + WINDOW_SECS > now {
                t.calls += calls;
                t.errors += errors;
                t.server_errors += server;
            }
        }
        t
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, registered under the `smsgw` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("smsgw");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_duration.clone(),
        );
        let grpc_requests = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls by method and status code",
            grpc_requests.clone(),
        );
        let text_analyses = Family::<EncodingLabels, Counter>::default();
        registry.register(
            "text_analyses",
            "Texts analysed by chosen encoding",
            text_analyses.clone(),
        );
        let config_links = Gauge::default();
        registry.register(
            "config_links",
            "SMPP links in the configuration in force",
            config_links.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            http_requests,
            http_duration,
            grpc_requests,
            text_analyses,
            config_links,
            recent: RequestWindow::default(),
            memory_sources: MemorySources::default(),
        }
    }

    /// Runs `f` with the registry, so other crates can register their
    /// metrics under the same prefix.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds a bounded structure to the `smsgw_memory_*` gauges (one
    /// family for all, so a structure outside the message service cannot
    /// register its own). `source` answers nothing once its structure is
    /// gone (hold it weakly).
    pub fn add_memory_source(
        &self,
        source: impl Fn() -> Vec<smsgw_core::bounded::MemoryUse> + Send + Sync + 'static,
    ) {
        self.memory_sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(source));
    }

    /// Counts a finished gRPC call.
    pub fn observe_grpc<T>(&self, method: &str, result: &Result<T, tonic::Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        use tonic::Code as C;
        self.recent.record(
            code != C::Ok,
            matches!(
                code,
                C::Internal
                    | C::Unavailable
                    | C::Unknown
                    | C::DataLoss
                    | C::Unimplemented
                    | C::DeadlineExceeded
            ),
        );
        self.grpc_requests
            .get_or_create(&GrpcLabels {
                method: method.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
    }

    /// Counts an analysis by its encoding.
    pub fn observe_encoding(&self, encoding: &str) {
        self.text_analyses
            .get_or_create(&EncodingLabels {
                encoding: encoding.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.with_registry(|r| prometheus_client::encoding::text::encode(&mut out, r))
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_window_counts_calls_and_errors() {
        let w = RequestWindow::default();
        w.record(false, false);
        w.record(true, false);
        w.record(true, true);
        let t = w.totals();
        assert_eq!((t.calls, t.errors, t.server_errors), (3, 2, 1));
        assert!(t.secs >= 1.0);
    }
}

/// Labels of a bounded in-memory structure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StructureLabels {
    structure: String,
}

/// The `smsgw_memory_*` gauges and `smsgw_memory_evictions_total`, read at
/// scrape time from every bounded in-memory structure that grows with
/// traffic (the message service's and the authenticator's), plus
/// `smsgw_smpp_late_responses_unmatched_total`. Holds both weakly; other
/// structures report through [`Metrics::add_memory_source`].
pub struct MemoryGauges {
    auth: std::sync::Weak<crate::auth::Auth>,
    messages: std::sync::Weak<smsgw_messaging::Messaging>,
    others: MemorySources,
}

impl std::fmt::Debug for MemoryGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryGauges").finish_non_exhaustive()
    }
}

impl MemoryGauges {
    /// Gauges over `auth` and `messages`, to register as a collector.
    pub fn new(
        metrics: &Metrics,
        auth: &std::sync::Arc<crate::auth::Auth>,
        messages: &std::sync::Arc<smsgw_messaging::Messaging>,
    ) -> Self {
        Self {
            auth: std::sync::Arc::downgrade(auth),
            messages: std::sync::Arc::downgrade(messages),
            others: metrics.memory_sources.clone(),
        }
    }
}

impl prometheus_client::collector::Collector for MemoryGauges {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        let mut all = Vec::new();
        let mut unmatched = 0;
        if let Some(m) = self.messages.upgrade() {
            all.extend(m.memory());
            unmatched = m.late_unmatched();
        }
        if let Some(a) = self.auth.upgrade() {
            all.extend(a.memory());
        }
        for source in self.others.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            all.extend(source());
        }
        let gauge = || Family::<StructureLabels, Gauge>::default();
        let (entries, bytes, capacity) = (gauge(), gauge(), gauge());
        let mut evicted = Vec::new();
        for m in &all {
            let l = StructureLabels {
                structure: m.structure.to_owned(),
            };
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            entries.get_or_create(&l).set(clamp(m.entries));
            bytes.get_or_create(&l).set(clamp(m.bytes));
            capacity.get_or_create(&l).set(clamp(m.capacity));
            evicted.push((l, m.evicted));
        }
        for (name, help, family) in [
            (
                "memory_entries",
                "Entries held by a bounded in-memory structure",
                &entries,
            ),
            (
                "memory_bytes",
                "Approximate bytes held by a bounded in-memory structure",
                &bytes,
            ),
            (
                "memory_capacity",
                "Entry bound of a bounded in-memory structure",
                &capacity,
            ),
        ] {
            family.encode(encoder.encode_descriptor(name, help, None, family.metric_type())?)?;
        }
        let mut enc = encoder.encode_descriptor(
            "memory_evictions",
            "Entries dropped at the bound of an in-memory structure before their time to live",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (l, n) in evicted {
            ConstCounter::new(n).encode(enc.encode_family(&l)?)?;
        }
        let c = ConstCounter::new(unmatched);
        c.encode(encoder.encode_descriptor(
            "smpp_late_responses_unmatched",
            "Late submit_sm_resp that settled no segment (their session no longer remembered the submit, or the message is gone): the segment stays unknown",
            None,
            c.metric_type(),
        )?)?;
        Ok(())
    }
}
