//! The `crm` command line: `serve` (the default), `migrate`, `token`,
//! `descriptor`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::Application;
use crate::auth::{DEV_SECRET, mint_scoped};
use crate::config::{BaseArgs, Config, JwtArgs, LogFormat, parse_duration};
use crate::db;

/// Multi-tenant CRM backend: gRPC and REST/JSON over PostgreSQL.
///
/// With no command, serves the API (`crm --dev` is `crm serve --dev`).
#[derive(Parser, Debug)]
#[command(name = "crm", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// `crm serve`'s options.
#[derive(Args, Debug)]
struct ServeArgs {
    /// Development mode: accept tokens signed with the built-in development
    /// secret when no key is configured, listen on 127.0.0.1 unless an
    /// address is given, and start a private PostgreSQL when none answers
    /// (see --dev-postgres). Never in production.
    #[arg(long)]
    dev: bool,
    /// In development mode, the database: `auto` uses DATABASE_URL when it
    /// is set or a server answers at 127.0.0.1:5432, and otherwise starts a
    /// private cluster from the installed PostgreSQL binaries (kept in the
    /// user's cache directory, stopped when crm exits); `private` always
    /// starts it; `never` never does.
    #[arg(
        long,
        env = "CRM_DEV_POSTGRES",
        value_enum,
        default_value_t = DevPostgres::Auto,
        requires = "dev"
    )]
    dev_postgres: DevPostgres,
    #[command(flatten)]
    config: Config,
}

/// Where `crm serve --dev` finds its database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DevPostgres {
    /// DATABASE_URL when set, else the local server, else a private cluster.
    Auto,
    /// Always a private cluster.
    Private,
    /// Never a private cluster.
    Never,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the API (the default).
    Serve(Box<ServeArgs>),
    /// Create the database if missing and apply migrations, then exit.
    Migrate {
        /// Then distribute every tenant table by tenant_id, co-located (a
        /// Citus coordinator only; refused where the citus extension is not
        /// installed). Idempotent.
        #[arg(long)]
        distribute: bool,
        #[command(flatten)]
        base: BaseArgs,
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
        /// scope claim: space-separated scopes, e.g. "crm:deals:read crm:purge" (README "Authorization"; erasure
        /// needs it; without the claim a token may do everything else).
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        jwt: JwtArgs,
    },
    /// Check an erasure: look for values of an erased record (its email,
    /// its name, its id) in every table of the database and, with
    /// --nats-url, every message the relay published for the tenant. Prints
    /// each place that still holds one and exits 1; exits 0 when none does.
    PurgeCheck {
        /// The tenant whose rows and messages are searched.
        #[arg(long)]
        tenant: String,
        /// NATS server of the JetStream relay, to search its stream too.
        #[arg(long, env = "CRM_NATS_URL")]
        nats_url: Option<String>,
        /// The values to look for (exact text, case-sensitive); `-` reads
        /// them from stdin, one per line, keeping them out of the process
        /// list.
        #[arg(required = true)]
        values: Vec<String>,
        #[command(flatten)]
        base: BaseArgs,
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
    /// Print the scope each method needs (the README's table, as Markdown),
    /// read from the methods' required_scope option, then exit.
    Scopes,
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
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Some(Command::Descriptor { out }) => write_descriptor(out.as_deref()),
        Some(Command::Scopes) => {
            print!("{}", crate::auth::scope::markdown());
            Ok(())
        }
        Some(Command::Serve(args)) => {
            let given = matches
                .subcommand_matches("serve")
                .map_or_else(|| given_addresses(&matches), given_addresses);
            serve(*args, given).await
        }
        None => {
            let given = given_addresses(&matches);
            serve(cli.serve, given).await
        }
        Some(Command::Migrate { distribute, base }) => {
            let _log = init_logging(base.log_format);
            db::create_database_if_missing(&base.database_url).await?;
            let roles = db::migrate(&base.database_url).await?;
            // What an operator needs for CRM_APP_DATABASE_URL.
            tracing::info!(
                app_role = roles.app(),
                integration_role = roles.integration(),
                "migrations applied"
            );
            if distribute {
                let done = db::distribute::distribute(&base.database_url).await?;
                tracing::info!(
                    distributed = ?done.distributed,
                    already = ?done.already,
                    "tables distributed by tenant_id"
                );
            }
            Ok(())
        }
        Some(Command::PurgeCheck {
            tenant,
            nats_url,
            values,
            base,
        }) => {
            let _log = init_logging(base.log_format);
            let values = if values == ["-"] {
                std::io::read_to_string(std::io::stdin())?
                    .lines()
                    .map(str::to_owned)
                    .filter(|v| !v.is_empty())
                    .collect()
            } else {
                values
            };
            let (found, places) = crate::records::erasure::survivors(
                &base.database_url,
                &tenant,
                &values,
                nats_url.as_deref(),
            )
            .await?;
            if found.is_empty() {
                println!(
                    "purge-check: none of the {} value(s) is held anywhere ({places} tables and streams searched)",
                    values.len()
                );
                return Ok(());
            }
            for s in &found {
                println!(
                    "{}: {} holds {:?} ({} rows)",
                    tenant, s.place, s.value, s.count
                );
            }
            anyhow::bail!(
                "purge-check: {} place(s) still hold an erased value",
                found.len()
            )
        }
        Some(Command::Token {
            tenant,
            sub,
            app,
            scope,
            ttl,
            jwt,
        }) => {
            let secret = match &jwt.secret {
                Some(s) => s.clone(),
                None => {
                    eprintln!(
                        "crm token: CRM_JWT_SECRET is not set; signing with the development secret (accepted only by `crm serve --dev`)"
                    );
                    DEV_SECRET.to_owned()
                }
            };
            let token = mint_scoped(
                secret.as_bytes(),
                &tenant,
                &sub,
                app.as_deref(),
                scope.as_deref(),
                ttl.as_secs(),
                jwt.issuer.as_deref(),
                jwt.audience.as_deref(),
            )?;
            println!("{token}");
            Ok(())
        }
    }
}

