//! Wiring: configuration, servers, shutdown.

use crate::cli::{
    GatewayArgs, ListenArgs, LogFormat, SimArgs, SimIdFormat, StandaloneArgs, StoreKind,
};
use crate::links::{LinkSet, Links};
use crate::validate::{Rejection, validate};
use anyhow::{Context, bail};
use smsgw_api::ApiState;
use smsgw_api::auth::jwt::{KeySet, PrivateKey};
use smsgw_api::auth::{Auth, AuthConfig};
use smsgw_core::messages::MessageStore;
use smsgw_core::quotas::QuotaLedger;
use smsgw_core::users::UserStore;
use smsgw_crds::Snapshot;
use smsgw_messaging::Messaging;
use smsgw_store::{EmbeddedUserStore, RedisUserStore};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber (`RUST_LOG` filters, default info).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Reads and compiles a configuration file; every problem is reported,
/// each naming its document, field and reason.
pub fn load_config(path: &Path) -> anyhow::Result<Snapshot> {
    let yaml =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    smsgw_crds::compile_manifests(&yaml).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("{} is invalid:\n{}", path.display(), lines.join("\n"))
    })
}

pub(crate) async fn standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    let snap = load_config(&args.config)?;
    tracing::info!(
        version = %snap.version,
        links = snap.links.len(),
        pools = snap.pools.len(),
        users = snap.users.len(),
        policies = snap.policies.len(),
        "configuration loaded from {}",
        args.config.display()
    );
    let gateway = Gateway::build(&args.gateway).await?;
    // The simulator outlives the links, so they can unbind from it cleanly.
    let sim_cancel = CancellationToken::new();
    let _sim = if args.with_simulator {
        let sim_args = SimArgs {
            listen: args.simulator_listen,
            system_id: "smsgw".into(),
            password: "secret".into(),
            id_format: SimIdFormat::Hex,
            receipt_delay: std::time::Duration::from_millis(50),
            reverse_receipts: false,
            receipt_mix: [1, 0, 0, 0],
            tls_cert: None,
            tls_key: None,
            admin_listen: None,
            track_submits: false,
            ledger: None,
            stall_after_submits: None,
            stall_for: None,
            stall_all: false,
            drop_after_submits: None,
            drop_before_response: false,
            redeliver_receipts: true,
        };
        let sim = smsgw_smpp::sim::run(sim_config(&sim_args)?, sim_cancel.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot start the SMSC simulator on {}",
                    args.simulator_listen
                )
            })?;
        tracing::info!(addr = %sim.addr(), "SMSC simulator listening");
        Some(sim)
    } else {
        None
    };
    gateway
        .apply(snap, "")
        .await
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    let result = gateway.run().await;
    sim_cancel.cancel();
    result
}

/// A gateway's parts, built before any configuration is in force: the API
/// state (over an empty snapshot, not ready, until the first
/// [`Gateway::apply`]), its links, the shutdown token and the task tracker.
/// `standalone` applies its file once; `serve` applies every version the
/// operator pushes.
pub(crate) struct Gateway {
    /// The API state; `config` is swapped by every applied snapshot.
    pub(crate) state: ApiState,
    /// The links, started by the first applied snapshot.
    pub(crate) links: Arc<LinkSet>,
    /// Root shutdown token.
    pub(crate) cancel: CancellationToken,
    /// Every task of the gateway.
    pub(crate) tracker: TaskTracker,
    /// Rate limits (set from each snapshot and from link health).
    pub(crate) rate: Arc<crate::rate::Limiting>,
    /// Contact policies compiled from each snapshot.
    pub(crate) policies: smsgw_contact::SharedPolicies,
    /// This gateway's name among its peers.
    pub(crate) pod: String,
    /// `--sweep-after`.
    pub(crate) sweep_after: std::time::Duration,
    /// `--late-responses`: every link's bound on the timed-out submits it
    /// remembers for a late answer.
    late_responses: usize,
    listen: ListenArgs,
    /// The journal, flushed after the servers and links stop.
    archive: crate::journal::Archive,
    /// Span export (`--otlp-endpoint`), flushed last.
    telemetry: Option<crate::telemetry::Telemetry>,
}

