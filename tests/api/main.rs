//! Integration tests: the real broker binary against a real moto server over HTTP.
//! Needs moto (`bash .ci/setup` installs it) and promtool; a missing tool fails with a message.

mod admin;
mod auth;
mod config;
mod credentials;
mod helpers;
mod lifecycle;
mod openapi;
mod upstream;
