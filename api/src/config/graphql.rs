//! `GRAPHQL_*`: limits and developer features of the GraphQL endpoint.

use super::env::Env;

/// Limits and developer features of the GraphQL endpoint.
#[derive(Clone, Debug)]
pub struct GraphqlConfig {
    /// `GRAPHQL_MAX_DEPTH` (default 16: the standard introspection query, which GraphiQL sends, is 14 deep).
    pub max_depth: usize,
    /// `GRAPHQL_MAX_COMPLEXITY` (default 5000): fields counted, lists by their page size.
    pub max_complexity: usize,
    /// `GRAPHQL_MAX_RECURSIVE_DEPTH` (default 32): nesting the parser accepts at all.
    pub max_recursive_depth: usize,
    /// `GRAPHQL_MAX_ALIASES` (default 30): aliased fields in one document.
    pub max_aliases: usize,
    /// `GRAPHQL_MAX_ROOT_FIELDS` (default 20): root fields of one operation, aliases included.
    pub max_root_fields: usize,
    /// `GRAPHQL_MAX_DIRECTIVES` (default 5): directives on one field.
    pub max_directives: usize,
    /// `GRAPHQL_MAX_BODY_BYTES` (default 1 MiB): largest request body or WebSocket message.
    pub max_body_bytes: usize,
    /// `GRAPHQL_INTROSPECTION` (default true): turn off in production to hide the schema.
    pub introspection: bool,
    /// `GRAPHQL_IDE` (default true): serve GraphiQL to browsers on `GET /graphql`.
    pub ide: bool,
}

impl GraphqlConfig {
    pub fn read(env: &mut Env) -> Self {
        let at_least_one = |n: &usize| *n >= 1;
        GraphqlConfig {
            max_depth: env.parse_where(
                "GRAPHQL_MAX_DEPTH",
                16,
                at_least_one,
                "a whole number of at least 1",
            ),
            max_complexity: env.parse_where(
                "GRAPHQL_MAX_COMPLEXITY",
                5000,
                at_least_one,
                "a whole number of at least 1",
            ),
            max_recursive_depth: env.parse_where(
                "GRAPHQL_MAX_RECURSIVE_DEPTH",
                32,
                at_least_one,
                "a whole number of at least 1",
            ),
            max_aliases: env.parse_where("GRAPHQL_MAX_ALIASES", 30, |_| true, "a whole number"),
            max_root_fields: env.parse_where(
                "GRAPHQL_MAX_ROOT_FIELDS",
                20,
                at_least_one,
                "a whole number of at least 1",
            ),
            max_directives: env.parse_where(
                "GRAPHQL_MAX_DIRECTIVES",
                5,
                |_| true,
                "a whole number",
            ),
            max_body_bytes: env.parse_where(
                "GRAPHQL_MAX_BODY_BYTES",
                1024 * 1024,
                |n| *n >= 1024,
                "a number of bytes of at least 1024",
            ),
            introspection: env.flag("GRAPHQL_INTROSPECTION", true),
            ide: env.flag("GRAPHQL_IDE", true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let mut e = Env::new(Default::default());
        let c = GraphqlConfig::read(&mut e);
        assert_eq!(
            (c.max_depth, c.max_complexity, c.max_body_bytes),
            (16, 5000, 1 << 20)
        );
        assert!(c.introspection && c.ide);
        let mut e = Env::new(
            [("GRAPHQL_MAX_BODY_BYTES", "1023"), ("GRAPHQL_IDE", "off")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        );
        let c = GraphqlConfig::read(&mut e);
        assert_eq!(e.problems.len(), 1);
        assert!(!c.ide);
    }
}
