//! `smsgw bench`: drives a running gateway over the gRPC stream or REST, at
//! a fixed rate or flat out, and prints throughput and latency percentiles.
//! With `--wait-receipts` it also counts delivered receipts through the
//! WatchEvents stream, so the figure is accepted → submitted → receipted.
//! With `--duration` it runs for a time instead of a count, and with
//! `--soak-csv` it samples the gateway's memory and CPU meanwhile (a soak,
//! see [`crate::soak`]).

use anyhow::{Context, bail};
use clap::ValueEnum;
use smsgw_proto::sms::v1::{
    MessageStatus, SmsRequest, WatchEventsRequest, message_event,
    sms_service_client::SmsServiceClient,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How the load tool talks to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// One bidirectional SendMessageStream per connection.
    GrpcStream,
    /// POST /api/v1/sms/send, one request per message.
    Rest,
}

/// Options of `smsgw bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// REST base URL (used for REST mode and to log in).
    #[arg(
        long,
        env = "SMSGW_BENCH_REST",
        default_value = "http://127.0.0.1:8080"
    )]
    pub rest: String,
    /// More REST base URLs (e.g. each pod of a cluster): REST-mode workers
    /// take `--rest` and these in turn, one connection each, the way a
    /// Kubernetes Service's in-kernel DNAT spreads connections over its
    /// pods, without a forwarding process in between.
    #[arg(long, value_delimiter = ',')]
    pub spread: Vec<String>,
    /// gRPC endpoint.
    #[arg(
        long,
        env = "SMSGW_BENCH_GRPC",
        default_value = "http://127.0.0.1:44044"
    )]
    pub grpc: String,
    /// Transport.
    #[arg(long, value_enum, default_value_t = BenchMode::GrpcStream)]
    pub mode: BenchMode,
    /// Messages to send.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Messages per second; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Parallel streams (gRPC) or requests in flight (REST).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Target link or pool.
    #[arg(long, default_value = "default")]
    pub esme: String,
    /// Sender id of every message (the app must be allowed to use it).
    #[arg(long, default_value = "BENCH")]
    pub source: String,
    /// Text of each message.
    #[arg(long, default_value = "smsgw bench message")]
    pub message: String,
    /// Contact-policy strategy of each message (`cp1`, …); empty: none.
    /// Destinations differ per message, so the policy counts every one.
    #[arg(long, default_value = "")]
    pub strategy: String,
    /// Account to use; registered when it does not exist yet.
    #[arg(long, env = "SMSGW_BENCH_EMAIL", default_value = "bench@example.com")]
    pub email: String,
    /// Its password.
    #[arg(
        long,
        env = "SMSGW_BENCH_PASSWORD",
        default_value = "bench password 1",
        hide_env_values = true
    )]
    pub password: String,
    /// Also wait until every message is delivered (receipt applied) and
    /// report that end-to-end rate.
    #[arg(long)]
    pub wait_receipts: bool,
    /// Give up waiting for receipts after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Also write one line per answered message to this file: when it was
    /// sent and how long its answer took (both in ms, from the start of the
    /// run), to see whether slow answers come together or alone.
    #[arg(long)]
    pub latency_log: Option<std::path::PathBuf>,
    /// Leave the answers to messages sent in the first this-long of the run
    /// out of the latency figures (connections being opened, caches
    /// filling); the count, the rate and the latency log keep them.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Run for this long instead of `--count` messages: `rate × duration`
    /// messages on the `--rate` schedule (late if the gateway cannot keep
    /// up), or flat out until the time is up with `--rate 0`: a soak.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Sample the gateway process (`--gateway-pid`) every `--sample-every`
    /// while the load runs and write one CSV row each: elapsed seconds,
    /// RSS (KiB), CPU (% of one core), sent/accepted/delivered per second
    /// and in total, failures, data-directory bytes.
    #[arg(long, requires = "gateway_pid")]
    pub soak_csv: Option<std::path::PathBuf>,
    /// Process id of the gateway to sample (on this machine).
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// The gateway's data directory, whose size is sampled too.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Time between soak samples.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub sample_every: Duration,
    /// Run a webhook receiver on this address (e.g. `127.0.0.1:0`), set it
    /// as the bench app's webhook for final events for the run (removed
    /// after), and report when it has received every `delivered` event and
    /// their latency after the receipt. A loopback receiver needs the
    /// gateway's `--webhook-allow-private`. Needs `--wait-receipts`.
    #[arg(long, requires = "wait_receipts")]
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// With `--webhook-listen`: one event per request instead of batches.
    #[arg(long, requires = "webhook_listen")]
    pub webhook_single: bool,
    /// TLS towards a gateway served over `https://`.
    #[command(flatten)]
    pub tls: crate::tls_client::ClientTls,
}

