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
//!
//! Documents that parsed and passed the limits are kept by their text ([`DocumentLimits`]'s
//! cache): an app sends the same few documents again and again, and parsing one was about 8 %
//! of the server's CPU on a history page and on a subscription's start (perf, see
//! docs/performance.md). A document sent again is cloned from the cache instead (async-graphql
//! takes the parsed document by value); async-graphql's validation still runs every time.

use std::collections::HashSet;
use std::sync::Arc;

use std::time::Instant;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Positioned, Request, Response, ServerError, ServerResult};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use quick_cache::sync::Cache;
use quick_cache::{OptionsBuilder, Weighter};

use super::instrument::Recorder;
use crate::config::GraphqlConfig;
use crate::metrics::Metrics;

pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

/// Mutations that hash a password: one per request.
const HASHING_MUTATIONS: [&str; 2] = ["signIn", "signUp"];

/// How deep brackets (`{`, `[`, `(`) may nest in a document, outside strings and comments;
/// checked on the text, before it is parsed. async-graphql's parser recurses once per level of
/// a list or object value and of a list type, with no limit of its own for them (its selection
/// sets stop at 64): `{a(b:[[[…1]]])}` with 3,000 brackets, 6 KB, overflowed a worker thread's
/// 2 MiB stack and aborted the whole server process. A release build survived 1,000 levels and
/// not 2,000; 128 leaves room for debug builds and for what recurses over the document later.
const MAX_NESTING: usize = 128;

