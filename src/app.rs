//! Builds the broker from a validated config, binds the API and admin listeners (port 0 works and
//! the bound addresses are reported), and runs both until the shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::broker::Broker;
use crate::config::{AuthConfig, Config, SourceConfig};
use crate::http;
use crate::metrics::Metrics;
use crate::source::{FileSource, SecretsManagerSource, Source, secrets_manager};

/// A broker with both listeners bound, ready to run.
#[derive(Debug)]
pub struct App {
    broker: Arc<Broker>,
    api: TcpListener,
    admin: TcpListener,
    api_router: axum::Router,
    admin_router: axum::Router,
    warm: bool,
    grace: Duration,
}

impl App {
    /// Creates the source and broker and binds both listeners.
    pub async fn build(config: Config) -> std::io::Result<Self> {
        let metrics = Metrics::new();
        let source: Box<dyn Source> = match &config.source {
            SourceConfig::File { path } => Box::new(FileSource::new(path.clone())),
            SourceConfig::SecretsManager(aws) => Box::new(SecretsManagerSource::new(
                &secrets_manager::sdk_config(aws).await,
            )),
        };
        let broker = Arc::new(Broker::new(
            config.databases,
            &config.cache,
            source,
            metrics.clone(),
        ));
        let token = match config.auth {
            AuthConfig::Token(token) => Some(Arc::new(token)),
            AuthConfig::Disabled => {
                warn!("authentication is disabled: any local process can read credentials");
                None
            }
        };
        let api = TcpListener::bind(config.server.listen).await?;
        let admin = TcpListener::bind(config.server.admin_listen).await?;
        Ok(Self {
            api_router: http::api_router(Arc::clone(&broker), token, metrics.clone()),
            admin_router: http::admin_router(Arc::clone(&broker), metrics),
            broker,
            api,
            admin,
            warm: config.cache.warm,
            grace: config.server.shutdown_grace,
        })
    }

    /// The address the credentials API is bound to.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address the admin listener is bound to.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting and gives in-flight requests up
    /// to the grace period to finish. Returns an error if a listener fails.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        info!(api = %self.api_addr(), admin = %self.admin_addr(), "listening");
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let mut api = tokio::spawn(
            axum::serve(self.api, self.api_router)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        );
        let mut admin = tokio::spawn(
            axum::serve(self.admin, self.admin_router)
                .with_graceful_shutdown(stopped(stop_rx))
                .into_future(),
        );
        let warm = self.warm.then(|| {
            let broker = Arc::clone(&self.broker);
            tokio::spawn(async move { broker.warm().await })
        });

        let failed = tokio::select! {
            () = shutdown => None,
            result = &mut api => Some(("api", result)),
            result = &mut admin => Some(("admin", result)),
        };
        if let Some(warm) = warm {
            warm.abort();
        }
        if let Some((listener, result)) = failed {
            let _ = stop_tx.send(true);
            let err = match result {
                Ok(Ok(())) => std::io::Error::other(format!("{listener} listener stopped")),
                Ok(Err(e)) => e,
                Err(join) => std::io::Error::other(join),
            };
            return Err(err);
        }

        info!(grace = ?self.grace, "shutting down: no new connections, draining in-flight requests");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.grace, async {
            let _ = (&mut api).await;
            let _ = (&mut admin).await;
        })
        .await;
        if drained.is_err() {
            warn!(grace = ?self.grace, "grace period over; abandoning requests still in flight");
            api.abort();
            admin.abort();
        } else {
            info!("drained; exiting");
        }
        Ok(())
    }
}
