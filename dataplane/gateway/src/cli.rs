//! Command line: every flag also reads from an `SMSGW_*` environment variable.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// smsgw: a Kubernetes-native SMS gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, env = "SMSGW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Most threads the runtime starts for blocking work (embedded-store
    /// reads, password hashing), at least 1. Each thread keeps its own
    /// allocator heap and stack: unbounded (tokio allows 512), a CPU-starved
    /// pod started 100-160 of them under load and its resident memory grew
    /// by 70 MiB (BENCHMARKS.md, issue 22); more work than threads waits in
    /// a queue instead.
    #[arg(long, global = true, env = "SMSGW_MAX_BLOCKING_THREADS", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub max_blocking_threads: u16,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway on one machine from a YAML file of SmppLink, EsmePool,
    /// User and ContactPolicy manifests, with embedded defaults.
    Standalone(Box<StandaloneArgs>),
    /// Run the gateway in a cluster: its configuration comes from the
    /// operator's snapshot server and follows every new version.
    Serve(Box<ServeArgs>),
    /// Drive a running gateway with load and report throughput and latency.
    Bench(Box<crate::bench::BenchArgs>),
    /// Run the built-in SMSC simulator alone (for tests, demos and load).
    SmscSim(SimArgs),
    /// Admin commands against a running gateway over gRPC.
    #[command(flatten)]
    Client(crate::client::ClientCommand),
    /// Validate a configuration file and print what it defines.
    CheckConfig {
        /// The YAML file.
        #[arg(env = "SMSGW_CONFIG")]
        config: PathBuf,
    },
    /// Print the REST API's OpenAPI 3.1 document (JSON), as served at
    /// `/api/v1/openapi.json`.
    Openapi,
}

/// Options of `smsgw standalone`.
#[derive(Debug, clap::Args)]
pub struct StandaloneArgs {
    /// Multi-document YAML configuration.
    #[arg(long, short, env = "SMSGW_CONFIG")]
    pub config: PathBuf,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Also run the built-in SMSC simulator (credentials smsgw/secret), so
    /// the example's `local-sim` link has an SMSC to bind to.
    #[arg(long, env = "SMSGW_WITH_SIMULATOR")]
    pub with_simulator: bool,
    /// Where the built-in simulator listens (with `--with-simulator`).
    #[arg(long, env = "SMSGW_SIMULATOR_LISTEN", default_value = "127.0.0.1:2775")]
    pub simulator_listen: SocketAddr,
}

/// Options of `smsgw serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The operator's snapshot server (`config.v1.ConfigService`), e.g.
    /// `http://smsgw-operator:50051`.
    #[arg(long, env = "SMSGW_CONFIG_SERVER")]
    pub config_server: String,
    /// This pod's namespace (names the resources of rejections).
    #[arg(long, env = "SMSGW_POD_NAMESPACE", default_value = "")]
    pub pod_namespace: String,
    /// PEM bundle of the CA the snapshot server's certificate must chain
    /// to (with an `https://` --config-server); default: the system roots.
    #[arg(long, env = "SMSGW_CONFIG_SERVER_CA")]
    pub config_server_ca: Option<PathBuf>,
    /// Name the snapshot server's certificate must carry, when it differs
    /// from the host of --config-server.
    #[arg(long, env = "SMSGW_CONFIG_SERVER_NAME")]
    pub config_server_name: Option<String>,
    /// File holding this pod's projected ServiceAccount token, sent to the
    /// snapshot server as `authorization: Bearer …` (read again at every
    /// connection: the kubelet rotates it). Unset: no token.
    #[arg(long, env = "SMSGW_CONFIG_TOKEN_FILE")]
    pub config_token_file: Option<PathBuf>,
    /// Longest wait between two attempts to reach the snapshot server.
    #[arg(long, env = "SMSGW_CONFIG_RETRY_MAX", default_value = "5s", value_parser = humantime::parse_duration)]
    pub config_retry_max: std::time::Duration,
    /// Bind only the SMPP sessions of the bind slots the operator assigns
    /// to this pod, each while the pod holds the slot's Lease
    /// (`smsgw-<link>-slot-<i>` in `--pod-namespace`, held as
    /// `--pod-name`), so a link's binds across all pods never exceed its
    /// `sessions`. Needs in-cluster Kubernetes credentials allowed to
    /// get/create/update Leases. Off: every pod binds every session.
    #[arg(long, env = "SMSGW_BIND_LEASES")]
    pub bind_leases: bool,
    /// Lease duration of the bind slots: a holder renews every third of it
    /// and unbinds a slot it could not renew for two thirds; a dead pod's
    /// slots move after it. Keep it above 3 × (drain + response timeout).
    #[arg(long, env = "SMSGW_BIND_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub bind_lease_duration: std::time::Duration,
    /// This proxy runs alone: rate limits and contact-policy counters may
    /// stay in its process. Without it, `serve` refuses to start unless
    /// both are shared with the other proxies (`--rate-limit-redis-url`,
    /// `--policy-engine redis` or `mcp`): per-process state would let N
    /// proxies send N times a link's rate and a subscriber N times a cap.
    #[arg(long, env = "SMSGW_SINGLE_PROXY")]
    pub single_proxy: bool,
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

impl GatewayArgs {
    /// The Redis settings (`--redis-timeout`, `--redis-in-flight`) of a
    /// store, outbox or policy engine at `url`.
    pub fn redis_config(&self, url: impl Into<String>) -> smsgw_store::RedisConfig {
        let mut c = smsgw_store::RedisConfig::new(url);
        c.response_timeout = self.redis_timeout;
        c.in_flight = self.redis_in_flight as usize;
        c
    }
}

