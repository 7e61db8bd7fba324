//! The GraphQL schema and its HTTP/WebSocket transport.

pub mod completions;
pub mod cursor;
pub mod history;
pub mod http;
pub mod ide;
pub mod loaders;
pub mod mutation;
pub mod query;
pub mod scalars;
pub mod types;

use async_graphql::{MergedObject, Schema};

use crate::app::AppState;

/// Every query field, per domain.
#[derive(MergedObject, Default)]
pub struct Query(
    query::AccountQuery,
    completions::CompletionQuery,
    history::HistoryQuery,
);

/// Every mutation, per domain.
#[derive(MergedObject, Default)]
pub struct Mutation(
    mutation::AccountMutation,
    mutation::ProfileMutation,
    completions::CompletionMutation,
);

pub type AppSchema = Schema<Query, Mutation, completions::Subscription>;

/// The schema without data: for exporting the SDL (no database needed).
pub fn schema_builder() -> async_graphql::SchemaBuilder<Query, Mutation, completions::Subscription>
{
    Schema::build(
        Query::default(),
        Mutation::default(),
        completions::Subscription,
    )
}

/// The SDL of the schema the server runs (what `schema.graphql` holds).
pub fn sdl() -> String {
    schema_builder().finish().sdl()
}

/// The schema the server runs, holding the shared state, with the configured limits.
pub fn build_schema(state: AppState) -> AppSchema {
    let limits = state.config.graphql.clone();
    let mut builder = schema_builder()
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .limit_recursive_depth(limits.max_recursive_depth)
        .data(state);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}