impl Gateway {
    /// Opens the stores and builds the API state over an empty snapshot.
    pub(crate) async fn build(args: &GatewayArgs) -> anyhow::Result<Gateway> {
        private_data_dir(&args.data_dir)?;
        let auth = build_auth(args)?;
        // The quota ledger lives with the users: in Redis shared by every
        // pod, or durably in the embedded store's file.
        let (store, quotas): (Arc<dyn UserStore>, Arc<dyn QuotaLedger>) = match &args.redis_url {
            Some(url) => {
                let s = Arc::new(
                    RedisUserStore::connect(&args.redis_config(url.clone()))
                        .await
                        .context("cannot reach Redis for the user store")?,
                );
                (s.clone(), s)
            }
            None => {
                let s = Arc::new(
                    EmbeddedUserStore::open(&args.data_dir.join("users.redb"))
                        .context("cannot open the embedded user store")?,
                );
                (s.clone(), s)
            }
        };
        let auth = Auth::new(auth, store.clone());
        let (messages, store_memory) = message_store(args).await?;
        let empty = smsgw_crds::compile(&[]).map_err(|_| anyhow::anyhow!("empty snapshot"))?;
        let config = Arc::new(arc_swap::ArcSwap::from_pointee(empty));
        let links = Arc::new(LinkSet::default());
        // In Kubernetes the pod name (downward API); else host and process,
        // so gateways sharing one machine are still told apart.
        let pod = args.pod_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map_or_else(|_| "smsgw".into(), |h| h.trim().to_owned());
            format!("{host}-{}", std::process::id())
        });
        let telemetry = crate::telemetry::start(&args.telemetry, &pod)?;
        let metrics = smsgw_api::metrics::Metrics::new();
        if let Some(source) = store_memory {
            metrics.add_memory_source(source);
        }
        // Contact policies: the engine of --policy-engine over the policies of each snapshot.
        let policies: smsgw_contact::SharedPolicies = Arc::default();
        let contact = crate::contact::build(args, policies.clone()).await?;
        contact.register_metrics(&metrics);
        let rate = Arc::new(crate::rate::Limiting::build(&args.rate, &pod, &metrics).await?);
        // In a cluster (`--dispatch-listen`): submit here when this pod holds
        // the target's bind, else hand the message to a pod that does.
        let dispatch = crate::dispatch::Dispatch::build(args, &links, &pod, &metrics).await?;
        let control: Arc<dyn smsgw_core::links::LinkControl> = match &dispatch {
            Some(d) => d.control.clone(),
            None => links.clone(),
        };
        let outbox = outbox(args).await?;
        // After every store in the data directory is open (outbox.redb
        // included): each file 0600.
        private_files(&args.data_dir)?;
        let messaging = Messaging::builder(messages, store, config)
            .outbox(outbox.clone())
            .links(control)
            .policy(contact.engine.clone())
            .quotas(quotas)
            .limiter(rate.limiter.clone())
            .background_submissions(args.max_background_submissions)
            .message_ttl(args.message_ttl)
            .build();
        messaging.stats.set_per_app_series(args.metrics_per_app);
        let mut state = ApiState::new(metrics, auth, Arc::new(messaging))
            .with_webhook_allow_private(args.webhook_allow_private)
            .with_compat_platform_responses(args.compat_platform_responses)
            .with_public_dashboard(args.public_dashboard)
            .with_max_streams_per_user(args.max_streams_per_user)
            .with_data_dir(args.data_dir.clone());
        if args.webhook_allow_private {
            tracing::warn!(
                "--webhook-allow-private: webhooks may reach private and loopback addresses"
            );
        }
        state
            .ready
            .store(false, std::sync::atomic::Ordering::Release);
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        if let Some(d) = dispatch {
            state = d.share(state);
            d.start(links.clone(), &cancel, &tracker);
        }
        let (archive, blacklists) =
            crate::journal::start(args, &pod, &state, contact.sink, &cancel, &tracker).await?;
        if let Some(b) = blacklists {
            state = state.with_blacklists(b);
        }
        tracker.spawn(smsgw_api::webhook::run(
            state.clone(),
            outbox,
            smsgw_api::webhook::DeliveryOptions {
                retry_for: args.webhook_retry_for,
                retry_initial: args.webhook_retry_initial,
                retry_max: args.webhook_retry_max,
                batch_max: args.webhook_batch_max.get(),
                batch_linger: args.webhook_batch_linger,
                lanes: args.webhook_lanes.get(),
                consumer: pod.clone(),
            },
            cancel.clone(),
        ));
        Ok(Gateway {
            state,
            links,
            rate,
            policies,
            cancel,
            tracker,
            pod,
            sweep_after: args.sweep_after,
            late_responses: args.late_responses,
            listen: args.listen.clone(),
            archive,
            telemetry,
        })
    }

    /// Serves REST and gRPC until SIGINT/SIGTERM (see [`serve`]).
    pub(crate) async fn run(&self) -> anyhow::Result<()> {
        let result = serve(
            self.listen.clone(),
            self.state.clone(),
            self.cancel.clone(),
            self.tracker.clone(),
        )
        .await;
        self.rate.leave().await;
        self.archive.shutdown().await;
        if let Some(t) = &self.telemetry {
            t.shutdown().await;
        }
        result
    }
}

