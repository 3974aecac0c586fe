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
/// The JWT secret and encryption key every instance of a test cluster shares (`Opts::
/// cluster_secrets`); a real binary gets them as `AETHER_JWT_SECRET` / `AETHER_ENCRYPTION_KEY`.
pub const CLUSTER_JWT_SECRET: &str = "cluster-test-jwt-secret-0123456789abcdef";
/// base64 of 32 bytes.
pub const CLUSTER_ENCRYPTION_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The environment that gives a real `aether` process the cluster's secrets.
pub fn cluster_secret_env() -> [(&'static str, &'static str); 2] {
    [
        ("AETHER_JWT_SECRET", CLUSTER_JWT_SECRET),
        ("AETHER_ENCRYPTION_KEY", CLUSTER_ENCRYPTION_KEY),
    ]
}

/// The gateway's id of the request that got `r` (it names the usage record).
pub fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-aether-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

pub struct TestApp {
    pub url: String,
    pub client: Client,
    pub data_dir: PathBuf,
    pub db: Option<TestStore>,
    /// Whether this instance is the leader for background jobs.
    pub leader: aether_server::leader::Leader,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub struct Opts {
    pub backend: Backend,
    pub trusted_proxies: usize,
    /// Share another app's database (its `db.url`) instead of creating one; the other app
    /// owns (and tears down) it.
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    /// The Redis key prefix (default `aether:`).
    pub redis_prefix: Option<String>,
    /// Fixed JWT and encryption keys, as the instances of one cluster share them.
    pub cluster_secrets: bool,
    /// Leader lease and job timing (default: production timing).
    pub leader: Option<aether_server::leader::LeaderConfig>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            trusted_proxies: 0,
            database_url: None,
            redis_url: None,
            redis_prefix: None,
            cluster_secrets: false,
            leader: None,
        }
    }
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(Opts::default()).await
    }

    pub async fn start_with(o: Opts) -> Self {
        let db = match &o.database_url {
            Some(_) => None,
            None => Some(
                TestStore::new(o.backend)
                    .await
                    .expect("test database (PostgreSQL must be up for postgres tests)"),
            ),
        };
        let database_url = o
            .database_url
            .clone()
            .unwrap_or_else(|| db.as_ref().map(|d| d.url.clone()).unwrap_or_default());
        let data_dir =
            std::env::temp_dir().join(format!("aether-app-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let cfg = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.clone(),
            database_url,
            redis_url: o.redis_url.clone(),
            redis_prefix: o
                .redis_prefix
                .clone()
                .unwrap_or_else(|| aether_server::config::DEFAULT_REDIS_PREFIX.to_string()),
            mode: Mode::Local,
            trusted_proxies: o.trusted_proxies,
            log_format: LogFormat::Text,
            shutdown_timeout_secs: 5,
            secrets: if o.cluster_secrets {
                SecretInputs {
                    jwt_secret: Some(CLUSTER_JWT_SECRET.into()),
                    encryption_key: Some(CLUSTER_ENCRYPTION_KEY.into()),
                    previous_encryption_keys: Vec::new(),
                }
            } else {
                SecretInputs::default()
            },
            admin_email: Some(ADMIN_EMAIL.into()),
            admin_password: Some(ADMIN_PASSWORD.into()),
        };
        let app = App::build_with(&cfg, o.leader.clone().unwrap_or_default())
            .await
            .expect("app builds");
        let leader = app.leader();
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
            db,
            leader,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server gracefully (in-flight requests finish, the usage writer drains) but
    /// keeps the database for inspection.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    pub async fn stop(mut self) {
        self.shutdown().await;
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

/// A gateway deployment for tests: one provider with an endpoint of `format` pointing at the
/// mock, the given upstream keys, and a priced global model served under `upstream_model`.
pub struct Route {
    pub provider_id: String,
    pub endpoint_id: String,
    pub key_ids: Vec<String>,
    pub model_id: String,
}

impl TestApp {
    pub fn store(&self) -> &aether_store::SqlStore {
        &self.db.as_ref().expect("database").store
    }

    /// Creates (or reuses) the global model `model` with $3 / $15 per 1M tokens up to 200k
    /// context, $6 / $22.5 above, and a 1-hour cache write price of $6.
    pub async fn ensure_model(&self, admin: &str, model: &str) -> String {
        let (_, list) = self
            .get(&format!("/api/admin/models/global?search={model}"), admin)
            .await;
        if let Some(m) = list["items"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["name"] == model))
        {
            return m["id"].as_str().unwrap().to_string();
        }
        let (s, g) = self
            .post(
                "/api/admin/models/global",
                admin,
                json!({ "name": model, "supported_capabilities": ["cache_1h", "context_1m"],
                        "default_tiered_pricing": {"tiers": [
                            {"up_to": 200000, "input_per_m": "3", "output_per_m": "15", "cache_creation_1h_per_m": "6"},
                            {"up_to": null, "input_per_m": "6", "output_per_m": "22.5"}]} }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{g}");
        g["id"].as_str().unwrap().to_string()
    }

    /// Adds a provider with one endpoint and keys (name, secret, internal priority).
    #[allow(clippy::too_many_arguments)]
    pub async fn add_route(
        &self,
        admin: &str,
        name: &str,
        format: &str,
        base_url: &str,
        keys: &[(&str, i32)],
        model: &str,
        upstream_model: &str,
        provider_priority: i32,
    ) -> Route {
        let model_id = self.ensure_model(admin, model).await;
        let (s, p) = self
            .post(
                "/api/admin/providers",
                admin,
                json!({ "name": name, "provider_priority": provider_priority }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let provider_id = p["id"].as_str().unwrap().to_string();
        let (s, e) = self
            .post(
                &format!("/api/admin/endpoints/providers/{provider_id}/endpoints"),
                admin,
                json!({ "api_format": format, "base_url": base_url, "timeout": 5, "max_retries": 1, "headers": {"x-endpoint-extra": "yes"} }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{e}");
        let endpoint_id = e["id"].as_str().unwrap().to_string();
        let mut key_ids = Vec::new();
        for (secret, prio) in keys {
            let (s, k) = self
                .post(
                    &format!("/api/admin/endpoints/{endpoint_id}/keys"),
                    admin,
                    json!({ "api_key": secret, "name": secret, "internal_priority": prio }),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{k}");
            key_ids.push(k["id"].as_str().unwrap().to_string());
        }
        let (s, m) = self
            .post(
                &format!("/api/admin/providers/{provider_id}/models"),
                admin,
                json!({ "global_model_id": model_id, "provider_model_name": upstream_model }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{m}");
        Route {
            provider_id,
            endpoint_id,
            key_ids,
            model_id,
        }
    }

    /// A user with a gateway key; returns (user id, gateway key).
    pub async fn gateway_key(&self, admin: &str, email: &str) -> (String, String) {
        let (s, u) = self
            .post(
                "/api/admin/users",
                admin,
                json!({ "email": email, "password": "user-password-1", "quota_usd": null }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        let uid = u["id"].as_str().unwrap().to_string();
        let (s, k) = self
            .post(
                &format!("/api/admin/users/{uid}/api-keys"),
                admin,
                json!({ "name": "test" }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{k}");
        (uid, k["key"].as_str().unwrap().to_string())
    }

    /// Waits until the gateway's routing snapshot offers `model` to `key` (configuration
    /// changes reach the snapshot asynchronously).
    pub async fn wait_for_model(&self, key: &str, model: &str) {
        for _ in 0..200 {
            let r = self
                .client
                .get(format!("{}/v1/models", self.url))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            if r.status() == StatusCode::OK {
                let v: Value = r.json().await.unwrap();
                if v["data"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|m| m["id"] == model))
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("model {model} never became available");
    }

    /// Waits for a settled usage record.
    pub async fn usage(&self, request_id: &str) -> aether_domain::entities::UsageRecord {
        use aether_store::UsageRepo as _;
        let id: aether_domain::RequestId = request_id.parse().unwrap();
        for _ in 0..400 {
            if let Some(r) = self.store().get_usage(id).await.unwrap()
                && matches!(
                    r.status,
                    aether_domain::entities::UsageStatus::Completed
                        | aether_domain::entities::UsageStatus::Failed
                )
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("usage record {request_id} never settled");
    }

    pub async fn traces(&self, request_id: &str) -> Vec<aether_domain::entities::AttemptTrace> {
        use aether_store::UsageRepo as _;
        let id: aether_domain::RequestId = request_id.parse().unwrap();
        for _ in 0..200 {
            let t = self.store().list_traces(id).await.unwrap();
            if !t.is_empty() {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Vec::new()
    }
}
