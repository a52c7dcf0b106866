//! What a statement is, for read/write routing and session-state tracking.
//!
//! sqlparser (MySqlDialect) decides the statement type. Our own lexer ([`super::digest`])
//! splits multi-statement text, reads hints, and spots what the AST would need a full walk
//! for (`GET_LOCK(`, `@v :=`, `INTO @v`, `FOUND_ROWS(`...). When sqlparser cannot parse a
//! statement, a keyword classifier decides, and anything it is unsure of goes to the primary.
//! Pure: no I/O.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectType, Query, Set, SetExpr, Statement, TableFactor, TableObject,
    TableWithJoins, TransactionAccessMode, TransactionMode, Visit, Visitor,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use super::digest::{self, Lexer, Tok, TokKind};
// Read from the statement's comments by the lexer; its home is there.
pub use super::digest::Hint;

/// What a statement does, as far as routing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A plain read that may run on a replica: SELECT (also without FROM, e.g.
    /// `SELECT @@server_id`, `SELECT @x`, `SELECT LAST_INSERT_ID()`), `WITH ... SELECT`,
    /// `VALUES`.
    Read,
    /// A read that takes locks or has side effects: `FOR UPDATE`, `FOR SHARE`,
    /// `LOCK IN SHARE MODE`, named-lock functions, sequence functions. Primary.
    LockingRead,
    /// INSERT, UPDATE, DELETE, REPLACE, LOAD DATA, CALL, INSERT ... SELECT.
    Write,
    /// CREATE, ALTER, DROP, TRUNCATE, RENAME, GRANT, REVOKE, OPTIMIZE, ANALYZE, REPAIR.
    Ddl,
    /// BEGIN [WORK], START TRANSACTION [...]; also COMMIT/ROLLBACK AND CHAIN, which end one
    /// transaction and open the next. `read_only` only when READ ONLY is written.
    Begin { read_only: bool },
    /// COMMIT, ROLLBACK (not `ROLLBACK TO [SAVEPOINT] x`, which is [`Kind::Other`]).
    EndTransaction,
    /// SET of session system variables, user variables, NAMES or CHARACTER SET.
    /// The caller should apply it to its session state only once the server accepted it.
    Set(Vec<Assignment>),
    /// Everything else (SHOW, DESCRIBE, EXPLAIN, DO, SAVEPOINT, SET GLOBAL, USE, KILL, FLUSH,
    /// LOCK TABLES, SELECT ... INTO, SELECT with `@v :=`, SELECTs sqlparser cannot read,
    /// multi-statement text that is not all reads, ...): runs on the primary.
    Other,
}

/// One `name = value` of a SET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub name: VarName,
    pub value: Value,
}

/// The target of an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarName {
    /// A session system variable, lower-cased, without SESSION / LOCAL / `@@` /
    /// `@@session.` / `@@local.`: `"sql_mode"`.
    System(String),
    /// A user variable without the `@`, lower-cased (MariaDB compares them
    /// case-insensitively); quoted forms (`` @`a b` ``, `@'a b'`) give their inner text.
    User(String),
    /// `SET NAMES x [COLLATE y]`, `SET CHARACTER SET x`, `SET CHARSET x`.
    Names,
}

/// The value of an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL text that replays verbatim as `SET <name> = <text>` (or `SET NAMES <text>`): a
    /// number, a quoted string with its quotes, ON/OFF/TRUE/FALSE/NULL, a bare word. For
    /// [`VarName::Names`]: `"utf8mb4"`, `"utf8mb4 COLLATE utf8mb4_bin"`, `"'utf8'"`, `"DEFAULT"`.
    Literal(String),
    /// `= DEFAULT`.
    Default,
    /// Anything else (functions, other variables, subqueries): the caller runs it and reads
    /// the result back, or pins the session.
    Expr,
}

/// The classification of one COM_QUERY text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub kind: Kind,
    /// Some(reason) when the statement leaves state on its server connection that cannot be
    /// replayed elsewhere, so the session must keep that connection for the rest of its life:
    /// "temporary table" (CREATE TEMPORARY TABLE/SEQUENCE), "named lock" (GET_LOCK),
    /// "table lock" (LOCK TABLES, FLUSH ... WITH READ LOCK / FOR EXPORT, BACKUP STAGE/LOCK),
    /// "SQL prepared statement" (PREPARE, EXECUTE, DEALLOCATE, DROP PREPARE),
    /// "XA transaction", "HANDLER", "user variable assigned from a query" (`INTO @v`,
    /// `@v := expr`, `SET @v = <Expr>`), "transaction characteristics" (SET [SESSION]
    /// TRANSACTION), "role" (SET ROLE), "unparsed SET", "compound statement"
    /// (BEGIN NOT ATOMIC, top-level IF/WHILE/LOOP/REPEAT/CASE, labelled blocks),
    /// "multi-statement with session state". `SET STATEMENT ... FOR` is classified by its
    /// inner statement. Executable comments are read as SQL, so they pin only by content.
    pub pins: Option<&'static str>,
    /// Reads state the previous statement left on its connection: FOUND_ROWS(), ROW_COUNT(),
    /// SHOW WARNINGS / ERRORS / COUNT(*) ..., GET DIAGNOSTICS, @@warning_count, @@error_count.
    pub uses_previous: bool,
    /// Leaves state the next statement may read: SELECT SQL_CALC_FOUND_ROWS.
    pub keeps_for_next: bool,
    /// Tables written (DML targets, DDL objects), lower-cased, `db.table` when qualified
    /// else `table`. For cache invalidation; best effort; empty for single Other statements.
    pub writes: Vec<String>,
    /// Tables read, same format as `writes`, sorted and de-duplicated: every table in a FROM,
    /// JOIN, derived table, CTE body or subquery in any clause (CTE names themselves are not
    /// tables; views are just names; `DUAL` is nothing). Also for writes where the AST shows
    /// them (INSERT ... SELECT's source, UPDATE/DELETE's tables, CREATE ... AS SELECT). Empty
    /// for statements sqlparser cannot read, SETs and statement types read by keyword only.
    /// Unqualified names are relative to the session's current database.
    pub reads: Vec<String>,
    /// The statement names nothing whose value changes between two runs over the same data in
    /// the same session: no deny-listed function (`VOLATILE_FNS`, bare `NILADIC` words),
    /// no schema-qualified (likely stored) function call, no `@v` / `@@x`, no `INTO @v` /
    /// `OUTFILE` / `DUMPFILE`, no SQL_CALC_FOUND_ROWS, no table of `information_schema`,
    /// `performance_schema`, `mysql` or `sys` (they change without writes through the proxy).
    /// Unqualified stored functions and views over volatile expressions cannot be seen from
    /// the text. Meaningful for [`Kind::Read`] only; always false for statements sqlparser
    /// cannot read, SETs and statement types read by keyword only.
    pub deterministic: bool,
    /// The statement says SQL_NO_CACHE (also inside an executable comment): a hint, not a
    /// source of change, so it leaves `deterministic` alone.
    pub no_cache_hint: bool,
    /// Number of statements in the text (COM_QUERY may carry several separated by ';').
    pub statements: usize,
}

/// A classified statement: the cached class plus the hint read from its comments.
#[derive(Debug, Clone)]
pub struct Classified {
    pub class: Arc<Class>,
    pub hint: Option<Hint>,
    /// The statement's shape (literals folded), for per-shape statistics.
    pub digest: u64,
}

/// Entries past which the per-thread cache is cleared (a crude bound that costs nothing on
/// the hit path).
const CACHE_LIMIT: usize = 10_000;

/// The cache key is already a keyed SipHash: hashing it again would be wasted work.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Cache = HashMap<u64, Arc<Class>, BuildHasherDefault<PassThrough>>;

thread_local! {
    // One proxy thread per core: a thread-local map needs no locking.
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// Classifies raw client bytes, through the per-thread digest cache. Never panics; invalid
/// UTF-8 goes to the primary.
pub fn classify(sql: &[u8]) -> Classified {
    let d = digest::digest(sql);
    // Invalid UTF-8 (e.g. latin1 text in a literal) is classified conservatively; it must
    // neither read nor fill the entry of the valid statement with the same digest.
    if std::str::from_utf8(sql).is_err() {
        return Classified {
            class: Arc::new(classify_uncached(sql)),
            hint: d.hint,
            digest: d.hash,
        };
    }
    // try_with: a thread being torn down has no cache, and must still get an answer.
    let cached = CACHE
        .try_with(|c| c.borrow().get(&d.hash).cloned())
        .ok()
        .flatten();
    if let Some(class) = cached {
        return Classified {
            class,
            hint: d.hint,
            digest: d.hash,
        };
    }
    let (class, cacheable) = classify_inner(sql);
    let class = Arc::new(class);
    // A SET's class carries its literal values, which the digest ignores.
    if cacheable && !matches!(class.kind, Kind::Set(_)) {
        let _ = CACHE.try_with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= CACHE_LIMIT {
                c.clear();
            }
            c.insert(d.hash, Arc::clone(&class));
        });
    }
    Classified {
        class,
        hint: d.hint,
        digest: d.hash,
    }
}

/// Classifies without the cache (tests, `explain`).
pub fn classify_uncached(sql: &[u8]) -> Class {
    classify_inner(sql).0
}

// ---------------------------------------------------------------------------------------------
// Driver

/// The class of one statement, plus what combining and caching need.
#[derive(Debug)]
struct Part {
    kind: Kind,
    pins: Option<&'static str>,
    uses_previous: bool,
    keeps_for_next: bool,
    writes: Vec<String>,
    reads: Vec<String>,
    deterministic: bool,
    no_cache_hint: bool,
    is_use: bool,
    /// False when the class depends on something the digest treats as a literal (a
    /// double-quoted table name that sqlparser read as an identifier).
    cacheable: bool,
}

impl Part {
    fn new(kind: Kind) -> Self {
        Part {
            kind,
            pins: None,
            uses_previous: false,
            keeps_for_next: false,
            writes: Vec::new(),
            reads: Vec::new(),
            deterministic: false,
            no_cache_hint: false,
            is_use: false,
            cacheable: true,
        }
    }

    fn pin(mut self, reason: &'static str) -> Self {
        self.pins.get_or_insert(reason);
        self
    }

    fn with_writes(mut self, w: Writes) -> Self {
        self.writes = w.names;
        self.cacheable &= w.cacheable;
        self
    }
}

/// The text and tokens shared by every statement of one COM_QUERY.
struct Ctx<'a> {
    src: &'a [u8],
    /// Spans of executable-comment markers, blanked out of the text handed to sqlparser.
    marks: Vec<(usize, usize)>,
}

impl Ctx<'_> {
    /// The statement's text for sqlparser; `None` when it is not UTF-8.
    fn text(&self, toks: &[Tok]) -> Option<Cow<'_, str>> {
        let (first, last) = (toks.first()?, toks.last()?);
        let (start, end) = (first.start, last.end);
        let bytes = self.src.get(start..end)?;
        let s = std::str::from_utf8(bytes).ok()?;
        let inside: Vec<_> = self
            .marks
            .iter()
            .filter(|(s, e)| *s < end && *e > start)
            .collect();
        if inside.is_empty() {
            return Some(Cow::Borrowed(s));
        }
        let mut b = bytes.to_vec();
        for &&(ms, me) in &inside {
            for byte in &mut b[ms.max(start) - start..me.min(end) - start] {
                *byte = b' ';
            }
        }
        // Markers are ASCII, so blanking them keeps the text UTF-8.
        String::from_utf8(b).ok().map(Cow::Owned)
    }
}

