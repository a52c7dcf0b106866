//! The plan cache of sharded keyspaces: a statement's *shape* is its token stream with every
//! literal taken out. Planning the shape (literals as `?` parameters) once tells where the
//! shard key comes from; later statements of the same shape bind their own literal without
//! being parsed again.
//!
//! Only plans that do not depend on the literals' values are kept by shape: "the shard of
//! literal i", "any shard", "every shard". Multi-shard reads (scatter, merge: their plans hold
//! LIMIT values and rewritten text) and statements with `?` parameters are kept by their exact
//! text instead, so a repeated statement or an executed prepared statement is not parsed
//! again. Split INSERTs, multi-shard writes and refusals are planned in full each time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use super::ShardPlan;
use crate::planner::digest::{Lexer, TokKind};
use crate::planner::text::STAND_IN;
use crate::shardmap::ring::KeyValue;

/// Shapes kept per thread (each proxy worker has its own): past this the cache starts over.
const MAX_SHAPES: usize = 10_000;

/// Statements longer than this are not kept by their text (an entry may hold a rewrite of it).
const MAX_EXACT_TEXT: usize = 4096;

/// A statement split into its shape and its literals.
pub struct Shape<'a> {
    pub hash: u64,
    /// The statement with each literal replaced by `?`: what the planner plans once.
    pub text: String,
    literals: Vec<Literal<'a>>,
}

#[derive(Debug, Clone, Copy)]
enum Literal<'a> {
    Number(&'a [u8]),
    /// A plain '…' string's content (no escapes, no introducer, no stand-in for non-UTF-8).
    Text(&'a [u8]),
    /// Anything the planner reads differently (hex, escapes, introducers): the shape is
    /// planned in full when such a literal is the key.
    Other,
}

/// What is remembered for a shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// The shard of the statement's literal number `i`.
    Literal(usize),
    /// The same answer whatever the literals: `Any` or `All`.
    Fixed(ShardPlan),
    /// The shape's plan depends on its values: each statement is planned by its text.
    ByText,
    /// The plan of exactly one statement text (see [`exact_hash`]).
    Exact(ShardPlan),
}

