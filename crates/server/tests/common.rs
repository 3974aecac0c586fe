//! Test harness: the real application, in-process, on an ephemeral port, over a fresh
//! database of either backend.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use aether_server::App;
use aether_server::config::{Config, LogFormat, Mode, SecretInputs};
use aether_store::Backend;
use aether_store::testing::TestStore;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN_EMAIL: &str = "root@example.com";
pub const ADMIN_PASSWORD: &str = "correct-horse-battery";

pub struct TestApp {
    pub url: String,
    pub client: Client,
    pub data_dir: PathBuf,
    pub db: Option<TestStore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Opts {
    pub backend: Backend,
    pub trusted_proxies: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            trusted_proxies: 0,
        }
    }
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(Opts::default()).await
    }

    pub async fn start_with(o: Opts) -> Self {
        let db = TestStore::new(o.backend)
            .await
            .expect("test database (PostgreSQL must be up for postgres tests)");
        let data_dir =
            std::env::temp_dir().join(format!("aether-app-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let cfg = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.clone(),
            database_url: db.url.clone(),
            redis_url: None,
            mode: Mode::Local,
            trusted_proxies: o.trusted_proxies,
            log_format: LogFormat::Text,
            shutdown_timeout_secs: 5,
            secrets: SecretInputs::default(),
            admin_email: Some(ADMIN_EMAIL.into()),
            admin_password: Some(ADMIN_PASSWORD.into()),
        };
        let app = App::build(&cfg).await.expect("app builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.serve(
                listener,
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        });
        Self {
            url,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            data_dir,
            db: Some(db),
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(db) = self.db.take() {
            db.teardown().await;
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// Sends a request; returns status and JSON body (`null` when empty / not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Value {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({ "email": email, "password": password })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "login {email}: {v}");
        v
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates a user and returns (id, access token).
    pub async fn user_token(&self, admin: &str, email: &str) -> (String, String) {
        let (s, u) = self
            .post(
                "/api/admin/users",
                admin,
                json!({ "email": email, "password": "user-password-1" }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        let t = self.login(email, "user-password-1").await;
        (
            u["id"].as_str().unwrap().to_string(),
            t["access_token"].as_str().unwrap().to_string(),
        )
    }
}
