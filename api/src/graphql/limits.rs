//! What one document may ask for, checked before it runs, and a code on every error.
//!
//! Limits beyond async-graphql's own (depth, complexity, recursion, directives per field):
//! aliased fields per document, root fields per operation, and at most one `signIn`/`signUp`
//! per request (each costs a password hash). Every refusal is `GRAPHQL_VALIDATION_FAILED` and
//! says which limit; a document that does not parse is `GRAPHQL_PARSE_FAILED`; an argument
//! value that does not fit its type is `BAD_USER_INPUT`. No error leaves without a code.
//!
//! This runs around async-graphql's execution, in the transports ([`DocumentLimits::prepare`],
//! then [`Operation::answered`] or [`Operation::stream`]), not as a schema extension: with any
//! extension registered, async-graphql puts every resolved field through the extension chain
//! (a registry lookup by type and field name, a boxed future per extension), which cost about
//! a fifth of the server's CPU on a history page. The document is parsed here once and handed
//! to async-graphql, which then does not parse it again.

use std::collections::HashSet;
use std::sync::Arc;

use std::time::Instant;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Positioned, Request, Response, ServerError, ServerResult};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::instrument::Recorder;
use crate::config::GraphqlConfig;
use crate::metrics::Metrics;

pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

/// Mutations that hash a password: one per request.
const HASHING_MUTATIONS: [&str; 2] = ["signIn", "signUp"];

/// The limits; with `metrics`, every operation is also recorded (see
/// `super::instrument::Recorder`).
#[derive(Clone)]
pub struct DocumentLimits {
    pub max_aliases: usize,
    pub max_root_fields: usize,
    metrics: Option<Arc<Metrics>>,
}

impl DocumentLimits {
    pub fn new(cfg: &GraphqlConfig, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            max_aliases: cfg.max_aliases,
            max_root_fields: cfg.max_root_fields,
            metrics,
        }
    }

    /// Parse `request`'s document and check it against the limits, before it runs. The parsed
    /// document goes into the request (async-graphql does not parse it again). A document
    /// refused (it does not parse, or asks for too much) comes back as the response to send;
    /// either way the [`Operation`] finishes what is sent.
    pub fn prepare(&self, request: &mut Request) -> (Operation, Option<Response>) {
        let started = Instant::now();
        let parsed = async_graphql::parser::parse_query(&request.query);
        let operation = Operation {
            recorder: self
                .metrics
                .clone()
                .map(|m| Recorder::new(m, parsed.as_ref().ok())),
            started,
        };
        let refused = match parsed {
            Ok(doc) => {
                let checked = self.check(&doc);
                request.set_parsed_query(doc);
                checked.err()
            }
            Err(e) => {
                let e = ServerError::from(e);
                // Too deep to parse is a limit, like async-graphql's own checks.
                let code = if e.message.starts_with("The recursion depth")
                    || e.message.starts_with("The number of directives")
                {
                    VALIDATION_FAILED
                } else {
                    PARSE_FAILED
                };
                Some(with_code(e, code))
            }
        };
        (operation, refused.map(|e| Response::from_errors(vec![e])))
    }
}

/// One operation on its way: gives its responses their codes and records it.
pub struct Operation {
    recorder: Option<Recorder>,
    started: Instant,
}

impl Operation {
    /// Over HTTP: the response, coded and recorded.
    pub fn answered(self, response: &mut Response) {
        code_the_rest(response);
        if let Some(r) = &self.recorder {
            r.answered(response, self.started);
        }
    }