impl Gateway {
    /// Applies a snapshot: validates it, syncs the managed users, swaps the
    /// configuration in force and, the first time, starts the links and the
    /// sweeper and becomes ready. `namespace` names rejected resources.
    pub(crate) async fn apply(&self, snap: Snapshot, namespace: &str) -> Result<(), Rejection> {
        validate(&snap, namespace)?;
        self.state
            .auth
            .sync_managed_users(&snap)
            .await
            .map_err(|e| Rejection {
                error: format!("cannot apply User resources: {e}"),
                resource: String::new(),
            })?;
        let old = self.state.config.load_full();
        let version = snap.version.clone();
        let (links, pools) = (snap.links.len(), snap.pools.len());
        if let Some(running) = self.links.get() {
            let replaced = running.update(&snap).map_err(|e| Rejection {
                error: format!("{e:#}"),
                resource: String::new(),
            })?;
            let pools_changed = changed(&old.pools, &snap.pools);
            if !replaced.is_empty() || !pools_changed.is_empty() {
                tracing::info!(links = ?replaced, pools = ?pools_changed, "links started/stopped and pools rebuilt");
            }
            self.state.config.store(Arc::new(snap));
        } else {
            self.state.config.store(Arc::new(snap));
            let started = Links::start(
                &self.state.config.load(),
                &self.cancel,
                &self.tracker,
                &self.state.metrics,
                self.state.clone(),
                self.links.gates(),
                self.late_responses,
            )
            .map_err(|e| {
                // Leave the gateway unconfigured: the next version may do.
                self.state.config.store(old.clone());
                Rejection {
                    error: format!("{e:#}"),
                    resource: String::new(),
                }
            })?;
            self.links.set(started);
            self.tracker.spawn(sweeper(
                self.state.clone(),
                self.pod.clone(),
                self.sweep_after,
                self.cancel.clone(),
            ));
            // Link health: a link that is down gets rate 0 and each pool
            // the sum of its healthy members, set absolutely every interval.
            self.tracker.spawn(self.rate.clone().run(
                self.state.clone(),
                self.links.clone(),
                self.cancel.clone(),
            ));
            self.state.ready.store(true, Ordering::Release);
        }
        self.apply_limits_and_policies().await;
        self.state.metrics.config_links.set(links as i64);
        tracing::info!(%version, links, pools, "configuration applied");
        Ok(())
    }

