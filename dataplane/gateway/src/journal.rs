//! The S3 side as the gateway runs it: the message journal (every state
//! change of a message, observed on the send path, plus periodic
//! statistics) and the blacklist importer (at start, on a schedule, and on
//! demand through the admin API). Buckets are S3 when `--s3-endpoint` is
//! set, else directories under `<data-dir>/objects`.

use crate::cli::{ArchiveArgs, GatewayArgs};
use anyhow::Context;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use smsgw_api::ApiState;
use smsgw_archive::{
    ArchiveError, BlacklistImporter, BlacklistSource, ByteStream, EventKind, Journal,
    JournalConfig, JournalStats, JournalTask, LoadOptions, LocalStore, ObjectStore, S3Config,
    S3Store,
};
use smsgw_core::policy::BlacklistSink;
use smsgw_messaging::lifecycle::Lifecycle;
use smsgw_messaging::metrics::StoreOpLabels;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The running journal, flushed by [`Archive::shutdown`].
pub(crate) struct Archive {
    task: Mutex<Option<JournalTask>>,
    shutdown_timeout: Duration,
}

/// `smsgw_s3_request_duration_seconds{op, result}`: one object-store call
/// (`put`, `get`, `list`; a `get` is timed until its stream opens).
type S3Durations = Family<StoreOpLabels, Histogram>;

/// An object store that times every call into [`S3Durations`].
struct TimedBucket {
    inner: Arc<dyn ObjectStore>,
    hist: S3Durations,
}

impl TimedBucket {
    fn observe<T, E>(&self, op: &'static str, started: Instant, r: &Result<T, E>) {
        let result = if r.is_ok() { "ok" } else { "error" };
        self.hist
            .get_or_create(&StoreOpLabels { op, result })
            .observe(started.elapsed().as_secs_f64());
    }
}

#[async_trait::async_trait]
impl ObjectStore for TimedBucket {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), ArchiveError> {
        let t = Instant::now();
        let r = self.inner.put(key, body).await;
        self.observe("put", t, &r);
        r
    }
    async fn get(&self, key: &str) -> Result<ByteStream, ArchiveError> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.observe("get", t, &r);
        r
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let t = Instant::now();
        let r = self.inner.list(prefix).await;
        self.observe("list", t, &r);
        r
    }
}

/// Registers [`S3Durations`] with the API's metrics.
fn s3_durations(state: &ApiState) -> S3Durations {
    let hist =
        S3Durations::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_1, 2.0, 18)));
    state.metrics.with_registry(|r| {
        r.register(
            "s3_request_duration_seconds",
            "Object-store (S3 or local bucket) call latency by operation and result",
            hist.clone(),
        )
    });
    hist
}

/// The bucket `bucket`: S3, or a directory in standalone mode, timed.
fn bucket(
    args: &ArchiveArgs,
    data_dir: &Path,
    bucket: &str,
    hist: &S3Durations,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let inner: Arc<dyn ObjectStore> = match &args.s3_endpoint {
        Some(endpoint) => {
            let mut config = S3Config::new(
                endpoint.clone(),
                bucket,
                args.s3_access_key.clone(),
                args.s3_secret_key.clone(),
            );
            config.region = args.s3_region.clone();
            config.path_style = args.s3_path_style;
            config.max_attempts = args.s3_max_attempts;
            config.timeout = args.s3_timeout;
            Arc::new(S3Store::new(&config).with_context(|| format!("S3 bucket {bucket:?}"))?)
        }
        None => Arc::new(LocalStore::new(data_dir.join("objects").join(bucket))),
    };
    Ok(Arc::new(TimedBucket {
        inner,
        hist: hist.clone(),
    }))
}