impl ServeArgs {
    /// Refuses a cluster proxy whose rate limits or contact policies would
    /// be per process (see [`ServeArgs::single_proxy`]), naming what to set.
    pub fn check_shared_state(&self) -> anyhow::Result<()> {
        if self.single_proxy {
            return Ok(());
        }
        let mut missing = Vec::new();
        if self.gateway.rate.redis_urls.is_empty() {
            missing.push(
                "rate limits would be per proxy: set --rate-limit-redis-url (SMSGW_RATE_LIMIT_REDIS_URL)",
            );
        }
        if self.gateway.contact.policy_engine == PolicyEngineKind::InProcess {
            missing.push(
                "contact-policy counters would be per proxy: set --policy-engine redis or mcp (SMSGW_POLICY_ENGINE)",
            );
        }
        if missing.is_empty() {
            Ok(())
        } else {
            anyhow::bail!(
                "a proxy of a cluster shares its limits with the other proxies: {}; or set --single-proxy (SMSGW_SINGLE_PROXY) if this proxy runs alone",
                missing.join("; ")
            )
        }
    }
}

/// Options every gateway mode shares.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub rate: RateLimitArgs,
    #[command(flatten)]
    pub contact: ContactArgs,
    #[command(flatten)]
    pub archive: ArchiveArgs,
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
    #[command(flatten)]
    pub dispatch: DispatchArgs,
    /// Directory of the embedded store and generated keys.
    #[arg(long, env = "SMSGW_DATA_DIR", default_value = "smsgw-data")]
    pub data_dir: PathBuf,
    /// Redis URL; when set, users live in Redis (shared by every gateway)
    /// instead of the embedded store.
    #[arg(long, env = "SMSGW_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Message store backend.
    #[arg(long, env = "SMSGW_STORE", value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,
    /// Redis URL of the message store (`--store redis`); defaults to
    /// `--redis-url`.
    #[arg(long, env = "SMSGW_STORE_REDIS_URL")]
    pub store_redis_url: Option<String>,
    /// Bound on one Redis command's answer, for the message and user
    /// stores, the outbox and the contact policies (the rate limiter has
    /// its own, `--rate-limit-timeout`). A command that waits for a turn
    /// (`--redis-in-flight`) starts its timeout when it gets one.
    #[arg(long, env = "SMSGW_REDIS_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub redis_timeout: std::time::Duration,
    /// Redis commands in flight at once on each connection of the message
    /// store, the user store and the outbox; more wait for a turn, which
    /// holds their callers back when Redis cannot keep up instead of
    /// queueing calls until they time out together.
    #[arg(long, env = "SMSGW_REDIS_IN_FLIGHT", default_value_t = smsgw_store::DEFAULT_IN_FLIGHT as u32, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub redis_in_flight: u32,
    /// Aerospike seed hosts (`--store aerospike`), `host:port[,…]`.
    #[arg(long, env = "AEROSPIKE_HOSTS")]
    pub aerospike_hosts: Option<String>,
    /// Aerospike namespace.
    #[arg(long, env = "SMSGW_AEROSPIKE_NAMESPACE", default_value = "smsgw")]
    pub aerospike_namespace: String,
    /// Aerospike set of the message records.
    #[arg(long, env = "SMSGW_AEROSPIKE_SET", default_value = "messages")]
    pub aerospike_set: String,
    /// Embedded store: how often redb is made durable and the write-ahead
    /// log emptied. Longer holds writes up less often (each checkpoint
    /// pauses the store's writer for one durable commit) and makes the
    /// replay after a crash longer.
    #[arg(long, env = "SMSGW_STORE_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub store_checkpoint_interval: std::time::Duration,
    /// Embedded store: page cache of the message store (redb's read cache
    /// and write buffer together), in bytes or with a unit (`32MiB`,
    /// `512KiB`, `1GiB`; `MB` is 10^6). The embedded outbox gets a quarter
    /// of it (at least 1 MiB), the user store 4 MiB. Larger keeps more of
    /// the file in memory for reads; the store's writes do not need it.
    #[arg(long, env = "SMSGW_STORE_CACHE", default_value = "32MiB", value_parser = parse_bytes)]
    pub store_cache: usize,
    /// How long message records live.
    #[arg(long, env = "SMSGW_MESSAGE_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub message_ttl: std::time::Duration,
    /// This gateway's name among its peers (claims of stale messages name it).
    #[arg(long, env = "SMSGW_POD_NAME")]
    pub pod_name: Option<String>,
    /// Let webhooks target private, loopback and link-local addresses
    /// (10/8, 127/8, 169.254/16, fd00::/8, …) for every app; for local
    /// development and tests. Otherwise only apps an admin allowed
    /// (`webhook_allow_private`) may.
    #[arg(long, env = "SMSGW_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Answer as the platform smsgw replaces did, for its clients: a unary
    /// gRPC `SendMessage` refused after authentication (unknown esme,
    /// invalid destination, rate limited, contact policy, …) is an
    /// `SmsResponse{success: false, error, error_code, esme}` with status
    /// OK instead of a gRPC error status. Authentication failures stay
    /// gRPC statuses. A refused `POST /api/v1/sms/send` answers the same
    /// `SmsResponse` in JSON, with its HTTP status.
    #[arg(long, env = "SMSGW_COMPAT_PLATFORM_RESPONSES")]
    pub compat_platform_responses: bool,
    /// Serve `GET /dashboard/stats` without credentials, as the platform
    /// did (request rates, every app's top campaigns, CPU, memory, disk).
    /// Callers who send credentials are still authenticated and scoped.
    #[arg(long, env = "SMSGW_PUBLIC_DASHBOARD")]
    pub public_dashboard: bool,
    /// How long an undelivered webhook event is retried (counted from the
    /// change that caused it) before it is dropped, counted
    /// (`smsgw_webhook_events_dropped_total`) and logged.
    #[arg(long, env = "SMSGW_WEBHOOK_RETRY_FOR", default_value = "24h", value_parser = humantime::parse_duration)]
    pub webhook_retry_for: std::time::Duration,
    /// First delay before a failed webhook request is tried again; it
    /// doubles after each failure up to `--webhook-retry-max`.
    #[arg(long, env = "SMSGW_WEBHOOK_RETRY_INITIAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub webhook_retry_initial: std::time::Duration,
    /// Longest delay between two tries of a webhook request.
    #[arg(long, env = "SMSGW_WEBHOOK_RETRY_MAX", default_value = "5m", value_parser = humantime::parse_duration)]
    pub webhook_retry_max: std::time::Duration,
    /// Most events in one request to a webhook that asked for batches.
    #[arg(long, env = "SMSGW_WEBHOOK_BATCH_MAX", default_value_t = std::num::NonZeroUsize::new(100).expect("non-zero"))]
    pub webhook_batch_max: std::num::NonZeroUsize,
    /// Longest a batch waits to fill up before it is sent.
    #[arg(long, env = "SMSGW_WEBHOOK_BATCH_LINGER", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub webhook_batch_linger: std::time::Duration,
    /// With the Redis outbox: how long a pod that stopped renewing its
    /// outbox partitions keeps them before another pod takes them, and
    /// the events it had not delivered.
    #[arg(long, env = "SMSGW_OUTBOX_LEASE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub outbox_lease: std::time::Duration,
    /// How long every event stays readable by its app
    /// (`GET /api/v1/events`, WatchEvents resuming from a cursor), whatever
    /// its delivery.
    #[arg(long, env = "SMSGW_EVENTS_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub events_retention: std::time::Duration,
    /// Requests in flight at once per webhook URL (events of one message
    /// always share one, so they arrive in order).
    #[arg(long, env = "SMSGW_WEBHOOK_LANES", default_value_t = std::num::NonZeroUsize::new(8).expect("non-zero"))]
    pub webhook_lanes: std::num::NonZeroUsize,
    /// Export message counters per app id on `/metrics` (`scope="app"`).
    /// Off by default: `/metrics` is unauthenticated and would list every
    /// tenant's app id and traffic.
    #[arg(long, env = "SMSGW_METRICS_PER_APP")]
    pub metrics_per_app: bool,
    /// gRPC server streams (SendMessageStream, WatchEvents) one user may
    /// hold open at once.
    #[arg(long, env = "SMSGW_MAX_STREAMS_PER_USER", default_value_t = smsgw_api::DEFAULT_STREAMS_PER_USER)]
    pub max_streams_per_user: usize,
    /// `submit_sm` that timed out (no submit_sm_resp in time) each link
    /// remembers for a late answer, split over its sessions, each for ten
    /// response timeouts; past it a timed-out submit is not remembered (its
    /// late answer, if it comes, is counted in
    /// `smsgw_smpp_late_responses_unmatched_total` and the segment stays
    /// `unknown`). About 100 bytes each.
    #[arg(long, env = "SMSGW_LATE_RESPONSES", default_value_t = smsgw_smpp::DEFAULT_LATE_RESPONSES, value_parser = clap::value_parser!(usize))]
    pub late_responses: usize,
    /// Accepted messages on their way to a link in the background at once
    /// (each waits for a window slot, a bind, or its retry period); past
    /// it a send waits for one to finish, holding clients back instead of
    /// queueing without limit. Each holds its record and task state
    /// (`smsgw_memory_bytes{structure="background_submissions"}`).
    #[arg(long, env = "SMSGW_MAX_BACKGROUND_SUBMISSIONS", default_value_t = smsgw_messaging::DEFAULT_BACKGROUND_SUBMISSIONS, value_parser = clap::value_parser!(usize))]
    pub max_background_submissions: usize,
    /// A message still `accepted` (not submitted) this long after it was
    /// accepted is claimed and submitted by a sweeper.
    #[arg(long, env = "SMSGW_SWEEP_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep_after: std::time::Duration,
}

