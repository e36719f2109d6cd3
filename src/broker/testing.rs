//! Brokers over the stand-in source, for the unit tests of the broker and of the layers above
//! it (which so never name a source type).

use std::sync::Arc;
use std::time::Duration;

use super::secret_cache::StoreSettings;
use super::serve::{Broker, BrokerSettings};
use crate::config::{CacheConfig, DatabaseConfig, RotationConfig, UpstreamConfig};
use crate::credentials::DbName;
use crate::metrics::Metrics;
pub(crate) use crate::source::stand_in::PASSWORD;
use crate::source::stand_in::{Controls, StandInSource};
use crate::source::{Clients, RdsApi, Source, Sources};

/// How a test broker is built; [`TestBroker::default`] is what most tests want.
pub(crate) struct TestBroker {
    /// Database name and the stand-in's secret id it reads.
    pub(crate) databases: Vec<(&'static str, DatabaseConfig)>,
    pub(crate) cache: CacheConfig,
    pub(crate) upstream: UpstreamConfig,
    pub(crate) rotation: RotationConfig,
    /// How long the stand-in source takes to answer.
    pub(crate) delay: Duration,
    pub(crate) rds: Option<Box<dyn RdsApi>>,
    pub(crate) metrics: Metrics,
    /// The AWS agent API's cache, when the test serves that API.
    pub(crate) agent: Option<StoreSettings>,
    /// A fallback region with a stand-in source of its own (whose controls
    /// [`build_with_replica`](Self::build_with_replica) returns).
    pub(crate) replica_region: Option<&'static str>,
}

impl Default for TestBroker {
    fn default() -> Self {
        Self {
            databases: Vec::new(),
            cache: CacheConfig::for_tests(Duration::from_mins(1), Duration::from_mins(1)),
            upstream: UpstreamConfig::default(),
            rotation: RotationConfig::default(),
            delay: Duration::ZERO,
            rds: None,
            metrics: Metrics::new(),
            agent: None,
            replica_region: None,
        }
    }
}

impl TestBroker {
    /// Adds a database read from the stand-in's secret `secret_id`.
    pub(crate) fn database(mut self, name: &'static str, secret_id: &str) -> Self {
        self.databases
            .push((name, DatabaseConfig::for_tests(secret_id)));
        self
    }

    /// The broker, and the controls of its stand-in source.
    pub(crate) fn build(self) -> (Arc<Broker>, Arc<Controls>) {
        let (broker, controls, _) = self.build_with_replica();
        (broker, controls)
    }

    /// The broker, and the controls of its stand-in source and of the replica's.
    pub(crate) fn build_with_replica(self) -> (Arc<Broker>, Arc<Controls>, Arc<Controls>) {
        let source = StandInSource::new(self.delay, "v1");
        let controls = source.controls();
        let replica = StandInSource::new(self.delay, "v1");
        let replica_controls = replica.controls();
        let replicas = self
            .replica_region
            .map(|region| (region.to_owned(), Box::new(replica) as Box<dyn Source>))
            .into_iter()
            .collect();
        let broker = Broker::new(
            self.databases
                .into_iter()
                .map(|(name, config)| (DbName::parse(name).unwrap(), config)),
            &self.cache,
            BrokerSettings {
                sources: Sources {
                    own: Clients {
                        secrets: Box::new(source),
                        rds: self.rds,
                        iam: None,
                        region: None,
                        replicas,
                    },
                    roles: Vec::new(),
                },
                metrics: self.metrics,
                upstream: self.upstream,
                rotation: self.rotation,
                agent: self.agent,
            },
        );
        (Arc::new(broker), controls, replica_controls)
    }
}
