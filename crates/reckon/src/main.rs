//! `reckon`: the server and its admin commands.
//!
//! `reckon serve` runs the HTTP service. The admin commands (`account`,
//! `grant`, `usage`, `migrate`) open the database directly and go through
//! the same executor and core as the API, so they are safe to run while a
//! server is using the same SQLite file.

mod bench;

/// mimalloc: measured faster than glibc malloc for the writer's allocation
/// pattern (many short-lived states and strings per batch); see docs/performance-log.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use reckon_core::{
    Command, CreateAccount, GrantCmd, GrantExpiry, OveragePolicy, Timestamp, Unit, UsageCmd,
};
use reckon_server::config::{self, Config, Database};
use reckon_server::views::AccountView;
use reckon_server::wire;
use reckon_store::{Clock, Request, Store, SystemClock};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "reckon",
    version,
    about = "Reckon: usage metering, budgets, credit holds and quotas on one ledger"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP service.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Create or show accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Grant value to an account.
    Grant(GrantArgs),
    /// Record usage against an account.
    Usage(UsageArgs),
    /// Drive load at a server and report throughput, latency and memory.
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct DbArgs {
    /// Database URL: sqlite:PATH or postgres://USER@HOST/DB [env: RECKON_DATABASE_URL, APP_DB_PATH, APP_DATA_DIR]
    #[arg(long)]
    database: Option<String>,
}

impl DbArgs {
    fn database(&self) -> Result<Database> {
        let url = self
            .database
            .clone()
            .unwrap_or_else(config::default_database);
        Database::parse(&url).map_err(anyhow::Error::msg)
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on [env: RECKON_LISTEN, or PORT for 0.0.0.0:$PORT] [default: 127.0.0.1:8080]
    #[arg(long)]
    listen: Option<String>,
    #[command(flatten)]
    db: DbArgs,
    /// Allowed CORS origin (repeat, or `*`) [env: RECKON_CORS_ORIGINS, comma-separated]
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// How long idempotency keys are remembered.
    #[arg(
        long,
        env = "RECKON_IDEMPOTENCY_RETENTION_SECS",
        default_value_t = 86_400
    )]
    idempotency_retention_secs: u64,
    /// How often the scheduler sweeps expiries.
    #[arg(long, env = "RECKON_SWEEP_INTERVAL_SECS", default_value_t = 5)]
    sweep_interval_secs: u64,
    /// TTL of a hold that names none.
    #[arg(long, env = "RECKON_HOLD_TTL_DEFAULT_SECS", default_value_t = 300)]
    hold_ttl_default_secs: u64,
    /// Longest TTL a hold may ask for.
    #[arg(long, env = "RECKON_HOLD_TTL_MAX_SECS", default_value_t = 86_400)]
    hold_ttl_max_secs: u64,
    /// Threads serving HTTP [default: one per core]. Fewer when several
    /// nodes share a machine's cores.
    #[arg(long, env = "RECKON_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// SQLite: MiB of memory for accounts the writer keeps in compact form
    /// (~85 bytes each with one grant); 0 keeps none. Its index takes up to
    /// ~34 MB more.
    #[arg(
        long,
        env = "RECKON_SQLITE_CACHE_MIB",
        default_value_t = (reckon_store::sqlite::COMPACT_BYTES_MAX >> 20) as u16,
        value_parser = clap::value_parser!(u16).range(0..=SQLITE_CACHE_MIB_MAX)
    )]
    sqlite_cache_mib: u16,
}

/// The compact tier addresses its arena with 32-bit offsets.
const SQLITE_CACHE_MIB_MAX: i64 = 4_095;

#[derive(Subcommand)]
enum AccountCmd {
    /// Create an account.
    Create {
        id: String,
        /// Unit of the balance (credits, MB, USD, calls).
        #[arg(long, default_value = "credits")]
        unit: String,
        /// Expiry, RFC 3339.
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Show an account, its balance and grants.
    Show {
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Args)]
struct GrantArgs {
    account: String,
    /// Amount, decimal (up to 6 places).
    amount: String,
    /// The grant expires this many seconds from now.
    #[arg(long)]
    valid_for_secs: Option<u64>,
    #[arg(long, default_value = "manual")]
    source: String,
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Args)]
struct UsageArgs {
    account: String,
    amount: String,
    #[arg(long)]
    idempotency_key: Option<String>,
    #[command(flatten)]
    db: DbArgs,
}

