//! The one scaffold every store test file shares: `contract!(a, b, …)` runs each named
//! `async fn name(&SqlStore)` twice, on a fresh SQLite file and on a fresh PostgreSQL schema.

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let t = aether_store::testing::TestStore::new(aether_store::Backend::Sqlite).await.expect("sqlite");
                super::$name(&t.store).await;
                t.teardown().await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let t = aether_store::testing::TestStore::new(aether_store::Backend::Postgres)
                    .await
                    .expect("PostgreSQL must be reachable at AETHER_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test)");
                super::$name(&t.store).await;
                t.teardown().await;
            })*
        }
    };
}
