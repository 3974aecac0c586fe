//! System settings, the audit log, announcements and IP rules.

use std::collections::BTreeMap;

use aether_domain::entities::{Announcement, AuditEntry, IpRule};
use aether_domain::{AnnouncementId, IpRuleId, Timestamp, UserId};
use async_trait::async_trait;
use serde_json::Value;

use crate::SqlStore;
use crate::args;
use crate::db::{Exec, Row};
use crate::error::{Result, StoreError};
use crate::sql::{Count, Filter, Page, Paged, j, json, like_pattern, opt_parse, opt_ts, parse, ts};

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Actions starting with this prefix (`user.` matches `user.create`).
    pub action_prefix: Option<String>,
    pub actor_id: Option<UserId>,
    /// Free text over actor email, target id and action.
    pub search: Option<String>,
    pub since: Option<Timestamp>,
}

#[async_trait]
pub trait AdminRepo: Send + Sync {
    async fn get_settings(&self) -> Result<BTreeMap<String, Value>>;
    async fn put_setting(&self, key: &str, value: &Value, actor: Option<UserId>) -> Result<()>;
    async fn delete_setting(&self, key: &str) -> Result<bool>;

    async fn insert_audit(&self, e: &AuditEntry) -> Result<()>;
    async fn list_audit(&self, f: &AuditFilter, page: Page) -> Result<Paged<AuditEntry>>;

    async fn insert_announcement(&self, a: &Announcement) -> Result<()>;
    async fn update_announcement(&self, a: &Announcement) -> Result<()>;
    async fn get_announcement(&self, id: AnnouncementId) -> Result<Option<Announcement>>;
    /// Pinned first, then by priority and recency. `visible_at` keeps only those users see now.
    async fn list_announcements(
        &self,
        visible_at: Option<Timestamp>,
        page: Page,
    ) -> Result<Paged<Announcement>>;
    async fn delete_announcement(&self, id: AnnouncementId) -> Result<bool>;

    async fn insert_ip_rule(&self, r: &IpRule) -> Result<()>;
    async fn list_ip_rules(&self) -> Result<Vec<IpRule>>;
    async fn delete_ip_rule(&self, id: IpRuleId) -> Result<bool>;
}

const AUDIT_COLS: &str =
    "id, actor_id, actor_email, action, target_type, target_id, details, ip, created_at";

fn audit_from_row(r: &Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: parse(r, "id")?,
        actor_id: opt_parse(r, "actor_id")?,
        actor_email: r.opt_text("actor_email")?,
        action: r.text("action")?,
        target_type: r.opt_text("target_type")?,
        target_id: r.opt_text("target_id")?,
        details: json(r, "details")?,
        ip: r.opt_text("ip")?,
        created_at: ts(r, "created_at")?,
    })
}

const ANN_COLS: &str = "id, title, content, kind, priority, is_active, is_pinned, start_time, end_time, \
    author_id, created_at, updated_at";

fn ann_from_row(r: &Row) -> Result<Announcement> {
    Ok(Announcement {
        id: parse(r, "id")?,
        title: r.text("title")?,
        content: r.text("content")?,
        kind: parse(r, "kind")?,
        priority: crate::sql::i32_(r, "priority")?,
        is_active: r.bool("is_active")?,
        is_pinned: r.bool("is_pinned")?,
        start_time: opt_ts(r, "start_time")?,
        end_time: opt_ts(r, "end_time")?,
        author_id: opt_parse(r, "author_id")?,
        created_at: ts(r, "created_at")?,
        updated_at: ts(r, "updated_at")?,
    })
}

const IP_COLS: &str = "id, cidr, action, note, expires_at, created_by, created_at";

fn ip_from_row(r: &Row) -> Result<IpRule> {
    Ok(IpRule {
        id: parse(r, "id")?,
        cidr: parse(r, "cidr")?,
        action: parse(r, "action")?,
        note: r.opt_text("note")?,
        expires_at: opt_ts(r, "expires_at")?,
        created_by: opt_parse(r, "created_by")?,
        created_at: ts(r, "created_at")?,
    })
}