/// Rate-limit settings: where the shared limits (L2) live, what to do when
/// that store is away, this pod's own cap (L1) and the link-health check.
#[derive(Debug, Clone, clap::Args)]
pub struct RateLimitArgs {
    /// Redis of the limits shared by every gateway: one `redis://` URL, or
    /// the seed nodes of a Redis Cluster, comma-separated. Unset: limits
    /// are kept in this process (one gateway alone).
    #[arg(
        long = "rate-limit-redis-url",
        env = "SMSGW_RATE_LIMIT_REDIS_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub redis_urls: Vec<String>,
    /// The URLs of `--rate-limit-redis-url` are Redis Cluster nodes.
    #[arg(
        long = "rate-limit-redis-cluster",
        env = "SMSGW_RATE_LIMIT_REDIS_CLUSTER"
    )]
    pub cluster: bool,
    /// While the shared store is unreachable or slow: `open` limits each
    /// key in process to its share (cap ÷ live gateways), `closed` refuses
    /// every send with 503.
    #[arg(long = "rate-limit-fail-mode", env = "SMSGW_RATE_LIMIT_FAIL_MODE", value_enum, default_value_t = RateFailMode::Open)]
    pub fail_mode: RateFailMode,
    /// Longest wait for one answer of the shared store before the fail
    /// mode decides.
    #[arg(long = "rate-limit-timeout", env = "SMSGW_RATE_LIMIT_TIMEOUT", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// This gateway's own cap in segments per second over every target
    /// (L1, protects the pod); unset: none.
    #[arg(long, env = "SMSGW_POD_RATE")]
    pub pod_rate: Option<f64>,
    /// Burst of `--pod-rate` (default: one second's worth).
    #[arg(long, env = "SMSGW_POD_BURST", requires = "pod_rate")]
    pub pod_burst: Option<u32>,
    /// How often link health sets link and pool limits (a link down gets
    /// rate 0, a pool the sum of its healthy members).
    #[arg(long, env = "SMSGW_LINK_HEALTH_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub link_health_interval: std::time::Duration,
}

