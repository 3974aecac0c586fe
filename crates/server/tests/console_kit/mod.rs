//! The console test kit: a cookie-keeping client that does not follow redirects, sign-in,
//! pages, the anti-CSRF token, form posts and the key shown once. Shared by `console_*.rs`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Client, StatusCode, redirect};

use crate::common::TestApp;

/// A browser-like client: keeps cookies, does not follow redirects (so post/redirect/get is
/// visible).
pub fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn try_sign_in(app: &TestApp, email: &str, password: &str) -> (StatusCode, Client) {
    let c = browser();
    let r = c
        .post(format!("{}/login", app.url))
        .form(&[("email", email), ("password", password), ("next", "")])
        .send()
        .await
        .unwrap();
    (r.status(), c)
}

pub async fn sign_in(app: &TestApp, email: &str, password: &str) -> Client {
    let (status, c) = try_sign_in(app, email, password).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "console login {email}");
    c
}

pub async fn page(app: &TestApp, c: &Client, path: &str) -> (StatusCode, String) {
    let r = c.get(format!("{}{path}", app.url)).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// The anti-CSRF token of a rendered page.
pub fn csrf(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a csrf field")
        + 19;
    html[at..].split('"').next().unwrap().to_string()
}

/// Posts a form; returns status, `Location` and body.
pub async fn submit(
    app: &TestApp,
    c: &Client,
    path: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let r = c
        .post(format!("{}{path}", app.url))
        .form(fields)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, location, r.text().await.unwrap())
}

/// The text of the first `<code class="secret" data-copy>` (a key shown once).
pub fn shown_secret(html: &str) -> Option<String> {
    let at = html.find("data-copy>")? + 10;
    Some(html[at..].split('<').next().unwrap().trim().to_string())
}
