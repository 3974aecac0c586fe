//! Configuration: defaults < TOML file (`--config`) < environment (`AETHER_*`) < flags.
//! Every problem is reported with the setting's name and where it can be set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// The `aether` command line.
#[derive(Debug, Parser)]
#[command(
    name = "aether",
    version,
    about = "Aether: a self-hosted, multi-tenant AI API gateway"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Settings every subcommand understands.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// A TOML file with the same settings as the flags (snake_case keys).
    #[arg(long, global = true, env = "AETHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite database, generated secrets).
    #[arg(long, global = true, env = "AETHER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`; default `sqlite://<data dir>/aether.db`.
    #[arg(long, global = true, env = "AETHER_DATABASE_URL")]
    pub database_url: Option<String>,
    /// `local` generates missing secrets into the data directory; `production` requires them.
    #[arg(long, global = true, env = "AETHER_MODE")]
    pub mode: Option<Mode>,
    /// Redis for cluster mode (optional). One-shot commands use it to announce their changes
    /// to the running instances.
    #[arg(long, global = true, env = "AETHER_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel of this deployment (default `aether:`), so
    /// several deployments can share one Redis.
    #[arg(long, global = true, env = "AETHER_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway and the management API.
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage users' gateway keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Import a provider/model configuration (original Aether export format v1.0).
    Import {
        #[arg(long)]
        file: PathBuf,
        /// What to do with records that already exist.
        #[arg(long, default_value = "skip", value_parser = ["skip", "overwrite", "error"])]
        merge_mode: String,
    },
    /// Export the provider/model configuration to stdout (format v1.0).
    Export {
        /// Write upstream keys in clear (otherwise they are masked and cannot be re-imported).
        #[arg(long)]
        include_secrets: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Write a consistent copy of the SQLite database (`VACUUM INTO`).
    Backup {
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the background jobs once, now: what the cluster's leader runs every minute
    /// (expired keys, stale records, stats rollups, retention, quota period resets). Every job
    /// is idempotent, so this is safe next to running instances.
    Jobs,
    /// Rebuild the hourly and daily usage rollups of the last N days from the usage records
    /// (after fixing records by hand, say). Only records still kept are counted: rebuilding
    /// days older than `retention_days_usage` would empty them.
    Rollup {
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long, default_value = "user", value_parser = ["admin", "user"])]
        role: String,
        /// Quota in USD (omit for the `default_user_quota_usd` setting; `unlimited` for none).
        #[arg(long)]
        quota_usd: Option<String>,
        #[arg(long)]
        username: Option<String>,
    },
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key for a user and print it (the only time it is shown).
    Create {
        /// The user's email.
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "default")]
        name: String,
    },
    List {
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8084).
    #[arg(long, env = "AETHER_LISTEN")]
    pub listen: Option<String>,
    /// How many reverse proxies in front of Aether append to X-Forwarded-For (default 0: use
    /// the TCP peer address).
    #[arg(long, env = "AETHER_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<usize>,
    /// `text` or `json` logs.
    #[arg(long, env = "AETHER_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Seconds to let in-flight requests finish on shutdown (default 30).
    #[arg(long, env = "AETHER_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Local,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The TOML file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    pub mode: Option<Mode>,
    pub trusted_proxies: Option<usize>,
    pub log_format: Option<LogFormat>,
    pub shutdown_timeout: Option<u64>,
    pub jwt_secret: Option<String>,
    pub encryption_key: Option<String>,
    pub previous_encryption_keys: Option<Vec<String>>,
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
}

/// Secrets given explicitly (environment or file); generated ones come from the data dir.
#[derive(Clone, Default)]
pub struct SecretInputs {
    pub jwt_secret: Option<String>,
    pub encryption_key: Option<String>,
    pub previous_encryption_keys: Vec<String>,
}

impl std::fmt::Debug for SecretInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretInputs")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "***"))
            .field(
                "encryption_key",
                &self.encryption_key.as_ref().map(|_| "***"),
            )
            .field(
                "previous_encryption_keys",
                &self.previous_encryption_keys.len(),
            )
            .finish()
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub redis_url: Option<String>,
    /// Starts every Redis key, the change channel and the leader key: deployments with
    /// different prefixes share nothing in one Redis.
    pub redis_prefix: String,
    pub mode: Mode,
    pub trusted_proxies: usize,
    pub log_format: LogFormat,
    pub shutdown_timeout_secs: u64,
    pub secrets: SecretInputs,
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
}

/// The Redis prefix when none is set.
pub const DEFAULT_REDIS_PREFIX: &str = "aether:";

