//! Builds the broker from a validated config, binds the API listeners (TCP and/or a Unix socket)
//! and the admin listener (port 0 works and the bound addresses are reported), and runs them all
//! until the shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

use crate::audit::AuditSink;
use crate::broker::{Broker, Parts};
use crate::clients::Clients;
use crate::config::{AuthConfig, Config, Limits, SecretRef, SourceConfig, UnixSocketConfig};
use crate::http::{self, PeerUid};
use crate::metrics::Metrics;
use crate::source::{FileSource, RdsApi, RdsClient, SecretsManagerSource, Source, secrets_manager};

/// Connections the admin listener keeps open at most (probes and scrapers).
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Pause after a failed `accept`, e.g. when the process is out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A broker with its listeners bound, ready to run.
#[derive(Debug)]
pub struct App {
    broker: Arc<Broker>,
    clients: Option<Arc<Clients>>,
    audit: Option<Arc<AuditSink>>,
    api: Option<TcpListener>,
    unix: Option<BoundSocket>,
    admin: TcpListener,
    api_service: http::Front,
    admin_router: Router,
    limits: Limits,
    grace: Duration,
}

/// The credentials API's Unix socket, removed when dropped if the file is still ours.
#[derive(Debug)]
struct BoundSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we created.
    identity: (u64, u64),
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.identity
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl App {
    /// Creates the source and broker and binds the listeners.
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
        let clients = match config.auth {
            AuthConfig::Clients {
                clients,
                reload_interval,
            } => Some(Arc::new(Clients::new(clients, reload_interval))),
            AuthConfig::Disabled => {
                warn!("authentication is disabled: any local process can read credentials");
                None
            }
        };
        if let Some(listen) = config.server.listen
            && !listen.ip().is_loopback()
        {
            warn!(%listen, "the credentials API listens beyond loopback (server.allow_non_loopback): anyone who can reach it and holds a token can read credentials");
        }
        let audit = AuditSink::open(&config.audit).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot open the audit output: {e}"))
        })?;
        let api = match config.server.listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let unix = config
            .server
            .unix_socket
            .as_ref()
            .map(bind_unix)
            .transpose()?;
        let admin = TcpListener::bind(config.server.admin_listen).await?;
        Ok(Self {
            api_service: http::api_service(
                Arc::clone(&broker),
                clients.clone(),
                audit.clone(),
                metrics.clone(),
                config.server.limits,
            ),
            admin_router: http::admin_router(Arc::clone(&broker), metrics),
            broker,
            clients,
            audit,
            api,
            unix,
            admin,
            limits: config.server.limits,
            grace: config.server.shutdown_grace,
        })
    }

    /// The address the credentials API is bound to on TCP, if it listens on TCP.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api
            .as_ref()
            .map(|api| api.local_addr().expect("a bound listener has an address"))
    }

    /// The address the admin listener is bound to.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting and gives in-flight requests up
    /// to the grace period to finish. The Unix socket file is removed on the way out.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        info!(
            api = %self.api_addr().map_or_else(|| "off".to_owned(), |a| a.to_string()),
            unix = %self.unix.as_ref().map_or_else(|| "off".to_owned(), |u| u.path.display().to_string()),
            admin = %self.admin_addr(),
            "listening"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let admin_limits = Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            ..self.limits
        };
        let mut servers = tokio::task::JoinSet::new();
        if let Some(api) = self.api {
            servers.spawn(serve(
                api,
                self.api_service.clone(),
                self.limits,
                stop_rx.clone(),
            ));
        }
        if let Some(unix) = self.unix {
            let router = self.api_service.clone();
            let limits = self.limits;
            let stop = stop_rx.clone();
            servers.spawn(async move {
                serve(&unix.listener, router, limits, stop).await;
                drop(unix);
            });
        }
        servers.spawn(serve(
            self.admin,
            TowerToHyperService::new(self.admin_router),
            admin_limits,
            stop_rx,
        ));
        let background = tokio::spawn(Arc::clone(&self.broker).run_background());
        let reload = self
            .clients
            .map(|clients| tokio::spawn(clients.run_reload()));
        let flush = self
            .audit
            .clone()
            .map(|audit| tokio::spawn(audit.run_flush()));

        shutdown.await;
        info!(grace = ?self.grace, "shutting down: no new connections, draining in-flight requests");
        background.abort();
        if let Some(reload) = reload {
            reload.abort();
        }
        if let Some(flush) = flush {
            flush.abort();
        }
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.grace, async {
            while servers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(grace = ?self.grace, "grace period over; abandoning requests still in flight");
            servers.shutdown().await;
        } else {
            info!("drained; exiting");
        }
        if let Some(audit) = &self.audit {
            audit.flush();
        }
        Ok(())
    }
}

/// Binds the Unix socket at `config.path` with its configured mode and group. A socket file left
/// by a broker that is gone is replaced; a live one, or any other kind of file, is an error.
fn bind_unix(config: &UnixSocketConfig) -> std::io::Result<BoundSocket> {
    let path = &config.path;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another process", path.display()),
            ));
        }
        info!(path = %path.display(), "removing a stale socket file");
        std::fs::remove_file(path)?;
    }
    // Nobody may connect before the mode is set: create the file with no permissions at all.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o777));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound?;
    let meta = std::fs::symlink_metadata(path)?;
    let socket = BoundSocket {
        listener,
        path: path.clone(),
        identity: (meta.dev(), meta.ino()),
    };
    if let Some(gid) = config.group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.mode))?;
    Ok(socket)
}

/// A listener the accept loop can serve: TCP, or a Unix socket whose peers' uids are known.
trait Accept {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    async fn accept_one(&self) -> std::io::Result<(Self::Io, Option<PeerUid>)>;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept_one(&self) -> std::io::Result<(Self::Io, Option<PeerUid>)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, None))
    }
}

impl Accept for &UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept_one(&self) -> std::io::Result<(Self::Io, Option<PeerUid>)> {
        let (stream, _) = self.accept().await?;
        let uid = stream.peer_cred()?.uid();
        Ok((stream, Some(PeerUid(uid))))
    }
}

/// Accepts HTTP/1 connections on `listener` until `stop` turns true, at most
/// `limits.max_connections` at a time (further ones wait in the kernel's backlog), then closes the
/// listener and waits for the open connections to finish their requests. Requests on a Unix
/// socket carry their peer's uid as a [`PeerUid`] extension.
async fn serve<L, S>(listener: L, service: S, limits: Limits, mut stop: watch::Receiver<bool>)
where
    L: Accept,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
{
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
        let (stream, peer) = tokio::select! {
            accepted = listener.accept_one() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let io = TokioIo::new(stream);
        let task = match peer {
            None => {
                let connection = graceful.watch(http.serve_connection(io, service.clone()));
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        debug!(error = %err, "connection ended with an error");
                    }
                })
            }
            Some(peer) => {
                let inner = service.clone();
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(peer);
                        inner.call(request)
                    },
                );
                let connection = graceful.watch(http.serve_connection(io, service));
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        debug!(error = %err, "connection ended with an error");
                    }
                })
            }
        };
        tokio::spawn(async move {
            let _ = task.await;
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
