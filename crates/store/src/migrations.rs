//! Embedded migrations, one list per SQL dialect. The two lists must carry the same versions
//! (a unit test checks it) so both backends always have the same schema.

use std::borrow::Cow;

use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::db::Backend;

const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "billing",
        include_str!("../migrations/sqlite/0002_billing.sql"),
    ),
    (
        3,
        "lean_indexes",
        include_str!("../migrations/sqlite/0003_lean_indexes.sql"),
    ),
    (
        4,
        "health_index",
        include_str!("../migrations/sqlite/0004_health_index.sql"),
    ),
    (
        5,
        "rollups",
        include_str!("../migrations/sqlite/0005_rollups.sql"),
    ),
    (
        6,
        "retention",
        include_str!("../migrations/sqlite/0006_retention.sql"),
    ),
    (
        7,
        "console_queries",
        include_str!("../migrations/sqlite/0007_console_queries.sql"),
    ),
];

const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "billing",
        include_str!("../migrations/postgres/0002_billing.sql"),
    ),
    (
        3,
        "lean_indexes",
        include_str!("../migrations/postgres/0003_lean_indexes.sql"),
    ),
    (
        4,
        "health_index",
        include_str!("../migrations/postgres/0004_health_index.sql"),
    ),
    (
        5,
        "rollups",
        include_str!("../migrations/postgres/0005_rollups.sql"),
    ),
    (
        6,
        "retention",
        include_str!("../migrations/postgres/0006_retention.sql"),
    ),
    (
        7,
        "console_queries",
        include_str!("../migrations/postgres/0007_console_queries.sql"),
    ),
];

pub(crate) fn migrator(backend: Backend) -> Migrator {
    let list = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    Migrator::with_migrations(
        list.iter()
            .map(|(v, name, sql)| {
                Migration::new(
                    *v,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_dialects_have_the_same_versions() {
        let a: Vec<_> = super::SQLITE.iter().map(|(v, n, _)| (*v, *n)).collect();
        let b: Vec<_> = super::POSTGRES.iter().map(|(v, n, _)| (*v, *n)).collect();
        assert_eq!(a, b);
    }
}
