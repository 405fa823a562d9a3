//! SMPP links as the API sees them: their state, and the control actions
//! admins take. The gateway implements [`LinkControl`] over its SMPP links;
//! the API only knows this trait.

use serde::{Deserialize, Serialize};

/// State of a link, for CheckESME and the admin API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    /// Link name.
    pub name: String,
    /// `down`, `binding`, `bound`, `unbinding` or `stopped`.
    pub state: String,
    /// Sessions currently bound.
    pub sessions_bound: u32,
    /// Sessions configured.
    pub sessions_total: u32,
    /// `submit_sm` awaiting a response, all sessions.
    pub in_flight: u32,
    /// Round trip of the most recent enquire_link, in milliseconds.
    pub last_enquire_link_rtt_ms: Option<f64>,
    /// The most recent error, if any.
    pub last_error: Option<String>,
    /// When it happened, Unix milliseconds.
    pub last_error_at_ms: Option<u64>,
    /// Accepted `submit_sm` per second, recent average.
    pub submit_rate: f64,
    /// Receipts per second, recent average.
    pub receipt_rate: f64,
    /// Per-session details.
    pub sessions: Vec<SessionView>,
}

/// State of one bind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// Index within the link.
    pub index: u32,
    /// `transceiver`, `transmitter` or `receiver`.
    pub role: String,
    /// `down`, `binding`, `bound` or `unbinding`.
    pub state: String,
    /// `submit_sm` awaiting a response on this bind.
    pub in_flight: u32,
    /// Last enquire_link round trip, in milliseconds.
    pub last_enquire_link_rtt_ms: Option<f64>,
}

/// What an admin can do to a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkAction {
    /// Bind the link's sessions.
    Start,
    /// Drain every window and unbind; stays down until started.
    Stop,
    /// Stop, then start.
    Restart,
}

impl std::str::FromStr for LinkAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "start" => Ok(Self::Start),
            "stop" => Ok(Self::Stop),
            "restart" => Ok(Self::Restart),
            other => Err(format!(
                "unknown link action {other:?}; expected start, stop or restart"
            )),
        }
    }
}

/// The links the gateway holds.
#[async_trait::async_trait]
pub trait LinkControl: Send + Sync + 'static {
    /// Every link, ordered by name.
    fn links(&self) -> Vec<LinkView>;
    /// One link, if it exists.
    fn link(&self, name: &str) -> Option<LinkView>;
    /// Applies `action` to a link and returns its state afterwards; `None`
    /// when no link has that name.
    async fn control(&self, name: &str, action: LinkAction) -> Option<LinkView>;
}

/// A gateway with no links (tests, or a configuration without any).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLinks;

#[async_trait::async_trait]
impl LinkControl for NoLinks {
    fn links(&self) -> Vec<LinkView> {
        Vec::new()
    }
    fn link(&self, _name: &str) -> Option<LinkView> {
        None
    }
    async fn control(&self, _name: &str, _action: LinkAction) -> Option<LinkView> {
        None
    }
}