    /// Sets the rate limits of links, pools and apps (as link health was
    /// last seen) and swaps in the snapshot's compiled contact policies.
    async fn apply_limits_and_policies(&self) {
        self.rate.apply(&self.state).await;
        let snap = self.state.config.load_full();
        let (compiled, errors) = smsgw_contact::Policies::compile(&snap.policies);
        for e in errors {
            tracing::warn!(error = %e, "contact policy left out");
        }
        self.policies.store(Arc::new(compiled));
    }
}

/// Names of the entries that differ between two maps (added, removed or
/// changed), in order.
fn changed<V: PartialEq>(old: &BTreeMap<String, V>, new: &BTreeMap<String, V>) -> Vec<String> {
    let mut out: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(new.keys().filter(|k| !old.contains_key(*k)).cloned());
    out.sort();
    out
}

/// Every few seconds, submits messages left `accepted` past `after` (their
/// pod died, or no link was up), and purges expired records.
pub(crate) async fn sweeper(
    state: ApiState,
    pod: String,
    after: std::time::Duration,
    cancel: CancellationToken,
) {
    state.messages.run_sweeper(pod, after, cancel).await;
}

/// The notification outbox: Redis Streams with the Redis message store
/// (and with Aerospike when `--redis-url` is set: a cluster shares it),
/// else an embedded file beside the embedded store.
async fn outbox(args: &GatewayArgs) -> anyhow::Result<Arc<dyn smsgw_core::outbox::Outbox>> {
    let redis = match args.store {
        StoreKind::Embedded => None,
        StoreKind::Redis => args
            .store_redis_url
            .clone()
            .or_else(|| args.redis_url.clone()),
        StoreKind::Aerospike => args.redis_url.clone(),
    };
    Ok(match redis {
        Some(url) => Arc::new(
            smsgw_store::outbox::RedisOutbox::connect(
                &args.redis_config(url),
                args.events_retention,
            )
            .await
            .context("cannot reach Redis for the outbox")?,
        ),
        None => {
            if args.store == StoreKind::Aerospike {
                tracing::warn!(
                    "--store aerospike without --redis-url: the notification outbox is this pod's own file, so its pending events wait for this pod"
                );
            }
            Arc::new(
                smsgw_store::outbox::EmbeddedOutbox::open_with_cache(
                    &args.data_dir.join("outbox.redb"),
                    args.events_retention,
                    (args.store_cache / 4).max(1 << 20),
                )
                .context("cannot open the embedded outbox")?,
            )
        }
    })
}