/// A prefix is 1 to 64 visible ASCII characters: it is pasted into key and channel names.
fn valid_redis_prefix(p: &str) -> bool {
    (1..=64).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_graphic())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Config {
    /// Resolves the configuration from flags/env (already merged by clap) and the file.
    pub fn resolve(global: &GlobalArgs, serve: &ServeArgs) -> Result<Self> {
        let file = match &global.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let listen_text = serve
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8084".to_string());
        let listen: SocketAddr = listen_text.parse().with_context(|| {
            format!("setting `listen` (--listen, AETHER_LISTEN, `listen` in the config file): `{listen_text}` is not an address like 127.0.0.1:8084")
        })?;
        let data_dir = global
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let database_url = global
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("aether.db").display()));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres:")
            || database_url.starts_with("postgresql:"))
        {
            bail!(
                "setting `database_url` (--database-url, AETHER_DATABASE_URL, `database_url` in the config file): must start with `sqlite:` or `postgres:`"
            );
        }
        let redis_url = global.redis_url.clone().or(file.redis_url);
        if let Some(r) = &redis_url
            && !(r.starts_with("redis://") || r.starts_with("rediss://"))
        {
            bail!(
                "setting `redis_url` (--redis-url, AETHER_REDIS_URL, `redis_url` in the config file): must start with `redis://` or `rediss://`"
            );
        }
        let redis_prefix = global
            .redis_prefix
            .clone()
            .or(file.redis_prefix)
            .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_string());
        if !valid_redis_prefix(&redis_prefix) {
            bail!(
                "setting `redis_prefix` (--redis-prefix, AETHER_REDIS_PREFIX, `redis_prefix` in the config file): 1 to 64 visible ASCII characters without spaces, e.g. `aether-staging:`"
            );
        }
        let shutdown_timeout_secs = serve
            .shutdown_timeout
            .or(file.shutdown_timeout)
            .unwrap_or(30);
        if shutdown_timeout_secs > 3600 {
            bail!(
                "setting `shutdown_timeout` (--shutdown-timeout, AETHER_SHUTDOWN_TIMEOUT): at most 3600 seconds"
            );
        }
        let previous = env("AETHER_PREVIOUS_ENCRYPTION_KEYS")
            .map(|s| {
                s.split(',')
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect()
            })
            .or(file.previous_encryption_keys)
            .unwrap_or_default();
        Ok(Self {
            listen,
            data_dir,
            database_url,
            redis_url,
            redis_prefix,
            mode: global.mode.or(file.mode).unwrap_or_default(),
            trusted_proxies: serve.trusted_proxies.or(file.trusted_proxies).unwrap_or(0),
            log_format: serve.log_format.or(file.log_format).unwrap_or_default(),
            shutdown_timeout_secs,
            secrets: SecretInputs {
                jwt_secret: env("AETHER_JWT_SECRET").or(file.jwt_secret),
                encryption_key: env("AETHER_ENCRYPTION_KEY").or(file.encryption_key),
                previous_encryption_keys: previous,
            },
            admin_email: env("AETHER_ADMIN_EMAIL").or(file.admin_email),
            admin_password: env("AETHER_ADMIN_PASSWORD").or(file.admin_password),
        })
    }

    #[must_use]
    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

fn load_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("setting `config`: cannot read {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aether-cfg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("aether.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn flags_beat_the_file_and_defaults_fill_the_rest() {
        let p = write(
            "a",
            "listen = \"0.0.0.0:9000\"\ndata_dir = \"/srv/aether\"\n",
        );
        let g = GlobalArgs {
            config: Some(p),
            ..Default::default()
        };
        let c = Config::resolve(&g, &ServeArgs::default()).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.database_url, "sqlite:///srv/aether/aether.db");
        let s = ServeArgs {
            listen: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        assert_eq!(Config::resolve(&g, &s).unwrap().listen.port(), 1);
        let d = Config::resolve(&GlobalArgs::default(), &ServeArgs::default()).unwrap();
        assert_eq!(d.listen.to_string(), "127.0.0.1:8084");
        assert_eq!(d.shutdown_timeout_secs, 30);
    }

    #[test]
    fn errors_name_the_setting() {
        let s = ServeArgs {
            listen: Some("nowhere".into()),
            ..Default::default()
        };
        let e = Config::resolve(&GlobalArgs::default(), &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`listen`") && e.contains("AETHER_LISTEN"), "{e}");
        let g = GlobalArgs {
            database_url: Some("mysql://x".into()),
            ..Default::default()
        };
        let e = Config::resolve(&g, &ServeArgs::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`database_url`"), "{e}");
        let p = write("b", "listen = \"127.0.0.1:1\"\nlisten_port = 3\n");
        let g = GlobalArgs {
            config: Some(p),
            ..Default::default()
        };
        let e = Config::resolve(&g, &ServeArgs::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_port"), "unknown keys are named: {e}");
    }

    /// `redis_prefix` is plumbed like `redis_url`: file < flag (clap merges the environment
    /// into the flag), `aether:` by default, checked with the setting named.
    #[test]
    fn the_redis_prefix_comes_from_the_file_or_the_flag() {
        let d = Config::resolve(&GlobalArgs::default(), &ServeArgs::default()).unwrap();
        assert_eq!(d.redis_prefix, DEFAULT_REDIS_PREFIX);
        let g = GlobalArgs {
            config: Some(write("prefix", "redis_prefix = \"staging:\"\n")),
            ..Default::default()
        };
        let c = Config::resolve(&g, &ServeArgs::default()).unwrap();
        assert_eq!(c.redis_prefix, "staging:");
        let cli = Cli::try_parse_from(["aether", "serve", "--redis-prefix", "blue:"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve");
        };
        let g = GlobalArgs {
            redis_prefix: cli.global.redis_prefix,
            ..g
        };
        assert_eq!(Config::resolve(&g, &s).unwrap().redis_prefix, "blue:");
        for bad in ["", "two words", &"x".repeat(65)] {
            let g = GlobalArgs {
                redis_prefix: Some(bad.to_string()),
                ..Default::default()
            };
            let e = Config::resolve(&g, &ServeArgs::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("`redis_prefix`") && e.contains("AETHER_REDIS_PREFIX"),
                "{e}"
            );
        }
    }
}
