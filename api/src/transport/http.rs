//! `/graphql` over HTTP, per the GraphQL-over-HTTP spec.
//!
//! * `POST` accepts only `application/json` bodies: the content types a browser may send
//!   cross-site without a CORS preflight (`text/plain`, form-encoded, multipart) are refused, so
//!   a foreign page cannot make a signed-in browser run mutations.
//! * `GET` runs queries from the URL; a mutation over `GET` is refused with 405. Browsers asking
//!   for HTML get the GraphQL IDE.
//! * WebSocket upgrades on `GET` go to [`super::websocket`].

use std::sync::Arc;

use async_graphql::parser::types::{DocumentOperations, OperationType};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tower_cookies::Cookies;

use crate::auth::RequestAuth;
use crate::error::AppError;
use crate::graphql::limits::DocumentLimits;
use crate::graphql::{AppSchema, request_data};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/graphql", get(get_graphql).post(post_graphql))
}

fn media_type(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

async fn post_graphql(
    State(state): State<AppState>,
    Extension(schema): Extension<AppSchema>,
    Extension(limits): Extension<Arc<DocumentLimits>>,
    Extension(auth): Extension<RequestAuth>,
    cookies: Cookies,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(media) = response_media(&headers) else {
        return not_acceptable();
    };
    if media_type(&headers, header::CONTENT_TYPE) != "application/json" {
        return AppError::UnsupportedMediaType(
            "POST /graphql accepts Content-Type: application/json only".into(),
        )
        .into_response();
    }
    let mut request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return AppError::BadRequest(format!("the body is not a GraphQL request: {e}"))
                .into_response();
        }
    };
    let (operation, refused) = limits.prepare(&mut request);
    let mut response = match refused {
        Some(refused) => refused,
        None => execute(&state, &schema, request, auth, Some(cookies)).await,
    };
    operation.answered(&mut response);
    respond(media, &response)
}

/// Run a checked request with this request's data and loaders.
async fn execute(
    state: &AppState,
    schema: &AppSchema,
    mut request: async_graphql::Request,
    auth: RequestAuth,
    cookies: Option<Cookies>,
) -> async_graphql::Response {
    let batches;
    // The viewer's profile read with the session serves a query only (see `ViewerProfile`).
    let profile = auth.profile.filter(|_| runs_a_query(&mut request));
    (request.data, batches) = request_data(state, auth.viewer, profile, auth.client, cookies);
    batches.drive(schema.execute(request)).await
}

const JSON: &str = "application/json";
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// The response media type the client accepts, per GraphQL over HTTP: the new
/// `application/graphql-response+json` when asked for, else `application/json` (also when no
/// `Accept` is sent); None when it accepts neither.
fn response_media(headers: &HeaderMap) -> Option<&'static str> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(JSON);
    };
    let mut best: Option<(&'static str, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let candidate = match media.as_str() {
            GRAPHQL_RESPONSE_JSON => GRAPHQL_RESPONSE_JSON,
            JSON | "application/*" | "*/*" => JSON,
            _ => continue,
        };
        let better = match best {
            None => true,
            Some((m, bq)) => q > bq || (q == bq && candidate == GRAPHQL_RESPONSE_JSON && m == JSON),
        };
        if q > 0.0 && better {
            best = Some((candidate, q));
        }
    }
    best.map(|(m, _)| m)
}

/// Serialise a result. Under `application/graphql-response+json` a request that could not be
/// executed at all (parse or validation errors) is a 400 without `data`; under
/// `application/json` every well-formed request gets 200.
fn respond(media: &'static str, response: &async_graphql::Response) -> Response {
    let not_executed = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let mut status = StatusCode::OK;
    let body = if not_executed {
        let mut body = serde_json::to_value(response).unwrap_or_else(|_| serde_json::json!({}));
        if let Some(map) = body.as_object_mut() {
            map.remove("data");
        }
        if media == GRAPHQL_RESPONSE_JSON {
            status = StatusCode::BAD_REQUEST;
        }
        body.to_string().into_bytes()
    } else {
        // Straight to bytes: no intermediate JSON tree.
        serde_json::to_vec(response).unwrap_or_else(|_| b"{}".to_vec())
    };
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(media))],
        body,
    )
        .into_response()
}

fn not_acceptable() -> Response {
    AppError::NotAcceptable(format!(
        "accepted response types are {GRAPHQL_RESPONSE_JSON} and {JSON}"
    ))
    .into_response()
}

async fn get_graphql(
    State(state): State<AppState>,
    Extension(schema): Extension<AppSchema>,
    Extension(limits): Extension<Arc<DocumentLimits>>,
    Extension(auth): Extension<RequestAuth>,
    Extension(sockets): Extension<Arc<super::websocket::Sockets>>,
    req: Request,
) -> Response {
    let (parts, _body) = req.into_parts();
    let is_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        return super::websocket::upgrade(state, schema, limits, sockets, auth, parts).await;
    }

    let query = parts.uri.query().unwrap_or("");
    let wants_html = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if query.is_empty() && wants_html && state.config.graphql.ide {
        return super::ide::page().into_response();
    }
    let Some(media) = response_media(&parts.headers) else {
        return not_acceptable();
    };
    let mut request = match parse_get_request(query) {
        Ok(r) => r,
        Err(message) => return AppError::BadRequest(message).into_response(),
    };
    let (operation, refused) = limits.prepare(&mut request);
    let mut response = match refused {
        Some(refused) => refused,
        None if is_mutation(&mut request) => {
            return AppError::MethodNotAllowed("mutations must be sent with POST".into())
                .into_response();
        }
        None => {
            let cookies = parts.extensions.get::<Cookies>().cloned();
            execute(&state, &schema, request, auth, cookies).await
        }
    };
    operation.answered(&mut response);
    respond(media, &response)
}

