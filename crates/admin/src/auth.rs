//! Authentication: argon2id passwords, short-lived HS256 access tokens bound to a session,
//! rotating refresh tokens with reuse detection, per-IP login throttling, and the axum
//! extractors that put an authenticated user (or admin) into a handler's arguments.
//!
//! Access tokens carry the session id; every authenticated call checks that the session is
//! still live and the user still active, so logout and deactivation take effect at once.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aether_domain::entities::{Role, Session, User};
use aether_domain::net::ClientIp;
use aether_domain::secret::{random_token, sha256_hex};
use aether_domain::{SessionId, Timestamp, UserId};
use aether_store::RefreshLookup;
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::{Actor, Admin, ApiError, ApiResult};

/// Hashes a password with argon2id (a random salt, the crate's recommended parameters). Runs
/// on the blocking pool: a hash takes tens of milliseconds by design.
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// Verifies a password against a stored PHC string; a malformed hash never matches.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// A hash of a random password, verified against when the login names no user so a failed
/// login takes as long whether or not the account exists.
fn decoy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$ew8N8nz9vkWFmm2S0yjU8zDaZu1uzwJm2vfCpNCfR0Y"
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    sid: String,
    role: String,
    iat: i64,
    exp: i64,
    typ: String,
}

/// The tokens handed out at login and refresh.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// Access-token lifetime in seconds.
    pub expires_in: i64,
    #[schema(value_type = Object)]
    pub user: User,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    pub session_id: SessionId,
    pub ip: IpAddr,
}

impl AuthUser {
    #[must_use]
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user.id),
            email: Some(self.user.email.clone()),
            role: self.user.role,
            ip: Some(self.ip),
        }
    }
}

/// An authenticated caller with the admin role.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

impl AdminUser {
    #[must_use]
    pub fn actor(&self) -> Actor {
        self.0.actor()
    }
}

impl Admin {
    fn login_blocked(&self, ip: IpAddr) -> bool {
        let limit = self.settings().login_attempts_per_minute();
        self.inner
            .login_failures
            .get(&ip)
            .is_some_and(|c| c.load(Ordering::Relaxed) >= limit)
    }

    fn note_login_failure(&self, ip: IpAddr) {
        self.inner
            .login_failures
            .get_with(ip, || Arc::new(AtomicU32::new(0)))
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Email-or-username + password → tokens.
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        ip: IpAddr,
        user_agent: Option<String>,
    ) -> ApiResult<Tokens> {
        if self.login_blocked(ip) {
            self.audit_security("auth.login_throttled", Some(ip), json!({ "login": login }))
                .await;
            return Err(ApiError::Throttled(60));
        }
        let user = self.store().find_user_by_login(login).await?;
        let hash = user
            .as_ref()
            .map_or_else(|| decoy_hash().to_string(), |u| u.password_hash.clone());
        let ok = verify_password(password.to_string(), hash).await;
        let user = match user {
            Some(u) if ok => u,
            _ => {
                self.note_login_failure(ip);
                self.audit_security("auth.login_failed", Some(ip), json!({ "login": login }))
                    .await;
                return Err(ApiError::Unauthenticated(
                    "invalid email or password".into(),
                ));
            }
        };
        if !user.is_active {
            return Err(ApiError::Forbidden("this account is disabled".into()));
        }
        let now = Timestamp::now();
        let refresh = random_token(32);
        let session = Session {
            id: SessionId::new(),
            user_id: user.id,
            refresh_hash: sha256_hex(refresh.as_bytes()),
            previous_hash: None,
            expires_at: now.plus_secs(self.refresh_ttl_secs()),
            revoked_at: None,
            ip: Some(ip.to_string()),
            user_agent,
            created_at: now,
            last_refreshed_at: None,
        };
        self.store().insert_session(&session).await?;
        self.store().set_last_login(user.id, now).await?;
        self.issue(&user, session.id, refresh)
    }

