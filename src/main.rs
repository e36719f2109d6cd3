//! The `credential-broker` binary: parse the command line, load the config, start logging, and
//! run until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use credential_broker::{App, Config, EXIT_USAGE, telemetry};

/// Serves rotated database credentials from AWS Secrets Manager on localhost, cached.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Path of the TOML configuration file.
    #[arg(long, env = "CREDENTIAL_BROKER_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("credential-broker: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    telemetry::init(&config.log);
    let result = match App::build(config).await {
        Ok(app) => app.run(shutdown_signal()).await,
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

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
