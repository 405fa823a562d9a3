//! Client of an external Message Control Platform (the platform's MCP
//! contract): `POST <url>` with the message and its strategy, bearer
//! token, bounded by a timeout; the answer is `{state, pass}`.
//!
//! Request body: `{"strategy", "app_id", "source", "destination",
//! "message"}` (plus `"destination_time_zone"` when known). Answers: 200
//! with `{state, pass}`; 404 for an unknown strategy; anything else is a
//! failure, handled by the [`FailMode`].
//!
//! The contract has no release: counts an external MCP makes are not taken
//! back when a later step refuses the message.

use async_trait::async_trait;
use serde::Serialize;
use smsgw_core::policy::{
    Decision, PolicyEngine, PolicyError, PolicyRequest, Reservation, Verdict,
};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What to do when the MCP fails (unreachable, timeout, 5xx, bad answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailMode {
    /// Let the message through (`{state: ok, pass: true}`), counted in
    /// [`McpStats::fail_open_passes`].
    #[default]
    Open,
    /// Refuse the check with an error; the gateway refuses the message.
    Closed,
}

impl std::str::FromStr for FailMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(FailMode::Open),
            "closed" => Ok(FailMode::Closed),
            other => Err(format!("{other:?}: expected open or closed")),
        }
    }
}

/// Where and how to call the MCP.
///
/// # Defaults
/// Timeout 500 ms, fail open, no token.
#[derive(Clone)]
pub struct McpConfig {
    /// Endpoint of the check (`http://mcp:1880/api/v1/check`).
    pub url: String,
    /// Health endpoint; default: `/api/v1/health` on the same origin.
    pub health_url: Option<String>,
    /// Bearer token sent as `Authorization`; never logged.
    pub token: Option<String>,
    /// Bound on one call (connect + answer).
    pub timeout: Duration,
    /// Behaviour on failure.
    pub fail_mode: FailMode,
}

impl McpConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            health_url: None,
            token: None,
            timeout: Duration::from_millis(500),
            fail_mode: FailMode::Open,
        }
    }
}

impl fmt::Debug for McpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpConfig")
            .field("url", &self.url)
            .field("health_url", &self.health_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("fail_mode", &self.fail_mode)
            .finish()
    }
}

/// Counters of the client, for the gateway's metrics.
#[derive(Debug, Default)]
pub struct McpStats {
    /// Checks sent.
    pub requests: AtomicU64,
    /// Checks that failed (transport, timeout, status, body).
    pub failures: AtomicU64,
    /// Failed checks let through because the mode is fail-open.
    pub fail_open_passes: AtomicU64,
}

#[derive(Serialize)]
struct Body<'a> {
    strategy: &'a str,
    app_id: &'a str,
    source: &'a str,
    destination: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination_time_zone: Option<&'a str>,
}

/// The external MCP behind [`PolicyEngine`].
pub struct McpClient {
    http: reqwest::Client,
    config: McpConfig,
    health_url: String,
    /// Counters.
    pub stats: McpStats,
}

impl McpClient {
    /// A client for `config`.
    pub fn new(config: McpConfig) -> Result<Self, PolicyError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| PolicyError::Backend(e.to_string()))?;
        let health_url = match &config.health_url {
            Some(h) => h.clone(),
            None => {
                let mut u = reqwest::Url::parse(&config.url)
                    .map_err(|e| PolicyError::Backend(format!("MCP url: {e}")))?;
                u.set_path("/api/v1/health");
                u.set_query(None);
                u.to_string()
            }
        };
        Ok(Self {
            http,
            config,
            health_url,
            stats: McpStats::default(),
        })
    }

    /// Whether the MCP's health endpoint answers 2xx within the timeout.
    pub async fn health(&self) -> bool {
        self.http
            .get(&self.health_url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn call(&self, req: &PolicyRequest<'_>) -> Result<Verdict, Failure> {
        let mut rb = self.http.post(&self.config.url).json(&Body {
            strategy: req.strategy,
            app_id: req.app_id,
            source: req.source,
            destination: req.destination,
            message: req.text,
            destination_time_zone: req.destination_time_zone,
        });
        if let Some(t) = &self.config.token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.map_err(|e| {
            if e.is_timeout() {
                Failure::Timeout
            } else {
                // Without the URL: it is configuration, not news.
                Failure::Other(format!("MCP request failed: {}", e.without_url()))
            }
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(Failure::UnknownStrategy);
        }
        if !status.is_success() {
            return Err(Failure::Other(format!("MCP answered {status}")));
        }
        resp.json::<Verdict>().await.map_err(|e| {
            if e.is_timeout() {
                Failure::Timeout
            } else {
                Failure::Other(format!("MCP answer unreadable: {}", e.without_url()))
            }
        })
    }
}

enum Failure {
    UnknownStrategy,
    Timeout,
    Other(String),
}

#[async_trait]
impl PolicyEngine for McpClient {
    async fn check(&self, req: &PolicyRequest<'_>) -> Result<Decision, PolicyError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let err = match self.call(req).await {
            Ok(v) => return Ok(Decision::uncounted(v)),
            Err(Failure::UnknownStrategy) => {
                return Err(PolicyError::UnknownStrategy(req.strategy.to_owned()));
            }
            Err(Failure::Timeout) => PolicyError::Timeout(self.config.timeout),
            Err(Failure::Other(m)) => PolicyError::Backend(m),
        };
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        match self.config.fail_mode {
            FailMode::Open => {
                self.stats.fail_open_passes.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(strategy = req.strategy, error = %err, "MCP failed; fail-open lets the message through");
                Ok(Decision::uncounted(Verdict::OK))
            }
            FailMode::Closed => Err(err),
        }
    }

    async fn release(&self, _reservation: &Reservation) -> Result<(), PolicyError> {
        Ok(())
    }
}
