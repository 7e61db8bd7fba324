//! Every migration is reversible: down to nothing and up again gives the same schema.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, Statement};
use tests::spawn_app;

use crate::schema::describe;

#[tokio::test]
async fn migrations_roll_back_completely_and_reapply() {
    let app = spawn_app().await;
    let before = describe(&app.db).await;

    let direct = app.direct().await;
    Migrator::down(&direct, None)
        .await
        .expect("roll back every migration");
    let tables_left = match app.db_backend() {
        sea_orm::DbBackend::Postgres => {
            "SELECT count(*)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relname <> 'seaql_migrations'
               AND c.relname NOT LIKE 'seaql_migrations%'"
        }
        _ => {
            "SELECT CAST(count(*) AS TEXT) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' AND name <> 'seaql_migrations'"
        }
    };
    let left = app
        .db
        .query_one_raw(Statement::from_string(
            app.db_backend(),
            tables_left.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<String>(0)
        .unwrap();
    assert_eq!(left, "0", "objects left after rolling everything back");
    if app.db_backend() == sea_orm::DbBackend::Postgres {
        let functions = app
            .db
            .query_one_raw(Statement::from_string(
                app.db_backend(),
                "SELECT count(*)::text FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
                    .to_owned(),
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<String>(0)
            .unwrap();
        assert_eq!(functions, "0", "trigger functions left after rolling back");
    }

    Migrator::up(&direct, None)
        .await
        .expect("re-apply every migration");
    direct.close().await.unwrap();
    assert_eq!(describe(&app.db).await, before);
    app.shutdown().await;
}
