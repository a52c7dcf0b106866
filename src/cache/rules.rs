//! Which reads are cached, and for how long: the `[[cache.rules]]` of the config, first match
//! wins.

use std::time::Duration;

use crate::config::CacheRule;
use crate::planner::digest::normalized;

/// A rule ready to match: names lower-cased, the digest normalised as statements are.
#[derive(Debug, Clone)]
pub struct Rule {
    keyspace: Option<String>,
    tables: Vec<String>,
    digest: Option<String>,
    pub ttl: Duration,
}

impl Rule {
    pub fn new(r: &CacheRule) -> Rule {
        Rule {
            keyspace: r.keyspace.as_ref().map(|k| k.to_ascii_lowercase()),
            tables: r.tables.iter().map(|t| t.to_ascii_lowercase()).collect(),
            digest: r.digest.as_ref().map(|d| normalized(d.as_bytes())),
            ttl: Duration::from_millis(r.ttl_ms),
        }
    }

    /// Whether a read in database `db` of `tables` (`db.table` names), whose text is `sql`,
    /// is cached by this rule.
    fn matches(&self, db: Option<&str>, tables: &[String], sql: &[u8]) -> bool {
        if let Some(k) = &self.keyspace {
            if !db.is_some_and(|d| d.eq_ignore_ascii_case(k)) {
                return false;
            }
        }
        if !self.tables.is_empty() {
            let named = |t: &String| {
                let bare = t.split_once('.').map_or(t.as_str(), |(_, b)| b);
                self.tables.iter().any(|r| r == t || r == bare)
            };
            if !tables.iter().any(named) {
                return false;
            }
        }
        match &self.digest {
            Some(d) => *d == normalized(sql),
            None => true,
        }
    }
}

/// How long the first matching rule keeps a read, if any rule matches.
pub fn ttl_for(
    rules: &[Rule],
    db: Option<&str>,
    tables: &[String],
    sql: &[u8],
) -> Option<Duration> {
    rules
        .iter()
        .find(|r| r.matches(db, tables, sql))
        .map(|r| r.ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(keyspace: Option<&str>, tables: &[&str], digest: Option<&str>, ttl_ms: u64) -> Rule {
        Rule::new(&CacheRule {
            keyspace: keyspace.map(str::to_string),
            tables: tables.iter().map(|t| t.to_string()).collect(),
            digest: digest.map(str::to_string),
            ttl_ms,
        })
    }

    #[test]
    fn first_matching_rule_decides() {
        let rules = vec![
            rule(None, &[], Some("SELECT name FROM users WHERE id = 1"), 100),
            rule(Some("app"), &["Orders"], None, 200),
            rule(Some("app"), &[], None, 300),
        ];
        let t = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let sql = b"select name from users where id = 42";
        assert_eq!(
            ttl_for(&rules, Some("app"), &t(&["app.users"]), sql),
            Some(Duration::from_millis(100)),
            "same shape, other literal"
        );
        let sql = b"SELECT * FROM orders";
        assert_eq!(
            ttl_for(&rules, Some("app"), &t(&["app.orders"]), sql),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            ttl_for(
                &rules,
                Some("app"),
                &t(&["app.items"]),
                b"SELECT * FROM items"
            ),
            Some(Duration::from_millis(300))
        );
        assert_eq!(
            ttl_for(
                &rules,
                Some("other"),
                &t(&["other.items"]),
                b"SELECT * FROM items"
            ),
            None
        );
    }
}
