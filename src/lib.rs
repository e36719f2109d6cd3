//! credential-broker: a localhost sidecar that serves current database credentials from AWS
//! Secrets Manager (or a local file), cached, over one HTTP call.
//!
//! Data flows one way: [`http`] handlers call the [`broker::Broker`], which reads through the
//! cache and, on a miss, the configured source. [`app::App`] wires these together and runs the
//! credentials API and the admin listener; [`sink`] keeps credential files current for software
//! that cannot call HTTP.

pub mod app;
pub mod audit;
pub mod broker;
mod cache;
pub mod clients;
pub mod config;
pub mod credentials;
pub mod files;
pub mod hardening;
pub mod healthcheck;
pub mod http;
pub mod metrics;
mod server;
pub mod sink;
pub mod source;
pub mod status;
pub mod telemetry;

pub use app::App;
pub use config::{Config, ConfigError};

/// Exit code for an unusable configuration (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