fn classify_inner(sql: &[u8]) -> (Class, bool) {
    let mut marks = Vec::new();
    let toks: Vec<Tok> = Lexer::new(sql)
        .filter(|t| {
            if t.kind == TokKind::ExecMark {
                marks.push((t.start, t.end));
                false
            } else {
                true
            }
        })
        .collect();
    let ctx = Ctx { src: sql, marks };
    let parts: Vec<Part> = split(&toks, sql)
        .into_iter()
        .map(|(range, compound)| {
            let toks = &toks[range];
            if compound {
                let mut p = Part::new(Kind::Other).pin("compound statement");
                p.apply(&Scan::of(toks, sql));
                p
            } else {
                statement(&ctx, toks)
            }
        })
        .collect();
    combine(parts)
}

/// Statement token ranges. Compound statements (whose bodies contain `;`) take the rest of
/// the text: MariaDB parses them as one statement.
fn split(toks: &[Tok], src: &[u8]) -> Vec<(std::ops::Range<usize>, bool)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i].kind == TokKind::Semi {
            i += 1;
            continue;
        }
        let rest = &toks[i..];
        let kw = |j: usize, k: &str| rest.get(j).is_some_and(|t| t.is_kw(src, k));
        let compound = (kw(0, "begin") && kw(1, "not") && kw(2, "atomic"))
            || ["if", "while", "loop", "repeat", "case"]
                .iter()
                .any(|k| kw(0, k))
            || (rest[0].kind == TokKind::Word && rest.get(1).is_some_and(|t| t.is_punct(src, ":")));
        if compound {
            out.push((i..toks.len(), true));
            break;
        }
        let end = rest
            .iter()
            .position(|t| t.kind == TokKind::Semi)
            .map_or(toks.len(), |p| i + p);
        let this = &toks[i..end];
        // CREATE PROCEDURE/FUNCTION/TRIGGER/EVENT ... BEGIN ... END carries `;` in its body.
        let stored_program = kw(0, "create")
            && this.iter().any(|t| {
                ["procedure", "function", "trigger", "event"]
                    .iter()
                    .any(|k| t.is_kw(src, k))
            })
            && this.iter().any(|t| t.is_kw(src, "begin"));
        if stored_program {
            out.push((i..toks.len(), false));
            break;
        }
        out.push((i..end, false));
        i = end;
    }
    out
}

fn combine(mut parts: Vec<Part>) -> (Class, bool) {
    let statements = parts.len();
    if statements <= 1 {
        let p = parts.pop().unwrap_or_else(|| Part::new(Kind::Other));
        let cacheable = p.cacheable;
        return (
            Class {
                kind: p.kind,
                pins: p.pins,
                uses_previous: p.uses_previous,
                keeps_for_next: p.keeps_for_next,
                writes: p.writes,
                reads: p.reads,
                deterministic: p.deterministic,
                no_cache_hint: p.no_cache_hint,
                statements,
            },
            cacheable,
        );
    }
    let kind = if parts.iter().all(|p| p.kind == Kind::Read) {
        Kind::Read
    } else {
        Kind::Other
    };
    let session_state = parts.iter().any(|p| {
        p.is_use
            || p.pins.is_some()
            || matches!(
                p.kind,
                Kind::Set(_) | Kind::Begin { .. } | Kind::EndTransaction
            )
    });
    let mut writes: Vec<String> = Vec::new();
    for w in parts.iter().flat_map(|p| &p.writes) {
        if !writes.contains(w) {
            writes.push(w.clone());
        }
    }
    let mut reads: Vec<String> = parts.iter().flat_map(|p| p.reads.clone()).collect();
    reads.sort_unstable();
    reads.dedup();
    (
        Class {
            kind,
            pins: session_state.then_some("multi-statement with session state"),
            uses_previous: parts.iter().any(|p| p.uses_previous),
            keeps_for_next: parts.iter().any(|p| p.keeps_for_next),
            writes,
            reads,
            deterministic: parts.iter().all(|p| p.deterministic),
            no_cache_hint: parts.iter().any(|p| p.no_cache_hint),
            statements,
        },
        parts.iter().all(|p| p.cacheable),
    )
}

/// sqlparser's reading of one statement; `None` if it fails (or, defensively, panics).
fn parse_one(text: &str) -> Option<Statement> {
    let parsed = std::panic::catch_unwind(|| Parser::parse_sql(&MySqlDialect {}, text));
    match parsed {
        Ok(Ok(mut v)) if v.len() == 1 => v.pop(),
        _ => None,
    }
}

fn statement(ctx: &Ctx<'_>, toks: &[Tok]) -> Part {
    let src = ctx.src;
    let mut scan = Scan::of(toks, src);
    if toks.first().is_some_and(|t| t.is_kw(src, "set")) {
        return set_statement(ctx, toks, scan);
    }
    // EXPLAIN and friends do not run what they describe.
    let describes = ["explain", "describe", "desc", "show", "help"]
        .iter()
        .any(|k| toks.first().is_some_and(|t| t.is_kw(src, k)));
    if describes {
        scan = Scan {
            uses_previous: scan.uses_previous,
            ..Scan::default()
        };
    }
    let mut part = match ctx.text(toks).as_deref().and_then(parse_one) {
        Some(stmt) => from_ast(ctx, toks, &stmt, &scan),
        None => fallback(ctx, toks, &scan),
    };
    part.apply(&scan);
    part
}

// ---------------------------------------------------------------------------------------------
// Token scan

/// What the tokens show, whatever the statement type.
#[derive(Debug, Default)]
struct Scan {
    /// FOR UPDATE, FOR SHARE, LOCK IN SHARE MODE.
    lock_clause: bool,
    /// GET_LOCK, RELEASE_LOCK, RELEASE_ALL_LOCKS, IS_FREE_LOCK, IS_USED_LOCK.
    lock_fn: bool,
    get_lock: bool,
    /// NEXTVAL/SETVAL/LASTVAL, NEXT/PREVIOUS VALUE FOR, seq.nextval.
    sequence: bool,
    /// `INTO @v`.
    into_var: bool,
    /// `INTO` anything else (OUTFILE, DUMPFILE, INSERT's target...).
    into_other: bool,
    /// `@v := expr`.
    assigns_var: bool,
    uses_previous: bool,
    calc_found_rows: bool,
    /// Something whose value differs between runs: a [`VOLATILE_FNS`] call, a bare
    /// [`NILADIC`] word, `@v`, `@@x`, NEXT/PREVIOUS VALUE FOR, `INTO @v` / OUTFILE / DUMPFILE,
    /// SQL_CALC_FOUND_ROWS. Tokens, so `'NOW()'` (a string) is not a call.
    volatile: bool,
    /// SQL_NO_CACHE.
    no_cache: bool,
}

/// Functions whose result may differ between two runs over the same data in one session
/// (time, randomness, the connection, the previous statement), or that act (locks, sleeps,
/// waits, sequences, files). Matched by name followed by `(`, ASCII case-insensitively.
/// Anything else is taken as deterministic, built-in or not: an unqualified stored function
/// looks like a built-in here (qualified calls are caught on the AST).
const VOLATILE_FNS: &[&str] = &[
    // time
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "curdate",
    "curtime",
    "sysdate",
    "localtime",
    "localtimestamp",
    "utc_date",
    "utc_time",
    "utc_timestamp",
    "unix_timestamp",
    // randomness and identities
    "rand",
    "random_bytes",
    "uuid",
    "uuid_short",
    "uuid_v4",
    "uuid_v7",
    "sys_guid",
    // the connection and the previous statement
    "connection_id",
    "last_insert_id",
    "found_rows",
    "row_count",
    "user",
    "current_user",
    "session_user",
    "system_user",
    "current_role",
    "ps_current_thread_id",
    "ps_thread_id",
    // side effects and waits
    "sleep",
    "benchmark",
    "get_lock",
    "release_lock",
    "is_free_lock",
    "is_used_lock",
    "release_all_locks",
    "master_gtid_wait",
    "master_pos_wait",
    "source_pos_wait",
    "nextval",
    "lastval",
    "setval",
    "load_file",
];

impl Scan {
    fn of(toks: &[Tok], src: &[u8]) -> Scan {
        let mut s = Scan::default();
        let kw = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_kw(src, k));
        let punct = |i: usize, p: &str| toks.get(i).is_some_and(|t| t.is_punct(src, p));
        let first = |k: &str| kw(0, k);
        if first("show") {
            s.uses_previous = ["warnings", "errors"].iter().any(|k| {
                kw(1, k)
                    || (kw(1, "count")
                        && punct(2, "(")
                        && punct(3, "*")
                        && punct(4, ")")
                        && kw(5, k))
            });
        }
        if first("get") && (kw(1, "diagnostics") || kw(2, "diagnostics")) {
            s.uses_previous = true;
        }
        for (i, t) in toks.iter().enumerate() {
            match t.kind {
                TokKind::Word => {
                    let is = |k: &str| t.is_kw(src, k);
                    if punct(i + 1, "(") {
                        if is("get_lock") {
                            s.get_lock = true;
                            s.lock_fn = true;
                        } else if [
                            "release_lock",
                            "release_all_locks",
                            "is_free_lock",
                            "is_used_lock",
                        ]
                        .iter()
                        .any(|k| is(k))
                        {
                            s.lock_fn = true;
                        } else if ["nextval", "setval", "lastval"].iter().any(|k| is(k)) {
                            s.sequence = true;
                        } else if is("found_rows") || is("row_count") {
                            s.uses_previous = true;
                        }
                    }
                    if (is("for") && (kw(i + 1, "update") || kw(i + 1, "share")))
                        || (is("lock") && kw(i + 1, "in") && kw(i + 2, "share"))
                    {
                        s.lock_clause = true;
                    }
                    if (is("next") || is("previous")) && kw(i + 1, "value") && kw(i + 2, "for") {
                        s.sequence = true;
                    }
                    if i > 0
                        && punct(i - 1, ".")
                        && ["nextval", "currval", "lastval"].iter().any(|k| is(k))
                    {
                        s.sequence = true;
                        s.volatile = true;
                    }
                    if is("into") {
                        if toks.get(i + 1).is_some_and(|n| n.kind == TokKind::UserVar) {
                            s.into_var = true;
                        } else {
                            s.into_other = true;
                        }
                    }
                    if is("sql_calc_found_rows") {
                        s.calc_found_rows = true;
                        s.volatile = true;
                    }
                    if is("sql_no_cache") {
                        s.no_cache = true;
                    }
                    // After a `.` a word is a column or table name, whatever it spells.
                    let qualified = i > 0 && punct(i - 1, ".");
                    if !qualified
                        && ((punct(i + 1, "(") && VOLATILE_FNS.iter().any(|k| is(k)))
                            || NILADIC.iter().any(|k| is(k)))
                    {
                        s.volatile = true;
                    }
                    if (is("next") || is("previous")) && kw(i + 1, "value") && kw(i + 2, "for") {
                        s.volatile = true;
                    }
                    if is("into")
                        && (toks.get(i + 1).is_some_and(|n| n.kind == TokKind::UserVar)
                            || kw(i + 1, "outfile")
                            || kw(i + 1, "dumpfile"))
                    {
                        s.volatile = true;
                    }
                }
                // `` `now`() `` may still be the built-in.
                TokKind::QuotedIdent if punct(i + 1, "(") => {
                    let name = t.name(src);
                    if VOLATILE_FNS
                        .iter()
                        .any(|k| name.eq_ignore_ascii_case(k.as_bytes()))
                    {
                        s.volatile = true;
                    }
                }
                TokKind::UserVar => {
                    s.volatile = true;
                    if punct(i + 1, ":=") {
                        s.assigns_var = true;
                    }
                }
                TokKind::SysVar => {
                    s.volatile = true;
                    let counter = |j: usize| {
                        toks.get(j).is_some_and(|n| {
                            let n = n.name(src);
                            n.eq_ignore_ascii_case(b"warning_count")
                                || n.eq_ignore_ascii_case(b"error_count")
                        })
                    };
                    let scoped = ["session", "local", "global"]
                        .iter()
                        .any(|k| t.name(src).eq_ignore_ascii_case(k.as_bytes()));
                    if counter(i) || (scoped && punct(i + 1, ".") && counter(i + 2)) {
                        s.uses_previous = true;
                    }
                }
                _ => {}
            }
        }
        s
    }
}

