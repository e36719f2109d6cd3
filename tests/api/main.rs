//! Integration tests: the real broker binary against a real moto server over HTTP.
//! Needs moto (`bash .ci/setup` installs it) and promtool; a missing tool fails with a message.

// Scenario tests read best top to bottom, and they compare small counts with metric values.
#![allow(clippy::too_many_lines, clippy::cast_precision_loss)]

mod admin;
mod agent;
mod auth;
mod config;
mod credentials;
mod dashboards;
mod detection;
mod examples;
mod failover;
mod hardening;
mod hardening_upstream;
mod helpers;
mod hostile;
mod iam;
mod lifecycle;
mod node;
mod openapi;
mod pg;
mod pools;
mod prometheus;
mod rds;
mod resilience;
mod roles;
mod schemathesis;
mod security;
mod sinks;
mod status;
mod upstream;
mod warmup;
mod watch;
