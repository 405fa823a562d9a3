//! Contact policies as the gateway builds them: the engine chosen by
//! `--policy-engine` (in process, native on Redis, or an external MCP) and
//! the blacklist sink that engine reads, which the blacklist importer
//! (`crate::journal`) fills.

use crate::cli::{GatewayArgs, McpFailMode, PolicyEngineKind};
use anyhow::{Context, bail};
use smsgw_contact::{
    FailMode, InProcessBlacklists, InProcessEngine, McpClient, McpConfig, RedisBlacklists,
    RedisEngine, SharedPolicies,
};
use smsgw_core::policy::{BlacklistSink, PolicyEngine};
use std::sync::Arc;

/// The contact-policy engine and where its blacklists live.
pub(crate) struct Contact {
    /// Decides each message naming a strategy.
    pub(crate) engine: Arc<dyn PolicyEngine>,
    /// Where blacklist imports write, so that `engine` sees them; `None`
    /// when the engine reads no list the gateway can load (MCP without
    /// Redis).
    pub(crate) sink: Option<Arc<dyn BlacklistSink>>,
}

/// Builds the engine of `--policy-engine` over the policies compiled from
/// each snapshot.
pub(crate) async fn build(args: &GatewayArgs, policies: SharedPolicies) -> anyhow::Result<Contact> {
    let c = &args.contact;
    let redis_url = c.policy_redis_url.as_ref().or(args.redis_url.as_ref());
    let redis = async |why: &str| -> anyhow::Result<_> {
        let url =
            redis_url.with_context(|| format!("{why} needs --policy-redis-url or --redis-url"))?;
        let config = smsgw_store::RedisConfig::new(url.clone());
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
                engine: Arc::new(InProcessEngine::new(policies, lists.clone())),
                sink: Some(Arc::new(lists)),
            }
        }
        PolicyEngineKind::Redis => {
            let (conn, prefix) = redis("--policy-engine redis").await?;
            tracing::info!("contact policies: native engine on Redis");
            Contact {
                engine: Arc::new(RedisEngine::new(conn.clone(), prefix.clone(), policies)),
                sink: Some(Arc::new(RedisBlacklists::new(conn, prefix))),
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
            let client = McpClient::new(config).context("cannot build the MCP client")?;
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
                engine: Arc::new(client),
                sink,
            }
        }
    })
}
