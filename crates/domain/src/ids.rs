//! Server-generated identifiers. Every entity id is a UUIDv7 (time-ordered, so B-tree inserts
//! stay local) wrapped in its own type, so a `UserId` can never be passed where a `ProviderId`
//! is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, format = Uuid))]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    )*};
}

id_type!(
    /// A console/API account.
    UserId,
    /// A gateway key (a user's key or a standalone key).
    ApiKeyId,
    /// An upstream vendor account or relay.
    ProviderId,
    /// One API format of a provider.
    EndpointId,
    /// An upstream credential on an endpoint.
    ProviderKeyId,
    /// A public model name.
    GlobalModelId,
    /// A provider's implementation of a global model.
    ProviderModelId,
    /// One gateway request (and its usage record).
    RequestId,
    /// One attempt of a request against one candidate.
    TraceId,
    /// An entry of a standalone key's balance ledger.
    LedgerId,
    /// An audit log entry.
    AuditId,
    /// An announcement.
    AnnouncementId,
    /// An IP allow/block rule.
    IpRuleId,
    /// A login session (refresh-token family).
    SessionId,
);
