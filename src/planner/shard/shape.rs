//! The plan cache of sharded keyspaces: a statement's *shape* is its token stream with every
//! literal taken out. Planning the shape (literals as `?` parameters) once tells where the
//! shard key comes from; later statements of the same shape bind their own literal without
//! being parsed again.
//!
//! Only plans that do not depend on the literals' values are kept: "the shard of literal i",
//! "any shard", "every shard". Anything else (IN lists spread over shards, LIMIT values, split
//! INSERTs, refusals) is planned in full each time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use super::ShardPlan;
use crate::planner::digest::{Lexer, TokKind};
use crate::planner::text::STAND_IN;
use crate::shardmap::ring::KeyValue;

/// Shapes kept per thread (each proxy worker has its own): past this the cache starts over.
const MAX_SHAPES: usize = 10_000;

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
            Cached::Fixed(p) => Some(p.clone()),
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
    }
}