impl BenchArgs {
    /// Whether message `i`, due now, is still to be sent: within `--count`;
    /// with `--duration`, within `rate × duration` messages (whose
    /// schedule spans the duration), or flat out until the duration ran out.
    fn more(&self, start: Instant, i: u64) -> bool {
        match self.duration {
            Some(d) if self.rate > 0 => (i as f64) < self.rate as f64 * d.as_secs_f64(),
            Some(d) => start.elapsed() < d,
            None => i < self.count,
        }
    }
}

/// The machine's CPU time counters (Linux `/proc/stat`, all CPUs), in
/// clock ticks.
struct CpuTimes {
    total: u64,
    idle: u64,
    steal: u64,
}

impl CpuTimes {
    /// `None` where `/proc/stat` is not there or not as expected.
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal [guest …]
        let first8 = fields.get(..8)?;
        Some(Self {
            total: first8.iter().sum(),
            idle: first8[3] + first8[4],
            steal: first8[7],
        })
    }

    /// Shares of the time since `before`: (busy, stolen).
    fn since(&self, before: &Self) -> (f64, f64) {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let idle = self.idle.saturating_sub(before.idle) as f64;
        let steal = self.steal.saturating_sub(before.steal) as f64;
        (1.0 - idle / total, steal / total)
    }
}

struct Creds {
    token: String,
    app_id: String,
}

async fn login(args: &BenchArgs) -> anyhow::Result<Creds> {
    let http = args.tls.http(&args.rest)?;
    let _ = http
        .post(format!("{}/api/v1/auth/register", args.rest))
        .json(&serde_json::json!({"email": args.email, "password": args.password, "app_name": "bench"}))
        .send()
        .await
        .context("cannot reach the gateway's REST API")?;
    let t: serde_json::Value = http
        .post(format!("{}/api/v1/auth/login", args.rest))
        .json(&serde_json::json!({"email": args.email, "password": args.password}))
        .send()
        .await?
        .json()
        .await?;
    let token = t["token"].as_str().context("login failed")?.to_owned();
    // The app id is in the token's claims.
    let claims = token.split('.').nth(1).context("malformed token")?;
    use base64::Engine;
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims)?)?;
    Ok(Creds {
        app_id: claims["app_id"]
            .as_str()
            .context("no app_id claim")?
            .to_owned(),
        token,
    })
}

fn authed<T>(c: &Creds, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", c.token).parse().expect("ascii token"),
    );
    r.metadata_mut()
        .insert("x-app-id", c.app_id.parse().expect("ascii app id"));
    r
}

fn request(args: &BenchArgs, run: u64, i: u64) -> SmsRequest {
    SmsRequest {
        transaction_id: format!("bench-{run}-{i}"),
        esme: args.esme.clone(),
        saddr: args.source.clone(),
        daddr: format!("4915{:09}", i % 1_000_000_000),
        message: args.message.clone(),
        strategy: args.strategy.clone(),
        ..Default::default()
    }
}

