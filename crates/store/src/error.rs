use thiserror::Error;

/// What can go wrong in the store. `Conflict` and `NotFound` are expected outcomes the
/// services turn into 409 / 404; the rest are faults.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or foreign-key rule was violated; the text names the constraint.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored value could not be decoded (a bug or a hand-edited database).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return Self::Conflict(
                    db.constraint()
                        .map_or_else(|| db.message().to_string(), str::to_string),
                );
            }
            if db.is_foreign_key_violation() {
                return Self::Conflict(format!("referenced record missing: {}", db.message()));
            }
        }
        if matches!(e, sqlx::Error::RowNotFound) {
            return Self::NotFound;
        }
        Self::Database(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