impl Part {
    /// Adds what the token scan found to the statement-type decision.
    fn apply(&mut self, s: &Scan) {
        if s.get_lock {
            self.pins.get_or_insert("named lock");
        }
        if s.into_var || s.assigns_var {
            self.pins
                .get_or_insert("user variable assigned from a query");
        }
        if self.kind == Kind::Read {
            if s.into_var || s.into_other || s.assigns_var {
                // Sets session state or writes a file: not for a replica.
                self.kind = Kind::Other;
            } else if s.lock_clause || s.lock_fn || s.sequence {
                self.kind = Kind::LockingRead;
            }
        }
        self.uses_previous |= s.uses_previous;
        self.keeps_for_next |= s.calc_found_rows;
        self.no_cache_hint |= s.no_cache;
    }
}

// ---------------------------------------------------------------------------------------------
// Parsed statements

/// Written table names and whether they are safe to cache under the digest.
struct Writes {
    names: Vec<String>,
    cacheable: bool,
}

impl Writes {
    fn new() -> Self {
        Writes {
            names: Vec::new(),
            cacheable: true,
        }
    }

    fn push(&mut self, name: String) {
        if !name.is_empty() && !self.names.contains(&name) {
            self.names.push(name);
        }
    }

    fn object(&mut self, n: &ObjectName) {
        let tail = name_tail(n);
        self.cacheable &= digest_sees(&tail);
        let name: Vec<String> = tail.iter().map(|i| i.value.to_lowercase()).collect();
        self.push(name.join("."));
    }

    fn factor(&mut self, f: &TableFactor) {
        if let TableFactor::Table { name, .. } = f {
            self.object(name);
        }
    }

    fn joined(&mut self, t: &TableWithJoins) {
        self.factor(&t.relation);
        for j in &t.joins {
            self.factor(&j.relation);
        }
    }

    /// Targets of a DML statement (also reached through `WITH ... DELETE`).
    fn dml(&mut self, stmt: &Statement) {
        match stmt {
            Statement::Insert(i) => {
                if let TableObject::TableName(n) = &i.table {
                    self.object(n);
                }
            }
            // Multi-table UPDATE may write any of its tables: over-invalidating is safe.
            Statement::Update(u) => self.joined(&u.table),
            Statement::Delete(d) => {
                if d.tables.is_empty() {
                    let from = match &d.from {
                        sqlparser::ast::FromTable::WithFromKeyword(t)
                        | sqlparser::ast::FromTable::WithoutKeyword(t) => t,
                    };
                    from.iter().for_each(|t| self.joined(t));
                } else {
                    d.tables.iter().for_each(|n| self.object(n));
                }
            }
            Statement::Merge(m) => self.factor(&m.table),
            _ => {}
        }
    }
}

/// The `db` and `table` parts of a name (a third, leading part is dropped).
fn name_tail(n: &ObjectName) -> Vec<&Ident> {
    let idents: Vec<&Ident> = n.0.iter().filter_map(|p| p.as_ident()).collect();
    idents[idents.len().saturating_sub(2)..].to_vec()
}

/// Whether the digest hashes these name parts as written: sqlparser accepts "t" / 't' as
/// table names, which the digest folds as literals, so a class naming them must not be
/// shared by digest.
fn digest_sees(parts: &[&Ident]) -> bool {
    !parts
        .iter()
        .any(|i| i.quote_style.is_some_and(|q| q != '`'))
}

/// Schemas whose tables change without writes through the proxy.
const SYSTEM_SCHEMAS: [&str; 4] = ["information_schema", "performance_schema", "mysql", "sys"];

/// What a parsed statement reads, from a walk of its whole AST (sqlparser's visitor reaches
/// every query and table factor, wherever it sits).
struct Reads {
    /// Sorted and de-duplicated once the walk is done.
    names: Vec<String>,
    /// False when a name is one the digest folds as a literal.
    cacheable: bool,
    /// A schema-qualified function call or a system schema's table.
    volatile: bool,
    /// The WITH clauses around the walk's position, innermost last.
    scopes: Vec<CteScope>,
}

/// One WITH clause: its CTE names hide tables of the same name where they are visible.
struct CteScope {
    /// The query that carries the WITH (compared by address only).
    owner: *const Query,
    names: Vec<String>,
    /// Each CTE's body (compared by address only), to tell when the walk enters one.
    bodies: Vec<*const Query>,
    /// How many of `names` the walk's position sees: a CTE's body sees the CTEs before it
    /// (and itself under RECURSIVE); the main query sees them all. Seeing too few only adds
    /// a table that is not read, which is safe for invalidation; seeing too many is not.
    visible: usize,
    recursive: bool,
}

impl Reads {
    fn of(stmt: &Statement) -> Reads {
        let mut r = Reads {
            names: Vec::new(),
            cacheable: true,
            volatile: false,
            scopes: Vec::new(),
        };
        // The visitor never breaks.
        let _ = stmt.visit(&mut r);
        r.names.sort_unstable();
        r.names.dedup();
        r
    }

    fn is_cte(&self, name: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s.names.iter().take(s.visible).any(|n| n == name))
    }

    /// Records `[db.]table` (lower-cased) unless it is a CTE in scope or DUAL.
    fn add(&mut self, db: Option<String>, table: String, quoted: bool) {
        if db.is_none() && (self.is_cte(&table) || (!quoted && table == "dual")) {
            return;
        }
        if db.as_deref().is_some_and(|d| SYSTEM_SCHEMAS.contains(&d)) {
            self.volatile = true;
        }
        let name = match db {
            Some(db) => format!("{db}.{table}"),
            None => table,
        };
        if !name.is_empty() {
            self.names.push(name);
        }
    }

    /// `TABLE t` bodies (`SELECT ... UNION TABLE t`), which are not table factors.
    fn set_tables(&mut self, e: &SetExpr) {
        match e {
            SetExpr::Table(t) => {
                if let Some(table) = &t.table_name {
                    let db = t.schema_name.as_deref().map(str::to_lowercase);
                    // sqlparser keeps no quote style here: whether the digest saw a literal
                    // is unknown, so such a class is never shared.
                    self.cacheable = false;
                    self.add(db, table.to_lowercase(), false);
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.set_tables(left);
                self.set_tables(right);
            }
            _ => {}
        }
    }
}