pub(crate) async fn put_setting<E: Exec>(
    ex: &mut E,
    key: &str,
    value: &Value,
    actor: Option<UserId>,
) -> Result<()> {
    ex.execute(
        "INSERT INTO system_settings (key, value, updated_by, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by, \
         updated_at = excluded.updated_at"
            .into(),
        args![
            key,
            j(value),
            actor.map(|a| a.to_string()),
            Timestamp::now().millis()
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl AdminRepo for SqlStore {
    async fn get_settings(&self) -> Result<BTreeMap<String, Value>> {
        let rows = self
            .db
            .clone()
            .fetch_all("SELECT key, value FROM system_settings".into(), Vec::new())
            .await?;
        rows.iter()
            .map(|r| Ok((r.text("key")?, json(r, "value")?)))
            .collect()
    }

    async fn put_setting(&self, key: &str, value: &Value, actor: Option<UserId>) -> Result<()> {
        put_setting(&mut self.db.clone(), key, value, actor).await
    }

    async fn delete_setting(&self, key: &str) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "DELETE FROM system_settings WHERE key = $1".into(),
                args![key],
            )
            .await?;
        Ok(n > 0)
    }

    async fn insert_audit(&self, e: &AuditEntry) -> Result<()> {
        self.db
            .clone()
            .execute(
                "INSERT INTO audit_log (id, actor_id, actor_email, action, target_type, target_id, \
                 details, ip, created_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
                    .into(),
                args![
                    e.id.to_string(),
                    e.actor_id.map(|a| a.to_string()),
                    e.actor_email.clone(),
                    e.action.as_str(),
                    e.target_type.clone(),
                    e.target_id.clone(),
                    j(&e.details),
                    e.ip.clone(),
                    e.created_at.millis(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn list_audit(&self, af: &AuditFilter, page: Page) -> Result<Paged<AuditEntry>> {
        let mut f = Filter::new();
        if let Some(p) = af.action_prefix.as_deref().filter(|s| !s.is_empty()) {
            let mut pat = like_pattern(p);
            pat.remove(0); // prefix match: drop the leading `%`
            f.cond("LOWER(action) LIKE {} ESCAPE '\\'", pat);
        }
        if let Some(a) = af.actor_id {
            f.cond("actor_id = {}", a.to_string());
        }
        if let Some(s) = af.search.as_deref().filter(|s| !s.trim().is_empty()) {
            f.cond(
                "(LOWER(COALESCE(actor_email, '')) LIKE {} ESCAPE '\\' OR LOWER(COALESCE(target_id, '')) \
                 LIKE {} ESCAPE '\\' OR LOWER(action) LIKE {} ESCAPE '\\')",
                like_pattern(s.trim()),
            );
        }
        if let Some(since) = af.since {
            f.cond("created_at >= {}", since.millis());
        }
        f.page(
            &mut self.db.clone(),
            AUDIT_COLS,
            "audit_log",
            "created_at DESC, id DESC",
            page,
            Count::Ahead,
        )
        .await?
        .decode(audit_from_row)
    }

    async fn insert_announcement(&self, a: &Announcement) -> Result<()> {
        self.db
            .clone()
            .execute(
                "INSERT INTO announcements (id, title, content, kind, priority, is_active, is_pinned, \
                 start_time, end_time, author_id, created_at, updated_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
                    .into(),
                args![
                    a.id.to_string(),
                    a.title.as_str(),
                    a.content.as_str(),
                    a.kind.as_str(),
                    a.priority,
                    a.is_active,
                    a.is_pinned,
                    a.start_time.map(Timestamp::millis),
                    a.end_time.map(Timestamp::millis),
                    a.author_id.map(|x| x.to_string()),
                    a.created_at.millis(),
                    a.updated_at.millis(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn update_announcement(&self, a: &Announcement) -> Result<()> {
        let n = self
            .db
            .clone()
            .execute(
                "UPDATE announcements SET title = $2, content = $3, kind = $4, priority = $5, \
                 is_active = $6, is_pinned = $7, start_time = $8, end_time = $9, updated_at = $10 \
                 WHERE id = $1"
                    .into(),
                args![
                    a.id.to_string(),
                    a.title.as_str(),
                    a.content.as_str(),
                    a.kind.as_str(),
                    a.priority,
                    a.is_active,
                    a.is_pinned,
                    a.start_time.map(Timestamp::millis),
                    a.end_time.map(Timestamp::millis),
                    a.updated_at.millis(),
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn get_announcement(&self, id: AnnouncementId) -> Result<Option<Announcement>> {
        let mut f = Filter::new();
        f.cond("id = {}", id.to_string());
        f.all(&mut self.db.clone(), ANN_COLS, "announcements", "id")
            .await?
            .first()
            .map(ann_from_row)
            .transpose()
    }

    async fn list_announcements(
        &self,
        visible_at: Option<Timestamp>,
        page: Page,
    ) -> Result<Paged<Announcement>> {
        let mut f = Filter::new();
        if let Some(now) = visible_at {
            f.raw("is_active = TRUE");
            f.cond(
                "(start_time IS NULL OR start_time <= {}) AND (end_time IS NULL OR end_time > {})",
                now.millis(),
            );
        }
        f.page(
            &mut self.db.clone(),
            ANN_COLS,
            "announcements",
            "is_pinned DESC, priority DESC, created_at DESC",
            page,
            Count::Exact,
        )
        .await?
        .decode(ann_from_row)
    }

    async fn delete_announcement(&self, id: AnnouncementId) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "DELETE FROM announcements WHERE id = $1".into(),
                args![id.to_string()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn insert_ip_rule(&self, r: &IpRule) -> Result<()> {
        self.db
            .clone()
            .execute(
                "INSERT INTO ip_rules (id, cidr, action, note, expires_at, created_by, created_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7)"
                    .into(),
                args![
                    r.id.to_string(),
                    r.cidr.to_string(),
                    r.action.as_str(),
                    r.note.clone(),
                    r.expires_at.map(Timestamp::millis),
                    r.created_by.map(|x| x.to_string()),
                    r.created_at.millis(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn list_ip_rules(&self) -> Result<Vec<IpRule>> {
        Filter::new()
            .all(&mut self.db.clone(), IP_COLS, "ip_rules", "action, cidr")
            .await?
            .iter()
            .map(ip_from_row)
            .collect()
    }

    async fn delete_ip_rule(&self, id: IpRuleId) -> Result<bool> {
        let n = self
            .db
            .clone()
            .execute(
                "DELETE FROM ip_rules WHERE id = $1".into(),
                args![id.to_string()],
            )
            .await?;
        Ok(n > 0)
    }
}