/// Starts the journal (when `--journal-bucket` is set) and the blacklist
/// importer (when `--blacklist` names lists). The journal observes every
/// message of `state`; the importer writes into `sink` and is returned for
/// the admin API.
pub(crate) async fn start(
    args: &GatewayArgs,
    pod: &str,
    state: &ApiState,
    sink: Option<Arc<dyn BlacklistSink>>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<(Archive, Option<Arc<BlacklistImporter>>)> {
    let a = &args.archive;
    let hist = s3_durations(state);
    let mut task = None;
    if let Some(name) = &a.journal_bucket {
        let store = bucket(a, &args.data_dir, name, &hist)?;
        let spill = a
            .journal_spill_dir
            .clone()
            .unwrap_or_else(|| args.data_dir.join("journal"));
        let mut config = JournalConfig::new(pod, spill);
        config.key_prefix = a.journal_prefix.trim_matches('/').to_owned();
        config.batch_max_bytes = a.journal_batch_bytes;
        config.batch_max_age = a.journal_batch_age;
        config.spill_max_bytes = a.journal_spill_max_bytes;
        config.stats_interval = a.journal_stats_interval;
        let messages = state.messages.clone();
        let stats =
            Arc::new(move || serde_json::to_value(messages.stats.view()).unwrap_or_default());
        let (journal, t) = Journal::start(config, store, Some(stats))
            .await
            .context("cannot start the journal")?;
        state.metrics.with_registry(|r| {
            r.register_collector(Box::new(JournalMetrics(journal.stats().clone())));
        });
        state
            .messages
            .set_observer(Arc::new(move |ev| record(&journal, ev)));
        tracing::info!(bucket = %name, prefix = %a.journal_prefix, "journal on");
        task = Some(t);
    }
    let importer = if a.blacklists.is_empty() {
        None
    } else {
        let sink =
            sink.context("the contact-policy engine reads no blacklists the gateway can load")?;
        let sources = a
            .blacklists
            .iter()
            .map(|b| {
                Ok(BlacklistSource {
                    name: b.name.clone(),
                    store: bucket(a, &args.data_dir, &b.bucket, &hist)?,
                    prefix: b.prefix.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let options = LoadOptions {
            default_country: a.blacklist_default_country.clone(),
            ..LoadOptions::default()
        };
        let importer = Arc::new(BlacklistImporter::new(sources, sink, options));
        let (i, c, every) = (importer.clone(), cancel.clone(), a.blacklist_reload);
        tracker.spawn(async move { i.run(every, c).await });
        Some(importer)
    };
    Ok((
        Archive {
            task: Mutex::new(task),
            shutdown_timeout: a.journal_shutdown_timeout,
        },
        importer,
    ))
}

impl Archive {
    /// Seals the open journal batch and uploads what waits, within
    /// `--journal-shutdown-timeout`; what is left stays in the spill
    /// directory for the next start.
    pub(crate) async fn shutdown(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            let left = t.shutdown(self.shutdown_timeout).await;
            if left == 0 {
                tracing::info!("journal flushed");
            } else {
                tracing::warn!(
                    batches = left,
                    "journal batches left in the spill directory; they are uploaded after the next start"
                );
            }
        }
    }
}

/// One journal line per message state change.
fn record(journal: &Journal, ev: &Lifecycle<'_>) {
    let kind = match ev {
        Lifecycle::Accepted { record, strategy } => EventKind::Accepted {
            message_id: record.message_id.clone(),
            app_id: record.app_id.clone(),
            esme: record.target.name().to_owned(),
            source: record.source.clone(),
            destination: record.destination.clone(),
            segments: record.segments.len() as u32,
            strategy: (!strategy.is_empty()).then(|| (*strategy).to_owned()),
        },
        Lifecycle::Refused {
            app_id,
            transaction_id,
            destination,
            reason,
        } => EventKind::Refused {
            transaction_id: (!transaction_id.is_empty()).then(|| (*transaction_id).to_owned()),
            app_id: (*app_id).to_owned(),
            destination: (*destination).to_owned(),
            reason: (*reason).to_owned(),
        },
        Lifecycle::Submitted {
            record,
            link,
            segment,
            smsc_message_id,
            error,
        } => EventKind::Submitted {
            message_id: record.message_id.clone(),
            link: (*link).to_owned(),
            segment: u32::from(*segment) + 1,
            smsc_message_id: smsc_message_id.map(str::to_owned),
            error: error.clone(),
            possible_duplicate: record
                .segments
                .get(usize::from(*segment))
                .is_some_and(|s| s.resubmitted),
        },
        Lifecycle::Receipt { update, record } => EventKind::Receipt {
            message_id: record.map(|r| r.message_id.clone()),
            link: update.link.clone(),
            smsc_message_id: update.smsc_message_id.clone(),
            state: smsgw_messaging::views::receipt_name(update.state).to_owned(),
        },
        _ => return,
    };
    journal.record(kind);
}

/// `smsgw_journal_*`: the journal's counters and gauges, read at scrape.
#[derive(Debug)]
struct JournalMetrics(Arc<JournalStats>);

/// Encodes one unlabelled counter read at scrape time (collectors over
/// atomics: the journal's and the MCP client's).
pub(crate) fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for JournalMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "journal_events_recorded",
                "Journal events queued",
                get(&s.events_recorded),
            ),
            (
                "journal_events_dropped",
                "Journal events lost (queue full or spill bound reached)",
                get(&s.events_dropped),
            ),
            (
                "journal_batches_uploaded",
                "Journal batches stored in S3",
                get(&s.batches_uploaded),
            ),
            (
                "journal_upload_failures",
                "Failed journal upload attempts",
                get(&s.upload_failures),
            ),
        ] {
            encode_counter(&mut encoder, name, help, value)?;
        }
        for (name, help, value) in [
            (
                "journal_outbox_bytes",
                "Bytes of journal batches waiting for S3",
                get(&s.outbox_bytes),
            ),
            (
                "journal_overflow",
                "1 while journal batches are dropped because the spill directory is full (alert)",
                get(&s.overflow),
            ),
            (
                "journal_s3_up",
                "1 when the last journal upload succeeded",
                get(&s.s3_up),
            ),
        ] {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}
