//! `authz`: CLI glue. Parses arguments, loads config, starts telemetry, and serves through
//! `authz::server` until SIGTERM/SIGINT starts its bounded drain. Everything else lives in the
//! library; configuration errors exit with 64.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

/// mimalloc: the glibc allocator spent a quarter of a check's CPU in malloc/free under
/// concurrent load (perf, `cargo bench -p authz --bench decision`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

use authz::config::{Config, parse_duration};
use authz::devkeys::{self, DevKey};
use authz::metrics::Metrics;
use authz::runtime::Runtime;
use authz::server::{Listeners, Server};

/// Exit status for configuration errors: 64 (`EX_USAGE` in sysexits.h), so scripts can tell a
/// bad config from a crash.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "authz",
    version,
    about = "Envoy ext_authz service for model inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve ext_authz (gRPC) and the admin HTTP endpoints.
    Serve {
        /// Config file.
        #[arg(long, env = "AUTHZ_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config (and its policies and key files) and exit.
    CheckConfig {
        /// Config file.
        #[arg(long, env = "AUTHZ_CONFIG")]
        config: PathBuf,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Mint a dev JWT signed with the dev issuer key; prints only the token.
    Token {
        /// Principal id (`sub`).
        #[arg(long)]
        sub: String,
        /// Comma-separated roles.
        #[arg(long, value_delimiter = ',', default_value = "")]
        roles: Vec<String>,
        /// Lifetime, e.g. 30s, 15m, 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Dev issuer private key.
        #[arg(long, default_value = devkeys::DEFAULT_KEY_PATH)]
        key: PathBuf,
        /// `iss` claim.
        #[arg(long, default_value = devkeys::DEV_ISSUER)]
        issuer: String,
        /// `aud` claim.
        #[arg(long, default_value = devkeys::DEV_AUDIENCE)]
        audience: String,
    },
    /// Generate the dev issuer key, its JWKS and a ready-to-run config in OUT.
    DevInit {
        /// Output directory.
        #[arg(long, default_value = ".dev")]
        out: PathBuf,
        /// Demo config template.
        #[arg(long, default_value = "config/authz.toml")]
        template: PathBuf,
        /// Replace an existing key (invalidates every token minted with it).
        #[arg(long)]
        force: bool,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files (in rotation order; a directory's files may be given
    /// with a glob). Exit 0 intact (a torn final line from a crash is reported, not tampering),
    /// 1 tampered (names the first bad line), 2 unreadable.
    ///
    /// With `--checkpoints` (a witness file, a `redis-cli --raw XRANGE` dump, or shipped stdout
    /// lines) and `--public-key`, also proves that every witnessed checkpoint is in the chain
    /// with a valid signature: records cut after a checkpoint (truncated), a chain that does
    /// not contain a checkpoint's hash (rewritten), or checkpoints the witness lacks (gap) are
    /// tampering (exit 1). A directory may hold several replicas' files (in subdirectories):
    /// one summary line per replica.
    Verify {
        /// Audit files or directories (one subdirectory per replica), in any order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Witnessed checkpoints to check the chains against (repeatable).
        #[arg(long = "checkpoints", value_name = "SOURCE")]
        checkpoints: Vec<PathBuf>,
        /// Public key (PEM) of a checkpoint signing key; repeat for rotated keys.
        #[arg(long = "public-key", value_name = "PEM")]
        public_keys: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run a cases file against the configured policies; non-zero exit on any mismatch.
    Test {
        /// Config file.
        #[arg(long, env = "AUTHZ_CONFIG")]
        config: PathBuf,
        /// Cases file (TOML, see config/README.md).
        cases: PathBuf,
    },
    /// Decide every policy decision in audit files again with a candidate policy file and
    /// print what would change: principal, model, action, old -> new decision and reason, count.
    /// Exit 0 no change, 1 changes, 2 some record (named by file:line) or the candidate cannot
    /// be evaluated.
    Replay {
        /// Config file (schema and models; the active policies are not read).
        #[arg(long, env = "AUTHZ_CONFIG")]
        config: PathBuf,
        /// The candidate policy file (Cedar), validated like the active ones.
        #[arg(long)]
        policy: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Audit files or directories (rotated files are read in order).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Compare two policy files over the configured principals (`[[principals]]`, API keys,
    /// mTLS identities, one per role) and models: who gains or loses which model and action.
    /// Exit 0 no change, 1 changes, 2 a policy file cannot be loaded.
    Diff {
        /// Config file (schema, models, principals).
        #[arg(long, env = "AUTHZ_CONFIG")]
        config: PathBuf,
        /// Print the changes as JSON.
        #[arg(long)]
        json: bool,
        /// The policy file in force.
        old: PathBuf,
        /// The candidate policy file.
        new: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Policy {
            command: PolicyCommand::Test { config, cases },
        } => run_policy_cases(&config, &cases),
        Command::Policy {
            command:
                PolicyCommand::Replay {
                    config,
                    policy,
                    json,
                    files,
                },
        } => policy_replay(&config, &policy, &files, json),
        Command::Policy {
            command:
                PolicyCommand::Diff {
                    config,
                    json,
                    old,
                    new,
                },
        } => policy_diff(&config, &old, &new, json),
        Command::Token {
            sub,
            roles,
            ttl,
            key,
            issuer,
            audience,
        } => token(&sub, &roles, &ttl, &key, &issuer, &audience),
        Command::DevInit {
            out,
            template,
            force,
        } => dev_init(&out, &template, force),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    files,
                    checkpoints,
                    public_keys,
                },
        } => Ok(authz::audit::verify::run_verify_with(
            &files,
            &checkpoints,
            &public_keys,
        )),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .json()
        // stdout may carry the audit sink's records; logs must never mix into them.
        .with_writer(std::io::stderr)
        .init();
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    let rt = tokio_runtime()?;
    match rt.block_on(Runtime::load(path, Arc::new(Metrics::new()))) {
        Ok(r) => {
            // A shadow that does not load leaves `serve` running without one; here it is an
            // error, so a rollout does not start with a shadow that is silently off.
            if let (Some(shadow), None) = (&r.config.policy.shadow, &r.shadow) {
                eprint!("{}: policy.shadow: ", path.display());
                // Prints the shadow's problems.
                let _ = load_candidate(&r.config, shadow);
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            println!(
                "{}: ok ({} models, {} issuers, {} API keys, {} mTLS identities)",
                path.display(),
                r.config.models.len(),
                r.config.authn.issuers.len(),
                r.config.authn.api_keys.len(),
                r.config.authn.mtls.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    init_tracing();
    let rt = tokio_runtime()?;
    rt.block_on(async {
        let metrics = Arc::new(Metrics::new());
        let loaded = match Runtime::load(path, Arc::clone(&metrics)).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        };
        let listeners = Listeners::bind(&loaded.config.server).await?;
        let tracer =
            authz::trace::tracer_from_env(&metrics).context("starting the OTLP span exporter")?;
        let server = match Server::start(path, loaded, metrics, tracer) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        };
        server.serve(listeners, wait_for_termination()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_for_termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            // Without signal handlers, Ctrl-C via tokio is the fallback.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn run_policy_cases(config_path: &Path, cases_path: &Path) -> anyhow::Result<ExitCode> {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let engine = match authz::policy::PolicyEngine::load(
        &config.policy.schema,
        &config.policy.files,
        &config.models,
    ) {
        Ok(e) => e,
        Err(problems) => {
            for p in problems {
                eprintln!("  - {p}");
            }
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let cases = authz::policy::cases::read_cases(cases_path)?;
    let results = authz::policy::cases::run(&config, &engine, &cases);
    let failed: Vec<_> = results.iter().filter(|r| r.mismatch.is_some()).collect();
    for r in &failed {
        println!(
            "FAIL {}: {}",
            r.name,
            r.mismatch.as_deref().unwrap_or_default()
        );
    }
    println!(
        "{} cases, {} passed, {} failed",
        results.len(),
        results.len() - failed.len(),
        failed.len()
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Exit status of `policy replay` and `policy diff` when something cannot be evaluated.
const EXIT_CANNOT_EVALUATE: u8 = 2;

/// Loads `policy` with the config's schema and models; prints the problems on failure.
fn load_candidate(config: &Config, policy: &Path) -> Option<authz::policy::PolicyEngine> {
    match authz::policy::PolicyEngine::load(
        &config.policy.schema,
        std::slice::from_ref(&policy.to_path_buf()),
        &config.models,
    ) {
        Ok(e) => Some(e),
        Err(problems) => {
            eprintln!("{}: cannot be evaluated:", policy.display());
            for p in problems {
                eprintln!("  - {p}");
            }
            None
        }
    }
}

fn policy_replay(
    config_path: &Path,
    policy: &Path,
    files: &[PathBuf],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let Some(candidate) = load_candidate(&config, policy) else {
        return Ok(ExitCode::from(EXIT_CANNOT_EVALUATE));
    };
    let report = match authz::policy::replay::replay(&candidate, files) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_CANNOT_EVALUATE));
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", authz::policy::replay::report_text(&report));
    }
    Ok(ExitCode::from(report.exit_code()))
}

fn policy_diff(config_path: &Path, old: &Path, new: &Path, json: bool) -> anyhow::Result<ExitCode> {
    use authz::policy::access;
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let (Some(old), Some(new)) = (load_candidate(&config, old), load_candidate(&config, new))
    else {
        return Ok(ExitCode::from(EXIT_CANNOT_EVALUATE));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
    let principals = access::known_principals(&config);
    let changes = access::diff(&principals, &old, &new, now);
    if json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
    } else if changes.is_empty() {
        println!("no change for {} principal(s)", principals.len());
    } else {
        print!("{}", access::diff_table(&changes));
    }
    Ok(if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn token(
    sub: &str,
    roles: &[String],
    ttl: &str,
    key: &Path,
    issuer: &str,
    audience: &str,
) -> anyhow::Result<ExitCode> {
    let ttl = parse_duration(ttl)
        .map_err(anyhow::Error::msg)
        .context("--ttl")?;
    let key = DevKey::read(key)?;
    let roles: Vec<String> = roles.iter().filter(|r| !r.is_empty()).cloned().collect();
    let token = key.mint(&devkeys::dev_claims(sub, &roles, ttl, issuer, audience))?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn dev_init(out: &Path, template: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let written = devkeys::dev_init(out, template, force)?;
    let verb = if written.new_key { "wrote" } else { "kept" };
    println!("{verb} {}", written.key.display());
    println!("wrote {}", written.jwks.display());
    println!("wrote {}", written.checkpoint_keys.0.display());
    println!("wrote {}", written.checkpoint_keys.1.display());
    println!("wrote {}", written.config.display());
    Ok(ExitCode::SUCCESS)
}
