//! Statements for a transaction-mode pooler: parameters rendered into the SQL as typed literals,
//! sent over PostgreSQL's simple query protocol.
//!
//! Why: behind PgBouncer in transaction mode a server connection is lent per transaction. The
//! extended protocol that sqlx (and so SeaORM) uses sends Parse/Describe and Bind/Execute as two
//! exchanges, each ending in a Sync, and a pooler may hand them to different servers; named
//! statements left on one server collide with another client's (docs/pooling.md).
//! A simple-protocol `Query` message is self-contained: one message, one round trip, no state
//! left behind, on every pooler version. This is what Rails (`prepared_statements: false`) and
//! pgx (`QueryExecModeSimpleProtocol`) do for the same reason.
//!
//! Each value becomes `CAST(<literal> AS <type>)`, with the type sqlx would have declared when
//! binding it, so the server resolves operators and functions exactly as it would for the
//! prepared statement. Strings are written as `E'...'` escape strings in ASCII only (backslash
//! and quote doubled, other characters as `\uXXXX` escapes), which mean the same whatever
//! `standard_conforming_strings`, `backslash_quote` or the session's `client_encoding` is. A NUL
//! character is refused, as PostgreSQL refuses it in a bound text value.
//!
//! No crate does this for sqlx: sea-query can inline values (`to_string`), but without the
//! types sqlx binds with, so overloaded functions and `unknown`-typed literals could resolve
//! differently from the prepared path. `tests` below check the rendering;
//! `tests/tests/api/pooling.rs` round-trips awkward values through a real server.

use std::fmt::Write as _;

use sea_orm::sea_query::{ArrayType, OptionEnum, Value};
use sea_orm::{DbErr, RuntimeErr, Statement};

/// The SQL of `stmt` with every `$n` placeholder replaced by its value.
pub fn render(stmt: &Statement) -> Result<String, DbErr> {
    let values = stmt.values.as_ref().map(|v| v.0.as_slice()).unwrap_or(&[]);
    if values.is_empty() {
        return Ok(stmt.sql.clone());
    }
    let literals = values
        .iter()
        .map(literal)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DbErr::Query(RuntimeErr::Internal(e)))?;
    let sql =
        substitute(&stmt.sql, &literals).map_err(|e| DbErr::Query(RuntimeErr::Internal(e)))?;
    // Literals are ASCII (see `quote`); so is every statement this server writes. Checked
    // here so that a statement could not be misread in a client-only encoding either.
    if !sql.is_ascii() {
        return Err(DbErr::Query(RuntimeErr::Internal(
            "a statement for the pooled path contains non-ASCII text outside its values".into(),
        )));
    }
    Ok(sql)
}

/// Replace `$1`, `$2`... outside string literals, quoted identifiers and comments.
fn substitute(sql: &str, literals: &[String]) -> Result<String, String> {
    let b = sql.as_bytes();
    let mut out =
        String::with_capacity(sql.len() + literals.iter().map(String::len).sum::<usize>());
    let mut i = 0;
    let mut copied = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    while i < b.len() {
        match b[i] {
            b'\'' => {
                // E'...' (backslash escapes) if the quote follows a lone E; else standard.
                let escape =
                    i > 0 && (b[i - 1] == b'E' || b[i - 1] == b'e') && (i < 2 || !ident(b[i - 2]));
                i = skip_quoted(b, i + 1, b'\'', escape)?;
            }
            b'"' => i = skip_quoted(b, i + 1, b'"', false)?,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                loop {
                    if i + 1 >= b.len() {
                        return Err("unterminated block comment".into());
                    }
                    if b[i] == b'/' && b[i + 1] == b'*' {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b[i + 1] == b'/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'$' if i == 0 || !ident(b[i - 1]) => {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits > 0 {
                    let n: usize = sql[i + 1..i + 1 + digits]
                        .parse()
                        .map_err(|_| "placeholder number out of range".to_owned())?;
                    let literal = n
                        .checked_sub(1)
                        .and_then(|k| literals.get(k))
                        .ok_or_else(|| format!("${n} has no value ({} given)", literals.len()))?;
                    out.push_str(&sql[copied..i]);
                    out.push_str(literal);
                    i += 1 + digits;
                    copied = i;
                } else {
                    // A dollar-quoted string: $tag$ ... $tag$.
                    let tag_len = b[i + 1..]
                        .iter()
                        .take_while(|&&c| ident(c) && c != b'$')
                        .count();
                    if b.get(i + 1 + tag_len) == Some(&b'$') {
                        let tag = &sql[i..i + tag_len + 2];
                        let body = i + tag.len();
                        let end = sql[body..]
                            .find(tag)
                            .ok_or_else(|| "unterminated dollar-quoted string".to_owned())?;
                        i = body + end + tag.len();
                    } else {
                        i += 1;
                    }
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    Ok(out)
}

/// The index just past the closing `quote` of a literal whose body starts at `i`.
fn skip_quoted(
    b: &[u8],
    mut i: usize,
    quote: u8,
    backslash_escapes: bool,
) -> Result<usize, String> {
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
        } else if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Ok(i + 1);
            }
        } else {
            i += 1;
        }
    }
    Err("unterminated quoted literal or identifier".into())
}

