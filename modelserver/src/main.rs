//! `modelserver serve`: CLI glue. Parses flags named like Triton's, loads the TOML config, binds
//! the REST, gRPC and metrics listeners and hands them to [`modelserver::serve`], which drains on
//! SIGTERM/SIGINT.

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use modelserver::{Config, ModelServer};

/// mimalloc: every request allocates its decoded tensors, ONNX Runtime values and response buffers
/// on whichever worker thread serves it, the pattern glibc's allocator handles worst.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for configuration errors (a bad config file or flag, a missing model repository):
/// 64, `EX_USAGE` in sysexits.h, as authz uses, so scripts and orchestrators can tell a mistake to
/// fix from a crash to retry.
const EXIT_CONFIG: u8 = 64;

/// An error at start-up that a user fixes in the configuration, not a failure of the server.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigError(String);

#[derive(Parser)]
#[command(version, about = "Open Inference Protocol server on ONNX Runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the models in a repository.
    Serve(ServeArgs),
    /// Validate a configuration file and exit.
    CheckConfig {
        /// TOML configuration.
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Model repository: `<dir>/<model>/<version>/model.onnx`.
    #[arg(long)]
    model_repository: PathBuf,
    /// OIP REST port.
    #[arg(long, default_value_t = 8000)]
    http_port: u16,
    /// OIP gRPC port.
    #[arg(long, default_value_t = 8001)]
    grpc_port: u16,
    /// Prometheus metrics port.
    #[arg(long, default_value_t = 8002)]
    metrics_port: u16,
    /// Address all three listen on.
    #[arg(long, default_value = "0.0.0.0")]
    address: IpAddr,
    /// TOML configuration (runtime, limits, authorization).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `[authorization] mode`: `gateway` (the default) refuses every model call that
    /// does not carry authz's decision for exactly that model, version and action; `none` checks
    /// nothing, for a server no untrusted client can reach.
    #[arg(long, value_enum)]
    authorization: Option<modelserver::access::AuthorizationMode>,
    /// Overrides `[runtime] instance_kind`: `gpu` runs every model on CUDA whatever its
    /// `config.pbtxt` pins (the GPU deployments set it), `cpu` every model on CPU, `config` each
    /// as configured.
    #[arg(long, value_enum)]
    instance_kind: Option<modelserver::config::InstanceKindPolicy>,
}

fn main() -> ExitCode {
    // Colour only for a person at a terminal: log files and collectors get plain text.
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_ansi(ansi)
        .init();
    let result = match Cli::parse().command {
        Command::CheckConfig { config } => Config::load(&config)
            .map(|_| println!("{}: ok", config.display()))
            .map_err(|e| ConfigError(e.to_string()).into()),
        Command::Serve(args) => tokio::runtime::Runtime::new()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(serve(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Printed once: the message already carries its cause (file, line, column).
        Err(e) if e.is::<ConfigError>() => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = config(&args)?;
    let bind = |port| {
        let addr = SocketAddr::new(args.address, port);
        async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))
        }
    };
    let (http, grpc, metrics) = (
        bind(args.http_port).await?,
        bind(args.grpc_port).await?,
        bind(args.metrics_port).await?,
    );
    // Span export from the standard OTEL_* environment variables; off without an endpoint.
    let tracer = match telemetry::ExportConfig::from_env("modelserver") {
        Some(c) => telemetry::Tracer::start(c, telemetry::ExportMetrics::default())
            .context("starting the OTLP span exporter")?,
        None => telemetry::Tracer::disabled(),
    };
    let server = ModelServer::start_traced(&args.model_repository, config, tracer.clone())
        .await
        .with_context(|| {
            format!(
                "opening model repository {}",
                args.model_repository.display()
            )
        })?;
    tracing::info!(
        http.port = args.http_port,
        grpc.port = args.grpc_port,
        metrics.port = args.metrics_port,
        "modelserver listening"
    );
    let listeners = modelserver::Listeners {
        http,
        grpc,
        metrics,
    };
    // Registered before serving, so a server that could not be stopped gracefully never starts.
    let signal = shutdown_signal()?;
    modelserver::serve(server, listeners, signal).await?;
    let _ = tokio::time::timeout(telemetry::export::SHUTDOWN_FLUSH_TIMEOUT, tracer.flush()).await;
    Ok(())
}

/// The configuration file (or the defaults) with the command line's overrides.
fn config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| ConfigError(e.to_string()))?,
        None => Config::default(),
    };
    if !args.model_repository.is_dir() {
        return Err(ConfigError(format!(
            "the model repository {} is not a directory",
            args.model_repository.display()
        ))
        .into());
    }
    if let Some(mode) = args.authorization {
        config.authorization.mode = mode;
    }
    if let Some(kind) = args.instance_kind {
        config.runtime.instance_kind = kind;
    }
    Ok(config)
}

/// Completes on SIGTERM or Ctrl-C.
///
/// # Errors
/// When the SIGTERM handler cannot be installed.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            // An error here (no SIGINT handler) also ends the wait: the drain is the safe side.
            _ = tokio::signal::ctrl_c() => {}
        }
    })
}
