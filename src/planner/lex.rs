//! Just enough lexing to see what a statement does to session state the proxy tracks
//! (the current database) without a full parse.

/// Skips whitespace and comments (`/* */`, `-- `, `#`) at the start of a statement.
pub fn skip_noise(sql: &[u8]) -> &[u8] {
    let mut s = sql;
    loop {
        let t = s.trim_ascii_start();
        if let Some(rest) = t.strip_prefix(b"/*") {
            // MySQL executable comments (/*! ... */) are code, not noise.
            if rest.first() == Some(&b'!') {
                return t;
            }
            match rest.windows(2).position(|w| w == b"*/") {
                Some(i) => s = &rest[i + 2..],
                None => return &[],
            }
        } else if t.starts_with(b"-- ") || t.starts_with(b"#") {
            match t.iter().position(|&b| b == b'\n') {
                Some(i) => s = &t[i + 1..],
                None => return &[],
            }
        } else {
            return t;
        }
    }
}

/// The database named by a `USE db` statement, unquoted.
pub fn use_database(sql: &[u8]) -> Option<String> {
    let s = skip_noise(sql);
    if s.len() < 4 || !s[..3].eq_ignore_ascii_case(b"use") || !s[3].is_ascii_whitespace() {
        return None;
    }
    let rest = s[3..].trim_ascii();
    let rest = rest.strip_suffix(b";").unwrap_or(rest).trim_ascii_end();
    let name = if let Some(q) = rest.strip_prefix(b"`") {
        let inner = q.strip_suffix(b"`")?;
        String::from_utf8_lossy(inner).replace("``", "`")
    } else {
        if rest.iter().any(|b| b.is_ascii_whitespace() || *b == b';') {
            return None;
        }
        String::from_utf8_lossy(rest).into_owned()
    };
    (!name.is_empty()).then_some(name)
}

/// Whether a statement is `DROP DATABASE` / `DROP SCHEMA`: MariaDB leaves the connection that
/// ran it with no database selected when it dropped the current one.
pub fn drops_database(sql: &[u8]) -> bool {
    let s = skip_noise(sql);
    let mut words = s
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    matches!(words.next(), Some(w) if w.eq_ignore_ascii_case(b"drop"))
        && matches!(words.next(), Some(w) if w.eq_ignore_ascii_case(b"database") || w.eq_ignore_ascii_case(b"schema"))
}

