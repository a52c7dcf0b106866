//! MariaDB GTID positions (`domain-server-seq`, comma separated, one per domain) and the one
//! comparison failover needs: which replica has received the most.

pub mod acked;

use std::collections::BTreeMap;

/// One GTID: the last transaction of a replication domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    pub server: u32,
    pub seq: u64,
}

/// A GTID position: per domain, the last transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPos(pub BTreeMap<u32, Gtid>);

impl GtidPos {
    /// Parses `@@gtid_binlog_pos`-style text; None if any part is malformed. Empty text is the
    /// empty position.
    pub fn parse(text: &str) -> Option<GtidPos> {
        let mut pos = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.split('-');
            let domain = it.next()?.parse().ok()?;
            let server = it.next()?.parse().ok()?;
            let seq = it.next()?.parse().ok()?;
            if it.next().is_some() {
                return None;
            }
            pos.insert(domain, Gtid { server, seq });
        }
        Some(GtidPos(pos))
    }

    /// Whether this position has every domain of `other` at least as far: what a replica at
    /// `self` must reach before it may stand in for one at `other`.
    pub fn covers(&self, other: &GtidPos) -> bool {
        other
            .0
            .iter()
            .all(|(d, g)| self.0.get(d).is_some_and(|mine| mine.seq >= g.seq))
    }

    /// Transactions counted by sequence numbers, summed over domains: orders positions that
    /// `covers` leaves unordered (replicas of one primary are always ordered by `covers`).
    pub fn total(&self) -> u128 {
        self.0.values().map(|g| u128::from(g.seq)).sum()
    }
}

impl std::fmt::Display for GtidPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (d, g)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}-{}-{}", g.server, g.seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_positions() {
        let p = GtidPos::parse("0-1-105, 3-2-7").expect("parses");
        assert_eq!(p.0.len(), 2);
        assert_eq!(
            p.0[&0],
            Gtid {
                server: 1,
                seq: 105
            }
        );
        assert_eq!(p.to_string(), "0-1-105,3-2-7");
        assert_eq!(GtidPos::parse("").expect("empty"), GtidPos::default());
        for bad in ["0-1", "a-1-2", "0-1-2-3", "0-1-x"] {
            assert!(GtidPos::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn covers_compares_every_domain() {
        let a = GtidPos::parse("0-1-10,1-1-5").expect("a");
        let b = GtidPos::parse("0-1-9,1-1-5").expect("b");
        let c = GtidPos::parse("0-1-11").expect("c");
        assert!(a.covers(&b));
        assert!(!b.covers(&a));
        assert!(!c.covers(&a), "domain 1 missing");
        assert!(a.covers(&GtidPos::default()));
        assert!(a.total() > b.total());
    }
}
