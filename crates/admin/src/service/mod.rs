//! The management services, one module per area. Every mutation is checked, written, audited
//! and — when it affects routing or admission — announced to the [`ChangeNotifier`](crate::ChangeNotifier).

pub mod affinity;
pub mod config_io;
pub mod health;
pub mod keys;
pub mod models;
pub mod probe;
pub mod providers;
pub mod system;
pub mod usage;
pub mod users;
pub mod validate;

use std::net::IpAddr;

use aether_domain::entities::AuditEntry;
use aether_domain::{AuditId, Timestamp};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::{Actor, Admin};

impl Admin {
    /// Writes an audit entry for an admin action. A failure to audit is logged, not returned:
    /// the action itself already happened.
    pub(crate) async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target_type: &str,
        target_id: impl ToString,
        details: Value,
    ) {
        let e = AuditEntry {
            id: AuditId::new(),
            actor_id: actor.user_id,
            actor_email: actor.email.clone(),
            action: action.to_string(),
            target_type: Some(target_type.to_string()),
            target_id: Some(target_id.to_string()),
            details,
            ip: actor.ip.map(|i| i.to_string()),
            created_at: Timestamp::now(),
        };
        if let Err(err) = self.store().insert_audit(&e).await {
            tracing::error!(%err, action, "could not write the audit log");
        }
    }

    /// Audits a security event that has no authenticated actor (failed login, token reuse).
    pub(crate) async fn audit_security(&self, action: &str, ip: Option<IpAddr>, details: Value) {
        let e = AuditEntry {
            id: AuditId::new(),
            actor_id: None,
            actor_email: None,
            action: action.to_string(),
            target_type: None,
            target_id: None,
            details,
            ip: ip.map(|i| i.to_string()),
            created_at: Timestamp::now(),
        };
        if let Err(err) = self.store().insert_audit(&e).await {
            tracing::error!(%err, action, "could not write the audit log");
        }
    }
}

/// For PATCH-style bodies: a field that is absent stays `None` (unchanged), an explicit
/// `null` becomes `Some(None)` (cleared), a value becomes `Some(Some(v))`.
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Applies a PATCH field.
pub(crate) fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}