/// Whether a statement is `CREATE [OR REPLACE] TEMPORARY ...` or `DROP TEMPORARY ...`: DDL
/// that MariaDB runs without committing the open transaction.
pub fn temporary_ddl(sql: &[u8]) -> bool {
    let s = skip_noise(sql);
    let mut words = s
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    matches!(words.next(), Some(w) if w.eq_ignore_ascii_case(b"create") || w.eq_ignore_ascii_case(b"drop"))
        && words.take(3).any(|w| w.eq_ignore_ascii_case(b"temporary"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_temporary_ddl() {
        assert!(temporary_ddl(b"CREATE TEMPORARY TABLE t (id INT)"));
        assert!(temporary_ddl(
            b"create or replace temporary table t (id int)"
        ));
        assert!(temporary_ddl(b"/* x */ DROP TEMPORARY TABLE IF EXISTS t"));
        assert!(!temporary_ddl(b"CREATE TABLE temporary_x (id INT)"));
        assert!(!temporary_ddl(b"DROP TABLE t"));
    }

    #[test]
    fn finds_database_drops() {
        assert!(drops_database(b"DROP DATABASE x"));
        assert!(drops_database(b" /* c */ drop\n schema IF EXISTS x"));
        assert!(!drops_database(b"DROP TABLE x"));
        assert!(!drops_database(b"SELECT 'drop database'"));
    }

    #[test]
    fn finds_use_statements_only() {
        assert_eq!(use_database(b"USE app").as_deref(), Some("app"));
        assert_eq!(
            use_database(b"  /* hi */ use `my``db`;").as_deref(),
            Some("my`db")
        );
        assert_eq!(use_database(b"-- c\nuse x ;").as_deref(), Some("x"));
        assert_eq!(use_database(b"user_defined()"), None);
        assert_eq!(use_database(b"select 1"), None);
        assert_eq!(use_database(b"use a; select 1"), None);
        assert_eq!(skip_noise(b"/*! STRAIGHT_JOIN */"), b"/*! STRAIGHT_JOIN */");
        assert_eq!(skip_noise(b"/* unterminated"), b"");
    }
}

/// Rewrites reads of `@@socket` to NULL.
///
/// Drivers such as mysql_async read `@@socket` after connecting over TCP to 127.0.0.1 and,
/// when it names a socket file, reconnect through it: on a host shared with MariaDB that
/// would silently bypass the proxy. The proxy has no socket file, so the honest answer is NULL.
/// Quoted strings, identifiers and comments are left alone.
pub fn hide_socket_variable(sql: &[u8]) -> Option<Vec<u8>> {
    const VAR: &[u8] = b"@@socket";
    if !sql.windows(VAR.len()).any(|w| w.eq_ignore_ascii_case(VAR)) {
        return None;
    }
    let mut out = Vec::with_capacity(sql.len() + 16);
    let mut i = 0;
    let mut changed = false;
    while i < sql.len() {
        let c = sql[i];
        match c {
            b'\'' | b'"' | b'`' => {
                let end = quoted_end(sql, i);
                out.extend_from_slice(&sql[i..end]);
                i = end;
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                let end = find(sql, i + 2, b"*/").map_or(sql.len(), |e| e + 2);
                out.extend_from_slice(&sql[i..end]);
                i = end;
            }
            b'@' if sql.len() >= i + VAR.len()
                && sql[i..i + VAR.len()].eq_ignore_ascii_case(VAR)
                && !sql
                    .get(i + VAR.len())
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$') =>
            {
                i += VAR.len();
                let next = skip_noise(&sql[i..]);
                let aliased = next
                    .first()
                    .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'`')
                    && !starts_with_keyword(next, b"from");
                out.extend_from_slice(if aliased {
                    b"NULL"
                } else {
                    b"NULL AS `@@socket`"
                });
                changed = true;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

/// Index just past the closing quote of the quoted run starting at `start` (backslash escapes
/// and doubled quotes honoured); the end of input if unterminated.
fn quoted_end(sql: &[u8], start: usize) -> usize {
    let q = sql[start];
    let mut i = start + 1;
    while i < sql.len() {
        if sql[i] == b'\\' && q != b'`' {
            i += 2;
        } else if sql[i] == q {
            if sql.get(i + 1) == Some(&q) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    sql.len()
}

/// Where `needle` first occurs in `hay` at or after `from`.
pub(crate) fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn starts_with_keyword(s: &[u8], kw: &[u8]) -> bool {
    s.len() >= kw.len()
        && s[..kw.len()].eq_ignore_ascii_case(kw)
        && !s
            .get(kw.len())
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

#[cfg(test)]
mod socket_tests {
    use super::hide_socket_variable as hide;

    #[test]
    fn socket_reads_become_null_and_nothing_else_changes() {
        let s = |v: &[u8]| hide(v).map(|o| String::from_utf8(o).expect("utf8"));
        assert_eq!(
            s(b"SELECT @@max_allowed_packet,@@wait_timeout,@@socket").as_deref(),
            Some("SELECT @@max_allowed_packet,@@wait_timeout,NULL AS `@@socket`")
        );
        assert_eq!(s(b"select @@SOCKET s").as_deref(), Some("select NULL s"));
        assert_eq!(
            s(b"select @@socket from dual").as_deref(),
            Some("select NULL AS `@@socket` from dual")
        );
        assert_eq!(s(b"select '@@socket', `@@socket` /* @@socket */"), None);
        assert_eq!(s(b"select @@socket_x"), None);
        assert_eq!(s(b"select 1"), None);
    }
}

/// What a `KILL` statement targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    /// `KILL QUERY` stops the running statement; otherwise the connection is closed.
    pub query_only: bool,
    /// `HARD` / `SOFT` as written (MariaDB), passed on to the server.
    pub modifier: Option<&'static str>,
    pub id: u64,
}

/// Parses `KILL [HARD|SOFT] [CONNECTION|QUERY] id`. `KILL QUERY ID n` (a query id) and
/// `KILL USER name` are not thread ids and give `None`.
pub fn kill_statement(sql: &[u8]) -> Option<Kill> {
    let s = skip_noise(sql);
    if !starts_with_keyword(s, b"kill") {
        return None;
    }
    let text = std::str::from_utf8(s).ok()?;
    let text = text.trim().trim_end_matches(';').trim();
    let mut words = text.split_ascii_whitespace().peekable();
    if !words.next()?.eq_ignore_ascii_case("kill") {
        return None;
    }
    let mut modifier = None;
    if let Some(w) = words.peek() {
        if w.eq_ignore_ascii_case("hard") {
            modifier = Some("HARD");
        } else if w.eq_ignore_ascii_case("soft") {
            modifier = Some("SOFT");
        }
        if modifier.is_some() {
            words.next();
        }
    }
    let mut query_only = false;
    if let Some(w) = words.peek() {
        if w.eq_ignore_ascii_case("query") {
            query_only = true;
            words.next();
        } else if w.eq_ignore_ascii_case("connection") {
            words.next();
        }
    }
    let id = words.next()?.parse().ok()?;
    words.next().is_none().then_some(Kill {
        query_only,
        modifier,
        id,
    })
}

#[cfg(test)]
mod kill_tests {
    use super::*;

    #[test]
    fn kill_forms() {
        let k = |s: &[u8]| kill_statement(s);
        assert_eq!(
            k(b"KILL 12"),
            Some(Kill {
                query_only: false,
                modifier: None,
                id: 12
            })
        );
        assert_eq!(
            k(b"kill query 7;"),
            Some(Kill {
                query_only: true,
                modifier: None,
                id: 7
            })
        );
        assert_eq!(
            k(b"/* c */ KILL HARD CONNECTION 9"),
            Some(Kill {
                query_only: false,
                modifier: Some("HARD"),
                id: 9
            })
        );
        assert_eq!(k(b"KILL QUERY ID 5"), None);
        assert_eq!(k(b"KILL USER app"), None);
        assert_eq!(k(b"KILL 5 6"), None);
        assert_eq!(k(b"SELECT 'KILL 5'"), None);
    }
}

/// Whether a write returns rows (`INSERT`/`REPLACE`/`DELETE ... RETURNING`): MariaDB's
/// PREPARE_OK announces no columns for it.
pub fn returns_rows(sql: &[u8]) -> bool {
    crate::planner::digest::Lexer::new(sql).any(|t| {
        t.kind == crate::planner::digest::TokKind::Word
            && t.text(sql).eq_ignore_ascii_case(b"returning")
    })
}

#[test]
fn returning_is_a_keyword_not_text() {
    assert!(returns_rows(b"INSERT INTO t (id) VALUES (?) returning id"));
    assert!(returns_rows(b"DELETE FROM t WHERE id = ? RETURNING *"));
    assert!(!returns_rows(b"INSERT INTO t (v) VALUES ('RETURNING')"));
    assert!(!returns_rows(
        b"INSERT INTO t (`returning`) VALUES (?) /* RETURNING */"
    ));
}

/// How many `?` parameters a statement's text takes.
pub fn placeholders(sql: &[u8]) -> usize {
    crate::planner::digest::Lexer::new(sql)
        .filter(|t| t.kind == crate::planner::digest::TokKind::Placeholder)
        .count()
}
