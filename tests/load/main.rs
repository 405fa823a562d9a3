//! End-to-end tests that hold a rate for seconds and count what got
//! through. They share the e2e harness but run in their own test binary,
//! one at a time, so the other end-to-end tests do not compete with them
//! for the CPU while they measure.

#[path = "../e2e/harness.rs"]
#[allow(dead_code)]
mod harness;
mod rate;

/// Held by every test of this binary: one measurement at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
