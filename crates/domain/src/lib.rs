//! Aether's domain: entities, identifiers, exact money, the pricing/cost engine and secret
//! handling. Pure — no I/O, no async, no HTTP or SQL types — so every other crate can depend on
//! it and its rules can be unit-tested in isolation.

pub mod entities;
pub mod format;
pub mod ids;
pub mod money;
pub mod net;
pub mod pricing;
pub mod secret;
pub mod settings;
pub mod ts;

pub use format::ApiFormat;
pub use ids::*;
pub use money::{MoneyError, Multiplier, Usd};
pub use ts::Timestamp;

#[cfg(feature = "openapi")]
mod openapi {
    //! OpenAPI schemas for the value types with hand-written serde forms.
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::{PartialSchema, ToSchema};

    macro_rules! schema {
        ($t:ty, $ty:expr, $fmt:expr, $desc:expr, $ex:expr) => {
            impl PartialSchema for $t {
                fn schema() -> RefOr<Schema> {
                    let mut b = ObjectBuilder::new()
                        .schema_type($ty)
                        .description(Some($desc))
                        .examples([$ex]);
                    if let Some(f) = $fmt {
                        b = b.format(Some(utoipa::openapi::SchemaFormat::Custom(String::from(f))));
                    }
                    RefOr::T(Schema::Object(b.build()))
                }
            }
            impl ToSchema for $t {}
        };
    }

    schema!(
        crate::Usd,
        Type::String,
        Some("decimal"),
        "An exact USD amount as a decimal string (up to 9 decimal places).",
        "0.000015"
    );
    schema!(
        crate::Multiplier,
        Type::Number,
        None::<&str>,
        "A factor, exact to 6 decimal places.",
        0.55
    );
    schema!(
        crate::Timestamp,
        Type::String,
        Some("date-time"),
        "An RFC 3339 UTC timestamp.",
        "2026-11-26T17:00:00Z"
    );
}
