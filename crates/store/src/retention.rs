//! Retention per data class.

use crate::SqlStore;

#[async_trait::async_trait]
pub trait RetentionRepo: Send + Sync {}

#[async_trait::async_trait]
impl RetentionRepo for SqlStore {}
