//! Contact policies as the gateway builds them: the engine chosen by
//! `--policy-engine` (in process, native on Redis, or an external MCP) and
//! the blacklist sink that engine reads, which the blacklist importer
//! (`crate::journal`) fills.

use crate::cli::{GatewayArgs, McpFailMode, PolicyEngineKind};
use anyhow::{Context, bail};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use smsgw_contact::{
    FailMode, InProcessBlacklists, InProcessEngine, McpClient, McpConfig, McpStats,
    RedisBlacklists, RedisEngine, SharedPolicies,
};
use smsgw_core::policy::{BlacklistSink, PolicyEngine};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The contact-policy engine and where its blacklists live.
pub(crate) struct Contact {
    /// Decides each message naming a strategy.
    pub(crate) engine: Arc<dyn PolicyEngine>,
    /// Where blacklist imports write, so that `engine` sees them; `None`
    /// when the engine reads no list the gateway can load (MCP without
    /// Redis).
    pub(crate) sink: Option<Arc<dyn BlacklistSink>>,
    /// The MCP client when `--policy-engine mcp`, for its counters.
    pub(crate) mcp: Option<Arc<McpClient>>,
}

impl Contact {
    /// Registers `smsgw_mcp_*` with the API's metrics: always, so the
    /// series exist (at zero) whatever the engine, and dashboards and
    /// alerts need no special case.
    pub(crate) fn register_metrics(&self, metrics: &smsgw_api::metrics::Metrics) {
        let collector = McpMetrics(self.mcp.clone());
        metrics.with_registry(|r| r.register_collector(Box::new(collector)));
    }
}

/// `smsgw_mcp_requests_total`, `_failures_total`, `_fail_open_passes_total`.
struct McpMetrics(Option<Arc<McpClient>>);

impl std::fmt::Debug for McpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("McpMetrics")
    }
}

impl Collector for McpMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let get = |f: fn(&McpStats) -> &AtomicU64| {
            self.0
                .as_ref()
                .map_or(0, |m| f(&m.stats).load(Ordering::Relaxed))
        };
        for (name, help, value) in [
            (
                "mcp_requests",
                "Checks sent to the external MCP",
                get(|s| &s.requests),
            ),
            (
                "mcp_failures",
                "MCP checks that failed (transport, timeout, status, body)",
                get(|s| &s.failures),
            ),
            (
                "mcp_fail_open_passes",
                "Failed MCP checks let through because --mcp-fail-mode is open",
                get(|s| &s.fail_open_passes),
            ),
        ] {
            crate::journal::encode_counter(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}

/// Builds the engine of `--policy-engine` over the policies compiled from
/// each snapshot.
pub(crate) async fn build(args: &GatewayArgs, policies: SharedPolicies) -> anyhow::Result<Contact> {
    let c = &args.contact;
    let redis_url = c.policy_redis_url.as_ref().or(args.redis_url.as_ref());
    let redis = async |why: &str| -> anyhow::Result<_> {
        let url =
            redis_url.with_context(|| format!("{why} needs --policy-redis-url or --redis-url"))?;
        let config = args.redis_config(url.clone());
        let conn = config
            .connect()
            .await
            .context("cannot reach Redis for the contact policies")?;
        Ok((conn, config.prefix))
    };
    Ok(match c.policy_engine {
        PolicyEngineKind::InProcess => {
            let lists = InProcessBlacklists::new();
            Contact {
                engine: Arc::new(
                    InProcessEngine::new(policies, lists.clone())
                        .with_max_entries(c.policy_max_entries),
                ),
                sink: Some(Arc::new(lists)),
                mcp: None,
            }
        }
        PolicyEngineKind::Redis => {
            let (conn, prefix) = redis("--policy-engine redis").await?;
            tracing::info!("contact policies: native engine on Redis");
            Contact {
                engine: Arc::new(RedisEngine::new(conn.clone(), prefix.clone(), policies)),
                sink: Some(Arc::new(RedisBlacklists::new(conn, prefix))),
                mcp: None,
            }
        }
        PolicyEngineKind::Mcp => {
            let url = c
                .mcp_url
                .clone()
                .context("--policy-engine mcp needs --mcp-url")?;
            let mut config = McpConfig::new(url);
            config.token = c.mcp_token.clone();
            config.timeout = c.mcp_timeout;
            config.fail_mode = match c.mcp_fail_mode {
                McpFailMode::Open => FailMode::Open,
                McpFailMode::Closed => FailMode::Closed,
            };
            let client = Arc::new(McpClient::new(config).context("cannot build the MCP client")?);
            if client.health().await {
                tracing::info!(fail_mode = ?c.mcp_fail_mode, "contact policies: external MCP, healthy");
            } else {
                tracing::warn!(fail_mode = ?c.mcp_fail_mode, "contact policies: external MCP, not healthy yet");
            }
            // The MCP flow reads blacklists from the same Redis keys the
            // native engine uses; without Redis the gateway cannot load them.
            let sink: Option<Arc<dyn BlacklistSink>> = if redis_url.is_some() {
                let (conn, prefix) = redis("blacklists").await?;
                Some(Arc::new(RedisBlacklists::new(conn, prefix)))
            } else {
                None
            };
            if sink.is_none() && !args.archive.blacklists.is_empty() {
                bail!(
                    "--blacklist with --policy-engine mcp needs --policy-redis-url or --redis-url \
                     (the MCP reads blacklists from Redis)"
                );
            }
            Contact {
                engine: client.clone(),
                sink,
                mcp: Some(client),
            }
        }
    })
}
