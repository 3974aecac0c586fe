//! Console sessions: the management API's tokens in cookies, refreshed when the access token
//! expires; the viewer of a page and its anti-CSRF token.

use aether_admin::auth::{AuthUser, CallerIp, Tokens};
use aether_domain::entities::Role;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use crate::Console;

pub const ACCESS: &str = "aether_access";
pub const REFRESH: &str = "aether_refresh";

/// Cookies for a fresh pair of tokens.
pub fn with_tokens(jar: CookieJar, t: &Tokens, refresh_secs: i64) -> CookieJar {
    let cookie = |name: &'static str, value: String, secs: i64| {
        Cookie::build((name, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Strict)
            .max_age(time::Duration::seconds(secs))
            .build()
    };
    jar.add(cookie(ACCESS, t.access_token.clone(), t.expires_in))
        .add(cookie(REFRESH, t.refresh_token.clone(), refresh_secs))
}

/// Cookies that end the session in the browser.
pub fn cleared(jar: CookieJar) -> CookieJar {
    jar.remove(Cookie::build(ACCESS).path("/"))
        .remove(Cookie::build(REFRESH).path("/"))
}

/// The signed-in user looking at a page.
pub struct Viewer {
    pub who: AuthUser,
    pub csrf: String,
    /// Cookies to send back when the session was refreshed on the way in.
    pub jar: Option<CookieJar>,
}

impl Viewer {
    #[must_use]
    pub fn is_admin(&self) -> bool {
        self.who.user.role == Role::Admin
    }

    /// The refusal of a form whose anti-CSRF token is not this session's; `None` when the
    /// token is right. Every POST handler starts with
    /// `if let Some(r) = v.refuse_csrf(&c, &form.csrf) { return r; }`.
    #[must_use]
    pub fn refuse_csrf(&self, console: &Console, submitted: &str) -> Option<Response> {
        if console.admin.csrf_valid(self.who.session_id, submitted) {
            None
        } else {
            Some(
                (
                    StatusCode::FORBIDDEN,
                    "the form expired or did not come from this console; reload the page",
                )
                    .into_response(),
            )
        }
    }

    /// Attaches refreshed session cookies, if any, to a response.
    pub fn finish(self, resp: impl IntoResponse) -> Response {
        match self.jar {
            Some(jar) => (jar, resp).into_response(),
            None => resp.into_response(),
        }
    }
}

fn to_login(uri: &Uri) -> Response {
    let next = uri
        .path_and_query()
        .map_or("/", axum::http::uri::PathAndQuery::as_str);
    let enc: String = next
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Redirect::to(&format!("/login?next={enc}")).into_response()
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Self, Self::Rejection> {
        let CallerIp(ip) = CallerIp::from_request_parts(parts, c)
            .await
            .unwrap_or_else(|never| match never {});
        let jar = CookieJar::from_headers(&parts.headers);
        if let Some(token) = jar.get(ACCESS).map(Cookie::value)
            && let Ok(who) = c.admin.authenticate(token, ip).await
        {
            let csrf = c.admin.csrf_token(who.session_id);
            return Ok(Self {
                who,
                csrf,
                jar: None,
            });
        }
        if let Some(refresh) = jar.get(REFRESH).map(|k| k.value().to_string())
            && let Ok(tokens) = c.admin.refresh(&refresh, ip).await
            && let Ok(who) = c.admin.authenticate(&tokens.access_token, ip).await
        {
            let csrf = c.admin.csrf_token(who.session_id);
            let jar = with_tokens(jar, &tokens, c.admin.refresh_ttl_seconds());
            return Ok(Self {
                who,
                csrf,
                jar: Some(jar),
            });
        }
        Err(to_login(&parts.uri))
    }
}

/// A viewer with the admin role; others get a 403 page.
pub struct AdminViewer(pub Viewer);

impl FromRequestParts<Console> for AdminViewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Self, Self::Rejection> {
        let v = Viewer::from_request_parts(parts, c).await?;
        if v.is_admin() {
            Ok(Self(v))
        } else {
            let html = c.views.error(
                &v,
                StatusCode::FORBIDDEN,
                "This page is for administrators.",
            );
            Err(v.finish((StatusCode::FORBIDDEN, html)))
        }
    }
}
