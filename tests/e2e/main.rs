//! End-to-end tests: the real `smsgw` binary, driven over real sockets.

mod harness;
mod standalone;