    /// Over WebSocket an operation is a stream: every response coded, the operation recorded
    /// when the stream ends.
    pub fn stream(self, responses: BoxStream<'static, Response>) -> BoxStream<'static, Response> {
        let coded = responses
            .map(|mut response| {
                code_the_rest(&mut response);
                response
            })
            .boxed();
        match &self.recorder {
            Some(r) => r.stream(coded),
            None => coded,
        }
    }
}

/// A code on every error that has none. Without a path: the operation could not be chosen (an
/// unknown or missing operationName). With one: an argument value did not fit its type.
fn code_the_rest(response: &mut Response) {
    for e in &mut response.errors {
        let code = if e.path.is_empty() {
            VALIDATION_FAILED
        } else {
            "BAD_USER_INPUT"
        };
        set_code(e, code);
    }
}

/// Give `e` a code unless it has one.
fn set_code(e: &mut ServerError, code: &str) {
    let ext = e.extensions.get_or_insert_with(Default::default);
    if ext.get("code").is_none() {
        ext.set("code", code);
    }
}

fn with_code(mut e: ServerError, code: &str) -> ServerError {
    set_code(&mut e, code);
    e
}

fn refuse(message: String) -> ServerError {
    with_code(ServerError::new(message, None), VALIDATION_FAILED)
}

impl DocumentLimits {
    fn check(&self, doc: &ExecutableDocument) -> ServerResult<()> {
        let mut aliases = 0;
        let mut sets: Vec<&Positioned<SelectionSet>> = doc
            .fragments
            .values()
            .map(|f| &f.node.selection_set)
            .collect();
        for (_, op) in doc.operations.iter() {
            sets.push(&op.node.selection_set);
            let roots = root_fields(doc, &op.node.selection_set);
            if roots.len() > self.max_root_fields {
                return Err(refuse(format!(
                    "an operation may select at most {} root fields (aliases included); this one selects {}",
                    self.max_root_fields,
                    roots.len()
                )));
            }
            if op.node.ty == OperationType::Mutation {
                let hashing = roots
                    .iter()
                    .filter(|name| HASHING_MUTATIONS.contains(name))
                    .count();
                if hashing > 1 {
                    return Err(refuse(
                        "at most one signIn or signUp per request".to_owned(),
                    ));
                }
            }
        }
        while let Some(set) = sets.pop() {
            for item in &set.node.items {
                match &item.node {
                    Selection::Field(f) => {
                        aliases += usize::from(f.node.alias.is_some());
                        sets.push(&f.node.selection_set);
                    }
                    Selection::InlineFragment(i) => sets.push(&i.node.selection_set),
                    Selection::FragmentSpread(_) => {}
                }
            }
        }
        if aliases > self.max_aliases {
            return Err(refuse(format!(
                "a document may alias at most {} fields; this one aliases {aliases}",
                self.max_aliases
            )));
        }
        Ok(())
    }
}

/// The names of the root fields an operation selects, through fragments (each fragment once:
/// validation refuses cycles, but this runs before it).
fn root_fields<'a>(doc: &'a ExecutableDocument, set: &'a Positioned<SelectionSet>) -> Vec<&'a str> {
    let mut names = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![set];
    while let Some(set) = stack.pop() {
        for item in &set.node.items {
            match &item.node {
                Selection::Field(f) => names.push(f.node.name.node.as_str()),
                Selection::InlineFragment(i) => stack.push(&i.node.selection_set),
                Selection::FragmentSpread(s) => {
                    let name = &s.node.fragment_name.node;
                    if seen.insert(name.as_str())
                        && let Some(fragment) = doc.fragments.get(name)
                    {
                        stack.push(&fragment.node.selection_set);
                    }
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str) -> Result<(), String> {
        let limits = DocumentLimits {
            max_aliases: 3,
            max_root_fields: 4,
            metrics: None,
        };
        let doc = async_graphql::parser::parse_query(query).unwrap();
        limits.check(&doc).map_err(|e| e.message)
    }

    #[test]
    fn aliases_and_root_fields_are_counted_through_fragments() {
        assert!(check("{ a: me { id } b: me { id } c: me { id } }").is_ok());
        assert!(
            check("{ a: me { id } b: me { id } c: me { id } d: me { id } }")
                .unwrap_err()
                .contains("alias at most 3")
        );
        assert!(
            check("{ ...F ...F } fragment F on Query { me { id } models { id } usage { calls } }")
                .is_ok()
        );
        assert!(
            check(
                "{ ...F me { id } models { id } } fragment F on Query { me { id } usage { calls } models { id } }"
            )
            .unwrap_err()
            .contains("at most 4 root fields")
        );
        // A fragment cycle (refused later by validation) does not loop here.
        assert!(
            check("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }").is_ok()
        );
    }

    #[test]
    fn one_password_hash_per_request() {
        let two = r#"mutation { a: signIn(input: {email: "a@x.io", password: "p"}) { token } ...F }
                     fragment F on Mutation { signUp(input: {email: "b@x.io", password: "p", name: "b"}) { token } }"#;
        assert!(
            check(two)
                .unwrap_err()
                .contains("at most one signIn or signUp")
        );
        assert!(
            check(r#"mutation { signIn(input: {email: "a@x.io", password: "p"}) { token } }"#)
                .is_ok()
        );
    }
}
