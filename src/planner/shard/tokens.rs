//! What the shard planner reads from the token stream rather than the parse tree: SELECT
//! keywords (subqueries), placeholders by position, aggregate calls, and byte offsets.

use sqlparser::dialect::MySqlDialect;

/// What the planner needs from the token stream.
pub(super) struct Scanned {
    /// SELECT keywords outside strings and comments: subqueries, CTEs and UNIONs can read
    /// sharded tables from places the planner does not look.
    pub selects: usize,
    /// Where each `?` is, in order: a placeholder's number is its position here.
    pub placeholders: Vec<(u64, u64)>,
    /// An aggregate function is called somewhere (its per-shard results would need merging).
    pub aggregates: bool,
}

pub(super) fn scan(sql: &str) -> Option<Scanned> {
    use sqlparser::keywords::Keyword;
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&MySqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let mut out = Scanned {
        selects: 0,
        placeholders: Vec::new(),
        aggregates: false,
    };
    let significant: Vec<&Token> = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    out.aggregates = significant.windows(2).any(|w| {
        matches!((w[0], w[1]), (Token::Word(word), Token::LParen) if AGGREGATES.iter().any(|a| word.value.eq_ignore_ascii_case(a)))
    });
    for t in &tokens {
        match &t.token {
            Token::Word(w) if w.keyword == Keyword::SELECT => out.selects += 1,
            Token::Placeholder(_) => out
                .placeholders
                .push((t.span.start.line, t.span.start.column)),
            _ => {}
        }
    }
    Some(out)
}

/// Functions whose per-shard results cannot simply be concatenated.
pub(super) const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "group_concat",
    "std",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "bit_and",
    "bit_or",
    "bit_xor",
    "json_arrayagg",
    "json_objectagg",
];

thread_local! {
    /// The placeholders of the statement being planned (planning is synchronous).
    pub(super) static PLACEHOLDERS: std::cell::RefCell<Vec<(u64, u64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The number of the placeholder at `span`.
pub(super) fn placeholder_number(span: &sqlparser::tokenizer::Span) -> Option<usize> {
    let at = (span.start.line, span.start.column);
    PLACEHOLDERS.with(|p| p.borrow().iter().position(|x| *x == at))
}

/// A tokenizer location (1-based line and character column) as a byte offset.
pub(super) fn byte_offset(sql: &str, at: sqlparser::tokenizer::Location) -> Option<usize> {
    let line_start = if at.line <= 1 {
        0
    } else {
        sql.match_indices('\n')
            .nth(usize::try_from(at.line).ok()? - 2)
            .map(|(i, _)| i + 1)?
    };
    let col = usize::try_from(at.column).ok()?.checked_sub(1)?;
    let rest = &sql[line_start..];
    match rest.char_indices().nth(col) {
        Some((i, _)) => Some(line_start + i),
        None if rest.chars().count() == col => Some(line_start + rest.len()),
        None => None,
    }
}
