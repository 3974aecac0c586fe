//! Hourly and daily usage rollups.

use crate::SqlStore;

#[async_trait::async_trait]
pub trait RollupRepo: Send + Sync {}

#[async_trait::async_trait]
impl RollupRepo for SqlStore {}
