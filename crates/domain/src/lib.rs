//! Aether's domain: entities, identifiers, exact money, the pricing/cost engine and secret
//! handling. Pure — no I/O, no async, no HTTP or SQL types — so every other crate can depend on
//! it and its rules can be unit-tested in isolation.

pub mod entities;
pub mod format;
pub mod ids;
pub mod money;
pub mod pricing;
pub mod secret;
pub mod settings;
pub mod ts;

pub use format::ApiFormat;
pub use ids::*;
pub use money::{Multiplier, MoneyError, Usd};
pub use ts::Timestamp;
