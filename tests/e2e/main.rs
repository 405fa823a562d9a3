//! End-to-end tests: the real `smsgw` binary, driven over real sockets.

mod auth;
mod batch;
mod claims;
mod cli;
mod compat;
mod config_push;
mod contact;
mod dashboard;
mod faults;
mod hardening;
mod harness;
mod jwks;
mod links;
mod logs;
mod messages;
mod metrics;
mod mo;
mod outbox;
mod policy;
mod s3_credentials;
mod standalone;
mod strategies;
mod text;
mod tls;
mod traces;
mod users_import;
