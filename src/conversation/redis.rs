//! Placeholder while the Redis store is written (replaced before commit).
use super::*;
#[derive(Clone)]
pub struct RedisStore;
impl RedisStore {
    pub async fn connect(
        _: &str,
        _: &str,
        _: std::time::Duration,
        _: std::time::Duration,
    ) -> Result<Self, StoreError> {
        Err(StoreError::Unavailable("not yet".into()))
    }
}
impl ConversationStore for RedisStore {
    async fn begin(&self, _: ConversationKey, _: &str, _: u64) -> Result<Snapshot, StoreError> {
        Err(StoreError::Unavailable("x".into()))
    }
    async fn load(&self, _: ConversationKey) -> Result<Option<Snapshot>, StoreError> {
        Err(StoreError::Unavailable("x".into()))
    }
    async fn commit(
        &self,
        _: ConversationKey,
        _: u64,
        _: Update,
        _: u64,
    ) -> Result<Commit, StoreError> {
        Err(StoreError::Unavailable("x".into()))
    }
    async fn claim_forward(
        &self,
        _: ConversationKey,
        _: &str,
        _: u64,
        _: u64,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("x".into()))
    }
    async fn complete_forward(
        &self,
        _: ConversationKey,
        _: &str,
        _: &Reply,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("x".into()))
    }
    async fn list(&self, _: u64, _: usize) -> Result<Vec<Summary>, StoreError> {
        Err(StoreError::Unavailable("x".into()))
    }
    async fn count(&self) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable("x".into()))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("x".into()))
    }
}
