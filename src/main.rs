//! The `credential-broker` binary: parse the command line, load the config, start logging, and
//! run until SIGTERM or SIGINT (or only check the config).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use credential_broker::{App, Config, EXIT_USAGE, telemetry};

/// Serves rotated database credentials from AWS Secrets Manager on localhost, cached.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Path of the TOML configuration file.
    #[arg(long, env = "CREDENTIAL_BROKER_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (the default when no subcommand is given).
    Serve,
    /// Validate the configuration (file plus environment), print it with secrets redacted, and
    /// exit 0 if it is valid or 64 if not.
    CheckConfig,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(path) = cli.config else {
        eprintln!(
            "credential-broker: no configuration: pass --config PATH or set CREDENTIAL_BROKER_CONFIG"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("credential-broker: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if matches!(cli.command, Some(Command::CheckConfig)) {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
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