/// `CAST(<literal> AS <type>)` for one value, the type being the one sqlx binds it as.
fn literal(value: &Value) -> Result<String, String> {
    fn cast(text: Option<String>, ty: &str) -> String {
        match text {
            Some(t) => format!("CAST({} AS {ty})", quote(&t)),
            None => format!("CAST(NULL AS {ty})"),
        }
    }
    fn float(f: f64) -> String {
        if f.is_nan() {
            "NaN".into()
        } else if f.is_infinite() {
            if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
        } else {
            f.to_string()
        }
    }
    fn date_ok(year: i32) -> Result<(), String> {
        if (1..=9999).contains(&year) {
            Ok(())
        } else {
            Err(format!("year {year} is outside 1..=9999"))
        }
    }
    use chrono::Datelike;
    let s = |v: &dyn ToString| v.to_string();
    let rendered = match value {
        Value::Bool(v) => cast(v.map(|b| s(&b)), "bool"),
        Value::SmallInt(v) => cast(v.map(|n| s(&n)), "int2"),
        Value::Int(v) => cast(v.map(|n| s(&n)), "int4"),
        Value::BigInt(v) => cast(v.map(|n| s(&n)), "int8"),
        Value::TinyUnsigned(v) => cast(v.map(|n| s(&n)), "int2"),
        Value::SmallUnsigned(v) => cast(v.map(|n| s(&n)), "int4"),
        Value::Unsigned(v) => cast(v.map(|n| s(&n)), "int8"),
        Value::BigUnsigned(v) => {
            if v.is_some_and(|n| i64::try_from(n).is_err()) {
                return Err("an unsigned value above the int8 range".into());
            }
            cast(v.map(|n| s(&n)), "int8")
        }
        Value::Float(v) => cast(v.map(|f| float(f64::from(f))), "float4"),
        Value::Double(v) => cast(v.map(float), "float8"),
        Value::String(v) => cast(v.clone(), "text"),
        Value::Char(v) => cast(v.map(|c| c.to_string()), "text"),
        Value::Enum(e) => match e {
            OptionEnum::Some(v) => cast(Some(v.value.to_string()), "text"),
            OptionEnum::None(_) => cast(None, "text"),
        },
        Value::Bytes(v) => cast(
            v.as_ref().map(|bytes| {
                let mut t = String::with_capacity(2 + bytes.len() * 2);
                t.push_str("\\x");
                for byte in bytes.iter() {
                    let _ = write!(t, "{byte:02x}");
                }
                t
            }),
            "bytea",
        ),
        Value::Json(v) => cast(v.as_ref().map(|j| j.to_string()), "jsonb"),
        Value::ChronoDate(v) => {
            if let Some(d) = v {
                date_ok(d.year())?;
            }
            cast(v.map(|d| d.format("%Y-%m-%d").to_string()), "date")
        }
        Value::ChronoTime(v) => cast(v.map(|t| t.format("%H:%M:%S%.f").to_string()), "time"),
        Value::ChronoDateTime(v) => {
            if let Some(d) = v {
                date_ok(d.year())?;
            }
            cast(
                v.map(|d| d.format("%Y-%m-%d %H:%M:%S%.f").to_string()),
                "timestamp",
            )
        }
        Value::ChronoDateTimeUtc(v) => {
            if let Some(d) = v {
                date_ok(d.year())?;
            }
            cast(v.map(|d| utc_text(d.naive_utc())), "timestamptz")
        }
        Value::ChronoDateTimeLocal(v) => {
            if let Some(d) = v {
                date_ok(d.year())?;
            }
            cast(v.map(|d| utc_text(d.naive_utc())), "timestamptz")
        }
        Value::ChronoDateTimeWithTimeZone(v) => {
            if let Some(d) = v {
                date_ok(d.year())?;
            }
            cast(v.map(|d| utc_text(d.naive_utc())), "timestamptz")
        }
        Value::Uuid(v) => cast(v.map(|u| u.hyphenated().to_string()), "uuid"),
        // `CAST(ARRAY[<literal>, ...] AS <type>[])`: each element as it would be alone.
        Value::Array(ty, items) => {
            let ty = element_type(ty)?;
            match items {
                None => format!("CAST(NULL AS {ty}[])"),
                Some(items) => {
                    let items = items.iter().map(literal).collect::<Result<Vec<_>, _>>()?;
                    format!("CAST(ARRAY[{}] AS {ty}[])", items.join(","))
                }
            }
        }
        // i8 is PostgreSQL's one-byte "char" in sqlx; nothing here binds one, and the other
        // kinds (decimal, time crate, ...) are not used by this server either. Refusing
        // is better than guessing a type the prepared path would not have used.
        other => return Err(format!("no simple-protocol rendering for {other:?}")),
    };
    // A NUL would end the protocol's C string early; PostgreSQL refuses it in a bound text
    // value too ("invalid byte sequence for encoding UTF8: 0x00").
    if rendered.contains('\0') {
        return Err(
            "a string value contains a NUL character, which PostgreSQL does not store".into(),
        );
    }
    Ok(rendered)
}