/// Whether `text`'s brackets nest deeper than `max`, outside strings, block strings and
/// comments (where a bracket is text). One pass over the bytes: every GraphQL delimiter is
/// ASCII, and no byte of a multi-byte UTF-8 character is.
fn nests_deeper_than(text: &str, max: usize) -> bool {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                // A block string ends at the next `"""` not escaped as `\"""`.
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// What one node of a parsed document (an operation, a variable and each level of its type, a
/// fragment, a selection, an argument, a directive, a value) may take in memory, at most; names
/// and string values are counted apart, by the document's length. The worst shape measured is
/// a chain of one-field selection sets (`{a{a{a}}}`), about 760 bytes a node: a `Vec`'s
/// smallest allocation holds four selections. An app's usual documents take about 350 bytes a
/// node; their text is about 35 times smaller than their parsed form, and up to 250 times
/// (`{a{b}a{b}..}`), so a cache weighed by the text's length would not bound its memory. The unit test
/// `node_bytes_bound_what_a_parsed_document_takes` holds this bound to the parser (in bytes
/// asked of the allocator; the 1 KiB leaves room for its rounding).
const NODE_BYTES: u64 = 1024;
/// The largest document kept parsed: an app's documents have tens of nodes, GraphiQL's
/// introspection query about a hundred, and a few KiB of text.
const MAX_CACHED_NODES: u64 = 256;
const MAX_CACHED_TEXT: usize = 16 * 1024;
/// What the documents kept parsed may take in all, by [`NODE_BYTES`] per node plus twice their
/// text (the cache's key, and the names and strings in the parsed form).
const CACHED_BYTES: u64 = 16 * 1024 * 1024;
/// The cache's shards, eight whatever the machine (2 MiB each), and the share of each kept for
/// documents seen once (15 %, about 300 KiB): once the cache is full, a new document enters
/// that share, and makes room by evicting others seen once; it moves on only if it is sent
/// again. The largest document kept (256 nodes and 16 KiB of text: 288 KiB) fits in that share,
/// so a stream of distinct documents, however large, does not evict the ones sent again
/// (quick_cache 0.7's `insert`: it evicts from the cold share first).
const CACHE_SHARDS: usize = 8;
const CACHE_HOT_SHARE: f64 = 0.85;

/// A document kept parsed, with what it may take in memory.
struct Kept {
    doc: ExecutableDocument,
    bytes: u64,
}

#[derive(Clone)]
struct KeptBytes;

impl Weighter<String, Arc<Kept>> for KeptBytes {
    fn weight(&self, _: &String, kept: &Arc<Kept>) -> u64 {
        kept.bytes
    }
}

/// The limits, and the documents that passed them (parsed, by their text); with `metrics`,
/// every operation is also recorded (see `super::instrument::Recorder`). One per server.
pub struct DocumentLimits {
    pub max_aliases: usize,
    pub max_root_fields: usize,
    metrics: Option<Arc<Metrics>>,
    passed: Cache<String, Arc<Kept>, KeptBytes>,
}

impl DocumentLimits {
    pub fn new(cfg: &GraphqlConfig, metrics: Option<Arc<Metrics>>) -> Self {
        Self::with(cfg.max_aliases, cfg.max_root_fields, metrics)
    }

    fn with(max_aliases: usize, max_root_fields: usize, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            max_aliases,
            max_root_fields,
            metrics,
            passed: Cache::with_options(
                OptionsBuilder::new()
                    .estimated_items_capacity(1024)
                    .weight_capacity(CACHED_BYTES)
                    .shards(CACHE_SHARDS)
                    .hot_allocation(CACHE_HOT_SHARE)
                    .build()
                    .expect("valid cache options"),
                KeptBytes,
                Default::default(),
                Default::default(),
            ),
        }
    }

    /// Parse `request`'s document and check it against the limits, before it runs. The parsed
    /// document goes into the request (async-graphql does not parse it again). A document
    /// refused (it does not parse, or asks for too much) comes back as the response to send;
    /// either way the [`Operation`] finishes what is sent.
    pub fn prepare(&self, request: &mut Request) -> (Operation, Option<Response>) {
        let started = Instant::now();
        let operation = |doc: Option<&ExecutableDocument>| Operation {
            recorder: self.metrics.clone().map(|m| Recorder::new(m, doc)),
            started,
        };
        if let Some(kept) = self.passed.get(request.query.as_str()) {
            let operation = operation(Some(&kept.doc));
            request.set_parsed_query(kept.doc.clone());
            return (operation, None);
        }
        if nests_deeper_than(&request.query, MAX_NESTING) {
            let refused = refuse(format!(
                "a document may nest brackets at most {MAX_NESTING} deep"
            ));
            return (operation(None), Some(Response::from_errors(vec![refused])));
        }
        let parsed = async_graphql::parser::parse_query(&request.query);
        let operation = operation(parsed.as_ref().ok());
        let refused = match parsed {
            Ok(doc) => {
                let checked = self.check(&doc);
                let text = request.query.len();
                let nodes = (checked.is_ok() && text <= MAX_CACHED_TEXT)
                    .then(|| nodes::count(&doc))
                    .filter(|n| *n <= MAX_CACHED_NODES);
                if let Some(nodes) = nodes {
                    let kept = Kept {
                        doc: doc.clone(),
                        bytes: nodes * NODE_BYTES + 2 * text as u64,
                    };
                    self.passed.insert(request.query.clone(), Arc::new(kept));
                }
                request.set_parsed_query(doc);
                checked.err()
            }
            Err(e) => {
                // Too deep to parse (selection sets past the parser's 64) is a limit, like
                // async-graphql's own checks.
                let code = if matches!(e, async_graphql::parser::Error::RecursionLimitExceeded) {
                    VALIDATION_FAILED
                } else {
                    PARSE_FAILED
                };
                Some(with_code(ServerError::from(e), code))
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

/// A parsed document's nodes, what [`NODE_BYTES`] bounds: operations, variables, fragments,
/// selections, arguments, directives and values (each list item and object field one).
mod nodes {
    use async_graphql::parser::types::{
        BaseType, Directive, ExecutableDocument, Selection, SelectionSet, Type,
    };
    use async_graphql::{Name, Positioned};
    use async_graphql_value::{ConstValue, Value};

    pub fn count(doc: &ExecutableDocument) -> u64 {
        let mut n = 0;
        let mut sets: Vec<&Positioned<SelectionSet>> = Vec::new();
        for (_, op) in doc.operations.iter() {
            n += 1 + directives(&op.node.directives);
            for v in &op.node.variable_definitions {
                n += 1 + directives(&v.node.directives) + list_levels(&v.node.var_type.node);
                n += v
                    .node
                    .default_value
                    .as_ref()
                    .map_or(0, |d| const_value(&d.node));
            }
            sets.push(&op.node.selection_set);
        }
        for f in doc.fragments.values() {
            n += 1 + directives(&f.node.directives);
            sets.push(&f.node.selection_set);
        }
        while let Some(set) = sets.pop() {
            for item in &set.node.items {
                n += 1;
                match &item.node {
                    Selection::Field(f) => {
                        n += directives(&f.node.directives) + arguments(&f.node.arguments);
                        sets.push(&f.node.selection_set);
                    }
                    Selection::InlineFragment(i) => {
                        n += directives(&i.node.directives);
                        sets.push(&i.node.selection_set);
                    }
                    Selection::FragmentSpread(s) => n += directives(&s.node.directives),
                }
            }
        }
        n
    }

    /// A variable's type: one boxed `Type` per list level (`[[Int!]]`: two).
    fn list_levels(ty: &Type) -> u64 {
        match &ty.base {
            BaseType::List(inner) => 1 + list_levels(inner),
            BaseType::Named(_) => 0,
        }
    }

    fn directives(list: &[Positioned<Directive>]) -> u64 {
        list.iter().map(|d| 1 + arguments(&d.node.arguments)).sum()
    }

    fn arguments(list: &[(Positioned<Name>, Positioned<Value>)]) -> u64 {
        list.iter().map(|(_, v)| 1 + value(&v.node)).sum()
    }

    fn value(v: &Value) -> u64 {
        1 + match v {
            Value::List(items) => items.iter().map(value).sum(),
            Value::Object(fields) => fields.values().map(|f| 1 + value(f)).sum(),
            _ => 0,
        }
    }

    fn const_value(v: &ConstValue) -> u64 {
        1 + match v {
            ConstValue::List(items) => items.iter().map(const_value).sum(),
            ConstValue::Object(fields) => fields.values().map(|f| 1 + const_value(f)).sum(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str) -> Result<(), String> {
        let limits = DocumentLimits::with(3, 4, None);
        let doc = async_graphql::parser::parse_query(query).unwrap();
        limits.check(&doc).map_err(|e| e.message)
    }

    /// `prepare`'s outcome for `query`: the refusal's message, or the document it handed over.
    fn prepare(limits: &DocumentLimits, query: &str) -> Result<ExecutableDocument, String> {
        let mut request = Request::new(query);
        match limits.prepare(&mut request).1 {
            Some(refused) => Err(refused.errors[0].message.clone()),
            None => Ok(request.parsed_query().expect("handed over").clone()),
        }
    }

    #[test]
    fn documents_that_passed_are_kept_parsed_and_nothing_else_is() {
        let limits = DocumentLimits::with(3, 4, None);
        let query =
            "query Q($n: Int) { me { id } models { id } } fragment F on Query { usage { calls } }";
        let first = prepare(&limits, query).unwrap();
        assert_eq!(limits.passed.len(), 1);
        // Sent again, it comes from the cache: the same document (the same operations, the
        // same fragments, as the parser gives them).
        let again = prepare(&limits, query).unwrap();
        assert_eq!(format!("{again:?}"), format!("{first:?}"));
        assert_eq!(limits.passed.len(), 1);
        // Refused or unparsable: parsed (and refused) each time, never kept.
        let refused = "{ a: me { id } b: me { id } c: me { id } d: me { id } }";
        for _ in 0..2 {
            assert!(
                prepare(&limits, refused)
                    .unwrap_err()
                    .contains("alias at most 3")
            );
            assert!(prepare(&limits, "{ me { id }").is_err());
        }
        // Too many nodes or too much text to keep (one root field and no alias: the limits
        // let them through).
        let large = format!("{{ me {{{} }} }}", " id".repeat(MAX_CACHED_NODES as usize));
        prepare(&limits, &large).unwrap();
        let long = format!("{{ me {{ id }} }} # {}", "x".repeat(MAX_CACHED_TEXT));
        prepare(&limits, &long).unwrap();
        assert_eq!(limits.passed.len(), 1);
    }

    /// The parsed documents of the shapes that take the most memory per node stay within
    /// [`NODE_BYTES`] a node (plus their text, for string values).
    #[test]
    fn node_bytes_bound_what_a_parsed_document_takes() {
        let n = 300;
        let each = |piece: &str| piece.repeat(n);
        let shapes = [
            format!("{{{}}}", each(" a")),
            format!("{{{}}}", each("a{b}")),
            format!("{}{}", "{a".repeat(30), "}".repeat(30)),
            format!("{{{}}}", each("a(b:1)")),
            format!("{{{}}}", each("a(b:[1])")),
            format!("{{{}}}", each("a(b:{c:1})")),
            format!("{{{}}}", each("a@b(c:1)")),
            format!("{{{}}}", each("...on A{b}")),
            format!("{{{}}}", each("...F")),
            format!("{{{}}}", each(r#"a(b:"a string value of some length")"#)),
            format!(
                "query({}){{a}}",
                (0..n).map(|i| format!("$v{i}:[A!]=[1]")).collect::<String>()
            ),
            format!(
                "query({}){{a}}",
                (0..n)
                    .map(|i| format!("$v{i}:{}A{}", "[".repeat(100), "]".repeat(100)))
                    .collect::<String>()
            ),
            format!("{{a(b:\"{}\")}}", "x".repeat(100_000)),
            format!("{{{}:a}}", "x".repeat(100_000)),
            format!(
                "{{a}}{}",
                (0..n)
                    .map(|i| format!("fragment F{i} on A{{a}}"))
                    .collect::<String>()
            ),
            (0..n).map(|i| format!("query Q{i}{{a}}")).collect(),
            "query($after: String) { history(first: 20, after: $after) { nodes { id model status createdAt user { id email profile { defaultModel tokensUsedThisMonth } } } pageInfo { hasNextPage endCursor } } }".to_owned(),
        ];
        for query in shapes {
            let (doc, held) =
                counting::held_by(|| async_graphql::parser::parse_query(&query).unwrap());
            assert!(held > 0, "the counting allocator saw the parse");
            let taken = held + std::mem::size_of_val(&doc) as u64;
            let bound = nodes::count(&doc) * NODE_BYTES + 2 * query.len() as u64;
            assert!(
                taken <= bound,
                "{}...: {taken} bytes, bound {bound}",
                &query[..40.min(query.len())]
            );
        }
    }

    /// This unit-test binary's allocator: the system's, counting what the calling thread
    /// allocates while [`counting::held_by`] runs (other tests run on other threads).
    #[allow(unsafe_code)] // a `GlobalAlloc` (an unsafe trait) over the system's, for this test only
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static HELD: Cell<Option<i64>> = const { Cell::new(None) };
        }

        fn add(bytes: i64) {
            let _ = HELD.try_with(|held| {
                if let Some(n) = held.get() {
                    held.set(Some(n + bytes));
                }
            });
        }

        struct Counting;

        // SAFETY: the system allocator's calls, unchanged; the count touches only a
        // thread-local `Cell`, which neither allocates nor unwinds.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                add(layout.size() as i64);
                unsafe { System.alloc(layout) }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                add(-(layout.size() as i64));
                unsafe { System.dealloc(ptr, layout) }
            }

            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                add(new_size as i64 - layout.size() as i64);
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static ALLOCATOR: Counting = Counting;

        /// `f`'s result, and the bytes this thread allocated in it and still holds.
        pub fn held_by<T>(f: impl FnOnce() -> T) -> (T, u64) {
            HELD.with(|held| held.set(Some(0)));
            let out = f();
            let held = HELD.with(|held| held.take()).unwrap_or(0);
            (out, held.max(0) as u64)
        }
    }

    #[test]
    fn brackets_count_outside_strings_and_comments_only() {
        let deep = |n: usize| format!("{{a(b:{}1{})}}", "[".repeat(n), "]".repeat(n));
        // The document's own braces and parentheses count: two levels around the list.
        assert!(!nests_deeper_than(&deep(126), MAX_NESTING));
        assert!(nests_deeper_than(&deep(127), MAX_NESTING));
        let b = "[".repeat(200);
        for text in [
            format!(r#"{{a(b:"{b}")}}"#),
            format!(r#"{{a(b:"\"{b}\\")}}"#),
            format!(r#"{{a(b:"""{b}\"""{b}""")}}"#),
            format!("{{a}} # {b}"),
            format!("# {b}\n{{a}}"),
        ] {
            assert!(!nests_deeper_than(&text, MAX_NESTING), "{text}");
        }
        // A string or comment ends where the parser's does: what follows counts again.
        for text in [
            format!(r#"{{a(b:"x"){b}"#),
            format!("# x\n{b}"),
            format!(r#"{{a(b:"""x\"""y"""){b}"#),
        ] {
            assert!(nests_deeper_than(&text, MAX_NESTING), "{text}");
        }
        // Unterminated strings and closers before openers do not trip the scan.
        assert!(!nests_deeper_than(r#"{a(b:"x\"#, MAX_NESTING));
        assert!(!nests_deeper_than(r#"{a(b:"""x"#, MAX_NESTING));
        assert!(!nests_deeper_than("]]]}}}))){a}", MAX_NESTING));
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