/// The `p`-quantile (0..=1) of `sorted` (ascending); zero when empty.
pub(crate) fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Waits until the next send slot of a fixed-rate schedule.
async fn pace(start: Instant, rate: u64, i: u64) {
    if rate > 0 {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Runs the load and prints the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let creds = Arc::new(login(&args).await?);
    let run_id: u64 = rand::random::<u32>().into();
    let channel = args
        .tls
        .endpoint(&args.grpc)?
        .connect()
        .await
        .context("cannot reach gRPC")?;
    let load = Arc::new(crate::soak::LoadCounters::default());
    let webhook = match args.webhook_listen {
        Some(listen) => {
            let (received, url) = crate::bench_webhook::serve(listen).await?;
            let http = args.tls.http(&args.rest)?;
            crate::bench_webhook::set(
                &http,
                &args.rest,
                &creds.token,
                &creds.app_id,
                Some(&url),
                args.webhook_single,
            )
            .await?;
            println!(
                "webhook receiver at {url} ({})",
                if args.webhook_single {
                    "one event per request"
                } else {
                    "batched"
                }
            );
            Some((received, http))
        }
        None => None,
    };
    let delivered = load.delivered.clone();
    let watcher = if args.wait_receipts {
        let mut c = SmsServiceClient::new(channel.clone());
        let mut events = c
            .watch_events(authed(&creds, WatchEventsRequest::default()))
            .await?
            .into_inner();
        let d = delivered.clone();
        Some(tokio::spawn(async move {
            while let Ok(Some(ev)) = events.message().await {
                if let Some(message_event::Event::Status(s)) = ev.event
                    && s.status == MessageStatus::Delivered as i32
                {
                    d.fetch_add(1, Ordering::Relaxed);
                }
            }
        }))
    } else {
        None
    };
    let soak = match (&args.soak_csv, args.gateway_pid) {
        (Some(csv), Some(pid)) => {
            let s = crate::soak::Soak {
                csv: csv.clone(),
                pid,
                data_dir: args.data_dir.clone(),
                every: args.sample_every,
            };
            let file = s.open()?;
            Some((s, file))
        }
        _ => None,
    };
    let cpu_before = CpuTimes::read();
    let start = Instant::now();
    let stop_sampling = tokio_util::sync::CancellationToken::new();
    let sampler =
        soak.map(|(s, file)| tokio::spawn(s.run(file, start, load.clone(), stop_sampling.clone())));
    // A soak keeps no per-message latency (it would grow with the run).
    let keep_latency = args.duration.is_none();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let base = match worker % (1 + args.spread.len()) {
            0 => args.rest.clone(),
            k => args.spread[k - 1].clone(),
        };
        let (args, creds, next, load, channel) = (
            args.clone(),
            creds.clone(),
            next.clone(),
            load.clone(),
            channel.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let failed = &load.failed;
            let mut lat = Vec::new();
            match args.mode {
                BenchMode::GrpcStream => {
                    let (tx, rx) = tokio::sync::mpsc::channel::<SmsRequest>(1024);
                    let sent_at = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
                    let s2 = sent_at.clone();
                    let (a2, n2, l2) = (args.clone(), next.clone(), load.clone());
                    let producer = tokio::spawn(async move {
                        loop {
                            let i = n2.fetch_add(1, Ordering::Relaxed);
                            pace(start, a2.rate, i).await;
                            if !a2.more(start, i) {
                                break;
                            }
                            let req = request(&a2, run_id, i);
                            s2.lock()
                                .unwrap()
                                .insert(req.transaction_id.clone(), Instant::now());
                            if tx.send(req).await.is_err() {
                                break;
                            }
                            l2.sent.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    let mut c = SmsServiceClient::new(channel);
                    let mut out = c
                        .send_message_stream(authed(
                            &creds,
                            tokio_stream::wrappers::ReceiverStream::new(rx),
                        ))
                        .await?
                        .into_inner();
                    while let Some(r) = out.message().await? {
                        if !r.success && failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first failed send: {}", r.error);
                        }
                        if r.success {
                            load.accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(t) = sent_at.lock().unwrap().remove(&r.transaction_id)
                            && keep_latency
                        {
                            lat.push((t - start, t.elapsed()));
                        }
                    }
                    producer.await?;
                }
                BenchMode::Rest => {
                    let http = args.tls.http(&base)?;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        pace(start, args.rate, i).await;
                        if !args.more(start, i) {
                            break;
                        }
                        let r = request(&args, run_id, i);
                        load.sent.fetch_add(1, Ordering::Relaxed);
                        let body = serde_json::json!({
                            "esme": r.esme, "source": r.saddr, "destination": r.daddr,
                            "message": r.message, "transaction_id": r.transaction_id,
                            "strategy": r.strategy,
                        });
                        let t = Instant::now();
                        let resp = http
                            .post(format!("{base}/api/v1/sms/send"))
                            .bearer_auth(&creds.token)
                            .header("x-app-id", &creds.app_id)
                            .json(&body)
                            .send()
                            .await;
                        match resp {
                            Ok(r) if r.status().is_success() => {
                                let _ = r.bytes().await;
                                load.accepted.fetch_add(1, Ordering::Relaxed);
                                if keep_latency {
                                    lat.push((t - start, t.elapsed()));
                                }
                            }
                            other => {
                                if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                    let why = match other {
                                        Ok(r) => format!(
                                            "{} {}",
                                            r.status(),
                                            r.text().await.unwrap_or_default()
                                        ),
                                        Err(e) => e.to_string(),
                                    };
                                    eprintln!("first failed send: {why}");
                                }
                            }
                        }
                    }
                }
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let accepted_in = start.elapsed();
    if let Some(path) = &args.latency_log {
        lat.sort_unstable();
        let lines: String = lat
            .iter()
            .map(|(at, took)| {
                format!(
                    "{:.3} {:.3}\n",
                    at.as_secs_f64() * 1e3,
                    took.as_secs_f64() * 1e3
                )
            })
            .collect();
        std::fs::write(path, lines).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let cpu = cpu_before.zip(CpuTimes::read());
    let answered = lat.len();
    let mut lat: Vec<Duration> = lat
        .into_iter()
        .filter(|(at, _)| *at >= args.warmup)
        .map(|(_, took)| took)
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| percentile(&lat, p);
    let failures = load.failed.load(Ordering::Relaxed);
    let sent = load.sent.load(Ordering::Relaxed);
    println!(
        "mode {:?}: {} sent, {} failed, accepted in {:.2?} → {:.0} msg/s",
        args.mode,
        sent,
        failures,
        accepted_in,
        sent as f64 / accepted_in.as_secs_f64()
    );
    if !args.warmup.is_zero() {
        println!(
            "latency below leaves out the first {:.2?}: {} of {answered} answers",
            args.warmup,
            answered - lat.len()
        );
    }
    println!(
        "accept latency: p50 {:.2?}  p90 {:.2?}  p99 {:.2?}  max {:.2?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lat.last().copied().unwrap_or_default()
    );
    if let Some((before, after)) = cpu {
        // A latency tail on a shared VM is often the hypervisor's: print how
        // much CPU time was taken away during the run next to the figures.
        let (busy, steal) = after.since(&before);
        println!(
            "machine during the run: cpu busy {:.0} %, stolen by the hypervisor {:.1} %",
            busy * 100.0,
            steal * 100.0
        );
    }
    if let Some(w) = watcher {
        let want = sent - failures;
        let deadline = start + args.duration.unwrap_or_default() + args.timeout;
        while delivered.load(Ordering::Relaxed) < want {
            if Instant::now() > deadline {
                w.abort();
                bail!(
                    "only {} of {want} delivered within {:?}",
                    delivered.load(Ordering::Relaxed),
                    args.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let e2e = start.elapsed();
        println!(
            "delivered (receipt applied): {want} in {:.2?} → {:.0} msg/s end to end",
            e2e,
            want as f64 / e2e.as_secs_f64()
        );
        w.abort();
        if let Some((received, http)) = &webhook {
            let got = || received.delivered.load(Ordering::Relaxed);
            while got() < want && Instant::now() <= deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let at = start.elapsed();
            // Take the webhook away again, whatever happened: a later run
            // without `--webhook-listen` must not post to a dead receiver.
            crate::bench_webhook::set(http, &args.rest, &creds.token, &creds.app_id, None, false)
                .await?;
            if got() < want {
                bail!(
                    "the webhook received only {} of {want} delivered events within {:?}",
                    got(),
                    args.timeout
                );
            }
            let [p50, p90, p99, max] = received.latency();
            println!(
                "webhook received every delivered event: {want} in {at:.2?} → {:.0} msg/s end to end; \
                 {} requests, {} events repeated",
                want as f64 / at.as_secs_f64(),
                received.requests.load(Ordering::Relaxed),
                received.repeated.load(Ordering::Relaxed),
            );
            println!(
                "webhook latency after the receipt: p50 {p50} ms  p90 {p90} ms  p99 {p99} ms  max {max} ms"
            );
        }
    }
    // What a script needs to look the messages up afterwards.
    println!("transaction ids: bench-{run_id}-<i>, i < {sent}");
    stop_sampling.cancel();
    if let Some(s) = sampler {
        s.await??;
        if let Some(csv) = &args.soak_csv {
            println!("soak samples written to {}", csv.display());
        }
    }
    if failures > 0 {
        bail!("{failures} sends failed");
    }
    Ok(())
}