/// The element type sqlx binds an array of `ty` with (the types [`literal`] renders).
fn element_type(ty: &ArrayType) -> Result<&'static str, String> {
    Ok(match ty {
        ArrayType::Bool => "bool",
        ArrayType::SmallInt => "int2",
        ArrayType::Int => "int4",
        ArrayType::BigInt => "int8",
        ArrayType::Float => "float4",
        ArrayType::Double => "float8",
        ArrayType::String | ArrayType::Enum(_) => "text",
        ArrayType::Bytes => "bytea",
        ArrayType::Json => "jsonb",
        ArrayType::ChronoDate => "date",
        ArrayType::ChronoTime => "time",
        ArrayType::ChronoDateTime => "timestamp",
        ArrayType::ChronoDateTimeUtc => "timestamptz",
        ArrayType::Uuid => "uuid",
        other => {
            return Err(format!(
                "no simple-protocol rendering for arrays of {other:?}"
            ));
        }
    })
}

/// A UTC instant as `YYYY-MM-DD HH:MM:SS.ffffff+00:00` (exact for any offset, even one with
/// seconds, which `%:z` would round).
fn utc_text(t: chrono::NaiveDateTime) -> String {
    format!("{}+00:00", t.format("%Y-%m-%d %H:%M:%S%.f"))
}