/// The message store of `--store`, and what it holds in memory when it
/// holds something that grows with traffic (Redis: the records it wrote
/// last, for their next update).
async fn message_store(
    args: &GatewayArgs,
) -> anyhow::Result<(
    Arc<dyn MessageStore>,
    Option<smsgw_api::metrics::MemorySource>,
)> {
    use smsgw_store::messages::{
        AerospikeConfig, AerospikeMessageStore, Checkpoints, EmbeddedMessageStore,
        MessageStoreOptions, RedisMessageStore,
    };
    let opts = MessageStoreOptions::default()
        .ttl(args.message_ttl)
        .cache_bytes(args.store_cache);
    let store: (
        Arc<dyn MessageStore>,
        Option<smsgw_api::metrics::MemorySource>,
    ) = match args.store {
        StoreKind::Embedded => (
            Arc::new(
                EmbeddedMessageStore::open_with(
                    &args.data_dir.join("messages.redb"),
                    opts,
                    Checkpoints {
                        every: args.store_checkpoint_interval,
                        ..Checkpoints::default()
                    },
                )
                .context("cannot open the embedded message store")?,
            ),
            None,
        ),
        StoreKind::Redis => {
            let url = args
                .store_redis_url
                .clone()
                .or_else(|| args.redis_url.clone())
                .context("--store redis needs --store-redis-url or --redis-url")?;
            let store = Arc::new(
                RedisMessageStore::connect(&args.redis_config(url), opts)
                    .await
                    .context("cannot reach Redis for the message store")?,
            );
            let weak = Arc::downgrade(&store);
            let memory: smsgw_api::metrics::MemorySource = Box::new(move || {
                weak.upgrade()
                    .map(|s| vec![s.kv().memory()])
                    .unwrap_or_default()
            });
            (store as Arc<dyn MessageStore>, Some(memory))
        }
        StoreKind::Aerospike => {
            let hosts = args
                .aerospike_hosts
                .clone()
                .context("--store aerospike needs AEROSPIKE_HOSTS")?;
            let mut config = AerospikeConfig::new(hosts);
            config.namespace = args.aerospike_namespace.clone();
            config.set = args.aerospike_set.clone();
            (
                Arc::new(
                    AerospikeMessageStore::connect(&config, opts)
                        .await
                        .context("cannot reach Aerospike for the message store")?,
                ),
                None,
            )
        }
    };
    Ok(store)
}

fn sim_config(args: &SimArgs) -> anyhow::Result<smsgw_smpp::sim::SimConfig> {
    let mut c = smsgw_smpp::sim::SimConfig {
        listen: args.listen,
        system_id: args.system_id.clone(),
        password: args.password.clone(),
        ..Default::default()
    };
    c.id_format = match args.id_format {
        SimIdFormat::Hex => smsgw_smpp::sim::SimIdFormat::Hex,
        SimIdFormat::Decimal => smsgw_smpp::sim::SimIdFormat::Decimal,
        SimIdFormat::Uuid => smsgw_smpp::sim::SimIdFormat::Uuid,
    };
    c.receipt_delay = args.receipt_delay;
    c.reverse_receipts = args.reverse_receipts;
    c.track_submits = args.track_submits;
    c.ledger = args.ledger.clone();
    c.redeliver_receipts = args.redeliver_receipts;
    let [delivered, undeliverable, expired, rejected] = args.receipt_mix;
    c.receipt_mix = smsgw_smpp::sim::ReceiptMix {
        delivered,
        undeliverable,
        expired,
        rejected,
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        c.tls = Some(smsgw_smpp::sim::SimTls::from_files(cert, key)?);
    }
    if let (Some(after_submits), Some(duration)) = (args.stall_after_submits, args.stall_for) {
        c.stall = Some(smsgw_smpp::sim::SimStall {
            after_submits,
            duration,
            scope: if args.stall_all {
                smsgw_smpp::sim::StallScope::All
            } else {
                smsgw_smpp::sim::StallScope::Connection
            },
        });
    }
    if let Some(after_submits) = args.drop_after_submits {
        c.drop_connection = Some(smsgw_smpp::sim::SimDrop {
            after_submits,
            before_response: args.drop_before_response,
        });
    }
    Ok(c)
}

/// `smsgw smsc-sim`: the simulator alone, until SIGINT/SIGTERM.
pub(crate) async fn smsc_sim(args: SimArgs) -> anyhow::Result<()> {
    let signal = shutdown_signal()?;
    let cancel = CancellationToken::new();
    let sim = smsgw_smpp::sim::run(sim_config(&args)?, cancel.clone())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %sim.addr(), "SMSC simulator listening");
    if let Some(addr) = args.admin_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (--admin-listen)"))?;
        tracing::info!(%addr, "SMSC simulator stats on /stats");
        let app = sim_admin(sim.clone());
        let stop = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
    }
    let sig = signal.await;
    tracing::info!(
        submits = sim.submits(),
        receipts = sim.receipts_sent(),
        "{sig} received, stopping"
    );
    cancel.cancel();
    Ok(())
}

