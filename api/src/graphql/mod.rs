//! The GraphQL schema, one module per domain: [`account`] (me, sign-up/in/out, profile),
//! [`history`] (the feed and one log), [`usage`] (aggregates), [`completions`] (models,
//! `complete`, `completionStream`); with the per-request [`loaders`], the [`cursor`]s of the
//! feed and the [`scalars`]. How requests reach it is `crate::transport`.

pub mod account;
pub mod batch;
pub mod completions;
pub mod conversations;
pub mod cursor;
pub mod history;
pub mod instrument;
pub mod limits;
pub mod loaders;
pub mod scalars;
pub mod usage;

use std::sync::Arc;

use async_graphql::{Data, MergedObject, Schema};
use tower_cookies::Cookies;

use crate::auth::Viewer;
use crate::auth::session::ClientInfo;
use crate::service::profiles::Metered;
use crate::state::AppState;
use batch::Batcher;
use loaders::{
    CostLoader, LastTurnLoader, LogConversationLoader, MonthTokensLoader, ProfileLoader, UserLoader,
};

/// Complexity of a field that runs a database query of its own (batch-loaded fields
/// count less): with `GRAPHQL_MAX_COMPLEXITY` 5000, one document runs at most about ten such
/// queries, and at most ten `usage` aggregates.
pub const QUERY_COST: usize = 100;

/// Every query field, per domain.
#[derive(MergedObject, Default)]
pub struct Query(
    account::AccountQuery,
    history::HistoryQuery,
    conversations::ConversationQuery,
    usage::UsageQuery,
    completions::CompletionQuery,
);

/// Every mutation, per domain.
#[derive(MergedObject, Default)]
pub struct Mutation(
    account::AccountMutation,
    account::ProfileMutation,
    conversations::ConversationMutation,
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
        .limit_directives(limits.max_directives);
    if crate::telemetry::exporting() {
        builder = builder.extension(instrument::Traced);
    }
    // No other extension: the document limits and the metrics run around execution, in the
    // transports (see `limits`), so that fields resolve without the extension chain.
    let mut builder = builder.data(state);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    builder.finish()
}

/// The checks every operation goes through before it runs (see [`limits`]): one per server,
/// shared by its transports (it keeps the documents that passed).
pub fn document_limits(state: &AppState) -> Arc<limits::DocumentLimits> {
    Arc::new(limits::DocumentLimits::new(
        &state.config.graphql,
        state.metrics.enabled().then(|| state.metrics.clone()),
    ))
}

/// Marks operations that arrive over a WebSocket, whose caller was authenticated once, at
/// connection time (an HTTP request's caller was authenticated just now, by the transport).
#[derive(Clone, Copy, Debug)]
pub struct OverWebSocket;

/// The viewer's profile and tokens this month as read with the session, just before the
/// operation ran: `User.profile` answers the viewer's from it, without a statement of its own.
/// Given only to an HTTP query (see [`request_data`]): a mutation may change the profile or the
/// meter before it reads them (`complete { user { profile { tokensUsedThisMonth } } }` must
/// show the call it made), and a WebSocket's viewer is as old as its connection.
#[derive(Clone, Debug)]
pub struct ViewerProfile(pub Metered);

/// The per-request data every operation sees: the caller (if any), the client, the cookie jar,
/// and this request's loaders (so batching never crosses requests or users). The operation
/// must run through the returned [`batch::Batches`] (`drive`): it starts the loaders' batches.
/// `profile` is the [`ViewerProfile`], for a query whose viewer was authenticated just now.
pub fn request_data(
    state: &AppState,
    viewer: Option<Viewer>,
    profile: Option<Metered>,
    client: ClientInfo,
    cookies: Option<Cookies>,
) -> (Data, batch::Batches) {
    let batches = batch::Batches::default();
    let mut data = Data::default();
    let db = &state.db;
    data.insert(Batcher::<_, String>::new(UserLoader(db.clone()), &batches));
    data.insert(Batcher::<_, String>::new(
        ProfileLoader(db.clone(), state.config.defaults.clone()),
        &batches,
    ));
    data.insert(Batcher::<_, uuid::Uuid>::new(
        CostLoader(db.clone()),
        &batches,
    ));
    data.insert(Batcher::<_, String>::new(
        MonthTokensLoader(db.clone()),
        &batches,
    ));
    data.insert(Batcher::<_, uuid::Uuid>::new(
        LastTurnLoader(db.clone()),
        &batches,
    ));
    data.insert(Batcher::<_, uuid::Uuid>::new(
        LogConversationLoader(db.clone()),
        &batches,
    ));
    if let Some(viewer) = viewer {
        // (`User.profile` checks whose profile it is before answering from it.)
        if let Some(profile) = profile {
            data.insert(ViewerProfile(profile));
        }
        data.insert(viewer);
    }
    data.insert(client);
    if let Some(cookies) = cookies {
        data.insert(cookies);
    }
    (data, batches)
}