/// Fail modes of the shared rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RateFailMode {
    /// Each key limited in process to its share of the cap.
    Open,
    /// Every send refused while the store is away.
    Closed,
}

/// Message store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// redb file in the data directory.
    Embedded,
    /// Redis, shared by every gateway.
    Redis,
    /// Aerospike, shared by every gateway.
    Aerospike,
}

/// Options of the SMSC simulator.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, env = "SMSGW_SIM_LISTEN", default_value = "127.0.0.1:2775")]
    pub listen: SocketAddr,
    /// system_id binds must present.
    #[arg(long, env = "SMSGW_SIM_SYSTEM_ID", default_value = "smsgw")]
    pub system_id: String,
    /// Password binds must present.
    #[arg(
        long,
        env = "SMSGW_SIM_PASSWORD",
        default_value = "secret",
        hide_env_values = true
    )]
    pub password: String,
    /// Format of the message ids it hands out.
    #[arg(long, env = "SMSGW_SIM_ID_FORMAT", value_enum, default_value_t = SimIdFormat::Hex)]
    pub id_format: SimIdFormat,
    /// Delay before each delivery receipt.
    #[arg(long, env = "SMSGW_SIM_RECEIPT_DELAY", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub receipt_delay: std::time::Duration,
    /// Send the receipts of each delay window newest first.
    #[arg(long, env = "SMSGW_SIM_REVERSE_RECEIPTS")]
    pub reverse_receipts: bool,
    /// Relative weights of receipt outcomes: DELIVRD,UNDELIV,EXPIRED,REJECTD.
    #[arg(long, env = "SMSGW_SIM_RECEIPT_MIX", default_value = "1,0,0,0", value_parser = parse_mix)]
    pub receipt_mix: [u32; 4],
    /// Serve TLS with this PEM certificate chain, leaf first (needs --tls-key).
    #[arg(long, env = "SMSGW_SIM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SMSGW_SIM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve the simulator's counters over HTTP here: `GET /stats` (JSON:
    /// counters, binds now and at peak, repeated submissions),
    /// `GET /submissions` (with --track-submits: every accepted
    /// [destination, text, times]), `GET /seen?from=N` (with
    /// --track-submits: each accepted submit_sm from the N-th on, in order,
    /// as [destination, unix ms it arrived], and the total) and
    /// `POST /stats/reset-peak`. Unset: no HTTP.
    #[arg(long, env = "SMSGW_SIM_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Count accepted submit_sm per (destination, text), so `/stats` shows
    /// messages submitted more than once (memory grows with every message:
    /// for tests).
    #[arg(long, env = "SMSGW_SIM_TRACK_SUBMITS")]
    pub track_submits: bool,
    /// With --track-submits: keep the ledger in this file too (appended
    /// before each submit_sm is answered, read back at start), so it
    /// survives a SIGKILL and restart of the simulator (fault drills).
    #[arg(long, env = "SMSGW_SIM_LEDGER", requires = "track_submits")]
    pub ledger: Option<std::path::PathBuf>,
    /// Fault: stall (stop answering anything, sockets kept open) once this
    /// many submit_sm have arrived (needs --stall-for; 0 with --stall-all:
    /// at start). Held responses go out when the stall ends.
    #[arg(long, env = "SMSGW_SIM_STALL_AFTER_SUBMITS", requires = "stall_for")]
    pub stall_after_submits: Option<u64>,
    /// How long the stall lasts (e.g. 10s).
    #[arg(long, env = "SMSGW_SIM_STALL_FOR", requires = "stall_after_submits", value_parser = humantime::parse_duration)]
    pub stall_for: Option<std::time::Duration>,
    /// Stall every connection (a SIGSTOPped SMSC), not only the one that
    /// received the triggering submit_sm.
    #[arg(long, env = "SMSGW_SIM_STALL_ALL", requires = "stall_after_submits")]
    pub stall_all: bool,
    /// Fault: close the connection that receives this submit_sm (counted
    /// from start, at least 1), right after answering it.
    #[arg(long, env = "SMSGW_SIM_DROP_AFTER_SUBMITS")]
    pub drop_after_submits: Option<u64>,
    /// With --drop-after-submits: close right before answering it instead.
    #[arg(
        long,
        env = "SMSGW_SIM_DROP_BEFORE_RESPONSE",
        requires = "drop_after_submits"
    )]
    pub drop_before_response: bool,
    /// Keep each receipt until a deliver_sm_resp with ESME_ROK answers it,
    /// as SMSCs do: one refused, or unanswered when its connection closes,
    /// is delivered again on a receiving connection.
    #[arg(long, env = "SMSGW_SIM_REDELIVER_RECEIPTS")]
    pub redeliver_receipts: bool,
}

