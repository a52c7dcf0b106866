//! Statement digests: a 64-bit hash of a statement's token stream with literals replaced by
//! `?`, so the classifier can cache one decision for every execution of the same statement
//! shape. The same single pass reads routing hints out of comments.
//!
//! The lexer here is also what the classifier uses to split multi-statement text, find
//! leading keywords and spot functions such as `GET_LOCK(` that sqlparser's AST would make us
//! walk for.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// A routing hint from a `/* shardgate:primary */` or `/* shardgate:replica */` comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    Primary,
    Replica,
}

/// A statement's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// Hash of the normalized token stream. Keyed once per process (SipHash with random
    /// keys): a client must not be able to craft a statement whose digest collides with
    /// another client's and so borrow that statement's cached routing. Not stable across
    /// restarts.
    pub hash: u64,
    /// The first routing hint found in a comment.
    pub hint: Option<Hint>,
}

/// Digest of `sql`: one pass, no allocation.
pub fn digest(sql: &[u8]) -> Digest {
    let mut lx = Lexer::new(sql);
    let mut sink = HashSink::new();
    canonicalize(&mut lx, &mut sink);
    Digest {
        hash: sink.finish(),
        hint: lx.hint,
    }
}

/// The token stream the digest hashes, as text for people and tests:
/// `SELECT c FROM sbtest1 WHERE id=4242` gives `select c from sbtest1 where id = ?`.
pub fn normalized(sql: &[u8]) -> String {
    let mut lx = Lexer::new(sql);
    let mut sink = TextSink::default();
    canonicalize(&mut lx, &mut sink);
    sink.out
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokKind {
    /// Unquoted identifier or keyword (also identifiers that start with a digit, `1t`).
    Word,
    /// `` `name` ``; the span covers the quotes.
    QuotedIdent,
    /// '…' or "…" (MariaDB's default sql_mode treats both as strings), with an optional
    /// `_charset` / `N` introducer included in the span.
    Str,
    Number,
    /// 0x1F, x'1F'.
    Hex,
    /// 0b01, b'01'.
    Bin,
    /// `?` (prepared statement text).
    Placeholder,
    /// `@name`, `@'name'`, `` @`name` ``; span covers the `@`.
    UserVar,
    /// `@@name`; span covers the `@@`. `@@session.x` lexes as `@@session`, `.`, `x`.
    SysVar,
    Punct,
    Semi,
    /// The `/*!NNNNN` opener or the `*/` closer of an executable comment: the content between
    /// them is ordinary tokens (MariaDB runs it), the markers themselves are not SQL.
    ExecMark,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tok {
    pub kind: TokKind,
    pub start: usize,
    pub end: usize,
}

impl Tok {
    pub(crate) fn text<'a>(&self, src: &'a [u8]) -> &'a [u8] {
        src.get(self.start..self.end).unwrap_or_default()
    }

    pub(crate) fn is_literal(&self) -> bool {
        matches!(
            self.kind,
            TokKind::Str | TokKind::Number | TokKind::Hex | TokKind::Bin | TokKind::Placeholder
        )
    }

    /// A keyword or unquoted identifier equal to `kw` (ASCII case-insensitive).
    pub(crate) fn is_kw(&self, src: &[u8], kw: &str) -> bool {
        self.kind == TokKind::Word && self.text(src).eq_ignore_ascii_case(kw.as_bytes())
    }

    pub(crate) fn is_punct(&self, src: &[u8], p: &str) -> bool {
        self.kind == TokKind::Punct && self.text(src) == p.as_bytes()
    }

    /// Name of a user or system variable, or an identifier, without `@`, `@@` or quotes
    /// (doubled quotes inside are left doubled).
    pub(crate) fn name<'a>(&self, src: &'a [u8]) -> &'a [u8] {
        let t = self.text(src);
        let t = match self.kind {
            TokKind::UserVar => t.get(1..).unwrap_or_default(),
            TokKind::SysVar => t.get(2..).unwrap_or_default(),
            _ => t,
        };
        match t.first() {
            Some(&q @ (b'\'' | b'"' | b'`')) if self.kind != TokKind::Word => {
                let inner = t.get(1..).unwrap_or_default();
                inner.strip_suffix(&[q]).unwrap_or(inner)
            }
            _ => t,
        }
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Tokenizer for MariaDB SQL. Never fails: unterminated strings, identifiers and comments run
/// to the end of input, and any other byte is a one-byte punctuation token.
pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    in_exec: bool,
    prev: Option<Tok>,
    /// An unterminated string or quoted identifier was seen: sqlparser rejects such text, so
    /// it must not share a digest with the well-formed statement it resembles. (Unterminated
    /// comments need no mark: the parser reads the text before them like ours does.)
    pub unterminated: bool,
    /// The first routing hint seen so far.
    pub hint: Option<Hint>,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(src: &'a [u8]) -> Self {
        Lexer {
            src,
            pos: 0,
            in_exec: false,
            prev: None,
            unterminated: false,
            hint: None,
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    fn tok(&mut self, kind: TokKind, start: usize, end: usize) -> Tok {
        let end = end.min(self.src.len());
        self.pos = end;
        let t = Tok { kind, start, end };
        self.prev = Some(t);
        t
    }

    fn comment(&mut self, body: &[u8]) {
        if self.hint.is_none() {
            self.hint = parse_hint(body);
        }
    }

    /// End (exclusive) of a quoted run starting at `start`; the end of input if unterminated.
    fn quoted_end(&mut self, start: usize, backslash: bool) -> usize {
        let q = self.at(start);
        let mut i = start + 1;
        while i < self.src.len() {
            let c = self.src[i];
            if backslash && c == b'\\' {
                i += 2;
            } else if c == q {
                if self.at(i + 1) == q {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        self.unterminated = true;
        self.src.len()
    }

    fn ident_end(&self, mut i: usize) -> usize {
        while i < self.src.len() && is_ident_byte(self.src[i]) {
            i += 1;
        }
        i
    }

    fn digits_end(&self, mut i: usize) -> usize {
        while i < self.src.len() && self.src[i].is_ascii_digit() {
            i += 1;
        }
        i
    }

    /// Decimal part and exponent after the integer digits ending at `i`.
    fn number_tail(&self, mut i: usize) -> usize {
        if self.at(i) == b'.' {
            i = self.digits_end(i + 1);
        }
        if matches!(self.at(i), b'e' | b'E') {
            let j = if matches!(self.at(i + 1), b'+' | b'-') {
                i + 2
            } else {
                i + 1
            };
            if self.at(j).is_ascii_digit() {
                i = self.digits_end(j);
            }
        }
        i
    }

    /// A run starting with a digit: a number, 0x/0b literal, or an identifier such as `1t`.
    fn number_or_word(&mut self, start: usize) -> Tok {
        let run_end = self.ident_end(start);
        let run = &self.src[start..run_end];
        if run.len() > 2 && run[0] == b'0' {
            let body = &run[2..];
            if run[1] == b'x' && body.iter().all(u8::is_ascii_hexdigit) {
                return self.tok(TokKind::Hex, start, run_end);
            }
            if run[1] == b'b' && body.iter().all(|b| *b == b'0' || *b == b'1') {
                return self.tok(TokKind::Bin, start, run_end);
            }
        }
        let int_end = self.digits_end(start);
        if int_end == run_end {
            let end = self.number_tail(int_end);
            return self.tok(TokKind::Number, start, end);
        }
        // 1e5 / 1e+5: the exponent letter is inside the identifier-character run.
        if matches!(self.at(int_end), b'e' | b'E') {
            let end = self.number_tail(int_end);
            if end > int_end + 1 && end >= run_end {
                return self.tok(TokKind::Number, start, end);
            }
        }
        self.tok(TokKind::Word, start, run_end)
    }

    fn word(&mut self, start: usize) -> Tok {
        let end = self.ident_end(start);
        let w = &self.src[start..end];
        let next = self.at(end);
        if next == b'\'' && w.len() == 1 {
            let kind = match w[0] {
                b'x' | b'X' => Some(TokKind::Hex),
                b'b' | b'B' => Some(TokKind::Bin),
                b'n' | b'N' => Some(TokKind::Str),
                _ => None,
            };
            if let Some(kind) = kind {
                let e = self.quoted_end(end, kind == TokKind::Str);
                return self.tok(kind, start, e);
            }
        }
        // `_utf8mb4'x'` / `_binary "x"`: a charset introducer belongs to its string.
        if w.len() > 1 && w[0] == b'_' {
            let mut j = end;
            while j < self.src.len() && self.src[j].is_ascii_whitespace() {
                j += 1;
            }
            if matches!(self.at(j), b'\'' | b'"') {
                let e = self.quoted_end(j, true);
                return self.tok(TokKind::Str, start, e);
            }
        }
        self.tok(TokKind::Word, start, end)
    }

    fn variable(&mut self, start: usize) -> Tok {
        if self.at(start + 1) == b'@' {
            let end = self.ident_end(start + 2);
            return self.tok(TokKind::SysVar, start, end);
        }
        match self.at(start + 1) {
            b'\'' | b'"' => {
                let e = self.quoted_end(start + 1, true);
                self.tok(TokKind::UserVar, start, e)
            }
            b'`' => {
                let e = self.quoted_end(start + 1, false);
                self.tok(TokKind::UserVar, start, e)
            }
            _ => {
                // MariaDB user variable names may contain '.'.
                let mut i = start + 1;
                while i < self.src.len() && (is_ident_byte(self.src[i]) || self.src[i] == b'.') {
                    i += 1;
                }
                if i == start + 1 {
                    self.tok(TokKind::Punct, start, i)
                } else {
                    self.tok(TokKind::UserVar, start, i)
                }
            }
        }
    }

    fn punct(&mut self, start: usize) -> Tok {
        const OPS: [&[u8]; 12] = [
            b"<=>", b"->>", b":=", b"<=", b">=", b"<>", b"!=", b"||", b"&&", b"<<", b">>", b"->",
        ];
        let rest = &self.src[start..];
        let len = OPS
            .iter()
            .find(|op| rest.starts_with(op))
            .map_or(1, |op| op.len());
        self.tok(TokKind::Punct, start, start + len)
    }
}

impl Iterator for Lexer<'_> {
    type Item = Tok;

    fn next(&mut self) -> Option<Tok> {
        loop {
            while self.pos < self.src.len() && self.src[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            let start = self.pos;
            let b = *self.src.get(start)?;
            let b1 = self.at(start + 1);
            match b {
                b'/' if b1 == b'*' => {
                    let exec = match self.at(start + 2) {
                        b'!' => Some(start + 3),
                        b'M' if self.at(start + 3) == b'!' => Some(start + 4),
                        _ => None,
                    };
                    if let Some(body) = exec {
                        // The optional version number is part of the marker.
                        let end = self.digits_end(body);
                        self.in_exec = true;
                        let t = self.tok(TokKind::ExecMark, start, end);
                        return Some(t);
                    }
                    let body_start = start + 2;
                    let close = find(self.src, body_start, b"*/");
                    let body_end = close.unwrap_or(self.src.len());
                    self.comment(&self.src[body_start..body_end]);
                    self.pos = close.map_or(self.src.len(), |c| c + 2);
                }
                b'*' if b1 == b'/' && self.in_exec => {
                    self.in_exec = false;
                    return Some(self.tok(TokKind::ExecMark, start, start + 2));
                }
                // `--` starts a comment only when followed by whitespace or a control byte.
                b'-' if b1 == b'-'
                    && (start + 2 >= self.src.len() || self.at(start + 2) <= b' ') =>
                {
                    self.line_comment(start + 2);
                }
                b'#' => self.line_comment(start + 1),
                b'\'' | b'"' => {
                    let e = self.quoted_end(start, true);
                    return Some(self.tok(TokKind::Str, start, e));
                }
                b'`' => {
                    let e = self.quoted_end(start, false);
                    return Some(self.tok(TokKind::QuotedIdent, start, e));
                }
                b'@' => return Some(self.variable(start)),
                b'?' => return Some(self.tok(TokKind::Placeholder, start, start + 1)),
                b';' => return Some(self.tok(TokKind::Semi, start, start + 1)),
                b'0'..=b'9' => return Some(self.number_or_word(start)),
                // `.5` is a number unless it follows a name (`t.5col` style qualified names).
                b'.' if b1.is_ascii_digit()
                    && !self.prev.is_some_and(|p| {
                        matches!(p.kind, TokKind::Word | TokKind::QuotedIdent)
                            || (p.kind == TokKind::Punct && p.text(self.src) == b")")
                    }) =>
                {
                    let end = self.number_tail(start);
                    return Some(self.tok(TokKind::Number, start, end));
                }
                _ if is_ident_byte(b) => return Some(self.word(start)),
                _ => return Some(self.punct(start)),
            }
        }
    }
}

impl Lexer<'_> {
    fn line_comment(&mut self, body_start: usize) {
        let end = self.src[body_start.min(self.src.len())..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(self.src.len(), |p| body_start + p);
        self.comment(&self.src[body_start.min(end)..end]);
        self.pos = end;
    }
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// `shardgate:primary` / `shardgate : replica` (case-insensitive, surrounding whitespace
/// and an optimizer-hint `+` tolerated).
fn parse_hint(body: &[u8]) -> Option<Hint> {
    let b = body.trim_ascii();
    let b = b.strip_prefix(b"+").unwrap_or(b).trim_ascii_start();
    let b = strip_prefix_ci(b, b"shardgate")?.trim_ascii_start();
    let b = b.strip_prefix(b":")?.trim_ascii_start();
    let (hint, rest) = if let Some(r) = strip_prefix_ci(b, b"primary") {
        (Hint::Primary, r)
    } else {
        (Hint::Replica, strip_prefix_ci(b, b"replica")?)
    };
    match rest.first() {
        Some(&c) if is_ident_byte(c) => None,
        _ => Some(hint),
    }
}

fn strip_prefix_ci<'a>(s: &'a [u8], p: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p)).then(|| &s[p.len()..])
}

// ---------------------------------------------------------------------------------------------
// Canonical token stream

/// One token as the digest sees it.
#[derive(Clone, Copy)]
enum Canon<'a> {
    /// Keyword or unquoted identifier: compared case-insensitively.
    Word(&'a [u8]),
    /// Quoted identifier, compared exactly.
    Quoted(&'a [u8]),
    Literal,
    /// A collapsed list of literals, `IN (?+)`.
    Literals,
    /// User variable name (case-insensitive in MariaDB).
    UserVar(&'a [u8]),
    SysVar(&'a [u8]),
    Punct(&'a [u8]),
}

trait Sink {
    type Mark;
    fn emit(&mut self, c: Canon<'_>);
    fn mark(&mut self) -> Self::Mark;
    fn reset(&mut self, m: Self::Mark);
}

/// Tokens that may sit in a list that collapses: literals and their separators.
fn is_list_item(t: &Tok, src: &[u8]) -> bool {
    t.is_literal()
        || t.is_punct(src, ",")
        || t.is_punct(src, "-")
        || t.is_punct(src, "+")
        || ["null", "default", "true", "false"]
            .iter()
            .any(|k| t.is_kw(src, k))
}

fn canon<'a>(t: &Tok, src: &'a [u8]) -> Canon<'a> {
    match t.kind {
        TokKind::Word => Canon::Word(t.text(src)),
        TokKind::QuotedIdent => Canon::Quoted(t.text(src)),
        TokKind::UserVar => Canon::UserVar(t.name(src)),
        TokKind::SysVar => Canon::SysVar(t.name(src)),
        TokKind::Semi => Canon::Punct(b";"),
        TokKind::Punct => Canon::Punct(t.text(src)),
        _ => Canon::Literal,
    }
}

/// A parenthesised group being watched for collapse.
struct Group<M> {
    depth: usize,
    /// Where to rewind to when the group collapses (`None` for the first `VALUES` row, kept).
    mark: Option<M>,
    /// `IN (…)` (collapses to `(?+)`) rather than a `VALUES` row (later rows are dropped).
    in_list: bool,
    literals: usize,
}

enum Rows<M> {
    None,
    /// After `VALUES`: the next `(` opens the first row, which is kept.
    First,
    /// After a literal-only row.
    After,
    /// After `,` that follows a literal-only row: a `(` here opens a row that may be dropped.
    Comma(M),
}

/// Feeds the canonical token stream of `lx` into `sink`: comments and executable-comment
/// markers dropped, literals as `?`, literal-only `IN` lists as `(?+)`, literal-only rows after
/// the first in `VALUES` dropped (so batch sizes share a digest), `;` only between statements.
fn canonicalize<S: Sink>(lx: &mut Lexer<'_>, sink: &mut S) {
    let src = lx.src;
    let mut depth = 0usize;
    let mut group: Option<Group<S::Mark>> = None;
    let mut rows: Rows<S::Mark> = Rows::None;
    let mut after_in = false;
    let mut pending_semi = false;
    let mut any = false;
    for t in lx.by_ref() {
        match t.kind {
            TokKind::ExecMark => continue,
            TokKind::Semi => {
                pending_semi = any;
                continue;
            }
            _ => {}
        }
        if pending_semi {
            sink.emit(Canon::Punct(b";"));
            pending_semi = false;
            group = None;
            rows = Rows::None;
            after_in = false;
            depth = 0;
        }
        any = true;
        let open = t.is_punct(src, "(");
        let close = t.is_punct(src, ")");

        if let Some(g) = group.take() {
            if close && depth == g.depth {
                depth -= 1;
                if g.literals == 0 {
                    sink.emit(Canon::Punct(b")"));
                } else if g.in_list {
                    if let Some(m) = g.mark {
                        sink.reset(m);
                    }
                    sink.emit(Canon::Punct(b"("));
                    sink.emit(Canon::Literals);
                    sink.emit(Canon::Punct(b")"));
                } else {
                    match g.mark {
                        Some(m) => sink.reset(m),
                        None => sink.emit(Canon::Punct(b")")),
                    }
                    rows = Rows::After;
                }
                continue;
            }
            if depth == g.depth && is_list_item(&t, src) {
                let g = Group {
                    literals: g.literals + usize::from(t.is_literal()),
                    ..g
                };
                group = Some(g);
                sink.emit(canon(&t, src));
                continue;
            }
            // Anything else: the group is ordinary tokens after all.
            rows = Rows::None;
        }

        if open {
            let mark = if after_in {
                Some((Some(sink.mark()), true))
            } else {
                match std::mem::replace(&mut rows, Rows::None) {
                    Rows::First => Some((None, false)),
                    Rows::Comma(m) => Some((Some(m), false)),
                    _ => None,
                }
            };
            after_in = false;
            if let Some((mark, in_list)) = mark {
                depth += 1;
                sink.emit(Canon::Punct(b"("));
                group = Some(Group {
                    depth,
                    mark,
                    in_list,
                    literals: 0,
                });
                continue;
            }
        }
        after_in = false;
        if matches!(rows, Rows::After) && t.is_punct(src, ",") {
            let m = sink.mark();
            sink.emit(Canon::Punct(b","));
            rows = Rows::Comma(m);
            continue;
        }
        rows = Rows::None;
        if open {
            depth += 1;
        } else if close {
            depth = depth.saturating_sub(1);
        }
        if t.is_kw(src, "in") {
            after_in = true;
        } else if t.is_kw(src, "values") || t.is_kw(src, "value") {
            rows = Rows::First;
        }
        sink.emit(canon(&t, src));
    }
    if lx.unterminated {
        // Not an identifier character: no real word renders the same.
        sink.emit(Canon::Word(b"<unterminated>"));
    }
}

// ---------------------------------------------------------------------------------------------
// Sinks

fn hash_keys() -> &'static RandomState {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new)
}

const BUF: usize = 64;

/// Hashes the canonical stream. Bytes are gathered into a small buffer first because SipHash
/// pays a fixed cost per `write` call.
struct HashSink {
    hasher: std::collections::hash_map::DefaultHasher,
    buf: [u8; BUF],
    len: usize,
}

impl HashSink {
    fn new() -> Self {
        HashSink {
            hasher: hash_keys().build_hasher(),
            buf: [0; BUF],
            len: 0,
        }
    }

    fn flush(&mut self) {
        self.hasher.write(&self.buf[..self.len]);
        self.len = 0;
    }

    fn byte(&mut self, b: u8) {
        if self.len == BUF {
            self.flush();
        }
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn bytes(&mut self, bs: &[u8]) {
        for &b in bs {
            self.byte(b);
        }
    }

    fn lower(&mut self, bs: &[u8]) {
        for &b in bs {
            self.byte(b.to_ascii_lowercase());
        }
    }

    /// Length-prefixed, for content that may hold any byte.
    fn counted(&mut self, bs: &[u8], lower: bool) {
        let n = u32::try_from(bs.len()).unwrap_or(u32::MAX);
        self.bytes(&n.to_le_bytes());
        if lower {
            self.lower(bs);
        } else {
            self.bytes(bs);
        }
    }

    fn finish(mut self) -> u64 {
        self.flush();
        self.hasher.finish()
    }
}

impl Sink for HashSink {
    type Mark = std::collections::hash_map::DefaultHasher;

    // Each token is a tag byte plus its content; unquoted words, system variables and
    // punctuation never contain a NUL byte, so NUL ends them unambiguously.
    fn emit(&mut self, c: Canon<'_>) {
        match c {
            Canon::Word(w) => {
                self.byte(1);
                self.lower(w);
                self.byte(0);
            }
            Canon::Quoted(q) => {
                self.byte(2);
                self.counted(q, false);
            }
            Canon::Literal => self.byte(3),
            Canon::Literals => self.byte(4),
            Canon::UserVar(v) => {
                self.byte(5);
                self.counted(v, true);
            }
            Canon::SysVar(v) => {
                self.byte(6);
                self.lower(v);
                self.byte(0);
            }
            Canon::Punct(p) => {
                self.byte(7);
                self.bytes(p);
                self.byte(0);
            }
        }
    }

    fn mark(&mut self) -> Self::Mark {
        self.flush();
        self.hasher.clone()
    }

    fn reset(&mut self, m: Self::Mark) {
        self.hasher = m;
        self.len = 0;
    }
}

/// Renders the canonical stream as text.
#[derive(Default)]
struct TextSink {
    out: String,
    /// The previous token, to decide on the space before the next one.
    prev: Option<Prev>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prev {
    Word,
    Open,
    Dot,
    Other,
}

/// Words after which `(` opens a list rather than a function's arguments.
const LIST_WORDS: [&str; 22] = [
    "in", "values", "value", "as", "from", "join", "into", "exists", "using", "where", "and", "or",
    "not", "on", "select", "set", "when", "then", "else", "having", "with", "by",
];

impl Sink for TextSink {
    type Mark = (usize, Option<Prev>);

    fn emit(&mut self, c: Canon<'_>) {
        let (text, prev): (String, Prev) = match c {
            Canon::Word(w) => (String::from_utf8_lossy(w).to_ascii_lowercase(), Prev::Word),
            Canon::Quoted(q) => (String::from_utf8_lossy(q).into_owned(), Prev::Other),
            Canon::Literal => ("?".into(), Prev::Other),
            Canon::Literals => ("?+".into(), Prev::Other),
            Canon::UserVar(v) => (
                format!("@{}", String::from_utf8_lossy(v).to_lowercase()),
                Prev::Other,
            ),
            Canon::SysVar(v) => (
                format!("@@{}", String::from_utf8_lossy(v).to_ascii_lowercase()),
                Prev::Other,
            ),
            Canon::Punct(p) => {
                let s = String::from_utf8_lossy(p).into_owned();
                let prev = match p {
                    b"(" => Prev::Open,
                    b"." => Prev::Dot,
                    _ => Prev::Other,
                };
                (s, prev)
            }
        };
        let after_list_word = LIST_WORDS.iter().any(|w| {
            self.out
                .strip_suffix(w)
                .is_some_and(|rest| rest.is_empty() || rest.ends_with(' '))
        });
        let tight_before = matches!(text.as_str(), ")" | "," | "." | ";")
            || (text == "(" && self.prev == Some(Prev::Word) && !after_list_word);
        let tight_after_prev = matches!(self.prev, Some(Prev::Open | Prev::Dot));
        if self.prev.is_some() && !tight_before && !tight_after_prev {
            self.out.push(' ');
        }
        self.out.push_str(&text);
        self.prev = Some(prev);
    }

    fn mark(&mut self) -> Self::Mark {
        (self.out.len(), self.prev)
    }

    fn reset(&mut self, m: Self::Mark) {
        self.out.truncate(m.0);
        self.prev = m.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> u64 {
        digest(s.as_bytes()).hash
    }
    fn n(s: &str) -> String {
        normalized(s.as_bytes())
    }
    fn hint(s: &str) -> Option<Hint> {
        digest(s.as_bytes()).hint
    }

    #[test]
    fn normalizes_literals_case_whitespace_and_comments() {
        assert_eq!(
            n("SELECT c FROM sbtest1 WHERE id=4242"),
            "select c from sbtest1 where id = ?"
        );
        let same = [
            "SELECT c FROM sbtest1 WHERE id=4242",
            "select  c\n\tfrom SBTEST1 where ID = 17",
            "/* hi */ SELECT c FROM sbtest1 WHERE id = '17' -- bye",
            "SELECT c FROM sbtest1 # comment\n WHERE id = 0x1F;",
            "SELECT c FROM sbtest1 WHERE id = ?",
            "SELECT c FROM sbtest1 WHERE id = 1e5;;",
            "SELECT c FROM sbtest1 WHERE id = _utf8mb4'x'",
            "SELECT c FROM sbtest1 WHERE id = _binary \"x\"",
            "SELECT c FROM sbtest1 WHERE id = X'0A'",
            "SELECT c FROM sbtest1 WHERE id = b'101'",
            "SELECT c FROM sbtest1 WHERE id = 0b101",
            "SELECT c FROM sbtest1 WHERE id = N'x'",
            "SELECT c FROM sbtest1 WHERE id = 1.5E-3",
            "SELECT c FROM sbtest1 WHERE id = .5",
            "SELECT c FROM sbtest1 WHERE id = 'it''s \\' here'",
            "SELECT c FROM sbtest1 WHERE id = \"say \"\"hi\"\"\"",
        ];
        for s in same {
            assert_eq!(n(s), n(same[0]), "{s}");
            assert_eq!(h(s), h(same[0]), "{s}");
        }
        let different = [
            "SELECT c FROM sbtest2 WHERE id = 1",
            "SELECT c FROM sbtest1 WHERE id = NULL",
            "SELECT c FROM sbtest1 WHERE id = -1",
            "SELECT c FROM sbtest1 WHERE id = 1 FOR UPDATE",
            "SELECT c FROM sbtest1 WHERE id = 1; SELECT 2",
            "SELECT c FROM sbtest1 WHERE id = @x",
            "SELECT c FROM sbtest1 WHERE id = @@x",
            "SELECT c FROM sbtest1 WHERE id = `x`",
            "SELECT c FROM sbtest1 WHERE id = x",
            "SELECT c FROM sbtest1 WHERE id = 1x",
            "SELECT c FROM sbtest1 WHERE id = 'unterminated",
            "SELECT `c` FROM sbtest1 WHERE id = 1",
        ];
        for s in different {
            assert_ne!(h(s), h(same[0]), "{s}");
        }
    }

    #[test]
    fn quoted_identifiers_keep_their_case_user_variables_do_not() {
        assert_ne!(h("SELECT `A` FROM t"), h("SELECT `a` FROM t"));
        assert_eq!(h("SELECT @A"), h("select @a"));
        assert_eq!(
            n("SELECT `a``b` FROM `db`.`t`"),
            "select `a``b` from `db`.`t`"
        );
        assert_ne!(h("SELECT `a b`"), h("SELECT `a` b"));
    }

    #[test]
    fn in_lists_and_values_rows_collapse() {
        assert_eq!(
            n("SELECT * FROM t WHERE a IN (1, 2, 3)"),
            "select * from t where a in (?+)"
        );
        assert_eq!(
            h("SELECT * FROM t WHERE a IN (1)"),
            h("SELECT * FROM t WHERE a in ('x',2,3,4)")
        );
        assert_eq!(
            h("SELECT * FROM t WHERE a IN (?, ?)"),
            h("SELECT * FROM t WHERE a IN (7)")
        );
        // Not literal-only: kept as written.
        assert_eq!(
            n("SELECT * FROM t WHERE a IN (b, 1)"),
            "select * from t where a in (b, ?)"
        );
        assert_eq!(
            n("SELECT * FROM t WHERE a IN (SELECT b FROM u)"),
            "select * from t where a in (select b from u)"
        );
        assert_ne!(
            h("SELECT * FROM t WHERE a IN (1)"),
            h("SELECT * FROM t WHERE a IN (@x := 1)")
        );
        assert_eq!(
            n("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, NULL)"),
            "insert into t(a, b) values (?, ?)"
        );
        assert_eq!(
            h("INSERT INTO t VALUES (1, 2)"),
            h("INSERT INTO t VALUES (1, 2), (3, 4), (5, 6)")
        );
        assert_eq!(
            n("INSERT INTO t VALUES (1), (NOW()), (3)"),
            "insert into t values (?), (now()), (?)"
        );
        assert_eq!(
            n("INSERT INTO t VALUES (1), (2) ON DUPLICATE KEY UPDATE a = VALUES(a)"),
            "insert into t values (?) on duplicate key update a = values (a)"
        );
        assert_eq!(
            n("SELECT a FROM t WHERE (a, b) IN ((1, 2), (3, 4))"),
            "select a from t where (a, b) in ((?, ?), (?, ?))"
        );
    }

    #[test]
    fn executable_comments_are_content() {
        assert_eq!(n("/*!40101 SET NAMES utf8 */"), "set names utf8");
        assert_eq!(h("/*!40101 SET NAMES utf8 */"), h("SET NAMES utf8"));
        assert_eq!(n("/*M!100100 SET x = 1 */"), "set x = ?");
        assert_ne!(h("SELECT 1 /*!, 2 */"), h("SELECT 1"));
        assert_eq!(h("SELECT 1 /* , 2 */"), h("SELECT 1"));
    }

    #[test]
    fn hints_anywhere_outside_literals_first_wins() {
        assert_eq!(
            hint("/* shardgate:primary */ SELECT 1"),
            Some(Hint::Primary)
        );
        assert_eq!(
            hint("SELECT 1 /* shardgate:replica */"),
            Some(Hint::Replica)
        );
        assert_eq!(
            hint("SELECT /*  ShardGate : REPLICA  */ 1"),
            Some(Hint::Replica)
        );
        assert_eq!(hint("SELECT 1 -- shardgate:primary"), Some(Hint::Primary));
        assert_eq!(hint("SELECT 1 #shardgate:replica\n"), Some(Hint::Replica));
        assert_eq!(
            hint("SELECT /*+ shardgate:primary */ 1"),
            Some(Hint::Primary)
        );
        assert_eq!(
            hint("/* shardgate:replica */ SELECT 1 /* shardgate:primary */"),
            Some(Hint::Replica)
        );
        assert_eq!(hint("SELECT '/* shardgate:primary */'"), None);
        assert_eq!(hint("SELECT \"-- shardgate:primary\""), None);
        assert_eq!(hint("SELECT `/* shardgate:primary */`"), None);
        assert_eq!(hint("SELECT 1 /* shardgate:primaryx */"), None);
        assert_eq!(hint("SELECT 1 /* shardgate primary */"), None);
        assert_eq!(hint("SELECT 1 /* other */"), None);
        assert_eq!(hint("SELECT 1 --shardgate:primary"), None);
        // An unterminated comment still counts.
        assert_eq!(hint("SELECT 1 /* shardgate:primary"), Some(Hint::Primary));
        // The hint does not enter the hash.
        assert_eq!(h("/* shardgate:primary */ SELECT 1"), h("SELECT 1"));
    }

    #[test]
    fn odd_input_does_not_panic() {
        for s in [
            &b""[..],
            b";",
            b"'",
            b"\"",
            b"`",
            b"/*",
            b"/*!",
            b"/*M!",
            b"*/",
            b"--",
            b"#",
            b"@",
            b"@@",
            b"@'",
            b"@`",
            b"x'",
            b"_utf8 '",
            b"0x",
            b"1e",
            b"1e+",
            b".",
            b"'\\",
            b"\xff\xfe",
            b"SELECT '\xff'",
            b"\0\0",
        ] {
            let _ = digest(s);
            let _ = normalized(s);
        }
        assert_eq!(n(""), "");
        assert_eq!(h("  "), h(""));
        assert_eq!(n(";;"), "");
        assert_eq!(n("SELECT 'abc"), "select ? <unterminated>");
        assert_eq!(n("SELECT 1--1"), "select ? - - ?");
        assert_eq!(n("SELECT 1 -- x"), "select ?");
        assert_eq!(
            n("SELECT a<=>b, c:=d, e->>'$.f'"),
            "select a <=> b, c := d, e ->> ?"
        );
    }

    #[test]
    fn lexer_tokens() {
        let kinds =
            |s: &str| -> Vec<TokKind> { Lexer::new(s.as_bytes()).map(|t| t.kind).collect() };
        use TokKind::*;
        assert_eq!(
            kinds("1t 1e5 1e 0x1F 0xZZ 0b10 t.5"),
            [Word, Number, Word, Hex, Word, Bin, Word, Punct, Number]
        );
        assert_eq!(
            kinds("@a.b @'x' @`y` @@session.x ?"),
            [UserVar, UserVar, UserVar, SysVar, Punct, Word, Placeholder]
        );
        assert_eq!(kinds("/*!40101 SET */"), [ExecMark, Word, ExecMark]);
        let t: Vec<Tok> = Lexer::new(b"@`a``b`").collect();
        assert_eq!(t[0].name(b"@`a``b`"), b"a``b");
    }
}