/// A GraphQL request from a URL query string, per GraphQL over HTTP: `query`, `operationName`,
/// and `variables`/`extensions` as JSON. (async-graphql's own parser expects `operation_name`.)
fn parse_get_request(query_string: &str) -> Result<async_graphql::Request, String> {
    let mut request = async_graphql::Request::new("");
    let mut has_query = false;
    for (key, value) in url::form_urlencoded::parse(query_string.as_bytes()) {
        match key.as_ref() {
            "query" => {
                request.query = value.into_owned();
                has_query = true;
            }
            "operationName" if !value.is_empty() => {
                request.operation_name = Some(value.into_owned())
            }
            "variables" if !value.is_empty() => {
                request.variables = serde_json::from_str(&value)
                    .map_err(|e| format!("variables is not a JSON object: {e}"))?;
            }
            "extensions" if !value.is_empty() => {
                request.extensions = serde_json::from_str(&value)
                    .map_err(|e| format!("extensions is not a JSON object: {e}"))?;
            }
            _ => {}
        }
    }
    if !has_query {
        return Err("the query parameter is missing".into());
    }
    Ok(request)
}

/// Whether the request could run a mutation, so that `GET` never runs one.
fn is_mutation(request: &mut async_graphql::Request) -> bool {
    could_run(request, OperationType::Mutation)
}

/// Whether the request certainly runs a query.
fn runs_a_query(request: &mut async_graphql::Request) -> bool {
    !could_run(request, OperationType::Mutation) && !could_run(request, OperationType::Subscription)
}

/// Whether the request's operation could be of type `ty`. The operation is chosen as
/// async-graphql chooses it (by `operationName`, or the only one in the document); when that
/// is ambiguous, any operation of that type in the document counts. A document that does not
/// parse, or names no operation it has, runs nothing (execution reports the error).
fn could_run(request: &mut async_graphql::Request, ty: OperationType) -> bool {
    let operation_name = request.operation_name.clone();
    let Ok(doc) = request.parsed_query() else {
        return false;
    };
    match &doc.operations {
        DocumentOperations::Single(op) => op.node.ty == ty,
        DocumentOperations::Multiple(ops) => match &operation_name {
            Some(name) => ops.get(name.as_str()).is_some_and(|op| op.node.ty == ty),
            None => ops.values().any(|op| op.node.ty == ty),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(query: &str, op: Option<&str>) -> async_graphql::Request {
        let mut r = async_graphql::Request::new(query);
        if let Some(op) = op {
            r = r.operation_name(op);
        }
        r
    }

    #[test]
    fn get_requests_use_the_spec_parameter_names() {
        let r = parse_get_request(
            "query=query+Q%7Bme%7Bid%7D%7D&operationName=Q&variables=%7B%22a%22%3A1%7D",
        )
        .unwrap();
        assert_eq!(r.query, "query Q{me{id}}");
        assert_eq!(r.operation_name.as_deref(), Some("Q"));
        assert_eq!(
            r.variables.get("a").map(ToString::to_string).as_deref(),
            Some("1")
        );
        assert!(parse_get_request("operationName=Q").is_err());
        assert!(parse_get_request("query=%7Bx%7D&variables=nope").is_err());
    }

    #[test]
    fn mutations_are_recognised() {
        assert!(is_mutation(&mut req("mutation { signOut }", None)));
        assert!(!is_mutation(&mut req("{ me { id } }", None)));
        assert!(!is_mutation(&mut req("query Q { me { id } }", None)));
        let both = "query Q { me { id } } mutation M { signOut }";
        assert!(is_mutation(&mut req(both, Some("M"))));
        assert!(!is_mutation(&mut req(both, Some("Q"))));
        assert!(!is_mutation(&mut req("mutation {", None)));
        // One named operation and no operationName: async-graphql runs it, so it counts.
        assert!(is_mutation(&mut req("mutation M { signOut }", None)));
        assert!(
            is_mutation(&mut req(both, None)),
            "ambiguous documents with a mutation are refused"
        );
    }

    /// Only what certainly runs a query gets the viewer's profile read with the session.
    #[test]
    fn queries_are_recognised() {
        assert!(runs_a_query(&mut req("{ me { id } }", None)));
        assert!(runs_a_query(&mut req("query Q { me { id } }", None)));
        assert!(!runs_a_query(&mut req("mutation { signOut }", None)));
        assert!(!runs_a_query(&mut req(
            "subscription S { completionStream(input: {prompt: \"x\"}) { delta } }",
            None
        )));
        let both = "query Q { me { id } } mutation M { signOut }";
        assert!(runs_a_query(&mut req(both, Some("Q"))));
        assert!(!runs_a_query(&mut req(both, Some("M"))));
        assert!(!runs_a_query(&mut req(both, None)));
    }
}
