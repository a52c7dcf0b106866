//! Finding the values of secret keys (passwords, tokens) in TOML text, so that error messages
//! about a file can leave them out. A byte scan, not a parse: it must work on files that do
//! not parse.

/// A key whose value is a secret: `password`, `replication_password`, `admin_token`, ...
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("token") || k.contains("secret")
}

/// Every `key = value` in `line` whose key is secret: the value's text, quotes stripped.
/// Inline tables (`{ name = "a", password = "b" }`) are covered: keys are found anywhere.
fn secret_assignments(line: &str) -> Vec<String> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        // A key: a bare word, or a quoted one.
        let (key, mut j) = if is_word(b[i]) && (i == 0 || !is_word(b[i - 1])) {
            let end = (i..b.len()).find(|&k| !is_word(b[k])).unwrap_or(b.len());
            (&line[i..end], end)
        } else if b[i] == b'"' || b[i] == b'\'' {
            match line[i + 1..].find(b[i] as char) {
                Some(n) => (&line[i + 1..i + 1 + n], i + 2 + n),
                None => break,
            }
        } else {
            i += 1;
            continue;
        };
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && is_secret_key(key) {
            j += 1;
            while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                j += 1;
            }
            let rest = &line[j..];
            let value = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let body = &rest[1..];
                    body.find(q).map_or(body, |n| &body[..n])
                }
                _ => rest.split([',', '}', '#']).next().unwrap_or("").trim_end(),
            };
            if !value.is_empty() {
                out.push(value.to_string());
            }
        }
        i = j.max(i + 1);
    }
    out
}

/// The values of every secret key in `text`, longest first (so a value containing another is
/// replaced whole).
pub(super) fn values(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().flat_map(secret_assignments).collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v.dedup();
    v
}

/// Whether 1-based `line` of `text` assigns a secret key (its value may be what failed).
pub(super) fn line_has_secret(text: &str, line: usize) -> bool {
    text.lines().nth(line.saturating_sub(1)).is_some_and(|l| {
        let lower = l.to_ascii_lowercase();
        ["password", "token", "secret"]
            .iter()
            .any(|k| lower.contains(k))
    })
}

/// 1-based line and column of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_secret_values_in_plain_and_inline_tables() {
        let text = "name = \"app\"\npassword = \"hunter2\"\n\
                    users = [{ name = \"b\", 'admin_token' = 's3cr3t' }]\n\
                    replication_password = bare # comment\nport = 5\n";
        assert_eq!(values(text), vec!["hunter2", "s3cr3t", "bare"]);
        assert!(line_has_secret(text, 2));
        assert!(!line_has_secret(text, 1));
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 13), (2, 1));
        assert_eq!(line_col(text, 15), (2, 3));
    }
}
