//! The management API end to end: real server, real database, real HTTP.

#![recursion_limit = "256"]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use common::{ADMIN_EMAIL, ADMIN_PASSWORD, Opts, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn health_ready_and_openapi() {
    let app = TestApp::start().await;
    let (s, v) = app.call(Method::GET, "/health", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = app.call(Method::GET, "/ready", None, None).await;
    assert_eq!((s, v["database"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, doc) = app.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/auth/login",
        "/api/admin/users",
        "/api/admin/system/config/import",
        "/api/admin/endpoints/{endpoint_id}/keys",
    ] {
        assert!(paths.contains_key(p), "{p} documented");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let (s, v) = app.call(Method::GET, "/api/nope", None, None).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    app.stop().await;
}

#[tokio::test]
async fn login_refresh_rotation_reuse_and_logout() {
    let app = TestApp::start().await;
    let (s, v) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({ "email": ADMIN_EMAIL, "password": "wrong" })),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let t = app.login("ROOT@example.com", ADMIN_PASSWORD).await;
    assert_eq!(t["token_type"], "bearer");
    assert!(
        t["user"].get("password_hash").is_none(),
        "no hash in responses"
    );
    let access = t["access_token"].as_str().unwrap();
    let (s, me) = app.get("/api/auth/me", access).await;
    assert_eq!(
        (s, me["email"].as_str()),
        (StatusCode::OK, Some(ADMIN_EMAIL))
    );

    // Refresh rotates: the new pair works, the old refresh token is dead and replaying it
    // ends the session for everyone holding it.
    let r1 = t["refresh_token"].as_str().unwrap();
    let (s, t2) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": r1 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    let access2 = t2["access_token"].as_str().unwrap();
    assert_ne!(t2["refresh_token"], t["refresh_token"]);
    assert_eq!(app.get("/api/auth/me", access2).await.0, StatusCode::OK);
    let (s, _) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": r1 })),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.get("/api/auth/me", access2).await.0,
        StatusCode::UNAUTHORIZED,
        "reuse revoked the session"
    );
    let (s, _) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": t2["refresh_token"] })),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Logout ends the session at once.
    let t3 = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let a3 = t3["access_token"].as_str().unwrap();
    assert_eq!(
        app.call(Method::POST, "/api/auth/logout", Some(a3), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/api/auth/me", a3).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": t3["refresh_token"] })),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Garbage tokens are refused, and the events are audited.
    assert_eq!(
        app.get("/api/auth/me", "not-a-jwt").await.0,
        StatusCode::UNAUTHORIZED
    );
    let admin = app.admin_token().await;
    let (_, log) = app
        .get("/api/admin/monitoring/audit-logs?action=auth.", &admin)
        .await;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"auth.login_failed") && actions.contains(&"auth.refresh_reuse"),
        "{actions:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_ip() {
    let app = TestApp::start_with(Opts {
        trusted_proxies: 1,
        ..Default::default()
    })
    .await;
    let admin = app.admin_token().await;
    let (s, _) = app
        .put(
            "/api/admin/system/configs/login_attempts_per_minute",
            &admin,
            json!({ "value": 3 }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let attempt = |ip: &'static str, pw: &'static str| {
        let c = app.client.clone();
        let url = format!("{}/api/auth/login", app.url);
        async move {
            c.post(url)
                .header("x-forwarded-for", ip)
                .json(&json!({ "email": ADMIN_EMAIL, "password": pw }))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(
            attempt("198.51.100.7", "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = attempt("198.51.100.7", ADMIN_PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(
        attempt("198.51.100.8", ADMIN_PASSWORD).await.status(),
        StatusCode::OK,
        "other clients are unaffected"
    );
    app.stop().await;
}

/// Every admin route refuses anonymous callers (401) and normal users (403): deny by default,
/// checked by walking the OpenAPI document so a new route cannot slip through.
#[tokio::test]
async fn normal_users_cannot_reach_any_admin_route() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (_, user) = app.user_token(&admin, "eve@example.com").await;
    let (_, doc) = app.call(Method::GET, "/api/openapi.json", None, None).await;
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let is_admin_route = path.starts_with("/api/admin/")
                || (path.starts_with("/api/announcements") && method != "get");
            if !is_admin_route {
                continue;
            }
            assert!(
                op.get("security").is_some(),
                "{method} {path} must declare security"
            );
            let concrete = path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        "01900000-0000-7000-8000-000000000000"
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let m: Method = method.to_uppercase().parse().unwrap();
            let body = (m != Method::GET && m != Method::DELETE).then(|| json!({}));
            let (s, _) = app.call(m.clone(), &concrete, None, body.clone()).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "anonymous {method} {path}");
            let (s, v) = app.call(m, &concrete, Some(&user), body).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "user {method} {path}: {v}");
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} admin operations found");
    // The user's own routes work.
    assert_eq!(app.get("/api/users/me", &user).await.0, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn user_lifecycle_and_admin_protection() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (s, v) = app
        .post(
            "/api/admin/users",
            &admin,
            json!({ "email": "not-an-email", "password": "long-enough-1" }),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("email"))
    );
    let (s, v) = app
        .post(
            "/api/admin/users",
            &admin,
            json!({ "email": "a@example.com", "password": "short" }),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("password")),
        "{v}"
    );
    let (s, v) = app
        .post("/api/admin/users", &admin, json!({ "email": "a@example.com", "password": "long-enough-1", "quota_usd": "12.50", "quota_period": "monthly" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["username"].as_str(), v["quota_usd"].as_str()),
        (Some("user-a"), Some("12.5"))
    );
    let id = v["id"].as_str().unwrap().to_string();
    let (s, _) = app
        .post(
            "/api/admin/users",
            &admin,
            json!({ "email": "A@example.com", "password": "long-enough-1" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Malformed JSON gets a JSON 400, not a crash or a text page.
    let r = app
        .client
        .post(format!("{}/api/admin/users", app.url))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "invalid_request");

    // PATCH semantics: absent stays, null clears.
    let (s, v) = app
        .put(
            &format!("/api/admin/users/{id}"),
            &admin,
            json!({ "quota_usd": null }),
        )
        .await;
    assert_eq!(
        (s, v["quota_usd"].is_null(), v["quota_period"].as_str()),
        (StatusCode::OK, true, Some("monthly"))
    );
    let (_, list) = app.get("/api/admin/users?search=A%40EX", &admin).await;
    assert_eq!(list["total"], 1);

    // A password set by an admin ends the user's sessions.
    let t = app.login("a@example.com", "long-enough-1").await;
    let user_access = t["access_token"].as_str().unwrap().to_string();
    let (s, _) = app
        .put(
            &format!("/api/admin/users/{id}"),
            &admin,
            json!({ "password": "brand-new-pass" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.get("/api/users/me", &user_access).await.0,
        StatusCode::UNAUTHORIZED
    );
    app.login("a@example.com", "brand-new-pass").await;

    // The last admin can be neither demoted nor deleted; nobody deletes themselves.
    let (_, me) = app.get("/api/auth/me", &admin).await;
    let me_id = me["id"].as_str().unwrap();
    let (s, v) = app
        .put(
            &format!("/api/admin/users/{me_id}"),
            &admin,
            json!({ "role": "user" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, _) = app
        .delete(&format!("/api/admin/users/{me_id}"), &admin)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = app.delete(&format!("/api/admin/users/{id}"), &admin).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/admin/users/{id}"), &admin).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, log) = app
        .get("/api/admin/monitoring/audit-logs?action=user.", &admin)
        .await;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.starts_with(&["user.delete"]) && actions.contains(&"user.create"),
        "{actions:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn self_service_profile_password_and_keys() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (uid, user) = app.user_token(&admin, "bob@example.com").await;
    let (s, k) = app
        .post("/api/users/me/api-keys", &user, json!({ "name": "laptop" }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let full = k["key"].as_str().unwrap();
    assert!(full.starts_with("sk-") && full.len() > 40);
    let kid = k["id"].as_str().unwrap();
    let (_, list) = app.get("/api/users/me/api-keys", &user).await;
    let listed = list.to_string();
    assert_eq!(list["total"], 1);
    assert!(
        !listed.contains(full) && !listed.contains("key_hash"),
        "the full key is never shown again"
    );
    let (s, v) = app
        .patch(
            &format!("/api/users/me/api-keys/{kid}"),
            &user,
            json!({ "name": "desk", "is_active": false }),
        )
        .await;
    assert_eq!(
        (s, v["name"].as_str(), v["is_active"].as_bool()),
        (StatusCode::OK, Some("desk"), Some(false))
    );
    let (s, _) = app
        .patch(
            &format!("/api/users/me/api-keys/{kid}"),
            &user,
            json!({ "rate_limit": 1000 }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "limits are the admin's");

    // Another user's key is invisible.
    let (_, other) = app.user_token(&admin, "mallory@example.com").await;
    assert_eq!(
        app.get(&format!("/api/users/me/api-keys/{kid}"), &other)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/api/users/me/api-keys/{kid}"), &other)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Admin sees the user's key under the user.
    let (_, keys) = app
        .get(&format!("/api/admin/users/{uid}/api-keys"), &admin)
        .await;
    assert_eq!(keys["items"][0]["id"].as_str(), Some(kid));

    let (s, _) = app
        .put(
            "/api/users/me/model-capabilities",
            &user,
            json!({ "claude-opus-*": ["CACHE_1H"] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, caps) = app.get("/api/users/me/model-capabilities", &user).await;
    assert_eq!(caps, json!({ "claude-opus-*": ["cache_1h"] }));

    let (s, v) = app
        .patch(
            "/api/users/me/password",
            &user,
            json!({ "old_password": "nope", "new_password": "another-pass-1" }),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("old_password"))
    );
    let (s, _) = app
        .patch(
            "/api/users/me/password",
            &user,
            json!({ "old_password": "user-password-1", "new_password": "another-pass-1" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.get("/api/users/me", &user).await.0,
        StatusCode::UNAUTHORIZED,
        "sign in again"
    );
    app.login("bob@example.com", "another-pass-1").await;
    assert_eq!(
        app.delete(&format!("/api/users/me/api-keys/{kid}"), &user)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

#[tokio::test]
async fn standalone_keys_and_the_balance_ledger() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (s, v) = app
        .post("/api/admin/api-keys", &admin, json!({ "name": "guest" }))
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("initial_balance_usd"))
    );
    let (s, k) = app
        .post(
            "/api/admin/api-keys",
            &admin,
            json!({ "name": "guest", "initial_balance_usd": 5 }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    assert_eq!(
        (k["is_standalone"].as_bool(), k["balance_usd"].as_str()),
        (Some(true), Some("5"))
    );
    let id = k["id"].as_str().unwrap();
    let (s, e) = app
        .patch(
            &format!("/api/admin/api-keys/{id}/balance"),
            &admin,
            json!({ "amount_usd": "2.25", "reason": "promo" }),
        )
        .await;
    assert_eq!(
        (s, e["kind"].as_str(), e["balance_after_usd"].as_str()),
        (StatusCode::OK, Some("topup"), Some("7.25"))
    );
    let (s, e) = app
        .patch(
            &format!("/api/admin/api-keys/{id}/balance"),
            &admin,
            json!({ "amount_usd": -10 }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("7.25"));
    let (s, e) = app
        .patch(
            &format!("/api/admin/api-keys/{id}/balance"),
            &admin,
            json!({ "amount_usd": "-0.25", "kind": "adjustment" }),
        )
        .await;
    assert_eq!(
        (s, e["balance_after_usd"].as_str()),
        (StatusCode::OK, Some("7"))
    );
    let (s, _) = app
        .patch(
            &format!("/api/admin/api-keys/{id}/balance"),
            &admin,
            json!({ "amount_usd": 1, "kind": "charge" }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app
        .patch(
            &format!("/api/admin/api-keys/{id}/balance"),
            &admin,
            json!({ "amount_usd": "0.0000000001" }),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "sub-nano amounts are refused, not rounded"
    );
    let (_, ledger) = app
        .get(&format!("/api/admin/api-keys/{id}/ledger"), &admin)
        .await;
    let kinds: Vec<&str> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["adjustment", "topup", "topup"]);
    let (_, key) = app.get(&format!("/api/admin/api-keys/{id}"), &admin).await;
    assert_eq!(key["balance_usd"], "7");
    let (_, list) = app.get("/api/admin/api-keys", &admin).await;
    assert_eq!(list["total"], 1);
    assert_eq!(
        app.delete(&format!("/api/admin/api-keys/{id}"), &admin)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    app.stop().await;
}

async fn setup_provider(app: &TestApp, admin: &str) -> (String, String, String) {
    let (s, p) = app
        .post("/api/admin/providers", admin, json!({ "name": "anthropic-main", "display_name": "Anthropic", "billing_type": "monthly_quota", "monthly_quota_usd": 100, "provider_priority": 10 }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let pid = p["id"].as_str().unwrap().to_string();
    let (s, e) = app
        .post(
            &format!("/api/admin/endpoints/providers/{pid}/endpoints"),
            admin,
            json!({ "api_format": "CLAUDE", "base_url": "https://api.anthropic.com/", "headers": {"X-Team": "a"},
                    "proxy": {"url": "socks5://127.0.0.1:1080", "username": "u", "password": "proxy-secret-pw"} }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let eid = e["id"].as_str().unwrap().to_string();
    let (s, k) = app
        .post(
            &format!("/api/admin/endpoints/{eid}/keys"),
            admin,
            json!({ "api_key": "sk-ant-api03-SUPERSECRETVALUE-1234", "name": "main", "rate_multiplier": 0.55, "capabilities": ["cache_1h"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    (pid, eid, k["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn providers_endpoints_keys_never_leak_secrets() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (pid, eid, kid) = setup_provider(&app, &admin).await;
    let mut seen = String::new();
    for path in [
        "/api/admin/providers".to_string(),
        format!("/api/admin/providers/{pid}"),
        format!("/api/admin/endpoints/providers/{pid}/endpoints"),
        format!("/api/admin/endpoints/{eid}"),
        format!("/api/admin/endpoints/{eid}/keys"),
        format!("/api/admin/endpoints/keys/{kid}"),
        "/api/admin/system/config/export".to_string(),
        "/api/admin/monitoring/audit-logs".to_string(),
    ] {
        let (s, v) = app.get(&path, &admin).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        seen.push_str(&v.to_string());
    }
    assert!(!seen.contains("SUPERSECRETVALUE"), "upstream key leaked");
    assert!(
        !seen.contains("proxy-secret-pw") && !seen.contains("password_sealed"),
        "proxy password leaked"
    );
    assert!(
        !seen.contains("enc:v1:"),
        "sealed values are not shown either"
    );
    let (_, keys) = app
        .get(&format!("/api/admin/endpoints/{eid}/keys"), &admin)
        .await;
    assert_eq!(keys[0]["api_key_masked"], "sk-ant…1234");
    assert_eq!(keys[0]["rate_multiplier"], 0.55);
    let (_, list) = app.get("/api/admin/providers", &admin).await;
    assert_eq!(
        (
            list["items"][0]["total_endpoints"].as_u64(),
            list["items"][0]["total_keys"].as_u64(),
            list["items"][0]["quota_usd"].as_str()
        ),
        (Some(1), Some(1), Some("100"))
    );

    // Reveal is explicit and audited.
    let (s, r) = app
        .get(&format!("/api/admin/endpoints/keys/{kid}/reveal"), &admin)
        .await;
    assert_eq!(
        (s, r["api_key"].as_str()),
        (StatusCode::OK, Some("sk-ant-api03-SUPERSECRETVALUE-1234"))
    );
    let (_, log) = app
        .get(
            "/api/admin/monitoring/audit-logs?action=provider_key.reveal",
            &admin,
        )
        .await;
    assert_eq!(log["total"], 1);

    // Duplicates and bad input are refused with the field named.
    let (s, _) = app
        .post(
            &format!("/api/admin/endpoints/{eid}/keys"),
            &admin,
            json!({ "api_key": "sk-ant-api03-SUPERSECRETVALUE-1234", "name": "again" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = app
        .post(
            &format!("/api/admin/endpoints/providers/{pid}/endpoints"),
            &admin,
            json!({ "api_format": "CLAUDE", "base_url": "https://x.example.com" }),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "one endpoint per format");
    let (s, v) = app
        .post(
            &format!("/api/admin/endpoints/providers/{pid}/endpoints"),
            &admin,
            json!({ "api_format": "SOAP", "base_url": "https://x.example.com" }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app
        .post(
            &format!("/api/admin/endpoints/providers/{pid}/endpoints"),
            &admin,
            json!({ "api_format": "OPENAI", "base_url": "ftp://x" }),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("base_url"))
    );
    let (s, v) = app
        .post(
            "/api/admin/providers",
            &admin,
            json!({ "name": "Bad Name" }),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("name"))
    );

    // Updating a key: adaptive concurrency via null, replacing the secret.
    let (s, k) = app
        .put(
            &format!("/api/admin/endpoints/keys/{kid}"),
            &admin,
            json!({ "max_concurrent": 4 }),
        )
        .await;
    assert_eq!((s, k["max_concurrent"].as_u64()), (StatusCode::OK, Some(4)));
    let (_, k) = app
        .put(
            &format!("/api/admin/endpoints/keys/{kid}"),
            &admin,
            json!({ "max_concurrent": null, "api_key": "sk-ant-api03-ROTATED-9999" }),
        )
        .await;
    assert!(k["max_concurrent"].is_null());
    assert_eq!(k["api_key_masked"], "sk-ant…9999");
    let (_, r) = app
        .get(&format!("/api/admin/endpoints/keys/{kid}/reveal"), &admin)
        .await;
    assert_eq!(r["api_key"], "sk-ant-api03-ROTATED-9999");

    // Proxy: keeping the stored password when only the URL changes; removing with null.
    let (s, e) = app
        .put(
            &format!("/api/admin/endpoints/{eid}"),
            &admin,
            json!({ "proxy": {"url": "http://10.0.0.1:3128"} }),
        )
        .await;
    assert_eq!(
        (s, e["proxy"]["url"].as_str()),
        (StatusCode::OK, Some("http://10.0.0.1:3128"))
    );
    let (_, e) = app
        .put(
            &format!("/api/admin/endpoints/{eid}"),
            &admin,
            json!({ "proxy": null }),
        )
        .await;
    assert!(e["proxy"].is_null());

    // Deleting the provider removes everything under it.
    assert_eq!(
        app.delete(&format!("/api/admin/providers/{pid}"), &admin)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/api/admin/endpoints/{eid}"), &admin)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/admin/endpoints/keys/{kid}"), &admin)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test]
async fn models_pricing_and_provider_models() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let bad = json!({ "name": "m", "default_tiered_pricing": { "tiers": [ { "up_to": 1000, "input_per_m": "1", "output_per_m": "2" } ] } });
    let (s, v) = app.post("/api/admin/models/global", &admin, bad).await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("default_tiered_pricing"))
    );
    assert!(v["detail"].as_str().unwrap().contains("unbounded"), "{v}");
    let (s, g) = app
        .post(
            "/api/admin/models/global",
            &admin,
            json!({ "name": "claude-sonnet-4-5", "capabilities": {"vision": true, "function_calling": true},
                    "supported_capabilities": ["cache_1h", "context_1m"],
                    "default_tiered_pricing": { "tiers": [
                        { "up_to": 200000, "input_per_m": "3", "output_per_m": "15", "cache_read_per_m": "0.3" },
                        { "input_per_m": 6, "output_per_m": 22.5 } ] },
                    "default_price_per_request": "0.001" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    assert_eq!(
        g["default_tiered_pricing"]["tiers"][1]["output_per_m"],
        "22.5"
    );
    let gid = g["id"].as_str().unwrap();
    let (s, p) = app
        .post("/api/admin/providers", &admin, json!({ "name": "p1" }))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let pid = p["id"].as_str().unwrap();
    let (s, pm) = app
        .post(
            &format!("/api/admin/providers/{pid}/models"),
            &admin,
            json!({ "global_model_id": gid, "provider_model_name": "claude-sonnet-4-5-20250929",
                    "provider_model_aliases": [{"name": "sonnet-alt", "priority": 2}] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{pm}");
    assert_eq!(
        pm["provider_model_mappings"][0]["name"], "sonnet-alt",
        "the original's field name is accepted"
    );
    let pmid = pm["id"].as_str().unwrap();
    let (s, pm) = app
        .patch(
            &format!("/api/admin/providers/{pid}/models/{pmid}"),
            &admin,
            json!({ "price_per_request": "0.002", "supports_vision": false }),
        )
        .await;
    assert_eq!(
        (s, pm["price_per_request"].as_str()),
        (StatusCode::OK, Some("0.002"))
    );
    let (_, list) = app
        .get("/api/admin/models/global?search=sonnet", &admin)
        .await;
    assert_eq!(
        (
            list["total"].as_i64(),
            list["items"][0]["provider_count"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let (_, serving) = app
        .get(&format!("/api/admin/models/global/{gid}/providers"), &admin)
        .await;
    assert_eq!(serving.as_array().unwrap().len(), 1);
    let (s, _) = app
        .patch(
            &format!("/api/admin/models/global/{gid}"),
            &admin,
            json!({ "default_tiered_pricing": null }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.delete(&format!("/api/admin/models/global/{gid}"), &admin)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/api/admin/providers/{pid}/models/{pmid}"), &admin)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test]
async fn settings_announcements_and_ip_rules() {
    let app = TestApp::start_with(Opts {
        trusted_proxies: 1,
        ..Default::default()
    })
    .await;
    let admin = app.admin_token().await;
    let (_, settings) = app.get("/api/admin/system/configs", &admin).await;
    let log_level = settings
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "log_level")
        .unwrap();
    assert_eq!(
        (
            log_level["value"].as_str(),
            log_level["is_default"].as_bool()
        ),
        (Some("basic"), Some(true))
    );
    assert!(log_level["help"].as_str().unwrap().len() > 10);
    let (s, v) = app
        .put(
            "/api/admin/system/configs/log_level",
            &admin,
            json!({ "value": "verbose" }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["detail"].as_str().unwrap().contains("log_level"), "{v}");
    let (s, v) = app
        .put(
            "/api/admin/system/configs/log_level",
            &admin,
            json!({ "value": "full" }),
        )
        .await;
    assert_eq!(
        (s, v["value"].as_str(), v["is_default"].as_bool()),
        (StatusCode::OK, Some("full"), Some(false))
    );
    assert_eq!(
        app.put(
            "/api/admin/system/configs/no_such",
            &admin,
            json!({ "value": 1 })
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (_, v) = app
        .delete("/api/admin/system/configs/log_level", &admin)
        .await;
    assert_eq!(v["value"], "basic");

    let (_, user) = app.user_token(&admin, "reader@example.com").await;
    let (s, a) = app.post("/api/announcements", &admin, json!({ "title": "Maintenance", "content": "Sunday", "type": "maintenance", "is_pinned": true })).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let aid = a["id"].as_str().unwrap();
    app.post(
        "/api/announcements",
        &admin,
        json!({ "title": "Hidden", "content": "x", "is_active": false }),
    )
    .await;
    let (_, seen) = app.get("/api/announcements", &user).await;
    assert_eq!(
        (seen["total"].as_i64(), seen["items"][0]["type"].as_str()),
        (Some(1), Some("maintenance"))
    );
    let (_, all) = app.get("/api/announcements?all=true", &admin).await;
    assert_eq!(all["total"], 2);
    let (s, _) = app
        .put(
            &format!("/api/announcements/{aid}"),
            &admin,
            json!({ "end_time": "2000-01-01T00:00:00Z" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, seen) = app.get("/api/announcements", &user).await;
    assert_eq!(seen["total"], 0, "ended announcements disappear");

    // IP rules apply to every route, from the next request on.
    let (s, r) = app
        .post(
            "/api/admin/security/ip-rules",
            &admin,
            json!({ "cidr": "203.0.113.0/24", "action": "block", "note": "abuse" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let (s, v) = app
        .post(
            "/api/admin/security/ip-rules",
            &admin,
            json!({ "cidr": "not-an-ip", "action": "block" }),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("cidr"))
    );
    let from = |ip: &'static str| {
        let c = app.client.clone();
        let url = format!("{}/health", app.url);
        async move {
            c.get(url)
                .header("x-forwarded-for", ip)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let mut blocked = false;
    for _ in 0..50 {
        if from("203.0.113.9").await == StatusCode::FORBIDDEN {
            blocked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(blocked, "the block rule took effect");
    assert_eq!(from("198.51.100.1").await, StatusCode::OK);
    let (_, rules) = app.get("/api/admin/security/ip-rules", &admin).await;
    assert_eq!(rules[0]["cidr"], "203.0.113.0/24");
    app.stop().await;
}

#[tokio::test]
async fn config_export_import_round_trip_and_merge_modes() {
    let source = TestApp::start().await;
    let admin = source.admin_token().await;
    let (pid, _, _) = setup_provider(&source, &admin).await;
    let (_, g) = source
        .post("/api/admin/models/global", &admin, json!({ "name": "claude-sonnet-4-5", "capabilities": {"vision": true, "context_limit": 200000},
            "default_tiered_pricing": {"tiers": [{"up_to": 200000, "input_per_m": "3", "output_per_m": "15", "cache_creation_1h_per_m": "6"}, {"input_per_m": "6", "output_per_m": "22.5"}]} }))
        .await;
    source
        .post(&format!("/api/admin/providers/{pid}/models"), &admin, json!({ "global_model_id": g["id"], "provider_model_name": "claude-sonnet-4-5-20250929", "price_per_request": "0.0015" }))
        .await;

    let (_, masked) = source.get("/api/admin/system/config/export", &admin).await;
    assert_eq!(masked["version"], "1.0");
    let key = &masked["providers"][0]["endpoints"][0]["keys"][0];
    assert!(
        key["api_key"].is_null() && key["api_key_masked"] == "sk-ant…1234",
        "{key}"
    );
    let (_, full) = source
        .get(
            "/api/admin/system/config/export?include_secrets=true",
            &admin,
        )
        .await;
    assert_eq!(
        full["providers"][0]["endpoints"][0]["keys"][0]["api_key"],
        "sk-ant-api03-SUPERSECRETVALUE-1234"
    );
    assert_eq!(
        full["global_models"][0]["default_tiered_pricing"]["tiers"][0]["cache_ttl_pricing"][0]["cache_creation_price_per_1m"],
        6.0
    );
    assert_eq!(full["global_models"][0]["config"]["vision"], true);
    assert_eq!(
        full["providers"][0]["models"][0]["price_per_request"],
        0.0015
    );
    source.stop().await;

    let target = TestApp::start_with(Opts {
        backend: aether_store::Backend::Postgres,
        ..Default::default()
    })
    .await;
    let admin = target.admin_token().await;
    let mut doc = full.clone();
    let (s, r) = target
        .post("/api/admin/system/config/import", &admin, doc.clone())
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let st = &r["stats"];
    assert_eq!(
        [
            &st["global_models"]["created"],
            &st["providers"]["created"],
            &st["endpoints"]["created"],
            &st["keys"]["created"],
            &st["models"]["created"]
        ],
        [&json!(1); 5]
    );
    // The masked export cannot smuggle a fake key in: it is skipped with a reason.
    let (_, r2) = target
        .post("/api/admin/system/config/import", &admin, masked.clone())
        .await;
    assert_eq!(r2["stats"]["providers"]["skipped"], 1);
    assert!(
        r2["stats"]["errors"][0]
            .as_str()
            .unwrap()
            .contains("api_key")
    );
    // Importing the same document again skips everything, keys by value.
    let (_, again) = target
        .post("/api/admin/system/config/import", &admin, doc.clone())
        .await;
    assert_eq!(
        (
            again["stats"]["keys"]["skipped"].as_u64(),
            again["stats"]["keys"]["created"].as_u64()
        ),
        (Some(1), Some(0))
    );
    // The exports match: prices exact to the cent and beyond.
    let (_, back) = target
        .get(
            "/api/admin/system/config/export?include_secrets=true",
            &admin,
        )
        .await;
    assert_eq!(back["global_models"], full["global_models"]);
    assert_eq!(
        back["providers"][0]["models"],
        full["providers"][0]["models"]
    );
    assert_eq!(
        back["providers"][0]["endpoints"][0]["keys"],
        full["providers"][0]["endpoints"][0]["keys"]
    );

    // error mode refuses and changes nothing; overwrite updates.
    doc["merge_mode"] = json!("error");
    let (s, _) = target
        .post("/api/admin/system/config/import", &admin, doc.clone())
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    doc["merge_mode"] = json!("overwrite");
    doc["providers"][0]["display_name"] = json!("Renamed");
    doc["global_models"][0]["default_tiered_pricing"]["tiers"][1]["output_price_per_1m"] =
        json!(30);
    let (s, r) = target
        .post("/api/admin/system/config/import", &admin, doc.clone())
        .await;
    assert_eq!(
        (s, r["stats"]["providers"]["updated"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{r}"
    );
    let (_, back) = target.get("/api/admin/system/config/export", &admin).await;
    assert_eq!(back["providers"][0]["display_name"], "Renamed");
    assert_eq!(
        back["global_models"][0]["default_tiered_pricing"]["tiers"][1]["output_price_per_1m"],
        30.0
    );
    doc["merge_mode"] = json!("sometimes");
    let (s, v) = target
        .post("/api/admin/system/config/import", &admin, doc.clone())
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("merge_mode"))
    );
    let (s, _) = target
        .post(
            "/api/admin/system/config/import",
            &admin,
            json!({ "version": "2.2" }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    target.stop().await;
}

/// A document as the original Aether writes it (free-text provider names, capabilities as an
/// object, `provider_model_aliases`, float prices) imports cleanly.
#[tokio::test]
async fn imports_an_original_aether_export() {
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let original = json!({
        "version": "1.0",
        "exported_at": "2025-10-01T08:00:00+00:00",
        "global_models": [{
            "name": "gpt-4o", "display_name": "GPT-4o", "default_price_per_request": null,
            "default_tiered_pricing": {"tiers": [{"up_to": null, "input_price_per_1m": 2.5, "output_price_per_1m": 10.0, "cache_read_price_per_1m": 1.25}]},
            "supported_capabilities": [], "config": {"streaming": true, "function_calling": true, "icon_url": "x"}, "is_active": true
        }],
        "providers": [{
            "name": "OpenAI Official", "display_name": "OpenAI", "description": null, "website": "https://openai.com",
            "billing_type": "pay_as_you_go", "monthly_quota_usd": null, "quota_reset_day": 30, "rpm_limit": null,
            "provider_priority": 50, "is_active": true, "rate_limit": null, "concurrent_limit": null, "config": null,
            "endpoints": [{
                "api_format": "OPENAI", "base_url": "https://api.openai.com", "headers": null, "timeout": 300, "max_retries": 3,
                "max_concurrent": null, "rate_limit": null, "is_active": true, "custom_path": null, "config": null,
                "keys": [
                    {"api_key": "sk-proj-original-key-0001", "name": "k1", "note": null, "rate_multiplier": 0.8, "internal_priority": 100,
                     "global_priority": null, "max_concurrent": null, "rate_limit": null, "daily_limit": null, "monthly_limit": null,
                     "allowed_models": null, "capabilities": {"cache_1h": false}, "is_active": true},
                    {"api_key": "", "name": "empty"}
                ]
            }],
            "models": [
                {"global_model_name": "gpt-4o", "provider_model_name": "gpt-4o-2024-08-06", "provider_model_aliases": [{"name": "gpt-4o", "priority": 1}],
                 "price_per_request": null, "tiered_pricing": null, "supports_vision": true, "supports_function_calling": null,
                 "supports_streaming": null, "supports_extended_thinking": null, "supports_image_generation": null, "is_active": true, "config": null},
                {"global_model_name": "gpt-missing", "provider_model_name": "x"}
            ]
        }]
    });
    let (s, r) = app
        .post("/api/admin/system/config/import", &admin, original)
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let st = &r["stats"];
    assert_eq!(
        (
            st["keys"]["created"].as_u64(),
            st["models"]["created"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(st["errors"].as_array().unwrap().len(), 2, "{st}");
    let (_, providers) = app.get("/api/admin/providers", &admin).await;
    assert_eq!(providers["items"][0]["name"], "openai-official");
    let (_, models) = app.get("/api/admin/models/global", &admin).await;
    let m = &models["items"][0];
    assert_eq!(
        m["default_tiered_pricing"]["tiers"][0]["cache_read_per_m"],
        "1.25"
    );
    assert_eq!(
        (
            m["capabilities"]["function_calling"].as_bool(),
            m["config"]["icon_url"].as_str()
        ),
        (Some(true), Some("x"))
    );
    app.stop().await;
}

/// Expired gateway keys are refused; with `delete_expired_keys` on, those that asked for it
/// (`auto_delete_on_expiry`) are deleted by the server's periodic sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_refused_and_deleted_when_they_ask_for_it() {
    use aether_store::{AdminRepo as _, ApiKeyRepo as _};
    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (uid, _) = app.user_token(&admin, "exp@example.com").await;
    let mut ids = Vec::new();
    for auto in [true, false] {
        let (s, k) = app
            .post(
                &format!("/api/admin/users/{uid}/api-keys"),
                &admin,
                json!({ "name": format!("auto {auto}"), "auto_delete_on_expiry": auto }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{k}");
        let id: aether_domain::ApiKeyId = k["id"].as_str().unwrap().parse().unwrap();
        let mut stored = app.store().get_api_key(id).await.unwrap().unwrap();
        stored.expires_at = Some(aether_domain::Timestamp::from_millis(
            aether_domain::Timestamp::now().millis() - 1000,
        ));
        app.store().update_api_key(&stored).await.unwrap();
        ids.push((id, k["key"].as_str().unwrap().to_string()));
    }
    // The gateway refuses both (after the snapshot picks the change up).
    let (s, _) = app
        .put(
            "/api/admin/system/configs/delete_expired_keys",
            &admin,
            json!({ "value": false }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let r = app
        .client
        .get(format!("{}/v1/models", app.url))
        .bearer_auth(&ids[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert!(v.to_string().contains("expired"), "{v}");

    let store: aether_store::DynStore = std::sync::Arc::new(app.store().clone());
    let sweep = || async {
        let admin = aether_admin::Admin::new(
            store.clone(),
            aether_domain::secret::Cipher::new(&[7u8; 32], &[]).unwrap(),
            aether_admin::AdminConfig::new(vec![1u8; 32]),
            std::sync::Arc::new(aether_admin::NoopNotifier),
        )
        .await
        .unwrap();
        admin.delete_expired_keys().await.unwrap()
    };
    assert_eq!(sweep().await, 0, "the setting is off");
    app.store()
        .put_setting("delete_expired_keys", &json!(true), None)
        .await
        .unwrap();
    assert_eq!(sweep().await, 1);
    assert!(app.store().get_api_key(ids[0].0).await.unwrap().is_none());
    assert!(
        app.store().get_api_key(ids[1].0).await.unwrap().is_some(),
        "a key that did not ask stays (refused)"
    );
    app.stop().await;
}

/// Usage is private to its account: a user's usage routes show only their own records (a
/// `user_id` parameter does not widen them) and another account's request is not found;
/// admins see and filter every record.
#[tokio::test]
async fn usage_routes_show_users_only_their_own_records() {
    use aether_domain::entities::{UsageRecord, UsageStatus};
    use aether_domain::pricing::{CostBreakdown, TokenUsage};
    use aether_domain::{ApiFormat, RequestId, Timestamp, Usd, UserId};
    use aether_store::{UsageBatch, UsageRepo as _};

    let app = TestApp::start().await;
    let admin = app.admin_token().await;
    let (ann_id, ann) = app.user_token(&admin, "ann@example.com").await;
    let (bob_id, _bob) = app.user_token(&admin, "bob@example.com").await;
    let rec = |user: &str, status: UsageStatus, nanos: i64| UsageRecord {
        id: RequestId::new(),
        client_request_id: None,
        user_id: Some(user.parse::<UserId>().unwrap()),
        api_key_id: None,
        provider_id: None,
        endpoint_id: None,
        provider_key_id: None,
        global_model_id: None,
        requested_model: "claude-test".into(),
        upstream_model: None,
        api_format: ApiFormat::Claude,
        endpoint_api_format: None,
        is_stream: false,
        status,
        status_code: Some(if status == UsageStatus::Failed {
            502
        } else {
            200
        }),
        error_type: None,
        error_message: None,
        tokens: TokenUsage {
            input: 10,
            output: 5,
            ..TokenUsage::default()
        },
        cost: CostBreakdown {
            total: Usd::from_nanos(nanos),
            actual_total: Usd::from_nanos(nanos / 2),
            ..CostBreakdown::default()
        },
        unpriced: false,
        latency_ms: Some(100),
        ttfb_ms: None,
        client_ip: None,
        user_agent: None,
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    };
    let ann_ok = rec(&ann_id, UsageStatus::Completed, 1000);
    let ann_failed = rec(&ann_id, UsageStatus::Failed, 0);
    let bob_ok = rec(&bob_id, UsageStatus::Completed, 5000);
    app.store()
        .write_batch(&UsageBatch {
            records: vec![ann_ok.clone(), ann_failed.clone(), bob_ok.clone()],
            ..Default::default()
        })
        .await
        .unwrap();

    // Ann sees her two records only, even when asking for Bob's.
    for path in [
        "/api/users/me/usage".to_string(),
        format!("/api/users/me/usage?user_id={bob_id}"),
    ] {
        let (s, v) = app.get(&path, &ann).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        assert_eq!(v["total"], 2, "{path}: {v}");
        assert!(
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["user_id"] == ann_id.as_str()),
            "{path}: {v}"
        );
    }
    let (s, v) = app
        .get(&format!("/api/users/me/usage/{}", ann_ok.id), &ann)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["record"]["id"], ann_ok.id.to_string());
    assert!(v["traces"].is_array() && v["bodies"].is_null(), "{v}");
    let (s, v) = app
        .get(&format!("/api/users/me/usage/{}", bob_ok.id), &ann)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another user's request: {v}");
    let (s, _) = app.get("/api/users/me/usage/not-an-id", &ann).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = app
        .get(
            &format!("/api/users/me/usage/summary?user_id={bob_id}"),
            &ann,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            &v["requests"],
            &v["successes"],
            &v["failures"],
            &v["cost"],
            &v["input_tokens"]
        ),
        (
            &json!(2),
            &json!(1),
            &json!(1),
            &json!("0.000001"),
            &json!(20)
        ),
        "{v}"
    );
    // An admin's own usage is their own too.
    let (s, v) = app.get("/api/users/me/usage", &admin).await;
    assert_eq!((s, &v["total"]), (StatusCode::OK, &json!(0)), "{v}");

    // Admins: everything, filterable.
    let (s, v) = app.get("/api/admin/usage", &admin).await;
    assert_eq!((s, &v["total"]), (StatusCode::OK, &json!(3)), "{v}");
    let (s, v) = app.get("/api/admin/usage?status=failed", &admin).await;
    assert_eq!((s, &v["total"]), (StatusCode::OK, &json!(1)), "{v}");
    assert_eq!(v["items"][0]["id"], ann_failed.id.to_string());
    let (s, v) = app
        .get("/api/admin/usage?status=completed&limit=1", &admin)
        .await;
    assert_eq!((s, &v["total"]), (StatusCode::OK, &json!(2)), "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let (s, v) = app
        .get(
            &format!("/api/admin/usage?status=completed&user_id={ann_id}"),
            &admin,
        )
        .await;
    assert_eq!((s, &v["total"]), (StatusCode::OK, &json!(1)), "{v}");
    let (s, v) = app.get("/api/admin/usage?status=bogus", &admin).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app
        .get(&format!("/api/admin/usage/{}", bob_ok.id), &admin)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["record"]["user_id"], bob_id.as_str());
    let (s, v) = app.get("/api/admin/usage/summary", &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["requests"], &v["cost"]),
        (&json!(3), &json!("0.000006"))
    );
    let (s, v) = app.get("/api/admin/usage/breakdown?by=user", &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["key"].as_str().unwrap(), r["requests"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        vec![(bob_id.as_str(), 1), (ann_id.as_str(), 2)],
        "most expensive first: {v}"
    );
    let (s, _) = app.get("/api/admin/usage/breakdown?by=nope", &admin).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = app.get("/api/admin/usage/heatmap", &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["requests"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );
    app.stop().await;
}