/// `GET /seen?from=N` of the simulator's HTTP side.
#[derive(serde::Deserialize)]
struct SeenQuery {
    /// First submission to list (in the order they were accepted).
    from: Option<usize>,
}

/// The simulator's HTTP side (`smsgw smsc-sim --admin-listen`).
fn sim_admin(sim: smsgw_smpp::sim::SimHandle) -> axum::Router {
    use axum::routing::{get, post};
    let reset = sim.clone();
    let all = sim.clone();
    let seen = sim.clone();
    axum::Router::new()
        .route(
            "/seen",
            get(
                move |axum::extract::Query(q): axum::extract::Query<SeenQuery>| {
                    let sim = seen.clone();
                    async move {
                        let at_ms = |t: std::time::SystemTime| {
                            t.duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis() as u64)
                        };
                        let all = sim.seen_submits();
                        let from = q.from.unwrap_or(0).min(all.len());
                        axum::Json(serde_json::json!({
                            "total": all.len(),
                            "from": from,
                            "submits": all[from..]
                                .iter()
                                .map(|s| (&s.destination, at_ms(s.at)))
                                .collect::<Vec<_>>(),
                        }))
                    }
                },
            ),
        )
        .route(
            "/submissions",
            get(move || {
                let sim = all.clone();
                async move { axum::Json(sim.all_submissions()) }
            }),
        )
        .route(
            "/stats",
            get(move || {
                let sim = sim.clone();
                async move {
                    axum::Json(serde_json::json!({
                        "counters": sim.counters(),
                        "bound": sim.bound_connections(),
                        "submissions": sim.submissions(),
                    }))
                }
            }),
        )
        .route(
            "/stats/reset-peak",
            post(move || {
                reset.reset_peak_bound();
                async { "ok" }
            }),
        )
}

/// Authentication settings from flags; a JWT key is generated once and kept
/// in the data directory when none is given, so tokens survive restarts.
fn build_auth(args: &GatewayArgs) -> anyhow::Result<AuthConfig> {
    let keys = match &args.auth.jwt_keys {
        Some(spec) => KeySet::parse(spec)?,
        None => KeySet::single("local", local_jwt_key(&args.data_dir.join("jwt.key"))?),
    };
    let keys = match args.auth.jwt_private_keys.as_deref() {
        Some(spec) if !spec.trim().is_empty() => {
            let keys = keys.with_private_keys(PrivateKey::load_spec(spec)?)?;
            tracing::info!(
                algorithm = keys.algorithm(),
                kid = keys.signing_kid(),
                "tokens are signed with a private key; HS256 tokens are refused"
            );
            keys
        }
        _ => keys,
    };
    if args.auth.admin_api_key.is_none() {
        tracing::info!("ADMIN_API_KEY is not set: admin-key authentication is disabled");
    } else if std::env::args().any(|a| a == "--admin-api-key" || a.starts_with("--admin-api-key="))
    {
        tracing::warn!(
            "the admin key was given with --admin-api-key: every local user can read it in the process list; set ADMIN_API_KEY in the environment instead"
        );
    }
    let mut config = AuthConfig::new(keys, args.auth.admin_api_key.clone());
    config.token_ttl = args.auth.token_ttl;
    config.open_registration = args.auth.open_registration;
    config.registrations_per_address = args.auth.registrations_per_address;
    config.trusted_proxies = args.auth.trusted_proxies.0.clone();
    config.max_concurrent_hashes = args.auth.max_concurrent_hashes as usize;
    if !config.open_registration {
        tracing::info!("open registration is off: accounts come from User resources and admins");
    }
    Ok(config)
}

/// Creates the data directory readable by this user only (0700): it
/// holds password hashes, JWT keys, phone numbers and message texts, and
/// nothing in it can be reached by others whatever the file modes.
pub(crate) fn private_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (0700)", dir.display()))
}

