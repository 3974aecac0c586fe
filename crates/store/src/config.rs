//! Applying a batch of configuration changes atomically (configuration import).

use aether_domain::entities::{Endpoint, GlobalModel, Provider, ProviderKey, ProviderModel};
use async_trait::async_trait;

use crate::SqlStore;
use crate::error::Result;
use crate::{models, providers};

/// One write of a configuration import plan.
#[derive(Debug, Clone)]
pub enum ConfigChange {
    InsertGlobalModel(GlobalModel),
    UpdateGlobalModel(GlobalModel),
    InsertProvider(Provider),
    UpdateProvider(Provider),
    InsertEndpoint(Endpoint),
    UpdateEndpoint(Endpoint),
    InsertProviderKey(ProviderKey),
    InsertProviderModel(ProviderModel),
    UpdateProviderModel(ProviderModel),
}

#[async_trait]
pub trait ConfigRepo: Send + Sync {
    /// Applies every change in order inside one transaction: all or nothing.
    async fn apply_config(&self, changes: &[ConfigChange]) -> Result<()>;
}

#[async_trait]
impl ConfigRepo for SqlStore {
    async fn apply_config(&self, changes: &[ConfigChange]) -> Result<()> {
        let mut tx = self.db.begin().await?;
        for c in changes {
            match c {
                ConfigChange::InsertGlobalModel(m) => models::insert_global(&mut tx, m).await?,
                ConfigChange::UpdateGlobalModel(m) => models::update_global(&mut tx, m).await?,
                ConfigChange::InsertProvider(p) => providers::insert_provider(&mut tx, p).await?,
                ConfigChange::UpdateProvider(p) => providers::update_provider(&mut tx, p).await?,
                ConfigChange::InsertEndpoint(e) => providers::insert_endpoint(&mut tx, e).await?,
                ConfigChange::UpdateEndpoint(e) => providers::update_endpoint(&mut tx, e).await?,
                ConfigChange::InsertProviderKey(k) => providers::insert_key(&mut tx, k).await?,
                ConfigChange::InsertProviderModel(m) => models::insert_pm(&mut tx, m).await?,
                ConfigChange::UpdateProviderModel(m) => models::update_pm(&mut tx, m).await?,
            }
        }
        tx.commit().await
    }
}