/// Which listen addresses the command line or the environment gave
/// (gRPC, HTTP): development mode binds loopback for the others.
fn given_addresses(m: &clap::ArgMatches) -> (bool, bool) {
    let given = |id: &str| {
        m.value_source(id)
            .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue)
    };
    (given("grpc_addr"), given("http_addr"))
}

/// `crm serve`.
async fn serve(args: ServeArgs, (grpc_given, http_given): (bool, bool)) -> anyhow::Result<()> {
    let ServeArgs {
        dev,
        dev_postgres,
        mut config,
    } = args;
    let _log = init_logging(config.base.log_format);
    let mut private = None;
    if dev {
        let loopback = std::net::Ipv4Addr::LOCALHOST.into();
        if !grpc_given {
            config.grpc_addr.set_ip(loopback);
        }
        if !http_given {
            config.http_addr.set_ip(loopback);
        }
        private = dev_database(dev_postgres, &mut config)?;
    }
    let app = Application::build(&config, dev).await?;
    if config.base.log_format == LogFormat::Text {
        eprintln!(
            "{}",
            banner(
                &app,
                &config,
                dev,
                private.as_ref().map(|c| c.dir.as_path())
            )
        );
    }
    app.run(shutdown_signal()).await
}

/// In development mode, points `config` at a private cluster when
/// `mode` asks for one (returned; it stops when crm exits).
fn dev_database(
    mode: DevPostgres,
    config: &mut Config,
) -> anyhow::Result<Option<db::embedded::Cluster>> {
    let url_given = config.base.database_url != crate::config::DEFAULT_DATABASE_URL;
    let wanted = match mode {
        DevPostgres::Never => false,
        DevPostgres::Private => true,
        DevPostgres::Auto => !url_given && !db::embedded::answers(db::embedded::LOCAL_SERVER),
    };
    if !wanted {
        return Ok(None);
    }
    let dir = db::embedded::dev_dir();
    if mode == DevPostgres::Auto {
        tracing::info!(
            dir = %dir.display(),
            "no PostgreSQL answers at {} and DATABASE_URL is not set: starting a private cluster",
            db::embedded::LOCAL_SERVER
        );
    } else {
        tracing::info!(dir = %dir.display(), "starting a private PostgreSQL cluster");
    }
    let cluster = db::embedded::start(&dir, true, db::embedded::LOCAL_SERVER)?;
    config.base.database_url = format!("{}/crm", cluster.base_url);
    Ok(Some(cluster))
}

/// What `crm serve` prints once it listens: where to reach it, and in
/// development mode how to get a token.
fn banner(app: &Application, config: &Config, dev: bool, private: Option<&Path>) -> String {
    let (grpc, http) = (app.grpc_addr(), app.http_addr());
    // Where a client on this machine reaches an all-interfaces listener.
    let local = |a: std::net::SocketAddr| {
        if a.ip().is_unspecified() {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port())
        } else {
            a
        }
    };
    let database = match private {
        Some(dir) => format!(
            "{} (a private cluster in {}; delete it to start afresh)",
            db::setup::redacted(&config.base.database_url),
            dir.display()
        ),
        None => db::setup::redacted(&config.base.database_url),
    };
    let mut out = format!(
        "\ncrm {} is serving\n  gRPC      {grpc}  (grpcurl -plaintext {} list)\n  \
         REST      http://{}/api/v1/crm/...\n  explorer  http://{}/explorer\n  \
         OpenAPI   http://{}/openapi.json\n  database  {database}\n",
        env!("CARGO_PKG_VERSION"),
        local(grpc),
        local(http),
        local(http),
        local(http),
    );
    if dev {
        let me = std::env::args().next().unwrap_or_else(|| "crm".into());
        out.push_str(&format!(
            "  token     {me} token --tenant acme --sub ada   \
             (development mode: tokens signed with the built-in secret are accepted)\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("crm").chain(args.iter().copied()))
    }

    #[test]
    fn dev_mode_without_the_serve_command() {
        let cli = parse(&["--dev"]).unwrap();
        assert!(cli.command.is_none() && cli.serve.dev);
        let cli = parse(&["serve", "--dev", "--dev-postgres", "private"]).unwrap();
        let Some(Command::Serve(args)) = cli.command else {
            panic!("serve")
        };
        assert!(args.dev && args.dev_postgres == DevPostgres::Private);
        // The private cluster is a development-mode setting only.
        assert!(parse(&["--dev-postgres", "private"]).is_err());
    }

    #[test]
    fn each_command_lists_only_its_own_options() {
        let help = |name: &str| {
            Cli::command()
                .find_subcommand_mut(name)
                .unwrap()
                .render_long_help()
                .to_string()
        };
        let token = help("token");
        assert!(token.contains("--tenant") && token.contains("--jwt-secret"));
        for server_only in ["--grpc-addr", "--database-url", "--db-pool-size", "--dev"] {
            assert!(
                !token.contains(server_only),
                "token --help lists {server_only}"
            );
        }
        let migrate = help("migrate");
        assert!(migrate.contains("--database-url") && !migrate.contains("--grpc-addr"));
        assert!(help("serve").contains("--grpc-addr"));
    }

    #[test]
    fn development_mode_binds_loopback_unless_an_address_is_given() {
        let m = Cli::command()
            .try_get_matches_from(["crm", "--dev", "--http-addr", "0.0.0.0:8080"])
            .unwrap();
        assert_eq!(given_addresses(&m), (false, true));
    }
}