impl Visitor for Reads {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let at: *const Query = q;
        if let Some(s) = self.scopes.last_mut() {
            if let Some(i) = s.bodies.iter().position(|b| std::ptr::eq(*b, at)) {
                s.visible = i + usize::from(s.recursive);
            }
        }
        if let Some(with) = &q.with {
            self.scopes.push(CteScope {
                owner: at,
                names: with
                    .cte_tables
                    .iter()
                    .map(|c| c.alias.name.value.to_lowercase())
                    .collect(),
                bodies: with
                    .cte_tables
                    .iter()
                    .map(|c| -> *const Query { &*c.query })
                    .collect(),
                visible: 0,
                recursive: with.recursive,
            });
        }
        self.set_tables(&q.body);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        let at: *const Query = q;
        if self
            .scopes
            .last()
            .is_some_and(|s| std::ptr::eq(s.owner, at))
        {
            self.scopes.pop();
        }
        if let Some(s) = self.scopes.last_mut() {
            if s.bodies.iter().any(|b| std::ptr::eq(*b, at)) {
                s.visible = s.names.len();
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, f: &TableFactor) -> ControlFlow<()> {
        // With `args` it is a table-valued function, not a table.
        if let TableFactor::Table {
            name, args: None, ..
        } = f
        {
            let tail = name_tail(name);
            self.cacheable &= digest_sees(&tail);
            match tail.as_slice() {
                [db, t] => self.add(Some(db.value.to_lowercase()), t.value.to_lowercase(), true),
                [t] => self.add(None, t.value.to_lowercase(), t.quote_style.is_some()),
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        // `db.f(...)`: most likely a stored function, whose body cannot be known from here.
        if let Expr::Function(f) = e {
            if f.name.0.len() > 1 {
                self.volatile = true;
            }
        }
        ControlFlow::Continue(())
    }
}

/// Whether a query body only reads (sqlparser also accepts `WITH ... DELETE`).
fn only_reads(e: &SetExpr) -> bool {
    match e {
        SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => true,
        SetExpr::Query(q) => only_reads(&q.body),
        SetExpr::SetOperation { left, right, .. } => only_reads(left) && only_reads(right),
        _ => false,
    }
}

fn dml_in(e: &SetExpr, w: &mut Writes) {
    match e {
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            w.dml(s)
        }
        SetExpr::Query(q) => dml_in(&q.body, w),
        SetExpr::SetOperation { left, right, .. } => {
            dml_in(left, w);
            dml_in(right, w);
        }
        _ => {}
    }
}

fn from_ast(ctx: &Ctx<'_>, toks: &[Tok], stmt: &Statement, scan: &Scan) -> Part {
    let Some(mut p) = by_type(stmt) else {
        return fallback(ctx, toks, scan);
    };
    let r = Reads::of(stmt);
    p.deterministic = !scan.volatile && !r.volatile;
    p.reads = r.names;
    p.cacheable &= r.cacheable;
    p
}

/// The part for a statement type the AST decides; `None` for the keyword fallback.
fn by_type(stmt: &Statement) -> Option<Part> {
    let mut w = Writes::new();
    Some(match stmt {
        Statement::Query(q) => {
            if only_reads(&q.body) {
                let mut p = Part::new(Kind::Read);
                if !q.locks.is_empty() {
                    p.kind = Kind::LockingRead;
                }
                p
            } else {
                dml_in(&q.body, &mut w);
                Part::new(Kind::Write).with_writes(w)
            }
        }
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_) => {
            w.dml(stmt);
            Part::new(Kind::Write).with_writes(w)
        }
        // A procedure may leave user variables (OUT parameters), temporary tables, locks or a
        // role in the session: they stay with it on its connection.
        Statement::Call(_) => Part::new(Kind::Write).pin("stored procedure"),
        Statement::LoadData { table_name, .. } => {
            w.object(table_name);
            Part::new(Kind::Write).with_writes(w)
        }
        Statement::CreateTable(ct) => {
            w.object(&ct.name);
            let p = Part::new(Kind::Ddl).with_writes(w);
            if ct.temporary {
                p.pin("temporary table")
            } else {
                p
            }
        }
        Statement::CreateSequence {
            temporary, name, ..
        } => {
            w.object(name);
            let p = Part::new(Kind::Ddl).with_writes(w);
            if *temporary {
                p.pin("temporary table")
            } else {
                p
            }
        }
        Statement::Drop {
            object_type,
            names,
            table,
            ..
        } => {
            match object_type {
                ObjectType::Table | ObjectType::View | ObjectType::Sequence => {
                    names.iter().for_each(|n| w.object(n));
                }
                _ => {}
            }
            if let Some(t) = table {
                w.object(t);
            }
            Part::new(Kind::Ddl).with_writes(w)
        }
        Statement::AlterTable(a) => {
            w.object(&a.name);
            Part::new(Kind::Ddl).with_writes(w)
        }
        Statement::Truncate(t) => {
            t.table_names.iter().for_each(|n| w.object(&n.name));
            Part::new(Kind::Ddl).with_writes(w)
        }
        Statement::RenameTable(rs) => {
            for r in rs {
                w.object(&r.old_name);
                w.object(&r.new_name);
            }
            Part::new(Kind::Ddl).with_writes(w)
        }
        Statement::CreateIndex(ci) => {
            w.object(&ci.table_name);
            Part::new(Kind::Ddl).with_writes(w)
        }
        Statement::CreateView(cv) => {
            w.object(&cv.name);
            Part::new(Kind::Ddl).with_writes(w)
        }
        Statement::AlterView { name, .. } | Statement::OptimizeTable { name, .. } => {
            w.object(name);
            Part::new(Kind::Ddl).with_writes(w)
        }
        Statement::Analyze(a) => {
            if let Some(n) = &a.table_name {
                w.object(n);
            }
            Part::new(Kind::Ddl).with_writes(w)
        }
        Statement::StartTransaction {
            modes,
            statements,
            exception,
            has_end_keyword,
            ..
        } => {
            if !statements.is_empty() || exception.is_some() || *has_end_keyword {
                Part::new(Kind::Other).pin("compound statement")
            } else {
                let read_only = modes.contains(&TransactionMode::AccessMode(
                    TransactionAccessMode::ReadOnly,
                ));
                Part::new(Kind::Begin { read_only })
            }
        }
        Statement::Commit { chain, .. } => Part::new(if *chain {
            Kind::Begin { read_only: false }
        } else {
            Kind::EndTransaction
        }),
        Statement::Rollback { chain, savepoint } => Part::new(if savepoint.is_some() {
            Kind::Other
        } else if *chain {
            Kind::Begin { read_only: false }
        } else {
            Kind::EndTransaction
        }),
        Statement::Use(_) => Part {
            is_use: true,
            ..Part::new(Kind::Other)
        },
        Statement::LockTables { .. } => Part::new(Kind::Other).pin("table lock"),
        Statement::Flush {
            read_lock, export, ..
        } => {
            let p = Part::new(Kind::Other);
            if *read_lock || *export {
                p.pin("table lock")
            } else {
                p
            }
        }
        Statement::Prepare { .. } | Statement::Execute { .. } | Statement::Deallocate { .. } => {
            Part::new(Kind::Other).pin("SQL prepared statement")
        }
        // The rest by leading keyword: CREATE FUNCTION, GRANT, SHOW ..., EXPLAIN, KILL ...
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Keyword fallback

/// Lower-cased name of a Word or quoted identifier (doubled backquotes undone).
fn ident(t: &Tok, src: &[u8]) -> Option<String> {
    match t.kind {
        TokKind::Word => Some(String::from_utf8_lossy(t.text(src)).to_lowercase()),
        TokKind::QuotedIdent => Some(
            String::from_utf8_lossy(t.name(src))
                .replace("``", "`")
                .to_lowercase(),
        ),
        _ => None,
    }
}

/// `name` or `db.name` at `i`; the name and the index after it.
fn table_at(toks: &[Tok], i: usize, src: &[u8]) -> Option<(String, usize)> {
    let first = ident(toks.get(i)?, src)?;
    if toks.get(i + 1).is_some_and(|t| t.is_punct(src, ".")) {
        if let Some(second) = toks.get(i + 2).and_then(|t| ident(t, src)) {
            return Some((format!("{first}.{second}"), i + 3));
        }
    }
    Some((first, i + 1))
}

/// Comma-separated table names from `i`.
fn tables_from(toks: &[Tok], mut i: usize, src: &[u8], w: &mut Writes) {
    while let Some((name, next)) = table_at(toks, i, src) {
        w.push(name);
        if !toks.get(next).is_some_and(|t| t.is_punct(src, ",")) {
            break;
        }
        i = next + 1;
    }
}

fn skip_words(toks: &[Tok], mut i: usize, src: &[u8], words: &[&str]) -> usize {
    while toks
        .get(i)
        .is_some_and(|t| words.iter().any(|k| t.is_kw(src, k)))
    {
        i += 1;
    }
    i
}

fn position_kw(toks: &[Tok], src: &[u8], kw: &str) -> Option<usize> {
    toks.iter().position(|t| t.is_kw(src, kw))
}

/// Classification by leading keywords, for what sqlparser cannot read. Unsure means primary.
fn fallback(ctx: &Ctx<'_>, toks: &[Tok], scan: &Scan) -> Part {
    let src = ctx.src;
    let kw = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_kw(src, k));
    let Some(first) = toks.first() else {
        return Part::new(Kind::Other);
    };
    let lead = match first.kind {
        TokKind::Word => String::from_utf8_lossy(first.text(src)).to_ascii_lowercase(),
        TokKind::Punct => String::from_utf8_lossy(first.text(src)).into_owned(),
        _ => String::new(),
    };
    let mut w = Writes::new();
    match lead.as_str() {
        "select" | "with" | "(" | "values" | "table" => {
            Part::new(if scan.lock_clause || scan.lock_fn || scan.sequence {
                Kind::LockingRead
            } else {
                Kind::Other
            })
        }
        "start" if !kw(1, "transaction") => Part::new(Kind::Other),
        "begin" | "start" => Part::new(Kind::Begin {
            read_only: toks
                .windows(2)
                .any(|p| p[0].is_kw(src, "read") && p[1].is_kw(src, "only")),
        }),
        "commit" | "rollback" => {
            let chain = toks
                .windows(2)
                .any(|p| p[0].is_kw(src, "and") && p[1].is_kw(src, "chain"));
            Part::new(
                if lead == "rollback" && position_kw(toks, src, "to").is_some() {
                    Kind::Other
                } else if chain {
                    Kind::Begin { read_only: false }
                } else {
                    Kind::EndTransaction
                },
            )
        }
        "insert" | "replace" => {
            let i = skip_words(
                toks,
                1,
                src,
                &["low_priority", "delayed", "high_priority", "ignore", "into"],
            );
            if let Some((n, _)) = table_at(toks, i, src) {
                w.push(n);
            }
            Part::new(Kind::Write).with_writes(w)
        }
        "update" => {
            let i = skip_words(toks, 1, src, &["low_priority", "ignore"]);
            let set = position_kw(toks, src, "set").unwrap_or(toks.len());
            let head = &toks[..set];
            tables_from(head, i, src, &mut w);
            for (j, t) in head.iter().enumerate() {
                if t.is_kw(src, "join") {
                    if let Some((n, _)) = table_at(head, j + 1, src) {
                        w.push(n);
                    }
                }
            }
            Part::new(Kind::Write).with_writes(w)
        }
        "delete" => {
            let i = skip_words(toks, 1, src, &["low_priority", "quick", "ignore"]);
            if kw(i, "from") {
                tables_from(toks, i + 1, src, &mut w);
            } else {
                tables_from(toks, i, src, &mut w);
            }
            Part::new(Kind::Write).with_writes(w)
        }
        "load" => {
            if kw(1, "data") || kw(1, "xml") {
                if let Some(p) = toks
                    .windows(2)
                    .position(|p| p[0].is_kw(src, "into") && p[1].is_kw(src, "table"))
                {
                    if let Some((n, _)) = table_at(toks, p + 2, src) {
                        w.push(n);
                    }
                }
                Part::new(Kind::Write).with_writes(w)
            } else {
                Part::new(Kind::Other)
            }
        }
        "call" => Part::new(Kind::Write).pin("stored procedure"),
        "create" => {
            let i = skip_words(toks, 1, src, &["or", "replace"]);
            let temporary = kw(i, "temporary");
            let i = skip_words(toks, i, src, &["temporary"]);
            if kw(i, "table") {
                let i = skip_words(toks, i + 1, src, &["if", "not", "exists"]);
                if let Some((n, _)) = table_at(toks, i, src) {
                    w.push(n);
                }
            }
            let p = Part::new(Kind::Ddl).with_writes(w);
            if temporary {
                p.pin("temporary table")
            } else {
                p
            }
        }
        "drop" if kw(1, "prepare") => Part::new(Kind::Other).pin("SQL prepared statement"),
        "drop" | "alter" | "truncate" | "optimize" | "repair" => {
            let i = skip_words(
                toks,
                1,
                src,
                &[
                    "temporary",
                    "online",
                    "ignore",
                    "no_write_to_binlog",
                    "local",
                ],
            );
            let i = if kw(i, "table") || kw(i, "tables") {
                skip_words(toks, i + 1, src, &["if", "exists"])
            } else if lead == "truncate" {
                i
            } else {
                usize::MAX
            };
            tables_from(toks, i, src, &mut w);
            Part::new(Kind::Ddl).with_writes(w)
        }
        "rename" => {
            let mut i = skip_words(toks, 1, src, &["table", "tables"]);
            while let Some((old, next)) = table_at(toks, i, src) {
                w.push(old);
                if !kw(next, "to") {
                    break;
                }
                let Some((new, after)) = table_at(toks, next + 1, src) else {
                    break;
                };
                w.push(new);
                if !toks.get(after).is_some_and(|t| t.is_punct(src, ",")) {
                    break;
                }
                i = after + 1;
            }
            Part::new(Kind::Ddl).with_writes(w)
        }
        "grant" | "revoke" => Part::new(Kind::Ddl),
        "analyze" => {
            // MariaDB's ANALYZE <statement> runs the statement.
            let mut i = 1;
            if kw(1, "format") {
                i = 4;
            }
            let runs = ["select", "insert", "update", "delete", "replace", "with"]
                .iter()
                .any(|k| kw(i, k));
            if runs && i < toks.len() {
                let mut p = statement(ctx, &toks[i..]);
                if p.kind == Kind::Read {
                    p.kind = Kind::Other;
                }
                // Its output reports the run's timings.
                p.deterministic = false;
                p
            } else {
                let i = skip_words(
                    toks,
                    1,
                    src,
                    &["no_write_to_binlog", "local", "table", "tables"],
                );
                tables_from(toks, i, src, &mut w);
                Part::new(Kind::Ddl).with_writes(w)
            }
        }
        "xa" => Part::new(Kind::Other).pin("XA transaction"),
        "handler" => Part::new(Kind::Other).pin("HANDLER"),
        "lock" => Part::new(Kind::Other).pin("table lock"),
        "flush" => {
            let locks = toks
                .windows(2)
                .any(|p| p[0].is_kw(src, "read") && p[1].is_kw(src, "lock"))
                || toks
                    .windows(2)
                    .any(|p| p[0].is_kw(src, "for") && p[1].is_kw(src, "export"));
            let p = Part::new(Kind::Other);
            if locks {
                p.pin("table lock")
            } else {
                p
            }
        }
        // BACKUP STAGE / BACKUP LOCK hold locks on the connection.
        "backup" => Part::new(Kind::Other).pin("table lock"),
        "prepare" | "execute" | "deallocate" => {
            Part::new(Kind::Other).pin("SQL prepared statement")
        }
        "use" => Part {
            is_use: true,
            ..Part::new(Kind::Other)
        },
        _ => Part::new(Kind::Other),
    }
}

// ---------------------------------------------------------------------------------------------
// SET

/// What a SET statement does, read from tokens.
#[derive(Debug)]
enum SetForm {
    /// Session assignments, each with whether its value assigns a user variable (`@v := `).
    Assign(Vec<(Assignment, bool)>),
    /// Only global variables: nothing for the session.
    Global,
    Transaction {
        global: bool,
    },
    Password,
    Role,
    DefaultRole,
}

/// Niladic functions that read as bare words: their value is taken when the SET runs.
const NILADIC: [&str; 10] = [
    "current_timestamp",
    "current_date",
    "current_time",
    "current_user",
    "current_role",
    "localtime",
    "localtimestamp",
    "utc_date",
    "utc_time",
    "utc_timestamp",
];

fn verbatim(toks: &[Tok], src: &[u8]) -> String {
    match (toks.first(), toks.last()) {
        (Some(a), Some(b)) => {
            String::from_utf8_lossy(src.get(a.start..b.end).unwrap_or_default()).into_owned()
        }
        _ => String::new(),
    }
}

fn value_of(v: &[Tok], src: &[u8], user: bool) -> Value {
    match v {
        [t] => match t.kind {
            TokKind::Str | TokKind::Number | TokKind::Hex | TokKind::Bin => {
                Value::Literal(verbatim(v, src))
            }
            TokKind::Word => {
                let is = |k: &str| t.is_kw(src, k);
                if is("default") {
                    if user {
                        Value::Expr
                    } else {
                        Value::Default
                    }
                } else if ["true", "false", "null"].iter().any(|k| is(k))
                    || (!user && (is("on") || is("off")))
                {
                    Value::Literal(verbatim(v, src))
                } else if user || NILADIC.iter().any(|k| is(k)) {
                    Value::Expr
                } else {
                    // An enum-like value such as TRADITIONAL or SYSTEM.
                    Value::Literal(verbatim(v, src))
                }
            }
            _ => Value::Expr,
        },
        [sign, n]
            if (sign.is_punct(src, "-") || sign.is_punct(src, "+"))
                && n.kind == TokKind::Number =>
        {
            Value::Literal(verbatim(v, src))
        }
        _ => Value::Expr,
    }
}

/// `x`, `'x'`, `` `x` ``: a charset or collation name, verbatim.
fn charset_name(t: &Tok, src: &[u8]) -> Option<String> {
    matches!(t.kind, TokKind::Word | TokKind::Str | TokKind::QuotedIdent)
        .then(|| verbatim(std::slice::from_ref(t), src))
}

fn names_value(t: &[Tok], src: &[u8]) -> Option<Vec<(Assignment, bool)>> {
    let text = match t {
        [cs] => charset_name(cs, src)?,
        [cs, collate, coll] if collate.is_kw(src, "collate") => {
            format!(
                "{} COLLATE {}",
                charset_name(cs, src)?,
                charset_name(coll, src)?
            )
        }
        _ => return None,
    };
    Some(vec![(
        Assignment {
            name: VarName::Names,
            value: Value::Literal(text),
        },
        false,
    )])
}

/// MariaDB's SET grammar over tokens; `None` for anything it does not follow.
fn parse_set(toks: &[Tok], src: &[u8]) -> Option<SetForm> {
    let t = toks.get(1..)?;
    let kw = |i: usize, k: &str| t.get(i).is_some_and(|x| x.is_kw(src, k));
    if kw(0, "names") {
        return names_value(&t[1..], src).map(SetForm::Assign);
    }
    if kw(0, "charset") {
        return names_value(&t[1..], src).map(SetForm::Assign);
    }
    if kw(0, "character") && kw(1, "set") {
        return names_value(&t[2..], src).map(SetForm::Assign);
    }
    if kw(0, "password") {
        return Some(SetForm::Password);
    }
    if kw(0, "role") {
        return Some(SetForm::Role);
    }
    if kw(0, "default") && kw(1, "role") {
        return Some(SetForm::DefaultRole);
    }
    if kw(0, "transaction") {
        return Some(SetForm::Transaction { global: false });
    }
    if (kw(0, "global") || kw(0, "session") || kw(0, "local")) && kw(1, "transaction") {
        return Some(SetForm::Transaction {
            global: kw(0, "global"),
        });
    }

    let mut out = Vec::new();
    let mut any_global = false;
    // A GLOBAL / SESSION keyword applies to the assignments after it until the next one.
    let mut default_global = false;
    let mut i = 0;
    loop {
        let mut global = default_global;
        let mut keyword_scope = false;
        if kw(i, "global") {
            (global, default_global, keyword_scope) = (true, true, true);
            i += 1;
        } else if kw(i, "session") || kw(i, "local") {
            (global, default_global, keyword_scope) = (false, false, true);
            i += 1;
        }
        let target = t.get(i)?;
        let name = match target.kind {
            TokKind::UserVar if !keyword_scope => {
                i += 1;
                let raw = String::from_utf8_lossy(target.name(src)).into_owned();
                let quote = target
                    .text(src)
                    .get(1)
                    .copied()
                    .filter(|q| matches!(q, b'\'' | b'"' | b'`'));
                let raw = match quote {
                    Some(q) => {
                        let q = char::from(q);
                        raw.replace(&format!("{q}{q}"), &q.to_string())
                    }
                    None => raw,
                };
                VarName::User(raw.to_lowercase())
            }
            TokKind::SysVar => {
                let n = target.name(src);
                let prefix = ["global", "session", "local"]
                    .iter()
                    .find(|k| n.eq_ignore_ascii_case(k.as_bytes()));
                match (
                    prefix,
                    t.get(i + 1),
                    t.get(i + 2).and_then(|x| ident(x, src)),
                ) {
                    (Some(p), Some(dot), Some(name)) if dot.is_punct(src, ".") => {
                        global = *p == "global";
                        i += 3;
                        VarName::System(name)
                    }
                    _ => {
                        // `@@x` in a SET means the session value.
                        global = false;
                        i += 1;
                        VarName::System(String::from_utf8_lossy(n).to_ascii_lowercase())
                    }
                }
            }
            TokKind::Word | TokKind::QuotedIdent => {
                let (name, next) = table_at(t, i, src)?;
                i = next;
                VarName::System(name)
            }
            _ => return None,
        };
        if !(t.get(i)?.is_punct(src, "=") || t.get(i)?.is_punct(src, ":=")) {
            return None;
        }
        i += 1;
        let start = i;
        let mut depth = 0usize;
        while let Some(x) = t.get(i) {
            if x.is_punct(src, "(") {
                depth += 1;
            } else if x.is_punct(src, ")") {
                depth = depth.checked_sub(1)?;
            } else if depth == 0 && x.is_punct(src, ",") {
                break;
            }
            i += 1;
        }
        if depth != 0 {
            return None;
        }
        let v = &t[start..i];
        if v.is_empty() {
            return None;
        }
        let user = matches!(name, VarName::User(_));
        if global {
            if user {
                return None;
            }
            any_global = true;
        } else {
            let assigns = v
                .windows(2)
                .any(|p| p[0].kind == TokKind::UserVar && p[1].is_punct(src, ":="));
            out.push((
                Assignment {
                    name,
                    value: value_of(v, src, user),
                },
                assigns,
            ));
        }
        if i >= t.len() {
            break;
        }
        i += 1; // the comma
    }
    match (any_global, out.is_empty()) {
        (false, _) => Some(SetForm::Assign(out)),
        (true, true) => Some(SetForm::Global),
        // Mixed global and session assignments: not worth modelling.
        (true, false) => None,
    }
}

/// Whether sqlparser's reading agrees with the token grammar's (a guard against either
/// misreading the statement).
fn agrees(stmt: &Statement, form: &SetForm) -> bool {
    let Statement::Set(set) = stmt else {
        return false;
    };
    match (set, form) {
        (Set::SetNames { .. } | Set::SetNamesDefault {}, SetForm::Assign(v)) => {
            v.len() == 1 && v[0].0.name == VarName::Names
        }
        (Set::SingleAssignment { .. }, SetForm::Assign(v)) => v.len() == 1,
        (Set::SingleAssignment { .. }, SetForm::Global | SetForm::Password) => true,
        (Set::MultipleAssignments { assignments }, SetForm::Assign(v)) => {
            v.len() == assignments.len()
        }
        (Set::MultipleAssignments { .. }, SetForm::Global) => true,
        (Set::SetTransaction { .. }, SetForm::Transaction { .. }) => true,
        (Set::SetRole { .. }, SetForm::Role) => true,
        _ => false,
    }
}

fn set_statement(ctx: &Ctx<'_>, toks: &[Tok], mut scan: Scan) -> Part {
    let src = ctx.src;
    // SET STATEMENT v=x [, ...] FOR <stmt>: the settings last one statement; classify that.
    if toks.get(1).is_some_and(|t| t.is_kw(src, "statement")) {
        let mut depth = 0usize;
        for (i, t) in toks.iter().enumerate().skip(2) {
            if t.is_punct(src, "(") {
                depth += 1;
            } else if t.is_punct(src, ")") {
                depth = depth.saturating_sub(1);
            } else if depth == 0 && t.is_kw(src, "for") && i + 1 < toks.len() {
                let mut p = statement(ctx, &toks[i + 1..]);
                // `SET STATEMENT time_zone = @tz FOR ...` depends on the value of `@tz`.
                p.deterministic &= !Scan::of(&toks[..i], src).volatile;
                return p;
            }
        }
        return Part::new(Kind::Other).pin("unparsed SET");
    }
    // The `:=` of `SET @v := 1` is the assignment itself; values are checked by parse_set.
    scan.assigns_var = false;
    let form = ctx.text(toks).and_then(|text| {
        let form = parse_set(toks, src)?;
        match parse_one(&text) {
            Some(stmt) => agrees(&stmt, &form).then_some(form),
            // sqlparser cannot read SET CHARACTER SET, CHARSET, @`quoted`, `:=`, ...
            None => Some(form),
        }
    });
    let mut part = match form {
        Some(SetForm::Assign(v)) => {
            let from_query = v.iter().any(|(a, assigns)| {
                *assigns || (matches!(a.name, VarName::User(_)) && a.value == Value::Expr)
            });
            let p = Part::new(Kind::Set(v.into_iter().map(|(a, _)| a).collect()));
            if from_query {
                p.pin("user variable assigned from a query")
            } else {
                p
            }
        }
        Some(SetForm::Transaction { global: false }) => {
            Part::new(Kind::Other).pin("transaction characteristics")
        }
        Some(SetForm::Role) => Part::new(Kind::Other).pin("role"),
        Some(
            SetForm::Global
            | SetForm::Transaction { global: true }
            | SetForm::Password
            | SetForm::DefaultRole,
        ) => Part::new(Kind::Other),
        None => Part::new(Kind::Other).pin("unparsed SET"),
    };
    part.apply(&scan);
    part
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sql: &str) -> Class {
        classify_uncached(sql.as_bytes())
    }

    use Kind::*;

    /// (statement, kind, pins, flags: "prev" / "next", writes)
    type Case = (
        &'static str,
        Kind,
        Option<&'static str>,
        &'static str,
        &'static [&'static str],
    );

    const BEGIN: Kind = Begin { read_only: false };
    const BEGIN_RO: Kind = Begin { read_only: true };
    const UVAR: Option<&str> = Some("user variable assigned from a query");

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        // sysbench
        ("SELECT c FROM sbtest1 WHERE id=4242", Read, None, "", &[]),
        ("SELECT c FROM sbtest1 WHERE id BETWEEN 10 AND 109", Read, None, "", &[]),
        ("SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 10 AND 109", Read, None, "", &[]),
        ("SELECT c FROM sbtest1 WHERE id BETWEEN 10 AND 109 ORDER BY c", Read, None, "", &[]),
        ("SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 10 AND 109 ORDER BY c", Read, None, "", &[]),
        ("UPDATE sbtest1 SET k=k+1 WHERE id=5", Write, None, "", &["sbtest1"]),
        ("UPDATE sbtest1 SET c='xx-yy' WHERE id=5", Write, None, "", &["sbtest1"]),
        ("DELETE FROM sbtest1 WHERE id=5", Write, None, "", &["sbtest1"]),
        ("INSERT INTO sbtest1 (id, k, c, pad) VALUES (5, 4, 'c', 'pad')", Write, None, "", &["sbtest1"]),
        ("BEGIN", BEGIN, None, "", &[]),
        ("COMMIT", EndTransaction, None, "", &[]),
        // reads
        ("SELECT @@server_id", Read, None, "", &[]),
        ("SELECT @x", Read, None, "", &[]),
        ("SELECT LAST_INSERT_ID()", Read, None, "", &[]),
        ("select @@version_comment limit 1", Read, None, "", &[]),
        ("SELECT @@max_allowed_packet,@@wait_timeout,@@socket", Read, None, "", &[]),
        ("WITH a AS (SELECT 1) SELECT * FROM a", Read, None, "", &[]),
        ("VALUES (1), (2)", Read, None, "", &[]),
        ("(SELECT 1) UNION (SELECT 2)", Read, None, "", &[]),
        ("SELECT /*!40001 SQL_NO_CACHE */ * FROM t", Read, None, "", &[]),
        ("SELECT a FROM t WHERE b IN (1, 2, 3) -- trailing", Read, None, "", &[]),
        ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", Read, None, "next", &[]),
        ("SELECT FOUND_ROWS()", Read, None, "prev", &[]),
        ("SELECT ROW_COUNT()", Read, None, "prev", &[]),
        ("SELECT @@warning_count", Read, None, "prev", &[]),
        ("SELECT @@session.error_count", Read, None, "prev", &[]),
        ("SELECT 1; SELECT 2;", Read, None, "", &[]),
        // locking reads
        ("SELECT * FROM t WHERE id = 1 FOR UPDATE", LockingRead, None, "", &[]),
        ("SELECT * FROM t FOR SHARE", LockingRead, None, "", &[]),
        ("SELECT * FROM t LOCK IN SHARE MODE", LockingRead, None, "", &[]),
        ("SELECT * FROM t WHERE a = 1 FOR UPDATE WAIT 5", LockingRead, None, "", &[]),
        ("SELECT * FROM (SELECT a FROM t FOR UPDATE) x", LockingRead, None, "", &[]),
        ("SELECT GET_LOCK('job', 10)", LockingRead, Some("named lock"), "", &[]),
        ("SELECT RELEASE_LOCK('job')", LockingRead, None, "", &[]),
        ("SELECT IS_FREE_LOCK('a'), IS_USED_LOCK('a')", LockingRead, None, "", &[]),
        ("SELECT RELEASE_ALL_LOCKS()", LockingRead, None, "", &[]),
        ("SELECT NEXTVAL(s)", LockingRead, None, "", &[]),
        ("SELECT SETVAL(s, 10)", LockingRead, None, "", &[]),
        ("SELECT LASTVAL(s)", LockingRead, None, "", &[]),
        ("SELECT NEXT VALUE FOR s", LockingRead, None, "", &[]),
        ("SELECT PREVIOUS VALUE FOR s", LockingRead, None, "", &[]),
        // reads that set state or write a file
        ("SELECT c INTO @x FROM t WHERE id = 1", Other, UVAR, "", &[]),
        ("SELECT c FROM t WHERE id = 1 INTO @x", Other, UVAR, "", &[]),
        ("SELECT @rn := @rn + 1 FROM t", Other, UVAR, "", &[]),
        ("SELECT a INTO OUTFILE '/tmp/x' FROM t", Other, None, "", &[]),
        ("SELECT 'a' FROM t INTO OUTFILE '/tmp/x'", Other, None, "", &[]),
        // writes
        ("INSERT INTO db.t SELECT * FROM u", Write, None, "", &["db.t"]),
        ("INSERT INTO t (a) VALUES (1),(2),(3),(4),(5),(6),(7),(8),(9),(10)", Write, None, "", &["t"]),
        ("INSERT IGNORE INTO `My Db`.`T` SET a = 1", Write, None, "", &["my db.t"]),
        ("INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = 2", Write, None, "", &["t"]),
        ("REPLACE INTO t VALUES (1)", Write, None, "", &["t"]),
        ("UPDATE LOW_PRIORITY IGNORE t SET a = 1", Write, None, "", &["t"]),
        ("UPDATE t1 JOIN t2 ON t1.a = t2.a SET t1.b = 1", Write, None, "", &["t1", "t2"]),
        ("DELETE LOW_PRIORITY QUICK IGNORE FROM Orders WHERE id = 1", Write, None, "", &["orders"]),
        ("DELETE t1 FROM t1 JOIN t2 ON t1.a = t2.a", Write, None, "", &["t1"]),
        ("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE db.t", Write, None, "", &["db.t"]),
        ("LOAD DATA INFILE 'x' REPLACE INTO TABLE t", Write, None, "", &["t"]),
        ("CALL refresh(1)", Write, Some("stored procedure"), "", &[]),
        ("WITH a AS (SELECT 1) DELETE FROM t", Write, None, "", &["t"]),
        ("UPDATE t SET a = (@x := a + 1)", Write, UVAR, "", &["t"]),
        // DDL
        ("CREATE TABLE t (a INT)", Ddl, None, "", &["t"]),
        ("CREATE TEMPORARY TABLE tmp (a INT)", Ddl, Some("temporary table"), "", &["tmp"]),
        ("CREATE OR REPLACE TEMPORARY TABLE tmp AS SELECT 1", Ddl, Some("temporary table"), "", &["tmp"]),
        ("DROP TEMPORARY TABLE tmp", Ddl, None, "", &["tmp"]),
        ("DROP TABLE IF EXISTS a, db.b", Ddl, None, "", &["a", "db.b"]),
        ("ALTER TABLE t ADD COLUMN b INT", Ddl, None, "", &["t"]),
        ("ALTER ONLINE TABLE t ADD c INT", Ddl, None, "", &["t"]),
        ("TRUNCATE TABLE db.t", Ddl, None, "", &["db.t"]),
        ("RENAME TABLE a TO b, c TO d", Ddl, None, "", &["a", "b", "c", "d"]),
        ("OPTIMIZE TABLE t", Ddl, None, "", &["t"]),
        ("ANALYZE TABLE t", Ddl, None, "", &["t"]),
        ("REPAIR TABLE t", Ddl, None, "", &["t"]),
        ("CREATE INDEX i ON t (a)", Ddl, None, "", &["t"]),
        ("CREATE DATABASE d", Ddl, None, "", &[]),
        ("GRANT SELECT ON db.* TO 'u'@'%'", Ddl, None, "", &[]),
        ("REVOKE SELECT ON db.* FROM 'u'@'%'", Ddl, None, "", &[]),
        ("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", Ddl, None, "", &[]),
        // transactions
        ("BEGIN WORK", BEGIN, None, "", &[]),
        ("START TRANSACTION", BEGIN, None, "", &[]),
        ("START TRANSACTION READ ONLY", BEGIN_RO, None, "", &[]),
        ("START TRANSACTION READ WRITE", BEGIN, None, "", &[]),
        ("START TRANSACTION WITH CONSISTENT SNAPSHOT", BEGIN, None, "", &[]),
        ("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", BEGIN_RO, None, "", &[]),
        ("COMMIT WORK", EndTransaction, None, "", &[]),
        ("ROLLBACK", EndTransaction, None, "", &[]),
        ("ROLLBACK AND NO CHAIN", EndTransaction, None, "", &[]),
        ("COMMIT AND CHAIN", BEGIN, None, "", &[]),
        ("ROLLBACK TO SAVEPOINT s1", Other, None, "", &[]),
        ("ROLLBACK WORK TO s1", Other, None, "", &[]),
        ("SAVEPOINT s1", Other, None, "", &[]),
        ("RELEASE SAVEPOINT s1", Other, None, "", &[]),
        ("XA START 'x'", Other, Some("XA transaction"), "", &[]),
        ("XA COMMIT 'x'", Other, Some("XA transaction"), "", &[]),
        // session state that pins
        ("LOCK TABLES t WRITE", Other, Some("table lock"), "", &[]),
        ("LOCK TABLE t READ", Other, Some("table lock"), "", &[]),
        ("UNLOCK TABLES", Other, None, "", &[]),
        ("FLUSH TABLES WITH READ LOCK", Other, Some("table lock"), "", &[]),
        ("FLUSH TABLES t FOR EXPORT", Other, Some("table lock"), "", &[]),
        ("FLUSH PRIVILEGES", Other, None, "", &[]),
        ("PREPARE s FROM 'SELECT 1'", Other, Some("SQL prepared statement"), "", &[]),
        ("EXECUTE s USING @a", Other, Some("SQL prepared statement"), "", &[]),
        ("DEALLOCATE PREPARE s", Other, Some("SQL prepared statement"), "", &[]),
        ("DROP PREPARE s", Other, Some("SQL prepared statement"), "", &[]),
        ("HANDLER t OPEN", Other, Some("HANDLER"), "", &[]),
        ("DO GET_LOCK('a', 0)", Other, Some("named lock"), "", &[]),
        ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", Other, Some("transaction characteristics"), "", &[]),
        ("SET SESSION TRANSACTION READ ONLY", Other, Some("transaction characteristics"), "", &[]),
        ("SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE", Other, None, "", &[]),
        ("SET GLOBAL max_connections = 10", Other, None, "", &[]),
        ("SET @@global.max_connections = 10", Other, None, "", &[]),
        ("SET GLOBAL a = 1, b = 2", Other, None, "", &[]),
        ("SET GLOBAL a = 1, SESSION b = 2", Other, Some("unparsed SET"), "", &[]),
        ("SET @@global.a = 1, @x = 2", Other, Some("unparsed SET"), "", &[]),
        ("SET", Other, Some("unparsed SET"), "", &[]),
        ("SET x", Other, Some("unparsed SET"), "", &[]),
        ("SET x = ", Other, Some("unparsed SET"), "", &[]),
        ("SET x = (1", Other, Some("unparsed SET"), "", &[]),
        ("SET ROLE admin", Other, Some("role"), "", &[]),
        ("SET PASSWORD FOR u = 'x'", Other, None, "", &[]),
        ("BEGIN NOT ATOMIC SELECT 1; SELECT 2; END", Other, Some("compound statement"), "", &[]),
        // SET STATEMENT: per statement, classified by the inner one
        ("SET STATEMENT max_statement_time = 1 FOR SELECT c FROM t", Read, None, "", &[]),
        ("SET STATEMENT sql_mode = '' FOR UPDATE t SET a = 1", Write, None, "", &["t"]),
        ("SET STATEMENT sql_mode = ''", Other, Some("unparsed SET"), "", &[]),
        // the rest: primary, no state
        ("SHOW WARNINGS", Other, None, "prev", &[]),
        ("SHOW ERRORS LIMIT 5", Other, None, "prev", &[]),
        ("SHOW COUNT(*) WARNINGS", Other, None, "prev", &[]),
        ("SHOW COUNT(*) ERRORS", Other, None, "prev", &[]),
        ("GET DIAGNOSTICS @n = NUMBER", Other, None, "prev", &[]),
        ("SHOW TABLES", Other, None, "", &[]),
        ("SHOW VARIABLES LIKE 'x%'", Other, None, "", &[]),
        ("DESCRIBE t", Other, None, "", &[]),
        ("EXPLAIN SELECT GET_LOCK('a', 1)", Other, None, "", &[]),
        ("HELP 'select'", Other, None, "", &[]),
        ("DO 1", Other, None, "", &[]),
        ("USE app", Other, None, "", &[]),
        ("KILL 5", Other, None, "", &[]),
        ("CHECK TABLE t", Other, None, "", &[]),
        ("TABLE t", Other, None, "", &[]),
        ("ANALYZE SELECT * FROM t", Other, None, "", &[]),
        ("ANALYZE FORMAT=JSON UPDATE t SET a = 1", Write, None, "", &["t"]),
        ("gibberish here", Other, None, "", &[]),
        ("START SLAVE", Other, None, "", &[]),
        ("SELECT DATABASE()", Read, None, "", &[]),
        ("/* mysql-connector-java-8.0.33 */SELECT  @@session.auto_increment_increment AS a, @@character_set_client AS b", Read, None, "", &[]),
        // multi-statement
        ("SELECT 1; UPDATE t SET a = 1", Other, None, "", &["t"]),
        ("SET NAMES utf8; SELECT 1", Other, Some("multi-statement with session state"), "", &[]),
        ("BEGIN; UPDATE t SET a = 1; COMMIT", Other, Some("multi-statement with session state"), "", &["t"]),
        ("USE db; SELECT 1", Other, Some("multi-statement with session state"), "", &[]),
        ("SELECT 1; CREATE TEMPORARY TABLE x (a INT)", Other, Some("multi-statement with session state"), "", &["x"]),
        ("SELECT SQL_CALC_FOUND_ROWS a FROM t; SELECT FOUND_ROWS()", Read, None, "prev next", &[]),
        // hints and comments do not change the class
        ("/* shardgate:replica */ SELECT 1", Read, None, "", &[]),
        ("-- shardgate:primary\nDELETE FROM t", Write, None, "", &["t"]),
        // odd input
        ("", Other, None, "", &[]),
        ("  ;; ", Other, None, "", &[]),
        ("/* only a comment */", Other, None, "", &[]),
        ("SELECT 'unterminated", Other, None, "", &[]),
        ("SELECT `unterminated", Other, None, "", &[]),
        ("SELECT 1 /* unterminated", Read, None, "", &[]),
        ("INSERT INTO t VALUES ('unterminated", Write, None, "", &["t"]),
    ];