fn parse_mix(s: &str) -> Result<[u32; 4], String> {
    let parts: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    <[u32; 4]>::try_from(parts)
        .map_err(|_| "expected four weights: DELIVRD,UNDELIV,EXPIRED,REJECTD".to_owned())
}

/// Message id formats of the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimIdFormat {
    /// Upper-case hex, zero padded.
    Hex,
    /// Decimal, zero padded.
    Decimal,
    /// UUID-like.
    Uuid,
}

/// Authentication settings.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Static admin key for `X-Admin-Key`; unset disables it (admin-key
    /// calls answer 503). Prefer the environment variable: a value on the
    /// command line is visible to every local user in the process list
    /// (the gateway warns when it sees one).
    #[arg(long, env = "ADMIN_API_KEY", hide_env_values = true)]
    pub admin_api_key: Option<String>,
    /// JWT keys, `kid=base64key[,kid=base64key…]`, the first signing. When
    /// unset, a key is generated once and kept in the data directory.
    #[arg(long, env = "SMSGW_JWT_KEYS", hide_env_values = true)]
    pub jwt_keys: Option<String>,
    /// Asymmetric token signing: private keys in PEM files,
    /// `kid=path[,kid=path…]`, the first signing, each Ed25519 (EdDSA
    /// tokens) or RSA ≥ 2048 bits (RS256). Their public halves are served
    /// at `/.well-known/jwks.json`; HS256 tokens are then refused (the
    /// `--jwt-keys` keys only derive webhook secrets). Unset: HS256.
    #[arg(long, env = "SMSGW_JWT_PRIVATE_KEYS")]
    pub jwt_private_keys: Option<String>,
    /// Token lifetime, at most 24h.
    #[arg(long, env = "SMSGW_TOKEN_TTL", default_value = "1h", value_parser = parse_token_ttl)]
    pub token_ttl: std::time::Duration,
    /// Whether anyone may create an account with `POST /api/v1/auth/register`
    /// (`auth.v1` Register). `false`: accounts come from User resources and
    /// admins only; registration answers 403.
    #[arg(long, env = "SMSGW_OPEN_REGISTRATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub open_registration: bool,
    /// Registrations one client address may make before each further one
    /// waits (1 minute, doubling, at most 1 hour; forgotten after an hour).
    #[arg(long, env = "SMSGW_REGISTRATIONS_PER_ADDRESS", default_value_t = 10)]
    pub registrations_per_address: u32,
    /// Proxies and load balancers (addresses or CIDR ranges,
    /// comma-separated) whose `X-Forwarded-For` names the client; from
    /// anyone else the header is ignored. Login throttling and the
    /// registration budget count per client address.
    #[arg(long, env = "SMSGW_TRUSTED_PROXIES", default_value = "", value_parser = parse_networks)]
    pub trusted_proxies: Networks,
    /// argon2 computations (login, registration, `/auth/token`) run at
    /// once; each holds ~19 MiB. Callers beyond it wait up to 5 s in a
    /// queue of 16× this size; beyond that they get 429 with Retry-After.
    #[arg(long, env = "SMSGW_MAX_CONCURRENT_HASHES", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_concurrent_hashes: u32,
}

/// A list of networks (`--trusted-proxies`).
#[derive(Debug, Clone, Default)]
pub struct Networks(pub Vec<ipnet::IpNet>);

fn parse_networks(s: &str) -> Result<Networks, String> {
    smsgw_api::net::parse_networks(s).map(Networks)
}

fn parse_token_ttl(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    let max = smsgw_api::auth::MAX_TOKEN_TTL;
    if d > max || d.is_zero() {
        return Err(format!(
            "must be between 1s and {}h (a stolen token is valid this long)",
            max.as_secs() / 3600
        ));
    }
    Ok(d)
}

/// Listening addresses.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// REST API address.
    #[arg(long, env = "SMSGW_REST_ADDR", default_value = "0.0.0.0:8080")]
    pub rest_addr: SocketAddr,
    /// gRPC API address.
    #[arg(long, env = "SMSGW_GRPC_ADDR", default_value = "0.0.0.0:44044")]
    pub grpc_addr: SocketAddr,
    /// Serve REST and gRPC over TLS with this PEM certificate chain, leaf
    /// first (needs --tls-key); read again when it changes (see
    /// --tls-reload-interval), so a rotated certificate needs no restart.
    #[arg(long, env = "SMSGW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SMSGW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate signed by a CA of this PEM bundle on
    /// both ports (mutual TLS); needs --tls-cert.
    #[arg(long, env = "SMSGW_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// How often the TLS files are checked for a new certificate.
    #[arg(long, env = "SMSGW_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: std::time::Duration,
}

