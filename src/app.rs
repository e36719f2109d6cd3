//! Builds the broker from a validated config, binds the API and admin listeners (port 0 works and
//! the bound addresses are reported), and runs both until the shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

use crate::broker::{Broker, Parts};
use crate::config::{AuthConfig, Config, Limits, SecretRef, SourceConfig};
use crate::http;
use crate::metrics::Metrics;
use crate::source::{FileSource, RdsApi, RdsClient, SecretsManagerSource, Source, secrets_manager};

/// Connections the admin listener keeps open at most (probes and scrapers).
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Pause after a failed `accept`, e.g. when the process is out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A broker with both listeners bound, ready to run.
#[derive(Debug)]
pub struct App {
    broker: Arc<Broker>,
    api: TcpListener,
    admin: TcpListener,
    api_router: Router,
    admin_router: Router,
    limits: Limits,
    grace: Duration,
}

impl App {
    /// Creates the source and broker and binds both listeners.
    pub async fn build(config: Config) -> std::io::Result<Self> {
        let metrics = Metrics::new();
        let uses_rds = config
            .databases
            .values()
            .any(|db| matches!(db.secret, SecretRef::Rds(_)));
        let (source, rds): (Box<dyn Source>, Option<Box<dyn RdsApi>>) = match &config.source {
            SourceConfig::File { path } => (Box::new(FileSource::new(path.clone())), None),
            SourceConfig::SecretsManager(aws) => {
                let sdk = secrets_manager::sdk_config(aws).await;
                let rds = uses_rds.then(|| Box::new(RdsClient::new(&sdk)) as Box<dyn RdsApi>);
                (Box::new(SecretsManagerSource::new(&sdk)), rds)
            }
        };
        let broker = Arc::new(Broker::new(
            config.databases,
            &config.cache,
            Parts {
                source,
                rds,
                metrics: metrics.clone(),
                upstream: config.upstream,
                rotation: config.rotation,
            },
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
            api_router: http::api_router(
                Arc::clone(&broker),
                token,
                metrics.clone(),
                config.server.limits,
            ),
            admin_router: http::admin_router(Arc::clone(&broker), metrics),
            broker,
            api,
            admin,
            limits: config.server.limits,
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
    /// to the grace period to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        info!(api = %self.api_addr(), admin = %self.admin_addr(), "listening");
        let (stop_tx, stop_rx) = watch::channel(false);
        let admin_limits = Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            ..self.limits
        };
        let mut api = tokio::spawn(serve(
            self.api,
            self.api_router,
            self.limits,
            stop_rx.clone(),
        ));
        let mut admin = tokio::spawn(serve(self.admin, self.admin_router, admin_limits, stop_rx));
        let background = tokio::spawn(Arc::clone(&self.broker).run_background());

        shutdown.await;
        info!(grace = ?self.grace, "shutting down: no new connections, draining in-flight requests");
        background.abort();
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

/// Accepts HTTP/1 connections on `listener` until `stop` turns true, at most
/// `limits.max_connections` at a time (further ones wait in the kernel's backlog), then closes the
/// listener and waits for the open connections to finish their requests.
async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Room for headers up to the configured limit, so that the limit is answered with JSON.
        .max_buf_size((limits.max_header_bytes * 2).max(16 * 1024) + 4096);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let connection = graceful.watch(http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        ));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Completes once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
