//! The core: a database name in, current credentials out, through the cache and the sources.
//! Every upstream call for a database goes through one per-database flight, so there is never
//! more than one in progress; failures back off with growing, jittered delays; entries are
//! refreshed in the background before their TTL ends; and while the source fails the last good
//! credentials are served, marked stale, for at most `max_stale`. RDS databases are resolved to
//! their master user secret and endpoint, cached apart with a longer TTL. IAM databases are
//! served tokens the broker signs, again before they expire. Secrets by id, for
//! the AWS agent's API, have a cache of their own with the same behaviour. Nothing here knows
//! about HTTP.

mod error;
mod failover;
mod fetch;
mod flight;
mod iam;
mod refresher;
mod schedule;
mod secret_cache;
mod serve;
mod state;
mod status;
mod stored;
mod topology;
mod upstream;
mod warm;
mod watch;

pub use error::{BrokerError, SecretError};
pub(crate) use secret_cache::StoreSettings;
pub use secret_cache::{SecretKey, ServedSecret};
pub(crate) use serve::BrokerSettings;
pub use serve::{Broker, Readiness, Served};
pub use state::VersionInfo;
pub use status::{DbCondition, DbStatus};
pub use watch::{VersionEvent, VersionWatch, Waited};

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