    #[test]
    fn table() {
        let mut failures = Vec::new();
        for (sql, kind, pins, flags, writes) in CASES {
            let got = c(sql);
            let want_statements = sql.split(';').filter(|s| !s.trim().is_empty()).count();
            let want_statements = if sql.contains("BEGIN NOT ATOMIC") || sql.contains("PROCEDURE") {
                1
            } else if sql.starts_with("/* only") {
                0
            } else {
                want_statements
            };
            let ok = got.kind == *kind
                && got.pins == *pins
                && got.uses_previous == flags.contains("prev")
                && got.keeps_for_next == flags.contains("next")
                && got.writes == *writes
                && got.statements == want_statements;
            if !ok {
                failures.push(format!("{sql:?}\n    got {got:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} wrong:\n{}",
            failures.len(),
            CASES.len(),
            failures.join("\n")
        );
    }

    /// (statement, reads, deterministic)
    type ReadCase = (&'static str, &'static [&'static str], bool);

    #[rustfmt::skip]
    const READS: &[ReadCase] = &[
        // no tables
        ("SELECT 1", &[], true),
        ("SELECT 1 FROM DUAL", &[], true),
        ("SELECT VERSION()", &[], true),
        // plain, joins, qualified and backquoted names
        ("SELECT c FROM sbtest1 WHERE id=4242", &["sbtest1"], true),
        ("SELECT * FROM t WHERE a IN (1, 2, 3) AND b = ?", &["t"], true),
        ("SELECT a FROM t1 JOIN t2 ON t1.id = t2.id LEFT JOIN db.t3 USING (id)", &["db.t3", "t1", "t2"], true),
        ("SELECT * FROM t1, t2 WHERE t1.a = t2.a", &["t1", "t2"], true),
        ("SELECT * FROM t1 NATURAL JOIN t2 CROSS JOIN t3", &["t1", "t2", "t3"], true),
        ("SELECT * FROM `My Db`.`Orders` o", &["my db.orders"], true),
        ("SELECT * FROM `t` AS a JOIN T AS b ON a.id = b.id", &["t"], true),
        ("SELECT * FROM `dual`", &["dual"], true),
        ("SELECT * FROM a.b.c", &["b.c"], true),
        // subqueries in any clause, derived tables
        ("SELECT * FROM t WHERE a IN (SELECT b FROM u)", &["t", "u"], true),
        ("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.a = t.a)", &["t", "u"], true),
        ("SELECT a, (SELECT MAX(b) FROM u) AS m FROM t", &["t", "u"], true),
        ("SELECT a FROM t GROUP BY a HAVING COUNT(*) > (SELECT COUNT(*) FROM u)", &["t", "u"], true),
        ("SELECT * FROM t1 WHERE a = (SELECT a FROM t2 WHERE b = (SELECT b FROM db.t3))", &["db.t3", "t1", "t2"], true),
        ("SELECT d.a FROM (SELECT a FROM t) AS d", &["t"], true),
        ("SELECT * FROM (SELECT * FROM (SELECT a FROM deep) x) y JOIN t USING (a)", &["deep", "t"], true),
        // CTEs: their names are not tables where they are visible
        ("WITH x AS (SELECT a FROM t) SELECT * FROM x", &["t"], true),
        ("WITH x AS (SELECT a FROM t), y AS (SELECT a FROM x JOIN u USING (a)) SELECT * FROM y", &["t", "u"], true),
        ("WITH t AS (SELECT a FROM t) SELECT * FROM t", &["t"], true),
        ("WITH y AS (SELECT a FROM x), x AS (SELECT 1 AS a) SELECT * FROM y", &["x"], true),
        ("WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", &[], true),
        ("WITH x AS (SELECT 1 AS a) SELECT * FROM db.x", &["db.x"], true),
        ("SELECT * FROM (WITH x AS (SELECT a FROM t) SELECT * FROM x) d JOIN x USING (a)", &["t", "x"], true),
        ("WITH a AS (SELECT 1) SELECT * FROM a", &[], true),
        // set operations
        ("SELECT a FROM t1 UNION SELECT a FROM t2", &["t1", "t2"], true),
        ("(SELECT a FROM t1) UNION ALL (SELECT a FROM t2 ORDER BY a LIMIT 1)", &["t1", "t2"], true),
        ("SELECT a FROM t1 UNION TABLE db.t2", &["db.t2", "t1"], true),
        // deterministic built-ins; strings are literals; names that only look like functions
        ("SELECT COUNT(*), SUM(k), CONCAT(LOWER(c), 'x'), COALESCE(a, 0), IF(a, 1, 2), DATE_FORMAT(d, '%Y') FROM t", &["t"], true),
        ("SELECT 'NOW()', \"RAND()\", 'it''s @v' FROM t", &["t"], true),
        ("SELECT user, t.now FROM t", &["t"], true),
        ("SELECT c AS `now` FROM t", &["t"], true),
        ("SELECT f(a) FROM t", &["t"], true),
        // non-deterministic functions, any case, with or without parentheses
        ("SELECT NOW()", &[], false),
        ("SELECT * FROM t WHERE d > now() - INTERVAL 1 DAY", &["t"], false),
        ("SELECT CURRENT_TIMESTAMP", &[], false),
        ("SELECT * FROM t WHERE d = CURRENT_DATE", &["t"], false),
        ("SELECT UTC_DATE, CURDATE(), SysDate()", &[], false),
        ("SELECT * FROM t ORDER BY RAND() LIMIT 1", &["t"], false),
        ("SELECT UUID(), UUID_SHORT()", &[], false),
        ("SELECT UNIX_TIMESTAMP('2024-01-01')", &[], false),
        ("SELECT `now`()", &[], false),
        ("SELECT CONNECTION_ID(), USER(), CURRENT_USER", &[], false),
        ("SELECT LAST_INSERT_ID()", &[], false),
        ("SELECT a FROM t WHERE b = SLEEP(1)", &["t"], false),
        ("SELECT LOAD_FILE('/etc/hosts')", &[], false),
        ("SELECT db.f(a) FROM t", &["t"], false),
        ("SELECT SQL_CALC_FOUND_ROWS a FROM t LIMIT 1", &["t"], false),
        // variables
        ("SELECT * FROM t WHERE a = @v", &["t"], false),
        ("SELECT @@sql_mode", &[], false),
        ("SELECT a FROM t WHERE b = @@session.time_zone", &["t"], false),
        // system schemas
        ("SELECT * FROM information_schema.tables", &["information_schema.tables"], false),
        ("SELECT * FROM INFORMATION_SCHEMA.TABLES t JOIN app.x ON t.table_name = x.n", &["app.x", "information_schema.tables"], false),
        ("SELECT * FROM t WHERE a IN (SELECT user FROM mysql.user)", &["mysql.user", "t"], false),
        ("SELECT * FROM performance_schema.threads", &["performance_schema.threads"], false),
        // hints, locking reads, INTO
        ("SELECT SQL_NO_CACHE a FROM t", &["t"], true),
        ("SELECT /*!40001 SQL_NO_CACHE */ * FROM t", &["t"], true),
        ("SELECT c FROM t WHERE id = 1 FOR UPDATE", &["t"], true),
        ("SELECT c INTO @x FROM t WHERE id = 1", &["t"], false),
        // other statements, best effort
        ("INSERT INTO db.t SELECT * FROM u", &["u"], true),
        ("INSERT INTO t (a) VALUES (NOW())", &[], false),
        ("UPDATE t SET a = (SELECT MAX(b) FROM u)", &["t", "u"], true),
        ("DELETE FROM t WHERE id IN (SELECT id FROM u)", &["t", "u"], true),
        ("CREATE TABLE c AS SELECT * FROM t", &["t"], true),
        ("SET STATEMENT max_statement_time = 1 FOR SELECT c FROM t", &["t"], true),
        ("SET STATEMENT time_zone = @tz FOR SELECT c FROM t", &["t"], false),
        ("SET @a = 1", &[], false),
        // multi-statement: the union, deterministic only if all are
        ("SELECT 1; SELECT a FROM t", &["t"], true),
        ("SELECT a FROM t; SELECT b FROM u WHERE c = NOW()", &["t", "u"], false),
        // what sqlparser cannot read, or the keyword fallback decides
        ("SELECT a INTO OUTFILE '/tmp/x' FROM t", &[], false),
        ("SELECT * FROM t LOCK IN SHARE MODE", &[], false),
        ("SELECT NEXT VALUE FOR s", &[], false),
        ("gibberish here", &[], false),
        ("SHOW TABLES", &[], false),
        ("EXPLAIN SELECT * FROM t", &[], false),
        ("ANALYZE SELECT * FROM t", &["t"], false),
        ("", &[], false),
    ];

    #[test]
    fn reads_and_determinism() {
        let mut failures = Vec::new();
        for (sql, reads, deterministic) in READS {
            let got = c(sql);
            if got.reads != *reads || got.deterministic != *deterministic {
                failures.push(format!(
                    "{sql:?}\n    got reads {:?}, deterministic {}",
                    got.reads, got.deterministic
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} wrong:\n{}",
            failures.len(),
            READS.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn no_cache_hint() {
        assert!(c("SELECT SQL_NO_CACHE a FROM t").no_cache_hint);
        assert!(c("select sql_no_cache a from t").no_cache_hint);
        assert!(c("SELECT /*!40001 SQL_NO_CACHE */ * FROM t").no_cache_hint);
        assert!(c("SELECT 1; SELECT SQL_NO_CACHE a FROM t").no_cache_hint);
        assert!(!c("SELECT a FROM t").no_cache_hint);
        assert!(!c("SELECT 'SQL_NO_CACHE' FROM t").no_cache_hint);
        assert!(!c("SELECT /* SQL_NO_CACHE */ a FROM t").no_cache_hint);
    }

    #[test]
    fn read_names_the_digest_folds_are_not_shared() {
        // sqlparser reads 'a' / "a" as table names; the digest sees literals.
        std::thread::spawn(|| {
            let a = classify(b"SELECT * FROM 'a'");
            let b = classify(b"SELECT * FROM 'b'");
            assert_eq!(a.class.reads, vec!["a".to_string()]);
            assert_eq!(b.class.reads, vec!["b".to_string()]);
            let a = classify(b"SELECT * FROM \"a\" JOIN t USING (x)");
            let b = classify(b"SELECT * FROM \"b\" JOIN t USING (x)");
            assert_eq!(b.class.reads, vec!["b".to_string(), "t".to_string()]);
            assert!(!Arc::ptr_eq(&a.class, &b.class));
            // Backquoted names are hashed as written: shared as usual.
            let a = classify(b"SELECT * FROM `a` WHERE id = 1");
            let b = classify(b"SELECT * FROM `a` WHERE id = 2");
            assert!(Arc::ptr_eq(&a.class, &b.class));
            // A literal's value never changes the answer.
            let x = classify(b"SELECT 'NOW()' FROM t");
            let y = classify(b"SELECT 'abc' FROM t");
            assert!(Arc::ptr_eq(&x.class, &y.class));
            assert!(y.class.deterministic);
        })
        .join()
        .expect("thread");
    }

    fn lit(s: &str) -> Value {
        Value::Literal(s.into())
    }
    fn sys(n: &str, v: Value) -> Assignment {
        Assignment {
            name: VarName::System(n.into()),
            value: v,
        }
    }
    fn user(n: &str, v: Value) -> Assignment {
        Assignment {
            name: VarName::User(n.into()),
            value: v,
        }
    }
    fn names(v: &str) -> Assignment {
        Assignment {
            name: VarName::Names,
            value: lit(v),
        }
    }

    #[test]
    fn set_statements() {
        let cases: Vec<(&str, Vec<Assignment>, Option<&str>)> = vec![
            ("SET autocommit=0", vec![sys("autocommit", lit("0"))], None),
            ("SET AUTOCOMMIT = 1", vec![sys("autocommit", lit("1"))], None),
            ("SET @@autocommit = OFF", vec![sys("autocommit", lit("OFF"))], None),
            ("SET SESSION sql_mode = 'ANSI'", vec![sys("sql_mode", lit("'ANSI'"))], None),
            ("SET LOCAL sql_mode = TRADITIONAL", vec![sys("sql_mode", lit("TRADITIONAL"))], None),
            ("SET @@session.time_zone = '+02:00'", vec![sys("time_zone", lit("'+02:00'"))], None),
            ("SET @@LOCAL.Time_Zone = \"+00:00\"", vec![sys("time_zone", lit("\"+00:00\""))], None),
            ("SET `wait_timeout` = 60", vec![sys("wait_timeout", lit("60"))], None),
            ("SET sql_mode = DEFAULT", vec![sys("sql_mode", Value::Default)], None),
            ("SET SQL_SELECT_LIMIT=DEFAULT", vec![sys("sql_select_limit", Value::Default)], None),
            ("SET character_set_results = NULL", vec![sys("character_set_results", lit("NULL"))], None),
            ("SET x = -1", vec![sys("x", lit("-1"))], None),
            ("SET x = 1.5e3", vec![sys("x", lit("1.5e3"))], None),
            ("SET x = 0x1F", vec![sys("x", lit("0x1F"))], None),
            ("SET x = _utf8mb4'a'", vec![sys("x", lit("_utf8mb4'a'"))], None),
            ("SET x = 'it''s'", vec![sys("x", lit("'it''s'"))], None),
            ("SET tx_isolation = 'READ-COMMITTED'", vec![sys("tx_isolation", lit("'READ-COMMITTED'"))], None),
            ("SET tx_isolation = READ-COMMITTED", vec![sys("tx_isolation", Value::Expr)], None),
            ("SET timestamp = CURRENT_TIMESTAMP", vec![sys("timestamp", Value::Expr)], None),
            ("SET sql_mode = CONCAT(@@sql_mode, ',X')", vec![sys("sql_mode", Value::Expr)], None),
            ("SET SESSION a = 1, b = 2", vec![sys("a", lit("1")), sys("b", lit("2"))], None),
            // Rails
            (
                "SET @@SESSION.sql_mode = CONCAT(CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), ',NO_AUTO_VALUE_ON_ZERO'), @@SESSION.sql_auto_is_null = 0, @@SESSION.wait_timeout = 2147483",
                vec![
                    sys("sql_mode", Value::Expr),
                    sys("sql_auto_is_null", lit("0")),
                    sys("wait_timeout", lit("2147483")),
                ],
                None,
            ),
            // user variables
            ("SET @a = 1, @b = 'x'", vec![user("a", lit("1")), user("b", lit("'x'"))], None),
            ("SET @Mixed = TRUE", vec![user("mixed", lit("TRUE"))], None),
            ("SET @a := 5", vec![user("a", lit("5"))], None),
            ("SET @`a b` = 1", vec![user("a b", lit("1"))], None),
            ("SET @'It''s' = 1", vec![user("it's", lit("1"))], None),
            ("SET @a = @b + 1", vec![user("a", Value::Expr)], UVAR),
            ("SET @a = (SELECT MAX(id) FROM t)", vec![user("a", Value::Expr)], UVAR),
            ("SET @a = NOW()", vec![user("a", Value::Expr)], UVAR),
            ("SET sql_mode = (@m := 'ANSI')", vec![sys("sql_mode", Value::Expr)], UVAR),
            ("SET @a = 1, sql_mode = ''", vec![user("a", lit("1")), sys("sql_mode", lit("''"))], None),
            // mysqldump preamble
            ("/*!40101 SET character_set_client = utf8 */", vec![sys("character_set_client", lit("utf8"))], None),
            ("/*!40103 SET TIME_ZONE='+00:00' */;", vec![sys("time_zone", lit("'+00:00'"))], None),
            (
                "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */",
                vec![user("old_character_set_client", Value::Expr)],
                UVAR,
            ),
            ("/*M!100100 SET x = 1 */", vec![sys("x", lit("1"))], None),
            // NAMES and CHARACTER SET
            ("SET NAMES utf8mb4", vec![names("utf8mb4")], None),
            ("set names utf8mb4 collate utf8mb4_unicode_ci", vec![names("utf8mb4 COLLATE utf8mb4_unicode_ci")], None),
            ("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci", vec![names("utf8mb4 COLLATE utf8mb4_unicode_ci")], None),
            ("SET NAMES 'utf8'", vec![names("'utf8'")], None),
            ("SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin'", vec![names("'utf8mb4' COLLATE 'utf8mb4_bin'")], None),
            ("SET NAMES DEFAULT", vec![names("DEFAULT")], None),
            ("/*!40101 SET NAMES utf8 */", vec![names("utf8")], None),
            ("SET CHARACTER SET utf8", vec![names("utf8")], None),
            ("SET CHARSET latin1", vec![names("latin1")], None),
        ];
        for (sql, want, pins) in cases {
            let got = c(sql);
            assert_eq!(got.kind, Kind::Set(want), "{sql}");
            assert_eq!(got.pins, pins, "{sql}");
            assert_eq!(got.statements, 1, "{sql}");
            assert!(got.writes.is_empty(), "{sql}");
        }
        let got = c("SET @rows = FOUND_ROWS()");
        assert!(got.uses_previous && got.pins == UVAR);
        assert_eq!(c("SET @l = GET_LOCK('x', 1)").pins, UVAR);
        assert_eq!(
            c("SET sql_mode = IF(GET_LOCK('x', 1), '', '')").pins,
            Some("named lock")
        );
    }

    #[test]
    fn invalid_utf8_goes_to_the_primary_without_panicking() {
        let c = |b: &[u8]| classify_uncached(b);
        assert_eq!(c(b"SELECT '\xff'").kind, Other);
        assert_eq!(c(b"SELECT '\xff' FROM t FOR UPDATE").kind, LockingRead);
        let w = c(b"INSERT INTO t VALUES ('caf\xe9')");
        assert_eq!((w.kind, w.writes), (Write, vec!["t".to_string()]));
        let s = c(b"SET @x = '\xff'");
        assert_eq!((s.kind, s.pins), (Other, Some("unparsed SET")));
        assert_eq!(c(b"\xff\xfe\x00").kind, Other);
        let m = c(b"SELECT 1; SELECT '\xff'");
        assert_eq!((m.kind, m.statements), (Other, 2));
        let hit = classify(b"SELECT '\xe9' FROM t");
        assert_eq!(hit.class.kind, Other);
    }

    #[test]
    fn hints_come_back_with_the_class() {
        let h = |s: &str| classify(s.as_bytes()).hint;
        assert_eq!(
            h("/* shardgate:replica */ SELECT c FROM t WHERE id = 1"),
            Some(Hint::Replica)
        );
        assert_eq!(
            h("SELECT c FROM t WHERE id = 2 /* shardgate:primary */"),
            Some(Hint::Primary)
        );
        assert_eq!(h("SELECT c FROM t WHERE id = 3"), None);
        assert_eq!(
            h("SELECT c FROM t WHERE id = 4 # shardgate:replica"),
            Some(Hint::Replica)
        );
        // Same digest, different hints: the hint is not part of the cached class.
        let a = classify(b"/* shardgate:primary */ SELECT c FROM t WHERE id = 5");
        let b = classify(b"/* shardgate:replica */ SELECT c FROM t WHERE id = 6");
        assert!(Arc::ptr_eq(&a.class, &b.class));
        assert_eq!((a.hint, b.hint), (Some(Hint::Primary), Some(Hint::Replica)));
    }

    #[test]
    fn cache_shares_classes_by_digest_but_never_sets() {
        let a = classify(b"SELECT c FROM sbtest1 WHERE id=1");
        let b = classify(b"select c from sbtest1 where id = 99 ");
        assert!(Arc::ptr_eq(&a.class, &b.class));
        assert_eq!(a.class.kind, Read);

        let zero = classify(b"SET autocommit=0");
        let one = classify(b"SET autocommit=1");
        assert_eq!(zero.class.kind, Set(vec![sys("autocommit", lit("0"))]));
        assert_eq!(one.class.kind, Set(vec![sys("autocommit", lit("1"))]));
        let n1 = classify(b"SET NAMES 'utf8'");
        let n2 = classify(b"SET NAMES 'latin1'");
        assert_eq!(n2.class.kind, Set(vec![names("'latin1'")]));
        assert!(!Arc::ptr_eq(&n1.class, &n2.class));

        // sqlparser reads "t" as a table name where MariaDB (ANSI_QUOTES) might too; the
        // digest sees a literal, so such a class must not be shared.
        let q1 = classify(b"INSERT INTO \"a\" VALUES (1)");
        let q2 = classify(b"INSERT INTO \"b\" VALUES (1)");
        assert_eq!(q1.class.writes, vec!["a".to_string()]);
        assert_eq!(q2.class.writes, vec!["b".to_string()]);

        // Different statement shapes never share.
        let r = classify(b"SELECT c FROM t WHERE id = 1");
        let w = classify(b"SELECT c FROM t WHERE id = 1 FOR UPDATE");
        let v = classify(b"SELECT c INTO @v FROM t WHERE id = 1");
        assert_eq!(
            (&r.class.kind, &w.class.kind, &v.class.kind),
            (&Read, &LockingRead, &Other)
        );
    }

    #[test]
    fn cache_is_bounded() {
        std::thread::spawn(|| {
            for i in 0..(CACHE_LIMIT + 50) {
                classify(format!("SELECT c{i} FROM t WHERE id = 1").as_bytes());
            }
            let len = CACHE.with(|c| c.borrow().len());
            assert!(len > 0 && len <= CACHE_LIMIT, "{len}");
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn cached_and_uncached_agree() {
        std::thread::spawn(|| {
            let sqls = CASES.iter().map(|c| c.0).chain(READS.iter().map(|c| c.0));
            for sql in sqls {
                let first = classify(sql.as_bytes());
                let again = classify(sql.as_bytes());
                let plain = classify_uncached(sql.as_bytes());
                assert_eq!(*first.class, plain, "{sql}");
                assert_eq!(*again.class, plain, "{sql}");
            }
        })
        .join()
        .expect("thread");
    }

    /// Random byte soup and random SQL fragments: no panic anywhere.
    #[test]
    fn never_panics() {
        const BITS: [&str; 24] = [
            "SELECT ", "SET ", "@", "@@", "'", "\"", "`", "/*", "*/", "/*!", "-- ", "#", "\n", ";",
            "(", ")", ",", "=", ":=", "x", "1e", "0x", "\\", "\u{e9}",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let n = (next() % 12) as usize;
            let mut sql = Vec::new();
            for _ in 0..n {
                let r = next();
                if r % 5 == 0 {
                    sql.push((r >> 8) as u8);
                } else {
                    sql.extend_from_slice(BITS[(r >> 8) as usize % BITS.len()].as_bytes());
                }
            }
            let _ = classify(&sql);
            let _ = digest::normalized(&sql);
        }
    }
}
