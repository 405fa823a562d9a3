//! End-to-end tests: the real `smsgw` binary, driven over real sockets.

mod auth;
mod harness;
mod links;
mod messages;
mod standalone;
