//! The subcommands. One-shot commands open the store directly and act through the same
//! services as the API (as the local operator), so every rule and audit entry is the same.

#![allow(clippy::print_stdout)] // a CLI prints its results

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aether_admin::service::config_io::{ExportV1, MergeMode};
use aether_admin::service::keys::NewKey;
use aether_admin::service::users::NewUser;
use aether_admin::{Actor, Admin, AdminConfig, ChangeNotifier};
use aether_domain::Usd;
use aether_domain::entities::{QuotaPeriod, Role};
use aether_store::{ApiKeyFilter, Page, UserFilter};
use anyhow::{Context, Result, bail};
use tracing_subscriber::EnvFilter;

use crate::app::{App, open_store};
use crate::config::{Cli, Command, Config, KeyCommand, LogFormat, ServeArgs, UserCommand};
use crate::secrets;

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(Config::resolve(&cli.global, &args)?).await,
        cmd => {
            // The jobs report what they did at info level.
            let level = if matches!(cmd, Command::Jobs) {
                "info"
            } else {
                "warn"
            };
            init_tracing(LogFormat::Text, level);
            let cfg = Config::resolve(&cli.global, &ServeArgs::default())?;
            one_shot(&cfg, cmd).await
        }
    }
}

fn init_tracing(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_env("AETHER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn serve(cfg: Config) -> Result<()> {
    init_tracing(cfg.log_format, "info");
    let shutdown = shutdown_signal()?;
    let app = App::build(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("setting `listen`: cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %aether_store::db::redact_url(&cfg.database_url), "aether is listening");
    println!("aether listening on http://{addr}");
    app.serve(
        listener,
        shutdown,
        Duration::from_secs(cfg.shutdown_timeout_secs),
    )
    .await
}

/// A future resolving on SIGINT or SIGTERM. The handlers are installed before this returns,
/// so a signal that arrives right after start-up is never lost to the default action.
pub fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn one_shot(cfg: &Config, cmd: Command) -> Result<()> {
    let store = open_store(cfg).await?;
    if matches!(cmd, Command::Migrate) {
        println!("migrations applied");
        return Ok(());
    }
    let secrets = secrets::load(cfg)?;
    let changes = Arc::new(Changes::default());
    let admin = Admin::new(
        store,
        secrets.cipher,
        AdminConfig::new(secrets.jwt_secret),
        changes.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let me = Actor::cli();
    let api = |e: aether_admin::ApiError| anyhow::anyhow!("{e}");
    match cmd {
        Command::Serve(_) | Command::Migrate => {}
        Command::User(UserCommand::Create {
            email,
            password,
            role,
            quota_usd,
            username,
        }) => {
            let quota = match quota_usd.as_deref() {
                None => None,
                Some("unlimited" | "none") => Some(None),
                Some(q) => Some(Some(
                    q.parse::<Usd>()
                        .map_err(|e| anyhow::anyhow!("--quota-usd: {e}"))?,
                )),
            };
            let u = admin
                .create_user(
                    &me,
                    NewUser {
                        email,
                        username,
                        password,
                        role: role.parse::<Role>().map_err(|e| anyhow::anyhow!(e))?,
                        quota_usd: quota,
                        quota_period: QuotaPeriod::None,
                        allowed_providers: None,
                        allowed_api_formats: None,
                        allowed_models: None,
                        is_active: true,
                    },
                )
                .await
                .map_err(api)?;
            println!("created {} user {} ({})", u.role, u.email, u.id);
        }
        Command::User(UserCommand::List) => {
            let users = admin
                .list_users(&UserFilter::default(), Page::all())
                .await
                .map_err(api)?;
            println!(
                "{:<36}  {:<32}  {:<6}  {:<6}  {:>12}  {:>12}",
                "id", "email", "role", "active", "quota_usd", "used_usd"
            );
            for u in users.items {
                let quota = u
                    .quota_usd
                    .map_or_else(|| "unlimited".to_string(), |q| q.to_string());
                println!(
                    "{:<36}  {:<32}  {:<6}  {:<6}  {:>12}  {:>12}",
                    u.id, u.email, u.role, u.is_active, quota, u.used_usd
                );
            }
        }
        Command::Key(KeyCommand::Create { user, name }) => {
            let u = find_user(&admin, &user).await?;
            let k = admin
                .create_user_key(
                    &me,
                    u.id,
                    NewKey {
                        name,
                        ..Default::default()
                    },
                )
                .await
                .map_err(api)?;
            eprintln!(
                "created key `{}` for {} — it is shown only this once:",
                k.api_key.name, u.email
            );
            println!("{}", k.key);
        }
        Command::Key(KeyCommand::List { user }) => {
            let u = find_user(&admin, &user).await?;
            let keys = admin
                .list_keys(
                    &ApiKeyFilter {
                        user_id: Some(u.id),
                        ..Default::default()
                    },
                    Page::all(),
                )
                .await
                .map_err(api)?;
            println!(
                "{:<36}  {:<20}  {:<14}  {:<6}  {:>8}  {:>12}",
                "id", "name", "key", "active", "requests", "cost_usd"
            );
            for k in keys.items {
                println!(
                    "{:<36}  {:<20}  {:<14}  {:<6}  {:>8}  {:>12}",
                    k.id, k.name, k.key_display, k.is_active, k.total_requests, k.total_cost_usd
                );
            }
        }
        Command::Import { file, merge_mode } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let doc: ExportV1 = serde_json::from_str(&text).with_context(|| {
                format!("{} is not an Aether configuration export", file.display())
            })?;
            let mode = MergeMode::parse(Some(&merge_mode)).map_err(api)?;
            let stats = admin.import_config(&me, doc, mode).await.map_err(api)?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
        }
        Command::Export { include_secrets } => {
            let doc = admin
                .export_config(&me, include_secrets)
                .await
                .map_err(api)?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Command::Backup { out } => {
            if !cfg.is_sqlite() {
                bail!(
                    "`aether backup` copies the SQLite database; back up PostgreSQL with pg_dump"
                );
            }
            if out.exists() {
                bail!("{} already exists", out.display());
            }
            let path = out
                .to_str()
                .context("the backup path must be valid UTF-8")?;
            admin.store().backup_to(path).await?;
            println!("wrote {}", out.display());
        }
        Command::Jobs => {
            crate::leader::run_jobs(&admin, admin.store()).await;
            println!("background jobs ran");
        }
        Command::Rollup { days } => {
            let store = admin.store();
            let now = aether_domain::Timestamp::now();
            let from = now.plus_secs(-i64::from(days) * 86_400);
            // In steps of two days, so no one transaction holds the tables for long.
            let (mut t, mut rows) = (from, 0);
            while t < now {
                let end = t.plus_secs(48 * 3600).min(now);
                rows += store.rollup_hours(t, end).await?;
                t = end;
            }
            rows += store.rollup_days(from, now).await?;
            println!("rebuilt the rollups of the last {days} days ({rows} rows)");
        }
    }
    // Running instances learn of the change at once rather than at their next reconcile.
    if changes.0.load(Ordering::SeqCst) {
        let told = match crate::propagate::Propagator::from_config(cfg) {
            Ok(p) => p.announce_once().await,
            Err(e) => Err(e),
        };
        if let Err(e) = told {
            eprintln!(
                "warning: could not announce the change to running instances ({e:#}); they pick it up within 30 s"
            );
        }
    }
    Ok(())
}

/// Remembers that a command changed configuration (users, keys, providers, …).
#[derive(Default)]
struct Changes(AtomicBool);

#[async_trait::async_trait]
impl ChangeNotifier for Changes {
    async fn config_changed(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn find_user(admin: &Admin, email: &str) -> Result<aether_domain::entities::User> {
    admin
        .store()
        .find_user_by_login(email)
        .await?
        .with_context(|| format!("no user `{email}`"))
}