impl ListenArgs {
    /// The TLS files of both listeners, when TLS is on.
    pub fn tls_files(&self) -> Option<smsgw_api::tls::TlsFiles> {
        Some(smsgw_api::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}

/// Cross-pod dispatch: a pod that holds no bind of a message's link hands
/// it to one that does (`dispatch.v1`, internal gRPC between pods).
#[derive(Debug, Clone, clap::Args)]
pub struct DispatchArgs {
    /// Internal address serving `dispatch.v1` to the other pods; setting it
    /// turns cross-pod dispatch on. Off (one process) by default.
    #[arg(long, env = "SMSGW_DISPATCH_LISTEN")]
    pub dispatch_listen: Option<SocketAddr>,
    /// Address the other pods reach this one's dispatch service at: the
    /// pod IP in Kubernetes (a bare IP takes the port of
    /// `--dispatch-listen`); defaults to `--dispatch-listen` unless that is
    /// a wildcard address.
    #[arg(long, env = "SMSGW_DISPATCH_ADVERTISE")]
    pub dispatch_advertise: Option<String>,
    /// Redis where pods publish which links they hold bound; defaults to
    /// `--redis-url`, then the first `--rate-limit-redis-url`.
    #[arg(long, env = "SMSGW_DISPATCH_REDIS_URL")]
    pub dispatch_redis_url: Option<String>,
    /// Secret shared by the pods of one release: peers present it on every
    /// dispatch call (`authorization: Bearer …`). Required with
    /// `--dispatch-listen`.
    #[arg(long, env = "SMSGW_DISPATCH_TOKEN", hide_env_values = true)]
    pub dispatch_token: Option<String>,
    /// Bound on one forwarded submission (the serving pod's window wait and
    /// SMSC response included); past it the outcome is unknown.
    #[arg(long, env = "SMSGW_DISPATCH_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub dispatch_timeout: std::time::Duration,
}

/// Contact policies: which engine decides (`--policy-engine`) and how the
/// external MCP is called.
#[derive(Debug, Clone, clap::Args)]
pub struct ContactArgs {
    /// Engine of the contact policies: `in-process` (this gateway alone),
    /// `redis` (the native engine, counters shared by every gateway) or
    /// `mcp` (an external Message Control Platform over HTTP).
    #[arg(long, env = "SMSGW_POLICY_ENGINE", value_enum, default_value_t = PolicyEngineKind::InProcess)]
    pub policy_engine: PolicyEngineKind,
    /// `in-process` engine: counters and dedup keys held at most (about
    /// 100 bytes each; two per destination and policy for a week). Past
    /// it, a message needing a new counter is refused as a policy error
    /// until counters expire; use `redis` for more destinations.
    #[arg(long, env = "SMSGW_POLICY_MAX_ENTRIES", default_value_t = smsgw_contact::DEFAULT_MAX_ENTRIES)]
    pub policy_max_entries: usize,
    /// Redis URL of the contact-policy counters and blacklists; defaults to
    /// `--redis-url`.
    #[arg(long, env = "SMSGW_POLICY_REDIS_URL")]
    pub policy_redis_url: Option<String>,
    /// Endpoint of the MCP check (`--policy-engine mcp`), e.g.
    /// `http://mcp:1880/api/v1/check`.
    #[arg(long, env = "SMSGW_MCP_URL")]
    pub mcp_url: Option<String>,
    /// Bearer token sent to the MCP.
    #[arg(long, env = "SMSGW_MCP_TOKEN", hide_env_values = true)]
    pub mcp_token: Option<String>,
    /// Bound on one MCP call.
    #[arg(long, env = "SMSGW_MCP_TIMEOUT", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub mcp_timeout: std::time::Duration,
    /// When the MCP fails (down, timeout, bad answer): `open` lets the
    /// message through, `closed` refuses it (503).
    #[arg(long, env = "SMSGW_MCP_FAIL_MODE", value_enum, default_value_t = McpFailMode::Open)]
    pub mcp_fail_mode: McpFailMode,
}

/// Contact-policy engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyEngineKind {
    /// In process memory (standalone, one gateway).
    InProcess,
    /// The native engine on Redis (one Lua round trip per message).
    Redis,
    /// An external MCP over HTTP.
    Mcp,
}

/// What to do when the MCP fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum McpFailMode {
    /// Let the message through.
    Open,
    /// Refuse the message.
    Closed,
}

