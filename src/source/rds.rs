//! The RDS API through the AWS SDK: `DescribeDBInstances` / `DescribeDBClusters` turn an
//! identifier into the master user secret's ARN and status, the endpoint, engine and database.

use aws_sdk_rds::Client;
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_rds::operation::describe_db_clusters::DescribeDBClustersError;
use aws_sdk_rds::operation::describe_db_instances::DescribeDBInstancesError;
use aws_sdk_rds::types::MasterUserSecret;

use super::api::{BoxFuture, RdsApi, Topology};
use super::aws::sdk_failure;
use super::error::{MAX_ARN, SourceError, bounded};
use crate::config::RdsTarget;
use crate::credentials::{Endpoint, SECRET_STATUSES};

#[derive(Debug, Clone)]
pub(crate) struct RdsClient {
    client: Client,
}

impl RdsClient {
    pub(crate) fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            client: Client::new(sdk),
        }
    }

    async fn instance(&self, id: &str) -> Result<Topology, SourceError> {
        let output = self
            .client
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
            .map_err(|e| {
                let gone = matches!(
                    e.as_service_error(),
                    Some(DescribeDBInstancesError::DbInstanceNotFoundFault(_))
                );
                classify(id, &e, gone)
            })?;
        let instance = output
            .db_instances()
            .first()
            .ok_or_else(|| SourceError::Gone(id.to_owned()))?;
        let endpoint = instance.endpoint();
        topology(
            instance.master_user_secret(),
            Endpoint {
                host: endpoint
                    .and_then(aws_sdk_rds::types::Endpoint::address)
                    .map(str::to_owned),
                port: endpoint
                    .and_then(aws_sdk_rds::types::Endpoint::port)
                    .and_then(|p| u16::try_from(p).ok()),
                reader_host: None,
                engine: instance.engine().map(str::to_owned),
                dbname: instance.db_name().map(str::to_owned),
            },
        )
    }

    async fn cluster(&self, id: &str) -> Result<Topology, SourceError> {
        let output = self
            .client
            .describe_db_clusters()
            .db_cluster_identifier(id)
            .send()
            .await
            .map_err(|e| {
                let gone = matches!(
                    e.as_service_error(),
                    Some(DescribeDBClustersError::DbClusterNotFoundFault(_))
                );
                classify(id, &e, gone)
            })?;
        let cluster = output
            .db_clusters()
            .first()
            .ok_or_else(|| SourceError::Gone(id.to_owned()))?;
        topology(
            cluster.master_user_secret(),
            Endpoint {
                host: cluster.endpoint().map(str::to_owned),
                port: cluster.port().and_then(|p| u16::try_from(p).ok()),
                reader_host: cluster.reader_endpoint().map(str::to_owned),
                engine: cluster.engine().map(str::to_owned),
                dbname: cluster.database_name().map(str::to_owned),
            },
        )
    }
}

impl RdsApi for RdsClient {
    fn operation(&self, target: &RdsTarget) -> &'static str {
        match target {
            RdsTarget::Instance(_) => "DescribeDBInstances",
            RdsTarget::Cluster(_) => "DescribeDBClusters",
        }
    }

    fn resolve<'a>(
        &'a self,
        target: &'a RdsTarget,
    ) -> BoxFuture<'a, Result<Topology, SourceError>> {
        Box::pin(async move {
            match target {
                RdsTarget::Instance(id) => self.instance(id).await,
                RdsTarget::Cluster(id) => self.cluster(id).await,
            }
        })
    }
}

/// Completes `endpoint` with the master user secret, if RDS manages one, and checks what RDS
/// answered before it is kept: lengths bounded, no control characters, and a secret status
/// only when it is one of the four RDS documents.
fn topology(
    secret: Option<&MasterUserSecret>,
    endpoint: Endpoint,
) -> Result<Topology, SourceError> {
    let checked =
        |what, value: Option<String>, max| value.map(|v| bounded(what, v, max)).transpose();
    Ok(Topology {
        secret_arn: checked(
            "the secret ARN",
            secret
                .and_then(MasterUserSecret::secret_arn)
                .map(str::to_owned),
            MAX_ARN,
        )?,
        secret_status: secret
            .and_then(MasterUserSecret::secret_status)
            .map(str::to_ascii_lowercase)
            .filter(|status| SECRET_STATUSES.contains(&status.as_str())),
        endpoint: Endpoint {
            host: checked("the endpoint", endpoint.host, MAX_HOST)?,
            reader_host: checked("the reader endpoint", endpoint.reader_host, MAX_HOST)?,
            engine: checked("the engine", endpoint.engine, MAX_NAME)?,
            dbname: checked("the database name", endpoint.dbname, MAX_NAME)?,
            port: endpoint.port,
        },
    })
}

/// Longest host name kept (DNS allows 253).
const MAX_HOST: usize = 253;
/// Longest engine or database name kept.
const MAX_NAME: usize = 255;

/// Sorts an SDK error: `gone` when the service said the database does not exist.
fn classify<E>(id: &str, err: &SdkError<E>, gone: bool) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if gone {
        SourceError::Gone(id.to_owned())
    } else {
        sdk_failure(err)
    }
}
