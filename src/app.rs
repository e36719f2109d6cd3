//! Builds the broker from a validated config, binds the API listeners (TCP and/or a Unix socket)
//! and the admin listener (port 0 works and the bound addresses are reported), and runs them all
//! until the shutdown future completes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::audit::AuditSink;
use crate::broker::{Broker, BrokerSettings, StoreSettings};
use crate::clients::Clients;
use crate::config::{AgentCompatConfig, AuthConfig, Config, Limits, ServerConfig};
use crate::http;
use crate::metrics::Metrics;
use crate::server::{self, BoundSocket, Listener, serve};
use crate::sink::{self, Sink};
use crate::source;

/// Connections the admin listener keeps open at most (probes and scrapers).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// A broker with its listeners bound, ready to run.
#[derive(Debug)]
pub struct App {
    broker: Arc<Broker>,
    clients: Option<Arc<Clients>>,
    audit: Option<Arc<AuditSink>>,
    sinks: Vec<Arc<Sink>>,
    listeners: Listeners,
    api_service: http::Front,
    admin_router: Router,
    limits: Limits,
    grace: Duration,
    metrics: Metrics,
}

impl App {
    /// Creates the source and broker and binds the listeners.
    pub async fn build(config: Config) -> std::io::Result<Self> {
        if !config.ignored_env.is_empty() {
            warn!(variables = ?config.ignored_env, "ignoring environment variables that are not configuration keys (those are CREDENTIAL_BROKER_<SECTION>__<KEY>)");
        }
        let metrics = Metrics::new();
        let sources = source::build(&config.source, config.databases.values()).await;
        let agent = agent_store(&config);
        let broker = Arc::new(Broker::new(
            config.databases,
            &config.cache,
            BrokerSettings {
                sources,
                metrics: metrics.clone(),
                upstream: config.upstream,
                rotation: config.rotation,
                agent,
            },
        ));
        let clients = match config.auth {
            AuthConfig::Clients {
                clients,
                reload_interval,
            } => Some(Arc::new(Clients::new(clients, reload_interval, &metrics))),
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
            .map(server::bind_unix)
            .transpose()?;
        let admin = TcpListener::bind(config.server.admin_listen).await?;
        let agent = AgentListener::bind(
            config.aws_agent.as_ref(),
            &config.server,
            &broker,
            &metrics,
            (audit.clone(), clients.clone()),
        )
        .await?;
        sink::create_dirs(&config.sinks).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot create a sink's directory: {e}"))
        })?;
        let sinks: Vec<Arc<Sink>> = config
            .sinks
            .into_iter()
            .map(|config| Sink::new(config, &metrics))
            .collect();
        let ready_sinks: Arc<[Arc<Sink>]> = if config.server.sinks_required_for_ready {
            sinks.iter().cloned().collect()
        } else {
            Arc::new([])
        };
        Ok(Self {
            api_service: http::api_service(
                Arc::clone(&broker),
                clients.clone(),
                audit.clone(),
                metrics.clone(),
                config.server.limits,
            ),
            admin_router: http::admin_router(Arc::clone(&broker), ready_sinks, metrics.clone()),
            metrics,
            broker,
            clients,
            audit,
            sinks,
            listeners: Listeners {
                api,
                unix,
                admin,
                agent,
            },
            limits: config.server.limits,
            grace: config.server.shutdown_grace,
        })
    }

    /// The address the credentials API is bound to on TCP, if it listens on TCP.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .api
            .as_ref()
            .map(|api| api.local_addr().expect("a bound listener has an address"))
    }

    /// The address the AWS agent's API is bound to, when it is served.
    pub fn agent_addr(&self) -> Option<SocketAddr> {
        self.listeners.agent.as_ref().map(|agent| {
            agent
                .listener
                .local_addr()
                .expect("a bound listener has an address")
        })
    }

    /// The address the admin listener is bound to.
    pub fn admin_addr(&self) -> SocketAddr {
        self.listeners
            .admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `control` says [`Control::Shutdown`] (or closes), then stops accepting and
    /// gives in-flight requests up to the grace period to finish; [`Control::Reload`] re-reads the
    /// token files and fetches every database again at once. A listener or the background
    /// refresher that stops on its own is an error: the process must not run on half-dead. The
    /// Unix socket file is removed on the way out.
    pub async fn run(self, mut control: mpsc::Receiver<Control>) -> std::io::Result<()> {
        info!(
            api = %self.api_addr().map_or_else(|| "off".to_owned(), |a| a.to_string()),
            unix = %self.listeners.unix.as_ref().map_or_else(|| "off".to_owned(), |u| u.path.display().to_string()),
            admin = %self.admin_addr(),
            aws_agent = %self.agent_addr().map_or_else(|| "off".to_owned(), |a| a.to_string()),
            "listening"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut servers = tokio::task::JoinSet::new();
        self.listeners.spawn(
            &mut servers,
            &self.api_service,
            self.admin_router,
            self.limits,
            &self.metrics,
            &stop_rx,
        );
        let mut background = tokio::spawn(Arc::clone(&self.broker).run_background());
        let mut files = tokio::task::JoinSet::new();
        for sink in &self.sinks {
            files.spawn(Arc::clone(sink).run(Arc::clone(&self.broker)));
        }
        let reload = self
            .clients
            .clone()
            .map(|clients| tokio::spawn(clients.run_reload()));
        let flush = self
            .audit
            .clone()
            .map(|audit| tokio::spawn(audit.run_flush()));

        let failed = loop {
            tokio::select! {
                command = control.recv() => match command {
                    Some(Control::Reload) => reload_now(self.clients.as_ref(), &self.broker).await,
                    Some(Control::Shutdown) | None => break None,
                },
                Some(ended) = servers.join_next() => {
                    break Some(format!("a listener stopped unexpectedly ({})", ended.err().map_or_else(|| "it returned".to_owned(), |e| e.to_string())));
                }
                Some(ended) = files.join_next() => {
                    break Some(format!("a sink stopped unexpectedly ({})", ended.err().map_or_else(|| "it returned".to_owned(), |e| e.to_string())));
                }
                ended = &mut background => {
                    break Some(format!("the background refresher stopped unexpectedly ({})", ended.err().map_or_else(|| "it returned".to_owned(), |e| e.to_string())));
                }
            }
        };
        background.abort();
        files.abort_all();
        if let Some(reload) = reload {
            reload.abort();
        }
        if let Some(flush) = flush {
            flush.abort();
        }
        if let Some(why) = failed {
            servers.shutdown().await;
            if let Some(audit) = &self.audit {
                audit.flush();
            }
            return Err(std::io::Error::other(why));
        }
        info!(grace = ?self.grace, "shutting down: no new connections, draining in-flight requests");
        // Held requests (long polls, event streams) end now rather than at the grace's end.
        self.broker.release_waiters();
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

/// The AWS agent API's cache settings, when that API is served: its TTL and size, the stale
/// allowance of `[cache]` unless stale serving is off, the refresh interval of `[rotation]`.
fn agent_store(config: &Config) -> Option<StoreSettings> {
    config.aws_agent.as_ref().map(|agent| StoreSettings {
        ttl: agent.ttl,
        max_stale: if agent.serve_stale {
            config.cache.max_stale
        } else {
            Duration::ZERO
        },
        capacity: agent.cache_size,
        refresh_min_interval: config.rotation.refresh_min_interval,
    })
}

/// The bound listeners, each served until the stop signal.
#[derive(Debug)]
struct Listeners {
    api: Option<TcpListener>,
    unix: Option<BoundSocket>,
    admin: TcpListener,
    agent: Option<AgentListener>,
}

/// The AWS agent's API: its listener, service and connection cap.
#[derive(Debug)]
struct AgentListener {
    listener: TcpListener,
    api: http::AgentApi,
    max_connections: usize,
}

impl AgentListener {
    /// Binds the agent's API when the configuration serves it.
    async fn bind(
        agent: Option<&AgentCompatConfig>,
        server: &ServerConfig,
        broker: &Arc<Broker>,
        metrics: &Metrics,
        (audit, clients): (Option<Arc<AuditSink>>, Option<Arc<Clients>>),
    ) -> std::io::Result<Option<Self>> {
        let Some(agent) = agent else {
            return Ok(None);
        };
        info!(token_from = %agent.token_variable, "serving the AWS Secrets Manager Agent's API");
        Ok(Some(Self {
            listener: TcpListener::bind(agent.listen).await?,
            api: http::agent_api(
                Arc::clone(broker),
                agent,
                metrics.clone(),
                server.limits.request_timeout,
                (audit, clients),
            ),
            max_connections: agent.max_connections,
        }))
    }
}

impl Listeners {
    /// Serves every listener in `servers`: the credentials API on TCP and the Unix socket,
    /// the AWS agent's API, and the admin listener.
    fn spawn(
        self,
        servers: &mut tokio::task::JoinSet<()>,
        api_service: &http::Front,
        admin_router: Router,
        limits: Limits,
        metrics: &Metrics,
        stop: &watch::Receiver<bool>,
    ) {
        if let Some(api) = self.api {
            servers.spawn(serve(
                api,
                api_service.clone(),
                Listener::new("api", limits, metrics),
                stop.clone(),
            ));
        }
        if let Some(unix) = self.unix {
            let (router, stop) = (api_service.clone(), stop.clone());
            let listener = Listener::new("unix", limits, metrics);
            servers.spawn(async move {
                serve(&unix.listener, router, listener, stop).await;
                drop(unix);
            });
        }
        if let Some(agent) = self.agent {
            let limits = Limits {
                max_connections: agent.max_connections,
                ..limits
            };
            servers.spawn(serve(
                agent.listener,
                agent.api,
                Listener::new("aws_agent", limits, metrics),
                stop.clone(),
            ));
        }
        let admin_limits = Limits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            ..limits
        };
        servers.spawn(serve(
            self.admin,
            TowerToHyperService::new(admin_router),
            Listener::new("admin", admin_limits, metrics),
            stop.clone(),
        ));
    }
}

/// Re-reads the token files and fetches every database again, now (SIGHUP); the fetches run
/// in the background.
async fn reload_now(clients: Option<&Arc<Clients>>, broker: &Arc<Broker>) {
    info!("reloading: re-reading token files and fetching every database again");
    if let Some(clients) = clients {
        let clients = Arc::clone(clients);
        let _ = tokio::task::spawn_blocking(move || clients.reload()).await;
    }
    let broker = Arc::clone(broker);
    tokio::spawn(async move { broker.fetch_all_now().await });
}

/// What the process is told to do while it serves (by a signal, in the binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop accepting, drain, exit (SIGTERM, SIGINT).
    Shutdown,
    /// Re-read token files and fetch every database again (SIGHUP).
    Reload,
}