/// S3 (journal and blacklists), the journal and the blacklist import.
#[derive(Debug, Clone, clap::Args)]
pub struct ArchiveArgs {
    /// S3 endpoint (`https://s3.eu-west-1.amazonaws.com`,
    /// `http://minio:9000`); unset: buckets are directories under
    /// `<data-dir>/objects` (standalone).
    #[arg(long, env = "SMSGW_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Region used in S3 signatures.
    #[arg(long, env = "SMSGW_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// S3 access key id. Empty (with an empty secret key): the standard
    /// AWS credential chain (`AWS_ACCESS_KEY_ID`…, the shared config and
    /// credentials files, web identity / IRSA, ECS/EKS container
    /// credentials, EC2 instance metadata).
    #[arg(
        long,
        env = "SMSGW_S3_ACCESS_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub s3_access_key: String,
    /// S3 secret access key (with `--s3-access-key`).
    #[arg(
        long,
        env = "SMSGW_S3_SECRET_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub s3_secret_key: String,
    /// Path-style URLs (`endpoint/bucket/key`: MinIO and most
    /// compatibles); `false` for virtual-hosted style.
    #[arg(long, env = "SMSGW_S3_PATH_STYLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub s3_path_style: bool,
    /// Attempts per S3 request (the SDK's standard retry: exponential
    /// backoff with jitter on throttling, 5xx and transport errors).
    #[arg(long, env = "SMSGW_S3_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub s3_max_attempts: u32,
    /// Bound on one attempt of an S3 request (a download's body: on the
    /// wait for each chunk).
    #[arg(long, env = "SMSGW_S3_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub s3_timeout: std::time::Duration,
    /// Bucket of the message journal; unset disables the journal.
    #[arg(long, env = "SMSGW_JOURNAL_BUCKET")]
    pub journal_bucket: Option<String>,
    /// First component of every journal object key.
    #[arg(long, env = "SMSGW_JOURNAL_PREFIX", default_value = "journal")]
    pub journal_prefix: String,
    /// Uncompressed bytes that close a journal batch.
    #[arg(long, env = "SMSGW_JOURNAL_BATCH_BYTES", default_value_t = 8 << 20)]
    pub journal_batch_bytes: usize,
    /// Age that closes a journal batch.
    #[arg(long, env = "SMSGW_JOURNAL_BATCH_AGE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub journal_batch_age: std::time::Duration,
    /// Where batches wait while S3 is unreachable; default
    /// `<data-dir>/journal`. Must survive restarts.
    #[arg(long, env = "SMSGW_JOURNAL_SPILL_DIR")]
    pub journal_spill_dir: Option<PathBuf>,
    /// Most bytes the spill directory may hold; past it batches are
    /// dropped and `smsgw_journal_overflow` is raised.
    #[arg(long, env = "SMSGW_JOURNAL_SPILL_MAX_BYTES", default_value_t = 1 << 30)]
    pub journal_spill_max_bytes: u64,
    /// Interval of the statistics records in the journal.
    #[arg(long, env = "SMSGW_JOURNAL_STATS_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub journal_stats_interval: std::time::Duration,
    /// How long shutdown waits for the journal to reach S3 (what is left
    /// stays in the spill directory for the next start).
    #[arg(long, env = "SMSGW_JOURNAL_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub journal_shutdown_timeout: std::time::Duration,
    /// A blacklist loaded from CSV files: `NAME=BUCKET/PREFIX` (every
    /// object under the prefix); repeat or separate with commas.
    #[arg(long = "blacklist", env = "SMSGW_BLACKLISTS", value_delimiter = ',', value_parser = parse_blacklist)]
    pub blacklists: Vec<BlacklistArg>,
    /// Interval of the scheduled blacklist reloads (also loaded at start
    /// and on demand through the admin API).
    #[arg(long, env = "SMSGW_BLACKLIST_RELOAD", default_value = "1h", value_parser = humantime::parse_duration)]
    pub blacklist_reload: std::time::Duration,
    /// Country code that replaces a national trunk `0` in blacklist files
    /// (`33`); unset: such numbers are malformed.
    #[arg(long, env = "SMSGW_BLACKLIST_DEFAULT_COUNTRY")]
    pub blacklist_default_country: Option<String>,
}

/// One `--blacklist NAME=BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlacklistArg {
    /// List name, as ContactPolicies reference it.
    pub name: String,
    /// Bucket of its files.
    pub bucket: String,
    /// Key prefix of its files (may be empty).
    pub prefix: String,
}

fn parse_blacklist(s: &str) -> Result<BlacklistArg, String> {
    let err = || format!("{s:?}: expected NAME=BUCKET/PREFIX");
    let (name, location) = s.trim().split_once('=').ok_or_else(err)?;
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    if name.is_empty() || bucket.is_empty() {
        return Err(err());
    }
    Ok(BlacklistArg {
        name: name.to_owned(),
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
    })
}

