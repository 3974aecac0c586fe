//! The real `aether` binary: first start, secrets on disk, the CLI subcommands on SQLite and
//! PostgreSQL, configuration errors, graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod proc_kit;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use aether_store::testing::TestStore;
use aether_store::{Backend, UserRepo as _};

use proc_kit::{aether, tmpdir};

/// Runs a one-shot command; returns stdout, panicking with stderr on failure.
fn run(dir: &Path, db: Option<&str>, args: &[&str]) -> String {
    let mut c = aether();
    c.arg("--data-dir").arg(dir);
    if let Some(db) = db {
        c.arg("--database-url").arg(db);
    }
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "aether {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn start_server(dir: &Path, env: &[(&str, &str)]) -> proc_kit::Server {
    proc_kit::start(dir, &[], env)
}

#[tokio::test]
async fn first_start_creates_admin_and_secrets_once() {
    let dir = tmpdir("first");
    let s = start_server(&dir, &[]);
    let banner = s.banner.join("\n");
    assert!(banner.contains("admin@aether.local"), "{banner}");
    let password = s
        .banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .expect("generated password printed")
        .to_string();
    let client = reqwest::Client::new();
    let r = client.get(format!("{}/ready", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{}/api/auth/login", s.url))
        .json(&serde_json::json!({ "email": "admin@aether.local", "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the printed password works");
    s.stop();

    for f in ["jwt.key", "encryption.key"] {
        let mode = std::fs::metadata(dir.join("secrets").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let key_before = std::fs::read_to_string(dir.join("secrets/encryption.key")).unwrap();
    let s = start_server(&dir, &[]);
    assert!(
        !s.banner.join("\n").contains("password"),
        "the password is printed only once"
    );
    s.stop();
    assert_eq!(
        std::fs::read_to_string(dir.join("secrets/encryption.key")).unwrap(),
        key_before,
        "secrets persist"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn admin_from_environment() {
    let dir = tmpdir("env");
    let s = start_server(
        &dir,
        &[
            ("AETHER_ADMIN_EMAIL", "ops@example.com"),
            ("AETHER_ADMIN_PASSWORD", "from-the-env-123"),
        ],
    );
    assert!(!s.banner.join("\n").contains("password:"));
    let r = reqwest::Client::new()
        .post(format!("{}/api/auth/login", s.url))
        .json(&serde_json::json!({ "email": "ops@example.com", "password": "from-the-env-123" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop();
    let _ = std::fs::remove_dir_all(dir);
}

async fn cli_round(backend: Backend) {
    let dir = tmpdir("cmds");
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestStore::new(Backend::Postgres).await.unwrap()),
    };
    let url = db.as_ref().map(|d| d.url.as_str());
    let out = run(
        &dir,
        url,
        &[
            "user",
            "create",
            "--email",
            "Dev@Example.com",
            "--password",
            "dev-password-1",
            "--quota-usd",
            "12.5",
        ],
    );
    assert!(out.contains("created user user dev@example.com"), "{out}");
    run(
        &dir,
        url,
        &[
            "user",
            "create",
            "--email",
            "boss@example.com",
            "--password",
            "boss-password-1",
            "--role",
            "admin",
            "--quota-usd",
            "unlimited",
        ],
    );
    let list = run(&dir, url, &["user", "list"]);
    assert!(
        list.contains("dev@example.com")
            && list.contains("12.5")
            && list.contains("boss@example.com")
            && list.contains("unlimited"),
        "{list}"
    );
    let key = run(
        &dir,
        url,
        &["key", "create", "--user", "dev@example.com", "--name", "ci"],
    );
    let key = key.trim();
    assert!(key.starts_with("sk-") && key.len() > 40, "{key}");
    let keys = run(&dir, url, &["key", "list", "--user", "dev@example.com"]);
    assert!(
        keys.contains("ci") && !keys.contains(key),
        "the key is never listed in full: {keys}"
    );

    // A bad command fails with a message, not a panic.
    let out = aether()
        .arg("--data-dir")
        .arg(&dir)
        .args(url.map(|u| vec!["--database-url", u]).unwrap_or_default())
        .args(["key", "create", "--user", "nobody@example.com"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user `nobody@example.com`"));

    // Export without secrets masks keys; import into another database; export matches.
    let doc = serde_json::json!({
        "version": "1.0",
        "global_models": [{"name": "gemini-2.5-flash", "default_tiered_pricing": {"tiers": [{"up_to": null, "input_price_per_1m": 0.3, "output_price_per_1m": 2.5}]}}],
        "providers": [{"name": "google", "endpoints": [{"api_format": "GEMINI_CLI", "base_url": "https://generativelanguage.googleapis.com",
            "keys": [{"api_key": "AIzaSy-test-key-0000", "name": "g1"}]}],
            "models": [{"global_model_name": "gemini-2.5-flash", "provider_model_name": "gemini-2.5-flash"}]}]
    });
    let file = dir.join("config.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let stats: serde_json::Value = serde_json::from_str(&run(
        &dir,
        url,
        &["import", "--file", file.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(stats["keys"]["created"], 1, "{stats}");
    let masked = run(&dir, url, &["export"]);
    assert!(
        !masked.contains("AIzaSy-test-key-0000") && masked.contains("AIzaSy…0000"),
        "{masked}"
    );
    let full: serde_json::Value =
        serde_json::from_str(&run(&dir, url, &["export", "--include-secrets"])).unwrap();
    assert_eq!(
        full["providers"][0]["endpoints"][0]["keys"][0]["api_key"],
        "AIzaSy-test-key-0000"
    );
    assert_eq!(
        full["global_models"][0]["default_tiered_pricing"]["tiers"][0]["input_price_per_1m"],
        0.3
    );

    if let Some(db) = db {
        db.teardown().await;
    } else {
        // SQLite backups are consistent copies that open as a database.
        let backup = dir.join("backup.db");
        run(&dir, None, &["backup", "--out", backup.to_str().unwrap()]);
        let copy = aether_store::SqlStore::open(
            &format!("sqlite://{}", backup.display()),
            &Default::default(),
        )
        .await
        .unwrap();
        assert_eq!(copy.count_users(None).await.unwrap(), 2);
        copy.close().await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn cli_commands_on_sqlite() {
    cli_round(Backend::Sqlite).await;
}

#[tokio::test]
async fn cli_commands_on_postgres() {
    cli_round(Backend::Postgres).await;
}

#[test]
fn configuration_errors_name_the_setting() {
    let dir = tmpdir("cfg");
    let out = aether()
        .args(["serve", "--listen", "not-an-address", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`listen`") && err.contains("AETHER_LISTEN"),
        "{err}"
    );

    let toml = dir.join("aether.toml");
    std::fs::write(&toml, "listen = \"127.0.0.1:0\"\nlisten_addr = 1\n").unwrap();
    let out = aether()
        .args(["serve", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_addr"));

    let out = aether()
        .args([
            "serve",
            "--mode",
            "production",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AETHER_JWT_SECRET"));

    let out = aether()
        .args([
            "serve",
            "--mode",
            "production",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&dir)
        .env("AETHER_JWT_SECRET", "x".repeat(40))
        .env("AETHER_ENCRYPTION_KEY", "too-short")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("AETHER_ENCRYPTION_KEY"));
    let _ = std::fs::remove_dir_all(dir);
}
