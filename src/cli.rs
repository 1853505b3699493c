//! The `crm` command line: `serve` (the default), `migrate`, `token`,
//! `descriptor`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::Application;
use crate::auth::{DEV_SECRET, mint};
use crate::config::{Config, LogFormat, parse_duration};
use crate::db;

/// Multi-tenant CRM backend (gRPC).
#[derive(Parser, Debug)]
#[command(name = "crm", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the API (the default).
    Serve {
        /// Accept tokens signed with the built-in development secret when no
        /// key is configured. Never in production.
        #[arg(long)]
        dev: bool,
    },
    /// Create the database if missing and apply migrations, then exit.
    Migrate {
        /// Then distribute every tenant table by tenant_id, co-located (a
        /// Citus coordinator only; refused where the citus extension is not
        /// installed). Idempotent.
        #[arg(long)]
        distribute: bool,
    },
    /// Print a JWT signed with CRM_JWT_SECRET (or the development secret).
    Token {
        /// tenant_id claim.
        #[arg(long)]
        tenant: String,
        /// sub claim (the person id).
        #[arg(long)]
        sub: String,
        /// app_id claim, for an integration token.
        #[arg(long)]
        app: Option<String>,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Write the protobuf descriptor set (Envoy, grpcurl -protoset), then exit.
    ///
    /// The encoded FileDescriptorSet of crm.v1 this binary was built from,
    /// imports and source info included: the `proto_descriptor` of Envoy's
    /// grpc_json_transcoder (deploy/envoy/), or `grpcurl -protoset`. Needs no
    /// database and no keys.
    Descriptor {
        /// File to write; stdout when omitted or `-` (refused on a terminal:
        /// the set is binary).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

/// Logs to stderr from a thread of their own, so that no request waits on
/// the write, and in batches: lines are buffered and flushed whenever the
/// queue runs dry (one write for many lines under load, every line at once
/// when idle). Lossless: a full queue slows the loggers rather than drop
/// lines. Keep the guard until exit: dropping it flushes what is left.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("crm-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.ok();
}

/// `crm descriptor`: the embedded [`crate::proto::FILE_DESCRIPTOR_SET`] to
/// `out`, or to stdout when `out` is `None` or `-`.
fn write_descriptor(out: Option<&Path>) -> anyhow::Result<()> {
    let bytes = crate::proto::FILE_DESCRIPTOR_SET;
    match out {
        Some(path) if path != Path::new("-") => std::fs::write(path, bytes)
            .with_context(|| format!("crm descriptor: writing {}", path.display())),
        _ => {
            let mut stdout = std::io::stdout().lock();
            if stdout.is_terminal() {
                anyhow::bail!(
                    "crm descriptor: the descriptor set is binary and stdout is a terminal; \
                     use `crm descriptor --out crm.pb` or redirect stdout (`crm descriptor > crm.pb`)"
                );
            }
            match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
                // `crm descriptor | head -c 4`: the reader having had enough is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("crm descriptor: writing to stdout"),
            }
        }
    }
}

/// `Some(out)` when the command line is `crm descriptor [--out ...]`, parsed
/// without the environment: `descriptor` reads no setting, so a malformed
/// `CRM_*` variable (or a missing database or key) must not stop it.
fn descriptor_request() -> Option<Option<PathBuf>> {
    let matches = Cli::command()
        .mut_args(|arg| arg.env(None::<&str>))
        .try_get_matches()
        .ok()?;
    match Cli::from_arg_matches(&matches).ok()?.command {
        Some(Command::Descriptor { out }) => Some(out),
        _ => None,
    }
}

/// Runs the command line.
pub async fn run() -> anyhow::Result<()> {
    if let Some(out) = descriptor_request() {
        return write_descriptor(out.as_deref());
    }
    let cli = Cli::parse();
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve { dev: false }) {
        Command::Descriptor { out } => write_descriptor(out.as_deref()),
        Command::Serve { dev } => {
            let _log = init_logging(config.log_format);
            let app = Application::build(&config, dev).await?;
            app.run(shutdown_signal()).await
        }
        Command::Migrate { distribute } => {
            let _log = init_logging(config.log_format);
            db::create_database_if_missing(&config.database_url).await?;
            let roles = db::migrate(&config.database_url).await?;
            // What an operator needs for CRM_APP_DATABASE_URL.
            tracing::info!(
                app_role = roles.app(),
                integration_role = roles.integration(),
                "migrations applied"
            );
            if distribute {
                let done = db::distribute::distribute(&config.database_url).await?;
                tracing::info!(
                    distributed = ?done.distributed,
                    already = ?done.already,
                    "tables distributed by tenant_id"
                );
            }
            Ok(())
        }
        Command::Token {
            tenant,
            sub,
            app,
            ttl,
        } => {
            let secret = match &config.jwt_secret {
                Some(s) => s.clone(),
                None => {
                    eprintln!(
                        "crm token: CRM_JWT_SECRET is not set; signing with the development secret (accepted only by `crm serve --dev`)"
                    );
                    DEV_SECRET.to_owned()
                }
            };
            let token = mint(
                secret.as_bytes(),
                &tenant,
                &sub,
                app.as_deref(),
                ttl.as_secs(),
                config.jwt_issuer.as_deref(),
                config.jwt_audience.as_deref(),
            )?;
            println!("{token}");
            Ok(())
        }
    }
}
