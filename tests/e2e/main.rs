//! End-to-end tests: the real `smsgw` binary, driven over real sockets.

mod auth;
mod config_push;
mod contact;
mod dashboard;
mod harness;
mod links;
mod messages;
mod policy;
mod standalone;