impl<'a> Shape<'a> {
    /// `None` for statements the cache does not serve (placeholders, unreadable text).
    pub fn of(sql: &'a str) -> Option<Shape<'a>> {
        let src = sql.as_bytes();
        let mut lx = Lexer::new(src);
        let mut h = hasher();
        let mut text = String::with_capacity(sql.len());
        let mut literals = Vec::new();
        let mut copied = 0;
        for t in lx.by_ref() {
            let raw = t.text(src);
            match t.kind {
                TokKind::Placeholder => return None,
                TokKind::Number | TokKind::Str | TokKind::Hex | TokKind::Bin => {
                    literals.push(literal(t.kind, raw));
                    h.write_u8(b'?');
                    text.push_str(sql.get(copied..t.start)?);
                    text.push('?');
                    copied = t.end;
                }
                TokKind::Word => {
                    for b in raw {
                        h.write_u8(b.to_ascii_lowercase());
                    }
                }
                _ => h.write(raw),
            }
            h.write_u8(0);
        }
        if lx.unterminated {
            return None;
        }
        text.push_str(sql.get(copied..)?);
        Some(Shape {
            hash: h.finish(),
            text,
            literals,
        })
    }

    /// The plan of this statement from a cached one; `None` when the literal at the key's
    /// place is not one the cache can read (the caller plans in full).
    pub fn bind(
        &self,
        cached: &Cached,
        shard_of: impl Fn(&KeyValue<'_>) -> usize,
    ) -> Option<ShardPlan> {
        match cached {
            Cached::Fixed(p) | Cached::Exact(p) => Some(p.clone()),
            Cached::ByText => None,
            Cached::Literal(i) => {
                let key = match self.literals.get(*i)? {
                    Literal::Number(n) => KeyValue::from_number_text(n),
                    Literal::Text(t) => KeyValue::from_string_content(t),
                    Literal::Other => return None,
                };
                Some(ShardPlan::One(shard_of(&key)))
            }
        }
    }
}

/// What of a fresh plan of the shape may be cached.
pub fn cacheable(plan: &ShardPlan) -> Option<Cached> {
    match plan {
        ShardPlan::Param(i) => Some(Cached::Literal(*i)),
        ShardPlan::Any | ShardPlan::All => Some(Cached::Fixed(plan.clone())),
        _ => None,
    }
}

fn literal(kind: TokKind, raw: &[u8]) -> Literal<'_> {
    match kind {
        TokKind::Number => Literal::Number(raw),
        TokKind::Str => {
            let plain = raw.len() >= 2
                && raw[0] == b'\''
                && raw[raw.len() - 1] == b'\''
                && !raw[1..raw.len() - 1]
                    .iter()
                    .any(|b| *b == b'\\' || *b == b'\'' || *b == STAND_IN);
            if plain {
                Literal::Text(&raw[1..raw.len() - 1])
            } else {
                Literal::Other
            }
        }
        _ => Literal::Other,
    }
}

/// The cache key of a statement's exact text (a marker byte first, so it does not collide
/// with the shape of the same text); `None` for a text too long to keep.
pub fn exact_hash(sql: &str) -> Option<u64> {
    (sql.len() <= MAX_EXACT_TEXT).then(|| {
        let mut h = hasher();
        h.write_u8(0xFF);
        h.write(sql.as_bytes());
        h.finish()
    })
}

/// Whether a statement's full plan may be kept by its exact text: plans that hold nothing but
/// what its text and the keyspace's ring decide, and whose keys no caller needs to see (a
/// reshard hold reads the keys of point and split writes as they are planned).
pub fn exact_cacheable(plan: &ShardPlan) -> bool {
    matches!(
        plan,
        ShardPlan::Scatter(_) | ShardPlan::MergeSorted(_) | ShardPlan::Param(_)
    )
}

fn hasher() -> impl Hasher {
    // Keyed per process, so a client cannot aim a statement at another's cached shape.
    thread_local! {
        static STATE: std::collections::hash_map::RandomState = Default::default();
    }
    STATE.with(|s| s.build_hasher())
}

thread_local! {
    static CACHE: RefCell<HashMap<(u64, u64), Cached>> = RefCell::new(HashMap::new());
}

/// The cached plan of shape `hash` in keyspace `keyspace` (a hash of its name).
pub fn get(keyspace: u64, hash: u64) -> Option<Cached> {
    CACHE.with(|c| c.borrow().get(&(keyspace, hash)).cloned())
}

pub fn put(keyspace: u64, hash: u64, cached: Cached) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_SHAPES {
            c.clear();
        }
        c.insert((keyspace, hash), cached);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_taken_out_of_the_shape() {
        let a = Shape::of("SELECT c FROM users WHERE id = 42").expect("shape");
        let b = Shape::of("select c from users where id=7").expect("shape");
        let c = Shape::of("SELECT c FROM users WHERE id = '42'").expect("shape");
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.hash, c.hash, "a string or a number literal: same shape");
        assert_eq!(a.text, "SELECT c FROM users WHERE id = ?");
        assert_ne!(
            a.hash,
            Shape::of("SELECT c FROM users WHERE k = 42")
                .expect("shape")
                .hash
        );
        assert!(Shape::of("SELECT c FROM users WHERE id = ?").is_none());
        let shard_of = |k: &KeyValue<'_>| match k {
            KeyValue::Int(42) => 1,
            _ => 0,
        };
        assert_eq!(
            a.bind(&Cached::Literal(0), shard_of),
            Some(ShardPlan::One(1))
        );
        assert_eq!(
            c.bind(&Cached::Literal(0), shard_of),
            Some(ShardPlan::One(1))
        );
        let escaped = Shape::of(r"SELECT c FROM users WHERE id = 'a\'b'").expect("shape");
        assert_eq!(escaped.bind(&Cached::Literal(0), shard_of), None);
        assert_eq!(cacheable(&ShardPlan::Param(2)), Some(Cached::Literal(2)));
        assert_eq!(cacheable(&ShardPlan::One(1)), None);
        assert_eq!(a.bind(&Cached::ByText, shard_of), None);
        let exact = Cached::Exact(ShardPlan::Scatter(vec![0, 1]));
        assert_eq!(
            a.bind(&exact, shard_of),
            Some(ShardPlan::Scatter(vec![0, 1]))
        );
        assert!(exact_cacheable(&ShardPlan::Scatter(vec![0, 1])));
        assert!(!exact_cacheable(&ShardPlan::One(0)));
        assert!(!exact_cacheable(&ShardPlan::SplitInsert(Vec::new())));
        let long = "x".repeat(MAX_EXACT_TEXT + 1);
        assert_eq!(exact_hash(&long), None);
        assert_eq!(exact_hash("SELECT 1"), exact_hash("SELECT 1"));
        assert_ne!(exact_hash("SELECT 1"), exact_hash("SELECT 2"));
    }
}