/// A byte size: plain bytes, or a number with a unit — `KiB`, `MiB`,
/// `GiB` (powers of 1024; `K`, `M`, `G` alike) or `KB`, `MB`, `GB`
/// (powers of 1000).
pub(crate) fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte size (e.g. 33554432, 32MiB, 512KiB)"))?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    n.checked_mul(mul)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_and_without_units_and_bad_ones_are_explained() {
        assert_eq!(parse_bytes("33554432"), Ok(32 << 20));
        assert_eq!(parse_bytes("32MiB"), Ok(32 << 20));
        assert_eq!(parse_bytes("32M"), Ok(32 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("64MB"), Ok(64_000_000));
        assert_eq!(parse_bytes(" 7 B "), Ok(7));
        assert!(
            parse_bytes("32 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_bytes("MiB").unwrap_err().contains("not a byte size"));
        assert!(parse_bytes("-1").unwrap_err().contains("not a byte size"));
        assert!(
            parse_bytes("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
        let cli = Cli::try_parse_from([
            "smsgw",
            "standalone",
            "-c",
            "x.yaml",
            "--store-cache",
            "8MiB",
        ])
        .unwrap();
        let Command::Standalone(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(a.gateway.store_cache, 8 << 20);
    }

    #[test]
    fn blocking_threads_are_bounded_by_default_and_a_zero_bound_is_refused() {
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(
                ["smsgw", "standalone", "-c", "x.yaml"]
                    .iter()
                    .chain(extra)
                    .copied(),
            )
        };
        assert_eq!(parse(&[]).unwrap().max_blocking_threads, 32);
        assert_eq!(
            parse(&["--max-blocking-threads", "8"])
                .unwrap()
                .max_blocking_threads,
            8
        );
        let e = parse(&["--max-blocking-threads", "0"]).unwrap_err();
        assert!(e.to_string().contains("not in 1..=65535"), "{e}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn addresses_parse_into_socket_addrs_and_bad_ones_are_refused() {
        let cli = Cli::try_parse_from([
            "smsgw",
            "standalone",
            "-c",
            "x.yaml",
            "--rest-addr",
            "127.0.0.1:1",
        ])
        .unwrap();
        let Command::Standalone(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(a.gateway.listen.rest_addr, "127.0.0.1:1".parse().unwrap());
        assert!(
            Cli::try_parse_from(["smsgw", "standalone", "-c", "x", "--grpc-addr", "nowhere"])
                .is_err()
        );
    }

    #[test]
    fn a_cluster_proxy_without_shared_limits_is_refused_naming_what_to_set() {
        let serve = |extra: &[&str]| {
            let mut argv = vec![
                "smsgw",
                "serve",
                "--config-server",
                "http://127.0.0.1:50051",
            ];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Command::Serve(a) => a,
                _ => panic!("wrong subcommand"),
            }
        };
        let e = serve(&[]).check_shared_state().unwrap_err().to_string();
        assert!(
            e.contains("--rate-limit-redis-url") && e.contains("--policy-engine"),
            "{e}"
        );
        let e = serve(&["--rate-limit-redis-url", "redis://127.0.0.1:1"])
            .check_shared_state()
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("--rate-limit-redis-url (") && e.contains("--policy-engine"),
            "{e}"
        );
        serve(&[
            "--rate-limit-redis-url",
            "redis://127.0.0.1:1",
            "--policy-engine",
            "redis",
        ])
        .check_shared_state()
        .unwrap();
        serve(&[
            "--rate-limit-redis-url",
            "redis://127.0.0.1:1",
            "--policy-engine",
            "mcp",
        ])
        .check_shared_state()
        .unwrap();
        serve(&["--single-proxy"]).check_shared_state().unwrap();
    }

    #[test]
    fn serve_takes_the_config_server_and_the_gateway_flags() {
        let cli = Cli::try_parse_from([
            "smsgw",
            "serve",
            "--config-server",
            "http://operator:50051",
            "--pod-name",
            "p-1",
            "--store",
            "redis",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(a.config_server, "http://operator:50051");
        assert_eq!(a.gateway.pod_name.as_deref(), Some("p-1"));
        assert_eq!(a.gateway.store, StoreKind::Redis);
        assert_eq!(a.config_retry_max, std::time::Duration::from_secs(5));
        assert!(a.gateway.rate.redis_urls.is_empty());
        assert_eq!(a.gateway.rate.fail_mode, RateFailMode::Open);
    }

    #[test]
    fn rate_limit_flags_take_cluster_seeds_and_refuse_a_bad_mode() {
        let cli = Cli::try_parse_from([
            "smsgw",
            "standalone",
            "-c",
            "x.yaml",
            "--rate-limit-redis-url",
            "redis://a:1,redis://b:2",
            "--rate-limit-redis-cluster",
            "--rate-limit-fail-mode",
            "closed",
            "--pod-rate",
            "100",
            "--link-health-interval",
            "1s",
        ])
        .unwrap();
        let Command::Standalone(a) = cli.command else {
            panic!("wrong subcommand")
        };
        let r = a.gateway.rate;
        assert_eq!(r.redis_urls, ["redis://a:1", "redis://b:2"]);
        assert!(r.cluster);
        assert_eq!(r.fail_mode, RateFailMode::Closed);
        assert_eq!(r.pod_rate, Some(100.0));
        assert_eq!(r.link_health_interval, std::time::Duration::from_secs(1));
        let bad = Cli::try_parse_from([
            "smsgw",
            "standalone",
            "-c",
            "x",
            "--rate-limit-fail-mode",
            "sometimes",
        ])
        .unwrap_err()
        .to_string();
        assert!(bad.contains("sometimes"), "{bad}");
        assert!(
            Cli::try_parse_from(["smsgw", "standalone", "-c", "x", "--pod-burst", "5"]).is_err(),
            "a burst without a rate is refused"
        );
    }

    #[test]
    fn contact_and_archive_flags_parse_with_their_defaults() {
        let cli = Cli::try_parse_from([
            "smsgw",
            "standalone",
            "-c",
            "x.yaml",
            "--policy-engine",
            "mcp",
            "--mcp-url",
            "http://mcp:1880/api/v1/check",
            "--mcp-fail-mode",
            "closed",
            "--blacklist",
            "default=lists/bl/,vip=vip",
            "--s3-path-style",
            "false",
        ])
        .unwrap();
        let Command::Standalone(a) = cli.command else {
            panic!("wrong subcommand")
        };
        let (c, s) = (&a.gateway.contact, &a.gateway.archive);
        assert_eq!(c.policy_engine, PolicyEngineKind::Mcp);
        assert_eq!(c.mcp_fail_mode, McpFailMode::Closed);
        assert_eq!(c.mcp_timeout, std::time::Duration::from_millis(500));
        assert!(!s.s3_path_style);
        assert_eq!(s.journal_prefix, "journal");
        assert_eq!(
            s.blacklists,
            [
                BlacklistArg {
                    name: "default".into(),
                    bucket: "lists".into(),
                    prefix: "bl/".into()
                },
                BlacklistArg {
                    name: "vip".into(),
                    bucket: "vip".into(),
                    prefix: "".into()
                }
            ]
        );
        assert!(
            Cli::try_parse_from(["smsgw", "standalone", "-c", "x", "--blacklist", "nobucket"])
                .is_err()
        );
    }
}