fn main() -> std::process::ExitCode {
    // Errors are for operators: one clear line, no backtrace.
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Our error types put their
/// source's text in their own message (`"...: {0}"`), so a cause the line
/// already ends with is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(cli: Cli) -> Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Cmd::Serve(ServeArgs {
        worker_threads: Some(n),
        ..
    }) = &cli.command
    {
        runtime.worker_threads(usize::from(*n));
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Cmd::Serve(args) => serve(args).await,
            Cmd::Bench(args) => bench::run(args).await,
            Cmd::Migrate(db) => migrate(db).await,
            Cmd::Account(AccountCmd::Create {
                id,
                unit,
                expires_at,
                db,
            }) => {
                let expires_at = expires_at.map(|t| parse_time(&t)).transpose()?;
                let command = Command::CreateAccount(CreateAccount {
                    id: parse_id(&id)?,
                    unit: Unit::parse(&unit).map_err(|e| anyhow::anyhow!("unit {e}"))?,
                    expires_at,
                    timezone: None,
                    metadata: "{}".into(),
                    overage: OveragePolicy::Reject,
                });
                submit(&db, Request::new(command)).await?;
                show(&db, &id).await
            }
            Cmd::Account(AccountCmd::Show { id, db }) => show(&db, &id).await,
            Cmd::Grant(g) => {
                let command = Command::Grant(GrantCmd {
                    account: parse_id(&g.account)?,
                    grant_id: uuid_v4(),
                    amount: parse_amount(&g.amount)?,
                    expiry: g
                        .valid_for_secs
                        .map_or(GrantExpiry::Never, GrantExpiry::AfterSecs),
                    source: g.source,
                });
                submit(&g.db, keyed(command, g.idempotency_key)?).await?;
                show(&g.db, &g.account).await
            }
            Cmd::Usage(u) => {
                let command = Command::Usage(UsageCmd {
                    account: parse_id(&u.account)?,
                    amount: parse_amount(&u.amount)?,
                });
                submit(&u.db, keyed(command, u.idempotency_key)?).await?;
                show(&u.db, &u.account).await
            }
        }
    })
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RECKON_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if config::env("RECKON_LOG_FORMAT").as_deref() == Some("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    init_logging();
    let listen = match args.listen {
        Some(l) => l
            .parse()
            .with_context(|| format!("--listen {l} is not an address such as 127.0.0.1:8080"))?,
        None => config::default_listen().map_err(anyhow::Error::msg)?,
    };
    let mut cors_origins = args.cors_origins;
    if let Some(list) = config::env("RECKON_CORS_ORIGINS") {
        cors_origins.extend(
            list.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        );
    }
    let config = Config {
        listen,
        database: args.db.database()?,
        service_keys: config::keys_from_env(config::SERVICE_KEY_VARS),
        admin_keys: config::keys_from_env(config::ADMIN_KEY_VARS),
        cors_origins,
        idempotency_retention_secs: args.idempotency_retention_secs,
        sweep_interval_secs: args.sweep_interval_secs,
        hold_ttl_default_secs: args.hold_ttl_default_secs,
        hold_ttl_max_secs: args.hold_ttl_max_secs,
        sqlite_compact_cache_bytes: usize::from(args.sqlite_cache_mib) << 20,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    reckon_server::startup::run(config, Arc::new(SystemClock), listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}

async fn migrate(db: DbArgs) -> Result<()> {
    let database = db.database()?;
    let n = reckon_server::startup::migrate(&database).await?;
    match database {
        Database::Sqlite(path) => println!("{}: {n} migration(s) applied", path.display()),
        Database::Postgres(url) => println!("{url:?}: {n} migration(s) applied"),
    }
    Ok(())
}

async fn open(db: &DbArgs) -> Result<Arc<dyn Store>> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(reckon_server::startup::open_store(&db.database()?, clock).await?)
}

async fn submit(db: &DbArgs, request: Request) -> Result<()> {
    let store = open(db).await?;
    store
        .submit(request)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

async fn show(db: &DbArgs, id: &str) -> Result<()> {
    let store = open(db).await?;
    let Some(state) = store.account(&parse_id(id)?).await? else {
        bail!("account_not_found: no account {id}")
    };
    let view = AccountView::at(&state, SystemClock.now());
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
}

fn keyed(command: Command, key: Option<String>) -> Result<Request> {
    let mut r = Request::new(command);
    r.idempotency_key = key
        .map(|k| reckon_store::IdempotencyKey::parse(&k).map_err(anyhow::Error::msg))
        .transpose()?;
    Ok(r)
}

fn parse_id(text: &str) -> Result<reckon_core::AccountId> {
    reckon_core::AccountId::parse(text).map_err(|e| anyhow::anyhow!("account id {e}"))
}

fn parse_amount(text: &str) -> Result<reckon_core::Amount> {
    reckon_core::Amount::parse(text).map_err(|e| anyhow::anyhow!("amount: {e}"))
}

fn parse_time(text: &str) -> Result<Timestamp> {
    wire::timestamp(&serde_json::Value::String(text.to_owned()), "expires_at")
        .map_err(|e| anyhow::anyhow!("{}", e.message))
}

fn uuid_v4() -> String {
    reckon_server::new_id()
}
