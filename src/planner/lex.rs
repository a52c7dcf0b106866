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

#[cfg(test)]
mod tests {
    use super::*;

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
