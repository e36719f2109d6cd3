//! The `credential-broker` binary: parse the command line, load the config, start logging, and
//! run until SIGTERM or SIGINT (or only check the config, or probe a running broker).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use credential_broker::app::Control;
use credential_broker::{App, Config, EXIT_USAGE, hardening, healthcheck, status, telemetry};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

/// Serves rotated database credentials from AWS Secrets Manager on localhost, cached.
///
/// Without a subcommand, runs the broker (`serve`).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// Path of the TOML configuration file.
    #[arg(long, env = "CREDENTIAL_BROKER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Path of an AWS Secrets Manager Agent TOML configuration file: serve the agent's API in
    /// its place (every secret the IAM role may read), printing its start-up line on stdout.
    #[arg(long, global = true, conflicts_with = "config")]
    agent_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker until SIGTERM or SIGINT (the default).
    Serve,
    /// Validate the configuration (file plus environment), print it with secrets redacted, and
    /// exit 0 if it is valid or 64 if not.
    CheckConfig,
    /// Probe a running broker's `/readyz` on its admin listener (from the configuration, or
    /// `--url`) and exit 0 when it answers 200, 1 otherwise: a container health check that needs
    /// no curl.
    Healthcheck {
        /// URL to probe instead of the configuration's `http://<admin_listen>/readyz`.
        #[arg(long)]
        url: Option<String>,
        /// Give up after this long (e.g. `2s`, `500ms`).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print every database's state (fresh, stale, expired, not fetched, deleted), version, age,
    /// secret status, rotation dates and failures from a running broker's `GET /status` (its
    /// admin listener from the configuration, or `--url`); exit 0 when every database is fresh,
    /// 1 otherwise.
    Status {
        /// The admin listener's URL (`http://127.0.0.1:2776`) instead of the configuration's.
        #[arg(long)]
        url: Option<String>,
        /// `table`, or `json` for scripts.
        #[arg(long, value_enum, default_value = "table")]
        output: status::Output,
        /// Give up after this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("credential-broker: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run());
    // Nothing the broker reads can block (see `files`), but the exit never waits on the
    // blocking pool for long whatever is in it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn run() -> ExitCode {
    // First of all: from here on SIGTERM, SIGINT and SIGHUP are handled, never fatal.
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("credential-broker: cannot install signal handlers: {err}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse();
    if let Some(Command::Healthcheck {
        url: Some(url),
        timeout,
    }) = &cli.command
    {
        return health(url, *timeout).await;
    }
    if let Some(Command::Status {
        url: Some(url),
        output,
        timeout,
    }) = &cli.command
    {
        return show_status(&status::status_url(url), *output, *timeout).await;
    }
    let agent_mode = cli.agent_config.is_some();
    let loaded = match (&cli.agent_config, &cli.config) {
        (Some(path), _) => Config::load_agent_file(path),
        (None, Some(path)) => Config::load(path),
        (None, None) => {
            eprintln!(
                "credential-broker: no configuration: pass --config PATH (or --agent-config PATH) or set CREDENTIAL_BROKER_CONFIG"
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match loaded {
        Ok(config) => config,
        Err(err) => {
            eprintln!("credential-broker: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli.command {
        Some(Command::CheckConfig) => {
            // A closed pipe (`| head`) is not an error of the configuration.
            let _ = writeln!(std::io::stdout(), "{config:#?}");
            return ExitCode::SUCCESS;
        }
        Some(Command::Healthcheck { timeout, .. }) => {
            let url = healthcheck::readiness_url(config.server.admin_listen);
            return health(&url, timeout).await;
        }
        Some(Command::Status {
            output, timeout, ..
        }) => {
            let url = status::status_url(&healthcheck::admin_url(config.server.admin_listen));
            return show_status(&url, output, timeout).await;
        }
        Some(Command::Serve) | None => {}
    }
    telemetry::init(&config.log);
    if let Err(err) = hardening::harden() {
        tracing::warn!(error = %err, "could not disable core dumps");
    }
    open_file_limit(&config.server);
    let app = tokio::select! {
        app = App::build(config) => app,
        () = signals.shutdown() => {
            tracing::info!("stopped before serving");
            return ExitCode::SUCCESS;
        }
    };
    let result = match app {
        Ok(app) => {
            if agent_mode && let Some(addr) = app.agent_addr() {
                // The agent's start-up line, which scripts wait for.
                let _ = writeln!(
                    std::io::stdout(),
                    "credential-broker/{} listening on http://{addr}",
                    env!("CARGO_PKG_VERSION")
                );
            }
            let (control, commands) = mpsc::channel(4);
            tokio::spawn(signals.forward(control));
            app.run(commands).await
        }
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "credential-broker failed");
            ExitCode::FAILURE
        }
    }
}

/// Raises the open-file limit to the hard one, and warns when even that is below what the
/// configured connections need: past it, new connections fail with EMFILE.
fn open_file_limit(server: &credential_broker::config::ServerConfig) {
    let listeners = u64::from(server.listen.is_some()) + u64::from(server.unix_socket.is_some());
    let needed = listeners * server.limits.max_connections as u64 + hardening::OTHER_FILES;
    match hardening::raise_open_files() {
        Ok(Some(limit)) if limit < needed => tracing::warn!(
            open_files = limit,
            needed,
            "the open-file limit is below what server.max_connections needs; connections past it \
             fail: raise it (ulimit -n, systemd LimitNOFILE, the container's nofile ulimit) or \
             lower server.max_connections"
        ),
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "could not raise the open-file limit"),
    }
}

/// Runs the `healthcheck` probe and turns its outcome into the exit code.
async fn health(url: &str, timeout: Duration) -> ExitCode {
    match healthcheck::probe(url, timeout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("credential-broker healthcheck: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The signals the broker handles: SIGTERM and SIGINT stop it, SIGHUP reloads.
struct Signals {
    term: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Completes on the first SIGTERM or SIGINT (SIGHUP is kept for later).
    async fn shutdown(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    /// Turns signals into commands for the running app until it stops listening.
    async fn forward(mut self, control: mpsc::Sender<Control>) {
        loop {
            let command = tokio::select! {
                _ = self.term.recv() => Control::Shutdown,
                _ = self.interrupt.recv() => Control::Shutdown,
                _ = self.hangup.recv() => Control::Reload,
            };
            if control.send(command).await.is_err() {
                return;
            }
        }
    }
}

/// Runs the `status` subcommand: prints the status, exits 0 when every database is fresh.
async fn show_status(url: &str, output: status::Output, timeout: Duration) -> ExitCode {
    match status::fetch(url, output, timeout).await {
        Ok((text, all_fresh)) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            if all_fresh {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("credential-broker status: {err}");
            ExitCode::FAILURE
        }
    }
}