/// `E'...'` in ASCII only: backslashes and quotes doubled, every character outside ASCII
/// written as a `\uXXXX` / `\UXXXXXXXX` escape. NUL is refused (by the caller), as the server
/// would.
///
/// Why ASCII: the server reads the statement in the connection's `client_encoding`. In a
/// client-only encoding such as SJIS or BIG5, the second byte of a multibyte character may be
/// 0x5C (`\`): a value whose UTF-8 ends in a byte the server takes for a lead byte would swallow
/// the backslash that escapes a quote, and with `backslash_quote = on` the rest of the value
/// would run as SQL. ASCII reads the same in every encoding PostgreSQL accepts from a client,
/// so the literal cannot be misread whatever the session says. The server decodes the escapes
/// into the same characters (it runs in UTF-8, which every supported setup does).
fn quote(text: &str) -> String {
    let mut q = String::with_capacity(text.len() + 3);
    q.push_str("E'");
    for c in text.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '\'' => q.push_str("''"),
            c if c.is_ascii() => q.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(q, "\\u{:04X}", u32::from(c));
            }
            c => {
                let _ = write!(q, "\\U{:08X}", u32::from(c));
            }
        }
    }
    q.push('\'');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(v: impl Into<Value>) -> String {
        literal(&v.into()).unwrap()
    }

    #[test]
    fn values_become_typed_literals() {
        assert_eq!(lit(42i64), "CAST(E'42' AS int8)");
        assert_eq!(lit(-7i32), "CAST(E'-7' AS int4)");
        assert_eq!(lit(true), "CAST(E'true' AS bool)");
        assert_eq!(lit(Option::<i64>::None), "CAST(NULL AS int8)");
        assert_eq!(lit("it's"), "CAST(E'it''s' AS text)");
        assert_eq!(
            lit("a\\'; DROP TABLE x; --"),
            "CAST(E'a\\\\''; DROP TABLE x; --' AS text)"
        );
        assert_eq!(lit(vec![0u8, 255]), "CAST(E'\\\\x00ff' AS bytea)");
        assert_eq!(lit(f64::NAN), "CAST(E'NaN' AS float8)");
        assert_eq!(lit(f64::NEG_INFINITY), "CAST(E'-Infinity' AS float8)");
        assert_eq!(lit(0.1f64), "CAST(E'0.1' AS float8)");
        let id = uuid::Uuid::nil();
        assert_eq!(
            lit(id),
            "CAST(E'00000000-0000-0000-0000-000000000000' AS uuid)"
        );
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T21:54:54.123456Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            lit(t),
            "CAST(E'2026-11-26 21:54:54.123456+00:00' AS timestamptz)"
        );
        assert_eq!(
            lit(serde_json::json!({"a": "b'c"})),
            "CAST(E'{\"a\":\"b''c\"}' AS jsonb)"
        );
        let east = chrono::DateTime::parse_from_rfc3339("2026-11-27T01:54:54.5+04:00").unwrap();
        assert_eq!(
            lit(east),
            "CAST(E'2026-11-26 21:54:54.500+00:00' AS timestamptz)"
        );
        assert!(literal(&Value::from("nul\0")).is_err());
        // Outside ASCII, escapes: the literal is ASCII in any client encoding.
        assert_eq!(lit("Á\\'"), "CAST(E'\\u00C1\\\\''' AS text)");
        assert_eq!(lit("ソ😀"), "CAST(E'\\u30BD\\U0001F600' AS text)");
        assert_eq!(
            lit(serde_json::json!({"k": "é"})),
            "CAST(E'{\"k\":\"\\u00E9\"}' AS jsonb)"
        );
        assert!(literal(&Value::BigUnsigned(Some(u64::MAX))).is_err());
        assert!(literal(&Value::TinyInt(Some(1))).is_err());
    }

    #[test]
    fn arrays_become_typed_arrays_of_typed_literals() {
        assert_eq!(
            lit(vec![1i32, -2]),
            "CAST(ARRAY[CAST(E'1' AS int4),CAST(E'-2' AS int4)] AS int4[])"
        );
        assert_eq!(
            lit(vec!["it's".to_owned()]),
            "CAST(ARRAY[CAST(E'it''s' AS text)] AS text[])"
        );
        assert_eq!(lit(Vec::<uuid::Uuid>::new()), "CAST(ARRAY[] AS uuid[])");
        assert_eq!(
            literal(&Value::Array(ArrayType::Json, None)).unwrap(),
            "CAST(NULL AS jsonb[])"
        );
        // An element that cannot be rendered fails the whole array.
        assert!(literal(&Value::from(vec!["nul\0".to_owned()])).is_err());
        assert!(literal(&Value::from(vec![u64::MAX])).is_err());
    }

    fn sub(sql: &str, n: usize) -> String {
        let literals: Vec<String> = (1..=n).map(|k| format!("<{k}>")).collect();
        substitute(sql, &literals).unwrap()
    }

    #[test]
    fn only_placeholders_outside_literals_are_replaced() {
        assert_eq!(sub("SELECT $1, $2, $1", 2), "SELECT <1>, <2>, <1>");
        assert_eq!(sub("x = $10", 10), "x = <10>");
        assert_eq!(sub("'$1' || $1", 1), "'$1' || <1>");
        assert_eq!(sub("'it''s $1' $1", 1), "'it''s $1' <1>");
        assert_eq!(sub("E'\\' $1' $1", 1), "E'\\' $1' <1>");
        assert_eq!(sub("\"c$1\" $1", 1), "\"c$1\" <1>");
        assert_eq!(sub("-- $1\n$1", 1), "-- $1\n<1>");
        assert_eq!(
            sub("/* $1 /* $1 */ $1 */ $1", 1),
            "/* $1 /* $1 */ $1 */ <1>"
        );
        assert_eq!(sub("$$ $1 $$ $q$ $1 $q$ $1", 1), "$$ $1 $$ $q$ $1 $q$ <1>");
        // `$` inside an identifier is part of it.
        assert_eq!(sub("a$1 $1", 1), "a$1 <1>");
        // A quote after an identifier ending in E is not an escape string.
        assert_eq!(sub("typE'\\' $1", 1), "typE'\\' <1>");
    }

    #[test]
    fn malformed_sql_or_missing_values_are_errors() {
        assert!(substitute("$2", &["x".into()]).is_err());
        assert!(substitute("$0", &["x".into()]).is_err());
        assert!(substitute("'open $1", &["x".into()]).is_err());
        assert!(substitute("/* open $1", &["x".into()]).is_err());
    }
}
