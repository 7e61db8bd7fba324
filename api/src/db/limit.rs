//! A LIMIT written into a statement's text instead of bound as a parameter, on PostgreSQL.
//!
//! PostgreSQL plans a prepared statement for its values five times, then keeps one plan made
//! blind to them if that plan costs no more than theirs did. Blind to a LIMIT, it costs the plan
//! for a tenth of the rows, which never wins: a statement whose LIMIT is a parameter is planned
//! again on every run, for as long as the connection lives. SeaORM binds every LIMIT
//! (`.limit(n)`, `.one()`), so the history feed's page was planned on every request: a third of
//! PostgreSQL's CPU on page 1 (`docs/performance.md`, "ninth round"). With the number in the
//! text, each page size is a statement of its own, planned five times and then reused.
//!
//! Only an integer SeaORM was given is written, never user text, and only where it is the
//! statement's last parameter and its last clause (`… LIMIT $n`); anything else is left as it
//! is. A feed's page sizes are capped (`MAX_PAGE`), so one feed's statement has at most a
//! hundred texts, each prepared once per connection. The pooled path (`inline`) writes every value into the text already; SQLite plans each
//! statement once when it is prepared.

use std::fmt::Write;

use sea_orm::{DbBackend, Statement, Value};

/// `stmt` with a trailing `LIMIT $n` (its last parameter) written as the number it binds.
pub fn written(mut stmt: Statement) -> Statement {
    if stmt.db_backend != DbBackend::Postgres {
        return stmt;
    }
    let Some(values) = stmt.values.as_mut() else {
        return stmt;
    };
    // Every statement on the direct path passes here: checked without allocating.
    let head = stmt.sql.trim_end_matches(|c: char| c.is_ascii_digit());
    let digits = &stmt.sql[head.len()..];
    if !head.ends_with(" LIMIT $") || digits.parse::<usize>() != Ok(values.0.len()) {
        return stmt;
    }
    let cut = head.len() - " LIMIT $".len();
    let limit = match values.0.last() {
        Some(Value::BigUnsigned(Some(n))) => *n,
        Some(Value::Unsigned(Some(n))) => u64::from(*n),
        Some(Value::BigInt(Some(n))) if *n >= 0 => *n as u64,
        Some(Value::Int(Some(n))) if *n >= 0 => *n as u64,
        _ => return stmt,
    };
    values.0.pop();
    stmt.sql.truncate(cut);
    let _ = write!(stmt.sql, " LIMIT {limit}");
    stmt
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::StatementBuilder;
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};

    fn select(limit: Option<u64>) -> sea_orm::sea_query::SelectStatement {
        let mut q = Query::select();
        q.column(Alias::new("id"))
            .from(Alias::new("prompt_logs"))
            .and_where(Expr::col(Alias::new("user_id")).eq("ada"));
        if let Some(n) = limit {
            q.limit(n);
        }
        q
    }

    #[test]
    fn a_trailing_limit_is_written_and_its_parameter_dropped() {
        let stmt = StatementBuilder::build(&select(Some(21)), &DbBackend::Postgres);
        assert!(stmt.sql.ends_with(" LIMIT $2"), "{}", stmt.sql);
        let stmt = written(stmt);
        assert_eq!(
            stmt.sql,
            r#"SELECT "id" FROM "prompt_logs" WHERE "user_id" = $1 LIMIT 21"#
        );
        assert_eq!(stmt.values.unwrap().0, [Value::from("ada")]);
    }

    #[test]
    fn anything_else_is_left_as_it_is() {
        // No LIMIT; SQLite; a LIMIT that is not the last clause.
        let none = StatementBuilder::build(&select(None), &DbBackend::Postgres);
        assert_eq!(written(none.clone()), none);
        let sqlite = StatementBuilder::build(&select(Some(21)), &DbBackend::Sqlite);
        assert_eq!(written(sqlite.clone()), sqlite);
        let mut locked = select(Some(1));
        locked.lock(sea_orm::sea_query::LockType::Update);
        let locked = StatementBuilder::build(&locked, &DbBackend::Postgres);
        assert!(!locked.sql.ends_with("LIMIT $2"), "{}", locked.sql);
        assert_eq!(written(locked.clone()), locked);
        // A text that ends so without binding a number there.
        let odd = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT $1 LIMIT $2",
            [Value::from("x"), Value::from("y")],
        );
        assert_eq!(written(odd.clone()), odd);
        // A trailing LIMIT whose placeholder is not the last parameter.
        let other = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT $2 LIMIT $1",
            [Value::BigUnsigned(Some(3)), Value::BigUnsigned(Some(4))],
        );
        assert_eq!(written(other.clone()), other);
    }
}