    /// Refresh token → a new access token and a new refresh token (the old one dies).
    /// Presenting an already-rotated token revokes the session: someone else has it.
    pub async fn refresh(&self, refresh_token: &str, ip: IpAddr) -> ApiResult<Tokens> {
        let hash = sha256_hex(refresh_token.as_bytes());
        let now = Timestamp::now();
        let session = match self.store().find_refresh(&hash).await? {
            RefreshLookup::Current(s) => s,
            RefreshLookup::Reused(s) => {
                self.store().revoke_session(s.id, now).await?;
                self.audit_security(
                    "auth.refresh_reuse",
                    Some(ip),
                    json!({ "session_id": s.id, "user_id": s.user_id }),
                )
                .await;
                return Err(ApiError::Unauthenticated(
                    "refresh token was already used; signed out".into(),
                ));
            }
            RefreshLookup::Unknown => {
                return Err(ApiError::Unauthenticated("invalid refresh token".into()));
            }
        };
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Err(ApiError::Unauthenticated(
                "session expired; sign in again".into(),
            ));
        }
        let user = self
            .store()
            .get_user(session.user_id)
            .await?
            .filter(|u| u.is_active)
            .ok_or_else(|| ApiError::Unauthenticated("account disabled".into()))?;
        let new_refresh = random_token(32);
        let rotated = self
            .store()
            .rotate_session(
                session.id,
                &hash,
                &sha256_hex(new_refresh.as_bytes()),
                now.plus_secs(self.refresh_ttl_secs()),
                now,
            )
            .await?;
        if !rotated {
            return Err(ApiError::Unauthenticated(
                "refresh token was already used".into(),
            ));
        }
        self.issue(&user, session.id, new_refresh)
    }

    /// Ends the session: its refresh token and every access token issued for it stop working.
    pub async fn logout(&self, who: &AuthUser) -> ApiResult<()> {
        self.store()
            .revoke_session(who.session_id, Timestamp::now())
            .await?;
        Ok(())
    }

    /// Checks an access token and its session; returns the live user.
    pub async fn authenticate(&self, token: &str, ip: IpAddr) -> ApiResult<AuthUser> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        v.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(&self.inner.config.jwt_secret),
            &v,
        )
        .map_err(|_| ApiError::Unauthenticated("invalid or expired access token".into()))?
        .claims;
        if claims.typ != "access" {
            return Err(ApiError::Unauthenticated("not an access token".into()));
        }
        let (Ok(user_id), Ok(sid)) = (
            claims.sub.parse::<UserId>(),
            claims.sid.parse::<SessionId>(),
        ) else {
            return Err(ApiError::Unauthenticated("malformed access token".into()));
        };
        let session = self
            .store()
            .get_session(sid)
            .await?
            .filter(|s| s.revoked_at.is_none() && s.user_id == user_id)
            .ok_or_else(|| ApiError::Unauthenticated("session ended; sign in again".into()))?;
        let user = self
            .store()
            .get_user(user_id)
            .await?
            .filter(|u| u.is_active)
            .ok_or_else(|| ApiError::Unauthenticated("account disabled".into()))?;
        Ok(AuthUser {
            user,
            session_id: session.id,
            ip,
        })
    }

    /// The anti-CSRF token of a console session: a keyed hash of the session id, so every
    /// form of one session carries the same token and no other session can forge it.
    #[must_use]
    pub fn csrf_token(&self, session: SessionId) -> String {
        let mut input = self.inner.config.jwt_secret.clone();
        input.extend_from_slice(b"\0csrf\0");
        input.extend_from_slice(session.to_string().as_bytes());
        sha256_hex(&input)
    }

    /// Whether a submitted token is this session's (constant time).
    #[must_use]
    pub fn csrf_valid(&self, session: SessionId, submitted: &str) -> bool {
        let want = self.csrf_token(session);
        want.len() == submitted.len()
            && want
                .bytes()
                .zip(submitted.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// How long a refresh token (and so a console session cookie) lives, in seconds.
    #[must_use]
    pub fn refresh_ttl_seconds(&self) -> i64 {
        self.refresh_ttl_secs()
    }

    fn refresh_ttl_secs(&self) -> i64 {
        i64::try_from(self.inner.config.refresh_ttl.as_secs()).unwrap_or(i64::MAX / 2000)
    }

    fn issue(&self, user: &User, sid: SessionId, refresh_token: String) -> ApiResult<Tokens> {
        let now = Timestamp::now();
        let ttl = i64::try_from(self.inner.config.access_ttl.as_secs()).unwrap_or(900);
        let claims = Claims {
            sub: user.id.to_string(),
            sid: sid.to_string(),
            role: user.role.as_str().to_string(),
            iat: now.millis() / 1000,
            exp: now.millis() / 1000 + ttl,
            typ: "access".to_string(),
        };
        let access_token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.inner.config.jwt_secret),
        )
        .map_err(|e| ApiError::Internal(format!("token signing failed: {e}")))?;
        Ok(Tokens {
            access_token,
            refresh_token,
            token_type: "bearer",
            expires_in: ttl,
            user: user.clone(),
        })
    }
}

fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ClientIp>()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0)
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<Admin> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, admin: &Admin) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::Unauthenticated("missing bearer token".into()))?;
        admin.authenticate(token, client_ip(parts)).await
    }
}

impl FromRequestParts<Admin> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, admin: &Admin) -> Result<Self, Self::Rejection> {
        let who = AuthUser::from_request_parts(parts, admin).await?;
        if who.user.role != Role::Admin {
            return Err(ApiError::Forbidden("admin role required".into()));
        }
        Ok(Self(who))
    }
}

/// The caller's address (for routes without authentication, e.g. login).
pub struct CallerIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for CallerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(client_ip(parts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let h = hash_password("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), h.clone()).await);
        assert!(!verify_password("wrong".into(), h).await);
        assert!(!verify_password("x".into(), "not a hash".into()).await);
        assert!(
            PasswordHash::new(decoy_hash()).is_ok(),
            "the decoy must parse so it costs a real verify"
        );
    }
}