/// Narrows what an older version left readable in the data directory:
/// its files to 0600, its directories to 0700.
fn private_files(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if meta.permissions().mode() & 0o777 != want {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(want))
                .with_context(|| format!("cannot restrict {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn local_jwt_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Ok(text) = std::fs::read_to_string(path) {
        return b64
            .decode(text.trim())
            .with_context(|| format!("{} is not a base64 key", path.display()));
    }
    let key: [u8; 32] = rand::random();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    use std::io::Write;
    opts.open(path)
        .and_then(|mut f| f.write_all(b64.encode(key).as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!("generated a JWT signing key in {}", path.display());
    Ok(key.to_vec())
}

/// Binds both listeners, serves until SIGINT/SIGTERM, then shuts down
/// gracefully. If either server dies, the other is stopped and the process
/// fails.
async fn serve(
    listen: ListenArgs,
    state: ApiState,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> anyhow::Result<()> {
    let signal = shutdown_signal()?;
    let (rest_tls, grpc_tls) = match listen.tls_files() {
        None => (None, None),
        Some(files) => {
            use smsgw_api::tls::{ALPN_GRPC, ALPN_REST, ReloadingTls};
            let rest = ReloadingTls::load(files.clone(), ALPN_REST).context("--tls-cert")?;
            let grpc = ReloadingTls::load(files, ALPN_GRPC).context("--tls-cert")?;
            for tls in [&rest, &grpc] {
                tracker.spawn(
                    tls.clone()
                        .watch(listen.tls_reload_interval, cancel.clone()),
                );
            }
            (Some(rest), Some(grpc))
        }
    };
    let rest = TcpListener::bind(listen.rest_addr)
        .await
        .with_context(|| format!("cannot listen for REST on {}", listen.rest_addr))?;
    let grpc = TcpListener::bind(listen.grpc_addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", listen.grpc_addr))?;
    tracing::info!(
        rest = %rest.local_addr()?,
        grpc = %grpc.local_addr()?,
        tls = rest_tls.is_some(),
        mtls = listen.tls_client_ca.is_some(),
        "smsgw listening"
    );

    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::channel::<String>(2);

    let (c, s, f) = (cancel.clone(), state.clone(), failed_tx.clone());
    tracker.spawn(async move {
        if let Err(e) = smsgw_api::server::serve_rest(rest, rest_tls, s, c.clone()).await {
            let _ = f.send(format!("REST server failed: {e}")).await;
        } else if !c.is_cancelled() {
            let _ = f.send("REST server stopped unexpectedly".into()).await;
        }
    });
    let (c, s, f) = (cancel.clone(), state, failed_tx);
    tracker.spawn(async move {
        if let Err(e) = smsgw_api::server::serve_grpc(grpc, grpc_tls, s, c.clone()).await {
            let _ = f.send(format!("gRPC server failed: {e}")).await;
        } else if !c.is_cancelled() {
            let _ = f.send("gRPC server stopped unexpectedly".into()).await;
        }
    });
    tracker.close();

    let failure = tokio::select! {
        sig = signal => { tracing::info!("{sig} received, shutting down"); None }
        msg = failed_rx.recv() => msg,
    };
    cancel.cancel();
    if tokio::time::timeout(std::time::Duration::from_secs(30), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown took longer than 30s; exiting anyway");
    } else {
        tracing::info!("every SMPP window drained and every session unbound");
    }
    match failure {
        Some(msg) => bail!(msg),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// SIGINT and SIGTERM, registered at once (so a signal that arrives right
/// after start-up is not lost to the default action); the future resolves
/// with the name of the first one received.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_list_added_removed_and_changed_entries() {
        let old: BTreeMap<String, u32> = [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)].into();
        let new: BTreeMap<String, u32> = [("a".into(), 1), ("b".into(), 5), ("d".into(), 4)].into();
        assert_eq!(changed(&old, &new), ["b", "c", "d"]);
        assert!(changed(&old, &old).is_empty());
    }
}
