//! Contact policies of smsgw, behind [`smsgw_core::policy::PolicyEngine`]:
//!
//! - [`RedisEngine`]: the native engine, shared by every pod. Counters and
//!   dedup keys live in Redis with TTLs matching their periods; each
//!   message is decided and counted by one Lua script call, shared with
//!   the checks waiting at the same moment (at most one round trip).
//! - [`InProcessEngine`]: the same rules in memory, for standalone mode.
//! - [`McpClient`]: an external Message Control Platform over HTTP (the
//!   Node-RED flow in `mcp/`), authenticated, with a timeout and a
//!   fail-open or fail-closed choice.
//!
//! Blacklists are named sets of numbers and prefixes (E.164 digits, no
//! `+`), loaded through [`smsgw_core::policy::BlacklistSink`]:
//! [`RedisBlacklists`] (`{prefix:cp}:bl:<name>:n` / `:p`, swapped in with
//! `RENAME`) or [`InProcessBlacklists`] (an `ArcSwap`).
#![warn(missing_docs)]

mod mcp;
mod memory;
mod policies;
mod redis_engine;
#[cfg(feature = "testing")]
pub mod testing;
pub mod zones;

pub use mcp::{FailMode, McpClient, McpConfig, McpStats};
pub use memory::{DEFAULT_MAX_ENTRIES, InProcessBlacklists, InProcessEngine};
pub use policies::{CompiledPolicy, Periods, Policies, PolicyConfigError, SharedPolicies};
pub use redis_engine::{Clock, RedisBlacklists, RedisEngine, redis_keys};
